//! The engine seen from docker-watcher: the [`ContainerEngine`] trait and the plain types it
//! speaks. Workflows hold an `Arc<dyn ContainerEngine>`; production uses the bollard adapter
//! ([`super::DockerEngine`]), unit tests and the scaled stale-scan benchmark use fakes.
//!
//! Every method touches only containers it is given by id or, for listing and events, those
//! carrying this installation's label — never anything else on the engine.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::BoxStream;

use super::DockerError;
use crate::domain::workload::RestartPolicy;

/// The labels docker-watcher puts on every container, volume and network it creates.
pub mod labels {
    pub const MANAGED: &str = "io.docker-watcher.managed";
    pub const INSTALLATION: &str = "io.docker-watcher.installation";
    pub const PROJECT: &str = "io.docker-watcher.project";
    pub const STAGE: &str = "io.docker-watcher.stage";
    pub const INSTANCE: &str = "io.docker-watcher.instance";
    /// On a deploy hook's one-off container (`pre_deploy`, `post_deploy`), instead of INSTANCE.
    pub const HOOK: &str = "io.docker-watcher.hook";
    /// On an accessory's container (its id), instead of STAGE and INSTANCE.
    pub const ACCESSORY: &str = "io.docker-watcher.accessory";
}

/// The labels of a volume or network docker-watcher creates for `project`: managed, this
/// installation's, the project's.
pub fn resource_labels(installation_id: &str, project: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::MANAGED.to_owned(), "true".to_owned()),
        (labels::INSTALLATION.to_owned(), installation_id.to_owned()),
        (labels::PROJECT.to_owned(), project.to_owned()),
    ])
}

/// Registry credentials for a pull.
#[derive(Clone, PartialEq, Eq)]
pub struct PullAuth {
    pub username: String,
    pub password: String,
    /// The registry host (`127.0.0.1:5000`, `docker.io`).
    pub server: String,
}

impl std::fmt::Debug for PullAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullAuth")
            .field("username", &self.username)
            .field("server", &self.server)
            .finish()
    }
}

/// What to create. Its `Debug` shows the names of the environment variables, never their
/// values (secrets travel in `env`).
#[derive(Clone, PartialEq)]
pub struct CreateContainer {
    /// `dw-{project}-{stage}-{instance_id}`.
    pub name: String,
    /// The image pinned by digest: `registry/repo@sha256:…`.
    pub image: String,
    pub labels: BTreeMap<String, String>,
    /// `KEY=value` pairs.
    pub env: Vec<String>,
    pub command: Option<Vec<String>>,
    /// The port inside the container, published on 127.0.0.1 with an engine-chosen host port;
    /// `None` publishes nothing (an accessory without a port).
    pub container_port: Option<u16>,
    pub memory_bytes: Option<i64>,
    pub nano_cpus: Option<i64>,
    /// Named volumes (already created, see [`ContainerEngine::ensure_volume`]) and bind mounts.
    pub mounts: Vec<Mount>,
    /// The network the container is created on, with its aliases there (the project's own).
    pub network: Option<NetworkAttachment>,
    /// More networks the container is connected to before it starts.
    pub extra_networks: Vec<String>,
    pub user: Option<String>,
    pub restart_policy: RestartPolicy,
    /// `SIGTERM` unless the stage says otherwise.
    pub stop_signal: String,
    /// Seconds a `docker stop` without its own timeout waits before it kills.
    pub stop_timeout_seconds: u32,
}

/// One mount of a container, with the engine's names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub kind: MountKind,
    /// The volume's name, or the host path of a bind mount.
    pub source: String,
    pub target: String,
    pub read_only: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountKind {
    Volume,
    Bind,
}

/// A network a container joins at creation, and the names it answers to there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkAttachment {
    pub name: String,
    pub aliases: Vec<String>,
}

impl std::fmt::Debug for CreateContainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let env_keys: Vec<&str> = self
            .env
            .iter()
            .map(|pair| pair.split_once('=').map_or(pair.as_str(), |(key, _)| key))
            .collect();
        f.debug_struct("CreateContainer")
            .field("name", &self.name)
            .field("image", &self.image)
            .field("labels", &self.labels)
            .field("env_keys", &env_keys)
            .field("command", &self.command)
            .field("container_port", &self.container_port)
            .field("memory_bytes", &self.memory_bytes)
            .field("nano_cpus", &self.nano_cpus)
            .field("mounts", &self.mounts)
            .field("network", &self.network)
            .field("extra_networks", &self.extra_networks)
            .field("user", &self.user)
            .field("restart_policy", &self.restart_policy)
            .field("stop_signal", &self.stop_signal)
            .field("stop_timeout_seconds", &self.stop_timeout_seconds)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContainerState {
    Created,
    Running,
    Paused,
    Restarting,
    Removing,
    Exited,
    Dead,
    Unknown,
}

/// One entry of the list call.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSummary {
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub state: ContainerState,
    /// Parsed from the list's status text (`Exited (137) 2 minutes ago`) when it is there.
    pub exit_code: Option<i64>,
    pub host_port: Option<u16>,
    pub image_id: String,
}

impl ContainerSummary {
    /// The instance id from the label, when it parses.
    pub fn instance_id(&self) -> Option<i64> {
        self.labels.get(labels::INSTANCE).and_then(|v| v.parse().ok())
    }

    /// The accessory id from the label, when it parses.
    pub fn accessory_id(&self) -> Option<i64> {
        self.labels.get(labels::ACCESSORY).and_then(|v| v.parse().ok())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthState {
    Starting,
    Healthy,
    Unhealthy,
}

/// What inspect tells.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerDetails {
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub state: ContainerState,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    /// `None` when the image defines no HEALTHCHECK.
    pub health: Option<HealthState>,
    pub host_port: Option<u16>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub image_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineEventKind {
    Start,
    Die,
    Stop,
    Kill,
    Oom,
    Destroy,
    HealthStatus(HealthState),
}

/// A container event from the engine's stream, for a container of this installation.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineEvent {
    pub kind: EngineEventKind,
    pub container_id: String,
    pub labels: BTreeMap<String, String>,
    /// For `die`: the exit code.
    pub exit_code: Option<i64>,
    pub time: DateTime<Utc>,
}

/// One line of container output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub stream: LogStream,
    /// When the engine received it (absent when the engine did not stamp it).
    pub time: Option<DateTime<Utc>>,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// The Docker operations docker-watcher needs, and no more.
#[async_trait::async_trait]
pub trait ContainerEngine: Send + Sync + std::fmt::Debug {
    async fn ping(&self, timeout: Duration) -> Result<(), DockerError>;
    /// Pulls an image (by digest) with optional credentials.
    async fn pull(&self, image: &str, auth: Option<&PullAuth>) -> Result<(), DockerError>;
    /// Creates a container; returns its id.
    async fn create(&self, spec: &CreateContainer) -> Result<String, DockerError>;
    async fn start(&self, id: &str) -> Result<(), DockerError>;
    /// Stops with SIGTERM, then SIGKILL after `grace`. Already stopped is not an error.
    async fn stop(&self, id: &str, grace: Duration) -> Result<(), DockerError>;
    async fn restart(&self, id: &str, grace: Duration) -> Result<(), DockerError>;
    /// Removes a container (forcefully). Already gone is `DockerError::NotFound`.
    async fn remove(&self, id: &str) -> Result<(), DockerError>;
    async fn inspect(&self, id: &str) -> Result<ContainerDetails, DockerError>;
    /// Every container (running or not) carrying this installation's label: one list call.
    async fn list_managed(&self, installation_id: &str) -> Result<Vec<ContainerSummary>, DockerError>;
    /// The last `tail` lines of a container's output.
    async fn logs(&self, id: &str, tail: u32) -> Result<Vec<LogLine>, DockerError>;
    /// The last `tail` lines of a container's output, then each new line as it is written.
    /// Ends when the container stops (or is removed); an error ends it too. The default, for
    /// fakes without output, ends at once.
    fn follow_logs(&self, id: &str, tail: u32) -> BoxStream<'static, Result<LogLine, DockerError>> {
        let _ = (id, tail);
        futures::stream::empty().boxed()
    }
    /// Removes an image unless a container still uses it; `Ok(false)` when in use.
    async fn remove_image_if_unused(&self, image_id: &str) -> Result<bool, DockerError>;
    /// The engine's event stream, filtered on this installation's label. Ends when the engine
    /// goes away; the caller reconnects.
    fn events(&self, installation_id: &str) -> BoxStream<'static, Result<EngineEvent, DockerError>>;
    /// How many engine API calls each operation has made (for metrics and tests).
    fn api_calls(&self) -> BTreeMap<&'static str, u64>;

    // Volumes and networks (SPEC §3 "Workloads"). The defaults are for fakes that model
    // neither: nothing to create, nothing found. The bollard adapter implements them all.

    /// Creates the named volume with `labels` unless it exists (an existing one is kept as it
    /// is, with its data).
    async fn ensure_volume(
        &self,
        _name: &str,
        _labels: &BTreeMap<String, String>,
    ) -> Result<(), DockerError> {
        Ok(())
    }
    /// Removes a volume. Gone already is `NotFound`; still used by a container is `Conflict`.
    async fn remove_volume(&self, _name: &str) -> Result<(), DockerError> {
        Err(DockerError::NotFound)
    }
    /// The names of the volumes carrying this installation's label and `label` = `value`.
    async fn list_volumes(
        &self,
        _installation_id: &str,
        _label: (&str, &str),
    ) -> Result<Vec<String>, DockerError> {
        Ok(Vec::new())
    }
    /// Creates the bridge network with `labels` unless a network of that name exists.
    async fn ensure_network(
        &self,
        _name: &str,
        _labels: &BTreeMap<String, String>,
    ) -> Result<(), DockerError> {
        Ok(())
    }
    /// The labels of the network called `name`, `None` when there is no such network.
    async fn network_labels(&self, _name: &str) -> Result<Option<BTreeMap<String, String>>, DockerError> {
        Ok(None)
    }
    /// Removes a network. Gone already is `NotFound`; still used is `Conflict`.
    async fn remove_network(&self, _name: &str) -> Result<(), DockerError> {
        Err(DockerError::NotFound)
    }
}
