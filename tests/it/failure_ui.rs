//! Failure handling a user can read (issue 12, part 3) over HTTP, as a browser without
//! JavaScript sees it: a digest whose deploy failed is listed as blocked on the stage page with
//! why and a retry action that deploys that exact digest; "Poll now" on it is a warning naming
//! why, not a green success; the rollback confirmation names the instance, tag and digest it
//! brings back. And the API deploys a given digest. While the Docker engine is unreachable,
//! every page shows a banner (issue 12, part 5).

use reqwest::StatusCode;
use serde_json::json;

use crate::deploy::{Cleanup, Variant, create_project, create_stage, deploy, deploy_ok, push_image, unique};
use crate::helpers::{ADMIN_PASSWORD, spawn_app, spawn_app_with};
use crate::ui::UiSession;

#[tokio::test]
async fn a_failed_digest_is_shown_blocked_with_why_polls_warn_and_retry_deploys_that_digest() {
    let app = spawn_app().await;
    let mut cleanup = Cleanup::new(&app);
    let repo = unique("dwtest/ui-skip-");
    cleanup.repo(&repo);
    let admin = app.admin().await;
    let good = push_image(&repo, "v1", Variant::Web, "good").await;
    let broken = push_image(&repo, "v1", Variant::Exit1, "broken").await;
    let project_id = create_project(&admin, &repo).await;
    // Three seconds up before it counts as ready: an image that exits at once must not pass the
    // gate on a loaded machine where its shell had not run yet after one second.
    let stage_id = create_stage(&admin, project_id, "tag:v1", json!({"min_ready_seconds": 3})).await;
    let (status, deployment) = deploy(&admin, stage_id, json!({"tag": "v1"})).await;
    assert_eq!(
        (status, &deployment["status"]),
        (StatusCode::CREATED, &json!("failed")),
        "{deployment}"
    );
    // Automatic deploys are the ones that skip a failed digest.
    let (status, body) = admin
        .patch(&format!("/api/stages/{stage_id}"), json!({"auto_deploy": true}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let ui = UiSession::logged_in(&app, "admin", ADMIN_PASSWORD).await;
    let polled = ui.submit(&format!("/stages/{stage_id}/poll"), &[]).await;
    assert_eq!(polled.status, StatusCode::SEE_OTHER, "{}", polled.body);
    let page = ui.get(polled.location()).await;
    page.assert_has("class=\"flash warning\"");
    page.assert_has("skipped: this digest failed before (retry it from the stage page)");
    page.assert_has(&broken.as_str()[..19]);
    page.assert_lacks("class=\"flash notice\"");

    // The stage page lists it as blocked, with why, and a retry of that exact digest.
    page.assert_has("Blocked digests");
    page.assert_has(&format!("data-blocked-digest=\"{}\"", broken.as_str()));
    page.assert_has("the container exited");
    page.assert_has("Retry this digest");
    let retried = ui
        .submit(
            &format!("/stages/{stage_id}/deploy"),
            &[("tag", "v1"), ("digest", broken.as_str())],
        )
        .await;
    assert_eq!(retried.status, StatusCode::SEE_OTHER, "{}", retried.body);
    // The page may answer before the deploy ends ("Deploying…"): wait for its outcome.
    let mut history = json!(null);
    for _ in 0..120 {
        history = admin
            .get(&format!("/api/deployments?stage_id={stage_id}"))
            .await
            .1;
        if history["items"][0]["status"] != "running" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let newest = &history["items"][0];
    assert_eq!(
        (&newest["image_digest"], &newest["trigger"], &newest["status"]),
        (&json!(broken.as_str()), &json!("manual"), &json!("failed")),
        "{history}"
    );

    // The API deploys a given digest, whatever the tag points at now.
    let (status, deployment) = deploy(&admin, stage_id, json!({"tag": "v1", "digest": good.as_str()})).await;
    assert_eq!(status, StatusCode::CREATED, "{deployment}");
    assert_eq!(
        (&deployment["status"], &deployment["image_digest"]),
        (&json!("succeeded"), &json!(good.as_str())),
        "{deployment}"
    );
    // Bad input names its field.
    let (status, body) = deploy(&admin, stage_id, json!({"tag": "v1", "digest": "sha256:nope"})).await;
    assert_eq!(
        (status, &body["error"]["field"]),
        (StatusCode::BAD_REQUEST, &json!("digest")),
        "{body}"
    );
    let (status, body) = deploy(&admin, stage_id, json!({"digest": good.as_str()})).await;
    assert_eq!(
        (status, &body["error"]["field"]),
        (StatusCode::BAD_REQUEST, &json!("tag")),
        "{body}"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_rollback_confirmation_names_the_instance_tag_and_digest_it_brings_back() {
    let app = spawn_app().await;
    let mut cleanup = Cleanup::new(&app);
    let repo = unique("dwtest/ui-rollback-");
    cleanup.repo(&repo);
    let admin = app.admin().await;
    let first = push_image(&repo, "v1", Variant::Web, "first").await;
    push_image(&repo, "v2", Variant::Web, "second").await;
    let project_id = create_project(&admin, &repo).await;
    let stage_id = create_stage(&admin, project_id, "tag:v1", json!({})).await;
    let ui = UiSession::logged_in(&app, "admin", ADMIN_PASSWORD).await;

    // Nothing to bring back yet: the confirmation says so.
    let asked = ui.submit(&format!("/stages/{stage_id}/rollback"), &[]).await;
    assert_eq!(asked.status, StatusCode::OK);
    asked.assert_has("There is no earlier instance to bring back");

    let earlier = deploy_ok(&admin, stage_id, "v1").await;
    deploy_ok(&admin, stage_id, "v2").await;
    let expected = format!(
        "Bring back instance #{} (tag v1, digest {}) and stop the current one?",
        earlier["id"],
        first.as_str()
    );
    let asked = ui.submit(&format!("/stages/{stage_id}/rollback"), &[]).await;
    assert_eq!(asked.status, StatusCode::OK);
    asked.assert_has(&expected);
    // The in-page confirmation box says the same.
    ui.get(&format!("/stages/{stage_id}")).await.assert_has(&expected);
    app.stop().await;
}

#[tokio::test]
async fn every_page_shows_a_banner_while_the_docker_engine_is_unreachable() {
    let socket = format!("unix:///tmp/{}.sock", unique("dw-no-docker-"));
    let down = spawn_app_with(move |config| config.docker_host = Some(socket.clone())).await;
    let ui = UiSession::logged_in(&down, "admin", ADMIN_PASSWORD).await;
    for page in ["/", "/events", "/stale", "/settings", "/notifications", "/tokens"] {
        let page = ui.get(page).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        page.assert_has("The Docker engine is unreachable.");
    }
    down.stop().await;

    // With the engine answering, no banner (once the sync's event stream is connected).
    let up = spawn_app().await;
    let ui = UiSession::logged_in(&up, "admin", ADMIN_PASSWORD).await;
    let mut shown = true;
    for _ in 0..50 {
        shown = ui
            .get("/")
            .await
            .body
            .contains("The Docker engine is unreachable.");
        if !shown {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(!shown, "the banner stays while the engine answers");
    up.stop().await;
}
