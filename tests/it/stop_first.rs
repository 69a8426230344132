//! The deploy strategy `stop_first` (SPEC §3 "Workloads"), end to end against the real Docker
//! engine, registry and proxy listener: under a continuous load through the proxy, a
//! `stop_first` redeploy (and a rollback) fails no request and never has two containers of the
//! stage running at once (checked on the engine's own event stream), as a `start_first` one
//! fails none; a `stop_first` deploy whose new image fails its health gate brings the old
//! container back and the held requests are served by it; a hold longer than
//! `proxy_hold_seconds` answers the held request 503 with `Retry-After` and the deploy still
//! finishes; a stage's strategy is read and written through the API, and bad names are a 400
//! naming `strategy`.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::deploy::{Cleanup, Variant, create_project, deploy, instance, push_image, unique};
use crate::helpers::{ADMIN_PASSWORD, ApiClient, TestApp, assert_field_error, spawn_app};
use crate::ui::UiSession;

/// A routed stage of a new project on `repo`, deployed by hand; its id and its project's name.
async fn routed_stage(
    admin: &ApiClient,
    repo: &str,
    hostname: &str,
    strategy: &str,
    container: Value,
) -> (i64, String) {
    let project_id = create_project(admin, repo).await;
    let (_, project) = admin.get(&format!("/api/projects/{project_id}")).await;
    let mut spec = json!({"port": 8080, "min_ready_seconds": 1});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), container.as_object()) {
        spec.extend(extra.clone());
    }
    let (status, stage) = admin
        .post(
            &format!("/api/projects/{project_id}/stages"),
            json!({
                "name": unique("s"),
                "tag_policy": "tag:v1",
                "auto_deploy": false,
                "hostname": hostname,
                "strategy": strategy,
                "container": spec,
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{stage}");
    (
        stage["id"].as_i64().expect("a stage id"),
        project["name"].as_str().expect("a project name").to_owned(),
    )
}

async fn deployed(admin: &ApiClient, stage_id: i64, tag: &str, outcome: &str) -> Value {
    let (status, deployment) = deploy(admin, stage_id, json!({"tag": tag})).await;
    assert_eq!(
        (status, &deployment["status"]),
        (StatusCode::CREATED, &json!(outcome)),
        "{deployment}"
    );
    deployment
}

/// What the clients of a load saw.
#[derive(Debug, Default)]
struct Seen {
    ok_by_body: BTreeMap<String, u64>,
    failures: Vec<String>,
}

/// `clients` loops of GETs of `/` through the proxy with `host`, until `stop` (at most a minute).
fn start_load(
    app: &TestApp,
    host: &str,
    clients: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Seen>> {
    (0..clients)
        .map(|_| {
            let url = format!("http://{}/", app.app().proxy_addr());
            let (host, stop) = (host.to_owned(), stop.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::builder().no_proxy().build().expect("a client");
                let mut seen = Seen::default();
                let deadline = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                    let response = client
                        .get(&url)
                        .header("host", &host)
                        .timeout(Duration::from_secs(40))
                        .send()
                        .await;
                    match response {
                        Ok(r) if r.status() == StatusCode::OK => match r.text().await {
                            Ok(body) => *seen.ok_by_body.entry(body.trim().to_owned()).or_default() += 1,
                            Err(e) => seen.failures.push(format!("body: {e}")),
                        },
                        Ok(r) => seen.failures.push(format!("status {}", r.status())),
                        Err(e) => seen.failures.push(format!("request: {e:?}")),
                    }
                }
                seen
            })
        })
        .collect()
}

async fn stop_load(stop: &AtomicBool, load: Vec<tokio::task::JoinHandle<Seen>>) -> Seen {
    stop.store(true, Ordering::SeqCst);
    let mut total = Seen::default();
    for client in load {
        let seen = client.await.expect("a load client");
        for (body, n) in seen.ok_by_body {
            *total.ok_by_body.entry(body).or_default() += n;
        }
        total.failures.extend(seen.failures);
    }
    total
}

fn assert_no_failures(seen: &Seen) {
    assert!(
        seen.failures.is_empty(),
        "{} failed requests ({:?} succeeded): {:?}",
        seen.failures.len(),
        seen.ok_by_body,
        &seen.failures[..seen.failures.len().min(10)]
    );
}

/// The most containers of the project that ran at once between `since` and now, replayed
/// from the engine's own events (`start`, `die`) — not sampled, so no overlap slips between two
/// looks.
fn most_running_at_once(project: &str, since: i64) -> usize {
    let until = chrono::Utc::now().timestamp() + 1;
    let output = std::process::Command::new("docker")
        .args([
            "events",
            "--since",
            &since.to_string(),
            "--until",
            &until.to_string(),
            "--filter",
            "type=container",
            "--filter",
            &format!("label=io.docker-watcher.project={project}"),
            "--format",
            "{{.Action}} {{.Actor.ID}}",
        ])
        .output()
        .expect("docker events runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut running = HashSet::new();
    let mut most = 0;
    let mut starts = 0;
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        match line.split_once(' ') {
            Some(("start", id)) => {
                running.insert(id.to_owned());
                starts += 1;
            }
            Some(("die", id)) => {
                running.remove(id);
            }
            _ => {}
        }
        most = most.max(running.len());
    }
    assert!(
        starts > 0,
        "the engine reported no start of the project's containers"
    );
    most
}

#[tokio::test]
async fn a_stage_s_strategy_is_start_first_unless_set_and_other_names_are_refused() {
    let app = spawn_app().await;
    let _cleanup = Cleanup::new(&app);
    let admin = app.admin().await;
    let project_id = create_project(&admin, &unique("dwtest/strategy-")).await;
    let stages = format!("/api/projects/{project_id}/stages");

    let (status, plain) = admin
        .post(&stages, json!({"name": "plain", "tag_policy": "tag:v1"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{plain}");
    assert_eq!(plain["strategy"], "start_first");
    let (status, single) = admin
        .post(
            &stages,
            json!({"name": "single", "tag_policy": "tag:v1", "strategy": "stop_first"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{single}");
    assert_eq!(single["strategy"], "stop_first");

    for bad in [json!("rolling"), json!("Stop_First"), json!(""), json!(1)] {
        let (status, body) = admin
            .post(
                &stages,
                json!({"name": "bad", "tag_policy": "tag:v1", "strategy": bad}),
            )
            .await;
        assert_field_error(status, &body, "strategy");
    }
    let plain_url = format!("/api/stages/{}", plain["id"]);
    for bad in [json!("blue_green"), json!(null), json!(["stop_first"])] {
        let (status, body) = admin.patch(&plain_url, json!({"strategy": bad})).await;
        assert_field_error(status, &body, "strategy");
    }
    let (_, unchanged) = admin.get(&plain_url).await;
    assert_eq!(
        unchanged["strategy"], "start_first",
        "a refused patch changes nothing"
    );

    let (status, patched) = admin.patch(&plain_url, json!({"strategy": "stop_first"})).await;
    assert_eq!(
        (status, &patched["strategy"]),
        (StatusCode::OK, &json!("stop_first"))
    );
    let viewer = app.user_with_role("vic", "viewer").await;
    let (_, seen) = viewer.get(&plain_url).await;
    assert_eq!(seen["strategy"], "stop_first");

    // The stage form shows it, and its edit sets it back.
    let ui = UiSession::logged_in(&app, "admin", ADMIN_PASSWORD).await;
    let page_url = format!("/stages/{}", plain["id"]);
    ui.get(&page_url)
        .await
        .assert_has("<option value=\"stop_first\" selected>");
    let edited = ui
        .submit(
            &format!("{page_url}/edit"),
            &[
                ("name", "plain"),
                ("tag_policy", "tag:v1"),
                ("auto_deploy", "true"),
                ("strategy", "start_first"),
                ("container.port", "8080"),
            ],
        )
        .await;
    assert_eq!(edited.status, StatusCode::SEE_OTHER, "{}", edited.body);
    let (_, seen) = admin.get(&plain_url).await;
    assert_eq!(seen["strategy"], "start_first", "{seen}");
    let refused = ui
        .submit(
            &format!("{page_url}/edit"),
            &[
                ("name", "plain"),
                ("tag_policy", "tag:v1"),
                ("strategy", "sideways"),
            ],
        )
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(
        refused.field_of("edit-stage-strategy").contains("field-error"),
        "{}",
        refused.body
    );
    app.stop().await;
}

#[tokio::test]
async fn a_stop_first_redeploy_and_rollback_under_load_fail_no_request_and_never_run_two_containers() {
    let app = spawn_app().await;
    let mut cleanup = Cleanup::new(&app);
    let repo = unique("dwtest/stop-first-");
    cleanup.repo(&repo);
    let admin = app.admin().await;
    let hostname = format!("{}.example.test", unique("sf-"));
    push_image(&repo, "v1", Variant::Web, "one").await;
    push_image(&repo, "v2", Variant::Web, "two").await;
    let (stage_id, project) = routed_stage(&admin, &repo, &hostname, "stop_first", json!({})).await;
    let first = deployed(&admin, stage_id, "v1", "succeeded").await;

    let since = chrono::Utc::now().timestamp() - 1;
    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(&app, &hostname, 6, &stop);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = deployed(&admin, stage_id, "v2", "succeeded").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let old = instance(&admin, first["instance_id"].as_i64().expect("an id")).await;
    assert_eq!(old["status"], "stopped", "{old}");
    let new = instance(&admin, second["instance_id"].as_i64().expect("an id")).await;
    assert_eq!(
        (&new["status"], &new["is_current"]),
        (&json!("running"), &json!(true)),
        "{new}"
    );

    // A rollback keeps the order too: the current instance stops before the earlier one
    // starts again.
    let (status, rollback) = admin
        .post(&format!("/api/stages/{stage_id}/rollback"), json!({}))
        .await;
    assert_eq!(
        (status, &rollback["status"]),
        (StatusCode::CREATED, &json!("succeeded")),
        "{rollback}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = stop_load(&stop, load).await;

    eprintln!(
        "stop_first redeploy and rollback under load: {:?}",
        seen.ok_by_body
    );
    assert_no_failures(&seen);
    assert!(
        seen.ok_by_body.contains_key("one") && seen.ok_by_body.contains_key("two"),
        "both versions served the load: {:?}",
        seen.ok_by_body
    );
    assert_eq!(seen.ok_by_body.len(), 2, "{:?}", seen.ok_by_body);
    assert_eq!(
        most_running_at_once(&project, since),
        1,
        "two instances ran at the same time"
    );
    let back = instance(&admin, first["instance_id"].as_i64().expect("an id")).await;
    assert_eq!(
        (&back["status"], &back["is_current"]),
        (&json!("running"), &json!(true)),
        "{back}"
    );
    let new = instance(&admin, second["instance_id"].as_i64().expect("an id")).await;
    assert_eq!(new["status"], "stopped", "{new}");
    app.stop().await;
}

#[tokio::test]
async fn a_start_first_redeploy_under_the_same_load_fails_no_request() {
    let app = spawn_app().await;
    let mut cleanup = Cleanup::new(&app);
    let repo = unique("dwtest/start-first-");
    cleanup.repo(&repo);
    let admin = app.admin().await;
    let hostname = format!("{}.example.test", unique("sf-"));
    push_image(&repo, "v1", Variant::Web, "one").await;
    push_image(&repo, "v2", Variant::Web, "two").await;
    let (stage_id, project) = routed_stage(&admin, &repo, &hostname, "start_first", json!({})).await;
    deployed(&admin, stage_id, "v1", "succeeded").await;

    let since = chrono::Utc::now().timestamp() - 1;
    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(&app, &hostname, 6, &stop);
    tokio::time::sleep(Duration::from_millis(500)).await;
    deployed(&admin, stage_id, "v2", "succeeded").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = stop_load(&stop, load).await;

    eprintln!("start_first redeploy under load: {:?}", seen.ok_by_body);
    assert_no_failures(&seen);
    assert_eq!(seen.ok_by_body.len(), 2, "{:?}", seen.ok_by_body);
    // The contrast with stop_first: here the new one starts before the old one stops.
    assert_eq!(most_running_at_once(&project, since), 2);
    app.stop().await;
}

#[tokio::test]
async fn a_failed_stop_first_deploy_brings_the_old_container_back_to_serve_the_held_requests() {
    let app = spawn_app().await;
    let mut cleanup = Cleanup::new(&app);
    let repo = unique("dwtest/stop-first-fail-");
    cleanup.repo(&repo);
    let admin = app.admin().await;
    let hostname = format!("{}.example.test", unique("sf-"));
    push_image(&repo, "v1", Variant::Web, "one").await;
    push_image(&repo, "v2", Variant::Health500, "broken").await;
    let (stage_id, project) = routed_stage(
        &admin,
        &repo,
        &hostname,
        "stop_first",
        json!({"health_check": {"path": "/health"}}),
    )
    .await;
    let first = deployed(&admin, stage_id, "v1", "succeeded").await;

    let since = chrono::Utc::now().timestamp() - 1;
    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(&app, &hostname, 6, &stop);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let failed = deployed(&admin, stage_id, "v2", "failed").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = stop_load(&stop, load).await;

    eprintln!("failed stop_first deploy under load: {:?}", seen.ok_by_body);
    assert_no_failures(&seen);
    assert_eq!(
        seen.ok_by_body.keys().collect::<Vec<_>>(),
        vec!["one"],
        "only the old version served, before and after the attempt"
    );
    assert_eq!(
        most_running_at_once(&project, since),
        1,
        "old and new ran at the same time"
    );
    let old = instance(&admin, first["instance_id"].as_i64().expect("an id")).await;
    assert_eq!(
        (&old["status"], &old["is_current"]),
        (&json!("running"), &json!(true)),
        "{old}"
    );
    let new = instance(&admin, failed["instance_id"].as_i64().expect("an id")).await;
    assert_eq!(new["status"], "failed", "{new}");
    assert!(
        failed["error"].as_str().is_some_and(|e| e.contains("health")),
        "the deployment says why: {failed}"
    );
    let (_, events) = admin.get("/api/events?source=deployer&severity=error").await;
    assert!(events["total"].as_u64().is_some_and(|n| n >= 1), "{events}");
    app.stop().await;
}

#[tokio::test]
async fn a_request_held_longer_than_proxy_hold_seconds_gets_a_503_and_the_deploy_still_finishes() {
    let app = spawn_app().await;
    let mut cleanup = Cleanup::new(&app);
    let repo = unique("dwtest/stop-first-hold-");
    cleanup.repo(&repo);
    let admin = app.admin().await;
    let (status, body) = admin
        .patch("/api/settings", json!({"proxy_hold_seconds": 1}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let hostname = format!("{}.example.test", unique("sf-"));
    push_image(&repo, "v1", Variant::Web, "one").await;
    push_image(&repo, "v2", Variant::Web, "two").await;
    // Healthy only after 4 s up: longer than the hold.
    let (stage_id, _) = routed_stage(
        &admin,
        &repo,
        &hostname,
        "stop_first",
        json!({"min_ready_seconds": 4}),
    )
    .await;
    deployed(&admin, stage_id, "v1", "succeeded").await;

    let redeploy = {
        let admin = admin.clone();
        tokio::spawn(async move { deployed(&admin, stage_id, "v2", "succeeded").await })
    };
    let client = reqwest::Client::builder().no_proxy().build().expect("a client");
    let url = format!("http://{}/", app.app().proxy_addr());
    let mut unavailable = None;
    while !redeploy.is_finished() && unavailable.is_none() {
        let asked = Instant::now();
        let response = client
            .get(&url)
            .header("host", &hostname)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .expect("the proxy answers");
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            let retry_after = response.headers().get("retry-after").cloned();
            unavailable = Some((asked.elapsed(), retry_after));
        }
    }
    let (waited, retry_after) = unavailable.expect("a request was held past proxy_hold_seconds");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "held about proxy_hold_seconds, not {waited:?}"
    );
    assert_eq!(retry_after.as_ref().and_then(|v| v.to_str().ok()), Some("1"));
    let second = tokio::time::timeout(Duration::from_secs(60), redeploy)
        .await
        .expect("the deploy finishes")
        .expect("the deploy task");
    let new = instance(&admin, second["instance_id"].as_i64().expect("an id")).await;
    assert_eq!(new["status"], "running", "{new}");
    let response = client
        .get(&url)
        .header("host", &hostname)
        .send()
        .await
        .expect("the proxy answers");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.expect("a body").trim(), "two");
    app.stop().await;
}
