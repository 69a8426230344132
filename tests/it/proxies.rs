//! Standalone proxies over HTTP: the whole CRUD cycle with every field of the `proxy` shape and
//! its defaults, one 400 naming the field for each bad input, hostname uniqueness across proxies
//! and stages in both directions and whatever the case, the admin-only boundary for changes,
//! unknown and malformed ids, and the events each change records.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{ApiClient, assert_field_error, spawn_app};

const PROXY_FIELDS: [&str; 8] = [
    "id",
    "name",
    "hostname",
    "target_url",
    "preserve_host",
    "enabled",
    "created_at",
    "updated_at",
];

/// Asserts that `body` is a proxy with exactly the fields of SPEC §5.
#[track_caller]
fn assert_proxy_shape(body: &Value) {
    let object = body
        .as_object()
        .unwrap_or_else(|| panic!("a proxy object: {body}"));
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut expected = PROXY_FIELDS.to_vec();
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

/// A valid create body with `overrides` merged in (a `null` override removes the key).
fn proxy_body(overrides: &Value) -> Value {
    let mut body =
        json!({"name": "docs", "hostname": "docs.example.com", "target_url": "http://127.0.0.1:9000"});
    for (key, value) in overrides.as_object().expect("an object of overrides") {
        if value.is_null() {
            body.as_object_mut().expect("an object").remove(key);
        } else {
            body[key] = value.clone();
        }
    }
    body
}

async fn create_proxy(client: &ApiClient, body: Value) -> Value {
    let (status, body) = client.post("/api/proxies", body).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

/// Creates a project `name` with a stage routed at `hostname`; answers the stage.
async fn create_stage_with_hostname(client: &ApiClient, name: &str, hostname: &str) -> (StatusCode, Value) {
    let (status, project) = client
        .post(
            "/api/projects",
            json!({"name": name, "image": format!("127.0.0.1:5000/{name}")}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{project}");
    client
        .post(
            &format!("/api/projects/{}/stages", project["id"]),
            json!({"name": "prod", "tag_policy": "tag:latest", "hostname": hostname}),
        )
        .await
}

#[tokio::test]
async fn an_admin_creates_lists_reads_updates_and_deletes_a_proxy() {
    let app = spawn_app().await;
    let admin = app.admin().await;

    let created = create_proxy(&admin, proxy_body(&json!({}))).await;
    assert_proxy_shape(&created);
    assert_eq!(created["name"], "docs");
    assert_eq!(created["hostname"], "docs.example.com");
    assert_eq!(created["target_url"], "http://127.0.0.1:9000/");
    assert_eq!(created["preserve_host"], false, "the default");
    assert_eq!(created["enabled"], true, "the default");
    let path = format!("/api/proxies/{}", created["id"]);

    let (status, list) = admin.get("/api/proxies").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["items"], json!([created.clone()]));
    let (status, fetched) = admin.get(&path).await;
    assert_eq!(status, StatusCode::OK, "{fetched}");
    assert_eq!(fetched, created);

    app.clock.advance(chrono::TimeDelta::seconds(5));
    let (status, updated) = admin
        .patch(
            &path,
            json!({
                "name": "API docs",
                "hostname": "API.Example.com",
                "target_url": "https://docs.internal:8443/v2",
                "preserve_host": true,
                "enabled": false
            }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_proxy_shape(&updated);
    assert_eq!(updated["name"], "API docs");
    assert_eq!(updated["hostname"], "api.example.com");
    assert_eq!(updated["target_url"], "https://docs.internal:8443/v2");
    assert_eq!(updated["preserve_host"], true);
    assert_eq!(updated["enabled"], false);
    assert_eq!(updated["created_at"], created["created_at"]);
    assert_ne!(updated["updated_at"], created["updated_at"]);

    let (status, partly) = admin.patch(&path, json!({"enabled": true})).await;
    assert_eq!(status, StatusCode::OK, "{partly}");
    assert_eq!(partly["enabled"], true);
    assert_eq!(
        partly["hostname"], "api.example.com",
        "absent fields are unchanged"
    );

    let (status, body) = admin.delete(&path).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = admin.get(&path).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (_, list) = admin.get("/api/proxies").await;
    assert_eq!(list["items"], json!([]));
}

#[tokio::test]
async fn every_bad_proxy_field_is_a_400_naming_it_and_nothing_is_created() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let cases = [
        (json!({"name": ""}), "name"),
        (json!({"name": "   "}), "name"),
        (json!({"name": "x".repeat(101)}), "name"),
        (json!({"name": "a\u{7}b"}), "name"),
        (json!({"name": null}), "name"),
        (json!({"hostname": "bad_host"}), "hostname"),
        (json!({"hostname": "-x.com"}), "hostname"),
        (json!({"hostname": format!("{}.com", "a".repeat(64))}), "hostname"),
        (json!({"hostname": ""}), "hostname"),
        (json!({"hostname": null}), "hostname"),
        (json!({"target_url": "ftp://files.example.com/"}), "target_url"),
        (json!({"target_url": "not a url"}), "target_url"),
        (json!({"target_url": "file:///etc/passwd"}), "target_url"),
        (json!({"target_url": "http://user:pw@example.com"}), "target_url"),
        (json!({"target_url": null}), "target_url"),
        (json!({"preserve_host": "no"}), "preserve_host"),
        (json!({"enabled": 1}), "enabled"),
        (json!({"colour": "blue"}), "colour"),
    ];
    for (overrides, field) in &cases {
        let (status, body) = admin.post("/api/proxies", proxy_body(overrides)).await;
        assert_field_error(status, &body, field);
    }
    let (_, list) = admin.get("/api/proxies").await;
    assert_eq!(list["items"], json!([]), "no bad request wrote anything");
}

#[tokio::test]
async fn every_bad_patch_field_is_a_400_naming_it_and_the_proxy_is_unchanged() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let created = create_proxy(&admin, proxy_body(&json!({}))).await;
    let path = format!("/api/proxies/{}", created["id"]);
    let cases = [
        (json!({"name": ""}), "name"),
        (json!({"name": null}), "name"),
        (json!({"hostname": "bad_host"}), "hostname"),
        (json!({"hostname": null}), "hostname"),
        (json!({"target_url": "ftp://x.example.com"}), "target_url"),
        (json!({"target_url": "not a url"}), "target_url"),
        (json!({"enabled": null}), "enabled"),
        (json!({"preserve_host": null}), "preserve_host"),
        (json!({"id": 5}), "id"),
        (
            json!({"enabled": false, "target_url": "gopher://x"}),
            "target_url",
        ),
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
        .post_raw("/api/proxies", "application/json", "{\"name\": \"docs\"")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "validation");
    let (status, body) = admin
        .post_raw("/api/proxies", "text/plain", proxy_body(&json!({})).to_string())
        .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");
}

#[tokio::test]
async fn a_hostname_belongs_to_one_proxy_whatever_its_case() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    create_proxy(&admin, proxy_body(&json!({}))).await;
    let (status, body) = admin
        .post(
            "/api/proxies",
            proxy_body(&json!({"name": "other", "hostname": "DOCS.example.COM"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "conflict");
    assert_eq!(body["error"]["field"], "hostname");

    let other = create_proxy(
        &admin,
        proxy_body(&json!({"name": "other", "hostname": "other.example.com"})),
    )
    .await;
    let (status, body) = admin
        .patch(
            &format!("/api/proxies/{}", other["id"]),
            json!({"hostname": "docs.example.com"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["field"], "hostname");
}

#[tokio::test]
async fn a_hostname_used_by_a_stage_cannot_be_taken_by_a_proxy() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let (status, stage) = create_stage_with_hostname(&admin, "shop", "shop.example.com").await;
    assert_eq!(status, StatusCode::CREATED, "{stage}");

    let (status, body) = admin
        .post(
            "/api/proxies",
            proxy_body(&json!({"hostname": "Shop.Example.com"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["field"], "hostname");

    let proxy = create_proxy(&admin, proxy_body(&json!({}))).await;
    let (status, body) = admin
        .patch(
            &format!("/api/proxies/{}", proxy["id"]),
            json!({"hostname": "shop.example.com"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["field"], "hostname");

    // Once the stage lets the hostname go, the proxy may have it.
    let (status, body) = admin
        .patch(&format!("/api/stages/{}", stage["id"]), json!({"hostname": null}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = admin
        .patch(
            &format!("/api/proxies/{}", proxy["id"]),
            json!({"hostname": "shop.example.com"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_hostname_used_by_a_proxy_cannot_be_taken_by_a_stage() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let proxy = create_proxy(&admin, proxy_body(&json!({"hostname": "shop.example.com"}))).await;

    let (status, body) = create_stage_with_hostname(&admin, "shop", "SHOP.example.com").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["field"], "hostname");

    let (status, stage) = create_stage_with_hostname(&admin, "blog", "blog.example.com").await;
    assert_eq!(status, StatusCode::CREATED, "{stage}");
    let (status, body) = admin
        .patch(
            &format!("/api/stages/{}", stage["id"]),
            json!({"hostname": "shop.example.com"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["field"], "hostname");

    // Once the proxy is deleted, the stage may have it.
    let (status, _) = admin.delete(&format!("/api/proxies/{}", proxy["id"])).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = admin
        .patch(
            &format!("/api/stages/{}", stage["id"]),
            json!({"hostname": "shop.example.com"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn viewers_and_members_read_proxies_but_only_an_admin_changes_them() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let proxy = create_proxy(&admin, proxy_body(&json!({}))).await;
    let path = format!("/api/proxies/{}", proxy["id"]);
    for (username, role) in [("vic", "viewer"), ("mia", "member")] {
        let client = app.user_with_role(username, role).await;
        let (status, _) = client.get("/api/proxies").await;
        assert_eq!(status, StatusCode::OK, "{role} lists");
        let (status, _) = client.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{role} reads");
        for (status, body) in [
            client
                .post(
                    "/api/proxies",
                    proxy_body(&json!({"hostname": "new.example.com"})),
                )
                .await,
            client.patch(&path, json!({"enabled": false})).await,
            client.delete(&path).await,
        ] {
            assert_eq!(status, StatusCode::FORBIDDEN, "{role}: {body}");
            assert_eq!(body["error"]["code"], "forbidden");
        }
    }
    let (_, fetched) = admin.get(&path).await;
    assert_eq!(fetched, proxy);
}

#[tokio::test]
async fn requests_without_credentials_are_401() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let proxy = create_proxy(&admin, proxy_body(&json!({}))).await;
    let path = format!("/api/proxies/{}", proxy["id"]);
    let anonymous = app.anonymous();
    for (status, body) in [
        anonymous.get("/api/proxies").await,
        anonymous
            .post(
                "/api/proxies",
                proxy_body(&json!({"hostname": "new.example.com"})),
            )
            .await,
        anonymous.get(&path).await,
        anonymous.patch(&path, json!({"enabled": false})).await,
        anonymous.delete(&path).await,
    ] {
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
}

#[tokio::test]
async fn unknown_proxy_ids_are_404_and_non_integer_ids_are_400() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    for (status, body) in [
        admin.get("/api/proxies/999").await,
        admin.patch("/api/proxies/999", json!({"enabled": false})).await,
        admin.delete("/api/proxies/999").await,
    ] {
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert_eq!(body["error"]["code"], "not_found");
    }
    for (status, body) in [
        admin.get("/api/proxies/abc").await,
        admin.patch("/api/proxies/abc", json!({"enabled": false})).await,
        admin.delete("/api/proxies/abc").await,
    ] {
        assert_field_error(status, &body, "id");
    }
}

#[tokio::test]
async fn creating_updating_and_deleting_a_proxy_is_recorded_with_the_actor() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let proxy = create_proxy(&admin, proxy_body(&json!({}))).await;
    let path = format!("/api/proxies/{}", proxy["id"]);
    let (status, _) = admin.patch(&path, json!({"enabled": false})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = admin.delete(&path).await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let (status, events) = admin.get("/api/events?source=api").await;
    assert_eq!(status, StatusCode::OK, "{events}");
    let items = events["items"].as_array().expect("items");
    let ours: Vec<&Value> = items
        .iter()
        .filter(|e| e["details"]["proxy_id"] == proxy["id"])
        .collect();
    assert_eq!(ours.len(), 3, "{events}");
    for event in &ours {
        assert_eq!(event["severity"], "info");
        assert_eq!(event["details"]["actor"], "admin");
    }
}
