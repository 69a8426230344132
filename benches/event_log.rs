//! Event-log benchmark (SPEC.md §9): fills `event_log` with 1,000,000 rows through the store,
//! prints the insert rate, then starts the real `docker-watcher serve` binary on that data dir and
//! prints the p50/p95 latency of filtered `GET /api/events` pages over HTTP (budget ≤ 20 ms p95)
//! and the server's resident memory when idle (budget ≤ 30 MB), fresh and after the queries,
//! and the render time of the UI's dashboard, event log and stale pages over that data.
//!
//! Run it with `scripts/bench-events.sh` (`cargo bench --bench event_log`). Under
//! `cargo test --all-targets` it only says so and exits, so the test suite stays fast.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use docker_watcher::domain::event::{NewEvent, Severity, Source};
use docker_watcher::store::Store;
use rand::{Rng, SeedableRng};

const ROWS: usize = 1_000_000;
const QUERIES_PER_CASE: usize = 200;
const PASSWORD: &str = "bench-admin-password";

const SEVERITIES: [(Severity, u32); 4] = [
    (Severity::Debug, 5),
    (Severity::Info, 25),
    (Severity::Warn, 45),
    (Severity::Error, 25),
];
const SOURCES: [(Source, u32); 8] = [
    (Source::Poller, 30),
    (Source::Deployer, 20),
    (Source::Docker, 20),
    (Source::Proxy, 10),
    (Source::Stale, 10),
    (Source::Api, 4),
    (Source::Auth, 4),
    (Source::System, 2),
];

fn pick<T: Copy>(rng: &mut impl Rng, weighted: &[(T, u32)]) -> T {
    let total: u32 = weighted.iter().map(|w| w.1).sum();
    let mut n = rng.random_range(0..total);
    for (value, weight) in weighted {
        if n < *weight {
            return *value;
        }
        n -= weight;
    }
    weighted[0].0
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("event_log benchmark: run it with scripts/bench-events.sh (cargo bench --bench event_log)");
        return;
    }
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(run());
}

async fn run() {
    let dir = tempfile::tempdir().expect("a temporary dir");
    let empty_dir = tempfile::tempdir().expect("a temporary dir");

    // 1. Insert rate, through the store's batch insert.
    let store = Store::open(dir.path()).await.expect("the store opens");
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let start = Utc::now() - TimeDelta::days(30);
    let step_ms = 30 * 24 * 3600 * 1000 / ROWS as i64;
    let began = Instant::now();
    let mut batch = Vec::with_capacity(10_000);
    for i in 0..ROWS {
        let mut event = NewEvent::new(
            pick(&mut rng, &SEVERITIES),
            pick(&mut rng, &SOURCES),
            format!(
                "poll of 127.0.0.1:5000/team/app-{} failed: connection refused",
                i % 200
            ),
        )
        .detail("registry", "127.0.0.1:5000")
        .detail("attempt", (i % 7) as i64);
        if rng.random_range(0..10) != 0 {
            let project = rng.random_range(1..=50);
            event.project_id = Some(project);
            event.stage_id = Some(project * 10 + 1);
        }
        batch.push((event, start + TimeDelta::milliseconds(i as i64 * step_ms)));
        if batch.len() == 10_000 {
            store.insert_events(&batch).await.expect("insert");
            batch.clear();
        }
    }
    if !batch.is_empty() {
        store.insert_events(&batch).await.expect("insert");
    }
    let elapsed = began.elapsed();
    println!(
        "insert: {ROWS} rows in {:.1} s = {:.0} rows/s (batches of 10,000)",
        elapsed.as_secs_f64(),
        ROWS as f64 / elapsed.as_secs_f64()
    );
    store.close().await;

    // 2. Idle memory of a fresh server (empty data dir) and of the one holding 1M events.
    let fresh = Server::start(empty_dir.path());
    std::thread::sleep(Duration::from_secs(3));
    println!(
        "idle RSS, empty data dir: {:.1} MB (budget ≤ 30 MB)",
        fresh.rss_mb()
    );
    drop(fresh);

    let server = Server::start(dir.path());
    std::thread::sleep(Duration::from_secs(3));
    println!(
        "idle RSS, 1M events, before queries: {:.1} MB (budget ≤ 30 MB)",
        server.rss_mb()
    );

    // 3. Filtered pages over HTTP.
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .expect("a client");
    let base = format!("http://{}", server.addr);
    let login: serde_json::Value = client
        .post(format!("{base}/api/auth/login"))
        .json(&serde_json::json!({"username": "admin", "password": PASSWORD}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("login body");
    assert!(login["csrf_token"].is_string(), "login failed: {login}");
    let token: serde_json::Value = client
        .post(format!("{base}/api/tokens"))
        .header("x-csrf-token", login["csrf_token"].as_str().unwrap_or_default())
        .json(&serde_json::json!({"name": "bench"}))
        .send()
        .await
        .expect("token")
        .json()
        .await
        .unwrap_or_default();
    let bearer = token["token"]
        .as_str()
        .unwrap_or_else(|| panic!("could not create an API token: {token}"))
        .to_owned();
    // 4 (below). The UI pages, rendered for the logged-in admin session.
    let session = client;
    // Queries authenticate like a script would: with the API token, on a client without cookies.
    let client = reqwest::Client::new();
    let authed = |path: String| client.get(format!("{base}{path}")).bearer_auth(&bearer);
    let since_1d = (Utc::now() - TimeDelta::days(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let since_7d = (Utc::now() - TimeDelta::days(7)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let cases = [
        ("no filter, page 1".to_owned(), "/api/events".to_owned()),
        (
            "severity=warn,error".into(),
            "/api/events?severity=warn,error".into(),
        ),
        (
            "severity=warn,error&source=poller".into(),
            "/api/events?severity=warn,error&source=poller".into(),
        ),
        (
            "severity=warn,error&source=poller&project_id=7".into(),
            "/api/events?severity=warn,error&source=poller&project_id=7".into(),
        ),
        ("project_id=7".into(), "/api/events?project_id=7".into()),
        (
            "source=auth,api,system".into(),
            "/api/events?source=auth,api,system".into(),
        ),
        (
            "severity=error, page 100".into(),
            "/api/events?severity=error&page=100".into(),
        ),
        ("since 1 day".into(), format!("/api/events?since={since_1d}")),
        (
            "since 7 days + severity=warn,error".into(),
            format!("/api/events?severity=warn,error&since={since_7d}"),
        ),
        ("per_page=500".into(), "/api/events?per_page=500".into()),
    ];
    println!("filtered page latency over HTTP, {QUERIES_PER_CASE} requests each (budget p95 ≤ 20 ms):");
    let mut worst_p95 = 0.0f64;
    for (name, path) in &cases {
        // Warm-up.
        for _ in 0..5 {
            let response = authed(path.clone()).send().await.expect("query");
            assert!(response.status().is_success(), "{path}: {}", response.status());
            response.bytes().await.expect("body");
        }
        let mut samples = Vec::with_capacity(QUERIES_PER_CASE);
        let mut total = 0u64;
        for _ in 0..QUERIES_PER_CASE {
            let began = Instant::now();
            let response = authed(path.clone()).send().await.expect("query");
            let body: serde_json::Value = response.json().await.expect("json");
            samples.push(began.elapsed().as_secs_f64() * 1000.0);
            total = body["total"].as_u64().unwrap_or(0);
        }
        samples.sort_by(f64::total_cmp);
        let p50 = samples[samples.len() / 2];
        let p95 = samples[samples.len() * 95 / 100];
        worst_p95 = worst_p95.max(p95);
        println!("  {name:<48} p50 {p50:6.2} ms  p95 {p95:6.2} ms  (total {total})");
    }
    println!("worst p95: {worst_p95:.2} ms (budget ≤ 20 ms)");

    // 4. Server-rendered pages over 1,000,000 events ("well under 100 ms" in a release build).
    println!("UI pages for a logged-in admin, {QUERIES_PER_CASE} requests each:");
    for path in ["/", "/events", "/events?per_page=500", "/stale"] {
        let mut samples = Vec::with_capacity(QUERIES_PER_CASE);
        for round in 0..QUERIES_PER_CASE + 5 {
            let began = Instant::now();
            let response = session.get(format!("{base}{path}")).send().await.expect("page");
            assert!(response.status().is_success(), "{path}: {}", response.status());
            response.bytes().await.expect("page body");
            if round >= 5 {
                samples.push(began.elapsed().as_secs_f64() * 1000.0);
            }
        }
        samples.sort_by(f64::total_cmp);
        let p50 = samples[samples.len() / 2];
        let p95 = samples[samples.len() * 95 / 100];
        println!("  {path:<48} p50 {p50:6.2} ms  p95 {p95:6.2} ms  (budget < 100 ms)");
    }
    std::thread::sleep(Duration::from_secs(2));
    println!("RSS after the queries: {:.1} MB", server.rss_mb());
}

/// The real binary, serving on a free port.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(data_dir: &std::path::Path) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_docker-watcher"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--proxy-listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(data_dir)
            .env("DOCKER_WATCHER_ADMIN_PASSWORD", PASSWORD)
            .env("DOCKER_WATCHER_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the server starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut addr = String::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("a line");
            if let Some(rest) = line.strip_prefix("docker-watcher listening on http://") {
                addr = rest.trim().to_owned();
                break;
            }
        }
        assert!(!addr.is_empty(), "the server did not print its address");
        Server { child, addr }
    }

    fn rss_mb(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
