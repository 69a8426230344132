//! Notifications over HTTP against real receivers on loopback: an HTTP receiver of the test's
//! own that records what arrives (and can answer 500 on cue) checks every channel kind's format
//! and the webhook's HMAC signature; a real SMTP server (Debian's aiosmtpd, started by
//! scripts/services.sh with STARTTLS and implicit TLS listeners, a test CA and a login) receives
//! the mail. Also: a receiver that fails three times gets the message exactly once; a stale scan
//! that finds 40 instances is one message; a queued message survives a restart; secrets are
//! write-only and sealed at rest; bad channels are refused naming the field; admins only.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use axum::response::IntoResponse;
use chrono::TimeDelta;
use docker_watcher::domain::event::{EventKind, NewEvent, Source};
use docker_watcher::domain::instance::{InstanceStatus, NewInstance};
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{ApiClient, TestApp, assert_field_error, spawn_app};
use crate::testenv::unique;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }
}

#[derive(Default)]
struct ReceiverState {
    received: Mutex<Vec<Received>>,
    /// Statuses to answer, in order, before answering 200.
    script: Mutex<VecDeque<u16>>,
}

/// An HTTP server on 127.0.0.1:0 that records every request and answers 200 (or what its
/// script says first).
pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<ReceiverState>,
    _server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start() -> Self {
        Self::answering(&[]).await
    }

    /// A receiver that answers `statuses` to the first requests, then 200.
    pub async fn answering(statuses: &[u16]) -> Self {
        let state = Arc::new(ReceiverState::default());
        state.script.lock().unwrap().extend(statuses);
        async fn record(State(state): State<Arc<ReceiverState>>, request: Request) -> impl IntoResponse {
            let (parts, body) = request.into_parts();
            let body = axum::body::to_bytes(body, 4 << 20).await.unwrap_or_default();
            state.received.lock().unwrap().push(Received {
                path: parts.uri.path().to_owned(),
                query: parts.uri.query().unwrap_or_default().to_owned(),
                headers: parts.headers,
                body,
                at: Instant::now(),
            });
            let status = state.script.lock().unwrap().pop_front().unwrap_or(200);
            (AxumStatus::from_u16(status).unwrap(), "ok")
        }
        let router = axum::Router::new().fallback(record).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self {
            addr,
            state,
            _server: server,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Waits until `n` requests arrived (failing after `timeout`), and returns them all.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let received = self.received();
            if received.len() >= n {
                return received;
            }
            assert!(
                Instant::now() < deadline,
                "the receiver got {} requests, not {n}, within {timeout:?}: {:?}",
                received.len(),
                received.iter().map(Received::text).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The SMTP server of scripts/services.sh.
pub struct Smtp {
    pub starttls: SocketAddr,
    pub tls: SocketAddr,
    pub maildir: std::path::PathBuf,
    pub ca_pem: String,
    pub user: String,
    pub password: String,
}

pub fn smtp() -> Smtp {
    let var = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
    let dir = var("DW_TEST_SMTP_DIR", "/var/lib/docker-watcher-dev/smtp");
    let ca_path = format!("{dir}/ca.pem");
    let ca_pem = std::fs::read_to_string(&ca_path)
        .unwrap_or_else(|e| panic!("the test SMTP server's CA {ca_path} ({e}): run scripts/services.sh"));
    Smtp {
        starttls: var("DW_TEST_SMTP_STARTTLS", "127.0.0.1:47025").parse().unwrap(),
        tls: var("DW_TEST_SMTP_TLS", "127.0.0.1:47465").parse().unwrap(),
        maildir: format!("{dir}/maildir").into(),
        ca_pem,
        user: var("DW_TEST_SMTP_USER", "dwtest"),
        password: var("DW_TEST_SMTP_PASSWORD", "dwtest-smtp-secret"),
    }
}

impl Smtp {
    /// Waits for a mail containing `marker` in the maildir and returns it.
    pub async fn wait_for_mail(&self, marker: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            for sub in ["new", "cur"] {
                if let Ok(entries) = std::fs::read_dir(self.maildir.join(sub)) {
                    for entry in entries.flatten() {
                        // Long headers are folded onto continuation lines: unfold them.
                        let text = std::fs::read_to_string(entry.path())
                            .unwrap_or_default()
                            .replace("\r\n", "\n")
                            .replace("\n ", " ");
                        if text.contains(marker) {
                            return text;
                        }
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "no mail with {marker} within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn create_channel(admin: &ApiClient, body: Value) -> Value {
    let (status, created) = admin.post("/api/notifications/channels", body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created
}

async fn deliveries(admin: &ApiClient, channel_id: i64) -> Vec<Value> {
    let (status, body) = admin
        .get(&format!("/api/notifications/deliveries?channel_id={channel_id}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["items"].as_array().unwrap().clone()
}

/// Publishes an event on the app's bus, as a workflow would.
async fn publish(app: &TestApp, event: NewEvent) {
    app.app().state().bus.publish(event).await;
}

#[tokio::test]
async fn every_http_channel_kind_delivers_its_own_format_and_the_webhook_is_signed() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let receiver = Receiver::start().await;
    let rule = json!({"min_severity": "warn", "kinds": ["deploy_failed"]});
    let webhook = create_channel(
        &admin,
        json!({
            "name": "hook", "kind": "webhook", "rule": rule,
            "secrets": {"url": receiver.url("/hook?key=abc"), "signing_secret": "sign-me"},
        }),
    )
    .await;
    for (name, kind, secrets, settings) in [
        (
            "slack",
            "slack",
            json!({"url": receiver.url("/slack")}),
            json!({}),
        ),
        (
            "discord",
            "discord",
            json!({"url": receiver.url("/discord")}),
            json!({}),
        ),
        (
            "ntfy",
            "ntfy",
            json!({"url": receiver.url("/ntfy/ops"), "token": "tk_ntfy"}),
            json!({"tags": ["whale"]}),
        ),
        (
            "gotify",
            "gotify",
            json!({"token": "gotify-app-token"}),
            json!({"url": receiver.url(""), "priority": 7}),
        ),
    ] {
        create_channel(
            &admin,
            json!({"name": name, "kind": kind, "secrets": secrets, "settings": settings, "rule": rule}),
        )
        .await;
    }

    let marker = unique("failed-deploy");
    // Below the rule (info, another kind) and then the event every channel forwards.
    publish(
        &app,
        NewEvent::info(Source::Deployer, format!("{marker} ignored")).kind(EventKind::DeploySucceeded),
    )
    .await;
    publish(
        &app,
        NewEvent::warn(Source::Poller, format!("{marker} ignored too")),
    )
    .await;
    publish(
        &app,
        NewEvent::error(Source::Deployer, format!("deploying tag v2 failed: {marker}"))
            .kind(EventKind::DeployFailed)
            .project(1)
            .detail("tag", "v2"),
    )
    .await;
    let received = receiver.wait_for(5, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        receiver.received().len(),
        5,
        "one message per channel, nothing for the other events"
    );
    let by_path = |path: &str| {
        received
            .iter()
            .find(|r| r.path == path)
            .unwrap_or_else(|| panic!("nothing at {path}"))
            .clone()
    };

    let hook = by_path("/hook");
    assert_eq!(hook.query, "key=abc");
    assert_eq!(hook.header("content-type"), "application/json");
    assert_eq!(
        hook.header("x-docker-watcher-signature"),
        hmac_hex("sign-me", &hook.body)
    );
    let body = hook.json();
    assert_eq!(body["count"], 1);
    assert_eq!(body["severity"], "error");
    assert_eq!(body["events"][0]["details"]["kind"], "deploy_failed");
    assert!(body["events"][0]["message"].as_str().unwrap().contains(&marker));
    assert!(!hook.header("x-docker-watcher-delivery").is_empty());

    let slack = by_path("/slack").json();
    assert!(slack["text"].as_str().unwrap().contains(&marker), "{slack}");
    let discord = by_path("/discord").json();
    assert!(
        discord["content"].as_str().unwrap().contains(&marker),
        "{discord}"
    );
    let ntfy = by_path("/ntfy/ops");
    assert!(ntfy.text().contains(&marker));
    assert!(
        ntfy.header("title")
            .starts_with("docker-watcher error: deploy failed"),
        "{}",
        ntfy.header("title")
    );
    assert_eq!(ntfy.header("priority"), "4");
    assert_eq!(ntfy.header("tags"), "rotating_light,whale");
    assert_eq!(ntfy.header("authorization"), "Bearer tk_ntfy");
    let gotify = by_path("/message");
    assert_eq!(gotify.query, "token=gotify-app-token");
    let gotify = gotify.json();
    assert!(gotify["message"].as_str().unwrap().contains(&marker));
    assert_eq!(gotify["priority"], 7);

    let log = deliveries(&admin, webhook["id"].as_i64().unwrap()).await;
    assert_eq!(log.len(), 1);
    assert_eq!(
        (
            log[0]["status"].as_str(),
            log[0]["attempt"].as_i64(),
            log[0]["http_status"].as_i64()
        ),
        (Some("delivered"), Some(1), Some(200))
    );
    let metrics = reqwest::get(app.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            r#"docker_watcher_notification_deliveries_total{outcome="delivered",channel_kind="ntfy"} 1"#
        ),
        "{metrics}"
    );
    app.stop().await;
}

#[tokio::test]
async fn email_reaches_a_real_smtp_server_over_starttls_and_over_implicit_tls() {
    let smtp = smtp();
    let app = spawn_app().await;
    let admin = app.admin().await;
    let mut ids = Vec::new();
    for (name, addr, tls) in [
        ("mail-starttls", smtp.starttls, "starttls"),
        ("mail-tls", smtp.tls, "tls"),
    ] {
        let name = unique(name);
        let channel = create_channel(
            &admin,
            json!({
                "name": name, "kind": "email",
                "settings": {
                    "smtp_host": addr.ip().to_string(), "smtp_port": addr.port(), "tls": tls,
                    "from": "docker-watcher <dw@example.test>", "to": ["ops@example.test"],
                    "username": smtp.user, "ca_pem": smtp.ca_pem,
                },
                "secrets": {"password": smtp.password},
                "rule": {"min_severity": "error"},
            }),
        )
        .await;
        assert_eq!(channel["secret_keys"], json!(["password"]));
        assert!(channel["target"].as_str().unwrap().contains("ops@example.test"));
        let id = channel["id"].as_i64().unwrap();
        let (status, outcome) = admin
            .post(&format!("/api/notifications/channels/{id}/test"), json!({}))
            .await;
        assert_eq!(status, StatusCode::OK, "{outcome}");
        assert_eq!(outcome["delivered"], true, "{tls}: {outcome}");
        smtp.wait_for_mail(&format!("channel '{name}'"), Duration::from_secs(10))
            .await;
        ids.push(id);
    }

    let marker = unique("engine-gone");
    publish(
        &app,
        NewEvent::error(Source::Docker, format!("cannot reach the Docker engine {marker}"))
            .kind(EventKind::DockerUnavailable),
    )
    .await;
    let mail = smtp.wait_for_mail(&marker, Duration::from_secs(10)).await;
    assert!(
        mail.contains("Subject: docker-watcher error: Docker unavailable"),
        "{mail}"
    );
    assert!(mail.contains("To: ops@example.test"), "{mail}");
    for id in &ids {
        let deadline = Instant::now() + Duration::from_secs(10);
        while deliveries(&admin, *id)
            .await
            .iter()
            .filter(|d| d["status"] == "delivered")
            .count()
            < 2
        {
            assert!(
                Instant::now() < deadline,
                "channel {id} did not log the event's delivery"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // A wrong password is a failure the person testing sees, with the server's reason.
    let (status, _) = admin
        .patch(
            &format!("/api/notifications/channels/{}", ids[1]),
            json!({"secrets": {"password": "wrong"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, outcome) = admin
        .post(&format!("/api/notifications/channels/{}/test", ids[1]), json!({}))
        .await;
    assert_eq!(outcome["delivered"], false, "{outcome}");
    assert!(outcome["error"].as_str().unwrap().contains("SMTP"), "{outcome}");
    app.stop().await;
}

#[tokio::test]
async fn a_receiver_that_answers_500_three_times_gets_the_message_exactly_once() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let receiver = Receiver::answering(&[500, 500, 500]).await;
    let channel = create_channel(
        &admin,
        json!({
            "name": "flaky", "kind": "webhook", "secrets": {"url": receiver.url("/flaky")},
            "rule": {"min_severity": "warn", "kinds": ["deploy_failed"]},
        }),
    )
    .await;
    let marker = unique("retried");
    publish(
        &app,
        NewEvent::error(Source::Deployer, marker.clone()).kind(EventKind::DeployFailed),
    )
    .await;
    // Retries wait 0.5 s, 1 s and 2 s in tests.
    let received = receiver.wait_for(4, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let received_later = receiver.received();
    assert_eq!(
        received_later.len(),
        4,
        "three failures and one success, nothing after"
    );
    let ids: Vec<String> = received
        .iter()
        .map(|r| r.header("x-docker-watcher-delivery"))
        .collect();
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "the same message every time: {ids:?}"
    );
    assert!(received.iter().all(|r| r.text().contains(&marker)));
    let gaps: Vec<Duration> = received.windows(2).map(|w| w[1].at - w[0].at).collect();
    assert!(gaps[1] > gaps[0] && gaps[2] > gaps[1], "the waits grow: {gaps:?}");

    let log = deliveries(&admin, channel["id"].as_i64().unwrap()).await;
    let statuses: Vec<(&str, i64)> = log
        .iter()
        .rev()
        .map(|d| (d["status"].as_str().unwrap(), d["attempt"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        statuses,
        vec![
            ("retrying", 1),
            ("retrying", 2),
            ("retrying", 3),
            ("delivered", 4)
        ]
    );
    assert_eq!(log[1]["http_status"], 500);
    app.stop().await;
}

#[tokio::test]
async fn a_receiver_that_refuses_for_good_is_given_up_at_once_and_a_dead_one_after_five_attempts() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let gone = Receiver::answering(&[404, 404]).await;
    let gone_id = create_channel(
        &admin,
        json!({"name": "gone", "kind": "slack", "secrets": {"url": gone.url("/x")}, "rule": {"min_severity": "warn", "kinds": ["stale_found"]}}),
    )
    .await["id"]
        .as_i64()
        .unwrap();
    // Nothing listens on a port taken and released: every attempt is refused.
    let dead_port = crate::testenv::free_port();
    let dead_id = create_channel(&admin, json!({"name": "dead", "kind": "discord", "secrets": {"url": format!("http://127.0.0.1:{dead_port}/x")}, "rule": {"min_severity": "warn", "kinds": ["stale_found"]}})).await["id"]
        .as_i64()
        .unwrap();
    publish(
        &app,
        NewEvent::warn(Source::Stale, unique("stale")).kind(EventKind::StaleFound),
    )
    .await;
    gone.wait_for(1, Duration::from_secs(5)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let dead = deliveries(&admin, dead_id).await;
        if dead.first().is_some_and(|d| d["status"] == "failed") {
            assert_eq!(dead.len(), 5, "{dead:?}");
            assert_eq!(dead[0]["attempt"], 5);
            assert!(dead[0]["error"].as_str().unwrap().contains("connect"), "{dead:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dead receiver was not given up: {dead:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = deliveries(&admin, gone_id).await;
    assert_eq!(log.len(), 1, "a 404 is not retried: {log:?}");
    assert_eq!(
        (log[0]["status"].as_str(), log[0]["http_status"].as_i64()),
        (Some("failed"), Some(404))
    );
    assert_eq!(gone.received().len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_stale_scan_that_finds_forty_instances_sends_one_message() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let receiver = Receiver::start().await;
    create_channel(
        &admin,
        json!({
            "name": "stale", "kind": "webhook", "secrets": {"url": receiver.url("/stale")},
            "rule": {"min_severity": "warn", "kinds": ["stale_found"]},
        }),
    )
    .await;
    let (status, project) = admin
        .post(
            "/api/projects",
            json!({"name": unique("burst"), "image": "127.0.0.1:5000/notify/burst"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{project}");
    let (status, stage) = admin
        .post(
            &format!("/api/projects/{}/stages", project["id"]),
            json!({"name": "prod", "tag_policy": "tag:latest", "auto_deploy": false, "schedule": "@every 24h", "container": {"port": 8080}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{stage}");
    let store = &app.app().state().store;
    let created_at = docker_watcher::clock::Clock::now(&*app.clock);
    for n in 0..40 {
        store
            .insert_instance(&NewInstance {
                project_id: project["id"].as_i64().unwrap(),
                stage_id: stage["id"].as_i64().unwrap(),
                image_tag: format!("v{n}"),
                image_digest: None,
                status: InstanceStatus::Stopped,
                hostname: None,
                config_revision: 1,
                created_at,
            })
            .await
            .expect("an instance");
    }
    app.clock.advance(TimeDelta::days(30));
    let (status, list) = admin.post("/api/containers/stale/scan", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["items"].as_array().unwrap().len(), 40);
    let received = receiver.wait_for(1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(receiver.received().len(), 1, "one message for the whole scan");
    let body = received[0].json();
    assert_eq!(body["count"], 40);
    assert_eq!(body["events"].as_array().unwrap().len(), 40);
    assert!(
        body["title"].as_str().unwrap().contains("40 × stale found"),
        "{body}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_queued_message_survives_a_restart_and_is_delivered_after_it() {
    let mut app = spawn_app().await;
    let admin = app.admin().await;
    let receiver = Receiver::answering(&[503]).await;
    create_channel(
        &admin,
        json!({"name": "later", "kind": "webhook", "secrets": {"url": receiver.url("/later")},
               "rule": {"min_severity": "warn", "kinds": ["deploy_failed"]}}),
    )
    .await;
    let marker = unique("kept");
    publish(
        &app,
        NewEvent::error(Source::Deployer, marker.clone()).kind(EventKind::DeployFailed),
    )
    .await;
    receiver.wait_for(1, Duration::from_secs(5)).await;
    // Stopped before the retry (due 0.5 s after the failure): the message waits in the outbox.
    app.restart().await;
    let received = receiver.wait_for(2, Duration::from_secs(10)).await;
    assert!(received[1].text().contains(&marker));
    assert_eq!(
        received[0].header("x-docker-watcher-delivery"),
        received[1].header("x-docker-watcher-delivery")
    );

    // An event still in the coalescing window when the app stops is queued on the way out.
    let second = unique("in-the-window");
    publish(
        &app,
        NewEvent::error(Source::Deployer, second.clone()).kind(EventKind::DeployFailed),
    )
    .await;
    app.restart().await;
    let received = receiver.wait_for(3, Duration::from_secs(10)).await;
    assert!(received[2].text().contains(&second));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(receiver.received().len(), 3, "each message once");
    app.stop().await;
}

#[tokio::test]
async fn channel_secrets_are_write_only_sealed_at_rest_and_patched_key_by_key() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let token = unique("T0KEN");
    let created = create_channel(&admin, json!({
        "name": "ops", "kind": "webhook",
        "secrets": {"url": format!("https://hooks.example.test/services/{token}"), "signing_secret": format!("{token}-sign")},
    }))
    .await;
    let id = created["id"].as_i64().unwrap();
    assert_eq!(created["secret_keys"], json!(["signing_secret", "url"]));
    assert_eq!(created["target"], "https://hooks.example.test/…");
    assert_eq!(created["rule"]["min_severity"], "warn");
    for path in [
        "/api/notifications/channels".to_owned(),
        format!("/api/notifications/channels/{id}"),
    ] {
        let (_, body) = admin.get(&path).await;
        assert!(
            !body.to_string().contains(&token),
            "{path} shows a secret: {body}"
        );
    }
    let (status, patched) = admin
        .patch(
            &format!("/api/notifications/channels/{id}"),
            json!({"secrets": {"signing_secret": null}, "enabled": false}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(
        (patched["secret_keys"].clone(), patched["enabled"].clone()),
        (json!(["url"]), json!(false))
    );
    let (_, events) = admin.get("/api/events?source=api&per_page=10").await;
    assert!(!events.to_string().contains(&token), "an event shows a secret");
    app.app().state().store.close().await;
    for file in ["docker-watcher.db", "docker-watcher.db-wal"] {
        let bytes = std::fs::read(app.data_dir.path().join(file)).unwrap_or_default();
        assert!(
            !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
            "{file} holds a secret in clear"
        );
    }
}

#[tokio::test]
async fn bad_channels_are_refused_naming_the_field_and_only_admins_manage_channels() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let member = app.user_with_role("mia", "member").await;
    let url = json!({"url": "https://hooks.example.test/x"});
    for (body, field) in [
        (json!({"name": "a", "kind": "pager", "secrets": url}), "kind"),
        (json!({"name": "", "kind": "slack", "secrets": url}), "name"),
        (json!({"name": "a", "kind": "slack"}), "secrets.url"),
        (
            json!({"name": "a", "kind": "slack", "secrets": {"url": "ftp://x"}}),
            "secrets.url",
        ),
        (
            json!({"name": "a", "kind": "slack", "secrets": {"url": "https://h.test/x", "token": "t"}}),
            "secrets.token",
        ),
        (
            json!({"name": "a", "kind": "email", "settings": {"smtp_host": "", "tls": "tls", "from": "a@b.c", "to": ["x@y.z"]}}),
            "settings.smtp_host",
        ),
        (
            json!({"name": "a", "kind": "email", "settings": {"smtp_host": "m", "tls": "ssl", "from": "a@b.c", "to": ["x@y.z"]}}),
            "settings.tls",
        ),
        (
            json!({"name": "a", "kind": "ntfy", "secrets": url, "settings": {"priority": 9}}),
            "settings.priority",
        ),
        (
            json!({"name": "a", "kind": "gotify", "secrets": {"token": "t"}, "settings": {}}),
            "settings",
        ),
        (
            json!({"name": "a", "kind": "slack", "secrets": url, "rule": {"kinds": ["everything"]}}),
            "rule.kinds",
        ),
        (
            json!({"name": "a", "kind": "slack", "secrets": url, "rule": {"min_severity": "fatal"}}),
            "rule.min_severity",
        ),
    ] {
        let (status, error) = admin.post("/api/notifications/channels", body.clone()).await;
        assert_field_error(status, &error, field);
        assert!(
            !error.to_string().contains("hooks.example.test"),
            "an error quotes a secret URL: {error}"
        );
    }
    let created = create_channel(&admin, json!({"name": "ops", "kind": "slack", "secrets": url})).await;
    let id = created["id"].as_i64().unwrap();
    let (status, _) = admin
        .post(
            "/api/notifications/channels",
            json!({"name": "ops", "kind": "slack", "secrets": url}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, error) = admin
        .patch(
            &format!("/api/notifications/channels/{id}"),
            json!({"kind": "discord"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    let (status, error) = admin
        .patch(
            &format!("/api/notifications/channels/{id}"),
            json!({"secrets": {"url": null}}),
        )
        .await;
    assert_field_error(status, &error, "secrets.url");
    let (status, _) = admin.get("/api/notifications/channels/999999").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = admin
        .post("/api/notifications/channels/999999/test", json!({}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, error) = admin.get("/api/notifications/deliveries?limit=9000").await;
    assert_field_error(status, &error, "limit");
    for (method, path) in [
        (reqwest::Method::GET, "/api/notifications/channels".to_owned()),
        (reqwest::Method::GET, format!("/api/notifications/channels/{id}")),
        (
            reqwest::Method::DELETE,
            format!("/api/notifications/channels/{id}"),
        ),
        (
            reqwest::Method::POST,
            format!("/api/notifications/channels/{id}/test"),
        ),
        (reqwest::Method::GET, "/api/notifications/deliveries".to_owned()),
    ] {
        let (status, _) = member.send(member.request(method.clone(), &path)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}");
    }
    let (status, _) = admin.delete(&format!("/api/notifications/channels/{id}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, doc) = app.anonymous().get("/api/openapi.json").await;
    for path in [
        "/api/notifications/channels",
        "/api/notifications/channels/{id}",
        "/api/notifications/channels/{id}/test",
        "/api/notifications/deliveries",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} is not in the OpenAPI document"
        );
    }
    app.stop().await;
}
