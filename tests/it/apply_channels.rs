//! Notification channels in configuration as code, over the real HTTP API and the real binary:
//! channels of three kinds (a signed webhook, email over STARTTLS with a login, ntfy with a
//! token) go through export → apply on an empty installation → export again unchanged, their
//! secrets travel only as `${VARIABLE}` references and arrive intact (the applied webhook signs
//! with the same secret, the applied email channel logs in to the real SMTP server); rules name
//! projects, which map to the new installation's ids; a second apply and a dry run change
//! nothing; `--prune` deletes a channel the file no longer names; channels are an admin's both
//! ways; a bad channel fails with the file, line and field and changes nothing.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::apply::{cli, export_text};
use crate::helpers::{ADMIN_PASSWORD, ApiClient, new_token_at, spawn_app};
use crate::notify::{Receiver, hmac_hex, smtp};
use crate::testenv::unique;

async fn created(client: &ApiClient, path: &str, body: Value) -> Value {
    let (status, answer) = client.post(path, body).await;
    assert_eq!(status, StatusCode::CREATED, "{path}: {answer}");
    answer
}

async fn channels(client: &ApiClient) -> Vec<Value> {
    let (status, list) = client.get("/api/notifications/channels").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    list["items"].as_array().unwrap().clone()
}

fn named<'a>(channels: &'a [Value], name: &str) -> &'a Value {
    channels
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no channel {name} in {channels:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn channels_round_trip_through_export_and_apply_with_their_secrets_from_the_environment() {
    let receiver = Receiver::start().await;
    // ntfy forwards info events (an apply is one): it posts elsewhere.
    let ntfy = Receiver::start().await;
    let smtp = smtp();
    let source = spawn_app().await;
    let admin = source.admin().await;
    // A project that sorts after the other and is made first, so that the apply (which
    // creates in name order) gives the two projects other ids than here.
    created(
        &admin,
        "/api/projects",
        json!({"name": unique("zz-first"), "image": "nginx"}),
    )
    .await;
    let project = unique("shop");
    let project_id = created(
        &admin,
        "/api/projects",
        json!({"name": project, "image": "nginx"}),
    )
    .await["id"]
        .as_i64()
        .unwrap();
    let hook_url = receiver.url("/hooks/token-in-the-path-1");
    created(
        &admin,
        "/api/notifications/channels",
        json!({"name": "ops hook", "kind": "webhook",
               "secrets": {"url": hook_url, "signing_secret": "signing-secret-1"},
               "rule": {"min_severity": "error", "project_ids": [project_id],
                        "sources": ["deployer", "stale"], "kinds": ["deploy_failed", "stale_found"]}}),
    )
    .await;
    created(
        &admin,
        "/api/notifications/channels",
        json!({"name": "mail", "kind": "email", "enabled": false,
               "settings": {"smtp_host": smtp.starttls.ip().to_string(), "smtp_port": smtp.starttls.port(),
                            "tls": "starttls", "from": "docker-watcher <dw@example.test>",
                            "to": ["ops@example.test", "dev@example.test"], "username": smtp.user,
                            "ca_pem": smtp.ca_pem},
               "secrets": {"password": smtp.password}}),
    )
    .await;
    created(
        &admin,
        "/api/notifications/channels",
        json!({"name": "phone", "kind": "ntfy", "settings": {"priority": 4, "tags": ["rocket"]},
               "secrets": {"url": ntfy.url("/ntfy-topic-secret"), "token": "tk_ntfy_secret"},
               "rule": {"min_severity": "info"}}),
    )
    .await;

    let (token, _) = new_token_at(&source.base_url, "admin", ADMIN_PASSWORD).await;
    let work = tempfile::tempdir().unwrap();
    let (done, _, stderr) = cli(&source, &token, work.path(), &["export", "-o", "stack.toml"], &[]).await;
    assert!(done, "{stderr}");
    let exported = std::fs::read_to_string(work.path().join("stack.toml")).unwrap();
    for reference in [
        "url = \"${OPS_HOOK_SECRETS_URL}\"",
        "signing_secret = \"${OPS_HOOK_SECRETS_SIGNING_SECRET}\"",
        "password = \"${MAIL_SECRETS_PASSWORD}\"",
        "token = \"${PHONE_SECRETS_TOKEN}\"",
        "url = \"${PHONE_SECRETS_URL}\"",
        &format!("projects = [\"{project}\"]"),
    ] {
        assert!(exported.contains(reference), "{reference} in\n{exported}");
    }
    for secret in [
        "token-in-the-path-1",
        "signing-secret-1",
        smtp.password.as_str(),
        "tk_ntfy_secret",
        "ntfy-topic-secret",
    ] {
        assert!(!exported.contains(secret), "{secret} was exported:\n{exported}");
    }

    // Apply it to an empty installation, the secrets from the environment.
    let target = spawn_app().await;
    let (target_token, target_admin) = new_token_at(&target.base_url, "admin", ADMIN_PASSWORD).await;
    let ntfy_url = ntfy.url("/ntfy-topic-secret");
    let env = [
        ("OPS_HOOK_SECRETS_URL", hook_url.as_str()),
        ("OPS_HOOK_SECRETS_SIGNING_SECRET", "signing-secret-1"),
        ("MAIL_SECRETS_PASSWORD", smtp.password.as_str()),
        ("PHONE_SECRETS_URL", ntfy_url.as_str()),
        ("PHONE_SECRETS_TOKEN", "tk_ntfy_secret"),
    ];
    let (done, stdout, stderr) = cli(
        &target,
        &target_token,
        work.path(),
        &["apply", "-f", "stack.toml"],
        &env,
    )
    .await;
    assert!(done, "{stdout}{stderr}");
    for line in ["+ channel ops hook", "+ channel mail", "+ channel phone"] {
        assert!(stdout.contains(line), "{line} in {stdout}");
    }
    assert!(stdout.contains("secrets.signing_secret = \"(set)\""), "{stdout}");
    for (_, secret) in &env {
        assert!(!stdout.contains(secret), "{secret} printed: {stdout}");
    }
    assert_eq!(
        export_text(&target_admin).await,
        exported,
        "export → apply → export is identical"
    );

    // The rule names the target's own project; the secrets arrived intact.
    let (_, projects) = target_admin.get("/api/projects").await;
    let target_project = projects["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == project.as_str())
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    assert_ne!(target_project, project_id, "the ids differ between installations");
    let applied = channels(&target_admin).await;
    let hook = named(&applied, "ops hook");
    assert_eq!(hook["rule"]["project_ids"], json!([target_project]));
    assert_eq!(hook["secret_keys"], json!(["signing_secret", "url"]));
    let hook_id = hook["id"].as_i64().unwrap();
    let (status, outcome) = target_admin
        .post(&format!("/api/notifications/channels/{hook_id}/test"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(outcome["delivered"], true, "{outcome}");
    let got = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].path, "/hooks/token-in-the-path-1");
    assert_eq!(
        got[0].header("x-docker-watcher-signature"),
        hmac_hex("signing-secret-1", &got[0].body),
        "signed with the applied secret"
    );
    let mail_id = named(&applied, "mail")["id"].as_i64().unwrap();
    let (_, outcome) = target_admin
        .post(&format!("/api/notifications/channels/{mail_id}/test"), json!({}))
        .await;
    assert_eq!(
        outcome["delivered"], true,
        "the applied password logs in: {outcome}"
    );

    // A second apply changes nothing and says so.
    let (done, stdout, _) = cli(
        &target,
        &target_token,
        work.path(),
        &["apply", "-f", "stack.toml"],
        &env,
    )
    .await;
    assert!(done);
    assert_eq!(stdout, "stack.toml: no changes; the installation matches it\n");

    // A dry run shows a changed rule and a changed secret (never its value), and changes nothing.
    let before = export_text(&target_admin).await;
    let changed = exported.replace("min_severity = \"info\"", "min_severity = \"warn\"");
    assert_ne!(changed, exported);
    std::fs::write(work.path().join("changed.toml"), &changed).unwrap();
    let mut rotated = env;
    rotated[4] = ("PHONE_SECRETS_TOKEN", "tk_ntfy_rotated");
    let (done, stdout, stderr) = cli(
        &target,
        &target_token,
        work.path(),
        &["apply", "-f", "changed.toml", "--dry-run"],
        &rotated,
    )
    .await;
    assert!(done, "{stderr}");
    assert!(
        stdout.contains("~ channel phone\n    rule.min_severity: \"info\" -> \"warn\"\n    secrets.token: \"(set)\" -> \"(set)\""),
        "{stdout}"
    );
    assert!(!stdout.contains("tk_ntfy_rotated"), "{stdout}");
    assert!(stdout.contains("nothing was changed"), "{stdout}");
    assert_eq!(
        export_text(&target_admin).await,
        before,
        "a dry run changes nothing"
    );
    let (done, stdout, _) = cli(
        &target,
        &target_token,
        work.path(),
        &["apply", "-f", "changed.toml"],
        &rotated,
    )
    .await;
    assert!(done);
    assert!(stdout.contains("0 created, 1 updated, 0 deleted"), "{stdout}");
    let phone = named(&channels(&target_admin).await, "phone").clone();
    assert_eq!(phone["rule"]["min_severity"], "warn");

    // --prune deletes the channel the file no longer names.
    let without_phone = without_tables(&changed, "[notifications.phone");
    assert!(!without_phone.contains("phone"), "{without_phone}");
    std::fs::write(work.path().join("pruned.toml"), &without_phone).unwrap();
    let (done, stdout, stderr) = cli(
        &target,
        &target_token,
        work.path(),
        &["apply", "-f", "pruned.toml", "--prune"],
        &env,
    )
    .await;
    assert!(done, "{stderr}");
    assert!(stdout.contains("- channel phone"), "{stdout}");
    let left: Vec<String> = channels(&target_admin)
        .await
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(left, vec!["mail", "ops hook"]);
}

/// `text` without the tables whose headers start with `prefix` (a table and its sub-tables).
fn without_tables(text: &str, prefix: &str) -> String {
    let mut kept = String::new();
    let mut skipping = false;
    for line in text.split_inclusive('\n') {
        if line.starts_with('[') {
            skipping = line.starts_with(prefix);
        }
        if !skipping {
            kept.push_str(line);
        }
    }
    kept
}

#[tokio::test]
async fn channels_are_an_admins_to_apply_and_to_export() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let receiver = Receiver::start().await;
    created(
        &admin,
        "/api/notifications/channels",
        json!({"name": "team", "kind": "slack", "secrets": {"url": receiver.url("/slack-secret-path")}}),
    )
    .await;
    let member = app.user_with_role("mo", "member").await;
    let file = "[projects.site]\nimage = \"nginx\"\n\n[notifications.team]\nkind = \"discord\"\nsecrets = { url = \"${TEAM_URL}\" }\n";
    let (status, body) = member
        .post(
            "/api/apply",
            json!({"content": file, "variables": {"TEAM_URL": "https://discord.example.com/x"}}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["field"], "notifications");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("stack.toml:4:2: notifications: ") && message.contains("admin"),
        "{message}"
    );
    let (_, projects) = member.get("/api/projects").await;
    assert_eq!(projects["items"], json!([]), "nothing of the file was applied");

    // A member's export leaves the channels out and says so; applying it with --prune keeps them.
    let (status, exported) = {
        let response = member
            .request(reqwest::Method::GET, "/api/export")
            .send()
            .await
            .unwrap();
        (response.status(), response.text().await.unwrap())
    };
    assert_eq!(status, StatusCode::OK);
    assert!(
        !exported.lines().any(|l| l.starts_with("[notifications")),
        "{exported}"
    );
    assert!(!exported.contains("team"), "{exported}");
    assert!(
        exported.contains("exporting them needs the admin role"),
        "{exported}"
    );
    let (status, body) = member
        .post("/api/apply", json!({"content": exported, "prune": true}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["changed"], false, "{body}");
    assert_eq!(channels(&admin).await.len(), 1);
    assert!(export_text(&admin).await.contains("[notifications.team]"));

    // The admin applies the same file: a kind cannot change, which is refused before anything.
    let (status, body) = admin
        .post(
            "/api/apply",
            json!({"content": file, "variables": {"TEAM_URL": "https://discord.example.com/x"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["field"], "notifications.team.kind");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("stack.toml:5:8: notifications.team.kind: "),
        "{body}"
    );
    let (_, projects) = admin.get("/api/projects").await;
    assert_eq!(projects["items"], json!([]), "refused whole");
}

#[tokio::test]
async fn a_bad_channel_names_the_file_the_line_and_the_field_and_changes_nothing() {
    let app = spawn_app().await;
    let (token, admin) = new_token_at(&app.base_url, "admin", ADMIN_PASSWORD).await;
    let work = tempfile::tempdir().unwrap();
    let good = "[projects.api]\nimage = \"nginx\"\n\n[notifications.ops]\nkind = \"ntfy\"\nsecrets = { url = \"${OPS_URL}\" }\nrule = { min_severity = \"error\", projects = [\"api\"] }\n";
    let env = [("OPS_URL", "https://ntfy.example.com/topic")];
    let cases = [
        (
            good.replace("\"ntfy\"", "\"pager\""),
            "stack.toml:5:8: notifications.ops.kind",
        ),
        (
            good.replace("\"error\"", "\"fatal\""),
            "stack.toml:7:25: notifications.ops.rule.min_severity",
        ),
        (
            format!("{good}settings = {{ priority = 9 }}\n"),
            "stack.toml:8:25: notifications.ops.settings.priority",
        ),
        (
            good.replace("\"${OPS_URL}\"", "\"https://ntfy.example.com/literal\""),
            "stack.toml:6:19: notifications.ops.secrets.url",
        ),
        (
            good.replace("\"${OPS_URL}\"", "\"${NOT_SET_ANYWHERE}\""),
            "stack.toml:6:19: notifications.ops.secrets.url",
        ),
        (
            good.replace("secrets = { url = \"${OPS_URL}\" }\n", ""),
            ": notifications.ops.secrets.url: a ntfy channel needs it",
        ),
        (
            good.replace("[\"api\"]", "[\"nowhere\"]"),
            "notifications.ops.rule.projects",
        ),
    ];
    for (text, expected) in cases {
        std::fs::write(work.path().join("stack.toml"), &text).unwrap();
        let (done, stdout, stderr) =
            cli(&app, &token, work.path(), &["apply", "-f", "stack.toml"], &env).await;
        assert!(!done, "{text} was applied: {stdout}");
        assert!(
            stderr.contains(expected),
            "expected {expected} for\n{text}\ngot {stderr}"
        );
        assert!(!stderr.contains("literal"), "{stderr}");
    }
    let (_, projects) = admin.get("/api/projects").await;
    assert_eq!(projects["items"], json!([]), "nothing was created");
    assert!(channels(&admin).await.is_empty());
    // The good file applies.
    std::fs::write(work.path().join("stack.toml"), good).unwrap();
    let (done, stdout, stderr) = cli(&app, &token, work.path(), &["apply", "-f", "stack.toml"], &env).await;
    assert!(done, "{stdout}{stderr}");
    assert!(stdout.contains("2 created, 0 updated, 0 deleted"), "{stdout}");
}
