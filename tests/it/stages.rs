//! Stages over HTTP: the whole CRUD cycle with every field of the `stage` shape and its
//! defaults, canonical forms, PATCH semantics (absent keeps, `null` clears, `container`
//! replaces), one 400 naming the field for each bad input (tag policies of every kind,
//! schedules, hostnames, limits, every container field), name and hostname conflicts, role
//! boundaries, unknown and malformed ids, and the events each change records.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{ApiClient, assert_field_error, spawn_app};

const STAGE_FIELDS: [&str; 16] = [
    "id",
    "project_id",
    "name",
    "tag_policy",
    "schedule",
    "auto_deploy",
    "hostname",
    "max_instances",
    "min_release_age",
    "container",
    "hooks",
    "strategy",
    "current_instance_id",
    "available_tag",
    "created_at",
    "updated_at",
];

const CONTAINER_FIELDS: [&str; 16] = [
    "port",
    "env",
    "env_keys",
    "secret_env_keys",
    "command",
    "health_check",
    "min_ready_seconds",
    "memory_mb",
    "cpus",
    "volumes",
    "networks",
    "labels",
    "user",
    "restart_policy",
    "stop_signal",
    "stop_grace_seconds",
];

fn sorted(mut keys: Vec<&str>) -> Vec<&str> {
    keys.sort_unstable();
    keys
}

/// Asserts that `body` is a stage with exactly the fields of SPEC §5, container included.
#[track_caller]
fn assert_stage_shape(body: &Value) {
    let object = body
        .as_object()
        .unwrap_or_else(|| panic!("a stage object: {body}"));
    assert_eq!(
        sorted(object.keys().map(String::as_str).collect()),
        sorted(STAGE_FIELDS.to_vec()),
        "{body}"
    );
    let container = body["container"]
        .as_object()
        .unwrap_or_else(|| panic!("a container object: {body}"));
    assert_eq!(
        sorted(container.keys().map(String::as_str).collect()),
        sorted(CONTAINER_FIELDS.to_vec()),
        "{body}"
    );
    for time in ["created_at", "updated_at"] {
        let raw = body[time]
            .as_str()
            .unwrap_or_else(|| panic!("{time} is a string: {body}"));
        assert!(
            raw.ends_with('Z') && raw.len() == "2026-01-02T03:04:05.678Z".len(),
            "{time}: {raw}"
        );
    }
}

async fn create_project(client: &ApiClient, name: &str) -> i64 {
    let (status, body) = client
        .post(
            "/api/projects",
            json!({"name": name, "image": format!("127.0.0.1:5000/{name}")}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_i64().expect("a project id")
}

async fn create_stage(client: &ApiClient, project_id: i64, body: Value) -> Value {
    let (status, body) = client
        .post(&format!("/api/projects/{project_id}/stages"), body)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

/// A valid create body with `overrides` merged in (a `null` override removes the key).
fn stage_body(overrides: &Value) -> Value {
    let mut body = json!({"name": "prod", "tag_policy": "tag:latest"});
    for (key, value) in overrides.as_object().expect("an object of overrides") {
        if value.is_null() {
            body.as_object_mut().expect("an object").remove(key);
        } else {
            body[key] = value.clone();
        }
    }
    body
}

#[tokio::test]
async fn a_member_creates_lists_reads_updates_and_deletes_a_stage() {
    let app = spawn_app().await;
    let member = app.user_with_role("mia", "member").await;
    let project_id = create_project(&member, "shop").await;

    let created = create_stage(
        &member,
        project_id,
        json!({"name": "prod", "tag_policy": "semver:^1.2"}),
    )
    .await;
    assert_stage_shape(&created);
    assert_eq!(created["project_id"], project_id);
    assert_eq!(created["name"], "prod");
    assert_eq!(created["tag_policy"], "semver:^1.2");
    // The documented defaults.
    assert_eq!(created["schedule"], Value::Null);
    assert_eq!(created["auto_deploy"], true);
    assert_eq!(created["hostname"], Value::Null);
    assert_eq!(created["max_instances"], 10);
    assert_eq!(created["min_release_age"], Value::Null);
    assert_eq!(
        created["container"],
        json!({
            "port": 8080, "env": {}, "env_keys": [], "secret_env_keys": [], "command": null,
            "health_check": null, "min_ready_seconds": 2, "memory_mb": null, "cpus": null, "volumes": [], "networks": [], "labels": {}, "user": null,
            "restart_policy": "unless-stopped", "stop_signal": "SIGTERM", "stop_grace_seconds": 10
        })
    );
    assert_eq!(created["current_instance_id"], Value::Null);
    assert_eq!(created["available_tag"], Value::Null);
    let path = format!("/api/stages/{}", created["id"]);

    let (status, list) = member.get(&format!("/api/projects/{project_id}/stages")).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["items"], json!([created.clone()]));

    let (status, fetched) = member.get(&path).await;
    assert_eq!(status, StatusCode::OK, "{fetched}");
    assert_eq!(fetched, created);

    app.clock.advance(chrono::TimeDelta::seconds(5));
    let (status, updated) = member
        .patch(
            &path,
            json!({
                "name": "production",
                "tag_policy": "glob:pr-*",
                "schedule": "*/10 * * * *",
                "auto_deploy": false,
                "hostname": "shop.example.com",
                "max_instances": 3,
                "min_release_age": "10m"
            }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_stage_shape(&updated);
    assert_eq!(updated["name"], "production");
    assert_eq!(updated["tag_policy"], "glob:pr-*");
    assert_eq!(updated["schedule"], "*/10 * * * *");
    assert_eq!(updated["auto_deploy"], false);
    assert_eq!(updated["hostname"], "shop.example.com");
    assert_eq!(updated["max_instances"], 3);
    assert_eq!(updated["min_release_age"], "10m");
    assert_eq!(
        updated["container"], created["container"],
        "absent fields are unchanged"
    );
    assert_eq!(updated["created_at"], created["created_at"]);
    assert_ne!(updated["updated_at"], created["updated_at"]);

    let (status, body) = member.delete(&path).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = member.get(&path).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (_, list) = member.get(&format!("/api/projects/{project_id}/stages")).await;
    assert_eq!(list["items"], json!([]));
}

#[tokio::test]
async fn every_field_given_on_create_is_kept_in_its_canonical_form() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let project_id = create_project(&admin, "shop").await;
    let created = create_stage(
        &admin,
        project_id,
        json!({
            "name": "previews",
            "tag_policy": " regex: pr-\\d+ ",
            "schedule": "@every 300s",
            "auto_deploy": false,
            "hostname": "Previews.Example.COM.",
            "max_instances": 1000,
            "min_release_age": "90s",
            "container": {
                "port": 3000,
                "env": {"RUST_LOG": "info", "_X": ""},
                "command": ["/app", "--serve"],
                "health_check": {"path": "/healthz"},
                "min_ready_seconds": 0,
                "memory_mb": 256,
                "cpus": 0.5,
                "volumes": [{"source": "data", "target": "/var/lib/app"}],
                "labels": {"com.example.team": "shop"},
                "user": "1000:1000",
                "restart_policy": "on-failure:5",
                "stop_signal": "int",
                "stop_grace_seconds": 30
            }
        }),
    )
    .await;
    assert_stage_shape(&created);
    assert_eq!(created["tag_policy"], "regex:pr-\\d+");
    assert_eq!(created["schedule"], "@every 5m");
    assert_eq!(created["auto_deploy"], false);
    assert_eq!(created["hostname"], "previews.example.com");
    assert_eq!(created["max_instances"], 1000);
    assert_eq!(created["min_release_age"], "1m30s");
    assert_eq!(
        created["container"],
        json!({
            "port": 3000,
            "env": {"RUST_LOG": "info", "_X": ""},
            "env_keys": ["RUST_LOG", "_X"],
            "secret_env_keys": [],
            "command": ["/app", "--serve"],
            "health_check": {"path": "/healthz", "expected_status": 200},
            "min_ready_seconds": 0,
            "memory_mb": 256,
            "cpus": 0.5,
            "volumes": [{"source": "data", "target": "/var/lib/app", "read_only": false}],
            "networks": [],
            "labels": {"com.example.team": "shop"},
            "user": "1000:1000",
            "restart_policy": "on-failure:5",
            "stop_signal": "SIGINT",
            "stop_grace_seconds": 30
        })
    );
}

#[tokio::test]
async fn null_clears_nullable_fields_and_is_rejected_for_the_others() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let project_id = create_project(&admin, "shop").await;
    let created = create_stage(
        &admin,
        project_id,
        stage_body(&json!({"schedule": "@hourly", "hostname": "a.example.com", "min_release_age": "5m"})),
    )
    .await;
    let path = format!("/api/stages/{}", created["id"]);

    let (status, cleared) = admin
        .patch(
            &path,
            json!({"schedule": null, "hostname": null, "min_release_age": null}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{cleared}");
    assert_eq!(cleared["schedule"], Value::Null);
    assert_eq!(cleared["hostname"], Value::Null);
    assert_eq!(cleared["min_release_age"], Value::Null);
    assert_eq!(cleared["tag_policy"], "tag:latest", "absent fields are unchanged");

    for field in ["name", "tag_policy", "auto_deploy", "max_instances", "container"] {
        let (status, body) = admin.patch(&path, json!({ field: null })).await;
        assert_field_error(status, &body, field);
    }

    // The cleared hostname is free for another stage.
    create_stage(
        &admin,
        project_id,
        stage_body(&json!({"name": "dev", "hostname": "a.example.com"})),
    )
    .await;
}

#[tokio::test]
async fn a_container_in_a_patch_replaces_the_whole_spec() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let project_id = create_project(&admin, "shop").await;
    let created = create_stage(
        &admin,
        project_id,
        stage_body(&json!({"container": {"port": 3000, "env": {"A": "1"}, "memory_mb": 128}})),
    )
    .await;
    let path = format!("/api/stages/{}", created["id"]);

    let (status, updated) = admin.patch(&path, json!({"container": {"port": 4000}})).await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(
        updated["container"],
        json!({
            "port": 4000, "env": {}, "env_keys": [], "secret_env_keys": [], "command": null,
            "health_check": null, "min_ready_seconds": 2, "memory_mb": null, "cpus": null, "volumes": [], "networks": [], "labels": {}, "user": null,
            "restart_policy": "unless-stopped", "stop_signal": "SIGTERM", "stop_grace_seconds": 10
        }),
        "fields left out of the container take their defaults"
    );
}

#[tokio::test]
async fn every_bad_stage_field_is_a_400_naming_it_and_nothing_is_created() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let project_id = create_project(&admin, "shop").await;
    let too_long_hostname = format!(
        "{}.com",
        ["a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(63)].join(".")
    );
    let cases = [
        (json!({"name": "Prod"}), "name"),
        (json!({"name": ""}), "name"),
        (json!({"name": "pr_1"}), "name"),
        (json!({"name": null}), "name"),
        // Every kind of tag policy, and none.
        (json!({"tag_policy": null}), "tag_policy"),
        (json!({"tag_policy": ""}), "tag_policy"),
        (json!({"tag_policy": "latest"}), "tag_policy"),
        (json!({"tag_policy": "branch:main"}), "tag_policy"),
        (json!({"tag_policy": "tag:"}), "tag_policy"),
        (json!({"tag_policy": "tag:-bad"}), "tag_policy"),
        (json!({"tag_policy": "semver:"}), "tag_policy"),
        (json!({"tag_policy": "semver:not a version"}), "tag_policy"),
        (json!({"tag_policy": "semver:>>1"}), "tag_policy"),
        (json!({"tag_policy": "glob:"}), "tag_policy"),
        (json!({"tag_policy": "glob:pr-[a"}), "tag_policy"),
        (json!({"tag_policy": "regex:"}), "tag_policy"),
        (json!({"tag_policy": "regex:pr-(\\d+"}), "tag_policy"),
        (json!({"tag_policy": "regex:a)|(b"}), "tag_policy"),
        (json!({"tag_policy": 1}), "tag_policy"),
        // Schedules are rejected at the API, not on the first tick.
        (json!({"schedule": "61 * * * *"}), "schedule"),
        (json!({"schedule": "@every 0s"}), "schedule"),
        (json!({"schedule": "garbage"}), "schedule"),
        (json!({"schedule": "@sometimes"}), "schedule"),
        (json!({"schedule": ""}), "schedule"),
        (json!({"hostname": "bad_host"}), "hostname"),
        (json!({"hostname": "-x.com"}), "hostname"),
        (json!({"hostname": too_long_hostname}), "hostname"),
        (json!({"hostname": "https://shop.example.com/"}), "hostname"),
        (json!({"hostname": "*.example.com"}), "hostname"),
        (json!({"max_instances": 0}), "max_instances"),
        (json!({"max_instances": 1001}), "max_instances"),
        (json!({"max_instances": -1}), "max_instances"),
        (json!({"max_instances": "ten"}), "max_instances"),
        (json!({"max_instances": 1.5}), "max_instances"),
        (json!({"min_release_age": "0s"}), "min_release_age"),
        (json!({"min_release_age": "soon"}), "min_release_age"),
        (json!({"min_release_age": 600}), "min_release_age"),
        (json!({"auto_deploy": "yes"}), "auto_deploy"),
        (json!({"container": {"port": 0}}), "container.port"),
        (json!({"container": {"port": 70000}}), "container.port"),
        (json!({"container": {"port": "http"}}), "container.port"),
        (json!({"container": {"env": {"1KEY": "x"}}}), "container.env.1KEY"),
        (
            json!({"container": {"env": {"MY-KEY": "x"}}}),
            "container.env.MY-KEY",
        ),
        (json!({"container": {"env": {"KEY": 5}}}), "container.env.KEY"),
        (
            json!({"container": {"env": {"KEY": "a\u{0}b"}}}),
            "container.env.KEY",
        ),
        (json!({"container": {"env": ["KEY=x"]}}), "container.env"),
        (json!({"container": {"command": []}}), "container.command"),
        (
            json!({"container": {"command": "/app --serve"}}),
            "container.command",
        ),
        (
            json!({"container": {"health_check": {"path": "healthz"}}}),
            "container.health_check.path",
        ),
        (
            json!({"container": {"health_check": {"path": "/health z"}}}),
            "container.health_check.path",
        ),
        (
            json!({"container": {"health_check": {}}}),
            "container.health_check.path",
        ),
        (
            json!({"container": {"health_check": {"path": "/healthz", "expected_status": 700}}}),
            "container.health_check.expected_status",
        ),
        (
            json!({"container": {"health_check": {"path": "/healthz", "expected_status": 99}}}),
            "container.health_check.expected_status",
        ),
        (
            json!({"container": {"min_ready_seconds": 4000}}),
            "container.min_ready_seconds",
        ),
        (json!({"container": {"memory_mb": 1}}), "container.memory_mb"),
        (json!({"container": {"memory_mb": -5}}), "container.memory_mb"),
        (json!({"container": {"cpus": 0}}), "container.cpus"),
        (json!({"container": {"cpus": 2000}}), "container.cpus"),
        (json!({"container": {"cpus": "two"}}), "container.cpus"),
        (json!({"container": {"colour": "blue"}}), "container.colour"),
        (json!({"container": "nginx"}), "container"),
        (json!({"colour": "blue"}), "colour"),
        (json!({"current_instance_id": 1}), "current_instance_id"),
    ];
    for (overrides, field) in &cases {
        let (status, body) = admin
            .post(
                &format!("/api/projects/{project_id}/stages"),
                stage_body(overrides),
            )
            .await;
        assert_field_error(status, &body, field);
    }
    let (_, list) = admin.get(&format!("/api/projects/{project_id}/stages")).await;
    assert_eq!(list["items"], json!([]), "no bad request wrote anything");
}

#[tokio::test]
async fn every_bad_patch_field_is_a_400_naming_it_and_the_stage_is_unchanged() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let project_id = create_project(&admin, "shop").await;
    let created = create_stage(&admin, project_id, stage_body(&json!({}))).await;
    let path = format!("/api/stages/{}", created["id"]);
    let cases = [
        (json!({"name": "Prod"}), "name"),
        (json!({"tag_policy": "semver:>>1"}), "tag_policy"),
        (json!({"tag_policy": "regex:("}), "tag_policy"),
        (json!({"schedule": "61 * * * *"}), "schedule"),
        (json!({"hostname": "bad_host"}), "hostname"),
        (json!({"max_instances": 0}), "max_instances"),
        (json!({"max_instances": 1001}), "max_instances"),
        (json!({"min_release_age": "-5m"}), "min_release_age"),
        (json!({"container": {"port": 0}}), "container.port"),
        (json!({"container": {"cpus": -1}}), "container.cpus"),
        (json!({"project_id": 2}), "project_id"),
        // A valid field does not sneak through next to a bad one.
        (json!({"name": "renamed", "schedule": "@every 0s"}), "schedule"),
    ];
    for (body, field) in cases {
        let (status, response) = admin.patch(&path, body).await;
        assert_field_error(status, &response, field);
    }
    let (_, fetched) = admin.get(&path).await;
    assert_eq!(fetched, created);
}

#[tokio::test]
async fn stage_names_are_unique_within_a_project_only() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let shop = create_project(&admin, "shop").await;
    let blog = create_project(&admin, "blog").await;
    create_stage(&admin, shop, stage_body(&json!({"name": "prod"}))).await;
    let dev = create_stage(&admin, shop, stage_body(&json!({"name": "dev"}))).await;
    create_stage(&admin, blog, stage_body(&json!({"name": "prod"}))).await;

    let (status, body) = admin
        .post(
            &format!("/api/projects/{shop}/stages"),
            stage_body(&json!({"name": "prod"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["field"], "name");
    let (status, body) = admin
        .patch(&format!("/api/stages/{}", dev["id"]), json!({"name": "prod"}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["field"], "name");
}

#[tokio::test]
async fn a_hostname_belongs_to_one_stage_whatever_its_case() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let shop = create_project(&admin, "shop").await;
    let blog = create_project(&admin, "blog").await;
    create_stage(&admin, shop, stage_body(&json!({"hostname": "www.example.com"}))).await;

    let (status, body) = admin
        .post(
            &format!("/api/projects/{blog}/stages"),
            stage_body(&json!({"hostname": "WWW.Example.com"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["field"], "hostname");

    let other = create_stage(&admin, blog, stage_body(&json!({"hostname": "blog.example.com"}))).await;
    let (status, body) = admin
        .patch(
            &format!("/api/stages/{}", other["id"]),
            json!({"hostname": "www.example.com"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["field"], "hostname");
    let (_, fetched) = admin.get(&format!("/api/stages/{}", other["id"])).await;
    assert_eq!(
        fetched["hostname"], "blog.example.com",
        "a conflicting patch changes nothing"
    );
}

#[tokio::test]
async fn a_deleted_stage_frees_its_hostname() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let shop = create_project(&admin, "shop").await;
    let stage = create_stage(&admin, shop, stage_body(&json!({"hostname": "www.example.com"}))).await;
    let (status, _) = admin.delete(&format!("/api/stages/{}", stage["id"])).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    create_stage(
        &admin,
        shop,
        stage_body(&json!({"name": "next", "hostname": "www.example.com"})),
    )
    .await;
}

#[tokio::test]
async fn malformed_json_is_a_400_and_a_wrong_content_type_is_a_415() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let shop = create_project(&admin, "shop").await;
    let path = format!("/api/projects/{shop}/stages");
    let (status, body) = admin
        .post_raw(&path, "application/json", "{\"name\": \"prod\",")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "validation");
    let (status, body) = admin
        .post_raw(
            &path,
            "application/x-www-form-urlencoded",
            "name=prod&tag_policy=tag:x",
        )
        .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");
}

#[tokio::test]
async fn a_viewer_reads_stages_but_cannot_change_them_and_strangers_are_401() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let viewer = app.user_with_role("vic", "viewer").await;
    let shop = create_project(&admin, "shop").await;
    let stage = create_stage(&admin, shop, stage_body(&json!({}))).await;
    let list_path = format!("/api/projects/{shop}/stages");
    let path = format!("/api/stages/{}", stage["id"]);

    let (status, _) = viewer.get(&list_path).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = viewer.get(&path).await;
    assert_eq!(status, StatusCode::OK);
    for (status, body) in [
        viewer.post(&list_path, stage_body(&json!({"name": "dev"}))).await,
        viewer.patch(&path, json!({"auto_deploy": false})).await,
        viewer.delete(&path).await,
    ] {
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    }

    let anonymous = app.anonymous();
    for (status, body) in [
        anonymous.get(&list_path).await,
        anonymous
            .post(&list_path, stage_body(&json!({"name": "dev"})))
            .await,
        anonymous.get(&path).await,
        anonymous.patch(&path, json!({"auto_deploy": false})).await,
        anonymous.delete(&path).await,
    ] {
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
    let (_, fetched) = admin.get(&path).await;
    assert_eq!(fetched, stage);
}

#[tokio::test]
async fn unknown_ids_are_404_and_non_integer_ids_are_400() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    for (status, body) in [
        admin.get("/api/projects/999/stages").await,
        admin
            .post("/api/projects/999/stages", stage_body(&json!({})))
            .await,
        admin.get("/api/stages/999").await,
        admin
            .patch("/api/stages/999", json!({"auto_deploy": false}))
            .await,
        admin.delete("/api/stages/999").await,
    ] {
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert_eq!(body["error"]["code"], "not_found");
    }
    for (status, body) in [
        admin.get("/api/projects/abc/stages").await,
        admin
            .post("/api/projects/abc/stages", stage_body(&json!({})))
            .await,
        admin.get("/api/stages/abc").await,
        admin
            .patch("/api/stages/abc", json!({"auto_deploy": false}))
            .await,
        admin.delete("/api/stages/abc").await,
    ] {
        assert_field_error(status, &body, "id");
    }
}

#[tokio::test]
async fn creating_updating_and_deleting_a_stage_is_recorded_with_the_actor() {
    let app = spawn_app().await;
    let member = app.user_with_role("mia", "member").await;
    let shop = create_project(&member, "shop").await;
    let stage = create_stage(&member, shop, stage_body(&json!({}))).await;
    let stage_id = stage["id"].as_i64().expect("an id");
    let path = format!("/api/stages/{stage_id}");
    let (status, _) = member.patch(&path, json!({"auto_deploy": false})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = member.delete(&path).await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let (status, events) = member.get("/api/events?source=api").await;
    assert_eq!(status, StatusCode::OK, "{events}");
    let items = events["items"].as_array().expect("items");
    let ours: Vec<&Value> = items.iter().filter(|e| e["stage_id"] == stage_id).collect();
    assert_eq!(ours.len(), 3, "{events}");
    for event in &ours {
        assert_eq!(event["severity"], "info");
        assert_eq!(event["project_id"], shop);
        assert_eq!(event["details"]["actor"], "mia");
    }
}
