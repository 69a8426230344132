//! Event-log retention: once at start and then daily, delete persisted events older than the
//! setting `event_retention_days`. The pruning is one store call ([`prune_once`]); the timing is
//! the shared scheduler's ([`spawn_retention`]).

use std::time::Duration;

use chrono::TimeDelta;

use crate::clock::SharedClock;
use crate::scheduler::{JobHandle, JobSpec, Plan, Scheduler};
use crate::settings::LiveSettings;
use crate::store::Store;

/// How often retention runs.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// The job's name in logs.
pub const JOB_NAME: &str = "event-retention";

/// Deletes events older than the retention period; returns how many went. The period is read
/// at each run, so a changed setting applies to the next one.
pub async fn prune_once(store: &Store, settings: &LiveSettings, clock: &SharedClock) -> anyhow::Result<u64> {
    let days = settings.current().event_retention_days;
    let cutoff = clock.now() - TimeDelta::days(i64::from(days));
    Ok(store.prune_events(cutoff).await?)
}

/// Schedules [`prune_once`] on `scheduler`: at once, then every [`PRUNE_INTERVAL`]. The handle
/// runs it on demand.
pub fn spawn_retention(
    scheduler: &Scheduler,
    store: Store,
    settings: LiveSettings,
    clock: SharedClock,
) -> JobHandle {
    let spec = JobSpec::new(JOB_NAME, Plan::every(PRUNE_INTERVAL)).run_at_start();
    scheduler.spawn(spec, move || {
        let (store, settings, clock) = (store.clone(), settings.clone(), clock.clone());
        async move {
            let deleted = prune_once(&store, &settings, &clock).await?;
            if deleted > 0 {
                tracing::info!(deleted, "pruned old events");
            }
            Ok(())
        }
    })
}
