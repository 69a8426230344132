//! The pure half of Docker sync: given what the store says and what the engine shows, which
//! status each instance should have. No IO here, so every combination is unit-tested.
//!
//! One rule, [`decide`], serves both the reconcile (one list call) and the event listener (one
//! event): an instance's status is a function of its current status and an [`Observation`] of
//! its container. Instances a workflow owns right now are never touched: `pending` and
//! `deploying` belong to an in-flight deploy (startup recovery deals with those a crash left
//! behind), `removing` to a cleanup. A status change that nobody asked for — a running container
//! that exited non-zero, or vanished while nobody watched — carries a warning to publish.

use std::collections::{HashMap, HashSet};

use crate::docker::engine::{ContainerState, ContainerSummary};
use crate::domain::instance::{Instance, InstanceStatus};

/// What the engine shows of an instance's container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    /// The container runs.
    Running,
    /// The container stopped: exited, dead, or waiting to be restarted by its restart policy
    /// after a crash. The exit code when the engine told it.
    Exited(Option<i64>),
    /// The container exists but never started.
    Created,
    /// There is no such container.
    Gone,
    /// Paused, being removed (a `destroy` event follows) or a state this version does not know:
    /// no conclusion is drawn.
    Undecided,
}

impl Observation {
    /// What a list entry shows.
    pub fn of_summary(container: &ContainerSummary) -> Self {
        match container.state {
            ContainerState::Running => Self::Running,
            ContainerState::Exited | ContainerState::Dead | ContainerState::Restarting => {
                Self::Exited(container.exit_code)
            }
            ContainerState::Created => Self::Created,
            ContainerState::Paused | ContainerState::Removing | ContainerState::Unknown => Self::Undecided,
        }
    }
}

/// One status write, taken on the status the instance had when it was decided: the write only
/// happens if the row still has `from` (see `Store::update_instance_status_if`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusChange {
    pub instance_id: i64,
    pub from: InstanceStatus,
    /// `running` means "seen alive now": it refreshes `last_alive_at` even when `from` is
    /// `running` already.
    pub to: InstanceStatus,
    pub exit_code: Option<i64>,
    /// Set when the change is news nobody asked for: published as a `warn` event.
    pub warning: Option<String>,
}

impl StatusChange {
    /// Whether the status itself changes (a refresh of a running instance does not).
    pub fn changes_status(&self) -> bool {
        self.from != self.to
    }

    /// Whether the route table may change: an instance starts or stops being routable.
    pub fn affects_routes(&self) -> bool {
        self.changes_status() && (self.from == InstanceStatus::Running || self.to == InstanceStatus::Running)
    }
}

/// Whether an instance's status belongs to a workflow in progress, which sync leaves alone.
pub fn is_owned_by_a_workflow(status: InstanceStatus) -> bool {
    matches!(
        status,
        InstanceStatus::Pending | InstanceStatus::Deploying | InstanceStatus::Removing
    )
}

/// The status an instance should have after `observation`, or `None` when nothing changes.
pub fn decide(instance: &Instance, observation: Observation) -> Option<StatusChange> {
    use InstanceStatus as S;
    let from = instance.status;
    if is_owned_by_a_workflow(from) {
        return None;
    }
    let change = |to: S, exit_code: Option<i64>, warning: Option<String>| {
        Some(StatusChange {
            instance_id: instance.id,
            from,
            to,
            exit_code,
            warning,
        })
    };
    match observation {
        Observation::Undecided => None,
        // Every sighting refreshes `last_alive_at` (SPEC "Instance status"), so this is a write
        // even for an instance already `running`.
        Observation::Running => change(S::Running, None, None),
        Observation::Exited(code) => {
            let non_zero = code.is_some_and(|c| c != 0);
            match from {
                S::Running if non_zero => change(
                    S::Failed,
                    code,
                    Some(format!(
                        "exited unexpectedly with code {}",
                        code.unwrap_or_default()
                    )),
                ),
                S::Running => change(S::Stopped, code, None),
                // Stopped or failed already: docker-watcher (or an earlier observation) put it
                // there, so the status stays; only a newly learnt exit code is recorded.
                S::Stopped | S::Failed if code.is_some() && code != instance.exit_code => {
                    change(from, code, None)
                }
                S::Stopped | S::Failed => None,
                // The container is back (an engine restored from a backup, say): it tells its own
                // story through its exit code.
                S::Missing if non_zero => change(S::Failed, code, None),
                S::Missing => change(S::Stopped, code, None),
                S::Pending | S::Deploying | S::Removing => None,
            }
        }
        Observation::Created => match from {
            S::Running | S::Missing => change(S::Stopped, None, None),
            _ => None,
        },
        Observation::Gone => match from {
            S::Running => change(
                S::Missing,
                None,
                Some("its container disappeared from Docker while it was running".to_owned()),
            ),
            S::Stopped | S::Failed => change(S::Missing, None, None),
            _ => None,
        },
    }
}

/// What a reconcile does.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReconcilePlan {
    pub changes: Vec<StatusChange>,
    /// Containers carrying this installation's label that no instance records: removed.
    pub unrecorded: Vec<ContainerSummary>,
}

/// The length of a full container id (64 hex digits).
const FULL_ID_LEN: usize = 64;

/// Whether two container ids name the same container: the engine answers with full ids, a
/// caller may hold a short prefix.
pub fn same_container(a: &str, b: &str) -> bool {
    !a.is_empty() && !b.is_empty() && (a.starts_with(b) || b.starts_with(a))
}

/// Plans a reconcile from the store's instances and ONE list of this installation's containers.
/// Instances in `settled` (just handled by startup recovery) are skipped.
///
/// An instance's container is the one whose id it recorded; an instance that has not recorded
/// one yet (only possible mid-deploy) is matched by its instance label. A container is
/// *unrecorded* when neither its id nor its instance label names an instance: the deployer
/// records an instance before it creates the container, so such a container is a leftover —
/// provided the instances were read *after* the list, which the executor does.
pub fn plan_reconcile(
    instances: &[Instance],
    containers: &[ContainerSummary],
    settled: &HashSet<i64>,
) -> ReconcilePlan {
    let mut by_label: HashMap<i64, &ContainerSummary> = HashMap::new();
    for container in containers {
        if let Some(id) = container.instance_id() {
            by_label.entry(id).or_insert(container);
        }
    }
    // Ids are looked up whole (the engine answers with full ids, and the deployer records
    // what it answered); a shorter, hand-recorded prefix falls back to a scan.
    let by_id: HashMap<&str, &ContainerSummary> = containers.iter().map(|c| (c.id.as_str(), c)).collect();
    let find_recorded = |id: &str| {
        by_id.get(id).copied().or_else(|| {
            (id.len() < FULL_ID_LEN)
                .then(|| {
                    containers
                        .iter()
                        .find(|container| same_container(&container.id, id))
                })
                .flatten()
        })
    };
    let mut changes = Vec::new();
    for instance in instances {
        if settled.contains(&instance.id) {
            continue;
        }
        let container = match instance.container_id.as_deref() {
            Some(id) => find_recorded(id),
            None => by_label.get(&instance.id).copied(),
        };
        let observation = container.map_or(Observation::Gone, Observation::of_summary);
        // An instance without a container yet that is not mid-deploy is only a row: there is
        // nothing to observe, and "gone" would be a false alarm. (Recovery handles a row a crash
        // left without a container.)
        if container.is_none() && instance.container_id.is_none() {
            continue;
        }
        changes.extend(decide(instance, observation));
    }
    let known: HashSet<i64> = instances.iter().map(|i| i.id).collect();
    let recorded: HashSet<&str> = instances
        .iter()
        .filter_map(|i| i.container_id.as_deref())
        .collect();
    let short: Vec<&str> = recorded
        .iter()
        .copied()
        .filter(|id| id.len() < FULL_ID_LEN)
        .collect();
    let unrecorded = containers
        .iter()
        .filter(|container| {
            let labelled = container.instance_id().is_some_and(|id| known.contains(&id));
            let recorded = recorded.contains(container.id.as_str())
                || short.iter().any(|id| same_container(&container.id, id));
            !labelled && !recorded
        })
        .cloned()
        .collect();
    ReconcilePlan { changes, unrecorded }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::{DateTime, Utc};

    use super::*;
    use crate::docker::engine::labels;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    fn instance(id: i64, status: InstanceStatus, container: Option<&str>) -> Instance {
        Instance {
            id,
            project_id: 1,
            project_name: "shop".into(),
            stage_id: 1,
            stage_name: "prod".into(),
            image_tag: "v1".into(),
            image_digest: None,
            container_id: container.map(str::to_owned),
            container_name: container.map(|c| format!("dw-shop-prod-{c}")),
            status,
            is_current: false,
            host_port: None,
            hostname: None,
            exit_code: None,
            created_at: at(0),
            started_at: None,
            last_alive_at: None,
            stopped_at: None,
            stale_since: None,
            config_revision: 1,
        }
    }

    fn container(
        id: &str,
        instance: Option<&str>,
        state: ContainerState,
        exit: Option<i64>,
    ) -> ContainerSummary {
        let mut labels = BTreeMap::from([(labels::INSTALLATION.to_owned(), "inst".to_owned())]);
        if let Some(instance) = instance {
            labels.insert(labels::INSTANCE.to_owned(), instance.to_owned());
        }
        ContainerSummary {
            id: id.into(),
            name: format!("dw-{id}"),
            labels,
            state,
            exit_code: exit,
            host_port: None,
            image_id: "sha256:img".into(),
        }
    }

    /// The whole table: every status against every kind of observation. `None` = no write;
    /// `(to, exit_code, warns)` otherwise.
    #[test]
    fn every_status_meets_every_observation_as_the_table_says() {
        use InstanceStatus as S;
        use Observation as O;
        let observations = [
            O::Running,
            O::Exited(Some(0)),
            O::Exited(Some(137)),
            O::Exited(None),
            O::Created,
            O::Gone,
            O::Undecided,
        ];
        type Expected = Option<(InstanceStatus, Option<i64>, bool)>;
        let table: [(InstanceStatus, [Expected; 7]); 7] = [
            (S::Pending, [None, None, None, None, None, None, None]),
            (S::Deploying, [None, None, None, None, None, None, None]),
            (S::Removing, [None, None, None, None, None, None, None]),
            (
                S::Running,
                [
                    Some((S::Running, None, false)),
                    Some((S::Stopped, Some(0), false)),
                    Some((S::Failed, Some(137), true)),
                    Some((S::Stopped, None, false)),
                    Some((S::Stopped, None, false)),
                    Some((S::Missing, None, true)),
                    None,
                ],
            ),
            (
                S::Stopped,
                [
                    Some((S::Running, None, false)),
                    Some((S::Stopped, Some(0), false)),
                    Some((S::Stopped, Some(137), false)),
                    None,
                    None,
                    Some((S::Missing, None, false)),
                    None,
                ],
            ),
            (
                S::Failed,
                [
                    Some((S::Running, None, false)),
                    Some((S::Failed, Some(0), false)),
                    Some((S::Failed, Some(137), false)),
                    None,
                    None,
                    Some((S::Missing, None, false)),
                    None,
                ],
            ),
            (
                S::Missing,
                [
                    Some((S::Running, None, false)),
                    Some((S::Stopped, Some(0), false)),
                    Some((S::Failed, Some(137), false)),
                    Some((S::Stopped, None, false)),
                    Some((S::Stopped, None, false)),
                    None,
                    None,
                ],
            ),
        ];
        assert_eq!(
            table.iter().map(|(s, _)| *s).collect::<HashSet<_>>(),
            S::ALL.iter().copied().collect::<HashSet<_>>(),
            "the table covers every status"
        );
        for (status, row) in table {
            for (observation, expected) in observations.iter().zip(row) {
                let decided = decide(&instance(7, status, Some("c7")), *observation);
                let got = decided.as_ref().map(|c| (c.to, c.exit_code, c.warning.is_some()));
                assert_eq!(got, expected, "{status} meets {observation:?}");
                if let Some(change) = decided {
                    assert_eq!((change.instance_id, change.from), (7, status));
                }
            }
        }
    }

    #[test]
    fn an_exit_code_already_recorded_is_not_written_again() {
        let mut stopped = instance(1, InstanceStatus::Stopped, Some("c1"));
        stopped.exit_code = Some(0);
        assert_eq!(decide(&stopped, Observation::Exited(Some(0))), None);
        assert!(decide(&stopped, Observation::Exited(Some(143))).is_some());
    }

    #[test]
    fn only_status_changes_to_or_from_running_touch_the_routes() {
        let change = |from, to| StatusChange {
            instance_id: 1,
            from,
            to,
            exit_code: None,
            warning: None,
        };
        use InstanceStatus as S;
        assert!(change(S::Running, S::Failed).affects_routes());
        assert!(change(S::Stopped, S::Running).affects_routes());
        assert!(!change(S::Running, S::Running).affects_routes());
        assert!(!change(S::Stopped, S::Missing).affects_routes());
    }

    #[test]
    fn the_list_states_map_onto_observations() {
        let of = |state, exit| Observation::of_summary(&container("c", None, state, exit));
        assert_eq!(of(ContainerState::Running, None), Observation::Running);
        assert_eq!(of(ContainerState::Exited, Some(1)), Observation::Exited(Some(1)));
        assert_eq!(of(ContainerState::Dead, None), Observation::Exited(None));
        assert_eq!(
            of(ContainerState::Restarting, Some(2)),
            Observation::Exited(Some(2))
        );
        assert_eq!(of(ContainerState::Created, None), Observation::Created);
        for undecided in [
            ContainerState::Paused,
            ContainerState::Removing,
            ContainerState::Unknown,
        ] {
            assert_eq!(of(undecided, None), Observation::Undecided);
        }
    }

    #[test]
    fn a_reconcile_matches_containers_by_recorded_id_then_by_label() {
        let instances = [
            instance(1, InstanceStatus::Stopped, Some("aaaa")),
            // Recorded by a short id: the engine lists full ids.
            instance(2, InstanceStatus::Running, Some("bbbb")),
            // Gone from the engine.
            instance(3, InstanceStatus::Running, Some("cccc")),
            // No container recorded yet and not mid-deploy: left alone.
            instance(4, InstanceStatus::Failed, None),
            // Mid-deploy: owned by the deployer.
            instance(5, InstanceStatus::Deploying, None),
        ];
        let containers = [
            container("aaaa1111", Some("1"), ContainerState::Running, None),
            container("bbbb2222", Some("2"), ContainerState::Exited, Some(1)),
            container("eeee5555", Some("5"), ContainerState::Running, None),
        ];
        let plan = plan_reconcile(&instances, &containers, &HashSet::new());
        let summary: Vec<_> = plan
            .changes
            .iter()
            .map(|c| (c.instance_id, c.to, c.exit_code))
            .collect();
        assert_eq!(
            summary,
            vec![
                (1, InstanceStatus::Running, None),
                (2, InstanceStatus::Failed, Some(1)),
                (3, InstanceStatus::Missing, None),
            ]
        );
        assert!(plan.unrecorded.is_empty(), "{:?}", plan.unrecorded);
    }

    #[test]
    fn a_labelled_container_of_an_instance_that_has_not_recorded_it_yet_is_observed() {
        let instances = [instance(4, InstanceStatus::Failed, None)];
        let containers = [container("dddd", Some("4"), ContainerState::Running, None)];
        let plan = plan_reconcile(&instances, &containers, &HashSet::new());
        assert_eq!(plan.changes.len(), 1);
        assert_eq!(plan.changes[0].to, InstanceStatus::Running);
    }

    #[test]
    fn containers_no_instance_records_are_unrecorded_whatever_their_labels_say() {
        let instances = [
            instance(1, InstanceStatus::Running, Some("aaaa")),
            instance(2, InstanceStatus::Removing, Some("bbbb")),
            instance(3, InstanceStatus::Stopped, Some("cccc")),
        ];
        let containers = [
            container("aaaa", Some("1"), ContainerState::Running, None),
            // A removal in progress is still recorded.
            container("bbbb", Some("2"), ContainerState::Running, None),
            // Its instance row is gone.
            container("ffff", Some("99"), ContainerState::Exited, Some(0)),
            // No parsable instance label.
            container("gggg", Some("not-a-number"), ContainerState::Running, None),
            container("hhhh", None, ContainerState::Created, None),
            // No instance label, but its (full) id is recorded: not unrecorded.
            container("cccc3333", None, ContainerState::Exited, Some(0)),
        ];
        let plan = plan_reconcile(&instances, &containers, &HashSet::new());
        let ids: Vec<_> = plan.unrecorded.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, vec!["ffff", "gggg", "hhhh"]);
    }

    #[test]
    fn settled_instances_are_skipped() {
        let instances = [instance(1, InstanceStatus::Running, Some("aaaa"))];
        let plan = plan_reconcile(&instances, &[], &HashSet::from([1]));
        assert!(plan.changes.is_empty());
    }

    #[test]
    fn container_ids_match_by_prefix_either_way_but_never_empty() {
        assert!(same_container("abcdef", "abc"));
        assert!(same_container("abc", "abcdef"));
        assert!(!same_container("abc", "abd"));
        assert!(!same_container("", "abc"));
    }
}
