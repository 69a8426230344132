//! The web UI over plain HTTP, part one, and what every UI test shares: a cookie-keeping client
//! that does not follow redirects ([`UiSession`], [`Page`]) and an app with a deployed stage
//! ([`deployed`]). Here: pages send strangers to the login page and back, the login page explains
//! the first start and why a login failed, assets are embedded and pages send security headers,
//! and forms need the CSRF token. The rest of the UI's tests: [`crate::ui_forms`] (roles and
//! forms), [`crate::ui_pages`] (big pages, the 404 page, hostname links), [`crate::ui_browser`]
//! (a real headless Chromium) and [`crate::ui_state`] (state that is never wrong on screen).

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use crate::deploy::{
    Cleanup, Variant, create_project, create_stage, deploy_ok, push_image, registry, unique,
};
use crate::helpers::{ADMIN_PASSWORD, ApiClient, TestApp, spawn_app};

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
    pub(crate) fn mutation_forms(&self) -> usize {
        self.body.matches("method=\"post\"").count() - self.body.matches("action=\"/logout\"").count()
    }

    /// The markup of the form field holding input `id`: from the input to the end of its
    /// `<div class="field">`.
    pub(crate) fn field_of(&self, id: &str) -> &str {
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
    pub(crate) fn new(app: &TestApp) -> Self {
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
pub(crate) fn pairs(form: &[(String, String)]) -> Vec<(&str, &str)> {
    form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// A user with `role` and the password `{username}-password`.
pub(crate) async fn add_user(admin: &ApiClient, username: &str, role: &str) {
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
pub(crate) struct Deployed {
    pub(crate) app: TestApp,
    pub(crate) _cleanup: Cleanup,
    pub(crate) admin: ApiClient,
    pub(crate) project_id: i64,
    pub(crate) stage_id: i64,
    pub(crate) instance_ids: Vec<i64>,
}

pub(crate) async fn deployed(pushed: &[&str], deployed: &[&str], container: Value) -> Deployed {
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
