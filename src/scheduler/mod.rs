//! The scheduler: the one loop every periodic job runs in (event retention, the registry
//! poller, the stale scanner). A job is an async function returning `anyhow::Result<()>`; the
//! scheduler decides when it runs, and guarantees that two runs of the same job never overlap.
//!
//! A job runs by its [`Cadence`] — a fixed period, a cron [`Schedule`], or only on demand —
//! which comes from a [`Plan`]: fixed at spawn, or recomputed whenever a `watch` channel
//! changes, so a setting changed through the API takes effect for the next run without a
//! restart. It also runs when poked through its [`JobHandle`] (`trigger` to ask, `run_now` to
//! ask and wait for the outcome). Pokes that arrive while a run is in progress are served by
//! one more run after it, not by one run each.
//!
//! Waiting is done on tokio's monotonic clock, so a paused runtime drives the loop in tests and
//! a wall-clock jump never makes a period run twice. The injected [`Clock`] only answers "what
//! time is it" for cron expressions, whose next time is re-checked at least every minute so a
//! moved clock (or a suspended machine) is noticed. A failed or panicking run is logged and the
//! loop goes on; the shutdown token ends every loop, after giving a running job a grace period.
//!
//! [`Clock`]: crate::clock::Clock

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::SharedClock;
use crate::domain::schedule::Schedule;

/// The shortest period: anything shorter is raised to it, as `@every` schedules are, so a
/// mistaken zero cannot spin the loop.
pub const MIN_PERIOD: Duration = Duration::from_secs(1);

/// The longest a cron wait sleeps before asking the clock again, so a clock moved forward (tests
/// do it, NTP does it) or a machine resumed from suspend is noticed within this time.
const CRON_RECHECK: Duration = Duration::from_secs(60);

/// How long a running job may finish once shutdown is requested, unless the job says otherwise.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How many pokes may queue while a run is in progress; they are all served by one run, so
/// more would add nothing.
const REQUEST_QUEUE: usize = 64;

/// When a job runs by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cadence {
    /// Every period (at least [`MIN_PERIOD`]), counted from the start of the previous run.
    Every(Duration),
    /// At the times of a cron expression or descriptor, in UTC on the injected clock. An
    /// `@every` schedule behaves as [`Cadence::Every`].
    Schedule(Schedule),
    /// Never by itself: only when poked through its [`JobHandle`].
    OnDemand,
}

impl std::fmt::Display for Cadence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Every(period) => write!(f, "every {period:?}"),
            Self::Schedule(schedule) => write!(f, "{schedule}"),
            Self::OnDemand => f.write_str("on demand"),
        }
    }
}

/// Where a job's cadence comes from.
pub struct Plan {
    source: PlanSource,
}

enum PlanSource {
    Fixed(Cadence),
    Watched(Box<dyn WatchedCadence>),
}

/// A cadence derived from a watched value; boxed so [`Plan`] needs no type parameter.
trait WatchedCadence: Send {
    /// The cadence for the value as it is now (marking it seen).
    fn current(&mut self) -> Cadence;
    /// Resolves when the value changes; `false` once it never can again.
    fn changed(&mut self) -> BoxFuture<'_, bool>;
}

struct Watched<T, F> {
    receiver: watch::Receiver<T>,
    derive: F,
}

impl<T, F> WatchedCadence for Watched<T, F>
where
    T: Send + Sync + 'static,
    F: Fn(&T) -> Cadence + Send + 'static,
{
    fn current(&mut self) -> Cadence {
        (self.derive)(&self.receiver.borrow_and_update())
    }

    fn changed(&mut self) -> BoxFuture<'_, bool> {
        Box::pin(async move { self.receiver.changed().await.is_ok() })
    }
}

impl Plan {
    /// A cadence that never changes.
    pub fn fixed(cadence: Cadence) -> Self {
        Self {
            source: PlanSource::Fixed(cadence),
        }
    }

    /// Every `period` (see [`Cadence::Every`]).
    pub fn every(period: Duration) -> Self {
        Self::fixed(Cadence::Every(period))
    }

    /// At the times of `schedule` (see [`Cadence::Schedule`]).
    pub fn schedule(schedule: Schedule) -> Self {
        Self::fixed(Cadence::Schedule(schedule))
    }

    /// Only when poked.
    pub fn on_demand() -> Self {
        Self::fixed(Cadence::OnDemand)
    }

    /// A cadence derived from a watched value (typically the live settings), recomputed on
    /// every change. A change that derives the same cadence leaves the next run where it was;
    /// a different one re-plans it from the start of the previous run.
    pub fn watch<T, F>(receiver: watch::Receiver<T>, derive: F) -> Self
    where
        T: Send + Sync + 'static,
        F: Fn(&T) -> Cadence + Send + 'static,
    {
        Self {
            source: PlanSource::Watched(Box::new(Watched { receiver, derive })),
        }
    }

    fn current(&mut self) -> Cadence {
        match &mut self.source {
            PlanSource::Fixed(cadence) => cadence.clone(),
            PlanSource::Watched(watched) => watched.current(),
        }
    }

    async fn changed(&mut self) -> bool {
        match &mut self.source {
            PlanSource::Fixed(_) => false,
            PlanSource::Watched(watched) => watched.changed().await,
        }
    }
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            PlanSource::Fixed(cadence) => f.debug_tuple("Plan::Fixed").field(cadence).finish(),
            PlanSource::Watched(_) => f.write_str("Plan::Watched"),
        }
    }
}

/// A job's name, plan and options; see [`Scheduler::spawn`].
#[derive(Debug)]
pub struct JobSpec {
    name: &'static str,
    plan: Plan,
    run_at_start: bool,
    shutdown_grace: Duration,
}

impl JobSpec {
    /// A job named `name` (it appears in logs) running by `plan`.
    pub fn new(name: &'static str, plan: Plan) -> Self {
        Self {
            name,
            plan,
            run_at_start: false,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
        }
    }

    /// Runs once as soon as the job is spawned, then by its plan.
    pub fn run_at_start(mut self) -> Self {
        self.run_at_start = true;
        self
    }

    /// How long a run in progress at shutdown may take to finish before it is dropped.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }
}

/// Why a requested run did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    /// The job returned an error (its whole chain) or panicked.
    #[error("{0}")]
    Failed(String),
    /// The job was stopped, or the application is shutting down.
    #[error("the job is stopped")]
    Stopped,
}

/// One poke; `done` hears the outcome of the run that serves it.
struct RunRequest {
    done: Option<oneshot::Sender<Result<(), RunError>>>,
}

/// A handle on a spawned job: poke it, or stop it. Cheap to clone; dropping every handle does
/// not stop the job.
#[derive(Debug, Clone)]
pub struct JobHandle {
    name: &'static str,
    requests: mpsc::Sender<RunRequest>,
    stop: CancellationToken,
}

impl JobHandle {
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Asks for a run as soon as possible (after the one in progress, if any) and returns at
    /// once.
    pub fn trigger(&self) {
        // A full queue already holds a request that the next run will serve, so this one can go.
        let _ = self.requests.try_send(RunRequest { done: None });
    }

    /// Runs the job as soon as possible and waits for that run's outcome. The run starts after
    /// this call, so it sees everything done before it.
    pub async fn run_now(&self) -> Result<(), RunError> {
        let (done, outcome) = oneshot::channel();
        self.requests
            .send(RunRequest { done: Some(done) })
            .await
            .map_err(|_| RunError::Stopped)?;
        // The sender is dropped unanswered when the loop ends first.
        outcome.await.unwrap_or(Err(RunError::Stopped))
    }

    /// Stops the job: a run in progress gets its shutdown grace, and no run starts after it.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Whether the job's loop has been told to stop (by [`Self::stop`] or at shutdown).
    pub fn is_stopped(&self) -> bool {
        self.stop.is_cancelled()
    }
}

/// Spawns job loops on the application's task tracker, under its shutdown token. Cheap to
/// clone.
#[derive(Debug, Clone)]
pub struct Scheduler {
    tracker: TaskTracker,
    clock: SharedClock,
    shutdown: CancellationToken,
}

impl Scheduler {
    pub fn new(tracker: TaskTracker, clock: SharedClock, shutdown: CancellationToken) -> Self {
        Self {
            tracker,
            clock,
            shutdown,
        }
    }

    /// The clock cron schedules are evaluated on.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// Starts a job's loop. `job` is called once per run; it is never called again before the
    /// future it returned has finished.
    pub fn spawn<F, Fut>(&self, spec: JobSpec, job: F) -> JobHandle
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let (requests, receiver) = mpsc::channel(REQUEST_QUEUE);
        let stop = self.shutdown.child_token();
        let job_loop = JobLoop {
            spec,
            clock: self.clock.clone(),
            stop: stop.clone(),
            requests: receiver,
            _keep_open: requests.clone(),
        };
        let handle = JobHandle {
            name: job_loop.spec.name,
            requests,
            stop,
        };
        self.tracker.spawn(job_loop.run(job));
        handle
    }
}

/// The next time a job runs by itself.
#[derive(Debug, Clone, Copy)]
struct Due {
    /// When the loop wakes up.
    wake: Instant,
    /// For cron schedules, the wall-clock time of the run; waking before it (the wait is capped
    /// at [`CRON_RECHECK`]) only re-plans the wake-up.
    wall: Option<DateTime<Utc>>,
}

impl Due {
    fn now() -> Self {
        Self {
            wake: Instant::now(),
            wall: None,
        }
    }

    /// The next run by `cadence`: a period counts from `anchor` (the start of the previous run,
    /// or of the loop), and runs at once when that is already past.
    fn next(cadence: &Cadence, anchor: Instant, clock: &SharedClock) -> Option<Self> {
        match period_of(cadence) {
            Some(period) => {
                let wake = anchor.checked_add(period)?;
                Some(Self {
                    wake: wake.max(Instant::now()),
                    wall: None,
                })
            }
            None => match cadence {
                Cadence::Schedule(schedule) => Self::at_wall(schedule.next_after(clock.now())?, clock),
                Cadence::Every(_) | Cadence::OnDemand => None,
            },
        }
    }

    /// The next run after a run that started at `started`. A period counts from that start; a
    /// run that took longer than its period is followed by a full period of rest rather than a
    /// run straight after, so a slow registry is not polled back to back.
    fn after_run(cadence: &Cadence, started: Instant, clock: &SharedClock) -> Option<Self> {
        match period_of(cadence) {
            Some(period) => {
                let now = Instant::now();
                let wake = started.checked_add(period)?;
                let wake = if wake > now {
                    wake
                } else {
                    now.checked_add(period)?
                };
                Some(Self { wake, wall: None })
            }
            None => Self::next(cadence, started, clock),
        }
    }

    fn at_wall(wall: DateTime<Utc>, clock: &SharedClock) -> Option<Self> {
        let until = (wall - clock.now()).to_std().unwrap_or(Duration::ZERO);
        let wake = Instant::now().checked_add(until.min(CRON_RECHECK))?;
        Some(Self {
            wake,
            wall: Some(wall),
        })
    }
}

/// The period of a cadence that has one (an `@every` schedule included), at least
/// [`MIN_PERIOD`].
fn period_of(cadence: &Cadence) -> Option<Duration> {
    match cadence {
        Cadence::Every(period) => Some(*period),
        Cadence::Schedule(schedule) => schedule.interval().map(|interval| interval.as_std()),
        Cadence::OnDemand => None,
    }
    .map(|period| period.max(MIN_PERIOD))
}

async fn sleep_until(due: Option<Due>) {
    match due {
        Some(due) => tokio::time::sleep_until(due.wake).await,
        None => std::future::pending().await,
    }
}

struct JobLoop {
    spec: JobSpec,
    clock: SharedClock,
    stop: CancellationToken,
    requests: mpsc::Receiver<RunRequest>,
    /// Keeps the request channel open when every handle has been dropped (a job nobody pokes
    /// still runs by its plan).
    _keep_open: mpsc::Sender<RunRequest>,
}

impl JobLoop {
    async fn run<F, Fut>(mut self, mut job: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let name = self.spec.name;
        let loop_started = Instant::now();
        let mut cadence = self.spec.plan.current();
        let mut last_start: Option<Instant> = None;
        let mut due = if self.spec.run_at_start {
            Some(Due::now())
        } else {
            Due::next(&cadence, loop_started, &self.clock)
        };
        let mut plan_open = true;
        tracing::debug!(job = name, %cadence, "job scheduled");
        loop {
            let mut waiters = Vec::new();
            tokio::select! {
                biased;
                () = self.stop.cancelled() => break,
                changed = self.spec.plan.changed(), if plan_open => {
                    if !changed {
                        // The watched value's sender is gone: the cadence is final.
                        plan_open = false;
                        continue;
                    }
                    let next = self.spec.plan.current();
                    if next != cadence {
                        tracing::info!(job = name, cadence = %next, "job re-planned");
                        cadence = next;
                        due = Due::next(&cadence, last_start.unwrap_or(loop_started), &self.clock);
                    }
                    continue;
                }
                request = self.requests.recv() => match request {
                    Some(request) => waiters.extend(request.done),
                    // Unreachable: `_keep_open` holds the channel open.
                    None => break,
                },
                () = sleep_until(due) => {
                    if let Some(wall) = due.and_then(|due| due.wall)
                        && self.clock.now() < wall
                    {
                        // A capped cron wait ended early; sleep the rest.
                        due = Due::at_wall(wall, &self.clock);
                        continue;
                    }
                }
            }
            // Pokes queued before this run starts are served by it.
            while let Ok(request) = self.requests.try_recv() {
                waiters.extend(request.done);
            }
            let started = Instant::now();
            last_start = Some(started);
            let outcome = run_once(name, job(), &self.stop, self.spec.shutdown_grace).await;
            for waiter in waiters {
                let _ = waiter.send(outcome.clone());
            }
            if self.stop.is_cancelled() {
                break;
            }
            due = Due::after_run(&cadence, started, &self.clock);
        }
        tracing::debug!(job = name, "job stopped");
    }
}

/// Runs one instance of a job, catching a panic so the loop survives it; at shutdown the run
/// gets `grace` to finish and is then dropped.
async fn run_once<Fut>(
    name: &'static str,
    run: Fut,
    stop: &CancellationToken,
    grace: Duration,
) -> Result<(), RunError>
where
    Fut: Future<Output = anyhow::Result<()>>,
{
    let started = Instant::now();
    let run = AssertUnwindSafe(run).catch_unwind();
    tokio::pin!(run);
    let result = tokio::select! {
        result = &mut run => result,
        () = stop.cancelled() => match tokio::time::timeout(grace, &mut run).await {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!(job = name, ?grace, "job still running at shutdown; abandoned it");
                return Err(RunError::Stopped);
            }
        },
    };
    match result {
        Ok(Ok(())) => {
            tracing::debug!(job = name, elapsed = ?started.elapsed(), "job run finished");
            Ok(())
        }
        Ok(Err(e)) => {
            let message = format!("{e:#}");
            tracing::error!(job = name, error = %message, "job run failed; it runs again at its next time");
            Err(RunError::Failed(message))
        }
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_owned());
            tracing::error!(job = name, panic = %message, "job run panicked; it runs again at its next time");
            Err(RunError::Failed(format!("panicked: {message}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use chrono::TimeZone;

    use super::*;
    use crate::clock::Clock;

    /// A wall clock that moves with tokio's (paused) clock, from a chosen start.
    #[derive(Debug)]
    struct TokioClock {
        base: DateTime<Utc>,
        start: Instant,
    }

    impl Clock for TokioClock {
        fn now(&self) -> DateTime<Utc> {
            let elapsed = chrono::TimeDelta::from_std(self.start.elapsed()).unwrap_or(chrono::TimeDelta::MAX);
            self.base + elapsed
        }
    }

    fn clock_at(h: u32, m: u32, s: u32) -> SharedClock {
        let base = Utc
            .with_ymd_and_hms(2026, 3, 4, h, m, s)
            .single()
            .expect("a valid time");
        Arc::new(TokioClock {
            base,
            start: Instant::now(),
        })
    }

    fn scheduler(clock: SharedClock) -> (Scheduler, TaskTracker, CancellationToken) {
        let tracker = TaskTracker::new();
        let shutdown = CancellationToken::new();
        (
            Scheduler::new(tracker.clone(), clock, shutdown.clone()),
            tracker,
            shutdown,
        )
    }

    /// A job that counts its runs.
    fn counting() -> (
        Arc<AtomicUsize>,
        impl FnMut() -> BoxFuture<'static, anyhow::Result<()>> + Send + 'static,
    ) {
        let runs = Arc::new(AtomicUsize::new(0));
        let counter = runs.clone();
        let job = move || -> BoxFuture<'static, anyhow::Result<()>> {
            counter.fetch_add(1, Ordering::SeqCst);
            Box::pin(async { Ok(()) })
        };
        (runs, job)
    }

    /// Lets spawned loops run up to the current (paused) time.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    async fn sleep(secs: u64) {
        tokio::time::sleep(Duration::from_secs(secs)).await;
        settle().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_periodic_job_runs_at_start_and_then_every_period() {
        let (scheduler, _, _) = scheduler(clock_at(10, 0, 0));
        let (runs, job) = counting();
        scheduler.spawn(
            JobSpec::new("test", Plan::every(Duration::from_secs(60))).run_at_start(),
            job,
        );
        settle().await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        sleep(59).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        sleep(2).await;
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        sleep(60).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn without_run_at_start_the_first_run_waits_one_period() {
        let (scheduler, _, _) = scheduler(clock_at(10, 0, 0));
        let (runs, job) = counting();
        scheduler.spawn(JobSpec::new("test", Plan::every(Duration::from_secs(30))), job);
        sleep(29).await;
        assert_eq!(runs.load(Ordering::SeqCst), 0);
        sleep(2).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cron_job_runs_at_the_wall_clock_times_of_its_schedule() {
        // 10:00:30, and the schedule fires at second 0 of every minute.
        let (scheduler, _, _) = scheduler(clock_at(10, 0, 30));
        let (runs, job) = counting();
        let schedule = Schedule::parse("0 * * * * *").expect("a valid schedule");
        scheduler.spawn(JobSpec::new("test", Plan::schedule(schedule)), job);
        sleep(29).await;
        assert_eq!(runs.load(Ordering::SeqCst), 0);
        sleep(2).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        sleep(60).await;
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_daily_cron_job_waits_in_capped_steps_and_runs_once() {
        let (scheduler, _, _) = scheduler(clock_at(23, 0, 0));
        let (runs, job) = counting();
        let schedule = Schedule::parse("@daily").expect("a valid schedule");
        scheduler.spawn(JobSpec::new("test", Plan::schedule(schedule)), job);
        sleep(3599).await;
        assert_eq!(runs.load(Ordering::SeqCst), 0);
        sleep(2).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        sleep(23 * 3600).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_every_schedule_runs_on_the_monotonic_clock() {
        let (scheduler, _, _) = scheduler(clock_at(10, 0, 0));
        let (runs, job) = counting();
        let schedule = Schedule::parse("@every 5m").expect("a valid schedule");
        scheduler.spawn(JobSpec::new("test", Plan::schedule(schedule)), job);
        sleep(299).await;
        assert_eq!(runs.load(Ordering::SeqCst), 0);
        sleep(2).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_or_panicking_job_keeps_its_schedule() {
        let (scheduler, _, _) = scheduler(clock_at(10, 0, 0));
        let runs = Arc::new(AtomicUsize::new(0));
        let counter = runs.clone();
        let handle = scheduler.spawn(
            JobSpec::new("test", Plan::every(Duration::from_secs(10))),
            move || {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                async move {
                    match n {
                        0 => anyhow::bail!("the registry is down"),
                        1 => panic!("a bug"),
                        _ => Ok(()),
                    }
                }
            },
        );
        assert_eq!(
            handle.run_now().await,
            Err(RunError::Failed("the registry is down".to_owned()))
        );
        assert_eq!(
            handle.run_now().await,
            Err(RunError::Failed("panicked: a bug".to_owned()))
        );
        assert_eq!(handle.run_now().await, Ok(()));
        sleep(11).await;
        assert_eq!(runs.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn an_on_demand_job_runs_only_when_poked() {
        let (scheduler, _, _) = scheduler(clock_at(10, 0, 0));
        let (runs, job) = counting();
        let handle = scheduler.spawn(JobSpec::new("test", Plan::on_demand()), job);
        sleep(365 * 24 * 3600).await;
        assert_eq!(runs.load(Ordering::SeqCst), 0);
        handle.trigger();
        settle().await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(handle.run_now().await, Ok(()));
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn runs_never_overlap_and_pokes_during_a_run_share_one_more_run() {
        let (scheduler, _, _) = scheduler(clock_at(10, 0, 0));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let runs = Arc::new(AtomicUsize::new(0));
        let (r, m, n) = (running.clone(), most.clone(), runs.clone());
        let handle = scheduler.spawn(
            JobSpec::new("test", Plan::every(Duration::from_secs(5))),
            move || {
                let (r, m, n) = (r.clone(), m.clone(), n.clone());
                async move {
                    let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                    m.fetch_max(now, Ordering::SeqCst);
                    n.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    r.fetch_sub(1, Ordering::SeqCst);
                    Ok(())
                }
            },
        );
        handle.trigger();
        settle().await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // Three callers while the first run is in progress: one more run serves all of them.
        let (a, b, c) = tokio::join!(handle.run_now(), handle.run_now(), handle.run_now());
        assert_eq!((a, b, c), (Ok(()), Ok(()), Ok(())));
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        sleep(60).await;
        assert_eq!(most.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_changed_watched_value_replans_the_next_run() {
        let (scheduler, _, _) = scheduler(clock_at(10, 0, 0));
        let (runs, job) = counting();
        let (tx, rx) = watch::channel(3600_u64);
        let plan = Plan::watch(rx, |secs: &u64| Cadence::Every(Duration::from_secs(*secs)));
        scheduler.spawn(JobSpec::new("test", plan).run_at_start(), job);
        settle().await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        sleep(100).await;
        // Shortened to 60 s: 100 s have passed since the last run, so it is due at once.
        tx.send_replace(60);
        settle().await;
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        sleep(59).await;
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        sleep(2).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        // The same cadence again does not move the next run.
        sleep(30).await;
        tx.send_replace(60);
        sleep(28).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        sleep(2).await;
        assert_eq!(runs.load(Ordering::SeqCst), 4);
        // Lengthened: the next run counts the new period from the previous run.
        tx.send_replace(600);
        sleep(598).await;
        assert_eq!(runs.load(Ordering::SeqCst), 4);
        sleep(3).await;
        assert_eq!(runs.load(Ordering::SeqCst), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_every_loop_and_run_now_then_reports_stopped() {
        let (scheduler, tracker, shutdown) = scheduler(clock_at(10, 0, 0));
        let (_, job) = counting();
        let handle = scheduler.spawn(JobSpec::new("test", Plan::every(Duration::from_secs(1))), job);
        let (_, job) = counting();
        scheduler.spawn(JobSpec::new("other", Plan::on_demand()), job);
        shutdown.cancel();
        tracker.close();
        tokio::time::timeout(Duration::from_secs(1), tracker.wait())
            .await
            .expect("the loops end");
        assert!(handle.is_stopped());
        assert_eq!(handle.run_now().await, Err(RunError::Stopped));
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_in_progress_at_shutdown_gets_its_grace_period_then_is_dropped() {
        let (scheduler, tracker, shutdown) = scheduler(clock_at(10, 0, 0));
        let finished = Arc::new(AtomicUsize::new(0));
        let f = finished.clone();
        let slow = scheduler.spawn(
            JobSpec::new("slow", Plan::on_demand()).shutdown_grace(Duration::from_secs(5)),
            move || {
                let f = f.clone();
                async move {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    f.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
            },
        );
        let waiting = tokio::spawn(async move { slow.run_now().await });
        settle().await;
        let stopped_at = Instant::now();
        shutdown.cancel();
        tracker.close();
        tracker.wait().await;
        let waited = stopped_at.elapsed();
        assert!(
            waited >= Duration::from_secs(5) && waited < Duration::from_secs(6),
            "{waited:?}"
        );
        assert_eq!(finished.load(Ordering::SeqCst), 0);
        assert_eq!(waiting.await.expect("the task ends"), Err(RunError::Stopped));
    }

    #[tokio::test(start_paused = true)]
    async fn stopping_one_job_leaves_the_others_running() {
        let (scheduler, _, _) = scheduler(clock_at(10, 0, 0));
        let (stopped_runs, job) = counting();
        let stopped = scheduler.spawn(JobSpec::new("stopped", Plan::every(Duration::from_secs(10))), job);
        let (other_runs, job) = counting();
        scheduler.spawn(JobSpec::new("other", Plan::every(Duration::from_secs(10))), job);
        stopped.stop();
        sleep(11).await;
        assert_eq!(stopped_runs.load(Ordering::SeqCst), 0);
        assert_eq!(other_runs.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn periods_are_at_least_a_second() {
        assert_eq!(period_of(&Cadence::Every(Duration::ZERO)), Some(MIN_PERIOD));
        assert_eq!(period_of(&Cadence::OnDemand), None);
        let hourly = Schedule::parse("@hourly").expect("a valid schedule");
        assert_eq!(period_of(&Cadence::Schedule(hourly)), None);
    }
}
