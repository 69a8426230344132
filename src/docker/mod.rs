//! The Docker Engine adapter: the only module that talks to the engine (through bollard). It
//! connects to `DOCKER_HOST` or the default socket and answers in domain terms; it knows nothing
//! of the store, registries or HTTP handlers.

use std::time::Duration;

use bollard::Docker;

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("cannot connect to the Docker engine at {host}: {source}")]
    Connect {
        host: String,
        source: bollard::errors::Error,
    },
    #[error("the Docker engine did not answer within {0:?}")]
    Timeout(Duration),
    #[error("Docker engine error: {0}")]
    Engine(#[from] bollard::errors::Error),
}

/// A handle on the engine; cheap to clone.
#[derive(Debug, Clone)]
pub struct DockerEngine {
    /// Connected on first use: bollard refuses to build a client for a socket that does not
    /// exist yet, and docker-watcher must start (and report not-ready) while the engine is down.
    client: std::sync::Arc<std::sync::Mutex<Option<Docker>>>,
    host: String,
}

impl DockerEngine {
    /// Checks the address now; connects on the first request.
    pub fn connect(docker_host: Option<&str>) -> Result<Self, DockerError> {
        let host = docker_host.unwrap_or("unix:///var/run/docker.sock").to_owned();
        Ok(Self {
            client: Default::default(),
            host,
        })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// The bollard client, connecting on first use.
    fn client(&self) -> Result<Docker, DockerError> {
        let mut slot = self.client.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = slot.as_ref() {
            return Ok(client.clone());
        }
        let host = &self.host;
        let client = if host.starts_with("unix://") || host.starts_with('/') {
            let path = host.trim_start_matches("unix://");
            Docker::connect_with_unix(path, 120, bollard::API_DEFAULT_VERSION)
        } else if host.starts_with("tcp://") || host.starts_with("http://") {
            Docker::connect_with_http(host, 120, bollard::API_DEFAULT_VERSION)
        } else {
            Docker::connect_with_defaults()
        }
        .map_err(|source| DockerError::Connect {
            host: host.clone(),
            source,
        })?;
        *slot = Some(client.clone());
        Ok(client)
    }

    /// Pings the engine, failing after `timeout`.
    pub async fn ping(&self, timeout: Duration) -> Result<(), DockerError> {
        let client = self.client()?;
        tokio::time::timeout(timeout, client.ping())
            .await
            .map_err(|_| DockerError::Timeout(timeout))??;
        Ok(())
    }
}
