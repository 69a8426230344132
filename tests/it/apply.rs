//! Configuration as code, end to end over the real HTTP API and the real binary: `export` →
//! `apply` on an empty installation → `export` again gives the same file; the apply takes
//! effect live (a proxied hostname answers, a new stage is polled at once); a second apply
//! changes nothing; `--dry-run` changes nothing; `--prune` deletes what the file no longer
//! names; bad files fail with the file, line and field and change nothing; roles are the API's.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::process::Command;

use crate::deploy::{Cleanup, Variant, push_image};
use crate::helpers::{ADMIN_PASSWORD, ApiClient, TestApp, new_token_at, spawn_app};
use crate::testenv::{registry, unique};

/// Runs `docker-watcher ARGS` against `app` with `token`, in `dir`, with extra environment;
/// its success, stdout and stderr.
pub async fn cli(
    app: &TestApp,
    token: &str,
    dir: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_docker-watcher"))
        .current_dir(dir)
        .args(args)
        .env("DOCKER_WATCHER_URL", &app.base_url)
        .env("DOCKER_WATCHER_TOKEN", token)
        .env_remove("DOCKER_WATCHER_CONFIG")
        .envs(env.iter().copied())
        .output()
        .await
        .expect("the binary runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// An HTTP server on 127.0.0.1 that answers every request with `body`.
async fn upstream(body: &'static str) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf).await;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(answer.as_bytes()).await;
            });
        }
    });
    addr
}

pub async fn export_text(client: &ApiClient) -> String {
    let response = client
        .request(reqwest::Method::GET, "/api/export")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/toml")
    );
    response.text().await.unwrap()
}

async fn ok(client: &ApiClient, method: reqwest::Method, path: &str, body: Value) -> Value {
    let (status, answer) = client.send(client.request(method, path).json(&body)).await;
    assert!(status.is_success(), "{path}: {status} {answer}");
    answer
}

#[tokio::test(flavor = "multi_thread")]
async fn export_apply_to_an_empty_installation_and_export_again_is_identical_and_live() {
    let source = spawn_app().await;
    let admin = source.admin().await;
    let project = unique("shop");
    let repo = format!("dwtest/{}", unique("apply"));
    let mut cleanup = Cleanup::new(&source);
    cleanup.repo(&repo);
    push_image(&repo, "v1", Variant::Web, "apply v1").await;
    let upstream = upstream("answered through an applied proxy").await;

    use reqwest::Method;
    ok(
        &admin,
        Method::PATCH,
        "/api/settings",
        json!({"stale_threshold_days": 14, "base_domain": "apps.example.test"}),
    )
    .await;
    let created = ok(
        &admin,
        Method::POST,
        "/api/projects",
        json!({"name": project, "image": format!("{}/{repo}", registry()),
               "registry_username": "ci", "registry_password": "registry-pass-1"}),
    )
    .await;
    let id = created["id"].as_i64().unwrap();
    ok(
        &admin,
        Method::POST,
        &format!("/api/projects/{id}/stages"),
        json!({"name": "prod", "tag_policy": "tag:v1", "auto_deploy": false, "schedule": "@every 1h",
               "hostname": format!("{project}.example.test"), "min_release_age": "10m",
               "container": {"port": 8080, "env": {"RUST_LOG": "info", "MODE": "prod"},
                             "health_check": {"path": "/health"}, "memory_mb": 256, "cpus": 0.5,
                             "command": ["/bin/sh", "-c", "exec httpd -f -p 8080"]}}),
    )
    .await;
    ok(
        &admin,
        Method::POST,
        &format!("/api/projects/{id}/stages"),
        json!({"name": "dev", "tag_policy": "glob:v*", "auto_deploy": false, "max_instances": 3}),
    )
    .await;
    let proxied = format!("{}.example.test", unique("grafana"));
    ok(
        &admin,
        Method::POST,
        "/api/proxies",
        json!({"name": "Grafana", "hostname": proxied, "target_url": format!("http://{upstream}/"), "preserve_host": true}),
    )
    .await;

    // Export with the binary, as a CI job would.
    let (token, _) = new_token_at(&source.base_url, "admin", ADMIN_PASSWORD).await;
    let work = tempfile::tempdir().unwrap();
    let (done, _, stderr) = cli(&source, &token, work.path(), &["export", "-o", "stack.toml"], &[]).await;
    assert!(done, "{stderr}");
    let exported = std::fs::read_to_string(work.path().join("stack.toml")).unwrap();
    assert_eq!(
        exported,
        export_text(&admin).await,
        "the binary writes what the API answers"
    );
    let reference = format!("{}_REGISTRY_PASSWORD", project.to_ascii_uppercase());
    assert!(
        exported.contains(&format!("registry_password = \"${{{reference}}}\"")),
        "{exported}"
    );
    assert!(
        !exported.contains("registry-pass-1"),
        "secrets are never exported"
    );

    // Apply it to an empty installation.
    let target = spawn_app().await;
    let mut target_cleanup = Cleanup::new(&target);
    target_cleanup.repo(&repo);
    let (target_token, target_admin) = new_token_at(&target.base_url, "admin", ADMIN_PASSWORD).await;
    let secret_env = [(reference.as_str(), "registry-pass-1")];
    let (done, stdout, stderr) = cli(
        &target,
        &target_token,
        work.path(),
        &["apply", "-f", "stack.toml"],
        &secret_env,
    )
    .await;
    assert!(done, "{stdout}{stderr}");
    assert!(stdout.contains(&format!("+ project {project}")), "{stdout}");
    assert!(
        stdout.contains("applied stack.toml: 4 created, 1 updated, 0 deleted"),
        "{stdout}"
    );
    assert!(!stdout.contains("registry-pass-1"), "{stdout}");
    assert_eq!(
        export_text(&target_admin).await,
        exported,
        "export → apply → export is identical"
    );

    // Live: the proxy routes at once, the new stages are polled at once.
    let response = reqwest::Client::new()
        .get(format!("http://{}/", target.app().proxy_addr()))
        .header("host", &proxied)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.text().await.unwrap(),
        "answered through an applied proxy"
    );
    let (_, stages) = target_admin.get("/api/projects").await;
    let target_project = stages["items"][0]["id"].as_i64().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, stages) = target_admin
            .get(&format!("/api/projects/{target_project}/stages"))
            .await;
        let prod = stages["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "prod")
            .cloned();
        if prod.is_some_and(|s| s["available_tag"] == "v1") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the applied stage was not polled: {stages}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The secret is the same, sealed with the target's key.
    let sealed = target
        .app()
        .state()
        .store
        .project_registry_password(target_project)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        target.app().state().secrets.open(&sealed).unwrap(),
        "registry-pass-1"
    );

    // Idempotent: a second apply changes nothing and says so.
    let (done, stdout, _) = cli(
        &target,
        &target_token,
        work.path(),
        &["apply", "-f", "stack.toml"],
        &secret_env,
    )
    .await;
    assert!(done);
    assert_eq!(stdout, "stack.toml: no changes; the installation matches it\n");
    // A changed secret is an update, shown without its value.
    let (done, stdout, _) = cli(
        &target,
        &target_token,
        work.path(),
        &["apply", "-f", "stack.toml", "--dry-run"],
        &[(reference.as_str(), "registry-pass-2")],
    )
    .await;
    assert!(done);
    assert!(
        stdout.contains("registry_password: \"(set)\" -> \"(set)\""),
        "{stdout}"
    );
    assert!(!stdout.contains("registry-pass-2"), "{stdout}");
    drop((cleanup, target_cleanup));
}

#[tokio::test]
async fn dry_run_changes_nothing_and_prune_deletes_what_the_file_no_longer_names() {
    let app = spawn_app().await;
    let (token, admin) = new_token_at(&app.base_url, "admin", ADMIN_PASSWORD).await;
    let work = tempfile::tempdir().unwrap();
    let file = format!(
        "[projects.web]\nimage = \"{}/dwtest/web\"\n\n[projects.web.stages.prod]\ntag_policy = \"tag:v1\"\nauto_deploy = false\n\n[projects.web.stages.old]\ntag_policy = \"tag:v0\"\nauto_deploy = false\n\n[proxies.\"old.example.test\"]\ntarget_url = \"http://127.0.0.1:9/\"\n",
        registry()
    );
    std::fs::write(work.path().join("stack.toml"), &file).unwrap();
    let (done, stdout, stderr) = cli(&app, &token, work.path(), &["apply", "-f", "stack.toml"], &[]).await;
    assert!(done, "{stdout}{stderr}");
    let before = export_text(&admin).await;

    // Change a policy, drop a stage and the proxy.
    let changed = file
        .replace("tag:v1", "semver:^1")
        .replace(
            "[projects.web.stages.old]\ntag_policy = \"tag:v0\"\nauto_deploy = false\n\n",
            "",
        )
        .replace(
            "[proxies.\"old.example.test\"]\ntarget_url = \"http://127.0.0.1:9/\"\n",
            "[proxies]\n",
        );
    std::fs::write(work.path().join("stack.toml"), &changed).unwrap();
    let (done, stdout, _) = cli(
        &app,
        &token,
        work.path(),
        &["apply", "-f", "stack.toml", "--prune", "--dry-run"],
        &[],
    )
    .await;
    assert!(done);
    assert!(
        stdout.contains("~ stage web/prod\n    tag_policy: \"tag:v1\" -> \"semver:^1\""),
        "{stdout}"
    );
    assert!(stdout.contains("- stage web/old"), "{stdout}");
    assert!(stdout.contains("- proxy old.example.test"), "{stdout}");
    assert!(stdout.contains("nothing was changed"), "{stdout}");
    assert_eq!(export_text(&admin).await, before, "a dry run changes nothing");

    // Without --prune, only the update.
    let (done, stdout, _) = cli(&app, &token, work.path(), &["apply", "-f", "stack.toml"], &[]).await;
    assert!(done);
    assert!(stdout.contains("0 created, 1 updated, 0 deleted"), "{stdout}");
    let (done, stdout, _) = cli(
        &app,
        &token,
        work.path(),
        &["apply", "-f", "stack.toml", "--prune"],
        &[],
    )
    .await;
    assert!(done);
    assert!(stdout.contains("0 created, 0 updated, 2 deleted"), "{stdout}");
    let after = export_text(&admin).await;
    assert!(
        !after.contains("old.example.test") && !after.contains("stages.old"),
        "{after}"
    );
    assert!(after.contains("semver:^1"), "{after}");
}

#[tokio::test]
async fn bad_files_name_the_file_the_line_and_the_field_and_change_nothing() {
    let app = spawn_app().await;
    let (token, admin) = new_token_at(&app.base_url, "admin", ADMIN_PASSWORD).await;
    let work = tempfile::tempdir().unwrap();
    let good = "[projects.api]\nimage = \"nginx\"\n\n[projects.api.stages.prod]\ntag_policy = \"tag:v1\"\nhostname = \"api.example.test\"\n";
    let cases = [
        (
            good.replace("tag:v1", "always"),
            "stack.toml:5:14: projects.api.stages.prod.tag_policy",
        ),
        (
            good.replace("\"api.example.test\"", "\"not a host\""),
            "stack.toml:6:12: projects.api.stages.prod.hostname",
        ),
        (
            format!("{good}container = {{ port = 0 }}\n"),
            "stack.toml:7:22: projects.api.stages.prod.container.port",
        ),
        (
            format!("{good}max_instance = 3\n"),
            "stack.toml:7:1: projects.api.stages.prod",
        ),
        (
            good.replace("image = \"nginx\"", "image = \"nginx:1.25\""),
            "stack.toml:2:9: projects.api.image",
        ),
        (
            format!("{good}[settings]\nevent_retention_days = \"long\"\n"),
            "stack.toml:8:24: settings.event_retention_days",
        ),
        (
            good.replace(
                "[projects.api]\n",
                "[projects.api]\nregistry_password = \"${NOT_SET_ANYWHERE}\"\n",
            ),
            "stack.toml:2:21: projects.api.registry_password",
        ),
        ("[projects.api\n".to_owned(), "stack.toml:1:"),
    ];
    for (text, expected) in cases {
        std::fs::write(work.path().join("stack.toml"), &text).unwrap();
        let (done, stdout, stderr) =
            cli(&app, &token, work.path(), &["apply", "-f", "stack.toml"], &[]).await;
        assert!(!done, "{text} was applied: {stdout}");
        assert!(
            stderr.contains(expected),
            "expected {expected} for\n{text}\ngot {stderr}"
        );
    }
    // Over HTTP the field is the dotted path.
    let (status, body) = admin
        .post(
            "/api/apply",
            json!({"file_name": "ci/stack.toml", "content": good.replace("tag:v1", "always")}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "projects.api.stages.prod.tag_policy");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("ci/stack.toml:5:14: "),
        "{body}"
    );
    let (_, projects) = admin.get("/api/projects").await;
    assert_eq!(projects["items"], json!([]), "nothing was created");
}

#[tokio::test]
async fn a_member_applies_projects_but_not_settings_or_proxies_and_a_refusal_changes_nothing() {
    let app = spawn_app().await;
    let member = app.user_with_role("mia", "member").await;
    let projects =
        "[projects.site]\nimage = \"nginx\"\n\n[projects.site.stages.prod]\ntag_policy = \"tag:v1\"\n";
    let with_settings = format!("[settings]\nstale_threshold_days = 3\n\n{projects}");
    let (status, body) = member.post("/api/apply", json!({"content": with_settings})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["field"], "settings");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("admin"),
        "{body}"
    );
    let (_, listed) = member.get("/api/projects").await;
    assert_eq!(listed["items"], json!([]), "nothing of the file was applied");

    let (status, body) = member.post("/api/apply", json!({"content": projects})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["summary"], "2 created, 0 updated, 0 deleted");
    let (status, body) = member
        .post("/api/apply", json!({"content": projects, "dry_run": true}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["changed"], false);
    // Deleting a project is an admin's, as in the API.
    let (status, body) = member
        .post("/api/apply", json!({"content": "[projects]\n", "prune": true}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let viewer = app.user_with_role("vic", "viewer").await;
    let (status, _) = viewer.post("/api/apply", json!({"content": projects})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // The file holds plain env values, which viewers may not read.
    let (status, _) = viewer.get("/api/export").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = member.get("/api/export").await;
    assert_eq!(status, StatusCode::OK);
}
