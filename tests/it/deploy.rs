//! Deploying over HTTP against the real Docker engine and registry: a tag goes live and answers
//! through its published port; a new digest under the same tag replaces it (the old instance is
//! stopped and kept); images that exit or fail their health check leave the old instance
//! serving, with one `error` event and the digest remembered; rollback brings the previous
//! instance back; per-tag stages give every matching tag its own instance and hostname —
//! reached through the real proxy listener — and stop it when the tag leaves the registry or
//! through the API (its hostname then answers 404 at once); bad input gets a 4xx naming the field.
//!
//! Images come from `scripts/test-image.sh` (a busybox httpd serving a marker on 8080), pushed
//! to unique repositories; every test removes the containers of its app's installation when it
//! ends, even when it fails ([`Cleanup`]).

use std::time::Duration;

use docker_watcher::domain::image_ref::Digest;
use docker_watcher::domain::instance::Trigger;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{ApiClient, TestApp, assert_field_error, spawn_app};

pub use crate::testenv::{registry, unique};

/// Which image `scripts/test-image.sh` builds.
#[derive(Debug, Clone, Copy)]
pub enum Variant {
    /// httpd on 8080 serving the marker at `/` and `/health`.
    Web,
    /// Exits with status 1 at once.
    Exit1,
    /// `/` answers the marker, `/health` answers 500.
    Health500,
    /// Web, plus CGI: `/cgi-bin/env?NAME`, `/cgi-bin/file?/PATH`, `/cgi-bin/fetch?HOST:PORT/PATH`;
    /// appends its marker to `$APP_WRITE` at start, prints its environment when `$APP_PRINT_ENV`.
    App,
}

/// Builds and pushes `registry/repo:tag`; returns the pushed digest. Fails the test (never
/// skips) when Docker or the registry are missing.
pub async fn push_image(repo: &str, tag: &str, variant: Variant, marker: &str) -> Digest {
    let image = format!("{}/{repo}:{tag}", registry());
    let variant = match variant {
        Variant::Web => "web",
        Variant::Exit1 => "exit1",
        Variant::Health500 => "health500",
        Variant::App => "app",
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/test-image.sh");
    let output = tokio::process::Command::new(script)
        .args([&image, "--variant", variant, "--marker", marker])
        .output()
        .await
        .expect("scripts/test-image.sh runs");
    assert!(
        output.status.success(),
        "pushing {image} failed (run scripts/services.sh): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let reference = stdout.trim();
    let digest = reference
        .rsplit_once('@')
        .map(|(_, d)| d)
        .unwrap_or_else(|| panic!("no digest in {reference:?}"));
    Digest::parse(digest).expect("a digest")
}

/// Removes, when dropped, everything one app's installation created in the engine and the
/// local images of the test's repositories — also when the test panics.
pub use crate::helpers::InstallationCleanup as Cleanup;

/// A project on a fresh repository of the test registry, and its id.
pub async fn create_project(admin: &ApiClient, repo: &str) -> i64 {
    let (status, body) = admin
        .post(
            "/api/projects",
            json!({"name": unique("p"), "image": format!("{}/{repo}", registry())}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_i64().expect("a project id")
}

/// A stage of the project with `policy`, running port 8080, ready after one second; its id.
/// Monitor-only, so the poller (which polls new stages) never deploys behind the test's back:
/// these tests deploy by hand, which monitor-only stages allow.
pub async fn create_stage(admin: &ApiClient, project_id: i64, policy: &str, container: Value) -> i64 {
    let mut spec = json!({"port": 8080, "min_ready_seconds": 1});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), container.as_object()) {
        spec.extend(extra.clone());
    }
    let (status, body) = admin
        .post(
            &format!("/api/projects/{project_id}/stages"),
            json!({"name": unique("s"), "tag_policy": policy, "auto_deploy": false, "container": spec}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_i64().expect("a stage id")
}

/// `POST /api/stages/{id}/deploy` with `body`; the status and the answer.
pub async fn deploy(client: &ApiClient, stage_id: i64, body: Value) -> (StatusCode, Value) {
    client.post(&format!("/api/stages/{stage_id}/deploy"), body).await
}

/// Deploys and asserts it succeeded; the new instance.
pub async fn deploy_ok(client: &ApiClient, stage_id: i64, tag: &str) -> Value {
    let (status, deployment) = deploy(client, stage_id, json!({"tag": tag})).await;
    assert_eq!(status, StatusCode::CREATED, "{deployment}");
    assert_eq!(deployment["status"], "succeeded", "{deployment}");
    let id = deployment["instance_id"].as_i64().expect("an instance id");
    instance(client, id).await
}

pub async fn instance(client: &ApiClient, id: i64) -> Value {
    let (status, body) = client.get(&format!("/api/instances/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// What the instance's published port answers at `path`, if anything.
pub async fn fetch(instance: &Value, path: &str) -> Option<(u16, String)> {
    let port = instance["host_port"].as_u64()?;
    let response = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .timeout(Duration::from_secs(3))
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}

/// The number of `error` events the deployer published.
pub async fn deployer_errors(client: &ApiClient) -> (u64, Value) {
    let (status, page) = client.get("/api/events?source=deployer&severity=error").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    (page["total"].as_u64().expect("a total"), page)
}

const INSTANCE_FIELDS: [&str; 18] = [
    "id",
    "project_id",
    "project_name",
    "stage_id",
    "stage_name",
    "image_tag",
    "image_digest",
    "container_id",
    "container_name",
    "status",
    "is_current",
    "host_port",
    "hostname",
    "exit_code",
    "created_at",
    "started_at",
    "last_alive_at",
    "stopped_at",
];

const DEPLOYMENT_FIELDS: [&str; 12] = [
    "id",
    "stage_id",
    "instance_id",
    "image_tag",
    "image_digest",
    "trigger",
    "status",
    "error",
    "actor",
    "started_at",
    "finished_at",
    "hook_output",
];

#[track_caller]
pub fn assert_fields(body: &Value, fields: &[&str]) {
    let mut keys: Vec<&str> = body
        .as_object()
        .unwrap_or_else(|| panic!("an object: {body}"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    let mut expected = fields.to_vec();
    expected.sort_unstable();
    assert_eq!(keys, expected, "{body}");
}

#[track_caller]
pub fn assert_instance_shape(body: &Value) {
    assert_fields(body, &INSTANCE_FIELDS);
}

#[tokio::test]
async fn a_deployed_tag_runs_answers_and_is_replaced_by_a_new_digest() {
    let app = spawn_app().await;
    let mut cleanup = Cleanup::new(&app);
    let repo = unique("dwtest/deploy-");
    cleanup.repo(&repo);
    let admin = app.admin().await;
    let first_digest = push_image(&repo, "v1", Variant::Web, "first build").await;
    let project_id = create_project(&admin, &repo).await;
    let stage_id = create_stage(&admin, project_id, "tag:v1", json!({})).await;

    let (status, deployment) = deploy(&admin, stage_id, json!({"tag": "v1"})).await;
    assert_eq!(status, StatusCode::CREATED, "{deployment}");
    assert_fields(&deployment, &DEPLOYMENT_FIELDS);
    assert_eq!(
        (
            &deployment["status"],
            &deployment["trigger"],
            &deployment["actor"]
        ),
        (&json!("succeeded"), &json!("manual"), &json!("admin")),
        "{deployment}"
    );
    assert_eq!(deployment["image_digest"], first_digest.as_str());
    assert!(deployment["finished_at"].is_string(), "{deployment}");
    let first = instance(&admin, deployment["instance_id"].as_i64().expect("an id")).await;
    assert_instance_shape(&first);
    assert_eq!(
        (&first["status"], &first["is_current"]),
        (&json!("running"), &json!(true))
    );
    assert!(first["last_alive_at"].is_string(), "{first}");
    let name = first["container_name"].as_str().expect("a container name");
    assert_eq!(
        name,
        format!(
            "dw-{}-{}-{}",
            first["project_name"].as_str().unwrap(),
            first["stage_name"].as_str().unwrap(),
            first["id"]
        )
    );
    let (code, text) = fetch(&first, "/").await.expect("the container answers");
    assert_eq!((code, text.trim()), (200, "first build"));
    let (_, stage) = admin.get(&format!("/api/stages/{stage_id}")).await;
    assert_eq!(stage["current_instance_id"], first["id"]);

    // A new build under the same tag; a deploy without a tag follows the policy.
    let second_digest = push_image(&repo, "v1", Variant::Web, "second build").await;
    let (status, deployment) = deploy(&admin, stage_id, json!({})).await;
    assert_eq!(
        (status, &deployment["status"]),
        (StatusCode::CREATED, &json!("succeeded")),
        "{deployment}"
    );
    assert_eq!(deployment["image_digest"], second_digest.as_str());
    let second = instance(&admin, deployment["instance_id"].as_i64().expect("an id")).await;
    assert_eq!(
        (&second["status"], &second["is_current"]),
        (&json!("running"), &json!(true))
    );
    let (_, text) = fetch(&second, "/").await.expect("the new container answers");
    assert_eq!(text.trim(), "second build");
    let old = instance(&admin, first["id"].as_i64().unwrap()).await;
    assert_eq!(
        (&old["status"], &old["is_current"]),
        (&json!("stopped"), &json!(false))
    );
    assert!(old["stopped_at"].is_string(), "{old}");
    assert!(fetch(&old, "/").await.is_none(), "the old container is stopped");

    let (status, list) = admin.get(&format!("/api/deployments?stage_id={stage_id}")).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let ids: Vec<&Value> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|d| &d["id"])
        .collect();
    assert_eq!(
        ids,
        vec![&deployment["id"], &json!(deployment["id"].as_i64().unwrap() - 1)]
    );

    // Deploying what already runs records nothing and answers the deployment that did it.
    let (status, again) = deploy(&admin, stage_id, json!({"tag": "v1"})).await;
    assert_eq!(
        (status, &again["id"]),
        (StatusCode::OK, &deployment["id"]),
        "{again}"
    );
    let (_, list) = admin.get(&format!("/api/deployments?stage_id={stage_id}")).await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(2));
    let (total, page) = deployer_errors(&admin).await;
    assert_eq!(total, 0, "{page}");
    app.stop().await;
}

#[tokio::test]
async fn a_failing_image_leaves_the_old_instance_serving_with_one_error_each() {
    let app = spawn_app().await;
    let mut cleanup = Cleanup::new(&app);
    let repo = unique("dwtest/deploy-fail-");
    cleanup.repo(&repo);
    let admin = app.admin().await;
    push_image(&repo, "v1", Variant::Web, "good build").await;
    let project_id = create_project(&admin, &repo).await;
    // Three seconds up before it counts as ready: an image that exits at once must not pass the
    // gate on a loaded machine where its shell had not run yet after one second.
    let stage_id = create_stage(&admin, project_id, "tag:v1", json!({"min_ready_seconds": 3})).await;
    let good = deploy_ok(&admin, stage_id, "v1").await;
    let store = app.app().state().store.clone();

    // An image whose container exits at once.
    let exiting = push_image(&repo, "v1", Variant::Exit1, "exits").await;
    let (status, deployment) = deploy(&admin, stage_id, json!({"tag": "v1"})).await;
    assert_eq!(
        (status, &deployment["status"]),
        (StatusCode::CREATED, &json!("failed")),
        "{deployment}"
    );
    assert!(
        deployment["error"].as_str().is_some_and(|e| e.contains("exited")),
        "{deployment}"
    );
    let failed = instance(&admin, deployment["instance_id"].as_i64().expect("an id")).await;
    assert_eq!(
        (&failed["status"], &failed["is_current"]),
        (&json!("failed"), &json!(false))
    );
    assert!(store.is_failed_digest(stage_id, exiting.as_str()).await.unwrap());
    let (total, page) = deployer_errors(&admin).await;
    assert_eq!(total, 1, "{page}");
    let event = &page["items"][0];
    assert_eq!(
        (
            &event["stage_id"],
            &event["instance_id"],
            &event["details"]["digest"]
        ),
        (&json!(stage_id), &failed["id"], &json!(exiting.as_str())),
        "{event}"
    );
    // Its logs are kept.
    let (status, logs) = admin
        .get(&format!("/api/instances/{}/logs?tail=20", failed["id"]))
        .await;
    assert_eq!(status, StatusCode::OK, "{logs}");
    assert!(
        logs["lines"]
            .as_array()
            .expect("lines")
            .iter()
            .any(|l| l["stream"] == "stderr"
                && l["text"]
                    .as_str()
                    .is_some_and(|t| t.contains("exiting with status 1"))),
        "{logs}"
    );
    let still = instance(&admin, good["id"].as_i64().unwrap()).await;
    assert_eq!(
        (&still["status"], &still["is_current"]),
        (&json!("running"), &json!(true))
    );
    assert_eq!(
        fetch(&still, "/")
            .await
            .map(|(_, t)| t.trim().to_owned())
            .as_deref(),
        Some("good build")
    );

    // An image whose health check answers 500: it fails after a few consecutive answers, long
    // before the (generous) health timeout.
    let (status, body) = admin
        .patch("/api/settings", json!({"deploy_health_timeout_seconds": 120}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = admin
        .patch(
            &format!("/api/stages/{stage_id}"),
            json!({"container": {"port": 8080, "min_ready_seconds": 1,
                   "health_check": {"path": "/health", "expected_status": 200}}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let unhealthy = push_image(&repo, "v1", Variant::Health500, "unhealthy").await;
    let started = std::time::Instant::now();
    let (status, deployment) = deploy(&admin, stage_id, json!({"tag": "v1"})).await;
    let took = started.elapsed();
    assert_eq!(
        (status, &deployment["status"]),
        (StatusCode::CREATED, &json!("failed")),
        "{deployment}"
    );
    assert!(
        deployment["error"]
            .as_str()
            .is_some_and(|e| e.contains("500") && e.contains("consecutive")),
        "{deployment}"
    );
    assert!(took < std::time::Duration::from_secs(60), "took {took:?}");
    assert!(
        store
            .is_failed_digest(stage_id, unhealthy.as_str())
            .await
            .unwrap()
    );
    let (total, page) = deployer_errors(&admin).await;
    assert_eq!(total, 2, "{page}");
    let still = instance(&admin, good["id"].as_i64().unwrap()).await;
    assert_eq!(
        (&still["status"], &still["is_current"]),
        (&json!("running"), &json!(true))
    );
    assert_eq!(
        fetch(&still, "/")
            .await
            .map(|(_, t)| t.trim().to_owned())
            .as_deref(),
        Some("good build")
    );

    // A healthy build under the same tag passes the HTTP gate and clears nothing it should not.
    let healthy = push_image(&repo, "v1", Variant::Web, "healthy build").await;
    let next = deploy_ok(&admin, stage_id, "v1").await;
    assert_eq!(next["image_digest"], healthy.as_str());
    assert!(
        store
            .is_failed_digest(stage_id, unhealthy.as_str())
            .await
            .unwrap()
    );
    app.stop().await;
}

#[tokio::test]
async fn a_rollback_brings_the_previous_instance_back() {
    let app = spawn_app().await;
    let mut cleanup = Cleanup::new(&app);
    let repo = unique("dwtest/rollback-");
    cleanup.repo(&repo);
    let admin = app.admin().await;
    let project_id = create_project(&admin, &repo).await;
    let stage_id = create_stage(&admin, project_id, "tag:v1", json!({})).await;
    let (status, body) = admin
        .post(&format!("/api/stages/{stage_id}/rollback"), json!({}))
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::CONFLICT, &json!("conflict")),
        "{body}"
    );

    push_image(&repo, "v1", Variant::Web, "one").await;
    let one = deploy_ok(&admin, stage_id, "v1").await;
    push_image(&repo, "v1", Variant::Web, "two").await;
    let two = deploy_ok(&admin, stage_id, "v1").await;

    let (status, deployment) = admin
        .post(&format!("/api/stages/{stage_id}/rollback"), json!({}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{deployment}");
    assert_eq!(
        (
            &deployment["status"],
            &deployment["trigger"],
            &deployment["instance_id"]
        ),
        (&json!("succeeded"), &json!("rollback"), &one["id"]),
        "{deployment}"
    );
    let back = instance(&admin, one["id"].as_i64().unwrap()).await;
    assert_eq!(
        (&back["status"], &back["is_current"]),
        (&json!("running"), &json!(true))
    );
    assert_eq!(
        fetch(&back, "/")
            .await
            .map(|(_, t)| t.trim().to_owned())
            .as_deref(),
        Some("one")
    );
    let replaced = instance(&admin, two["id"].as_i64().unwrap()).await;
    assert_eq!(replaced["status"], "stopped");

    // With the other container gone from Docker, a rollback recreates it from its digest.
    let container = replaced["container_id"].as_str().expect("a container id");
    let removed = std::process::Command::new("docker")
        .args(["rm", "-f", container])
        .output()
        .expect("docker runs");
    assert!(removed.status.success());
    let (status, deployment) = admin
        .post(&format!("/api/stages/{stage_id}/rollback"), json!({}))
        .await;
    assert_eq!(
        (status, &deployment["status"]),
        (StatusCode::CREATED, &json!("succeeded")),
        "{deployment}"
    );
    let recreated = instance(&admin, deployment["instance_id"].as_i64().expect("an id")).await;
    assert_ne!(recreated["id"], two["id"]);
    assert_eq!(recreated["image_digest"], two["image_digest"]);
    assert_eq!(
        fetch(&recreated, "/")
            .await
            .map(|(_, t)| t.trim().to_owned())
            .as_deref(),
        Some("two")
    );
    app.stop().await;
}

#[tokio::test]
async fn a_per_tag_stage_gives_each_tag_an_instance_and_stops_it_when_the_tag_goes() {
    let app = spawn_app().await;
    let mut cleanup = Cleanup::new(&app);
    let repo = unique("dwtest/preview-");
    cleanup.repo(&repo);
    let admin = app.admin().await;
    let (status, body) = admin
        .patch("/api/settings", json!({"base_domain": "example.test"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let pr1 = push_image(&repo, "pr-1", Variant::Web, "preview one").await;
    let pr2 = push_image(&repo, "pr-2", Variant::Web, "preview two").await;
    let project_id = create_project(&admin, &repo).await;
    let stage_id = create_stage(&admin, project_id, "glob:pr-*", json!({})).await;
    let deployer = app.app().state().deployer.clone();
    let tags = vec![
        ("pr-1".to_owned(), pr1.clone()),
        ("pr-2".to_owned(), pr2.clone()),
        ("main".to_owned(), pr2.clone()),
    ];
    deployer
        .sync_per_tag(stage_id, tags, Trigger::Poll)
        .await
        .expect("the sync runs");

    let (status, list) = admin.get(&format!("/api/instances?stage_id={stage_id}")).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let items = list["items"].as_array().expect("items");
    assert_eq!(items.len(), 2, "{list}");
    let of_tag = |tag: &str| {
        items
            .iter()
            .find(|i| i["image_tag"] == tag)
            .cloned()
            .unwrap_or_else(|| panic!("an instance of {tag}: {list}"))
    };
    let (one, two) = (of_tag("pr-1"), of_tag("pr-2"));
    let suffix = format!(
        "{}.{}.example.test",
        two["stage_name"].as_str().unwrap(),
        two["project_name"].as_str().unwrap()
    );
    assert_eq!(one["hostname"], format!("pr-1.{suffix}"));
    assert_eq!(two["hostname"], format!("pr-2.{suffix}"));
    for instance in [&one, &two] {
        assert_eq!(
            (&instance["status"], &instance["is_current"]),
            (&json!("running"), &json!(true))
        );
    }
    assert_eq!(
        fetch(&one, "/")
            .await
            .map(|(_, t)| t.trim().to_owned())
            .as_deref(),
        Some("preview one")
    );
    // Each tag's hostname reaches its own container through the real proxy listener.
    assert_eq!(
        through_proxy(&app, &format!("pr-1.{suffix}")).await,
        (200, "preview one".to_owned())
    );
    assert_eq!(
        through_proxy(&app, &format!("pr-2.{suffix}")).await,
        (200, "preview two".to_owned())
    );

    // A per-tag stage deploys a named, matching tag only.
    let (status, body) = deploy(&admin, stage_id, json!({})).await;
    assert_field_error(status, &body, "tag");
    let (status, body) = deploy(&admin, stage_id, json!({"tag": "main"})).await;
    assert_field_error(status, &body, "tag");
    let (status, body) = deploy(&admin, stage_id, json!({"tag": "pr-2"})).await;
    assert_eq!((status, &body["id"].is_i64()), (StatusCode::OK, &true), "{body}");

    // pr-1 leaves the registry.
    let response = reqwest::Client::new()
        .delete(format!(
            "http://{}/v2/{repo}/manifests/{pr1}",
            crate::deploy::registry()
        ))
        .send()
        .await
        .expect("the registry answers");
    assert!(response.status().is_success(), "{}", response.status());
    let tags = vec![("pr-2".to_owned(), pr2.clone())];
    deployer
        .sync_per_tag(stage_id, tags, Trigger::Poll)
        .await
        .expect("the sync runs");
    let one = instance(&admin, one["id"].as_i64().unwrap()).await;
    assert_eq!(
        (&one["status"], &one["is_current"]),
        (&json!("stopped"), &json!(false))
    );
    assert!(fetch(&one, "/").await.is_none());
    let two = instance(&admin, two["id"].as_i64().unwrap()).await;
    assert_eq!(two["status"], "running");
    assert_eq!(through_proxy(&app, &format!("pr-1.{suffix}")).await.0, 404);
    assert_eq!(
        through_proxy(&app, &format!("pr-2.{suffix}")).await,
        (200, "preview two".to_owned())
    );

    // An instance stopped through the API leaves the route table at once.
    let (status, body) = admin
        .post(&format!("/api/instances/{}/stop", two["id"]), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(through_proxy(&app, &format!("pr-2.{suffix}")).await.0, 404);
    app.stop().await;
}

/// A GET of `/` through the app's proxy listener with `host` as the `Host`: status and body.
pub async fn through_proxy(app: &TestApp, host: &str) -> (u16, String) {
    through_proxy_at(app, host, "/").await
}

/// A GET of `path` through the app's proxy listener with `host` as the `Host`: status and body.
pub async fn through_proxy_at(app: &TestApp, host: &str, path: &str) -> (u16, String) {
    let response = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("a client")
        .get(format!("http://{}{path}", app.app().proxy_addr()))
        .header("host", host)
        .send()
        .await
        .expect("the proxy answers");
    let status = response.status().as_u16();
    (status, response.text().await.expect("a body").trim().to_owned())
}

#[tokio::test]
async fn bad_deploy_requests_get_a_4xx_naming_the_problem() {
    let app = spawn_app().await;
    let _cleanup = Cleanup::new(&app);
    let repo = unique("dwtest/deploy-bad-");
    let admin = app.admin().await;
    let project_id = create_project(&admin, &repo).await;
    let stage_id = create_stage(&admin, project_id, "tag:v1", json!({})).await;

    let (status, body) = deploy(&admin, 999_999, json!({"tag": "v1"})).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::NOT_FOUND, &json!("not_found")),
        "{body}"
    );
    let (status, body) = admin.post("/api/stages/x/deploy", json!({})).await;
    assert_field_error(status, &body, "id");
    let (status, body) = admin.post("/api/stages/x/rollback", json!({})).await;
    assert_field_error(status, &body, "id");
    let (status, body) = admin.post("/api/stages/999999/rollback", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    for bad in [
        json!({"tag": "-bad"}),
        json!({"tag": ""}),
        json!({"tag": 5}),
        json!({"tag": "a b"}),
    ] {
        let (status, body) = deploy(&admin, stage_id, bad).await;
        assert_field_error(status, &body, "tag");
    }
    let (status, body) = deploy(&admin, stage_id, json!({"tags": "v1"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = admin
        .post_raw(&format!("/api/stages/{stage_id}/deploy"), "text/plain", "v1")
        .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");
    // A tag the registry does not have (the repository does not even exist).
    let (status, body) = deploy(&admin, stage_id, json!({"tag": "v9"})).await;
    assert_eq!(
        (status, &body["error"]["field"]),
        (StatusCode::NOT_FOUND, &json!("tag")),
        "{body}"
    );
    let (status, body) = deploy(&admin, stage_id, json!({})).await;
    assert_eq!(
        (status, &body["error"]["field"]),
        (StatusCode::NOT_FOUND, &json!("tag")),
        "{body}"
    );
    let (status, list) = admin.get(&format!("/api/deployments?stage_id={stage_id}")).await;
    assert_eq!(
        (status, list["items"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(0)),
        "{list}"
    );

    let viewer = app.user_with_role("vera", "viewer").await;
    let (status, body) = deploy(&viewer, stage_id, json!({"tag": "v1"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = viewer
        .post(&format!("/api/stages/{stage_id}/rollback"), json!({}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = deploy(&app.anonymous(), stage_id, json!({"tag": "v1"})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=x", "limit"),
        ("stage_id=x", "stage_id"),
        ("stage_id=0", "stage_id"),
    ] {
        let (status, body) = viewer.get(&format!("/api/deployments?{query}")).await;
        assert_field_error(status, &body, field);
    }
    let (status, body) = viewer.get("/api/deployments?limit=500").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = app.anonymous().get("/api/deployments").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    app.stop().await;
}
