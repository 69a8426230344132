//! Operations endpoints and whole-app behaviour: liveness, readiness against the real Docker
//! engine, Prometheus metrics, the OpenAPI document covering every route, and a restart on the
//! same data dir keeping everything.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_PASSWORD, spawn_app};

#[tokio::test]
async fn healthz_answers_without_credentials() {
    let app = spawn_app().await;
    let (status, body) = app.anonymous().get("/healthz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
    app.stop().await;
}

#[tokio::test]
async fn readyz_reports_the_store_and_the_real_docker_engine_ready() {
    let app = spawn_app().await;
    let (status, body) = app.anonymous().get("/readyz").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the Docker engine started by scripts/test.sh must answer: {body}"
    );
    assert_eq!(body["checks"]["store"], "ok");
    assert_eq!(body["checks"]["docker"], "ok");
    app.stop().await;
}

#[tokio::test]
async fn readyz_is_unavailable_when_the_docker_engine_does_not_answer() {
    let data_dir = tempfile::tempdir().unwrap();
    let mut config = docker_watcher::config::Config::for_data_dir(data_dir.path());
    config.admin_password = Some(ADMIN_PASSWORD.to_owned());
    config.docker_host = Some(format!("unix://{}/no-docker.sock", data_dir.path().display()));
    let app = docker_watcher::app::App::spawn(config, Default::default())
        .await
        .unwrap();
    let response = reqwest::get(format!("http://{}/readyz", app.api_addr()))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["checks"]["store"], "ok");
    assert_ne!(body["checks"]["docker"], "ok");
    app.stop().await;
}

#[tokio::test]
async fn metrics_are_prometheus_text_and_count_requests_by_route() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    admin.get("/api/projects").await;
    let response = reqwest::get(app.url("/metrics")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    assert!(text.contains("docker_watcher_http_requests_total"), "{text}");
    assert!(text.contains("route=\"/api/projects\""), "{text}");
    assert!(text.contains("docker_watcher_events_published_total"), "{text}");
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    app.stop().await;
}

#[tokio::test]
async fn every_operation_that_takes_only_json_documents_the_415_a_body_of_another_type_gets() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let (_, doc) = app.anonymous().get("/api/openapi.json").await;
    let mut json_only = 0;
    for (path, operations) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in operations.as_object().expect("operations") {
            let Some(content) = operation["requestBody"]["content"].as_object() else {
                continue;
            };
            if content.keys().ne(["application/json"].iter()) {
                continue;
            }
            json_only += 1;
            assert!(
                operation["responses"]["415"].is_object(),
                "{method} {path} takes JSON but does not document 415"
            );
        }
    }
    assert!(json_only >= 10, "only {json_only} JSON operations found");
    // And it is what the server answers, e.g. to a token request sent as text.
    let (status, body) = admin.post_raw("/api/tokens", "text/plain", "name=ci").await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");
    app.stop().await;
}

#[tokio::test]
async fn the_openapi_document_gives_the_content_types_metrics_and_the_event_stream_answer_with() {
    let app = spawn_app().await;
    let (_, doc) = app.anonymous().get("/api/openapi.json").await;
    let metrics = reqwest::get(app.url("/metrics")).await.unwrap();
    let served = metrics.headers()["content-type"].to_str().unwrap().to_owned();
    let documented = doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
        .as_object()
        .expect("a documented /metrics body");
    assert_eq!(documented.keys().collect::<Vec<_>>(), vec![&served], "{doc}");

    // For a stream the schema is that of one message (what OpenAPI 3.1 tools validate each
    // message against): its `event` name and its `data` text, never the Event object itself.
    let resolve = |schema: &serde_json::Value| -> serde_json::Value {
        match schema["$ref"].as_str() {
            Some(reference) => {
                let name = reference.rsplit('/').next().unwrap_or_default();
                doc["components"]["schemas"][name].clone()
            }
            None => schema.clone(),
        }
    };
    for path in ["/api/events/stream", "/api/instances/{id}/logs/stream"] {
        let content = &doc["paths"][path]["get"]["responses"]["200"]["content"];
        let message = resolve(&content["text/event-stream"]["schema"]);
        assert_eq!(
            message["properties"]["data"]["type"], "string",
            "{path}: {message}"
        );
        assert_eq!(
            message["properties"]["event"]["type"], "string",
            "{path}: {message}"
        );
        let required: Vec<&str> = message["required"]
            .as_array()
            .map(|r| r.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        assert!(
            required.contains(&"data") && required.contains(&"event"),
            "{path}: {message}"
        );
    }
    app.stop().await;
}

/// Every route of SPEC.md §5 that exists so far, as (method, path).
const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/api/openapi.json"),
    ("post", "/api/auth/login"),
    ("post", "/api/auth/logout"),
    ("get", "/api/auth/me"),
    ("get", "/api/users"),
    ("post", "/api/users"),
    ("patch", "/api/users/{id}"),
    ("delete", "/api/users/{id}"),
    ("get", "/api/tokens"),
    ("post", "/api/tokens"),
    ("delete", "/api/tokens/{id}"),
    ("get", "/api/projects"),
    ("post", "/api/projects"),
    ("get", "/api/projects/{id}"),
    ("patch", "/api/projects/{id}"),
    ("delete", "/api/projects/{id}"),
    ("get", "/api/projects/{id}/stages"),
    ("post", "/api/projects/{id}/stages"),
    ("get", "/api/stages/{id}"),
    ("patch", "/api/stages/{id}"),
    ("delete", "/api/stages/{id}"),
    ("post", "/api/stages/{id}/deploy"),
    ("post", "/api/stages/{id}/rollback"),
    ("post", "/api/stages/{id}/poll"),
    ("get", "/api/instances"),
    ("get", "/api/instances/{id}"),
    ("delete", "/api/instances/{id}"),
    ("post", "/api/instances/{id}/stop"),
    ("post", "/api/instances/{id}/start"),
    ("post", "/api/instances/{id}/restart"),
    ("get", "/api/instances/{id}/logs"),
    ("get", "/api/instances/{id}/logs/stream"),
    ("get", "/api/projects/{id}/accessories"),
    ("post", "/api/projects/{id}/accessories"),
    ("get", "/api/accessories/{id}"),
    ("patch", "/api/accessories/{id}"),
    ("delete", "/api/accessories/{id}"),
    ("post", "/api/accessories/{id}/start"),
    ("post", "/api/accessories/{id}/stop"),
    ("post", "/api/accessories/{id}/restart"),
    ("get", "/api/accessories/{id}/logs"),
    ("get", "/api/accessories/{id}/logs/stream"),
    ("get", "/api/containers/stale"),
    ("post", "/api/containers/stale/scan"),
    ("post", "/api/containers/stale/{instance_id}/cleanup"),
    ("post", "/api/containers/stale/cleanup"),
    ("get", "/api/deployments"),
    ("get", "/api/proxies"),
    ("post", "/api/proxies"),
    ("get", "/api/proxies/{id}"),
    ("patch", "/api/proxies/{id}"),
    ("delete", "/api/proxies/{id}"),
    ("get", "/api/settings"),
    ("patch", "/api/settings"),
    ("get", "/api/events"),
    ("get", "/api/events/stream"),
    ("post", "/api/hooks/registry"),
    ("get", "/api/hooks/registry/token"),
    ("post", "/api/hooks/registry/token/rotate"),
    ("get", "/api/notifications/channels"),
    ("post", "/api/notifications/channels"),
    ("get", "/api/notifications/channels/{id}"),
    ("patch", "/api/notifications/channels/{id}"),
    ("delete", "/api/notifications/channels/{id}"),
    ("post", "/api/notifications/channels/{id}/test"),
    ("get", "/api/notifications/deliveries"),
    ("post", "/api/apply"),
    ("get", "/api/export"),
];

#[tokio::test]
async fn the_openapi_document_describes_every_route_with_its_responses() {
    let app = spawn_app().await;
    let (status, doc) = app.anonymous().get("/api/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{doc}"
    );
    let paths = doc["paths"].as_object().expect("paths");
    for (method, path) in ROUTES {
        let operation = &paths.get(*path).unwrap_or_else(|| panic!("{path} is missing"))[*method];
        assert!(operation.is_object(), "{method} {path} is missing");
        assert!(
            operation["responses"].as_object().is_some_and(|r| !r.is_empty()),
            "{method} {path} has no responses"
        );
    }
    // And the document claims no route the app does not serve.
    let documented: usize = paths.values().map(|p| p.as_object().map_or(0, |o| o.len())).sum();
    assert_eq!(
        documented,
        ROUTES.len(),
        "documented routes differ from the list: {:?}",
        paths.keys().collect::<Vec<_>>()
    );
    app.stop().await;
}

#[tokio::test]
async fn unknown_routes_answer_a_json_404() {
    let app = spawn_app().await;
    let (status, body) = app.anonymous().get("/api/nothing-here").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
    app.stop().await;
}

#[tokio::test]
async fn bodies_over_one_mebibyte_are_refused() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let big = format!("{{\"name\":\"{}\"}}", "x".repeat(1024 * 1024 + 10));
    let (status, body) = admin.post_raw("/api/projects", "application/json", big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    app.stop().await;
}

#[tokio::test]
async fn a_restart_on_the_same_data_dir_keeps_everything() {
    let mut app = spawn_app().await;
    let admin = app.admin().await;
    let (status, project) = admin
        .post(
            "/api/projects",
            json!({"name": "shop", "image": "127.0.0.1:5000/team/shop", "registry_username": "ci", "registry_password": "pw-123"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{project}");
    let project_id = project["id"].as_i64().unwrap();
    let (status, stage) = admin
        .post(
            &format!("/api/projects/{project_id}/stages"),
            json!({"name": "prod", "tag_policy": "semver:^1", "schedule": "*/5 * * * *", "hostname": "shop.example.test"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{stage}");
    let (status, proxy) = admin
        .post(
            "/api/proxies",
            json!({"name": "docs", "hostname": "docs.example.test", "target_url": "http://127.0.0.1:9/"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{proxy}");
    let (status, _) = admin
        .patch("/api/settings", json!({"stale_threshold_days": 14}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = admin
        .post(
            "/api/users",
            json!({"username": "carol", "password": "carol-password", "role": "member"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, before_install) = (0, app.app().state().installation_id.clone());

    app.restart().await;

    let admin = app.login("admin", ADMIN_PASSWORD).await;
    let (_, projects) = admin.get("/api/projects").await;
    assert_eq!(projects["items"][0], project);
    let (_, stage_after) = admin.get(&format!("/api/stages/{}", stage["id"])).await;
    assert_eq!(stage_after, stage);
    let (_, proxies) = admin.get("/api/proxies").await;
    assert_eq!(proxies["items"][0], proxy);
    let (_, settings) = admin.get("/api/settings").await;
    assert_eq!(settings["stale_threshold_days"], 14);
    app.login("carol", "carol-password").await;
    assert_eq!(
        app.app().state().installation_id,
        before_install,
        "the installation id is stable"
    );
    // The registry password still opens with the key kept in the data dir.
    let sealed = app
        .app()
        .state()
        .store
        .project_registry_password(project_id)
        .await
        .unwrap()
        .expect("sealed");
    assert_eq!(app.app().state().secrets.open(&sealed).unwrap(), "pw-123");
    app.stop().await;
}
