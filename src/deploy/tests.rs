//! Unit tests of the deploy workflow against an in-memory [`FakeEngine`]: the bookkeeping
//! (instances, deployments, failed digests, events, the current instance) without Docker. The
//! integration tests in `tests/it/deploy.rs` run the same workflow against the real engine.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use chrono::Utc;
use futures::future::BoxFuture;
use futures::stream::BoxStream;

use super::*;
use crate::clock::SystemClock;
use crate::docker::DockerError;
use crate::docker::engine::{
    ContainerDetails, ContainerEngine, ContainerState, ContainerSummary, CreateContainer, EngineEvent,
    HealthState, LogLine, LogStream, PullAuth, labels,
};
use crate::domain::event::{EventQuery, Severity};
use crate::domain::instance::{DeploymentStatus, InstanceStatus};
use crate::domain::stage::{ContainerSpec, NewStage};
use crate::domain::tag_policy::TagPolicy;
use crate::registry::RegistryClientConfig;
use crate::store::testing::{new_project, new_stage, temp_store};

/// How a fake image behaves once started.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Behaviour {
    Serves,
    ExitsAtOnce,
    Unhealthy,
}

#[derive(Debug, Clone)]
struct FakeContainer {
    name: String,
    image: String,
    labels: BTreeMap<String, String>,
    state: ContainerState,
    exit_code: Option<i64>,
    health: Option<HealthState>,
    host_port: Option<u16>,
    started_at: Option<chrono::DateTime<Utc>>,
}

/// An engine in memory: images behave as [`FakeEngine::behave`] says; containers only change
/// when asked.
#[derive(Debug, Default)]
struct FakeEngine {
    state: Mutex<FakeState>,
    /// Run once, at the start of the next call of the named operation: what another writer
    /// does while the deployer waits for Docker.
    hooks: Mutex<Vec<(&'static str, Hook)>>,
}

struct Hook(BoxFuture<'static, ()>);

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hook")
    }
}

#[derive(Debug, Default)]
struct FakeState {
    containers: HashMap<String, FakeContainer>,
    behaviours: HashMap<String, Behaviour>,
    unpullable: Vec<String>,
    next: u32,
}

impl FakeEngine {
    fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn behave(&self, digest: &Digest, behaviour: Behaviour) {
        self.lock().behaviours.insert(digest.to_string(), behaviour);
    }

    fn state_of(&self, id: &str) -> Option<ContainerState> {
        self.lock().containers.get(id).map(|c| c.state)
    }

    fn forget(&self, id: &str) {
        self.lock().containers.remove(id);
    }

    /// Runs `hook` when `operation` (`start`, `stop`, `restart`, `inspect`) is next called.
    fn before_next(&self, operation: &'static str, hook: impl Future<Output = ()> + Send + 'static) {
        self.hooks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((operation, Hook(Box::pin(hook))));
    }

    async fn run_hook(&self, operation: &'static str) {
        let hook = {
            let mut hooks = self.hooks.lock().unwrap_or_else(|e| e.into_inner());
            hooks
                .iter()
                .position(|(op, _)| *op == operation)
                .map(|i| hooks.remove(i).1)
        };
        if let Some(Hook(hook)) = hook {
            hook.await;
        }
    }
}

#[async_trait::async_trait]
impl ContainerEngine for FakeEngine {
    async fn ping(&self, _timeout: Duration) -> Result<(), DockerError> {
        Ok(())
    }

    async fn pull(&self, image: &str, _auth: Option<&PullAuth>) -> Result<(), DockerError> {
        if self.lock().unpullable.iter().any(|i| image.ends_with(i.as_str())) {
            return Err(DockerError::NotFound);
        }
        Ok(())
    }

    async fn create(&self, spec: &CreateContainer) -> Result<String, DockerError> {
        let mut state = self.lock();
        if state.containers.values().any(|c| c.name == spec.name) {
            return Err(DockerError::Conflict {
                message: format!("name {} in use", spec.name),
            });
        }
        state.next += 1;
        let id = format!("c{}", state.next);
        state.containers.insert(
            id.clone(),
            FakeContainer {
                name: spec.name.clone(),
                image: spec.image.clone(),
                labels: spec.labels.clone(),
                state: ContainerState::Created,
                exit_code: None,
                health: None,
                host_port: None,
                started_at: None,
            },
        );
        Ok(id)
    }

    async fn start(&self, id: &str) -> Result<(), DockerError> {
        self.run_hook("start").await;
        let mut state = self.lock();
        let next = state.next;
        let behaviours = state.behaviours.clone();
        let container = state.containers.get_mut(id).ok_or(DockerError::NotFound)?;
        let digest = container.image.rsplit('@').next().unwrap_or("").to_owned();
        let behaviour = behaviours.get(&digest).copied().unwrap_or(Behaviour::Serves);
        container.started_at = Some(Utc::now());
        container.host_port = Some(40_000 + next as u16);
        match behaviour {
            Behaviour::Serves => {
                container.state = ContainerState::Running;
                container.exit_code = None;
            }
            Behaviour::ExitsAtOnce => {
                container.state = ContainerState::Exited;
                container.exit_code = Some(1);
            }
            Behaviour::Unhealthy => {
                container.state = ContainerState::Running;
                container.health = Some(HealthState::Unhealthy);
            }
        }
        Ok(())
    }

    async fn stop(&self, id: &str, _grace: Duration) -> Result<(), DockerError> {
        self.run_hook("stop").await;
        let mut state = self.lock();
        let container = state.containers.get_mut(id).ok_or(DockerError::NotFound)?;
        if container.state == ContainerState::Running {
            container.state = ContainerState::Exited;
            container.exit_code = Some(0);
        }
        Ok(())
    }

    async fn restart(&self, id: &str, grace: Duration) -> Result<(), DockerError> {
        self.run_hook("restart").await;
        self.stop(id, grace).await?;
        self.start(id).await
    }

    async fn remove(&self, id: &str) -> Result<(), DockerError> {
        self.lock()
            .containers
            .remove(id)
            .map(|_| ())
            .ok_or(DockerError::NotFound)
    }

    async fn inspect(&self, id: &str) -> Result<ContainerDetails, DockerError> {
        self.run_hook("inspect").await;
        let state = self.lock();
        let c = state.containers.get(id).ok_or(DockerError::NotFound)?;
        Ok(ContainerDetails {
            id: id.to_owned(),
            name: format!("/{}", c.name),
            labels: c.labels.clone(),
            state: c.state,
            exit_code: c.exit_code,
            oom_killed: false,
            health: c.health,
            host_port: c.host_port,
            started_at: c.started_at,
            finished_at: None,
            image_id: c.image.clone(),
        })
    }

    async fn list_managed(&self, _installation_id: &str) -> Result<Vec<ContainerSummary>, DockerError> {
        Ok(Vec::new())
    }

    async fn logs(&self, _id: &str, _tail: u32) -> Result<Vec<LogLine>, DockerError> {
        Ok(vec![LogLine {
            stream: LogStream::Stdout,
            time: None,
            text: "hello".into(),
        }])
    }

    async fn remove_image_if_unused(&self, _image_id: &str) -> Result<bool, DockerError> {
        Ok(true)
    }

    fn events(&self, _installation_id: &str) -> BoxStream<'static, Result<EngineEvent, DockerError>> {
        Box::pin(futures::stream::empty())
    }

    fn api_calls(&self) -> BTreeMap<&'static str, u64> {
        BTreeMap::new()
    }
}

struct Harness {
    deployer: Deployer,
    engine: Arc<FakeEngine>,
    store: Store,
    settings: LiveSettings,
    routes: RouteTable,
    project: Project,
    _dir: tempfile::TempDir,
}

fn digest(n: u8) -> Digest {
    Digest::parse(&format!("sha256:{}", format!("{n:02x}").repeat(32))).expect("a digest")
}

async fn harness() -> Harness {
    let (store, dir) = temp_store().await;
    let clock: SharedClock = Arc::new(SystemClock);
    let metrics = Arc::new(Metrics::new());
    let bus = EventBus::new(store.clone(), clock.clone(), metrics.clone());
    let settings = LiveSettings::load(store.clone(), clock.clone())
        .await
        .expect("settings load");
    let routes = RouteTable::new(store.clone(), settings.clone());
    let engine = Arc::new(FakeEngine::default());
    let deployer = Deployer::new(
        DeployerDeps {
            store: store.clone(),
            bus,
            engine: engine.clone(),
            registry: RegistryClient::new(RegistryClientConfig::default()).expect("a registry client"),
            routes: routes.clone(),
            settings: settings.clone(),
            secrets: SecretBox::from_key([7; 32]),
            clock,
            installation_id: "test-installation".into(),
            metrics,
        },
        DeployerOptions {
            drain_timeout: Duration::from_millis(100),
            stop_grace: Duration::from_secs(1),
            health_interval: Duration::from_millis(10),
            health_wrong_answers: 5,
        },
    )
    .expect("a deployer");
    let project = store
        .insert_project(&new_project("shop"), Utc::now())
        .await
        .expect("a project");
    Harness {
        deployer,
        engine,
        store,
        settings,
        routes,
        project,
        _dir: dir,
    }
}

impl Harness {
    async fn stage(&self, name: &str, policy: &str, max_instances: u32) -> Stage {
        let new = NewStage {
            tag_policy: TagPolicy::parse(policy).expect("a policy"),
            max_instances,
            container: ContainerSpec {
                min_ready_seconds: 0,
                ..Default::default()
            },
            ..new_stage(name)
        };
        self.store
            .insert_stage(self.project.id, &new, Utc::now())
            .await
            .expect("a stage")
    }

    async fn deploy(&self, stage: &Stage, tag: &str, d: &Digest, trigger: Trigger) -> DeployOutcome {
        self.deployer
            .deploy(
                stage.id,
                DeployRequest {
                    tag: tag.into(),
                    digest: Some(d.clone()),
                    trigger,
                    actor: Some("alice".into()),
                },
            )
            .await
            .expect("the deploy runs")
    }

    async fn instance(&self, id: i64) -> Instance {
        self.store.get_instance(id).await.expect("the instance")
    }

    async fn current(&self, stage: &Stage) -> Option<i64> {
        self.store
            .get_stage(stage.id)
            .await
            .expect("the stage")
            .current_instance_id
    }

    async fn deployer_errors(&self) -> u64 {
        let query = EventQuery {
            severities: vec![Severity::Error],
            sources: vec![Source::Deployer],
            ..Default::default()
        };
        self.store.list_events(&query).await.expect("events").1
    }
}

fn succeeded(outcome: DeployOutcome) -> Deployment {
    match outcome {
        DeployOutcome::Succeeded(d) => d,
        other => panic!("expected success, got {other:?}"),
    }
}

fn failed(outcome: DeployOutcome) -> Deployment {
    match outcome {
        DeployOutcome::Failed(d) => d,
        other => panic!("expected failure, got {other:?}"),
    }
}

#[tokio::test]
async fn a_deploy_records_the_instance_switches_the_stage_and_stops_the_old_one() {
    let h = harness().await;
    let stage = h.stage("prod", "tag:v1", 10).await;
    let first = succeeded(h.deploy(&stage, "v1", &digest(1), Trigger::Manual).await);
    assert_eq!(first.status, DeploymentStatus::Succeeded);
    assert_eq!(first.actor.as_deref(), Some("alice"));
    let first_id = first.instance_id.expect("an instance");
    let running = h.instance(first_id).await;
    assert_eq!(running.status, InstanceStatus::Running);
    assert!(running.last_alive_at.is_some() && running.is_current);
    assert_eq!(
        running.container_name.as_deref(),
        Some(format!("dw-shop-prod-{first_id}").as_str())
    );
    let container = running.container_id.clone().expect("a container");
    let labels = h.engine.lock().containers[&container].labels.clone();
    assert_eq!(labels[labels::INSTALLATION], "test-installation");
    assert_eq!(labels[labels::INSTANCE], first_id.to_string());

    let second = succeeded(h.deploy(&stage, "v1", &digest(2), Trigger::Poll).await);
    let second_id = second.instance_id.expect("an instance");
    assert_eq!(h.current(&stage).await, Some(second_id));
    assert_eq!(h.instance(first_id).await.status, InstanceStatus::Stopped);
    assert_eq!(h.engine.state_of(&container), Some(ContainerState::Exited));
    let deployments = h
        .store
        .list_deployments(Some(stage.id), 10)
        .await
        .expect("deployments");
    assert_eq!(
        deployments.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![second.id, first.id]
    );
    assert_eq!(h.deployer_errors().await, 0);
}

#[tokio::test]
async fn deploying_the_digest_that_already_runs_records_nothing() {
    let h = harness().await;
    let stage = h.stage("prod", "tag:v1", 10).await;
    succeeded(h.deploy(&stage, "v1", &digest(1), Trigger::Poll).await);
    assert_eq!(
        h.deploy(&stage, "v1", &digest(1), Trigger::Manual).await,
        DeployOutcome::Unchanged
    );
    assert_eq!(
        h.store.list_deployments(Some(stage.id), 10).await.unwrap().len(),
        1
    );
}

#[tokio::test]
async fn a_container_that_exits_fails_the_deploy_and_the_old_one_keeps_serving() {
    let h = harness().await;
    let stage = h.stage("prod", "tag:v1", 10).await;
    let good = succeeded(h.deploy(&stage, "v1", &digest(1), Trigger::Poll).await);
    let good_id = good.instance_id.expect("an instance");
    h.engine.behave(&digest(2), Behaviour::ExitsAtOnce);

    let bad = failed(h.deploy(&stage, "v1", &digest(2), Trigger::Poll).await);
    assert!(
        bad.error
            .as_deref()
            .is_some_and(|e| e.contains("exited with code 1")),
        "{bad:?}"
    );
    let bad_instance = h.instance(bad.instance_id.expect("an instance")).await;
    assert_eq!(bad_instance.status, InstanceStatus::Failed);
    assert!(
        bad_instance.container_id.is_some(),
        "the container is kept for its logs"
    );
    assert_eq!(h.current(&stage).await, Some(good_id));
    assert_eq!(h.instance(good_id).await.status, InstanceStatus::Running);
    assert!(
        h.store
            .is_failed_digest(stage.id, digest(2).as_str())
            .await
            .unwrap()
    );
    assert_eq!(h.deployer_errors().await, 1);
    assert_eq!(h.routes.load().len(), 0, "no base_domain, so nothing is routed");

    // A manual deploy of the same digest lifts the skip (and fails again here).
    h.deploy(&stage, "v1", &digest(2), Trigger::Manual).await;
    assert_eq!(h.deployer_errors().await, 2);
}

#[tokio::test]
async fn an_unhealthy_image_or_an_unpullable_one_fails_the_deploy() {
    let h = harness().await;
    let stage = h.stage("prod", "tag:v1", 10).await;
    h.engine.behave(&digest(3), Behaviour::Unhealthy);
    let bad = failed(h.deploy(&stage, "v1", &digest(3), Trigger::Manual).await);
    assert!(
        bad.error.as_deref().is_some_and(|e| e.contains("unhealthy")),
        "{bad:?}"
    );
    h.engine.lock().unpullable.push(digest(4).to_string());
    let bad = failed(h.deploy(&stage, "v1", &digest(4), Trigger::Manual).await);
    assert!(
        bad.error.as_deref().is_some_and(|e| e.contains("pulling")),
        "{bad:?}"
    );
    assert_eq!(h.current(&stage).await, None);
    assert_eq!(h.deployer_errors().await, 2);
}

#[tokio::test]
async fn a_rollback_restarts_the_previous_instance_or_recreates_it() {
    let h = harness().await;
    let stage = h.stage("prod", "tag:v1", 10).await;
    let err = h.deployer.rollback(stage.id, None).await.unwrap_err();
    assert!(
        matches!(
            &err,
            DeployError::Conflict(ConflictReason::NothingToRollBack { .. })
        ),
        "{err:#}"
    );
    let v1 = succeeded(h.deploy(&stage, "v1", &digest(1), Trigger::Poll).await);
    let v2 = succeeded(h.deploy(&stage, "v1", &digest(2), Trigger::Poll).await);
    let (v1_id, v2_id) = (v1.instance_id.unwrap(), v2.instance_id.unwrap());

    let back = succeeded(h.deployer.rollback(stage.id, Some("bob".into())).await.unwrap());
    assert_eq!((back.trigger, back.instance_id), (Trigger::Rollback, Some(v1_id)));
    assert_eq!(h.current(&stage).await, Some(v1_id));
    assert_eq!(h.instance(v1_id).await.status, InstanceStatus::Running);
    assert_eq!(h.instance(v2_id).await.status, InstanceStatus::Stopped);

    // v2's container disappears: rolling back recreates it from its digest.
    h.engine.forget(&h.instance(v2_id).await.container_id.unwrap());
    let again = succeeded(h.deployer.rollback(stage.id, None).await.unwrap());
    let recreated = again.instance_id.unwrap();
    assert!(recreated != v1_id && recreated != v2_id);
    assert_eq!(
        h.instance(recreated).await.image_digest.as_deref(),
        Some(digest(2).as_str())
    );
    assert_eq!(h.instance(v2_id).await.status, InstanceStatus::Missing);
    assert_eq!(h.current(&stage).await, Some(recreated));
}

#[tokio::test]
async fn a_per_tag_sync_gives_each_tag_an_instance_and_stops_vanished_tags() {
    let h = harness().await;
    let mut patch = serde_json::Map::new();
    patch.insert("base_domain".into(), "example.test".into());
    h.settings.update(&patch).await.expect("base_domain set");
    let stage = h.stage("preview", "glob:pr-*", 10).await;
    let tags = vec![
        ("pr-1".to_owned(), digest(1)),
        ("pr-2".to_owned(), digest(2)),
        ("main".to_owned(), digest(9)),
    ];
    h.deployer
        .sync_per_tag(stage.id, tags, Trigger::Poll)
        .await
        .expect("the sync runs");
    let instances = h.deployer.stage_instances(stage.id).await.unwrap();
    let mut hosts: Vec<_> = instances.iter().filter_map(|i| i.hostname.clone()).collect();
    hosts.sort();
    assert_eq!(
        hosts,
        vec!["pr-1.preview.shop.example.test", "pr-2.preview.shop.example.test"]
    );
    assert!(instances.iter().all(|i| i.status == InstanceStatus::Running));
    assert_eq!(h.routes.load().len(), 2);

    // pr-1 disappears, pr-2 gets a new digest.
    let tags = vec![("pr-2".to_owned(), digest(3))];
    h.deployer
        .sync_per_tag(stage.id, tags, Trigger::Poll)
        .await
        .unwrap();
    let instances = h.deployer.stage_instances(stage.id).await.unwrap();
    let running: Vec<_> = instances
        .iter()
        .filter(|i| i.status == InstanceStatus::Running)
        .map(|i| (i.image_tag.as_str(), i.image_digest.clone()))
        .collect();
    assert_eq!(running, vec![("pr-2", Some(digest(3).to_string()))]);
    let routes = h.routes.load();
    assert_eq!(routes.len(), 1);
    assert!(routes.lookup("pr-2.preview.shop.example.test").is_some());
    // The sync is idempotent.
    let tags = vec![("pr-2".to_owned(), digest(3))];
    h.deployer
        .sync_per_tag(stage.id, tags, Trigger::Poll)
        .await
        .unwrap();
    assert_eq!(
        h.deployer.stage_instances(stage.id).await.unwrap().len(),
        instances.len()
    );
}

#[tokio::test]
async fn a_per_tag_stage_runs_at_most_max_instances() {
    let h = harness().await;
    let stage = h.stage("preview", "regex:pr-\\d+", 2).await;
    let tags: Vec<_> = (1..=3).map(|n| (format!("pr-{n}"), digest(n))).collect();
    h.deployer
        .sync_per_tag(stage.id, tags.clone(), Trigger::Poll)
        .await
        .unwrap();
    let instances = h.deployer.stage_instances(stage.id).await.unwrap();
    let running: Vec<_> = instances
        .iter()
        .filter(|i| i.status == InstanceStatus::Running)
        .map(|i| i.image_tag.as_str())
        .collect();
    assert_eq!(running, vec!["pr-3", "pr-2"]);
    // A second sync neither brings pr-1 back nor evicts another.
    h.deployer
        .sync_per_tag(stage.id, tags, Trigger::Poll)
        .await
        .unwrap();
    assert_eq!(h.deployer.stage_instances(stage.id).await.unwrap().len(), 3);
}

#[tokio::test]
async fn syncing_a_single_stage_per_tag_is_refused() {
    let h = harness().await;
    let stage = h.stage("prod", "tag:v1", 10).await;
    let err = h
        .deployer
        .sync_per_tag(stage.id, vec![], Trigger::Poll)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        DeployError::Conflict(ConflictReason::NotPerTag { .. })
    ));
}

#[tokio::test]
async fn instance_actions_stop_start_and_remove_with_the_current_one_protected() {
    let h = harness().await;
    let stage = h.stage("prod", "tag:v1", 10).await;
    let id = succeeded(h.deploy(&stage, "v1", &digest(1), Trigger::Poll).await)
        .instance_id
        .unwrap();
    let err = h.deployer.remove_instance(id, Some("bob")).await.unwrap_err();
    assert!(matches!(
        err,
        DeployError::Conflict(ConflictReason::InstanceRouted { .. })
    ));

    let stopped = h.deployer.stop_instance(id, Some("bob")).await.unwrap();
    assert_eq!(stopped.status, InstanceStatus::Stopped);
    let started = h.deployer.start_instance(id, Some("bob")).await.unwrap();
    assert_eq!(started.status, InstanceStatus::Running);
    let restarted = h.deployer.restart_instance(id, None).await.unwrap();
    assert_eq!(restarted.status, InstanceStatus::Running);

    h.deployer.stop_instance(id, None).await.unwrap();
    // A container already gone from Docker is not an error.
    h.engine.forget(&stopped.container_id.clone().unwrap());
    h.deployer.remove_instance(id, Some("bob")).await.unwrap();
    assert!(matches!(
        h.store.get_instance(id).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(h.current(&stage).await, None);
    let err = h.deployer.stop_instance(id, None).await.unwrap_err();
    assert!(matches!(err, DeployError::NotFound(Missing::Instance(i)) if i == id));
}

#[tokio::test]
async fn starting_an_instance_whose_container_is_gone_marks_it_missing() {
    let h = harness().await;
    let stage = h.stage("prod", "tag:v1", 10).await;
    let id = succeeded(h.deploy(&stage, "v1", &digest(1), Trigger::Poll).await)
        .instance_id
        .unwrap();
    h.deployer.stop_instance(id, None).await.unwrap();
    h.engine.forget(&h.instance(id).await.container_id.unwrap());
    let err = h.deployer.start_instance(id, None).await.unwrap_err();
    assert!(matches!(
        err,
        DeployError::Conflict(ConflictReason::ContainerGone(_))
    ));
    assert_eq!(h.instance(id).await.status, InstanceStatus::Missing);
}

#[tokio::test]
async fn of_targets_queued_behind_a_running_deploy_only_the_newest_runs() {
    let h = harness().await;
    let new = NewStage {
        tag_policy: TagPolicy::parse("tag:v1").expect("a policy"),
        container: ContainerSpec {
            // Long enough for the other requests to queue behind this deploy.
            min_ready_seconds: 1,
            ..Default::default()
        },
        ..new_stage("prod")
    };
    let stage = h
        .store
        .insert_stage(h.project.id, &new, Utc::now())
        .await
        .unwrap();
    let request = |n: u8| DeployRequest {
        tag: "v1".into(),
        digest: Some(digest(n)),
        trigger: Trigger::Poll,
        actor: None,
    };
    let spawn = |n: u8| {
        let deployer = h.deployer.clone();
        let request = request(n);
        tokio::spawn(async move { deployer.deploy(stage.id, request).await })
    };
    let first = spawn(1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = spawn(2);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let third = spawn(3);
    let outcomes = [first, second, third];
    let mut results = Vec::new();
    for outcome in outcomes {
        results.push(outcome.await.expect("the task ends").expect("the deploy runs"));
    }
    assert!(matches!(results[0], DeployOutcome::Succeeded(_)), "{results:?}");
    assert_eq!(results[1], DeployOutcome::Superseded);
    let last = succeeded(results[2].clone());
    assert_eq!(last.image_digest.as_deref(), Some(digest(3).as_str()));
    let current = h.current(&stage).await.expect("a current instance");
    assert_eq!(
        h.instance(current).await.image_digest.as_deref(),
        Some(digest(3).as_str())
    );
    assert_eq!(
        h.store.list_deployments(Some(stage.id), 10).await.unwrap().len(),
        2
    );
}

/// Claims an instance as the stale cleanup does: the scan's mark, then the conditional move to
/// `removing` from the status the cleanup judged.
async fn claim_like_the_stale_cleanup(store: &Store, id: i64, status: InstanceStatus) {
    let cutoff = Utc::now() + chrono::TimeDelta::days(1);
    store
        .write_stale_scan(&[], &[(id, status)], &[], cutoff, Utc::now())
        .await
        .expect("the scan's mark");
    assert!(
        store
            .begin_stale_removal(id, status, cutoff)
            .await
            .expect("the claim"),
        "the cleanup claims instance {id}"
    );
}

fn assert_being_removed(result: DeployResult<impl std::fmt::Debug>, id: i64) {
    let err = result.expect_err("the action is refused");
    assert!(
        matches!(err, DeployError::Conflict(ConflictReason::InstanceRemoving(i)) if i == id),
        "{err:#}"
    );
}

/// Two deploys: the first instance stopped (what a stale cleanup may claim), the second current.
async fn stopped_and_current(h: &Harness, stage: &Stage) -> (Instance, Instance) {
    let old = succeeded(h.deploy(stage, "v1", &digest(1), Trigger::Poll).await)
        .instance_id
        .unwrap();
    let new = succeeded(h.deploy(stage, "v1", &digest(2), Trigger::Poll).await)
        .instance_id
        .unwrap();
    let old = h.instance(old).await;
    assert_eq!(old.status, InstanceStatus::Stopped);
    (old, h.instance(new).await)
}

#[tokio::test]
async fn every_action_on_an_instance_a_cleanup_claimed_is_a_conflict_that_touches_nothing() {
    let h = harness().await;
    let stage = h.stage("prod", "tag:v1", 10).await;
    let (old, _) = stopped_and_current(&h, &stage).await;
    let container = old.container_id.clone().unwrap();
    claim_like_the_stale_cleanup(&h.store, old.id, InstanceStatus::Stopped).await;

    assert_being_removed(h.deployer.stop_instance(old.id, None).await, old.id);
    assert_being_removed(h.deployer.start_instance(old.id, None).await, old.id);
    assert_being_removed(h.deployer.restart_instance(old.id, None).await, old.id);
    assert_being_removed(h.deployer.remove_instance(old.id, None).await, old.id);
    assert_eq!(h.instance(old.id).await.status, InstanceStatus::Removing);
    assert_eq!(h.engine.state_of(&container), Some(ContainerState::Exited));
}

#[tokio::test]
async fn a_cleanup_that_claims_an_instance_while_it_starts_keeps_it() {
    let h = harness().await;
    let stage = h.stage("prod", "tag:v1", 10).await;
    let (old, _) = stopped_and_current(&h, &stage).await;
    for restart in [false, true] {
        let store = h.store.clone();
        let claim = async move {
            claim_like_the_stale_cleanup(&store, old.id, InstanceStatus::Stopped).await;
        };
        h.engine
            .before_next(if restart { "restart" } else { "start" }, claim);
        let result = if restart {
            h.deployer.restart_instance(old.id, None).await
        } else {
            h.deployer.start_instance(old.id, None).await
        };
        assert_being_removed(result, old.id);
        let now = h.instance(old.id).await;
        assert_eq!(
            (now.status, now.stale_since.is_some()),
            (InstanceStatus::Removing, true),
            "restart: {restart}"
        );
        // The cleanup gives it back (as a failed cleanup does) for the next round.
        h.store
            .update_instance_status_if(
                old.id,
                InstanceStatus::Removing,
                InstanceStatus::Stopped,
                None,
                Utc::now(),
            )
            .await
            .unwrap()
            .unwrap();
        h.deployer.stop_instance(old.id, None).await.unwrap();
    }
}

#[tokio::test]
async fn a_cleanup_that_claims_an_instance_while_it_stops_keeps_it() {
    let h = harness().await;
    let stage = h.stage("prod", "tag:v1", 10).await;
    let (old, _) = stopped_and_current(&h, &stage).await;
    // Its container is gone: the stop would record it `missing`.
    h.engine.forget(&old.container_id.clone().unwrap());
    let store = h.store.clone();
    h.engine.before_next("stop", async move {
        claim_like_the_stale_cleanup(&store, old.id, InstanceStatus::Stopped).await;
    });
    assert_being_removed(h.deployer.stop_instance(old.id, None).await, old.id);
    assert_eq!(h.instance(old.id).await.status, InstanceStatus::Removing);
}

#[tokio::test]
async fn a_rollback_to_an_instance_a_cleanup_claims_meanwhile_leaves_it_to_the_cleanup() {
    let h = harness().await;
    let stage = h.stage("prod", "tag:v1", 10).await;
    let (old, current) = stopped_and_current(&h, &stage).await;
    let container = old.container_id.clone().unwrap();
    // The rollback chose `old` and asks Docker whether its container still exists.
    let store = h.store.clone();
    h.engine.before_next("inspect", async move {
        claim_like_the_stale_cleanup(&store, old.id, InstanceStatus::Stopped).await;
    });
    assert_being_removed(h.deployer.rollback(stage.id, None).await, old.id);
    assert_eq!(h.instance(old.id).await.status, InstanceStatus::Removing);
    assert_eq!(h.engine.state_of(&container), Some(ContainerState::Exited));
    assert_eq!(h.current(&stage).await, Some(current.id));
    assert_eq!(h.instance(current.id).await.status, InstanceStatus::Running);
    assert_eq!(
        h.store.list_deployments(Some(stage.id), 10).await.unwrap().len(),
        2,
        "no rollback was recorded"
    );
}
