//! Stages: the environments of a project (dev, staging, prod, previews). A stage says which tags
//! to follow ([`TagPolicy`]), how often to look ([`Schedule`]), how to run the container
//! ([`ContainerSpec`]) and where to route it ([`Hostname`]).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ParseError;
use super::duration::HumanDuration;
use super::hostname::Hostname;
use super::name::Name;
use super::project::SealedSecret;
use super::schedule::Schedule;
use super::tag_policy::TagPolicy;
use super::workload::{
    Hooks, RestartPolicy, StopSignal, VolumeMount, check_labels, check_networks, check_user, check_volumes,
};

#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    pub id: i64,
    pub project_id: i64,
    pub name: Name,
    pub tag_policy: TagPolicy,
    /// `None`: the setting `default_poll_schedule`.
    pub schedule: Option<Schedule>,
    /// Off: monitor-only, record the available tag and deploy nothing.
    pub auto_deploy: bool,
    pub hostname: Option<Hostname>,
    pub max_instances: u32,
    pub min_release_age: Option<HumanDuration>,
    pub container: ContainerSpec,
    pub hooks: Hooks,
    pub strategy: DeployStrategy,
    /// The names of the stage's secret environment variables; their values stay sealed in the
    /// store and are opened only to start a container.
    pub secret_env_keys: Vec<String>,
    /// Bumped by every change of what a container of this stage is made of (the container spec,
    /// the secrets, the hooks, the strategy): an instance created at an older revision is out
    /// of date.
    pub config_revision: i64,
    pub current_instance_id: Option<i64>,
    pub available_tag: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewStage {
    pub name: Name,
    pub tag_policy: TagPolicy,
    pub schedule: Option<Schedule>,
    pub auto_deploy: bool,
    pub hostname: Option<Hostname>,
    pub max_instances: u32,
    pub min_release_age: Option<HumanDuration>,
    pub container: ContainerSpec,
    pub hooks: Hooks,
    pub strategy: DeployStrategy,
    /// Secret environment variables, sealed.
    pub secret_env: BTreeMap<String, SealedSecret>,
}

/// A partial update: `None` leaves a field as it is; `Some(None)` clears a nullable one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StagePatch {
    pub name: Option<Name>,
    pub tag_policy: Option<TagPolicy>,
    pub schedule: Option<Option<Schedule>>,
    pub auto_deploy: Option<bool>,
    pub hostname: Option<Option<Hostname>>,
    pub max_instances: Option<u32>,
    pub min_release_age: Option<Option<HumanDuration>>,
    pub container: Option<ContainerSpec>,
    pub hooks: Option<Hooks>,
    pub strategy: Option<DeployStrategy>,
    /// Secret variables to set or replace (`Some`, sealed) or remove (`None`); keys not named
    /// are kept. Only keys whose value really changes belong here: each entry counts as a
    /// change of configuration.
    pub secret_env: BTreeMap<String, Option<SealedSecret>>,
}

/// How a deploy replaces a stage's running instance (SPEC §3 "Workloads").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeployStrategy {
    /// Start the new instance, pass its health gate, switch, then stop the old one: two
    /// instances run side by side for a moment, and no request ever waits.
    #[default]
    StartFirst,
    /// Hold the stage's new requests in the proxy, stop the old instance, start the new one and
    /// pass its health gate, then release them to it: for applications that must never run
    /// twice (a SQLite file in a volume, a singleton worker).
    StopFirst,
}

impl DeployStrategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StartFirst => "start_first",
            Self::StopFirst => "stop_first",
        }
    }

    /// `start_first` or `stop_first`.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        match raw {
            "start_first" => Ok(Self::StartFirst),
            "stop_first" => Ok(Self::StopFirst),
            _ => Err(ParseError::new(format!(
                "'{raw}' is not a deploy strategy: start_first or stop_first"
            ))),
        }
    }
}

impl std::str::FromStr for DeployStrategy {
    type Err = ParseError;

    fn from_str(raw: &str) -> Result<Self, ParseError> {
        Self::parse(raw)
    }
}

impl std::fmt::Display for DeployStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl NewStage {
    pub const DEFAULT_MAX_INSTANCES: u32 = 10;
    pub const MAX_INSTANCES_LIMIT: u32 = 1000;
}

/// A stage's `max_instances`: from 1 to [`NewStage::MAX_INSTANCES_LIMIT`].
pub fn parse_max_instances(raw: i64) -> Result<u32, ParseError> {
    u32::try_from(raw)
        .ok()
        .filter(|n| (1..=NewStage::MAX_INSTANCES_LIMIT).contains(n))
        .ok_or_else(|| ParseError::new(format!("must be from 1 to {}", NewStage::MAX_INSTANCES_LIMIT)))
}

/// How the stage's container runs. Stored as JSON; every field is checked by
/// [`ContainerSpec::validate`] before it gets there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContainerSpec {
    /// The port the application listens on inside the container.
    #[serde(default = "ContainerSpec::default_port")]
    pub port: u16,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Overrides the image's command when set.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    #[serde(default)]
    pub health_check: Option<HealthCheck>,
    #[serde(default = "ContainerSpec::default_min_ready_seconds")]
    pub min_ready_seconds: u32,
    #[serde(default)]
    pub memory_mb: Option<u32>,
    #[serde(default)]
    pub cpus: Option<f64>,
    /// Named volumes and bind mounts (SPEC §3 "Workloads").
    #[serde(default)]
    pub volumes: Vec<VolumeMount>,
    /// Existing engine networks to join, besides the project's own `dw-{project}`.
    #[serde(default)]
    pub networks: Vec<String>,
    /// The user's own labels (docker-watcher's `io.docker-watcher.*` are added to them).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The user the process runs as (`name`, `uid`, `uid:gid`); `None`: the image's.
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    #[schema(value_type = String, example = "unless-stopped")]
    pub restart_policy: RestartPolicy,
    #[serde(default)]
    #[schema(value_type = String, example = "SIGTERM")]
    pub stop_signal: StopSignal,
    /// How long a stop waits after the stop signal before it kills.
    #[serde(default = "ContainerSpec::default_stop_grace_seconds")]
    pub stop_grace_seconds: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// An absolute path, requested with GET through the published port.
    pub path: String,
    #[serde(default = "HealthCheck::default_expected_status")]
    pub expected_status: u16,
}

impl HealthCheck {
    fn default_expected_status() -> u16 {
        200
    }
}

impl Default for ContainerSpec {
    fn default() -> Self {
        Self {
            port: Self::default_port(),
            env: BTreeMap::new(),
            command: None,
            health_check: None,
            min_ready_seconds: Self::default_min_ready_seconds(),
            memory_mb: None,
            cpus: None,
            volumes: Vec::new(),
            networks: Vec::new(),
            labels: BTreeMap::new(),
            user: None,
            restart_policy: RestartPolicy::default(),
            stop_signal: StopSignal::default(),
            stop_grace_seconds: Self::default_stop_grace_seconds(),
        }
    }
}

/// Whether `key` can name an environment variable: letters, digits and `_`, not starting with a
/// digit, at most 255 characters.
pub fn is_env_name(key: &str) -> bool {
    key.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && key.len() <= 255
}

/// What is wrong with a key that [`is_env_name`] refuses.
pub fn env_name_message(key: &str) -> String {
    format!("'{key}' is not a valid variable name: letters, digits and _, not starting with a digit")
}

/// Checks plain environment variables (of a stage's container or an accessory): at most 1000,
/// names that [`is_env_name`] accepts, values without NUL. The error names the field relative
/// to the container (`env.KEY`).
pub fn check_env(env: &BTreeMap<String, String>) -> Result<(), (String, String)> {
    if env.len() > 1000 {
        return Err(("env".into(), "at most 1000 variables".into()));
    }
    for (key, value) in env {
        if !is_env_name(key) {
            return Err((format!("env.{key}"), env_name_message(key)));
        }
        if value.contains('\0') {
            return Err((format!("env.{key}"), "must not contain NUL characters".into()));
        }
    }
    Ok(())
}

/// Checks a command that overrides the image's: not empty, no NUL.
pub fn check_command(command: &[String]) -> Result<(), String> {
    if command.is_empty() {
        return Err("must not be empty; use null for the image's command".into());
    }
    if command.iter().any(|a| a.contains('\0')) {
        return Err("must not contain NUL characters".into());
    }
    Ok(())
}

/// The most secret variables a stage or an accessory holds.
pub const MAX_SECRET_ENV: usize = 100;
/// The longest secret value, in bytes.
pub const MAX_SECRET_VALUE: usize = 64 * 1024;

/// Checks the keys and values of a secret-variable patch against `env` (a name may be plain or
/// secret, not both). The error names the field (`container.secret_env.KEY`) and never quotes a
/// value.
pub fn check_secret_env<'a>(
    patch: impl IntoIterator<Item = (&'a String, Option<&'a String>)>,
    env: &BTreeMap<String, String>,
) -> Result<(), (String, ParseError)> {
    let fail = |key: &str, msg: String| Err((format!("container.secret_env.{key}"), ParseError::new(msg)));
    for (key, value) in patch {
        if !is_env_name(key) {
            return fail(key, env_name_message(key));
        }
        if value.is_some() && env.contains_key(key) {
            return fail(
                key,
                format!(
                    "'{key}' is also a plain variable in container.env; a name is either plain or secret"
                ),
            );
        }
        if let Some(value) = value {
            if value.contains('\0') {
                return fail(key, "must not contain NUL characters".into());
            }
            if value.len() > MAX_SECRET_VALUE {
                return fail(key, format!("at most {MAX_SECRET_VALUE} bytes"));
            }
        }
    }
    Ok(())
}

impl ContainerSpec {
    fn default_port() -> u16 {
        8080
    }

    fn default_min_ready_seconds() -> u32 {
        2
    }

    pub fn default_stop_grace_seconds() -> u32 {
        10
    }

    /// The longest `stop_grace_seconds`.
    pub const MAX_STOP_GRACE_SECONDS: u32 = 3600;

    /// Checks every field; the error names the field (`container.env.FOO`, `container.port`).
    pub fn validate(&self) -> Result<(), (String, ParseError)> {
        let fail = |field: &str, msg: String| Err((format!("container.{field}"), ParseError::new(msg)));
        if self.port == 0 {
            return fail("port", "must be from 1 to 65535".into());
        }
        check_env(&self.env).or_else(|(field, msg)| fail(&field, msg))?;
        if let Some(command) = &self.command {
            check_command(command).or_else(|msg| fail("command", msg))?;
        }
        if let Some(hc) = &self.health_check {
            if !hc.path.starts_with('/')
                || hc.path.len() > 2048
                || hc.path.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return fail(
                    "health_check.path",
                    "must be an absolute path such as /healthz, without spaces".into(),
                );
            }
            if !(100..=599).contains(&hc.expected_status) {
                return fail(
                    "health_check.expected_status",
                    "must be an HTTP status from 100 to 599".into(),
                );
            }
        }
        if self.min_ready_seconds > 3600 {
            return fail("min_ready_seconds", "must be from 0 to 3600".into());
        }
        if let Some(mb) = self.memory_mb
            && !(6..=1_048_576).contains(&mb)
        {
            return fail(
                "memory_mb",
                "must be from 6 to 1048576 (Docker's minimum is 6 MB)".into(),
            );
        }
        if let Some(cpus) = self.cpus
            && !(cpus.is_finite() && cpus > 0.0 && cpus <= 1024.0)
        {
            return fail("cpus", "must be greater than 0 and at most 1024".into());
        }
        check_volumes(&self.volumes).or_else(|msg| fail("volumes", msg))?;
        check_networks(&self.networks).or_else(|msg| fail("networks", msg))?;
        check_labels(&self.labels).or_else(|msg| fail("labels", msg))?;
        if let Some(user) = &self.user {
            check_user(user).or_else(|msg| fail("user", msg))?;
        }
        if self.stop_grace_seconds > Self::MAX_STOP_GRACE_SECONDS {
            return fail(
                "stop_grace_seconds",
                format!("must be from 0 to {}", Self::MAX_STOP_GRACE_SECONDS),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategies_read_back_as_they_are_written_and_nothing_else_parses() {
        for strategy in [DeployStrategy::StartFirst, DeployStrategy::StopFirst] {
            assert_eq!(DeployStrategy::parse(strategy.as_str()).unwrap(), strategy);
        }
        assert_eq!(DeployStrategy::default(), DeployStrategy::StartFirst);
        for bad in ["", "stop-first", "Stop_First", "rolling"] {
            assert!(DeployStrategy::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_default_spec_is_valid() {
        assert!(ContainerSpec::default().validate().is_ok());
    }

    #[test]
    fn each_bad_field_is_named() {
        let field = |spec: ContainerSpec| spec.validate().unwrap_err().0;
        assert_eq!(
            field(ContainerSpec {
                port: 0,
                ..Default::default()
            }),
            "container.port"
        );
        let mut env = BTreeMap::new();
        env.insert("1BAD".to_owned(), "x".to_owned());
        assert_eq!(
            field(ContainerSpec {
                env,
                ..Default::default()
            }),
            "container.env.1BAD"
        );
        assert_eq!(
            field(ContainerSpec {
                command: Some(vec![]),
                ..Default::default()
            }),
            "container.command"
        );
        let hc = HealthCheck {
            path: "health".into(),
            expected_status: 200,
        };
        assert_eq!(
            field(ContainerSpec {
                health_check: Some(hc),
                ..Default::default()
            }),
            "container.health_check.path"
        );
        let hc = HealthCheck {
            path: "/health".into(),
            expected_status: 700,
        };
        assert_eq!(
            field(ContainerSpec {
                health_check: Some(hc),
                ..Default::default()
            }),
            "container.health_check.expected_status"
        );
        assert_eq!(
            field(ContainerSpec {
                memory_mb: Some(1),
                ..Default::default()
            }),
            "container.memory_mb"
        );
        assert_eq!(
            field(ContainerSpec {
                cpus: Some(f64::NAN),
                ..Default::default()
            }),
            "container.cpus"
        );
        assert_eq!(
            field(ContainerSpec {
                min_ready_seconds: 4000,
                ..Default::default()
            }),
            "container.min_ready_seconds"
        );
    }
}
