//! The deploy strategy `stop_first` (SPEC §3 "Workloads"): a stage's strategy is read and
//! written through the API (bad names are a 400 naming `strategy`), and the setting
//! `proxy_hold_seconds` bounds how long the proxy holds a stage's requests while its instance
//! is replaced.

use reqwest::StatusCode;
use serde_json::json;

use crate::deploy::{Cleanup, create_project, unique};
use crate::helpers::{assert_field_error, spawn_app};

#[tokio::test]
async fn a_stage_s_strategy_is_start_first_unless_set_and_other_names_are_refused() {
    let app = spawn_app().await;
    let _cleanup = Cleanup::new(&app);
    let admin = app.admin().await;
    let project_id = create_project(&admin, &unique("dwtest/strategy-")).await;
    let stages = format!("/api/projects/{project_id}/stages");

    let (status, plain) = admin
        .post(&stages, json!({"name": "plain", "tag_policy": "tag:v1"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{plain}");
    assert_eq!(plain["strategy"], "start_first");
    let (status, single) = admin
        .post(
            &stages,
            json!({"name": "single", "tag_policy": "tag:v1", "strategy": "stop_first"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{single}");
    assert_eq!(single["strategy"], "stop_first");

    for bad in [json!("rolling"), json!("Stop_First"), json!(""), json!(1)] {
        let (status, body) = admin
            .post(
                &stages,
                json!({"name": "bad", "tag_policy": "tag:v1", "strategy": bad}),
            )
            .await;
        assert_field_error(status, &body, "strategy");
    }
    let plain_url = format!("/api/stages/{}", plain["id"]);
    for bad in [json!("blue_green"), json!(null), json!(["stop_first"])] {
        let (status, body) = admin.patch(&plain_url, json!({"strategy": bad})).await;
        assert_field_error(status, &body, "strategy");
    }
    let (_, unchanged) = admin.get(&plain_url).await;
    assert_eq!(
        unchanged["strategy"], "start_first",
        "a refused patch changes nothing"
    );

    let (status, patched) = admin.patch(&plain_url, json!({"strategy": "stop_first"})).await;
    assert_eq!(
        (status, &patched["strategy"]),
        (StatusCode::OK, &json!("stop_first"))
    );
    let viewer = app.user_with_role("vic", "viewer").await;
    let (_, seen) = viewer.get(&plain_url).await;
    assert_eq!(seen["strategy"], "stop_first");
    app.stop().await;
}
