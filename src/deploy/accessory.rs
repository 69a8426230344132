//! The accessory workflow (SPEC §3 "Workloads"): bring an accessory's container up, stop and
//! start it, recreate it with its current spec, and take it away when the accessory is deleted.
//!
//! An accessory is changed only by explicit action. `launch` (on create, and on a restart or a
//! start that needs a new container) pulls the pinned image, removes the old container if there
//! is one, makes sure the project's network and named volumes exist (and checks bind mounts
//! against `allowed_bind_paths` once more), creates `dw-{project}-{name}` labelled with the
//! installation and the accessory id, on the project network with the alias `{name}` and the
//! restart policy `unless-stopped`, records it, and starts it: `pending`/`starting` → `running`,
//! or `failed` with one `error` event. A restart of an accessory that is not out of date only
//! restarts its container. Stops mark the accessory `stopped` *before* the engine call, so the
//! Docker sync sees an expected exit.
//!
//! One lock per accessory serialises its actions; the stage locks are not involved.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;

use super::Deployer;
use super::attempt::engine_mounts;
use super::error::{ConflictReason, DeployError, DeployResult, DockerContext, Missing};
use crate::docker::DockerError;
use crate::docker::engine::{CreateContainer, NetworkAttachment, PullAuth, labels};
use crate::domain::accessory::{Accessory, AccessoryStatus, accessory_container_name, image_reference};
use crate::domain::event::{NewEvent, Source};
use crate::domain::project::Project;
use crate::domain::workload::{RestartPolicy, project_network_name};
use crate::store::StoreError;
use crate::store::accessories::AccessoryContainer;

/// How long a stop waits after SIGTERM before it kills an accessory (a database flushing).
const ACCESSORY_STOP_GRACE: Duration = Duration::from_secs(10);

/// One lock per accessory. Entries are never removed: accessories are few.
#[derive(Debug, Clone, Default)]
pub(crate) struct AccessoryLocks {
    slots: Arc<Mutex<HashMap<i64, Arc<tokio::sync::Mutex<()>>>>>,
}

impl AccessoryLocks {
    async fn lock(&self, id: i64) -> tokio::sync::OwnedMutexGuard<()> {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            slots.entry(id).or_default().clone()
        };
        slot.lock_owned().await
    }
}

/// What an explicit action asks of an accessory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessoryAction {
    Start,
    Stop,
    /// Restarts the container; recreates it from the current spec when it is out of date or
    /// gone.
    Restart,
}

impl Deployer {
    fn not_found(id: i64) -> impl FnOnce(StoreError) -> DeployError {
        move |e| match e {
            StoreError::NotFound => DeployError::NotFound(Missing::Accessory(id)),
            e => DeployError::Internal(anyhow::Error::from(e).context(format!("reading accessory {id}"))),
        }
    }

    async fn accessory_and_project(&self, id: i64) -> DeployResult<(Accessory, Project)> {
        let store = &self.deps().store;
        let accessory = store.get_accessory(id).await.map_err(Self::not_found(id))?;
        let project = store
            .get_project(accessory.project_id)
            .await
            .context("reading the accessory's project")?;
        Ok((accessory, project))
    }

    /// Brings a just-created accessory up. Its outcome is in its status (`running` or `failed`)
    /// and the events.
    pub async fn launch_accessory(&self, id: i64, actor: Option<&str>) -> DeployResult<Accessory> {
        let _lock = self.inner.accessory_locks.lock(id).await;
        let (accessory, project) = self.accessory_and_project(id).await?;
        self.launch_locked(accessory, &project, actor).await
    }

    /// Starts, stops or restarts an accessory, as a member asked.
    pub async fn accessory_action(
        &self,
        id: i64,
        action: AccessoryAction,
        actor: Option<&str>,
    ) -> DeployResult<Accessory> {
        let _lock = self.inner.accessory_locks.lock(id).await;
        let (accessory, project) = self.accessory_and_project(id).await?;
        if accessory.status == AccessoryStatus::Removing {
            return Err(ConflictReason::AccessoryRemoving(id).into());
        }
        let engine = &self.deps().engine;
        let needs_new_container = accessory.container_id.is_none()
            || accessory.status == AccessoryStatus::Missing
            || (action == AccessoryAction::Restart && accessory.out_of_date());
        match action {
            AccessoryAction::Stop => {
                let Some(container) = accessory.container_id.clone() else {
                    return self.set_status(&accessory, AccessoryStatus::Stopped).await;
                };
                let stopped = self.set_status(&accessory, AccessoryStatus::Stopped).await?;
                match engine.stop(&container, ACCESSORY_STOP_GRACE).await {
                    Ok(()) => {}
                    Err(DockerError::NotFound) => {
                        return self.set_status(&accessory, AccessoryStatus::Missing).await;
                    }
                    Err(e) => {
                        return Err(DeployError::docker(
                            format!("stopping accessory {}", accessory.name),
                            e,
                        ));
                    }
                }
                self.publish(
                    &accessory,
                    NewEvent::info(Source::Docker, format!("accessory {} stopped", accessory.name)),
                    actor,
                )
                .await;
                Ok(stopped)
            }
            AccessoryAction::Start | AccessoryAction::Restart if needs_new_container => {
                self.launch_locked(accessory, &project, actor).await
            }
            AccessoryAction::Start | AccessoryAction::Restart => {
                let container = accessory.container_id.clone().unwrap_or_default();
                let result = if action == AccessoryAction::Start {
                    engine.start(&container).await
                } else {
                    engine.restart(&container, ACCESSORY_STOP_GRACE).await
                };
                match result {
                    Ok(()) => {}
                    Err(DockerError::NotFound) => {
                        // Gone behind our back: a new container it is.
                        return self.launch_locked(accessory, &project, actor).await;
                    }
                    Err(e) => {
                        return Err(DeployError::docker(
                            format!("starting accessory {}", accessory.name),
                            e,
                        ));
                    }
                }
                self.record_host_port(&accessory, &container).await;
                let running = self.set_status(&accessory, AccessoryStatus::Running).await?;
                let verb = if action == AccessoryAction::Start {
                    "started"
                } else {
                    "restarted"
                };
                self.publish(
                    &accessory,
                    NewEvent::info(Source::Docker, format!("accessory {} {verb}", accessory.name)),
                    actor,
                )
                .await;
                Ok(running)
            }
        }
    }

    /// Takes an accessory's container away before the accessory is deleted: the accessory is
    /// `removing` from here on, so nothing restarts it.
    pub async fn remove_accessory_container(&self, id: i64) -> DeployResult<Accessory> {
        let _lock = self.inner.accessory_locks.lock(id).await;
        let (accessory, _) = self.accessory_and_project(id).await?;
        let removing = self.set_status(&accessory, AccessoryStatus::Removing).await?;
        if let Some(container) = &accessory.container_id {
            let engine = &self.deps().engine;
            let result = match engine.stop(container, ACCESSORY_STOP_GRACE).await {
                Ok(()) | Err(DockerError::NotFound) => match engine.remove(container).await {
                    Ok(()) | Err(DockerError::NotFound) => Ok(()),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                // Give it back: the accessory is still there, as it was.
                let _ = self.set_status(&removing, accessory.status).await;
                return Err(DeployError::docker(
                    format!("removing the container of accessory {}", accessory.name),
                    e,
                ));
            }
            return Ok(self
                .deps()
                .store
                .set_accessory_container(id, None, self.now())
                .await
                .context("forgetting the accessory's container")?);
        }
        Ok(removing)
    }

    async fn set_status(&self, accessory: &Accessory, status: AccessoryStatus) -> DeployResult<Accessory> {
        self.deps()
            .store
            .set_accessory_status(accessory.id, status, None, self.now())
            .await
            .map_err(Self::not_found(accessory.id))
    }

    async fn publish(&self, accessory: &Accessory, event: NewEvent, actor: Option<&str>) {
        let mut event = event
            .project(accessory.project_id)
            .recorded()
            .detail("accessory_id", accessory.id)
            .detail("accessory", accessory.name.as_str())
            .detail("image", image_reference(&accessory.image));
        if let Some(actor) = actor {
            event = event.detail("actor", actor);
        }
        self.deps().bus.publish(event).await;
    }

    async fn record_host_port(&self, accessory: &Accessory, container: &str) {
        if accessory.spec.port.is_none() {
            return;
        }
        if let Ok(details) = self.deps().engine.inspect(container).await {
            let _ = self
                .deps()
                .store
                .set_accessory_host_port(accessory.id, details.host_port)
                .await;
        }
    }

    /// Pull, replace the container, start; the caller holds the accessory's lock. A failure is
    /// the accessory's status (`failed`) and an `error` event saying why, not an error: only
    /// the store failing is.
    async fn launch_locked(
        &self,
        accessory: Accessory,
        project: &Project,
        actor: Option<&str>,
    ) -> DeployResult<Accessory> {
        let starting = self.set_status(&accessory, AccessoryStatus::Starting).await?;
        match self.replace_container(&starting, project).await {
            Ok(()) => {
                let running = self.set_status(&starting, AccessoryStatus::Running).await?;
                self.publish(
                    &running,
                    NewEvent::info(
                        Source::Deployer,
                        format!(
                            "accessory {} started from {}",
                            running.name,
                            image_reference(&running.image)
                        ),
                    ),
                    actor,
                )
                .await;
                Ok(running)
            }
            Err(e) => {
                let failed = self.set_status(&starting, AccessoryStatus::Failed).await?;
                self.publish(
                    &failed,
                    NewEvent::error(
                        Source::Deployer,
                        format!("accessory {} could not be started: {e:#}", failed.name),
                    ),
                    actor,
                )
                .await;
                Ok(failed)
            }
        }
    }

    async fn replace_container(&self, accessory: &Accessory, project: &Project) -> anyhow::Result<()> {
        let deps = self.deps();
        let image = image_reference(&accessory.image);
        let auth = self.accessory_pull_auth(project, accessory).await?;
        deps.engine
            .pull(&image, auth.as_ref())
            .await
            .with_context(|| format!("pulling {image}"))?;
        if let Some(old) = &accessory.container_id {
            match deps.engine.stop(old, ACCESSORY_STOP_GRACE).await {
                Ok(()) | Err(DockerError::NotFound) => {}
                Err(e) => return Err(anyhow::Error::from(e).context("stopping the old container")),
            }
            match deps.engine.remove(old).await {
                Ok(()) | Err(DockerError::NotFound) => {}
                Err(e) => return Err(anyhow::Error::from(e).context("removing the old container")),
            }
            deps.store
                .set_accessory_container(accessory.id, None, self.now())
                .await
                .context("forgetting the old container")?;
        }
        let secret_env = self.accessory_secret_env(accessory).await?;
        let spec = self.accessory_container(accessory, project, image, &secret_env);
        self.prepare_resources(project, &accessory.spec.volumes, &spec)
            .await?;
        // A container of that name left by a crash between create and record goes first.
        if let Ok(leftover) = deps.engine.inspect(&spec.name).await
            && leftover.labels.get(labels::INSTALLATION).map(String::as_str) == Some(&*deps.installation_id)
            && leftover.labels.get(labels::ACCESSORY) == Some(&accessory.id.to_string())
        {
            let _ = deps.engine.remove(&leftover.id).await;
        }
        let id = deps
            .engine
            .create(&spec)
            .await
            .with_context(|| format!("creating the container {}", spec.name))?;
        let image_id = deps.engine.inspect(&id).await.ok().map(|d| d.image_id);
        deps.store
            .set_accessory_container(
                accessory.id,
                Some(&AccessoryContainer {
                    container_id: id.clone(),
                    container_name: spec.name.clone(),
                    image_id,
                    revision: accessory.config_revision,
                }),
                self.now(),
            )
            .await
            .context("recording the container")?;
        deps.engine
            .start(&id)
            .await
            .docker("starting the container")
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        self.record_host_port(accessory, &id).await;
        Ok(())
    }

    /// The project's registry credentials, when the accessory's image is on the project's
    /// registry; anonymous otherwise.
    async fn accessory_pull_auth(
        &self,
        project: &Project,
        accessory: &Accessory,
    ) -> anyhow::Result<Option<PullAuth>> {
        if accessory.image.registry() != project.image.registry() {
            return Ok(None);
        }
        self.pull_auth(project).await
    }

    async fn accessory_secret_env(&self, accessory: &Accessory) -> anyhow::Result<BTreeMap<String, String>> {
        let sealed = self
            .deps()
            .store
            .accessory_secrets(accessory.id)
            .await
            .context("reading the accessory's secret variables")?;
        self.open_secrets(sealed)
    }

    fn accessory_container(
        &self,
        accessory: &Accessory,
        project: &Project,
        image: String,
        secret_env: &BTreeMap<String, String>,
    ) -> CreateContainer {
        let project_name = project.name.as_str();
        let labels = BTreeMap::from([
            (labels::MANAGED.to_owned(), "true".to_owned()),
            (
                labels::INSTALLATION.to_owned(),
                self.deps().installation_id.to_string(),
            ),
            (labels::PROJECT.to_owned(), project_name.to_owned()),
            (labels::ACCESSORY.to_owned(), accessory.id.to_string()),
        ]);
        CreateContainer {
            name: accessory_container_name(project_name, accessory.name.as_str()),
            image,
            labels,
            env: accessory
                .spec
                .env
                .iter()
                .chain(secret_env)
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
            command: accessory.spec.command.clone(),
            container_port: accessory.spec.port,
            memory_bytes: None,
            nano_cpus: None,
            mounts: engine_mounts(project_name, &accessory.spec.volumes),
            network: Some(NetworkAttachment {
                name: project_network_name(project_name),
                aliases: vec![accessory.name.to_string()],
            }),
            extra_networks: Vec::new(),
            user: None,
            restart_policy: RestartPolicy::UnlessStopped,
            stop_signal: "SIGTERM".to_owned(),
            stop_timeout_seconds: ACCESSORY_STOP_GRACE.as_secs() as u32,
        }
    }
}
