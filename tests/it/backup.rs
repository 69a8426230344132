//! `docker-watcher backup` and `restore`, run as the real binary against a real installation:
//! a backup taken while deploys and an event flood are running restores into a new data dir
//! with the same projects, stages, events and secrets (which still open with the same key); a
//! wrong or missing key is a clear error before anything is replaced, and a restore never
//! replaces the store of a running server.

use std::path::Path;
use std::time::Duration;

use docker_watcher::app::{App, AppOptions};
use docker_watcher::config::Config;
use docker_watcher::domain::event::{EventQuery, NewEvent, Source};
use docker_watcher::secrets::SecretBox;
use docker_watcher::store::Store;
use reqwest::StatusCode;
use serde_json::json;
use tokio::process::Command;

use crate::deploy::{Cleanup, Variant, create_project, create_stage, deploy, push_image};
use crate::helpers::{ADMIN_PASSWORD, spawn_app, token_client_at};
use crate::testenv::unique;

/// Runs the real binary with `--data-dir dir`; its exit success, stdout and stderr.
async fn binary(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_docker-watcher"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("DOCKER_WATCHER_SECRET_KEY")
        .env_remove("DOCKER_WATCHER_CONFIG")
        .output()
        .await
        .expect("the binary runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Every event in the store, oldest first, as (id, message).
async fn all_events(store: &Store) -> Vec<(Option<i64>, String)> {
    let mut events = Vec::new();
    for page in 1.. {
        let query = EventQuery {
            page,
            per_page: 500,
            ..EventQuery::default()
        };
        let (items, _) = store.list_events(&query).await.unwrap();
        if items.is_empty() {
            break;
        }
        events.extend(items.into_iter().map(|e| (e.id, e.message)));
    }
    events.sort();
    events
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_under_load_restores_with_the_same_data_and_secrets() {
    let app = spawn_app().await;
    let mut cleanup = Cleanup::new(&app);
    let admin = app.admin().await;
    let repo = format!("dwtest/{}", unique("backup"));
    cleanup.repo(&repo);
    push_image(&repo, "v1", Variant::Web, "backup v1").await;
    push_image(&repo, "v2", Variant::Web, "backup v2").await;
    let project_id = create_project(&admin, &repo).await;
    let (status, body) = admin
        .patch(
            &format!("/api/projects/{project_id}"),
            json!({"registry_username": "ci", "registry_password": "s3cret-registry-pass"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // One instance at a time (a `tag:` policy is single; deploys of other tags by hand replace
    // it), so every deploy of the alternating tags is a real switch. Under a per-tag policy the
    // third deploy would find its tag already running and answer 200 (unchanged).
    let stage_id = create_stage(&admin, project_id, "tag:v1", json!({})).await;

    // Load: deploys alternating two tags, and a flood of persisted events.
    let stop = tokio_util::sync::CancellationToken::new();
    let deploys = tokio::spawn({
        let (admin, stop) = (admin.clone(), stop.clone());
        async move {
            let mut done = 0;
            for tag in ["v1", "v2"].iter().cycle() {
                if stop.is_cancelled() {
                    break;
                }
                let (status, body) = deploy(&admin, stage_id, json!({"tag": tag})).await;
                assert_eq!(status, StatusCode::CREATED, "{body}");
                assert_eq!(body["status"], "succeeded", "{body}");
                done += 1;
            }
            done
        }
    });
    let flood = tokio::spawn({
        let (bus, stop) = (app.app().state().bus.clone(), stop.clone());
        async move {
            let mut sent = 0;
            while !stop.is_cancelled() {
                let batch = (0..50)
                    .map(|i| NewEvent::warn(Source::System, format!("flood {sent}-{i}")))
                    .collect();
                bus.publish_many(batch).await;
                sent += 50;
                tokio::task::yield_now().await;
            }
            sent
        }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;

    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("backup.db");
    let (ok, stdout, stderr) = binary(app.data_dir.path(), &["backup", file.to_str().unwrap()]).await;
    assert!(ok, "backup failed: {stdout}{stderr}");
    assert!(stdout.contains("1 projects, 1 stages"), "{stdout}");
    assert!(stderr.contains("secret.key"), "the key is named: {stderr}");
    // A backup never overwrites a file.
    let (ok, _, stderr) = binary(app.data_dir.path(), &["backup", file.to_str().unwrap()]).await;
    assert!(!ok && stderr.contains("already exists"), "{stderr}");

    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    let deployed = deploys.await.unwrap();
    let flooded = flood.await.unwrap();
    assert!(
        deployed >= 2 && flooded >= 500,
        "load ran: {deployed} deploys, {flooded} events"
    );

    // A running server's store is never replaced, even with --force.
    let (ok, _, stderr) = binary(
        app.data_dir.path(),
        &["restore", file.to_str().unwrap(), "--force"],
    )
    .await;
    assert!(!ok && stderr.contains("is locked by another process"), "{stderr}");

    // Restore into a new data dir that has the installation's key.
    let restored_dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        app.data_dir.path().join(SecretBox::KEY_FILE),
        restored_dir.path().join(SecretBox::KEY_FILE),
    )
    .unwrap();
    let (ok, stdout, stderr) = binary(restored_dir.path(), &["restore", file.to_str().unwrap()]).await;
    assert!(ok, "restore failed: {stdout}{stderr}");
    // Restoring again over it needs --force, and keeps the replaced store.
    let (ok, _, stderr) = binary(restored_dir.path(), &["restore", file.to_str().unwrap()]).await;
    assert!(!ok && stderr.contains("--force"), "{stderr}");
    let (ok, stdout, stderr) = binary(
        restored_dir.path(),
        &["restore", file.to_str().unwrap(), "--force"],
    )
    .await;
    assert!(ok && stdout.contains("before-restore"), "{stdout}{stderr}");

    // Same projects, stages and events: everything up to the backup's moment.
    let source = &app.app().state().store;
    let restored = Store::open(restored_dir.path()).await.unwrap();
    let (a, b) = (
        source.list_projects().await.unwrap(),
        restored.list_projects().await.unwrap(),
    );
    assert_eq!(a.len(), 1);
    assert_eq!(
        a.iter()
            .map(|p| (&p.name, p.image.name(), &p.registry_username))
            .collect::<Vec<_>>(),
        b.iter()
            .map(|p| (&p.name, p.image.name(), &p.registry_username))
            .collect::<Vec<_>>()
    );
    let (sa, sb) = (
        source.list_stages(project_id).await.unwrap(),
        restored.list_stages(project_id).await.unwrap(),
    );
    assert_eq!(
        sa.iter()
            .map(|s| (&s.name, &s.tag_policy, &s.container))
            .collect::<Vec<_>>(),
        sb.iter()
            .map(|s| (&s.name, &s.tag_policy, &s.container))
            .collect::<Vec<_>>()
    );
    let source_events = all_events(source).await;
    let restored_events = all_events(&restored).await;
    assert!(restored_events.len() > 100, "{} events", restored_events.len());
    assert!(
        stdout.contains(&format!("{} events", restored_events.len())),
        "{stdout}"
    );
    assert_eq!(
        restored_events[..],
        source_events[..restored_events.len()],
        "the restored events are the source's up to the backup"
    );
    restored.close().await;

    // The restored installation serves, and its secret opens with the same key.
    app.stop().await;
    let restored_app = App::spawn(Config::for_data_dir(restored_dir.path()), AppOptions::default())
        .await
        .expect("the restored installation starts");
    let sealed = restored_app
        .state()
        .store
        .project_registry_password(project_id)
        .await
        .unwrap()
        .expect("the password was restored");
    assert_eq!(
        restored_app.state().secrets.open(&sealed).unwrap(),
        "s3cret-registry-pass"
    );
    let viewer = token_client_at(
        &format!("http://{}", restored_app.api_addr()),
        "admin",
        ADMIN_PASSWORD,
    )
    .await;
    let (status, body) = viewer.get(&format!("/api/projects/{project_id}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["has_registry_password"], true);
    restored_app.stop().await;

    // A wrong key, or none, is a clear error, and nothing is written.
    let wrong = tempfile::tempdir().unwrap();
    SecretBox::from_key_file(wrong.path()).unwrap();
    let (ok, _, stderr) = binary(wrong.path(), &["restore", file.to_str().unwrap()]).await;
    assert!(!ok && stderr.contains("secret key does not match"), "{stderr}");
    assert!(!wrong.path().join(Store::FILE_NAME).exists());
    let keyless = tempfile::tempdir().unwrap();
    let (ok, _, stderr) = binary(keyless.path(), &["restore", file.to_str().unwrap()]).await;
    assert!(!ok && stderr.contains("DOCKER_WATCHER_SECRET_KEY"), "{stderr}");
    assert!(!keyless.path().join(Store::FILE_NAME).exists());
    drop(cleanup);
}

#[tokio::test]
async fn a_server_refuses_to_start_with_a_key_that_does_not_match_its_database() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_data_dir(dir.path());
    config.secret_key = Some("the first key of this installation".into());
    config.admin_password = Some(ADMIN_PASSWORD.into());
    App::spawn(config.clone(), AppOptions::default())
        .await
        .unwrap()
        .stop()
        .await;
    config.secret_key = Some("another key".into());
    let err = App::spawn(config, AppOptions::default()).await.unwrap_err();
    assert!(
        format!("{err:#}").contains("secret key does not match"),
        "{err:#}"
    );
}

#[tokio::test]
async fn backup_and_restore_point_postgres_users_at_pg_dump() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_docker-watcher"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["backup", "x.db"])
        .env("DOCKER_WATCHER_DATABASE_URL", "postgres://dw@127.0.0.1/dw")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("pg_dump"));
}

/// Runs the real binary with `--data-dir dir` and the passphrase `key`.
async fn binary_with_key(dir: &Path, key: &str, args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_docker-watcher"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env("DOCKER_WATCHER_SECRET_KEY", key)
        .env_remove("DOCKER_WATCHER_CONFIG")
        .output()
        .await
        .expect("the binary runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_passphrase_installation_restores_with_its_salt_and_its_secret_variables_still_open() {
    let passphrase = "a passphrase of this backup test";
    let source = tempfile::tempdir().unwrap();
    let mut config = Config::for_data_dir(source.path());
    config.secret_key = Some(passphrase.into());
    config.admin_password = Some(ADMIN_PASSWORD.into());
    let app = App::spawn(config, AppOptions::default()).await.unwrap();
    let admin = token_client_at(&format!("http://{}", app.api_addr()), "admin", ADMIN_PASSWORD).await;
    let (status, project) = admin
        .post(
            "/api/projects",
            json!({"name": "shop", "image": "127.0.0.1:5000/dwtest/backup-salt"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{project}");
    let project_id = project["id"].as_i64().unwrap();
    let (status, stage) = admin
        .post(
            &format!("/api/projects/{project_id}/stages"),
            json!({
                "name": "prod",
                "tag_policy": "tag:v1",
                "auto_deploy": false,
                "container": {"secret_env": {"DB_PASSWORD": "restored-secret-value"}},
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{stage}");
    let stage_id = stage["id"].as_i64().unwrap();
    app.stop().await;

    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("backup.db");
    let file = file.to_str().unwrap();
    let (ok, out) = binary_with_key(source.path(), passphrase, &["backup", file]).await;
    assert!(ok, "{out}");

    // The same passphrase, stretched with the backup's salt, opens it; another does not.
    let wrong = tempfile::tempdir().unwrap();
    let (ok, out) = binary_with_key(wrong.path(), "another passphrase", &["restore", file]).await;
    assert!(!ok && out.contains("secret key does not match"), "{out}");
    let restored = tempfile::tempdir().unwrap();
    let (ok, out) = binary_with_key(restored.path(), passphrase, &["restore", file]).await;
    assert!(ok, "{out}");

    let mut config = Config::for_data_dir(restored.path());
    config.secret_key = Some(passphrase.into());
    let app = App::spawn(config, AppOptions::default())
        .await
        .expect("the restored installation starts with its passphrase");
    let sealed = app.state().store.stage_secrets(stage_id).await.unwrap();
    assert_eq!(
        app.state().secrets.open(&sealed["DB_PASSWORD"]).unwrap(),
        "restored-secret-value"
    );
    app.stop().await;
}
