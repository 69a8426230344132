//! Secret variables (SPEC §3 "Workloads", `secret_env`), end to end on the real binary with a
//! passphrase key and debug logging: a secret reaches the container's environment, and no API
//! answer (viewer, member, admin), event, page, container log through the API, log line of
//! docker-watcher, nor byte of the data dir (database, WAL) carries it. Viewers see env keys,
//! not values. PATCH semantics: a string sets or replaces, `null` removes, absent keys stay.

use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::deploy::{Variant, create_project, deploy_ok, fetch, push_image, unique};
use crate::helpers::{ApiClient, Binary, InstallationCleanup, admin_client, assert_field_error, user_client};

/// Every file under `dir`, recursively, with its bytes.
pub fn files_under(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("a readable dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                found.push((path.display().to_string(), bytes));
            }
        }
    }
    found
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// The raw text `client` gets at `path` (a page, an API answer).
async fn text(client: &ApiClient, path: &str) -> String {
    let response = client
        .request(reqwest::Method::GET, path)
        .send()
        .await
        .expect("the request is sent");
    assert!(
        response.status().is_success(),
        "GET {path}: {}",
        response.status()
    );
    response.text().await.expect("a body")
}

#[tokio::test]
async fn a_secret_reaches_the_container_and_nothing_else_ever_shows_it() {
    let repo = unique("dwtest/secrets-");
    push_image(&repo, "v1", Variant::App, "secrets v1").await;
    let data_dir = tempfile::tempdir().expect("a data dir");
    let log_dir = tempfile::tempdir().expect("a log dir");
    let log = log_dir.path().join("docker-watcher.log");
    let binary = Binary::start_with(
        data_dir.path(),
        &log,
        &[
            ("DOCKER_WATCHER_LOG", "debug"),
            ("DOCKER_WATCHER_SECRET_KEY", "a passphrase only these tests know"),
        ],
    )
    .await;
    let admin = admin_client(&binary.base_url).await;
    let member = user_client(&admin, &unique("member"), "member").await;
    let viewer = user_client(&admin, &unique("viewer"), "viewer").await;
    let first = unique("first-secret-value-");
    let second = unique("second-secret-value-");
    let other = unique("other-secret-value-");
    let plain = unique("plain-value-");

    let project_id = create_project(&admin, &repo).await;
    let (status, stage) = member
        .post(
            &format!("/api/projects/{project_id}/stages"),
            json!({
                "name": "prod",
                "tag_policy": "tag:v1",
                "auto_deploy": false,
                "container": {
                    "port": 8080,
                    "min_ready_seconds": 1,
                    // The app prints its environment at start: the logs API must mask it.
                    "env": {"PLAIN_SETTING": plain, "APP_PRINT_ENV": "1"},
                    "secret_env": {"DB_PASSWORD": first},
                },
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{stage}");
    let mut cleanup = InstallationCleanup::default();
    let stage_id = stage["id"].as_i64().expect("a stage id");
    assert_eq!(
        stage["container"]["secret_env_keys"],
        json!(["DB_PASSWORD"]),
        "{stage}"
    );
    assert!(stage["container"].get("secret_env").is_none(), "{stage}");

    let instance = deploy_ok(&member, stage_id, "v1").await;
    cleanup.installation_of(&instance);
    let (code, value) = fetch(&instance, "/cgi-bin/env?DB_PASSWORD")
        .await
        .expect("the app answers");
    assert_eq!(
        (code, value.as_str()),
        (200, first.as_str()),
        "the secret is in the container"
    );
    let (_, shown) = fetch(&instance, "/cgi-bin/env?PLAIN_SETTING")
        .await
        .expect("the app answers");
    assert_eq!(shown, plain);

    // PATCH: replace one, add one (the container is sent back as GET answered it).
    let mut container = stage["container"].clone();
    container["secret_env"] = json!({"DB_PASSWORD": second, "OTHER_TOKEN": other});
    let (status, patched) = member
        .patch(
            &format!("/api/stages/{stage_id}"),
            json!({"container": container}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(
        patched["container"]["secret_env_keys"],
        json!(["DB_PASSWORD", "OTHER_TOKEN"])
    );
    // Absent keys are kept; `null` removes.
    let mut container = patched["container"].clone();
    container["port"] = json!(8080);
    let (status, kept) = member
        .patch(
            &format!("/api/stages/{stage_id}"),
            json!({"container": container}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{kept}");
    assert_eq!(
        kept["container"]["secret_env_keys"],
        json!(["DB_PASSWORD", "OTHER_TOKEN"])
    );
    let mut container = kept["container"].clone();
    container["secret_env"] = json!({"OTHER_TOKEN": null});
    let (status, removed) = member
        .patch(
            &format!("/api/stages/{stage_id}"),
            json!({"container": container}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{removed}");
    assert_eq!(removed["container"]["secret_env_keys"], json!(["DB_PASSWORD"]));
    // Bad secrets are refused, naming the key and never quoting the value.
    let mut container = removed["container"].clone();
    container["secret_env"] = json!({"NOT-A-NAME": other});
    let (status, body) = member
        .patch(
            &format!("/api/stages/{stage_id}"),
            json!({"container": container}),
        )
        .await;
    assert_field_error(status, &body, "container.secret_env.NOT-A-NAME");
    assert!(!body.to_string().contains(&other), "{body}");
    let mut container = removed["container"].clone();
    container["secret_env"] = json!({"PLAIN_SETTING": other});
    let (status, body) = member
        .patch(
            &format!("/api/stages/{stage_id}"),
            json!({"container": container}),
        )
        .await;
    assert_field_error(status, &body, "container.secret_env.PLAIN_SETTING");

    // The new value reaches the next container.
    let (status, body) = member
        .post(&format!("/api/stages/{stage_id}/deploy"), json!({"tag": "v1"}))
        .await;
    assert!(status.is_success(), "{body}");
    let (_, instances) = admin.get(&format!("/api/instances?stage_id={stage_id}")).await;
    let current = instances["items"]
        .as_array()
        .and_then(|items| items.iter().find(|i| i["is_current"] == true).cloned())
        .expect("a current instance");
    let instance_id = current["id"].as_i64().expect("an instance id");

    // Viewers see names, not values; members and admins see plain values.
    let (_, as_viewer) = viewer.get(&format!("/api/stages/{stage_id}")).await;
    assert_eq!(as_viewer["container"]["env"], Value::Null, "{as_viewer}");
    assert_eq!(
        as_viewer["container"]["env_keys"],
        json!(["APP_PRINT_ENV", "PLAIN_SETTING"])
    );
    assert_eq!(as_viewer["container"]["secret_env_keys"], json!(["DB_PASSWORD"]));
    let (_, as_member) = member.get(&format!("/api/stages/{stage_id}")).await;
    assert_eq!(as_member["container"]["env"]["PLAIN_SETTING"], json!(plain));
    let viewer_page = text(&viewer, &format!("/stages/{stage_id}")).await;
    assert!(viewer_page.contains("PLAIN_SETTING") && viewer_page.contains("DB_PASSWORD"));
    assert!(
        !viewer_page.contains(&plain),
        "a viewer's page shows no env value"
    );

    // The container printed its environment; the logs API masks the secret.
    let logs = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let (_, logs) = admin.get(&format!("/api/instances/{instance_id}/logs")).await;
            if logs.to_string().contains("DB_PASSWORD=") {
                return logs;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the app's environment in its logs");
    assert!(logs.to_string().contains("DB_PASSWORD=[secret]"), "{logs}");

    // The first container printed the first value: its logs are masked with what it was given.
    let first_id = instance["id"].as_i64().expect("an instance id");
    let (_, old_logs) = admin.get(&format!("/api/instances/{first_id}/logs")).await;
    assert!(
        old_logs.to_string().contains("DB_PASSWORD=[secret]"),
        "{old_logs}"
    );

    let secrets = [&first, &second, &other];
    let mut answers = Vec::new();
    for client in [&admin, &member, &viewer] {
        for path in [
            format!("/api/stages/{stage_id}"),
            format!("/api/projects/{project_id}/stages"),
            format!("/api/projects/{project_id}"),
            "/api/instances".to_owned(),
            format!("/api/instances/{instance_id}"),
            format!("/api/instances/{instance_id}/logs"),
            format!("/api/instances/{first_id}/logs"),
            format!("/api/deployments?stage_id={stage_id}"),
            "/api/events?per_page=500".to_owned(),
            "/api/events?per_page=500&severity=info".to_owned(),
            "/api/containers/stale".to_owned(),
            format!("/stages/{stage_id}"),
            format!("/stages/{stage_id}?logs={instance_id}"),
            format!("/projects/{project_id}"),
            "/events".to_owned(),
            "/".to_owned(),
        ] {
            answers.push((path.clone(), text(client, &path).await));
        }
    }
    let member_page = text(&member, &format!("/stages/{stage_id}")).await;
    assert!(
        member_page.contains(&plain),
        "members see plain values in the form"
    );
    for (path, answer) in &answers {
        for secret in secrets {
            assert!(!answer.contains(secret.as_str()), "GET {path} shows a secret");
        }
    }
    for (file, bytes) in files_under(data_dir.path()) {
        for secret in secrets {
            assert!(!contains(&bytes, secret), "{file} holds a secret in clear");
        }
    }
    binary.terminate().await;
    for (file, bytes) in files_under(data_dir.path())
        .into_iter()
        .chain(files_under(log_dir.path()))
    {
        for secret in secrets {
            assert!(!contains(&bytes, secret), "{file} holds a secret in clear");
        }
    }
    let log = std::fs::read_to_string(&log).expect("the log");
    assert!(
        log.contains("DEBUG") && log.contains("deployed"),
        "the log is the debug log of a deploy:\n{}",
        &log[..log.len().min(2000)]
    );
    drop(cleanup);
}

#[tokio::test]
async fn the_openapi_document_describes_secret_env_as_write_only() {
    let app = crate::helpers::spawn_app().await;
    let (status, doc) = app.anonymous().get("/api/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let schemas = &doc["components"]["schemas"];
    let request = &schemas["ContainerRequest"]["properties"];
    assert!(request["secret_env"].is_object(), "{request}");
    let response = &schemas["ContainerResponse"]["properties"];
    assert!(response["secret_env_keys"].is_object(), "{response}");
    assert!(response.get("secret_env").is_none(), "{response}");
    assert!(response["env_keys"].is_object(), "{response}");
    app.stop().await;
}
