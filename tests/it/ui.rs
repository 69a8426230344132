//! The web UI, end to end. Over plain HTTP (a cookie-keeping client that does not follow
//! redirects): pages send strangers to the login page and back, forms need the CSRF token,
//! each role sees only the controls it may use and the server refuses the rest anyway, a
//! refused form comes back with the error next to its field, destructive posts only ask until
//! confirmed, pages render fast with 1,000 events and 100 instances, unknown pages get the
//! HTML 404 page while `/api` keeps its JSON one, and hostname links go through the proxy's
//! real port (and HTTPS where a certificate covers the name). In a real headless
//! Chromium ([`crate::browser`]) against real containers: logging in, the deployed stage on the
//! dashboard, a deploy from the stage page whose status changes without a reload, filtering the
//! event log and a `warn` event arriving live, cleaning up a stale instance, what members and
//! viewers do not see, and a form error next to its field. `screenshots_of_the_main_pages…`
//! renders a realistic installation and keeps its pictures (in `docs/screenshots/` when
//! `DW_UPDATE_SCREENSHOTS=1`).

use chrono::TimeDelta;
use docker_watcher::clock::Clock;
use docker_watcher::domain::event::{NewEvent, Severity, Source};
use docker_watcher::domain::instance::{InstanceStatus, NewInstance};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use crate::browser::{Browser, with_browser};
use crate::deploy::{
    Cleanup, Variant, create_project, create_stage, deploy_ok, push_image, registry, unique,
};
use crate::helpers::{ADMIN_PASSWORD, ApiClient, TestApp, spawn_app, spawn_app_with};

// ----- An HTTP client that behaves like a browser without JavaScript ----------------------------

/// A page as the server answered it.
pub(crate) struct Page {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: String,
}

impl Page {
    pub(crate) fn location(&self) -> &str {
        self.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    #[track_caller]
    pub(crate) fn assert_has(&self, needle: &str) {
        assert!(
            self.body.contains(needle),
            "expected {needle:?} in the page:\n{}",
            self.body
        );
    }

    #[track_caller]
    pub(crate) fn assert_lacks(&self, needle: &str) {
        assert!(
            !self.body.contains(needle),
            "did not expect {needle:?} in the page:\n{}",
            self.body
        );
    }

    /// The CSRF token of the page's forms.
    pub(crate) fn csrf(&self) -> String {
        let marker = "name=\"csrf_token\" value=\"";
        let start = self.body.find(marker).expect("a form with a csrf_token") + marker.len();
        let end = self.body[start..].find('"').expect("the end of the token") + start;
        self.body[start..end].to_owned()
    }

    /// The forms that change something (everything posted, but logging out).
    fn mutation_forms(&self) -> usize {
        self.body.matches("method=\"post\"").count() - self.body.matches("action=\"/logout\"").count()
    }

    /// The markup of the form field holding input `id`: from the input to the end of its
    /// `<div class="field">`.
    fn field_of(&self, id: &str) -> &str {
        let start = self
            .body
            .find(&format!("id=\"{id}\""))
            .unwrap_or_else(|| panic!("no input {id} in the page:\n{}", self.body));
        let end = self.body[start..]
            .find("</div>")
            .map_or(self.body.len(), |e| start + e);
        &self.body[start..end]
    }
}

/// A cookie-keeping client that does not follow redirects, so each answer can be checked.
pub(crate) struct UiSession {
    client: reqwest::Client,
    base_url: String,
}

impl UiSession {
    fn new(app: &TestApp) -> Self {
        Self {
            client: reqwest::Client::builder()
                .cookie_store(true)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("a client"),
            base_url: app.base_url.clone(),
        }
    }

    /// Logs in through the login form.
    pub(crate) async fn logged_in(app: &TestApp, username: &str, password: &str) -> Self {
        let session = Self::new(app);
        let page = session
            .post(
                "/login",
                &[("username", username), ("password", password), ("next", "/")],
            )
            .await;
        assert_eq!(
            page.status,
            StatusCode::SEE_OTHER,
            "login as {username}: {}",
            page.body
        );
        session
    }

    async fn read(response: reqwest::Response) -> Page {
        Page {
            status: response.status(),
            headers: response.headers().clone(),
            body: response.text().await.expect("a body"),
        }
    }

    pub(crate) async fn get(&self, path: &str) -> Page {
        let response = self
            .client
            .get(format!("{}{path}", self.base_url))
            .send()
            .await
            .expect("GET");
        Self::read(response).await
    }

    pub(crate) async fn post(&self, path: &str, form: &[(&str, &str)]) -> Page {
        let response = self
            .client
            .post(format!("{}{path}", self.base_url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(
                form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(form)
                    .finish(),
            )
            .send()
            .await
            .expect("POST");
        Self::read(response).await
    }

    /// Posts a form with the session's CSRF token, as the page's form would.
    pub(crate) async fn submit(&self, path: &str, form: &[(&str, &str)]) -> Page {
        let csrf = self.get("/tokens").await.csrf();
        let mut fields = vec![("csrf_token", csrf.as_str())];
        fields.extend_from_slice(form);
        self.post(path, &fields).await
    }
}

/// A form's fields as the pairs [`UiSession::submit`] takes.
fn pairs(form: &[(String, String)]) -> Vec<(&str, &str)> {
    form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// A user with `role` and the password `{username}-password`.
async fn add_user(admin: &ApiClient, username: &str, role: &str) {
    let (status, body) = admin
        .post(
            "/api/users",
            json!({"username": username, "password": format!("{username}-password"), "role": role}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// An app with one stage of a fresh repository: `pushed` tags pushed (web images), `deployed`
/// deployed in order by the real deploy flow.
struct Deployed {
    app: TestApp,
    _cleanup: Cleanup,
    admin: ApiClient,
    project_id: i64,
    stage_id: i64,
    instance_ids: Vec<i64>,
}

async fn deployed(pushed: &[&str], deployed: &[&str], container: Value) -> Deployed {
    let app = spawn_app().await;
    let mut cleanup = Cleanup::new(&app);
    let repo = unique("dwtest/ui-");
    cleanup.repo(&repo);
    let admin = app.admin().await;
    for tag in pushed {
        push_image(&repo, tag, Variant::Web, &format!("ui test {tag}")).await;
    }
    let project_id = create_project(&admin, &repo).await;
    let stage_id = create_stage(&admin, project_id, "tag:v1", container).await;
    let mut instance_ids = Vec::new();
    for tag in deployed {
        instance_ids.push(
            deploy_ok(&admin, stage_id, tag).await["id"]
                .as_i64()
                .expect("an id"),
        );
    }
    Deployed {
        app,
        _cleanup: cleanup,
        admin,
        project_id,
        stage_id,
        instance_ids,
    }
}

// ----- Over HTTP --------------------------------------------------------------------------------

#[tokio::test]
async fn pages_send_strangers_to_the_login_page_and_back_after_logging_in() {
    let app = spawn_app().await;
    let stranger = UiSession::new(&app);
    for (path, location) in [
        ("/", "/login"),
        ("/events?severity=warn", "/login?next=%2Fevents%3Fseverity%3Dwarn"),
        ("/stages/1", "/login?next=%2Fstages%2F1"),
        ("/users", "/login?next=%2Fusers"),
    ] {
        let page = stranger.get(path).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{path}");
        assert_eq!(page.location(), location, "{path}");
    }
    // An expired or missing session on a form post goes to the login page too, not to a 401.
    let page = stranger.post("/projects", &[("name", "x")]).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert!(page.location().starts_with("/login"), "{}", page.location());

    let login = stranger.get("/login?next=%2Fevents%3Fseverity%3Dwarn").await;
    assert_eq!(login.status, StatusCode::OK);
    login.assert_has("name=\"next\" value=\"/events?severity=warn\"");
    let page = stranger
        .post(
            "/login",
            &[
                ("username", "admin"),
                ("password", ADMIN_PASSWORD),
                ("next", "/events?severity=warn"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location(), "/events?severity=warn");
    let cookie = page
        .headers
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(
        cookie.starts_with("dw_session=") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    assert_eq!(stranger.get("/events?severity=warn").await.status, StatusCode::OK);
    // Logged in, the login page goes straight on; another site is never a destination.
    assert_eq!(stranger.get("/login?next=%2Fstale").await.location(), "/stale");
    assert_eq!(
        stranger.get("/login?next=%2F%2Fevil.example%2F").await.location(),
        "/"
    );
    assert_eq!(
        stranger
            .get("/login?next=https%3A%2F%2Fevil.example%2F")
            .await
            .location(),
        "/"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_login_page_explains_the_first_start_and_says_why_a_login_failed() {
    let app = spawn_app().await;
    let stranger = UiSession::new(&app);
    let login = stranger.get("/login").await;
    login.assert_has("id=\"bootstrap-hint\"");
    login.assert_has("DOCKER_WATCHER_ADMIN_PASSWORD");

    let wrong = stranger
        .post(
            "/login",
            &[("username", "admin"), ("password", "not-the-password")],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    wrong.assert_has("id=\"login-error\"");
    wrong.assert_has("wrong username or password");
    wrong.assert_has("value=\"admin\"");
    wrong.assert_lacks("not-the-password");

    // Once the admin has a password of their own, it is no longer a first start.
    let admin = UiSession::logged_in(&app, "admin", ADMIN_PASSWORD).await;
    let users = admin.get("/users").await;
    let admin_id = users
        .body
        .split("data-user-id=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the admin's row")
        .to_owned();
    let saved = admin
        .submit(
            &format!("/users/{admin_id}/edit"),
            &[("role", "admin"), ("password", "a-new-admin-password")],
        )
        .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    UiSession::new(&app)
        .get("/login")
        .await
        .assert_lacks("id=\"bootstrap-hint\"");
    app.stop().await;
}

#[tokio::test]
async fn assets_are_embedded_pages_load_nothing_from_elsewhere_and_send_security_headers() {
    let app = spawn_app().await;
    let stranger = UiSession::new(&app);
    let css = stranger.get("/static/style.css").await;
    assert_eq!(css.status, StatusCode::OK);
    assert!(
        css.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
    let js = stranger.get("/static/live.js").await;
    assert_eq!(js.status, StatusCode::OK);
    js.assert_has("new EventSource(");
    js.assert_has("last_event_id=");
    let etag = js.headers["etag"].to_str().unwrap().to_owned();
    let again = stranger
        .client
        .get(format!("{}/static/live.js", app.base_url))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(
        stranger.get("/static/nothing.js").await.status,
        StatusCode::NOT_FOUND
    );

    let admin = UiSession::logged_in(&app, "admin", ADMIN_PASSWORD).await;
    for path in [
        "/login",
        "/",
        "/events",
        "/stale",
        "/proxies",
        "/settings",
        "/users",
        "/tokens",
    ] {
        let page = if path == "/login" {
            stranger.get(path).await
        } else {
            admin.get(path).await
        };
        assert_eq!(page.status, StatusCode::OK, "{path}");
        let csp = page.headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'self'"), "{path}: {csp}");
        assert_eq!(page.headers["cache-control"], "no-store", "{path}");
        for attribute in ["src=\"", "<link rel=\"stylesheet\" href=\""] {
            for (i, _) in page.body.match_indices(attribute) {
                let value = &page.body[i + attribute.len()..];
                assert!(
                    value.starts_with('/'),
                    "{path} loads something from elsewhere: {}",
                    &value[..40.min(value.len())]
                );
            }
        }
        page.assert_has("<main id=\"main\"");
        page.assert_has("name=\"viewport\"");
    }
    app.stop().await;
}

#[tokio::test]
async fn forms_without_the_csrf_token_are_refused() {
    let app = spawn_app().await;
    let admin = UiSession::logged_in(&app, "admin", ADMIN_PASSWORD).await;
    let image = format!("{}/dwtest/csrf", registry());
    let refused = admin
        .post("/projects", &[("name", "csrf"), ("image", &image)])
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    refused.assert_has("CSRF");
    let wrong = admin
        .post(
            "/projects",
            &[("csrf_token", "0000"), ("name", "csrf"), ("image", &image)],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    assert_eq!(admin.post("/logout", &[]).await.status, StatusCode::FORBIDDEN);
    let api = app.admin().await;
    let (_, projects) = api.get("/api/projects").await;
    assert_eq!(projects["items"], json!([]), "a refused form must change nothing");

    let created = admin
        .submit("/projects", &[("name", "csrf"), ("image", &image)])
        .await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.body);
    assert!(
        created.location().starts_with("/projects/"),
        "{}",
        created.location()
    );
    let (_, projects) = api.get("/api/projects").await;
    assert_eq!(projects["items"][0]["name"], "csrf");

    // Logging out ends the session.
    assert_eq!(admin.submit("/logout", &[]).await.location(), "/login");
    assert_eq!(admin.get("/").await.location(), "/login");
    app.stop().await;
}

#[tokio::test]
async fn each_role_sees_only_the_controls_it_may_use_and_the_server_refuses_the_rest() {
    let d = deployed(&["v1"], &["v1"], json!({})).await;
    let (app, admin_api) = (&d.app, &d.admin);
    add_user(admin_api, "vera", "viewer").await;
    add_user(admin_api, "mike", "member").await;
    let viewer = UiSession::logged_in(app, "vera", "vera-password").await;
    let member = UiSession::logged_in(app, "mike", "mike-password").await;
    let admin = UiSession::logged_in(app, "admin", ADMIN_PASSWORD).await;
    let stage = format!("/stages/{}", d.stage_id);
    let project = format!("/projects/{}", d.project_id);
    let instance = d.instance_ids[0];

    // Viewers read everything and can change nothing (but their own API tokens).
    for path in [
        "/",
        project.as_str(),
        stage.as_str(),
        "/events",
        "/stale",
        "/proxies",
        "/settings",
    ] {
        let page = viewer.get(path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        assert_eq!(
            page.mutation_forms(),
            0,
            "{path} shows a viewer a form:\n{}",
            page.body
        );
        page.assert_lacks("details class=\"confirm\"");
        page.assert_lacks("href=\"/users\"");
    }
    let stage_page = viewer.get(&stage).await;
    stage_page.assert_has(&format!("data-instance-status=\"{instance}\">running<"));
    stage_page.assert_has(&format!("?logs={instance}"));
    assert_eq!(viewer.get("/users").await.status, StatusCode::FORBIDDEN);

    // Members deploy and act on instances, but admin-only controls are not theirs.
    let stage_page = member.get(&stage).await;
    stage_page.assert_has("id=\"deploy-button\"");
    stage_page.assert_has(&format!("action=\"/instances/{instance}/stop\""));
    stage_page.assert_has(&format!("action=\"/stages/{}/poll\"", d.stage_id));
    member.get("/").await.assert_has("action=\"/projects\"");
    let project_page = member.get(&project).await;
    project_page.assert_has("id=\"new-stage\"");
    project_page.assert_lacks("/delete\"");
    member.get("/stale").await.assert_lacks("id=\"bulk-cleanup\"");
    member.get("/proxies").await.assert_lacks("action=\"/proxies\"");
    member.get("/settings").await.assert_lacks("action=\"/settings\"");
    member.get("/").await.assert_lacks("href=\"/users\"");

    // Admins see it all.
    admin.get("/stale").await.assert_has("id=\"bulk-cleanup\"");
    admin
        .get(&project)
        .await
        .assert_has(&format!("action=\"/projects/{}/delete\"", d.project_id));
    admin.get("/proxies").await.assert_has("action=\"/proxies\"");
    admin.get("/settings").await.assert_has("action=\"/settings\"");
    admin.get("/").await.assert_has("href=\"/users\"");

    // Whatever a page shows, the server enforces the same rules.
    let image = format!("{}/dwtest/nope", registry());
    let refused = viewer
        .submit("/projects", &[("name", "nope"), ("image", &image)])
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    refused.assert_has("member");
    let refused = viewer
        .submit(&format!("/instances/{instance}/stop"), &[("confirm", "yes")])
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(
        member
            .submit("/stale/cleanup", &[("confirm", "yes")])
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        member
            .submit("/settings", &[("stale_threshold_days", "1")])
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        member
            .submit(
                "/proxies",
                &[
                    ("name", "x"),
                    ("hostname", "x.example.com"),
                    ("target_url", "http://127.0.0.1:1")
                ]
            )
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        member
            .submit(
                &format!("/projects/{}/delete", d.project_id),
                &[("confirm", "yes")]
            )
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let (_, running) = admin_api.get(&format!("/api/instances/{instance}")).await;
    assert_eq!(running["status"], "running", "{running}");
    d.app.stop().await;
}

#[tokio::test]
async fn a_refused_form_comes_back_with_the_error_next_to_its_field() {
    let app = spawn_app().await;
    let admin = UiSession::logged_in(&app, "admin", ADMIN_PASSWORD).await;
    let image = format!("{}/dwtest/forms", registry());

    let page = admin
        .submit("/projects", &[("name", "Bad Name"), ("image", &image)])
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    let field = page.field_of("new-project-name");
    assert!(field.contains("aria-invalid=\"true\""), "{field}");
    assert!(field.contains("value=\"Bad Name\""), "{field}");
    assert!(
        field.contains("class=\"field-error\"") && field.contains("lowercase"),
        "{field}"
    );
    page.assert_has("<details id=\"new-project\" open>");

    let created = admin
        .submit("/projects", &[("name", "forms"), ("image", &image)])
        .await;
    let project = created.location().to_owned();
    assert!(project.starts_with("/projects/"), "{}", created.body);

    let stage_form = |port: &'static str, env: &'static str| {
        vec![
            ("name", "web"),
            ("tag_policy", "tag:v1"),
            ("auto_deploy", "false"),
            ("container.port", port),
            ("container.env", env),
            ("container.min_ready_seconds", "1"),
        ]
    };
    let page = admin
        .submit(&format!("{project}/stages"), &stage_form("eighty", ""))
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    let field = page.field_of("new-stage-container.port");
    assert!(field.contains("class=\"field-error\""), "{field}");
    let page = admin
        .submit(
            &format!("{project}/stages"),
            &stage_form("8080", "GOOD=1\nnot a variable"),
        )
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(
        page.field_of("new-stage-container.env").contains("line 2"),
        "{}",
        page.body
    );
    let page = admin
        .submit(&format!("{project}/stages"), &stage_form("8080", "1BAD=x"))
        .await;
    assert!(
        page.field_of("new-stage-container.env")
            .contains("not a valid variable name"),
        "{}",
        page.body
    );
    let created = admin
        .submit(&format!("{project}/stages"), &stage_form("8080", "GOOD=1"))
        .await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.body);
    let stage = created.location().to_owned();

    // A bad tag never reaches the registry: it is named next to the deploy form's input.
    let page = admin
        .submit(&format!("{stage}/deploy"), &[("tag", "not a tag!")])
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(
        page.field_of("deploy-tag").contains("not a valid tag"),
        "{}",
        page.body
    );

    let page = admin
        .submit(
            "/settings",
            &[
                ("stale_threshold_days", "0"),
                ("default_poll_schedule", "@every 5m"),
                ("event_retention_days", "30"),
                ("deploy_health_timeout_seconds", "60"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(
        page.field_of("settings-stale_threshold_days")
            .contains("field-error"),
        "{}",
        page.body
    );
    let api = app.admin().await;
    let (_, settings) = api.get("/api/settings").await;
    assert_eq!(
        settings["stale_threshold_days"], 7,
        "a refused form changes nothing"
    );

    let page = admin.get("/events?since=yesterday").await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    page.assert_has("data-field=\"since\"");

    let page = admin.submit("/tokens", &[("name", "")]).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(
        page.field_of("new-token-name").contains("field-error"),
        "{}",
        page.body
    );
    app.stop().await;
}

#[tokio::test]
async fn secrets_are_set_replaced_and_removed_from_the_stage_form_and_never_shown() {
    let app = spawn_app().await;
    let admin = UiSession::logged_in(&app, "admin", ADMIN_PASSWORD).await;
    let api = app.admin().await;
    add_user(&api, "val", "viewer").await;
    let viewer = UiSession::logged_in(&app, "val", "val-password").await;
    let image = format!("{}/dwtest/secrets-form", registry());
    let created = admin
        .submit("/projects", &[("name", "secrets"), ("image", &image)])
        .await;
    let project = created.location().to_owned();
    let (token, password, replaced) = (unique("tok-value-"), unique("db-value-"), unique("db-new-"));
    let stage_form = |port: &str, env: &str, secrets: &str, remove: &[&str]| {
        let mut form: Vec<(String, String)> = [
            ("name", "web"),
            ("tag_policy", "tag:v1"),
            ("auto_deploy", "false"),
            ("container.port", port),
            ("container.env", env),
            ("container.secret_env", secrets),
            ("container.min_ready_seconds", "1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for key in remove {
            form.push(("container.secret_env.remove".into(), key.to_string()));
        }
        form
    };
    let form = stage_form(
        "8080",
        "PLAIN=plain-setting-value",
        &format!("API_TOKEN={token}\nDB_PASSWORD={password}"),
        &[],
    );
    let created = admin.submit(&format!("{project}/stages"), &pairs(&form)).await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.body);
    let stage = created.location().to_owned();
    let stage_id: i64 = stage.trim_start_matches("/stages/").parse().expect("a stage id");

    let page = admin.get(&stage).await;
    page.assert_has("<code>API_TOKEN</code> <span class=\"badge ok\">set</span>");
    page.assert_has("name=\"container.secret_env.remove\" value=\"DB_PASSWORD\"");
    page.assert_lacks(&token);
    page.assert_lacks(&password);

    // A refused form does not send the typed secret back into the page.
    let form = stage_form(
        "eighty",
        "PLAIN=plain-setting-value",
        &format!("DB_PASSWORD={replaced}"),
        &[],
    );
    let page = admin.submit(&format!("{stage}/edit"), &pairs(&form)).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    page.assert_lacks(&replaced);
    // A bad secret line is named by its line, not quoted.
    let form = stage_form("8080", "PLAIN=plain-setting-value", &replaced, &[]);
    let page = admin.submit(&format!("{stage}/edit"), &pairs(&form)).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(
        page.field_of("edit-stage-container.secret_env")
            .contains("line 1"),
        "{}",
        page.body
    );
    page.assert_lacks(&replaced);

    // Replace one, remove the other; neither value is ever shown.
    let form = stage_form(
        "8080",
        "PLAIN=plain-setting-value",
        &format!("DB_PASSWORD={replaced}"),
        &["API_TOKEN"],
    );
    let saved = admin.submit(&format!("{stage}/edit"), &pairs(&form)).await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    let (_, body) = api.get(&format!("/api/stages/{stage_id}")).await;
    assert_eq!(
        body["container"]["secret_env_keys"],
        json!(["DB_PASSWORD"]),
        "{body}"
    );
    let page = admin.get(&stage).await;
    for value in [&token, &password, &replaced] {
        page.assert_lacks(value);
    }
    page.assert_has("plain-setting-value");

    // A viewer sees which variables are set, never a value.
    let page = viewer.get(&stage).await;
    page.assert_has("<code>PLAIN</code>");
    page.assert_has("<code>DB_PASSWORD</code>");
    page.assert_lacks("plain-setting-value");
    page.assert_lacks(&replaced);
    app.stop().await;
}

#[tokio::test]
async fn destructive_posts_only_ask_until_they_are_confirmed() {
    let app = spawn_app().await;
    let admin = UiSession::logged_in(&app, "admin", ADMIN_PASSWORD).await;
    let image = format!("{}/dwtest/confirm", registry());
    let created = admin
        .submit("/projects", &[("name", "doomed"), ("image", &image)])
        .await;
    let project = created.location().to_owned();

    let asked = admin.submit(&format!("{project}/delete"), &[]).await;
    assert_eq!(asked.status, StatusCode::OK);
    asked.assert_has("Delete the project?");
    asked.assert_has("name=\"confirm\" value=\"yes\"");
    assert_eq!(admin.get(&project).await.status, StatusCode::OK, "still there");

    let deleted = admin
        .submit(&format!("{project}/delete"), &[("confirm", "yes")])
        .await;
    assert_eq!(deleted.status, StatusCode::SEE_OTHER);
    assert_eq!(deleted.location(), "/");
    assert_eq!(admin.get(&project).await.status, StatusCode::NOT_FOUND);
    app.stop().await;
}

#[tokio::test]
async fn a_new_api_token_is_shown_once_and_works() {
    let app = spawn_app().await;
    let member = {
        let admin = app.admin().await;
        add_user(&admin, "tina", "member").await;
        UiSession::logged_in(&app, "tina", "tina-password").await
    };
    let page = member.submit("/tokens", &[("name", "laptop")]).await;
    assert_eq!(page.status, StatusCode::CREATED);
    let start = page.body.find("id=\"new-token\">").expect("the token") + "id=\"new-token\">".len();
    let token: String = page.body[start..].chars().take_while(|c| *c != '<').collect();
    assert!(token.starts_with("dw_"), "{token}");
    let list = member.get("/tokens").await;
    list.assert_has("laptop");
    list.assert_lacks(&token);
    let api = ApiClient::new(&app.base_url, crate::helpers::Auth::Token(token));
    let (status, me) = api.get("/api/auth/me").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["user"]["username"], "tina");
    app.stop().await;
}

#[tokio::test]
async fn the_dashboard_and_the_event_log_render_every_row_with_1000_events_and_100_instances() {
    let app = spawn_app().await;
    let api = app.admin().await;
    let state = app.app().state();
    let now = app.clock.now();
    let mut stages = Vec::new();
    for p in 0..10 {
        let (status, project) = api
            .post(
                "/api/projects",
                json!({"name": format!("load{p}"), "image": format!("{}/dwtest/load{p}", registry())}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{project}");
        let project_id = project["id"].as_i64().unwrap();
        for s in ["prod", "staging"] {
            let (status, stage) = api
                .post(
                    &format!("/api/projects/{project_id}/stages"),
                    json!({"name": s, "tag_policy": "semver:^1", "auto_deploy": false, "schedule": "@every 24h"}),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{stage}");
            stages.push((project_id, stage["id"].as_i64().unwrap()));
        }
    }
    // 100 instances, five per stage: the newest runs and is current, the others stopped.
    for round in 0..5 {
        for (project_id, stage_id) in &stages {
            let instance = state
                .store
                .insert_instance(&NewInstance {
                    project_id: *project_id,
                    stage_id: *stage_id,
                    image_tag: format!("1.{round}.0"),
                    image_digest: Some(format!("sha256:{:064x}", round * 1000 + stage_id)),
                    status: InstanceStatus::Pending,
                    hostname: None,
                    created_at: now,
                    config_revision: 1,
                })
                .await
                .unwrap();
            let status = if round == 4 {
                InstanceStatus::Running
            } else {
                InstanceStatus::Stopped
            };
            state
                .store
                .update_instance_status(instance.id, status, None, now)
                .await
                .unwrap();
            if round == 4 {
                state
                    .store
                    .set_current_instance(*stage_id, Some(instance.id))
                    .await
                    .unwrap();
            }
        }
    }
    let events: Vec<_> = (0..1000)
        .map(|i| {
            let (project_id, stage_id) = stages[i % stages.len()];
            let severity = [Severity::Info, Severity::Warn, Severity::Error][i % 3];
            let event = NewEvent::new(severity, Source::Deployer, format!("load event {i}"))
                .project(project_id)
                .stage(stage_id)
                .detail("n", i as u64)
                .recorded();
            (event, now - TimeDelta::seconds(i as i64))
        })
        .collect();
    state.store.insert_events(&events).await.unwrap();

    let admin = UiSession::logged_in(&app, "admin", ADMIN_PASSWORD).await;
    // Render times are measured by the event-log benchmark (scripts/bench-events.sh), not here:
    // a timed assertion fails whenever the machine is busy. This checks the pages render over
    // that much data, with every row.
    for path in ["/", "/events", "/events?per_page=500", "/stale"] {
        assert_eq!(admin.get(path).await.status, StatusCode::OK, "{path}");
    }
    let dashboard = admin.get("/").await;
    assert_eq!(
        dashboard.body.matches("data-instance-status=").count(),
        20,
        "one current instance per stage"
    );
    let events = admin.get("/events?per_page=500").await;
    assert_eq!(events.body.matches("data-event-id=").count(), 500);
    app.stop().await;
}

#[tokio::test]
async fn unknown_pages_get_the_html_404_page_while_the_api_keeps_its_json_404() {
    let app = spawn_app().await;
    let admin = UiSession::logged_in(&app, "admin", ADMIN_PASSWORD).await;
    let stranger = UiSession::new(&app);
    let is_html = |page: &Page| {
        page.headers["content-type"]
            .to_str()
            .is_ok_and(|v| v.starts_with("text/html"))
    };

    for path in [
        "/no-such-page",
        "/projects/abc/xyz",
        "/projects/999999",
        "/stages/999999",
    ] {
        let page = admin.get(path).await;
        assert_eq!(page.status, StatusCode::NOT_FOUND, "{path}: {}", page.body);
        assert!(is_html(&page), "{path}: {:?}", page.headers);
        page.assert_has("<h1>404 Not Found</h1>");
        // The layout of every page, with the navigation of the logged-in user.
        page.assert_has("<main id=\"main\"");
        page.assert_has("href=\"/events\"");
    }
    admin
        .get("/no-such-page")
        .await
        .assert_has("There is no page at /no-such-page.");
    // A stranger gets the page too (no redirect to log in for a page that does not exist),
    // without the navigation.
    let page = stranger.get("/no-such-page").await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    assert!(is_html(&page), "{:?}", page.headers);
    page.assert_has("<h1>404 Not Found</h1>");
    page.assert_lacks("href=\"/events\"");
    // A page's id that is not one is refused on a page, naming the parameter.
    let page = admin.get("/projects/abc").await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
    assert!(is_html(&page), "{:?}", page.headers);
    page.assert_has("id: must be a positive integer");

    // The API keeps its JSON error shape, and so does a client that asks for JSON.
    let api = app.anonymous();
    let (status, body) = api.get("/api/no-such-thing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        json!({"error": {"code": "not_found", "message": "no such route", "field": null}})
    );
    let (status, body) = api
        .send(
            api.request(reqwest::Method::GET, "/no-such-page")
                .header("accept", "application/json"),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found", "{body}");
    app.stop().await;
}

/// A project with a stage routed at `hostname` whose (inserted, not deployed) instance runs and
/// is current, so the dashboard shows it; the project's and the stage's ids.
async fn stage_with_hostname(app: &TestApp, admin: &ApiClient, hostname: &str) -> (i64, i64) {
    let (status, project) = admin
        .post(
            "/api/projects",
            json!({"name": unique("links"), "image": format!("{}/dwtest/links", registry())}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{project}");
    let project_id = project["id"].as_i64().unwrap();
    let (status, stage) = admin
        .post(
            &format!("/api/projects/{project_id}/stages"),
            json!({"name": "prod", "tag_policy": "semver:^1", "auto_deploy": false, "schedule": "@every 24h", "hostname": hostname}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{stage}");
    let stage_id = stage["id"].as_i64().unwrap();
    let store = &app.app().state().store;
    let now = app.clock.now();
    let instance = store
        .insert_instance(&NewInstance {
            project_id,
            stage_id,
            image_tag: "1.0.0".into(),
            image_digest: Some(format!("sha256:{:064x}", 1)),
            status: InstanceStatus::Pending,
            hostname: None,
            created_at: now,
            config_revision: 1,
        })
        .await
        .unwrap();
    store
        .update_instance_status(instance.id, InstanceStatus::Running, None, now)
        .await
        .unwrap();
    store
        .set_current_instance(stage_id, Some(instance.id))
        .await
        .unwrap();
    (project_id, stage_id)
}

#[tokio::test]
async fn hostname_links_carry_the_port_the_proxy_really_listens_on() {
    let app = spawn_app().await;
    let api = app.admin().await;
    let (project_id, stage_id) = stage_with_hostname(&app, &api, "shop.links.example.test").await;
    for (name, hostname, enabled) in [
        ("docs", "docs.links.example.test", true),
        ("old", "old.links.example.test", false),
    ] {
        let (status, proxy) = api
            .post(
                "/api/proxies",
                json!({"name": name, "hostname": hostname, "target_url": "http://127.0.0.1:9/", "enabled": enabled}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{proxy}");
    }
    let port = app.app().proxy_addr().port();
    assert_ne!(port, 80, "the test proxy listens on a random port");
    let stage_link = format!("href=\"http://shop.links.example.test:{port}/\"");

    let admin = UiSession::logged_in(&app, "admin", ADMIN_PASSWORD).await;
    for path in [
        format!("/stages/{stage_id}"),
        format!("/projects/{project_id}"),
        "/".to_owned(),
    ] {
        let page = admin.get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        page.assert_has(&stage_link);
        page.assert_lacks("href=\"http://shop.links.example.test/\"");
    }
    let proxies = admin.get("/proxies").await;
    proxies.assert_has(&format!("href=\"http://docs.links.example.test:{port}/\""));
    // A disabled proxy is not routed: its hostname is no link.
    proxies.assert_has("old.links.example.test");
    proxies.assert_lacks("href=\"http://old.links.example.test");
    app.stop().await;
}

#[tokio::test]
async fn hostname_links_use_https_and_its_port_when_a_certificate_covers_the_name() {
    let certs = tempfile::tempdir().expect("a directory for the certificate");
    let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args("req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2".split(' '))
        .args(["-subj", "/CN=shop.links.example.test"])
        .args(["-addext", "subjectAltName=DNS:shop.links.example.test"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let app = spawn_app_with(move |config| {
        config.proxy.https_listen = Some("127.0.0.1:0".parse().expect("an address"));
        config.proxy.tls = vec![docker_watcher::config::TlsCertificateConfig {
            hostname: "shop.links.example.test".into(),
            cert: cert.clone(),
            key: key.clone(),
        }];
    })
    .await;
    let api = app.admin().await;
    let (_, stage_id) = stage_with_hostname(&app, &api, "shop.links.example.test").await;
    let (status, proxy) = api
        .post(
            "/api/proxies",
            json!({"name": "docs", "hostname": "docs.links.example.test", "target_url": "http://127.0.0.1:9/"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{proxy}");
    let https_port = app.app().proxy_https_addr().expect("an HTTPS listener").port();
    let http_port = app.app().proxy_addr().port();

    let admin = UiSession::logged_in(&app, "admin", ADMIN_PASSWORD).await;
    admin
        .get(&format!("/stages/{stage_id}"))
        .await
        .assert_has(&format!("href=\"https://shop.links.example.test:{https_port}/\""));
    // No certificate covers this one: plain HTTP reaches it without a certificate warning.
    admin
        .get("/proxies")
        .await
        .assert_has(&format!("href=\"http://docs.links.example.test:{http_port}/\""));
    app.stop().await;
}

// ----- In a real browser ------------------------------------------------------------------------

/// Each instance row of a stage page: (tag, status, whether it serves).
async fn instance_rows(b: &Browser) -> Vec<(String, String, bool)> {
    let rows = b
        .eval(
            "return Array.from(document.querySelectorAll('#stage-instances tr[data-instance-id]')).map(function (r) {
               return [r.querySelector('td.tag').textContent.trim(),
                       r.querySelector('[data-instance-status]').textContent.trim(),
                       r.classList.contains('current')];
             });",
        )
        .await;
    serde_json::from_value(rows).unwrap_or_default()
}

#[tokio::test]
async fn logging_in_shows_the_deployed_stage_and_a_deploy_from_its_page_goes_live_without_a_reload() {
    // Four seconds of readiness keep the deploy running past the form's wait, so its end can
    // only reach the page through the live stream.
    let d = deployed(&["v1", "v2"], &["v1"], json!({"min_ready_seconds": 4})).await;
    let (stage_id, v1) = (d.stage_id, d.instance_ids[0]);
    with_browser(&d.app.base_url, "deploy_goes_live", |b| async move {
        b.goto("/").await;
        assert!(b.path().await.starts_with("/login"), "{}", b.path().await);
        b.login("admin", ADMIN_PASSWORD).await;
        assert_eq!(b.path().await, "/");
        let row = format!("tr[data-instance-id='{v1}']");
        assert_eq!(b.text(&format!("{row} td.tag")).await, "v1");
        assert_eq!(b.text(&format!("{row} [data-instance-status]")).await, "running");
        assert!(b.exists(&format!("{row} time")).await, "since when");

        b.click(&format!("a[href='/stages/{stage_id}']")).await;
        b.wait_until("the stage page", || async {
            b.path().await == format!("/stages/{stage_id}")
        })
        .await;
        b.fill("#deploy-tag", "v2").await;
        b.click("#deploy-button").await;
        b.wait_for_text(".flash", "Deploying tag v2").await;
        b.mark_page().await;
        let rows = instance_rows(&b).await;
        assert!(
            rows.iter()
                .any(|(tag, status, _)| tag == "v2" && (status == "pending" || status == "deploying")),
            "the new instance is shown while it deploys: {rows:?}"
        );
        b.wait_live().await;
        b.wait_until("v2 to run and serve the stage", || async {
            instance_rows(&b)
                .await
                .iter()
                .any(|(tag, status, current)| tag == "v2" && status == "running" && *current)
        })
        .await;
        b.assert_not_reloaded().await;
        let rows = instance_rows(&b).await;
        assert!(
            rows.iter()
                .any(|(tag, status, current)| tag == "v1" && !current && status != "running"),
            "{rows:?}"
        );
        b.wait_for_text("#stage-deployments", "succeeded").await;
    })
    .await;
    d.app.stop().await;
}

#[tokio::test]
async fn the_event_log_filters_by_severity_and_a_new_warn_event_arrives_live() {
    let app = spawn_app().await;
    let bus = app.app().state().bus.clone();
    bus.publish(NewEvent::info(Source::Api, "ui-test info before").recorded())
        .await;
    bus.publish(NewEvent::warn(Source::Poller, "ui-test warn before"))
        .await;
    let bus_in_test = bus.clone();
    with_browser(&app.base_url, "event_log_live", |b| async move {
        b.goto("/events").await;
        b.login("admin", ADMIN_PASSWORD).await;
        assert_eq!(b.path().await, "/events");
        b.wait_for_text("#event-rows td.message", "ui-test info before")
            .await;

        b.click("input[name='severity'][value='warn']").await;
        b.click("#filter-apply").await;
        b.wait_until("the filtered page", || async {
            b.path().await.contains("severity=warn")
        })
        .await;
        let severities = b.texts("#event-rows td:nth-child(2)").await;
        assert!(!severities.is_empty());
        assert!(
            severities.iter().all(|s| s.eq_ignore_ascii_case("warn")),
            "{severities:?}"
        );
        let messages = b.texts("#event-rows td.message").await;
        assert!(
            messages.iter().any(|m| m == "ui-test warn before"),
            "{messages:?}"
        );
        assert!(
            !messages.iter().any(|m| m == "ui-test info before"),
            "{messages:?}"
        );
        assert!(
            b.find("input[name='severity'][value='warn']")
                .await
                .is_selected()
                .await
                .unwrap()
        );

        b.wait_live().await;
        b.mark_page().await;
        bus_in_test
            .publish(NewEvent::info(Source::Api, "ui-test info live").recorded())
            .await;
        bus_in_test
            .publish(NewEvent::warn(Source::Poller, "ui-test warn live").detail("repository", "team/app"))
            .await;
        b.wait_for_text("#event-rows tr:first-child td.message", "ui-test warn live")
            .await;
        assert!(
            b.text("#event-rows tr:first-child td.details")
                .await
                .contains("repository=team/app")
        );
        let messages = b.texts("#event-rows td.message").await;
        assert!(
            !messages.iter().any(|m| m == "ui-test info live"),
            "filtered out: {messages:?}"
        );
        b.assert_not_reloaded().await;
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn a_stale_instance_is_cleaned_up_from_the_stale_page_and_only_admins_get_bulk_cleanup() {
    let d = deployed(&["v1", "v2", "v3"], &["v1", "v2", "v3"], json!({})).await;
    let (v1, v2) = (d.instance_ids[0], d.instance_ids[1]);
    add_user(&d.admin, "mia", "member").await;
    d.app.clock.advance(TimeDelta::days(8));
    let (status, list) = d.admin.post("/api/containers/stale/scan", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let admin_api = d.admin.clone();
    with_browser(&d.app.base_url, "stale_cleanup", |b| async move {
        b.goto("/stale").await;
        b.login("mia", "mia-password").await;
        assert_eq!(b.path().await, "/stale");
        let row = |id: i64| format!("#stale-list tr[data-instance-id='{id}']");
        assert!(b.exists(&row(v1)).await && b.exists(&row(v2)).await);
        assert!(!b.exists("#bulk-cleanup").await, "members get no bulk cleanup");
        assert!(!b.exists("#bulk-preview-button").await);
        let days = b.text(&format!("{} td.number", row(v1))).await;
        assert_eq!(days, "8", "days stale");

        b.click(&format!("{} details.confirm summary", row(v1))).await;
        b.click(&format!("{} details.confirm button[type=submit]", row(v1)))
            .await;
        b.wait_for_text(".flash", "instance").await;
        b.wait_until("the cleaned-up row to go", || async { !b.exists(&row(v1)).await })
            .await;
        let (status, _) = admin_api.get(&format!("/api/instances/{v1}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "the instance is gone");

        // An admin previews the bulk cleanup, then confirms it.
        b.click("form[action='/logout'] button").await;
        b.wait_until("the login page", || async {
            b.path().await.starts_with("/login")
        })
        .await;
        b.goto("/stale").await;
        b.login("admin", ADMIN_PASSWORD).await;
        b.click("#bulk-preview-button").await;
        b.wait_for_text("#bulk-preview", &format!("#{v2}")).await;
        assert!(b.exists(&row(v2)).await, "a dry run removes nothing");
        b.click("#bulk-confirm").await;
        b.wait_for_text(".flash", "Bulk cleanup").await;
        b.wait_until("the bulk-cleaned row to go", || async {
            !b.exists(&row(v2)).await
        })
        .await;
    })
    .await;
    d.app.stop().await;
}

#[tokio::test]
async fn a_viewer_sees_no_mutation_controls_and_pages_fit_a_phone() {
    let d = deployed(&["v1"], &["v1"], json!({})).await;
    add_user(&d.admin, "val", "viewer").await;
    let (stage_id, project_id) = (d.stage_id, d.project_id);
    with_browser(&d.app.base_url, "viewer_controls", |b| async move {
        b.goto("/").await;
        b.login("val", "val-password").await;
        for path in [
            "/".to_owned(),
            format!("/projects/{project_id}"),
            format!("/stages/{stage_id}"),
            "/events".to_owned(),
            "/stale".to_owned(),
            "/proxies".to_owned(),
            "/settings".to_owned(),
        ] {
            b.goto(&path).await;
            let forms = b.count("form[method='post']:not([action='/logout'])").await;
            assert_eq!(forms, 0, "{path} shows a viewer {forms} forms");
            assert_eq!(b.count("details.confirm").await, 0, "{path}");
            assert_eq!(b.count("a[href='/users']").await, 0, "{path}");
        }
        b.goto(&format!("/stages/{stage_id}")).await;
        assert_eq!(b.count("#stage-instances [data-instance-status]").await, 1);

        // A phone: nothing sticks out sideways; wide tables scroll inside their card.
        b.resize(390, 844).await;
        for path in [
            "/".to_owned(),
            format!("/stages/{stage_id}"),
            "/events".to_owned(),
        ] {
            b.goto(&path).await;
            let overflow = b
                .eval("return document.documentElement.scrollWidth - document.documentElement.clientWidth;")
                .await;
            assert!(
                overflow.as_i64().unwrap_or(1) <= 0,
                "{path} overflows a phone by {overflow}px"
            );
        }
    })
    .await;
    d.app.stop().await;
}

#[tokio::test]
async fn a_form_error_is_shown_next_to_its_field_in_the_browser() {
    let app = spawn_app().await;
    with_browser(&app.base_url, "form_error", |b| async move {
        b.goto("/").await;
        b.login("admin", ADMIN_PASSWORD).await;
        b.fill("#new-project-name", "Not Lowercase").await;
        b.fill("#new-project-image", &format!("{}/dwtest/form-error", registry()))
            .await;
        b.click("#new-project button[type=submit]").await;
        b.find("#new-project-name-error").await;
        let next_to_field = b
            .eval(
                "var input = document.getElementById('new-project-name');
                 var error = input.parentElement.querySelector('.field-error');
                 return [error ? error.textContent : null, input.value, input.getAttribute('aria-invalid')];",
            )
            .await;
        let error = next_to_field[0].as_str().unwrap_or("");
        assert!(error.contains("lowercase"), "{next_to_field}");
        assert_eq!(next_to_field[1], "Not Lowercase", "the typed value is kept");
        assert_eq!(next_to_field[2], "true");
        // Keyboard users land on it with Tab like on any input.
        assert!(b.find("#new-project-name").await.is_enabled().await.unwrap());
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn screenshots_of_the_main_pages_show_a_realistic_installation() {
    let app = spawn_app().await;
    let mut cleanup = Cleanup::new(&app);
    let api = app.admin().await;
    let shop = unique("dwtest/shop-");
    let blog = unique("dwtest/blog-");
    cleanup.repo(&shop);
    cleanup.repo(&blog);
    for tag in ["v1.4.0", "v1.5.0"] {
        push_image(&shop, tag, Variant::Web, &format!("shop {tag}")).await;
    }
    push_image(&shop, "v1.6.0", Variant::Exit1, "shop v1.6.0").await;
    push_image(&blog, "2.0", Variant::Web, "blog 2.0").await;

    let create = |name: &'static str, repo: String| {
        let api = api.clone();
        async move {
            let (status, body) = api
                .post(
                    "/api/projects",
                    json!({"name": name, "image": format!("{}/{repo}", registry())}),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
            body["id"].as_i64().unwrap()
        }
    };
    let stage = |project: i64, host: &'static str, name: &'static str, policy: &'static str| {
        let api = api.clone();
        async move {
            let (status, body) = api
                .post(
                    &format!("/api/projects/{project}/stages"),
                    json!({"name": name, "tag_policy": policy, "auto_deploy": false, "schedule": "@every 24h",
                           "hostname": format!("{name}.{host}.example.com"),
                           "container": {"port": 8080, "min_ready_seconds": 1, "health_check": {"path": "/health"}}}),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
            body["id"].as_i64().unwrap()
        }
    };
    let shop_id = create("shop", shop.clone()).await;
    let blog_id = create("blog", blog.clone()).await;
    let prod = stage(shop_id, "shop", "prod", "semver:^1").await;
    let staging = stage(shop_id, "shop", "staging", "semver:^1").await;
    let blog_prod = stage(blog_id, "blog", "prod", "tag:2.0").await;
    deploy_ok(&api, prod, "v1.4.0").await;
    deploy_ok(&api, blog_prod, "2.0").await;
    // Nine days later: v1.4.0 of prod was replaced long ago and is stale.
    deploy_ok(&api, prod, "v1.5.0").await;
    app.clock.advance(TimeDelta::days(9));
    let (status, _) = api.post("/api/containers/stale/scan", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    deploy_ok(&api, staging, "v1.5.0").await;
    let (status, failed) = api
        .post(&format!("/api/stages/{staging}/deploy"), json!({"tag": "v1.6.0"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{failed}");
    assert_eq!(failed["status"], "failed", "{failed}");
    // The policy of prod now selects v1.6.0, which a monitor-only stage only records.
    let (status, polled) = api.post(&format!("/api/stages/{prod}/poll"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{polled}");
    let bus = app.app().state().bus.clone();
    bus.publish(
        NewEvent::warn(
            Source::Poller,
            format!(
                "registry {} answered 503 for {blog}; backing off for 30 s",
                registry()
            ),
        )
        .project(blog_id)
        .detail("retry_in_s", 30),
    )
    .await;

    let update = std::env::var("DW_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1");
    let dir = if update {
        std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/screenshots"))
    } else {
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots")
    };
    with_browser(&app.base_url, "screenshots", |b| async move {
        b.resize(1280, 1000).await;
        b.goto("/").await;
        b.login("admin", ADMIN_PASSWORD).await;
        for (path, name) in [
            ("/".to_owned(), "dashboard"),
            (format!("/stages/{staging}"), "stage"),
            ("/events".to_owned(), "events"),
            ("/stale".to_owned(), "stale"),
        ] {
            b.goto(&path).await;
            b.wait_live().await;
            let file = dir.join(format!("{name}.png"));
            b.screenshot(&file)
                .await
                .unwrap_or_else(|e| panic!("saving {}: {e}", file.display()));
            eprintln!("screenshot of {path}: {}", file.display());
        }
        b.goto("/").await;
        b.wait_for_text("#dashboard-projects", "Update available").await;
        b.wait_for_text("#dashboard-deployments", "failed").await;
    })
    .await;
    drop(cleanup);
    app.stop().await;
}
