//! The stale rule (SPEC §3 "Stale container detection"), pure: an instance is **stale** when its
//! status is not `running` and more than `stale_threshold_days` have passed since it was last
//! seen alive (`last_alive_at`, or `created_at` when it never ran). "More than" is strict:
//! exactly N days is not stale yet, N days and a second is.
//!
//! Time is always passed in (`now`), so the edges are unit-tested without a clock.

use chrono::{DateTime, TimeDelta, Utc};

use crate::domain::instance::{Instance, InstanceStatus};

/// One day, the unit of the threshold and of `days_stale`.
const DAY: TimeDelta = TimeDelta::days(1);

/// The rule with its threshold, read from the settings at each use so a change applies to the
/// next scan and the next read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaleRule {
    threshold_days: u32,
}

impl StaleRule {
    pub fn new(threshold_days: u32) -> Self {
        Self { threshold_days }
    }

    pub fn threshold_days(&self) -> u32 {
        self.threshold_days
    }

    /// The threshold as a duration.
    pub fn threshold(&self) -> TimeDelta {
        DAY * i32::try_from(self.threshold_days).unwrap_or(i32::MAX)
    }

    /// The latest last-alive time that is stale at `now`: stale ⇔ last alive < cutoff. The store
    /// re-checks a mark against it, so a mark decided on an older reading cannot land after the
    /// instance came back.
    pub fn cutoff(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now - self.threshold()
    }

    /// The rule on its inputs: `last_alive` is `last_alive_at`, or `created_at` when the
    /// instance never ran (see [`last_alive`]).
    pub fn applies(&self, status: InstanceStatus, last_alive: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        status != InstanceStatus::Running && now - last_alive > self.threshold()
    }

    /// Whether `instance` is stale at `now`.
    pub fn is_stale(&self, instance: &Instance, now: DateTime<Utc>) -> bool {
        self.applies(instance.status, last_alive(instance), now)
    }
}

/// When the instance was last seen alive, or created when it never ran: the time staleness
/// counts from.
pub fn last_alive(instance: &Instance) -> DateTime<Utc> {
    instance.last_alive_at.unwrap_or(instance.created_at)
}

/// Whole days from `since` to `now` (rounded down; never negative, even when a clock went back).
pub fn whole_days(since: DateTime<Utc>, now: DateTime<Utc>) -> i64 {
    ((now - since).num_seconds() / DAY.num_seconds()).max(0)
}

/// Whole days since the instance was last alive (or created, when it never ran).
pub fn days_stale(instance: &Instance, now: DateTime<Utc>) -> i64 {
    whole_days(last_alive(instance), now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_750_000_000 + secs, 0).unwrap()
    }

    fn instance(status: InstanceStatus, created: i64, last_alive: Option<i64>) -> Instance {
        Instance {
            id: 1,
            project_id: 1,
            project_name: "shop".into(),
            stage_id: 1,
            stage_name: "prod".into(),
            image_tag: "v1".into(),
            image_digest: None,
            container_id: Some("c0ffee".into()),
            container_name: Some("dw-shop-prod-1".into()),
            status,
            is_current: false,
            host_port: None,
            hostname: None,
            exit_code: None,
            created_at: at(created),
            started_at: last_alive.map(at),
            last_alive_at: last_alive.map(at),
            stopped_at: None,
            stale_since: None,
            config_revision: 1,
        }
    }

    const DAY_SECS: i64 = 86_400;

    #[test]
    fn exactly_the_threshold_is_not_stale_and_one_second_more_is() {
        let rule = StaleRule::new(7);
        let stopped = instance(InstanceStatus::Stopped, 0, Some(100));
        assert!(!rule.is_stale(&stopped, at(100 + 7 * DAY_SECS)));
        assert!(rule.is_stale(&stopped, at(100 + 7 * DAY_SECS + 1)));
        assert_eq!(days_stale(&stopped, at(100 + 7 * DAY_SECS + 1)), 7);
        assert_eq!(days_stale(&stopped, at(100 + 8 * DAY_SECS - 1)), 7);
        assert_eq!(days_stale(&stopped, at(100 + 8 * DAY_SECS)), 8);
    }

    #[test]
    fn an_instance_that_never_ran_counts_from_its_creation() {
        let rule = StaleRule::new(3);
        let never = instance(InstanceStatus::Failed, 50, None);
        assert!(!rule.is_stale(&never, at(50 + 3 * DAY_SECS)));
        assert!(rule.is_stale(&never, at(50 + 3 * DAY_SECS + 1)));
        assert_eq!(days_stale(&never, at(50 + 3 * DAY_SECS + 1)), 3);
    }

    #[test]
    fn a_running_instance_is_never_stale_however_old_its_last_sighting() {
        let rule = StaleRule::new(1);
        let running = instance(InstanceStatus::Running, 0, Some(0));
        assert!(!rule.is_stale(&running, at(365 * DAY_SECS)));
    }

    #[test]
    fn every_status_but_running_can_be_stale() {
        let rule = StaleRule::new(1);
        for status in InstanceStatus::ALL {
            let old = instance(*status, 0, Some(0));
            assert_eq!(
                rule.is_stale(&old, at(2 * DAY_SECS)),
                *status != InstanceStatus::Running,
                "{status}"
            );
        }
    }

    #[test]
    fn the_cutoff_is_the_threshold_before_now() {
        let rule = StaleRule::new(7);
        let now = at(30 * DAY_SECS);
        assert_eq!(rule.cutoff(now), at(23 * DAY_SECS));
        assert!(rule.applies(
            InstanceStatus::Stopped,
            rule.cutoff(now) - TimeDelta::seconds(1),
            now
        ));
        assert!(!rule.applies(InstanceStatus::Stopped, rule.cutoff(now), now));
    }

    #[test]
    fn days_are_never_negative() {
        assert_eq!(whole_days(at(10), at(0)), 0);
    }
}
