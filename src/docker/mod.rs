//! The Docker Engine adapter: the only module that talks to the engine (through bollard). It
//! connects to `DOCKER_HOST` or the default socket and answers in domain terms; it knows nothing
//! of the store, registries or HTTP handlers.
//!
//! # Layout
//! - this file: [`DockerEngine`] (lazy connection, API-call counters), [`DockerError`] and the
//!   mapping of bollard's errors onto the variants callers branch on;
//! - [`engine`]: the [`engine::ContainerEngine`] trait workflows hold, and its plain types;
//! - `adapter`: the bollard implementation of that trait and the pure conversions from the
//!   engine's JSON models (unit-tested there);
//! - `resources`: volumes and networks — creating them once, listing, removing — and how a
//!   container's mounts and networks are written for the engine.

mod adapter;
pub mod engine;
mod logs;
mod resources;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bollard::Docker;

/// What went wrong talking to the engine. Callers branch on `NotFound`, `Conflict` and
/// `Unavailable` (see [`DockerError::is_unavailable`]); everything else is a failure to report.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The configured address cannot name a Docker engine (unknown scheme). Only returned by
    /// [`DockerEngine::connect`]: a reachable-or-not question is `Unavailable`, asked per request.
    #[error("cannot connect to the Docker engine at {host}: {source}")]
    Connect {
        host: String,
        source: bollard::errors::Error,
    },
    /// The engine did not answer `ping` within the given time.
    #[error("the Docker engine did not answer within {0:?}")]
    Timeout(Duration),
    /// The engine cannot be reached (no socket, connection refused or cut, no answer): the
    /// caller retries later, with backoff.
    #[error("the Docker engine is unavailable: {message}")]
    Unavailable { message: String },
    /// No such container (or image, for a pull: the registry has no such manifest).
    #[error("not found on the Docker engine")]
    NotFound,
    /// The engine refused because of the current state: a container name already in use, a
    /// removal already in progress, an image still in use.
    #[error("conflict on the Docker engine: {message}")]
    Conflict { message: String },
    /// Any other answer of the engine (a failed pull, a bad request, an error inside a stream).
    #[error("Docker engine error: {0}")]
    Engine(#[source] bollard::errors::Error),
}

impl DockerError {
    /// True when the engine could not be reached at all (as opposed to answering with an error):
    /// the sync loop reconnects with backoff on these.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable { .. } | Self::Timeout(_))
    }

    /// Maps a bollard error onto the variants callers branch on. Every call goes through here
    /// (`Engine` has no `From`), so a 404 can never slip through as a generic engine error.
    fn from_bollard(error: bollard::errors::Error) -> Self {
        use bollard::errors::Error as E;
        match error {
            E::DockerResponseServerError { status_code: 404, .. } => Self::NotFound,
            E::DockerResponseServerError {
                status_code: 409,
                message,
            } => Self::Conflict { message },
            // Transport failures: the engine is down, restarting, or its socket is gone.
            E::SocketNotFoundError(_)
            | E::IOError { .. }
            | E::HyperResponseError { .. }
            | E::HyperLegacyError { .. }
            | E::RequestTimeoutError => Self::Unavailable {
                message: error.to_string(),
            },
            other => Self::Engine(other),
        }
    }
}

/// The engine operations docker-watcher makes, named as `api_calls()` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    Ping,
    Pull,
    Create,
    Start,
    Stop,
    Restart,
    Remove,
    Inspect,
    List,
    Logs,
    RemoveImage,
    Events,
    Volume,
    Network,
}

impl Operation {
    const ALL: [Operation; 14] = [
        Operation::Ping,
        Operation::Pull,
        Operation::Create,
        Operation::Start,
        Operation::Stop,
        Operation::Restart,
        Operation::Remove,
        Operation::Inspect,
        Operation::List,
        Operation::Logs,
        Operation::RemoveImage,
        Operation::Events,
        Operation::Volume,
        Operation::Network,
    ];

    fn name(self) -> &'static str {
        match self {
            Operation::Ping => "ping",
            Operation::Pull => "pull",
            Operation::Create => "create",
            Operation::Start => "start",
            Operation::Stop => "stop",
            Operation::Restart => "restart",
            Operation::Remove => "remove",
            Operation::Inspect => "inspect",
            Operation::List => "list",
            Operation::Logs => "logs",
            Operation::RemoveImage => "remove_image",
            Operation::Events => "events",
            Operation::Volume => "volume",
            Operation::Network => "network",
        }
    }
}

/// One counter per [`Operation`], indexed by its position in `Operation::ALL`.
#[derive(Debug, Default)]
struct ApiCallCounters([AtomicU64; Operation::ALL.len()]);

/// A handle on the engine; cheap to clone. Clones share the connection and the counters.
#[derive(Debug, Clone)]
pub struct DockerEngine {
    /// Connected on first use: bollard refuses to build a client for a socket that does not
    /// exist yet, and docker-watcher must start (and report not-ready) while the engine is down.
    client: Arc<std::sync::Mutex<Option<Docker>>>,
    host: String,
    /// Every engine request, by operation: the stale scanner must prove it makes exactly one
    /// list call per scan, and metrics export them.
    calls: Arc<ApiCallCounters>,
    /// Held while a network is looked up and created: an engine of API 1.41 does not refuse a
    /// second network of the same name, so two deploys of one project must not both create it.
    network_creation: Arc<tokio::sync::Mutex<()>>,
}

/// How long a request may wait for the engine's answer headers (bollard's own default).
/// `stop` and `restart` wait longer: the engine answers only after the grace period.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

impl DockerEngine {
    /// Checks the address now (`unix://…`, an absolute socket path, `tcp://…`, `http://…`);
    /// connects on the first request.
    pub fn connect(docker_host: Option<&str>) -> Result<Self, DockerError> {
        let host = docker_host.unwrap_or("unix:///var/run/docker.sock").to_owned();
        let supported = ["unix://", "/", "tcp://", "http://"]
            .iter()
            .any(|scheme| host.starts_with(scheme));
        if !supported {
            return Err(DockerError::Connect {
                source: bollard::errors::Error::UnsupportedURISchemeError { uri: host.clone() },
                host,
            });
        }
        Ok(Self {
            client: Default::default(),
            host,
            calls: Default::default(),
            network_creation: Default::default(),
        })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// Counts one request of `operation` and hands out the client for it, connecting on first
    /// use. Counted even when the engine turns out to be unreachable: it is an attempt the
    /// caller made, and a retry loop should show up in the numbers.
    fn call(&self, operation: Operation) -> Result<Docker, DockerError> {
        // `ALL` lists the variants in declaration order, so the discriminant is the index.
        if let Some(counter) = self.calls.0.get(operation as usize) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        self.client()
    }

    /// The bollard client, connecting on first use.
    fn client(&self) -> Result<Docker, DockerError> {
        let mut slot = self.client.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = slot.as_ref() {
            return Ok(client.clone());
        }
        let host = &self.host;
        let timeout = REQUEST_TIMEOUT.as_secs();
        let client = if host.starts_with("unix://") || host.starts_with('/') {
            Docker::connect_with_unix(host, timeout, bollard::API_DEFAULT_VERSION)
        } else {
            Docker::connect_with_http(host, timeout, bollard::API_DEFAULT_VERSION)
        }
        .map_err(|source| DockerError::Unavailable {
            message: format!("cannot connect to {host}: {source}"),
        })?;
        *slot = Some(client.clone());
        Ok(client)
    }

    /// Engine requests made so far by every clone of this handle, by operation name (`"list"`,
    /// `"inspect"`, `"create"`, …); operations never called are left out. Served by
    /// `ContainerEngine::api_calls`.
    fn api_call_counts(&self) -> std::collections::BTreeMap<&'static str, u64> {
        Operation::ALL
            .iter()
            .zip(self.calls.0.iter())
            .map(|(operation, count)| (operation.name(), count.load(Ordering::Relaxed)))
            .filter(|(_, count)| *count > 0)
            .collect()
    }

    /// Pings the engine, failing after `timeout`.
    pub async fn ping(&self, timeout: Duration) -> Result<(), DockerError> {
        let client = self.call(Operation::Ping)?;
        tokio::time::timeout(timeout, client.ping())
            .await
            .map_err(|_| DockerError::Timeout(timeout))?
            .map_err(DockerError::from_bollard)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_has_its_own_counter() {
        for (index, operation) in Operation::ALL.iter().enumerate() {
            assert_eq!(*operation as usize, index, "{operation:?} is out of order in ALL");
        }
        let engine = DockerEngine::connect(Some("unix:///nonexistent/docker.sock")).unwrap();
        let _ = engine.call(Operation::List);
        let _ = engine.clone().call(Operation::List);
        let _ = engine.call(Operation::RemoveImage);
        assert_eq!(
            engine.api_call_counts(),
            std::collections::BTreeMap::from([("list", 2), ("remove_image", 1)])
        );
    }

    #[test]
    fn an_address_with_an_unknown_scheme_is_refused_at_once() {
        assert!(matches!(
            DockerEngine::connect(Some("ftp://engine")),
            Err(DockerError::Connect { .. })
        ));
        assert!(DockerEngine::connect(Some("tcp://127.0.0.1:2375")).is_ok());
        assert!(DockerEngine::connect(None).is_ok());
    }

    #[test]
    fn engine_answers_map_to_the_variants_callers_branch_on() {
        use bollard::errors::Error as E;
        let server = |status_code, message: &str| E::DockerResponseServerError {
            status_code,
            message: message.to_owned(),
        };
        assert!(matches!(
            DockerError::from_bollard(server(404, "No such container")),
            DockerError::NotFound
        ));
        assert!(matches!(
            DockerError::from_bollard(server(409, "name in use")),
            DockerError::Conflict { message } if message == "name in use"
        ));
        assert!(matches!(
            DockerError::from_bollard(server(500, "boom")),
            DockerError::Engine(_)
        ));
        assert!(DockerError::from_bollard(E::SocketNotFoundError("/x".into())).is_unavailable());
        assert!(DockerError::from_bollard(E::RequestTimeoutError).is_unavailable());
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(DockerError::from_bollard(E::IOError { err: refused }).is_unavailable());
    }
}
