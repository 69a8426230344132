//! A stage heals (SPEC §3, Docker sync): when the container of a stage's serving instance is
//! removed outside docker-watcher (`docker rm -f`, an engine restart that lost it), the Docker
//! sync reports the instance lost and the stage brings itself back under its lock — first by
//! recreating the same digest as a new instance (health-gated, trigger `heal`), and when that
//! fails, on a single stage, by bringing back the previous instance as a rollback would. Either
//! way one `warn` event (kind `stage_healed`) says which; an `error` when neither worked.
//!
//! Only what was serving heals: a single stage's current instance, or on a per-tag stage the
//! newest instance of its tag while no other instance of that tag runs. An instance stopped on
//! purpose (by docker-watcher, by `docker stop`) and then removed stays down: the report comes
//! only for an instance that was running, or had crashed, when its container went away.

use tracing::Instrument;

use super::{DeployError, DeployOutcome, DeployResult, Deployer};
use crate::domain::event::{EventKind, NewEvent, Source};
use crate::domain::image_ref::Digest;
use crate::domain::instance::{Instance, InstanceFilter, InstanceStatus, Trigger};
use crate::domain::project::Project;
use crate::domain::stage::Stage;
use crate::domain::tag_policy::PolicyMode;

/// How a heal ended.
#[derive(Debug, Clone, PartialEq)]
pub enum HealOutcome {
    /// Nothing to heal: the instance is no longer what its stage serves (a deploy, a rollback
    /// or an earlier heal moved on), or it is not missing any more.
    NotNeeded,
    /// The same digest runs again as a new instance.
    Recreated { instance_id: i64 },
    /// Recreating failed; the previous instance serves instead.
    Previous {
        instance_id: i64,
        recreate_error: String,
    },
    /// Neither worked; the stage serves nothing until someone deploys.
    Failed { reason: String },
}

impl Deployer {
    /// Heals `stage_id` after the container of `instance_id` was found gone (see the module
    /// doc). Waits for the stage's lock; a deploy that moved the stage on meanwhile makes it
    /// `NotNeeded`.
    pub async fn heal(&self, stage_id: i64, instance_id: i64) -> DeployResult<HealOutcome> {
        let span = tracing::info_span!("heal", stage_id, instance_id);
        async move {
            let lost = match self.instance(instance_id).await {
                Ok(instance) => instance,
                Err(DeployError::NotFound(_)) => return Ok(HealOutcome::NotNeeded),
                Err(e) => return Err(e),
            };
            let (stage, _) = self.stage_and_project(stage_id).await?;
            let lane = match stage.tag_policy.mode() {
                PolicyMode::Single => None,
                PolicyMode::PerTag => Some(lost.image_tag.clone()),
            };
            let Some(_guard) = self.inner.locks.enter(stage_id, lane).await else {
                // A newer target for the stage arrived while this waited: it brings the stage
                // back itself.
                return Ok(HealOutcome::NotNeeded);
            };
            // Read again under the lock: a deploy we waited for may have moved the stage on.
            let (stage, project) = self.stage_and_project(stage_id).await?;
            let lost = match self.instance(instance_id).await {
                Ok(instance) => instance,
                Err(DeployError::NotFound(_)) => return Ok(HealOutcome::NotNeeded),
                Err(e) => return Err(e),
            };
            if !self.still_serving(&stage, &lost).await? {
                tracing::debug!("nothing to heal: the stage moved on");
                return Ok(HealOutcome::NotNeeded);
            }
            let outcome = self.heal_locked(&stage, &project, &lost).await?;
            self.publish_heal(&stage, &project, &lost, &outcome).await;
            Ok(outcome)
        }
        .instrument(span)
        .await
    }

    /// Whether `lost` is still missing and still what its stage serves.
    async fn still_serving(&self, stage: &Stage, lost: &Instance) -> DeployResult<bool> {
        if lost.status != InstanceStatus::Missing || lost.stage_id != stage.id || lost.image_digest.is_none()
        {
            return Ok(false);
        }
        Ok(match stage.tag_policy.mode() {
            PolicyMode::Single => stage.current_instance_id == Some(lost.id),
            PolicyMode::PerTag => {
                let instances = self
                    .deps()
                    .store
                    .list_instances(&InstanceFilter {
                        stage_id: Some(stage.id),
                        ..Default::default()
                    })
                    .await
                    .map_err(anyhow::Error::from)?;
                let same_tag: Vec<&Instance> = instances
                    .iter()
                    .filter(|i| i.image_tag == lost.image_tag)
                    .collect();
                let newest = same_tag.iter().map(|i| i.id).max() == Some(lost.id);
                let another_runs = same_tag.iter().any(|i| {
                    i.id != lost.id
                        && matches!(
                            i.status,
                            InstanceStatus::Running | InstanceStatus::Pending | InstanceStatus::Deploying
                        )
                });
                newest && !another_runs
            }
        })
    }

    async fn heal_locked(
        &self,
        stage: &Stage,
        project: &Project,
        lost: &Instance,
    ) -> DeployResult<HealOutcome> {
        let digest = lost
            .image_digest
            .as_deref()
            .map(Digest::parse)
            .transpose()
            .map_err(|e| anyhow::anyhow!("instance {} has a bad digest: {e}", lost.id))?
            .ok_or_else(|| anyhow::anyhow!("instance {} has no digest", lost.id))?;
        let recreate_error = match self
            .deploy_locked(stage, project, &lost.image_tag, &digest, Trigger::Heal, None)
            .await
        {
            Ok(DeployOutcome::Succeeded(d)) => {
                return Ok(HealOutcome::Recreated {
                    instance_id: d.instance_id.unwrap_or_default(),
                });
            }
            Ok(DeployOutcome::Failed(d)) => d.error.unwrap_or_else(|| "the deploy failed".to_owned()),
            // The lock is held and the instance is missing: neither can happen; say so if it
            // ever does rather than claim a heal.
            Ok(other) => format!("the deploy ended as {other:?}"),
            Err(e) => e.to_string(),
        };
        if stage.tag_policy.mode() != PolicyMode::Single {
            return Ok(HealOutcome::Failed {
                reason: format!("recreating it failed: {recreate_error}"),
            });
        }
        // The failed attempt left the stage as it was: the lost instance is still current.
        let (stage, project) = self.stage_and_project(stage.id).await?;
        match self
            .bring_back_previous(&stage, &project, Trigger::Heal, None)
            .await
        {
            Ok(DeployOutcome::Succeeded(d)) => Ok(HealOutcome::Previous {
                instance_id: d.instance_id.unwrap_or_default(),
                recreate_error,
            }),
            Ok(DeployOutcome::Failed(d)) => Ok(HealOutcome::Failed {
                reason: format!(
                    "recreating it failed: {recreate_error}; bringing back the previous instance failed: {}",
                    d.error.as_deref().unwrap_or("the deploy failed")
                ),
            }),
            Ok(other) => Ok(HealOutcome::Failed {
                reason: format!(
                    "recreating it failed: {recreate_error}; bringing back the previous instance ended as {other:?}"
                ),
            }),
            Err(e) => Ok(HealOutcome::Failed {
                reason: format!(
                    "recreating it failed: {recreate_error}; and there is no previous instance to bring back ({e})"
                ),
            }),
        }
    }

    async fn publish_heal(&self, stage: &Stage, project: &Project, lost: &Instance, outcome: &HealOutcome) {
        let gone = format!(
            "the container of instance {} ({}) of {}/{} was removed outside docker-watcher",
            lost.id, lost.image_tag, project.name, stage.name
        );
        let event = match outcome {
            HealOutcome::NotNeeded => return,
            HealOutcome::Recreated { instance_id } => NewEvent::warn(
                Source::Deployer,
                format!(
                    "{gone}; the stage healed by recreating {} ({}) as instance {instance_id}",
                    lost.image_tag,
                    // Healing needs a digest, so the lost instance has a valid one.
                    lost.image_digest
                        .as_deref()
                        .and_then(|d| Digest::parse(d).ok())
                        .map_or_else(String::new, |d| d.short().to_owned())
                ),
            )
            .detail("healed_by", "recreate")
            .instance(*instance_id),
            HealOutcome::Previous {
                instance_id,
                recreate_error,
            } => NewEvent::warn(
                Source::Deployer,
                format!(
                    "{gone}; recreating it failed ({recreate_error}), so the stage healed by bringing back \
                     the previous instance {instance_id}"
                ),
            )
            .detail("healed_by", "previous")
            .instance(*instance_id),
            HealOutcome::Failed { reason } => NewEvent::error(
                Source::Deployer,
                format!(
                    "{gone}, and the stage could not heal: {reason}. Deploy or roll back to bring it back"
                ),
            ),
        };
        let event = event
            .kind(EventKind::StageHealed)
            .project(project.id)
            .stage(stage.id)
            .detail("lost_instance_id", lost.id)
            .detail("tag", lost.image_tag.as_str())
            .recorded();
        self.deps().bus.publish(event).await;
    }
}
