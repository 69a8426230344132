//! The web UI in a real headless Chromium ([`crate::browser`]) against real containers:
//! logging in, the deployed stage on the dashboard, a deploy from the stage page whose status
//! changes without a reload, filtering the event log and a `warn` event arriving live (naming
//! its project and stage as rendered rows do, also a stage made after the page), cleaning
//! up a stale instance, an open confirmation inside the window on a phone and on a desktop,
//! what members and viewers do not see, and a form error next to its
//! field. `screenshots_of_the_main_pages…` renders a realistic installation and keeps its
//! pictures (in `docs/screenshots/` when `DW_UPDATE_SCREENSHOTS=1`).

use chrono::TimeDelta;
use docker_watcher::domain::event::{NewEvent, Source};
use reqwest::StatusCode;
use serde_json::json;

use crate::browser::{Browser, with_browser};
use crate::deploy::{Cleanup, Variant, deploy_ok, push_image, registry, unique};
use crate::helpers::{ADMIN_PASSWORD, spawn_app};
use crate::logs::{tick_number, ticking};
use crate::ui::{add_user, deployed};

// ----- In a real browser ------------------------------------------------------------------------

/// Each instance row of a stage page: (tag, status, whether it serves).
async fn instance_rows(b: &Browser) -> Vec<(String, String, bool)> {
    let rows = b
        .eval(
            "return Array.from(document.querySelectorAll('#stage-instances tr[data-instance-id]')).map(function (r) {
               return [r.querySelector('td.tag').textContent.trim(),
                       r.querySelector('[data-instance-status]').textContent.trim(),
                       r.classList.contains('current')];
             });",
        )
        .await;
    serde_json::from_value(rows).unwrap_or_default()
}

#[tokio::test]
async fn logging_in_shows_the_deployed_stage_and_a_deploy_from_its_page_goes_live_without_a_reload() {
    // Four seconds of readiness keep the deploy running past the form's wait, so its end can
    // only reach the page through the live stream.
    let d = deployed(&["v1", "v2"], &["v1"], json!({"min_ready_seconds": 4})).await;
    let (stage_id, v1) = (d.stage_id, d.instance_ids[0]);
    with_browser(&d.app.base_url, "deploy_goes_live", |b| async move {
        b.goto("/").await;
        assert!(b.path().await.starts_with("/login"), "{}", b.path().await);
        b.login("admin", ADMIN_PASSWORD).await;
        assert_eq!(b.path().await, "/");
        let row = format!("tr[data-instance-id='{v1}']");
        assert_eq!(b.text(&format!("{row} td.tag")).await, "v1");
        assert_eq!(b.text(&format!("{row} [data-instance-status]")).await, "running");
        assert!(b.exists(&format!("{row} time")).await, "since when");

        b.click(&format!("a[href='/stages/{stage_id}']")).await;
        b.wait_until("the stage page", || async {
            b.path().await == format!("/stages/{stage_id}")
        })
        .await;
        b.fill("#deploy-tag", "v2").await;
        b.click("#deploy-button").await;
        b.wait_for_text(".flash", "Deploying tag v2").await;
        b.mark_page().await;
        let rows = instance_rows(&b).await;
        assert!(
            rows.iter()
                .any(|(tag, status, _)| tag == "v2" && (status == "pending" || status == "deploying")),
            "the new instance is shown while it deploys: {rows:?}"
        );
        b.wait_live().await;
        b.wait_until("v2 to run and serve the stage", || async {
            instance_rows(&b)
                .await
                .iter()
                .any(|(tag, status, current)| tag == "v2" && status == "running" && *current)
        })
        .await;
        b.assert_not_reloaded().await;
        let rows = instance_rows(&b).await;
        assert!(
            rows.iter()
                .any(|(tag, status, current)| tag == "v1" && !current && status != "running"),
            "{rows:?}"
        );
        b.wait_for_text("#stage-deployments", "succeeded").await;
    })
    .await;
    d.app.stop().await;
}

/// The texts of the log lines the panel shows (not hidden by the filter).
async fn shown_log_lines(b: &Browser) -> Vec<String> {
    let lines = b
        .eval(
            "return Array.from(document.querySelectorAll('#logs-lines .line')).filter(function (l) {
               return !l.hidden;
             }).map(function (l) { return l.getAttribute('data-text') || l.textContent; });",
        )
        .await;
    serde_json::from_value(lines).unwrap_or_default()
}

/// The highest tick number among `lines`.
fn last_tick(lines: &[String]) -> u64 {
    lines.iter().filter_map(|l| tick_number(l)).max().unwrap_or(0)
}

#[tokio::test]
async fn an_instances_logs_follow_live_next_to_it_and_filter_as_you_type() {
    let t = ticking().await;
    let (stage_id, id) = (t.stage_id, t.instance_id);
    with_browser(&t.app.base_url, "logs_follow", |b| async move {
        b.goto("/").await;
        b.login("admin", ADMIN_PASSWORD).await;
        b.goto(&format!("/stages/{stage_id}?logs={id}#logs")).await;
        b.mark_page().await;
        b.wait_until("the panel to follow", || async {
            b.exists("#logs[data-logs-following]").await
        })
        .await;
        assert_eq!(
            b.eval("return document.getElementById('logs-follow').checked;")
                .await,
            json!(true)
        );
        assert!(
            b.exists(&format!("tr[data-instance-id='{id}'][data-logs-open]"))
                .await
        );
        let first = last_tick(&shown_log_lines(&b).await);
        b.wait_until("new lines to arrive without a reload", || async {
            last_tick(&shown_log_lines(&b).await) >= first + 3
        })
        .await;
        assert!(
            b.exists("#logs-lines .line time[datetime]").await,
            "lines carry their times"
        );

        // The filter hides the other lines as the user types, and the new ones too.
        b.fill("#logs-filter", "WARN").await;
        let shown = shown_log_lines(&b).await;
        assert!(
            !shown.is_empty() && shown.iter().all(|l| l.starts_with("warn ")),
            "{shown:?}"
        );
        let count = shown.len();
        b.wait_until("new matching lines to arrive filtered", || async {
            let shown = shown_log_lines(&b).await;
            shown.len() > count && shown.iter().all(|l| l.starts_with("warn "))
        })
        .await;
        b.fill("#logs-filter", "").await;
        assert!(
            shown_log_lines(&b).await.iter().any(|l| l.starts_with("tick ")),
            "clearing the filter shows every line again"
        );

        // Pausing stops the stream: no new lines while paused.
        b.click("#logs-follow").await;
        b.wait_for_text("#logs-state", "paused").await;
        let paused = shown_log_lines(&b).await.len();
        tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
        assert_eq!(
            shown_log_lines(&b).await.len(),
            paused,
            "no lines arrive while paused"
        );
        assert_eq!(
            b.eval("return document.querySelector('#logs a[download]').getAttribute('href');")
                .await,
            json!(format!("/instances/{id}/logs.txt"))
        );
        b.assert_not_reloaded().await;
    })
    .await;
    t.app.stop().await;
}

#[tokio::test]
async fn the_event_log_filters_by_severity_and_a_new_warn_event_arrives_live() {
    let app = spawn_app().await;
    let bus = app.app().state().bus.clone();
    bus.publish(NewEvent::info(Source::Api, "ui-test info before").recorded())
        .await;
    bus.publish(NewEvent::warn(Source::Poller, "ui-test warn before"))
        .await;
    let bus_in_test = bus.clone();
    with_browser(&app.base_url, "event_log_live", |b| async move {
        b.goto("/events").await;
        b.login("admin", ADMIN_PASSWORD).await;
        assert_eq!(b.path().await, "/events");
        b.wait_for_text("#event-rows td.message", "ui-test info before")
            .await;

        b.click("input[name='severity'][value='warn']").await;
        b.click("#filter-apply").await;
        b.wait_until("the filtered page", || async {
            b.path().await.contains("severity=warn")
        })
        .await;
        let severities = b.texts("#event-rows td:nth-child(2)").await;
        assert!(!severities.is_empty());
        assert!(
            severities.iter().all(|s| s.eq_ignore_ascii_case("warn")),
            "{severities:?}"
        );
        let messages = b.texts("#event-rows td.message").await;
        assert!(
            messages.iter().any(|m| m == "ui-test warn before"),
            "{messages:?}"
        );
        assert!(
            !messages.iter().any(|m| m == "ui-test info before"),
            "{messages:?}"
        );
        assert!(
            b.find("input[name='severity'][value='warn']")
                .await
                .is_selected()
                .await
                .unwrap()
        );

        b.wait_live().await;
        b.mark_page().await;
        bus_in_test
            .publish(NewEvent::info(Source::Api, "ui-test info live").recorded())
            .await;
        bus_in_test
            .publish(NewEvent::warn(Source::Poller, "ui-test warn live").detail("repository", "team/app"))
            .await;
        b.wait_for_text("#event-rows tr:first-child td.message", "ui-test warn live")
            .await;
        assert!(
            b.text("#event-rows tr:first-child td.details")
                .await
                .contains("repository=team/app")
        );
        let messages = b.texts("#event-rows td.message").await;
        assert!(
            !messages.iter().any(|m| m == "ui-test info live"),
            "filtered out: {messages:?}"
        );
        b.assert_not_reloaded().await;
    })
    .await;
    app.stop().await;
}

/// The project and stage cells of the event row with `message`, once its stage cell shows
/// `stage` (other events, such as the poller's, arrive in between).
async fn names_in_row(b: &Browser, message: &str, stage: &str) -> Vec<String> {
    let script = format!(
        "const row = Array.from(document.querySelectorAll('#event-rows tr')).find(r => {{ const m = r.querySelector('td.message'); return m && m.textContent === {message:?}; }}); \
         return row ? Array.from(row.querySelectorAll('td')).slice(4, 6).map(td => td.textContent) : null;"
    );
    let cells = || async {
        b.eval(&script)
            .await
            .as_array()
            .map(|cells| {
                cells
                    .iter()
                    .map(|c| c.as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    b.wait_until(&format!("the row {message:?} naming stage {stage:?}"), || async {
        let names: Vec<String> = cells().await;
        names.get(1).is_some_and(|s| s == stage)
    })
    .await;
    cells().await
}

#[tokio::test]
async fn rows_arriving_live_name_their_project_and_stage_as_rendered_rows_do() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let project = unique("live-names");
    let (status, created) = admin
        .post("/api/projects", json!({"name": project, "image": "nginx"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let project_id = created["id"].as_i64().unwrap();
    let stage = |name: &'static str| {
        let admin = admin.clone();
        async move {
            let (status, created) = admin
                .post(
                    &format!("/api/projects/{project_id}/stages"),
                    json!({"name": name, "tag_policy": "tag:v1", "auto_deploy": false}),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{created}");
            created["id"].as_i64().unwrap()
        }
    };
    let first = stage("before").await;
    let bus = app.app().state().bus.clone();
    bus.publish(
        NewEvent::warn(Source::Api, "ui-test rendered row")
            .project(project_id)
            .stage(first),
    )
    .await;
    let late_stage = stage;
    with_browser(&app.base_url, "event_log_live_names", |b| async move {
        b.goto("/events").await;
        b.login("admin", ADMIN_PASSWORD).await;
        let rendered = names_in_row(&b, "ui-test rendered row", "before").await;
        assert_eq!(rendered, [project.clone(), "before".to_owned()]);

        b.wait_live().await;
        b.mark_page().await;
        bus.publish(
            NewEvent::warn(Source::Api, "ui-test live row")
                .project(project_id)
                .stage(first),
        )
        .await;
        let live = names_in_row(&b, "ui-test live row", "before").await;
        assert_eq!(live, rendered, "the same names as a rendered row");

        // A stage made after the page was rendered is named too, once the API has said it.
        let second = late_stage("after").await;
        bus.publish(
            NewEvent::warn(Source::Api, "ui-test later stage")
                .project(project_id)
                .stage(second),
        )
        .await;
        let later = names_in_row(&b, "ui-test later stage", "after").await;
        assert_eq!(later, [project.clone(), "after".to_owned()]);
        b.assert_not_reloaded().await;
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn an_open_confirmation_fits_the_window_on_a_phone_and_on_a_desktop() {
    let d = deployed(&["v1"], &["v1"], json!({})).await;
    let stage = format!("/stages/{}", d.stage_id);
    let instance = d.instance_ids[0];
    with_browser(&d.app.base_url, "confirm_fits", |b| async move {
        b.goto(&stage).await;
        b.login("admin", ADMIN_PASSWORD).await;
        let row = format!("tr[data-instance-id='{instance}'] details.confirm");
        for (width, height) in [(360, 640), (1280, 800)] {
            b.resize(width, height).await;
            b.click(&format!("{row} summary")).await;
            let inside = b
                .eval(&format!(
                    "const box = document.querySelector(\"{row} .confirm-form\").getBoundingClientRect(); \
                     return [box.left >= 0, box.top >= 0, box.right <= window.innerWidth, box.bottom <= window.innerHeight, box.width > 100];"
                ))
                .await;
            assert_eq!(inside, json!([true, true, true, true, true]), "at {width}x{height}");
            assert!(
                b.find(&format!("{row} button[type=submit]"))
                    .await
                    .is_displayed()
                    .await
                    .unwrap()
            );
            b.click(&format!("{row} summary")).await;
        }
    })
    .await;
    d.app.stop().await;
}

#[tokio::test]
async fn a_stale_instance_is_cleaned_up_from_the_stale_page_and_only_admins_get_bulk_cleanup() {
    let d = deployed(&["v1", "v2", "v3"], &["v1", "v2", "v3"], json!({})).await;
    let (v1, v2) = (d.instance_ids[0], d.instance_ids[1]);
    add_user(&d.admin, "mia", "member").await;
    d.app.clock.advance(TimeDelta::days(8));
    let (status, list) = d.admin.post("/api/containers/stale/scan", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let admin_api = d.admin.clone();
    with_browser(&d.app.base_url, "stale_cleanup", |b| async move {
        b.goto("/stale").await;
        b.login("mia", "mia-password").await;
        assert_eq!(b.path().await, "/stale");
        let row = |id: i64| format!("#stale-list tr[data-instance-id='{id}']");
        assert!(b.exists(&row(v1)).await && b.exists(&row(v2)).await);
        assert!(!b.exists("#bulk-cleanup").await, "members get no bulk cleanup");
        assert!(!b.exists("#bulk-preview-button").await);
        let days = b.text(&format!("{} td.number", row(v1))).await;
        assert_eq!(days, "8", "days stale");

        b.click(&format!("{} details.confirm summary", row(v1))).await;
        b.click(&format!("{} details.confirm button[type=submit]", row(v1)))
            .await;
        b.wait_for_text(".flash", "instance").await;
        b.wait_until("the cleaned-up row to go", || async { !b.exists(&row(v1)).await })
            .await;
        let (status, _) = admin_api.get(&format!("/api/instances/{v1}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "the instance is gone");

        // An admin previews the bulk cleanup, then confirms it.
        b.click("form[action='/logout'] button").await;
        b.wait_until("the login page", || async {
            b.path().await.starts_with("/login")
        })
        .await;
        b.goto("/stale").await;
        b.login("admin", ADMIN_PASSWORD).await;
        b.click("#bulk-preview-button").await;
        b.wait_for_text("#bulk-preview", &format!("#{v2}")).await;
        assert!(b.exists(&row(v2)).await, "a dry run removes nothing");
        b.click("#bulk-confirm").await;
        b.wait_for_text(".flash", "Bulk cleanup").await;
        b.wait_until("the bulk-cleaned row to go", || async {
            !b.exists(&row(v2)).await
        })
        .await;
    })
    .await;
    d.app.stop().await;
}

#[tokio::test]
async fn a_viewer_sees_no_mutation_controls_and_pages_fit_a_phone() {
    let d = deployed(&["v1"], &["v1"], json!({})).await;
    add_user(&d.admin, "val", "viewer").await;
    let (stage_id, project_id) = (d.stage_id, d.project_id);
    with_browser(&d.app.base_url, "viewer_controls", |b| async move {
        b.goto("/").await;
        b.login("val", "val-password").await;
        for path in [
            "/".to_owned(),
            format!("/projects/{project_id}"),
            format!("/stages/{stage_id}"),
            "/events".to_owned(),
            "/stale".to_owned(),
            "/proxies".to_owned(),
            "/settings".to_owned(),
        ] {
            b.goto(&path).await;
            let forms = b.count("form[method='post']:not([action='/logout'])").await;
            assert_eq!(forms, 0, "{path} shows a viewer {forms} forms");
            assert_eq!(b.count("details.confirm").await, 0, "{path}");
            assert_eq!(b.count("a[href='/users']").await, 0, "{path}");
        }
        b.goto(&format!("/stages/{stage_id}")).await;
        assert_eq!(b.count("#stage-instances [data-instance-status]").await, 1);

        // A phone: nothing sticks out sideways; wide tables scroll inside their card.
        b.resize(390, 844).await;
        for path in [
            "/".to_owned(),
            format!("/stages/{stage_id}"),
            "/events".to_owned(),
        ] {
            b.goto(&path).await;
            let overflow = b
                .eval("return document.documentElement.scrollWidth - document.documentElement.clientWidth;")
                .await;
            assert!(
                overflow.as_i64().unwrap_or(1) <= 0,
                "{path} overflows a phone by {overflow}px"
            );
        }
    })
    .await;
    d.app.stop().await;
}

#[tokio::test]
async fn a_form_error_is_shown_next_to_its_field_in_the_browser() {
    let app = spawn_app().await;
    with_browser(&app.base_url, "form_error", |b| async move {
        b.goto("/").await;
        b.login("admin", ADMIN_PASSWORD).await;
        b.fill("#new-project-name", "Not Lowercase").await;
        b.fill("#new-project-image", &format!("{}/dwtest/form-error", registry()))
            .await;
        b.click("#new-project button[type=submit]").await;
        b.find("#new-project-name-error").await;
        let next_to_field = b
            .eval(
                "var input = document.getElementById('new-project-name');
                 var error = input.parentElement.querySelector('.field-error');
                 return [error ? error.textContent : null, input.value, input.getAttribute('aria-invalid')];",
            )
            .await;
        let error = next_to_field[0].as_str().unwrap_or("");
        assert!(error.contains("lowercase"), "{next_to_field}");
        assert_eq!(next_to_field[1], "Not Lowercase", "the typed value is kept");
        assert_eq!(next_to_field[2], "true");
        // Keyboard users land on it with Tab like on any input.
        assert!(b.find("#new-project-name").await.is_enabled().await.unwrap());
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn screenshots_of_the_main_pages_show_a_realistic_installation() {
    let app = spawn_app().await;
    let mut cleanup = Cleanup::new(&app);
    let api = app.admin().await;
    let shop = unique("dwtest/shop-");
    let blog = unique("dwtest/blog-");
    cleanup.repo(&shop);
    cleanup.repo(&blog);
    for tag in ["v1.4.0", "v1.5.0"] {
        push_image(&shop, tag, Variant::Web, &format!("shop {tag}")).await;
    }
    push_image(&shop, "v1.6.0", Variant::Exit1, "shop v1.6.0").await;
    push_image(&blog, "2.0", Variant::Web, "blog 2.0").await;

    let create = |name: &'static str, repo: String| {
        let api = api.clone();
        async move {
            let (status, body) = api
                .post(
                    "/api/projects",
                    json!({"name": name, "image": format!("{}/{repo}", registry())}),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
            body["id"].as_i64().unwrap()
        }
    };
    let stage = |project: i64, host: &'static str, name: &'static str, policy: &'static str| {
        let api = api.clone();
        async move {
            let (status, body) = api
                .post(
                    &format!("/api/projects/{project}/stages"),
                    json!({"name": name, "tag_policy": policy, "auto_deploy": false, "schedule": "@every 24h",
                           "hostname": format!("{name}.{host}.example.com"),
                           "container": {"port": 8080, "min_ready_seconds": 1, "health_check": {"path": "/health"}}}),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
            body["id"].as_i64().unwrap()
        }
    };
    let shop_id = create("shop", shop.clone()).await;
    let blog_id = create("blog", blog.clone()).await;
    let prod = stage(shop_id, "shop", "prod", "semver:^1").await;
    let staging = stage(shop_id, "shop", "staging", "semver:^1").await;
    let blog_prod = stage(blog_id, "blog", "prod", "tag:2.0").await;
    deploy_ok(&api, prod, "v1.4.0").await;
    deploy_ok(&api, blog_prod, "2.0").await;
    // Nine days later: v1.4.0 of prod was replaced long ago and is stale.
    deploy_ok(&api, prod, "v1.5.0").await;
    app.clock.advance(TimeDelta::days(9));
    let (status, _) = api.post("/api/containers/stale/scan", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    deploy_ok(&api, staging, "v1.5.0").await;
    let (status, failed) = api
        .post(&format!("/api/stages/{staging}/deploy"), json!({"tag": "v1.6.0"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{failed}");
    assert_eq!(failed["status"], "failed", "{failed}");
    // The policy of prod now selects v1.6.0, which a monitor-only stage only records.
    let (status, polled) = api.post(&format!("/api/stages/{prod}/poll"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{polled}");
    let bus = app.app().state().bus.clone();
    bus.publish(
        NewEvent::warn(
            Source::Poller,
            format!(
                "registry {} answered 503 for {blog}; backing off for 30 s",
                registry()
            ),
        )
        .project(blog_id)
        .detail("retry_in_s", 30),
    )
    .await;

    let update = std::env::var("DW_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1");
    let dir = if update {
        std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/screenshots"))
    } else {
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots")
    };
    with_browser(&app.base_url, "screenshots", |b| async move {
        b.resize(1280, 1000).await;
        b.goto("/").await;
        b.login("admin", ADMIN_PASSWORD).await;
        for (path, name) in [
            ("/".to_owned(), "dashboard"),
            (format!("/stages/{staging}"), "stage"),
            ("/events".to_owned(), "events"),
            ("/stale".to_owned(), "stale"),
        ] {
            b.goto(&path).await;
            b.wait_live().await;
            let file = dir.join(format!("{name}.png"));
            b.screenshot(&file)
                .await
                .unwrap_or_else(|e| panic!("saving {}: {e}", file.display()));
            eprintln!("screenshot of {path}: {}", file.display());
        }
        b.goto("/").await;
        b.wait_for_text("#dashboard-projects", "Update available").await;
        b.wait_for_text("#dashboard-deployments", "failed").await;
    })
    .await;
    drop(cleanup);
    app.stop().await;
}
