//! What a member can do to one instance (SPEC §5: `POST /api/instances/{id}/stop|start|restart`,
//! `DELETE /api/instances/{id}`), under its stage's lock. A stale cleanup claims instances
//! without that lock, by a conditional move to `removing`; so every status written here is
//! conditional too, and a refused write is a conflict, never an overwrite.

use anyhow::Context;

use super::{ConflictReason, DeployError, DeployResult, Deployer, DockerContext, Missing};
use crate::docker::DockerError;
use crate::domain::instance::{Instance, InstanceStatus};
use crate::domain::tag_policy::PolicyMode;
use crate::store::StoreError;

impl Deployer {
    pub(super) async fn instance(&self, id: i64) -> DeployResult<Instance> {
        match self.deps().store.get_instance(id).await {
            Ok(instance) => Ok(instance),
            Err(StoreError::NotFound) => Err(Missing::Instance(id).into()),
            Err(e) => Err(anyhow::Error::from(e).context("reading the instance").into()),
        }
    }

    /// The instance a conditional status write returned, or — when the row refused it — why:
    /// the conflict [`refuse_removing`] gives when a stale cleanup claimed the instance,
    /// `Missing::Instance` when it is gone, a conflict naming the status it moved to otherwise.
    pub(super) async fn written(
        &self,
        id: i64,
        written: Result<Option<Instance>, StoreError>,
        what: &'static str,
    ) -> DeployResult<Instance> {
        if let Some(instance) = written.context(what)? {
            return Ok(instance);
        }
        let now = self.instance(id).await?;
        refuse_removing(&now)?;
        Err(ConflictReason::InstanceChanged {
            id,
            status: now.status,
        }
        .into())
    }

    /// Stops an instance's container (SIGTERM, then SIGKILL after the grace period) and
    /// records it `stopped`; a stage's current instance stops being routed.
    pub async fn stop_instance(&self, id: i64, actor: Option<&str>) -> DeployResult<Instance> {
        let stage_id = self.instance(id).await?.stage_id;
        let _guard = self.inner.locks.lock(stage_id).await;
        let instance = self.instance(id).await?;
        refuse_removing(&instance)?;
        if matches!(
            instance.status,
            InstanceStatus::Pending | InstanceStatus::Deploying
        ) {
            return Err(ConflictReason::InstanceDeploying(id).into());
        }
        let deps = self.deps();
        let was_running = instance.status == InstanceStatus::Running;
        if was_running {
            // Out of the route table before the SIGTERM, so no new request reaches a container
            // that is shutting down. A failed instance stays `failed`: that says more. Written
            // only while it is still the `running` read above, so nothing another writer set
            // in between is overwritten, and the container is not touched then.
            let written = deps
                .store
                .update_instance_status_if(
                    id,
                    InstanceStatus::Running,
                    InstanceStatus::Stopped,
                    None,
                    self.now(),
                )
                .await;
            self.written(id, written, "marking the instance stopped").await?;
            deps.routes
                .rebuild()
                .await
                .context("rebuilding the route table")?;
        }
        if let Some(container_id) = &instance.container_id {
            let grace = self.stop_grace(instance.stage_id).await;
            match deps.engine.stop(container_id, grace).await {
                Ok(()) => {}
                Err(DockerError::NotFound) => {
                    let written = deps
                        .store
                        .update_instance_status_unless_removing(id, InstanceStatus::Missing, None, self.now())
                        .await;
                    self.written(id, written, "marking the instance missing").await?;
                }
                Err(e) => {
                    if was_running {
                        // It still runs: say so, and route it again.
                        let written = deps
                            .store
                            .update_instance_status_unless_removing(
                                id,
                                InstanceStatus::Running,
                                None,
                                self.now(),
                            )
                            .await;
                        self.written(id, written, "marking the instance running again")
                            .await?;
                        deps.routes
                            .rebuild()
                            .await
                            .context("rebuilding the route table")?;
                    }
                    return Err(e).docker("stopping the container");
                }
            }
        }
        let stopped = self.instance(id).await?;
        // A stale cleanup may have claimed an instance that was not running while its container
        // was asked to stop: the instance is the cleanup's now, and this stop did not happen.
        refuse_removing(&stopped)?;
        self.publish_info(
            &stopped,
            format!("instance {id} (tag {}) stopped", stopped.image_tag),
            actor,
        )
        .await;
        Ok(stopped)
    }

    /// Starts an instance's container again and records it running; it is routed again if it
    /// is its stage's current instance (or a per-tag instance).
    pub async fn start_instance(&self, id: i64, actor: Option<&str>) -> DeployResult<Instance> {
        self.start_or_restart(id, actor, false).await
    }

    /// Restarts an instance's container (stop with the grace period, then start).
    pub async fn restart_instance(&self, id: i64, actor: Option<&str>) -> DeployResult<Instance> {
        self.start_or_restart(id, actor, true).await
    }

    async fn start_or_restart(&self, id: i64, actor: Option<&str>, restart: bool) -> DeployResult<Instance> {
        let stage_id = self.instance(id).await?.stage_id;
        let _guard = self.inner.locks.lock(stage_id).await;
        let instance = self.instance(id).await?;
        refuse_removing(&instance)?;
        if matches!(
            instance.status,
            InstanceStatus::Pending | InstanceStatus::Deploying
        ) {
            return Err(ConflictReason::InstanceDeploying(id).into());
        }
        let deps = self.deps();
        let Some(container_id) = instance.container_id.clone() else {
            return Err(ConflictReason::NoContainer(id).into());
        };
        let result = if restart {
            let grace = self.stop_grace(stage_id).await;
            deps.engine.restart(&container_id, grace).await
        } else {
            deps.engine.start(&container_id).await
        };
        match result {
            Ok(()) => {}
            Err(DockerError::NotFound) => {
                let written = deps
                    .store
                    .update_instance_status_unless_removing(id, InstanceStatus::Missing, None, self.now())
                    .await;
                self.written(id, written, "marking the instance missing").await?;
                return Err(ConflictReason::ContainerGone(id).into());
            }
            Err(e) => return Err(e).docker("starting the container"),
        }
        let details = deps
            .engine
            .inspect(&container_id)
            .await
            .docker("inspecting the container")?;
        let name = instance
            .container_name
            .clone()
            .unwrap_or_else(|| details.name.trim_start_matches('/').to_owned());
        deps.store
            .set_instance_container(id, &container_id, &name, details.host_port)
            .await
            .context("recording the published port")?;
        // Not conditional on the status read: the Docker sync records this start's own events
        // (a restart's `die`, then `start`) and may have got there first. But a stale cleanup
        // that claimed the instance meanwhile owns it, and it stays `removing`.
        let written = deps
            .store
            .update_instance_status_unless_removing(id, InstanceStatus::Running, None, self.now())
            .await;
        let alive = self.written(id, written, "marking the instance running").await?;
        deps.routes
            .rebuild()
            .await
            .context("rebuilding the route table")?;
        let verb = if restart { "restarted" } else { "started" };
        self.publish_info(
            &alive,
            format!("instance {id} (tag {}) {verb}", alive.image_tag),
            actor,
        )
        .await;
        Ok(alive)
    }

    /// Removes an instance: its container (stopped first; one already gone is fine), its row
    /// and its hostname claim. A stage's running current instance (or a running per-tag
    /// instance) is refused: stop it first, so a click cannot take a live site down.
    pub async fn remove_instance(&self, id: i64, actor: Option<&str>) -> DeployResult<()> {
        let stage_id = self.instance(id).await?.stage_id;
        let _guard = self.inner.locks.lock(stage_id).await;
        let instance = self.instance(id).await?;
        refuse_removing(&instance)?;
        let deps = self.deps();
        let stage = deps
            .store
            .get_stage(stage_id)
            .await
            .context("reading the stage")?;
        let routed = instance.status == InstanceStatus::Running
            && (instance.is_current || stage.tag_policy.mode() == PolicyMode::PerTag);
        if routed {
            return Err(ConflictReason::InstanceRouted {
                id,
                stage: stage.name.to_string(),
            }
            .into());
        }
        // The claim, as the stale cleanup's: `removing` only while the row still has the
        // status read above, so of the two only one removes the container.
        let previous = instance.status;
        let written = deps
            .store
            .update_instance_status_if(id, previous, InstanceStatus::Removing, None, self.now())
            .await;
        self.written(id, written, "marking the instance removing").await?;
        if let Err(e) = self.remove_container(&instance).await {
            if let Err(e) = deps
                .store
                .update_instance_status_if(id, InstanceStatus::Removing, previous, None, self.now())
                .await
            {
                tracing::error!(error = %e, "could not put the previous status back");
            }
            return Err(e);
        }
        deps.store
            .delete_instance(id)
            .await
            .context("deleting the instance")?;
        deps.routes
            .rebuild()
            .await
            .context("rebuilding the route table")?;
        self.publish_info(
            &instance,
            format!("instance {id} (tag {}) removed", instance.image_tag),
            actor,
        )
        .await;
        Ok(())
    }

    async fn remove_container(&self, instance: &Instance) -> DeployResult<()> {
        let Some(container_id) = &instance.container_id else {
            return Ok(());
        };
        let engine = &self.deps().engine;
        let grace = self.stop_grace(instance.stage_id).await;
        match engine.stop(container_id, grace).await {
            Ok(()) | Err(DockerError::NotFound) => {}
            Err(e) => return Err(e).docker("stopping the container"),
        }
        match engine.remove(container_id).await {
            Ok(()) | Err(DockerError::NotFound) => Ok(()),
            Err(e) => Err(e).docker("removing the container"),
        }
    }
}

fn refuse_removing(instance: &Instance) -> Result<(), DeployError> {
    if instance.status == InstanceStatus::Removing {
        return Err(ConflictReason::InstanceRemoving(instance.id).into());
    }
    Ok(())
}
