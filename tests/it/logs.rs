//! Container logs that follow, against the real Docker engine: `GET /api/instances/{id}/logs/stream`
//! sends the last lines and then each new one as the container writes it, with the engine's
//! times and secrets masked, and ends with an `end` message when the container stops; the stage
//! page's logs panel filters on the server; the download is a text file of the same lines; and a
//! bad `tail`, an unknown id or no credentials get a 4xx naming the problem.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::deploy::{Cleanup, Variant, create_project, create_stage, deploy_ok, push_image, unique};
use crate::events::{EventStreamClient, Next};
use crate::helpers::{TestApp, assert_field_error, spawn_app};

/// The secret the ticking container prints; it must never leave docker-watcher unmasked.
const TOKEN: &str = "tk-9f2c1e7a55";

/// A deployed instance whose container prints `tick N token=…` on stdout and `warn N` on stderr
/// every 0.3 s while serving, and stops at once on SIGTERM.
pub struct Ticking {
    pub app: TestApp,
    _cleanup: Cleanup,
    pub stage_id: i64,
    pub instance_id: i64,
}

pub async fn ticking() -> Ticking {
    let app = spawn_app().await;
    let mut cleanup = Cleanup::new(&app);
    let repo = unique("dwtest/logs-");
    cleanup.repo(&repo);
    let admin = app.admin().await;
    push_image(&repo, "v1", Variant::Web, "ticking").await;
    let project_id = create_project(&admin, &repo).await;
    let script = "trap 'exit 0' TERM; /bin/httpd -f -p 8080 -h /www & i=0; \
                  while true; do i=$((i+1)); echo \"tick $i token=$APP_TOKEN\"; echo \"warn $i\" >&2; sleep 0.3; done";
    let stage_id = create_stage(
        &admin,
        project_id,
        "tag:v1",
        json!({
            "command": ["/bin/sh", "-c", script],
            "secret_env": {"APP_TOKEN": TOKEN},
            "stop_grace_seconds": 2,
        }),
    )
    .await;
    let instance = deploy_ok(&admin, stage_id, "v1").await;
    Ticking {
        app,
        _cleanup: cleanup,
        stage_id,
        instance_id: instance["id"].as_i64().expect("an instance id"),
    }
}

/// The tick number of a `tick N token=…` line.
pub fn tick_number(text: &str) -> Option<u64> {
    text.strip_prefix("tick ")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn line_time(line: &Value) -> DateTime<Utc> {
    let raw = line["time"].as_str().unwrap_or_else(|| panic!("a time: {line}"));
    DateTime::parse_from_rfc3339(raw)
        .unwrap_or_else(|e| panic!("{raw}: {e}"))
        .with_timezone(&Utc)
}

#[tokio::test]
async fn an_instances_output_follows_live_with_times_and_masked_secrets_and_ends_when_it_stops() {
    let t = ticking().await;
    let viewer = t.app.user_with_role("vic", "viewer").await;
    let admin = t.app.admin().await;
    let id = t.instance_id;

    let started = Utc::now();
    let mut stream =
        EventStreamClient::connect(&viewer, &format!("/api/instances/{id}/logs/stream?tail=0"), None).await;
    // New lines arrive as the container writes them: several ticks, in order, each newer than
    // the connection, and the stderr lines with them.
    let (mut ticks, mut warned) = (Vec::new(), false);
    while ticks.len() < 4 || !warned {
        let message = stream.expect_message().await;
        assert_eq!(message.event.as_deref(), Some("line"), "{:?}", message);
        let line = &message.data;
        let text = line["text"].as_str().expect("text");
        assert!(!text.contains(TOKEN), "a secret leaked into the stream: {line}");
        assert!(
            line_time(line) > started - chrono::TimeDelta::seconds(1),
            "tail=0 sends only new lines: {line}"
        );
        match line["stream"].as_str() {
            Some("stdout") => {
                assert!(text.ends_with("token=[secret]"), "{line}");
                ticks.push(tick_number(text).unwrap_or_else(|| panic!("a tick: {line}")));
            }
            Some("stderr") => {
                assert!(text.starts_with("warn "), "{line}");
                warned = true;
            }
            other => panic!("a stream name, not {other:?}"),
        }
    }
    assert!(
        ticks.windows(2).all(|w| w[1] == w[0] + 1),
        "in order, none lost: {ticks:?}"
    );

    // The one-off read has the same lines with their times.
    let (status, logs) = viewer.get(&format!("/api/instances/{id}/logs?tail=6")).await;
    assert_eq!(status, StatusCode::OK, "{logs}");
    let lines = logs["lines"].as_array().expect("lines");
    assert_eq!(lines.len(), 6, "{logs}");
    for line in lines {
        line_time(line);
        assert!(
            !line["text"].as_str().unwrap_or_default().contains(TOKEN),
            "{line}"
        );
    }

    // A stream with a tail starts with the last lines.
    let mut tailed =
        EventStreamClient::connect(&viewer, &format!("/api/instances/{id}/logs/stream?tail=3"), None).await;
    let first = tailed.expect_message().await;
    assert!(
        line_time(&first.data) < Utc::now(),
        "the tail comes first: {:?}",
        first.data
    );
    drop(tailed);

    // Stopping the container ends the stream with a reason.
    let (status, body) = admin.post(&format!("/api/instances/{id}/stop"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let reason = loop {
        match stream.next_within(Duration::from_secs(15)).await {
            Next::Message(m) if m.event.as_deref() == Some("end") => break m.data["reason"].clone(),
            Next::Message(m) => assert_eq!(m.event.as_deref(), Some("line"), "{:?}", m),
            Next::Quiet => panic!("the stream did not end within 15 s of the stop"),
            Next::Ended => panic!("the stream ended without an end message"),
        }
    };
    assert_eq!(reason, "the container stopped");
    assert!(
        matches!(stream.next_within(Duration::from_secs(5)).await, Next::Ended),
        "nothing after the end message"
    );

    // A stopped container's stream sends its last lines and ends at once.
    let mut after =
        EventStreamClient::connect(&viewer, &format!("/api/instances/{id}/logs/stream?tail=2"), None).await;
    let mut events = Vec::new();
    loop {
        match after.next_within(Duration::from_secs(10)).await {
            Next::Message(m) => events.push(m.event.unwrap_or_default()),
            Next::Ended => break,
            Next::Quiet => panic!("a stopped container's stream stays open: {events:?}"),
        }
    }
    assert_eq!(events, ["line", "line", "end"]);
    t.app.stop().await;
}

#[tokio::test]
async fn the_logs_panel_filters_on_the_server_and_the_download_is_the_masked_text() {
    let t = ticking().await;
    let (stage_id, id) = (t.stage_id, t.instance_id);
    t.app.user_with_role("vera", "viewer").await;
    let viewer = t.app.login("vera", "vera-password").await;
    // Let a few lines accumulate.
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let page = |query: String| {
        let viewer = &viewer;
        async move {
            let response = viewer
                .request(reqwest::Method::GET, &format!("/stages/{stage_id}?{query}"))
                .send()
                .await
                .expect("the page");
            assert_eq!(response.status(), StatusCode::OK);
            response.text().await.expect("html")
        }
    };
    let html = page(format!("logs={id}")).await;
    assert!(html.contains(&format!("data-logs-stream=\"/api/instances/{id}/logs/stream\"")));
    assert!(
        html.contains("data-logs-follow"),
        "a running container's panel follows"
    );
    assert!(
        html.contains("token=[secret]") && html.contains("warn "),
        "both streams shown"
    );
    assert!(html.contains("<time datetime=\""), "lines carry their times");
    assert!(html.contains("data-logs-open"), "the instance's row is marked");
    assert!(!html.contains(TOKEN));

    let html = page(format!("logs={id}&logs_filter=WARN")).await;
    let panel = &html[html.find("id=\"logs-lines\"").expect("the lines")..];
    let panel = &panel[..panel.find("</pre>").expect("the end of the lines")];
    assert!(panel.contains("warn "), "case-insensitive match: {panel}");
    assert!(!panel.contains("tick "), "only matching lines: {panel}");
    assert!(html.contains("value=\"WARN\""), "the filter stays in its box");
    let html = page(format!("logs={id}&logs_filter=no-such-line")).await;
    assert!(html.contains("No line matches."));

    let response = viewer
        .request(reqwest::Method::GET, &format!("/instances/{id}/logs.txt"))
        .send()
        .await
        .expect("the download");
    assert_eq!(response.status(), StatusCode::OK);
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert!(header("content-type").starts_with("text/plain"));
    assert_eq!(
        header("content-disposition"),
        format!("attachment; filename=\"instance-{id}.log\"")
    );
    let text = response.text().await.expect("text");
    assert!(!text.contains(TOKEN));
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 4, "{text}");
    for line in &lines {
        let mut parts = line.splitn(3, ' ');
        let (time, stream) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        assert!(DateTime::parse_from_rfc3339(time).is_ok(), "{line}");
        assert!(stream == "stdout" || stream == "stderr", "{line}");
    }
    assert!(lines.iter().any(|l| l.ends_with("token=[secret]")), "{text}");

    // Without a session the download sends to the login page; an unknown instance is a 404 page.
    let anonymous = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client");
    let response = anonymous
        .get(t.app.url(&format!("/instances/{id}/logs.txt")))
        .send()
        .await
        .expect("anonymous");
    assert!(response.status().is_redirection(), "{}", response.status());
    let response = viewer
        .request(reqwest::Method::GET, "/instances/999999/logs.txt")
        .send()
        .await
        .expect("unknown");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    t.app.stop().await;
}

#[tokio::test]
async fn a_bad_log_stream_request_is_a_4xx_naming_the_problem() {
    let t = ticking().await;
    let id = t.instance_id;
    let viewer = t.app.user_with_role("val", "viewer").await;
    for tail in ["10001", "x", "-1", "4294967296"] {
        let (status, body) = viewer
            .get(&format!("/api/instances/{id}/logs/stream?tail={tail}"))
            .await;
        assert_field_error(status, &body, "tail");
    }
    let (status, body) = viewer
        .get(&format!("/api/instances/{id}/logs/stream?colour=red"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = viewer.get("/api/instances/x/logs/stream").await;
    assert_field_error(status, &body, "id");
    let (status, body) = viewer.get("/api/instances/999999/logs/stream").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = t
        .app
        .anonymous()
        .get(&format!("/api/instances/{id}/logs/stream"))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    t.app.stop().await;
}

#[tokio::test]
async fn an_accessorys_logs_have_the_same_panel_on_its_project_page_and_the_same_download() {
    let app = spawn_app().await;
    let mut cleanup = Cleanup::new(&app);
    let repo = unique("dwtest/logs-acc-");
    cleanup.repo(&repo);
    let admin = app.admin().await;
    push_image(&repo, "db1", Variant::Web, "db").await;
    let project_id = create_project(&admin, &repo).await;
    let script = "trap 'exit 0' TERM; i=0; while true; do i=$((i+1)); echo \"tick $i token=$APP_TOKEN\"; sleep 0.3; done";
    let (status, accessory) = admin
        .post(
            &format!("/api/projects/{project_id}/accessories"),
            json!({"name": "db", "image": format!("{}/{repo}:db1", crate::deploy::registry()),
                   "command": ["/bin/sh", "-c", script], "secret_env": {"APP_TOKEN": TOKEN}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{accessory}");
    let id = accessory["id"].as_i64().expect("an accessory id");
    app.user_with_role("ada", "viewer").await;
    let viewer = app.login("ada", "ada-password").await;
    tokio::time::sleep(Duration::from_millis(1000)).await;

    let get = |path: String| {
        let viewer = &viewer;
        async move {
            let response = viewer
                .request(reqwest::Method::GET, &path)
                .send()
                .await
                .expect("an answer");
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            (
                response
                    .headers()
                    .get("content-disposition")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned(),
                response.text().await.expect("a body"),
            )
        }
    };
    let (_, html) = get(format!("/projects/{project_id}")).await;
    assert!(
        html.contains(&format!("href=\"/projects/{project_id}?logs={id}#logs\"")),
        "a viewer finds the accessory's logs from its row"
    );
    let (_, html) = get(format!("/projects/{project_id}?logs={id}")).await;
    assert!(html.contains(&format!("data-logs-stream=\"/api/accessories/{id}/logs/stream\"")));
    assert!(html.contains("Logs of accessory db") && html.contains("data-logs-follow"));
    assert!(
        html.contains("token=[secret]") && !html.contains(TOKEN),
        "masked in the panel"
    );
    assert!(html.contains(&format!("href=\"/accessories/{id}/logs.txt\"")));
    assert!(html.contains("data-logs-open"), "the accessory's row is marked");
    let (_, html) = get(format!(
        "/projects/{project_id}?logs={id}&logs_filter=no-such-line"
    ))
    .await;
    assert!(html.contains("No line matches."));

    let (disposition, text) = get(format!("/accessories/{id}/logs.txt")).await;
    assert_eq!(
        disposition,
        format!("attachment; filename=\"accessory-{id}.log\"")
    );
    assert!(text.lines().any(|l| l.ends_with("token=[secret]")), "{text}");
    assert!(!text.contains(TOKEN));

    // The live stream follows the accessory as the instance's does.
    let mut stream = EventStreamClient::connect(
        &viewer,
        &format!("/api/accessories/{id}/logs/stream?tail=0"),
        None,
    )
    .await;
    let line = stream.expect_message().await;
    assert_eq!(line.event.as_deref(), Some("line"));
    assert!(
        tick_number(line.data["text"].as_str().unwrap_or_default()).is_some(),
        "{:?}",
        line.data
    );
    app.stop().await;
}
