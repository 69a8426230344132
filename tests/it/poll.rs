//! Registry watching over HTTP, against the real registry and Docker engine: a stage's schedule
//! deploys its tag without any call and redeploys a new digest under it; `semver:` picks the
//! highest matching version; monitor-only stages record the available tag and deploy nothing;
//! `min_release_age` holds a new digest back; a digest whose deploy failed is not retried, even
//! after a restart; a registry that goes down is one `warn` and its return one `info`; the
//! basic-auth registry is polled with the project's credentials; `POST /api/stages/{id}/poll`
//! answers what it found and refuses what it must.
//!
//! Images come from `scripts/test-image.sh`, pushed to unique repositories. Tests that stop a
//! registry start their own [`PrivateRegistry`] (a `docker-registry serve` on a free port with
//! its own storage), never the shared ones.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::deploy::{Cleanup, fetch, unique};
use crate::helpers::{ApiClient, spawn_app};
pub use crate::testenv::{LocalImages, registry};
use crate::testenv::{auth_password, auth_registry, auth_user, docker_login, free_port};

/// A project on `image` (plus `extra` fields); its id.
pub async fn create_project(admin: &ApiClient, image: &str, extra: Value) -> i64 {
    let mut body = json!({"name": unique("p"), "image": image});
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    let (status, body) = admin.post("/api/projects", body).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_i64().expect("a project id")
}

/// A stage of the project with `policy` and `extra` fields, its container on port 8080 and
/// ready after one second; its id.
pub async fn create_stage(admin: &ApiClient, project_id: i64, policy: &str, extra: Value) -> i64 {
    let mut body = json!({
        "name": unique("s"),
        "tag_policy": policy,
        "container": {"port": 8080, "min_ready_seconds": 1},
    });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    let (status, body) = admin
        .post(&format!("/api/projects/{project_id}/stages"), body)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_i64().expect("a stage id")
}

/// Asks `check` every 250 ms until it answers, for at most `seconds`; panics naming `what`.
pub async fn wait_for<T, F, Fut>(seconds: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {seconds} s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub async fn stage(client: &ApiClient, stage_id: i64) -> Value {
    let (status, body) = client.get(&format!("/api/stages/{stage_id}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

pub async fn deployments(client: &ApiClient, stage_id: i64) -> Vec<Value> {
    let (status, body) = client.get(&format!("/api/deployments?stage_id={stage_id}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["items"].as_array().expect("items").clone()
}

pub async fn instances(client: &ApiClient, stage_id: i64) -> Vec<Value> {
    let (status, body) = client.get(&format!("/api/instances?stage_id={stage_id}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["items"].as_array().expect("items").clone()
}

/// The stage's current instance once it answers `marker` on its published port.
pub async fn wait_until_serving(client: &ApiClient, stage_id: i64, marker: &str, seconds: u64) -> Value {
    wait_for(
        seconds,
        &format!("stage {stage_id} to serve {marker:?}"),
        || async {
            let current = instances(client, stage_id)
                .await
                .into_iter()
                .find(|i| i["is_current"] == json!(true) && i["status"] == json!("running"))?;
            let (code, text) = fetch(&current, "/").await?;
            (code == 200 && text.trim() == marker).then_some(current)
        },
    )
    .await
}

/// Events of the poller about a project with `severity`, oldest first.
pub async fn poller_events(client: &ApiClient, project_id: i64, severity: &str) -> Vec<Value> {
    let (status, body) = client
        .get(&format!(
            "/api/events?source=poller&severity={severity}&project_id={project_id}&per_page=500"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut items = body["items"].as_array().expect("items").clone();
    items.reverse();
    items
}

pub async fn poll(client: &ApiClient, stage_id: i64) -> (StatusCode, Value) {
    client
        .post(&format!("/api/stages/{stage_id}/poll"), json!({}))
        .await
}

/// A `docker-registry serve` of a test's own, on a free port with its own storage, which the
/// test may stop and start again (the shared registries are never stopped). Killed when dropped.
pub struct PrivateRegistry {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PrivateRegistry {
    /// Starts a registry; with `notify`, it sends its notifications to that URL.
    pub async fn start(notify: Option<&str>) -> Self {
        let dir = tempfile::tempdir().expect("a temporary dir");
        let port = free_port();
        let mut config = format!(
            "version: 0.1\n\
             log:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: {secret}\n",
            storage = dir.path().join("storage").display(),
            secret = unique("secret"),
        );
        if let Some(url) = notify {
            config.push_str(&format!(
                "notifications:\n  endpoints:\n    - name: docker-watcher\n      url: {url}\n      \
                 timeout: 2s\n      threshold: 3\n      backoff: 1s\n      \
                 ignoredmediatypes:\n        - application/octet-stream\n"
            ));
        }
        std::fs::write(dir.path().join("config.yml"), config).expect("writes the config");
        let mut registry = Self {
            port,
            dir,
            child: None,
        };
        registry.restart().await;
        registry
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    /// Starts the registry (again) on the same port and storage; returns once it answers.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "the registry is running already");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("opens the registry log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clones the log handle"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("docker-registry starts (run scripts/services.sh to install it)");
        self.child = Some(child);
        let url = format!("http://{}/v2/", self.host());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if reqwest::get(&url)
                .await
                .is_ok_and(|a| a.status() == StatusCode::OK)
            {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
                panic!("the private registry does not answer on {url}; its log:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills the registry; it stays down until [`Self::restart`].
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
            let _ = child.wait().await;
        }
    }
}

#[tokio::test]
async fn a_followed_tag_is_deployed_by_its_schedule_and_a_new_digest_under_it_replaces_it() {
    let app = spawn_app().await;
    let mut images = LocalImages::default();
    let _cleanup = Cleanup::new(&app);
    let admin = app.admin().await;
    let image = format!("{}/{}", registry(), unique("dwtest/poll-tag-"));
    images.push(&format!("{image}:v1"), "web", "first build").await;
    let project_id = create_project(&admin, &image, json!({})).await;
    let stage_id = create_stage(&admin, project_id, "tag:v1", json!({"schedule": "@every 1s"})).await;

    let first = wait_until_serving(&admin, stage_id, "first build", 60).await;
    let history = deployments(&admin, stage_id).await;
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(
        (
            &history[0]["trigger"],
            &history[0]["status"],
            &history[0]["actor"]
        ),
        (&json!("poll"), &json!("succeeded"), &Value::Null),
        "{history:?}"
    );
    assert_eq!(stage(&admin, stage_id).await["available_tag"], "v1");

    let second_digest = images.push(&format!("{image}:v1"), "web", "second build").await;
    let second = wait_until_serving(&admin, stage_id, "second build", 60).await;
    assert_ne!(first["id"], second["id"]);
    assert_eq!(second["image_digest"], second_digest.as_str());
    // Polls of the unchanged digest deploy nothing more.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(deployments(&admin, stage_id).await.len(), 2);
    app.stop().await;
}

#[tokio::test]
async fn semver_selects_the_highest_matching_version_and_the_poll_answers_the_deployment() {
    let app = spawn_app().await;
    let mut images = LocalImages::default();
    let _cleanup = Cleanup::new(&app);
    let admin = app.admin().await;
    let image = format!("{}/{}", registry(), unique("dwtest/poll-semver-"));
    let project_id = create_project(&admin, &image, json!({})).await;
    // Created before the pushes, and polled hourly: only the call below deploys.
    let stage_id = create_stage(&admin, project_id, "semver:^1", json!({"schedule": "@every 1h"})).await;
    let mut digests = std::collections::BTreeMap::new();
    for tag in ["1.0.0", "1.2.0", "2.0.0", "1.10.0"] {
        digests.insert(tag, images.push(&format!("{image}:{tag}"), "web", tag).await);
    }

    let (status, found) = poll(&admin, stage_id).await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(found["stage_id"], stage_id);
    assert_eq!(found["tags_seen"], json!(["1.0.0", "1.10.0", "1.2.0", "2.0.0"]));
    assert_eq!(
        (
            &found["selected_tag"],
            &found["selected_digest"],
            &found["decision"]
        ),
        (&json!("1.10.0"), &json!(digests["1.10.0"]), &json!("deploy")),
        "{found}"
    );
    assert_eq!(found["release_at"], Value::Null);
    assert_eq!(found["deploy_error"], Value::Null);
    let deployment = &found["deployment"];
    assert_eq!(
        (
            &deployment["status"],
            &deployment["image_tag"],
            &deployment["trigger"]
        ),
        (&json!("succeeded"), &json!("1.10.0"), &json!("poll")),
        "{found}"
    );
    assert_eq!(deployment["actor"], "admin");
    wait_until_serving(&admin, stage_id, "1.10.0", 10).await;

    let (status, again) = poll(&admin, stage_id).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(
        (&again["decision"], &again["deployment"]),
        (&json!("up_to_date"), &Value::Null),
        "{again}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_monitor_only_stage_records_each_new_available_digest_once_and_deploys_nothing() {
    let app = spawn_app().await;
    let mut images = LocalImages::default();
    let _cleanup = Cleanup::new(&app);
    let admin = app.admin().await;
    let image = format!("{}/{}", registry(), unique("dwtest/poll-monitor-"));
    let project_id = create_project(&admin, &image, json!({})).await;
    let stage_id = create_stage(
        &admin,
        project_id,
        "tag:v1",
        json!({"schedule": "@every 1s", "auto_deploy": false}),
    )
    .await;
    let first = images.push(&format!("{image}:v1"), "web", "first").await;
    wait_for(30, "the available tag", || async {
        (stage(&admin, stage_id).await["available_tag"] == "v1").then_some(())
    })
    .await;

    let (status, found) = poll(&admin, stage_id).await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(
        (
            &found["decision"],
            &found["selected_digest"],
            &found["deployment"]
        ),
        (&json!("available"), &json!(first), &Value::Null),
        "{found}"
    );
    let second = images.push(&format!("{image}:v1"), "web", "second").await;
    let events = wait_for(30, "a second available event", || async {
        let events = poller_events(&admin, project_id, "info").await;
        (events.len() >= 2).then_some(events)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(poller_events(&admin, project_id, "info").await.len(), 2);
    assert_eq!(events[0]["details"]["digest"], first.as_str());
    assert_eq!(events[1]["details"]["digest"], second.as_str());
    assert!(
        events[1]["message"]
            .as_str()
            .is_some_and(|m| m.contains("v1 is available")),
        "{events:?}"
    );
    assert!(instances(&admin, stage_id).await.is_empty());
    assert!(deployments(&admin, stage_id).await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn min_release_age_holds_a_new_digest_back_until_it_is_old_enough() {
    let app = spawn_app().await;
    let mut images = LocalImages::default();
    let _cleanup = Cleanup::new(&app);
    let admin = app.admin().await;
    let image = format!("{}/{}", registry(), unique("dwtest/poll-age-"));
    let project_id = create_project(&admin, &image, json!({})).await;
    let stage_id = create_stage(
        &admin,
        project_id,
        "tag:v1",
        json!({"schedule": "@every 1s", "min_release_age": "3s"}),
    )
    .await;
    images.push(&format!("{image}:v1"), "web", "aged").await;

    let (status, found) = poll(&admin, stage_id).await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(found["decision"], "wait_release_age", "{found}");
    let release_at = found["release_at"].as_str().expect("a release time").to_owned();
    assert!(instances(&admin, stage_id).await.is_empty());

    wait_until_serving(&admin, stage_id, "aged", 60).await;
    let history = deployments(&admin, stage_id).await;
    assert_eq!(history.len(), 1, "{history:?}");
    let started = history[0]["started_at"].as_str().expect("a start time");
    // RFC 3339 UTC with milliseconds sorts as time does.
    assert!(
        started >= release_at.as_str(),
        "deployed at {started}, before {release_at}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_failed_digest_is_not_retried_by_later_polls_even_after_a_restart() {
    let mut app = spawn_app().await;
    let mut images = LocalImages::default();
    let _cleanup = Cleanup::new(&app);
    let admin = app.admin().await;
    let image = format!("{}/{}", registry(), unique("dwtest/poll-failed-"));
    images.push(&format!("{image}:v1"), "exit1", "broken").await;
    let project_id = create_project(&admin, &image, json!({})).await;
    let stage_id = create_stage(&admin, project_id, "tag:v1", json!({"schedule": "@every 1s"})).await;

    let failed = wait_for(60, "the failed deployment", || async {
        deployments(&admin, stage_id)
            .await
            .into_iter()
            .find(|d| d["status"] == json!("failed"))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(deployments(&admin, stage_id).await.len(), 1);
    let (status, found) = poll(&admin, stage_id).await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(
        (&found["decision"], &found["selected_digest"]),
        (&json!("skip_failed"), &failed["image_digest"]),
        "{found}"
    );

    app.restart().await;
    let admin = ApiClient::new(&app.base_url, admin.auth.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(deployments(&admin, stage_id).await.len(), 1);
    let (_, found) = poll(&admin, stage_id).await;
    assert_eq!(found["decision"], "skip_failed", "{found}");

    // A newer digest under the tag is deployed.
    images.push(&format!("{image}:v1"), "web", "fixed").await;
    wait_until_serving(&admin, stage_id, "fixed", 60).await;
    app.stop().await;
}

#[tokio::test]
async fn a_registry_outage_is_one_warn_when_it_starts_and_one_info_when_it_ends() {
    let app = spawn_app().await;
    let mut images = LocalImages::default();
    let admin = app.admin().await;
    let mut registry = PrivateRegistry::start(None).await;
    let image = format!("{}/{}", registry.host(), unique("dwtest/poll-outage-"));
    images.push(&format!("{image}:v1"), "web", "outage").await;
    let project_id = create_project(&admin, &image, json!({})).await;
    let stage_id = create_stage(
        &admin,
        project_id,
        "tag:v1",
        json!({"schedule": "@every 1s", "auto_deploy": false}),
    )
    .await;
    wait_for(30, "the available tag", || async {
        (stage(&admin, stage_id).await["available_tag"] == "v1").then_some(())
    })
    .await;

    registry.stop().await;
    let warns = wait_for(30, "the outage warning", || async {
        let warns = poller_events(&admin, project_id, "warn").await;
        (!warns.is_empty()).then_some(warns)
    })
    .await;
    assert!(
        warns[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains(&registry.host())),
        "{warns:?}"
    );
    // Retries go on (1 s, 2 s, 4 s apart) without another warning.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(poller_events(&admin, project_id, "warn").await.len(), 1);
    let (status, metrics) = app.anonymous().get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let errors: f64 = metrics
        .as_str()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with("docker_watcher_poll_errors_total "))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .expect("a poll error count");
    assert!(errors >= 3.0, "{errors} failed polls");
    // A poll asked for by hand tries, and says why it failed.
    let (status, body) = poll(&admin, stage_id).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "unavailable");

    registry.restart().await;
    let recovered = wait_for(60, "the recovery event", || async {
        let infos = poller_events(&admin, project_id, "info").await;
        let recovered: Vec<Value> = infos
            .into_iter()
            .filter(|e| e["message"].as_str().is_some_and(|m| m.contains("works again")))
            .collect();
        (!recovered.is_empty()).then_some(recovered)
    })
    .await;
    assert_eq!(recovered.len(), 1, "{recovered:?}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(poller_events(&admin, project_id, "warn").await.len(), 1);
    let infos = poller_events(&admin, project_id, "info").await;
    assert_eq!(
        infos
            .iter()
            .filter(|e| e["message"].as_str().is_some_and(|m| m.contains("works again")))
            .count(),
        1,
        "{infos:?}"
    );
    app.stop().await;
    registry.stop().await;
}

#[tokio::test]
async fn the_basic_auth_registry_is_polled_with_the_projects_credentials() {
    let app = spawn_app().await;
    let mut images = LocalImages::default();
    let admin = app.admin().await;
    let docker_config = tempfile::tempdir().expect("a temporary dir");
    docker_login(
        &auth_registry(),
        &auth_user(),
        &auth_password(),
        Some(docker_config.path()),
    )
    .await;
    let image = format!("{}/{}", auth_registry(), unique("dwtest/poll-auth-"));
    let digest = images
        .push_as(
            &format!("{image}:v1"),
            "web",
            "secret",
            Some(docker_config.path()),
        )
        .await;

    let with = create_project(
        &admin,
        &image,
        json!({"registry_username": auth_user(), "registry_password": auth_password()}),
    )
    .await;
    let stage_id = create_stage(
        &admin,
        with,
        "tag:v1",
        json!({"schedule": "@every 1h", "auto_deploy": false}),
    )
    .await;
    let (status, found) = poll(&admin, stage_id).await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(
        (&found["decision"], &found["selected_digest"], &found["tags_seen"]),
        (&json!("available"), &json!(digest), &json!(["v1"])),
        "{found}"
    );

    let without = create_project(&admin, &image, json!({})).await;
    let stage_id = create_stage(
        &admin,
        without,
        "tag:v1",
        json!({"schedule": "@every 1h", "auto_deploy": false}),
    )
    .await;
    let (status, body) = poll(&admin, stage_id).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("refused access")),
        "{body}"
    );
    app.stop().await;
}

#[tokio::test]
async fn polling_needs_a_member_and_an_existing_stage() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let viewer = app.user_with_role("viewer-poll", "viewer").await;
    let image = format!("{}/{}", registry(), unique("dwtest/poll-roles-"));
    let project_id = create_project(&admin, &image, json!({})).await;
    let stage_id = create_stage(&admin, project_id, "tag:v1", json!({"schedule": "@every 1h"})).await;

    let (status, body) = poll(&viewer, stage_id).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, _) = poll(&app.anonymous(), stage_id).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = poll(&admin, 999_999).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::NOT_FOUND, &json!("not_found")),
        "{body}"
    );
    let (status, body) = admin.post("/api/stages/abc/poll", json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // A repository without any push yet has no tags: nothing to do, not a failure.
    let (status, found) = poll(&admin, stage_id).await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(
        (&found["decision"], &found["tags_seen"], &found["selected_tag"]),
        (&json!("no_matching_tag"), &json!([]), &Value::Null),
        "{found}"
    );
    assert!(poller_events(&admin, project_id, "warn").await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn a_per_tag_stage_deploys_each_matching_tag_and_stops_the_one_deleted_from_the_registry() {
    let app = spawn_app().await;
    let mut images = LocalImages::default();
    let _cleanup = Cleanup::new(&app);
    let admin = app.admin().await;
    let repository = unique("dwtest/poll-pertag-");
    let image = format!("{}/{repository}", registry());
    let project_id = create_project(&admin, &image, json!({})).await;
    let stage_id = create_stage(&admin, project_id, "glob:pr-*", json!({"schedule": "@every 1s"})).await;
    images.push(&format!("{image}:pr-1"), "web", "preview one").await;
    let doomed = images.push(&format!("{image}:pr-2"), "web", "preview two").await;
    images
        .push(&format!("{image}:main"), "web", "not a preview")
        .await;

    let running = wait_for(90, "both previews to answer", || async {
        let mut running = Vec::new();
        for instance in instances(&admin, stage_id).await {
            if instance["status"] != json!("running") {
                continue;
            }
            let (_, text) = fetch(&instance, "/").await?;
            running.push((instance["image_tag"].as_str()?.to_owned(), text.trim().to_owned()));
        }
        running.sort();
        (running.len() == 2).then_some(running)
    })
    .await;
    assert_eq!(
        running,
        [
            ("pr-1".to_owned(), "preview one".to_owned()),
            ("pr-2".to_owned(), "preview two".to_owned())
        ]
    );
    assert!(
        deployments(&admin, stage_id)
            .await
            .iter()
            .all(|d| d["trigger"] == "poll" && d["image_tag"] != "main")
    );

    // Deleting pr-2's manifest takes the tag out of the registry; its instance is stopped.
    let deleted = reqwest::Client::new()
        .delete(format!(
            "http://{}/v2/{repository}/manifests/{doomed}",
            registry()
        ))
        .send()
        .await
        .expect("the registry answers");
    assert_eq!(deleted.status(), StatusCode::ACCEPTED);
    wait_for(60, "pr-2's instance to stop", || async {
        let all = instances(&admin, stage_id).await;
        let stopped = all
            .iter()
            .any(|i| i["image_tag"] == "pr-2" && i["status"] == json!("stopped"));
        let serving = all
            .iter()
            .any(|i| i["image_tag"] == "pr-1" && i["status"] == json!("running"));
        (stopped && serving).then_some(())
    })
    .await;
    app.stop().await;
}
