//! Instances: `GET /api/instances?project_id=&stage_id=&status=`, `GET /api/instances/{id}`,
//! `POST /api/instances/{id}/stop|start|restart`, `DELETE /api/instances/{id}` and
//! `GET /api/instances/{id}/logs?tail=200` with its live twin `GET /api/instances/{id}/logs/stream`
//! (SPEC §5; the reading itself is [`super::logs`]). An instance is one container deployed for
//! a stage. Reading (and the logs) needs a viewer; the actions a member.
//!
//! The actions are the deployer's ([`crate::deploy::Deployer`]): they take the stage's lock, so
//! they wait for a deploy in progress, and they run to the end even when the client hangs up
//! (a half-stopped instance would be worse than a late answer). Removing the running instance a
//! stage routes to is refused (409): stop it first. A container already gone from Docker does
//! not stop a removal.
//!
//! `is_current` is true for a single stage's current instance and for every running instance
//! of a per-tag stage (each one serves its own hostname).

use std::collections::HashMap;
use std::convert::Infallible;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, Sse};
use chrono::{DateTime, Utc};
use futures::Stream;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::deployments::{positive_id, present};
use super::logs::{ContainerLogs, LogLineResponse, LogStreamMessage, LogsParams};
use super::projects::not_found_as;
use super::stage_actions::run_to_completion;
use crate::domain::instance::{Instance, InstanceFilter, InstanceStatus};
use crate::domain::tag_policy::PolicyMode;
use crate::secrets::SecretMask;
use crate::web::auth::{Member, Viewer};
use crate::web::error::{ErrorBody, WebError, WebResult};
use crate::web::extract::ApiQuery;
use crate::web::path::IdPath;
use crate::web::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(instances_get))
        .routes(routes!(instance_get, instance_delete))
        .routes(routes!(instance_stop_post))
        .routes(routes!(instance_start_post))
        .routes(routes!(instance_restart_post))
        .routes(routes!(instance_logs_get))
        .routes(routes!(instance_logs_stream_get))
}

/// An instance as the API answers it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct InstanceResponse {
    pub id: i64,
    pub project_id: i64,
    pub project_name: String,
    pub stage_id: i64,
    pub stage_name: String,
    pub image_tag: String,
    #[schema(required = true)]
    pub image_digest: Option<String>,
    #[schema(required = true)]
    pub container_id: Option<String>,
    /// `dw-{project}-{stage}-{id}`.
    #[schema(required = true)]
    pub container_name: Option<String>,
    /// `pending`, `deploying`, `running`, `stopped`, `failed`, `missing` or `removing`.
    #[schema(example = "running")]
    pub status: String,
    /// Whether the stage routes to it now.
    pub is_current: bool,
    /// The port on 127.0.0.1 the container's port is published on.
    #[schema(required = true)]
    pub host_port: Option<u16>,
    /// A per-tag instance's own hostname.
    #[schema(required = true)]
    pub hostname: Option<String>,
    #[schema(required = true)]
    pub exit_code: Option<i64>,
    #[serde(with = "crate::domain::time_format")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    #[serde(with = "crate::domain::time_format::option")]
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(with = "crate::domain::time_format::option")]
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    pub last_alive_at: Option<DateTime<Utc>>,
    #[serde(with = "crate::domain::time_format::option")]
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    pub stopped_at: Option<DateTime<Utc>>,
}

impl InstanceResponse {
    /// `per_tag`: whether the instance's stage deploys one instance per tag.
    pub fn new(i: &Instance, per_tag: bool) -> Self {
        Self {
            id: i.id,
            project_id: i.project_id,
            project_name: i.project_name.clone(),
            stage_id: i.stage_id,
            stage_name: i.stage_name.clone(),
            image_tag: i.image_tag.clone(),
            image_digest: i.image_digest.clone(),
            container_id: i.container_id.clone(),
            container_name: i.container_name.clone(),
            status: i.status.to_string(),
            is_current: i.is_current || (per_tag && i.status == InstanceStatus::Running),
            host_port: i.host_port,
            hostname: i.hostname.clone(),
            exit_code: i.exit_code,
            created_at: i.created_at,
            started_at: i.started_at,
            last_alive_at: i.last_alive_at,
            stopped_at: i.stopped_at,
        }
    }
}

/// The response for one instance, looking up whether its stage is per-tag.
async fn respond(state: &AppState, instance: &Instance) -> WebResult<Json<InstanceResponse>> {
    let per_tag = match state.store.get_stage(instance.stage_id).await {
        Ok(stage) => stage.tag_policy.mode() == PolicyMode::PerTag,
        Err(crate::store::StoreError::NotFound) => false,
        Err(e) => return Err(e.into()),
    };
    Ok(Json(InstanceResponse::new(instance, per_tag)))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct InstanceListResponse {
    /// Newest first.
    pub items: Vec<InstanceResponse>,
}

/// The query of `GET /api/instances`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct InstanceListParams {
    #[param(value_type = Option<i64>, minimum = 1)]
    pub project_id: Option<String>,
    #[param(value_type = Option<i64>, minimum = 1)]
    pub stage_id: Option<String>,
    /// `pending`, `deploying`, `running`, `stopped`, `failed`, `missing` or `removing`.
    #[param(
        example = "running",
        pattern = "^ *(pending|deploying|running|stopped|failed|missing|removing)? *$"
    )]
    pub status: Option<String>,
}

impl InstanceListParams {
    fn parse(&self) -> WebResult<InstanceFilter> {
        Ok(InstanceFilter {
            project_id: present(self.project_id.as_deref())
                .map(|raw| positive_id("project_id", raw))
                .transpose()?,
            stage_id: present(self.stage_id.as_deref())
                .map(|raw| positive_id("stage_id", raw))
                .transpose()?,
            status: present(self.status.as_deref())
                .map(|raw| raw.parse::<InstanceStatus>())
                .transpose()
                .map_err(|e| WebError::field("status", e))?,
        })
    }
}

/// Instances matching every given filter, newest first. Filters that name no project or stage
/// match nothing.
#[utoipa::path(
    get,
    path = "/api/instances",
    tag = "instances",
    params(InstanceListParams),
    responses(
        (status = 200, body = InstanceListResponse),
        (status = 400, body = ErrorBody, description = "a bad parameter, named in `error.field`"),
        (status = 401, body = ErrorBody, description = "not authenticated"),
    ),
    security(("token" = []), ("session" = [])),
)]
async fn instances_get(
    _: Viewer,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<InstanceListParams>,
) -> WebResult<Json<InstanceListResponse>> {
    let filter = params.parse()?;
    let instances = state.store.list_instances(&filter).await?;
    let per_tag: HashMap<i64, bool> = state
        .store
        .list_all_stages()
        .await?
        .into_iter()
        .map(|s| (s.id, s.tag_policy.mode() == PolicyMode::PerTag))
        .collect();
    Ok(Json(InstanceListResponse {
        items: instances
            .iter()
            .map(|i| InstanceResponse::new(i, per_tag.get(&i.stage_id).copied().unwrap_or(false)))
            .collect(),
    }))
}

/// One instance.
#[utoipa::path(
    get,
    path = "/api/instances/{id}",
    tag = "instances",
    params(("id" = i64, Path, description = "the instance's id")),
    responses(
        (status = 200, body = InstanceResponse),
        (status = 400, body = ErrorBody, description = "the id is not an integer"),
        (status = 401, body = ErrorBody, description = "not authenticated"),
        (status = 404, body = ErrorBody, description = "no such instance"),
    ),
    security(("token" = []), ("session" = [])),
)]
async fn instance_get(
    _: Viewer,
    IdPath(id): IdPath,
    State(state): State<AppState>,
) -> WebResult<Json<InstanceResponse>> {
    let instance = state
        .store
        .get_instance(id)
        .await
        .map_err(not_found_as(format!("no instance with id {id}")))?;
    respond(&state, &instance).await
}

/// Which action a `POST /api/instances/{id}/…` asks for.
#[derive(Debug, Clone, Copy)]
enum Action {
    Stop,
    Start,
    Restart,
}

async fn act(state: AppState, user: Member, id: i64, action: Action) -> WebResult<Json<InstanceResponse>> {
    let deployer = state.deployer.clone();
    let actor = user.user().username.to_string();
    let instance = run_to_completion(async move {
        let actor = Some(actor.as_str());
        match action {
            Action::Stop => deployer.stop_instance(id, actor).await,
            Action::Start => deployer.start_instance(id, actor).await,
            Action::Restart => deployer.restart_instance(id, actor).await,
        }
    })
    .await??;
    respond(&state, &instance).await
}

/// Stops an instance.
///
/// SIGTERM, then SIGKILL after a grace period; the instance becomes `stopped` and, if its stage
/// routed to it, is no longer routed (it stays the stage's current instance, so starting it
/// routes it again). An instance whose container is gone becomes `missing`.
#[utoipa::path(
    post,
    path = "/api/instances/{id}/stop",
    tag = "instances",
    params(("id" = i64, Path, description = "the instance's id")),
    responses(
        (status = 200, body = InstanceResponse),
        (status = 400, body = ErrorBody, description = "the id is not an integer"),
        (status = 401, body = ErrorBody, description = "not authenticated"),
        (status = 403, body = ErrorBody, description = "needs the member role"),
        (status = 404, body = ErrorBody, description = "no such instance"),
        (status = 409, body = ErrorBody, description = "the instance is being deployed or removed, or its status changed meanwhile"),
        (status = 503, body = ErrorBody, description = "the Docker engine is unavailable"),
    ),
    security(("token" = []), ("session" = [])),
)]
pub(crate) async fn instance_stop_post(
    user: Member,
    IdPath(id): IdPath,
    State(state): State<AppState>,
) -> WebResult<Json<InstanceResponse>> {
    act(state, user, id, Action::Stop).await
}

/// Starts a stopped instance.
///
/// The instance becomes `running` (with `last_alive_at` now) and is routed again if it is its
/// stage's current instance or a per-tag instance. No health gate: it ran before.
#[utoipa::path(
    post,
    path = "/api/instances/{id}/start",
    tag = "instances",
    params(("id" = i64, Path, description = "the instance's id")),
    responses(
        (status = 200, body = InstanceResponse),
        (status = 400, body = ErrorBody, description = "the id is not an integer"),
        (status = 401, body = ErrorBody, description = "not authenticated"),
        (status = 403, body = ErrorBody, description = "needs the member role"),
        (status = 404, body = ErrorBody, description = "no such instance"),
        (status = 409, body = ErrorBody, description = "its container is gone, it is being deployed or removed, or its status changed meanwhile"),
        (status = 503, body = ErrorBody, description = "the Docker engine is unavailable"),
    ),
    security(("token" = []), ("session" = [])),
)]
pub(crate) async fn instance_start_post(
    user: Member,
    IdPath(id): IdPath,
    State(state): State<AppState>,
) -> WebResult<Json<InstanceResponse>> {
    act(state, user, id, Action::Start).await
}

/// Restarts an instance (stop with the grace period, then start).
#[utoipa::path(
    post,
    path = "/api/instances/{id}/restart",
    tag = "instances",
    params(("id" = i64, Path, description = "the instance's id")),
    responses(
        (status = 200, body = InstanceResponse),
        (status = 400, body = ErrorBody, description = "the id is not an integer"),
        (status = 401, body = ErrorBody, description = "not authenticated"),
        (status = 403, body = ErrorBody, description = "needs the member role"),
        (status = 404, body = ErrorBody, description = "no such instance"),
        (status = 409, body = ErrorBody, description = "its container is gone, it is being deployed or removed, or its status changed meanwhile"),
        (status = 503, body = ErrorBody, description = "the Docker engine is unavailable"),
    ),
    security(("token" = []), ("session" = [])),
)]
pub(crate) async fn instance_restart_post(
    user: Member,
    IdPath(id): IdPath,
    State(state): State<AppState>,
) -> WebResult<Json<InstanceResponse>> {
    act(state, user, id, Action::Restart).await
}

/// Removes an instance.
///
/// Stops and removes its container (one already gone from Docker is fine), deletes the
/// instance and frees its hostname. The running instance a stage routes to is refused with 409:
/// stop it first.
#[utoipa::path(
    delete,
    path = "/api/instances/{id}",
    tag = "instances",
    params(("id" = i64, Path, description = "the instance's id")),
    responses(
        (status = 204, description = "removed"),
        (status = 400, body = ErrorBody, description = "the id is not an integer"),
        (status = 401, body = ErrorBody, description = "not authenticated"),
        (status = 403, body = ErrorBody, description = "needs the member role"),
        (status = 404, body = ErrorBody, description = "no such instance"),
        (status = 409, body = ErrorBody, description = "the instance is running and routed (stop it first), or already being removed"),
        (status = 503, body = ErrorBody, description = "the Docker engine is unavailable"),
    ),
    security(("token" = []), ("session" = [])),
)]
pub(crate) async fn instance_delete(
    user: Member,
    IdPath(id): IdPath,
    State(state): State<AppState>,
) -> WebResult<StatusCode> {
    let deployer = state.deployer.clone();
    let actor = user.user().username.to_string();
    run_to_completion(async move { deployer.remove_instance(id, Some(&actor)).await }).await??;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct InstanceLogsResponse {
    /// Oldest first.
    pub lines: Vec<LogLineResponse>,
}

/// The last lines of an instance's container output.
///
/// Readable for failed instances too: their container is kept for this. Values of the stage's
/// secret variables (4 characters or more) are masked as `[secret]`.
#[utoipa::path(
    get,
    path = "/api/instances/{id}/logs",
    tag = "instances",
    params(("id" = i64, Path, description = "the instance's id"), LogsParams),
    responses(
        (status = 200, body = InstanceLogsResponse),
        (status = 400, body = ErrorBody, description = "the id is not an integer, or a bad `tail`"),
        (status = 401, body = ErrorBody, description = "not authenticated"),
        (status = 404, body = ErrorBody, description = "no such instance"),
        (status = 409, body = ErrorBody, description = "the instance has no container (any more)"),
        (status = 503, body = ErrorBody, description = "the Docker engine is unavailable"),
    ),
    security(("token" = []), ("session" = [])),
)]
pub(crate) async fn instance_logs_get(
    _: Viewer,
    IdPath(id): IdPath,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<LogsParams>,
) -> WebResult<Json<InstanceLogsResponse>> {
    let tail = params.tail()?;
    let logs = instance_logs(&state, id).await?;
    Ok(Json(InstanceLogsResponse {
        lines: logs.read(&state, tail).await?,
    }))
}

/// An instance's container output, live (Server-Sent Events).
///
/// `event: line` messages (`data`: a LogLineResponse as JSON): the last `tail` lines, then each
/// new line as the container writes it. One `event: end` message (`data`: `{"reason"}`) ends the
/// stream when the container stops or the engine fails; do not reconnect after it. Secret values
/// are masked as in `GET /api/instances/{id}/logs`.
#[utoipa::path(
    get,
    path = "/api/instances/{id}/logs/stream",
    tag = "instances",
    params(("id" = i64, Path, description = "the instance's id"), LogsParams),
    responses(
        (status = 200, content_type = "text/event-stream", body = LogStreamMessage, description = "the stream itself: `line` messages whose `data` is a LogLineResponse as JSON, then one `end` message"),
        (status = 400, body = ErrorBody, description = "the id is not an integer, or a bad `tail`"),
        (status = 401, body = ErrorBody, description = "not authenticated"),
        (status = 404, body = ErrorBody, description = "no such instance"),
        (status = 409, body = ErrorBody, description = "the instance has no container (any more)"),
        (status = 503, body = ErrorBody, description = "the Docker engine is unavailable"),
    ),
    security(("token" = []), ("session" = [])),
)]
pub(crate) async fn instance_logs_stream_get(
    _: Viewer,
    IdPath(id): IdPath,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<LogsParams>,
) -> WebResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let tail = params.tail()?;
    let logs = instance_logs(&state, id).await?;
    Ok(logs.follow(&state, tail))
}

/// Instance `id`'s container and the secret values its output must not show: those the stage
/// has now and those this container was given (an application may print its environment).
pub(crate) async fn instance_logs(state: &AppState, id: i64) -> WebResult<ContainerLogs> {
    let instance = state
        .store
        .get_instance(id)
        .await
        .map_err(not_found_as(format!("no instance with id {id}")))?;
    let Some(container_id) = instance.container_id else {
        return Err(WebError::conflict(
            None,
            format!("instance {id} has no container, so no logs"),
        ));
    };
    let mut values: Vec<String> = state
        .store
        .stage_secrets(instance.stage_id)
        .await?
        .values()
        .filter_map(|sealed| state.secrets.open(sealed).ok())
        .collect();
    if let Some(snapshot) = state.store.instance_secrets(id).await?
        && let Ok(json) = state.secrets.open(&snapshot)
        && let Ok(given) = serde_json::from_str::<std::collections::BTreeMap<String, String>>(&json)
    {
        values.extend(given.into_values());
    }
    Ok(ContainerLogs {
        container_id,
        mask: SecretMask::new(values),
        owner: format!("instance {id}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_filters_are_parsed_and_bad_ones_named() {
        let params = InstanceListParams {
            project_id: Some("3".into()),
            stage_id: Some(" ".into()),
            status: Some("running".into()),
        };
        let filter = params.parse().unwrap();
        assert_eq!(
            (filter.project_id, filter.stage_id, filter.status),
            (Some(3), None, Some(InstanceStatus::Running))
        );
        let field = |p: InstanceListParams| p.parse().unwrap_err().field;
        let bad_status = InstanceListParams {
            status: Some("zombie".into()),
            ..Default::default()
        };
        assert_eq!(field(bad_status).as_deref(), Some("status"));
        let bad_stage = InstanceListParams {
            stage_id: Some("x".into()),
            ..Default::default()
        };
        assert_eq!(field(bad_stage).as_deref(), Some("stage_id"));
    }
}
