//! The test environment `scripts/services.sh` provides, shared by every test that needs it: the
//! registries' addresses and credentials (from the variables it exports, with its defaults),
//! unique names, free ports, commands run to completion, and test images built with
//! `scripts/test-image.sh`, pushed, and removed from the engine when the test ends.

use std::path::Path;
use std::process::Stdio;

use tokio::io::AsyncWriteExt as _;
use tokio::process::Command;

/// The anonymous test registry.
pub fn registry() -> String {
    std::env::var("DW_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".to_owned())
}

/// The htpasswd test registry, and its user and password.
pub fn auth_registry() -> String {
    std::env::var("DW_TEST_AUTH_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5001".to_owned())
}

pub fn auth_user() -> String {
    std::env::var("DW_TEST_AUTH_REGISTRY_USER").unwrap_or_else(|_| "dwtest".to_owned())
}

pub fn auth_password() -> String {
    std::env::var("DW_TEST_AUTH_REGISTRY_PASSWORD").unwrap_or_else(|_| "dwtest-secret".to_owned())
}

/// A lowercase name no other test or run uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

/// A port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

/// Runs a command to completion; fails the test with its output when it fails.
pub async fn run(command: &mut Command, stdin: Option<&str>) -> String {
    let description = format!("{command:?}");
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {description}: {e}"));
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes()).await.expect("writes stdin");
    }
    let output = child.wait_with_output().await.expect("the command finishes");
    assert!(
        output.status.success(),
        "{description} failed ({}) — is scripts/services.sh running?\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `docker login` to `registry`, into the Docker CLI config dir `docker_config` when given.
pub async fn docker_login(registry: &str, username: &str, password: &str, docker_config: Option<&Path>) {
    let mut command = Command::new("docker");
    if let Some(dir) = docker_config {
        command.env("DOCKER_CONFIG", dir);
    }
    command.args(["login", registry, "--username", username, "--password-stdin"]);
    run(&mut command, Some(password)).await;
}

/// Local images a test built; removed from the engine when the test ends, pass or fail. (Not
/// right after the push: a deploy the push triggers may be pulling that very image.)
#[derive(Default)]
pub struct LocalImages(Vec<String>);

impl Drop for LocalImages {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            let _ = std::process::Command::new("docker")
                .args(["rmi", "--force"])
                .args(&self.0)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl LocalImages {
    /// Builds and pushes `image` (`REGISTRY/REPO:TAG`, variant `web`, `exit1` or `health500`)
    /// serving `marker`; returns the pushed digest.
    pub async fn push(&mut self, image: &str, variant: &str, marker: &str) -> String {
        self.push_as(image, variant, marker, None).await
    }

    /// [`Self::push`] with a Docker CLI config dir (holding a login) when given.
    pub async fn push_as(
        &mut self,
        image: &str,
        variant: &str,
        marker: &str,
        docker_config: Option<&Path>,
    ) -> String {
        self.0.push(image.to_owned());
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/test-image.sh");
        let mut command = Command::new(script);
        command.args([image, "--variant", variant, "--marker", marker]);
        if let Some(dir) = docker_config {
            command.env("DOCKER_CONFIG", dir);
        }
        let printed = run(&mut command, None).await;
        let digest = printed
            .trim()
            .rsplit_once('@')
            .map(|(_, digest)| digest.to_owned())
            .unwrap_or_else(|| panic!("test-image.sh printed no REPO@DIGEST: {printed}"));
        assert!(digest.starts_with("sha256:"), "{digest}");
        digest
    }
}
