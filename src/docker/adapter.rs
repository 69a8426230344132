//! The bollard implementation of [`ContainerEngine`] for [`DockerEngine`], coded against Docker
//! API 1.41 (Debian's engine 20.10), and the pure conversions from the engine's JSON models to
//! the trait's plain types. Every request goes through `DockerEngine::call`, which counts it, and
//! every error through `DockerError::from_bollard`, which sorts out not-found, conflicts and an
//! unreachable engine.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bollard::auth::DockerCredentials;
use bollard::container::LogOutput;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, ContainerSummaryStateEnum,
    EventMessage, EventMessageTypeEnum, HealthStatusEnum, HostConfig, PortBinding, PortMap,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, EventsOptionsBuilder, InspectContainerOptions,
    ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    RemoveImageOptionsBuilder, RestartContainerOptionsBuilder, StartContainerOptions,
    StopContainerOptionsBuilder,
};
use chrono::{DateTime, Datelike, Utc};
use futures::stream::{self, BoxStream};
use futures::{StreamExt, TryStreamExt};

use super::engine::{
    ContainerDetails, ContainerEngine, ContainerState, ContainerSummary, CreateContainer, EngineEvent,
    EngineEventKind, HealthState, LogLine, PullAuth, labels,
};
use super::logs::{LineSplitter, lines_of};
use super::resources::{engine_mounts, engine_network, engine_restart_policy};
use super::{DockerEngine, DockerError, Operation, REQUEST_TIMEOUT};

/// The only host address containers are published on: the reverse proxy on this host is the
/// way in, never the container's port itself.
const PUBLISH_IP: &str = "127.0.0.1";

#[async_trait::async_trait]
impl ContainerEngine for DockerEngine {
    async fn ping(&self, timeout: Duration) -> Result<(), DockerError> {
        // The inherent method (used by `/readyz` without the trait in scope).
        DockerEngine::ping(self, timeout).await
    }

    async fn pull(&self, image: &str, auth: Option<&PullAuth>) -> Result<(), DockerError> {
        let client = self.call(Operation::Pull)?;
        let options = CreateImageOptionsBuilder::default()
            .from_image(&pull_reference(image))
            .build();
        let credentials = auth.map(|auth| DockerCredentials {
            username: Some(auth.username.clone()),
            password: Some(auth.password.clone()),
            serveraddress: Some(auth.server.clone()),
            ..Default::default()
        });
        // The engine answers with a progress stream; a failure half-way (a layer that cannot be
        // fetched) is an error item in it, which bollard turns into an `Err`.
        let mut progress = client.create_image(Some(options), None, credentials);
        while let Some(item) = progress.next().await {
            item.map_err(DockerError::from_bollard)?;
        }
        Ok(())
    }

    async fn create(&self, spec: &CreateContainer) -> Result<String, DockerError> {
        let client = self.call(Operation::Create)?;
        let port = spec.container_port.map(|port| format!("{port}/tcp"));
        // An empty host port lets the engine choose a free one; `inspect` and `list_managed`
        // read it back.
        let bindings: Option<PortMap> = port.as_ref().map(|port| {
            HashMap::from([(
                port.clone(),
                Some(vec![PortBinding {
                    host_ip: Some(PUBLISH_IP.to_owned()),
                    host_port: Some(String::new()),
                }]),
            )])
        });
        let (network_mode, networking_config) = engine_network(spec);
        let host_config = HostConfig {
            port_bindings: bindings,
            restart_policy: Some(engine_restart_policy(spec.restart_policy)),
            memory: spec.memory_bytes,
            nano_cpus: spec.nano_cpus,
            mounts: engine_mounts(&spec.mounts),
            network_mode,
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            labels: Some(spec.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
            env: Some(spec.env.clone()),
            cmd: spec.command.clone(),
            exposed_ports: port.map(|port| vec![port]),
            user: spec.user.clone(),
            stop_signal: Some(spec.stop_signal.clone()),
            stop_timeout: Some(i64::from(spec.stop_timeout_seconds)),
            host_config: Some(host_config),
            networking_config,
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default().name(&spec.name).build();
        let created = client
            .create_container(Some(options), body)
            .await
            .map_err(DockerError::from_bollard)?;
        if let Err(e) = self.connect_extra_networks(&created.id, spec).await {
            // Never leave a half-made container behind: the caller records none.
            let _ = self.remove(&created.id).await;
            return Err(e);
        }
        Ok(created.id)
    }

    async fn start(&self, id: &str) -> Result<(), DockerError> {
        let client = self.call(Operation::Start)?;
        // Already started answers 304, which bollard counts as success.
        client
            .start_container(id, None::<StartContainerOptions>)
            .await
            .map_err(DockerError::from_bollard)
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<(), DockerError> {
        // The engine answers only once the container is down, after up to `grace`.
        let client = self.call(Operation::Stop)?.with_timeout(REQUEST_TIMEOUT + grace);
        let options = StopContainerOptionsBuilder::default()
            .t(grace_seconds(grace))
            .build();
        // Already stopped answers 304: success.
        client
            .stop_container(id, Some(options))
            .await
            .map_err(DockerError::from_bollard)
    }

    async fn restart(&self, id: &str, grace: Duration) -> Result<(), DockerError> {
        let client = self
            .call(Operation::Restart)?
            .with_timeout(REQUEST_TIMEOUT + grace);
        let options = RestartContainerOptionsBuilder::default()
            .t(grace_seconds(grace))
            .build();
        client
            .restart_container(id, Some(options))
            .await
            .map_err(DockerError::from_bollard)
    }

    async fn remove(&self, id: &str) -> Result<(), DockerError> {
        let client = self.call(Operation::Remove)?;
        // `v`: anonymous volumes die with the container; named ones are the user's business.
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        client
            .remove_container(id, Some(options))
            .await
            .map_err(DockerError::from_bollard)
    }

    async fn inspect(&self, id: &str) -> Result<ContainerDetails, DockerError> {
        let client = self.call(Operation::Inspect)?;
        let response = client
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
            .map_err(DockerError::from_bollard)?;
        Ok(container_details(response))
    }

    async fn list_managed(&self, installation_id: &str) -> Result<Vec<ContainerSummary>, DockerError> {
        let client = self.call(Operation::List)?;
        let filters = HashMap::from([("label", vec![installation_label(installation_id)])]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let containers = client
            .list_containers(Some(options))
            .await
            .map_err(DockerError::from_bollard)?;
        Ok(containers.into_iter().filter_map(container_summary).collect())
    }

    async fn logs(&self, id: &str, tail: u32) -> Result<Vec<LogLine>, DockerError> {
        let client = self.call(Operation::Logs)?;
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .timestamps(true)
            .tail(&tail.to_string())
            .build();
        let frames: Vec<LogOutput> = client
            .logs(id, Some(options))
            .try_collect()
            .await
            .map_err(DockerError::from_bollard)?;
        Ok(lines_of(frames))
    }

    fn follow_logs(&self, id: &str, tail: u32) -> BoxStream<'static, Result<LogLine, DockerError>> {
        let client = match self.call(Operation::Logs) {
            Ok(client) => client,
            Err(error) => return stream::once(async move { Err(error) }).boxed(),
        };
        let options = LogsOptionsBuilder::default()
            .follow(true)
            .stdout(true)
            .stderr(true)
            .timestamps(true)
            .tail(&tail.to_string())
            .build();
        let frames = client.logs(id, Some(options)).boxed();
        // Each frame yields the lines it finishes; the end of the stream flushes the rest.
        stream::unfold(Some((frames, LineSplitter::default())), |state| async move {
            let (mut frames, mut splitter) = state?;
            loop {
                match frames.next().await {
                    Some(Ok(frame)) => {
                        let lines = splitter.push(frame);
                        if !lines.is_empty() {
                            let batch = lines.into_iter().map(Ok).collect::<Vec<_>>();
                            return Some((stream::iter(batch), Some((frames, splitter))));
                        }
                    }
                    Some(Err(error)) => {
                        let batch = vec![Err(DockerError::from_bollard(error))];
                        return Some((stream::iter(batch), None));
                    }
                    None => {
                        let batch = splitter.finish().into_iter().map(Ok).collect::<Vec<_>>();
                        return Some((stream::iter(batch), None));
                    }
                }
            }
        })
        .flatten()
        .boxed()
    }

    /// `Ok(true)`: the image is gone from the engine — removed now, or already absent (a 404
    /// means someone else removed it, and the goal of removing it is met). `Ok(false)`: the
    /// engine keeps it because a container (running or stopped) still uses it, or another
    /// repository name still refers to it (both are 409 without `force`).
    async fn remove_image_if_unused(&self, image_id: &str) -> Result<bool, DockerError> {
        let client = self.call(Operation::RemoveImage)?;
        let options = RemoveImageOptionsBuilder::default().force(false).build();
        match client.remove_image(image_id, Some(options), None).await {
            Ok(_) => Ok(true),
            Err(error) => match DockerError::from_bollard(error) {
                DockerError::NotFound => Ok(true),
                DockerError::Conflict { .. } => Ok(false),
                other => Err(other),
            },
        }
    }

    /// The stream starts at this call: the engine is asked for events `since` now, so events
    /// between this call and the first poll (when the request is actually sent) are replayed,
    /// not lost. It yields one error and ends when the engine goes away (or closes the stream);
    /// the caller reconnects and reconciles.
    fn events(&self, installation_id: &str) -> BoxStream<'static, Result<EngineEvent, DockerError>> {
        let client = match self.call(Operation::Events) {
            Ok(client) => client,
            Err(error) => return stream::once(async move { Err(error) }).boxed(),
        };
        let filters = HashMap::from([
            ("type", vec!["container".to_owned()]),
            ("label", vec![installation_label(installation_id)]),
        ]);
        let since = Utc::now();
        let since = format!("{}.{:09}", since.timestamp(), since.timestamp_subsec_nanos());
        let options = EventsOptionsBuilder::default()
            .since(&since)
            .filters(&filters)
            .build();
        let messages = client.events(Some(options)).boxed();
        stream::unfold(Some(messages), |messages| async move {
            let mut messages = messages?;
            loop {
                match messages.next().await {
                    Some(Ok(message)) => {
                        if let Some(event) = engine_event(message) {
                            return Some((Ok(event), Some(messages)));
                        }
                    }
                    Some(Err(error)) => return Some((Err(DockerError::from_bollard(error)), None)),
                    // The engine never ends an open-ended stream on its own: it went away.
                    None => {
                        let error = DockerError::Unavailable {
                            message: "the engine closed the event stream".to_owned(),
                        };
                        return Some((Err(error), None));
                    }
                }
            }
        })
        .boxed()
    }

    fn api_calls(&self) -> BTreeMap<&'static str, u64> {
        self.api_call_counts()
    }

    async fn ensure_volume(&self, name: &str, labels: &BTreeMap<String, String>) -> Result<(), DockerError> {
        self.ensure_volume_named(name, labels).await
    }

    async fn remove_volume(&self, name: &str) -> Result<(), DockerError> {
        self.remove_volume_named(name).await
    }

    async fn list_volumes(
        &self,
        installation_id: &str,
        label: (&str, &str),
    ) -> Result<Vec<String>, DockerError> {
        self.list_volumes_labelled(installation_id, label).await
    }

    async fn ensure_network(&self, name: &str, labels: &BTreeMap<String, String>) -> Result<(), DockerError> {
        self.ensure_network_named(name, labels).await
    }

    async fn network_labels(&self, name: &str) -> Result<Option<BTreeMap<String, String>>, DockerError> {
        self.network_labels_of(name).await
    }

    async fn remove_network(&self, name: &str) -> Result<(), DockerError> {
        self.remove_network_named(name).await
    }
}

fn installation_label(installation_id: &str) -> String {
    format!("{}={installation_id}", labels::INSTALLATION)
}

/// A reference the engine pulls exactly one image for: with neither tag nor digest the engine
/// would pull every tag of the repository, so `:latest` is made explicit as `docker pull` does.
fn pull_reference(image: &str) -> String {
    let last_segment = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') || last_segment.contains(':') {
        image.to_owned()
    } else {
        format!("{image}:latest")
    }
}

/// The engine takes whole seconds; a partial second rounds up so the grace is never shortened.
fn grace_seconds(grace: Duration) -> i32 {
    let seconds = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
    i32::try_from(seconds).unwrap_or(i32::MAX)
}

fn state_from_inspect(status: Option<ContainerStateStatusEnum>) -> ContainerState {
    use ContainerStateStatusEnum as S;
    match status {
        Some(S::CREATED) => ContainerState::Created,
        // `stopping` (newer engines) still has processes running.
        Some(S::RUNNING | S::STOPPING) => ContainerState::Running,
        Some(S::PAUSED) => ContainerState::Paused,
        Some(S::RESTARTING) => ContainerState::Restarting,
        Some(S::REMOVING) => ContainerState::Removing,
        Some(S::EXITED) => ContainerState::Exited,
        Some(S::DEAD) => ContainerState::Dead,
        Some(S::EMPTY) | None => ContainerState::Unknown,
    }
}

fn state_from_list(state: Option<ContainerSummaryStateEnum>) -> ContainerState {
    use ContainerSummaryStateEnum as S;
    match state {
        Some(S::CREATED) => ContainerState::Created,
        Some(S::RUNNING | S::STOPPING) => ContainerState::Running,
        Some(S::PAUSED) => ContainerState::Paused,
        Some(S::RESTARTING) => ContainerState::Restarting,
        Some(S::REMOVING) => ContainerState::Removing,
        Some(S::EXITED) => ContainerState::Exited,
        Some(S::DEAD) => ContainerState::Dead,
        Some(S::EMPTY) | None => ContainerState::Unknown,
    }
}

/// An exit code is only meaningful once the container has exited at least once; a running or
/// never-started container reports 0, which must not read as "exited successfully".
fn has_exited(state: ContainerState) -> bool {
    matches!(
        state,
        ContainerState::Exited | ContainerState::Dead | ContainerState::Restarting
    )
}

/// The exit code in the list's status text: `Exited (137) 5 minutes ago`, `Restarting (1) 2
/// seconds ago`. Other states (`Up 3 minutes`, `Created`) carry none.
fn exit_code_from_status(status: &str) -> Option<i64> {
    let rest = status
        .strip_prefix("Exited (")
        .or_else(|| status.strip_prefix("Restarting ("))?;
    rest.split_once(')')?.0.parse().ok()
}

/// The engine's RFC 3339 times; it says "never" with the zero time `0001-01-01T00:00:00Z`.
fn engine_time(text: Option<&str>) -> Option<DateTime<Utc>> {
    let time = DateTime::parse_from_rfc3339(text?).ok()?.with_timezone(&Utc);
    (time.year() > 1).then_some(time)
}

/// The host port published on 127.0.0.1, from inspect's port map. docker-watcher publishes one
/// port; with several, the lowest container port wins so the answer is stable.
fn published_port(ports: &PortMap) -> Option<u16> {
    let mut keys: Vec<&String> = ports.keys().filter(|key| key.ends_with("/tcp")).collect();
    keys.sort_by_key(|key| key.split('/').next().and_then(|p| p.parse::<u16>().ok()));
    keys.into_iter().find_map(|key| {
        ports.get(key)?.as_ref()?.iter().find_map(|binding| {
            (binding.host_ip.as_deref() == Some(PUBLISH_IP))
                .then(|| binding.host_port.as_deref()?.parse().ok())
                .flatten()
        })
    })
}

fn container_name(name: &str) -> String {
    name.trim_start_matches('/').to_owned()
}

fn container_details(response: ContainerInspectResponse) -> ContainerDetails {
    let state = response.state.unwrap_or_default();
    let container_state = state_from_inspect(state.status);
    let health = state
        .health
        .and_then(|health| health.status)
        .and_then(|status| match status {
            HealthStatusEnum::STARTING => Some(HealthState::Starting),
            HealthStatusEnum::HEALTHY => Some(HealthState::Healthy),
            HealthStatusEnum::UNHEALTHY => Some(HealthState::Unhealthy),
            HealthStatusEnum::NONE | HealthStatusEnum::EMPTY => None,
        });
    let host_port = response
        .network_settings
        .and_then(|settings| settings.ports)
        .and_then(|ports| published_port(&ports));
    ContainerDetails {
        id: response.id.unwrap_or_default(),
        name: container_name(response.name.as_deref().unwrap_or_default()),
        labels: response
            .config
            .and_then(|config| config.labels)
            .unwrap_or_default()
            .into_iter()
            .collect(),
        state: container_state,
        exit_code: state.exit_code.filter(|_| has_exited(container_state)),
        oom_killed: state.oom_killed.unwrap_or(false),
        health,
        host_port,
        started_at: engine_time(state.started_at.as_deref()),
        finished_at: engine_time(state.finished_at.as_deref()),
        image_id: response.image.unwrap_or_default(),
    }
}

/// One entry of the list call; `None` for an entry without an id (never seen, but the model
/// allows it, and an id-less container cannot be acted on).
fn container_summary(container: bollard::models::ContainerSummary) -> Option<ContainerSummary> {
    let id = container.id.filter(|id| !id.is_empty())?;
    let mut ports: Vec<_> = container
        .ports
        .unwrap_or_default()
        .into_iter()
        .filter(|port| port.ip.as_deref() == Some(PUBLISH_IP))
        .collect();
    ports.sort_by_key(|port| port.private_port);
    Some(ContainerSummary {
        id,
        name: container
            .names
            .and_then(|names| names.into_iter().next())
            .map(|name| container_name(&name))
            .unwrap_or_default(),
        labels: container.labels.unwrap_or_default().into_iter().collect(),
        state: state_from_list(container.state),
        exit_code: container.status.as_deref().and_then(exit_code_from_status),
        host_port: ports.into_iter().find_map(|port| port.public_port),
        image_id: container.image_id.unwrap_or_default(),
    })
}

/// Event attributes the engine adds next to the container's labels.
const ENGINE_ATTRIBUTES: [&str; 4] = ["name", "image", "exitCode", "signal"];

/// A container event in the trait's terms; `None` for actions docker-watcher does not follow
/// (`create`, `exec_start: …`, `attach`, …).
fn engine_event(message: EventMessage) -> Option<EngineEvent> {
    if message
        .typ
        .is_some_and(|typ| typ != EventMessageTypeEnum::CONTAINER)
    {
        return None;
    }
    let kind = match message.action.as_deref()? {
        "start" => EngineEventKind::Start,
        "die" => EngineEventKind::Die,
        "stop" => EngineEventKind::Stop,
        "kill" => EngineEventKind::Kill,
        "oom" => EngineEventKind::Oom,
        "destroy" => EngineEventKind::Destroy,
        action => match action.strip_prefix("health_status:").map(str::trim)? {
            "healthy" => EngineEventKind::HealthStatus(HealthState::Healthy),
            "unhealthy" => EngineEventKind::HealthStatus(HealthState::Unhealthy),
            "starting" => EngineEventKind::HealthStatus(HealthState::Starting),
            _ => return None,
        },
    };
    let actor = message.actor?;
    let container_id = actor.id.filter(|id| !id.is_empty())?;
    let mut attributes = actor.attributes.unwrap_or_default();
    let exit_code = attributes.get("exitCode").and_then(|code| code.parse().ok());
    for key in ENGINE_ATTRIBUTES {
        attributes.remove(key);
    }
    let time = message
        .time_nano
        .map(DateTime::from_timestamp_nanos)
        .or_else(|| {
            message
                .time
                .and_then(|seconds| DateTime::from_timestamp(seconds, 0))
        })
        // The engine always stamps its events; should one come without, "when it arrived" is
        // the closest truth and better than dropping the event.
        .unwrap_or_else(Utc::now);
    Some(EngineEvent {
        kind,
        container_id,
        labels: attributes.into_iter().collect(),
        exit_code,
        time,
    })
}

/// Log frames into lines. Without a TTY each frame is one write of the container (one line with
/// the json-file driver); splitting anyway keeps a multi-line frame readable.
#[cfg(test)]
mod tests {
    use bollard::models::{ContainerState as EngineState, EventActor, Health, PortSummary};

    use super::*;

    #[test]
    fn the_exit_code_is_read_from_the_list_status_text() {
        assert_eq!(exit_code_from_status("Exited (137) 5 minutes ago"), Some(137));
        assert_eq!(
            exit_code_from_status("Exited (0) Less than a second ago"),
            Some(0)
        );
        assert_eq!(exit_code_from_status("Restarting (1) 2 seconds ago"), Some(1));
        assert_eq!(exit_code_from_status("Up 3 minutes"), None);
        assert_eq!(exit_code_from_status("Up 3 minutes (healthy)"), None);
        assert_eq!(exit_code_from_status("Created"), None);
        assert_eq!(exit_code_from_status("Exited (x) now"), None);
        assert_eq!(exit_code_from_status(""), None);
    }

    #[test]
    fn the_zero_time_means_never() {
        assert_eq!(engine_time(Some("0001-01-01T00:00:00Z")), None);
        assert_eq!(engine_time(None), None);
        assert_eq!(engine_time(Some("yesterday")), None);
        let time = engine_time(Some("2024-05-06T07:08:09.123456789Z")).unwrap();
        assert_eq!(time.timestamp(), 1_714_979_289);
        assert_eq!(time.timestamp_subsec_nanos(), 123_456_789);
    }

    #[test]
    fn a_reference_without_tag_or_digest_pulls_latest_only() {
        assert_eq!(pull_reference("127.0.0.1:5000/app"), "127.0.0.1:5000/app:latest");
        assert_eq!(pull_reference("127.0.0.1:5000/app:v1"), "127.0.0.1:5000/app:v1");
        let pinned = format!("127.0.0.1:5000/app@sha256:{}", "a".repeat(64));
        assert_eq!(pull_reference(&pinned), pinned);
        assert_eq!(pull_reference("nginx"), "nginx:latest");
    }

    #[test]
    fn a_partial_second_of_grace_rounds_up() {
        assert_eq!(grace_seconds(Duration::from_secs(10)), 10);
        assert_eq!(grace_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(grace_seconds(Duration::ZERO), 0);
        assert_eq!(grace_seconds(Duration::from_secs(u64::MAX)), i32::MAX);
    }

    fn binding(ip: &str, port: &str) -> PortBinding {
        PortBinding {
            host_ip: Some(ip.to_owned()),
            host_port: Some(port.to_owned()),
        }
    }

    #[test]
    fn the_published_port_is_the_one_on_loopback() {
        let ports: PortMap = HashMap::from([
            (
                "8080/tcp".to_owned(),
                Some(vec![binding("0.0.0.0", "1111"), binding("127.0.0.1", "49153")]),
            ),
            ("9090/udp".to_owned(), Some(vec![binding("127.0.0.1", "2222")])),
            ("7070/tcp".to_owned(), None),
        ]);
        assert_eq!(published_port(&ports), Some(49153));
        assert_eq!(published_port(&PortMap::new()), None);
    }

    #[test]
    fn inspect_of_an_exited_container_keeps_its_exit_code_and_times() {
        let response = ContainerInspectResponse {
            id: Some("abc".to_owned()),
            name: Some("/dw-web-prod-7".to_owned()),
            image: Some("sha256:img".to_owned()),
            state: Some(EngineState {
                status: Some(ContainerStateStatusEnum::EXITED),
                exit_code: Some(137),
                oom_killed: Some(true),
                started_at: Some("2024-05-06T07:08:09Z".to_owned()),
                finished_at: Some("2024-05-06T08:08:09Z".to_owned()),
                health: Some(Health {
                    status: Some(HealthStatusEnum::UNHEALTHY),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let details = container_details(response);
        assert_eq!(details.name, "dw-web-prod-7");
        assert_eq!(details.state, ContainerState::Exited);
        assert_eq!(details.exit_code, Some(137));
        assert!(details.oom_killed);
        assert_eq!(details.health, Some(HealthState::Unhealthy));
        assert!(details.started_at.is_some() && details.finished_at.is_some());
        assert_eq!(details.host_port, None);
    }

    #[test]
    fn inspect_of_a_fresh_container_has_no_exit_code_nor_times() {
        let response = ContainerInspectResponse {
            id: Some("abc".to_owned()),
            state: Some(EngineState {
                status: Some(ContainerStateStatusEnum::CREATED),
                exit_code: Some(0),
                started_at: Some("0001-01-01T00:00:00Z".to_owned()),
                finished_at: Some("0001-01-01T00:00:00Z".to_owned()),
                health: Some(Health {
                    status: Some(HealthStatusEnum::NONE),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let details = container_details(response);
        assert_eq!(details.state, ContainerState::Created);
        assert_eq!(details.exit_code, None);
        assert_eq!(details.health, None);
        assert_eq!((details.started_at, details.finished_at), (None, None));
    }

    #[test]
    fn a_list_entry_maps_state_port_and_exit_code() {
        let entry = bollard::models::ContainerSummary {
            id: Some("abc".to_owned()),
            names: Some(vec!["/dw-web-prod-7".to_owned()]),
            image_id: Some("sha256:img".to_owned()),
            labels: Some(HashMap::from([(labels::INSTANCE.to_owned(), "7".to_owned())])),
            state: Some(ContainerSummaryStateEnum::EXITED),
            status: Some("Exited (2) 3 hours ago".to_owned()),
            ports: Some(vec![PortSummary {
                ip: Some("127.0.0.1".to_owned()),
                private_port: 8080,
                public_port: Some(49154),
                typ: None,
            }]),
            ..Default::default()
        };
        let summary = container_summary(entry).unwrap();
        assert_eq!(summary.name, "dw-web-prod-7");
        assert_eq!(summary.state, ContainerState::Exited);
        assert_eq!(summary.exit_code, Some(2));
        assert_eq!(summary.host_port, Some(49154));
        assert_eq!(summary.instance_id(), Some(7));
        assert_eq!(container_summary(Default::default()), None);
    }

    fn message(action: &str, attributes: &[(&str, &str)]) -> EventMessage {
        EventMessage {
            typ: Some(EventMessageTypeEnum::CONTAINER),
            action: Some(action.to_owned()),
            actor: Some(EventActor {
                id: Some("abc".to_owned()),
                attributes: Some(
                    attributes
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
            }),
            time: Some(1_714_979_289),
            time_nano: Some(1_714_979_289_123_456_789),
            ..Default::default()
        }
    }

    #[test]
    fn a_die_event_carries_the_exit_code_and_the_labels_only() {
        let event = engine_event(message(
            "die",
            &[
                ("exitCode", "137"),
                ("name", "dw-web-prod-7"),
                ("image", "app@sha256:x"),
                (labels::INSTANCE, "7"),
            ],
        ))
        .unwrap();
        assert_eq!(event.kind, EngineEventKind::Die);
        assert_eq!(event.container_id, "abc");
        assert_eq!(event.exit_code, Some(137));
        assert_eq!(
            event.labels,
            BTreeMap::from([(labels::INSTANCE.to_owned(), "7".to_owned())])
        );
        assert_eq!(event.time.timestamp_subsec_nanos(), 123_456_789);
    }

    #[test]
    fn health_events_are_mapped_and_unknown_actions_skipped() {
        let kind = |action: &str| engine_event(message(action, &[])).map(|event| event.kind);
        assert_eq!(
            kind("health_status: healthy"),
            Some(EngineEventKind::HealthStatus(HealthState::Healthy))
        );
        assert_eq!(
            kind("health_status: unhealthy"),
            Some(EngineEventKind::HealthStatus(HealthState::Unhealthy))
        );
        assert_eq!(
            kind("health_status: starting"),
            Some(EngineEventKind::HealthStatus(HealthState::Starting))
        );
        assert_eq!(kind("oom"), Some(EngineEventKind::Oom));
        assert_eq!(kind("kill"), Some(EngineEventKind::Kill));
        assert_eq!(kind("stop"), Some(EngineEventKind::Stop));
        assert_eq!(kind("destroy"), Some(EngineEventKind::Destroy));
        assert_eq!(kind("start"), Some(EngineEventKind::Start));
        assert_eq!(kind("create"), None);
        assert_eq!(kind("exec_start: sh -c true"), None);
        assert_eq!(kind("health_status: bogus"), None);
    }
}
