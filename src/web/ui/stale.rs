//! Stale containers, `GET /stale`: the threshold, when the last scan ran, and every stale
//! instance (project, stage, tag, status, last alive, days stale) with a cleanup button for
//! members. Admins also get the bulk cleanup, in two steps: `POST /stale/cleanup` without
//! `confirm=yes` runs the API's dry run and shows what would be removed (project, stage and tag
//! of each, with a warning on an instance a rollback would bring back) and skipped; the
//! confirming button then removes them. With nothing stale there is no bulk control. Members and viewers never see the bulk control, and the
//! API refuses it to them anyway (its handler takes `Admin`).
//!
//! Scans and cleanups are the API handlers' ([`crate::web::api::stale`]), so the rules — what
//! counts as stale, `removing` instances left alone, the one Docker list call — are theirs.

use askama::Template;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::form::FormData;
use super::page::{
    ACTION_WAIT, Chrome, Finished, Flash, FlashMessage, Nav, PageTemplate, Ui, error_page, render,
    see_other_with, within,
};
use super::view::{When, instance_status_class};
use crate::deploy::rollback_target;
use crate::domain::instance::{InstanceFilter, InstanceStatus};
use crate::domain::tag_policy::PolicyMode;
use crate::web::api;
use crate::web::api::stale::{StaleBulkCleanupParams, StaleListResponse};
use crate::web::auth::{Admin, CurrentUser, Member, Viewer};
use crate::web::error::WebError;
use crate::web::extract::ApiQuery;
use crate::web::path::IdPath;
use crate::web::state::AppState;

#[derive(Template)]
#[template(path = "stale.html")]
pub struct StalePage {
    pub chrome: Chrome,
    pub threshold_days: u32,
    pub scanned_at: Option<When>,
    pub items: Vec<StaleRow>,
    /// The dry run of a bulk cleanup, waiting for confirmation.
    pub preview: Option<BulkPreview>,
}

impl PageTemplate for StalePage {
    fn chrome(&self) -> &Chrome {
        &self.chrome
    }
}

pub struct StaleRow {
    pub instance_id: i64,
    pub project_id: i64,
    pub project_name: String,
    pub stage_id: i64,
    pub stage_name: String,
    pub tag: String,
    pub container_name: String,
    pub status: String,
    pub status_class: &'static str,
    pub removing: bool,
    pub last_alive: Option<When>,
    pub stale_since: Option<When>,
    pub days_stale: i64,
}

/// What a bulk cleanup would do.
pub struct BulkPreview {
    pub removed: Vec<i64>,
    pub skipped: Vec<i64>,
    /// The instances it would remove, as people tell them apart (filled in from the list).
    pub rows: Vec<PreviewRow>,
}

/// One instance a bulk cleanup would remove.
pub struct PreviewRow {
    pub instance_id: i64,
    pub project_name: String,
    pub stage_name: String,
    pub tag: String,
    /// The instance a rollback of its stage would bring back now: after the cleanup, a
    /// rollback brings back an older one, or nothing.
    pub rollback_target: bool,
}

impl BulkPreview {
    pub fn warns(&self) -> bool {
        self.rows.iter().any(|r| r.rollback_target)
    }
}

pub async fn stale_get(
    State(state): State<AppState>,
    Ui(viewer): Ui<Viewer>,
    flash: FlashMessage,
) -> Response {
    render_stale(&state, &viewer.0, flash, None).await
}

async fn render_stale(
    state: &AppState,
    current: &CurrentUser,
    flash: FlashMessage,
    preview: Option<BulkPreview>,
) -> Response {
    let list = match api::stale::stale_containers_get(Viewer(current.clone()), State(state.clone())).await {
        Ok(Json(list)) => list,
        Err(err) => return error_page(err, Some(current)),
    };
    let preview = match preview {
        Some(preview) => Some(preview_rows(state, &list, preview).await),
        None => None,
    };
    let chrome = Chrome::new(current, "Stale containers", Nav::Stale, flash)
        .live(state, "regions")
        .await;
    render(StatusCode::OK, &page(state, chrome, list, preview))
}

/// Names each instance of a bulk dry run by project, stage and tag, and marks those a
/// rollback of their (single) stage would bring back now.
async fn preview_rows(state: &AppState, list: &StaleListResponse, mut preview: BulkPreview) -> BulkPreview {
    let mut targets = std::collections::HashMap::new();
    for id in &preview.removed {
        let Some(item) = list.items.iter().find(|item| item.instance_id == *id) else {
            continue;
        };
        if let std::collections::hash_map::Entry::Vacant(entry) = targets.entry(item.stage_id) {
            entry.insert(stage_rollback_target(state, item.stage_id).await);
        }
        preview.rows.push(PreviewRow {
            instance_id: item.instance_id,
            project_name: item.project_name.clone(),
            stage_name: item.stage_name.clone(),
            tag: item.image_tag.clone(),
            rollback_target: targets.get(&item.stage_id).copied().flatten() == Some(item.instance_id),
        });
    }
    preview
}

/// The instance a rollback of the stage would bring back; none for a per-tag stage (it has
/// no rollback) or when the store cannot say (the warning is then left out, nothing else).
async fn stage_rollback_target(state: &AppState, stage_id: i64) -> Option<i64> {
    let stage = state.store.get_stage(stage_id).await.ok()?;
    if stage.tag_policy.mode() == PolicyMode::PerTag {
        return None;
    }
    let filter = InstanceFilter {
        stage_id: Some(stage_id),
        ..InstanceFilter::default()
    };
    let instances = state.store.list_instances(&filter).await.ok()?;
    rollback_target(stage.current_instance_id, &instances).map(|i| i.id)
}

fn page(
    state: &AppState,
    chrome: Chrome,
    list: StaleListResponse,
    preview: Option<BulkPreview>,
) -> StalePage {
    let now = state.clock.now();
    StalePage {
        chrome,
        threshold_days: list.threshold_days,
        scanned_at: When::opt(list.scanned_at, now),
        items: list
            .items
            .into_iter()
            .map(|item| {
                let status = item.status.parse::<InstanceStatus>().ok();
                StaleRow {
                    instance_id: item.instance_id,
                    project_id: item.project_id,
                    project_name: item.project_name,
                    stage_id: item.stage_id,
                    stage_name: item.stage_name,
                    tag: item.image_tag,
                    container_name: item.container_name.unwrap_or_default(),
                    status_class: status.map_or("idle", instance_status_class),
                    removing: status == Some(InstanceStatus::Removing),
                    status: item.status,
                    last_alive: When::opt(item.last_alive_at, now),
                    stale_since: When::opt(item.stale_since, now),
                    days_stale: item.days_stale,
                }
            })
            .collect(),
        preview,
    }
}

/// `POST /stale/scan`: scans now.
pub async fn stale_scan_post(State(state): State<AppState>, Ui(member): Ui<Member>) -> Response {
    let task_state = state.clone();
    let task_member = member.clone();
    let outcome = within(ACTION_WAIT, async move {
        api::stale::stale_scan_post(task_member, State(task_state)).await
    })
    .await;
    match outcome {
        Ok(Finished::Done(Ok(Json(list)))) => see_other_with(
            "/stale",
            Flash::notice(format!(
                "Scanned: {} stale instance{}.",
                list.items.len(),
                if list.items.len() == 1 { "" } else { "s" }
            )),
        ),
        Ok(Finished::StillRunning) => see_other_with(
            "/stale",
            Flash::notice("Scanning… the list updates when it is done."),
        ),
        Ok(Finished::Done(Err(err))) | Err(err) => see_other_with("/stale", Flash::error(err.message)),
    }
}

/// `POST /stale/{id}/cleanup` (confirmed): removes one stale instance.
pub async fn stale_cleanup_post(
    State(state): State<AppState>,
    Ui(member): Ui<Member>,
    Ui(IdPath(id)): Ui<IdPath>,
    body: Bytes,
) -> Response {
    if !FormData::parse(&body).confirmed() {
        return super::stages::confirmation_page(
            &member.0,
            &format!("Clean up instance {id}?"),
            &format!("/stale/{id}/cleanup"),
            "Its container is stopped and removed, with its image when no other container uses it, and the instance is deleted.",
            "Clean up",
            "/stale",
        );
    }
    let task_state = state.clone();
    let task_member = member.clone();
    let outcome = within(ACTION_WAIT, async move {
        api::stale::stale_cleanup_post(task_member, IdPath(id), State(task_state)).await
    })
    .await;
    match outcome {
        Ok(Finished::Done(Ok(Json(done)))) => see_other_with(
            "/stale",
            Flash::notice(format!(
                "Cleaned up instance {} ({} / {}, tag {}).",
                done.removed.instance_id,
                done.removed.project_name,
                done.removed.stage_name,
                done.removed.image_tag
            )),
        ),
        Ok(Finished::StillRunning) => see_other_with(
            "/stale",
            Flash::notice(format!(
                "Cleaning up instance {id}… the list updates when it is done."
            )),
        ),
        Ok(Finished::Done(Err(err))) | Err(err) => {
            see_other_with("/stale", Flash::error(cleanup_message(err)))
        }
    }
}

/// The API's 409 reasons (`not_stale: …`, `removing: …`) in words.
fn cleanup_message(err: WebError) -> String {
    if let Some(reason) = err.message.strip_prefix("not_stale: ") {
        return format!("Not cleaned up: it is not stale ({reason}).");
    }
    if let Some(reason) = err.message.strip_prefix("removing: ") {
        return format!("Not cleaned up: {reason}.");
    }
    err.message
}

/// `POST /stale/cleanup` (admins): without `confirm=yes` a dry run shown for confirmation,
/// with it the bulk cleanup.
pub async fn stale_bulk_cleanup_post(
    State(state): State<AppState>,
    Ui(admin): Ui<Admin>,
    body: Bytes,
) -> Response {
    let confirmed = FormData::parse(&body).confirmed();
    let params = StaleBulkCleanupParams {
        dry_run: Some(if confirmed { "0" } else { "1" }.to_owned()),
    };
    let task_state = state.clone();
    let task_admin = admin.clone();
    let outcome = within(ACTION_WAIT, async move {
        api::stale::stale_cleanup_all_post(task_admin, State(task_state), ApiQuery(params)).await
    })
    .await;
    match outcome {
        Ok(Finished::Done(Ok(Json(report)))) if !confirmed => {
            let preview = BulkPreview {
                removed: report.removed,
                skipped: report.skipped,
                rows: Vec::new(),
            };
            render_stale(&state, &admin.0, FlashMessage(None), Some(preview)).await
        }
        Ok(Finished::Done(Ok(Json(report)))) => {
            let mut message = format!(
                "Bulk cleanup: removed {}, skipped {}",
                report.removed.len(),
                report.skipped.len()
            );
            if report.failed.is_empty() {
                message.push('.');
                see_other_with("/stale", Flash::notice(message))
            } else {
                let failures: Vec<String> = report
                    .failed
                    .iter()
                    .map(|f| format!("instance {}: {}", f.instance_id, f.error))
                    .collect();
                message.push_str(&format!(
                    ", failed {} ({}).",
                    report.failed.len(),
                    failures.join("; ")
                ));
                see_other_with("/stale", Flash::error(message))
            }
        }
        Ok(Finished::StillRunning) => see_other_with(
            "/stale",
            Flash::notice("Bulk cleanup running… the list updates as instances are removed."),
        ),
        Ok(Finished::Done(Err(err))) | Err(err) => see_other_with("/stale", Flash::error(err.message)),
    }
}
