//! Stale container detection and cleanup over HTTP, against the real Docker engine and registry,
//! with instances deployed by the real deploy flow and time moved forward through the app's
//! injected clock: a stopped instance becomes stale and is listed with every field, warned
//! about once (also across a restart), and one scan is one Docker list call; single cleanups
//! remove the container, its image and the row (also when the container was removed behind
//! docker-watcher's back), refuse what is not stale or is being removed, and remove an instance
//! once when asked twice at the same time; bulk cleanup is for admins, its dry run removes
//! nothing and the real one removes exactly the stale list — never a running instance, another
//! installation's container or a container docker-watcher does not manage; and a lowered
//! threshold applies to the next scan without a restart.
//!
//! Every test removes what it created when it ends, even when it fails: its app's containers and
//! images ([`Cleanup`]) and the containers it made with the docker CLI ([`LabelledContainers`]).

use std::time::Duration;

use chrono::TimeDelta;
use docker_watcher::domain::instance::InstanceStatus;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::deploy::{
    Cleanup, Variant, create_project, create_stage, deploy_ok, instance, push_image, unique,
};
use crate::helpers::{ApiClient, TestApp, assert_field_error, spawn_app};

/// Every field of a stale item (SPEC §5).
const ITEM_FIELDS: [&str; 12] = [
    "instance_id",
    "container_id",
    "container_name",
    "project_id",
    "project_name",
    "stage_id",
    "stage_name",
    "image_tag",
    "status",
    "last_alive_at",
    "stale_since",
    "days_stale",
];

/// Runs the docker CLI; its success and stdout.
fn docker(args: &[&str]) -> (bool, String) {
    let output = std::process::Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).trim().to_owned(),
    )
}

fn container_exists(id: &str) -> bool {
    docker(&["container", "inspect", id]).0
}

fn container_state(id: &str) -> String {
    docker(&["container", "inspect", "-f", "{{.State.Status}}", id]).1
}

fn image_exists(id: &str) -> bool {
    docker(&["image", "inspect", id]).0
}

/// Removes, when dropped (also on a failed assertion), the containers a test created with the
/// docker CLI, found by a label of their own.
struct LabelledContainers {
    label: String,
}

impl LabelledContainers {
    fn new() -> Self {
        Self {
            label: format!("dwtest.stale={}", unique("c")),
        }
    }

    /// `docker create` (never started) of `image` with the test's label and `labels`; the id.
    fn create(&self, image: &str, labels: &[String]) -> String {
        let mut args = vec!["create".to_owned(), "--label".to_owned(), self.label.clone()];
        for label in labels {
            args.extend(["--label".to_owned(), label.clone()]);
        }
        args.push(image.to_owned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, id) = docker(&args);
        assert!(ok, "docker {args:?} failed");
        id
    }
}

impl Drop for LabelledContainers {
    fn drop(&mut self) {
        let filter = format!("label={}", self.label);
        let (_, ids) = docker(&["ps", "-aq", "--filter", &filter]);
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids);
            docker(&args);
        }
    }
}

/// A test app with one stage on a fresh repository, the tags deployed in order: every tag but
/// the last ends `stopped` (replaced), the last runs. Returns the instances as they are now.
pub(crate) struct Deployed {
    pub(crate) app: TestApp,
    pub(crate) cleanup: Cleanup,
    pub(crate) admin: ApiClient,
    pub(crate) repo: String,
    pub(crate) stage_id: i64,
    pub(crate) instances: Vec<Value>,
}

pub(crate) async fn deployed(tags: &[&str]) -> Deployed {
    let app = spawn_app().await;
    let mut cleanup = Cleanup::new(&app);
    let repo = unique("dwtest/stale-");
    cleanup.repo(&repo);
    let admin = app.admin().await;
    for tag in tags {
        push_image(&repo, tag, Variant::Web, &format!("stale test {tag}")).await;
    }
    let project_id = create_project(&admin, &repo).await;
    let stage_id = create_stage(&admin, project_id, "tag:v1", json!({})).await;
    let mut ids = Vec::new();
    for tag in tags {
        ids.push(
            deploy_ok(&admin, stage_id, tag).await["id"]
                .as_i64()
                .expect("an id"),
        );
    }
    let mut instances = Vec::new();
    for id in ids {
        instances.push(instance(&admin, id).await);
    }
    Deployed {
        app,
        cleanup,
        admin,
        repo,
        stage_id,
        instances,
    }
}

fn id(value: &Value) -> i64 {
    value["id"].as_i64().expect("an id")
}

fn container_id(value: &Value) -> String {
    value["container_id"].as_str().expect("a container id").to_owned()
}

/// Moves the app's clock `days` days and one second forward.
pub(crate) fn advance_days(app: &TestApp, days: i64) {
    app.clock.advance(TimeDelta::days(days) + TimeDelta::seconds(1));
}

async fn stale_list(client: &ApiClient) -> Value {
    let (status, body) = client.get("/api/containers/stale").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

pub(crate) async fn scan(client: &ApiClient) -> Value {
    let (status, body) = client.post("/api/containers/stale/scan", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

fn item_ids(list: &Value) -> Vec<i64> {
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| item["instance_id"].as_i64().expect("an instance id"))
        .collect()
}

/// The `warn` events of the stale scanner.
async fn stale_warnings(client: &ApiClient) -> Vec<Value> {
    let (status, page) = client.get("/api/events?source=stale&severity=warn").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["items"].as_array().expect("items").clone()
}

/// Waits until the startup scan (after Docker sync's first reconcile) has run, so that it does
/// not run beside what a test measures.
async fn wait_for_startup_scan(client: &ApiClient) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while stale_list(client).await["scanned_at"].is_null() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the startup scan did not run within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Engine calls of one operation made so far by the app.
fn api_calls(app: &TestApp, operation: &str) -> u64 {
    app.app()
        .state()
        .engine
        .api_calls()
        .get(operation)
        .copied()
        .unwrap_or(0)
}

#[tokio::test]
async fn a_stopped_instance_becomes_stale_is_listed_with_every_field_and_warned_about_once_even_across_a_restart()
 {
    let Deployed {
        mut app,
        cleanup: _cleanup,
        admin,
        stage_id,
        instances,
        ..
    } = deployed(&["v1", "v2"]).await;
    let (old, live) = (&instances[0], &instances[1]);
    assert_eq!(old["status"], "stopped", "{old}");
    wait_for_startup_scan(&admin).await;
    let viewer = app.user_with_role("stale-viewer", "viewer").await;

    let list = scan(&admin).await;
    assert_eq!(list["threshold_days"], 7, "{list}");
    assert!(list["scanned_at"].is_string(), "{list}");
    assert!(item_ids(&list).is_empty(), "nothing is stale yet: {list}");

    advance_days(&app, 8);
    let (lists_before, inspects_before) = (api_calls(&app, "list"), api_calls(&app, "inspect"));
    let list = scan(&admin).await;
    assert_eq!(
        (
            api_calls(&app, "list") - lists_before,
            api_calls(&app, "inspect") - inspects_before
        ),
        (1, 0),
        "one scan is one list call and no inspect"
    );
    assert_eq!(item_ids(&list), vec![id(old)], "{list}");
    let item = &list["items"][0];
    let keys: Vec<&str> = item
        .as_object()
        .expect("an item")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys.len(), ITEM_FIELDS.len(), "{item}");
    for field in ITEM_FIELDS {
        assert!(keys.contains(&field), "{field} missing from {item}");
    }
    assert_eq!(item["container_id"], old["container_id"]);
    assert_eq!(item["container_name"], old["container_name"]);
    assert_eq!(item["project_id"], old["project_id"]);
    assert_eq!(item["project_name"], old["project_name"]);
    assert_eq!(item["stage_id"], stage_id);
    assert_eq!(item["stage_name"], old["stage_name"]);
    assert_eq!(
        (&item["image_tag"], &item["status"], &item["days_stale"]),
        (&json!("v1"), &json!("stopped"), &json!(8))
    );
    assert!(item["last_alive_at"].is_string(), "{item}");
    assert_eq!(item["stale_since"], list["scanned_at"], "{list}");
    assert_eq!(stale_list(&viewer).await, list, "viewers read the same list");

    let warnings = stale_warnings(&admin).await;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let warning = &warnings[0];
    let message = warning["message"].as_str().expect("a message");
    for part in [
        old["project_name"].as_str().unwrap(),
        old["stage_name"].as_str().unwrap(),
        "v1",
        "8 days",
    ] {
        assert!(message.contains(part), "{part} missing from {message}");
    }
    assert_eq!(
        (
            &warning["instance_id"],
            &warning["stage_id"],
            &warning["project_id"]
        ),
        (&old["id"], &json!(stage_id), &old["project_id"])
    );
    assert_eq!(
        (
            &warning["details"]["image_tag"],
            &warning["details"]["days_stale"]
        ),
        (&json!("v1"), &json!(8))
    );

    // Neither a later scan nor a restart (with its startup scan) warns again.
    advance_days(&app, 1);
    assert_eq!(scan(&admin).await["items"][0]["days_stale"], 9);
    app.restart().await;
    let admin = app.admin().await;
    wait_for_startup_scan(&admin).await;
    let list = scan(&admin).await;
    assert_eq!(item_ids(&list), vec![id(old)], "{list}");
    assert_eq!(stale_warnings(&admin).await.len(), 1);
    let running = instance(&admin, id(live)).await;
    assert_eq!(running["status"], "running", "{running}");
    assert!(
        running["last_alive_at"].as_str() > live["last_alive_at"].as_str(),
        "the scan saw it running: {running}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_single_cleanup_removes_the_container_its_image_and_the_row_and_refuses_what_is_not_stale() {
    let Deployed {
        app,
        cleanup: _cleanup,
        admin,
        instances,
        ..
    } = deployed(&["v1", "v2"]).await;
    let (old, live) = (&instances[0], &instances[1]);
    let member = app.user_with_role("stale-member", "member").await;
    let viewer = app.user_with_role("stale-viewer", "viewer").await;
    let old_container = container_id(old);
    let (_, old_image) = docker(&["container", "inspect", "-f", "{{.Image}}", &old_container]);
    assert!(image_exists(&old_image));

    let path = |i: &Value| format!("/api/containers/stale/{}/cleanup", id(i));
    let (status, body) = member.post(&path(old), json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "not stale yet: {body}");
    assert_eq!(body["error"]["field"], "instance_id", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("not_stale:")),
        "{body}"
    );

    advance_days(&app, 8);
    scan(&member).await;
    let (status, body) = viewer.post(&path(old), json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = member.post(&path(live), json!({})).await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a running instance is never stale: {body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("not_stale:")),
        "{body}"
    );

    let (status, body) = member.post(&path(old), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let removed = &body["removed"];
    assert_eq!(
        (
            &removed["instance_id"],
            &removed["image_tag"],
            &removed["days_stale"]
        ),
        (&old["id"], &json!("v1"), &json!(8)),
        "{body}"
    );
    assert!(!container_exists(&old_container), "the container is removed");
    assert!(
        !image_exists(&old_image),
        "its image, used by nobody else, is removed"
    );
    let (status, _) = admin.get(&format!("/api/instances/{}", id(old))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "the row is deleted");
    assert!(item_ids(&stale_list(&member).await).is_empty());
    let (status, page) = admin.get("/api/events?source=stale&severity=info").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let recorded = page["items"].as_array().expect("items");
    assert!(
        recorded
            .iter()
            .any(|e| e["instance_id"] == old["id"] && e["details"]["actor"] == "stale-member"),
        "a recorded info event: {page}"
    );

    let (status, body) = member.post(&path(old), json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = member.post("/api/containers/stale/abc/cleanup", json!({})).await;
    assert_field_error(status, &body, "instance_id");
    assert_eq!(container_state(&container_id(live)), "running");
    app.stop().await;
}

#[tokio::test]
async fn a_container_removed_behind_docker_watchers_back_is_cleaned_up_without_error() {
    let Deployed {
        app,
        cleanup: _cleanup,
        admin,
        instances,
        ..
    } = deployed(&["v1", "v2"]).await;
    let old = &instances[0];
    let (ok, _) = docker(&["rm", "-f", &container_id(old)]);
    assert!(ok);
    advance_days(&app, 8);
    let list = scan(&admin).await;
    assert_eq!(item_ids(&list), vec![id(old)], "{list}");
    assert_eq!(list["items"][0]["status"], "missing", "{list}");

    let (status, body) = admin
        .post(&format!("/api/containers/stale/{}/cleanup", id(old)), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = admin.get(&format!("/api/instances/{}", id(old))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, page) = admin.get("/api/events?source=stale&severity=error").await;
    assert_eq!((status, &page["total"]), (StatusCode::OK, &json!(0)), "{page}");
    app.stop().await;
}

#[tokio::test]
async fn an_instance_being_removed_is_refused_with_409_and_two_cleanups_at_once_remove_it_once() {
    let Deployed {
        app,
        cleanup: _cleanup,
        admin,
        instances,
        ..
    } = deployed(&["v1", "v2", "v3"]).await;
    let (first, second) = (&instances[0], &instances[1]);
    advance_days(&app, 8);
    assert_eq!(item_ids(&scan(&admin).await), vec![id(first), id(second)]);

    // A cleanup in progress elsewhere (its status is what the scanner's claim writes).
    let store = &app.app().state().store;
    store
        .update_instance_status(id(first), InstanceStatus::Removing, None, chrono::Utc::now())
        .await
        .expect("the status is written");
    let (status, body) = admin
        .post(&format!("/api/containers/stale/{}/cleanup", id(first)), json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["field"], "instance_id", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("removing:")),
        "{body}"
    );
    let list = stale_list(&admin).await;
    assert_eq!(list["items"][0]["status"], "removing", "{list}");
    assert!(container_exists(&container_id(first)), "untouched");

    let path = format!("/api/containers/stale/{}/cleanup", id(second));
    let (a, b) = tokio::join!(admin.post(&path, json!({})), admin.post(&path, json!({})));
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert!(
        statuses == [StatusCode::OK, StatusCode::NOT_FOUND]
            || statuses == [StatusCode::OK, StatusCode::CONFLICT],
        "one removes, the other finds it removed or being removed: {a:?} {b:?}"
    );
    assert!(!container_exists(&container_id(second)));
    app.stop().await;
}

#[tokio::test]
async fn bulk_cleanup_is_for_admins_its_dry_run_removes_nothing_and_it_removes_only_the_stale_list() {
    let Deployed {
        app,
        cleanup: _cleanup,
        admin,
        repo,
        instances,
        ..
    } = deployed(&["v1", "v2", "v3"]).await;
    let extra = LabelledContainers::new();
    let image = format!("{}/{repo}:v1", crate::deploy::registry());
    // Another installation's container — even one labelled with one of our instance ids — and
    // a container docker-watcher does not manage at all: neither running, both look stale.
    let foreign = extra.create(
        &image,
        &[
            "io.docker-watcher.managed=true".to_owned(),
            format!("io.docker-watcher.installation={}", unique("other")),
            format!("io.docker-watcher.instance={}", id(&instances[0])),
        ],
    );
    let unmanaged = extra.create(&image, &[]);
    let member = app.user_with_role("bulk-member", "member").await;
    let viewer = app.user_with_role("bulk-viewer", "viewer").await;
    advance_days(&app, 8);
    let list = scan(&admin).await;
    let stale = vec![id(&instances[0]), id(&instances[1])];
    assert_eq!(item_ids(&list), stale, "{list}");

    for client in [&member, &viewer] {
        let (status, body) = client.post("/api/containers/stale/cleanup", json!({})).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    }
    let (status, body) = admin
        .post("/api/containers/stale/cleanup?dry_run=maybe", json!({}))
        .await;
    assert_field_error(status, &body, "dry_run");

    let (status, dry) = admin
        .post("/api/containers/stale/cleanup?dry_run=1", json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{dry}");
    assert_eq!(dry, json!({"removed": stale, "skipped": [], "failed": []}));
    for instance in &instances {
        assert!(
            container_exists(&container_id(instance)),
            "a dry run removes nothing"
        );
    }
    assert_eq!(item_ids(&stale_list(&admin).await), stale);

    let (status, done) = admin.post("/api/containers/stale/cleanup", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done, json!({"removed": stale, "skipped": [], "failed": []}));
    for instance in &instances[..2] {
        assert!(!container_exists(&container_id(instance)));
        let (status, _) = admin.get(&format!("/api/instances/{}", id(instance))).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    assert_eq!(container_state(&container_id(&instances[2])), "running");
    assert_eq!(instance(&admin, id(&instances[2])).await["status"], "running");
    assert!(
        container_exists(&foreign),
        "another installation's container is untouched"
    );
    assert!(
        container_exists(&unmanaged),
        "an unmanaged container is untouched"
    );
    assert!(item_ids(&stale_list(&admin).await).is_empty());
    app.stop().await;
}

#[tokio::test]
async fn a_lowered_threshold_applies_to_the_next_scan_without_a_restart() {
    let Deployed {
        app,
        cleanup: _cleanup,
        admin,
        instances,
        ..
    } = deployed(&["v1"]).await;
    let only = &instances[0];
    let (status, stopped) = admin
        .post(&format!("/api/instances/{}/stop", id(only)), json!({}))
        .await;
    assert_eq!(
        (status, &stopped["status"]),
        (StatusCode::OK, &json!("stopped")),
        "{stopped}"
    );
    advance_days(&app, 2);
    assert!(
        item_ids(&scan(&admin).await).is_empty(),
        "2 days is not stale at 7"
    );

    let (status, body) = admin
        .patch(
            "/api/settings",
            json!({"stale_threshold_days": 1, "stale_scan_interval": "30m"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let list = stale_list(&admin).await;
    assert_eq!(list["threshold_days"], 1, "{list}");
    assert!(
        item_ids(&list).is_empty(),
        "marked by the next scan, not by the setting itself"
    );
    let list = scan(&admin).await;
    assert_eq!(item_ids(&list), vec![id(only)], "{list}");
    assert_eq!(list["items"][0]["days_stale"], 2);
    assert_eq!(stale_warnings(&admin).await.len(), 1);

    // Raised again: no longer listed, at once.
    let (status, body) = admin
        .patch("/api/settings", json!({"stale_threshold_days": 30}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(item_ids(&stale_list(&admin).await).is_empty());
    app.stop().await;
}
