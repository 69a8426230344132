//! The pure half of a stale scan: given the store's instances and ONE list of this
//! installation's containers, what to write and which instances just became stale. No IO here,
//! so every combination is unit-tested.
//!
//! First each instance's status is refreshed from the list with the same rule Docker sync uses
//! ([`crate::sync::plan::decide`]): a running container makes its instance `running` with
//! `last_alive_at` = now (clearing any stale mark), an exited one `stopped`/`failed` with its
//! exit code, a missing one `missing`. Then the stale rule is applied to the refreshed state: an
//! instance stale by the rule and not yet marked gets a mark (and, once the store confirms the
//! mark, one warning); a marked instance the rule no longer holds for (the threshold was raised)
//! loses its mark, so it is warned about again if it ever becomes stale again.
//!
//! Instances a workflow owns are left alone: `removing` (a cleanup), `pending` and `deploying`
//! (a deploy in flight) are neither refreshed nor marked.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::rule::StaleRule;
use crate::docker::engine::ContainerSummary;
use crate::domain::instance::{Instance, InstanceStatus};
use crate::store::instances::ObservedStatus;
use crate::sync::plan::{Observation, StatusChange, decide, same_container};

/// What one scan writes, decided from one list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScanPlan {
    /// Status refreshes, each conditional on the status it was decided on.
    pub observed: Vec<ObservedStatus>,
    /// The status changes among them (not the refreshes of running instances), with the
    /// warning a change nobody asked for carries.
    pub changes: Vec<StatusChange>,
    /// Instances to mark stale, with the status they must still have.
    pub marks: Vec<(i64, InstanceStatus)>,
    /// Marked instances the rule no longer holds for.
    pub unmarks: Vec<i64>,
    /// How many instances are stale once the plan is applied (marked before and still stale,
    /// plus the new marks).
    pub stale: usize,
}

/// Finds each instance's container in one list without a quadratic search: by full id, then by
/// the instance label (for an instance that recorded a short id, or none yet).
struct ContainerIndex<'a> {
    by_id: HashMap<&'a str, &'a ContainerSummary>,
    by_instance: HashMap<i64, &'a ContainerSummary>,
}

impl<'a> ContainerIndex<'a> {
    fn new(containers: &'a [ContainerSummary]) -> Self {
        let mut by_id = HashMap::with_capacity(containers.len());
        let mut by_instance = HashMap::with_capacity(containers.len());
        for container in containers {
            by_id.insert(container.id.as_str(), container);
            if let Some(instance) = container.instance_id() {
                by_instance.entry(instance).or_insert(container);
            }
        }
        Self { by_id, by_instance }
    }

    /// The instance's container, or `None` when it is not in the list.
    fn find(&self, instance: &Instance) -> Option<&'a ContainerSummary> {
        let labelled = self.by_instance.get(&instance.id).copied();
        match instance.container_id.as_deref() {
            Some(id) => self
                .by_id
                .get(id)
                .copied()
                .or_else(|| labelled.filter(|c| same_container(&c.id, id))),
            None => labelled,
        }
    }
}

/// Plans one scan at `now` with `rule`.
pub fn plan_scan(
    instances: &[Instance],
    containers: &[ContainerSummary],
    rule: StaleRule,
    now: DateTime<Utc>,
) -> ScanPlan {
    let index = ContainerIndex::new(containers);
    let mut plan = ScanPlan::default();
    for instance in instances {
        if matches!(
            instance.status,
            InstanceStatus::Removing | InstanceStatus::Pending | InstanceStatus::Deploying
        ) {
            // A workflow owns it; a removing instance that was marked still counts as stale
            // (the list shows it, with its status, until the cleanup is done).
            if instance.status == InstanceStatus::Removing && instance.stale_since.is_some() {
                plan.stale += 1;
            }
            continue;
        }
        let container = index.find(instance);
        // A row without a container that is not mid-deploy has nothing to observe; "gone"
        // would be a false alarm (sync's startup recovery deals with such rows).
        let change = if container.is_none() && instance.container_id.is_none() {
            None
        } else {
            decide(
                instance,
                container.map_or(Observation::Gone, Observation::of_summary),
            )
        };
        let (status, last_alive, marked) = match &change {
            Some(change) if change.to == InstanceStatus::Running => (InstanceStatus::Running, now, false),
            Some(change) => (
                change.to,
                super::rule::last_alive(instance),
                instance.stale_since.is_some(),
            ),
            None => (
                instance.status,
                super::rule::last_alive(instance),
                instance.stale_since.is_some(),
            ),
        };
        if let Some(change) = change {
            plan.observed.push(ObservedStatus {
                id: change.instance_id,
                expected: change.from,
                status: change.to,
                exit_code: change.exit_code,
            });
            if change.changes_status() || change.warning.is_some() {
                plan.changes.push(change);
            }
        }
        let stale = rule.applies(status, last_alive, now);
        match (stale, marked) {
            (true, false) => {
                plan.marks.push((instance.id, status));
                plan.stale += 1;
            }
            (true, true) => plan.stale += 1,
            (false, true) => plan.unmarks.push(instance.id),
            (false, false) => {}
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::docker::engine::{ContainerState, labels};

    const DAY: i64 = 86_400;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_750_000_000 + secs, 0).unwrap()
    }

    fn instance(id: i64, status: InstanceStatus, last_alive: Option<i64>) -> Instance {
        Instance {
            id,
            project_id: 1,
            project_name: "shop".into(),
            stage_id: 1,
            stage_name: "prod".into(),
            image_tag: format!("v{id}"),
            image_digest: None,
            container_id: Some(format!("container-{id}")),
            container_name: Some(format!("dw-shop-prod-{id}")),
            status,
            is_current: false,
            host_port: None,
            hostname: None,
            exit_code: None,
            created_at: at(0),
            started_at: last_alive.map(at),
            last_alive_at: last_alive.map(at),
            stopped_at: None,
            stale_since: None,
            config_revision: 1,
        }
    }

    fn container(instance: i64, state: ContainerState, exit_code: Option<i64>) -> ContainerSummary {
        ContainerSummary {
            id: format!("container-{instance}"),
            name: format!("dw-shop-prod-{instance}"),
            labels: BTreeMap::from([
                (labels::MANAGED.to_owned(), "true".to_owned()),
                (labels::INSTANCE.to_owned(), instance.to_string()),
            ]),
            state,
            exit_code,
            host_port: None,
            image_id: "sha256:image".into(),
        }
    }

    fn rule() -> StaleRule {
        StaleRule::new(7)
    }

    #[test]
    fn a_stopped_instance_past_the_threshold_is_marked_once() {
        let now = at(10 * DAY);
        let stopped = instance(1, InstanceStatus::Stopped, Some(DAY));
        let list = [container(1, ContainerState::Exited, Some(0))];
        let plan = plan_scan(std::slice::from_ref(&stopped), &list, rule(), now);
        assert_eq!(plan.marks, vec![(1, InstanceStatus::Stopped)]);
        assert!(
            plan.changes.is_empty(),
            "learning the exit code is no status change"
        );
        assert_eq!(plan.stale, 1);

        let mut marked = stopped;
        marked.stale_since = Some(now);
        let again = plan_scan(&[marked], &list, rule(), now + chrono::TimeDelta::days(1));
        assert!(again.marks.is_empty(), "{again:?}");
        assert_eq!(again.stale, 1);
    }

    #[test]
    fn a_running_container_refreshes_its_instance_and_is_never_marked() {
        let now = at(30 * DAY);
        let mut running = instance(1, InstanceStatus::Running, Some(0));
        running.stale_since = Some(at(DAY));
        let plan = plan_scan(
            &[running],
            &[container(1, ContainerState::Running, None)],
            rule(),
            now,
        );
        assert_eq!(
            plan.observed,
            vec![ObservedStatus {
                id: 1,
                expected: InstanceStatus::Running,
                status: InstanceStatus::Running,
                exit_code: None
            }]
        );
        assert!(plan.changes.is_empty(), "a refresh is not a change");
        assert!(plan.marks.is_empty() && plan.unmarks.is_empty());
        assert_eq!(plan.stale, 0);
    }

    #[test]
    fn a_stopped_instance_whose_container_runs_again_comes_back_alive() {
        let now = at(30 * DAY);
        let stopped = instance(1, InstanceStatus::Stopped, Some(0));
        let plan = plan_scan(
            &[stopped],
            &[container(1, ContainerState::Running, None)],
            rule(),
            now,
        );
        assert_eq!(plan.changes.len(), 1);
        assert_eq!(plan.changes[0].to, InstanceStatus::Running);
        assert!(plan.marks.is_empty());
    }

    #[test]
    fn a_gone_container_makes_its_instance_missing_and_possibly_stale_at_once() {
        let now = at(30 * DAY);
        let old = instance(1, InstanceStatus::Stopped, Some(0));
        let recent = instance(2, InstanceStatus::Failed, Some(29 * DAY));
        let plan = plan_scan(&[old, recent], &[], rule(), now);
        let to: Vec<_> = plan.observed.iter().map(|o| (o.id, o.status)).collect();
        assert_eq!(
            to,
            vec![(1, InstanceStatus::Missing), (2, InstanceStatus::Missing)]
        );
        assert_eq!(plan.marks, vec![(1, InstanceStatus::Missing)]);
    }

    #[test]
    fn a_running_instance_that_exited_non_zero_fails_with_a_warning() {
        let now = at(DAY);
        let running = instance(1, InstanceStatus::Running, Some(0));
        let plan = plan_scan(
            &[running],
            &[container(1, ContainerState::Exited, Some(3))],
            rule(),
            now,
        );
        assert_eq!(plan.changes.len(), 1);
        assert_eq!(plan.changes[0].to, InstanceStatus::Failed);
        assert_eq!(plan.changes[0].exit_code, Some(3));
        assert!(plan.changes[0].warning.is_some());
    }

    #[test]
    fn instances_owned_by_a_workflow_are_left_alone() {
        let now = at(30 * DAY);
        let mut removing = instance(1, InstanceStatus::Removing, Some(0));
        removing.stale_since = Some(at(8 * DAY));
        let deploying = instance(2, InstanceStatus::Deploying, None);
        let pending = instance(3, InstanceStatus::Pending, None);
        let plan = plan_scan(&[removing, deploying, pending], &[], rule(), now);
        assert!(plan.observed.is_empty() && plan.marks.is_empty() && plan.unmarks.is_empty());
        assert_eq!(plan.stale, 1, "a removing instance that was marked still counts");
    }

    #[test]
    fn a_mark_the_rule_no_longer_holds_for_is_taken_off() {
        let now = at(10 * DAY);
        let mut marked = instance(1, InstanceStatus::Stopped, Some(DAY));
        marked.stale_since = Some(at(9 * DAY));
        let list = [container(1, ContainerState::Exited, Some(0))];
        let plan = plan_scan(&[marked], &list, StaleRule::new(30), now);
        assert_eq!(plan.unmarks, vec![1]);
        assert_eq!(plan.stale, 0);
    }

    #[test]
    fn a_row_without_a_container_is_judged_from_its_creation() {
        let now = at(10 * DAY);
        let mut row = instance(1, InstanceStatus::Failed, None);
        row.container_id = None;
        let plan = plan_scan(&[row], &[], rule(), now);
        assert!(plan.observed.is_empty(), "no container yet: nothing to observe");
        assert_eq!(plan.marks, vec![(1, InstanceStatus::Failed)]);
    }

    #[test]
    fn a_short_recorded_id_is_matched_through_the_instance_label() {
        let now = at(DAY);
        let mut running = instance(1, InstanceStatus::Running, Some(0));
        running.container_id = Some("container".into());
        let plan = plan_scan(
            &[running],
            &[container(1, ContainerState::Running, None)],
            rule(),
            now,
        );
        assert_eq!(plan.observed.len(), 1);
        assert_eq!(plan.observed[0].status, InstanceStatus::Running);
    }
}
