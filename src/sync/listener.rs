//! The sync task: connect (subscribe, then reconcile), apply events until the stream ends,
//! reconnect with backoff — until shutdown.
//!
//! The engine's outage is reported once: the first failure after a good connection (or at
//! startup) publishes one `error` event, the next successful reconcile one recorded `info`.
//! A stream that merely ended while the engine still answers `ping` is resubscribed silently.
//! A `die` is held for [`DIE_SETTLE`] (or until the next event of the same container) to learn
//! whether the engine follows it with `stop`, its sign of a requested stop; events of one
//! container are therefore still applied in order.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::plan::{self, Observation, StatusChange};
use super::{DIE_SETTLE, SyncState, Syncer};
use crate::docker::DockerError;
use crate::docker::engine::{EngineEvent, EngineEventKind, HealthState};
use crate::domain::event::{EventKind, NewEvent, Source};
use crate::domain::instance::InstanceStatus;
use crate::store::StoreError;

/// The first wait before a reconnect, doubled on every failure up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How long to wait for `ping` when deciding whether an ended stream means a lost engine.
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// Exponential backoff between reconnect attempts.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(crate) fn new() -> Self {
        Self { next: MIN_BACKOFF }
    }

    /// The wait before the next attempt; doubles the one after, up to the cap.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        delay
    }

    pub(crate) fn reset(&mut self) {
        self.next = MIN_BACKOFF;
    }
}

/// Why pumping events stopped.
enum PumpEnd {
    Shutdown,
    Ended(String),
}

pub(super) async fn run(syncer: Arc<Syncer>, state: watch::Sender<SyncState>, shutdown: CancellationToken) {
    let mut backoff = Backoff::new();
    let mut recovered = false;
    let mut connected_once = false;
    // Set while an outage has been reported with an `error` event.
    let mut outage_reported = false;
    loop {
        // Subscribe first (the adapter replays events from this moment on), then list.
        let events = syncer.engine.events(&syncer.installation_id);
        let attempt = async {
            if recovered {
                let _writes = syncer.writes.lock().await;
                syncer.reconcile_locked().await
            } else {
                syncer.startup().await
            }
        };
        let attempt = tokio::select! {
            _ = shutdown.cancelled() => return,
            attempt = attempt => attempt,
        };
        match attempt {
            Ok(report) => {
                recovered = true;
                if connected_once {
                    syncer.metrics.docker_reconnects.inc();
                }
                connected_once = true;
                state.send_modify(|s| {
                    s.attempted = true;
                    s.reconciled = true;
                    s.connected = true;
                });
                if outage_reported {
                    outage_reported = false;
                    let message = format!(
                        "the Docker engine is reachable again; reconciled {} containers ({} instances changed)",
                        report.containers, report.changed
                    );
                    syncer
                        .bus
                        .publish(
                            NewEvent::info(Source::Docker, message)
                                .kind(EventKind::DockerRecovered)
                                .recorded(),
                        )
                        .await;
                }
                backoff.reset();
                let end = pump(&syncer, events, &shutdown).await;
                state.send_modify(|s| s.connected = false);
                let reason = match end {
                    PumpEnd::Shutdown => return,
                    PumpEnd::Ended(reason) => reason,
                };
                // The stream can end while the engine is fine (a proxy's idle timeout, say):
                // only a failed ping makes it an outage worth an event.
                let ping = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    ping = syncer.engine.ping(PING_TIMEOUT) => ping,
                };
                match ping {
                    Ok(()) => tracing::info!(%reason, "the Docker event stream ended; resubscribing"),
                    Err(e) => {
                        outage_reported = true;
                        let message = format!("lost the connection to the Docker engine: {e}; reconnecting");
                        syncer
                            .bus
                            .publish(
                                NewEvent::error(Source::Docker, message)
                                    .kind(EventKind::DockerUnavailable)
                                    .detail("stream", reason),
                            )
                            .await;
                    }
                }
            }
            Err(e) => {
                let unavailable = e.chain().any(|cause| {
                    cause
                        .downcast_ref::<DockerError>()
                        .is_some_and(DockerError::is_unavailable)
                });
                if outage_reported {
                    tracing::debug!(error = format!("{e:#}"), "the Docker engine is still unavailable");
                } else {
                    outage_reported = true;
                    let message = if unavailable {
                        format!("cannot reach the Docker engine: {e:#}; retrying with backoff")
                    } else {
                        format!("could not reconcile with the Docker engine: {e:#}; retrying with backoff")
                    };
                    syncer
                        .bus
                        .publish(NewEvent::error(Source::Docker, message).kind(EventKind::DockerUnavailable))
                        .await;
                }
                // After the event: whoever waits for the first attempt sees it reported.
                state.send_modify(|s| s.attempted = true);
            }
        }
        let delay = backoff.next_delay();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// A `die` waiting to learn whether a `stop` follows.
#[derive(Debug)]
struct PendingDie {
    event: EngineEvent,
    deadline: Instant,
    stopped_by_request: bool,
    oom: bool,
}

/// The little memory event handling needs between events.
#[derive(Debug, Default)]
struct Tracker {
    pending: HashMap<String, PendingDie>,
    /// Containers that had an `oom` whose `die` has not come yet.
    oom: HashSet<String>,
}

impl Tracker {
    fn next_deadline(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.deadline).min()
    }

    fn take_due(&mut self, now: Instant) -> Vec<PendingDie> {
        let due: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        due.iter().filter_map(|id| self.pending.remove(id)).collect()
    }
}

/// Applies events until the stream ends or shutdown.
async fn pump(
    syncer: &Syncer,
    mut events: BoxStream<'static, Result<EngineEvent, DockerError>>,
    shutdown: &CancellationToken,
) -> PumpEnd {
    let mut tracker = Tracker::default();
    loop {
        let deadline = tracker.next_deadline();
        tokio::select! {
            _ = shutdown.cancelled() => return PumpEnd::Shutdown,
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                for die in tracker.take_due(Instant::now()) {
                    syncer.apply_die(die).await;
                }
            }
            item = events.next() => {
                let end = match item {
                    Some(Ok(event)) => {
                        handle_event(syncer, &mut tracker, event).await;
                        continue;
                    }
                    Some(Err(e)) => e.to_string(),
                    None => "the event stream ended".to_owned(),
                };
                for (_, die) in tracker.pending.drain() {
                    syncer.apply_die(die).await;
                }
                return PumpEnd::Ended(end);
            }
        }
    }
}

async fn handle_event(syncer: &Syncer, tracker: &mut Tracker, event: EngineEvent) {
    tracing::debug!(kind = ?event.kind, container = %event.container_id, "Docker event");
    let container = event.container_id.clone();
    match event.kind {
        EngineEventKind::Die => {
            if let Some(earlier) = tracker.pending.remove(&container) {
                syncer.apply_die(earlier).await;
            }
            let oom = tracker.oom.remove(&container);
            tracker.pending.insert(
                container,
                PendingDie {
                    event,
                    deadline: Instant::now() + DIE_SETTLE,
                    stopped_by_request: false,
                    oom,
                },
            );
        }
        EngineEventKind::Stop => match tracker.pending.remove(&container) {
            Some(mut die) => {
                die.stopped_by_request = true;
                syncer.apply_die(die).await;
            }
            // The `stop` came first (or its `die` was missed): a requested stop, exit unknown.
            None => {
                syncer
                    .apply_observation(&event, Observation::Exited(None), None)
                    .await
            }
        },
        kind => {
            if let Some(die) = tracker.pending.remove(&container) {
                syncer.apply_die(die).await;
            }
            match kind {
                EngineEventKind::Start => syncer.apply_observation(&event, Observation::Running, None).await,
                EngineEventKind::Destroy => {
                    tracker.oom.remove(&container);
                    syncer.apply_observation(&event, Observation::Gone, None).await;
                }
                EngineEventKind::Oom => {
                    tracker.oom.insert(container);
                    syncer.report_oom(&event).await;
                }
                EngineEventKind::HealthStatus(health) => syncer.report_health(&event, health).await,
                EngineEventKind::Kill | EngineEventKind::Die | EngineEventKind::Stop => {}
            }
        }
    }
}

/// What a held `die` learnt while it waited.
#[derive(Debug, Clone, Copy)]
struct DieContext {
    stopped_by_request: bool,
    oom: bool,
}

impl Syncer {
    async fn apply_die(&self, die: PendingDie) {
        let context = DieContext {
            stopped_by_request: die.stopped_by_request,
            oom: die.oom,
        };
        self.apply_observation(
            &die.event,
            Observation::Exited(die.event.exit_code),
            Some(context),
        )
        .await;
    }

    /// Applies what an event shows about its container's instance.
    async fn apply_observation(
        &self,
        event: &EngineEvent,
        observation: Observation,
        die: Option<DieContext>,
    ) {
        let _writes = self.writes.lock().await;
        if event
            .labels
            .contains_key(crate::docker::engine::labels::ACCESSORY)
        {
            let requested = die.is_some_and(|die| die.stopped_by_request);
            self.apply_accessory_event(event, observation, requested).await;
            return;
        }
        let Some(instance) = self.instance_of(event).await else {
            return;
        };
        let change = match die {
            // A requested stop, or an OOM kill (already reported as an `error`): a stop, not an
            // unexpected exit worth a second event.
            Some(die)
                if instance.status == InstanceStatus::Running && (die.stopped_by_request || die.oom) =>
            {
                Some(StatusChange {
                    instance_id: instance.id,
                    from: instance.status,
                    to: if die.oom {
                        InstanceStatus::Failed
                    } else {
                        InstanceStatus::Stopped
                    },
                    exit_code: event.exit_code,
                    warning: None,
                })
            }
            _ => plan::decide(&instance, observation),
        };
        let Some(change) = change else { return };
        match self.apply_change(&instance, &change).await {
            Ok(Some(_)) if change.affects_routes() => self.rebuild_routes().await,
            Ok(_) => {}
            Err(e) => tracing::error!(error = format!("{e:#}"), "applying a Docker event failed"),
        }
    }

    /// The instance an event is about: by its instance label, and only while the instance's
    /// recorded container is this one (a rollback may have given the instance a new one).
    async fn instance_of(&self, event: &EngineEvent) -> Option<crate::domain::instance::Instance> {
        let id: i64 = event
            .labels
            .get(crate::docker::engine::labels::INSTANCE)
            .and_then(|v| v.parse().ok())?;
        let instance = match self.store.get_instance(id).await {
            Ok(instance) => instance,
            Err(StoreError::NotFound) => return None,
            Err(e) => {
                tracing::error!(error = %e, instance = id, "reading an instance for a Docker event failed");
                return None;
            }
        };
        match &instance.container_id {
            Some(recorded) if !plan::same_container(recorded, &event.container_id) => None,
            _ => Some(instance),
        }
    }

    async fn report_oom(&self, event: &EngineEvent) {
        let Some(instance) = self.instance_of(event).await else {
            return;
        };
        let message = format!("{} was killed: out of memory", super::describe(&instance));
        let event = NewEvent::error(Source::Docker, message)
            .project(instance.project_id)
            .stage(instance.stage_id)
            .instance(instance.id)
            .detail("container_id", event.container_id.as_str());
        self.bus.publish(event).await;
    }

    /// Health changes are not stored (the deploy's health gate reads them itself); a transient
    /// debug event shows them on the live stream.
    async fn report_health(&self, event: &EngineEvent, health: HealthState) {
        let Some(instance) = self.instance_of(event).await else {
            return;
        };
        let health = match health {
            HealthState::Starting => "starting",
            HealthState::Healthy => "healthy",
            HealthState::Unhealthy => "unhealthy",
        };
        let message = format!("{} is {health}", super::describe(&instance));
        let event = NewEvent::new(crate::domain::event::Severity::Debug, Source::Docker, message)
            .project(instance.project_id)
            .stage(instance.stage_id)
            .instance(instance.id);
        self.bus.publish(event).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_from_one_second_to_a_thirty_second_cap_and_resets() {
        let mut backoff = Backoff::new();
        let delays: Vec<u64> = (0..7).map(|_| backoff.next_delay().as_secs()).collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 16, 30, 30]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), MIN_BACKOFF);
    }
}
