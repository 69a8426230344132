//! Projects over HTTP: the whole CRUD cycle with every field of the `project` shape, image
//! normalisation, the write-only registry password, one 400 naming the field for each bad input,
//! conflicts, role boundaries, unknown and malformed ids, and the events each change records.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{ApiClient, assert_field_error, spawn_app};

const PROJECT_FIELDS: [&str; 8] = [
    "id",
    "name",
    "image",
    "registry_username",
    "has_registry_password",
    "insecure_registry",
    "created_at",
    "updated_at",
];

/// Asserts that `body` is a project with exactly the fields of SPEC §5.
#[track_caller]
fn assert_project_shape(body: &Value) {
    let object = body
        .as_object()
        .unwrap_or_else(|| panic!("a project object: {body}"));
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut expected = PROJECT_FIELDS.to_vec();
    expected.sort_unstable();
    assert_eq!(keys, expected, "{body}");
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

async fn create_project(client: &ApiClient, body: Value) -> Value {
    let (status, body) = client.post("/api/projects", body).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

/// A valid create body with `overrides` merged in (a `null` override removes the key).
fn project_body(overrides: Value) -> Value {
    let mut body = json!({"name": "shop", "image": "127.0.0.1:5000/team/shop"});
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
async fn a_member_creates_lists_reads_and_updates_a_project_and_an_admin_deletes_it() {
    let app = spawn_app().await;
    let member = app.user_with_role("mia", "member").await;

    let created = create_project(
        &member,
        json!({
            "name": "shop",
            "image": "127.0.0.1:5000/team/shop",
            "registry_username": "robot",
            "registry_password": "s3cret",
            "insecure_registry": true
        }),
    )
    .await;
    assert_project_shape(&created);
    assert_eq!(created["name"], "shop");
    assert_eq!(created["image"], "127.0.0.1:5000/team/shop");
    assert_eq!(created["registry_username"], "robot");
    assert_eq!(created["has_registry_password"], true);
    assert_eq!(created["insecure_registry"], true);
    let id = created["id"].as_i64().expect("an integer id");

    let (status, list) = member.get("/api/projects").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let items = list["items"].as_array().expect("items");
    assert_eq!(items.len(), 1);
    assert_project_shape(&items[0]);
    assert_eq!(items[0], created);

    let (status, fetched) = member.get(&format!("/api/projects/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{fetched}");
    assert_eq!(fetched, created);

    app.clock.advance(chrono::TimeDelta::seconds(5));
    let (status, updated) = member
        .patch(
            &format!("/api/projects/{id}"),
            json!({"name": "shop2", "image": "ghcr.io/org/shop", "insecure_registry": false}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_project_shape(&updated);
    assert_eq!(updated["name"], "shop2");
    assert_eq!(updated["image"], "ghcr.io/org/shop");
    assert_eq!(updated["insecure_registry"], false);
    assert_eq!(
        updated["registry_username"], "robot",
        "absent fields are unchanged"
    );
    assert_eq!(
        updated["has_registry_password"], true,
        "absent fields are unchanged"
    );
    assert_eq!(updated["created_at"], created["created_at"]);
    assert_ne!(updated["updated_at"], created["updated_at"]);

    let admin = app.admin().await;
    let (status, body) = admin.delete(&format!("/api/projects/{id}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = member.get(&format!("/api/projects/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (_, list) = member.get("/api/projects").await;
    assert_eq!(list["items"], json!([]));
}

#[tokio::test]
async fn optional_fields_default_to_null_and_false() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let created = create_project(&admin, json!({"name": "web", "image": "ghcr.io/org/web"})).await;
    assert_project_shape(&created);
    assert_eq!(created["registry_username"], Value::Null);
    assert_eq!(created["has_registry_password"], false);
    assert_eq!(created["insecure_registry"], false);
}

#[tokio::test]
async fn a_docker_hub_short_name_is_normalised() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let nginx = create_project(&admin, json!({"name": "nginx", "image": "nginx"})).await;
    assert_eq!(nginx["image"], "docker.io/library/nginx");
    let org = create_project(&admin, json!({"name": "org", "image": "index.docker.io/org/app"})).await;
    assert_eq!(org["image"], "docker.io/org/app");
    let local = create_project(
        &admin,
        json!({"name": "local", "image": "LOCALHOST:5000/team/app"}),
    )
    .await;
    assert_eq!(local["image"], "localhost:5000/team/app");
}

#[tokio::test]
async fn the_registry_password_is_write_only_and_has_registry_password_follows_it() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let created = create_project(
        &admin,
        project_body(json!({"registry_password": "hunter2-secret"})),
    )
    .await;
    assert_eq!(created["has_registry_password"], true);
    assert!(!created.to_string().contains("hunter2-secret"), "{created}");
    let path = format!("/api/projects/{}", created["id"]);

    let (_, fetched) = admin.get(&path).await;
    assert!(!fetched.to_string().contains("hunter2-secret"), "{fetched}");
    let (_, list) = admin.get("/api/projects").await;
    assert!(!list.to_string().contains("hunter2-secret"), "{list}");

    // At rest it is sealed with the installation's key: not the plain text, but it opens to it.
    let state = app.app().state();
    let id = created["id"].as_i64().expect("an id");
    let sealed = state
        .store
        .project_registry_password(id)
        .await
        .expect("the store answers")
        .expect("a stored password");
    assert!(!String::from_utf8_lossy(&sealed.0).contains("hunter2-secret"));
    assert_eq!(state.secrets.open(&sealed).expect("it opens"), "hunter2-secret");

    let (status, cleared) = admin.patch(&path, json!({"registry_password": null})).await;
    assert_eq!(status, StatusCode::OK, "{cleared}");
    assert_eq!(cleared["has_registry_password"], false);
    let stored = state
        .store
        .project_registry_password(id)
        .await
        .expect("the store answers");
    assert_eq!(stored, None, "null removes the stored password");

    let (status, set) = admin
        .patch(&path, json!({"registry_password": "another-secret"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{set}");
    assert_eq!(set["has_registry_password"], true);
    assert!(!set.to_string().contains("another-secret"), "{set}");

    let (status, kept) = admin.patch(&path, json!({"registry_username": "robot"})).await;
    assert_eq!(status, StatusCode::OK, "{kept}");
    assert_eq!(kept["has_registry_password"], true, "an absent password is kept");

    let (status, cleared) = admin.patch(&path, json!({"registry_username": null})).await;
    assert_eq!(status, StatusCode::OK, "{cleared}");
    assert_eq!(cleared["registry_username"], Value::Null);
}

#[tokio::test]
async fn every_bad_project_field_is_a_400_naming_it_and_nothing_is_created() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let cases = [
        (json!({"name": "Shop"}), "name"),
        (json!({"name": ""}), "name"),
        (json!({"name": "my_shop"}), "name"),
        (json!({"name": "-shop"}), "name"),
        (json!({"name": "a".repeat(64)}), "name"),
        (json!({"name": 42}), "name"),
        (json!({"name": null}), "name"),
        (json!({"image": ""}), "image"),
        (json!({"image": "Team/App"}), "image"),
        (json!({"image": "https://ghcr.io/org/app"}), "image"),
        (json!({"image": "nginx:1.25"}), "image"),
        (
            json!({"image": format!("nginx@sha256:{}", "a".repeat(64))}),
            "image",
        ),
        (json!({"image": null}), "image"),
        (json!({"registry_username": ""}), "registry_username"),
        (json!({"registry_username": "u".repeat(256)}), "registry_username"),
        (json!({"registry_username": "bad\nname"}), "registry_username"),
        (json!({"registry_username": 7}), "registry_username"),
        (json!({"registry_password": ""}), "registry_password"),
        (json!({"registry_password": ["x"]}), "registry_password"),
        (json!({"insecure_registry": "yes"}), "insecure_registry"),
        (json!({"colour": "blue"}), "colour"),
    ];
    for (overrides, field) in cases {
        let body = project_body(overrides.clone());
        let (status, response) = admin.post("/api/projects", body).await;
        assert_field_error(status, &response, field);
        if field == "image"
            && overrides["image"]
                .as_str()
                .is_some_and(|i| i.contains(':') && i.starts_with("nginx"))
        {
            let message = response["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains("tag_policy"), "{response}");
        }
    }
    let (_, list) = admin.get("/api/projects").await;
    assert_eq!(list["items"], json!([]), "no bad request wrote anything");
}

#[tokio::test]
async fn every_bad_patch_field_is_a_400_naming_it_and_the_project_is_unchanged() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let created = create_project(&admin, project_body(json!({"registry_username": "robot"}))).await;
    let path = format!("/api/projects/{}", created["id"]);
    let cases = [
        (json!({"name": "Bad Name"}), "name"),
        (json!({"name": null}), "name"),
        (json!({"image": "nginx:latest"}), "image"),
        (json!({"image": null}), "image"),
        (json!({"registry_username": ""}), "registry_username"),
        (json!({"registry_password": ""}), "registry_password"),
        (json!({"insecure_registry": null}), "insecure_registry"),
        (json!({"id": 99}), "id"),
        (json!({"has_registry_password": false}), "has_registry_password"),
        // A valid field does not sneak through next to a bad one.
        (json!({"name": "renamed", "image": "Bad/Image"}), "image"),
    ];
    for (body, field) in cases {
        let (status, response) = admin.patch(&path, body).await;
        assert_field_error(status, &response, field);
    }
    let (_, fetched) = admin.get(&path).await;
    assert_eq!(fetched, created);
}

#[tokio::test]
async fn malformed_json_is_a_400_and_a_wrong_content_type_is_a_415() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let (status, body) = admin
        .post_raw("/api/projects", "application/json", "{\"name\": ")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "validation");
    let (status, body) = admin
        .post_raw("/api/projects", "application/json", "[1, 2]")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = admin
        .post_raw(
            "/api/projects",
            "text/plain",
            r#"{"name":"shop","image":"nginx"}"#,
        )
        .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");
    let (_, list) = admin.get("/api/projects").await;
    assert_eq!(list["items"], json!([]));
}

#[tokio::test]
async fn a_duplicate_project_name_is_a_409_naming_the_name() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    create_project(&admin, json!({"name": "shop", "image": "nginx"})).await;
    let other = create_project(&admin, json!({"name": "blog", "image": "ghost"})).await;

    let (status, body) = admin
        .post("/api/projects", json!({"name": "shop", "image": "redis"}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "conflict");
    assert_eq!(body["error"]["field"], "name");

    let (status, body) = admin
        .patch(&format!("/api/projects/{}", other["id"]), json!({"name": "shop"}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["field"], "name");
}

#[tokio::test]
async fn a_project_with_stages_cannot_be_deleted_until_they_are_gone() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let project = create_project(&admin, project_body(json!({}))).await;
    let (status, stage) = admin
        .post(
            &format!("/api/projects/{}/stages", project["id"]),
            json!({"name": "prod", "tag_policy": "tag:latest"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{stage}");

    let path = format!("/api/projects/{}", project["id"]);
    let (status, body) = admin.delete(&path).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["field"], "id");

    let (status, body) = admin.delete(&format!("/api/stages/{}", stage["id"])).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = admin.delete(&path).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
}

#[tokio::test]
async fn requests_without_credentials_are_401() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let project = create_project(&admin, project_body(json!({}))).await;
    let path = format!("/api/projects/{}", project["id"]);
    let anonymous = app.anonymous();
    for (status, body) in [
        anonymous.get("/api/projects").await,
        anonymous
            .post("/api/projects", project_body(json!({"name": "other"})))
            .await,
        anonymous.get(&path).await,
        anonymous.patch(&path, json!({"name": "x"})).await,
        anonymous.delete(&path).await,
    ] {
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(body["error"]["code"], "unauthorized");
    }
}

#[tokio::test]
async fn a_viewer_reads_projects_but_cannot_change_them() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let viewer = app.user_with_role("vic", "viewer").await;
    let project = create_project(&admin, project_body(json!({}))).await;
    let path = format!("/api/projects/{}", project["id"]);

    let (status, _) = viewer.get("/api/projects").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = viewer.get(&path).await;
    assert_eq!(status, StatusCode::OK);

    for (status, body) in [
        viewer
            .post("/api/projects", project_body(json!({"name": "other"})))
            .await,
        viewer.patch(&path, json!({"name": "renamed"})).await,
        viewer.delete(&path).await,
    ] {
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(body["error"]["code"], "forbidden");
    }
    let (_, fetched) = admin.get(&path).await;
    assert_eq!(fetched, project);
}

#[tokio::test]
async fn a_member_cannot_delete_a_project_but_an_admin_can() {
    let app = spawn_app().await;
    let member = app.user_with_role("mia", "member").await;
    let project = create_project(&member, project_body(json!({}))).await;
    let path = format!("/api/projects/{}", project["id"]);

    let (status, body) = member.delete(&path).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, _) = member.get(&path).await;
    assert_eq!(status, StatusCode::OK, "the project is still there");

    let admin = app.admin().await;
    let (status, body) = admin.delete(&path).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
}

#[tokio::test]
async fn unknown_project_ids_are_404_and_non_integer_ids_are_400() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    for (status, body) in [
        admin.get("/api/projects/999").await,
        admin.patch("/api/projects/999", json!({"name": "x"})).await,
        admin.delete("/api/projects/999").await,
    ] {
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert_eq!(body["error"]["code"], "not_found");
    }
    for (status, body) in [
        admin.get("/api/projects/abc").await,
        admin.patch("/api/projects/abc", json!({"name": "x"})).await,
        admin.delete("/api/projects/abc").await,
    ] {
        assert_field_error(status, &body, "id");
    }
}

#[tokio::test]
async fn creating_updating_and_deleting_a_project_is_recorded_with_the_actor() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let project = create_project(&admin, project_body(json!({"registry_password": "never-logged"}))).await;
    let id = project["id"].as_i64().expect("an id");
    let path = format!("/api/projects/{id}");
    let (status, _) = admin
        .patch(&path, json!({"registry_password": "still-never-logged"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = admin.delete(&path).await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let (status, events) = admin.get("/api/events?source=api").await;
    assert_eq!(status, StatusCode::OK, "{events}");
    let items = events["items"].as_array().expect("items");
    let ours: Vec<&Value> = items.iter().filter(|e| e["project_id"] == id).collect();
    assert_eq!(ours.len(), 3, "{events}");
    for event in &ours {
        assert_eq!(event["severity"], "info");
        assert_eq!(event["source"], "api");
        assert_eq!(event["details"]["actor"], "admin");
    }
    let messages: Vec<&str> = ours.iter().filter_map(|e| e["message"].as_str()).collect();
    assert!(messages.iter().any(|m| m.contains("created")), "{messages:?}");
    assert!(messages.iter().any(|m| m.contains("updated")), "{messages:?}");
    assert!(messages.iter().any(|m| m.contains("deleted")), "{messages:?}");
    assert!(
        !events.to_string().contains("never-logged"),
        "no password in the event log"
    );
}
