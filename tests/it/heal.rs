//! A stage heals (SPEC §3, Docker sync): the serving container of a stage removed from outside
//! (`docker rm -f`) comes back by itself — the same digest recreated as a new instance through
//! the health gate, or, when that cannot work (the stage's configuration no longer starts), the previous instance started again — with a `warn` event saying which and a note on
//! the stage page. All against the real engine, the real registry and the real proxy.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::deploy::{
    Cleanup, Variant, create_project, create_stage, deploy_ok, instance, push_image, through_proxy, unique,
};
use crate::helpers::{ApiClient, TestApp, spawn_app};

/// A stage with `hostname` routed through the proxy, following `tag:v1`, monitor-only.
async fn routed_stage(admin: &ApiClient, project_id: i64, hostname: &str) -> i64 {
    let stage_id = create_stage(admin, project_id, "tag:v1", json!({})).await;
    let (status, body) = admin
        .patch(&format!("/api/stages/{stage_id}"), json!({"hostname": hostname}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    stage_id
}

fn docker(args: &[&str]) -> String {
    let output = std::process::Command::new("docker")
        .args(args)
        .output()
        .expect("docker runs");
    assert!(
        output.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Waits until the stage's current instance is another than `lost` and answers `marker` through
/// the proxy; the stage as the API shows it then.
async fn wait_healed(
    app: &TestApp,
    admin: &ApiClient,
    stage_id: i64,
    lost: i64,
    host: &str,
    marker: &str,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, stage) = admin.get(&format!("/api/stages/{stage_id}")).await;
        let moved = stage["current_instance_id"].as_i64().is_some_and(|id| id != lost);
        if moved && through_proxy(app, host).await == (200, marker.to_owned()) {
            return stage;
        }
        if tokio::time::Instant::now() >= deadline {
            let (_, instances) = admin.get(&format!("/api/instances?stage_id={stage_id}")).await;
            let (_, deployments) = admin.get(&format!("/api/deployments?stage_id={stage_id}")).await;
            let (_, events) = admin.get("/api/events?per_page=50").await;
            panic!(
                "the stage did not heal in 60 s: {stage}\ninstances: {instances}\ndeployments: \
                 {deployments}\nevents: {events}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The `stage_healed` events of a stage, newest first.
async fn heal_events(admin: &ApiClient, project_id: i64, stage_id: i64) -> Vec<Value> {
    let (status, page) = admin
        .get(&format!(
            "/api/events?source=deployer&project_id={project_id}&per_page=500"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| e["stage_id"] == stage_id && e["details"]["kind"] == "stage_healed")
        .cloned()
        .collect()
}

async fn latest_deployment(admin: &ApiClient, stage_id: i64) -> Value {
    let (status, page) = admin
        .get(&format!("/api/deployments?stage_id={stage_id}&limit=1"))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["items"][0].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stage_whose_container_is_removed_from_outside_recreates_it_and_says_so() {
    let app = spawn_app().await;
    let mut cleanup = Cleanup::new(&app);
    let admin = app.admin().await;
    let repo = unique("dwtest/heal-");
    cleanup.repo(&repo);
    push_image(&repo, "v1", Variant::Web, "heal one").await;
    let project_id = create_project(&admin, &repo).await;
    let host = format!("{}.heal.test", unique("h"));
    let stage_id = routed_stage(&admin, project_id, &host).await;
    let first = deploy_ok(&admin, stage_id, "v1").await;
    assert_eq!(through_proxy(&app, &host).await, (200, "heal one".to_owned()));

    docker(&["rm", "-f", first["container_id"].as_str().expect("a container")]);
    let lost = first["id"].as_i64().unwrap();
    let stage = wait_healed(&app, &admin, stage_id, lost, &host, "heal one").await;

    let healed = instance(&admin, stage["current_instance_id"].as_i64().unwrap()).await;
    assert_eq!(healed["status"], "running");
    assert_eq!(healed["image_digest"], first["image_digest"], "the same digest");
    assert_ne!(healed["container_id"], first["container_id"]);
    assert_eq!(instance(&admin, lost).await["status"], "missing");
    let deployment = latest_deployment(&admin, stage_id).await;
    assert_eq!(
        (
            &deployment["trigger"],
            &deployment["status"],
            &deployment["instance_id"]
        ),
        (&json!("heal"), &json!("succeeded"), &healed["id"]),
        "{deployment}"
    );
    let events = heal_events(&admin, project_id, stage_id).await;
    assert_eq!(events.len(), 1, "one event per heal: {events:?}");
    let event = &events[0];
    assert_eq!(event["severity"], "warn", "{event}");
    let message = event["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("instance {lost}"))
            && message.contains("removed outside docker-watcher")
            && message.contains(&format!(
                "recreating v1 ({})",
                &first["image_digest"].as_str().unwrap()[7..19]
            ))
            && message.contains(&format!("as instance {}", healed["id"])),
        "{message}"
    );
    assert_eq!(event["details"]["healed_by"], "recreate", "{event}");

    let (status, page) = admin.get(&format!("/stages/{stage_id}")).await;
    assert_eq!(status, StatusCode::OK);
    let page = page.as_str().expect("a page");
    assert!(
        page.contains("This stage healed itself") && page.contains(r#"data-healed="succeeded""#),
        "the stage page says so"
    );
    // A deploy by hand afterwards is the stage's latest word: the note goes.
    push_image(&repo, "v2", Variant::Web, "heal two").await;
    deploy_ok(&admin, stage_id, "v2").await;
    let (_, page) = admin.get(&format!("/stages/{stage_id}")).await;
    assert!(!page.as_str().unwrap().contains("data-healed"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stage_that_cannot_recreate_its_instance_brings_back_the_previous_one() {
    let app = spawn_app().await;
    let mut cleanup = Cleanup::new(&app);
    let admin = app.admin().await;
    let repo = unique("dwtest/heal-prev-");
    cleanup.repo(&repo);
    push_image(&repo, "v1", Variant::Web, "prev one").await;
    push_image(&repo, "v2", Variant::Web, "prev two").await;
    let project_id = create_project(&admin, &repo).await;
    let host = format!("{}.heal.test", unique("h"));
    let stage_id = routed_stage(&admin, project_id, &host).await;
    let one = deploy_ok(&admin, stage_id, "v1").await;
    let two = deploy_ok(&admin, stage_id, "v2").await;
    assert_eq!(through_proxy(&app, &host).await, (200, "prev two".to_owned()));
    assert_eq!(
        instance(&admin, one["id"].as_i64().unwrap()).await["status"],
        "stopped"
    );

    // The stage's configuration changes so that a container created now exits at once (a
    // monitor-only stage does not redeploy for it): recreating v2 cannot pass the health gate,
    // while instance 1's container, created before, still starts.
    let (status, body) = admin
        .patch(
            &format!("/api/stages/{stage_id}"),
            json!({"container": {"port": 8080, "min_ready_seconds": 1,
                                 "command": ["/bin/sh", "-c", "echo broken >&2; exit 3"]}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    docker(&["rm", "-f", two["container_id"].as_str().expect("a container")]);

    let lost = two["id"].as_i64().unwrap();
    let stage = wait_healed(&app, &admin, stage_id, lost, &host, "prev one").await;
    assert_eq!(
        stage["current_instance_id"], one["id"],
        "the previous instance itself"
    );
    let back = instance(&admin, one["id"].as_i64().unwrap()).await;
    assert_eq!(
        (&back["status"], &back["container_id"]),
        (&json!("running"), &one["container_id"])
    );
    let events = heal_events(&admin, project_id, stage_id).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let message = events[0]["message"].as_str().unwrap();
    assert!(
        message.contains("recreating it failed")
            && message.contains("exited")
            && message.contains(&format!("bringing back the previous instance {}", one["id"])),
        "{message}"
    );
    assert_eq!(events[0]["details"]["healed_by"], "previous");
    let deployment = latest_deployment(&admin, stage_id).await;
    assert_eq!(
        (
            &deployment["trigger"],
            &deployment["status"],
            &deployment["instance_id"]
        ),
        (&json!("heal"), &json!("succeeded"), &one["id"]),
        "{deployment}"
    );
    app.stop().await;
}
