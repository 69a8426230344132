//! Stale containers (SPEC §3 "Stale container detection", §5): `GET /api/containers/stale`
//! (viewer), `POST /api/containers/stale/scan` (member), `POST /api/containers/stale/{instance_id}/cleanup`
//! (member) and `POST /api/containers/stale/cleanup?dry_run=1` (admin). The work is the
//! scanner's ([`crate::stale`]); this file turns requests into its calls and its outcomes into
//! answers.
//!
//! A single cleanup that cannot proceed answers `409` with `error.field` = `instance_id` and a
//! message that starts with a machine-readable reason — `not_stale:` (running, alive within the
//! threshold, or not marked by a scan yet) or `removing:` (another cleanup is removing it) — so
//! a client can branch on the prefix. Cleanups and scans run in their own task: a client that
//! hangs up does not stop a cleanup halfway.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::deployments::present;
use super::stage_actions::run_to_completion;
use crate::stale::cleanup::CleanupError;
use crate::stale::{ScanError, StaleItem, StaleList};
use crate::web::auth::{Admin, Member, Viewer};
use crate::web::error::{ErrorBody, ErrorCode, WebError, WebResult};
use crate::web::extract::ApiQuery;
use crate::web::path::IdPath;
use crate::web::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(stale_containers_get))
        .routes(routes!(stale_scan_post))
        .routes(routes!(stale_cleanup_all_post))
        .routes(routes!(stale_cleanup_post))
}

/// A stale instance: a managed container that has not run for more than the threshold.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StaleItemResponse {
    pub instance_id: i64,
    #[schema(required = true)]
    pub container_id: Option<String>,
    /// `dw-{project}-{stage}-{instance_id}`.
    #[schema(required = true)]
    pub container_name: Option<String>,
    pub project_id: i64,
    pub project_name: String,
    pub stage_id: i64,
    pub stage_name: String,
    pub image_tag: String,
    /// `stopped`, `failed`, `missing`, or `removing` while a cleanup is in progress.
    #[schema(example = "stopped")]
    pub status: String,
    /// When it was last seen running; null when it never ran (staleness then counts from its
    /// creation).
    #[serde(with = "crate::domain::time_format::option")]
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    pub last_alive_at: Option<DateTime<Utc>>,
    /// When a scan marked it stale (and published its one warning).
    #[serde(with = "crate::domain::time_format::option")]
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    pub stale_since: Option<DateTime<Utc>>,
    /// Whole days since it was last alive (or created).
    pub days_stale: i64,
}

impl StaleItemResponse {
    fn new(item: &StaleItem) -> Self {
        let i = &item.instance;
        Self {
            instance_id: i.id,
            container_id: i.container_id.clone(),
            container_name: i.container_name.clone(),
            project_id: i.project_id,
            project_name: i.project_name.clone(),
            stage_id: i.stage_id,
            stage_name: i.stage_name.clone(),
            image_tag: i.image_tag.clone(),
            status: i.status.to_string(),
            last_alive_at: i.last_alive_at,
            stale_since: i.stale_since,
            days_stale: item.days_stale,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StaleListResponse {
    /// The setting `stale_threshold_days` now.
    pub threshold_days: u32,
    /// When the last scan ran; null until the first scan after a start.
    #[serde(with = "crate::domain::time_format::option")]
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    pub scanned_at: Option<DateTime<Utc>>,
    /// The most stale first.
    pub items: Vec<StaleItemResponse>,
}

impl StaleListResponse {
    fn new(list: &StaleList) -> Self {
        Self {
            threshold_days: list.threshold_days,
            scanned_at: list.scanned_at,
            items: list.items.iter().map(StaleItemResponse::new).collect(),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StaleCleanupResponse {
    /// The instance as it was when its cleanup began.
    pub removed: StaleItemResponse,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StaleCleanupFailure {
    pub instance_id: i64,
    pub error: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StaleBulkCleanupResponse {
    /// Removed (in a dry run: would be removed).
    pub removed: Vec<i64>,
    /// Left alone: being removed by another cleanup, or no longer stale when their turn came.
    pub skipped: Vec<i64>,
    /// Tried and failed; they keep their previous status.
    pub failed: Vec<StaleCleanupFailure>,
}

/// The query of `POST /api/containers/stale/cleanup`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StaleBulkCleanupParams {
    /// `1`/`true`: remove nothing, report what would be removed and skipped. `0`/`false` or
    /// absent: remove.
    #[param(value_type = Option<String>, example = "1")]
    pub dry_run: Option<String>,
}

impl StaleBulkCleanupParams {
    fn dry_run(&self) -> WebResult<bool> {
        match present(self.dry_run.as_deref()) {
            None => Ok(false),
            Some("1" | "true") => Ok(true),
            Some("0" | "false") => Ok(false),
            Some(other) => Err(WebError::validation(
                "dry_run",
                format!("dry_run must be 1, true, 0 or false, not '{other}'"),
            )),
        }
    }
}

fn list_error(err: anyhow::Error) -> WebError {
    WebError::internal(err.context("listing stale instances"))
}

fn scan_error(err: ScanError) -> WebError {
    match err {
        ScanError::Unavailable(message) => WebError::unavailable(message),
        ScanError::Stopped => WebError::unavailable("docker-watcher is shutting down"),
        ScanError::Failed(message) => WebError::internal(anyhow::anyhow!("stale scan failed: {message}")),
    }
}

/// The answer to a cleanup that did not remove the instance. The 409 reasons are the message's
/// prefix (`not_stale:`, `removing:`), on the field `instance_id`.
fn cleanup_error(err: CleanupError) -> WebError {
    match err {
        CleanupError::NotFound(id) => WebError::not_found(format!("no instance with id {id}")),
        CleanupError::NotStale(reason) => {
            WebError::conflict(Some("instance_id"), format!("not_stale: {reason}"))
        }
        CleanupError::Removing(id) => WebError::conflict(
            Some("instance_id"),
            format!("removing: instance {id} is already being removed"),
        ),
        CleanupError::Unavailable(message) => WebError::unavailable(message),
        CleanupError::Failed(message) => WebError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: ErrorCode::Internal,
            message: format!("the cleanup failed: {message}"),
            field: None,
            retry_after: None,
        },
    }
}

/// The stale instances.
///
/// Instances a scan marked stale (status not `running`, last alive — or created, if they never
/// ran — more than `threshold_days` ago) that are still stale at the current threshold. An
/// instance being cleaned up is listed with status `removing` until its cleanup is done.
#[utoipa::path(
    get,
    path = "/api/containers/stale",
    tag = "stale",
    responses(
        (status = 200, body = StaleListResponse),
        (status = 401, body = ErrorBody, description = "not authenticated"),
    ),
    security(("token" = []), ("session" = [])),
)]
pub(crate) async fn stale_containers_get(
    _: Viewer,
    State(state): State<AppState>,
) -> WebResult<Json<StaleListResponse>> {
    let list = state.stale.scanner().list().await.map_err(list_error)?;
    Ok(Json(StaleListResponse::new(&list)))
}

/// Scans now and returns the stale instances.
///
/// One Docker list call of this installation's containers refreshes every instance's status
/// (`last_alive_at` for running ones; `missing` for those whose container is gone), then the
/// rule marks the instances that became stale, each with one `warn` event. Waits for a scan in
/// progress to finish first.
#[utoipa::path(
    post,
    path = "/api/containers/stale/scan",
    tag = "stale",
    responses(
        (status = 200, body = StaleListResponse),
        (status = 401, body = ErrorBody, description = "not authenticated"),
        (status = 403, body = ErrorBody, description = "needs the member role"),
        (status = 503, body = ErrorBody, description = "the Docker engine is unavailable; nothing was written"),
    ),
    security(("token" = []), ("session" = [])),
)]
pub(crate) async fn stale_scan_post(
    _: Member,
    State(state): State<AppState>,
) -> WebResult<Json<StaleListResponse>> {
    let stale = state.stale.clone();
    run_to_completion(async move { stale.scan_now().await })
        .await?
        .map_err(scan_error)?;
    let list = state.stale.scanner().list().await.map_err(list_error)?;
    Ok(Json(StaleListResponse::new(&list)))
}

/// Removes one stale instance.
///
/// Marks it `removing`, stops its container (grace period), removes the container and its
/// image (unless another container uses it), deletes the instance and publishes an `info`
/// event. A container already gone from Docker is fine. On failure the instance gets its
/// previous status back and an `error` event says why.
///
/// `409` answers carry `error.field` = `instance_id` and a message starting with the reason:
/// `not_stale:` (running, alive within the threshold, or not marked stale by a scan yet) or
/// `removing:` (another cleanup is removing it).
#[utoipa::path(
    post,
    path = "/api/containers/stale/{instance_id}/cleanup",
    tag = "stale",
    params(("instance_id" = i64, Path, description = "the stale instance's id")),
    responses(
        (status = 200, body = StaleCleanupResponse),
        (status = 400, body = ErrorBody, description = "the id is not a positive integer"),
        (status = 401, body = ErrorBody, description = "not authenticated"),
        (status = 403, body = ErrorBody, description = "needs the member role"),
        (status = 404, body = ErrorBody, description = "no such instance"),
        (status = 409, body = ErrorBody, description = "`not_stale: …` or `removing: …` (field `instance_id`)"),
        (status = 500, body = ErrorBody, description = "the cleanup failed and was undone; the message says why"),
        (status = 503, body = ErrorBody, description = "the Docker engine is unavailable; nothing changed"),
    ),
    security(("token" = []), ("session" = [])),
)]
pub(crate) async fn stale_cleanup_post(
    user: Member,
    IdPath(id): IdPath,
    State(state): State<AppState>,
) -> WebResult<Json<StaleCleanupResponse>> {
    let stale = state.stale.clone();
    let actor = user.user().username.to_string();
    let item = run_to_completion(async move { stale.scanner().cleanup(id, Some(&actor)).await })
        .await?
        .map_err(cleanup_error)?;
    Ok(Json(StaleCleanupResponse {
        removed: StaleItemResponse::new(&item),
    }))
}

/// Removes every stale instance (admins).
///
/// Works from the stale list only: running instances, instances being removed (`skipped`),
/// other installations' containers and containers docker-watcher does not manage are never
/// touched. With `?dry_run=1` nothing is removed: `removed` lists what would be removed.
#[utoipa::path(
    post,
    path = "/api/containers/stale/cleanup",
    tag = "stale",
    params(StaleBulkCleanupParams),
    responses(
        (status = 200, body = StaleBulkCleanupResponse),
        (status = 400, body = ErrorBody, description = "a bad `dry_run`, named in `error.field`"),
        (status = 401, body = ErrorBody, description = "not authenticated"),
        (status = 403, body = ErrorBody, description = "needs the admin role"),
    ),
    security(("token" = []), ("session" = [])),
)]
pub(crate) async fn stale_cleanup_all_post(
    user: Admin,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<StaleBulkCleanupParams>,
) -> WebResult<Json<StaleBulkCleanupResponse>> {
    let dry_run = params.dry_run()?;
    let stale = state.stale.clone();
    let actor = user.user().username.to_string();
    let report = run_to_completion(async move { stale.scanner().cleanup_all(dry_run, Some(&actor)).await })
        .await?
        .map_err(|e| WebError::internal(e.context("bulk cleanup")))?;
    Ok(Json(StaleBulkCleanupResponse {
        removed: report.removed,
        skipped: report.skipped,
        failed: report
            .failed
            .into_iter()
            .map(|(instance_id, error)| StaleCleanupFailure { instance_id, error })
            .collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dry_run_accepts_the_usual_spellings_and_names_a_bad_one() {
        let parse = |raw: Option<&str>| {
            StaleBulkCleanupParams {
                dry_run: raw.map(str::to_owned),
            }
            .dry_run()
        };
        assert!(!parse(None).unwrap());
        assert!(!parse(Some("")).unwrap());
        assert!(parse(Some("1")).unwrap());
        assert!(parse(Some("true")).unwrap());
        assert!(!parse(Some("0")).unwrap());
        assert_eq!(parse(Some("yes")).unwrap_err().field.as_deref(), Some("dry_run"));
    }

    #[test]
    fn conflicts_carry_their_reason_first_and_name_the_instance() {
        let not_stale = cleanup_error(CleanupError::NotStale("instance 3 is running".into()));
        assert_eq!(not_stale.status, StatusCode::CONFLICT);
        assert_eq!(not_stale.field.as_deref(), Some("instance_id"));
        assert!(
            not_stale.message.starts_with("not_stale: "),
            "{}",
            not_stale.message
        );
        let removing = cleanup_error(CleanupError::Removing(3));
        assert!(removing.message.starts_with("removing: "), "{}", removing.message);
        assert_eq!(
            cleanup_error(CleanupError::NotFound(3)).status,
            StatusCode::NOT_FOUND
        );
    }
}
