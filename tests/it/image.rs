//! The container image (`Dockerfile`), built and run the way a user runs it — without any
//! public registry: the runtime stage is built FROM a Debian base that `scripts/runtime-base.sh`
//! makes from Debian packages (cached per machine), the binary built on the host is added
//! (`DW_TEST_RELEASE_BINARY`, which `scripts/test.sh` builds; the test binary's own debug build
//! otherwise), and the container runs with the Docker socket mounted and host networking. It
//! must answer `/healthz`, turn healthy through its own `HEALTHCHECK`, run as a non-root user,
//! deploy a stage from the local registry and proxy to it.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::process::Command;

use crate::helpers::token_client_at;
use crate::testenv::{LocalImages, free_port, registry, run, unique};

const PASSWORD: &str = "image-test-admin-password";

/// The binary the image gets: the release build when the test script made one.
fn binary() -> PathBuf {
    match std::env::var_os("DW_TEST_RELEASE_BINARY") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(env!("CARGO_BIN_EXE_docker-watcher")),
    }
}

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Everything the test made in Docker, removed when it ends, pass or fail: the container and
/// the deployments it started (named after the test's unique project), the project's network
/// (left behind, each run would take one of the engine's few default address pools), the
/// volume, the images.
struct ImageTestCleanup {
    name: String,
    project: String,
    images: Vec<String>,
}

impl Drop for ImageTestCleanup {
    fn drop(&mut self) {
        let docker = |args: &[&str]| {
            std::process::Command::new("docker")
                .args(args)
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        docker(&["rm", "-f", "-v", &self.name]);
        let ids = docker(&["ps", "-aq", "--filter", &format!("name=dw-{}-", self.project)]);
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            docker(&[&["rm", "-f"][..], &ids].concat());
        }
        docker(&["network", "rm", &format!("dw-{}", self.project)]);
        docker(&["volume", "rm", "-f", &format!("{}-data", self.name)]);
        for image in &self.images {
            docker(&["rmi", "-f", image]);
        }
    }
}

async fn docker(args: &[&str]) -> String {
    run(Command::new("docker").args(args), None).await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_container_image_answers_health_checks_deploys_from_the_registry_and_proxies() {
    let name = unique("dw-image-test-");
    let project = unique("img");
    let mut cleanup = ImageTestCleanup {
        name: name.clone(),
        project: project.clone(),
        images: Vec::new(),
    };

    // The runtime stage, FROM the locally made Debian base, with the host's binary added.
    let base = run(
        &mut Command::new(repo_root().join("scripts/runtime-base.sh")),
        None,
    )
    .await;
    let runtime_base = format!("docker-watcher-test/runtime-base:{name}");
    let image = format!("docker-watcher-test/image:{name}");
    cleanup.images.extend([image.clone(), runtime_base.clone()]);
    run(
        Command::new("docker")
            .env("DOCKER_BUILDKIT", "0")
            .args(["build", "--quiet", "--target", "runtime-base"])
            .args(["--build-arg", &format!("RUNTIME_BASE={}", base.trim())])
            .args(["--build-arg", "REVISION=test"])
            .args(["--tag", &runtime_base])
            .arg(repo_root()),
        None,
    )
    .await;
    let context = tempfile::tempdir().expect("a build context");
    std::fs::copy(binary(), context.path().join("docker-watcher")).expect("copies the binary");
    std::fs::write(
        context.path().join("Dockerfile"),
        format!("FROM {runtime_base}\nCOPY docker-watcher /usr/local/bin/docker-watcher\n"),
    )
    .unwrap();
    run(
        Command::new("docker")
            .env("DOCKER_BUILDKIT", "0")
            .args(["build", "--quiet", "--tag", &image])
            .arg(context.path()),
        None,
    )
    .await;

    let inspected: Value = serde_json::from_str(&docker(&["image", "inspect", &image]).await).unwrap();
    let config = &inspected[0]["Config"];
    assert_eq!(config["User"], "docker-watcher:docker-watcher", "{config}");
    assert_eq!(
        config["Healthcheck"]["Test"],
        json!(["CMD", "docker-watcher", "healthcheck"])
    );
    assert!(config["Volumes"].get("/data").is_some(), "{config}");
    assert_eq!(
        config["Labels"]["org.opencontainers.image.title"],
        "docker-watcher"
    );
    assert_eq!(config["Labels"]["org.opencontainers.image.revision"], "test");

    // Run it as the README says: socket, its group, a data volume, host networking; ports of
    // our own so parallel runs do not collide, and a fast health interval for the test.
    let socket = Path::new("/var/run/docker.sock");
    let gid = std::fs::metadata(socket).expect("the Docker socket").gid();
    let (api_port, proxy_port) = (free_port(), free_port());
    docker(&[
        "volume",
        "create",
        "--label",
        &format!("io.docker-watcher.test={name}"),
        &format!("{name}-data"),
    ])
    .await;
    docker(&[
        "run",
        "--detach",
        "--name",
        &name,
        "--network",
        "host",
        "--label",
        &format!("io.docker-watcher.test={name}"),
        "--volume",
        "/var/run/docker.sock:/var/run/docker.sock",
        "--group-add",
        &gid.to_string(),
        "--volume",
        &format!("{name}-data:/data"),
        "--env",
        &format!("DOCKER_WATCHER_LISTEN=127.0.0.1:{api_port}"),
        "--env",
        &format!("DOCKER_WATCHER_PROXY_LISTEN=127.0.0.1:{proxy_port}"),
        "--env",
        &format!("DOCKER_WATCHER_ADMIN_PASSWORD={PASSWORD}"),
        "--health-interval",
        "1s",
        &image,
    ])
    .await;

    let base_url = format!("http://127.0.0.1:{api_port}");
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let answer = http.get(format!("{base_url}/healthz")).send().await;
        if answer.is_ok_and(|r| r.status() == StatusCode::OK) {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            let logs = std::process::Command::new("docker")
                .args(["logs", &name])
                .output()
                .unwrap();
            panic!(
                "the container never answered /healthz:\n{}{}",
                String::from_utf8_lossy(&logs.stdout),
                String::from_utf8_lossy(&logs.stderr)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(docker(&["exec", &name, "id", "-u"]).await.trim(), "10001");
    let ready = http.get(format!("{base_url}/readyz")).send().await.unwrap();
    assert_eq!(
        ready.status(),
        StatusCode::OK,
        "the engine is reachable through the socket"
    );

    // A stage from the local registry, deployed and reached through the container's proxy.
    let mut images = LocalImages::default();
    let repo = format!("dwtest/{project}");
    let marker = format!("served from the image test {name}");
    images
        .push(&format!("{}/{repo}:v1", registry()), "web", &marker)
        .await;
    let admin = token_client_at(&base_url, "admin", PASSWORD).await;
    let (status, body) = admin
        .post(
            "/api/projects",
            json!({"name": project, "image": format!("{}/{repo}", registry())}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let host = format!("{project}.image.test");
    let (status, body) = admin
        .post(
            &format!("/api/projects/{}/stages", body["id"]),
            json!({"name": "prod", "tag_policy": "tag:v1", "auto_deploy": false, "hostname": host,
                   "container": {"port": 8080, "min_ready_seconds": 1}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, deployment) = admin
        .post(
            &format!("/api/stages/{}/deploy", body["id"]),
            json!({"tag": "v1"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{deployment}");
    assert_eq!(deployment["status"], "succeeded", "{deployment}");
    let answer = http
        .get(format!("http://127.0.0.1:{proxy_port}/"))
        .header("host", &host)
        .send()
        .await
        .expect("the proxy answers");
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(answer.text().await.unwrap().trim(), marker);

    // Its own HEALTHCHECK (the `healthcheck` subcommand, no curl in the image) turns it healthy.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let health = docker(&["inspect", "--format", "{{.State.Health.Status}}", &name]).await;
        if health.trim() == "healthy" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "health status stayed {health}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(cleanup);
}
