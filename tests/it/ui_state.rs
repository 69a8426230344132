//! State that is never wrong on screen (issue 12, part 5), through the real app over HTTP as a
//! browser without JavaScript sees it: a form's address opened directly answers `405` as a page
//! that links to the form's page (the API keeps its own answer); the stale page offers no bulk
//! control with nothing stale, and its bulk dry run names project, stage and tag of each
//! instance and warns about the one a rollback would bring back; a stopped current instance
//! loses its "serving" badge; deployment digests are shortened with the whole value on hover;
//! the event log's per-page control shows the size in use and offers small sizes; an instance
//! whose deploy failed (its container ran, but it never served) is not "never ran" on the
//! stale page; a per-tag stage shows the pattern of its hostnames, not a name that answers 404.

use reqwest::StatusCode;
use serde_json::json;

use crate::deploy::{Cleanup, Variant, create_project, create_stage, deploy, push_image};
use crate::helpers::{ADMIN_PASSWORD, spawn_app};
use crate::stale::{advance_days, deployed, scan};
use crate::testenv::unique;
use crate::ui::UiSession;

#[tokio::test]
async fn a_forms_address_opened_directly_is_a_405_page_leading_to_the_form() {
    let app = spawn_app().await;
    let session = UiSession::logged_in(&app, "admin", ADMIN_PASSWORD).await;
    for (path, back) in [
        ("/stages/5/edit", "href=\"/stages/5\""),
        ("/projects/3/delete", "href=\"/projects/3\""),
        ("/instances/7/stop", "href=\"/\""),
        ("/stale/cleanup", "href=\"/stale\""),
        ("/settings/webhook/rotate", "href=\"/settings\""),
        ("/logout", "href=\"/\""),
    ] {
        let page = session.get(path).await;
        assert_eq!(page.status, StatusCode::METHOD_NOT_ALLOWED, "{path}");
        assert_eq!(page.headers["allow"], "POST", "{path}");
        assert!(
            page.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html"),
            "{path}"
        );
        page.assert_has("405 Method Not Allowed");
        page.assert_has("is where a form sends what you submit");
        page.assert_has(&format!("<a {back} id=\"error-back\">"));
        page.assert_has("action=\"/logout\"");
    }
    // A stranger gets the page too (without the navigation); the API keeps its own answer.
    let stranger = reqwest::Client::new();
    let response = stranger.get(app.url("/stages/5/deploy")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let body = response.text().await.unwrap();
    assert!(body.contains("href=\"/stages/5\""), "{body}");
    assert!(!body.contains("action=\"/logout\""), "{body}");
    let response = stranger
        .get(app.url("/api/stages/5/deploy"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(
        !response.text().await.unwrap().contains("<html"),
        "the API answers no page"
    );
    // Another wrong method, or a route that is not a form's, keeps the plain answer.
    let response = stranger.post(app.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(!response.text().await.unwrap().contains("<html"));
    let response = stranger.put(app.url("/stages/5/edit")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(!response.text().await.unwrap().contains("<html"));
    // Pages themselves are untouched.
    assert_eq!(session.get("/stale").await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_bulk_dry_run_names_each_instance_warns_about_the_rollback_target_and_a_stopped_instance_serves_nothing()
 {
    let d = deployed(&["v1", "v2", "v3"]).await;
    let (v1, v2, v3) = (
        d.instances[0]["id"].as_i64().unwrap(),
        d.instances[1]["id"].as_i64().unwrap(),
        d.instances[2]["id"].as_i64().unwrap(),
    );
    let session = UiSession::logged_in(&d.app, "admin", ADMIN_PASSWORD).await;

    // Nothing stale yet: no bulk control.
    let stale = session.get("/stale").await;
    stale.assert_has("Nothing is stale.");
    stale.assert_lacks("id=\"bulk-cleanup\"");
    stale.assert_lacks("bulk-preview-button");

    advance_days(&d.app, 8);
    scan(&d.admin).await;
    // Eight days later the session has expired: log in again.
    let session = UiSession::logged_in(&d.app, "admin", ADMIN_PASSWORD).await;
    let stale = session.get("/stale").await;
    stale.assert_has("id=\"bulk-cleanup\"");
    let preview = session.submit("/stale/cleanup", &[]).await;
    assert_eq!(preview.status, StatusCode::OK, "{}", preview.body);
    let (_, stage) = d.admin.get(&format!("/api/stages/{}", d.stage_id)).await;
    let (_, project) = d
        .admin
        .get(&format!("/api/projects/{}", stage["project_id"]))
        .await;
    let (project, stage) = (project["name"].as_str().unwrap(), stage["name"].as_str().unwrap());
    for (id, tag) in [(v1, "v1"), (v2, "v2")] {
        preview.assert_has(&format!(
            "<li data-preview-instance=\"{id}\">#{id} · {project} / {stage} · tag <span class=\"tag\">{tag}</span>"
        ));
    }
    preview.assert_lacks(&format!("data-preview-instance=\"{v3}\""));
    // v2 is what a rollback brings back now; v1 is not.
    let item = |id: i64| {
        let start = preview
            .body
            .find(&format!("data-preview-instance=\"{id}\""))
            .unwrap();
        let end = preview.body[start..].find("</li>").unwrap() + start;
        preview.body[start..end].to_owned()
    };
    assert!(item(v2).contains("data-rollback-target"), "{}", item(v2));
    assert!(!item(v1).contains("data-rollback-target"), "{}", item(v1));
    preview.assert_has("role=\"alert\">Removing a rollback target");
    let (_, still) = d.admin.get(&format!("/api/instances/{v1}")).await;
    assert_eq!(still["status"], "stopped", "a dry run removes nothing");

    // The serving badge follows the instance, not the stage's pointer to it.
    let stage_page = format!("/stages/{}", d.stage_id);
    let page = session.get(&stage_page).await;
    page.assert_has(&format!(
        "{v3} <span class=\"badge ok\" data-serving>serving</span>"
    ));
    let digest = d.instances[2]["image_digest"].as_str().unwrap();
    page.assert_has(&format!("<code title=\"{digest}\">"));
    page.assert_lacks(&format!(">{digest}<"));
    let (status, body) = d
        .admin
        .post(&format!("/api/instances/{v3}/stop"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let page = session.get(&stage_page).await;
    page.assert_lacks("data-serving");
    page.assert_has(&format!("{v3} <span class=\"badge idle\""));
    page.assert_has("current, stopped");
    d.app.stop().await;
}

#[tokio::test]
async fn the_per_page_control_shows_the_size_in_use_and_offers_small_sizes() {
    let app = spawn_app().await;
    let session = UiSession::logged_in(&app, "admin", ADMIN_PASSWORD).await;
    let options = |body: &str| -> Vec<(String, bool)> {
        let start = body.find("id=\"filter-per-page\"").expect("the control");
        let end = body[start..].find("</select>").unwrap() + start;
        body[start..end]
            .split("<option value=\"")
            .skip(1)
            .map(|o| {
                let value = o[..o.find('"').unwrap()].to_owned();
                (value, o.contains(" selected"))
            })
            .collect()
    };
    let page = session.get("/events").await;
    let default = options(&page.body);
    let values: Vec<&str> = default.iter().map(|(v, _)| v.as_str()).collect();
    assert_eq!(values, vec!["10", "20", "50", "100", "200", "500"]);
    assert_eq!(
        default.iter().filter(|(_, s)| *s).collect::<Vec<_>>(),
        vec![&("50".to_owned(), true)],
        "the default size is the one shown"
    );
    let page = session.get("/events?per_page=10").await;
    assert!(options(&page.body).contains(&("10".to_owned(), true)));
    let page = session.get("/events?per_page=37").await;
    let odd = options(&page.body);
    assert!(odd.contains(&("37".to_owned(), true)), "{odd:?}");
    assert_eq!(odd.iter().filter(|(_, s)| *s).count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_whose_deploy_failed_is_never_called_never_ran_on_the_stale_page() {
    let app = spawn_app().await;
    let mut cleanup = Cleanup::new(&app);
    let repo = unique("dwtest/ui-never-");
    cleanup.repo(&repo);
    let admin = app.admin().await;
    push_image(&repo, "v1", Variant::Exit1, "starts and exits").await;
    let project_id = create_project(&admin, &repo).await;
    // Three seconds up before it counts as ready: an image that exits at once must not pass the
    // gate on a loaded machine where its shell had not run yet after one second.
    let stage_id = create_stage(&admin, project_id, "tag:v1", json!({"min_ready_seconds": 3})).await;
    let (status, deployment) = deploy(&admin, stage_id, json!({"tag": "v1"})).await;
    assert_eq!(deployment["status"], "failed", "{status} {deployment}");
    let instance = deployment["instance_id"].as_i64().unwrap();
    advance_days(&app, 8);
    let list = scan(&admin).await;
    assert!(
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["instance_id"] == instance),
        "{list}"
    );
    let session = UiSession::logged_in(&app, "admin", ADMIN_PASSWORD).await;
    let page = session.get("/stale").await;
    page.assert_has(&format!("data-instance-id=\"{instance}\""));
    page.assert_has("data-never-served");
    page.assert_lacks("never ran");
    app.stop().await;
}

#[tokio::test]
async fn a_per_tag_stage_shows_the_pattern_of_its_hostnames_not_a_name_that_answers_404() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let (status, _) = admin
        .patch("/api/settings", json!({"base_domain": "apps.example.test"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let project = unique("pt");
    let (_, created) = admin
        .post("/api/projects", json!({"name": project, "image": "nginx"}))
        .await;
    let project_id = created["id"].as_i64().unwrap();
    let stage = |name: &'static str, policy: &'static str| {
        let admin = admin.clone();
        async move {
            let (status, created) = admin
                .post(
                    &format!("/api/projects/{project_id}/stages"),
                    json!({"name": name, "tag_policy": policy, "auto_deploy": false}),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{created}");
            created["id"].as_i64().unwrap()
        }
    };
    let previews = stage("previews", "glob:pr-*").await;
    let prod = stage("prod", "tag:v1").await;
    let session = UiSession::logged_in(&app, "admin", ADMIN_PASSWORD).await;

    let pattern = format!("{{tag}}.previews.{project}.apps.example.test");
    let page = session.get(&format!("/stages/{previews}")).await;
    page.assert_has(&format!("<dd id=\"stage-hostname\"><code>{pattern}</code>"));
    page.assert_lacks(&format!("previews.{project}.apps.example.test\""));
    // A single stage keeps its one hostname, linked through the proxy.
    let page = session.get(&format!("/stages/{prod}")).await;
    page.assert_has(&format!(
        "<dd id=\"stage-hostname\"><a href=\"http://prod.{project}.apps.example.test"
    ));
    // The project page lists both the same way.
    let page = session.get(&format!("/projects/{project_id}")).await;
    page.assert_has(&format!("<code title=\"one hostname per tag\">{pattern}</code>"));
    page.assert_has(&format!(">prod.{project}.apps.example.test</a>"));
}
