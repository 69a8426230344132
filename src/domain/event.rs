//! The closed vocabulary of events: what happened, how bad it is and which part of
//! docker-watcher saw it. There are no string topics: a new kind of fact needs a new variant, so
//! every consumer (the event log filters, the UI, metrics) knows the whole set.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ParseError;

/// How bad it is. `warn` and `error` are persisted to the event log automatically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Debug,
    Info,
    Warn,
    Error,
}

/// Which part of docker-watcher published the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Poller,
    Deployer,
    Docker,
    Proxy,
    Stale,
    Api,
    Auth,
    System,
}

impl Severity {
    pub const ALL: [Severity; 4] = [Self::Debug, Self::Info, Self::Warn, Self::Error];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
}

impl Source {
    pub const ALL: [Source; 8] = [
        Self::Poller,
        Self::Deployer,
        Self::Docker,
        Self::Proxy,
        Self::Stale,
        Self::Api,
        Self::Auth,
        Self::System,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Poller => "poller",
            Self::Deployer => "deployer",
            Self::Docker => "docker",
            Self::Proxy => "proxy",
            Self::Stale => "stale",
            Self::Api => "api",
            Self::Auth => "auth",
            Self::System => "system",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Severity {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|v| v.as_str() == s).ok_or_else(|| {
            ParseError::new(format!(
                "unknown severity '{s}': expected one of debug, info, warn, error"
            ))
        })
    }
}

impl FromStr for Source {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|v| v.as_str() == s).ok_or_else(|| {
            ParseError::new(format!(
                "unknown source '{s}': expected one of poller, deployer, docker, proxy, stale, api, auth, system"
            ))
        })
    }
}

/// What kind of fact an event reports, for the facts people ask to be told about
/// (notification rules filter on it). Most events have no kind: severity and source describe
/// them well enough. The kind travels in the event's `details` under [`EventKind::DETAIL_KEY`],
/// so it is stored, replayed and shown with the rest of the event without a column of its own.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    DeploySucceeded,
    DeployFailed,
    Rollback,
    UpdateAvailable,
    StaleFound,
    Cleanup,
    RegistryBackoff,
    RegistryRecovered,
    DockerUnavailable,
    DockerRecovered,
    /// A stage brought itself back after its current container was removed outside
    /// docker-watcher (or tried to, and says why it could not).
    StageHealed,
}

impl EventKind {
    /// The `details` key that carries the kind.
    pub const DETAIL_KEY: &'static str = "kind";

    pub const ALL: [EventKind; 11] = [
        Self::DeploySucceeded,
        Self::DeployFailed,
        Self::Rollback,
        Self::UpdateAvailable,
        Self::StaleFound,
        Self::Cleanup,
        Self::RegistryBackoff,
        Self::RegistryRecovered,
        Self::DockerUnavailable,
        Self::DockerRecovered,
        Self::StageHealed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::DeploySucceeded => "deploy_succeeded",
            Self::DeployFailed => "deploy_failed",
            Self::Rollback => "rollback",
            Self::UpdateAvailable => "update_available",
            Self::StaleFound => "stale_found",
            Self::Cleanup => "cleanup",
            Self::RegistryBackoff => "registry_backoff",
            Self::RegistryRecovered => "registry_recovered",
            Self::DockerUnavailable => "docker_unavailable",
            Self::DockerRecovered => "docker_recovered",
            Self::StageHealed => "stage_healed",
        }
    }

    /// How people read it: "deploy failed", "stale found".
    pub fn label(self) -> &'static str {
        match self {
            Self::DeploySucceeded => "deploy succeeded",
            Self::DeployFailed => "deploy failed",
            Self::Rollback => "rollback",
            Self::UpdateAvailable => "update available",
            Self::StaleFound => "stale found",
            Self::Cleanup => "cleanup",
            Self::RegistryBackoff => "registry backoff",
            Self::RegistryRecovered => "registry recovered",
            Self::DockerUnavailable => "Docker unavailable",
            Self::DockerRecovered => "Docker recovered",
            Self::StageHealed => "stage healed",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventKind {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|v| v.as_str() == s).ok_or_else(|| {
            ParseError::new(format!(
                "unknown event kind '{s}': expected one of {}",
                Self::ALL.map(Self::as_str).join(", ")
            ))
        })
    }
}

/// An event about to be published. The bus stamps the time and, when persisted, the id.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub severity: Severity,
    pub source: Source,
    pub message: String,
    pub project_id: Option<i64>,
    pub stage_id: Option<i64>,
    pub instance_id: Option<i64>,
    pub details: serde_json::Map<String, serde_json::Value>,
    /// Persist even below `warn` (an `info` that belongs in the event log, such as a recovery or
    /// a cleanup). `warn` and `error` are always persisted.
    pub record: bool,
}

impl NewEvent {
    pub fn new(severity: Severity, source: Source, message: impl Into<String>) -> Self {
        Self {
            severity,
            source,
            message: message.into(),
            project_id: None,
            stage_id: None,
            instance_id: None,
            details: serde_json::Map::new(),
            record: false,
        }
    }

    pub fn info(source: Source, message: impl Into<String>) -> Self {
        Self::new(Severity::Info, source, message)
    }

    pub fn warn(source: Source, message: impl Into<String>) -> Self {
        Self::new(Severity::Warn, source, message)
    }

    pub fn error(source: Source, message: impl Into<String>) -> Self {
        Self::new(Severity::Error, source, message)
    }

    pub fn project(mut self, id: i64) -> Self {
        self.project_id = Some(id);
        self
    }

    pub fn stage(mut self, id: i64) -> Self {
        self.stage_id = Some(id);
        self
    }

    pub fn instance(mut self, id: i64) -> Self {
        self.instance_id = Some(id);
        self
    }

    pub fn detail(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    /// Marks the kind of fact this event reports (see [`EventKind`]).
    pub fn kind(self, kind: EventKind) -> Self {
        self.detail(EventKind::DETAIL_KEY, kind.as_str())
    }

    /// Keeps this event in the event log even though it is below `warn`.
    pub fn recorded(mut self) -> Self {
        self.record = true;
        self
    }

    /// Whether the bus writes this event to the event log (and so makes it replayable).
    pub fn is_persistent(&self) -> bool {
        self.record || self.severity >= Severity::Warn
    }
}

/// A published event. `id` is `None` for transient events, which are never stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    pub id: Option<i64>,
    #[serde(with = "crate::domain::time_format")]
    #[schema(value_type = String, format = DateTime)]
    pub ts: DateTime<Utc>,
    #[schema(value_type = String, example = "warn")]
    pub severity: Severity,
    #[schema(value_type = String, example = "poller")]
    pub source: Source,
    pub message: String,
    pub project_id: Option<i64>,
    pub stage_id: Option<i64>,
    pub instance_id: Option<i64>,
    #[schema(value_type = Object)]
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl Event {
    /// The kind of fact this event reports, when it has one.
    pub fn kind(&self) -> Option<EventKind> {
        self.details
            .get(EventKind::DETAIL_KEY)
            .and_then(serde_json::Value::as_str)
            .and_then(|raw| raw.parse().ok())
    }
}

/// Which page of the event log to read. Empty lists mean "any".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventQuery {
    pub severities: Vec<Severity>,
    pub sources: Vec<Source>,
    pub project_id: Option<i64>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// 1-based.
    pub page: u32,
    /// 1..=500.
    pub per_page: u32,
}

impl Default for EventQuery {
    fn default() -> Self {
        Self {
            severities: Vec::new(),
            sources: Vec::new(),
            project_id: None,
            since: None,
            until: None,
            page: 1,
            per_page: 50,
        }
    }
}

impl EventQuery {
    pub const MAX_PER_PAGE: u32 = 500;
    /// The last page a query may ask for (a bound, so offsets stay far from overflowing).
    pub const MAX_PAGE: u32 = 1_000_000;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warn_and_error_are_persisted_and_info_only_when_recorded() {
        assert!(NewEvent::warn(Source::Poller, "x").is_persistent());
        assert!(NewEvent::error(Source::Poller, "x").is_persistent());
        assert!(!NewEvent::info(Source::Poller, "x").is_persistent());
        assert!(NewEvent::info(Source::Poller, "x").recorded().is_persistent());
    }

    #[test]
    fn severities_and_sources_round_trip_through_their_names() {
        for s in Severity::ALL {
            assert_eq!(s.as_str().parse::<Severity>().unwrap(), s);
        }
        for s in Source::ALL {
            assert_eq!(s.as_str().parse::<Source>().unwrap(), s);
        }
        assert!("fatal".parse::<Severity>().is_err());
        for k in EventKind::ALL {
            assert_eq!(k.as_str().parse::<EventKind>().unwrap(), k);
        }
    }

    #[test]
    fn an_event_kind_travels_in_the_details() {
        let new = NewEvent::error(Source::Deployer, "x").kind(EventKind::DeployFailed);
        assert_eq!(new.details["kind"], "deploy_failed");
        let event = Event {
            id: None,
            ts: Utc::now(),
            severity: new.severity,
            source: new.source,
            message: new.message,
            project_id: None,
            stage_id: None,
            instance_id: None,
            details: new.details,
        };
        assert_eq!(event.kind(), Some(EventKind::DeployFailed));
    }
}
