//! Settings over the API: every role reads them, only admins change them, a change is all or
//! nothing (a bad key or value is a 400 naming it and changes nothing), survives a restart, is
//! seen at once by the live settings, and is recorded in the event log with its actor.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{ApiClient, Auth, assert_field_error, spawn_app};

#[tokio::test]
async fn a_viewer_reads_the_default_settings() {
    let app = spawn_app().await;
    let viewer = app.user_with_role("vera", "viewer").await;
    let (status, body) = viewer.get("/api/settings").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({
            "stale_threshold_days": 7,
            "stale_scan_interval": null,
            "default_poll_schedule": "@every 5m",
            "event_retention_days": 30,
            "base_domain": null,
            "deploy_health_timeout_seconds": 60,
            "allowed_bind_paths": [],
            "proxy_hold_seconds": 30,
        })
    );
    app.stop().await;
}

#[tokio::test]
async fn an_admin_changes_settings_and_they_survive_a_restart() {
    let mut app = spawn_app().await;
    let admin = app.admin().await;
    let patch = json!({
        "stale_threshold_days": 14,
        "stale_scan_interval": "6h",
        "default_poll_schedule": "*/10 * * * *",
        "base_domain": "Apps.Example.com",
    });
    let (status, body) = admin.patch("/api/settings", patch).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["stale_threshold_days"], 14);
    assert_eq!(body["stale_scan_interval"], "6h");
    assert_eq!(body["default_poll_schedule"], "*/10 * * * *");
    assert_eq!(body["base_domain"], "apps.example.com");
    assert_eq!(
        body["event_retention_days"], 30,
        "keys not in the patch keep their values"
    );
    assert_eq!(
        app.app().state().settings.current().stale_threshold_days,
        14,
        "the live settings see the change"
    );

    app.restart().await;
    let admin = ApiClient::new(&app.base_url, admin.auth.clone());
    let (status, after) = admin.get("/api/settings").await;
    assert_eq!(status, StatusCode::OK, "{after}");
    assert_eq!(after, body);

    // `null` clears a nullable setting.
    let (status, body) = admin
        .patch(
            "/api/settings",
            json!({"base_domain": null, "stale_scan_interval": null}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["base_domain"], Value::Null);
    assert_eq!(body["stale_scan_interval"], Value::Null);
    app.stop().await;
}

#[tokio::test]
async fn an_unknown_key_or_a_bad_value_is_a_400_naming_it_and_changes_nothing() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    for (patch, field) in [
        (json!({"colour": "red"}), "colour"),
        (json!({"stale_threshold_days": 0}), "stale_threshold_days"),
        (json!({"stale_threshold_days": 3651}), "stale_threshold_days"),
        (json!({"stale_threshold_days": "7"}), "stale_threshold_days"),
        (json!({"event_retention_days": -1}), "event_retention_days"),
        (
            json!({"deploy_health_timeout_seconds": 3601}),
            "deploy_health_timeout_seconds",
        ),
        (json!({"proxy_hold_seconds": 0}), "proxy_hold_seconds"),
        (json!({"proxy_hold_seconds": 301}), "proxy_hold_seconds"),
        (json!({"stale_scan_interval": "soon"}), "stale_scan_interval"),
        (
            json!({"default_poll_schedule": "every now and then"}),
            "default_poll_schedule",
        ),
        (json!({"default_poll_schedule": null}), "default_poll_schedule"),
        (json!({"base_domain": "not a host"}), "base_domain"),
        (
            json!({"stale_threshold_days": 10, "event_retention_days": 0}),
            "event_retention_days",
        ),
    ] {
        let (status, body) = admin.patch("/api/settings", patch.clone()).await;
        assert_field_error(status, &body, field);
    }
    let (_, body) = admin.get("/api/settings").await;
    assert_eq!(
        body["stale_threshold_days"], 7,
        "a refused patch changes nothing: {body}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_body_that_is_not_a_json_object_is_a_400() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    for body in [json!([1, 2]), json!("stale_threshold_days"), json!(null)] {
        let (status, answer) = admin.patch("/api/settings", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], "validation");
    }
    let (status, answer) = admin
        .send(
            admin
                .request(reqwest::Method::PATCH, "/api/settings")
                .header("content-type", "application/json")
                .body("{"),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    app.stop().await;
}

#[tokio::test]
async fn only_admins_change_settings() {
    let app = spawn_app().await;
    let member = app.user_with_role("mia", "member").await;
    let (status, body) = member
        .patch("/api/settings", json!({"stale_threshold_days": 3}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    let (status, _) = member.get("/api/settings").await;
    assert_eq!(status, StatusCode::OK);

    let anonymous = app.anonymous();
    let (status, _) = anonymous.get("/api/settings").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = anonymous
        .patch("/api/settings", json!({"stale_threshold_days": 3}))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (_, body) = app.admin().await.get("/api/settings").await;
    assert_eq!(body["stale_threshold_days"], 7);
    app.stop().await;
}

#[tokio::test]
async fn an_admin_session_needs_the_csrf_token_to_change_settings() {
    let app = spawn_app().await;
    let session = app.login("admin", crate::helpers::ADMIN_PASSWORD).await;
    assert!(matches!(session.auth, Auth::Session { .. }));
    let (status, _) = session
        .without_csrf()
        .patch("/api/settings", json!({"stale_threshold_days": 3}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = session
        .patch("/api/settings", json!({"stale_threshold_days": 3}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.stop().await;
}

#[tokio::test]
async fn a_change_is_recorded_in_the_event_log_with_its_actor() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let (status, _) = admin
        .patch(
            "/api/settings",
            json!({"stale_threshold_days": 21, "event_retention_days": 30}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // A patch that changes nothing records nothing.
    let (status, _) = admin
        .patch("/api/settings", json!({"stale_threshold_days": 21}))
        .await;
    assert_eq!(status, StatusCode::OK);

    let (status, body) = admin.get("/api/events?source=api&severity=info").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let changes: Vec<&Value> = body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| e["details"].get("changed").is_some())
        .collect();
    assert_eq!(changes.len(), 1, "{body}");
    let event = changes[0];
    assert_eq!(event["details"]["actor"], "admin");
    assert_eq!(event["details"]["changed"], json!({"stale_threshold_days": 21}));
    assert!(
        event["message"]
            .as_str()
            .is_some_and(|m| m.contains("stale_threshold_days")),
        "{event}"
    );
    assert!(event["id"].is_i64(), "the change is persisted: {event}");
    app.stop().await;
}

#[tokio::test]
async fn the_live_settings_notify_watchers_of_a_change() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let mut watcher = app.app().state().settings.subscribe();
    let (status, _) = admin
        .patch("/api/settings", json!({"stale_scan_interval": "30m"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::timeout(std::time::Duration::from_secs(5), watcher.changed())
        .await
        .expect("notified in time")
        .expect("the sender is alive");
    assert_eq!(watcher.borrow().effective_stale_scan_interval().as_secs(), 1800);
    app.stop().await;
}
