//! Start-up with the data dir's files as an operator may leave them: a new data dir is private
//! (0700, the database and its WAL files 0600); files found open to other users are tightened
//! with a `warn` event; and a corrupt or read-only database, or a key file that is not a key,
//! stops the real binary with a message that names the file and says what to do.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;

use crate::helpers::{ADMIN_PASSWORD, spawn_app_with};

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[cfg(unix)]
#[tokio::test]
async fn a_new_data_dir_is_private_and_so_are_the_database_and_its_wal_files() {
    let app = spawn_app_with(|config| config.data_dir = config.data_dir.join("fresh/data")).await;
    let dir = app.data_dir.path().join("fresh/data");
    assert_eq!(mode(&dir), 0o700);
    for file in [
        "docker-watcher.db",
        "docker-watcher.db-wal",
        "docker-watcher.db-shm",
        "secret.key",
    ] {
        assert_eq!(mode(&dir.join(file)), 0o600, "{file}");
    }
    app.stop().await;
}

#[cfg(unix)]
#[tokio::test]
async fn files_found_open_to_other_users_are_made_private_again_each_with_a_warn_event() {
    let mut app = spawn_app_with(|_| {}).await;
    let dir = app.data_dir.path().to_owned();
    app.restart_with(|| {
        set_mode(&dir, 0o755);
        set_mode(&dir.join("docker-watcher.db"), 0o644);
        set_mode(&dir.join("secret.key"), 0o644);
    })
    .await;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("docker-watcher.db")), 0o600);
    assert_eq!(mode(&dir.join("secret.key")), 0o600);

    let admin = app.admin().await;
    let (status, body) = admin.get("/api/events?severity=warn&source=system").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let messages: Vec<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["message"].as_str())
        .collect();
    for (file, now) in [("secret.key", "0600"), ("docker-watcher.db", "0600")] {
        assert!(
            messages
                .iter()
                .any(|m| m.contains(file) && m.contains("mode 0644") && m.contains(now)),
            "no warning about {file}: {messages:?}"
        );
    }
    assert!(
        messages
            .iter()
            .any(|m| m.contains("mode 0755") && m.contains("0700")),
        "no warning about the data dir: {messages:?}"
    );
    app.stop().await;
}

/// Runs `docker-watcher serve` on `data_dir` (as `user` when given, through setpriv) and returns
/// its exit status and standard error once it has exited — which it must within a minute.
fn serve_until_it_exits(data_dir: &Path, as_nobody: bool) -> (std::process::ExitStatus, String) {
    let binary = env!("CARGO_BIN_EXE_docker-watcher");
    let mut command = if as_nobody {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", binary]);
        c
    } else {
        Command::new(binary)
    };
    command
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--proxy-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .env("DOCKER_WATCHER_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env_remove("DOCKER_WATCHER_SECRET_KEY")
        .env_remove("DOCKER_WATCHER_CONFIG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().expect("the binary starts");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(_status) = child.try_wait().unwrap() {
            let output = child.wait_with_output().unwrap();
            return (
                output.status,
                String::from_utf8_lossy(&output.stderr).into_owned(),
            );
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "still running after a minute; stderr: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn a_file_that_is_not_a_database_stops_the_start_naming_it_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("docker-watcher.db");
    std::fs::write(&db, "this is not a database\n".repeat(400)).unwrap();
    let (status, stderr) = tokio::task::spawn_blocking({
        let dir = dir.path().to_owned();
        move || serve_until_it_exits(&dir, false)
    })
    .await
    .unwrap();
    assert!(!status.success());
    assert!(stderr.contains(&db.display().to_string()), "{stderr}");
    assert!(stderr.contains("Restore it from a backup"), "{stderr}");
}

#[tokio::test]
async fn a_key_file_that_is_not_a_key_stops_the_start_naming_it_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("secret.key");
    std::fs::write(&key, "my-secret-passphrase\n").unwrap();
    let (status, stderr) = tokio::task::spawn_blocking({
        let dir = dir.path().to_owned();
        move || serve_until_it_exits(&dir, false)
    })
    .await
    .unwrap();
    assert!(!status.success());
    assert!(stderr.contains(&key.display().to_string()), "{stderr}");
    assert!(stderr.contains("Restore the key file"), "{stderr}");
}

#[cfg(unix)]
#[tokio::test]
async fn a_read_only_database_stops_the_start_naming_it_and_what_to_do() {
    use std::os::unix::fs::chown;
    // Root writes any file whatever its mode: the server then runs as nobody.
    let as_root = runs_as_root();
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data");
    let store = docker_watcher::store::Store::open(&dir).await.unwrap();
    store.close().await;
    drop(store);
    let db = dir.join("docker-watcher.db");
    if as_root {
        set_mode(parent.path(), 0o755);
        for entry in std::fs::read_dir(&dir).unwrap() {
            chown(entry.unwrap().path(), Some(65534), Some(65534)).unwrap();
        }
        chown(&dir, Some(65534), Some(65534)).unwrap();
    }
    set_mode(&db, 0o400);
    let (status, stderr) = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || serve_until_it_exits(&dir, as_root)
    })
    .await
    .unwrap();
    assert!(!status.success());
    assert!(stderr.contains(&db.display().to_string()), "{stderr}");
    assert!(stderr.contains("read-only"), "{stderr}");
    assert!(
        stderr.contains("writable by the user docker-watcher runs as"),
        "{stderr}"
    );
}

/// Whether the tests run as root (who can write read-only files), read from /proc so no libc
/// binding is needed.
fn runs_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}
