//! The systemd unit in `dist/`: `systemd-analyze verify` accepts it without a single complaint
//! (it only warns, exit status 0, about directives it ignores — so any output fails the test),
//! it keeps the hardening the install docs promise, and `systemd-analyze security --offline`
//! rates its exposure low. `scripts/services.sh` installs systemd's tools where they are missing.

use std::path::Path;

use tokio::process::Command;

/// The unit with `ExecStart` pointing at the binary this test run built (verify checks that
/// the command exists and is executable).
fn unit_for_this_build(dir: &Path) -> std::path::PathBuf {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/dist/docker-watcher.service"
    ))
    .expect("dist/docker-watcher.service");
    let unit = unit.replace(
        "ExecStart=/usr/local/bin/docker-watcher serve",
        &format!("ExecStart={} serve", env!("CARGO_BIN_EXE_docker-watcher")),
    );
    assert!(
        unit.contains(env!("CARGO_BIN_EXE_docker-watcher")),
        "ExecStart was found"
    );
    let path = dir.join("docker-watcher.service");
    std::fs::write(&path, unit).unwrap();
    path
}

#[tokio::test]
async fn the_systemd_unit_verifies_cleanly_and_keeps_its_hardening() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_for_this_build(dir.path());
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .await
        .expect("systemd-analyze runs (scripts/services.sh installs systemd)");
    let complaints = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{complaints}");
    assert!(
        complaints.trim().is_empty(),
        "systemd-analyze verify complained:\n{complaints}"
    );

    let text = std::fs::read_to_string(&unit).unwrap();
    for line in [
        "DynamicUser=yes",
        "SupplementaryGroups=docker",
        "StateDirectory=docker-watcher",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "Environment=DOCKER_WATCHER_DATA_DIR=/var/lib/docker-watcher",
    ] {
        assert!(text.lines().any(|l| l == line), "the unit lost `{line}`");
    }

    let output = Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(&unit)
        .output()
        .await
        .expect("systemd-analyze security runs");
    let report = String::from_utf8_lossy(&output.stdout);
    let score: f64 = report
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for docker-watcher.service: "))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{report}"));
    assert!(score <= 2.0, "exposure {score} (0 is best, 10 worst):\n{report}");
}
