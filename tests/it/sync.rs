//! Docker sync against the real engine: what happens to containers behind docker-watcher's back
//! (`docker kill`, `docker rm -f`, `docker stop`/`start`) shows in the instance's status within
//! seconds; a container carrying the installation's label that no instance records is removed at
//! reconcile, and a reconcile is ONE list call; a restarted dockerd is reconnected to and
//! reconciled with (one `error`, one `info`); and docker-watcher killed with SIGKILL in the
//! middle of a deploy comes back with a store that agrees with the engine.
//!
//! The dockerd-restart test runs its own private dockerd (own socket, data root, exec root,
//! containerd and bridge; no iptables, no userland proxy) so it cannot disturb tests running in
//! parallel on the shared engine. It must *not* use `--bridge none`: a dockerd started that way
//! deletes the interface `docker0` (moby's `removeDefaultBridgeInterface`) — the shared
//! engine's bridge — and every container start on the shared engine then fails.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use docker_watcher::app::App;
use docker_watcher::config::Config;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::deploy::{Cleanup, Variant, create_project, deploy_ok, instance, push_image, registry, unique};
use crate::helpers::{ADMIN_PASSWORD, ApiClient, Binary, InstallationCleanup, admin_client, spawn_app};

/// Runs `docker` against the shared engine (or `host`); its success and stdout.
fn docker_on(host: Option<&str>, args: &[&str]) -> (bool, String) {
    let mut command = std::process::Command::new("docker");
    if let Some(host) = host {
        command.args(["-H", host]);
    }
    let output = command.args(args).output().expect("the docker CLI runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).trim().to_owned(),
    )
}

pub fn docker(args: &[&str]) -> (bool, String) {
    docker_on(None, args)
}

/// Polls `probe` every 100 ms until it returns `Some`, or fails the test after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until instance `id` satisfies `ready`; returns it.
async fn instance_until(
    client: &ApiClient,
    id: i64,
    timeout: Duration,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    let mut last = Value::Null;
    let result = tokio::time::timeout(timeout, async {
        loop {
            let body = instance(client, id).await;
            if ready(&body) {
                return body;
            }
            last = body;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    result.unwrap_or_else(|_| panic!("instance {id} never got there; last seen: {last}"))
}

/// The event log's `docker` events of one severity.
async fn docker_events(client: &ApiClient, severity: &str) -> Vec<Value> {
    let (status, page) = client
        .get(&format!(
            "/api/events?source=docker&severity={severity}&per_page=500"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["items"].as_array().cloned().unwrap_or_default()
}

/// A single stage `tag:v1` on port 8080, ready after `min_ready_seconds`, that polls never
/// deploy to (`auto_deploy: false`), so only the test's own deploys run; its id.
pub async fn create_manual_stage(admin: &ApiClient, project_id: i64, min_ready_seconds: u32) -> i64 {
    let (status, body) = admin
        .post(
            &format!("/api/projects/{project_id}/stages"),
            json!({
                "name": unique("s"),
                "tag_policy": "tag:v1",
                "auto_deploy": false,
                "container": {"port": 8080, "min_ready_seconds": min_ready_seconds},
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_i64().expect("a stage id")
}

/// A project and single stage on a fresh repository with one pushed `web` image, deployed;
/// returns the running instance.
async fn deployed_instance(
    app: &crate::helpers::TestApp,
    cleanup: &mut Cleanup,
    marker: &str,
) -> (ApiClient, Value) {
    let repo = unique("dwtest/sync-");
    cleanup.repo(&repo);
    let admin = app.admin().await;
    push_image(&repo, "v1", Variant::Web, marker).await;
    let project_id = create_project(&admin, &repo).await;
    let stage_id = create_manual_stage(&admin, project_id, 1).await;
    let instance = deploy_ok(&admin, stage_id, "v1").await;
    assert_eq!(instance["status"], "running", "{instance}");
    (admin, instance)
}

#[tokio::test]
async fn a_container_killed_behind_its_back_fails_its_instance_with_exit_code_137_and_one_warning() {
    let app = spawn_app().await;
    let mut cleanup = Cleanup::new(&app);
    let (admin, instance) = deployed_instance(&app, &mut cleanup, "sync kill").await;
    let id = instance["id"].as_i64().expect("an id");
    let container = instance["container_id"].as_str().expect("a container id");

    assert!(docker(&["kill", container]).0, "docker kill");
    let failed = instance_until(&admin, id, Duration::from_secs(10), |i| i["status"] != "running").await;
    assert_eq!(
        (&failed["status"], &failed["exit_code"]),
        (&json!("failed"), &json!(137)),
        "{failed}"
    );
    assert!(failed["stopped_at"].is_string(), "{failed}");
    let warnings = docker_events(&admin, "warn").await;
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert_eq!(warnings[0]["instance_id"], json!(id));
    assert_eq!(warnings[0]["details"]["exit_code"], json!(137));
    app.stop().await;
}

#[tokio::test]
async fn a_container_removed_behind_its_back_makes_its_instance_missing() {
    let app = spawn_app().await;
    let mut cleanup = Cleanup::new(&app);
    let (admin, instance) = deployed_instance(&app, &mut cleanup, "sync rm").await;
    let id = instance["id"].as_i64().expect("an id");
    let container = instance["container_id"].as_str().expect("a container id");

    assert!(docker(&["rm", "-f", container]).0, "docker rm -f");
    let missing = instance_until(&admin, id, Duration::from_secs(10), |i| i["status"] == "missing").await;
    assert_eq!(
        missing["is_current"],
        json!(true),
        "it stays the stage's current instance: {missing}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_container_stopped_and_started_behind_its_back_is_stopped_then_running_and_seen_alive() {
    let app = spawn_app().await;
    let mut cleanup = Cleanup::new(&app);
    let (admin, instance) = deployed_instance(&app, &mut cleanup, "sync restart").await;
    let id = instance["id"].as_i64().expect("an id");
    let container = instance["container_id"].as_str().expect("a container id");

    assert!(docker(&["stop", container]).0, "docker stop");
    let stopped = instance_until(&admin, id, Duration::from_secs(10), |i| i["status"] != "running").await;
    assert_eq!(
        stopped["status"], "stopped",
        "a requested stop is no failure: {stopped}"
    );
    let alive_before = stopped["last_alive_at"]
        .as_str()
        .expect("seen alive at deploy")
        .to_owned();

    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(docker(&["start", container]).0, "docker start");
    let running = instance_until(&admin, id, Duration::from_secs(10), |i| i["status"] == "running").await;
    let alive_after = running["last_alive_at"].as_str().expect("last_alive_at");
    assert!(
        alive_after > alive_before.as_str(),
        "{alive_after} after {alive_before}"
    );
    assert_eq!(
        (&running["exit_code"], &running["stopped_at"]),
        (&Value::Null, &Value::Null),
        "{running}"
    );
    let warnings = docker_events(&admin, "warn").await;
    assert!(warnings.is_empty(), "{warnings:#?}");
    app.stop().await;
}

#[tokio::test]
async fn an_unrecorded_container_with_the_installations_label_is_removed_at_reconcile_with_one_list_call() {
    let mut app = spawn_app().await;
    let mut cleanup = Cleanup::new(&app);
    let repo = unique("dwtest/sync-stray-");
    cleanup.repo(&repo);
    push_image(&repo, "v1", Variant::Web, "stray").await;
    let installation = app.app().state().installation_id.to_string();
    let image = format!("{}/{repo}:v1", registry());
    let stray = |instance: &str| {
        let (ok, id) = docker(&[
            "create",
            "--label",
            "io.docker-watcher.managed=true",
            "--label",
            &format!("io.docker-watcher.installation={installation}"),
            "--label",
            &format!("io.docker-watcher.instance={instance}"),
            &image,
        ]);
        assert!(ok, "docker create");
        id
    };
    let exists = |id: &str| docker(&["inspect", id]).0;

    // At startup.
    let first = stray("424242");
    app.restart().await;
    assert!(!exists(&first), "removed by the startup reconcile");

    // On demand: exactly one list call, and no inspect. Other jobs list too (the stale scan
    // runs once after startup), so wait until the engine calls have settled first.
    let second = stray("not-a-number");
    let sync = app.app().state().sync.clone();
    let engine = app.app().state().engine.clone();
    let mut before = engine.api_calls();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = engine.api_calls();
        if now == before {
            break;
        }
        before = now;
    }
    let report = sync.reconcile_now().await.expect("a reconcile");
    let after = engine.api_calls();
    let delta = |call: &str| after.get(call).copied().unwrap_or(0) - before.get(call).copied().unwrap_or(0);
    assert_eq!(delta("list"), 1, "{before:?} → {after:?}");
    assert_eq!(delta("inspect"), 0, "{before:?} → {after:?}");
    assert_eq!(report.removed, vec![second.clone()]);
    assert!(!exists(&second));

    let admin = app.admin().await;
    let warnings = docker_events(&admin, "warn").await;
    assert_eq!(warnings.len(), 2, "{warnings:#?}");
    assert!(warnings.iter().all(|w| {
        w["message"]
            .as_str()
            .unwrap_or("")
            .contains("no instance records it")
    }));
    app.stop().await;
}

/// A dockerd of the test's own: its own socket, data root, exec root (and so its own managed
/// containerd) and bridge, without iptables or userland proxies, so nothing it does reaches the
/// shared engine. Dropping it stops it and removes everything it made.
struct PrivateDockerd {
    dir: PathBuf,
    bridge: String,
    child: Option<std::process::Child>,
}

impl PrivateDockerd {
    fn new() -> Self {
        let suffix = format!("{:08x}", rand::random::<u32>());
        let dir = PathBuf::from(format!("/tmp/dw-test-{suffix}"));
        std::fs::create_dir_all(&dir).expect("a dir for the private dockerd");
        // Interface names are at most 15 bytes.
        let bridge = format!("dwt{suffix}");
        let subnet = rand::random::<u16>() % 200 + 20;
        let address = format!("10.{}.{}.1/24", 100 + subnet / 100, subnet % 100 + 100);
        for args in [
            vec!["link", "add", &bridge, "type", "bridge"],
            vec!["addr", "add", &address, "dev", &bridge],
            vec!["link", "set", &bridge, "up"],
        ] {
            let status = std::process::Command::new("ip")
                .args(&args)
                .status()
                .expect("ip runs");
            assert!(status.success(), "ip {args:?}");
        }
        Self {
            dir,
            bridge,
            child: None,
        }
    }

    fn host(&self) -> String {
        format!("unix://{}/docker.sock", self.dir.display())
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// Starts dockerd and waits until it answers.
    async fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("dockerd.log"))
            .expect("a log file");
        let child = std::process::Command::new("dockerd")
            .args([
                "--host",
                &self.host(),
                "--data-root",
                &self.path("root"),
                "--exec-root",
                &self.path("exec"),
                "--pidfile",
                &self.path("docker.pid"),
                "--bridge",
                &self.bridge,
                "--iptables=false",
                "--ip-masq=false",
                "--ip-forward=false",
                "--userland-proxy=false",
            ])
            .stdout(log.try_clone().expect("a log handle"))
            .stderr(log)
            .spawn()
            .expect("dockerd starts (is docker.io installed? scripts/services.sh)");
        self.child = Some(child);
        let host = self.host();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !docker_on(Some(&host), &["version"]).0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the private dockerd did not come up:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops dockerd with SIGTERM (as an init system would) and waits for it to exit.
    async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for PrivateDockerd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = std::time::Instant::now() + Duration::from_secs(40);
            while !matches!(child.try_wait(), Ok(Some(_))) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // dockerd can leave its data root mounted over itself.
        for _ in 0..5 {
            let unmounted = std::process::Command::new("umount")
                .arg(self.dir.join("root"))
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !unmounted {
                break;
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}

#[tokio::test]
async fn a_restarted_dockerd_is_reconnected_to_with_one_error_and_one_info_and_reconciled() {
    let mut dockerd = PrivateDockerd::new();
    dockerd.start().await;
    let repo = unique("dwtest/sync-dockerd-");
    push_image(&repo, "v1", Variant::Web, "private dockerd").await;

    let data_dir = tempfile::tempdir().expect("a data dir");
    let mut config = Config::for_data_dir(data_dir.path());
    config.admin_password = Some(ADMIN_PASSWORD.to_owned());
    config.docker_host = Some(dockerd.host());
    let app = App::spawn(config, Default::default())
        .await
        .expect("the app starts");
    let admin = admin_client(&format!("http://{}", app.api_addr())).await;
    let project_id = create_project(&admin, &repo).await;
    // Without a health check: ports are not published on this dockerd (no proxy, no iptables).
    let stage_id = create_manual_stage(&admin, project_id, 1).await;
    let deployed = deploy_ok(&admin, stage_id, "v1").await;
    let id = deployed["id"].as_i64().expect("an id");
    let alive_before = deployed["last_alive_at"].as_str().expect("alive").to_owned();

    dockerd.stop().await;
    let errors = eventually("the error event", Duration::from_secs(20), || async {
        let errors = docker_events(&admin, "error").await;
        (!errors.is_empty()).then_some(errors)
    })
    .await;
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(!app.state().sync.is_connected());

    dockerd.start().await;
    // The backoff has grown to at most 16 s by now.
    let infos = eventually("the info event", Duration::from_secs(45), || async {
        let (status, page) = admin.get("/api/events?source=docker&severity=info").await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let items = page["items"].as_array().cloned().unwrap_or_default();
        (!items.is_empty()).then_some(items)
    })
    .await;
    assert_eq!(infos.len(), 1, "{infos:#?}");
    assert!(
        infos[0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("reachable again"),
        "{infos:#?}"
    );
    assert_eq!(docker_events(&admin, "error").await.len(), 1, "still one error");
    assert!(app.state().metrics.docker_reconnects.get() >= 1);

    // The engine restarts the `unless-stopped` container; the reconcile (or its `start` event)
    // shows it running again, seen alive after the restart.
    let container = deployed["container_id"].as_str().expect("a container id");
    let running = instance_until(&admin, id, Duration::from_secs(20), |i| {
        i["status"] == "running"
            && i["last_alive_at"]
                .as_str()
                .is_some_and(|t| t > alive_before.as_str())
    })
    .await;
    let (ok, state) = docker_on(
        Some(&dockerd.host()),
        &["inspect", "-f", "{{.State.Running}}", container],
    );
    assert!(
        ok && state == "true",
        "the engine runs it too: {state} ({running})"
    );
    assert!(
        docker_events(&admin, "warn").await.is_empty(),
        "a clean daemon stop is no failure"
    );
    app.stop().await;
    drop(dockerd);
    let _ = docker(&["rmi", "-f", &format!("{}/{repo}:v1", registry())]);
}

#[tokio::test]
async fn docker_watcher_killed_mid_deploy_comes_back_with_a_store_that_agrees_with_docker() {
    let repo = unique("dwtest/sync-crash-");
    push_image(&repo, "v1", Variant::Web, "crash v1").await;
    push_image(&repo, "v2", Variant::Web, "crash v2").await;
    let data_dir = tempfile::tempdir().expect("a data dir");
    let mut labelled = InstallationCleanup::default();

    let binary = Binary::start(data_dir.path()).await;
    let admin = admin_client(&binary.base_url).await;
    let project_id = create_project(&admin, &repo).await;
    let stage_id = create_manual_stage(&admin, project_id, 1).await;
    let v1 = deploy_ok(&admin, stage_id, "v1").await;
    let v1_container = v1["container_id"].as_str().expect("a container").to_owned();
    let (_, installation) = docker(&[
        "inspect",
        "-f",
        "{{index .Config.Labels \"io.docker-watcher.installation\"}}",
        &v1_container,
    ]);
    assert!(!installation.is_empty());
    labelled.installation_of(&v1);

    // v2's health gate now lasts a minute: long enough to kill docker-watcher inside it.
    let (status, body) = admin
        .patch(
            &format!("/api/stages/{stage_id}"),
            json!({"container": {"port": 8080, "min_ready_seconds": 60}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let deploying = admin.clone();
    let request =
        tokio::spawn(async move { crate::deploy::deploy(&deploying, stage_id, json!({"tag": "v2"})).await });
    let (deployment_id, v2_id, v2_container) = eventually(
        "the v2 deploy in its health gate",
        Duration::from_secs(60),
        || async {
            let (_, list) = admin
                .get(&format!("/api/deployments?stage_id={stage_id}&limit=1"))
                .await;
            let deployment = list["items"].get(0).cloned()?;
            if deployment["status"] != "running" || deployment["image_tag"] != "v2" {
                return None;
            }
            let instance_id = deployment["instance_id"].as_i64()?;
            let (_, new) = admin.get(&format!("/api/instances/{instance_id}")).await;
            let container = new["container_id"].as_str()?.to_owned();
            let (ok, running) = docker(&["inspect", "-f", "{{.State.Running}}", &container]);
            (ok && running == "true").then(|| {
                (
                    deployment["id"].as_i64().unwrap_or_default(),
                    instance_id,
                    container,
                )
            })
        },
    )
    .await;
    binary.kill().await;
    let _ = request.await;

    let binary = Binary::start(data_dir.path()).await;
    let admin = admin_client(&binary.base_url).await;
    let (status, list) = admin.get(&format!("/api/deployments?stage_id={stage_id}")).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let deployments = list["items"].as_array().cloned().unwrap_or_default();
    let interrupted = deployments
        .iter()
        .find(|d| d["id"] == json!(deployment_id))
        .unwrap_or_else(|| panic!("deployment {deployment_id} in {list}"));
    assert_eq!(interrupted["status"], "failed", "{interrupted}");
    assert_eq!(
        interrupted["error"], "interrupted by a restart of docker-watcher",
        "{interrupted}"
    );
    assert!(interrupted["finished_at"].is_string(), "{interrupted}");

    let v2 = instance(&admin, v2_id).await;
    assert_eq!(
        (&v2["status"], &v2["is_current"]),
        (&json!("failed"), &json!(false)),
        "{v2}"
    );
    let v1 = instance(&admin, v1["id"].as_i64().expect("an id")).await;
    assert_eq!(
        (&v1["status"], &v1["is_current"]),
        (&json!("running"), &json!(true)),
        "the old one serves: {v1}"
    );
    let warnings = docker_events(&admin, "warn").await;
    assert!(
        warnings.iter().any(|w| w["message"]
            .as_str()
            .unwrap_or("")
            .contains("interrupted by a restart")),
        "{warnings:#?}"
    );

    // Every container of the installation has a row, and every row agrees with Docker.
    let (_, ids) = docker(&[
        "ps",
        "-aq",
        "--no-trunc",
        "--filter",
        &format!("label=io.docker-watcher.installation={installation}"),
    ]);
    let containers: Vec<&str> = ids.split_whitespace().collect();
    let (status, rows) = admin.get(&format!("/api/instances?stage_id={stage_id}")).await;
    assert_eq!(status, StatusCode::OK, "{rows}");
    let rows = rows["items"].as_array().cloned().unwrap_or_default();
    for container in &containers {
        assert!(
            rows.iter()
                .any(|r| r["container_id"].as_str() == Some(*container)),
            "container {container} has no instance: {rows:#?}"
        );
    }
    for row in &rows {
        let status = row["status"].as_str().unwrap_or_default();
        let Some(container) = row["container_id"].as_str() else {
            panic!("a row without a container after recovery: {row}");
        };
        let (exists, running) = docker(&["inspect", "-f", "{{.State.Running}}", container]);
        let expected = match (exists, running.as_str()) {
            (false, _) => vec!["missing"],
            (true, "true") => vec!["running"],
            (true, _) => vec!["stopped", "failed"],
        };
        assert!(
            expected.contains(&status),
            "row {row} vs docker running={running} exists={exists}"
        );
    }
    assert!(
        containers.contains(&v2_container.as_str()),
        "the failed v2 keeps its container for its logs"
    );
    binary.terminate().await;
    let _ = docker(&[
        "rmi",
        "-f",
        &format!("{}/{repo}:v1", registry()),
        &format!("{}/{repo}:v2", registry()),
    ]);
}
