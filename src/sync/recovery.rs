//! Startup recovery of deploys a crash interrupted (SPEC §3 Docker sync: "a deploy interrupted by
//! a crash of docker-watcher is finished or rolled back on the next start; nothing is left
//! half-created and unrecorded").
//!
//! At startup — after subscribing to engine events, on the same single list call the first
//! reconcile uses — every deployment still `running` and every instance still `pending` or
//! `deploying` is an interrupted deploy: nothing else can own them, since deploys only start
//! once recovery is done. For each, with `new` its instance and the container found by the id
//! it recorded (or, when it had not recorded one yet, by its instance label, and then recorded):
//!
//! 1. **Nothing was created** (no container): a `pending`/`deploying` row is deleted. A row that
//!    had got further is left to the reconcile, which marks it `missing`.
//! 2. **Finish** when the deploy had already switched: `new` is its stage's current instance
//!    (the switch comes after the health gate) — or, on a per-tag stage, which has no switch, it
//!    was already marked `running` — *and* its container runs. `new` is marked alive, the
//!    deployment `succeeded`, and on a single stage the other `running` instances are stopped
//!    (the deploy's last step: status `stopped` first, then the container).
//! 3. **Roll back** otherwise: `new` is marked `failed` (keeping the exit code) and its
//!    container stopped, the deployment `failed` ("interrupted by a restart of docker-watcher").
//!    The stage's current instance was never touched before the switch, so it keeps serving as
//!    it was. If the switch had happened but `new` does not run, the switch is undone: the
//!    newest other `running`/`stopped` instance of the stage whose container exists becomes
//!    current again and is started if it is not running.
//!
//! A deployment whose instance row is gone is just marked `failed`. One `warn` event per
//! recovered deploy says what was done. The digest is *not* recorded as failed: the crash was
//! not the image's fault, so the next poll may deploy it again.
//!
//! [`plan_recovery`] is pure and unit-tested; [`Syncer::recover`] executes it.

use std::collections::{BTreeMap, HashSet};

use anyhow::Context;

use super::Syncer;
use super::plan::same_container;
use crate::docker::DockerError;
use crate::docker::engine::{ContainerState, ContainerSummary};
use crate::domain::event::{NewEvent, Source};
use crate::domain::instance::{Deployment, DeploymentStatus, Instance, InstanceStatus};

/// The error text of a deployment recovery rolled back.
pub const INTERRUPTED: &str = "interrupted by a restart of docker-watcher";

/// One step of a recovery, in execution order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Record a container the instance had not recorded yet (found by its label).
    Adopt {
        instance_id: i64,
        container_id: String,
        container_name: String,
        host_port: Option<u16>,
    },
    /// Delete an instance whose container was never created.
    Delete { instance_id: i64 },
    /// Move an instance from `from` to `to` (`running` = seen alive now).
    Mark {
        instance_id: i64,
        from: InstanceStatus,
        to: InstanceStatus,
        exit_code: Option<i64>,
    },
    /// Stop a container (its instance was marked first, so the `die` is expected).
    Stop { container_id: String },
    /// Start a container.
    Start { container_id: String },
    /// Point a stage at an instance.
    SetCurrent { stage_id: i64, instance_id: i64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The deploy had switched and its instance runs: it is finished.
    Finished,
    /// The new instance is failed and stopped; the previous one serves.
    RolledBack,
    /// No container had been created; the instance row is deleted.
    NothingCreated,
    /// The deployment's instance row is gone.
    NoInstance,
}

/// What to do about one interrupted deploy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// The deployments to finish (`succeeded` when finished, else `failed`).
    pub deployments: Vec<i64>,
    /// The instance the deploy was bringing up, when its row exists.
    pub instance: Option<i64>,
    pub stage_id: i64,
    pub project_id: Option<i64>,
    /// `project/stage` when the instance is known, for the event's message.
    pub target: String,
    pub tag: String,
    pub outcome: Outcome,
    pub actions: Vec<Action>,
}

impl Recovery {
    /// The instances this recovery settles: the first reconcile leaves them alone (its list
    /// was taken before recovery acted).
    pub fn settled(&self) -> impl Iterator<Item = i64> + '_ {
        self.actions.iter().filter_map(|action| match action {
            Action::Mark { instance_id, .. }
            | Action::Delete { instance_id }
            | Action::Adopt { instance_id, .. }
            | Action::SetCurrent { instance_id, .. } => Some(*instance_id),
            Action::Stop { .. } | Action::Start { .. } => None,
        })
    }

    fn message(&self) -> String {
        let what = format!("the deploy of {} on {}", self.tag, self.target);
        match self.outcome {
            Outcome::Finished => {
                format!("{what} was {INTERRUPTED}; its instance already served, so the deploy was finished")
            }
            Outcome::RolledBack => format!(
                "{what} was {INTERRUPTED}; rolled back: the new instance is failed and stopped, the previous one keeps serving"
            ),
            Outcome::NothingCreated => {
                format!("{what} was {INTERRUPTED} before its container was created; the instance was dropped")
            }
            Outcome::NoInstance => format!("{what} was {INTERRUPTED}"),
        }
    }
}

/// Plans the recovery of every interrupted deploy. `running` are the deployments still
/// `running`; `instances` every instance; `containers` the one list of this installation's
/// containers; `per_tag_stages` the stages whose policy deploys one instance per tag.
pub fn plan_recovery(
    running: &[Deployment],
    instances: &[Instance],
    containers: &[ContainerSummary],
    per_tag_stages: &HashSet<i64>,
) -> Vec<Recovery> {
    let by_id: BTreeMap<i64, &Instance> = instances.iter().map(|i| (i.id, i)).collect();
    let mut units: BTreeMap<i64, Vec<&Deployment>> = BTreeMap::new();
    let mut recoveries = Vec::new();
    for deployment in running {
        match deployment.instance_id.filter(|id| by_id.contains_key(id)) {
            Some(id) => units.entry(id).or_default().push(deployment),
            None => recoveries.push(Recovery {
                deployments: vec![deployment.id],
                instance: None,
                stage_id: deployment.stage_id,
                project_id: None,
                target: format!("stage {}", deployment.stage_id),
                tag: deployment.image_tag.clone(),
                outcome: Outcome::NoInstance,
                actions: Vec::new(),
            }),
        }
    }
    for instance in instances {
        if matches!(
            instance.status,
            InstanceStatus::Pending | InstanceStatus::Deploying
        ) {
            units.entry(instance.id).or_default();
        }
    }
    for (instance_id, deployments) in units {
        let Some(new) = by_id.get(&instance_id).copied() else {
            continue;
        };
        let mut recovery = Recovery {
            deployments: deployments.iter().map(|d| d.id).collect(),
            instance: Some(new.id),
            stage_id: new.stage_id,
            project_id: Some(new.project_id),
            target: format!("{}/{}", new.project_name, new.stage_name),
            tag: new.image_tag.clone(),
            outcome: Outcome::RolledBack,
            actions: Vec::new(),
        };
        if new.status == InstanceStatus::Removing {
            // A cleanup owns it (it was interrupted too); only the deployment is settled here.
            recoveries.push(recovery);
            continue;
        }
        let Some(container) = container_of(new, containers) else {
            if matches!(new.status, InstanceStatus::Pending | InstanceStatus::Deploying) {
                recovery.outcome = Outcome::NothingCreated;
                recovery.actions.push(Action::Delete { instance_id: new.id });
            }
            if new.is_current && !per_tag_stages.contains(&new.stage_id) {
                recovery
                    .actions
                    .extend(restore_previous(new, instances, containers));
            }
            recoveries.push(recovery);
            continue;
        };
        if new.container_id.is_none() {
            recovery.actions.push(Action::Adopt {
                instance_id: new.id,
                container_id: container.id.clone(),
                container_name: container.name.clone(),
                host_port: container.host_port,
            });
        }
        let runs = container.state == ContainerState::Running;
        let per_tag = per_tag_stages.contains(&new.stage_id);
        let switched = if per_tag {
            new.status == InstanceStatus::Running
        } else {
            new.is_current
        };
        if runs && switched {
            recovery.outcome = Outcome::Finished;
            recovery.actions.push(Action::Mark {
                instance_id: new.id,
                from: new.status,
                to: InstanceStatus::Running,
                exit_code: None,
            });
            if !per_tag {
                for old in instances.iter().filter(|i| {
                    i.stage_id == new.stage_id && i.id != new.id && i.status == InstanceStatus::Running
                }) {
                    recovery.actions.push(Action::Mark {
                        instance_id: old.id,
                        from: old.status,
                        to: InstanceStatus::Stopped,
                        exit_code: None,
                    });
                    if let Some(id) = container_of(old, containers).map(|c| c.id.clone()) {
                        recovery.actions.push(Action::Stop { container_id: id });
                    }
                }
            }
        } else {
            if new.status != InstanceStatus::Failed {
                let exit_code = if runs { None } else { container.exit_code };
                recovery.actions.push(Action::Mark {
                    instance_id: new.id,
                    from: new.status,
                    to: InstanceStatus::Failed,
                    exit_code,
                });
            }
            if matches!(
                container.state,
                ContainerState::Running | ContainerState::Restarting | ContainerState::Paused
            ) {
                recovery.actions.push(Action::Stop {
                    container_id: container.id.clone(),
                });
            }
            if new.is_current && !per_tag {
                recovery
                    .actions
                    .extend(restore_previous(new, instances, containers));
            }
        }
        recoveries.push(recovery);
    }
    recoveries
}

/// An instance's container in the list: the one it recorded, else (mid-deploy, before it was
/// recorded) the one labelled with its id.
fn container_of<'c>(instance: &Instance, containers: &'c [ContainerSummary]) -> Option<&'c ContainerSummary> {
    match instance.container_id.as_deref() {
        Some(id) => containers.iter().find(|c| same_container(&c.id, id)),
        None => containers.iter().find(|c| c.instance_id() == Some(instance.id)),
    }
}

/// Undoes a switch to `new`: the newest other instance of its stage that was serving or kept
/// for rollback, and whose container exists, becomes current again and is started.
fn restore_previous(new: &Instance, instances: &[Instance], containers: &[ContainerSummary]) -> Vec<Action> {
    let previous = instances
        .iter()
        .filter(|i| {
            i.stage_id == new.stage_id
                && i.id != new.id
                && matches!(i.status, InstanceStatus::Running | InstanceStatus::Stopped)
        })
        .filter_map(|i| container_of(i, containers).map(|c| (i, c)))
        .max_by_key(|(i, _)| i.id);
    let Some((previous, container)) = previous else {
        return Vec::new();
    };
    let mut actions = vec![Action::SetCurrent {
        stage_id: previous.stage_id,
        instance_id: previous.id,
    }];
    if container.state != ContainerState::Running {
        actions.push(Action::Start {
            container_id: container.id.clone(),
        });
    }
    actions.push(Action::Mark {
        instance_id: previous.id,
        from: previous.status,
        to: InstanceStatus::Running,
        exit_code: None,
    });
    actions
}

impl Syncer {
    /// Recovers every interrupted deploy against `containers` (the startup list). Returns the
    /// instances it settled. A failing step is logged and the rest goes on: a half-done
    /// recovery is still better than none, and the reconcile and the event stream correct what
    /// is left.
    pub(super) async fn recover(
        &self,
        containers: &[ContainerSummary],
    ) -> anyhow::Result<(usize, HashSet<i64>)> {
        let running = self
            .store
            .list_running_deployments()
            .await
            .context("listing interrupted deployments")?;
        let instances = self
            .store
            .list_instances(&Default::default())
            .await
            .context("listing instances")?;
        if running.is_empty()
            && !instances
                .iter()
                .any(|i| matches!(i.status, InstanceStatus::Pending | InstanceStatus::Deploying))
        {
            return Ok((0, HashSet::new()));
        }
        let per_tag_stages: HashSet<i64> = self
            .store
            .list_all_stages()
            .await
            .context("listing stages")?
            .into_iter()
            .filter(|s| s.tag_policy.mode() == crate::domain::tag_policy::PolicyMode::PerTag)
            .map(|s| s.id)
            .collect();
        let recoveries = plan_recovery(&running, &instances, containers, &per_tag_stages);
        let mut settled = HashSet::new();
        for recovery in &recoveries {
            settled.extend(recovery.settled());
            self.execute_recovery(recovery).await;
        }
        Ok((recoveries.len(), settled))
    }

    async fn execute_recovery(&self, recovery: &Recovery) {
        // Each step builds on the one before (mark, then stop; start, then mark alive), so the
        // first failure ends the recovery: the reconcile and the event stream correct the rest.
        let mut completed = true;
        for action in &recovery.actions {
            if let Err(e) = self.execute_action(action).await {
                tracing::error!(error = format!("{e:#}"), ?action, "a recovery step failed");
                completed = false;
                break;
            }
        }
        let (status, error) = match recovery.outcome {
            Outcome::Finished if completed => (DeploymentStatus::Succeeded, None),
            _ => (DeploymentStatus::Failed, Some(INTERRUPTED)),
        };
        for deployment in &recovery.deployments {
            if let Err(e) = self
                .store
                .finish_deployment(*deployment, status, error, self.clock.now())
                .await
            {
                tracing::error!(error = %e, deployment, "could not finish an interrupted deployment");
            }
        }
        let mut event = NewEvent::warn(Source::Docker, recovery.message())
            .stage(recovery.stage_id)
            .detail("outcome", format!("{:?}", recovery.outcome).to_lowercase())
            .detail("deployments", recovery.deployments.clone());
        if let Some(project) = recovery.project_id {
            event = event.project(project);
        }
        if let Some(instance) = recovery.instance {
            event = event.instance(instance);
        }
        self.bus.publish(event).await;
    }

    async fn execute_action(&self, action: &Action) -> anyhow::Result<()> {
        let now = self.clock.now();
        match action {
            Action::Adopt {
                instance_id,
                container_id,
                container_name,
                host_port,
            } => {
                self.store
                    .set_instance_container(*instance_id, container_id, container_name, *host_port)
                    .await?;
            }
            Action::Delete { instance_id } => match self.store.delete_instance(*instance_id).await {
                Ok(()) | Err(crate::store::StoreError::NotFound) => {}
                Err(e) => return Err(e.into()),
            },
            Action::Mark {
                instance_id,
                from,
                to,
                exit_code,
            } => {
                self.store
                    .update_instance_status_if(*instance_id, *from, *to, *exit_code, now)
                    .await?;
            }
            Action::Stop { container_id } => match self.engine.stop(container_id, super::STOP_GRACE).await {
                Ok(()) | Err(DockerError::NotFound) => {}
                Err(e) => return Err(e).context("stopping a container"),
            },
            Action::Start { container_id } => {
                self.engine
                    .start(container_id)
                    .await
                    .context("starting a container")?;
            }
            Action::SetCurrent {
                stage_id,
                instance_id,
            } => {
                self.store
                    .set_current_instance(*stage_id, Some(*instance_id))
                    .await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::{DateTime, Utc};

    use super::*;
    use crate::docker::engine::labels;
    use crate::domain::instance::Trigger;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    fn instance(id: i64, status: InstanceStatus, container: Option<&str>, current: bool) -> Instance {
        Instance {
            id,
            project_id: 1,
            project_name: "shop".into(),
            stage_id: 10,
            stage_name: "prod".into(),
            image_tag: format!("v{id}"),
            image_digest: None,
            container_id: container.map(str::to_owned),
            container_name: container.map(|c| format!("dw-shop-prod-{c}")),
            status,
            is_current: current,
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

    fn container(id: &str, instance: i64, state: ContainerState, exit: Option<i64>) -> ContainerSummary {
        ContainerSummary {
            id: id.into(),
            name: format!("dw-shop-prod-{instance}"),
            labels: BTreeMap::from([(labels::INSTANCE.to_owned(), instance.to_string())]),
            state,
            exit_code: exit,
            host_port: Some(32000),
            image_id: "sha256:img".into(),
        }
    }

    fn deployment(id: i64, instance: Option<i64>) -> Deployment {
        Deployment {
            id,
            stage_id: 10,
            instance_id: instance,
            image_tag: "v2".into(),
            image_digest: None,
            trigger: Trigger::Poll,
            status: DeploymentStatus::Running,
            error: None,
            actor: None,
            started_at: at(0),
            finished_at: None,
            hook_output: None,
        }
    }

    fn mark(id: i64, from: InstanceStatus, to: InstanceStatus, exit_code: Option<i64>) -> Action {
        Action::Mark {
            instance_id: id,
            from,
            to,
            exit_code,
        }
    }

    use InstanceStatus as S;

    #[test]
    fn a_deploy_interrupted_before_its_container_existed_drops_the_instance() {
        let instances = [
            instance(1, S::Running, Some("old"), true),
            instance(2, S::Pending, None, false),
        ];
        let containers = [container("old", 1, ContainerState::Running, None)];
        let plan = plan_recovery(
            &[deployment(5, Some(2))],
            &instances,
            &containers,
            &HashSet::new(),
        );
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].outcome, Outcome::NothingCreated);
        assert_eq!(plan[0].deployments, vec![5]);
        assert_eq!(plan[0].actions, vec![Action::Delete { instance_id: 2 }]);
    }

    #[test]
    fn a_deploy_interrupted_in_its_health_gate_is_rolled_back_and_the_old_instance_untouched() {
        let instances = [
            instance(1, S::Running, Some("old"), true),
            instance(2, S::Deploying, Some("new"), false),
        ];
        let containers = [
            container("old", 1, ContainerState::Running, None),
            container("new", 2, ContainerState::Running, None),
        ];
        let plan = plan_recovery(
            &[deployment(5, Some(2))],
            &instances,
            &containers,
            &HashSet::new(),
        );
        assert_eq!(plan[0].outcome, Outcome::RolledBack);
        assert_eq!(
            plan[0].actions,
            vec![
                mark(2, S::Deploying, S::Failed, None),
                Action::Stop {
                    container_id: "new".into()
                },
            ]
        );
        assert_eq!(plan[0].settled().collect::<HashSet<_>>(), HashSet::from([2]));
    }

    #[test]
    fn a_container_created_but_not_yet_recorded_is_adopted_then_rolled_back() {
        let instances = [instance(2, S::Deploying, None, false)];
        let containers = [container("new", 2, ContainerState::Created, None)];
        let plan = plan_recovery(&[], &instances, &containers, &HashSet::new());
        assert_eq!(plan[0].deployments, Vec::<i64>::new());
        assert_eq!(
            plan[0].actions,
            vec![
                Action::Adopt {
                    instance_id: 2,
                    container_id: "new".into(),
                    container_name: "dw-shop-prod-2".into(),
                    host_port: Some(32000),
                },
                mark(2, S::Deploying, S::Failed, None),
            ]
        );
    }

    #[test]
    fn a_deploy_that_had_switched_to_a_running_instance_is_finished_and_the_old_one_stopped() {
        let instances = [
            instance(1, S::Running, Some("old"), false),
            instance(2, S::Running, Some("new"), true),
            instance(3, S::Stopped, Some("older"), false),
        ];
        let containers = [
            container("old", 1, ContainerState::Running, None),
            container("new", 2, ContainerState::Running, None),
        ];
        let plan = plan_recovery(
            &[deployment(5, Some(2))],
            &instances,
            &containers,
            &HashSet::new(),
        );
        assert_eq!(plan[0].outcome, Outcome::Finished);
        assert_eq!(
            plan[0].actions,
            vec![
                mark(2, S::Running, S::Running, None),
                mark(1, S::Running, S::Stopped, None),
                Action::Stop {
                    container_id: "old".into()
                },
            ]
        );
    }

    #[test]
    fn a_switched_deploy_whose_instance_died_brings_the_previous_instance_back() {
        let instances = [
            instance(1, S::Stopped, Some("old"), false),
            instance(2, S::Deploying, Some("new"), true),
        ];
        let containers = [
            container("old", 1, ContainerState::Exited, Some(0)),
            container("new", 2, ContainerState::Exited, Some(3)),
        ];
        let plan = plan_recovery(
            &[deployment(5, Some(2))],
            &instances,
            &containers,
            &HashSet::new(),
        );
        assert_eq!(plan[0].outcome, Outcome::RolledBack);
        assert_eq!(
            plan[0].actions,
            vec![
                mark(2, S::Deploying, S::Failed, Some(3)),
                Action::SetCurrent {
                    stage_id: 10,
                    instance_id: 1
                },
                Action::Start {
                    container_id: "old".into()
                },
                mark(1, S::Stopped, S::Running, None),
            ]
        );
    }

    #[test]
    fn a_running_per_tag_instance_finishes_its_deploy_without_stopping_its_siblings() {
        let instances = [
            instance(1, S::Running, Some("pr1"), false),
            instance(2, S::Running, Some("pr2"), false),
        ];
        let containers = [
            container("pr1", 1, ContainerState::Running, None),
            container("pr2", 2, ContainerState::Running, None),
        ];
        let plan = plan_recovery(
            &[deployment(5, Some(2))],
            &instances,
            &containers,
            &HashSet::from([10]),
        );
        assert_eq!(plan[0].outcome, Outcome::Finished);
        assert_eq!(plan[0].actions, vec![mark(2, S::Running, S::Running, None)]);
        // A single stage's deploy that never switched is rolled back, even if it runs.
        let single = plan_recovery(
            &[deployment(5, Some(2))],
            &instances,
            &containers,
            &HashSet::new(),
        );
        assert_eq!(single[0].outcome, Outcome::RolledBack);
    }

    #[test]
    fn a_deployment_without_an_instance_row_is_just_failed() {
        let plan = plan_recovery(
            &[deployment(5, None), deployment(6, Some(99))],
            &[],
            &[],
            &HashSet::new(),
        );
        assert_eq!(plan.len(), 2);
        assert!(
            plan.iter()
                .all(|r| r.outcome == Outcome::NoInstance && r.actions.is_empty())
        );
    }

    #[test]
    fn an_instance_being_removed_is_left_to_its_cleanup() {
        let instances = [instance(2, S::Removing, Some("new"), false)];
        let containers = [container("new", 2, ContainerState::Running, None)];
        let plan = plan_recovery(
            &[deployment(5, Some(2))],
            &instances,
            &containers,
            &HashSet::new(),
        );
        assert_eq!(plan[0].outcome, Outcome::RolledBack);
        assert!(plan[0].actions.is_empty());
    }

    #[test]
    fn two_deployments_of_one_instance_are_recovered_together() {
        let instances = [instance(2, S::Deploying, Some("new"), false)];
        let containers = [container("new", 2, ContainerState::Exited, Some(1))];
        let plan = plan_recovery(
            &[deployment(5, Some(2)), deployment(6, Some(2))],
            &instances,
            &containers,
            &HashSet::new(),
        );
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].deployments, vec![5, 6]);
        assert_eq!(plan[0].actions, vec![mark(2, S::Deploying, S::Failed, Some(1))]);
    }

    #[test]
    fn nothing_is_interrupted_when_no_deploy_was_running() {
        let instances = [
            instance(1, S::Running, Some("old"), true),
            instance(2, S::Failed, Some("x"), false),
        ];
        assert!(plan_recovery(&[], &instances, &[], &HashSet::new()).is_empty());
    }
}
