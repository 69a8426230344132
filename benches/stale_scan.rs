//! Stale-scan benchmark (SPEC.md §9: "stale scan, 10 000 instances and containers ≤ 1 s, one
//! Docker list call"). Two cases, each on a fresh store, each scanned twice — once when every
//! stopped instance becomes stale (marks written, one warning each) and once in the steady state
//! (nothing new) — printing the scan time beside the budget and the Docker API calls the scan
//! made:
//!
//! - **real**: 1,000 containers created (not started) on the real engine with this
//!   installation's labels, through the Docker adapter, 16 at a time, each with its instance row
//!   (`stopped`, created 30 days ago); removed afterwards, also when the run fails;
//! - **scaled**: 10,000 instance rows (70 % running, 30 % stopped for 30 days; then the worst
//!   case, all stopped for 30 days, so one scan warns about 10,000) and a fake engine
//!   whose one list call answers 10,000 entries copied from the real engine's list response of
//!   the first case, with their ids, names, instance labels and states adjusted.
//!
//! Run it with `scripts/bench-stale.sh` (`cargo bench --bench stale_scan`). Under
//! `cargo test --all-targets` it only says so and exits, so the test suite stays fast.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use docker_watcher::clock::{SharedClock, SystemClock};
use docker_watcher::docker::engine::{
    ContainerDetails, ContainerEngine, ContainerState, ContainerSummary, CreateContainer, EngineEvent,
    LogLine, PullAuth, labels,
};
use docker_watcher::docker::{DockerEngine, DockerError};
use docker_watcher::domain::image_ref::ImageRef;
use docker_watcher::domain::instance::{InstanceStatus, NewInstance};
use docker_watcher::domain::name::Name;
use docker_watcher::domain::project::{NewProject, Project};
use docker_watcher::domain::stage::{ContainerSpec, NewStage, Stage};
use docker_watcher::domain::tag_policy::TagPolicy;
use docker_watcher::events::EventBus;
use docker_watcher::metrics::Metrics;
use docker_watcher::routes::RouteTable;
use docker_watcher::settings::LiveSettings;
use docker_watcher::stale::{ScanReport, StaleDeps, StaleOptions, StaleScanner};
use docker_watcher::store::Store;
use futures::StreamExt;
use futures::stream::BoxStream;

const REAL_CONTAINERS: usize = 1_000;
const SCALED_INSTANCES: usize = 10_000;
const CREATE_CONCURRENCY: usize = 16;
const BUDGET: Duration = Duration::from_secs(1);

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("stale_scan benchmark: run it with scripts/bench-stale.sh (cargo bench --bench stale_scan)");
        return;
    }
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let template = runtime.block_on(real_case());
    runtime.block_on(scaled_case(&template, 70));
    // The worst case: every instance stopped long ago, all 10,000 warned about in one scan.
    runtime.block_on(scaled_case(&template, 0));
}

/// A fresh store with one project and stage.
async fn fresh_store(dir: &std::path::Path) -> (Store, Project, Stage) {
    let store = Store::open(dir).await.expect("the store opens");
    let now = Utc::now();
    let project = store
        .insert_project(
            &NewProject {
                name: Name::parse("bench").expect("a name"),
                image: ImageRef::parse("127.0.0.1:5000/dwbench/stale").expect("an image"),
                registry_username: None,
                registry_password: None,
                insecure_registry: false,
            },
            now,
        )
        .await
        .expect("a project");
    let stage = store
        .insert_stage(
            project.id,
            &NewStage {
                name: Name::parse("prod").expect("a name"),
                tag_policy: TagPolicy::parse("glob:*").expect("a policy"),
                schedule: None,
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
        .await
        .expect("a stage");
    (store, project, stage)
}

async fn scanner(store: &Store, engine: Arc<dyn ContainerEngine>) -> StaleScanner {
    let clock: SharedClock = Arc::new(SystemClock);
    let metrics = Arc::new(Metrics::new());
    let settings = LiveSettings::load(store.clone(), clock.clone())
        .await
        .expect("settings");
    StaleScanner::new(
        StaleDeps {
            store: store.clone(),
            bus: EventBus::new(store.clone(), clock.clone(), metrics.clone()),
            engine,
            routes: RouteTable::new(store.clone(), settings.clone()),
            settings,
            clock,
            metrics,
            installation_id: store.installation_id().await.expect("an installation id").into(),
        },
        StaleOptions::default(),
    )
}

/// Scans once and prints the time, the budget, what the scan did and its engine calls.
async fn timed_scan(
    case: &str,
    label: &str,
    scanner: &StaleScanner,
    engine: &dyn ContainerEngine,
) -> ScanReport {
    let before = engine.api_calls();
    let started = Instant::now();
    let report = scanner.scan().await.expect("the scan succeeds");
    let took = started.elapsed();
    let after = engine.api_calls();
    let calls: BTreeMap<&str, u64> = after
        .iter()
        .map(|(op, n)| (*op, n - before.get(op).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect();
    let verdict = if took <= BUDGET { "ok" } else { "OVER BUDGET" };
    println!(
        "{case:<7} {label:<28} {:>8.1} ms  (budget ≤ {} ms: {verdict})  containers {:>5}  instances {:>5}  \
         alive {:>5}  newly stale {:>5}  stale {:>5}  Docker API calls {calls:?}",
        took.as_secs_f64() * 1000.0,
        BUDGET.as_millis(),
        report.containers,
        report.instances,
        report.alive,
        report.newly_stale.len(),
        report.stale,
    );
    report
}

/// Removes the installation's containers when dropped, also when the run panics.
struct RemoveByLabel(String);

impl Drop for RemoveByLabel {
    fn drop(&mut self) {
        let filter = format!("label={}={}", labels::INSTALLATION, self.0);
        let Ok(output) = std::process::Command::new("docker")
            .args(["ps", "-aq", "--filter", &filter])
            .output()
        else {
            return;
        };
        let ids = String::from_utf8_lossy(&output.stdout).into_owned();
        for chunk in ids.split_whitespace().collect::<Vec<_>>().chunks(200) {
            let mut args = vec!["rm", "-f"];
            args.extend(chunk);
            let _ = std::process::Command::new("docker").args(&args).output();
        }
    }
}

/// Removes the local copy of the benchmark's image when dropped.
struct RemoveImage(String);

impl Drop for RemoveImage {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rmi", "-f", &self.0])
            .output();
    }
}

/// Builds and pushes a tiny image with scripts/test-image.sh; returns the local reference.
fn test_image() -> String {
    let registry = std::env::var("DW_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".to_owned());
    let image = format!("{registry}/dwbench/stale-{:08x}:v1", rand::random::<u32>());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/test-image.sh");
    let output = std::process::Command::new(script)
        .arg(&image)
        .output()
        .expect("scripts/test-image.sh runs");
    assert!(
        output.status.success(),
        "scripts/test-image.sh failed (run scripts/services.sh): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    image
}

/// Case 1: 1,000 real created containers. Returns the real list response, the template of case 2.
async fn real_case() -> Vec<ContainerSummary> {
    let dir = tempfile::tempdir().expect("a temporary dir");
    let (store, project, stage) = fresh_store(dir.path()).await;
    let installation = store.installation_id().await.expect("an installation id");
    let image = test_image();
    let _remove_image = RemoveImage(image.clone());
    // Declared after the image's guard, so it drops first: the containers go before their image.
    let _remove = RemoveByLabel(installation.clone());
    let engine =
        Arc::new(DockerEngine::connect(std::env::var("DOCKER_HOST").ok().as_deref()).expect("an engine"));
    let created_at = Utc::now() - TimeDelta::days(30);

    println!("real: creating {REAL_CONTAINERS} containers ({CREATE_CONCURRENCY} at a time)…");
    let began = Instant::now();
    let created: Vec<()> = futures::stream::iter(0..REAL_CONTAINERS)
        .map(|n| {
            let (store, engine, image, installation) =
                (store.clone(), engine.clone(), image.clone(), installation.clone());
            let (project_id, stage_id) = (project.id, stage.id);
            async move {
                let instance = store
                    .insert_instance(&NewInstance {
                        project_id,
                        stage_id,
                        image_tag: format!("t{n}"),
                        image_digest: None,
                        status: InstanceStatus::Pending,
                        hostname: None,
                        created_at,
                        config_revision: 1,
                    })
                    .await
                    .expect("an instance row");
                let name = format!("dw-bench-prod-{}-{installation}", instance.id);
                let container = engine
                    .create(&CreateContainer {
                        name: name.clone(),
                        image,
                        labels: BTreeMap::from([
                            (labels::MANAGED.to_owned(), "true".to_owned()),
                            (labels::INSTALLATION.to_owned(), installation),
                            (labels::PROJECT.to_owned(), project_id.to_string()),
                            (labels::STAGE.to_owned(), stage_id.to_string()),
                            (labels::INSTANCE.to_owned(), instance.id.to_string()),
                        ]),
                        env: Vec::new(),
                        command: None,
                        container_port: Some(8080),
                        memory_bytes: None,
                        nano_cpus: None,
                        mounts: Vec::new(),
                        network: None,
                        extra_networks: Vec::new(),
                        user: None,
                        restart_policy: Default::default(),
                        stop_signal: "SIGTERM".to_owned(),
                        stop_timeout_seconds: 10,
                    })
                    .await
                    .expect("a container");
                store
                    .set_instance_container(instance.id, &container, &name, None)
                    .await
                    .expect("the container is recorded");
                store
                    .update_instance_status(instance.id, InstanceStatus::Stopped, None, created_at)
                    .await
                    .expect("the status is recorded");
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .collect()
        .await;
    println!(
        "real: {} containers and rows ready in {:.1} s",
        created.len(),
        began.elapsed().as_secs_f64()
    );

    let scanner = scanner(&store, engine.clone()).await;
    let first = timed_scan("real", "scan (all become stale)", &scanner, engine.as_ref()).await;
    assert_eq!(first.containers, REAL_CONTAINERS);
    let second = timed_scan("real", "scan (steady state)", &scanner, engine.as_ref()).await;
    assert_eq!(second.stale, REAL_CONTAINERS);
    let template = engine
        .list_managed(&installation)
        .await
        .expect("the real list response");

    println!("real: removing the containers…");
    let began = Instant::now();
    let removed = futures::stream::iter(template.iter().map(|c| c.id.clone()))
        .map(|id| {
            let engine = engine.clone();
            async move { engine.remove(&id).await.is_ok() }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .filter(|ok| futures::future::ready(*ok))
        .count()
        .await;
    println!(
        "real: {removed} containers removed in {:.1} s",
        began.elapsed().as_secs_f64()
    );
    template
}

/// An engine whose one list call answers a fixed list; every other call is counted and refused.
#[derive(Debug)]
struct ScaledEngine {
    containers: Vec<ContainerSummary>,
    calls: Mutex<BTreeMap<&'static str, u64>>,
}

impl ScaledEngine {
    fn count(&self, operation: &'static str) {
        *self
            .calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(operation)
            .or_default() += 1;
    }

    fn refused() -> DockerError {
        DockerError::Unavailable {
            message: "the scaled benchmark engine only lists".to_owned(),
        }
    }
}

#[async_trait::async_trait]
impl ContainerEngine for ScaledEngine {
    async fn ping(&self, _timeout: Duration) -> Result<(), DockerError> {
        self.count("ping");
        Ok(())
    }
    async fn pull(&self, _image: &str, _auth: Option<&PullAuth>) -> Result<(), DockerError> {
        self.count("pull");
        Err(Self::refused())
    }
    async fn create(&self, _spec: &CreateContainer) -> Result<String, DockerError> {
        self.count("create");
        Err(Self::refused())
    }
    async fn start(&self, _id: &str) -> Result<(), DockerError> {
        self.count("start");
        Err(Self::refused())
    }
    async fn stop(&self, _id: &str, _grace: Duration) -> Result<(), DockerError> {
        self.count("stop");
        Err(Self::refused())
    }
    async fn restart(&self, _id: &str, _grace: Duration) -> Result<(), DockerError> {
        self.count("restart");
        Err(Self::refused())
    }
    async fn remove(&self, _id: &str) -> Result<(), DockerError> {
        self.count("remove");
        Err(Self::refused())
    }
    async fn inspect(&self, _id: &str) -> Result<ContainerDetails, DockerError> {
        self.count("inspect");
        Err(Self::refused())
    }
    async fn list_managed(&self, _installation_id: &str) -> Result<Vec<ContainerSummary>, DockerError> {
        self.count("list");
        Ok(self.containers.clone())
    }
    async fn logs(&self, _id: &str, _tail: u32) -> Result<Vec<LogLine>, DockerError> {
        self.count("logs");
        Err(Self::refused())
    }
    async fn remove_image_if_unused(&self, _image_id: &str) -> Result<bool, DockerError> {
        self.count("remove_image");
        Err(Self::refused())
    }
    fn events(&self, _installation_id: &str) -> BoxStream<'static, Result<EngineEvent, DockerError>> {
        self.count("events");
        futures::stream::empty().boxed()
    }
    fn api_calls(&self) -> BTreeMap<&'static str, u64> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Case 2: 10,000 rows and a list response scaled from the real one to 10,000 entries;
/// `running_percent` of them run, the others stopped 30 days ago.
async fn scaled_case(template: &[ContainerSummary], running_percent: usize) {
    assert!(
        !template.is_empty(),
        "the real case left no list response to scale"
    );
    let dir = tempfile::tempdir().expect("a temporary dir");
    let (store, project, stage) = fresh_store(dir.path()).await;
    let installation = store.installation_id().await.expect("an installation id");
    let long_ago = Utc::now() - TimeDelta::days(30);

    println!("scaled: recording {SCALED_INSTANCES} instances…");
    let began = Instant::now();
    let mut containers = Vec::with_capacity(SCALED_INSTANCES);
    for n in 0..SCALED_INSTANCES {
        let running = n % 100 < running_percent;
        let instance = store
            .insert_instance(&NewInstance {
                project_id: project.id,
                stage_id: stage.id,
                image_tag: format!("t{n}"),
                image_digest: None,
                status: InstanceStatus::Pending,
                hostname: None,
                created_at: long_ago,
                config_revision: 1,
            })
            .await
            .expect("an instance row");
        let mut container = template[n % template.len()].clone();
        container.id = format!("{:064x}", (u128::from(rand::random::<u64>()) << 64) | n as u128);
        container.name = format!("dw-bench-prod-{}", instance.id);
        container
            .labels
            .insert(labels::INSTALLATION.to_owned(), installation.clone());
        container
            .labels
            .insert(labels::INSTANCE.to_owned(), instance.id.to_string());
        (container.state, container.exit_code) = if running {
            (ContainerState::Running, None)
        } else {
            (ContainerState::Exited, Some(0))
        };
        store
            .set_instance_container(instance.id, &container.id, &container.name, container.host_port)
            .await
            .expect("the container is recorded");
        store
            .mark_instance_alive(instance.id, long_ago)
            .await
            .expect("alive once");
        if !running {
            store
                .update_instance_status(instance.id, InstanceStatus::Stopped, Some(0), long_ago)
                .await
                .expect("stopped");
        }
        containers.push(container);
    }
    println!(
        "scaled: {SCALED_INSTANCES} rows ready in {:.1} s",
        began.elapsed().as_secs_f64()
    );
    let engine = Arc::new(ScaledEngine {
        containers,
        calls: Mutex::default(),
    });
    let scanner = scanner(&store, engine.clone()).await;
    let label = format!("scan ({} % become stale)", 100 - running_percent);
    let first = timed_scan("scaled", &label, &scanner, engine.as_ref()).await;
    assert_eq!(first.containers, SCALED_INSTANCES);
    timed_scan("scaled", "scan (steady state)", &scanner, engine.as_ref()).await;
}
