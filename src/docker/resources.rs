//! Volumes and networks on the engine (SPEC §3 "Workloads"), for [`DockerEngine`]: a project's
//! named volumes and its bridge network are created on first use with this installation's
//! labels, listed by label, and removed only when asked. Also how a container's mounts, restart
//! policy and networks are written in the engine's terms (pure, unit-tested here).
//!
//! The adapter's [`super::engine::ContainerEngine`] implementation calls these; they live apart
//! so the container operations and the resources around them each stay readable.

use std::collections::{BTreeMap, HashMap};

use bollard::models::{
    EndpointSettings, Mount as EngineMount, MountType, NetworkConnectRequest, NetworkCreateRequest,
    NetworkingConfig, RestartPolicy as EngineRestartPolicy, RestartPolicyNameEnum, VolumeCreateRequest,
};
use bollard::query_parameters::{ListVolumesOptionsBuilder, RemoveVolumeOptionsBuilder};

use super::engine::{CreateContainer, Mount, MountKind, labels};
use super::{DockerEngine, DockerError, Operation};
use crate::domain::workload::RestartPolicy;

impl DockerEngine {
    pub(super) async fn ensure_volume_named(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), DockerError> {
        let client = self.call(Operation::Volume)?;
        // Creating a volume that exists answers that volume, untouched (data and labels).
        client
            .create_volume(VolumeCreateRequest {
                name: Some(name.to_owned()),
                driver: Some("local".to_owned()),
                labels: Some(to_hash_map(labels)),
                ..Default::default()
            })
            .await
            .map_err(DockerError::from_bollard)?;
        Ok(())
    }

    pub(super) async fn remove_volume_named(&self, name: &str) -> Result<(), DockerError> {
        let client = self.call(Operation::Volume)?;
        client
            .remove_volume(
                name,
                Some(RemoveVolumeOptionsBuilder::default().force(false).build()),
            )
            .await
            .map_err(DockerError::from_bollard)
    }

    pub(super) async fn list_volumes_labelled(
        &self,
        installation_id: &str,
        (key, value): (&str, &str),
    ) -> Result<Vec<String>, DockerError> {
        let client = self.call(Operation::Volume)?;
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![
                format!("{}={installation_id}", labels::INSTALLATION),
                format!("{key}={value}"),
            ],
        )]);
        let list = client
            .list_volumes(Some(
                ListVolumesOptionsBuilder::default().filters(&filters).build(),
            ))
            .await
            .map_err(DockerError::from_bollard)?;
        let mut names: Vec<String> = list
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.name)
            .collect();
        names.sort();
        Ok(names)
    }

    pub(super) async fn ensure_network_named(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), DockerError> {
        let _creating = self.network_creation.lock().await;
        if self.network_labels_of(name).await?.is_some() {
            return Ok(());
        }
        let client = self.call(Operation::Network)?;
        let created = client
            .create_network(NetworkCreateRequest {
                name: name.to_owned(),
                driver: Some("bridge".to_owned()),
                labels: Some(to_hash_map(labels)),
                ..Default::default()
            })
            .await
            .map_err(network_create_error);
        match created {
            // Created meanwhile by another process (newer engines refuse a duplicate name).
            Ok(_) | Err(DockerError::Conflict { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub(super) async fn network_labels_of(
        &self,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, DockerError> {
        let client = self.call(Operation::Network)?;
        match client
            .inspect_network(name, None)
            .await
            .map_err(DockerError::from_bollard)
        {
            // The engine also finds a network by an id or a prefix of one: only the name counts.
            Ok(network) if network.name.as_deref() == Some(name) => {
                Ok(Some(network.labels.unwrap_or_default().into_iter().collect()))
            }
            Ok(_) | Err(DockerError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(super) async fn remove_network_named(&self, name: &str) -> Result<(), DockerError> {
        let client = self.call(Operation::Network)?;
        client
            .remove_network(name)
            .await
            .map_err(DockerError::from_bollard)
    }

    /// Connects a created container to the spec's extra networks (API 1.41 creates a container
    /// on one network only).
    pub(super) async fn connect_extra_networks(
        &self,
        container_id: &str,
        spec: &CreateContainer,
    ) -> Result<(), DockerError> {
        for network in &spec.extra_networks {
            let client = self.call(Operation::Network)?;
            client
                .connect_network(
                    network,
                    NetworkConnectRequest {
                        container: container_id.to_owned(),
                        endpoint_config: Some(EndpointSettings::default()),
                    },
                )
                .await
                .map_err(DockerError::from_bollard)?;
        }
        Ok(())
    }
}

fn to_hash_map(labels: &BTreeMap<String, String>) -> HashMap<String, String> {
    labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// The spec's mounts as the engine takes them.
pub(super) fn engine_mounts(mounts: &[Mount]) -> Option<Vec<EngineMount>> {
    (!mounts.is_empty()).then(|| {
        mounts
            .iter()
            .map(|mount| EngineMount {
                target: Some(mount.target.clone()),
                source: Some(mount.source.clone()),
                typ: Some(match mount.kind {
                    MountKind::Volume => MountType::VOLUME,
                    MountKind::Bind => MountType::BIND,
                }),
                read_only: Some(mount.read_only),
                ..Default::default()
            })
            .collect()
    })
}

pub(super) fn engine_restart_policy(policy: RestartPolicy) -> EngineRestartPolicy {
    let (name, maximum_retry_count) = match policy {
        RestartPolicy::No => (RestartPolicyNameEnum::NO, None),
        RestartPolicy::OnFailure { max_retries } => {
            (RestartPolicyNameEnum::ON_FAILURE, max_retries.map(i64::from))
        }
        RestartPolicy::Always => (RestartPolicyNameEnum::ALWAYS, None),
        RestartPolicy::UnlessStopped => (RestartPolicyNameEnum::UNLESS_STOPPED, None),
    };
    EngineRestartPolicy {
        name: Some(name),
        maximum_retry_count,
    }
}

/// The network a container is created on (its network mode) and its endpoint there, with the
/// aliases it answers to.
pub(super) fn engine_network(spec: &CreateContainer) -> (Option<String>, Option<NetworkingConfig>) {
    let Some(network) = &spec.network else {
        return (None, None);
    };
    let endpoint = EndpointSettings {
        aliases: (!network.aliases.is_empty()).then(|| network.aliases.clone()),
        ..Default::default()
    };
    (
        Some(network.name.clone()),
        Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(network.name.clone(), endpoint)])),
        }),
    )
}

/// A failed network creation as a `DockerError`. A 404 here is no missing object: the engine
/// names what it lacks — most often a free address pool, once its default pools are all taken
/// by other networks — so its message is kept instead of a bare "not found".
fn network_create_error(error: bollard::errors::Error) -> DockerError {
    match error {
        e @ bollard::errors::Error::DockerResponseServerError { status_code: 404, .. } => {
            DockerError::Engine(e)
        }
        e => DockerError::from_bollard(e),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_network_the_engine_cannot_create_says_why_instead_of_not_found() {
        let error = network_create_error(bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            message: "could not find an available, non-overlapping IPv4 address pool".into(),
        });
        let text = error.to_string();
        assert!(text.contains("address pool"), "{text}");
        assert!(!matches!(error, DockerError::NotFound));
        let conflict = network_create_error(bollard::errors::Error::DockerResponseServerError {
            status_code: 409,
            message: "network with name dw-shop already exists".into(),
        });
        assert!(matches!(conflict, DockerError::Conflict { .. }), "{conflict:?}");
    }

    use super::*;

    #[test]
    fn mounts_keep_their_kind_source_target_and_mode() {
        let mounts = engine_mounts(&[
            Mount {
                kind: MountKind::Volume,
                source: "dw-shop-data".into(),
                target: "/data".into(),
                read_only: false,
            },
            Mount {
                kind: MountKind::Bind,
                source: "/srv/shop".into(),
                target: "/srv".into(),
                read_only: true,
            },
        ])
        .unwrap();
        assert_eq!(mounts[0].typ, Some(MountType::VOLUME));
        assert_eq!(mounts[0].source.as_deref(), Some("dw-shop-data"));
        assert_eq!(mounts[1].typ, Some(MountType::BIND));
        assert_eq!(mounts[1].read_only, Some(true));
        assert!(engine_mounts(&[]).is_none());
    }

    #[test]
    fn restart_policies_map_onto_the_engines_names() {
        let on_failure = engine_restart_policy(RestartPolicy::OnFailure { max_retries: Some(3) });
        assert_eq!(on_failure.name, Some(RestartPolicyNameEnum::ON_FAILURE));
        assert_eq!(on_failure.maximum_retry_count, Some(3));
        assert_eq!(
            engine_restart_policy(RestartPolicy::default()).name,
            Some(RestartPolicyNameEnum::UNLESS_STOPPED)
        );
        assert_eq!(
            engine_restart_policy(RestartPolicy::No).name,
            Some(RestartPolicyNameEnum::NO)
        );
    }
}
