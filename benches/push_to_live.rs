//! Webhook latency benchmark (SPEC.md §9, "webhook push → new version served (small image)
//! ≤ 3 s"): a dedicated `docker-registry serve` (own port, own storage) whose notifications call
//! the application's webhook, a `tag:live` stage with `auto_deploy` polled only hourly, and for
//! each run the time from the start of `docker push` to the new build's marker answered over HTTP
//! on the published port of the stage's current instance. Prints every run, then min / median /
//! max beside the budget.
//!
//! Run it with `scripts/bench-push-to-live.sh` (`cargo bench --bench push_to_live`). Under
//! `cargo test --all-targets` it only says so and exits, so the test suite stays fast.

use std::process::Stdio;
use std::time::{Duration, Instant};

use docker_watcher::app::{App, AppOptions};
use docker_watcher::config::Config;
use docker_watcher::domain::image_ref::ImageRef;
use docker_watcher::domain::name::Name;
use docker_watcher::domain::project::NewProject;
use docker_watcher::domain::schedule::Schedule;
use docker_watcher::domain::stage::{ContainerSpec, HealthCheck, NewStage};
use docker_watcher::domain::tag_policy::TagPolicy;
use docker_watcher::web::state::AppState;
use tokio::process::{Child, Command};

const RUNS: usize = 7;
const BUDGET: Duration = Duration::from_secs(3);
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
const WEBHOOK_TOKEN: &str = "bench-webhook-token";

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "push_to_live benchmark: run it with scripts/bench-push-to-live.sh (cargo bench --bench push_to_live)"
        );
        return;
    }
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    if let Err(e) = runtime.block_on(run()) {
        eprintln!("push_to_live benchmark failed: {e:#}");
        std::process::exit(1);
    }
}

fn registry() -> String {
    std::env::var("DW_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".to_owned())
}

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

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The benchmark's own registry, notifying `notify`; killed when dropped.
async fn start_registry(dir: &std::path::Path, notify: &str) -> anyhow::Result<(Child, String)> {
    let port = free_port()?;
    let host = format!("127.0.0.1:{port}");
    let config = format!(
        "version: 0.1\n\
         log:\n  level: warn\n  accesslog:\n    disabled: true\n\
         storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n\
         http:\n  addr: {host}\n  secret: push-to-live-benchmark\n\
         notifications:\n  endpoints:\n    - name: docker-watcher\n      url: {notify}\n      \
         timeout: 2s\n      threshold: 3\n      backoff: 1s\n      \
         ignoredmediatypes:\n        - application/octet-stream\n",
        storage = dir.join("storage").display(),
    );
    let config_path = dir.join("config.yml");
    std::fs::write(&config_path, config)?;
    let log = std::fs::File::create(dir.join("registry.log"))?;
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            anyhow::anyhow!("cannot start docker-registry (scripts/services.sh installs it): {e}")
        })?;
    let began = Instant::now();
    loop {
        let ok = reqwest::get(format!("http://{host}/v2/"))
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            return Ok((child, host));
        }
        anyhow::ensure!(
            began.elapsed() < Duration::from_secs(30),
            "the registry does not answer"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the stage's current instance answers at `/`, if anything.
async fn served(state: &AppState, stage_id: i64, http: &reqwest::Client) -> Option<String> {
    let stage = state.store.get_stage(stage_id).await.ok()?;
    let instance = state.store.get_instance(stage.current_instance_id?).await.ok()?;
    let port = instance.host_port?;
    let response = http
        .get(format!("http://127.0.0.1:{port}/"))
        .timeout(Duration::from_secs(1))
        .send()
        .await
        .ok()?;
    response.text().await.ok().map(|text| text.trim().to_owned())
}

async fn run() -> anyhow::Result<()> {
    // 1. The builds to push, prepared beforehand (built by pushing them to the shared registry,
    //    which leaves them in the engine): a push then uploads one new small layer.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/test-image.sh");
    let nonce = format!("{:08x}", rand::random::<u32>());
    let mut builds = Vec::new();
    for n in 0..RUNS {
        let source = format!("{}/dwbench/live-src:run-{n}", registry());
        let marker = format!("push-to-live {nonce} run {n}");
        run_command(script, &[&source, "--marker", &marker]).await?;
        builds.push((source, marker));
    }

    // 2. The application, and a registry that notifies it.
    let data_dir = tempfile::tempdir()?;
    let mut config = Config::for_data_dir(data_dir.path());
    config.admin_password = Some("bench-admin-password".to_owned());
    config.webhook_token = Some(WEBHOOK_TOKEN.to_owned());
    let app = App::spawn(config, AppOptions::default()).await?;
    let registry_dir = tempfile::tempdir()?;
    let notify = format!(
        "http://{}/api/hooks/registry?token={WEBHOOK_TOKEN}",
        app.api_addr()
    );
    let (mut registry_process, host) = start_registry(registry_dir.path(), &notify).await?;
    let image = format!("{host}/dwbench/live");

    let result = measure(&app, &image, &builds).await;

    // 3. Clean up whatever happened: containers of this installation, local images, registry.
    let installation = app.state().installation_id.to_string();
    app.stop().await;
    let _ = registry_process.kill().await;
    let containers = run_command(
        "docker",
        &[
            "ps",
            "-aq",
            "--filter",
            &format!("label=io.docker-watcher.installation={installation}"),
        ],
    )
    .await
    .unwrap_or_default();
    let containers: Vec<&str> = containers.split_whitespace().collect();
    if !containers.is_empty() {
        let mut args = vec!["rm", "-f"];
        args.extend(containers);
        let _ = run_command("docker", &args).await;
    }
    for (source, _) in &builds {
        let _ = run_command("docker", &["rmi", "-f", source]).await;
    }
    let _ = run_command("docker", &["rmi", "-f", &format!("{image}:live")]).await;
    result
}

async fn measure(app: &App, image: &str, builds: &[(String, String)]) -> anyhow::Result<()> {
    let state = app.state();
    let now = state.clock.now();
    let project = state
        .store
        .insert_project(
            &NewProject {
                name: Name::parse("push-to-live")?,
                image: ImageRef::parse(image)?,
                registry_username: None,
                registry_password: None,
                insecure_registry: false,
            },
            now,
        )
        .await?;
    let stage = state
        .store
        .insert_stage(
            project.id,
            &NewStage {
                name: Name::parse("live")?,
                tag_policy: TagPolicy::parse("tag:live")?,
                // Hourly, and no job is even planned (the stage is written to the store
                // directly): only the webhook can bring a push live.
                schedule: Some(Schedule::parse("@every 1h")?),
                auto_deploy: true,
                hostname: None,
                max_instances: NewStage::DEFAULT_MAX_INSTANCES,
                min_release_age: None,
                container: ContainerSpec {
                    port: 8080,
                    health_check: Some(HealthCheck {
                        path: "/health".to_owned(),
                        expected_status: 200,
                    }),
                    min_ready_seconds: 0,
                    ..ContainerSpec::default()
                },
                hooks: Default::default(),
                strategy: Default::default(),
                secret_env: Default::default(),
            },
            now,
        )
        .await?;

    let http = reqwest::Client::builder().no_proxy().build()?;
    let target = format!("{image}:live");
    let mut timings = Vec::new();
    for (n, (source, marker)) in builds.iter().enumerate() {
        run_command("docker", &["tag", source, &target]).await?;
        let began = Instant::now();
        let mut push = Command::new("docker")
            .args(["push", &target])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        loop {
            if served(state, stage.id, &http).await.as_deref() == Some(marker.as_str()) {
                break;
            }
            anyhow::ensure!(
                began.elapsed() < RUN_TIMEOUT,
                "run {n}: {marker:?} not served after {RUN_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let elapsed = began.elapsed();
        let status = push.wait().await?;
        anyhow::ensure!(status.success(), "docker push {target} failed");
        println!(
            "run {n}: push → served in {:7.1} ms",
            elapsed.as_secs_f64() * 1000.0
        );
        timings.push(elapsed);
    }
    timings.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let median = timings[timings.len() / 2];
    println!();
    println!(
        "webhook push → new version served: min {:.1} ms, median {:.1} ms, max {:.1} ms ({} runs)",
        ms(timings[0]),
        ms(median),
        ms(timings[timings.len() - 1]),
        timings.len()
    );
    println!(
        "budget ≤ {:.0} ms: {}",
        ms(BUDGET),
        if median <= BUDGET { "PASS" } else { "FAIL" }
    );
    Ok(())
}
