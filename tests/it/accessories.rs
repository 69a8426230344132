//! Accessories (SPEC §3 "Workloads"), end to end against the real Docker engine and registry,
//! with the `app` test image (busybox httpd with CGI) as both the application and its
//! accessory: the app's `/cgi-bin/fetch?db:8080/` reaches the accessory `db` by name on the
//! project network — through the proxy — while a stage of another project cannot; the
//! accessory's secret is in its container's environment and nowhere else (no API answer for any
//! role, not the data dir, masked in its logs); a PATCH only makes it out of date and a restart
//! applies it, keeping its named volume; stale cleanup and the Docker sync never remove it while
//! it is defined, and deleting it removes its container (its volumes only when asked); bad
//! input is a 400 naming the field, a taken name a 409, and a viewer cannot create one. The
//! project page lists them and its forms create, edit, restart, stop and delete them.

use std::time::Duration;

use chrono::TimeDelta;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::deploy::{
    Cleanup, Variant, create_project, deploy_ok, fetch, push_image, registry, through_proxy_at, unique,
};
use crate::helpers::{ADMIN_PASSWORD, ApiClient, assert_field_error, spawn_app};
use crate::secrets::files_under;
use crate::ui::{UiSession, add_user, pairs};
use crate::workloads::docker;

/// Creates the accessory and asserts it came up.
async fn create_accessory(client: &ApiClient, project_id: i64, body: Value) -> Value {
    let (status, accessory) = client
        .post(&format!("/api/projects/{project_id}/accessories"), body)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{accessory}");
    assert_eq!(accessory["status"], "running", "{accessory}");
    accessory
}

/// A stage of the project named `name`, routed at `hostname`, running the `app` image.
async fn routed_stage(client: &ApiClient, project_id: i64, name: &str, hostname: &str) -> i64 {
    let (status, stage) = client
        .post(
            &format!("/api/projects/{project_id}/stages"),
            json!({"name": name, "tag_policy": "tag:v1", "auto_deploy": false, "hostname": hostname,
                   "container": {"port": 8080, "min_ready_seconds": 1}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{stage}");
    stage["id"].as_i64().expect("a stage id")
}

fn container_env(container: &str) -> String {
    let (ok, env) = docker(&[
        "inspect",
        "-f",
        "{{range .Config.Env}}{{println .}}{{end}}",
        container,
    ]);
    assert!(ok, "inspecting {container}");
    env
}

#[tokio::test]
async fn an_app_reaches_its_accessory_by_name_and_the_accessory_secret_stays_in_its_container() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let member = app.user_with_role("accessory-member", "member").await;
    let viewer = app.user_with_role("accessory-viewer", "viewer").await;
    let repo = unique("dwtest/accessories-");
    let mut cleanup = Cleanup::new(&app);
    cleanup.repo(&repo);
    let db_marker = unique("answered by db ");
    push_image(&repo, "v1", Variant::App, "the app").await;
    push_image(&repo, "db1", Variant::App, &db_marker).await;
    let secret = unique("accessory-secret-value-");

    let project_id = create_project(&admin, &repo).await;
    let accessory = create_accessory(
        &member,
        project_id,
        json!({"name": "db", "image": format!("{}/{repo}:db1", registry()), "port": 8080,
               "env": {"APP_PRINT_ENV": "1", "PLAIN": "plain-value"},
               "secret_env": {"DB_PASSWORD": secret}}),
    )
    .await;
    let id = accessory["id"].as_i64().expect("an id");
    assert_eq!(accessory["secret_env_keys"], json!(["DB_PASSWORD"]));
    assert_eq!(accessory["out_of_date"], false);
    let container = accessory["container_id"]
        .as_str()
        .expect("a container")
        .to_owned();
    let project: Value = admin.get(&format!("/api/projects/{project_id}")).await.1;
    let project_name = project["name"].as_str().expect("a name");
    assert_eq!(accessory["container_name"], format!("dw-{project_name}-db"));

    // The container: labelled, on the project network as `db`, restarted unless stopped, with
    // the secret in its environment.
    let (_, labels) = docker(&["inspect", "-f", "{{json .Config.Labels}}", &container]);
    let labels: Value = serde_json::from_str(&labels).expect("labels as JSON");
    assert_eq!(labels["io.docker-watcher.accessory"], id.to_string());
    assert_eq!(
        labels["io.docker-watcher.installation"],
        app.app().state().installation_id.as_ref()
    );
    let (_, policy) = docker(&["inspect", "-f", "{{.HostConfig.RestartPolicy.Name}}", &container]);
    assert_eq!(policy, "unless-stopped");
    let network = format!("dw-{project_name}");
    let (_, aliases) = docker(&[
        "inspect",
        "-f",
        &format!("{{{{json (index .NetworkSettings.Networks \"{network}\").Aliases}}}}"),
        &container,
    ]);
    assert!(aliases.contains("\"db\""), "{aliases}");
    assert!(
        container_env(&container).contains(&format!("DB_PASSWORD={secret}")),
        "the secret reaches the container"
    );

    // The app reaches it by name, through the proxy.
    let host = format!("{}.accessories.test", unique("web"));
    let web = routed_stage(&member, project_id, "web", &host).await;
    deploy_ok(&member, web, "v1").await;
    let (code, answer) = through_proxy_at(&app, &host, "/cgi-bin/fetch?db:8080/").await;
    assert_eq!((code, answer.as_str()), (200, db_marker.as_str()));

    // A stage of another project cannot.
    let other_project = create_project(&admin, &repo).await;
    let outsider = routed_stage(
        &member,
        other_project,
        "web",
        &format!("{}.accessories.test", unique("out")),
    )
    .await;
    let outsider = deploy_ok(&member, outsider, "v1").await;
    let (code, answer) = fetch(&outsider, "/cgi-bin/fetch?db:8080/")
        .await
        .expect("the outsider answers");
    assert_eq!(code, 200);
    assert!(
        !answer.contains(&db_marker) && answer.contains("fetch failed"),
        "another project's stage cannot reach db: {answer}"
    );

    // The secret is in no answer, for any role; the viewer sees env keys only.
    let (_, seen) = viewer.get(&format!("/api/accessories/{id}")).await;
    assert_eq!(seen["env"], Value::Null, "{seen}");
    assert_eq!(seen["env_keys"], json!(["APP_PRINT_ENV", "PLAIN"]));
    let (_, seen) = member.get(&format!("/api/accessories/{id}")).await;
    assert_eq!(seen["env"]["PLAIN"], "plain-value");
    let mut answers = Vec::new();
    for client in [&admin, &member, &viewer] {
        for path in [
            format!("/api/accessories/{id}"),
            format!("/api/projects/{project_id}/accessories"),
            format!("/api/accessories/{id}/logs"),
            "/api/events?per_page=500&severity=info".to_owned(),
            format!("/projects/{project_id}"),
        ] {
            let response = client
                .request(reqwest::Method::GET, &path)
                .send()
                .await
                .expect("sent");
            assert!(
                response.status().is_success(),
                "GET {path}: {}",
                response.status()
            );
            answers.push((path, response.text().await.expect("a body")));
        }
    }
    let (_, logs) = admin.get(&format!("/api/accessories/{id}/logs")).await;
    assert!(
        logs.to_string().contains("DB_PASSWORD=[secret]"),
        "the accessory printed its environment, masked: {logs}"
    );
    for (path, answer) in &answers {
        assert!(!answer.contains(&secret), "GET {path} shows the secret");
    }
    for (file, bytes) in files_under(app.data_dir.path()) {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{file} holds the secret in clear"
        );
    }
    app.stop().await;
}

/// What the accessory's own port answers at `path`.
async fn accessory_answer(client: &ApiClient, id: i64, path: &str) -> String {
    let (_, accessory) = client.get(&format!("/api/accessories/{id}")).await;
    let (code, text) = fetch(&accessory, path).await.expect("the accessory answers");
    assert_eq!(code, 200, "{text}");
    text.trim().to_owned()
}

#[tokio::test]
async fn a_change_waits_for_a_restart_and_the_accessory_survives_stale_cleanup_until_deleted() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let member = app.user_with_role("accessory-member", "member").await;
    let repo = unique("dwtest/accessory-upgrade-");
    let mut cleanup = Cleanup::new(&app);
    cleanup.repo(&repo);
    let (one, two) = (unique("db one "), unique("db two "));
    push_image(&repo, "db1", Variant::App, &one).await;
    push_image(&repo, "db2", Variant::App, &two).await;
    let project_id = create_project(&admin, &repo).await;
    let project: Value = admin.get(&format!("/api/projects/{project_id}")).await.1;
    let volume = format!("dw-{}-dbdata", project["name"].as_str().expect("a name"));
    let accessory = create_accessory(
        &member,
        project_id,
        json!({"name": "db", "image": format!("{}/{repo}:db1", registry()), "port": 8080,
               "env": {"APP_WRITE": "/data/log"},
               "volumes": [{"source": "dbdata", "target": "/data"}]}),
    )
    .await;
    let id = accessory["id"].as_i64().expect("an id");
    let first_container = accessory["container_id"]
        .as_str()
        .expect("a container")
        .to_owned();
    assert_eq!(accessory_answer(&member, id, "/").await, one);

    // A PATCH records the new image and nothing else happens until a restart.
    let (status, patched) = member
        .patch(
            &format!("/api/accessories/{id}"),
            json!({"image": format!("{}/{repo}:db2", registry())}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["out_of_date"], true, "{patched}");
    assert_eq!(patched["container_id"], first_container.as_str());
    assert_eq!(accessory_answer(&member, id, "/").await, one);
    let (status, restarted) = member
        .post(&format!("/api/accessories/{id}/restart"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{restarted}");
    assert_eq!(
        (&restarted["status"], &restarted["out_of_date"]),
        (&json!("running"), &json!(false)),
        "{restarted}"
    );
    assert_ne!(restarted["container_id"], first_container.as_str());
    assert!(
        !docker(&["inspect", &first_container]).0,
        "the old container is gone"
    );
    assert_eq!(accessory_answer(&member, id, "/").await, two);
    // Its named volume kept what the first container wrote.
    assert_eq!(
        accessory_answer(&member, id, "/cgi-bin/file?/data/log").await,
        format!("{one}\n{two}")
    );

    // Stopped, it is `stopped`; neither a stale cleanup eight days later nor a reconcile touch it.
    let (status, stopped) = member
        .post(&format!("/api/accessories/{id}/stop"), json!({}))
        .await;
    assert_eq!(
        (status, &stopped["status"]),
        (StatusCode::OK, &json!("stopped")),
        "{stopped}"
    );
    let container = stopped["container_id"].as_str().expect("a container").to_owned();
    app.clock.advance(TimeDelta::days(8) + TimeDelta::seconds(1));
    let (status, scan) = admin.post("/api/containers/stale/scan", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{scan}");
    let (status, done) = admin.post("/api/containers/stale/cleanup", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    let report = app.app().state().sync.reconcile_now().await.expect("a reconcile");
    assert!(report.removed.is_empty(), "{report:?}");
    assert!(
        docker(&["inspect", &container]).0,
        "the accessory's container is kept"
    );
    let (_, after) = member.get(&format!("/api/accessories/{id}")).await;
    assert_eq!(after["status"], "stopped", "{after}");
    let (status, started) = member
        .post(&format!("/api/accessories/{id}/start"), json!({}))
        .await;
    assert_eq!(
        (status, &started["status"]),
        (StatusCode::OK, &json!("running")),
        "{started}"
    );
    assert_eq!(started["container_id"], container.as_str());

    // Removed behind our back, the sync says `missing`; a start brings a new container.
    assert!(docker(&["rm", "-f", &container]).0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, now) = member.get(&format!("/api/accessories/{id}")).await;
        if now["status"] == "missing" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never missing: {now}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, started) = member
        .post(&format!("/api/accessories/{id}/start"), json!({}))
        .await;
    assert_eq!(
        (status, &started["status"]),
        (StatusCode::OK, &json!("running")),
        "{started}"
    );
    let container = started["container_id"].as_str().expect("a container").to_owned();

    // Deleting: admins only; the container goes, the volume only when asked.
    let (status, body) = member.delete(&format!("/api/accessories/{id}")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = admin.delete(&format!("/api/accessories/{id}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert!(!docker(&["inspect", &container]).0, "the container went with it");
    assert!(docker(&["volume", "inspect", &volume]).0, "the volume is kept");
    let again = create_accessory(
        &member,
        project_id,
        json!({"name": "db", "image": format!("{}/{repo}:db1", registry()),
               "volumes": [{"source": "dbdata", "target": "/data"}]}),
    )
    .await;
    let (status, body) = admin
        .delete(&format!("/api/accessories/{}?remove_volumes=true", again["id"]))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert!(!docker(&["volume", "inspect", &volume]).0, "removed on request");
    let (status, _) = member.get(&format!("/api/accessories/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.stop().await;
}

#[tokio::test]
async fn bad_accessory_input_is_a_400_naming_the_field_and_a_viewer_cannot_create_one() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let viewer = app.user_with_role("accessory-viewer", "viewer").await;
    let repo = unique("dwtest/accessory-input-");
    let mut cleanup = Cleanup::new(&app);
    cleanup.repo(&repo);
    push_image(&repo, "db1", Variant::App, "db").await;
    let project_id = create_project(&admin, &repo).await;
    let image = format!("{}/{repo}:db1", registry());
    let path = format!("/api/projects/{project_id}/accessories");
    let with = |extra: Value| {
        let mut body = json!({"name": "db", "image": image});
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        body
    };
    for (body, field) in [
        (with(json!({"name": "Not_A_Label"})), "name"),
        (with(json!({"name": "-db"})), "name"),
        (with(json!({"image": format!("{}/{repo}", registry())})), "image"),
        (with(json!({"image": "https://example.test/db:1"})), "image"),
        (
            with(json!({"volumes": [{"source": "data", "target": "data"}]})),
            "volumes",
        ),
        (
            with(json!({"volumes": [{"source": "/etc", "target": "/etc"}]})),
            "volumes",
        ),
        (
            with(json!({"volumes": [{"source": "/var/run/docker.sock", "target": "/s"}]})),
            "volumes",
        ),
        (with(json!({"secret_env": {"1BAD": "x"}})), "secret_env.1BAD"),
        (with(json!({"env": {"A B": "x"}})), "env.A B"),
        (
            with(json!({"env": {"A": "1"}, "secret_env": {"A": "2"}})),
            "secret_env.A",
        ),
        (with(json!({"port": 0})), "port"),
        (with(json!({"command": []})), "command"),
        (with(json!({"bogus": 1})), "bogus"),
    ] {
        let (status, answer) = admin.post(&path, body.clone()).await;
        assert_field_error(status, &answer, field);
    }
    let (status, body) = admin
        .post("/api/projects/999999/accessories", with(json!({})))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = viewer.post(&path, with(json!({}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (_, list) = admin.get(&path).await;
    assert_eq!(list["items"], json!([]), "nothing was written");

    let accessory = create_accessory(&admin, project_id, with(json!({}))).await;
    let conflict = |status: StatusCode, body: &Value| {
        assert_eq!(
            (status, &body["error"]["field"]),
            (StatusCode::CONFLICT, &json!("name")),
            "{body}"
        );
    };
    let (status, body) = admin.post(&path, with(json!({}))).await;
    conflict(status, &body);
    // On the project network a stage and an accessory cannot answer to the same name.
    let stages = format!("/api/projects/{project_id}/stages");
    let stage = |name: &str| json!({"name": name, "tag_policy": "tag:v1", "auto_deploy": false});
    let (status, web) = admin.post(&stages, stage("web")).await;
    assert_eq!(status, StatusCode::CREATED, "{web}");
    let (status, body) = admin.post(&path, with(json!({"name": "web"}))).await;
    conflict(status, &body);
    let (status, body) = admin.post(&stages, stage("db")).await;
    conflict(status, &body);
    let (status, body) = admin
        .patch(&format!("/api/stages/{}", web["id"]), json!({"name": "db"}))
        .await;
    conflict(status, &body);
    let id = accessory["id"].as_i64().expect("an id");
    for (patch, field) in [
        (json!({"image": "no-tag"}), "image"),
        (json!({"image": null}), "image"),
        (json!({"volumes": [{"source": "x", "target": "rel"}]}), "volumes"),
        (
            json!({"env": {"PLAIN": "1"}, "secret_env": {"PLAIN": "2"}}),
            "secret_env.PLAIN",
        ),
        (json!({"name": "renamed"}), "name"),
    ] {
        let (status, answer) = admin.patch(&format!("/api/accessories/{id}"), patch).await;
        assert_field_error(status, &answer, field);
    }
    let (_, after) = admin.get(&format!("/api/accessories/{id}")).await;
    assert_eq!(
        after["config_revision"], accessory["config_revision"],
        "nothing was written"
    );
    let (status, body) = viewer
        .post(&format!("/api/accessories/{id}/stop"), json!({}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    app.stop().await;
}

#[tokio::test]
async fn the_project_page_lists_accessories_and_members_manage_them_with_its_forms() {
    let app = spawn_app().await;
    let api = app.admin().await;
    add_user(&api, "mia", "member").await;
    add_user(&api, "vic", "viewer").await;
    let admin = UiSession::logged_in(&app, "admin", ADMIN_PASSWORD).await;
    let member = UiSession::logged_in(&app, "mia", "mia-password").await;
    let viewer = UiSession::logged_in(&app, "vic", "vic-password").await;
    let repo = unique("dwtest/accessory-ui-");
    let mut cleanup = Cleanup::new(&app);
    cleanup.repo(&repo);
    push_image(&repo, "db1", Variant::App, "db in the ui").await;
    let project_id = create_project(&api, &repo).await;
    let project = format!("/projects/{project_id}");
    let image = format!("{}/{repo}:db1", registry());
    let secret = unique("ui-secret-value-");
    let form = |image: &str, env: &str, secrets: &str, remove: &[&str]| {
        let mut form: Vec<(String, String)> = [
            ("name", "cache"),
            ("image", image),
            ("port", "8080"),
            ("env", env),
            ("secret_env", secrets),
            ("volumes", "cachedata:/data"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for key in remove {
            form.push(("secret_env.remove".into(), key.to_string()));
        }
        form
    };

    // A refused form: the error next to its input, the typed secret not sent back.
    let refused = member
        .submit(
            &format!("{project}/accessories"),
            &pairs(&form("no-tag", "MODE=fast", &format!("TOKEN={secret}"), &[])),
        )
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    assert!(
        refused.field_of("new-accessory-image").contains("tag or digest"),
        "{}",
        refused.body
    );
    refused.assert_lacks(&secret);

    let created = member
        .submit(
            &format!("{project}/accessories"),
            &pairs(&form(&image, "MODE=fast", &format!("TOKEN={secret}"), &[])),
        )
        .await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.body);
    let (_, list) = api.get(&format!("/api/projects/{project_id}/accessories")).await;
    let id = list["items"][0]["id"].as_i64().expect("an accessory");
    let page = member.get(&project).await;
    page.assert_has(&format!("data-accessory-status=\"{id}\">running<"));
    page.assert_has("<code>TOKEN</code> <span class=\"badge ok\">set</span>");
    page.assert_has("MODE=fast");
    page.assert_lacks(&secret);
    page.assert_lacks(&format!("data-out-of-date=\"{id}\""));
    page.assert_lacks(&format!("action=\"/accessories/{id}/delete\""));

    // An edit makes it out of date until a restart; the secret is removed by its box.
    let saved = member
        .submit(
            &format!("/accessories/{id}/edit"),
            &pairs(&form(&image, "MODE=slow", "", &["TOKEN"])),
        )
        .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    let page = member.get(&project).await;
    page.assert_has(&format!("data-out-of-date=\"{id}\""));
    page.assert_lacks("<code>TOKEN</code>");
    let restarted = member.submit(&format!("/accessories/{id}/restart"), &[]).await;
    assert_eq!(restarted.status, StatusCode::SEE_OTHER, "{}", restarted.body);
    let page = member.get(&project).await;
    page.assert_has(&format!("data-accessory-status=\"{id}\">running<"));
    page.assert_lacks(&format!("data-out-of-date=\"{id}\""));
    let (_, accessory) = api.get(&format!("/api/accessories/{id}")).await;
    let container = accessory["container_id"].as_str().expect("a container");
    assert!(container_env(container).contains("MODE=slow"));
    let stopped = member.submit(&format!("/accessories/{id}/stop"), &[]).await;
    assert_eq!(stopped.status, StatusCode::SEE_OTHER);
    member
        .get(&project)
        .await
        .assert_has(&format!("data-accessory-status=\"{id}\">stopped<"));

    // A viewer sees the list and the variables' names, no form and no value.
    let page = viewer.get(&project).await;
    assert_eq!(page.mutation_forms(), 0, "{}", page.body);
    page.assert_has("<code>MODE</code>");
    page.assert_lacks("MODE=slow");
    let refused = viewer.submit(&format!("/accessories/{id}/start"), &[]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);

    // An admin deletes it, with its volume.
    let page = admin.get(&project).await;
    page.assert_has(&format!("action=\"/accessories/{id}/delete\""));
    let deleted = admin
        .submit(
            &format!("/accessories/{id}/delete"),
            &[("confirm", "yes"), ("remove_volumes", "true")],
        )
        .await;
    assert_eq!(deleted.status, StatusCode::SEE_OTHER, "{}", deleted.body);
    let (_, list) = api.get(&format!("/api/projects/{project_id}/accessories")).await;
    assert_eq!(list["items"], json!([]));
    let project_name = api.get(&project.replace("/projects", "/api/projects")).await.1["name"]
        .as_str()
        .expect("a name")
        .to_owned();
    assert!(!docker(&["volume", "inspect", &format!("dw-{project_name}-cachedata")]).0);
    app.stop().await;
}
