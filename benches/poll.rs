//! Poll benchmark (SPEC.md §9, "poll of 200 repositories on a local registry ≤ 2 s"): pushes one
//! small image to 200 repositories of the local registry, creates 200 projects with a `tag:v1`
//! monitor-only stage each in a fresh application (the library's `App::spawn`), then times full
//! poll cycles of all 200 stages (`Poller::poll_all`: one tag list and one manifest `HEAD` per
//! repository, projects in parallel) and prints min / median / max beside the budget, with the
//! registry requests each cycle sent.
//!
//! Run it with `scripts/bench-poll.sh` (`cargo bench --bench poll`). Under
//! `cargo test --all-targets` it only says so and exits, so the test suite stays fast.

use std::process::Stdio;
use std::time::{Duration, Instant};

use docker_watcher::app::{App, AppOptions};
use docker_watcher::config::Config;
use docker_watcher::domain::image_ref::ImageRef;
use docker_watcher::domain::name::Name;
use docker_watcher::domain::project::NewProject;
use docker_watcher::domain::schedule::Schedule;
use docker_watcher::domain::stage::{ContainerSpec, NewStage};
use docker_watcher::domain::tag_policy::TagPolicy;
use futures::StreamExt;
use tokio::process::Command;

const REPOSITORIES: usize = 200;
const RUNS: usize = 9;
const BUDGET: Duration = Duration::from_secs(2);
/// `docker push`es in flight while seeding the registry.
const PUSHES_IN_FLIGHT: usize = 8;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("poll benchmark: run it with scripts/bench-poll.sh (cargo bench --bench poll)");
        return;
    }
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    if let Err(e) = runtime.block_on(run()) {
        eprintln!("poll benchmark failed: {e:#}");
        std::process::exit(1);
    }
}

fn registry() -> String {
    std::env::var("DW_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".to_owned())
}

/// Runs a command; its stdout, or an error with its output.
async fn run_command(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| anyhow::anyhow!("cannot run {program}: {e}"))?;
    anyhow::ensure!(
        output.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn repository(n: usize) -> String {
    format!("{}/dwbench/poll-{n:03}", registry())
}

async fn run() -> anyhow::Result<()> {
    // 1. One image, pushed under 200 names. The names are fixed, so a second run of the
    //    benchmark pushes nothing new (the registry answers "layer exists").
    let seeding = Instant::now();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/test-image.sh");
    let first = format!("{}:v1", repository(0));
    run_command(script, &[&first, "--marker", "poll benchmark"]).await?;
    let pushes: Vec<anyhow::Result<()>> = futures::stream::iter(1..REPOSITORIES)
        .map(|n| {
            let first = first.clone();
            async move {
                let name = format!("{}:v1", repository(n));
                run_command("docker", &["tag", &first, &name]).await?;
                run_command("docker", &["push", &name]).await?;
                run_command("docker", &["rmi", &name]).await?;
                Ok(())
            }
        })
        .buffer_unordered(PUSHES_IN_FLIGHT)
        .collect()
        .await;
    pushes.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    run_command("docker", &["rmi", &first]).await?;
    println!(
        "seeded {REPOSITORIES} repositories on {} in {:.1} s",
        registry(),
        seeding.elapsed().as_secs_f64()
    );

    // 2. A fresh application with 200 projects, one monitor-only `tag:v1` stage each. They are
    //    written to the store directly, so no scheduled poll runs beside the measured ones.
    let data_dir = tempfile::tempdir()?;
    let mut config = Config::for_data_dir(data_dir.path());
    config.admin_password = Some("bench-admin-password".to_owned());
    let app = App::spawn(config, AppOptions::default()).await?;
    let state = app.state();
    let now = state.clock.now();
    for n in 0..REPOSITORIES {
        let project = state
            .store
            .insert_project(
                &NewProject {
                    name: Name::parse(&format!("bench-{n:03}"))?,
                    image: ImageRef::parse(&repository(n))?,
                    registry_username: None,
                    registry_password: None,
                    insecure_registry: false,
                },
                now,
            )
            .await?;
        state
            .store
            .insert_stage(
                project.id,
                &NewStage {
                    name: Name::parse("watch")?,
                    tag_policy: TagPolicy::parse("tag:v1")?,
                    schedule: Some(Schedule::parse("@every 1h")?),
                    auto_deploy: false,
                    hostname: None,
                    max_instances: NewStage::DEFAULT_MAX_INSTANCES,
                    min_release_age: None,
                    container: ContainerSpec::default(),
                    hooks: Default::default(),
                    strategy: Default::default(),
                    secret_env: Default::default(),
                },
                now,
            )
            .await?;
    }

    // 3. Full cycles: the first one records 200 available tags (writes and events); the
    //    following ones are the steady state a schedule sees.
    let mut timings = Vec::new();
    for run in 0..=RUNS {
        let requests_before = state.registry.request_count();
        let began = Instant::now();
        let outcomes = state.poller.poll_all().await?;
        let elapsed = began.elapsed();
        let requests = state.registry.request_count() - requests_before;
        let failed: Vec<String> = outcomes
            .iter()
            .filter_map(|(stage_id, outcome)| {
                outcome.as_ref().err().map(|e| format!("stage {stage_id}: {e}"))
            })
            .collect();
        anyhow::ensure!(
            outcomes.len() == REPOSITORIES && failed.is_empty(),
            "{} outcomes, failures: {failed:?}",
            outcomes.len()
        );
        let label = if run == 0 { "first cycle" } else { "cycle" };
        println!(
            "{label:>11} {run}: {:7.1} ms, {requests} registry requests",
            elapsed.as_secs_f64() * 1000.0
        );
        if run > 0 {
            timings.push((elapsed, requests));
        }
    }
    timings.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (min, median, max) = (
        timings[0].0,
        timings[timings.len() / 2].0,
        timings[timings.len() - 1].0,
    );
    let requests_per_cycle = timings[timings.len() / 2].1;
    println!();
    println!(
        "poll of {REPOSITORIES} repositories: min {:.1} ms, median {:.1} ms, max {:.1} ms; \
         {requests_per_cycle} registry requests per cycle ({:.1} per repository)",
        ms(min),
        ms(median),
        ms(max),
        requests_per_cycle as f64 / REPOSITORIES as f64
    );
    println!(
        "budget ≤ {:.0} ms: {}",
        ms(BUDGET),
        if median <= BUDGET { "PASS" } else { "FAIL" }
    );
    app.stop().await;
    Ok(())
}
