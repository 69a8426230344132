//! The event log and its live stream: `GET /api/events` (filters, pagination, 400s naming the
//! parameter), `GET /api/events/stream` (live delivery, `?all=1`, `Last-Event-ID` replay without
//! gaps or duplicates, shutdown), and retention. Events are published through the running app's
//! own bus, as its workflows do, and read back over HTTP.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use docker_watcher::domain::event::{NewEvent, Source};
use docker_watcher::events::retention::prune_once;
use futures::StreamExt;
use futures::stream::BoxStream;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{ApiClient, TestApp, assert_field_error, spawn_app};

/// Publishes an event through the app's bus; returns its id (`None` when transient).
async fn publish(app: &TestApp, event: NewEvent) -> Option<i64> {
    app.app().state().bus.publish(event).await.id
}

async fn publish_stored(app: &TestApp, event: NewEvent) -> i64 {
    publish(app, event).await.expect("a persisted event has an id")
}

fn ids(body: &Value) -> Vec<i64> {
    body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| e["id"].as_i64().expect("an id"))
        .collect()
}

async fn log(client: &ApiClient, query: &str) -> Value {
    let (status, body) = client.get(&format!("/api/events?{query}")).await;
    assert_eq!(status, StatusCode::OK, "{query}: {body}");
    body
}

#[tokio::test]
async fn the_event_log_lists_persisted_events_newest_first_with_a_total() {
    let app = spawn_app().await;
    let viewer = app.user_with_role("vera", "viewer").await;
    let first = publish_stored(&app, NewEvent::warn(Source::Poller, "registry slow").project(101)).await;
    let transient = publish(&app, NewEvent::info(Source::Poller, "polled").project(101)).await;
    let second = publish_stored(
        &app,
        NewEvent::error(Source::Deployer, "deploy failed")
            .project(101)
            .stage(7),
    )
    .await;
    let third = publish_stored(
        &app,
        NewEvent::info(Source::Stale, "cleaned up")
            .project(101)
            .recorded(),
    )
    .await;
    assert_eq!(transient, None, "an info event that is not recorded is transient");

    let body = log(&viewer, "project_id=101").await;
    assert_eq!(ids(&body), vec![third, second, first]);
    assert_eq!(body["total"], 3);
    assert_eq!(body["page"], 1);
    assert_eq!(body["per_page"], 50);
    let deploy = &body["items"][1];
    assert_eq!(deploy["severity"], "error");
    assert_eq!(deploy["source"], "deployer");
    assert_eq!(deploy["message"], "deploy failed");
    assert_eq!(deploy["project_id"], 101);
    assert_eq!(deploy["stage_id"], 7);
    assert_eq!(deploy["instance_id"], Value::Null);
    assert_eq!(deploy["details"], json!({}));
    let ts = deploy["ts"].as_str().expect("ts");
    assert!(
        ts.ends_with('Z') && ts.len() == "2026-01-02T03:04:05.678Z".len(),
        "{ts}"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_event_log_filters_by_severity_source_and_project() {
    let app = spawn_app().await;
    let viewer = app.admin().await;
    let warn_poller = publish_stored(&app, NewEvent::warn(Source::Poller, "a").project(201)).await;
    let error_docker = publish_stored(&app, NewEvent::error(Source::Docker, "b").project(201)).await;
    let info_api = publish_stored(&app, NewEvent::info(Source::Api, "c").project(201).recorded()).await;
    let other_project = publish_stored(&app, NewEvent::warn(Source::Poller, "d").project(202)).await;

    assert_eq!(
        ids(&log(&viewer, "project_id=201&severity=warn,error").await),
        vec![error_docker, warn_poller]
    );
    assert_eq!(
        ids(&log(&viewer, "project_id=201&severity=info").await),
        vec![info_api]
    );
    assert_eq!(
        ids(&log(&viewer, "project_id=201&source=poller").await),
        vec![warn_poller]
    );
    assert_eq!(
        ids(&log(&viewer, "project_id=201&source=docker,api").await),
        vec![info_api, error_docker]
    );
    assert_eq!(ids(&log(&viewer, "project_id=202").await), vec![other_project]);
    let both = log(&viewer, "severity=warn&source=poller").await;
    assert!(ids(&both).starts_with(&[other_project, warn_poller]), "{both}");
    let body = log(&viewer, "project_id=201&severity=debug").await;
    assert_eq!(body["total"], 0);
    assert_eq!(body["items"], json!([]));
    app.stop().await;
}

#[tokio::test]
async fn the_event_log_filters_by_time() {
    let app = spawn_app().await;
    let viewer = app.admin().await;
    let at = |s: &str| {
        DateTime::parse_from_rfc3339(s)
            .expect("a time")
            .with_timezone(&Utc)
    };
    let events = [
        (
            NewEvent::warn(Source::Poller, "january").project(301),
            at("2026-01-15T12:00:00Z"),
        ),
        (
            NewEvent::warn(Source::Poller, "february").project(301),
            at("2026-02-15T12:00:00Z"),
        ),
        (
            NewEvent::warn(Source::Poller, "march").project(301),
            at("2026-03-15T12:00:00Z"),
        ),
    ];
    let inserted = app
        .app()
        .state()
        .store
        .insert_events(&events)
        .await
        .expect("inserted");
    assert_eq!(inserted, 3);

    let messages = |body: &Value| -> Vec<String> {
        body["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|e| e["message"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    let since = log(&viewer, "project_id=301&since=2026-02-01T00:00:00Z").await;
    assert_eq!(messages(&since), ["march", "february"]);
    let until = log(&viewer, "project_id=301&until=2026-02-28T00:00:00Z").await;
    assert_eq!(messages(&until), ["february", "january"]);
    // An offset is honoured (and `+` must be encoded in a query string).
    let window = log(
        &viewer,
        "project_id=301&since=2026-02-15T13:00:00%2B02:00&until=2026-03-01T00:00:00Z",
    )
    .await;
    assert_eq!(messages(&window), ["february"]);
    assert_eq!(window["total"], 1);
    app.stop().await;
}

#[tokio::test]
async fn pages_split_the_log_newest_first_and_per_page_is_capped_at_500() {
    let app = spawn_app().await;
    let viewer = app.admin().await;
    let mut published = Vec::new();
    for n in 0..7 {
        published
            .push(publish_stored(&app, NewEvent::warn(Source::Proxy, format!("e{n}")).project(401)).await);
    }
    published.reverse();

    let page1 = log(&viewer, "project_id=401&per_page=3").await;
    assert_eq!(ids(&page1), published[0..3]);
    assert_eq!(
        (
            page1["page"].clone(),
            page1["per_page"].clone(),
            page1["total"].clone()
        ),
        (json!(1), json!(3), json!(7))
    );
    assert_eq!(
        ids(&log(&viewer, "project_id=401&per_page=3&page=2").await),
        published[3..6]
    );
    assert_eq!(
        ids(&log(&viewer, "project_id=401&per_page=3&page=3").await),
        published[6..7]
    );
    let beyond = log(&viewer, "project_id=401&per_page=3&page=4").await;
    assert_eq!(beyond["items"], json!([]));
    assert_eq!(beyond["total"], 7);
    assert_eq!(log(&viewer, "project_id=401&per_page=500").await["total"], 7);

    let (status, body) = viewer.get("/api/events?per_page=501").await;
    assert_field_error(status, &body, "per_page");
    app.stop().await;
}

#[tokio::test]
async fn every_bad_parameter_of_the_event_log_is_a_400_naming_it() {
    let app = spawn_app().await;
    let viewer = app.admin().await;
    for (query, field) in [
        ("severity=fatal", "severity"),
        ("severity=warn,bogus", "severity"),
        ("source=kernel", "source"),
        ("project_id=abc", "project_id"),
        ("project_id=-3", "project_id"),
        ("since=yesterday", "since"),
        ("until=2026-02-30T00:00:00Z", "until"),
        ("until=", "until"),
        ("since=%20", "since"),
        ("page=0", "page"),
        ("page=1000001", "page"),
        ("page=first", "page"),
        ("per_page=0", "per_page"),
        ("per_page=1000", "per_page"),
        ("colour=red", "colour"),
    ] {
        let (status, body) = viewer.get(&format!("/api/events?{query}")).await;
        assert_field_error(status, &body, field);
    }
    // `until` before `since` is a window with nothing in it, not a mistake.
    let (status, body) = viewer
        .get("/api/events?since=2026-03-01T00:00:00Z&until=2026-02-01T00:00:00Z")
        .await;
    assert_eq!(
        (status, &body["items"]),
        (reqwest::StatusCode::OK, &serde_json::json!([])),
        "{body}"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_event_log_and_its_stream_need_credentials() {
    let app = spawn_app().await;
    let anonymous = app.anonymous();
    for path in ["/api/events", "/api/events/stream"] {
        let (status, body) = anonymous.get(path).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {body}");
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    app.stop().await;
}

/// One SSE message.
#[derive(Debug, Clone)]
pub struct Message {
    pub id: Option<i64>,
    pub event: Option<String>,
    pub data: Value,
}

pub enum Next {
    Message(Message),
    Quiet,
    Ended,
}

/// A client of an SSE stream (the event log, a container's logs) that parses `id:`/`event:`/`data:` lines and skips comments.
pub struct EventStreamClient {
    body: BoxStream<'static, reqwest::Result<axum::body::Bytes>>,
    buffer: Vec<u8>,
}

impl EventStreamClient {
    pub async fn connect(client: &ApiClient, path: &str, last_event_id: Option<i64>) -> Self {
        let mut request = client.request(reqwest::Method::GET, path);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.send().await.expect("the stream request is sent");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert!(content_type.starts_with("text/event-stream"), "{content_type}");
        Self {
            body: response.bytes_stream().boxed(),
            buffer: Vec::new(),
        }
    }

    pub async fn next_within(&mut self, within: Duration) -> Next {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            while let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
                if let Some(message) = parse_block(&String::from_utf8_lossy(&block)) {
                    return Next::Message(message);
                }
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Ok(Some(Ok(bytes))) => self.buffer.extend_from_slice(&bytes),
                Ok(Some(Err(e))) => panic!("the stream failed: {e}"),
                Ok(None) => return Next::Ended,
                Err(_) => return Next::Quiet,
            }
        }
    }

    pub async fn expect_message(&mut self) -> Message {
        match self.next_within(Duration::from_secs(10)).await {
            Next::Message(message) => message,
            Next::Quiet => panic!("no message within 10 s"),
            Next::Ended => panic!("the stream ended"),
        }
    }

    async fn expect_quiet(&mut self, within: Duration) {
        match self.next_within(within).await {
            Next::Message(message) => panic!("unexpected message {message:?}"),
            Next::Quiet => {}
            Next::Ended => panic!("the stream ended"),
        }
    }
}

/// Parses one SSE block; `None` for a comment-only block (a keep-alive).
fn parse_block(block: &str) -> Option<Message> {
    let (mut id, mut event, mut data) = (None, None, Vec::new());
    for line in block.lines() {
        if let Some(v) = line.strip_prefix("id:") {
            id = Some(v.trim().parse().expect("a numeric id"));
        } else if let Some(v) = line.strip_prefix("event:") {
            event = Some(v.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push(v.strip_prefix(' ').unwrap_or(v).to_owned());
        }
    }
    if data.is_empty() {
        return None;
    }
    let data = serde_json::from_str(&data.join("\n")).expect("data is JSON");
    Some(Message { id, event, data })
}

#[tokio::test]
async fn a_connected_client_receives_persisted_events_live() {
    let app = spawn_app().await;
    let viewer = app.user_with_role("vic", "viewer").await;
    let mut stream = EventStreamClient::connect(&viewer, "/api/events/stream", None).await;
    let id = publish_stored(
        &app,
        NewEvent::warn(Source::Docker, "container exited with 1")
            .project(501)
            .instance(9),
    )
    .await;

    let message = stream.expect_message().await;
    assert_eq!(message.id, Some(id));
    assert_eq!(message.event.as_deref(), Some("event"));
    assert_eq!(message.data["id"], id);
    assert_eq!(message.data["message"], "container exited with 1");
    assert_eq!(message.data["severity"], "warn");
    assert_eq!(message.data["instance_id"], 9);
    assert_eq!(app.app().state().metrics.sse_clients.get(), 1);
    app.stop().await;
}

#[tokio::test]
async fn transient_events_reach_only_clients_that_ask_for_all() {
    let app = spawn_app().await;
    let viewer = app.admin().await;
    let mut persisted_only = EventStreamClient::connect(&viewer, "/api/events/stream", None).await;
    let mut everything = EventStreamClient::connect(&viewer, "/api/events/stream?all=1", None).await;

    assert_eq!(
        publish(&app, NewEvent::info(Source::Poller, "polled 3 tags").project(601)).await,
        None
    );
    let warn = publish_stored(
        &app,
        NewEvent::warn(Source::Poller, "registry answered 429").project(601),
    )
    .await;

    let first = persisted_only.expect_message().await;
    assert_eq!(
        first.id,
        Some(warn),
        "the transient info must be skipped: {first:?}"
    );
    let transient = everything.expect_message().await;
    assert_eq!(transient.id, None, "a transient event has no id line");
    assert_eq!(transient.data["message"], "polled 3 tags");
    assert_eq!(transient.data["id"], Value::Null);
    assert_eq!(everything.expect_message().await.id, Some(warn));
    persisted_only.expect_quiet(Duration::from_millis(300)).await;
    app.stop().await;
}

#[tokio::test]
async fn reconnecting_with_last_event_id_replays_exactly_what_was_missed_then_goes_live() {
    let app = spawn_app().await;
    let viewer = app.admin().await;
    let seen = publish_stored(&app, NewEvent::warn(Source::Poller, "seen").project(701)).await;
    let missed_a = publish_stored(&app, NewEvent::error(Source::Deployer, "missed a").project(701)).await;
    let missed_b = publish_stored(&app, NewEvent::warn(Source::Stale, "missed b").project(701)).await;

    let mut stream = EventStreamClient::connect(&viewer, "/api/events/stream", Some(seen)).await;
    assert_eq!(stream.expect_message().await.id, Some(missed_a));
    assert_eq!(stream.expect_message().await.id, Some(missed_b));
    let live = publish_stored(&app, NewEvent::warn(Source::Proxy, "live").project(701)).await;
    let message = stream.expect_message().await;
    assert_eq!(message.id, Some(live));
    assert_eq!(message.data["message"], "live");
    stream.expect_quiet(Duration::from_millis(300)).await;
    app.stop().await;
}

#[tokio::test]
async fn a_replay_longer_than_one_page_arrives_in_order_and_joins_the_live_stream() {
    let app = spawn_app().await;
    let viewer = app.admin().await;
    let first = publish_stored(&app, NewEvent::warn(Source::Poller, "before").project(801)).await;
    let now = Utc::now();
    let backlog: Vec<_> = (0..450)
        .map(|n| {
            (
                NewEvent::warn(Source::Poller, format!("backlog {n}")).project(801),
                now,
            )
        })
        .collect();
    app.app()
        .state()
        .store
        .insert_events(&backlog)
        .await
        .expect("inserted");

    let mut stream = EventStreamClient::connect(&viewer, "/api/events/stream", Some(first)).await;
    let live = tokio::spawn({
        let bus = app.app().state().bus.clone();
        async move {
            bus.publish(NewEvent::error(Source::Poller, "live during the replay").project(801))
                .await
                .id
        }
    });
    let mut previous = first;
    for n in 0..450 {
        let message = stream.expect_message().await;
        let id = message.id.expect("an id");
        assert!(id > previous, "message {n}: {id} after {previous}");
        assert_eq!(message.data["message"], format!("backlog {n}"));
        previous = id;
    }
    let live = live.await.expect("published").expect("an id");
    assert_eq!(stream.expect_message().await.id, Some(live));
    stream.expect_quiet(Duration::from_millis(300)).await;
    app.stop().await;
}

#[tokio::test]
async fn the_last_event_id_query_parameter_works_like_the_header() {
    let app = spawn_app().await;
    let viewer = app.admin().await;
    let seen = publish_stored(&app, NewEvent::warn(Source::Poller, "seen").project(901)).await;
    let missed = publish_stored(&app, NewEvent::warn(Source::Poller, "missed").project(901)).await;
    let path = format!("/api/events/stream?last_event_id={seen}");
    let mut stream = EventStreamClient::connect(&viewer, &path, None).await;
    assert_eq!(stream.expect_message().await.id, Some(missed));
    app.stop().await;
}

#[tokio::test]
async fn a_bad_stream_parameter_is_a_400_naming_it() {
    let app = spawn_app().await;
    let viewer = app.admin().await;
    let (status, body) = viewer
        .send(
            viewer
                .request(reqwest::Method::GET, "/api/events/stream")
                .header("Last-Event-ID", "abc"),
        )
        .await;
    assert_field_error(status, &body, "Last-Event-ID");
    let (status, body) = viewer.get("/api/events/stream?last_event_id=-5").await;
    assert_field_error(status, &body, "last_event_id");
    let (status, body) = viewer.get("/api/events/stream?all=perhaps").await;
    assert_field_error(status, &body, "all");
    app.stop().await;
}

#[tokio::test]
async fn open_streams_end_when_the_app_stops_and_count_as_clients_meanwhile() {
    let app = spawn_app().await;
    let viewer = app.admin().await;
    let mut a = EventStreamClient::connect(&viewer, "/api/events/stream", None).await;
    let mut b = EventStreamClient::connect(&viewer, "/api/events/stream?all=1", None).await;
    assert_eq!(app.app().state().metrics.sse_clients.get(), 2);
    let (status, metrics) = viewer.get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        metrics
            .as_str()
            .is_some_and(|m| m.contains("docker_watcher_sse_clients 2")),
        "{metrics}"
    );

    tokio::time::timeout(Duration::from_secs(10), app.stop())
        .await
        .expect("the app stops with streams open");
    assert!(matches!(a.next_within(Duration::from_secs(5)).await, Next::Ended));
    assert!(matches!(b.next_within(Duration::from_secs(5)).await, Next::Ended));
}

#[tokio::test]
async fn retention_prunes_events_older_than_the_setting() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let state = app.app().state();
    publish_stored(&app, NewEvent::warn(Source::Poller, "old").project(1001)).await;
    app.clock.advance(TimeDelta::days(31));
    let recent = publish_stored(&app, NewEvent::warn(Source::Poller, "recent").project(1002)).await;

    let deleted = prune_once(&state.store, &state.settings, &state.clock)
        .await
        .expect("pruned");
    assert!(deleted >= 1, "{deleted}");
    assert_eq!(log(&admin, "project_id=1001").await["total"], 0);
    assert_eq!(ids(&log(&admin, "project_id=1002").await), vec![recent]);
    app.stop().await;
}

#[tokio::test]
async fn a_longer_retention_setting_keeps_older_events() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let (status, body) = admin
        .patch("/api/settings", json!({"event_retention_days": 60}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let kept = publish_stored(&app, NewEvent::warn(Source::Poller, "kept").project(1101)).await;
    app.clock.advance(TimeDelta::days(31));

    let state = app.app().state();
    prune_once(&state.store, &state.settings, &state.clock)
        .await
        .expect("pruned");
    assert_eq!(ids(&log(&admin, "project_id=1101").await), vec![kept]);
    app.stop().await;
}

#[tokio::test]
async fn retention_runs_when_the_app_starts() {
    let mut app = spawn_app().await;
    publish_stored(&app, NewEvent::warn(Source::Poller, "old").project(1201)).await;
    app.clock.advance(TimeDelta::days(31));
    app.restart().await;
    let admin = app.admin().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if log(&admin, "project_id=1201").await["total"] == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the old event was not pruned at start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn the_openapi_document_describes_the_event_endpoints() {
    let app = spawn_app().await;
    let (status, doc) = app.anonymous().get("/api/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let list = &doc["paths"]["/api/events"]["get"];
    let names: Vec<&str> = list["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for name in [
        "severity",
        "source",
        "project_id",
        "since",
        "until",
        "page",
        "per_page",
    ] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    assert!(doc["paths"]["/api/events/stream"]["get"].is_object(), "{doc}");
    app.stop().await;
}
