//! Accessories (SPEC §3 "Workloads"): a project's long-running companions — a database, a cache —
//! run from an image the user pins (a tag or a digest, never polled), reachable on the project's
//! network `dw-{project}` under their name, so the app reaches `db:5432`. They are started,
//! stopped, restarted and upgraded only by explicit action: a change of the spec makes an
//! accessory *out of date* until a restart recreates its container.
//!
//! What an accessory's container is given is a small part of a stage's (env, secret variables,
//! volumes with the same rules, command, an optional port), checked by the same functions.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ParseError;
use super::image_ref::ImageRef;
use super::name::Name;
use super::project::SealedSecret;
use super::stage::{check_command, check_env};
use super::workload::{VolumeMount, check_volumes};

/// How an accessory's container runs; stored as JSON, checked by [`AccessorySpec::validate`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessorySpec {
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Named volumes (`dw-{project}-{source}`) and bind mounts, as for a stage.
    #[serde(default)]
    pub volumes: Vec<VolumeMount>,
    /// Overrides the image's command when set.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// The port it listens on inside the container, published on 127.0.0.1 (the project's
    /// containers reach it on the network whatever this says).
    #[serde(default)]
    pub port: Option<u16>,
}

impl AccessorySpec {
    /// Checks every field; the error names it (`env.FOO`, `volumes`, `command`, `port`).
    pub fn validate(&self) -> Result<(), (String, ParseError)> {
        let fail = |field: &str, msg: String| Err((field.to_owned(), ParseError::new(msg)));
        check_env(&self.env).or_else(|(field, msg)| fail(&field, msg))?;
        check_volumes(&self.volumes).or_else(|msg| fail("volumes", msg))?;
        if let Some(command) = &self.command {
            check_command(command).or_else(|msg| fail("command", msg))?;
        }
        if self.port == Some(0) {
            return fail("port", "must be from 1 to 65535, or null".into());
        }
        Ok(())
    }
}

/// An accessory's image: a full reference with a tag or a digest (it is pulled as given and
/// never followed).
pub fn parse_accessory_image(raw: &str) -> Result<ImageRef, ParseError> {
    let image = ImageRef::parse(raw)?;
    if image.tag().is_none() && image.digest().is_none() {
        return Err(ParseError::new(format!(
            "'{}' names no tag or digest: an accessory runs the image you pin, like postgres:16 or redis@sha256:…",
            raw.trim()
        )));
    }
    Ok(image)
}

/// The reference an engine pulls and runs: `registry/repository[:tag][@digest]`.
pub fn image_reference(image: &ImageRef) -> String {
    let mut reference = image.name();
    if let Some(tag) = image.tag() {
        reference.push(':');
        reference.push_str(tag);
    }
    if let Some(digest) = image.digest() {
        reference.push('@');
        reference.push_str(digest);
    }
    reference
}

/// The engine's name of an accessory's container.
pub fn accessory_container_name(project: &str, accessory: &str) -> String {
    format!("dw-{project}-{accessory}")
}

/// Where an accessory's container is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccessoryStatus {
    /// Recorded, no container yet.
    Pending,
    /// Being pulled, created or started by the workflow.
    Starting,
    Running,
    Stopped,
    Failed,
    /// Its container is gone.
    Missing,
    /// Being deleted.
    Removing,
}

impl AccessoryStatus {
    pub const ALL: [Self; 7] = [
        Self::Pending,
        Self::Starting,
        Self::Running,
        Self::Stopped,
        Self::Failed,
        Self::Missing,
        Self::Removing,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Stopped => "stopped",
            Self::Failed => "failed",
            Self::Missing => "missing",
            Self::Removing => "removing",
        }
    }

    /// Statuses a workflow is changing: the Docker sync leaves them alone.
    pub fn is_owned_by_a_workflow(self) -> bool {
        matches!(self, Self::Pending | Self::Starting | Self::Removing)
    }
}

impl fmt::Display for AccessoryStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AccessoryStatus {
    type Err = ParseError;

    fn from_str(raw: &str) -> Result<Self, ParseError> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == raw)
            .ok_or_else(|| ParseError::new(format!("'{raw}' is not an accessory status")))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Accessory {
    pub id: i64,
    pub project_id: i64,
    pub name: Name,
    pub image: ImageRef,
    pub spec: AccessorySpec,
    /// The names of its secret variables; the values stay sealed in the store.
    pub secret_env_keys: Vec<String>,
    /// Bumped by every change of the image, the spec or a secret.
    pub config_revision: i64,
    /// The revision its current container was created with; `None`: no container yet.
    pub container_revision: Option<i64>,
    pub container_id: Option<String>,
    pub container_name: Option<String>,
    pub image_id: Option<String>,
    pub status: AccessoryStatus,
    pub host_port: Option<u16>,
    pub exit_code: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub stopped_at: Option<DateTime<Utc>>,
    pub last_alive_at: Option<DateTime<Utc>>,
}

impl Accessory {
    /// Its container was made from an older spec: a restart recreates it with the current one.
    pub fn out_of_date(&self) -> bool {
        self.container_revision
            .is_some_and(|revision| revision < self.config_revision)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewAccessory {
    pub name: Name,
    pub image: ImageRef,
    pub spec: AccessorySpec,
    /// Secret variables, sealed.
    pub secret_env: BTreeMap<String, SealedSecret>,
}

/// A partial update: `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AccessoryPatch {
    pub image: Option<ImageRef>,
    pub spec: Option<AccessorySpec>,
    /// Secret variables to set (`Some`, sealed) or remove (`None`); only real changes.
    pub secret_env: BTreeMap<String, Option<SealedSecret>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_accessory_image_is_pinned_by_a_tag_or_a_digest() {
        assert_eq!(
            image_reference(&parse_accessory_image("postgres:16").unwrap()),
            "docker.io/library/postgres:16"
        );
        assert_eq!(
            image_reference(&parse_accessory_image("127.0.0.1:5000/db:v1").unwrap()),
            "127.0.0.1:5000/db:v1"
        );
        let digest = format!("redis@sha256:{}", "a".repeat(64));
        assert!(image_reference(&parse_accessory_image(&digest).unwrap()).ends_with(&"a".repeat(64)));
        assert!(parse_accessory_image("postgres").is_err());
        assert!(parse_accessory_image("http://x/y:1").is_err());
        assert!(parse_accessory_image("").is_err());
    }

    #[test]
    fn each_bad_field_of_a_spec_is_named() {
        let mut spec = AccessorySpec::default();
        assert!(spec.validate().is_ok());
        spec.env.insert("1X".into(), "v".into());
        assert_eq!(spec.validate().unwrap_err().0, "env.1X");
        spec.env.clear();
        spec.volumes.push(VolumeMount {
            source: "data".into(),
            target: "relative".into(),
            read_only: false,
        });
        assert_eq!(spec.validate().unwrap_err().0, "volumes");
        spec.volumes.clear();
        spec.command = Some(vec![]);
        assert_eq!(spec.validate().unwrap_err().0, "command");
        spec.command = None;
        spec.port = Some(0);
        assert_eq!(spec.validate().unwrap_err().0, "port");
    }

    #[test]
    fn accessory_statuses_read_back_as_written() {
        for status in AccessoryStatus::ALL {
            assert_eq!(status.as_str().parse::<AccessoryStatus>().unwrap(), status);
        }
        assert!("up".parse::<AccessoryStatus>().is_err());
    }
}
