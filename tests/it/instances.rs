//! Instances over HTTP against the real Docker engine: listing with filters, stop / start /
//! restart of a deployed instance (and what its published port answers after each), its logs,
//! removal (refused for the running current instance, fine when the container is already gone),
//! and a 4xx naming the problem for every bad input and role.

use reqwest::StatusCode;
use serde_json::json;

use crate::deploy::{
    Cleanup, Variant, assert_instance_shape, create_project, create_stage, deploy_ok, fetch, instance,
    push_image, unique,
};
use crate::helpers::{assert_field_error, spawn_app};

fn docker_inspect_succeeds(container: &str) -> bool {
    std::process::Command::new("docker")
        .args(["inspect", container])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[tokio::test]
async fn an_instance_can_be_stopped_started_restarted_and_listed() {
    let app = spawn_app().await;
    let mut cleanup = Cleanup::new(&app);
    let repo = unique("dwtest/instances-");
    cleanup.repo(&repo);
    let admin = app.admin().await;
    push_image(&repo, "v1", Variant::Web, "serving").await;
    let project_id = create_project(&admin, &repo).await;
    let stage_id = create_stage(&admin, project_id, "tag:v1", json!({})).await;
    let deployed = deploy_ok(&admin, stage_id, "v1").await;
    let id = deployed["id"].as_i64().expect("an id");
    let member = app.user_with_role("mia", "member").await;

    let (status, stopped) = member.post(&format!("/api/instances/{id}/stop"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{stopped}");
    assert_instance_shape(&stopped);
    assert_eq!(stopped["status"], "stopped");
    assert!(stopped["stopped_at"].is_string(), "{stopped}");
    assert!(
        fetch(&deployed, "/").await.is_none(),
        "a stopped container does not answer"
    );

    let (status, started) = member
        .post(&format!("/api/instances/{id}/start"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{started}");
    assert_eq!(
        (&started["status"], &started["is_current"]),
        (&json!("running"), &json!(true))
    );
    assert!(
        started["stopped_at"].is_null() && started["last_alive_at"].is_string(),
        "{started}"
    );
    let answer = poll_answer(&started).await;
    assert_eq!(answer.as_deref(), Some("serving"));

    let (status, restarted) = member
        .post(&format!("/api/instances/{id}/restart"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{restarted}");
    assert_eq!(restarted["status"], "running");
    assert_eq!(poll_answer(&restarted).await.as_deref(), Some("serving"));

    let (status, logs) = member.get(&format!("/api/instances/{id}/logs")).await;
    assert_eq!(status, StatusCode::OK, "{logs}");
    assert!(logs["lines"].is_array(), "{logs}");

    // Filters.
    let (status, list) = member
        .get(&format!(
            "/api/instances?project_id={project_id}&stage_id={stage_id}&status=running"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let items = list["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{list}");
    assert_instance_shape(&items[0]);
    let (_, list) = member
        .get(&format!("/api/instances?stage_id={stage_id}&status=stopped"))
        .await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(0), "{list}");
    let (_, list) = member.get("/api/instances?project_id=999999").await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(0), "{list}");
    let (_, list) = member.get("/api/instances?status=").await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "{list}");

    // The stop/start cycle is in the event log, with the actor.
    let (_, events) = member.get("/api/events?source=deployer").await;
    let messages: Vec<&str> = events["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| e["details"]["actor"] == "mia")
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert_eq!(messages.len(), 3, "{events}");
    app.stop().await;
}

/// What an instance answers at `/`, trying for a few seconds (a started httpd needs a moment).
async fn poll_answer(instance: &serde_json::Value) -> Option<String> {
    for _ in 0..40 {
        if let Some((200, text)) = fetch(instance, "/").await {
            return Some(text.trim().to_owned());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    None
}

#[tokio::test]
async fn the_running_current_instance_is_removed_only_once_stopped() {
    let app = spawn_app().await;
    let mut cleanup = Cleanup::new(&app);
    let repo = unique("dwtest/instances-rm-");
    cleanup.repo(&repo);
    let admin = app.admin().await;
    push_image(&repo, "v1", Variant::Web, "one").await;
    let project_id = create_project(&admin, &repo).await;
    let stage_id = create_stage(&admin, project_id, "tag:v1", json!({})).await;
    let first = deploy_ok(&admin, stage_id, "v1").await;
    let id = first["id"].as_i64().expect("an id");
    let container = first["container_id"].as_str().expect("a container").to_owned();

    let (status, body) = admin.delete(&format!("/api/instances/{id}")).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::CONFLICT, &json!("conflict")),
        "{body}"
    );
    assert!(docker_inspect_succeeds(&container));

    let (status, _) = admin.post(&format!("/api/instances/{id}/stop"), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = admin.delete(&format!("/api/instances/{id}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert!(!docker_inspect_succeeds(&container), "the container is removed");
    let (status, _) = admin.get(&format!("/api/instances/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, stage) = admin.get(&format!("/api/stages/{stage_id}")).await;
    assert!(stage["current_instance_id"].is_null(), "{stage}");

    // An old instance whose container someone removed behind our back goes without complaint.
    push_image(&repo, "v1", Variant::Web, "two").await;
    let second = deploy_ok(&admin, stage_id, "v1").await;
    push_image(&repo, "v1", Variant::Web, "three").await;
    deploy_ok(&admin, stage_id, "v1").await;
    let old = instance(&admin, second["id"].as_i64().unwrap()).await;
    assert_eq!(old["status"], "stopped");
    let gone = std::process::Command::new("docker")
        .args(["rm", "-f", old["container_id"].as_str().expect("a container")])
        .output()
        .expect("docker runs");
    assert!(gone.status.success());
    let (status, body) = admin.get(&format!("/api/instances/{}/logs", old["id"])).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = admin
        .post(&format!("/api/instances/{}/start", old["id"]), json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(
        instance(&admin, old["id"].as_i64().unwrap()).await["status"],
        "missing"
    );
    let (status, body) = admin.delete(&format!("/api/instances/{}", old["id"])).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    app.stop().await;
}

#[tokio::test]
async fn bad_instance_requests_get_a_4xx_naming_the_problem() {
    let app = spawn_app().await;
    let mut cleanup = Cleanup::new(&app);
    let repo = unique("dwtest/instances-bad-");
    cleanup.repo(&repo);
    let admin = app.admin().await;
    push_image(&repo, "v1", Variant::Web, "one").await;
    let project_id = create_project(&admin, &repo).await;
    let stage_id = create_stage(&admin, project_id, "tag:v1", json!({})).await;
    let deployed = deploy_ok(&admin, stage_id, "v1").await;
    let id = deployed["id"].as_i64().expect("an id");
    let viewer = app.user_with_role("vic", "viewer").await;

    for (query, field) in [
        ("project_id=x", "project_id"),
        ("project_id=0", "project_id"),
        ("stage_id=-1", "stage_id"),
        ("status=zombie", "status"),
    ] {
        let (status, body) = viewer.get(&format!("/api/instances?{query}")).await;
        assert_field_error(status, &body, field);
    }
    let (status, body) = viewer.get("/api/instances?colour=red").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    for path in ["/api/instances/x", "/api/instances/0", "/api/instances/x/logs"] {
        let (status, body) = viewer.get(path).await;
        assert_field_error(status, &body, "id");
    }
    for action in ["stop", "start", "restart"] {
        let (status, body) = admin.post(&format!("/api/instances/x/{action}"), json!({})).await;
        assert_field_error(status, &body, "id");
        let (status, body) = admin
            .post(&format!("/api/instances/999999/{action}"), json!({}))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        let (status, body) = viewer
            .post(&format!("/api/instances/{id}/{action}"), json!({}))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    }
    let (status, body) = admin.delete("/api/instances/999999").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = admin.delete("/api/instances/x").await;
    assert_field_error(status, &body, "id");
    let (status, body) = viewer.delete(&format!("/api/instances/{id}")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = viewer.get("/api/instances/999999").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = viewer.get("/api/instances/999999/logs").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    for tail in ["10001", "x", "-5"] {
        let (status, body) = viewer.get(&format!("/api/instances/{id}/logs?tail={tail}")).await;
        assert_field_error(status, &body, "tail");
    }
    let (status, body) = viewer.get(&format!("/api/instances/{id}/logs?tail=10000")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = viewer.get(&format!("/api/instances/{id}/logs?tail=0")).await;
    assert_eq!(
        (status, &body["lines"]),
        (StatusCode::OK, &serde_json::json!([])),
        "{body}"
    );
    let anonymous = app.anonymous();
    for path in [
        "/api/instances".to_owned(),
        format!("/api/instances/{id}"),
        format!("/api/instances/{id}/logs"),
    ] {
        let (status, _) = anonymous.get(&path).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
    }
    let (status, _) = anonymous
        .post(&format!("/api/instances/{id}/stop"), json!({}))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Nothing above changed the instance.
    let after = instance(&admin, id).await;
    assert_eq!(
        (&after["status"], &after["is_current"]),
        (&json!("running"), &json!(true))
    );
    app.stop().await;
}
