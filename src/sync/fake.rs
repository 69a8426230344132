//! An in-memory [`ContainerEngine`] for sync's unit tests: containers in a map, an event stream
//! the test drives, an engine that can go away and come back, and call counters. Stopping,
//! starting and removing emit the events the real engine emits, in its order.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use futures::channel::mpsc;
use futures::stream::BoxStream;

use crate::docker::DockerError;
use crate::docker::engine::{
    ContainerDetails, ContainerEngine, ContainerState, ContainerSummary, CreateContainer, EngineEvent,
    EngineEventKind, LogLine, PullAuth, labels,
};

#[derive(Debug, Default)]
struct State {
    containers: BTreeMap<String, ContainerSummary>,
    down: bool,
    subscribers: Vec<mpsc::UnboundedSender<Result<EngineEvent, DockerError>>>,
    calls: BTreeMap<&'static str, u64>,
}

#[derive(Debug)]
pub(crate) struct FakeEngine {
    installation_id: String,
    state: Mutex<State>,
}

impl FakeEngine {
    pub(crate) fn new(installation_id: &str) -> Self {
        Self {
            installation_id: installation_id.to_owned(),
            state: Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn count(&self, call: &'static str) {
        *self.state().calls.entry(call).or_default() += 1;
    }

    fn check_up(&self) -> Result<(), DockerError> {
        if self.state().down {
            return Err(DockerError::Unavailable {
                message: "fake engine is down".into(),
            });
        }
        Ok(())
    }

    /// Adds a container of this installation, for `instance` (no instance label when `None`).
    pub(crate) fn add(&self, id: &str, instance: Option<i64>, state: ContainerState, exit_code: Option<i64>) {
        let mut container_labels = BTreeMap::from([
            (labels::MANAGED.to_owned(), "true".to_owned()),
            (labels::INSTALLATION.to_owned(), self.installation_id.clone()),
        ]);
        if let Some(instance) = instance {
            container_labels.insert(labels::INSTANCE.to_owned(), instance.to_string());
        }
        let container = ContainerSummary {
            id: id.to_owned(),
            name: format!("/dw-test-{id}"),
            labels: container_labels,
            state,
            exit_code,
            host_port: Some(40000),
            image_id: "sha256:fake".to_owned(),
        };
        self.state().containers.insert(id.to_owned(), container);
    }

    pub(crate) fn container(&self, id: &str) -> Option<ContainerSummary> {
        self.state().containers.get(id).cloned()
    }

    /// Sends an event about `id` to every subscriber (changing nothing else).
    pub(crate) fn emit(&self, id: &str, kind: EngineEventKind, exit_code: Option<i64>) {
        let mut state = self.state();
        let labels = state
            .containers
            .get(id)
            .map(|c| c.labels.clone())
            .unwrap_or_default();
        let event = EngineEvent {
            kind,
            container_id: id.to_owned(),
            labels,
            exit_code,
            time: Utc::now(),
        };
        state
            .subscribers
            .retain(|s| s.unbounded_send(Ok(event.clone())).is_ok());
    }

    /// The container exits by itself with `code` (a crash or a `docker kill`): `die` only.
    pub(crate) fn exit(&self, id: &str, code: i64) {
        self.set_state(id, ContainerState::Exited, Some(code));
        self.emit(id, EngineEventKind::Die, Some(code));
    }

    fn set_state(&self, id: &str, state: ContainerState, exit_code: Option<i64>) {
        if let Some(container) = self.state().containers.get_mut(id) {
            container.state = state;
            container.exit_code = exit_code;
        }
    }

    /// The engine goes away: streams end with an error, calls fail.
    pub(crate) fn go_down(&self) {
        let mut state = self.state();
        state.down = true;
        for subscriber in state.subscribers.drain(..) {
            let _ = subscriber.unbounded_send(Err(DockerError::Unavailable {
                message: "fake engine stopped".into(),
            }));
        }
    }

    pub(crate) fn come_up(&self) {
        self.state().down = false;
    }

    pub(crate) fn calls(&self, call: &str) -> u64 {
        self.state().calls.get(call).copied().unwrap_or(0)
    }

    pub(crate) fn subscribers(&self) -> usize {
        let mut state = self.state();
        state.subscribers.retain(|s| !s.is_closed());
        state.subscribers.len()
    }
}

#[async_trait::async_trait]
impl ContainerEngine for FakeEngine {
    async fn ping(&self, _timeout: Duration) -> Result<(), DockerError> {
        self.count("ping");
        self.check_up()
    }

    async fn pull(&self, _image: &str, _auth: Option<&PullAuth>) -> Result<(), DockerError> {
        self.count("pull");
        self.check_up()
    }

    async fn create(&self, spec: &CreateContainer) -> Result<String, DockerError> {
        self.count("create");
        self.check_up()?;
        let id = format!("fake{}", self.state().containers.len());
        let instance = spec.labels.get(labels::INSTANCE).and_then(|v| v.parse().ok());
        self.add(&id, instance, ContainerState::Created, None);
        Ok(id)
    }

    async fn start(&self, id: &str) -> Result<(), DockerError> {
        self.count("start");
        self.check_up()?;
        if self.container(id).is_none() {
            return Err(DockerError::NotFound);
        }
        self.set_state(id, ContainerState::Running, None);
        self.emit(id, EngineEventKind::Start, None);
        Ok(())
    }

    async fn stop(&self, id: &str, _grace: Duration) -> Result<(), DockerError> {
        self.count("stop");
        self.check_up()?;
        let Some(container) = self.container(id) else {
            return Err(DockerError::NotFound);
        };
        if container.state == ContainerState::Running {
            self.set_state(id, ContainerState::Exited, Some(0));
            self.emit(id, EngineEventKind::Kill, None);
            self.emit(id, EngineEventKind::Die, Some(0));
            self.emit(id, EngineEventKind::Stop, None);
        }
        Ok(())
    }

    async fn restart(&self, id: &str, grace: Duration) -> Result<(), DockerError> {
        self.stop(id, grace).await?;
        self.start(id).await
    }

    async fn remove(&self, id: &str) -> Result<(), DockerError> {
        self.count("remove");
        self.check_up()?;
        if self.container(id).is_none() {
            return Err(DockerError::NotFound);
        }
        self.emit(id, EngineEventKind::Destroy, None);
        self.state().containers.remove(id);
        Ok(())
    }

    async fn inspect(&self, id: &str) -> Result<ContainerDetails, DockerError> {
        self.count("inspect");
        self.check_up()?;
        let c = self.container(id).ok_or(DockerError::NotFound)?;
        Ok(ContainerDetails {
            id: c.id,
            name: c.name,
            labels: c.labels,
            state: c.state,
            exit_code: c.exit_code,
            oom_killed: false,
            health: None,
            host_port: c.host_port,
            started_at: None,
            finished_at: None,
            image_id: c.image_id,
        })
    }

    async fn list_managed(&self, installation_id: &str) -> Result<Vec<ContainerSummary>, DockerError> {
        self.count("list");
        self.check_up()?;
        Ok(self
            .state()
            .containers
            .values()
            .filter(|c| c.labels.get(labels::INSTALLATION).map(String::as_str) == Some(installation_id))
            .cloned()
            .collect())
    }

    async fn logs(&self, _id: &str, _tail: u32) -> Result<Vec<LogLine>, DockerError> {
        self.count("logs");
        self.check_up()?;
        Ok(Vec::new())
    }

    async fn remove_image_if_unused(&self, _image_id: &str) -> Result<bool, DockerError> {
        self.count("remove_image");
        self.check_up()?;
        Ok(true)
    }

    fn events(&self, _installation_id: &str) -> BoxStream<'static, Result<EngineEvent, DockerError>> {
        self.count("events");
        if let Err(e) = self.check_up() {
            return futures::stream::once(async move { Err(e) }).boxed();
        }
        let (tx, rx) = mpsc::unbounded();
        self.state().subscribers.push(tx);
        rx.boxed()
    }

    fn api_calls(&self) -> BTreeMap<&'static str, u64> {
        self.state().calls.clone()
    }
}
