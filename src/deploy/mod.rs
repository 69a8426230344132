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
//! - **Never touch the old before the switch** (strategy `start_first`, the default). Until the
//!   new instance has passed its health gate and the route table points at it, the old
//!   instance keeps serving. With `stop_first` the old instance is stopped once the new image
//!   is pulled and its `pre_deploy` hook passed, with the stage's requests held in the proxy,
//!   and started again if the new one fails. A failure anywhere
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
//! The deployer knows nothing of HTTP: its public operations return [`DeployError`], which
//! the API maps onto status codes variant by variant.
//!
//! # Layout
//! - this file: [`Deployer`], its wiring, resolving targets, and [`Deployer::deploy`];
//! - `attempt`: one deploy attempt — record, pull, create, start, health gate, switch, and the
//!   success and failure paths;
//! - `retire`: taking old instances out of service (drain, stop), and `max_instances`;
//! - `stop_first`: the `stop_first` strategy — hold the stage's requests, stop the old
//!   instance, start the new one, release them; the old one back when the new one fails;
//! - `per_tag_sync`: bringing a per-tag stage in line with the registry;
//! - `rollback`: bringing back the previous instance;
//! - `heal`: a stage bringing itself back after its serving container was removed outside;
//! - `instance_actions`: stop, start, restart and remove of one instance;
//! - `accessory`: an accessory's container — launch, start, stop, restart, removal;
//! - `error`: [`DeployError`] and its reasons;
//! - `lock`: the per-stage lock with "latest target wins";
//! - `health`: the health gate;
//! - `per_tag`: which tags a per-tag stage deploys and which instances it stops (pure).

mod accessory;
mod attempt;
mod error;
mod heal;
mod health;
mod hooks;
mod instance_actions;
mod lock;
mod per_tag;
mod per_tag_sync;
mod retire;
mod rollback;
mod stop_first;
#[cfg(test)]
mod tests;

pub use self::accessory::AccessoryAction;
pub use self::error::{ConflictReason, DeployError, DeployResult, DockerContext, Missing};
pub use self::heal::HealOutcome;
pub use self::rollback::rollback_target;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tracing::Instrument;

use crate::clock::SharedClock;
use crate::docker::engine::{ContainerEngine, CreateContainer};
use crate::domain::event::{NewEvent, Source};
use crate::domain::image_ref::Digest;
use crate::domain::instance::{Deployment, Instance, InstanceFilter, Trigger};
use crate::domain::project::Project;
use crate::domain::stage::Stage;
use crate::domain::tag_policy::PolicyMode;
use crate::events::EventBus;
use crate::metrics::{DeployLabels, Metrics};
use crate::registry::{Credentials, RegistryClient, RegistryError, RepositoryAccess};
use crate::routes::RouteTable;
use crate::secrets::SecretBox;
use crate::settings::LiveSettings;
use crate::store::{Store, StoreError};

use self::lock::StageLocks;

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

/// How the new instance's container comes up once the old ones are down.
#[derive(Debug)]
enum BringUp {
    /// A new container from this spec (a deploy).
    Create(Box<CreateContainer>),
    /// An existing container started again (a rollback to an instance whose container is
    /// still there).
    Restart { container_id: String, name: String },
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
    /// Consecutive answers with a status other than the expected one after which the HTTP
    /// health check fails without waiting for the timeout (a server answering, say, 404 on
    /// every round will not change its mind); 20 rounds of 250 ms leave a starting app 5 s.
    pub health_wrong_answers: u32,
}

impl Default for DeployerOptions {
    fn default() -> Self {
        Self {
            drain_timeout: Duration::from_secs(30),
            stop_grace: Duration::from_secs(10),
            health_interval: Duration::from_millis(250),
            health_wrong_answers: 20,
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
    accessory_locks: accessory::AccessoryLocks,
    /// For health checks: no proxy (a container's port is on 127.0.0.1), no redirects followed
    /// (a 301 is an answer, compared with `expected_status`).
    http: reqwest::Client,
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
                accessory_locks: accessory::AccessoryLocks::default(),
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
    pub async fn repository_access(&self, project: &Project) -> DeployResult<RepositoryAccess> {
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

    /// The digest a tag points at now. A missing tag is `DeployError::Registry` with
    /// `RegistryError::NotFound`.
    pub async fn resolve_digest(&self, project: &Project, tag: &str) -> DeployResult<Digest> {
        let access = self.repository_access(project).await?;
        self.deps()
            .registry
            .manifest_digest(&access, tag)
            .await
            .map_err(|e| DeployError::registry(format!("resolving {}:{tag}", project.image.name()), e))
    }

    /// The tag and digest a single stage's policy selects from the registry right now (a
    /// `tag:` policy asks for its one tag without listing). `Missing::MatchingTag` when
    /// nothing matches.
    pub async fn resolve_policy_target(
        &self,
        stage: &Stage,
        project: &Project,
    ) -> DeployResult<(String, Digest)> {
        let access = self.repository_access(project).await?;
        let registry = &self.deps().registry;
        let no_match = || DeployError::NotFound(Missing::MatchingTag(stage.tag_policy.to_string()));
        let tag = match stage.tag_policy.fixed_tag() {
            Some(tag) => tag.to_owned(),
            None => {
                let tags = registry.list_tags(&access).await.map_err(|e| {
                    DeployError::registry(format!("listing the tags of {}", project.image.name()), e)
                })?;
                stage
                    .tag_policy
                    .select_single(&tags)
                    .map(str::to_owned)
                    .ok_or_else(no_match)?
            }
        };
        let digest = match registry.manifest_digest(&access, &tag).await {
            Ok(digest) => digest,
            Err(RegistryError::NotFound) => return Err(no_match()),
            Err(e) => {
                return Err(DeployError::registry(
                    format!("resolving {}:{tag}", project.image.name()),
                    e,
                ));
            }
        };
        Ok((tag, digest))
    }

    pub(super) async fn stage_and_project(&self, stage_id: i64) -> DeployResult<(Stage, Project)> {
        let stage = match self.deps().store.get_stage(stage_id).await {
            Ok(stage) => stage,
            Err(StoreError::NotFound) => return Err(Missing::Stage(stage_id).into()),
            Err(e) => return Err(anyhow::Error::from(e).context("reading the stage").into()),
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
    pub async fn deploy(&self, stage_id: i64, request: DeployRequest) -> DeployResult<DeployOutcome> {
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

    // ----- Shared by the steps -----------------------------------------------------------

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

    /// How long a stop of one of the stage's containers waits after the stop signal: the
    /// stage's `stop_grace_seconds` (the default grace when the stage cannot be read).
    async fn stop_grace(&self, stage_id: i64) -> Duration {
        match self.deps().store.get_stage(stage_id).await {
            Ok(stage) => stage_stop_grace(&stage),
            Err(_) => self.inner.options.stop_grace,
        }
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
}

/// The stage's `stop_grace_seconds` as a duration.
fn stage_stop_grace(stage: &Stage) -> Duration {
    Duration::from_secs(u64::from(stage.container.stop_grace_seconds))
}

/// `dw-{project}-{stage}-{instance_id}` (SPEC §3, Deploying, step 3).
pub fn container_name(project: &Project, stage: &Stage, instance_id: i64) -> String {
    format!("dw-{}-{}-{instance_id}", project.name, stage.name)
}
