//! The registry webhook, `POST /api/hooks/registry?token=…`: a distribution registry configured
//! to notify the app brings a push live without waiting for the stage's (hourly) schedule;
//! envelopes, Docker Hub and Harbor payloads are matched to projects by repository and registry; bad
//! tokens are 401 and malformed payloads 400 naming the field, before anything is polled; admins
//! read the whole webhook URL and rotate a generated token (the old one stops working at once),
//! while a configured one is refused rotation.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::deploy::{Cleanup, unique};
use crate::helpers::{ApiClient, WEBHOOK_TOKEN, spawn_app, spawn_app_with};
use crate::poll::{
    LocalImages, PrivateRegistry, create_project, create_stage, deployments, registry, wait_until_serving,
};

const DISTRIBUTION_EVENTS: &str = "application/vnd.docker.distribution.events.v1+json";

fn hook_path(token: &str) -> String {
    format!("/api/hooks/registry?token={token}")
}

async fn hook(client: &ApiClient, token: &str, content_type: &str, body: &Value) -> (StatusCode, Value) {
    client
        .post_raw(&hook_path(token), content_type, body.to_string())
        .await
}

/// A distribution envelope announcing `repository:tag` pushed to `host`, with the blob event
/// that precedes every manifest push.
fn envelope(host: &str, repository: &str, tag: &str) -> Value {
    json!({"events": [
        {
            "id": "blob", "action": "push",
            "target": {"mediaType": "application/octet-stream", "repository": repository,
                       "digest": "sha256:aa", "size": 10},
            "request": {"host": host, "method": "PUT"}
        },
        {
            "id": "manifest", "action": "push",
            "target": {"mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                       "repository": repository, "tag": tag, "size": 527,
                       "digest": format!("sha256:{}", "b".repeat(64))},
            "request": {"host": host, "method": "PUT"}
        }
    ]})
}

#[tokio::test]
async fn a_registry_notification_brings_a_push_live_without_waiting_for_the_schedule() {
    let app = spawn_app().await;
    let mut images = LocalImages::default();
    let _cleanup = Cleanup::new(&app);
    let admin = app.admin().await;
    let notify = format!("{}{}", app.base_url, hook_path(WEBHOOK_TOKEN));
    let mut registry = PrivateRegistry::start(Some(&notify)).await;
    let image = format!("{}/{}", registry.host(), unique("dwtest/hook-"));
    let project_id = create_project(&admin, &image, json!({})).await;
    let stage_id = create_stage(
        &admin,
        project_id,
        "tag:live",
        json!({
            "schedule": "@every 1h",
            "container": {"port": 8080, "min_ready_seconds": 0, "health_check": {"path": "/health"}},
        }),
    )
    .await;

    images.push(&format!("{image}:live"), "web", "first push").await;
    wait_until_serving(&admin, stage_id, "first push", 60).await;
    images.push(&format!("{image}:live"), "web", "second push").await;
    wait_until_serving(&admin, stage_id, "second push", 60).await;
    let history = deployments(&admin, stage_id).await;
    assert_eq!(history.len(), 2, "{history:?}");
    assert!(
        history
            .iter()
            .all(|d| d["trigger"] == "webhook" && d["status"] == "succeeded"),
        "{history:?}"
    );
    app.stop().await;
    registry.stop().await;
}

#[tokio::test]
async fn pushes_are_matched_to_projects_by_repository_and_registry() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let anonymous = app.anonymous();
    let repository = unique("dwtest/hook-match-");
    let project_id = create_project(&admin, &format!("{}/{repository}", registry()), json!({})).await;
    let hub_id = create_project(&admin, &format!("{}/app", unique("org")), json!({})).await;
    let (_, hub) = admin.get(&format!("/api/projects/{hub_id}")).await;
    let hub_repository = hub["image"]
        .as_str()
        .and_then(|i| i.strip_prefix("docker.io/"))
        .expect("a Docker Hub image")
        .to_owned();

    let (status, body) = hook(
        &anonymous,
        WEBHOOK_TOKEN,
        DISTRIBUTION_EVENTS,
        &envelope(&registry(), &repository, "v2"),
    )
    .await;
    assert_eq!(
        (status, &body),
        (StatusCode::ACCEPTED, &json!({"matched_projects": [project_id]}))
    );
    // The same repository on another registry is another repository.
    let (status, body) = hook(
        &anonymous,
        WEBHOOK_TOKEN,
        "application/json",
        &envelope("127.0.0.1:5999", &repository, "v2"),
    )
    .await;
    assert_eq!(
        (status, &body),
        (StatusCode::ACCEPTED, &json!({"matched_projects": []}))
    );
    // Pulls and untagged pushes ask for nothing.
    let pull = json!({"events": [{"action": "pull", "target": {"repository": repository, "tag": "v2"}}]});
    let (status, body) = hook(&anonymous, WEBHOOK_TOKEN, DISTRIBUTION_EVENTS, &pull).await;
    assert_eq!(
        (status, &body["matched_projects"]),
        (StatusCode::ACCEPTED, &json!([]))
    );

    let docker_hub = json!({
        "push_data": {"tag": "latest", "pusher": "ci"},
        "repository": {"repo_name": hub_repository, "namespace": "org", "name": "app"}
    });
    let (status, body) = hook(&anonymous, WEBHOOK_TOKEN, "application/json", &docker_hub).await;
    assert_eq!(
        (status, &body),
        (StatusCode::ACCEPTED, &json!({"matched_projects": [hub_id]}))
    );

    let harbor = json!({
        "type": "PUSH_ARTIFACT", "occur_at": 1_700_000_000, "operator": "ci",
        "event_data": {
            "resources": [{"digest": format!("sha256:{}", "ab".repeat(32)), "tag": "v3",
                           "resource_url": format!("{}/{repository}:v3", registry())}],
            "repository": {"repo_full_name": repository, "namespace": "dwtest", "repo_type": "private"}
        }
    });
    let (status, body) = hook(&anonymous, WEBHOOK_TOKEN, "application/json", &harbor).await;
    assert_eq!(
        (status, &body),
        (StatusCode::ACCEPTED, &json!({"matched_projects": [project_id]}))
    );
    app.stop().await;
}

#[tokio::test]
async fn harbor_artifact_pushes_are_matched_by_repository_and_host_and_its_other_events_ask_for_nothing() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let anonymous = app.anonymous();
    let repository = unique("dwtest/hook-harbor-");
    let project_id = create_project(&admin, &format!("{}/{repository}", registry()), json!({})).await;
    let harbor = |kind: &str, host: &str| {
        json!({
            "type": kind, "occur_at": 1_700_000_000, "operator": "ci",
            "event_data": {
                "resources": [{"digest": format!("sha256:{}", "c".repeat(64)), "tag": "v3",
                               "resource_url": format!("{host}/{repository}:v3")}],
                "repository": {"name": "app", "namespace": "dwtest", "repo_full_name": repository,
                               "repo_type": "private"}
            }
        })
    };
    let (status, body) = hook(
        &anonymous,
        WEBHOOK_TOKEN,
        "application/json",
        &harbor("PUSH_ARTIFACT", &registry()),
    )
    .await;
    assert_eq!(
        (status, &body),
        (StatusCode::ACCEPTED, &json!({"matched_projects": [project_id]}))
    );
    let (status, body) = hook(
        &anonymous,
        WEBHOOK_TOKEN,
        "application/json",
        &harbor("PUSH_ARTIFACT", "harbor.example.com"),
    )
    .await;
    assert_eq!(
        (status, &body),
        (StatusCode::ACCEPTED, &json!({"matched_projects": []}))
    );
    let (status, body) = hook(
        &anonymous,
        WEBHOOK_TOKEN,
        "application/json",
        &harbor("PULL_ARTIFACT", &registry()),
    )
    .await;
    assert_eq!(
        (status, &body),
        (StatusCode::ACCEPTED, &json!({"matched_projects": []}))
    );
    let mut bad = harbor("PUSH_ARTIFACT", &registry());
    bad["event_data"]["resources"][0]["tag"] = json!("not a tag!");
    let (status, body) = hook(&anonymous, WEBHOOK_TOKEN, "application/json", &bad).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "event_data.resources[0].tag", "{body}");
    app.stop().await;
}

#[tokio::test]
async fn a_missing_or_wrong_token_is_refused_before_the_payload_is_read() {
    let app = spawn_app().await;
    let anonymous = app.anonymous();
    let body = envelope(&registry(), "team/app", "v1");
    let (status, answer) = hook(&anonymous, "wrong-token", DISTRIBUTION_EVENTS, &body).await;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (StatusCode::UNAUTHORIZED, &json!("unauthorized")),
        "{answer}"
    );
    let (status, _) = anonymous
        .post_raw("/api/hooks/registry", "application/json", body.to_string())
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = anonymous
        .post_raw(&hook_path(""), "application/json", "not even json")
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A logged-in user is no substitute for the token.
    let admin = app.admin().await;
    let (status, _) = admin.post("/api/hooks/registry", body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    app.stop().await;
}

#[tokio::test]
async fn malformed_payloads_are_refused_naming_the_field() {
    let app = spawn_app().await;
    let anonymous = app.anonymous();
    let cases = [
        (json!({"hello": "world"}), "events"),
        (json!({"events": "push"}), "events"),
        (json!({"events": [{"target": {}}]}), "events[0].action"),
        (json!({"events": [{"action": "push"}]}), "events[0].target"),
        (
            json!({"events": [{"action": "push", "target": {"tag": "v1"}}]}),
            "events[0].target.repository",
        ),
        (
            json!({"events": [{"action": "push", "target": {"tag": "v 1", "repository": "a/b"}}]}),
            "events[0].target.tag",
        ),
        (
            json!({"push_data": {"tag": "v1"}, "repository": {}}),
            "repository.repo_name",
        ),
    ];
    for (payload, field) in cases {
        let (status, body) = hook(&anonymous, WEBHOOK_TOKEN, DISTRIBUTION_EVENTS, &payload).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{payload}: {body}");
        assert_eq!(
            (&body["error"]["code"], &body["error"]["field"]),
            (&json!("validation"), &json!(field)),
            "{payload}: {body}"
        );
    }
    let (status, body) = anonymous
        .post_raw(&hook_path(WEBHOOK_TOKEN), "application/json", "{not json")
        .await;
    assert_eq!(
        (status, &body["error"]["field"]),
        (StatusCode::BAD_REQUEST, &json!("body")),
        "{body}"
    );
    let big = format!("{{\"events\": [], \"pad\": \"{}\"}}", "x".repeat(1024 * 1024));
    let (status, _) = anonymous
        .post_raw(&hook_path(WEBHOOK_TOKEN), "application/json", big)
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    app.stop().await;
}

#[tokio::test]
async fn admins_read_the_whole_webhook_url_and_rotating_the_token_retires_the_old_one_at_once() {
    let app = spawn_app_with(|config| config.webhook_token = None).await;
    let admin = app.admin().await;
    let anonymous = app.anonymous();
    let (status, first) = admin.get("/api/hooks/registry/token").await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let old = first["token"].as_str().unwrap().to_owned();
    assert_eq!(first["configured_by_env"], false);
    let host = app.base_url.trim_start_matches("http://");
    assert_eq!(
        first["url"],
        format!("http://{host}/api/hooks/registry?token={old}")
    );
    let (_, forwarded) = admin
        .send(
            admin
                .request(reqwest::Method::GET, "/api/hooks/registry/token")
                .header("x-forwarded-proto", "https")
                .header("x-forwarded-host", "dw.example.com"),
        )
        .await;
    assert_eq!(
        forwarded["url"],
        format!("https://dw.example.com/api/hooks/registry?token={old}")
    );

    let body = envelope(&registry(), "team/app", "v1");
    assert_eq!(
        hook(&anonymous, &old, DISTRIBUTION_EVENTS, &body).await.0,
        StatusCode::ACCEPTED
    );
    let member = app.user_with_role("max", "member").await;
    let (status, _) = member.post("/api/hooks/registry/token/rotate", json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, rotated) = admin.post("/api/hooks/registry/token/rotate", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new = rotated["token"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert_eq!(
        hook(&anonymous, &old, DISTRIBUTION_EVENTS, &body).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        hook(&anonymous, &new, DISTRIBUTION_EVENTS, &body).await.0,
        StatusCode::ACCEPTED
    );
    let (_, events) = admin.get("/api/events?source=auth&severity=warn").await;
    assert!(
        events.to_string().contains("webhook token was rotated"),
        "{events}"
    );
    app.stop().await;

    // A token set by DOCKER_WATCHER_WEBHOOK_TOKEN is the operator's to change.
    let configured = spawn_app().await;
    let admin = configured.admin().await;
    let (status, error) = admin.post("/api/hooks/registry/token/rotate", json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("DOCKER_WATCHER_WEBHOOK_TOKEN")
    );
    let (_, token) = admin.get("/api/hooks/registry/token").await;
    assert_eq!(
        (token["token"].as_str(), token["configured_by_env"].as_bool()),
        (Some(WEBHOOK_TOKEN), Some(true))
    );
    configured.stop().await;
}
