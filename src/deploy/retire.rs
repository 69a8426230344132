//! Taking instances out of service: an instance a deploy replaced is stopped once its open
//! connections drained (or the drain timeout passed); instances nothing replaces (their tag is
//! gone, or the stage runs more than `max_instances`) leave the route table first. Either way
//! they stay `stopped`, available for rollback, until stale cleanup removes them.

use anyhow::Context;

use super::Deployer;
use super::per_tag::over_capacity;
use crate::docker::DockerError;
use crate::domain::event::{NewEvent, Source};
use crate::domain::instance::{Instance, InstanceStatus};
use crate::domain::stage::Stage;

impl Deployer {
    /// Stops an instance a deploy replaced, once its open connections drained (or the drain
    /// timeout passed). It stays `stopped`, available for rollback. Whether its container is
    /// down now (stopped, or gone).
    pub(super) async fn retire_replaced(&self, old: &Instance) -> bool {
        let deps = self.deps();
        if !deps
            .routes
            .wait_drained(old.id, self.inner.options.drain_timeout)
            .await
        {
            tracing::info!(
                instance_id = old.id,
                "stopping the old instance with connections still open after the drain timeout"
            );
        }
        self.stop_container(old, "it was replaced by a newer deploy")
            .await
    }

    /// Stops instances that are not replaced by anything (their tag is gone, or the stage has
    /// more than `max_instances`): out of the route table first, then drained, then stopped.
    pub(super) async fn retire_unrouted(&self, instances: &[Instance], reason: &str) -> anyhow::Result<()> {
        if instances.is_empty() {
            return Ok(());
        }
        let deps = self.deps();
        for instance in instances {
            deps.store
                .update_instance_status(instance.id, InstanceStatus::Stopped, None, self.now())
                .await
                .context("marking the instance stopped")?;
        }
        deps.routes
            .rebuild()
            .await
            .context("rebuilding the route table")?;
        for instance in instances {
            deps.routes
                .wait_drained(instance.id, self.inner.options.drain_timeout)
                .await;
            self.stop_container(instance, reason).await;
        }
        Ok(())
    }

    /// Stops an instance's container and records it `stopped` (`missing` when the container is
    /// gone). A failure to stop is a `warn` event, not an error: nothing routes to it any more.
    /// Whether the container is down now.
    async fn stop_container(&self, instance: &Instance, reason: &str) -> bool {
        let deps = self.deps();
        // Recorded before the SIGTERM, so the Docker sync reads the `die` that follows as the
        // stop it is, not as a crash of a running instance.
        if let Err(e) = deps
            .store
            .update_instance_status(instance.id, InstanceStatus::Stopped, None, self.now())
            .await
        {
            tracing::error!(error = %e, instance_id = instance.id, "could not mark the instance stopped");
        }
        let Some(container_id) = &instance.container_id else {
            return true;
        };
        let grace = self.stop_grace(instance.stage_id).await;
        match deps.engine.stop(container_id, grace).await {
            Ok(()) => {
                tracing::info!(instance_id = instance.id, reason, "stopped instance");
                true
            }
            Err(DockerError::NotFound) => {
                if let Err(e) = deps
                    .store
                    .update_instance_status(instance.id, InstanceStatus::Missing, None, self.now())
                    .await
                {
                    tracing::error!(error = %e, instance_id = instance.id, "could not mark the instance missing");
                }
                true
            }
            Err(e) => {
                deps.bus
                    .publish(
                        NewEvent::warn(
                            Source::Deployer,
                            format!("could not stop instance {} ({reason}): {e}", instance.id),
                        )
                        .project(instance.project_id)
                        .stage(instance.stage_id)
                        .instance(instance.id),
                    )
                    .await;
                false
            }
        }
    }

    pub(super) async fn enforce_capacity(&self, stage: &Stage) -> anyhow::Result<()> {
        let instances = self.stage_instances(stage.id).await?;
        let excess = over_capacity(&instances, stage.max_instances);
        let excess: Vec<Instance> = instances.into_iter().filter(|i| excess.contains(&i.id)).collect();
        for instance in &excess {
            self.publish_info(
                instance,
                format!(
                    "stopped instance {} (tag {}): stage {} runs at most {} instances",
                    instance.id, instance.image_tag, stage.name, stage.max_instances
                ),
                None,
            )
            .await;
        }
        self.retire_unrouted(&excess, "max_instances reached").await
    }
}
