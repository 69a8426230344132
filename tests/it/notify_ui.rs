//! The notifications page in a real Chromium: an admin adds a webhook channel from the form
//! (only the selected kind's fields showing), sends it a test from its row and reads the result,
//! and a failed deploy event then arrives at the receiver and shows in the delivery log. Viewers
//! and members have no such page.

use std::time::Duration;

use docker_watcher::domain::event::{EventKind, NewEvent, Source};
use reqwest::StatusCode;

use crate::browser::with_browser;
use crate::helpers::{ADMIN_PASSWORD, spawn_app};
use crate::notify::Receiver;
use crate::testenv::unique;

#[tokio::test]
async fn a_notification_channel_is_created_tested_and_delivering_from_the_ui() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let hook_url = receiver.url("/from-the-ui");
    let state = app.app().state().clone();
    with_browser(&app.base_url, "notifications", |b| async move {
        b.goto("/notifications").await;
        b.login("admin", ADMIN_PASSWORD).await;
        b.goto("/notifications").await;
        b.wait_for_text("h1", "Notifications").await;
        assert!(b.exists("a[href='/notifications'][aria-current='page']").await);

        // The add form shows the selected kind's fields only.
        b.find("#new-channel-kind").await;
        let email_visible = b
            .eval("return document.querySelector('#new-channel [data-kinds=\"email\"]').offsetParent !== null;")
            .await;
        assert_eq!(email_visible, serde_json::json!(false), "email fields show for a webhook");
        b.eval("var s = document.getElementById('new-channel-kind'); s.value = 'email'; s.dispatchEvent(new Event('change')); return true;").await;
        let email_visible = b
            .eval("return document.querySelector('#new-channel [data-kinds=\"email\"]').offsetParent !== null;")
            .await;
        assert_eq!(email_visible, serde_json::json!(true), "email fields hidden for email");
        b.eval("var s = document.getElementById('new-channel-kind'); s.value = 'webhook'; s.dispatchEvent(new Event('change')); return true;").await;

        b.fill("#new-channel-name", "ops-hook").await;
        b.fill("#new-channel-secrets\\.url", &hook_url).await;
        b.fill("#new-channel-secrets\\.signing_secret", "ui-secret").await;
        b.click("#new-channel-kind\\.deploy_failed").await;
        b.click("form[action='/notifications'] button[type=submit]").await;
        b.wait_for_text(".flash", "Channel ops-hook added").await;
        let row = "tr[data-channel-id]";
        b.wait_for_text(row, "ops-hook").await;
        b.wait_for_text(row, "deploy failed").await;
        let page = b.eval("return document.body.innerHTML;").await;
        assert!(!page.as_str().unwrap().contains("ui-secret"), "a secret is on the page");
        assert!(!page.as_str().unwrap().contains("/from-the-ui"), "the secret URL is on the page");

        b.click("tr[data-channel-id] form[action$='/test'] button").await;
        b.wait_for_text(".flash", "Test delivered (HTTP 200)").await;
        let test = receiver.wait_for(1, Duration::from_secs(5)).await;
        assert!(test[0].json()["title"].as_str().unwrap().contains("ops-hook"));
        b.wait_for_text("table.deliveries", "test").await;

        let marker = unique("ui-failed-deploy");
        state
            .bus
            .publish(NewEvent::error(Source::Deployer, format!("deploying v9 failed: {marker}")).kind(EventKind::DeployFailed))
            .await;
        let received = receiver.wait_for(2, Duration::from_secs(10)).await;
        assert!(received[1].text().contains(&marker));
        b.goto("/notifications").await;
        b.wait_for_text("table.deliveries", "deploy failed").await;
        b.wait_for_text("tr[data-channel-id] .last-delivery", "delivered").await;
    })
    .await;

    let viewer = app.user_with_role("vera", "viewer").await;
    let response = viewer
        .request(reqwest::Method::GET, "/notifications")
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    app.stop().await;
}
