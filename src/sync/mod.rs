//! Docker sync: keeps the store true to the engine (SPEC §3 "Docker sync", "Instance status").
//!
//! One task, started by `app.rs` through [`start`], owns the connection to the engine's event
//! stream. On every (re)connect it first subscribes to events and only then lists this
//! installation's containers — ONE list call — so an event that happens in between is replayed
//! by the stream rather than lost; then it reconciles every instance against that list
//! ([`plan::plan_reconcile`]) and removes containers that carry this installation's label but
//! no instance records. The very first time, before that reconcile and on the same list, it
//! recovers the deploys a crash of docker-watcher interrupted ([`recovery`], whose module doc
//! states the rule). Then it applies events as they come (`listener`): `start` → running,
//! `die`/`stop` → stopped or failed with the exit code, `destroy` → missing, `oom` → an `error`
//! event. When the engine goes away it reconnects with exponential backoff (1 s to 30 s),
//! publishing one `error` event when it is lost and one recorded `info` when it is back.
//!
//! Sync observes; the workflows own. An instance that is `pending`/`deploying` (a deploy) or
//! `removing` (a cleanup) is never touched, and every write is conditional on the status the
//! decision was taken on, so an observation can never overwrite what a workflow did meanwhile.
//! Workflows that stop a container mark its instance `stopped` (or `removing`) *first*; the
//! `die` that follows is then expected and raises no warning. A `die` is held for a moment
//! ([`DIE_SETTLE`]) to see whether a `stop` follows — the engine's sign of a requested stop —
//! so a stop by any API client is `stopped`, not an unexpected failure.
//!
//! Deploys must not start before recovery: [`SyncHandle::wait_reconciled`] resolves once the
//! first recovery and reconcile are done (the stale scanner's first run waits for it as well).
//!
//! Sync observes and reports; it never deploys. When the container of an instance that was
//! running (or had crashed) is gone, sync sends a [`LostInstance`] on the channel it was given;
//! `app.rs` hands it to the deploy workflow, which decides whether the stage heals.
//!
//! Sync is a workflow: it knows `docker` only through the [`ContainerEngine`] trait, and never
//! HTTP.

pub mod accessories;
pub mod plan;
pub mod recovery;

mod listener;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::SharedClock;
use crate::docker::DockerError;
use crate::docker::engine::{ContainerEngine, ContainerSummary};
use crate::domain::event::{NewEvent, Source};
use crate::domain::instance::{Instance, InstanceFilter, InstanceStatus};
use crate::events::EventBus;
use crate::metrics::Metrics;
use crate::routes::RouteTable;
use crate::store::Store;

use plan::StatusChange;

/// How long a container gets between SIGTERM and SIGKILL when recovery stops it.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// How long a `die` waits for the `stop` the engine sends when a stop was requested.
pub const DIE_SETTLE: Duration = Duration::from_millis(500);

/// At most one warning per instance in this time: a container in a crash loop (its restart
/// policy brings it back, it crashes again) would otherwise fill the event log. The repeats are
/// still published, as transient `info` events.
pub const WARNING_INTERVAL: Duration = Duration::from_secs(600);

/// An instance whose container went away while it was running or had crashed: its stage may
/// have to heal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LostInstance {
    pub instance_id: i64,
    pub stage_id: i64,
}

/// The handles sync works with.
#[derive(Debug, Clone)]
pub struct SyncDeps {
    pub engine: Arc<dyn ContainerEngine>,
    pub store: Store,
    pub bus: EventBus,
    pub routes: RouteTable,
    pub clock: SharedClock,
    pub metrics: Arc<Metrics>,
    /// The label value that marks this installation's containers.
    pub installation_id: Arc<str>,
    /// Where lost instances are reported (see [`LostInstance`]).
    pub lost: tokio::sync::mpsc::UnboundedSender<LostInstance>,
}

/// What one reconcile found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Containers the list call returned.
    pub containers: usize,
    /// Instances whose status changed.
    pub changed: usize,
    /// Instances seen running (their `last_alive_at` moved to now).
    pub alive: usize,
    /// Unrecorded containers removed (ids).
    pub removed: Vec<String>,
    /// Interrupted deploys recovered (only the first reconcile recovers).
    pub recovered: usize,
}

/// Where the sync task is; watched by [`SyncHandle`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct SyncState {
    /// The first connect attempt is over (it may have failed).
    attempted: bool,
    /// Startup recovery and a reconcile have completed at least once.
    reconciled: bool,
    /// The event stream is connected now.
    connected: bool,
}

/// The executor: store writes, engine calls and events for what the pure plans decide.
#[derive(Debug)]
pub(crate) struct Syncer {
    engine: Arc<dyn ContainerEngine>,
    store: Store,
    bus: EventBus,
    routes: RouteTable,
    clock: SharedClock,
    metrics: Arc<Metrics>,
    installation_id: Arc<str>,
    lost: tokio::sync::mpsc::UnboundedSender<LostInstance>,
    /// Serialises every write sync makes — a reconcile from list to last write, and each
    /// applied event — so an event newer than a reconcile's list is never overwritten by it.
    writes: tokio::sync::Mutex<()>,
    /// When each instance was last warned about, for [`WARNING_INTERVAL`].
    warned: std::sync::Mutex<HashMap<i64, tokio::time::Instant>>,
}

/// A handle on the running sync. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SyncHandle {
    syncer: Arc<Syncer>,
    state: watch::Receiver<SyncState>,
}

/// Starts the sync task under `tasks`; it stops when `shutdown` is cancelled.
pub fn start(deps: SyncDeps, tasks: &TaskTracker, shutdown: CancellationToken) -> SyncHandle {
    let syncer = Arc::new(Syncer {
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
    });
    let (state_tx, state) = watch::channel(SyncState::default());
    tasks.spawn(listener::run(syncer.clone(), state_tx, shutdown));
    SyncHandle { syncer, state }
}

impl SyncHandle {
    /// Reconciles now (one list call) and returns what changed. Serialised with the listener's
    /// writes. Recovery is not repeated: it belongs to startup.
    pub async fn reconcile_now(&self) -> anyhow::Result<ReconcileReport> {
        let _writes = self.syncer.writes.lock().await;
        self.syncer.reconcile_locked().await
    }

    /// Resolves once startup recovery and the first reconcile are done. While the engine is
    /// unreachable that waits for it to come back.
    pub async fn wait_reconciled(&self) {
        let mut state = self.state.clone();
        // An error means the task ended (shutdown): nothing will ever be reconciled, and
        // whoever waits is shutting down too.
        let _ = state.wait_for(|s| s.reconciled).await;
    }

    /// Resolves once the first attempt to connect and reconcile is over, whether or not the
    /// engine answered: startup waits for this, not for the engine.
    pub async fn wait_first_attempt(&self) {
        let mut state = self.state.clone();
        let _ = state.wait_for(|s| s.attempted).await;
    }

    /// Whether startup recovery and a reconcile have completed.
    pub fn is_reconciled(&self) -> bool {
        self.state.borrow().reconciled
    }

    /// Whether the event stream is connected now.
    pub fn is_connected(&self) -> bool {
        self.state.borrow().connected
    }
}

impl Syncer {
    /// Startup: one list call, recovery of interrupted deploys, then the reconcile on the same
    /// list.
    async fn startup(&self) -> anyhow::Result<ReconcileReport> {
        let _writes = self.writes.lock().await;
        let containers = self.list().await?;
        let (recovered, settled) = self
            .recover(&containers)
            .await
            .context("recovering interrupted deploys")?;
        let mut report = self.reconcile_with(&containers, &settled).await?;
        report.recovered = recovered;
        Ok(report)
    }

    /// One reconcile; the caller holds `writes`.
    async fn reconcile_locked(&self) -> anyhow::Result<ReconcileReport> {
        let containers = self.list().await?;
        self.reconcile_with(&containers, &HashSet::new()).await
    }

    async fn list(&self) -> anyhow::Result<Vec<ContainerSummary>> {
        self.engine
            .list_managed(&self.installation_id)
            .await
            .context("listing this installation's containers")
    }

    /// Applies a reconcile plan for `containers`. The instances are read *after* the list was
    /// taken: a deploy records its instance before creating the container, so every container
    /// in the list has its row by then, and none is mistaken for unrecorded.
    async fn reconcile_with(
        &self,
        containers: &[ContainerSummary],
        settled: &HashSet<i64>,
    ) -> anyhow::Result<ReconcileReport> {
        let instances = self
            .store
            .list_instances(&InstanceFilter::default())
            .await
            .context("listing instances")?;
        let mut plan = plan::plan_reconcile(&instances, containers, settled);
        // Accessories are read after the list too, so a container being created for one is known.
        let accessories = self
            .store
            .list_all_accessories()
            .await
            .context("listing accessories")?;
        accessories::keep_accessory_containers(&mut plan.unrecorded, &accessories);
        let mut report = ReconcileReport {
            containers: containers.len(),
            ..Default::default()
        };
        let by_id: HashMap<i64, &Instance> = instances.iter().map(|i| (i.id, i)).collect();
        for change in &plan.changes {
            let Some(instance) = by_id.get(&change.instance_id).copied() else {
                continue;
            };
            match self.apply_change(instance, change).await {
                Ok(Some(_)) => {
                    if change.changes_status() {
                        report.changed += 1;
                    }
                    if change.to == InstanceStatus::Running {
                        report.alive += 1;
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(
                        error = format!("{e:#}"),
                        instance = change.instance_id,
                        "reconcile: a write failed"
                    )
                }
            }
        }
        report.changed += self.reconcile_accessories(containers, &accessories).await;
        for container in &plan.unrecorded {
            if self.remove_unrecorded(container).await {
                report.removed.push(container.id.clone());
            }
        }
        self.rebuild_routes().await;
        self.metrics.docker_reconciles.inc();
        tracing::debug!(?report, "reconciled with the Docker engine");
        Ok(report)
    }

    /// Writes one status change if the instance still has the status it was decided on, and
    /// publishes what it means. `Ok(None)` when the instance moved on meanwhile.
    async fn apply_change(
        &self,
        instance: &Instance,
        change: &StatusChange,
    ) -> anyhow::Result<Option<Instance>> {
        let updated = self
            .store
            .update_instance_status_if(
                change.instance_id,
                change.from,
                change.to,
                change.exit_code,
                self.clock.now(),
            )
            .await
            .with_context(|| format!("updating instance {}", change.instance_id))?;
        let Some(updated) = updated else { return Ok(None) };
        if change.to == InstanceStatus::Missing
            && matches!(change.from, InstanceStatus::Running | InstanceStatus::Failed)
        {
            // Nobody listening (shutdown) is fine: there is nothing left to heal for.
            let _ = self.lost.send(LostInstance {
                instance_id: instance.id,
                stage_id: instance.stage_id,
            });
        }
        let about = describe(instance);
        let event = if let Some(warning) = &change.warning {
            Some(if self.may_warn(instance.id) {
                NewEvent::warn(Source::Docker, format!("{about} {warning}"))
            } else {
                NewEvent::info(
                    Source::Docker,
                    format!("{about} {warning} (again: one warning per instance every 10 minutes)"),
                )
            })
        } else if change.changes_status() {
            Some(NewEvent::info(
                Source::Docker,
                format!("{about} is now {}", change.to),
            ))
        } else {
            None
        };
        if let Some(event) = event {
            let mut event = event
                .project(instance.project_id)
                .stage(instance.stage_id)
                .instance(instance.id)
                .detail("from", change.from.as_str())
                .detail("status", change.to.as_str());
            if let Some(container) = &instance.container_id {
                event = event.detail("container_id", container.as_str());
            }
            if let Some(code) = change.exit_code {
                event = event.detail("exit_code", code);
            }
            self.bus.publish(event).await;
        }
        Ok(Some(updated))
    }

    /// Whether a warning about `instance_id` may be published now (and notes that it is).
    fn may_warn(&self, instance_id: i64) -> bool {
        let now = tokio::time::Instant::now();
        let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
        warned.retain(|_, at| now.duration_since(*at) < WARNING_INTERVAL);
        if warned.contains_key(&instance_id) {
            return false;
        }
        warned.insert(instance_id, now);
        true
    }

    /// Removes a container nobody records; returns whether it is gone.
    async fn remove_unrecorded(&self, container: &ContainerSummary) -> bool {
        let result = match self.engine.remove(&container.id).await {
            Ok(()) | Err(DockerError::NotFound) => Ok(()),
            Err(e) => Err(e),
        };
        let name = container.name.trim_start_matches('/');
        let short = container.id.get(..12).unwrap_or(&container.id);
        let event = match &result {
            Ok(()) => NewEvent::warn(
                Source::Docker,
                format!(
                    "removed container {name} ({short}): it carries this installation's label but no instance records it"
                ),
            ),
            Err(e) => NewEvent::warn(
                Source::Docker,
                format!(
                    "container {name} ({short}) carries this installation's label but no instance records it, and removing it failed: {e}"
                ),
            ),
        };
        let mut event = event.detail("container_id", container.id.as_str());
        if let Some(instance) = container.instance_id() {
            event = event.detail("labelled_instance_id", instance);
        }
        self.bus.publish(event).await;
        result.is_ok()
    }

    async fn rebuild_routes(&self) {
        if let Err(e) = self.routes.rebuild().await {
            tracing::error!(error = %e, "could not rebuild the route table");
        }
    }
}

/// `instance 7 of shop/prod (v2)`: how events name an instance.
fn describe(instance: &Instance) -> String {
    format!(
        "instance {} of {}/{} ({})",
        instance.id, instance.project_name, instance.stage_name, instance.image_tag
    )
}

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;
