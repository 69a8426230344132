//! Instances and deployments: the containers docker-watcher runs for a stage, and the attempts to
//! bring a tag live. Their statuses are closed sets; the strings are the ones stored and served.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ParseError;

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "lowercase")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = ParseError;
            fn from_str(s: &str) -> Result<Self, ParseError> {
                Self::ALL.iter().copied().find(|v| v.as_str() == s).ok_or_else(|| {
                    let all: Vec<&str> = Self::ALL.iter().map(|v| v.as_str()).collect();
                    ParseError::new(format!("unknown value '{s}': expected one of {}", all.join(", ")))
                })
            }
        }
    };
}

string_enum! {
    /// `pending` → `deploying` → `running`; `stopped`; `failed`; `missing` (the container is gone
    /// from Docker); `removing` (cleanup in progress).
    InstanceStatus {
        Pending => "pending",
        Deploying => "deploying",
        Running => "running",
        Stopped => "stopped",
        Failed => "failed",
        Missing => "missing",
        Removing => "removing",
    }
}

string_enum! {
    /// What started a deployment. `heal`: the stage brought itself back after its current
    /// container was removed outside docker-watcher.
    Trigger {
        Poll => "poll",
        Webhook => "webhook",
        Manual => "manual",
        Rollback => "rollback",
        Config => "config",
        Heal => "heal",
    }
}

string_enum! {
    DeploymentStatus {
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
    }
}

/// One container deployed for a stage, with the names of its project and stage joined in.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    pub id: i64,
    pub project_id: i64,
    pub project_name: String,
    pub stage_id: i64,
    pub stage_name: String,
    pub image_tag: String,
    pub image_digest: Option<String>,
    pub container_id: Option<String>,
    pub container_name: Option<String>,
    pub status: InstanceStatus,
    /// Whether the stage routes to it now (single stages) — per-tag instances are all current
    /// while they run.
    pub is_current: bool,
    pub host_port: Option<u16>,
    pub hostname: Option<String>,
    pub exit_code: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub last_alive_at: Option<DateTime<Utc>>,
    pub stopped_at: Option<DateTime<Utc>>,
    pub stale_since: Option<DateTime<Utc>>,
    /// The stage's `config_revision` its container was created with.
    pub config_revision: i64,
}

/// An instance about to be recorded, before its container exists: the deployer records it first
/// so a crash mid-deploy leaves a row to finish or roll back, never an unrecorded container.
#[derive(Debug, Clone, PartialEq)]
pub struct NewInstance {
    pub project_id: i64,
    pub stage_id: i64,
    pub image_tag: String,
    pub image_digest: Option<String>,
    pub status: InstanceStatus,
    /// The per-tag hostname it routes, claimed when the instance is recorded.
    pub hostname: Option<String>,
    pub created_at: DateTime<Utc>,
    /// The stage's configuration revision the container is created from.
    pub config_revision: i64,
}

/// Which instances to list. `None` means "any".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InstanceFilter {
    pub project_id: Option<i64>,
    pub stage_id: Option<i64>,
    pub status: Option<InstanceStatus>,
}

/// One attempt to bring a tag live on a stage.
#[derive(Debug, Clone, PartialEq)]
pub struct Deployment {
    pub id: i64,
    pub stage_id: i64,
    pub instance_id: Option<i64>,
    pub image_tag: String,
    pub image_digest: Option<String>,
    pub trigger: Trigger,
    pub status: DeploymentStatus,
    pub error: Option<String>,
    pub actor: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The output of the deployment's hooks (the last 64 KiB), when it ran any.
    pub hook_output: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_their_stored_names() {
        for s in InstanceStatus::ALL {
            assert_eq!(s.as_str().parse::<InstanceStatus>().unwrap(), *s);
        }
        assert!("zombie".parse::<InstanceStatus>().is_err());
        assert_eq!("rollback".parse::<Trigger>().unwrap(), Trigger::Rollback);
    }
}

/// A digest whose deploy failed on a stage: automatic deploys skip it until a newer digest
/// appears or a user deploys it by hand (the stage page shows it, with a retry action).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedDigest {
    pub stage_id: i64,
    pub digest: String,
    /// The tag it was deployed under.
    pub image_tag: String,
    /// Why it failed, as the deployment recorded it.
    pub error: String,
    pub failed_at: DateTime<Utc>,
}
