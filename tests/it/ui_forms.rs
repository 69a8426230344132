//! The web UI over plain HTTP, forms and roles: each role sees only the controls it may use
//! and the server refuses the rest anyway, a refused form comes back with the error next to its
//! field, stage secrets are set, replaced and removed from the stage form and never shown,
//! destructive posts only ask until they are confirmed, and a new API token is shown once.

use reqwest::StatusCode;
use serde_json::json;

use crate::deploy::{registry, unique};
use crate::helpers::{ADMIN_PASSWORD, ApiClient, spawn_app};
use crate::ui::{UiSession, add_user, deployed, pairs};

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
    // Nothing is stale, so there is no bulk control to show (`ui_state` shows it with stale
    // instances, `ui_browser` uses it).
    admin.get("/stale").await.assert_lacks("id=\"bulk-cleanup\"");
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
                ("proxy_hold_seconds", "30"),
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
