//! The health of one watched repository: how many polls in a row failed, when the next
//! scheduled poll may try again, and the two transitions worth an event — *started failing* and
//! *recovered* — so the poller publishes one `warn` and one `info` per outage, never one per
//! retry (SPEC §3, "Registry watching").
//!
//! Failures back off exponentially from [`BASE_DELAY`] to [`MAX_DELAY`]; a registry that answers
//! `429 Too Many Requests` with `Retry-After` is not asked again before then, whatever the
//! backoff says. Pure: the caller passes the time.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

/// The wait after the first failure; it doubles with each further failure.
pub const BASE_DELAY: Duration = Duration::from_secs(1);
/// The longest wait between two attempts.
pub const MAX_DELAY: Duration = Duration::from_secs(3600);

/// What a failure or success changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The first failure after a success (or since start): publish the `warn`.
    StartedFailing,
    /// Another failure of an outage already reported.
    StillFailing,
    /// The first success after failures: publish the `info`.
    Recovered { failures: u32 },
    /// A success after a success.
    Healthy,
}

/// One repository's record; the default is healthy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepositoryHealth {
    failures: u32,
    /// No scheduled poll before this time.
    retry_at: Option<DateTime<Utc>>,
    /// The registry asked for the wait (`Retry-After`): even polls asked for by hand wait.
    rate_limited: bool,
}

impl RepositoryHealth {
    /// Records a failed poll at `now`; `retry_after` is the registry's `Retry-After`, if it
    /// sent one.
    pub fn record_failure(&mut self, now: DateTime<Utc>, retry_after: Option<Duration>) -> Transition {
        self.failures = self.failures.saturating_add(1);
        let backoff = delay_after(self.failures);
        let wait = retry_after.map_or(backoff, |asked| asked.max(backoff));
        self.rate_limited = retry_after.is_some();
        self.retry_at = TimeDelta::from_std(wait)
            .ok()
            .and_then(|wait| now.checked_add_signed(wait));
        if self.failures == 1 {
            Transition::StartedFailing
        } else {
            Transition::StillFailing
        }
    }

    /// Records a successful poll.
    pub fn record_success(&mut self) -> Transition {
        let failures = std::mem::take(&mut self.failures);
        self.retry_at = None;
        self.rate_limited = false;
        if failures > 0 {
            Transition::Recovered { failures }
        } else {
            Transition::Healthy
        }
    }

    /// When a poll may be attempted at `now`: `None` now; else the time to wait for. A poll
    /// asked for by hand (`forced`) ignores the backoff but not a registry's rate limit.
    pub fn wait_until(&self, now: DateTime<Utc>, forced: bool) -> Option<DateTime<Utc>> {
        let retry_at = self.retry_at.filter(|at| *at > now)?;
        (!forced || self.rate_limited).then_some(retry_at)
    }

    pub fn is_failing(&self) -> bool {
        self.failures > 0
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// The backoff after `failures` failures in a row: 1 s, 2 s, 4 s, … up to an hour.
pub fn delay_after(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(31);
    BASE_DELAY
        .checked_mul(1u32 << doublings)
        .map_or(MAX_DELAY, |d| d.min(MAX_DELAY))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0)
            .single()
            .expect("a valid time")
            + TimeDelta::seconds(secs)
    }

    #[test]
    fn the_delay_doubles_from_a_second_up_to_an_hour() {
        let secs: Vec<u64> = (1..=14).map(|n| delay_after(n).as_secs()).collect();
        assert_eq!(
            secs,
            [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 3600, 3600]
        );
        assert_eq!(delay_after(u32::MAX), MAX_DELAY);
        assert_eq!(delay_after(0), BASE_DELAY);
    }

    #[test]
    fn an_outage_is_reported_once_when_it_starts_and_once_when_it_ends() {
        let mut health = RepositoryHealth::default();
        assert_eq!(health.record_success(), Transition::Healthy);
        assert_eq!(health.record_failure(t(0), None), Transition::StartedFailing);
        for n in 1..10 {
            assert_eq!(health.record_failure(t(n), None), Transition::StillFailing);
        }
        assert!(health.is_failing());
        assert_eq!(health.failures(), 10);
        assert_eq!(health.record_success(), Transition::Recovered { failures: 10 });
        assert_eq!(health.record_success(), Transition::Healthy);
        assert!(!health.is_failing());
        // A new outage is a new report.
        assert_eq!(health.record_failure(t(100), None), Transition::StartedFailing);
    }

    #[test]
    fn scheduled_polls_wait_out_the_backoff_and_forced_ones_do_not() {
        let mut health = RepositoryHealth::default();
        assert_eq!(health.wait_until(t(0), false), None);
        health.record_failure(t(0), None);
        health.record_failure(t(0), None);
        health.record_failure(t(0), None);
        assert_eq!(health.wait_until(t(1), false), Some(t(4)));
        assert_eq!(health.wait_until(t(1), true), None);
        assert_eq!(health.wait_until(t(4), false), None);
        health.record_success();
        assert_eq!(health.wait_until(t(1), false), None);
    }

    #[test]
    fn a_rate_limit_is_honoured_even_by_forced_polls() {
        let mut health = RepositoryHealth::default();
        health.record_failure(t(0), Some(Duration::from_secs(120)));
        assert_eq!(health.wait_until(t(10), false), Some(t(120)));
        assert_eq!(health.wait_until(t(10), true), Some(t(120)));
        assert_eq!(health.wait_until(t(120), true), None);
        // A Retry-After shorter than the backoff does not shorten it.
        let mut health = RepositoryHealth::default();
        for _ in 0..5 {
            health.record_failure(t(0), None);
        }
        health.record_failure(t(0), Some(Duration::from_secs(1)));
        assert_eq!(health.wait_until(t(0), false), Some(t(32)));
    }
}
