//! The registry webhook on the settings page, in a real Chromium: an admin finds the URL with
//! its token, the distribution `notifications:` block and the other registries' instructions,
//! copies the URL, and rotates the token from the page (the old one then stops working); a
//! member sees none of it.

use reqwest::StatusCode;
use serde_json::json;

use crate::browser::with_browser;
use crate::helpers::{ADMIN_PASSWORD, spawn_app_with};

#[tokio::test]
async fn the_settings_page_shows_admins_the_webhook_and_rotates_its_token() {
    let app = spawn_app_with(|config| config.webhook_token = None).await;
    let admin = app.admin().await;
    let (_, token) = admin.get("/api/hooks/registry/token").await;
    let old = token["token"].as_str().unwrap().to_owned();
    let old_url = token["url"].as_str().unwrap().to_owned();
    let anonymous = app.anonymous();
    with_browser(&app.base_url, "webhook_panel", |b| async move {
        b.goto("/settings").await;
        b.login("admin", ADMIN_PASSWORD).await;
        b.goto("/settings").await;
        b.wait_for_text("#webhook h2", "registry webhook").await;
        let shown = b
            .eval("return document.getElementById('webhook-url').value;")
            .await;
        assert_eq!(shown, json!(old_url));
        b.wait_for_text("#webhook-distribution", "notifications:").await;
        b.wait_for_text("#webhook-distribution", &old_url).await;
        for needle in ["Harbor", "Docker Hub", "GHCR", "GitLab"] {
            b.wait_for_text("#webhook", needle).await;
        }
        b.click("button[data-copy='#webhook-url']").await;
        b.wait_until("the copy button to say what it did", || async {
            let text = b.text("button[data-copy='#webhook-url']").await;
            text.contains("Copied") || text.contains("Selected")
        })
        .await;

        b.click("#webhook details.confirm summary").await;
        b.click("#webhook details.confirm button[type=submit]").await;
        b.wait_for_text(".flash", "Webhook token rotated").await;
        let rotated = b
            .eval("return document.getElementById('webhook-url').value;")
            .await;
        let rotated = rotated.as_str().unwrap().to_owned();
        assert_ne!(rotated, old_url);
        let hook = |token: String| {
            let anonymous = anonymous.clone();
            async move {
                anonymous
                    .post_raw(
                        &format!("/api/hooks/registry?token={token}"),
                        "application/json",
                        json!({"events": []}).to_string(),
                    )
                    .await
                    .0
            }
        };
        assert_eq!(hook(old).await, StatusCode::UNAUTHORIZED);
        let new = rotated.split("token=").nth(1).unwrap().to_owned();
        assert_eq!(hook(new).await, StatusCode::ACCEPTED);
    })
    .await;

    let member = app.user_with_role("meg", "member").await;
    let response = member
        .request(reqwest::Method::GET, "/settings")
        .send()
        .await
        .unwrap();
    let page = response.text().await.unwrap();
    assert!(
        page.contains("Settings") && !page.contains("webhook-url"),
        "a member sees the webhook"
    );
    app.stop().await;
}
