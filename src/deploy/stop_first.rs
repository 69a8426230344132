//! The `stop_first` strategy (SPEC §3 "Workloads"): for an application that must never run
//! twice, the old instance stops before the new one starts, and the proxy holds the stage's
//! requests meanwhile instead of failing them.
//!
//! After the attempt's preparation (pull, `pre_deploy` hook — the old instance still serving):
//! hold the routes of the instances being replaced → let their open requests drain → stop them
//! → create (or restart) and start the new container → health gate → switch the route →
//! release the hold, and the held requests go to the new instance → `post_deploy`. When the
//! new instance fails (create, start, gate, switch), it is stopped first, then the old
//! instances are started again and must pass the stage's health gate, the route is rebuilt to
//! them and the hold released, so the held requests go to them; the deployment fails as any
//! other. The two are never running at the same time: each start waits for the other's stop.
//!
//! Invariant: the hold never outlives this workflow — it is a guard ([`StageHold`]) released
//! explicitly on every path, and on drop.

use std::time::Duration;

use anyhow::Context;

use super::attempt::Attempt;
use super::{BringUp, DeployOutcome, DeployResult, Deployer, stage_stop_grace};
use crate::docker::DockerError;
use crate::docker::engine::ContainerState;
use crate::domain::event::{NewEvent, Source};
use crate::domain::instance::{Instance, InstanceStatus};
use crate::routes::StageHold;

impl Deployer {
    /// Replaces `olds` by the attempt's instance, stopping them first (see the module doc).
    pub(super) async fn replace_stopping_first(
        &self,
        mut attempt: Attempt,
        olds: Vec<Instance>,
        bring_up: BringUp,
    ) -> DeployResult<DeployOutcome> {
        let deps = self.deps();
        let hold_for = Duration::from_secs(u64::from(deps.settings.current().proxy_hold_seconds));
        let ids: Vec<i64> = olds.iter().map(|old| old.id).collect();
        let hold = deps.routes.hold_instances(&ids, hold_for);
        tracing::info!(instances = ?ids, "holding the stage's requests while its instance is replaced");
        for old in &olds {
            if !self.retire_replaced(old).await {
                let reason = format!(
                    "the old instance {} could not be stopped, so the new one was not started",
                    old.id
                );
                return self.stop_first_failed(attempt, &olds, hold, reason).await;
            }
        }
        let up = match bring_up {
            BringUp::Create(spec) => self.create_and_start(&mut attempt, *spec).await,
            BringUp::Restart { container_id, name } => {
                attempt.container_id = Some(container_id.clone());
                self.start_and_record(&mut attempt, &container_id, &name, false)
                    .await
            }
        };
        if let Err(e) = up {
            return self
                .stop_first_failed(attempt, &olds, hold, format!("{e:#}"))
                .await;
        }
        if let Err(reason) = self.gate(&attempt).await {
            return self.stop_first_failed(attempt, &olds, hold, reason).await;
        }
        if let Err(e) = self.switch(&attempt, &olds).await {
            return self
                .stop_first_failed(attempt, &olds, hold, format!("{e:#}"))
                .await;
        }
        tracing::info!(
            held = hold.waiting(),
            "releasing the held requests to the new instance"
        );
        hold.release();
        self.post_deploy_hook(&attempt).await;
        // The old instances are stopped already: nothing left to retire.
        self.succeed(attempt, Vec::new()).await
    }

    /// The new instance failed: stop it, start the old ones again behind their health gate,
    /// route to them, release the held requests to them, and fail the deployment.
    async fn stop_first_failed(
        &self,
        attempt: Attempt,
        olds: &[Instance],
        hold: StageHold,
        reason: String,
    ) -> DeployResult<DeployOutcome> {
        let deps = self.deps();
        // Down before any old one starts again: the two never run together.
        if let Some(container_id) = &attempt.container_id
            && let Err(e) = deps
                .engine
                .stop(container_id, stage_stop_grace(&attempt.stage))
                .await
            && !matches!(e, DockerError::NotFound)
        {
            tracing::warn!(error = %e, "could not stop the failed container");
        }
        let mut reason = reason;
        for old in olds {
            if let Err(e) = self.restore(&attempt, old).await {
                let message = format!("{e:#}");
                tracing::error!(instance_id = old.id, error = %message, "the old instance did not come back");
                deps.bus
                    .publish(
                        NewEvent::error(
                            Source::Deployer,
                            format!(
                                "instance {} of stage {} did not come back after a failed stop_first deploy: {message}",
                                old.id, attempt.stage.name
                            ),
                        )
                        .project(old.project_id)
                        .stage(old.stage_id)
                        .instance(old.id),
                    )
                    .await;
                reason = format!(
                    "{reason}; the old instance {} did not come back: {message}",
                    old.id
                );
            }
        }
        if let Err(e) = deps.routes.rebuild().await {
            tracing::error!(error = %e, "could not rebuild the route table after bringing the old instance back");
        }
        tracing::info!(
            held = hold.waiting(),
            "releasing the held requests to the old instance"
        );
        hold.release();
        self.fail(attempt, reason).await
    }

    /// Starts an old instance's container again, records its new port, waits for the stage's
    /// health gate, and marks it running.
    async fn restore(&self, attempt: &Attempt, old: &Instance) -> anyhow::Result<()> {
        let deps = self.deps();
        let container_id = old
            .container_id
            .as_deref()
            .context("the old instance has no container")?;
        let name = old.container_name.as_deref().unwrap_or(container_id);
        let started = deps.engine.start(container_id).await;
        let details = deps
            .engine
            .inspect(container_id)
            .await
            .with_context(|| format!("inspecting the container {name}"))?;
        // A container that could not be stopped in the first place is still running: that is
        // as good as started again.
        if let Err(e) = started
            && details.state != ContainerState::Running
        {
            return Err(e).with_context(|| format!("starting the container {name} again"));
        }
        deps.store
            .set_instance_container(old.id, container_id, name, details.host_port)
            .await
            .context("recording the published port")?;
        self.gate_container(&attempt.stage, container_id, details.host_port)
            .await
            .map_err(anyhow::Error::msg)?;
        deps.store
            .update_instance_status(old.id, InstanceStatus::Running, None, self.now())
            .await
            .context("marking the old instance running")?;
        tracing::info!(instance_id = old.id, "the old instance serves again");
        Ok(())
    }
}
