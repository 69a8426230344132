//! Rollback (SPEC §3: `POST /api/stages/{id}/rollback`): the previous successful instance of a
//! single stage comes back — its container started again when it still exists, else a new
//! instance created from its digest — through the same health gate and switch as a deploy, and
//! in the same order: on a `stop_first` stage the current instance stops first.

use anyhow::Context;
use tracing::Instrument;

use super::attempt::Attempt;
use super::{BringUp, ConflictReason, DeployOutcome, DeployResult, Deployer, DockerContext, container_name};
use crate::docker::DockerError;
use crate::domain::image_ref::Digest;
use crate::domain::instance::{Instance, InstanceStatus, Trigger};
use crate::domain::project::Project;
use crate::domain::stage::{DeployStrategy, Stage};
use crate::domain::tag_policy::PolicyMode;

/// The instance a rollback brings back, among a single stage's instances as the store lists
/// them (newest first): the first other than the current one that ran once and is now stopped
/// (or whose container is gone). The UI names it in the rollback confirmation.
pub fn rollback_target(current: Option<i64>, instances: &[Instance]) -> Option<&Instance> {
    instances.iter().find(|i| {
        Some(i.id) != current
            && matches!(i.status, InstanceStatus::Stopped | InstanceStatus::Missing)
            && i.last_alive_at.is_some()
            && i.image_digest.is_some()
    })
}

impl Deployer {
    /// Brings back a single stage's previous successful instance: the newest instance other
    /// than the current one that ran once (`last_alive_at` set) and is now stopped (or whose
    /// container is gone). Its container is started again if it still exists, else a new
    /// instance is created from its digest; either way through the health gate, and the
    /// current instance is stopped after the switch. `ConflictReason::NothingToRollBack` when
    /// there is no such instance.
    pub async fn rollback(&self, stage_id: i64, actor: Option<String>) -> DeployResult<DeployOutcome> {
        let span = tracing::info_span!("rollback", stage_id);
        async move {
            let Some(_guard) = self.inner.locks.enter(stage_id, None).await else {
                self.count(Trigger::Rollback, "superseded");
                return Ok(DeployOutcome::Superseded);
            };
            let (stage, project) = self.stage_and_project(stage_id).await?;
            if stage.tag_policy.mode() != PolicyMode::Single {
                return Err(ConflictReason::RollbackPerTag {
                    stage: stage.name.to_string(),
                }
                .into());
            }
            self.bring_back_previous(&stage, &project, Trigger::Rollback, actor.as_deref())
                .await
        }
        .instrument(span)
        .await
    }

    /// Brings back the previous successful instance of a single stage, with the stage's lock
    /// held: what a rollback does, also the fallback of a stage healing itself.
    pub(super) async fn bring_back_previous(
        &self,
        stage: &Stage,
        project: &Project,
        trigger: Trigger,
        actor: Option<&str>,
    ) -> DeployResult<DeployOutcome> {
        let instances = self.stage_instances(stage.id).await?;
        let candidate = rollback_target(stage.current_instance_id, &instances);
        let Some(candidate) = candidate.cloned() else {
            return Err(ConflictReason::NothingToRollBack {
                stage: stage.name.to_string(),
            }
            .into());
        };
        let digest = candidate
            .image_digest
            .as_deref()
            .map(Digest::parse)
            .transpose()
            .map_err(|e| anyhow::anyhow!("instance {} has a bad digest: {e}", candidate.id))?
            .ok_or_else(|| anyhow::anyhow!("instance {} has no digest", candidate.id))?;
        let olds = self.predecessors(stage, &candidate.image_tag).await?;
        let container = match &candidate.container_id {
            Some(id) => match self.deps().engine.inspect(id).await {
                Ok(_) => Some(id.clone()),
                Err(DockerError::NotFound) => None,
                Err(e) => return Err(e).docker("inspecting the earlier instance's container"),
            },
            None => None,
        };
        let Some(container_id) = container else {
            // Gone from Docker: recreate it from its digest as a new instance. A stale
            // cleanup that claimed the earlier instance meanwhile keeps it (`removing`): the
            // rollback does not need its row.
            if candidate.status != InstanceStatus::Missing {
                self.deps()
                    .store
                    .update_instance_status_if(
                        candidate.id,
                        candidate.status,
                        InstanceStatus::Missing,
                        None,
                        self.now(),
                    )
                    .await
                    .context("marking the earlier instance missing")?;
            }
            return self
                .deploy_locked(stage, project, &candidate.image_tag, &digest, trigger, actor)
                .await;
        };
        // Claim the earlier instance before its container is touched, from the status it was
        // chosen with: a stale cleanup may have claimed it (`removing`) since, and then it is
        // the cleanup's. `deploying` is a status neither the cleanup nor the Docker sync
        // touches.
        let claimed = self
            .deps()
            .store
            .update_instance_status_if(
                candidate.id,
                candidate.status,
                InstanceStatus::Deploying,
                None,
                self.now(),
            )
            .await;
        self.written(candidate.id, claimed, "marking the instance deploying")
            .await?;
        let deployment = match self
            .deps()
            .store
            .insert_deployment(
                stage.id,
                Some(candidate.id),
                &candidate.image_tag,
                Some(digest.as_str()),
                trigger,
                actor,
                self.now(),
            )
            .await
        {
            Ok(deployment) => deployment,
            Err(e) => {
                if let Err(e) = self
                    .deps()
                    .store
                    .update_instance_status_if(
                        candidate.id,
                        InstanceStatus::Deploying,
                        candidate.status,
                        None,
                        self.now(),
                    )
                    .await
                {
                    tracing::error!(error = %e, "could not put the previous status back");
                }
                return Err(anyhow::Error::from(e).context("recording the deployment").into());
            }
        };
        let mut attempt = Attempt {
            stage: stage.clone(),
            project: project.clone(),
            tag: candidate.image_tag.clone(),
            digest,
            trigger,
            deployment,
            instance_id: candidate.id,
            container_id: Some(container_id.clone()),
            host_port: None,
            started: tokio::time::Instant::now(),
        };
        let name = candidate
            .container_name
            .clone()
            .unwrap_or_else(|| container_name(project, stage, candidate.id));
        if stage.strategy == DeployStrategy::StopFirst && !olds.is_empty() {
            // The current instance stops before the earlier one starts again.
            return self
                .replace_stopping_first(attempt, olds, BringUp::Restart { container_id, name })
                .await;
        }
        let started = self
            .start_and_record(&mut attempt, &container_id, &name, false)
            .await;
        if let Err(e) = started {
            return self.fail(attempt, format!("{e:#}")).await;
        }
        self.gate_and_switch(attempt, olds).await
    }
}
