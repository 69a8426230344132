//! Workloads (SPEC §3 "Workloads"), end to end against the real Docker engine and registry,
//! with the `app` test image (busybox httpd with CGI: it appends its marker to `$APP_WRITE` at
//! start, serves files and fetches URLs): a named volume keeps what version 1 wrote through a
//! deploy of version 2, a rollback and a stale cleanup, and goes only with an admin's delete
//! with `?remove_volumes=true`; a stage reaches another of its project by its name on the
//! project network, and a stage of another project cannot; the rest of the spec (labels, user,
//! restart policy, stop signal and grace) reaches the container; a spec change redeploys an
//! auto-deploy stage (trigger `config`) and is shown on a monitor-only stage's page; bad input
//! is a 400 naming the field and changes nothing.

use std::time::Duration;

use chrono::TimeDelta;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::deploy::{Cleanup, Variant, create_project, deploy_ok, fetch, instance, push_image, unique};
use crate::helpers::{ApiClient, TestApp, assert_field_error, spawn_app};

/// `docker` with `args`; its standard output, trimmed, and whether it succeeded.
pub fn docker(args: &[&str]) -> (bool, String) {
    let output = std::process::Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).trim().to_owned(),
    )
}

async fn project_name(client: &ApiClient, project_id: i64) -> String {
    let (status, project) = client.get(&format!("/api/projects/{project_id}")).await;
    assert_eq!(status, StatusCode::OK, "{project}");
    project["name"].as_str().expect("a name").to_owned()
}

/// Creates a stage called `name` with the `app` image's port and `container` merged in.
async fn stage_named(
    client: &ApiClient,
    project_id: i64,
    name: &str,
    auto_deploy: bool,
    container: Value,
) -> Value {
    let mut spec = json!({"port": 8080, "min_ready_seconds": 1});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), container.as_object()) {
        spec.extend(extra.clone());
    }
    let (status, stage) = client
        .post(
            &format!("/api/projects/{project_id}/stages"),
            json!({"name": name, "tag_policy": "tag:v1", "auto_deploy": auto_deploy, "container": spec}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{stage}");
    stage
}

async fn current_instance(client: &ApiClient, stage_id: i64) -> Value {
    let (status, stage) = client.get(&format!("/api/stages/{stage_id}")).await;
    assert_eq!(status, StatusCode::OK, "{stage}");
    let id = stage["current_instance_id"].as_i64().expect("a current instance");
    instance(client, id).await
}

/// What the current instance of the stage serves from its volume.
async fn volume_file(client: &ApiClient, stage_id: i64) -> String {
    let current = current_instance(client, stage_id).await;
    let (code, text) = fetch(&current, "/cgi-bin/file?/data/log")
        .await
        .expect("the app answers");
    assert_eq!(code, 200, "{text}");
    text
}

fn volume_exists(name: &str) -> bool {
    docker(&["volume", "inspect", name]).0
}

#[tokio::test]
async fn a_named_volume_outlives_redeploys_rollbacks_and_stale_cleanup_until_an_admin_removes_it() {
    let app: TestApp = spawn_app().await;
    let admin = app.admin().await;
    let member = app.user_with_role("volume-member", "member").await;
    let repo = unique("dwtest/volumes-");
    let mut cleanup = Cleanup::new(&app);
    cleanup.repo(&repo);
    let v1 = unique("written by v1 ");
    let v2 = unique("written by v2 ");
    push_image(&repo, "v1", Variant::App, &v1).await;
    push_image(&repo, "v2", Variant::App, &v2).await;
    let project_id = create_project(&admin, &repo).await;
    let project = project_name(&admin, project_id).await;
    let stage = stage_named(
        &member,
        project_id,
        "app",
        false,
        json!({"env": {"APP_WRITE": "/data/log"}, "volumes": [{"source": "data", "target": "/data"}]}),
    )
    .await;
    let stage_id = stage["id"].as_i64().expect("a stage id");
    assert_eq!(
        stage["container"]["volumes"],
        json!([{"source": "data", "target": "/data", "read_only": false}])
    );

    let first = deploy_ok(&member, stage_id, "v1").await;
    assert_eq!(volume_file(&member, stage_id).await, format!("{v1}\n"));
    let volume = format!("dw-{project}-data");
    let (_, labels) = docker(&["volume", "inspect", "-f", "{{json .Labels}}", &volume]);
    let labels: Value = serde_json::from_str(&labels).expect("labels as JSON");
    assert_eq!(
        labels["io.docker-watcher.installation"],
        app.app().state().installation_id.as_ref(),
        "the volume carries the installation's label: {labels}"
    );
    assert_eq!(labels["io.docker-watcher.project"], project.as_str());

    // Version 2 finds what version 1 wrote, and adds its own line.
    let second = deploy_ok(&member, stage_id, "v2").await;
    assert_eq!(volume_file(&member, stage_id).await, format!("{v1}\n{v2}\n"));

    // A rollback restarts version 1 on the same volume: all three lines are there.
    let (status, back) = member
        .post(&format!("/api/stages/{stage_id}/rollback"), json!({}))
        .await;
    assert!(status.is_success(), "{back}");
    assert_eq!(back["status"], "succeeded", "{back}");
    assert_eq!(current_instance(&member, stage_id).await["id"], first["id"]);
    assert_eq!(
        volume_file(&member, stage_id).await,
        format!("{v1}\n{v2}\n{v1}\n")
    );

    // Stale cleanup removes the stopped version 2 and its container, not the volume.
    app.clock.advance(TimeDelta::days(8) + TimeDelta::seconds(1));
    let (status, scan) = admin.post("/api/containers/stale/scan", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{scan}");
    let (status, done) = admin.post("/api/containers/stale/cleanup", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["removed"], json!([second["id"]]), "{done}");
    assert!(volume_exists(&volume), "stale cleanup keeps the volume");
    assert_eq!(
        volume_file(&member, stage_id).await,
        format!("{v1}\n{v2}\n{v1}\n")
    );

    // Removing the last instance and deleting the stage: volumes go only with an admin's ask.
    let (status, body) = member
        .post(&format!("/api/instances/{}/stop", first["id"]), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = member.delete(&format!("/api/instances/{}", first["id"])).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert!(volume_exists(&volume), "removing an instance keeps the volume");
    let (status, body) = member
        .delete(&format!("/api/stages/{stage_id}?remove_volumes=true"))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = admin
        .delete(&format!("/api/stages/{stage_id}?remove_volumes=maybe"))
        .await;
    assert_field_error(status, &body, "remove_volumes");
    assert!(volume_exists(&volume));
    let (status, body) = admin
        .delete(&format!("/api/stages/{stage_id}?remove_volumes=true"))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert!(
        !volume_exists(&volume),
        "an admin's delete with remove_volumes removes it"
    );

    // The project's network goes with the project.
    let network = format!("dw-{project}");
    assert!(docker(&["network", "inspect", &network]).0);
    let (status, body) = admin.delete(&format!("/api/projects/{project_id}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert!(!docker(&["network", "inspect", &network]).0);
    app.stop().await;
}

#[tokio::test]
async fn a_stage_reaches_another_of_its_project_by_name_and_a_stage_of_another_project_cannot() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let repo = unique("dwtest/networks-");
    let mut cleanup = Cleanup::new(&app);
    cleanup.repo(&repo);
    let marker = unique("served by web ");
    push_image(&repo, "v1", Variant::App, &marker).await;

    // An existing network a stage joins besides its project's.
    let shared = unique("dwtest-shared-");
    let label = format!(
        "io.docker-watcher.installation={}",
        app.app().state().installation_id
    );
    assert!(docker(&["network", "create", "--label", &label, &shared]).0);

    let project_id = create_project(&admin, &repo).await;
    let web = stage_named(&admin, project_id, "web", false, json!({})).await;
    let probe = stage_named(&admin, project_id, "probe", false, json!({"networks": [shared]})).await;
    let other_project = create_project(&admin, &repo).await;
    let outsider = stage_named(&admin, other_project, "probe", false, json!({})).await;
    for stage in [&web, &probe, &outsider] {
        deploy_ok(&admin, stage["id"].as_i64().unwrap(), "v1").await;
    }

    let probe_instance = current_instance(&admin, probe["id"].as_i64().unwrap()).await;
    let (code, answer) = fetch(&probe_instance, "/cgi-bin/fetch?web:8080/")
        .await
        .expect("the probe answers");
    assert_eq!(
        (code, answer.trim()),
        (200, marker.as_str()),
        "reached by its name"
    );
    let container = probe_instance["container_id"].as_str().expect("a container");
    let (_, networks) = docker(&[
        "inspect",
        "-f",
        "{{range $name, $_ := .NetworkSettings.Networks}}{{$name}} {{end}}",
        container,
    ]);
    assert!(networks.split_whitespace().any(|n| n == shared), "{networks}");

    let outsider_instance = current_instance(&admin, outsider["id"].as_i64().unwrap()).await;
    let (code, answer) = fetch(&outsider_instance, "/cgi-bin/fetch?web:8080/")
        .await
        .expect("the outsider answers");
    assert_eq!(code, 200);
    assert!(
        !answer.contains(&marker) && answer.contains("fetch failed"),
        "another project's stage cannot reach web: {answer}"
    );

    // An unknown network, and one docker-watcher manages (another project's), are refused.
    let other_network = format!("dw-{}", project_name(&admin, other_project).await);
    for network in [unique("no-such-network-"), other_network] {
        let (status, body) = admin
            .post(
                &format!("/api/projects/{project_id}/stages"),
                json!({"name": "joiner", "tag_policy": "tag:v1", "container": {"networks": [network]}}),
            )
            .await;
        assert_field_error(status, &body, "container.networks");
    }
    app.stop().await;
}

#[tokio::test]
async fn bad_workload_input_is_a_400_naming_the_field_and_changes_nothing() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let repo = unique("dwtest/workload-input-");
    let project_id = create_project(&admin, &repo).await;
    let stage = stage_named(&admin, project_id, "prod", false, json!({})).await;
    let stage_id = stage["id"].as_i64().unwrap();
    let allowed = tempfile::tempdir().expect("a directory to share");
    let allowed_path = allowed.path().to_str().expect("a UTF-8 path").to_owned();

    for (setting, field) in [
        (json!(["/"]), "allowed_bind_paths"),
        (json!(["/var"]), "allowed_bind_paths"),
        (json!(["relative"]), "allowed_bind_paths"),
    ] {
        let (status, body) = admin
            .patch("/api/settings", json!({"allowed_bind_paths": setting}))
            .await;
        assert_field_error(status, &body, field);
    }
    let bind = |source: &str| json!({"volumes": [{"source": source, "target": "/srv"}]});
    let cases = [
        (bind(&format!("{allowed_path}/uploads")), "container.volumes"),
        (bind("/var/run/docker.sock"), "container.volumes"),
        (bind("/"), "container.volumes"),
        (
            json!({"volumes": [{"source": "data", "target": "data"}]}),
            "container.volumes",
        ),
        (json!({"networks": ["host"]}), "container.networks"),
        (json!({"restart_policy": "sometimes"}), "container.restart_policy"),
        (json!({"stop_signal": "SIGBOGUS"}), "container.stop_signal"),
        (
            json!({"stop_grace_seconds": 7200}),
            "container.stop_grace_seconds",
        ),
        (json!({"user": "root; reboot"}), "container.user"),
        (
            json!({"labels": {"io.docker-watcher.stage": "x"}}),
            "container.labels",
        ),
    ];
    for (container, field) in &cases {
        let (status, body) = admin
            .patch(
                &format!("/api/stages/{stage_id}"),
                json!({"container": container}),
            )
            .await;
        assert_field_error(status, &body, field);
    }
    let (_, after) = admin.get(&format!("/api/stages/{stage_id}")).await;
    assert_eq!(after["container"], stage["container"], "nothing was written");
    assert_eq!(after["updated_at"], stage["updated_at"]);

    // Once an admin allows the directory, a bind mount under it is accepted.
    let (status, body) = admin
        .patch(
            "/api/settings",
            json!({"allowed_bind_paths": [allowed_path.clone()]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = admin
        .patch(
            &format!("/api/stages/{stage_id}"),
            json!({"container": bind(&format!("{allowed_path}/uploads"))}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = admin
        .patch(
            &format!("/api/stages/{stage_id}"),
            json!({"container": bind("/var/run/docker.sock")}),
        )
        .await;
    assert_field_error(status, &body, "container.volumes");
    app.stop().await;
}

/// Waits until the stage has a deployment with `trigger` that finished; returns it.
async fn finished_deployment(client: &ApiClient, stage_id: i64, trigger: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, list) = client.get(&format!("/api/deployments?stage_id={stage_id}")).await;
        assert_eq!(status, StatusCode::OK, "{list}");
        if let Some(done) = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|d| d["trigger"] == trigger && d["status"] != "running")
        {
            return done.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no finished {trigger} deployment: {list}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_runtime_spec_reaches_the_container_and_a_change_redeploys_or_is_shown() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let repo = unique("dwtest/runtime-");
    let mut cleanup = Cleanup::new(&app);
    cleanup.repo(&repo);
    let digest = push_image(&repo, "v1", Variant::App, &unique("runtime v1 ")).await;
    let project_id = create_project(&admin, &repo).await;
    let runtime = json!({
        "labels": {"com.example.team": "shop"},
        "user": "1000:1000",
        "restart_policy": "on-failure:3",
        "stop_signal": "quit",
        "stop_grace_seconds": 3,
    });
    // Auto-deploy: the poller deploys `tag:v1` as soon as the stage exists.
    let stage = stage_named(&admin, project_id, "auto", true, runtime).await;
    let stage_id = stage["id"].as_i64().unwrap();
    assert_eq!(stage["container"]["stop_signal"], "SIGQUIT");
    assert_eq!(stage["container"]["restart_policy"], "on-failure:3");
    let first = finished_deployment(&admin, stage_id, "poll").await;
    assert_eq!(first["status"], "succeeded", "{first}");
    let running = current_instance(&admin, stage_id).await;
    let container = running["container_id"].as_str().unwrap().to_owned();
    let (_, inspected) = docker(&[
        "inspect",
        "-f",
        "{{index .Config.Labels \"com.example.team\"}}|{{.Config.User}}|{{.HostConfig.RestartPolicy.Name}}:{{.HostConfig.RestartPolicy.MaximumRetryCount}}|{{.Config.StopSignal}}|{{.Config.StopTimeout}}",
        &container,
    ]);
    assert_eq!(inspected, "shop|1000:1000|on-failure:3|SIGQUIT|3");

    // A change of the spec: the same digest is redeployed with it (trigger `config`).
    let mut container_spec = stage["container"].clone();
    container_spec["labels"] = json!({"com.example.team": "checkout"});
    let (status, patched) = admin
        .patch(
            &format!("/api/stages/{stage_id}"),
            json!({"container": container_spec}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    let redeploy = finished_deployment(&admin, stage_id, "config").await;
    assert_eq!(redeploy["status"], "succeeded", "{redeploy}");
    assert_eq!(redeploy["image_digest"], digest.as_str());
    let now = current_instance(&admin, stage_id).await;
    assert_ne!(now["id"], running["id"]);
    let (_, team) = docker(&[
        "inspect",
        "-f",
        "{{index .Config.Labels \"com.example.team\"}}",
        now["container_id"].as_str().unwrap(),
    ]);
    assert_eq!(team, "checkout");

    // A monitor-only stage is not redeployed; its page says the configuration changed.
    let watched = stage_named(&admin, project_id, "watched", false, json!({})).await;
    let watched_id = watched["id"].as_i64().unwrap();
    deploy_ok(&admin, watched_id, "v1").await;
    let mut spec = watched["container"].clone();
    spec["stop_grace_seconds"] = json!(5);
    let (status, body) = admin
        .patch(&format!("/api/stages/{watched_id}"), json!({"container": spec}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let page = admin
        .request(reqwest::Method::GET, &format!("/stages/{watched_id}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Configuration changed — redeploy"), "{page}");
    let (_, list) = admin
        .get(&format!("/api/deployments?stage_id={watched_id}"))
        .await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "{list}");

    // The spec round-trips through the stack file.
    let export = admin
        .request(reqwest::Method::GET, "/api/export")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(export.contains("restart_policy = \"on-failure:3\""), "{export}");
    assert!(export.contains("stop_signal = \"SIGQUIT\""), "{export}");
    let (status, plan) = admin
        .post("/api/apply", json!({"content": export, "dry_run": true}))
        .await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    assert_eq!(plan["changed"], false, "the export applies as no change: {plan}");
    app.stop().await;
}

#[tokio::test]
async fn a_pre_deploy_hook_runs_once_before_the_new_version_and_its_failure_keeps_the_old_one() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let repo = unique("dwtest/hooks-");
    let mut cleanup = Cleanup::new(&app);
    cleanup.repo(&repo);
    let v1 = unique("hooks v1 ");
    push_image(&repo, "v1", Variant::App, &v1).await;
    push_image(&repo, "v2", Variant::App, &unique("hooks v2 ")).await;
    let project_id = create_project(&admin, &repo).await;
    let (status, stage) = admin
        .post(
            &format!("/api/projects/{project_id}/stages"),
            json!({
                "name": "app",
                "tag_policy": "tag:v1",
                "auto_deploy": false,
                "container": {
                    "port": 8080,
                    "min_ready_seconds": 1,
                    "env": {"APP_WRITE": "/data/log"},
                    "secret_env": {"MIGRATION_TOKEN": "hook-secret-value"},
                    "volumes": [{"source": "data", "target": "/data"}],
                },
                "hooks": {
                    "pre_deploy": {"command": ["sh", "-c", "echo migrating with $MIGRATION_TOKEN; echo migrated >> /data/log"]},
                    "post_deploy": {"command": ["sh", "-c", "echo post hook complains >&2; exit 1"], "timeout_seconds": 30},
                },
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{stage}");
    assert_eq!(stage["hooks"]["pre_deploy"]["timeout_seconds"], 300);
    let stage_id = stage["id"].as_i64().unwrap();

    let (status, deployment) = admin
        .post(&format!("/api/stages/{stage_id}/deploy"), json!({"tag": "v1"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{deployment}");
    assert_eq!(
        deployment["status"], "succeeded",
        "a failing post_deploy does not fail it"
    );
    // The hook wrote before the app started (the app appends its marker at start), once.
    assert_eq!(volume_file(&admin, stage_id).await, format!("migrated\n{v1}\n"));
    let output = deployment["hook_output"].as_str().expect("the hooks' output");
    assert!(output.contains("--- pre_deploy ---\nmigrating with"), "{output}");
    assert!(output.contains("post hook complains"), "{output}");
    assert!(
        !output.contains("hook-secret-value"),
        "secrets are masked: {output}"
    );
    let (_, warnings) = admin.get("/api/events?source=deployer&severity=warn").await;
    assert!(
        warnings
            .to_string()
            .contains("the post_deploy hook exited with status 1"),
        "{warnings}"
    );

    // A failing pre_deploy: the deploy fails, version 1 keeps serving, the output is kept.
    let (status, patched) = admin
        .patch(
            &format!("/api/stages/{stage_id}"),
            json!({"hooks": {"pre_deploy": {"command": ["sh", "-c", "echo migration 42 failed >&2; exit 3"]}}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["hooks"]["post_deploy"], Value::Null);
    let (status, failed) = admin
        .post(&format!("/api/stages/{stage_id}/deploy"), json!({"tag": "v2"}))
        .await;
    assert!(status.is_success(), "{failed}");
    assert_eq!(failed["status"], "failed", "{failed}");
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("exited with status 3") && error.contains("migration 42 failed"),
        "{error}"
    );
    assert!(
        failed["hook_output"]
            .as_str()
            .unwrap_or_default()
            .contains("migration 42 failed")
    );
    let (_, errors) = admin.get("/api/events?source=deployer&severity=error").await;
    assert!(errors.to_string().contains("migration 42 failed"), "{errors}");
    let current = current_instance(&admin, stage_id).await;
    assert_eq!(current["image_tag"], "v1");
    let (code, served) = fetch(&current, "/").await.expect("v1 still answers");
    assert_eq!((code, served.trim()), (200, v1.as_str()));
    assert_eq!(volume_file(&admin, stage_id).await, format!("migrated\n{v1}\n"));

    // No hook container is left behind.
    let filter = format!(
        "label=io.docker-watcher.installation={}",
        app.app().state().installation_id
    );
    let (_, left) = docker(&[
        "ps",
        "-aq",
        "--filter",
        &filter,
        "--filter",
        "label=io.docker-watcher.hook",
    ]);
    assert!(left.is_empty(), "hook containers left: {left}");

    for (hooks, field) in [
        (json!({"pre_deploy": {"command": []}}), "hooks.pre_deploy.command"),
        (
            json!({"post_deploy": {"command": ["x"], "timeout_seconds": 0}}),
            "hooks.post_deploy.timeout_seconds",
        ),
    ] {
        let (status, body) = admin
            .patch(&format!("/api/stages/{stage_id}"), json!({"hooks": hooks}))
            .await;
        assert_field_error(status, &body, field);
    }
    app.stop().await;
}
