//! The scanner and the cleanup against a small in-memory engine and a real (temporary) store,
//! with a clock the tests move: what a scan writes and warns about, that it makes one list
//! call and nothing else, and every way a cleanup can end. The real engine and the real deploy
//! flow are exercised by `tests/it/stale.rs`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::TimeDelta;
use futures::stream::BoxStream;

use super::cleanup::CleanupError;
use super::*;
use crate::clock::{Clock, OffsetClock};
use crate::docker::DockerError;
use crate::docker::engine::{
    ContainerDetails, ContainerState, ContainerSummary, CreateContainer, EngineEvent, LogLine, PullAuth,
    labels,
};
use crate::domain::event::{Event, EventQuery, Severity};
use crate::domain::instance::NewInstance;
use crate::domain::project::Project;
use crate::domain::stage::Stage;
use crate::store::testing::{shop_prod, temp_store};

/// Containers in a map, call counters, and switches to make calls fail.
#[derive(Debug, Default)]
struct FakeEngine {
    containers: Mutex<BTreeMap<String, ContainerSummary>>,
    calls: Mutex<BTreeMap<&'static str, u64>>,
    down: Mutex<bool>,
    fail_remove: Mutex<bool>,
    images_in_use: Mutex<bool>,
}

impl FakeEngine {
    fn count(&self, call: &'static str) -> Result<(), DockerError> {
        *self.calls.lock().unwrap().entry(call).or_default() += 1;
        if *self.down.lock().unwrap() {
            return Err(DockerError::Unavailable {
                message: "the fake engine is down".into(),
            });
        }
        Ok(())
    }

    fn add(&self, id: &str, installation: &str, instance: i64, state: ContainerState) {
        let container = ContainerSummary {
            id: id.to_owned(),
            name: format!("dw-shop-prod-{instance}"),
            labels: BTreeMap::from([
                (labels::MANAGED.to_owned(), "true".to_owned()),
                (labels::INSTALLATION.to_owned(), installation.to_owned()),
                (labels::INSTANCE.to_owned(), instance.to_string()),
            ]),
            state,
            exit_code: (state == ContainerState::Exited).then_some(0),
            host_port: None,
            image_id: format!("sha256:image-of-{id}"),
        };
        self.containers.lock().unwrap().insert(id.to_owned(), container);
    }

    fn set_state(&self, id: &str, state: ContainerState) {
        if let Some(c) = self.containers.lock().unwrap().get_mut(id) {
            c.state = state;
        }
    }

    fn has(&self, id: &str) -> bool {
        self.containers.lock().unwrap().contains_key(id)
    }

    fn calls(&self) -> BTreeMap<&'static str, u64> {
        self.calls.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl ContainerEngine for FakeEngine {
    async fn ping(&self, _timeout: Duration) -> Result<(), DockerError> {
        self.count("ping")
    }

    async fn pull(&self, _image: &str, _auth: Option<&PullAuth>) -> Result<(), DockerError> {
        self.count("pull")
    }

    async fn create(&self, _spec: &CreateContainer) -> Result<String, DockerError> {
        self.count("create")?;
        Err(DockerError::Conflict {
            message: "the stale tests create no containers".into(),
        })
    }

    async fn start(&self, id: &str) -> Result<(), DockerError> {
        self.count("start")?;
        self.set_state(id, ContainerState::Running);
        Ok(())
    }

    async fn stop(&self, id: &str, _grace: Duration) -> Result<(), DockerError> {
        self.count("stop")?;
        if !self.has(id) {
            return Err(DockerError::NotFound);
        }
        self.set_state(id, ContainerState::Exited);
        Ok(())
    }

    async fn restart(&self, id: &str, _grace: Duration) -> Result<(), DockerError> {
        self.count("restart")?;
        self.set_state(id, ContainerState::Running);
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<(), DockerError> {
        self.count("remove")?;
        if *self.fail_remove.lock().unwrap() {
            return Err(DockerError::Conflict {
                message: "removal of container is already in progress".into(),
            });
        }
        self.containers
            .lock()
            .unwrap()
            .remove(id)
            .map(|_| ())
            .ok_or(DockerError::NotFound)
    }

    async fn inspect(&self, id: &str) -> Result<ContainerDetails, DockerError> {
        self.count("inspect")?;
        let c = self
            .containers
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .ok_or(DockerError::NotFound)?;
        Ok(ContainerDetails {
            id: c.id,
            name: c.name,
            labels: c.labels,
            state: c.state,
            exit_code: c.exit_code,
            oom_killed: false,
            health: None,
            host_port: None,
            started_at: None,
            finished_at: None,
            image_id: c.image_id,
        })
    }

    async fn list_managed(&self, installation_id: &str) -> Result<Vec<ContainerSummary>, DockerError> {
        self.count("list")?;
        Ok(self
            .containers
            .lock()
            .unwrap()
            .values()
            .filter(|c| c.labels.get(labels::INSTALLATION).map(String::as_str) == Some(installation_id))
            .cloned()
            .collect())
    }

    async fn logs(&self, _id: &str, _tail: u32) -> Result<Vec<LogLine>, DockerError> {
        self.count("logs")?;
        Ok(Vec::new())
    }

    async fn remove_image_if_unused(&self, _image_id: &str) -> Result<bool, DockerError> {
        self.count("remove_image")?;
        Ok(!*self.images_in_use.lock().unwrap())
    }

    fn events(&self, _installation_id: &str) -> BoxStream<'static, Result<EngineEvent, DockerError>> {
        Box::pin(futures::stream::empty())
    }

    fn api_calls(&self) -> BTreeMap<&'static str, u64> {
        self.calls()
    }
}

struct Harness {
    scanner: StaleScanner,
    deps: StaleDeps,
    engine: Arc<FakeEngine>,
    clock: Arc<OffsetClock>,
    project: Project,
    stage: Stage,
    _dir: tempfile::TempDir,
}

async fn harness() -> Harness {
    let (store, dir) = temp_store().await;
    let clock = Arc::new(OffsetClock::new());
    let shared: SharedClock = clock.clone();
    let metrics = Arc::new(Metrics::new());
    let bus = EventBus::new(store.clone(), shared.clone(), metrics.clone());
    let settings = LiveSettings::load(store.clone(), shared.clone()).await.unwrap();
    let routes = RouteTable::new(store.clone(), settings.clone());
    let installation_id: Arc<str> = store.installation_id().await.unwrap().into();
    let engine = Arc::new(FakeEngine::default());
    let (project, stage) = shop_prod(&store).await;
    let deps = StaleDeps {
        store,
        bus,
        engine: engine.clone(),
        settings,
        routes,
        clock: shared,
        metrics,
        installation_id,
    };
    Harness {
        scanner: StaleScanner::new(deps.clone(), StaleOptions::default()),
        deps,
        engine,
        clock,
        project,
        stage,
        _dir: dir,
    }
}

impl Harness {
    fn store(&self) -> &Store {
        &self.deps.store
    }

    /// An instance that ran until now and whose container is in `state` (none with `None`).
    async fn instance(
        &self,
        tag: &str,
        status: InstanceStatus,
        container: Option<ContainerState>,
    ) -> Instance {
        let now = self.clock.now();
        let instance = self
            .store()
            .insert_instance(&NewInstance {
                project_id: self.project.id,
                stage_id: self.stage.id,
                image_tag: tag.into(),
                image_digest: None,
                status: InstanceStatus::Pending,
                hostname: None,
                created_at: now,
                config_revision: 1,
            })
            .await
            .unwrap();
        let container_id = format!("container-{}", instance.id);
        self.store()
            .set_instance_container(
                instance.id,
                &container_id,
                &format!("dw-shop-prod-{}", instance.id),
                None,
            )
            .await
            .unwrap();
        self.store().mark_instance_alive(instance.id, now).await.unwrap();
        if status != InstanceStatus::Running {
            self.store()
                .update_instance_status(instance.id, status, Some(0), now)
                .await
                .unwrap();
        }
        if let Some(state) = container {
            self.engine
                .add(&container_id, &self.deps.installation_id, instance.id, state);
        }
        self.store().get_instance(instance.id).await.unwrap()
    }

    fn advance_days(&self, days: i64) {
        self.clock.advance(TimeDelta::days(days) + TimeDelta::seconds(1));
    }

    async fn stale_warnings(&self) -> Vec<Event> {
        let query = EventQuery {
            severities: vec![Severity::Warn],
            sources: vec![Source::Stale],
            ..Default::default()
        };
        self.store().list_events(&query).await.unwrap().0
    }

    async fn events(&self, severity: Severity) -> Vec<Event> {
        let query = EventQuery {
            severities: vec![severity],
            sources: vec![Source::Stale],
            ..Default::default()
        };
        self.store().list_events(&query).await.unwrap().0
    }

    async fn status(&self, id: i64) -> Option<InstanceStatus> {
        self.store().get_instance(id).await.ok().map(|i| i.status)
    }
}

#[tokio::test]
async fn a_scan_makes_one_list_call_and_no_other_engine_call() {
    let h = harness().await;
    for n in 0..5 {
        h.instance(
            &format!("v{n}"),
            InstanceStatus::Stopped,
            Some(ContainerState::Exited),
        )
        .await;
    }
    h.instance("live", InstanceStatus::Running, Some(ContainerState::Running))
        .await;
    h.advance_days(8);
    let report = h.scanner.scan().await.unwrap();
    assert_eq!(h.engine.calls(), BTreeMap::from([("list", 1)]));
    assert_eq!((report.containers, report.instances, report.alive), (6, 6, 1));
    assert_eq!(report.newly_stale.len(), 5);
    assert_eq!(report.stale, 5);
    assert!(
        h.deps
            .metrics
            .encode()
            .contains("docker_watcher_stale_instances 5")
    );
}

#[tokio::test]
async fn an_instance_that_becomes_stale_is_warned_about_once_with_its_details() {
    let h = harness().await;
    let old = h
        .instance("v1", InstanceStatus::Stopped, Some(ContainerState::Exited))
        .await;
    h.scanner.scan().await.unwrap();
    assert!(h.stale_warnings().await.is_empty(), "not stale yet");
    assert!(h.scanner.list().await.unwrap().items.is_empty());

    h.advance_days(7);
    let report = h.scanner.scan().await.unwrap();
    assert_eq!(report.newly_stale, vec![old.id]);
    let warnings = h.stale_warnings().await;
    assert_eq!(warnings.len(), 1);
    let warning = &warnings[0];
    assert_eq!(
        (warning.project_id, warning.stage_id, warning.instance_id),
        (Some(h.project.id), Some(h.stage.id), Some(old.id))
    );
    for word in ["shop", "prod", "v1", "7 days"] {
        assert!(warning.message.contains(word), "{word} in {}", warning.message);
    }
    assert_eq!(warning.details["days_stale"], 7);
    assert_eq!(warning.details["image_tag"], "v1");

    let list = h.scanner.list().await.unwrap();
    assert_eq!(list.threshold_days, 7);
    assert_eq!(list.scanned_at, report.scanned_at);
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].days_stale, 7);
    assert!(list.items[0].instance.stale_since.is_some());

    h.advance_days(3);
    h.scanner.scan().await.unwrap();
    assert_eq!(h.stale_warnings().await.len(), 1, "no second warning");
    assert_eq!(h.scanner.list().await.unwrap().items[0].days_stale, 10);
}

#[tokio::test]
async fn an_instance_that_comes_back_and_goes_stale_again_gets_a_new_warning() {
    let h = harness().await;
    let instance = h
        .instance("v1", InstanceStatus::Stopped, Some(ContainerState::Exited))
        .await;
    let container = instance.container_id.clone().unwrap();
    h.advance_days(8);
    h.scanner.scan().await.unwrap();
    assert_eq!(h.stale_warnings().await.len(), 1);

    h.engine.set_state(&container, ContainerState::Running);
    let report = h.scanner.scan().await.unwrap();
    assert_eq!((report.alive, report.stale), (1, 0));
    let alive = h.store().get_instance(instance.id).await.unwrap();
    assert_eq!((alive.status, alive.stale_since), (InstanceStatus::Running, None));
    assert_eq!(alive.last_alive_at, report.scanned_at);

    h.engine.set_state(&container, ContainerState::Exited);
    h.scanner.scan().await.unwrap();
    assert_eq!(h.status(instance.id).await, Some(InstanceStatus::Stopped));
    h.advance_days(8);
    h.scanner.scan().await.unwrap();
    assert_eq!(h.stale_warnings().await.len(), 2);
}

#[tokio::test]
async fn a_container_gone_from_docker_makes_its_instance_missing() {
    let h = harness().await;
    let instance = h.instance("v1", InstanceStatus::Stopped, None).await;
    h.scanner.scan().await.unwrap();
    assert_eq!(h.status(instance.id).await, Some(InstanceStatus::Missing));
    h.advance_days(8);
    let report = h.scanner.scan().await.unwrap();
    assert_eq!(report.newly_stale, vec![instance.id]);
}

#[tokio::test]
async fn a_lowered_threshold_applies_to_the_next_scan_and_a_raised_one_to_the_list_at_once() {
    let h = harness().await;
    let instance = h
        .instance("v1", InstanceStatus::Stopped, Some(ContainerState::Exited))
        .await;
    h.advance_days(2);
    assert!(h.scanner.scan().await.unwrap().newly_stale.is_empty());
    let patch = serde_json::json!({"stale_threshold_days": 1});
    h.deps.settings.update(patch.as_object().unwrap()).await.unwrap();
    assert_eq!(h.scanner.scan().await.unwrap().newly_stale, vec![instance.id]);

    let patch = serde_json::json!({"stale_threshold_days": 30});
    h.deps.settings.update(patch.as_object().unwrap()).await.unwrap();
    assert!(h.scanner.list().await.unwrap().items.is_empty());
    let report = h.scanner.scan().await.unwrap();
    assert_eq!(report.unmarked, 1);
    assert_eq!(
        h.store().get_instance(instance.id).await.unwrap().stale_since,
        None
    );
}

#[tokio::test]
async fn a_scan_without_the_engine_writes_nothing() {
    let h = harness().await;
    let instance = h.instance("v1", InstanceStatus::Stopped, None).await;
    *h.engine.down.lock().unwrap() = true;
    let err = h.scanner.scan().await.unwrap_err();
    assert!(matches!(err, ScanError::Unavailable(_)), "{err:?}");
    assert_eq!(h.status(instance.id).await, Some(InstanceStatus::Stopped));
    assert_eq!(h.scanner.scanned_at(), None);
}

#[tokio::test]
async fn a_cleanup_removes_the_container_its_image_and_the_row() {
    let h = harness().await;
    let instance = h
        .instance("v1", InstanceStatus::Stopped, Some(ContainerState::Exited))
        .await;
    let container = instance.container_id.clone().unwrap();
    h.advance_days(8);
    h.scanner.scan().await.unwrap();
    let removed = h.scanner.cleanup(instance.id, Some("alice")).await.unwrap();
    assert_eq!(removed.instance.id, instance.id);
    assert_eq!(removed.days_stale, 8);
    assert!(!h.engine.has(&container));
    assert_eq!(h.engine.calls().get("remove_image"), Some(&1));
    assert_eq!(h.status(instance.id).await, None);
    let infos = h.events(Severity::Info).await;
    let info = infos
        .iter()
        .find(|e| e.instance_id == Some(instance.id))
        .expect("a recorded info");
    assert_eq!(info.details["container"], "removed");
    assert_eq!(info.details["image"], "removed");
    assert_eq!(info.details["actor"], "alice");
}

#[tokio::test]
async fn a_cleanup_of_a_container_already_gone_deletes_the_row() {
    let h = harness().await;
    let instance = h
        .instance("v1", InstanceStatus::Stopped, Some(ContainerState::Exited))
        .await;
    h.advance_days(8);
    h.scanner.scan().await.unwrap();
    h.engine.containers.lock().unwrap().clear();
    h.scanner.cleanup(instance.id, None).await.unwrap();
    assert_eq!(h.status(instance.id).await, None);
    assert!(h.events(Severity::Error).await.is_empty());
}

#[tokio::test]
async fn a_failed_cleanup_puts_the_status_back_and_says_so() {
    let h = harness().await;
    let instance = h
        .instance("v1", InstanceStatus::Failed, Some(ContainerState::Exited))
        .await;
    h.advance_days(8);
    h.scanner.scan().await.unwrap();
    *h.engine.fail_remove.lock().unwrap() = true;
    let err = h.scanner.cleanup(instance.id, None).await.unwrap_err();
    assert!(matches!(err, CleanupError::Failed(_)), "{err:?}");
    let back = h.store().get_instance(instance.id).await.unwrap();
    assert_eq!(back.status, InstanceStatus::Failed);
    assert!(
        back.stale_since.is_some(),
        "still marked, so nobody is warned twice"
    );
    let errors = h.events(Severity::Error).await;
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].instance_id, Some(instance.id));

    *h.engine.fail_remove.lock().unwrap() = false;
    h.scanner.cleanup(instance.id, None).await.unwrap();
    assert_eq!(h.stale_warnings().await.len(), 1);
}

#[tokio::test]
async fn only_stale_instances_are_cleaned_up() {
    let h = harness().await;
    let running = h
        .instance("live", InstanceStatus::Running, Some(ContainerState::Running))
        .await;
    let recent = h
        .instance("v1", InstanceStatus::Stopped, Some(ContainerState::Exited))
        .await;
    let not_stale = |r: Result<StaleItem, CleanupError>| matches!(r, Err(CleanupError::NotStale(_)));
    assert!(not_stale(h.scanner.cleanup(running.id, None).await));
    assert!(not_stale(h.scanner.cleanup(recent.id, None).await));
    h.advance_days(8);
    let unscanned = h.scanner.cleanup(recent.id, None).await;
    assert!(
        matches!(&unscanned, Err(CleanupError::NotStale(m)) if m.contains("scan")),
        "{unscanned:?}"
    );
    assert!(matches!(
        h.scanner.cleanup(9999, None).await,
        Err(CleanupError::NotFound(9999))
    ));
    assert_eq!(h.status(running.id).await, Some(InstanceStatus::Running));
    assert_eq!(h.status(recent.id).await, Some(InstanceStatus::Stopped));
    assert!(!h.engine.calls().contains_key("remove"));
}

#[tokio::test]
async fn a_container_found_running_at_cleanup_is_marked_alive_not_removed() {
    let h = harness().await;
    let instance = h
        .instance("v1", InstanceStatus::Stopped, Some(ContainerState::Exited))
        .await;
    h.advance_days(8);
    h.scanner.scan().await.unwrap();
    h.engine
        .set_state(instance.container_id.as_deref().unwrap(), ContainerState::Running);
    let err = h.scanner.cleanup(instance.id, None).await.unwrap_err();
    assert!(matches!(err, CleanupError::NotStale(_)), "{err:?}");
    let alive = h.store().get_instance(instance.id).await.unwrap();
    assert_eq!((alive.status, alive.stale_since), (InstanceStatus::Running, None));
    assert!(h.engine.has(instance.container_id.as_deref().unwrap()));
}

#[tokio::test]
async fn concurrent_cleanups_of_one_instance_remove_it_once() {
    let h = harness().await;
    let instance = h
        .instance("v1", InstanceStatus::Stopped, Some(ContainerState::Exited))
        .await;
    h.advance_days(8);
    h.scanner.scan().await.unwrap();
    let (a, b) = tokio::join!(
        h.scanner.cleanup(instance.id, None),
        h.scanner.cleanup(instance.id, None)
    );
    let outcomes = [a, b];
    assert_eq!(outcomes.iter().filter(|o| o.is_ok()).count(), 1, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .any(|o| matches!(o, Err(CleanupError::Removing(_) | CleanupError::NotFound(_)))),
        "{outcomes:?}"
    );
    assert_eq!(h.engine.calls().get("remove"), Some(&1));
}

#[tokio::test]
async fn a_bulk_cleanup_removes_the_stale_list_skips_what_is_being_removed_and_reports_failures() {
    let h = harness().await;
    let a = h
        .instance("a", InstanceStatus::Stopped, Some(ContainerState::Exited))
        .await;
    let b = h
        .instance("b", InstanceStatus::Failed, Some(ContainerState::Exited))
        .await;
    let busy = h
        .instance("busy", InstanceStatus::Stopped, Some(ContainerState::Exited))
        .await;
    h.advance_days(8);
    let live = h
        .instance("live", InstanceStatus::Running, Some(ContainerState::Running))
        .await;
    h.scanner.scan().await.unwrap();
    h.store()
        .update_instance_status(busy.id, InstanceStatus::Removing, None, h.clock.now())
        .await
        .unwrap();

    let dry = h.scanner.cleanup_all(true, Some("root")).await.unwrap();
    assert_eq!((dry.removed, dry.skipped), (vec![a.id, b.id], vec![busy.id]));
    assert!(dry.failed.is_empty());
    assert_eq!(h.engine.calls().get("remove"), None, "a dry run removes nothing");

    let done = h.scanner.cleanup_all(false, Some("root")).await.unwrap();
    assert_eq!((done.removed, done.skipped), (vec![a.id, b.id], vec![busy.id]));
    assert_eq!(h.status(live.id).await, Some(InstanceStatus::Running));
    assert_eq!(h.status(busy.id).await, Some(InstanceStatus::Removing));

    let c = h
        .instance("c", InstanceStatus::Stopped, Some(ContainerState::Exited))
        .await;
    h.advance_days(8);
    h.scanner.scan().await.unwrap();
    *h.engine.fail_remove.lock().unwrap() = true;
    let failed = h.scanner.cleanup_all(false, None).await.unwrap();
    assert_eq!(failed.failed.len(), 1);
    assert_eq!(failed.failed[0].0, c.id);
    assert_eq!(h.status(c.id).await, Some(InstanceStatus::Stopped));
}

#[tokio::test]
async fn the_job_scans_once_the_first_reconcile_is_done_and_on_demand() {
    let h = harness().await;
    let instance = h
        .instance("v1", InstanceStatus::Stopped, Some(ContainerState::Exited))
        .await;
    h.advance_days(8);
    let tasks = TaskTracker::new();
    let shutdown = CancellationToken::new();
    let scheduler = Scheduler::new(tasks.clone(), h.deps.clock.clone(), shutdown.clone());
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
    let handle = start(
        h.scanner.clone(),
        &scheduler,
        async move {
            let _ = ready_rx.await;
        },
        &tasks,
        shutdown.clone(),
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(h.engine.calls().get("list"), None, "no scan before the reconcile");
    ready_tx.send(()).unwrap();
    for _ in 0..100 {
        if h.scanner.scanned_at().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(h.scanner.scanned_at().is_some(), "the startup scan ran");
    assert_eq!(h.stale_warnings().await.len(), 1);

    let report = handle.scan_now().await.unwrap();
    assert_eq!(report.stale, 1);
    assert!(report.newly_stale.is_empty());
    assert_eq!(h.engine.calls().get("list"), Some(&2));

    *h.engine.down.lock().unwrap() = true;
    assert!(matches!(handle.scan_now().await, Err(ScanError::Unavailable(_))));
    assert_eq!(h.status(instance.id).await, Some(InstanceStatus::Stopped));

    shutdown.cancel();
    tasks.close();
    tasks.wait().await;
    assert!(matches!(handle.scan_now().await, Err(ScanError::Stopped)));
}
