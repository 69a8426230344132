//! Deployments: `GET /api/deployments?stage_id=&limit=` (SPEC §5), the history of attempts to
//! bring a tag live, newest first. Reading needs a viewer. The deployment shape defined here is
//! also what `POST /api/stages/{id}/deploy` and `/rollback` answer ([`super::stage_actions`]).
//!
//! Query parameters arrive as strings and are parsed on the handler's first line, so a bad one
//! is a 400 naming it; an empty parameter means "no filter". A `stage_id` that names no stage
//! is a filter that matches nothing (an empty list), as for the instance list.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::instance::Deployment;
use crate::web::auth::Viewer;
use crate::web::error::{ErrorBody, WebError, WebResult};
use crate::web::extract::ApiQuery;
use crate::web::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(deployments_get))
}

/// A deployment as the API answers it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeploymentResponse {
    pub id: i64,
    pub stage_id: i64,
    /// The instance it brought (or tried to bring) live; null when none was recorded.
    #[schema(required = true)]
    pub instance_id: Option<i64>,
    pub image_tag: String,
    #[schema(required = true)]
    pub image_digest: Option<String>,
    /// `poll`, `webhook`, `manual`, `rollback` or `config` (a redeploy of the running digest
    /// after the stage's configuration changed).
    #[schema(example = "manual")]
    pub trigger: String,
    /// `running`, `succeeded` or `failed`.
    #[schema(example = "succeeded")]
    pub status: String,
    /// Why it failed.
    #[schema(required = true)]
    pub error: Option<String>,
    /// The user who asked, for manual deploys and rollbacks.
    #[schema(required = true)]
    pub actor: Option<String>,
    #[serde(with = "crate::domain::time_format")]
    #[schema(value_type = String, format = DateTime)]
    pub started_at: DateTime<Utc>,
    #[serde(with = "crate::domain::time_format::option")]
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    pub finished_at: Option<DateTime<Utc>>,
    /// The output of the deployment's hooks, the last 64 KiB (secret values masked); null when
    /// it ran none.
    #[schema(required = true)]
    pub hook_output: Option<String>,
}

impl From<&Deployment> for DeploymentResponse {
    fn from(d: &Deployment) -> Self {
        Self {
            id: d.id,
            stage_id: d.stage_id,
            instance_id: d.instance_id,
            image_tag: d.image_tag.clone(),
            image_digest: d.image_digest.clone(),
            trigger: d.trigger.to_string(),
            status: d.status.to_string(),
            error: d.error.clone(),
            actor: d.actor.clone(),
            started_at: d.started_at,
            finished_at: d.finished_at,
            hook_output: d.hook_output.clone(),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeploymentListResponse {
    /// Newest first.
    pub items: Vec<DeploymentResponse>,
}

/// The query of `GET /api/deployments`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeploymentListParams {
    /// Only this stage's deployments.
    #[param(value_type = Option<i64>, minimum = 1)]
    pub stage_id: Option<String>,
    /// How many, 1 to 500; 50 by default.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    pub limit: Option<String>,
}

const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 500;

/// A value that was sent and is not blank.
pub(super) fn present(raw: Option<&str>) -> Option<&str> {
    raw.map(str::trim).filter(|s| !s.is_empty())
}

/// A positive id in a query parameter.
pub(super) fn positive_id(field: &str, raw: &str) -> WebResult<i64> {
    raw.parse::<i64>().ok().filter(|n| *n >= 1).ok_or_else(|| {
        WebError::validation(field, format!("{field} must be a positive integer, not '{raw}'"))
    })
}

/// An integer from `min` to `max` in a query parameter.
pub(super) fn in_range(field: &str, raw: &str, min: u32, max: u32) -> WebResult<u32> {
    raw.parse::<u32>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| {
            WebError::validation(
                field,
                format!("{field} must be an integer from {min} to {max}, not '{raw}'"),
            )
        })
}

/// Deployments, newest first.
#[utoipa::path(
    get,
    path = "/api/deployments",
    tag = "deployments",
    params(DeploymentListParams),
    responses(
        (status = 200, body = DeploymentListResponse),
        (status = 400, body = ErrorBody, description = "a bad parameter, named in `error.field`"),
        (status = 401, body = ErrorBody, description = "not authenticated"),
    ),
    security(("token" = []), ("session" = [])),
)]
async fn deployments_get(
    _: Viewer,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<DeploymentListParams>,
) -> WebResult<Json<DeploymentListResponse>> {
    let stage_id = present(params.stage_id.as_deref())
        .map(|raw| positive_id("stage_id", raw))
        .transpose()?;
    let limit = present(params.limit.as_deref())
        .map(|raw| in_range("limit", raw, 1, MAX_LIMIT))
        .transpose()?
        .unwrap_or(DEFAULT_LIMIT);
    let deployments = state.store.list_deployments(stage_id, limit).await?;
    Ok(Json(DeploymentListResponse {
        items: deployments.iter().map(DeploymentResponse::from).collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_ids_are_checked_and_named() {
        assert_eq!(in_range("limit", "500", 1, MAX_LIMIT).ok(), Some(500));
        for bad in ["0", "501", "-1", "x", "1.5"] {
            let err = in_range("limit", bad, 1, MAX_LIMIT).unwrap_err();
            assert_eq!(err.field.as_deref(), Some("limit"), "{bad}");
        }
        assert_eq!(positive_id("stage_id", "7").ok(), Some(7));
        assert!(positive_id("stage_id", "0").is_err());
        assert_eq!(present(Some("  ")), None);
    }
}
