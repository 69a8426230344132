//! One deploy attempt (SPEC §3, Deploying, steps 1–7): record the instance and the deployment
//! first, pull by digest, create and start the container, pass the health gate, switch the
//! stage's route, then retire what it replaced — or, on any failure, leave the old instance
//! serving, the new one `failed`, the deployment `failed` with its reason, the digest
//! remembered and one `error` event. A `stop_first` stage takes the same steps up to the
//! container's creation, then goes on in `stop_first`.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;

use super::health::{GateSpec, health_gate};
use super::{BringUp, DeployOutcome, DeployResult, Deployer, container_name, stage_stop_grace};
use crate::docker::DockerError;
use crate::docker::engine::{
    CreateContainer, Mount, MountKind, NetworkAttachment, PullAuth, labels, resource_labels,
};
use crate::domain::event::{EventKind, NewEvent, Source};
use crate::domain::hostname::{Hostname, tag_slug};
use crate::domain::image_ref::Digest;
use crate::domain::instance::{
    Deployment, DeploymentStatus, Instance, InstanceFilter, InstanceStatus, NewInstance, Trigger,
};
use crate::domain::project::{Project, SealedSecret};
use crate::domain::stage::{DeployStrategy, Stage};
use crate::domain::tag_policy::PolicyMode;
use crate::domain::workload::{VolumeMount, check_bind_mounts, project_network_name, volume_name};
use crate::store::StoreError;

/// One deploy attempt in flight: what the failure path needs to clean up and record.
#[derive(Debug)]
pub(super) struct Attempt {
    pub(super) stage: Stage,
    pub(super) project: Project,
    pub(super) tag: String,
    pub(super) digest: Digest,
    pub(super) trigger: Trigger,
    pub(super) deployment: Deployment,
    pub(super) instance_id: i64,
    pub(super) container_id: Option<String>,
    pub(super) host_port: Option<u16>,
    pub(super) started: tokio::time::Instant,
}

impl Deployer {
    /// The running instances a deploy of `tag` replaces: a single stage's current instance, or
    /// a per-tag stage's instances of that tag.
    pub(super) async fn predecessors(&self, stage: &Stage, tag: &str) -> anyhow::Result<Vec<Instance>> {
        let running = self
            .deps()
            .store
            .list_instances(&InstanceFilter {
                stage_id: Some(stage.id),
                status: Some(InstanceStatus::Running),
                ..Default::default()
            })
            .await
            .context("listing the stage's instances")?;
        Ok(match stage.tag_policy.mode() {
            PolicyMode::Single => running
                .into_iter()
                .filter(|i| Some(i.id) == stage.current_instance_id)
                .collect(),
            PolicyMode::PerTag => running.into_iter().filter(|i| i.image_tag == tag).collect(),
        })
    }

    /// The deploy itself, with the stage's lock held.
    pub(super) async fn deploy_locked(
        &self,
        stage: &Stage,
        project: &Project,
        tag: &str,
        digest: &Digest,
        trigger: Trigger,
        actor: Option<&str>,
    ) -> DeployResult<DeployOutcome> {
        let store = &self.deps().store;
        let olds = self.predecessors(stage, tag).await?;
        // Unchanged: the same digest, created from the stage's configuration as it is now. A
        // changed configuration (spec, secrets) redeploys even the same digest.
        if olds.iter().any(|old| {
            old.image_digest.as_deref() == Some(digest.as_str())
                && old.config_revision == stage.config_revision
        }) {
            self.count(trigger, "unchanged");
            tracing::debug!("the stage already runs this digest with this configuration");
            return Ok(DeployOutcome::Unchanged);
        }
        if trigger == Trigger::Manual {
            // A user deploying a digest by hand lifts the automatic skip (SPEC §3, step 7).
            store
                .clear_failed_digest(stage.id, digest.as_str())
                .await
                .context("clearing the failed digest")?;
        }
        let hostname = match self.per_tag_hostname(stage, project, tag) {
            Ok(hostname) => hostname,
            Err(reason) => {
                return self
                    .fail_unrecorded(stage, project, tag, digest, trigger, actor, reason)
                    .await;
            }
        };
        let new = NewInstance {
            project_id: project.id,
            stage_id: stage.id,
            image_tag: tag.to_owned(),
            image_digest: Some(digest.to_string()),
            status: InstanceStatus::Pending,
            hostname,
            created_at: self.now(),
            config_revision: stage.config_revision,
        };
        let instance = match store.insert_instance(&new).await {
            Ok(instance) => instance,
            Err(StoreError::Conflict { message, .. }) => {
                // Two tags with one slug (`v1.2`, `v1-2`), or a name someone else routes.
                return self
                    .fail_unrecorded(stage, project, tag, digest, trigger, actor, message)
                    .await;
            }
            Err(e) => {
                return Err(anyhow::Error::from(e)
                    .context("recording the new instance")
                    .into());
            }
        };
        let deployment = store
            .insert_deployment(
                stage.id,
                Some(instance.id),
                tag,
                Some(digest.as_str()),
                trigger,
                actor,
                self.now(),
            )
            .await
            .context("recording the deployment")?;
        tracing::Span::current().record("deployment_id", deployment.id);
        let mut attempt = Attempt {
            stage: stage.clone(),
            project: project.clone(),
            tag: tag.to_owned(),
            digest: digest.clone(),
            trigger,
            deployment,
            instance_id: instance.id,
            container_id: None,
            host_port: None,
            started: tokio::time::Instant::now(),
        };
        let spec = match self.prepare(&mut attempt).await {
            Ok(spec) => spec,
            Err(e) => return self.fail(attempt, format!("{e:#}")).await,
        };
        if stage.strategy == DeployStrategy::StopFirst && !olds.is_empty() {
            return self
                .replace_stopping_first(attempt, olds, BringUp::Create(Box::new(spec)))
                .await;
        }
        if let Err(e) = self.create_and_start(&mut attempt, spec).await {
            return self.fail(attempt, format!("{e:#}")).await;
        }
        self.gate_and_switch(attempt, olds).await
    }

    /// The per-tag hostname `{tag-slug}.{stage}.{project}.{base_domain}`, when the stage is
    /// per-tag and `base_domain` is set.
    fn per_tag_hostname(
        &self,
        stage: &Stage,
        project: &Project,
        tag: &str,
    ) -> Result<Option<String>, String> {
        if stage.tag_policy.mode() != PolicyMode::PerTag {
            return Ok(None);
        }
        let Some(base) = self.deps().settings.current().base_domain else {
            return Ok(None);
        };
        let name = format!("{}.{}.{}.{}", tag_slug(tag), stage.name, project.name, base);
        Hostname::parse(&name)
            .map(|h| Some(h.to_string()))
            .map_err(|e| format!("the per-tag hostname {name} is not valid: {e}"))
    }

    /// Everything before the container exists: pulls the image, seals what the container is
    /// given, prepares its network and volumes and runs the `pre_deploy` hook. The old
    /// instance is untouched so far, whatever the strategy.
    async fn prepare(&self, attempt: &mut Attempt) -> anyhow::Result<CreateContainer> {
        let deps = self.deps();
        deps.store
            .update_instance_status(attempt.instance_id, InstanceStatus::Deploying, None, self.now())
            .await
            .context("marking the instance deploying")?;
        let image = format!("{}@{}", attempt.project.image.name(), attempt.digest);
        let auth = self.pull_auth(&attempt.project).await?;
        deps.engine
            .pull(&image, auth.as_ref())
            .await
            .with_context(|| format!("pulling {image}"))?;
        let secret_env = self.secret_env(&attempt.stage).await?;
        if !secret_env.is_empty() {
            // What this container is given, kept sealed: its logs stay masked after a change.
            let snapshot = serde_json::to_string(&secret_env).context("serializing the secret variables")?;
            deps.store
                .set_instance_secrets(attempt.instance_id, &deps.secrets.seal(&snapshot))
                .await
                .context("recording the instance's secret variables")?;
        }
        let spec = self.container_spec(attempt, image, &secret_env);
        self.prepare_resources(&attempt.project, &attempt.stage.container.volumes, &spec)
            .await?;
        // Migrations first: the new instance is created only once they passed.
        self.pre_deploy_hook(attempt, &spec, &secret_env)
            .await
            .map_err(|failure| anyhow::Error::msg(failure.message))?;
        Ok(spec)
    }

    /// Creates and starts the container, recording it on the instance.
    pub(super) async fn create_and_start(
        &self,
        attempt: &mut Attempt,
        spec: CreateContainer,
    ) -> anyhow::Result<()> {
        let deps = self.deps();
        let name = spec.name.clone();
        let container_id = deps
            .engine
            .create(&spec)
            .await
            .with_context(|| format!("creating the container {name}"))?;
        attempt.container_id = Some(container_id.clone());
        deps.store
            .set_instance_container(attempt.instance_id, &container_id, &name, None)
            .await
            .context("recording the container")?;
        self.start_and_record(attempt, &container_id, &name, false).await
    }

    /// Starts (or restarts) a recorded container and records its published port, which Docker
    /// chooses anew on every start.
    pub(super) async fn start_and_record(
        &self,
        attempt: &mut Attempt,
        container_id: &str,
        name: &str,
        restart: bool,
    ) -> anyhow::Result<()> {
        let deps = self.deps();
        if restart {
            deps.engine
                .restart(container_id, stage_stop_grace(&attempt.stage))
                .await
                .with_context(|| format!("restarting the container {name}"))?;
        } else {
            deps.engine
                .start(container_id)
                .await
                .with_context(|| format!("starting the container {name}"))?;
        }
        let details = deps
            .engine
            .inspect(container_id)
            .await
            .with_context(|| format!("inspecting the container {name}"))?;
        attempt.host_port = details.host_port;
        deps.store
            .set_instance_container(attempt.instance_id, container_id, name, details.host_port)
            .await
            .context("recording the published port")?;
        Ok(())
    }

    /// The stage's secret variables, opened: only ever handed to the engine.
    pub(super) async fn secret_env(&self, stage: &Stage) -> anyhow::Result<BTreeMap<String, String>> {
        let sealed = self
            .deps()
            .store
            .stage_secrets(stage.id)
            .await
            .context("reading the stage's secret variables")?;
        self.open_secrets(sealed)
    }

    /// Sealed secret variables (a stage's or an accessory's), opened.
    pub(super) fn open_secrets(
        &self,
        sealed: BTreeMap<String, SealedSecret>,
    ) -> anyhow::Result<BTreeMap<String, String>> {
        sealed
            .into_iter()
            .map(|(key, value)| {
                let plain = self
                    .deps()
                    .secrets
                    .open(&value)
                    .with_context(|| format!("opening the secret variable {key}"))?;
                Ok((key, plain))
            })
            .collect()
    }

    pub(super) fn container_spec(
        &self,
        attempt: &Attempt,
        image: String,
        secret_env: &BTreeMap<String, String>,
    ) -> CreateContainer {
        let container = &attempt.stage.container;
        // The user's labels first: docker-watcher's own (checked not to be among them) win.
        let mut all_labels = container.labels.clone();
        all_labels.extend([
            (labels::MANAGED.to_owned(), "true".to_owned()),
            (
                labels::INSTALLATION.to_owned(),
                self.deps().installation_id.to_string(),
            ),
            (labels::PROJECT.to_owned(), attempt.project.name.to_string()),
            (labels::STAGE.to_owned(), attempt.stage.name.to_string()),
            (labels::INSTANCE.to_owned(), attempt.instance_id.to_string()),
        ]);
        let project = attempt.project.name.as_str();
        CreateContainer {
            name: container_name(&attempt.project, &attempt.stage, attempt.instance_id),
            image,
            labels: all_labels,
            env: container
                .env
                .iter()
                .chain(secret_env)
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
            command: container.command.clone(),
            container_port: Some(container.port),
            memory_bytes: container.memory_mb.map(|mb| i64::from(mb) * 1024 * 1024),
            // Validated to (0, 1024], so the product fits easily.
            nano_cpus: container.cpus.map(|cpus| (cpus * 1e9).round() as i64),
            mounts: engine_mounts(project, &container.volumes),
            network: Some(NetworkAttachment {
                name: project_network_name(project),
                aliases: vec![attempt.stage.name.to_string()],
            }),
            extra_networks: container.networks.clone(),
            user: container.user.clone(),
            restart_policy: container.restart_policy,
            stop_signal: container.stop_signal.to_string(),
            stop_timeout_seconds: container.stop_grace_seconds,
        }
    }

    /// What the container needs to exist before it is created: the project's network and
    /// named volumes (created once, labelled, kept), and — checked again now, the setting may
    /// have narrowed since the stage was saved — permission for its bind mounts.
    pub(super) async fn prepare_resources(
        &self,
        project: &Project,
        volumes: &[VolumeMount],
        spec: &CreateContainer,
    ) -> anyhow::Result<()> {
        let deps = self.deps();
        check_bind_mounts(volumes, &deps.settings.current().allowed_bind_paths)
            .map_err(anyhow::Error::msg)?;
        let labels = resource_labels(&deps.installation_id, project.name.as_str());
        if let Some(network) = &spec.network {
            deps.engine
                .ensure_network(&network.name, &labels)
                .await
                .with_context(|| format!("creating the network {}", network.name))?;
        }
        for mount in spec.mounts.iter().filter(|m| m.kind == MountKind::Volume) {
            deps.engine
                .ensure_volume(&mount.source, &labels)
                .await
                .with_context(|| format!("creating the volume {}", mount.source))?;
        }
        Ok(())
    }

    pub(super) async fn pull_auth(&self, project: &Project) -> anyhow::Result<Option<PullAuth>> {
        let Some(username) = &project.registry_username else {
            return Ok(None);
        };
        Ok(Some(PullAuth {
            username: username.clone(),
            password: self.registry_password(project).await?,
            server: project.image.registry().to_owned(),
        }))
    }

    /// The health gate, then the switch and the retirement of `olds`.
    pub(super) async fn gate_and_switch(
        &self,
        attempt: Attempt,
        olds: Vec<Instance>,
    ) -> DeployResult<DeployOutcome> {
        if let Err(reason) = self.gate(&attempt).await {
            return self.fail(attempt, reason).await;
        }
        if let Err(e) = self.switch(&attempt, &olds).await {
            return self.fail(attempt, format!("{e:#}")).await;
        }
        self.post_deploy_hook(&attempt).await;
        self.succeed(attempt, olds).await
    }

    /// The health gate of the attempt's container (see [`health_gate`]): why it failed, if it
    /// did.
    pub(super) async fn gate(&self, attempt: &Attempt) -> Result<(), String> {
        let Some(container_id) = &attempt.container_id else {
            return Err("no container was created".into());
        };
        self.gate_container(&attempt.stage, container_id, attempt.host_port)
            .await
    }

    /// The stage's health gate for one container published on `host_port`.
    pub(super) async fn gate_container(
        &self,
        stage: &Stage,
        container_id: &str,
        host_port: Option<u16>,
    ) -> Result<(), String> {
        let deps = self.deps();
        let spec = GateSpec {
            health_check: stage.container.health_check.clone(),
            min_ready: Duration::from_secs(u64::from(stage.container.min_ready_seconds)),
            timeout: Duration::from_secs(u64::from(deps.settings.current().deploy_health_timeout_seconds)),
            interval: self.inner.options.health_interval,
            wrong_answers: self.inner.options.health_wrong_answers,
        };
        health_gate(
            deps.engine.as_ref(),
            &self.inner.http,
            container_id,
            host_port,
            &spec,
        )
        .await
    }

    /// Marks the new instance alive and points the stage's route at it: the atomic switch.
    pub(super) async fn switch(&self, attempt: &Attempt, olds: &[Instance]) -> anyhow::Result<()> {
        let store = &self.deps().store;
        store
            .mark_instance_alive(attempt.instance_id, self.now())
            .await
            .context("marking the instance running")?;
        let single = attempt.stage.tag_policy.mode() == PolicyMode::Single;
        if single {
            store
                .set_current_instance(attempt.stage.id, Some(attempt.instance_id))
                .await
                .context("making the instance the stage's current one")?;
        }
        if let Err(e) = self.deps().routes.rebuild().await {
            // Put the old instance back so the store and the route table agree again.
            if single {
                let previous = olds.first().map(|o| o.id).or(attempt.stage.current_instance_id);
                if let Err(e) = store.set_current_instance(attempt.stage.id, previous).await {
                    tracing::error!(error = %e, "could not restore the previous current instance");
                }
            }
            return Err(e).context("switching the route table");
        }
        Ok(())
    }

    pub(super) async fn succeed(&self, attempt: Attempt, olds: Vec<Instance>) -> DeployResult<DeployOutcome> {
        let deps = self.deps();
        let deployment = deps
            .store
            .finish_deployment(
                attempt.deployment.id,
                DeploymentStatus::Succeeded,
                None,
                self.now(),
            )
            .await
            .context("recording the successful deployment")?;
        if let Err(e) = deps
            .store
            .clear_failed_digest(attempt.stage.id, attempt.digest.as_str())
            .await
        {
            tracing::warn!(error = %e, "could not clear the failed digest");
        }
        let elapsed = attempt.started.elapsed();
        deps.metrics
            .deploy_duration_seconds
            .observe(elapsed.as_secs_f64());
        self.count(attempt.trigger, "succeeded");
        let message = if attempt.trigger == Trigger::Rollback {
            format!(
                "rolled back stage {} of {} to tag {} (instance {})",
                attempt.stage.name, attempt.project.name, attempt.tag, attempt.instance_id
            )
        } else {
            format!(
                "deployed tag {} to stage {} of {}",
                attempt.tag, attempt.stage.name, attempt.project.name
            )
        };
        let kind = if attempt.trigger == Trigger::Rollback {
            EventKind::Rollback
        } else {
            EventKind::DeploySucceeded
        };
        let mut event = NewEvent::info(Source::Deployer, message)
            .kind(kind)
            .project(attempt.project.id)
            .stage(attempt.stage.id)
            .instance(attempt.instance_id)
            .recorded()
            .detail("tag", attempt.tag.as_str())
            .detail("digest", attempt.digest.as_str())
            .detail("deployment_id", attempt.deployment.id)
            .detail("trigger", attempt.trigger.as_str())
            .detail("duration_ms", elapsed.as_millis() as u64);
        if let Some(actor) = &deployment.actor {
            event = event.detail("actor", actor.as_str());
        }
        deps.bus.publish(event).await;
        for old in olds {
            if old.id != attempt.instance_id {
                self.retire_replaced(&old).await;
            }
        }
        Ok(DeployOutcome::Succeeded(deployment))
    }

    /// The failure path: the new instance is stopped and left `failed` for its logs, the
    /// deployment fails with `reason`, the digest is remembered, one `error` event is published.
    /// The old instance was never touched.
    pub(super) async fn fail(&self, attempt: Attempt, reason: String) -> DeployResult<DeployOutcome> {
        let deps = self.deps();
        tracing::warn!(reason = %reason, "deploy failed");
        let mut exit_code = None;
        if let Some(container_id) = &attempt.container_id {
            if let Err(e) = deps
                .engine
                .stop(container_id, stage_stop_grace(&attempt.stage))
                .await
                && !matches!(e, DockerError::NotFound)
            {
                tracing::warn!(error = %e, "could not stop the failed container");
            }
            if let Ok(details) = deps.engine.inspect(container_id).await {
                exit_code = details.exit_code;
            }
        }
        if let Err(e) = deps
            .store
            .update_instance_status(attempt.instance_id, InstanceStatus::Failed, exit_code, self.now())
            .await
        {
            tracing::error!(error = %e, "could not mark the instance failed");
        }
        let deployment = deps
            .store
            .finish_deployment(
                attempt.deployment.id,
                DeploymentStatus::Failed,
                Some(&reason),
                self.now(),
            )
            .await
            .context("recording the failed deployment")?;
        self.remember_failure(&attempt.stage, &attempt.tag, &attempt.digest, &reason)
            .await;
        deps.metrics
            .deploy_duration_seconds
            .observe(attempt.started.elapsed().as_secs_f64());
        self.count(attempt.trigger, "failed");
        self.publish_failure(
            &attempt.stage,
            &attempt.project,
            Some(attempt.instance_id),
            &attempt.tag,
            &attempt.digest,
            attempt.trigger,
            deployment.id,
            &reason,
        )
        .await;
        Ok(DeployOutcome::Failed(deployment))
    }

    /// A deploy that failed before its instance could be recorded (its hostname is taken):
    /// a failed deployment without an instance, the digest remembered, one `error` event.
    #[allow(clippy::too_many_arguments)]
    async fn fail_unrecorded(
        &self,
        stage: &Stage,
        project: &Project,
        tag: &str,
        digest: &Digest,
        trigger: Trigger,
        actor: Option<&str>,
        reason: String,
    ) -> DeployResult<DeployOutcome> {
        let store = &self.deps().store;
        let started = store
            .insert_deployment(
                stage.id,
                None,
                tag,
                Some(digest.as_str()),
                trigger,
                actor,
                self.now(),
            )
            .await
            .context("recording the deployment")?;
        let deployment = store
            .finish_deployment(started.id, DeploymentStatus::Failed, Some(&reason), self.now())
            .await
            .context("recording the failed deployment")?;
        self.remember_failure(stage, tag, digest, &reason).await;
        self.count(trigger, "failed");
        self.publish_failure(stage, project, None, tag, digest, trigger, deployment.id, &reason)
            .await;
        Ok(DeployOutcome::Failed(deployment))
    }

    async fn remember_failure(&self, stage: &Stage, tag: &str, digest: &Digest, reason: &str) {
        if let Err(e) = self
            .deps()
            .store
            .record_failed_digest(stage.id, digest.as_str(), tag, reason, self.now())
            .await
        {
            tracing::error!(error = %e, "could not remember the failed digest");
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn publish_failure(
        &self,
        stage: &Stage,
        project: &Project,
        instance_id: Option<i64>,
        tag: &str,
        digest: &Digest,
        trigger: Trigger,
        deployment_id: i64,
        reason: &str,
    ) {
        let mut event = NewEvent::error(
            Source::Deployer,
            format!(
                "deploying tag {tag} on stage {} of {} failed: {reason}",
                stage.name, project.name
            ),
        )
        .kind(EventKind::DeployFailed)
        .project(project.id)
        .stage(stage.id)
        .detail("tag", tag)
        .detail("digest", digest.as_str())
        .detail("reason", reason)
        .detail("deployment_id", deployment_id)
        .detail("trigger", trigger.as_str());
        if let Some(id) = instance_id {
            event = event.instance(id);
        }
        self.deps().bus.publish(event).await;
    }
}

/// A container's mounts with the engine's names: a named volume of `project` is
/// `dw-{project}-{source}`, a bind mount its host path.
pub(super) fn engine_mounts(project: &str, volumes: &[VolumeMount]) -> Vec<Mount> {
    volumes
        .iter()
        .map(|volume| Mount {
            kind: if volume.is_bind() {
                MountKind::Bind
            } else {
                MountKind::Volume
            },
            source: if volume.is_bind() {
                volume.source.clone()
            } else {
                volume_name(project, &volume.source)
            },
            target: volume.target.clone(),
            read_only: volume.read_only,
        })
        .collect()
}
