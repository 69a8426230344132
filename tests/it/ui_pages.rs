//! The web UI over plain HTTP, pages at scale and at their edges: the dashboard and the event
//! log render every row with 1,000 events and 100 instances, unknown pages get the HTML 404 page
//! while `/api` keeps its JSON one, and hostname links go through the proxy's real port (and
//! HTTPS where a certificate covers the name).

use chrono::TimeDelta;
use docker_watcher::clock::Clock;
use docker_watcher::domain::event::{NewEvent, Severity, Source};
use docker_watcher::domain::instance::{InstanceStatus, NewInstance};
use reqwest::StatusCode;
use serde_json::json;

use crate::deploy::{registry, unique};
use crate::helpers::{ADMIN_PASSWORD, ApiClient, TestApp, spawn_app, spawn_app_with};
use crate::ui::{Page, UiSession};

#[tokio::test]
async fn the_dashboard_and_the_event_log_render_every_row_with_1000_events_and_100_instances() {
    let app = spawn_app().await;
    let api = app.admin().await;
    let state = app.app().state();
    let now = app.clock.now();
    let mut stages = Vec::new();
    for p in 0..10 {
        let (status, project) = api
            .post(
                "/api/projects",
                json!({"name": format!("load{p}"), "image": format!("{}/dwtest/load{p}", registry())}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{project}");
        let project_id = project["id"].as_i64().unwrap();
        for s in ["prod", "staging"] {
            let (status, stage) = api
                .post(
                    &format!("/api/projects/{project_id}/stages"),
                    json!({"name": s, "tag_policy": "semver:^1", "auto_deploy": false, "schedule": "@every 24h"}),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{stage}");
            stages.push((project_id, stage["id"].as_i64().unwrap()));
        }
    }
    // 100 instances, five per stage: the newest runs and is current, the others stopped.
    for round in 0..5 {
        for (project_id, stage_id) in &stages {
            let instance = state
                .store
                .insert_instance(&NewInstance {
                    project_id: *project_id,
                    stage_id: *stage_id,
                    image_tag: format!("1.{round}.0"),
                    image_digest: Some(format!("sha256:{:064x}", round * 1000 + stage_id)),
                    status: InstanceStatus::Pending,
                    hostname: None,
                    created_at: now,
                    config_revision: 1,
                })
                .await
                .unwrap();
            let status = if round == 4 {
                InstanceStatus::Running
            } else {
                InstanceStatus::Stopped
            };
            state
                .store
                .update_instance_status(instance.id, status, None, now)
                .await
                .unwrap();
            if round == 4 {
                state
                    .store
                    .set_current_instance(*stage_id, Some(instance.id))
                    .await
                    .unwrap();
            }
        }
    }
    let events: Vec<_> = (0..1000)
        .map(|i| {
            let (project_id, stage_id) = stages[i % stages.len()];
            let severity = [Severity::Info, Severity::Warn, Severity::Error][i % 3];
            let event = NewEvent::new(severity, Source::Deployer, format!("load event {i}"))
                .project(project_id)
                .stage(stage_id)
                .detail("n", i as u64)
                .recorded();
            (event, now - TimeDelta::seconds(i as i64))
        })
        .collect();
    state.store.insert_events(&events).await.unwrap();

    let admin = UiSession::logged_in(&app, "admin", ADMIN_PASSWORD).await;
    // Render times are measured by the event-log benchmark (scripts/bench-events.sh), not here:
    // a timed assertion fails whenever the machine is busy. This checks the pages render over
    // that much data, with every row.
    for path in ["/", "/events", "/events?per_page=500", "/stale"] {
        assert_eq!(admin.get(path).await.status, StatusCode::OK, "{path}");
    }
    let dashboard = admin.get("/").await;
    assert_eq!(
        dashboard.body.matches("data-instance-status=").count(),
        20,
        "one current instance per stage"
    );
    let events = admin.get("/events?per_page=500").await;
    assert_eq!(events.body.matches("data-event-id=").count(), 500);
    app.stop().await;
}

#[tokio::test]
async fn unknown_pages_get_the_html_404_page_while_the_api_keeps_its_json_404() {
    let app = spawn_app().await;
    let admin = UiSession::logged_in(&app, "admin", ADMIN_PASSWORD).await;
    let stranger = UiSession::new(&app);
    let is_html = |page: &Page| {
        page.headers["content-type"]
            .to_str()
            .is_ok_and(|v| v.starts_with("text/html"))
    };

    for path in [
        "/no-such-page",
        "/projects/abc/xyz",
        "/projects/999999",
        "/stages/999999",
    ] {
        let page = admin.get(path).await;
        assert_eq!(page.status, StatusCode::NOT_FOUND, "{path}: {}", page.body);
        assert!(is_html(&page), "{path}: {:?}", page.headers);
        page.assert_has("<h1>404 Not Found</h1>");
        // The layout of every page, with the navigation of the logged-in user.
        page.assert_has("<main id=\"main\"");
        page.assert_has("href=\"/events\"");
    }
    admin
        .get("/no-such-page")
        .await
        .assert_has("There is no page at /no-such-page.");
    // A stranger gets the page too (no redirect to log in for a page that does not exist),
    // without the navigation.
    let page = stranger.get("/no-such-page").await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    assert!(is_html(&page), "{:?}", page.headers);
    page.assert_has("<h1>404 Not Found</h1>");
    page.assert_lacks("href=\"/events\"");
    // A page's id that is not one is refused on a page, naming the parameter.
    let page = admin.get("/projects/abc").await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
    assert!(is_html(&page), "{:?}", page.headers);
    page.assert_has("id: must be a positive integer");

    // The API keeps its JSON error shape, and so does a client that asks for JSON.
    let api = app.anonymous();
    let (status, body) = api.get("/api/no-such-thing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        json!({"error": {"code": "not_found", "message": "no such route", "field": null}})
    );
    let (status, body) = api
        .send(
            api.request(reqwest::Method::GET, "/no-such-page")
                .header("accept", "application/json"),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found", "{body}");
    app.stop().await;
}

/// A project with a stage routed at `hostname` whose (inserted, not deployed) instance runs and
/// is current, so the dashboard shows it; the project's and the stage's ids.
async fn stage_with_hostname(app: &TestApp, admin: &ApiClient, hostname: &str) -> (i64, i64) {
    let (status, project) = admin
        .post(
            "/api/projects",
            json!({"name": unique("links"), "image": format!("{}/dwtest/links", registry())}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{project}");
    let project_id = project["id"].as_i64().unwrap();
    let (status, stage) = admin
        .post(
            &format!("/api/projects/{project_id}/stages"),
            json!({"name": "prod", "tag_policy": "semver:^1", "auto_deploy": false, "schedule": "@every 24h", "hostname": hostname}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{stage}");
    let stage_id = stage["id"].as_i64().unwrap();
    let store = &app.app().state().store;
    let now = app.clock.now();
    let instance = store
        .insert_instance(&NewInstance {
            project_id,
            stage_id,
            image_tag: "1.0.0".into(),
            image_digest: Some(format!("sha256:{:064x}", 1)),
            status: InstanceStatus::Pending,
            hostname: None,
            created_at: now,
            config_revision: 1,
        })
        .await
        .unwrap();
    store
        .update_instance_status(instance.id, InstanceStatus::Running, None, now)
        .await
        .unwrap();
    store
        .set_current_instance(stage_id, Some(instance.id))
        .await
        .unwrap();
    (project_id, stage_id)
}

#[tokio::test]
async fn hostname_links_carry_the_port_the_proxy_really_listens_on() {
    let app = spawn_app().await;
    let api = app.admin().await;
    let (project_id, stage_id) = stage_with_hostname(&app, &api, "shop.links.example.test").await;
    for (name, hostname, enabled) in [
        ("docs", "docs.links.example.test", true),
        ("old", "old.links.example.test", false),
    ] {
        let (status, proxy) = api
            .post(
                "/api/proxies",
                json!({"name": name, "hostname": hostname, "target_url": "http://127.0.0.1:9/", "enabled": enabled}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{proxy}");
    }
    let port = app.app().proxy_addr().port();
    assert_ne!(port, 80, "the test proxy listens on a random port");
    let stage_link = format!("href=\"http://shop.links.example.test:{port}/\"");

    let admin = UiSession::logged_in(&app, "admin", ADMIN_PASSWORD).await;
    for path in [
        format!("/stages/{stage_id}"),
        format!("/projects/{project_id}"),
        "/".to_owned(),
    ] {
        let page = admin.get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        page.assert_has(&stage_link);
        page.assert_lacks("href=\"http://shop.links.example.test/\"");
    }
    let proxies = admin.get("/proxies").await;
    proxies.assert_has(&format!("href=\"http://docs.links.example.test:{port}/\""));
    // A disabled proxy is not routed: its hostname is no link.
    proxies.assert_has("old.links.example.test");
    proxies.assert_lacks("href=\"http://old.links.example.test");
    app.stop().await;
}

#[tokio::test]
async fn hostname_links_use_https_and_its_port_when_a_certificate_covers_the_name() {
    let certs = tempfile::tempdir().expect("a directory for the certificate");
    let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args("req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2".split(' '))
        .args(["-subj", "/CN=shop.links.example.test"])
        .args(["-addext", "subjectAltName=DNS:shop.links.example.test"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let app = spawn_app_with(move |config| {
        config.proxy.https_listen = Some("127.0.0.1:0".parse().expect("an address"));
        config.proxy.tls = vec![docker_watcher::config::TlsCertificateConfig {
            hostname: "shop.links.example.test".into(),
            cert: cert.clone(),
            key: key.clone(),
        }];
    })
    .await;
    let api = app.admin().await;
    let (_, stage_id) = stage_with_hostname(&app, &api, "shop.links.example.test").await;
    let (status, proxy) = api
        .post(
            "/api/proxies",
            json!({"name": "docs", "hostname": "docs.links.example.test", "target_url": "http://127.0.0.1:9/"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{proxy}");
    let https_port = app.app().proxy_https_addr().expect("an HTTPS listener").port();
    let http_port = app.app().proxy_addr().port();

    let admin = UiSession::logged_in(&app, "admin", ADMIN_PASSWORD).await;
    admin
        .get(&format!("/stages/{stage_id}"))
        .await
        .assert_has(&format!("href=\"https://shop.links.example.test:{https_port}/\""));
    // No certificate covers this one: plain HTTP reaches it without a certificate warning.
    admin
        .get("/proxies")
        .await
        .assert_has(&format!("href=\"http://docs.links.example.test:{http_port}/\""));
    app.stop().await;
}
