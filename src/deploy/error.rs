//! The deploy workflow's typed failures: what a caller of [`super::Deployer`] can branch on.
//! A deploy that *ran* and failed is not an error (it is [`super::DeployOutcome::Failed`], with
//! the deployment recorded); these are the requests that could not run at all — an unknown
//! stage, a request that does not fit the current state (one [`ConflictReason`] per case), an
//! unreachable registry or engine — and `Internal` for the unexpected, with its context chain.
//!
//! The HTTP layer maps every variant exhaustively (`web/error.rs`), so adding one here is a
//! compile error there until it has a status: no new failure can become a 500 by accident.

use crate::docker::DockerError;
use crate::domain::instance::InstanceStatus;
use crate::registry::RegistryError;

/// Why a deploy-workflow request could not run.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The stage, instance or tag asked for does not exist.
    #[error("{0}")]
    NotFound(Missing),
    /// The request does not fit the current state.
    #[error("{0}")]
    Conflict(ConflictReason),
    /// The registry could not answer (a missing tag is `NotFound(Missing::Tag)` only when the
    /// policy found none; a named tag the registry lacks is `RegistryError::NotFound` here).
    #[error("{context}: {source}")]
    Registry {
        context: String,
        #[source]
        source: RegistryError,
    },
    /// The Docker engine refused or could not be reached.
    #[error("{context}: {source}")]
    Docker {
        context: String,
        #[source]
        source: DockerError,
    },
    /// Anything else: the store failed, a record does not parse. Logged with its chain.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// What was not found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Missing {
    #[error("no stage with id {0}")]
    Stage(i64),
    #[error("no instance with id {0}")]
    Instance(i64),
    #[error("no accessory with id {0}")]
    Accessory(i64),
    /// No tag in the registry matches the stage's policy (shown as given).
    #[error("no tag in the registry matches the tag policy {0}")]
    MatchingTag(String),
}

/// Why a request conflicts with the current state: one variant per case, so the API can say
/// precisely what to do instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConflictReason {
    /// A rollback found no earlier instance that ever ran.
    #[error("nothing to roll back to: stage {stage} has no earlier instance that ran")]
    NothingToRollBack { stage: String },
    /// Rollback of a per-tag stage: each tag has its own instance.
    #[error(
        "nothing to roll back to: stage {stage} deploys one instance per tag; deploy the tag you want instead"
    )]
    RollbackPerTag { stage: String },
    /// A per-tag sync of a stage that follows one tag.
    #[error("stage {stage} follows one tag ({policy}); only glob: and regex: stages deploy per tag")]
    NotPerTag { stage: String, policy: String },
    #[error("instance {0} is being deployed; wait for its deployment to finish")]
    InstanceDeploying(i64),
    #[error("instance {0} is being removed")]
    InstanceRemoving(i64),
    /// A conditional write found the instance in another status than the one read.
    #[error("instance {id} changed to {status} meanwhile; try again")]
    InstanceChanged { id: i64, status: InstanceStatus },
    #[error("instance {0} has no container; deploy its tag again instead")]
    NoContainer(i64),
    #[error("the container of instance {0} no longer exists; deploy its tag again instead")]
    ContainerGone(i64),
    #[error("accessory {0} is being removed")]
    AccessoryRemoving(i64),
    /// Removing the instance would take a live site down.
    #[error("instance {id} is running and routed for stage {stage}; stop it first")]
    InstanceRouted { id: i64, stage: String },
}

impl DeployError {
    /// A Docker failure with what was being done.
    pub fn docker(context: impl Into<String>, source: DockerError) -> Self {
        Self::Docker {
            context: context.into(),
            source,
        }
    }

    /// A registry failure with what was being done.
    pub fn registry(context: impl Into<String>, source: RegistryError) -> Self {
        Self::Registry {
            context: context.into(),
            source,
        }
    }
}

impl From<ConflictReason> for DeployError {
    fn from(reason: ConflictReason) -> Self {
        Self::Conflict(reason)
    }
}

impl From<Missing> for DeployError {
    fn from(missing: Missing) -> Self {
        Self::NotFound(missing)
    }
}

/// `.docker("starting the container")?` on an engine call.
pub trait DockerContext<T> {
    fn docker(self, context: impl Into<String>) -> Result<T, DeployError>;
}

impl<T> DockerContext<T> for Result<T, DockerError> {
    fn docker(self, context: impl Into<String>) -> Result<T, DeployError> {
        self.map_err(|source| DeployError::docker(context, source))
    }
}

pub type DeployResult<T> = Result<T, DeployError>;
