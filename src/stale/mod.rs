//! Stale container detection and cleanup (SPEC §3 "Stale container detection"; the seed's
//! phase 2): find the managed containers that have not run for more than
//! `stale_threshold_days`, warn once about each, and remove them on request.
//!
//! **The scan** ([`StaleScanner::scan`]) is one Docker list call of this installation's
//! containers — never an inspect per instance — followed by one read of the instances and one
//! store transaction: every instance's status is refreshed from the list (a running container
//! moves `last_alive_at` to now and clears a stale mark; an exited one makes its instance
//! `stopped`/`failed`; a vanished one `missing`), then the rule ([`rule`]) marks what became
//! stale (`stale_since`). The mark is stored, and a warning is published only for marks the
//! store confirms it wrote — so a later scan, a concurrent one or a restart never warns twice,
//! and an instance that came back alive (its mark cleared) and went stale again is warned about
//! again. What to write is decided by the pure [`plan`]; every write is conditional on the status
//! it was decided on, so the scan never overwrites a deploy, a cleanup or Docker sync.
//!
//! **The job** ([`start`]) runs the scan on the shared scheduler every `stale_scan_interval`
//! (unset: `max(1h, threshold / 7)`), re-planned live when the settings change; once at startup
//! after Docker sync's first reconcile; and on demand ([`StaleHandle::scan_now`], which goes
//! through the job so a manual scan never overlaps a scheduled one). The threshold is read at
//! each scan and each listing, so a settings change applies without a restart.
//!
//! **The cleanup** lives in [`cleanup`]. The list the API serves ([`StaleScanner::list`]) is the
//! instances a scan marked that the rule still holds for now.
//!
//! A workflow: it knows Docker only through [`ContainerEngine`] and never HTTP.

pub mod cleanup;
pub mod plan;
pub mod rule;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::{SharedClock, format_time};
use crate::docker::engine::ContainerEngine;
use crate::domain::event::{EventKind, NewEvent, Source};
use crate::domain::instance::{Instance, InstanceFilter, InstanceStatus};
use crate::events::EventBus;
use crate::metrics::Metrics;
use crate::routes::RouteTable;
use crate::scheduler::{Cadence, JobHandle, JobSpec, Plan, RunError, Scheduler};
use crate::settings::LiveSettings;
use crate::store::Store;

use self::rule::StaleRule;

/// The handles the scanner works with, built by `app.rs`.
#[derive(Debug, Clone)]
pub struct StaleDeps {
    pub store: Store,
    pub bus: EventBus,
    pub engine: Arc<dyn ContainerEngine>,
    /// The threshold and the scan interval, read live.
    pub settings: LiveSettings,
    /// Rebuilt when a scan finds a routed instance stopped or gone, and after cleanups.
    pub routes: RouteTable,
    pub clock: SharedClock,
    pub metrics: Arc<Metrics>,
    /// The label value that marks this installation's containers: the only ones listed.
    pub installation_id: Arc<str>,
}

/// Tunables with sensible defaults.
#[derive(Debug, Clone)]
pub struct StaleOptions {
    /// SIGTERM → SIGKILL grace when a cleanup stops a container (a stale one has normally
    /// exited long ago, so the stop returns at once).
    pub stop_grace: Duration,
    /// How many cleanups a bulk cleanup runs at once.
    pub cleanup_concurrency: usize,
}

impl Default for StaleOptions {
    fn default() -> Self {
        Self {
            stop_grace: Duration::from_secs(10),
            cleanup_concurrency: 4,
        }
    }
}

/// One stale instance as listed: the instance and how many whole days it has not run.
#[derive(Debug, Clone, PartialEq)]
pub struct StaleItem {
    pub instance: Instance,
    pub days_stale: i64,
}

/// What `GET /api/containers/stale` shows.
#[derive(Debug, Clone, PartialEq)]
pub struct StaleList {
    pub threshold_days: u32,
    /// When the last scan ran (since this start; the startup scan sets it).
    pub scanned_at: Option<DateTime<Utc>>,
    /// The most stale first.
    pub items: Vec<StaleItem>,
}

/// What one scan found and did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScanReport {
    pub scanned_at: Option<DateTime<Utc>>,
    /// Containers the one list call returned.
    pub containers: usize,
    /// Instances the scan looked at.
    pub instances: usize,
    /// Instances whose status changed.
    pub changed: usize,
    /// Instances seen running (`last_alive_at` moved to now).
    pub alive: usize,
    /// Instances that became stale in this scan (each got its one warning).
    pub newly_stale: Vec<i64>,
    /// Marks taken off because the rule no longer holds (the threshold was raised).
    pub unmarked: u64,
    /// Instances stale after the scan.
    pub stale: usize,
    pub duration: Duration,
}

/// Why a scan did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    /// The Docker engine could not be reached: nothing was written.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Failed(String),
    /// The application is shutting down.
    #[error("the stale scanner is stopped")]
    Stopped,
}

/// The scanner: scans, lists and cleans up. Cheap to clone.
#[derive(Debug, Clone)]
pub struct StaleScanner {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    deps: StaleDeps,
    options: StaleOptions,
    state: Mutex<ScanState>,
}

/// What the last scan left, in memory: after a restart the startup scan sets it again.
#[derive(Debug, Default)]
struct ScanState {
    scanned_at: Option<DateTime<Utc>>,
    /// The outcome of the last scan, which [`StaleHandle::scan_now`] reads after the job ran
    /// (the scheduler only passes on an error's text).
    last: Option<Result<ScanReport, ScanError>>,
}

impl StaleScanner {
    pub fn new(deps: StaleDeps, options: StaleOptions) -> Self {
        Self {
            inner: Arc::new(Inner {
                deps,
                options,
                state: Mutex::default(),
            }),
        }
    }

    fn deps(&self) -> &StaleDeps {
        &self.inner.deps
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ScanState> {
        // The state is two plain values, consistent even if a holder panicked.
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The rule with the threshold as set now.
    pub fn rule(&self) -> StaleRule {
        StaleRule::new(self.deps().settings.current().stale_threshold_days)
    }

    /// When the last scan since this start ran.
    pub fn scanned_at(&self) -> Option<DateTime<Utc>> {
        self.state().scanned_at
    }

    /// Runs one scan now, directly (the job and the benchmark call this; the API goes through
    /// [`StaleHandle::scan_now`] so scans never overlap).
    pub async fn scan(&self) -> Result<ScanReport, ScanError> {
        let outcome = self.scan_once().await;
        if let Err(error) = &outcome {
            tracing::warn!(%error, "stale scan failed");
        }
        self.state().last = Some(outcome.clone());
        outcome
    }

    async fn scan_once(&self) -> Result<ScanReport, ScanError> {
        let started = tokio::time::Instant::now();
        let deps = self.deps();
        // Instances are read before the list: a status a workflow writes after this read makes
        // the conditional writes below skip that row, and one written before it is matched by
        // a list that is at least as new.
        let instances = deps
            .store
            .list_instances(&InstanceFilter::default())
            .await
            .map_err(|e| ScanError::Failed(format!("listing instances: {e}")))?;
        let containers = deps
            .engine
            .list_managed(&deps.installation_id)
            .await
            .map_err(|e| {
                let message = format!("listing this installation's containers: {e}");
                if e.is_unavailable() {
                    ScanError::Unavailable(message)
                } else {
                    ScanError::Failed(message)
                }
            })?;
        // At the store's precision, so what the scan reports is what a later read returns.
        let now = deps.clock.now().trunc_subsecs(3);
        let rule = self.rule();
        let plan = plan::plan_scan(&instances, &containers, rule, now);
        let written = deps
            .store
            .write_stale_scan(&plan.observed, &plan.marks, &plan.unmarks, rule.cutoff(now), now)
            .await
            .map_err(|e| ScanError::Failed(format!("writing the scan: {e}")))?;

        let by_id: HashMap<i64, &Instance> = instances.iter().map(|i| (i.id, i)).collect();
        let mut report = ScanReport {
            scanned_at: Some(now),
            containers: containers.len(),
            instances: instances.len(),
            newly_stale: written.marked.clone(),
            unmarked: written.unmarked,
            // Planned marks the store refused (the row moved on) are not stale after all.
            stale: plan
                .stale
                .saturating_sub(plan.marks.len().saturating_sub(written.marked.len())),
            ..Default::default()
        };
        let applied: std::collections::HashSet<i64> = written.observed.iter().copied().collect();
        report.alive = plan
            .observed
            .iter()
            .filter(|o| o.status == InstanceStatus::Running && applied.contains(&o.id))
            .count();
        let mut routes_changed = false;
        let mut events = Vec::new();
        for change in plan.changes.iter().filter(|c| applied.contains(&c.instance_id)) {
            if change.changes_status() {
                report.changed += 1;
            }
            routes_changed |= change.affects_routes();
            if let Some(instance) = by_id.get(&change.instance_id) {
                events.extend(status_change_event(instance, change));
            }
        }
        if routes_changed && let Err(e) = deps.routes.rebuild().await {
            tracing::error!(error = %e, "could not rebuild the route table after a stale scan");
        }
        let marked_status: HashMap<i64, InstanceStatus> = plan.marks.iter().copied().collect();
        for id in &written.marked {
            if let Some(instance) = by_id.get(id) {
                let status = marked_status.get(id).copied().unwrap_or(instance.status);
                events.push(newly_stale_event(instance, status, rule, now));
            }
        }
        // One transaction for them all: a scan may find thousands of instances stale at once.
        deps.bus.publish_many(events).await;

        deps.metrics.stale_scans.inc();
        deps.metrics
            .stale_instances
            .set(i64::try_from(report.stale).unwrap_or(i64::MAX));
        report.duration = started.elapsed();
        self.state().scanned_at = Some(now);
        tracing::debug!(?report, "stale scan done");
        Ok(report)
    }
}

/// A status the scan changed, told as Docker sync tells it: a warning when nobody asked for it
/// (a crash, a vanished container), otherwise a transient info.
fn status_change_event(instance: &Instance, change: &crate::sync::plan::StatusChange) -> Option<NewEvent> {
    let about = describe(instance);
    let event = match &change.warning {
        Some(warning) => NewEvent::warn(Source::Stale, format!("{about} {warning}")),
        None if change.changes_status() => {
            NewEvent::info(Source::Stale, format!("{about} is now {}", change.to))
        }
        None => return None,
    };
    let mut event = event
        .project(instance.project_id)
        .stage(instance.stage_id)
        .instance(instance.id)
        .detail("from", change.from.as_str())
        .detail("status", change.to.as_str());
    if let Some(code) = change.exit_code {
        event = event.detail("exit_code", code);
    }
    Some(event)
}

/// The one warning of an instance that became stale, with project, stage, tag and days.
fn newly_stale_event(
    instance: &Instance,
    status: InstanceStatus,
    rule: StaleRule,
    now: DateTime<Utc>,
) -> NewEvent {
    let days = rule::days_stale(instance, now);
    let since = match instance.last_alive_at {
        Some(_) => format!("last seen running {days} days ago"),
        None => format!("created {days} days ago and never seen running"),
    };
    let message = format!(
        "{}/{} {}: instance {} is stale ({status}, {since}; the threshold is {} days)",
        instance.project_name,
        instance.stage_name,
        instance.image_tag,
        instance.id,
        rule.threshold_days()
    );
    let mut event = NewEvent::warn(Source::Stale, message)
        .kind(EventKind::StaleFound)
        .project(instance.project_id)
        .stage(instance.stage_id)
        .instance(instance.id)
        .detail("project", instance.project_name.as_str())
        .detail("stage", instance.stage_name.as_str())
        .detail("image_tag", instance.image_tag.as_str())
        .detail("status", status.as_str())
        .detail("days_stale", days)
        .detail("threshold_days", rule.threshold_days())
        .detail("stale_since", format_time(now))
        .detail(
            "last_alive_at",
            instance
                .last_alive_at
                .map_or(serde_json::Value::Null, |t| format_time(t).into()),
        );
    if let Some(container) = &instance.container_id {
        event = event.detail("container_id", container.as_str());
    }
    if let Some(name) = &instance.container_name {
        event = event.detail("container_name", name.as_str());
    }
    event
}

impl StaleScanner {
    /// The stale instances now: those a scan marked that the rule still holds for at the
    /// current threshold (a raised threshold hides them at once; a lowered one adds instances
    /// at the next scan, which warns about them). Instances being removed stay listed, with
    /// their status, until their cleanup is done.
    pub async fn list(&self) -> anyhow::Result<StaleList> {
        use anyhow::Context;
        let rule = self.rule();
        let now = self.deps().clock.now();
        let marked = self
            .deps()
            .store
            .list_instances_marked_stale()
            .await
            .context("listing instances marked stale")?;
        let mut items: Vec<StaleItem> = marked
            .into_iter()
            .filter(|instance| is_listed(instance, rule, now))
            .map(|instance| StaleItem {
                days_stale: rule::days_stale(&instance, now),
                instance,
            })
            .collect();
        items.sort_by_key(|item| (rule::last_alive(&item.instance), item.instance.id));
        Ok(StaleList {
            threshold_days: rule.threshold_days(),
            scanned_at: self.scanned_at(),
            items,
        })
    }
}

/// Whether a marked instance is listed as stale at `now`.
fn is_listed(instance: &Instance, rule: StaleRule, now: DateTime<Utc>) -> bool {
    instance.stale_since.is_some()
        && !matches!(
            instance.status,
            InstanceStatus::Running | InstanceStatus::Pending | InstanceStatus::Deploying
        )
        && rule.is_stale(instance, now)
}

/// `instance 7 of shop/prod (v2)`: how events name an instance.
fn describe(instance: &Instance) -> String {
    format!(
        "instance {} of {}/{} ({})",
        instance.id, instance.project_name, instance.stage_name, instance.image_tag
    )
}

/// The scanner running as a job on the shared scheduler. Cheap to clone.
#[derive(Debug, Clone)]
pub struct StaleHandle {
    scanner: StaleScanner,
    job: JobHandle,
}

/// Starts the scan job: every `stale_scan_interval` (re-planned when the settings change), and
/// once as soon as `first_scan_after` resolves (Docker sync's first reconcile), unless the app
/// stops first.
pub fn start(
    scanner: StaleScanner,
    scheduler: &Scheduler,
    first_scan_after: impl Future<Output = ()> + Send + 'static,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
) -> StaleHandle {
    let plan = Plan::watch(scanner.deps().settings.subscribe(), |settings| {
        Cadence::Every(settings.effective_stale_scan_interval())
    });
    let job_scanner = scanner.clone();
    let job = scheduler.spawn(JobSpec::new("stale-scan", plan), move || {
        let scanner = job_scanner.clone();
        async move {
            scanner.scan().await?;
            Ok(())
        }
    });
    let first = job.clone();
    tasks.spawn(async move {
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = first_scan_after => first.trigger(),
        }
    });
    StaleHandle { scanner, job }
}

impl StaleHandle {
    pub fn scanner(&self) -> &StaleScanner {
        &self.scanner
    }

    /// Scans now through the job (after a scan in progress, never beside it) and returns what
    /// that scan found.
    pub async fn scan_now(&self) -> Result<ScanReport, ScanError> {
        let outcome = self.job.run_now().await;
        let last = self.scanner.state().last.clone();
        match (outcome, last) {
            (Ok(()), Some(Ok(report))) => Ok(report),
            (Ok(()), _) => Err(ScanError::Failed("the scan left no report".to_owned())),
            (Err(RunError::Stopped), _) => Err(ScanError::Stopped),
            (Err(RunError::Failed(_)), Some(Err(error))) => Err(error),
            (Err(RunError::Failed(message)), _) => Err(ScanError::Failed(message)),
        }
    }

    /// Asks for a scan soon and returns at once.
    pub fn trigger(&self) {
        self.job.trigger();
    }
}
