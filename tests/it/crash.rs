//! An event flood cut by `kill -9`, against the real binary: eight clients change settings as
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

use crate::events::{EventStreamClient, Next};
use crate::helpers::{ApiClient, Binary, admin_client};

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
