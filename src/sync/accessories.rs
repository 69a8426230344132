//! Docker sync for accessories (SPEC §3 "Workloads"): an accessory's status follows its
//! container like an instance's does — `running`, `stopped` (a requested stop or a clean exit),
//! `failed` (a non-zero exit), `missing` (the container is gone) — from the same events and the
//! same one-list reconcile. Statuses a workflow owns (`pending`, `starting`, `removing`) are left
//! alone, and every write is conditional on the status it was decided on.
//!
//! A container carrying an accessory label is never an "unrecorded" leftover while that
//! accessory is defined: the reconcile keeps it (the stale scan only ever looks at instances).

use std::collections::HashSet;

use crate::docker::engine::{ContainerSummary, EngineEvent};
use crate::domain::accessory::{Accessory, AccessoryStatus};
use crate::domain::event::{NewEvent, Source};

use super::Syncer;
use super::plan::{Observation, same_container};

/// The status an accessory should have after `observation` of its container; `None`: no change.
/// `requested_stop`: the engine said the exit was a requested stop.
pub fn decide_accessory(
    status: AccessoryStatus,
    observation: Observation,
    requested_stop: bool,
) -> Option<AccessoryStatus> {
    use AccessoryStatus as S;
    if status.is_owned_by_a_workflow() {
        return None;
    }
    let to = match observation {
        Observation::Running => S::Running,
        Observation::Exited(code) if status == S::Running => {
            if requested_stop || matches!(code, None | Some(0)) {
                S::Stopped
            } else {
                S::Failed
            }
        }
        Observation::Gone if status != S::Missing => S::Missing,
        _ => return None,
    };
    (to != status).then_some(to)
}

/// The containers of `unrecorded` that belong to a defined accessory, which the reconcile keeps.
pub fn keep_accessory_containers(unrecorded: &mut Vec<ContainerSummary>, accessories: &[Accessory]) {
    let known: HashSet<i64> = accessories.iter().map(|a| a.id).collect();
    unrecorded.retain(|container| {
        let labelled = container.accessory_id().is_some_and(|id| known.contains(&id));
        let recorded = accessories.iter().any(|a| {
            a.container_id
                .as_deref()
                .is_some_and(|id| same_container(id, &container.id))
        });
        !labelled && !recorded
    });
}

impl Syncer {
    /// Reconciles every accessory with ONE list of containers; returns how many changed.
    pub(super) async fn reconcile_accessories(
        &self,
        containers: &[ContainerSummary],
        accessories: &[Accessory],
    ) -> usize {
        let mut changed = 0;
        for accessory in accessories {
            let Some(recorded) = accessory.container_id.as_deref() else {
                continue;
            };
            let observation = containers
                .iter()
                .find(|c| same_container(&c.id, recorded))
                .map_or(Observation::Gone, Observation::of_summary);
            if observation == Observation::Running {
                let _ = self.store.accessory_alive(accessory.id, self.clock.now()).await;
            }
            if let Some(to) = decide_accessory(accessory.status, observation, false)
                && self.apply_accessory(accessory, to, exit_code(observation)).await
            {
                changed += 1;
            }
        }
        changed
    }

    /// Applies what an event shows about an accessory's container.
    pub(super) async fn apply_accessory_event(
        &self,
        event: &EngineEvent,
        observation: Observation,
        requested_stop: bool,
    ) {
        let Some(id) = event
            .labels
            .get(crate::docker::engine::labels::ACCESSORY)
            .and_then(|v| v.parse::<i64>().ok())
        else {
            return;
        };
        let Ok(accessory) = self.store.get_accessory(id).await else {
            return;
        };
        // Only its current container speaks for it (a restart replaced an older one).
        match &accessory.container_id {
            Some(recorded) if same_container(recorded, &event.container_id) => {}
            _ => return,
        }
        if let Some(to) = decide_accessory(accessory.status, observation, requested_stop) {
            self.apply_accessory(&accessory, to, exit_code(observation).or(event.exit_code))
                .await;
        }
    }

    async fn apply_accessory(
        &self,
        accessory: &Accessory,
        to: AccessoryStatus,
        exit_code: Option<i64>,
    ) -> bool {
        let updated = self
            .store
            .update_accessory_status_if(accessory.id, accessory.status, to, exit_code, self.clock.now())
            .await;
        let updated = match updated {
            Ok(Some(updated)) => updated,
            Ok(None) => return false,
            Err(e) => {
                tracing::error!(error = %e, accessory = accessory.id, "updating an accessory's status failed");
                return false;
            }
        };
        let about = format!("accessory {}", accessory.name);
        let event = match to {
            AccessoryStatus::Failed => NewEvent::warn(
                Source::Docker,
                format!(
                    "{about} exited unexpectedly (exit code {})",
                    exit_code.map_or("unknown".to_owned(), |c| c.to_string())
                ),
            ),
            AccessoryStatus::Missing => NewEvent::warn(
                Source::Docker,
                format!("{about}: its container is gone; start it to create a new one"),
            ),
            _ => NewEvent::info(Source::Docker, format!("{about} is now {to}")),
        };
        let mut event = event
            .project(updated.project_id)
            .detail("accessory_id", updated.id)
            .detail("from", accessory.status.as_str())
            .detail("status", to.as_str());
        if let Some(code) = exit_code {
            event = event.detail("exit_code", code);
        }
        self.bus.publish(event).await;
        true
    }
}

fn exit_code(observation: Observation) -> Option<i64> {
    match observation {
        Observation::Exited(code) => code,
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_accessory_follows_its_container_except_while_a_workflow_owns_it() {
        use AccessoryStatus as S;
        use Observation as O;
        assert_eq!(decide_accessory(S::Stopped, O::Running, false), Some(S::Running));
        assert_eq!(decide_accessory(S::Running, O::Running, false), None);
        assert_eq!(
            decide_accessory(S::Running, O::Exited(Some(0)), false),
            Some(S::Stopped)
        );
        assert_eq!(
            decide_accessory(S::Running, O::Exited(Some(137)), true),
            Some(S::Stopped)
        );
        assert_eq!(
            decide_accessory(S::Running, O::Exited(Some(1)), false),
            Some(S::Failed)
        );
        assert_eq!(decide_accessory(S::Stopped, O::Exited(Some(1)), false), None);
        assert_eq!(decide_accessory(S::Running, O::Gone, false), Some(S::Missing));
        assert_eq!(decide_accessory(S::Missing, O::Gone, false), None);
        for owned in [S::Pending, S::Starting, S::Removing] {
            for observation in [O::Running, O::Gone, O::Exited(Some(1))] {
                assert_eq!(decide_accessory(owned, observation, false), None);
            }
        }
    }
}
