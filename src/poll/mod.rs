//! Registry watching (SPEC §3): the [`Poller`] keeps one job per stage on the shared scheduler,
//! at the stage's `schedule` (or the live `default_poll_schedule` setting), polls the project's
//! repository when a job fires, a webhook announces a push or a user asks, and carries out what
//! [`plan`] decides: deploy, sync a per-tag stage, or record an available tag.
//!
//! # One cycle per project
//! Stages of one project share one repository, so they share one poll of it: a *cycle* lists the
//! tags once, `HEAD`s each tag any of the polled stages needs once, and plans every stage from
//! that. Whoever wants a stage polled (its job, the API, a webhook for the whole project) adds it
//! to the project's queue and awaits its report. One driver task per project runs cycles while
//! the queue is not empty; requests arriving during a cycle are served together by the next one.
//! So stages firing together (the same schedule, a webhook, the start of the application) are one
//! cycle, cycles of one project never overlap, and different projects poll in parallel (the
//! registry client bounds the requests in flight per registry host).
//!
//! # Failures
//! A repository that cannot be listed or resolved backs off exponentially (1 s doubling to 1 h,
//! longer when the registry sends `Retry-After`; see [`backoff`]): scheduled polls skip it until
//! then, polls asked for by hand and webhooks try anyway (except against a rate limit). The start
//! of an outage is one `warn` event and its end one recorded `info`, never one per retry. This
//! state lives in memory: after a restart, a repository that is still failing is reported once
//! more, which is the honest thing to say after a restart. A repository that does not exist yet
//! is not a failure: it has no tags (a project is often created before its first push).
//!
//! # Deploys
//! A deploy or per-tag sync is started on the task tracker and not awaited by the cycle, so a
//! long health gate on one stage never holds up the polls of others; the deployer's per-stage
//! lock serialises deploys of a stage (latest target wins). A poll that decides the deploy
//! already in flight does not start it again. Digests whose deploy failed are skipped (the store
//! remembers them across restarts), and `min_release_age` counts from the first time the stage
//! saw a digest, also kept in the store.
//!
//! # Layout
//! - [`plan`]: the pure decision for one stage.
//! - [`backoff`]: the health of a repository (backoff, outage transitions).
//! - [`webhook`]: registry webhook payloads and matching them to projects.

pub mod backoff;
mod config_change;
pub mod plan;
pub mod webhook;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures::future::{BoxFuture, Shared};
use futures::{FutureExt, StreamExt};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::SharedClock;
use crate::deploy::{DeployOutcome, DeployRequest, Deployer};
use crate::domain::event::{EventKind, NewEvent, Source};
use crate::domain::image_ref::Digest;
use crate::domain::instance::{Deployment, InstanceFilter, InstanceStatus, Trigger};
use crate::domain::project::Project;
use crate::domain::schedule::Schedule;
use crate::domain::settings::Settings;
use crate::domain::stage::Stage;
use crate::domain::tag_policy::PolicyMode;
use crate::events::EventBus;
use crate::metrics::Metrics;
use crate::registry::{RegistryClient, RegistryError};
use crate::scheduler::{Cadence, JobHandle, JobSpec, Plan, Scheduler};
use crate::settings::LiveSettings;
use crate::store::{Store, StoreError};

use backoff::{RepositoryHealth, Transition};
use plan::{
    CurrentInstance, Decision, PlanInput, StagePlan, TagDigest, TagInstance, plan_stage, tags_to_resolve,
};
use webhook::Push;

/// `HEAD` requests of one cycle in flight at once (the registry client also bounds each host).
const HEADS_IN_FLIGHT: usize = 8;
/// Projects polled at once by [`Poller::poll_all`].
const PROJECTS_IN_FLIGHT: usize = 64;
/// How often a cycle re-selects when a tag vanished between the listing and its `HEAD`.
const MAX_RESOLVE_ROUNDS: usize = 3;
/// How long a deploy in progress at shutdown may go on before it is dropped.
const DEPLOY_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// The waits between the polls of a webhook while the pushed tags are not visible yet.
const WEBHOOK_SETTLE_DELAYS: [Duration; 9] = [
    Duration::from_millis(100),
    Duration::from_millis(200),
    Duration::from_millis(400),
    Duration::from_millis(800),
    Duration::from_millis(1600),
    Duration::from_millis(2000),
    // A loaded registry can take longer to link the tag: keep looking for half a minute rather
    // than leave the push to the next scheduled poll, which may be an hour away.
    Duration::from_millis(4000),
    Duration::from_millis(8000),
    Duration::from_millis(15000),
];
/// How long a poll in progress at shutdown may go on.
const POLL_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Everything the poller works with; built once by `app.rs`.
#[derive(Debug, Clone)]
pub struct PollerParts {
    pub store: Store,
    pub bus: EventBus,
    pub settings: LiveSettings,
    pub registry: RegistryClient,
    pub deployer: Deployer,
    pub scheduler: Scheduler,
    pub clock: SharedClock,
    pub metrics: Arc<Metrics>,
    pub tracker: TaskTracker,
    pub shutdown: CancellationToken,
}

/// Watches registries for the stages in the store; see the module documentation. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Poller {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    parts: PollerParts,
    /// The scheduler job of each stage. An async mutex: [`Poller::refresh`] holds it across the
    /// store read, so concurrent refreshes apply in order.
    jobs: tokio::sync::Mutex<HashMap<i64, StageJob>>,
    /// Per project: the stages waiting for the next cycle, and whether a driver runs.
    queues: Mutex<HashMap<i64, ProjectQueue>>,
    /// Per project: the health of its repository (keyed by project because credentials are).
    health: Mutex<HashMap<i64, RepositoryHealth>>,
    /// Per stage: the deploy or sync started by a poll and not finished yet.
    in_flight: Mutex<HashMap<i64, InFlight>>,
    next_generation: AtomicU64,
    /// The registry client's request count already added to the metric.
    requests_counted: AtomicU64,
}

#[derive(Debug)]
struct StageJob {
    handle: JobHandle,
    schedule: Option<Schedule>,
    /// What else a poll depends on; a change polls at once.
    fingerprint: String,
}

/// Who asked for a poll, which decides the deploy's trigger and whether backoff applies.
#[derive(Debug, Clone)]
struct Ask {
    trigger: Trigger,
    actor: Option<String>,
    /// Asked for by a person or a webhook: try even while backing off.
    forced: bool,
}

impl Ask {
    fn scheduled() -> Self {
        Self {
            trigger: Trigger::Poll,
            actor: None,
            forced: false,
        }
    }

    /// Two asks for the same stage in the same cycle: a webhook's trigger wins, and so does
    /// being forced.
    fn merge(&mut self, other: Ask) {
        if other.trigger == Trigger::Webhook {
            self.trigger = Trigger::Webhook;
        }
        self.forced |= other.forced;
        if self.actor.is_none() {
            self.actor = other.actor;
        }
    }
}

type Outcome = Result<PollReport, PollError>;

#[derive(Debug, Default)]
struct ProjectQueue {
    running: bool,
    pending: BTreeMap<i64, Pending>,
}

#[derive(Debug)]
struct Pending {
    ask: Ask,
    waiters: Vec<oneshot::Sender<Outcome>>,
}

/// What a poll found for one stage and what it decided.
#[derive(Debug, Clone)]
pub struct PollReport {
    pub stage_id: i64,
    pub project_id: i64,
    /// The repository's tags, sorted.
    pub tags_seen: Vec<String>,
    /// The digests the cycle resolved (the tags any polled stage of the project needed).
    pub digests: BTreeMap<String, Digest>,
    pub plan: StagePlan,
    /// The deploy or sync this poll started, or the identical one already in flight.
    pub work: Option<DeployWait>,
}

impl PollReport {
    /// Whether this poll saw `push`: its tag listed, at the pushed digest when the payload named
    /// one and the tag was resolved.
    pub fn has_seen(&self, push: &Push) -> bool {
        self.tags_seen.binary_search(&push.tag).is_ok()
            && match (&push.digest, self.digests.get(&push.tag)) {
                (Some(pushed), Some(resolved)) => pushed == resolved,
                _ => true,
            }
    }
}

/// Why a stage could not be polled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PollError {
    #[error("no stage with id {0}")]
    StageNotFound(i64),
    /// Listing the tags or reading a digest failed.
    #[error("polling {repository} failed: {message}")]
    Registry {
        repository: String,
        message: String,
        /// When the next scheduled attempt is.
        retry_at: Option<DateTime<Utc>>,
    },
    /// The repository is failing and its backoff is not over (or the registry asked to wait).
    #[error("{repository} is failing; the next attempt is due at {until}")]
    BackingOff {
        repository: String,
        until: DateTime<Utc>,
    },
    #[error("{0}")]
    Internal(String),
    #[error("the poller is stopping")]
    Stopped,
}

/// How a deploy or sync started by a poll ended.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkOutcome {
    /// The deployment record of a single stage's deploy that ran (succeeded or failed); `None`
    /// for a sync, or a deploy that was superseded or had nothing to do.
    pub deployment: Option<Deployment>,
    /// Why it could not run at all.
    pub error: Option<String>,
}

impl WorkOutcome {
    fn error(message: impl Into<String>) -> Self {
        Self {
            deployment: None,
            error: Some(message.into()),
        }
    }
}

/// A deploy or sync in progress; clones await the same outcome.
#[derive(Clone)]
pub struct DeployWait(Shared<BoxFuture<'static, WorkOutcome>>);

impl std::fmt::Debug for DeployWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeployWait(..)")
    }
}

impl DeployWait {
    pub async fn outcome(self) -> WorkOutcome {
        self.0.await
    }
}

/// What a poll started.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Work {
    Deploy(TagDigest),
    Sync(Vec<TagDigest>),
}

#[derive(Debug)]
struct InFlight {
    work: Work,
    generation: u64,
    wait: DeployWait,
}

/// What one cycle learned from the registry.
struct Found {
    /// Listed tags minus those whose `HEAD` said they vanished.
    tags: Vec<String>,
    digests: BTreeMap<String, Digest>,
}

impl Poller {
    pub fn new(parts: PollerParts) -> Self {
        Self {
            inner: Arc::new(Inner {
                parts,
                jobs: Default::default(),
                queues: Default::default(),
                health: Default::default(),
                in_flight: Default::default(),
                next_generation: AtomicU64::new(0),
                requests_counted: AtomicU64::new(0),
            }),
        }
    }

    fn parts(&self) -> &PollerParts {
        &self.inner.parts
    }

    /// Brings the scheduler jobs in line with the stages in the store: a job for each new stage
    /// (which polls at once), a new job for a stage whose schedule changed, an immediate poll for
    /// one whose policy changed, and no job for a deleted stage. Called at start and by the
    /// stage API after every create, update and delete.
    pub async fn refresh(&self) -> anyhow::Result<()> {
        let mut jobs = self.inner.jobs.lock().await;
        let stages = self
            .parts()
            .store
            .list_all_stages()
            .await
            .context("loading the stages to poll")?;
        let mut wanted = BTreeSet::new();
        for stage in &stages {
            wanted.insert(stage.id);
            let fingerprint = fingerprint(stage);
            if let Some(job) = jobs.get_mut(&stage.id)
                && job.schedule == stage.schedule
                && !job.handle.is_stopped()
            {
                if job.fingerprint != fingerprint {
                    job.fingerprint = fingerprint;
                    job.handle.trigger();
                }
                continue;
            }
            if let Some(old) = jobs.remove(&stage.id) {
                old.handle.stop();
            }
            let handle = self.spawn_job(stage);
            jobs.insert(
                stage.id,
                StageJob {
                    handle,
                    schedule: stage.schedule.clone(),
                    fingerprint,
                },
            );
        }
        jobs.retain(|stage_id, job| {
            let keep = wanted.contains(stage_id);
            if !keep {
                job.handle.stop();
            }
            keep
        });
        Ok(())
    }

    /// [`Self::refresh`] for callers that cannot act on a failure (the API answered already):
    /// logs it.
    pub async fn refresh_logged(&self) {
        if let Err(e) = self.refresh().await {
            tracing::error!(error = format!("{e:#}"), "could not re-plan the poll jobs");
        }
    }

    fn spawn_job(&self, stage: &Stage) -> JobHandle {
        let plan = match &stage.schedule {
            Some(schedule) => Plan::schedule(schedule.clone()),
            None => Plan::watch(self.parts().settings.subscribe(), |settings: &Settings| {
                Cadence::Schedule(settings.default_poll_schedule.clone())
            }),
        };
        let spec = JobSpec::new("poll", plan)
            .run_at_start()
            .shutdown_grace(POLL_SHUTDOWN_GRACE);
        let poller = self.clone();
        let (stage_id, project_id) = (stage.id, stage.project_id);
        self.parts().scheduler.spawn(spec, move || {
            let poller = poller.clone();
            async move {
                poller.scheduled_poll(project_id, stage_id).await;
                Ok(())
            }
        })
    }

    /// One scheduled poll. Failures are the poller's to report (once per outage, as events),
    /// not the scheduler's, so they end here as debug logs.
    async fn scheduled_poll(&self, project_id: i64, stage_id: i64) {
        match self
            .request(project_id, &[stage_id], Ask::scheduled())
            .await
            .pop()
        {
            Some((_, Ok(report))) => {
                tracing::debug!(stage_id, decision = report.plan.decision.as_str(), "polled")
            }
            Some((_, Err(e))) => tracing::debug!(stage_id, error = %e, "poll did not run"),
            None => {}
        }
    }

    /// Polls one stage now (the API): tries even while the repository backs off. A deploy the
    /// poll starts is not awaited here: [`PollReport::work`] is its outcome to await. `actor` is
    /// the user, recorded on that deploy.
    pub async fn poll_now(&self, stage_id: i64, actor: Option<String>) -> Result<PollReport, PollError> {
        let stage = match self.parts().store.get_stage(stage_id).await {
            Ok(stage) => stage,
            Err(StoreError::NotFound) => return Err(PollError::StageNotFound(stage_id)),
            Err(e) => return Err(PollError::Internal(e.to_string())),
        };
        let ask = Ask {
            trigger: Trigger::Poll,
            actor,
            forced: true,
        };
        self.request(stage.project_id, &[stage_id], ask)
            .await
            .pop()
            .map_or(Err(PollError::Stopped), |(_, outcome)| outcome)
    }

    /// Polls every stage of a project in one cycle, in the background, because a webhook
    /// announced `pushes` to its repository. Deploys it leads to have the trigger `webhook`.
    ///
    /// A registry may notify before the push is visible: distribution sends its event when the
    /// manifest is stored, a moment before it links the tag to it. So while a pushed tag is not
    /// listed yet, or still resolves to another digest than the one pushed, or the registry
    /// answers an error, the project is polled again, a few times over about five seconds.
    pub fn poll_project_in_background(&self, project_id: i64, pushes: Vec<Push>) {
        let poller = self.clone();
        self.parts().tracker.spawn(async move {
            let ask = Ask {
                trigger: Trigger::Webhook,
                actor: None,
                forced: true,
            };
            let mut delays = WEBHOOK_SETTLE_DELAYS.iter();
            loop {
                let outcomes = match poller.poll_project(project_id, ask.clone()).await {
                    Ok(outcomes) => outcomes,
                    Err(e) => {
                        tracing::warn!(project_id, error = format!("{e:#}"), "webhook poll failed");
                        return;
                    }
                };
                let mut settled = true;
                for (stage_id, outcome) in &outcomes {
                    match outcome {
                        Ok(report) => {
                            settled &= pushes.iter().all(|push| report.has_seen(push));
                            tracing::debug!(
                                project_id,
                                stage_id,
                                decision = report.plan.decision.as_str(),
                                "webhook poll"
                            );
                        }
                        // A registry error right after a push is often the push itself: a
                        // registry reading a tag link while it is being written answers 500.
                        // The push is known to exist, so it is tried again over the settle
                        // delays (the poll reports the failure itself, once per outage).
                        Err(e @ PollError::Registry { .. }) => {
                            tracing::info!(project_id, stage_id, error = %e, "webhook poll failed; trying again");
                            settled = false;
                        }
                        // Anything else (a rate limit's wait, a stage gone) is not helped by
                        // trying again now; the schedule and the backoff take it from here.
                        Err(e) => {
                            tracing::info!(project_id, stage_id, error = %e, "webhook poll failed");
                            return;
                        }
                    }
                }
                let Some(delay) = delays.next().filter(|_| !settled && !outcomes.is_empty()) else {
                    return;
                };
                tokio::select! {
                    () = tokio::time::sleep(*delay) => {}
                    () = poller.parts().shutdown.cancelled() => return,
                }
            }
        });
    }

    /// Polls every stage of every project now, one cycle per project, projects in parallel, and
    /// answers each stage's outcome (the benchmark's "full poll cycle"). Tries even while a
    /// repository backs off.
    pub async fn poll_all(&self) -> anyhow::Result<Vec<(i64, Result<PollReport, PollError>)>> {
        let stages = self
            .parts()
            .store
            .list_all_stages()
            .await
            .context("loading the stages to poll")?;
        let mut by_project: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
        for stage in &stages {
            by_project.entry(stage.project_id).or_default().push(stage.id);
        }
        let ask = Ask {
            trigger: Trigger::Poll,
            actor: None,
            forced: true,
        };
        let outcomes: Vec<Vec<(i64, Outcome)>> = futures::stream::iter(by_project)
            .map(|(project_id, stage_ids)| {
                let ask = ask.clone();
                async move { self.request(project_id, &stage_ids, ask).await }
            })
            .buffer_unordered(PROJECTS_IN_FLIGHT)
            .collect()
            .await;
        Ok(outcomes.into_iter().flatten().collect())
    }

    /// The projects a webhook's pushes went to, each with its pushes, by project id.
    pub async fn match_pushes(&self, pushes: &[Push]) -> anyhow::Result<Vec<(i64, Vec<Push>)>> {
        if pushes.is_empty() {
            return Ok(Vec::new());
        }
        let projects = self
            .parts()
            .store
            .list_projects()
            .await
            .context("loading the projects")?;
        Ok(projects
            .iter()
            .filter_map(|project| {
                let matching: Vec<Push> = pushes
                    .iter()
                    .filter(|push| webhook::push_matches(&project.image, push))
                    .cloned()
                    .collect();
                (!matching.is_empty()).then_some((project.id, matching))
            })
            .collect())
    }

    async fn poll_project(&self, project_id: i64, ask: Ask) -> anyhow::Result<Vec<(i64, Outcome)>> {
        let stage_ids: Vec<i64> = match self.parts().store.list_stages(project_id).await {
            Ok(stages) => stages.iter().map(|s| s.id).collect(),
            Err(StoreError::NotFound) => return Ok(Vec::new()),
            Err(e) => return Err(e).context("loading the project's stages"),
        };
        if stage_ids.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.request(project_id, &stage_ids, ask).await)
    }

    /// Queues `stage_ids` for the project's next cycle (starting its driver if none runs) and
    /// waits for their outcomes.
    async fn request(&self, project_id: i64, stage_ids: &[i64], ask: Ask) -> Vec<(i64, Outcome)> {
        if self.parts().shutdown.is_cancelled() {
            return stage_ids
                .iter()
                .map(|id| (*id, Err(PollError::Stopped)))
                .collect();
        }
        let mut receivers = Vec::with_capacity(stage_ids.len());
        let start_driver = {
            let mut queues = lock(&self.inner.queues);
            let queue = queues.entry(project_id).or_default();
            for stage_id in stage_ids {
                let (tx, rx) = oneshot::channel();
                match queue.pending.get_mut(stage_id) {
                    Some(pending) => {
                        pending.ask.merge(ask.clone());
                        pending.waiters.push(tx);
                    }
                    None => {
                        queue.pending.insert(
                            *stage_id,
                            Pending {
                                ask: ask.clone(),
                                waiters: vec![tx],
                            },
                        );
                    }
                }
                receivers.push((*stage_id, rx));
            }
            !std::mem::replace(&mut queue.running, true)
        };
        if start_driver {
            let poller = self.clone();
            self.parts()
                .tracker
                .spawn(async move { poller.drive(project_id).await });
        }
        let mut outcomes = Vec::with_capacity(receivers.len());
        for (stage_id, rx) in receivers {
            outcomes.push((stage_id, rx.await.unwrap_or(Err(PollError::Stopped))));
        }
        outcomes
    }

    /// Runs the project's cycles while stages are queued.
    async fn drive(&self, project_id: i64) {
        loop {
            let batch = {
                let mut queues = lock(&self.inner.queues);
                let Some(queue) = queues.get_mut(&project_id) else {
                    return;
                };
                if queue.pending.is_empty() {
                    queues.remove(&project_id);
                    return;
                }
                std::mem::take(&mut queue.pending)
            };
            let mut outcomes = if self.parts().shutdown.is_cancelled() {
                HashMap::new()
            } else {
                let asks: BTreeMap<i64, Ask> = batch.iter().map(|(id, p)| (*id, p.ask.clone())).collect();
                self.cycle_until_shutdown(project_id, &asks).await
            };
            for (stage_id, pending) in batch {
                let outcome = outcomes.remove(&stage_id).unwrap_or(Err(PollError::Stopped));
                for waiter in pending.waiters {
                    let _ = waiter.send(outcome.clone());
                }
            }
        }
    }

    /// Runs a cycle, catching a panic (which must not leave the queue marked running forever);
    /// at shutdown the cycle gets a grace period, so a slow registry cannot hold up the stop.
    async fn cycle_until_shutdown(
        &self,
        project_id: i64,
        asks: &BTreeMap<i64, Ask>,
    ) -> HashMap<i64, Outcome> {
        let cycle = AssertUnwindSafe(self.cycle(project_id, asks)).catch_unwind();
        tokio::pin!(cycle);
        let shutdown = self.parts().shutdown.clone();
        let result = tokio::select! {
            result = &mut cycle => result,
            () = shutdown.cancelled() => match tokio::time::timeout(POLL_SHUTDOWN_GRACE, &mut cycle).await {
                Ok(result) => result,
                Err(_) => return HashMap::new(),
            },
        };
        result.unwrap_or_else(|_| {
            tracing::error!(project_id, "a poll cycle panicked");
            asks.keys()
                .map(|id| (*id, Err(PollError::Internal("the poll cycle panicked".into()))))
                .collect()
        })
    }

    /// One cycle: list the repository's tags once, resolve the digests the stages need once,
    /// then plan and act for each stage.
    async fn cycle(&self, project_id: i64, asks: &BTreeMap<i64, Ask>) -> HashMap<i64, Outcome> {
        let mut outcomes = HashMap::new();
        let project = match self.parts().store.get_project(project_id).await {
            Ok(project) => project,
            Err(StoreError::NotFound) => {
                return asks
                    .keys()
                    .map(|id| (*id, Err(PollError::StageNotFound(*id))))
                    .collect();
            }
            Err(e) => return internal_for_all(asks, &anyhow::Error::from(e)),
        };
        let stages: Vec<Stage> = match self.parts().store.list_stages(project_id).await {
            Ok(stages) => stages.into_iter().filter(|s| asks.contains_key(&s.id)).collect(),
            Err(e) => return internal_for_all(asks, &anyhow::Error::from(e)),
        };
        for stage_id in asks.keys() {
            if !stages.iter().any(|s| s.id == *stage_id) {
                outcomes.insert(*stage_id, Err(PollError::StageNotFound(*stage_id)));
            }
        }
        if stages.is_empty() {
            return outcomes;
        }
        let repository = project.image.name();
        let forced = stages.iter().any(|s| asks.get(&s.id).is_some_and(|a| a.forced));
        let waiting = lock(&self.inner.health)
            .get(&project_id)
            .and_then(|health| health.wait_until(self.parts().clock.now(), forced));
        if let Some(until) = waiting {
            for stage in &stages {
                outcomes.insert(
                    stage.id,
                    Err(PollError::BackingOff {
                        repository: repository.clone(),
                        until,
                    }),
                );
            }
            return outcomes;
        }

        self.parts().metrics.polls.inc_by(stages.len() as u64);
        let found = self.look(&project, &stages).await;
        self.count_registry_requests();
        let found = match found {
            Ok(found) => {
                self.record_success(&project).await;
                found
            }
            Err(Looked::Registry(error)) => {
                let retry_at = self.record_failure(&project, &error).await;
                self.parts().metrics.poll_errors.inc_by(stages.len() as u64);
                for stage in &stages {
                    outcomes.insert(
                        stage.id,
                        Err(PollError::Registry {
                            repository: repository.clone(),
                            message: error.to_string(),
                            retry_at,
                        }),
                    );
                }
                return outcomes;
            }
            Err(Looked::Internal(error)) => {
                self.parts().metrics.poll_errors.inc_by(stages.len() as u64);
                let polled: BTreeMap<i64, ()> = stages.iter().map(|s| (s.id, ())).collect();
                outcomes.extend(internal_for_all(&polled, &error));
                return outcomes;
            }
        };

        for stage in &stages {
            let ask = asks.get(&stage.id).cloned().unwrap_or_else(Ask::scheduled);
            let outcome = self.decide(stage, &found, ask).await.map_err(|e| {
                tracing::error!(stage_id = stage.id, error = format!("{e:#}"), "poll failed");
                PollError::Internal(format!("{e:#}"))
            });
            outcomes.insert(stage.id, outcome);
        }
        outcomes
    }

    /// Lists the tags and resolves the digests every polled stage needs, each tag once.
    async fn look(&self, project: &Project, stages: &[Stage]) -> Result<Found, Looked> {
        let access = self
            .parts()
            .deployer
            .repository_access(project)
            .await
            .map_err(|e| Looked::Internal(e.into()))?;
        let registry = &self.parts().registry;
        let mut tags = match registry.list_tags(&access).await {
            Ok(tags) => tags,
            Err(RegistryError::NotFound) => Vec::new(),
            Err(e) => return Err(Looked::Registry(e)),
        };
        let mut digests = BTreeMap::new();
        for _ in 0..MAX_RESOLVE_ROUNDS {
            let needed: BTreeSet<String> = stages
                .iter()
                .flat_map(|stage| tags_to_resolve(&stage.tag_policy, &tags))
                .filter(|tag| !digests.contains_key(*tag))
                .map(str::to_owned)
                .collect();
            if needed.is_empty() {
                break;
            }
            let answers: Vec<(String, Result<Digest, RegistryError>)> = futures::stream::iter(needed)
                .map(|tag| {
                    let access = &access;
                    async move {
                        let digest = registry.manifest_digest(access, &tag).await;
                        (tag, digest)
                    }
                })
                .buffer_unordered(HEADS_IN_FLIGHT)
                .collect()
                .await;
            for (tag, answer) in answers {
                match answer {
                    Ok(digest) => {
                        digests.insert(tag, digest);
                    }
                    // Deleted since the listing: as if it had not been listed. The stages'
                    // selection is made again without it.
                    Err(RegistryError::NotFound) => tags.retain(|t| *t != tag),
                    Err(e) => return Err(Looked::Registry(e)),
                }
            }
        }
        Ok(Found { tags, digests })
    }

    /// Gathers one stage's inputs, plans, and acts on the decision.
    async fn decide(&self, stage: &Stage, found: &Found, ask: Ask) -> anyhow::Result<PollReport> {
        let store = &self.parts().store;
        let now = self.parts().clock.now();
        let candidates: Vec<&str> = tags_to_resolve(&stage.tag_policy, &found.tags)
            .into_iter()
            .filter_map(|tag| found.digests.get(tag).map(Digest::as_str))
            .collect();
        let first_seen = store
            .digests_first_seen(stage.id, &candidates, now)
            .await
            .context("reading when the digests were first seen")?;
        let first_seen: BTreeMap<Digest, DateTime<Utc>> = first_seen
            .into_iter()
            .filter_map(|(digest, at)| Some((Digest::parse(&digest).ok()?, at)))
            .collect();
        let failed: BTreeSet<Digest> = store
            .failed_digests(stage.id)
            .await
            .context("reading the failed digests")?
            .iter()
            .filter_map(|digest| Digest::parse(digest).ok())
            .collect();
        let (current, per_tag) = match stage.tag_policy.mode() {
            PolicyMode::Single => (self.current_instance(stage).await?, BTreeMap::new()),
            PolicyMode::PerTag => (None, self.tag_instances(stage).await?),
        };
        let plan = plan_stage(&PlanInput {
            policy: &stage.tag_policy,
            auto_deploy: stage.auto_deploy,
            min_release_age: stage.min_release_age,
            tags: &found.tags,
            digests: &found.digests,
            current: current.as_ref(),
            per_tag: &per_tag,
            failed: &failed,
            first_seen: &first_seen,
            now,
        });

        let changed = store
            .record_available_tag(
                stage.id,
                plan.selected.as_ref().map(|s| s.tag.as_str()),
                plan.selected.as_ref().map(|s| s.digest.as_str()),
                now,
            )
            .await
            .context("recording the available tag")?;
        let work = match &plan.decision {
            Decision::Available {
                target,
                is_update: true,
            } if changed => {
                self.parts()
                    .bus
                    .publish(
                        NewEvent::info(
                            Source::Poller,
                            format!(
                                "stage {}: {} is available ({})",
                                stage.name,
                                target.tag,
                                target.digest.short()
                            ),
                        )
                        .kind(EventKind::UpdateAvailable)
                        .project(stage.project_id)
                        .stage(stage.id)
                        .recorded()
                        .detail("tag", target.tag.as_str())
                        .detail("digest", target.digest.as_str()),
                    )
                    .await;
                None
            }
            Decision::Deploy(target) => Some(self.start_work(stage.id, Work::Deploy(target.clone()), &ask)),
            Decision::PerTag(per_tag) => {
                Some(self.start_work(stage.id, Work::Sync(per_tag.desired.clone()), &ask))
            }
            Decision::WaitReleaseAge { target, until } => {
                tracing::debug!(stage_id = stage.id, tag = %target.tag, %until, "waiting for the release age");
                None
            }
            _ => None,
        };
        Ok(PollReport {
            stage_id: stage.id,
            project_id: stage.project_id,
            tags_seen: found.tags.clone(),
            digests: found.digests.clone(),
            plan,
            work,
        })
    }

    async fn current_instance(&self, stage: &Stage) -> anyhow::Result<Option<CurrentInstance>> {
        let Some(instance_id) = stage.current_instance_id else {
            return Ok(None);
        };
        match self.parts().store.get_instance(instance_id).await {
            Ok(instance) => Ok(Some(CurrentInstance {
                tag: instance.image_tag,
                digest: instance
                    .image_digest
                    .as_deref()
                    .and_then(|d| Digest::parse(d).ok()),
            })),
            Err(StoreError::NotFound) => Ok(None),
            Err(e) => Err(e).context("reading the current instance"),
        }
    }

    /// The newest instance of each tag of a per-tag stage (instances being removed do not count).
    async fn tag_instances(&self, stage: &Stage) -> anyhow::Result<BTreeMap<String, TagInstance>> {
        let filter = InstanceFilter {
            stage_id: Some(stage.id),
            ..Default::default()
        };
        let instances = self
            .parts()
            .store
            .list_instances(&filter)
            .await
            .context("reading the stage's instances")?;
        let mut newest = BTreeMap::new();
        // Newest first: the first instance of a tag is its newest.
        for instance in instances {
            if instance.status == InstanceStatus::Removing || newest.contains_key(&instance.image_tag) {
                continue;
            }
            let active = matches!(
                instance.status,
                InstanceStatus::Pending | InstanceStatus::Deploying | InstanceStatus::Running
            );
            newest.insert(
                instance.image_tag,
                TagInstance {
                    digest: instance
                        .image_digest
                        .as_deref()
                        .and_then(|d| Digest::parse(d).ok()),
                    active,
                },
            );
        }
        Ok(newest)
    }

    /// Starts a deploy or sync on the task tracker, unless the same one is already in flight;
    /// either way answers a handle on its outcome.
    fn start_work(&self, stage_id: i64, work: Work, ask: &Ask) -> DeployWait {
        let mut in_flight = lock(&self.inner.in_flight);
        if let Some(current) = in_flight.get(&stage_id)
            && current.work == work
        {
            return current.wait.clone();
        }
        let generation = self.inner.next_generation.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let wait = DeployWait(
            rx.map(|outcome| outcome.unwrap_or_else(|_| WorkOutcome::error("the deploy was abandoned")))
                .boxed()
                .shared(),
        );
        in_flight.insert(
            stage_id,
            InFlight {
                work: work.clone(),
                generation,
                wait: wait.clone(),
            },
        );
        drop(in_flight);

        let poller = self.clone();
        let ask = ask.clone();
        self.parts().tracker.spawn(async move {
            let outcome = poller.run_work(stage_id, work, ask).await;
            let _ = tx.send(outcome);
            let mut in_flight = lock(&poller.inner.in_flight);
            if in_flight
                .get(&stage_id)
                .is_some_and(|f| f.generation == generation)
            {
                in_flight.remove(&stage_id);
            }
        });
        wait
    }

    async fn run_work(&self, stage_id: i64, work: Work, ask: Ask) -> WorkOutcome {
        let deployer = self.parts().deployer.clone();
        let run = async move {
            match work {
                Work::Deploy(target) => {
                    let request = DeployRequest {
                        tag: target.tag,
                        digest: Some(target.digest),
                        trigger: ask.trigger,
                        actor: ask.actor,
                    };
                    match deployer.deploy(stage_id, request).await {
                        Ok(DeployOutcome::Succeeded(deployment) | DeployOutcome::Failed(deployment)) => {
                            WorkOutcome {
                                deployment: Some(deployment),
                                error: None,
                            }
                        }
                        Ok(_) => WorkOutcome {
                            deployment: None,
                            error: None,
                        },
                        Err(e) => WorkOutcome::error(format!("{e:#}")),
                    }
                }
                Work::Sync(tags) => {
                    let tags = tags.into_iter().map(|t| (t.tag, t.digest)).collect();
                    match deployer.sync_per_tag(stage_id, tags, ask.trigger).await {
                        Ok(()) => WorkOutcome {
                            deployment: None,
                            error: None,
                        },
                        Err(e) => WorkOutcome::error(format!("{e:#}")),
                    }
                }
            }
        };
        tokio::pin!(run);
        let shutdown = self.parts().shutdown.clone();
        let outcome = tokio::select! {
            outcome = &mut run => outcome,
            () = shutdown.cancelled() => match tokio::time::timeout(DEPLOY_SHUTDOWN_GRACE, &mut run).await {
                Ok(outcome) => outcome,
                Err(_) => WorkOutcome::error("stopped by shutdown"),
            },
        };
        if let Some(error) = &outcome.error {
            tracing::warn!(stage_id, error = %error, "a deploy started by a poll did not run");
        }
        outcome
    }

    async fn record_success(&self, project: &Project) {
        let transition = lock(&self.inner.health)
            .entry(project.id)
            .or_default()
            .record_success();
        if let Transition::Recovered { failures } = transition {
            let message = format!(
                "polling {} works again (after {failures} failed attempt{})",
                project.image.name(),
                if failures == 1 { "" } else { "s" }
            );
            self.parts()
                .bus
                .publish(
                    NewEvent::info(Source::Poller, message)
                        .kind(EventKind::RegistryRecovered)
                        .project(project.id)
                        .recorded()
                        .detail("repository", project.image.name())
                        .detail("failures", failures),
                )
                .await;
        }
    }

    /// Records a failed poll; answers when the next scheduled attempt is.
    async fn record_failure(&self, project: &Project, error: &RegistryError) -> Option<DateTime<Utc>> {
        let now = self.parts().clock.now();
        let retry_after = match error {
            RegistryError::RateLimited { retry_after } => *retry_after,
            _ => None,
        };
        let (transition, retry_at) = {
            let mut health = lock(&self.inner.health);
            let health = health.entry(project.id).or_default();
            let transition = health.record_failure(now, retry_after);
            (transition, health.wait_until(now, false))
        };
        tracing::debug!(project_id = project.id, error = %error, ?retry_at, "poll failed");
        if transition == Transition::StartedFailing {
            self.parts()
                .bus
                .publish(
                    NewEvent::warn(
                        Source::Poller,
                        format!("cannot poll {}: {error}", project.image.name()),
                    )
                    .kind(EventKind::RegistryBackoff)
                    .project(project.id)
                    .detail("repository", project.image.name())
                    .detail("error", error.to_string()),
                )
                .await;
        }
        retry_at
    }

    /// Adds the registry requests sent since the last call to the metric. `fetch_max` makes
    /// concurrent cycles count every request once.
    fn count_registry_requests(&self) {
        let now = self.parts().registry.request_count();
        let before = self.inner.requests_counted.fetch_max(now, Ordering::Relaxed);
        if now > before {
            self.parts().metrics.registry_requests.inc_by(now - before);
        }
    }
}

/// Why [`Poller::look`] failed.
enum Looked {
    Registry(RegistryError),
    Internal(anyhow::Error),
}

fn internal_for_all<V>(stages: &BTreeMap<i64, V>, error: &anyhow::Error) -> HashMap<i64, Outcome> {
    tracing::error!(error = format!("{error:#}"), "poll failed");
    stages
        .keys()
        .map(|id| (*id, Err(PollError::Internal(format!("{error:#}")))))
        .collect()
}

/// What else than the schedule a poll depends on: a change is worth polling at once.
fn fingerprint(stage: &Stage) -> String {
    format!(
        "{}|{}|{:?}",
        stage.tag_policy,
        stage.auto_deploy,
        stage.min_release_age.map(|age| age.to_string())
    )
}

/// Locks a mutex, taking over a poisoned one: the maps stay consistent between statements.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
