//! Sync's executor and listener against the in-memory [`FakeEngine`] and a real (temporary)
//! store: what reconcile, recovery and each kind of event write, which events they publish,
//! and how the listener survives the engine going away. The real engine is exercised by
//! `tests/it/sync.rs`.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::fake::FakeEngine;
use super::*;
use crate::clock::SystemClock;
use crate::docker::engine::{ContainerState, EngineEventKind};
use crate::domain::event::{Event, EventQuery, Severity};
use crate::domain::instance::{DeploymentStatus, InstanceStatus, NewInstance, Trigger};
use crate::domain::project::Project;
use crate::domain::stage::Stage;
use crate::settings::LiveSettings;
use crate::store::testing::{shop_prod, temp_store};

struct Harness {
    deps: SyncDeps,
    lost: std::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<LostInstance>>,
    engine: Arc<FakeEngine>,
    project: Project,
    stage: Stage,
    _dir: tempfile::TempDir,
}

async fn harness() -> Harness {
    let (store, dir) = temp_store().await;
    let clock: SharedClock = Arc::new(SystemClock);
    let metrics = Arc::new(Metrics::new());
    let bus = EventBus::new(store.clone(), clock.clone(), metrics.clone());
    let settings = LiveSettings::load(store.clone(), clock.clone()).await.unwrap();
    let routes = RouteTable::new(store.clone(), settings);
    let installation_id: Arc<str> = store.installation_id().await.unwrap().into();
    let engine = Arc::new(FakeEngine::new(&installation_id));
    let (project, stage) = shop_prod(&store).await;
    let (lost, lost_rx) = tokio::sync::mpsc::unbounded_channel();
    Harness {
        lost: std::sync::Mutex::new(lost_rx),
        deps: SyncDeps {
            engine: engine.clone(),
            store,
            bus,
            routes,
            clock,
            metrics,
            installation_id,
            lost,
        },
        engine,
        project,
        stage,
        _dir: dir,
    }
}

impl Harness {
    fn store(&self) -> &Store {
        &self.deps.store
    }

    fn syncer(&self) -> Syncer {
        let deps = self.deps.clone();
        Syncer {
            engine: deps.engine,
            store: deps.store,
            bus: deps.bus,
            routes: deps.routes,
            clock: deps.clock,
            metrics: deps.metrics,
            installation_id: deps.installation_id,
            lost: deps.lost,
            writes: Default::default(),
            warned: Default::default(),
        }
    }

    /// An instance with `status` whose container `container` exists in the fake engine in
    /// `state` (or does not, with `None`).
    async fn instance(
        &self,
        status: InstanceStatus,
        container: &str,
        state: Option<(ContainerState, Option<i64>)>,
    ) -> Instance {
        let instance = self
            .store()
            .insert_instance(&NewInstance {
                project_id: self.project.id,
                stage_id: self.stage.id,
                image_tag: "v1".into(),
                image_digest: Some("sha256:aa".into()),
                status: InstanceStatus::Pending,
                hostname: None,
                created_at: self.deps.clock.now(),
                config_revision: 1,
            })
            .await
            .unwrap();
        self.store()
            .set_instance_container(
                instance.id,
                container,
                &format!("dw-shop-prod-{}", instance.id),
                Some(40000),
            )
            .await
            .unwrap();
        self.store()
            .update_instance_status(instance.id, status, None, self.deps.clock.now())
            .await
            .unwrap();
        if let Some((state, exit)) = state {
            self.engine.add(container, Some(instance.id), state, exit);
        }
        self.store().get_instance(instance.id).await.unwrap()
    }

    async fn status(&self, id: i64) -> Instance {
        self.store().get_instance(id).await.unwrap()
    }

    /// Waits (up to 3 s) until instance `id` satisfies `ready`.
    async fn wait_for(&self, id: i64, ready: impl Fn(&Instance) -> bool) -> Instance {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        loop {
            let instance = self.status(id).await;
            if ready(&instance) {
                return instance;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out; instance is {instance:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn events(&self, severity: Severity) -> Vec<Event> {
        let query = EventQuery {
            severities: vec![severity],
            sources: vec![Source::Docker],
            ..Default::default()
        };
        self.store().list_events(&query).await.unwrap().0
    }

    fn start(&self) -> (SyncHandle, TaskTracker, CancellationToken) {
        let tasks = TaskTracker::new();
        let shutdown = CancellationToken::new();
        let handle = start(self.deps.clone(), &tasks, shutdown.clone());
        (handle, tasks, shutdown)
    }
}

async fn stop(tasks: TaskTracker, shutdown: CancellationToken) {
    shutdown.cancel();
    tasks.close();
    tokio::time::timeout(Duration::from_secs(5), tasks.wait())
        .await
        .expect("the sync task ends on shutdown");
}

#[tokio::test]
async fn a_reconcile_fixes_every_status_from_one_list_call() {
    let h = harness().await;
    let crashed = h
        .instance(
            InstanceStatus::Running,
            "c1",
            Some((ContainerState::Exited, Some(137))),
        )
        .await;
    let gone = h.instance(InstanceStatus::Stopped, "c2", None).await;
    let back = h
        .instance(
            InstanceStatus::Failed,
            "c3",
            Some((ContainerState::Running, None)),
        )
        .await;
    let fine = h
        .instance(
            InstanceStatus::Stopped,
            "c4",
            Some((ContainerState::Exited, Some(0))),
        )
        .await;
    let deploying = h.instance(InstanceStatus::Deploying, "c5", None).await;
    let report = h.syncer().reconcile_locked().await.unwrap();
    assert_eq!(h.engine.calls("list"), 1);
    assert_eq!((report.containers, report.changed, report.alive), (3, 3, 1));

    let crashed = h.status(crashed.id).await;
    assert_eq!(
        (crashed.status, crashed.exit_code),
        (InstanceStatus::Failed, Some(137))
    );
    assert_eq!(h.status(gone.id).await.status, InstanceStatus::Missing);
    let back = h.status(back.id).await;
    assert_eq!(back.status, InstanceStatus::Running);
    assert!(back.last_alive_at.is_some());
    assert_eq!(h.status(fine.id).await.exit_code, Some(0));
    assert_eq!(h.status(deploying.id).await.status, InstanceStatus::Deploying);

    let warnings = h.events(Severity::Warn).await;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].instance_id, Some(crashed.id));
    assert!(
        warnings[0].message.contains("exited unexpectedly with code 137"),
        "{}",
        warnings[0].message
    );
    assert_eq!(h.deps.metrics.docker_reconciles.get(), 1);
}

#[tokio::test]
async fn a_reconcile_removes_containers_no_instance_records() {
    let h = harness().await;
    let kept = h
        .instance(
            InstanceStatus::Running,
            "c1",
            Some((ContainerState::Running, None)),
        )
        .await;
    h.engine.add("stray", Some(999), ContainerState::Running, None);
    h.engine.add("nolabel", None, ContainerState::Exited, Some(0));
    let report = h.syncer().reconcile_locked().await.unwrap();
    assert_eq!(report.removed, vec!["nolabel".to_owned(), "stray".to_owned()]);
    assert!(h.engine.container("stray").is_none() && h.engine.container("nolabel").is_none());
    assert!(h.engine.container("c1").is_some());
    assert_eq!(h.status(kept.id).await.status, InstanceStatus::Running);
    let warnings = h.events(Severity::Warn).await;
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings
            .iter()
            .all(|w| w.message.contains("no instance records it"))
    );
}

#[tokio::test]
async fn an_unexpected_non_zero_exit_fails_the_instance_with_one_warning() {
    let h = harness().await;
    let instance = h
        .instance(
            InstanceStatus::Running,
            "c1",
            Some((ContainerState::Running, None)),
        )
        .await;
    let (sync, tasks, shutdown) = h.start();
    sync.wait_reconciled().await;
    h.engine.exit("c1", 137);
    let failed = h
        .wait_for(instance.id, |i| i.status == InstanceStatus::Failed)
        .await;
    assert_eq!(failed.exit_code, Some(137));
    let warnings = h.events(Severity::Warn).await;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(
        warnings[0].details.get("exit_code"),
        Some(&serde_json::json!(137))
    );
    stop(tasks, shutdown).await;
}

#[tokio::test]
async fn a_crash_loop_is_one_warning_not_one_per_crash() {
    let h = harness().await;
    let instance = h
        .instance(
            InstanceStatus::Running,
            "c1",
            Some((ContainerState::Running, None)),
        )
        .await;
    let (sync, tasks, shutdown) = h.start();
    sync.wait_reconciled().await;
    for _ in 0..3 {
        h.engine.exit("c1", 1);
        h.wait_for(instance.id, |i| i.status == InstanceStatus::Failed)
            .await;
        h.engine.start("c1").await.unwrap();
        h.wait_for(instance.id, |i| i.status == InstanceStatus::Running)
            .await;
    }
    assert_eq!(h.events(Severity::Warn).await.len(), 1);
    stop(tasks, shutdown).await;
}

#[tokio::test]
async fn a_requested_stop_is_a_stop_without_a_warning_whatever_the_exit_code() {
    let h = harness().await;
    let instance = h
        .instance(
            InstanceStatus::Running,
            "c1",
            Some((ContainerState::Running, None)),
        )
        .await;
    let (sync, tasks, shutdown) = h.start();
    sync.wait_reconciled().await;
    // `docker stop` of a container that ignores SIGTERM: killed after the grace period.
    h.engine.emit("c1", EngineEventKind::Kill, None);
    h.engine.emit("c1", EngineEventKind::Die, Some(137));
    h.engine.emit("c1", EngineEventKind::Stop, None);
    let stopped = h
        .wait_for(instance.id, |i| i.status != InstanceStatus::Running)
        .await;
    assert_eq!(
        (stopped.status, stopped.exit_code),
        (InstanceStatus::Stopped, Some(137))
    );
    assert!(h.events(Severity::Warn).await.is_empty());
    stop(tasks, shutdown).await;
}

#[tokio::test]
async fn an_instance_marked_stopped_before_its_container_dies_raises_no_warning() {
    let h = harness().await;
    let instance = h
        .instance(
            InstanceStatus::Running,
            "c1",
            Some((ContainerState::Running, None)),
        )
        .await;
    let (sync, tasks, shutdown) = h.start();
    sync.wait_reconciled().await;
    h.store()
        .update_instance_status(instance.id, InstanceStatus::Stopped, None, h.deps.clock.now())
        .await
        .unwrap();
    h.engine.exit("c1", 143);
    let stopped = h.wait_for(instance.id, |i| i.exit_code.is_some()).await;
    assert_eq!(
        (stopped.status, stopped.exit_code),
        (InstanceStatus::Stopped, Some(143))
    );
    assert!(h.events(Severity::Warn).await.is_empty());
    stop(tasks, shutdown).await;
}

#[tokio::test]
async fn an_oom_kill_is_one_error_event_and_no_warning() {
    let h = harness().await;
    let instance = h
        .instance(
            InstanceStatus::Running,
            "c1",
            Some((ContainerState::Running, None)),
        )
        .await;
    let (sync, tasks, shutdown) = h.start();
    sync.wait_reconciled().await;
    h.engine.emit("c1", EngineEventKind::Oom, None);
    h.engine.exit("c1", 137);
    let failed = h
        .wait_for(instance.id, |i| i.status == InstanceStatus::Failed)
        .await;
    assert_eq!(failed.exit_code, Some(137));
    let errors = h.events(Severity::Error).await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].message.contains("out of memory"));
    assert!(h.events(Severity::Warn).await.is_empty());
    stop(tasks, shutdown).await;
}

impl Harness {
    /// The instances sync reported lost so far.
    fn lost(&self) -> Vec<i64> {
        let mut rx = self.lost.lock().unwrap();
        std::iter::from_fn(|| rx.try_recv().ok())
            .map(|l| {
                assert_eq!(l.stage_id, self.stage.id);
                l.instance_id
            })
            .collect()
    }
}

#[tokio::test]
async fn a_running_or_crashed_instance_whose_container_is_gone_is_reported_lost_a_stopped_one_is_not() {
    let h = harness().await;
    let running = h.instance(InstanceStatus::Running, "c1", None).await;
    let crashed = h.instance(InstanceStatus::Failed, "c2", None).await;
    let stopped = h.instance(InstanceStatus::Stopped, "c3", None).await;
    let alive = h
        .instance(
            InstanceStatus::Running,
            "c4",
            Some((ContainerState::Running, None)),
        )
        .await;
    h.syncer().reconcile_locked().await.unwrap();
    for gone in [&running, &crashed, &stopped] {
        assert_eq!(h.status(gone.id).await.status, InstanceStatus::Missing);
    }
    let mut lost = h.lost();
    lost.sort();
    assert_eq!(lost, vec![running.id, crashed.id]);

    // And from the event stream: the running container destroyed from outside.
    let (sync, tasks, shutdown) = h.start();
    sync.wait_reconciled().await;
    assert!(h.lost().is_empty(), "a second look reports nothing twice");
    h.engine.remove("c4").await.unwrap();
    h.wait_for(alive.id, |i| i.status == InstanceStatus::Missing)
        .await;
    // The report follows the status write; on a loaded machine it may come a moment later.
    let mut reported = h.lost();
    for _ in 0..100 {
        if !reported.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        reported = h.lost();
    }
    assert_eq!(reported, vec![alive.id]);
    stop(tasks, shutdown).await;
}

#[tokio::test]
async fn a_destroyed_container_makes_its_instance_missing_and_a_start_brings_it_back() {
    let h = harness().await;
    let instance = h
        .instance(
            InstanceStatus::Stopped,
            "c1",
            Some((ContainerState::Exited, Some(0))),
        )
        .await;
    let removing = h
        .instance(
            InstanceStatus::Removing,
            "c2",
            Some((ContainerState::Exited, Some(0))),
        )
        .await;
    let (sync, tasks, shutdown) = h.start();
    sync.wait_reconciled().await;
    let before = h.status(instance.id).await;
    h.engine.start("c1").await.unwrap();
    let alive = h
        .wait_for(instance.id, |i| i.status == InstanceStatus::Running)
        .await;
    assert!(alive.last_alive_at > before.last_alive_at);
    h.engine.stop("c1", Duration::ZERO).await.unwrap();
    h.wait_for(instance.id, |i| i.status == InstanceStatus::Stopped)
        .await;
    h.engine.remove("c1").await.unwrap();
    h.engine.remove("c2").await.unwrap();
    h.wait_for(instance.id, |i| i.status == InstanceStatus::Missing)
        .await;
    // A cleanup owns an instance being removed.
    assert_eq!(h.status(removing.id).await.status, InstanceStatus::Removing);
    assert!(h.events(Severity::Warn).await.is_empty());
    assert!(h.lost().is_empty(), "a stopped instance does not heal");
    stop(tasks, shutdown).await;
}

#[tokio::test]
async fn events_of_a_container_the_instance_no_longer_records_are_ignored() {
    let h = harness().await;
    let instance = h
        .instance(
            InstanceStatus::Running,
            "c1",
            Some((ContainerState::Running, None)),
        )
        .await;
    h.engine
        .add("old", Some(instance.id), ContainerState::Running, None);
    let (sync, tasks, shutdown) = h.start();
    sync.wait_reconciled().await;
    h.engine.exit("old", 1);
    h.engine.emit("c1", EngineEventKind::Start, None);
    let alive = h.wait_for(instance.id, |i| i.last_alive_at.is_some()).await;
    tokio::time::sleep(DIE_SETTLE * 2).await;
    assert_eq!(
        h.status(instance.id).await.status,
        InstanceStatus::Running,
        "{alive:?}"
    );
    stop(tasks, shutdown).await;
}

#[tokio::test]
async fn a_lost_engine_is_one_error_and_its_return_one_info_and_a_reconcile() {
    let h = harness().await;
    let instance = h
        .instance(
            InstanceStatus::Running,
            "c1",
            Some((ContainerState::Running, None)),
        )
        .await;
    let (sync, tasks, shutdown) = h.start();
    sync.wait_reconciled().await;
    assert!(sync.is_connected());
    h.engine.go_down();
    // Long enough for the first retries (1 s, then 2 s) to fail too.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(!sync.is_connected());
    assert_eq!(h.events(Severity::Error).await.len(), 1);
    // What changed while nobody listened is caught by the reconcile on reconnect.
    h.engine
        .add("c1", Some(instance.id), ContainerState::Exited, Some(2));
    h.engine.come_up();
    let failed = tokio::time::timeout(
        Duration::from_secs(8),
        h.wait_for_long(instance.id, |i| i.status == InstanceStatus::Failed),
    )
    .await
    .expect("reconciled after the engine came back");
    assert_eq!(failed.exit_code, Some(2));
    // The reconcile's writes come before the listener records itself connected.
    tokio::time::timeout(Duration::from_secs(5), async {
        while !sync.is_connected() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("connected again");
    let infos = h.events(Severity::Info).await;
    assert_eq!(infos.len(), 1, "{infos:?}");
    assert!(infos[0].message.contains("reachable again"));
    assert_eq!(h.events(Severity::Error).await.len(), 1);
    assert_eq!(h.deps.metrics.docker_reconnects.get(), 1);
    assert!(h.engine.calls("list") >= 2);
    assert_eq!(h.engine.subscribers(), 1, "one live subscription");
    stop(tasks, shutdown).await;
}

impl Harness {
    /// How many events of `severity` are stored once `expected` of them appeared, or after 2 s.
    async fn events_eventually(&self, severity: Severity, expected: usize) -> usize {
        let mut found = self.events(severity).await.len();
        for _ in 0..40 {
            if found >= expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            found = self.events(severity).await.len();
        }
        found
    }

    async fn wait_for_long(&self, id: i64, ready: impl Fn(&Instance) -> bool) -> Instance {
        loop {
            let instance = self.status(id).await;
            if ready(&instance) {
                return instance;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn an_engine_down_at_startup_is_reported_once_and_recovered_when_it_comes() {
    let h = harness().await;
    h.engine.go_down();
    let (sync, tasks, shutdown) = h.start();
    sync.wait_first_attempt().await;
    assert!(!sync.is_reconciled());
    // Events are published right after the signals the test waits on: give them a moment.
    assert_eq!(h.events_eventually(Severity::Error, 1).await, 1);
    h.engine.come_up();
    tokio::time::timeout(Duration::from_secs(5), sync.wait_reconciled())
        .await
        .expect("reconciled once the engine is up");
    assert_eq!(h.events_eventually(Severity::Info, 1).await, 1);
    stop(tasks, shutdown).await;
}

#[tokio::test]
async fn startup_rolls_back_an_interrupted_deploy_and_keeps_the_old_instance_serving() {
    let h = harness().await;
    let old = h
        .instance(
            InstanceStatus::Running,
            "old",
            Some((ContainerState::Running, None)),
        )
        .await;
    h.store()
        .set_current_instance(h.stage.id, Some(old.id))
        .await
        .unwrap();
    let new = h
        .instance(
            InstanceStatus::Deploying,
            "new",
            Some((ContainerState::Running, None)),
        )
        .await;
    h.store()
        .insert_deployment(
            h.stage.id,
            Some(new.id),
            "v2",
            None,
            Trigger::Poll,
            None,
            h.deps.clock.now(),
        )
        .await
        .unwrap();
    // Created but not recorded when the crash came: adopted, then rolled back too.
    let unrecorded = h
        .store()
        .insert_instance(&NewInstance {
            project_id: h.project.id,
            stage_id: h.stage.id,
            image_tag: "v3".into(),
            image_digest: None,
            status: InstanceStatus::Pending,
            hostname: None,
            created_at: h.deps.clock.now(),
            config_revision: 1,
        })
        .await
        .unwrap();
    h.engine
        .add("half", Some(unrecorded.id), ContainerState::Created, None);
    let (sync, tasks, shutdown) = h.start();
    sync.wait_reconciled().await;
    assert_eq!(
        h.engine.calls("list"),
        1,
        "recovery and the first reconcile share one list"
    );

    let new = h.status(new.id).await;
    assert_eq!(new.status, InstanceStatus::Failed);
    assert_eq!(h.engine.container("new").unwrap().state, ContainerState::Exited);
    let deployment = &h.store().list_deployments(Some(h.stage.id), 10).await.unwrap()[0];
    assert_eq!(deployment.status, DeploymentStatus::Failed);
    assert_eq!(deployment.error.as_deref(), Some(recovery::INTERRUPTED));
    let adopted = h.status(unrecorded.id).await;
    assert_eq!(
        (adopted.status, adopted.container_id.as_deref()),
        (InstanceStatus::Failed, Some("half"))
    );
    let old = h.status(old.id).await;
    assert_eq!((old.status, old.is_current), (InstanceStatus::Running, true));
    assert_eq!(h.engine.container("old").unwrap().state, ContainerState::Running);
    let warnings = h.events(Severity::Warn).await;
    assert_eq!(warnings.len(), 2, "one per recovered deploy: {warnings:?}");
    // The stop recovery made is expected: its `die` does not warn.
    tokio::time::sleep(DIE_SETTLE * 2).await;
    assert_eq!(h.events(Severity::Warn).await.len(), 2);
    stop(tasks, shutdown).await;
}

#[tokio::test]
async fn startup_finishes_a_deploy_that_had_switched_and_drops_one_that_created_nothing() {
    let h = harness().await;
    let old = h
        .instance(
            InstanceStatus::Running,
            "old",
            Some((ContainerState::Running, None)),
        )
        .await;
    let new = h
        .instance(
            InstanceStatus::Running,
            "new",
            Some((ContainerState::Running, None)),
        )
        .await;
    h.store()
        .set_current_instance(h.stage.id, Some(new.id))
        .await
        .unwrap();
    h.store()
        .insert_deployment(
            h.stage.id,
            Some(new.id),
            "v2",
            None,
            Trigger::Poll,
            None,
            h.deps.clock.now(),
        )
        .await
        .unwrap();
    let nothing = h
        .store()
        .insert_instance(&NewInstance {
            project_id: h.project.id,
            stage_id: h.stage.id,
            image_tag: "v3".into(),
            image_digest: None,
            status: InstanceStatus::Pending,
            hostname: None,
            created_at: h.deps.clock.now(),
            config_revision: 1,
        })
        .await
        .unwrap();
    let (sync, tasks, shutdown) = h.start();
    sync.wait_reconciled().await;
    let deployment = &h.store().list_deployments(Some(h.stage.id), 10).await.unwrap()[0];
    assert_eq!(deployment.status, DeploymentStatus::Succeeded);
    assert_eq!(h.status(new.id).await.status, InstanceStatus::Running);
    assert_eq!(h.status(old.id).await.status, InstanceStatus::Stopped);
    assert_eq!(h.engine.container("old").unwrap().state, ContainerState::Exited);
    assert!(matches!(
        h.store().get_instance(nothing.id).await,
        Err(crate::store::StoreError::NotFound)
    ));
    let routes = h.deps.routes.load();
    assert!(routes.is_empty(), "no hostname configured, so nothing is routed");
    stop(tasks, shutdown).await;
}

#[tokio::test]
async fn reconcile_now_is_served_while_the_listener_runs() {
    let h = harness().await;
    h.instance(
        InstanceStatus::Running,
        "c1",
        Some((ContainerState::Running, None)),
    )
    .await;
    let (sync, tasks, shutdown) = h.start();
    sync.wait_reconciled().await;
    let report = sync.reconcile_now().await.unwrap();
    assert_eq!((report.containers, report.alive), (1, 1));
    assert_eq!(h.engine.calls("list"), 2);
    stop(tasks, shutdown).await;
}
