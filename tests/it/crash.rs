//! docker-watcher killed with `kill -9` in the middle of its work, against the real binary and
//! engine (the kill during a health gate is in `sync.rs`).
//!
//! A kill while a `pre_deploy` hook's one-off container runs: the restarted process fails the
//! interrupted deployment, the old instance keeps serving, and the hook container — never an
//! instance — is removed as the unrecorded container it is, so nothing is left behind.
//!
//! An event flood cut by `kill -9`: eight clients change settings as
//! fast as they can (each change is a persisted event) while an SSE client follows the stream,
//! and the process is killed in the middle. The database then passes SQLite's integrity check,
//! the persisted event ids run 1, 2, 3… without a gap, every event a client saw live is still
//! there with the same message (an event is committed before it is broadcast), and a restarted
//! process replays the stream after any id exactly: each later event once, in order, none
//! missing.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::Connection;
use sqlx::sqlite::SqliteConnectOptions;

use crate::deploy::{Variant, create_project, deploy_ok, instance, push_image, registry, unique};
use crate::events::{EventStreamClient, Next};
use crate::helpers::{ApiClient, Binary, InstallationCleanup, admin_client};
use crate::sync::{create_manual_stage, docker, eventually};

/// Every persisted event of the app, by id (paging through `GET /api/events`, newest first).
async fn stored_events(client: &ApiClient) -> BTreeMap<i64, String> {
    let mut events = BTreeMap::new();
    for page in 1.. {
        let (status, body) = client.get(&format!("/api/events?per_page=500&page={page}")).await;
        assert_eq!(status, reqwest::StatusCode::OK, "{body}");
        let items = body["items"].as_array().expect("items");
        for item in items {
            let id = item["id"].as_i64().expect("a persisted event has an id");
            events.insert(id, item["message"].as_str().unwrap_or_default().to_owned());
        }
        if items.len() < 500 {
            break;
        }
    }
    events
}

#[tokio::test]
async fn an_event_flood_cut_by_kill_9_leaves_a_whole_log_with_contiguous_ids_and_an_exact_replay() {
    let data_dir = tempfile::tempdir().expect("a data dir");
    let binary = Binary::start(data_dir.path()).await;
    let admin = admin_client(&binary.base_url).await;
    let mut live = EventStreamClient::connect(&admin, "/api/events/stream", None).await;

    // The flood: each successful patch changes a setting, so each one persists an event.
    let flood: Vec<_> = (0..8)
        .map(|worker| {
            let admin = admin.clone();
            tokio::spawn(async move {
                let mut accepted = 0u32;
                for round in 0u32.. {
                    // Never the value the setting has now (that would change nothing): the
                    // workers' values interleave and repeat only 3650 patches later.
                    let days = 1 + (round * 8 + worker) % 3650;
                    let request = admin
                        .request(reqwest::Method::PATCH, "/api/settings")
                        .json(&json!({"stale_threshold_days": days}));
                    match request.send().await {
                        Ok(response) if response.status().is_success() => accepted += 1,
                        // The process is gone: the flood is over.
                        _ => break,
                    }
                }
                accepted
            })
        })
        .collect();

    // Follow the stream while the flood runs, then kill the process in the middle of it.
    let mut seen: BTreeMap<i64, String> = BTreeMap::new();
    let kill_at = tokio::time::Instant::now() + Duration::from_millis(2500);
    while tokio::time::Instant::now() < kill_at {
        if let Next::Message(message) = live.next_within(Duration::from_millis(100)).await
            && let Some(id) = message.id
        {
            seen.insert(
                id,
                message.data["message"].as_str().unwrap_or_default().to_owned(),
            );
        }
    }
    binary.kill().await;
    let mut accepted = 0;
    for worker in flood {
        accepted += worker.await.expect("a flood worker");
    }
    drop(live);
    assert!(accepted > 50, "the flood ran ({accepted} changes)");
    assert!(
        seen.len() > 50,
        "the stream carried the flood ({} events)",
        seen.len()
    );

    // The database is whole.
    let database = data_dir.path().join("docker-watcher.db");
    let mut conn = sqlx::SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(&database))
        .await
        .expect("the database opens");
    let check: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut conn)
        .await
        .expect("integrity_check runs");
    assert_eq!(check, "ok");
    conn.close().await.expect("closed");

    // A new process on the same data dir: ids without a gap, every live event still there.
    let binary = Binary::start(data_dir.path()).await;
    let admin = admin_client(&binary.base_url).await;
    let stored = stored_events(&admin).await;
    let ids: Vec<i64> = stored.keys().copied().collect();
    let last = *ids.last().expect("events");
    assert_eq!(
        ids,
        (1..=last).collect::<Vec<_>>(),
        "persisted ids run without a gap"
    );
    for (id, message) in &seen {
        assert_eq!(
            stored.get(id),
            Some(message),
            "event {id} was broadcast, so it was committed"
        );
    }
    let flood_events = stored
        .values()
        .filter(|m| m.contains("changed the settings"))
        .count();
    assert!(
        flood_events >= accepted as usize,
        "every accepted change left its event ({flood_events} events, {accepted} accepted)"
    );

    // Replay after an id in the middle of the flood: each later event once, in order.
    let after = ids[ids.len() / 2];
    let mut replay =
        EventStreamClient::connect(&admin, &format!("/api/events/stream?last_event_id={after}"), None).await;
    let mut replayed = Vec::new();
    let newest = *stored.keys().last().expect("events");
    while replayed.last().copied().unwrap_or(after) < newest {
        let message = replay.expect_message().await;
        let id = message.id.expect("replayed events are persisted ones");
        assert_eq!(
            Some(&message.data["message"]),
            stored.get(&id).map(|m| Value::String(m.clone())).as_ref(),
            "event {id}"
        );
        replayed.push(id);
    }
    // The new process's own events (its start, the admin's token) follow the flood's; compare
    // up to the newest one read above.
    assert_eq!(
        replayed,
        ((after + 1)..=newest).collect::<Vec<_>>(),
        "exactly the events after {after}, once each, in order"
    );
    binary.terminate().await;
}

#[tokio::test]
async fn a_kill_during_a_pre_deploy_hook_fails_the_deploy_keeps_the_old_instance_and_leaves_no_hook_container()
 {
    let repo = unique("dwtest/crash-hook-");
    push_image(&repo, "v1", Variant::Web, "hook v1").await;
    push_image(&repo, "v2", Variant::Web, "hook v2").await;
    let data_dir = tempfile::tempdir().expect("a data dir");
    let mut labelled = InstallationCleanup::default();

    let binary = Binary::start(data_dir.path()).await;
    let admin = admin_client(&binary.base_url).await;
    let project_id = create_project(&admin, &repo).await;
    let stage_id = create_manual_stage(&admin, project_id, 1).await;
    let v1 = deploy_ok(&admin, stage_id, "v1").await;
    labelled.installation_of(&v1);
    let (_, installation) = docker(&[
        "inspect",
        "-f",
        "{{index .Config.Labels \"io.docker-watcher.installation\"}}",
        v1["container_id"].as_str().expect("a container"),
    ]);

    // The next deploy's migration takes a minute: long enough to kill docker-watcher in it.
    let (status, body) = admin
        .patch(
            &format!("/api/stages/{stage_id}"),
            json!({"hooks": {"pre_deploy": {"command": ["/bin/sleep", "60"], "timeout_seconds": 120}}}),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    let deploying = admin.clone();
    let request =
        tokio::spawn(async move { crate::deploy::deploy(&deploying, stage_id, json!({"tag": "v2"})).await });
    let hook_filter = format!("label=io.docker-watcher.installation={installation}");
    let hook = eventually("the hook container to run", Duration::from_secs(60), || {
        let hook_filter = hook_filter.clone();
        async move {
            let (_, ids) = docker(&[
                "ps",
                "-q",
                "--no-trunc",
                "--filter",
                &hook_filter,
                "--filter",
                "label=io.docker-watcher.hook",
            ]);
            ids.split_whitespace().next().map(str::to_owned)
        }
    })
    .await;
    binary.kill().await;
    let _ = request.await;

    let binary = Binary::start(data_dir.path()).await;
    let admin = admin_client(&binary.base_url).await;
    let (_, list) = admin
        .get(&format!("/api/deployments?stage_id={stage_id}&limit=1"))
        .await;
    let interrupted = &list["items"][0];
    assert_eq!(
        (&interrupted["image_tag"], &interrupted["status"]),
        (&json!("v2"), &json!("failed")),
        "{list}"
    );
    assert_eq!(
        interrupted["error"], "interrupted by a restart of docker-watcher",
        "{interrupted}"
    );
    let v1 = instance(&admin, v1["id"].as_i64().expect("an id")).await;
    assert_eq!(
        (&v1["status"], &v1["is_current"]),
        (&json!("running"), &json!(true)),
        "the old one serves: {v1}"
    );
    eventually(
        "the orphaned hook container to be removed",
        Duration::from_secs(30),
        || {
            let hook = hook.clone();
            async move { (!docker(&["inspect", &hook]).0).then_some(()) }
        },
    )
    .await;
    let (_, left) = docker(&[
        "ps",
        "-aq",
        "--filter",
        &hook_filter,
        "--filter",
        "label=io.docker-watcher.hook",
    ]);
    assert!(left.is_empty(), "no hook container is left: {left}");
    binary.terminate().await;
    let _ = docker(&[
        "rmi",
        "-f",
        &format!("{}/{repo}:v1", registry()),
        &format!("{}/{repo}:v2", registry()),
    ]);
}
