//! The deploy workflow (SPEC §3, Deploying): bring a tag live on a stage — pull by digest,
//! create and start the container, pass the health gate, switch the stage's route atomically,
//! then stop the old instance once its connections drained. Rollback, per-tag syncs and the
//! instance actions (stop, start, restart, remove) live here too, because they change the same
//! things under the same per-stage lock.
//!
//! Invariants:
//! - **Record first.** The instance row (status `pending`, then `deploying`) and the deployment
//!   exist before any container does, so a crash never leaves an unrecorded container; the
//!   container name and labels carry the instance id for the Docker sync to match.
//! - **Never touch the old before the switch.** Until the new instance has passed its health
//!   gate and the route table points at it, the old instance keeps serving. A failure anywhere
//!   leaves the old one as it was, the new one `failed` (stopped, kept for its logs), the
//!   deployment `failed`, one `error` event, and the digest remembered as failed so automatic
//!   deploys skip it.
//! - **One deploy per stage at a time, latest target wins** ([`lock`]).
//! - **A stale cleanup's claim wins.** The cleanup does not take the stage's lock; it claims an
//!   instance by a conditional move to `removing`. So the instance actions and rollback write an
//!   instance's status only conditionally — from the status they read, or, after a container
//!   call whose events the Docker sync may have recorded first, never over `removing` — and a
//!   refused write is the same conflict as an instance already being removed.
//!
//! The deployer knows nothing of HTTP: the API calls it and maps [`DeployError`] (found in the
//! `anyhow` chain) onto status codes.
//!
//! # Layout
//! - this file: [`Deployer`] and its operations;
//! - `lock`: the per-stage lock with "latest target wins";
//! - `health`: the health gate;
//! - `per_tag`: which tags a per-tag stage deploys and which instances it stops (pure).

mod health;
mod lock;
mod per_tag;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tracing::Instrument;

use crate::clock::SharedClock;
use crate::docker::DockerError;
use crate::docker::engine::{ContainerEngine, CreateContainer, PullAuth, labels};
use crate::domain::event::{NewEvent, Source};
use crate::domain::hostname::{Hostname, tag_slug};
use crate::domain::image_ref::Digest;
use crate::domain::instance::{
    Deployment, DeploymentStatus, Instance, InstanceFilter, InstanceStatus, NewInstance, Trigger,
};
use crate::domain::project::Project;
use crate::domain::stage::Stage;
use crate::domain::tag_policy::PolicyMode;
use crate::events::EventBus;
use crate::metrics::{DeployLabels, Metrics};
use crate::registry::{Credentials, RegistryClient, RepositoryAccess};
use crate::routes::RouteTable;
use crate::secrets::SecretBox;
use crate::settings::LiveSettings;
use crate::store::{Store, StoreError};

use self::health::{GateSpec, health_gate};
use self::lock::StageLocks;
use self::per_tag::{over_capacity, plan_per_tag};

/// What a deploy is asked to bring live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployRequest {
    pub tag: String,
    /// `None`: resolved from the registry (`HEAD` of the tag's manifest).
    pub digest: Option<Digest>,
    pub trigger: Trigger,
    /// The user who asked, for manual deploys and rollbacks.
    pub actor: Option<String>,
}

/// How a deploy request ended.
#[derive(Debug, Clone, PartialEq)]
pub enum DeployOutcome {
    /// The new instance is live; the deployment as recorded.
    Succeeded(Deployment),
    /// The deploy failed and the old instance (if any) keeps serving; the deployment says why.
    Failed(Deployment),
    /// A newer target for the same stage (or tag, on a per-tag stage) arrived while this one
    /// waited for the stage's lock; this one did nothing.
    Superseded,
    /// The stage already runs this digest; nothing was recorded.
    Unchanged,
}

/// The failures a caller branches on. Operations return `anyhow::Error`; these are found with
/// `err.downcast_ref::<DeployError>()` (the registry's own failures as `RegistryError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeployError {
    #[error("no stage with id {0}")]
    StageNotFound(i64),
    #[error("no instance with id {0}")]
    InstanceNotFound(i64),
    /// A rollback found no earlier instance that ever ran.
    #[error("nothing to roll back to: {0}")]
    NothingToRollBack(String),
    /// The request does not fit the current state (remove a running current instance, start
    /// one whose container is gone, sync a single stage as per-tag).
    #[error("{0}")]
    Conflict(String),
    /// No tag in the registry matches the stage's policy.
    #[error("no tag in the registry matches the tag policy {0}")]
    NoMatchingTag(String),
}

/// Tunables with sensible defaults; tests shorten them.
#[derive(Debug, Clone)]
pub struct DeployerOptions {
    /// How long an old instance may keep open connections after the switch before it is
    /// stopped anyway (SPEC §3, Reverse proxy: 30 s).
    pub drain_timeout: Duration,
    /// SIGTERM → SIGKILL grace when stopping a container.
    pub stop_grace: Duration,
    /// Between two rounds of the health gate.
    pub health_interval: Duration,
}

impl Default for DeployerOptions {
    fn default() -> Self {
        Self {
            drain_timeout: Duration::from_secs(30),
            stop_grace: Duration::from_secs(10),
            health_interval: Duration::from_millis(250),
        }
    }
}

/// The handles a deployer works with, built by `app.rs`.
#[derive(Debug, Clone)]
pub struct DeployerDeps {
    pub store: Store,
    pub bus: EventBus,
    pub engine: Arc<dyn ContainerEngine>,
    /// Resolves a tag to its digest when a deploy names only the tag.
    pub registry: RegistryClient,
    pub routes: RouteTable,
    pub settings: LiveSettings,
    /// Opens the project's registry password for the pull.
    pub secrets: SecretBox,
    pub clock: SharedClock,
    /// The label value that marks this installation's containers.
    pub installation_id: Arc<str>,
    pub metrics: Arc<Metrics>,
}

/// The deploy workflow. Cheap to clone; clones share the per-stage locks.
#[derive(Debug, Clone)]
pub struct Deployer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    deps: DeployerDeps,
    options: DeployerOptions,
    locks: StageLocks,
    /// For health checks: no proxy (a container's port is on 127.0.0.1), no redirects followed
    /// (a 301 is an answer, compared with `expected_status`).
    http: reqwest::Client,
}

/// One deploy attempt in flight: what the failure path needs to clean up and record.
#[derive(Debug)]
struct Attempt {
    stage: Stage,
    project: Project,
    tag: String,
    digest: Digest,
    trigger: Trigger,
    deployment: Deployment,
    instance_id: i64,
    container_id: Option<String>,
    host_port: Option<u16>,
    started: tokio::time::Instant,
}

impl Deployer {
    pub fn new(deps: DeployerDeps, options: DeployerOptions) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("building the health-check HTTP client")?;
        Ok(Self {
            inner: Arc::new(Inner {
                deps,
                options,
                locks: StageLocks::default(),
                http,
            }),
        })
    }

    fn deps(&self) -> &DeployerDeps {
        &self.inner.deps
    }

    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.deps().clock.now()
    }

    // ----- Resolving targets -------------------------------------------------------------

    /// How the registry client reaches a project's repository, with its credentials opened.
    pub async fn repository_access(&self, project: &Project) -> anyhow::Result<RepositoryAccess> {
        let credentials = match &project.registry_username {
            Some(username) => Some(Credentials {
                username: username.clone(),
                password: self.registry_password(project).await?,
            }),
            None => None,
        };
        Ok(RepositoryAccess {
            image: project.image.clone(),
            insecure: project.insecure_registry,
            credentials,
        })
    }

    async fn registry_password(&self, project: &Project) -> anyhow::Result<String> {
        let sealed = self
            .deps()
            .store
            .project_registry_password(project.id)
            .await
            .context("reading the project's registry password")?;
        match sealed {
            Some(sealed) => self
                .deps()
                .secrets
                .open(&sealed)
                .context("opening the project's registry password"),
            None => Ok(String::new()),
        }
    }

    /// The digest a tag points at now. A missing tag is a `RegistryError::NotFound` in the chain.
    pub async fn resolve_digest(&self, project: &Project, tag: &str) -> anyhow::Result<Digest> {
        let access = self.repository_access(project).await?;
        let digest = self
            .deps()
            .registry
            .manifest_digest(&access, tag)
            .await
            .with_context(|| format!("resolving {}:{tag}", project.image.name()))?;
        Ok(digest)
    }

    /// The tag and digest a single stage's policy selects from the registry right now (a
    /// `tag:` policy asks for its one tag without listing). `DeployError::NoMatchingTag` when
    /// nothing matches.
    pub async fn resolve_policy_target(
        &self,
        stage: &Stage,
        project: &Project,
    ) -> anyhow::Result<(String, Digest)> {
        let access = self.repository_access(project).await?;
        let registry = &self.deps().registry;
        let tag = match stage.tag_policy.fixed_tag() {
            Some(tag) => tag.to_owned(),
            None => {
                let tags = registry
                    .list_tags(&access)
                    .await
                    .with_context(|| format!("listing the tags of {}", project.image.name()))?;
                stage
                    .tag_policy
                    .select_single(&tags)
                    .map(str::to_owned)
                    .ok_or_else(|| DeployError::NoMatchingTag(stage.tag_policy.to_string()))?
            }
        };
        let digest = match registry.manifest_digest(&access, &tag).await {
            Ok(digest) => digest,
            Err(crate::registry::RegistryError::NotFound) => {
                return Err(DeployError::NoMatchingTag(stage.tag_policy.to_string()).into());
            }
            Err(e) => {
                return Err(e).with_context(|| format!("resolving {}:{tag}", project.image.name()));
            }
        };
        Ok((tag, digest))
    }

    async fn stage_and_project(&self, stage_id: i64) -> anyhow::Result<(Stage, Project)> {
        let stage = match self.deps().store.get_stage(stage_id).await {
            Ok(stage) => stage,
            Err(StoreError::NotFound) => return Err(DeployError::StageNotFound(stage_id).into()),
            Err(e) => return Err(e).context("reading the stage"),
        };
        let project = self
            .deps()
            .store
            .get_project(stage.project_id)
            .await
            .context("reading the stage's project")?;
        Ok((stage, project))
    }

    // ----- Deploying ---------------------------------------------------------------------

    /// Deploys `request.tag` on a stage (for a per-tag stage: as that tag's own instance).
    /// Waits for the stage's lock; see [`DeployOutcome`] for the ways it ends. `Err` is for
    /// what is not a deploy failure: an unknown stage, an unreachable store, a registry that
    /// cannot resolve the tag.
    pub async fn deploy(&self, stage_id: i64, request: DeployRequest) -> anyhow::Result<DeployOutcome> {
        let span = tracing::info_span!(
            "deploy",
            stage_id,
            tag = %request.tag,
            trigger = %request.trigger,
            deployment_id = tracing::field::Empty,
        );
        async move {
            let (stage, project) = self.stage_and_project(stage_id).await?;
            let digest = match request.digest.clone() {
                Some(digest) => digest,
                None => self.resolve_digest(&project, &request.tag).await?,
            };
            let lane = match stage.tag_policy.mode() {
                PolicyMode::Single => None,
                PolicyMode::PerTag => Some(request.tag.clone()),
            };
            let Some(_guard) = self.inner.locks.enter(stage_id, lane).await else {
                self.count(request.trigger, "superseded");
                tracing::info!("superseded by a newer target while waiting");
                return Ok(DeployOutcome::Superseded);
            };
            // Read again under the lock: the deploy we waited for changed the stage.
            let (stage, project) = self.stage_and_project(stage_id).await?;
            let outcome = self
                .deploy_locked(
                    &stage,
                    &project,
                    &request.tag,
                    &digest,
                    request.trigger,
                    request.actor.as_deref(),
                )
                .await?;
            if stage.tag_policy.mode() == PolicyMode::PerTag && matches!(outcome, DeployOutcome::Succeeded(_))
            {
                self.enforce_capacity(&stage).await?;
            }
            Ok(outcome)
        }
        .instrument(span)
        .await
    }

    /// The running instances a deploy of `tag` replaces: a single stage's current instance, or
    /// a per-tag stage's instances of that tag.
    async fn predecessors(&self, stage: &Stage, tag: &str) -> anyhow::Result<Vec<Instance>> {
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
    async fn deploy_locked(
        &self,
        stage: &Stage,
        project: &Project,
        tag: &str,
        digest: &Digest,
        trigger: Trigger,
        actor: Option<&str>,
    ) -> anyhow::Result<DeployOutcome> {
        let store = &self.deps().store;
        let olds = self.predecessors(stage, tag).await?;
        if olds
            .iter()
            .any(|old| old.image_digest.as_deref() == Some(digest.as_str()))
        {
            self.count(trigger, "unchanged");
            tracing::debug!("the stage already runs this digest");
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
        };
        let instance = match store.insert_instance(&new).await {
            Ok(instance) => instance,
            Err(StoreError::Conflict { message, .. }) => {
                // Two tags with one slug (`v1.2`, `v1-2`), or a name someone else routes.
                return self
                    .fail_unrecorded(stage, project, tag, digest, trigger, actor, message)
                    .await;
            }
            Err(e) => return Err(e).context("recording the new instance"),
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
        if let Err(e) = self.launch(&mut attempt).await {
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

    /// Pulls, creates and starts the container, recording it on the instance.
    async fn launch(&self, attempt: &mut Attempt) -> anyhow::Result<()> {
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
        let spec = self.container_spec(attempt, image);
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
    async fn start_and_record(
        &self,
        attempt: &mut Attempt,
        container_id: &str,
        name: &str,
        restart: bool,
    ) -> anyhow::Result<()> {
        let deps = self.deps();
        if restart {
            deps.engine
                .restart(container_id, self.inner.options.stop_grace)
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

    fn container_spec(&self, attempt: &Attempt, image: String) -> CreateContainer {
        let container = &attempt.stage.container;
        let labels = BTreeMap::from([
            (labels::MANAGED.to_owned(), "true".to_owned()),
            (
                labels::INSTALLATION.to_owned(),
                self.deps().installation_id.to_string(),
            ),
            (labels::PROJECT.to_owned(), attempt.project.name.to_string()),
            (labels::STAGE.to_owned(), attempt.stage.name.to_string()),
            (labels::INSTANCE.to_owned(), attempt.instance_id.to_string()),
        ]);
        CreateContainer {
            name: container_name(&attempt.project, &attempt.stage, attempt.instance_id),
            image,
            labels,
            env: container.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            command: container.command.clone(),
            container_port: container.port,
            memory_bytes: container.memory_mb.map(|mb| i64::from(mb) * 1024 * 1024),
            // Validated to (0, 1024], so the product fits easily.
            nano_cpus: container.cpus.map(|cpus| (cpus * 1e9).round() as i64),
        }
    }

    async fn pull_auth(&self, project: &Project) -> anyhow::Result<Option<PullAuth>> {
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
    async fn gate_and_switch(&self, attempt: Attempt, olds: Vec<Instance>) -> anyhow::Result<DeployOutcome> {
        let deps = self.deps();
        let Some(container_id) = attempt.container_id.clone() else {
            return self.fail(attempt, "no container was created".into()).await;
        };
        let spec = GateSpec {
            health_check: attempt.stage.container.health_check.clone(),
            min_ready: Duration::from_secs(u64::from(attempt.stage.container.min_ready_seconds)),
            timeout: Duration::from_secs(u64::from(deps.settings.current().deploy_health_timeout_seconds)),
            interval: self.inner.options.health_interval,
        };
        let gate = health_gate(
            deps.engine.as_ref(),
            &self.inner.http,
            &container_id,
            attempt.host_port,
            &spec,
        )
        .await;
        if let Err(reason) = gate {
            return self.fail(attempt, reason).await;
        }
        if let Err(e) = self.switch(&attempt, &olds).await {
            return self.fail(attempt, format!("{e:#}")).await;
        }
        self.succeed(attempt, olds).await
    }

    /// Marks the new instance alive and points the stage's route at it: the atomic switch.
    async fn switch(&self, attempt: &Attempt, olds: &[Instance]) -> anyhow::Result<()> {
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

    async fn succeed(&self, attempt: Attempt, olds: Vec<Instance>) -> anyhow::Result<DeployOutcome> {
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
        let mut event = NewEvent::info(Source::Deployer, message)
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
    async fn fail(&self, attempt: Attempt, reason: String) -> anyhow::Result<DeployOutcome> {
        let deps = self.deps();
        tracing::warn!(reason = %reason, "deploy failed");
        let mut exit_code = None;
        if let Some(container_id) = &attempt.container_id {
            if let Err(e) = deps
                .engine
                .stop(container_id, self.inner.options.stop_grace)
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
    ) -> anyhow::Result<DeployOutcome> {
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

    fn count(&self, trigger: Trigger, outcome: &'static str) {
        self.deps()
            .metrics
            .deploys
            .get_or_create(&DeployLabels {
                outcome,
                trigger: trigger.as_str(),
            })
            .inc();
    }

    // ----- Retiring instances ------------------------------------------------------------

    /// Stops an instance a deploy replaced, once its open connections drained (or the drain
    /// timeout passed). It stays `stopped`, available for rollback.
    async fn retire_replaced(&self, old: &Instance) {
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
            .await;
    }

    /// Stops instances that are not replaced by anything (their tag is gone, or the stage has
    /// more than `max_instances`): out of the route table first, then drained, then stopped.
    async fn retire_unrouted(&self, instances: &[Instance], reason: &str) -> anyhow::Result<()> {
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
    async fn stop_container(&self, instance: &Instance, reason: &str) {
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
            return;
        };
        match deps
            .engine
            .stop(container_id, self.inner.options.stop_grace)
            .await
        {
            Ok(()) => tracing::info!(instance_id = instance.id, reason, "stopped instance"),
            Err(DockerError::NotFound) => {
                if let Err(e) = deps
                    .store
                    .update_instance_status(instance.id, InstanceStatus::Missing, None, self.now())
                    .await
                {
                    tracing::error!(error = %e, instance_id = instance.id, "could not mark the instance missing");
                }
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
            }
        }
    }

    async fn enforce_capacity(&self, stage: &Stage) -> anyhow::Result<()> {
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

    async fn stage_instances(&self, stage_id: i64) -> anyhow::Result<Vec<Instance>> {
        self.deps()
            .store
            .list_instances(&InstanceFilter {
                stage_id: Some(stage_id),
                ..Default::default()
            })
            .await
            .context("listing the stage's instances")
    }

    async fn publish_info(&self, instance: &Instance, message: String, actor: Option<&str>) {
        let mut event = NewEvent::info(Source::Deployer, message)
            .project(instance.project_id)
            .stage(instance.stage_id)
            .instance(instance.id)
            .recorded()
            .detail("tag", instance.image_tag.as_str());
        if let Some(actor) = actor {
            event = event.detail("actor", actor);
        }
        self.deps().bus.publish(event).await;
    }

    // ----- Per-tag stages ----------------------------------------------------------------

    /// Brings a per-tag stage in line with the registry: `tags` are every tag of the repository
    /// with its digest (those the policy does not match are ignored). New and changed tags are
    /// deployed one by one; instances of tags gone from the registry are stopped (their routes
    /// removed); beyond `max_instances`, the oldest running instances are stopped. Automatic
    /// syncs skip digests that failed before. A failed deploy of one tag does not stop the
    /// others; the first error that is not a deploy failure is returned at the end.
    pub async fn sync_per_tag(
        &self,
        stage_id: i64,
        tags: Vec<(String, Digest)>,
        trigger: Trigger,
    ) -> anyhow::Result<()> {
        let span = tracing::info_span!("sync_per_tag", stage_id, trigger = %trigger);
        async move {
            let _guard = self.inner.locks.lock(stage_id).await;
            let (stage, _) = self.stage_and_project(stage_id).await?;
            if stage.tag_policy.mode() != PolicyMode::PerTag {
                return Err(DeployError::Conflict(format!(
                    "stage {} follows one tag ({}); only glob: and regex: stages deploy per tag",
                    stage.name, stage.tag_policy
                ))
                .into());
            }
            let instances = self.stage_instances(stage.id).await?;
            let mut skipped = HashSet::new();
            if trigger != Trigger::Manual {
                for (_, digest) in &tags {
                    if self
                        .deps()
                        .store
                        .is_failed_digest(stage.id, digest.as_str())
                        .await
                        .context("reading failed digests")?
                    {
                        skipped.insert(digest.to_string());
                    }
                }
            }
            let plan = plan_per_tag(&stage.tag_policy, &tags, &instances, &skipped);
            let gone: Vec<Instance> = instances
                .into_iter()
                .filter(|i| plan.gone.contains(&i.id))
                .collect();
            for instance in &gone {
                self.publish_info(
                    instance,
                    format!(
                        "stopped instance {} of stage {}: tag {} is gone from the registry",
                        instance.id, stage.name, instance.image_tag
                    ),
                    None,
                )
                .await;
            }
            self.retire_unrouted(&gone, "its tag is gone from the registry")
                .await?;
            let mut first_error = None;
            for (tag, digest) in &plan.deploy {
                // Each deploy reads the stage afresh: the previous one may have changed it.
                let result = async {
                    let (stage, project) = self.stage_and_project(stage_id).await?;
                    self.deploy_locked(&stage, &project, tag, digest, trigger, None)
                        .await
                }
                .instrument(tracing::info_span!(
                    "deploy",
                    tag = %tag,
                    digest = %digest,
                    deployment_id = tracing::field::Empty,
                ))
                .await;
                if let Err(e) = result {
                    tracing::error!(error = format!("{e:#}"), tag, "per-tag deploy failed");
                    first_error.get_or_insert(e);
                }
            }
            self.enforce_capacity(&stage).await?;
            first_error.map_or(Ok(()), Err)
        }
        .instrument(span)
        .await
    }

    // ----- Rollback ----------------------------------------------------------------------

    /// Brings back a single stage's previous successful instance: the newest instance other
    /// than the current one that ran once (`last_alive_at` set) and is now stopped (or whose
    /// container is gone). Its container is started again if it still exists, else a new
    /// instance is created from its digest; either way through the health gate, and the
    /// current instance is stopped after the switch. `DeployError::NothingToRollBack` when
    /// there is no such instance.
    pub async fn rollback(&self, stage_id: i64, actor: Option<String>) -> anyhow::Result<DeployOutcome> {
        let span = tracing::info_span!("rollback", stage_id);
        async move {
            let Some(_guard) = self.inner.locks.enter(stage_id, None).await else {
                self.count(Trigger::Rollback, "superseded");
                return Ok(DeployOutcome::Superseded);
            };
            let (stage, project) = self.stage_and_project(stage_id).await?;
            if stage.tag_policy.mode() != PolicyMode::Single {
                return Err(DeployError::NothingToRollBack(format!(
                    "stage {} deploys one instance per tag; deploy the tag you want instead",
                    stage.name
                ))
                .into());
            }
            let instances = self.stage_instances(stage.id).await?;
            let candidate = instances.iter().find(|i| {
                Some(i.id) != stage.current_instance_id
                    && matches!(i.status, InstanceStatus::Stopped | InstanceStatus::Missing)
                    && i.last_alive_at.is_some()
                    && i.image_digest.is_some()
            });
            let Some(candidate) = candidate.cloned() else {
                return Err(DeployError::NothingToRollBack(format!(
                    "stage {} has no earlier instance that ran",
                    stage.name
                ))
                .into());
            };
            let digest = candidate
                .image_digest
                .as_deref()
                .map(Digest::parse)
                .transpose()
                .map_err(|e| anyhow::anyhow!("instance {} has a bad digest: {e}", candidate.id))?
                .ok_or_else(|| anyhow::anyhow!("instance {} has no digest", candidate.id))?;
            let olds = self.predecessors(&stage, &candidate.image_tag).await?;
            let container = match &candidate.container_id {
                Some(id) => match self.deps().engine.inspect(id).await {
                    Ok(_) => Some(id.clone()),
                    Err(DockerError::NotFound) => None,
                    Err(e) => return Err(e).context("inspecting the earlier instance's container"),
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
                    .deploy_locked(
                        &stage,
                        &project,
                        &candidate.image_tag,
                        &digest,
                        Trigger::Rollback,
                        actor.as_deref(),
                    )
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
                    Trigger::Rollback,
                    actor.as_deref(),
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
                    return Err(e).context("recording the deployment");
                }
            };
            let mut attempt = Attempt {
                stage: stage.clone(),
                project: project.clone(),
                tag: candidate.image_tag.clone(),
                digest,
                trigger: Trigger::Rollback,
                deployment,
                instance_id: candidate.id,
                container_id: Some(container_id.clone()),
                host_port: None,
                started: tokio::time::Instant::now(),
            };
            let name = candidate
                .container_name
                .clone()
                .unwrap_or_else(|| container_name(&project, &stage, candidate.id));
            let started = self
                .start_and_record(&mut attempt, &container_id, &name, false)
                .await;
            if let Err(e) = started {
                return self.fail(attempt, format!("{e:#}")).await;
            }
            self.gate_and_switch(attempt, olds).await
        }
        .instrument(span)
        .await
    }

    // ----- Instance actions --------------------------------------------------------------

    async fn instance(&self, id: i64) -> anyhow::Result<Instance> {
        match self.deps().store.get_instance(id).await {
            Ok(instance) => Ok(instance),
            Err(StoreError::NotFound) => Err(DeployError::InstanceNotFound(id).into()),
            Err(e) => Err(e).context("reading the instance"),
        }
    }

    /// The instance a conditional status write returned, or — when the row refused it — why:
    /// the conflict [`refuse_removing`] gives when a stale cleanup claimed the instance,
    /// `InstanceNotFound` when it is gone, a conflict naming the status it moved to otherwise.
    async fn written(
        &self,
        id: i64,
        written: Result<Option<Instance>, StoreError>,
        what: &'static str,
    ) -> anyhow::Result<Instance> {
        if let Some(instance) = written.context(what)? {
            return Ok(instance);
        }
        let now = self.instance(id).await?;
        refuse_removing(&now)?;
        Err(DeployError::Conflict(format!(
            "instance {id} changed to {} meanwhile; try again",
            now.status
        ))
        .into())
    }

    /// Stops an instance's container (SIGTERM, then SIGKILL after the grace period) and
    /// records it `stopped`; a stage's current instance stops being routed.
    pub async fn stop_instance(&self, id: i64, actor: Option<&str>) -> anyhow::Result<Instance> {
        let stage_id = self.instance(id).await?.stage_id;
        let _guard = self.inner.locks.lock(stage_id).await;
        let instance = self.instance(id).await?;
        refuse_removing(&instance)?;
        if matches!(
            instance.status,
            InstanceStatus::Pending | InstanceStatus::Deploying
        ) {
            return Err(DeployError::Conflict(format!(
                "instance {id} is being deployed; wait for its deployment to finish"
            ))
            .into());
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
            match deps
                .engine
                .stop(container_id, self.inner.options.stop_grace)
                .await
            {
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
                    return Err(e).context("stopping the container");
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
    pub async fn start_instance(&self, id: i64, actor: Option<&str>) -> anyhow::Result<Instance> {
        self.start_or_restart(id, actor, false).await
    }

    /// Restarts an instance's container (stop with the grace period, then start).
    pub async fn restart_instance(&self, id: i64, actor: Option<&str>) -> anyhow::Result<Instance> {
        self.start_or_restart(id, actor, true).await
    }

    async fn start_or_restart(
        &self,
        id: i64,
        actor: Option<&str>,
        restart: bool,
    ) -> anyhow::Result<Instance> {
        let stage_id = self.instance(id).await?.stage_id;
        let _guard = self.inner.locks.lock(stage_id).await;
        let instance = self.instance(id).await?;
        refuse_removing(&instance)?;
        if matches!(
            instance.status,
            InstanceStatus::Pending | InstanceStatus::Deploying
        ) {
            return Err(DeployError::Conflict(format!(
                "instance {id} is being deployed; wait for its deployment to finish"
            ))
            .into());
        }
        let deps = self.deps();
        let Some(container_id) = instance.container_id.clone() else {
            return Err(DeployError::Conflict(format!(
                "instance {id} has no container; deploy its tag again instead"
            ))
            .into());
        };
        let result = if restart {
            deps.engine
                .restart(&container_id, self.inner.options.stop_grace)
                .await
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
                return Err(DeployError::Conflict(format!(
                    "the container of instance {id} no longer exists; deploy its tag again instead"
                ))
                .into());
            }
            Err(e) => return Err(e).context("starting the container"),
        }
        let details = deps
            .engine
            .inspect(&container_id)
            .await
            .context("inspecting the container")?;
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
    pub async fn remove_instance(&self, id: i64, actor: Option<&str>) -> anyhow::Result<()> {
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
            return Err(DeployError::Conflict(format!(
                "instance {id} is running and routed for stage {}; stop it first",
                stage.name
            ))
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

    async fn remove_container(&self, instance: &Instance) -> anyhow::Result<()> {
        let Some(container_id) = &instance.container_id else {
            return Ok(());
        };
        let engine = &self.deps().engine;
        match engine.stop(container_id, self.inner.options.stop_grace).await {
            Ok(()) | Err(DockerError::NotFound) => {}
            Err(e) => return Err(e).context("stopping the container"),
        }
        match engine.remove(container_id).await {
            Ok(()) | Err(DockerError::NotFound) => Ok(()),
            Err(e) => Err(e).context("removing the container"),
        }
    }
}

fn refuse_removing(instance: &Instance) -> Result<(), DeployError> {
    if instance.status == InstanceStatus::Removing {
        return Err(DeployError::Conflict(format!(
            "instance {} is being removed",
            instance.id
        )));
    }
    Ok(())
}

/// `dw-{project}-{stage}-{instance_id}` (SPEC §3, Deploying, step 3).
pub fn container_name(project: &Project, stage: &Stage, instance_id: i64) -> String {
    format!("dw-{}-{}-{instance_id}", project.name, stage.name)
}
