//! The Docker adapter against the real engine: pulls by digest from the local registries (with and
//! without credentials), a managed container's whole life (create → start → serve → list → logs
//! → stop → events → remove), name conflicts, image removal, the one-list-call promise, and an
//! engine that is away or goes away. Every test uses its own installation id and repository, and
//! a [`Cleanup`] guard removes what it created even when an assertion fails.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use docker_watcher::docker::engine::{
    ContainerEngine, ContainerState, CreateContainer, EngineEvent, EngineEventKind, HealthState, LogStream,
    PullAuth, labels,
};
use docker_watcher::docker::{DockerEngine, DockerError};
use futures::StreamExt;
use futures::stream::BoxStream;

fn registry() -> String {
    std::env::var("DW_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".to_owned())
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}

fn engine() -> DockerEngine {
    DockerEngine::connect(std::env::var("DOCKER_HOST").ok().as_deref()).expect("a Docker address")
}

/// Runs the docker CLI and returns its stdout; panics with its stderr when it fails.
async fn docker(args: &[&str]) -> String {
    docker_with_config(args, None).await
}

async fn docker_with_config(args: &[&str], config: Option<&Path>) -> String {
    let mut command = tokio::process::Command::new("docker");
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    let output = command.args(args).output().await.expect("the docker CLI runs");
    assert!(
        output.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Runs the docker CLI with `input` on its stdin; panics with its stderr when it fails.
async fn docker_with_stdin(args: &[&str], input: &str) -> String {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("docker")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the docker CLI runs");
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .await
            .expect("the input is written");
    }
    let output = child.wait_with_output().await.expect("the docker CLI ends");
    assert!(
        output.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

async fn image_exists(reference: &str) -> bool {
    tokio::process::Command::new("docker")
        .args(["image", "inspect", reference])
        .output()
        .await
        .expect("the docker CLI runs")
        .status
        .success()
}

/// Builds and pushes the `web` test image (scripts/test-image.sh); returns `REPO@sha256:…`.
async fn push_test_image(tagged: &str, marker: &str, docker_config: Option<&Path>) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/test-image.sh");
    let mut command = tokio::process::Command::new(script);
    command.args([tagged, "--marker", marker]);
    if let Some(config) = docker_config {
        command.env("DOCKER_CONFIG", config);
    }
    let output = command.output().await.expect("scripts/test-image.sh runs");
    assert!(
        output.status.success(),
        "scripts/test-image.sh {tagged} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let pinned = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(pinned.contains("@sha256:"), "not a pinned reference: {pinned}");
    pinned
}

/// Removes, when dropped (also on a failed assertion), every container carrying one of the
/// installation ids, the named containers and the images.
#[derive(Default)]
struct Cleanup {
    installations: Vec<String>,
    containers: Vec<String>,
    images: Vec<String>,
}

impl Cleanup {
    fn for_installations(installations: &[&str]) -> Self {
        Self {
            installations: installations.iter().map(|i| i.to_string()).collect(),
            containers: Vec::new(),
            images: Vec::new(),
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let run = |args: &[&str]| {
            std::process::Command::new("docker")
                .args(args)
                .output()
                .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
                .unwrap_or_default()
        };
        let mut containers = self.containers.clone();
        for installation in &self.installations {
            let filter = format!("label={}={installation}", labels::INSTALLATION);
            containers.extend(
                run(&["ps", "-aq", "--filter", &filter])
                    .split_whitespace()
                    .map(str::to_owned),
            );
        }
        if !containers.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(containers.iter().map(String::as_str));
            run(&args);
        }
        for image in &self.images {
            run(&["rmi", "-f", image]);
        }
    }
}

fn spec(name: &str, image: &str, installation: &str, command: Option<Vec<String>>) -> CreateContainer {
    CreateContainer {
        name: name.to_owned(),
        image: image.to_owned(),
        labels: BTreeMap::from([
            (labels::MANAGED.to_owned(), "true".to_owned()),
            (labels::INSTALLATION.to_owned(), installation.to_owned()),
            (labels::PROJECT.to_owned(), "it".to_owned()),
            (labels::STAGE.to_owned(), "docker".to_owned()),
            (labels::INSTANCE.to_owned(), "1".to_owned()),
        ]),
        env: vec!["DW_TEST_ENV=hello".to_owned()],
        command,
        container_port: Some(8080),
        memory_bytes: Some(64 * 1024 * 1024),
        nano_cpus: Some(500_000_000),
        mounts: Vec::new(),
        network: None,
        extra_networks: Vec::new(),
        user: None,
        restart_policy: Default::default(),
        stop_signal: "SIGTERM".to_owned(),
        stop_timeout_seconds: 10,
    }
}

/// Reads events until one matches, failing after a few seconds; returns every event read.
async fn read_events_until(
    events: &mut BoxStream<'static, Result<EngineEvent, DockerError>>,
    seen: &mut Vec<EngineEvent>,
    wanted: impl Fn(&EngineEvent) -> bool,
) {
    if seen.iter().any(&wanted) {
        return;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let next = tokio::time::timeout_at(deadline, events.next())
            .await
            .unwrap_or_else(|_| panic!("the wanted event did not come; seen: {seen:#?}"));
        let event = next
            .expect("the event stream stays open")
            .expect("the event stream has no error");
        let found = wanted(&event);
        seen.push(event);
        if found {
            return;
        }
    }
}

async fn http_get_until_ok(port: u16) -> String {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("an HTTP client");
    let url = format!("http://127.0.0.1:{port}/");
    let mut last = String::new();
    for _ in 0..50 {
        match client.get(&url).send().await {
            Ok(response) if response.status().is_success() => {
                return response.text().await.expect("a body");
            }
            Ok(response) => last = format!("status {}", response.status()),
            Err(error) => last = error.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{url} never answered 200: {last}");
}

#[tokio::test]
async fn a_managed_container_lives_and_dies_on_the_real_engine() {
    let installation = unique("it-installation");
    let other_installation = unique("it-other-installation");
    let mut cleanup = Cleanup::for_installations(&[&installation, &other_installation]);
    let marker = unique("marker");
    let tagged = format!("{}/{}:v1", registry(), unique("dw-it-docker"));
    cleanup.images.push(tagged.clone());
    let pinned = push_test_image(&tagged, &marker, None).await;
    cleanup.images.push(pinned.clone());
    // The engine forgets the image, so the adapter's pull must fetch it by digest.
    docker(&["rmi", &tagged]).await;
    assert!(!image_exists(&pinned).await);

    let engine = engine();
    engine
        .pull(&pinned, None)
        .await
        .expect("the pull by digest succeeds");
    assert!(image_exists(&pinned).await);

    // Subscribed before anything happens, read only later: the stream replays from here.
    let mut events = engine.events(&installation);
    let mut seen = Vec::new();

    let name = unique("dw-it-web");
    let script = "echo \"started $DW_TEST_ENV\"; echo 'warming up' >&2; \
                  trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait";
    let command = Some(vec!["/bin/sh".to_owned(), "-c".to_owned(), script.to_owned()]);
    let id = engine
        .create(&spec(&name, &pinned, &installation, command))
        .await
        .expect("the container is created");
    let config = docker(&[
        "inspect",
        "--format",
        "{{.HostConfig.RestartPolicy.Name}} {{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} \
         {{json .HostConfig.PortBindings}} {{json .Config.Env}}",
        &id,
    ])
    .await;
    assert!(
        config.starts_with("unless-stopped 67108864 500000000 "),
        "{config}"
    );
    assert!(
        config.contains(r#"{"8080/tcp":[{"HostIp":"127.0.0.1","HostPort":""}]}"#),
        "{config}"
    );
    assert!(config.contains("DW_TEST_ENV=hello"), "{config}");

    let created = engine.inspect(&id).await.expect("inspect after create");
    assert_eq!(created.state, ContainerState::Created);
    assert_eq!(created.name, name);
    assert_eq!(
        (created.exit_code, created.started_at, created.host_port),
        (None, None, None)
    );
    assert_eq!(created.labels.get(labels::INSTALLATION), Some(&installation));

    engine.start(&id).await.expect("the container starts");
    engine
        .start(&id)
        .await
        .expect("starting a running container is fine");
    let running = engine.inspect(&id).await.expect("inspect after start");
    assert_eq!(running.state, ContainerState::Running);
    assert_eq!(running.health, None, "the test image has no HEALTHCHECK");
    assert!(running.started_at.is_some());
    assert!(running.image_id.starts_with("sha256:"), "{}", running.image_id);
    let port = running.host_port.expect("a host port on 127.0.0.1");
    assert_eq!(http_get_until_ok(port).await.trim(), marker);

    // A container of another installation and an unlabelled one made with the CLI: neither is
    // ours to list.
    let other_id = engine
        .create(&spec(&unique("dw-it-other"), &pinned, &other_installation, None))
        .await
        .expect("the other installation's container is created");
    engine.start(&other_id).await.expect("the other container starts");
    let cli_name = unique("dw-it-cli");
    cleanup.containers.push(cli_name.clone());
    docker(&["create", "--name", &cli_name, &pinned]).await;

    let calls_before = engine.api_calls();
    let listed = engine.list_managed(&installation).await.expect("the list call");
    let calls_after = engine.api_calls();
    assert_eq!(
        calls_after.get("list").copied().unwrap_or(0),
        calls_before.get("list").copied().unwrap_or(0) + 1
    );
    assert_eq!(
        calls_after.values().sum::<u64>(),
        calls_before.values().sum::<u64>() + 1,
        "list_managed makes exactly one engine call: {calls_before:?} → {calls_after:?}"
    );
    assert_eq!(listed.len(), 1, "{listed:#?}");
    let entry = &listed[0];
    assert_eq!(entry.id, id);
    assert_eq!(entry.name, name);
    assert_eq!(entry.state, ContainerState::Running);
    assert_eq!(entry.host_port, Some(port));
    assert_eq!(entry.exit_code, None);
    assert_eq!(entry.instance_id(), Some(1));
    assert_eq!(entry.image_id, running.image_id);

    let logs = engine.logs(&id, 100).await.expect("the logs");
    assert!(
        logs.iter()
            .any(|l| l.stream == LogStream::Stdout && l.text == "started hello"),
        "{logs:#?}"
    );
    assert!(
        logs.iter()
            .any(|l| l.stream == LogStream::Stderr && l.text == "warming up"),
        "{logs:#?}"
    );
    assert_eq!(engine.logs(&id, 1).await.expect("the last line").len(), 1);

    engine
        .stop(&id, Duration::from_secs(10))
        .await
        .expect("the container stops");
    engine
        .stop(&id, Duration::from_secs(10))
        .await
        .expect("stopping a stopped container is fine");
    let exited = engine.inspect(&id).await.expect("inspect after stop");
    assert_eq!(exited.state, ContainerState::Exited);
    assert_eq!(exited.exit_code, Some(0), "the TERM trap exits 0");
    assert!(!exited.oom_killed);
    assert!(exited.finished_at.is_some());
    assert_eq!(exited.host_port, None);
    let listed = engine.list_managed(&installation).await.expect("the list call");
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].state, listed[0].exit_code),
        (ContainerState::Exited, Some(0))
    );

    read_events_until(&mut events, &mut seen, |e| {
        e.kind == EngineEventKind::Start && e.container_id == id
    })
    .await;
    read_events_until(&mut events, &mut seen, |e| {
        e.kind == EngineEventKind::Die && e.container_id == id
    })
    .await;
    let die = seen
        .iter()
        .find(|e| e.kind == EngineEventKind::Die)
        .expect("a die event");
    assert_eq!(die.exit_code, Some(0));
    assert_eq!(die.labels.get(labels::INSTANCE).map(String::as_str), Some("1"));

    // An image still used by containers stays.
    let removed = engine.remove_image_if_unused(&running.image_id).await;
    assert!(!removed.expect("image removal"), "an image in use stays");

    engine.remove(&id).await.expect("the container is removed");
    read_events_until(&mut events, &mut seen, |e| {
        e.kind == EngineEventKind::Destroy && e.container_id == id
    })
    .await;
    assert!(
        seen.iter().all(|e| e.container_id == id),
        "only this installation's events arrive: {seen:#?}"
    );
    assert!(matches!(engine.inspect(&id).await, Err(DockerError::NotFound)));
    assert!(matches!(engine.remove(&id).await, Err(DockerError::NotFound)));
    assert!(matches!(
        engine.stop(&id, Duration::from_secs(1)).await,
        Err(DockerError::NotFound)
    ));

    engine
        .remove(&other_id)
        .await
        .expect("the other container is removed");
    docker(&["rm", "-f", &cli_name]).await;
    let removed = engine.remove_image_if_unused(&running.image_id).await;
    assert!(removed.expect("image removal"), "an unused image goes");
    assert!(!image_exists(&pinned).await);
    let removed = engine.remove_image_if_unused(&running.image_id).await;
    assert!(
        removed.expect("an absent image"),
        "an image already gone counts as removed"
    );
    drop(cleanup);
}

#[tokio::test]
async fn a_docker_healthcheck_shows_in_inspect_and_in_events() {
    let installation = unique("it-installation");
    let mut cleanup = Cleanup::for_installations(&[&installation]);
    let base = format!("{}/{}:v1", registry(), unique("dw-it-health-base"));
    cleanup.images.push(base.clone());
    let pinned = push_test_image(&base, &unique("marker"), None).await;
    cleanup.images.push(pinned);
    // `docker import` cannot set a HEALTHCHECK; a one-line build on top of the pushed image can.
    let checked = format!("{}:v1", unique("dw-it-health"));
    cleanup.images.push(checked.clone());
    let dockerfile = format!(
        "FROM {base}\nHEALTHCHECK --interval=1s --timeout=2s --retries=1 \
         CMD wget -q -O /dev/null http://127.0.0.1:8080/health || exit 1\n"
    );
    docker_with_stdin(&["build", "-q", "-t", &checked, "-"], &dockerfile).await;

    let engine = engine();
    let mut events = engine.events(&installation);
    let mut seen = Vec::new();
    let healthy = engine
        .create(&spec(&unique("dw-it-healthy"), &checked, &installation, None))
        .await
        .expect("the serving container is created");
    // Nothing listens on 8080 here, so the check fails.
    let idle = "trap 'exit 0' TERM; sleep 600 & wait";
    let idle = Some(vec!["/bin/sh".to_owned(), "-c".to_owned(), idle.to_owned()]);
    let unhealthy = engine
        .create(&spec(&unique("dw-it-unhealthy"), &checked, &installation, idle))
        .await
        .expect("the idle container is created");
    engine
        .start(&healthy)
        .await
        .expect("the serving container starts");
    engine.start(&unhealthy).await.expect("the idle container starts");

    read_events_until(&mut events, &mut seen, |e| {
        e.container_id == healthy && e.kind == EngineEventKind::HealthStatus(HealthState::Healthy)
    })
    .await;
    read_events_until(&mut events, &mut seen, |e| {
        e.container_id == unhealthy && e.kind == EngineEventKind::HealthStatus(HealthState::Unhealthy)
    })
    .await;
    let details = engine
        .inspect(&healthy)
        .await
        .expect("inspect the serving container");
    assert_eq!(details.health, Some(HealthState::Healthy));
    let details = engine
        .inspect(&unhealthy)
        .await
        .expect("inspect the idle container");
    assert_eq!(details.health, Some(HealthState::Unhealthy));
    drop(cleanup);
}

#[tokio::test]
async fn pulling_a_digest_the_registry_does_not_have_fails() {
    let engine = engine();
    let missing = format!(
        "{}/{}@sha256:{}",
        registry(),
        unique("dw-it-missing"),
        "0".repeat(64)
    );
    let error = engine.pull(&missing, None).await.expect_err("nothing to pull");
    assert!(!error.is_unavailable(), "{error}");
    assert_eq!(engine.api_calls().get("pull"), Some(&1));
}

#[tokio::test]
async fn pulling_from_a_registry_with_basic_auth_uses_the_credentials() {
    let auth_registry =
        std::env::var("DW_TEST_AUTH_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5001".to_owned());
    let user = std::env::var("DW_TEST_AUTH_REGISTRY_USER").unwrap_or_else(|_| "dwtest".to_owned());
    let password =
        std::env::var("DW_TEST_AUTH_REGISTRY_PASSWORD").unwrap_or_else(|_| "dwtest-secret".to_owned());
    let mut cleanup = Cleanup::default();
    // A private CLI config, so the login does not leak into other tests' `docker push`.
    let docker_config = tempfile::tempdir().expect("a temporary docker config dir");
    docker_with_stdin(
        &[
            "--config",
            &docker_config.path().display().to_string(),
            "login",
            &auth_registry,
            "-u",
            &user,
            "--password-stdin",
        ],
        &password,
    )
    .await;

    let tagged = format!("{auth_registry}/{}:v1", unique("dw-it-private"));
    cleanup.images.push(tagged.clone());
    let pinned = push_test_image(&tagged, &unique("marker"), Some(docker_config.path())).await;
    cleanup.images.push(pinned.clone());
    docker_with_config(&["rmi", &tagged], Some(docker_config.path())).await;

    let engine = engine();
    let error = engine
        .pull(&pinned, None)
        .await
        .expect_err("anonymous pulls are refused");
    assert!(!error.is_unavailable(), "{error}");
    let wrong = PullAuth {
        username: user.clone(),
        password: "not-the-password".to_owned(),
        server: auth_registry.clone(),
    };
    engine
        .pull(&pinned, Some(&wrong))
        .await
        .expect_err("a wrong password is refused");
    assert!(!image_exists(&pinned).await);
    let auth = PullAuth {
        username: user,
        password,
        server: auth_registry,
    };
    engine
        .pull(&pinned, Some(&auth))
        .await
        .expect("the pull with credentials succeeds");
    assert!(image_exists(&pinned).await);
    drop(cleanup);
}

#[tokio::test]
async fn creating_a_container_under_a_taken_name_is_a_conflict() {
    let installation = unique("it-installation");
    let mut cleanup = Cleanup::for_installations(&[&installation]);
    let tagged = format!("{}/{}:v1", registry(), unique("dw-it-conflict"));
    cleanup.images.push(tagged.clone());
    let pinned = push_test_image(&tagged, &unique("marker"), None).await;
    cleanup.images.push(pinned.clone());

    let engine = engine();
    let name = unique("dw-it-taken");
    engine
        .create(&spec(&name, &tagged, &installation, None))
        .await
        .expect("the first container is created");
    let error = engine
        .create(&spec(&name, &tagged, &installation, None))
        .await
        .expect_err("the name is taken");
    assert!(matches!(error, DockerError::Conflict { .. }), "{error:?}");

    let missing_image = format!("{}/{}:nope", registry(), unique("dw-it-absent"));
    let error = engine
        .create(&spec(
            &unique("dw-it-no-image"),
            &missing_image,
            &installation,
            None,
        ))
        .await
        .expect_err("no such image on the engine");
    assert!(matches!(error, DockerError::NotFound), "{error:?}");
    drop(cleanup);
}

#[tokio::test]
async fn an_unreachable_engine_is_unavailable_and_ends_the_event_stream_at_once() {
    let dir = tempfile::tempdir().expect("a temporary dir");
    let host = format!("unix://{}/no-docker.sock", dir.path().display());
    let engine = DockerEngine::connect(Some(&host)).expect("the address is checked, not connected to");
    let error = ContainerEngine::ping(&engine, Duration::from_secs(1))
        .await
        .expect_err("no engine");
    assert!(error.is_unavailable(), "{error:?}");
    let error = engine.list_managed("x").await.expect_err("no engine");
    assert!(matches!(error, DockerError::Unavailable { .. }), "{error:?}");

    let mut events = engine.events("x");
    let first = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("an answer at once");
    assert!(
        matches!(first, Some(Err(DockerError::Unavailable { .. }))),
        "{first:?}"
    );
    assert!(events.next().await.is_none(), "the stream ends after its error");
    assert_eq!(
        engine.api_calls(),
        BTreeMap::from([("events", 1), ("list", 1), ("ping", 1)])
    );
}

/// A fake engine on a unix socket that answers each `/events` request with one `start` event and
/// then goes away: the first time closing the stream cleanly, the second time cutting it mid-body.
async fn serve_one_event_then_go_away(listener: tokio::net::UnixListener) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let event = format!(
        r#"{{"Type":"container","Action":"start","Actor":{{"ID":"c0ffee","Attributes":{{"{}":"x","name":"n"}}}},"scope":"local","time":1714979289,"timeNano":1714979289000000000}}"#,
        labels::INSTALLATION
    );
    let chunk = format!("{:x}\r\n{event}\n\r\n", event.len() + 1);
    for clean_end in [true, false] {
        let Ok((mut socket, _)) = listener.accept().await else {
            return;
        };
        let mut request = Vec::new();
        let mut buffer = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            match socket.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => request.extend_from_slice(&buffer[..n]),
            }
        }
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
        let _ = socket.write_all(head.as_bytes()).await;
        let _ = socket.write_all(chunk.as_bytes()).await;
        if clean_end {
            let _ = socket.write_all(b"0\r\n\r\n").await;
        }
        let _ = socket.flush().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(socket);
    }
}

async fn next_within_seconds(
    events: &mut BoxStream<'static, Result<EngineEvent, DockerError>>,
) -> Option<Result<EngineEvent, DockerError>> {
    tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("the stream answers within seconds")
}

#[tokio::test]
async fn an_event_stream_yields_an_error_and_ends_when_the_engine_goes_away() {
    let dir = tempfile::tempdir().expect("a temporary dir");
    let socket = dir.path().join("fake-docker.sock");
    let listener = tokio::net::UnixListener::bind(&socket).expect("a unix socket");
    let server = tokio::spawn(serve_one_event_then_go_away(listener));
    let engine = DockerEngine::connect(Some(&format!("unix://{}", socket.display()))).expect("an address");

    for end in ["closed cleanly", "cut mid-body"] {
        let mut events = engine.events("x");
        let first = next_within_seconds(&mut events).await;
        let event = first.expect("an item").expect("the start event");
        assert_eq!(
            (event.kind, event.container_id.as_str()),
            (EngineEventKind::Start, "c0ffee")
        );
        assert_eq!(
            event.labels,
            BTreeMap::from([(labels::INSTALLATION.to_owned(), "x".to_owned())])
        );
        let second = next_within_seconds(&mut events).await;
        assert!(
            matches!(second, Some(Err(DockerError::Unavailable { .. }))),
            "stream {end}: {second:?}"
        );
        assert!(
            next_within_seconds(&mut events).await.is_none(),
            "stream {end}: ends after its error"
        );
    }
    server.await.expect("the fake engine ends");
}
