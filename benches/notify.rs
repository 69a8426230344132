//! Notification benchmark (SPEC.md §9, "notification: event → receiver ≤ 1 s p99 with the API's
//! p99 unaffected"). One app, one run, two phases with the same load:
//!
//! 1. **baseline** — no channel: 1,000 `warn` events published at 40 per second (each one goes
//!    through the notifier's intake, which matches it against no channel) while 4 clients read
//!    the API (`GET /api/events?per_page=20`, `GET /api/projects`) as fast as it answers;
//! 2. **notifying** — three channels (webhook, Slack, ntfy) on a receiver of the benchmark's own
//!    on loopback, and the same 1,000 events and API load.
//!
//! Printed: the API's p50/p99 in both phases side by side, and for the second phase the latency
//! of every event from its publication to its arrival at each channel's receiver (p50, p99,
//! max), with how many of the 3,000 arrived. Run it with `scripts/bench-notify.sh`; under
//! `cargo test --all-targets` it only says so and exits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Request, State};
use docker_watcher::app::{App, AppOptions};
use docker_watcher::config::Config;
use docker_watcher::domain::event::{EventKind, NewEvent, Source};

const EVENTS: usize = 1_000;
const EVENTS_PER_SECOND: u64 = 40;
const API_CLIENTS: usize = 4;
const BUDGET: Duration = Duration::from_secs(1);

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("notify benchmark: run it with scripts/bench-notify.sh (cargo bench --bench notify)");
        return;
    }
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    if let Err(e) = runtime.block_on(run()) {
        eprintln!("notify benchmark failed: {e:#}");
        std::process::exit(1);
    }
}

/// Arrivals per channel path: event number → when it arrived.
type Arrivals = Arc<Mutex<HashMap<String, HashMap<usize, Instant>>>>;

async fn receiver(arrivals: Arrivals) -> anyhow::Result<std::net::SocketAddr> {
    async fn record(State(arrivals): State<Arrivals>, request: Request) -> &'static str {
        let now = Instant::now();
        let path = request.uri().path().to_owned();
        let body: Bytes = axum::body::to_bytes(request.into_body(), 8 << 20)
            .await
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&body);
        let mut arrivals = arrivals.lock().unwrap();
        let seen = arrivals.entry(path).or_default();
        for part in text.split("bench-event-").skip(1) {
            let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
            if let Ok(n) = digits.parse::<usize>() {
                seen.entry(n).or_insert(now);
            }
        }
        "ok"
    }
    let router = axum::Router::new().fallback(record).with_state(arrivals);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(addr)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Publishes the events at a steady rate while `API_CLIENTS` read the API; returns when each
/// event was published and the API's latencies.
async fn phase(app: &App, token: &str, label: &str) -> anyhow::Result<(Vec<Instant>, Vec<Duration>)> {
    let base = format!("http://{}", app.api_addr());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for n in 0..API_CLIENTS {
        let (base, token, stop) = (base.clone(), token.to_owned(), stop.clone());
        clients.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut latencies = Vec::new();
            let paths = ["/api/events?per_page=20", "/api/projects"];
            let mut i = n;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let started = Instant::now();
                let response = http
                    .get(format!("{base}{}", paths[i % paths.len()]))
                    .bearer_auth(&token)
                    .send()
                    .await;
                if let Ok(response) = response {
                    let ok = response.status().is_success();
                    let _ = response.bytes().await;
                    if ok {
                        latencies.push(started.elapsed());
                    }
                }
                i += 1;
            }
            latencies
        }));
    }
    let bus = app.state().bus.clone();
    let mut published = Vec::with_capacity(EVENTS);
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / EVENTS_PER_SECOND));
    for n in 0..EVENTS {
        tick.tick().await;
        published.push(Instant::now());
        bus.publish(
            NewEvent::warn(Source::Stale, format!("{label} bench-event-{n} is stale"))
                .kind(EventKind::StaleFound)
                .project(1),
        )
        .await;
    }
    // Let the last window close and its messages arrive before the load stops.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut latencies = Vec::new();
    for client in clients {
        latencies.extend(client.await?);
    }
    latencies.sort();
    Ok((published, latencies))
}

async fn run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut config = Config::for_data_dir(dir.path());
    config.admin_password = Some("bench-admin-password".to_owned());
    config.listen = "127.0.0.1:0".parse()?;
    config.proxy_listen = "127.0.0.1:0".parse()?;
    let app = App::spawn(config, AppOptions::default()).await?;
    let base = format!("http://{}", app.api_addr());
    let http = reqwest::Client::builder().cookie_store(true).build()?;
    let login: serde_json::Value = http
        .post(format!("{base}/api/auth/login"))
        .json(&serde_json::json!({"username": "admin", "password": "bench-admin-password"}))
        .send()
        .await?
        .json()
        .await?;
    let csrf = login["csrf_token"].as_str().unwrap_or_default().to_owned();
    let token: serde_json::Value = http
        .post(format!("{base}/api/tokens"))
        .header("X-CSRF-Token", &csrf)
        .json(&serde_json::json!({"name": "bench"}))
        .send()
        .await?
        .json()
        .await?;
    let token = token["token"].as_str().unwrap_or_default().to_owned();

    println!(
        "phase 1: baseline — {EVENTS} events at {EVENTS_PER_SECOND}/s, no channel, {API_CLIENTS} API clients"
    );
    let (_, baseline) = phase(&app, &token, "baseline").await?;

    let arrivals: Arrivals = Arc::default();
    let receiver = receiver(arrivals.clone()).await?;
    let channels = [
        ("webhook", "/webhook", serde_json::json!({})),
        ("slack", "/slack", serde_json::json!({})),
        ("ntfy", "/ntfy", serde_json::json!({"tags": ["bench"]})),
    ];
    for (kind, path, settings) in &channels {
        let response = http
            .post(format!("{base}/api/notifications/channels"))
            .bearer_auth(&token)
            .json(&serde_json::json!({
                "name": format!("bench-{kind}"), "kind": kind, "settings": settings,
                "secrets": {"url": format!("http://{receiver}{path}")},
                "rule": {"min_severity": "warn", "kinds": ["stale_found"]},
            }))
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "creating the {kind} channel: {}",
            response.text().await?
        );
    }
    println!("phase 2: notifying — the same load, three channels (webhook, slack, ntfy)");
    let (published, notifying) = phase(&app, &token, "notifying").await?;

    let arrivals = arrivals.lock().unwrap().clone();
    let mut latencies = Vec::new();
    let mut per_channel = Vec::new();
    for (kind, path, _) in &channels {
        let seen = arrivals.get(*path).cloned().unwrap_or_default();
        per_channel.push(format!("{kind} {}/{EVENTS}", seen.len()));
        for (n, at) in seen {
            if let Some(sent) = published.get(n) {
                latencies.push(at.saturating_duration_since(*sent));
            }
        }
    }
    latencies.sort();
    let (p50, p99, max) = (
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default(),
    );
    println!();
    println!(
        "API latency ({} + {} requests)   p50        p99",
        baseline.len(),
        notifying.len()
    );
    println!(
        "  baseline (idle notifier)      {:>10} {:>10}",
        ms(percentile(&baseline, 0.5)),
        ms(percentile(&baseline, 0.99))
    );
    println!(
        "  while notifying               {:>10} {:>10}",
        ms(percentile(&notifying, 0.5)),
        ms(percentile(&notifying, 0.99))
    );
    println!();
    println!(
        "event → receiver, {} deliveries ({})",
        latencies.len(),
        per_channel.join(", ")
    );
    println!(
        "  p50 {}   p99 {}   max {}   (budget p99 ≤ {})",
        ms(p50),
        ms(p99),
        ms(max),
        ms(BUDGET)
    );
    let complete = latencies.len() == EVENTS * channels.len();
    println!(
        "verdict: {}",
        if complete && p99 <= BUDGET {
            "within budget"
        } else {
            "OVER BUDGET or incomplete"
        }
    );
    app.stop().await;
    Ok(())
}
