//! Accessories (SPEC §3 "Workloads"): `GET/POST /api/projects/{id}/accessories`,
//! `GET/PATCH/DELETE /api/accessories/{id}`, `POST /api/accessories/{id}/start|stop|restart` and
//! `GET /api/accessories/{id}/logs` with its live twin `…/logs/stream` (the reading itself is
//! [`super::logs`]). An accessory is a project's long-running companion — a database, a cache —
//! from an image the user pins, on the project's network under its name.
//!
//! Reading needs a viewer (who sees env keys, never values), creating, changing and the actions
//! a member, deleting an admin. `secret_env` is write-only as on a stage (`null` removes a key,
//! keys not named are kept) and answers carry only `secret_env_keys`. Creating pulls the image
//! and starts the container before answering (`running`, or `failed` with an `error` event); a
//! PATCH only records the new spec — the accessory is then `out_of_date` until a restart
//! recreates its container. Logs are masked with the accessory's secret values.

use std::collections::BTreeMap;
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

use super::instances::InstanceLogsResponse;
use super::logs::{ContainerLogs, LogStreamMessage, LogsParams};
use super::projects::{double_option, not_found_as, not_null};
use super::stage_actions::run_to_completion;
use super::stage_container::{SecretEnvInput, check_secret_input, sealed_changes, secret_values};
use super::workload_resources::{DeleteParams, remove_volumes as remove_volumes_now};
use crate::deploy::AccessoryAction;
use crate::domain::accessory::{
    Accessory, AccessoryPatch, AccessorySpec, NewAccessory, image_reference, parse_accessory_image,
};
use crate::domain::event::{NewEvent, Source};
use crate::domain::name::Name;
use crate::domain::user::Role;
use crate::domain::workload::{VolumeMount, check_bind_mounts, volume_name};
use crate::secrets::SecretMask;
use crate::web::auth::{Admin, Member, Viewer};
use crate::web::error::{ErrorBody, FieldResult, WebError, WebResult};
use crate::web::extract::{ApiJson, ApiQuery};
use crate::web::path::IdPath;
use crate::web::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(project_accessories_get, project_accessories_post))
        .routes(routes!(accessory_get, accessory_patch, accessory_delete))
        .routes(routes!(accessory_start_post))
        .routes(routes!(accessory_stop_post))
        .routes(routes!(accessory_restart_post))
        .routes(routes!(accessory_logs_get))
        .routes(routes!(accessory_logs_stream_get))
}

/// An accessory as the API answers it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AccessoryResponse {
    pub id: i64,
    pub project_id: i64,
    /// Its name on the project's network (`db` is reached as `db:5432`).
    pub name: String,
    /// The pinned image reference.
    #[schema(example = "docker.io/library/postgres:16")]
    pub image: String,
    /// Plain variables with their values; null for viewers, who see only `env_keys`.
    #[schema(required = true)]
    pub env: Option<BTreeMap<String, String>>,
    pub env_keys: Vec<String>,
    /// The names of the secret variables; their values are never returned.
    pub secret_env_keys: Vec<String>,
    pub volumes: Vec<VolumeMount>,
    #[schema(required = true)]
    pub command: Option<Vec<String>>,
    /// The port it listens on in the container (published on 127.0.0.1 as `host_port`).
    #[schema(required = true)]
    pub port: Option<u16>,
    /// `pending`, `starting`, `running`, `stopped`, `failed`, `missing` or `removing`.
    #[schema(example = "running")]
    pub status: String,
    /// Its container was made from an older spec: a restart recreates it with the current one.
    pub out_of_date: bool,
    pub config_revision: i64,
    #[schema(required = true)]
    pub container_revision: Option<i64>,
    #[schema(required = true)]
    pub container_id: Option<String>,
    #[schema(required = true)]
    pub container_name: Option<String>,
    #[schema(required = true)]
    pub host_port: Option<u16>,
    #[schema(required = true)]
    pub exit_code: Option<i64>,
    #[serde(with = "crate::domain::time_format")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    #[serde(with = "crate::domain::time_format")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: DateTime<Utc>,
    #[serde(with = "crate::domain::time_format::option")]
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(with = "crate::domain::time_format::option")]
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    pub stopped_at: Option<DateTime<Utc>>,
}

impl AccessoryResponse {
    pub fn for_role(accessory: &Accessory, role: Role) -> Self {
        Self {
            id: accessory.id,
            project_id: accessory.project_id,
            name: accessory.name.to_string(),
            image: image_reference(&accessory.image),
            env: (role >= Role::Member).then(|| accessory.spec.env.clone()),
            env_keys: accessory.spec.env.keys().cloned().collect(),
            secret_env_keys: accessory.secret_env_keys.clone(),
            volumes: accessory.spec.volumes.clone(),
            command: accessory.spec.command.clone(),
            port: accessory.spec.port,
            status: accessory.status.to_string(),
            out_of_date: accessory.out_of_date(),
            config_revision: accessory.config_revision,
            container_revision: accessory.container_revision,
            container_id: accessory.container_id.clone(),
            container_name: accessory.container_name.clone(),
            host_port: accessory.host_port,
            exit_code: accessory.exit_code,
            created_at: accessory.created_at,
            updated_at: accessory.updated_at,
            started_at: accessory.started_at,
            stopped_at: accessory.stopped_at,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AccessoryListResponse {
    pub items: Vec<AccessoryResponse>,
}

/// A new accessory.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessoryCreateRequest {
    /// A DNS label, unique in the project: the name the project's containers reach it by.
    #[schema(example = "db", pattern = "^ *[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])? *$")]
    pub name: String,
    /// A full image reference with a tag or digest; pulled as given, never followed.
    #[schema(example = "postgres:16", min_length = 1)]
    pub image: String,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Write-only secret variables, sealed at rest; never returned.
    #[serde(default, deserialize_with = "secret_values")]
    #[schema(value_type = Object, additional_properties = true, example = json!({"POSTGRES_PASSWORD": "s3cret"}))]
    pub secret_env: SecretEnvInput,
    /// A `source` without a leading `/` is the project's named volume `dw-{project}-{source}`;
    /// one starting with `/` is a bind mount, allowed only under `allowed_bind_paths`.
    #[serde(default)]
    pub volumes: Vec<VolumeMount>,
    /// Overrides the image's command: at least one argument.
    #[serde(default)]
    #[schema(min_items = 1)]
    pub command: Option<Vec<String>>,
    /// The port it listens on inside the container, if it has one to publish.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 65535, example = 5432)]
    pub port: Option<u16>,
}

/// A change of an accessory: absent fields are kept; `env` and `volumes` replace the whole
/// value; `command` and `port` are cleared by `null`; `secret_env` is merged key by key.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessoryPatchRequest {
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, example = "postgres:16.4", min_length = 1)]
    pub image: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<BTreeMap<String, String>>)]
    pub env: Option<Option<BTreeMap<String, String>>>,
    #[serde(default, deserialize_with = "secret_values")]
    #[schema(value_type = Object, additional_properties = true, example = json!({"POSTGRES_PASSWORD": "n3w", "OLD": null}))]
    pub secret_env: SecretEnvInput,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<Vec<VolumeMount>>)]
    pub volumes: Option<Option<Vec<VolumeMount>>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<Vec<String>>, min_items = 1)]
    pub command: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<u16>, minimum = 1, maximum = 65535)]
    pub port: Option<Option<u16>>,
}

/// Checks a spec and its secrets as the API sees them: every error names its field.
fn checked(
    state: &AppState,
    spec: &AccessorySpec,
    secret_env: &SecretEnvInput,
    current_secret_keys: &[String],
) -> WebResult<()> {
    spec.validate()
        .map_err(|(field, err)| WebError::field(field, err))?;
    check_secret_input(secret_env, &spec.env, current_secret_keys, "", "accessory")?;
    check_bind_mounts(&spec.volumes, &state.settings.current().allowed_bind_paths)
        .map_err(|message| WebError::validation("volumes", message))
}

/// The project's stages answer to their names on the project network too: an accessory may
/// not take one of them.
async fn check_name_free(state: &AppState, project_id: i64, name: &Name) -> WebResult<()> {
    let stages = state
        .store
        .list_stages(project_id)
        .await
        .map_err(not_found_as(format!("no project with id {project_id}")))?;
    if stages.iter().any(|stage| stage.name == *name) {
        return Err(WebError::conflict(
            Some("name"),
            format!(
                "the stage {name} of this project answers to that name on the project network; choose another"
            ),
        ));
    }
    Ok(())
}

/// The reverse of [`check_name_free`], for a stage's create or rename: a stage may not take the
/// name an accessory of its project answers to on the project network (409 `name`).
pub(crate) async fn check_no_accessory_named(
    state: &AppState,
    project_id: i64,
    name: &Name,
) -> WebResult<()> {
    let accessories = state
        .store
        .list_accessories(project_id)
        .await
        .map_err(not_found_as(format!("no project with id {project_id}")))?;
    if accessories.iter().any(|accessory| accessory.name == *name) {
        return Err(WebError::conflict(
            Some("name"),
            format!(
                "the accessory {name} of this project answers to that name on the project network; choose another"
            ),
        ));
    }
    Ok(())
}

/// A project's accessories, by name.
#[utoipa::path(
    get,
    path = "/api/projects/{id}/accessories",
    tag = "accessories",
    params(("id" = i64, Path, description = "the project's id")),
    responses(
        (status = 200, body = AccessoryListResponse),
        (status = 400, body = ErrorBody, description = "the id is not an integer"),
        (status = 401, body = ErrorBody, description = "not authenticated"),
        (status = 404, body = ErrorBody, description = "no such project"),
    ),
    security(("token" = []), ("session" = [])),
)]
pub(crate) async fn project_accessories_get(
    user: Viewer,
    IdPath(project_id): IdPath,
    State(state): State<AppState>,
) -> WebResult<Json<AccessoryListResponse>> {
    let accessories = state
        .store
        .list_accessories(project_id)
        .await
        .map_err(not_found_as(format!("no project with id {project_id}")))?;
    Ok(Json(AccessoryListResponse {
        items: accessories
            .iter()
            .map(|a| AccessoryResponse::for_role(a, user.user().role))
            .collect(),
    }))
}

/// Creates an accessory and starts it.
///
/// Pulls the image and starts the container on the project's network before answering; the
/// answer's `status` is `running`, or `failed` (an `error` event says why).
#[utoipa::path(
    post,
    path = "/api/projects/{id}/accessories",
    tag = "accessories",
    params(("id" = i64, Path, description = "the project's id")),
    request_body = AccessoryCreateRequest,
    responses(
        (status = 201, body = AccessoryResponse),
        (status = 400, body = ErrorBody, description = "a field is invalid; `error.field` names it"),
        (status = 401, body = ErrorBody, description = "not authenticated"),
        (status = 403, body = ErrorBody, description = "needs the member role"),
        (status = 404, body = ErrorBody, description = "no such project"),
        (status = 409, body = ErrorBody, description = "the name is taken in this project"),
        (status = 415, body = ErrorBody, description = "the body is not JSON"),
    ),
    security(("token" = []), ("session" = [])),
)]
pub(crate) async fn project_accessories_post(
    user: Member,
    IdPath(project_id): IdPath,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<AccessoryCreateRequest>,
) -> WebResult<(StatusCode, Json<AccessoryResponse>)> {
    let name = Name::parse(&body.name).field("name")?;
    let image = parse_accessory_image(&body.image).field("image")?;
    let spec = AccessorySpec {
        env: body.env,
        volumes: body.volumes,
        command: body.command,
        port: body.port,
    };
    checked(&state, &spec, &body.secret_env, &[])?;
    check_name_free(&state, project_id, &name).await?;
    let new = NewAccessory {
        name,
        image,
        spec,
        secret_env: sealed_changes(body.secret_env, &Default::default(), &state.secrets)
            .into_iter()
            .filter_map(|(key, sealed)| Some((key, sealed?)))
            .collect(),
    };
    let accessory = state
        .store
        .insert_accessory(project_id, &new, state.clock.now())
        .await
        .map_err(not_found_as(format!("no project with id {project_id}")))?;
    state
        .bus
        .publish(
            NewEvent::info(Source::Api, format!("accessory {} created", accessory.name))
                .project(accessory.project_id)
                .recorded()
                .detail("accessory_id", accessory.id)
                .detail("actor", user.user().username.as_str())
                .detail("image", image_reference(&accessory.image)),
        )
        .await;
    let deployer = state.deployer.clone();
    let actor = user.user().username.to_string();
    let id = accessory.id;
    let accessory =
        run_to_completion(async move { deployer.launch_accessory(id, Some(&actor)).await }).await??;
    Ok((
        StatusCode::CREATED,
        Json(AccessoryResponse::for_role(&accessory, user.user().role)),
    ))
}

/// One accessory.
#[utoipa::path(
    get,
    path = "/api/accessories/{id}",
    tag = "accessories",
    params(("id" = i64, Path, description = "the accessory's id")),
    responses(
        (status = 200, body = AccessoryResponse),
        (status = 400, body = ErrorBody, description = "the id is not an integer"),
        (status = 401, body = ErrorBody, description = "not authenticated"),
        (status = 404, body = ErrorBody, description = "no such accessory"),
    ),
    security(("token" = []), ("session" = [])),
)]
pub(crate) async fn accessory_get(
    user: Viewer,
    IdPath(id): IdPath,
    State(state): State<AppState>,
) -> WebResult<Json<AccessoryResponse>> {
    let accessory = state
        .store
        .get_accessory(id)
        .await
        .map_err(not_found_as(format!("no accessory with id {id}")))?;
    Ok(Json(AccessoryResponse::for_role(&accessory, user.user().role)))
}

/// Changes an accessory's image, spec or secrets.
///
/// Only recorded: the running container is left as it is and the accessory becomes
/// `out_of_date` until `POST /api/accessories/{id}/restart` recreates it with the new spec.
#[utoipa::path(
    patch,
    path = "/api/accessories/{id}",
    tag = "accessories",
    params(("id" = i64, Path, description = "the accessory's id")),
    request_body = AccessoryPatchRequest,
    responses(
        (status = 200, body = AccessoryResponse),
        (status = 400, body = ErrorBody, description = "a field is invalid; `error.field` names it"),
        (status = 401, body = ErrorBody, description = "not authenticated"),
        (status = 403, body = ErrorBody, description = "needs the member role"),
        (status = 404, body = ErrorBody, description = "no such accessory"),
        (status = 415, body = ErrorBody, description = "the body is not JSON"),
    ),
    security(("token" = []), ("session" = [])),
)]
pub(crate) async fn accessory_patch(
    user: Member,
    IdPath(id): IdPath,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<AccessoryPatchRequest>,
) -> WebResult<Json<AccessoryResponse>> {
    let current = state
        .store
        .get_accessory(id)
        .await
        .map_err(not_found_as(format!("no accessory with id {id}")))?;
    let image = not_null("image", body.image)?
        .map(|raw| parse_accessory_image(&raw))
        .transpose()
        .field("image")?;
    let spec = AccessorySpec {
        env: not_null("env", body.env)?.unwrap_or_else(|| current.spec.env.clone()),
        volumes: not_null("volumes", body.volumes)?.unwrap_or_else(|| current.spec.volumes.clone()),
        command: body.command.unwrap_or_else(|| current.spec.command.clone()),
        port: body.port.unwrap_or(current.spec.port),
    };
    checked(&state, &spec, &body.secret_env, &current.secret_env_keys)?;
    let sealed = state.store.accessory_secrets(id).await?;
    let secret_env = sealed_changes(body.secret_env, &sealed, &state.secrets);
    let secret_keys: Vec<String> = secret_env.keys().cloned().collect();
    let patch = AccessoryPatch {
        image,
        spec: Some(spec),
        secret_env,
    };
    let accessory = state
        .store
        .update_accessory(id, &patch, state.clock.now())
        .await
        .map_err(not_found_as(format!("no accessory with id {id}")))?;
    state
        .bus
        .publish(
            NewEvent::info(Source::Api, format!("accessory {} updated", accessory.name))
                .project(accessory.project_id)
                .recorded()
                .detail("accessory_id", accessory.id)
                .detail("actor", user.user().username.as_str())
                .detail("out_of_date", accessory.out_of_date())
                .detail("secret_env_keys_changed", secret_keys),
        )
        .await;
    Ok(Json(AccessoryResponse::for_role(&accessory, user.user().role)))
}

/// Deletes an accessory and its container.
///
/// Its named volumes are kept unless `?remove_volumes=true`: then the volumes it mounts that no
/// stage or other accessory of the project mounts are removed too.
#[utoipa::path(
    delete,
    path = "/api/accessories/{id}",
    tag = "accessories",
    params(("id" = i64, Path, description = "the accessory's id"), DeleteParams),
    responses(
        (status = 204, description = "deleted"),
        (status = 400, body = ErrorBody, description = "the id is not an integer, or a bad `remove_volumes`"),
        (status = 401, body = ErrorBody, description = "not authenticated"),
        (status = 403, body = ErrorBody, description = "needs the admin role"),
        (status = 404, body = ErrorBody, description = "no such accessory"),
        (status = 409, body = ErrorBody, description = "a volume to remove is in use"),
        (status = 503, body = ErrorBody, description = "the Docker engine is unavailable"),
    ),
    security(("token" = []), ("session" = [])),
)]
pub(crate) async fn accessory_delete(
    user: Admin,
    IdPath(id): IdPath,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<DeleteParams>,
) -> WebResult<StatusCode> {
    let remove_volumes = params.remove_volumes(&user.0)?;
    let accessory = state
        .store
        .get_accessory(id)
        .await
        .map_err(not_found_as(format!("no accessory with id {id}")))?;
    let volumes = if remove_volumes {
        accessory_volumes(&state, &accessory).await?
    } else {
        Vec::new()
    };
    let deployer = state.deployer.clone();
    run_to_completion(async move { deployer.remove_accessory_container(id).await }).await??;
    remove_volumes_now(&state, &volumes).await?;
    state
        .store
        .delete_accessory(id)
        .await
        .map_err(not_found_as(format!("no accessory with id {id}")))?;
    state
        .bus
        .publish(
            NewEvent::info(Source::Api, format!("accessory {} deleted", accessory.name))
                .project(accessory.project_id)
                .recorded()
                .detail("accessory_id", accessory.id)
                .detail("actor", user.user().username.as_str())
                .detail("volumes_removed", volumes),
        )
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// The named volumes of `accessory` that no stage and no other accessory of its project mounts.
async fn accessory_volumes(state: &AppState, accessory: &Accessory) -> WebResult<Vec<String>> {
    let project = state.store.get_project(accessory.project_id).await?;
    let stages = state.store.list_stages(project.id).await?;
    let others = state.store.list_accessories(project.id).await?;
    let used_elsewhere = |source: &str| {
        stages
            .iter()
            .any(|s| s.container.volumes.iter().any(|v| v.source == source))
            || others
                .iter()
                .filter(|a| a.id != accessory.id)
                .any(|a| a.spec.volumes.iter().any(|v| v.source == source))
    };
    let mut names: Vec<String> = accessory
        .spec
        .volumes
        .iter()
        .filter(|v| !v.is_bind() && !used_elsewhere(&v.source))
        .map(|v| volume_name(project.name.as_str(), &v.source))
        .collect();
    names.dedup();
    Ok(names)
}

async fn act(
    state: AppState,
    user: Member,
    id: i64,
    action: AccessoryAction,
) -> WebResult<Json<AccessoryResponse>> {
    let deployer = state.deployer.clone();
    let actor = user.user().username.to_string();
    let accessory =
        run_to_completion(async move { deployer.accessory_action(id, action, Some(&actor)).await }).await??;
    Ok(Json(AccessoryResponse::for_role(&accessory, user.user().role)))
}

/// Starts an accessory (a new container when it has none, or its container is gone).
#[utoipa::path(
    post,
    path = "/api/accessories/{id}/start",
    tag = "accessories",
    params(("id" = i64, Path, description = "the accessory's id")),
    responses(
        (status = 200, body = AccessoryResponse),
        (status = 400, body = ErrorBody, description = "the id is not an integer"),
        (status = 401, body = ErrorBody, description = "not authenticated"),
        (status = 403, body = ErrorBody, description = "needs the member role"),
        (status = 404, body = ErrorBody, description = "no such accessory"),
        (status = 409, body = ErrorBody, description = "the accessory is being removed"),
        (status = 503, body = ErrorBody, description = "the Docker engine is unavailable"),
    ),
    security(("token" = []), ("session" = [])),
)]
pub(crate) async fn accessory_start_post(
    user: Member,
    IdPath(id): IdPath,
    State(state): State<AppState>,
) -> WebResult<Json<AccessoryResponse>> {
    act(state, user, id, AccessoryAction::Start).await
}

/// Stops an accessory's container (SIGTERM, then SIGKILL after 10 s).
#[utoipa::path(
    post,
    path = "/api/accessories/{id}/stop",
    tag = "accessories",
    params(("id" = i64, Path, description = "the accessory's id")),
    responses(
        (status = 200, body = AccessoryResponse),
        (status = 400, body = ErrorBody, description = "the id is not an integer"),
        (status = 401, body = ErrorBody, description = "not authenticated"),
        (status = 403, body = ErrorBody, description = "needs the member role"),
        (status = 404, body = ErrorBody, description = "no such accessory"),
        (status = 409, body = ErrorBody, description = "the accessory is being removed"),
        (status = 503, body = ErrorBody, description = "the Docker engine is unavailable"),
    ),
    security(("token" = []), ("session" = [])),
)]
pub(crate) async fn accessory_stop_post(
    user: Member,
    IdPath(id): IdPath,
    State(state): State<AppState>,
) -> WebResult<Json<AccessoryResponse>> {
    act(state, user, id, AccessoryAction::Stop).await
}

/// Restarts an accessory; one that is out of date gets a new container from its current spec.
#[utoipa::path(
    post,
    path = "/api/accessories/{id}/restart",
    tag = "accessories",
    params(("id" = i64, Path, description = "the accessory's id")),
    responses(
        (status = 200, body = AccessoryResponse),
        (status = 400, body = ErrorBody, description = "the id is not an integer"),
        (status = 401, body = ErrorBody, description = "not authenticated"),
        (status = 403, body = ErrorBody, description = "needs the member role"),
        (status = 404, body = ErrorBody, description = "no such accessory"),
        (status = 409, body = ErrorBody, description = "the accessory is being removed"),
        (status = 503, body = ErrorBody, description = "the Docker engine is unavailable"),
    ),
    security(("token" = []), ("session" = [])),
)]
pub(crate) async fn accessory_restart_post(
    user: Member,
    IdPath(id): IdPath,
    State(state): State<AppState>,
) -> WebResult<Json<AccessoryResponse>> {
    act(state, user, id, AccessoryAction::Restart).await
}

/// The last lines of an accessory's container output.
///
/// Values of the accessory's secret variables (4 characters or more) are masked as `[secret]`.
#[utoipa::path(
    get,
    path = "/api/accessories/{id}/logs",
    tag = "accessories",
    params(("id" = i64, Path, description = "the accessory's id"), LogsParams),
    responses(
        (status = 200, body = InstanceLogsResponse),
        (status = 400, body = ErrorBody, description = "the id is not an integer, or a bad `tail`"),
        (status = 401, body = ErrorBody, description = "not authenticated"),
        (status = 404, body = ErrorBody, description = "no such accessory"),
        (status = 409, body = ErrorBody, description = "the accessory has no container (any more)"),
        (status = 503, body = ErrorBody, description = "the Docker engine is unavailable"),
    ),
    security(("token" = []), ("session" = [])),
)]
pub(crate) async fn accessory_logs_get(
    _: Viewer,
    IdPath(id): IdPath,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<LogsParams>,
) -> WebResult<Json<InstanceLogsResponse>> {
    let tail = params.tail()?;
    let logs = accessory_logs(&state, id).await?;
    Ok(Json(InstanceLogsResponse {
        lines: logs.read(&state, tail).await?,
    }))
}

/// An accessory's container output, live (Server-Sent Events).
///
/// As `GET /api/instances/{id}/logs/stream`: `event: line` messages (`data`: a LogLineResponse
/// as JSON), the last `tail` lines and then each new one, and one `event: end` message when the
/// container stops. Secret values are masked.
#[utoipa::path(
    get,
    path = "/api/accessories/{id}/logs/stream",
    tag = "accessories",
    params(("id" = i64, Path, description = "the accessory's id"), LogsParams),
    responses(
        (status = 200, content_type = "text/event-stream", body = LogStreamMessage, description = "the stream itself: `line` messages whose `data` is a LogLineResponse as JSON, then one `end` message"),
        (status = 400, body = ErrorBody, description = "the id is not an integer, or a bad `tail`"),
        (status = 401, body = ErrorBody, description = "not authenticated"),
        (status = 404, body = ErrorBody, description = "no such accessory"),
        (status = 409, body = ErrorBody, description = "the accessory has no container (any more)"),
        (status = 503, body = ErrorBody, description = "the Docker engine is unavailable"),
    ),
    security(("token" = []), ("session" = [])),
)]
pub(crate) async fn accessory_logs_stream_get(
    _: Viewer,
    IdPath(id): IdPath,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<LogsParams>,
) -> WebResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let tail = params.tail()?;
    let logs = accessory_logs(&state, id).await?;
    Ok(logs.follow(&state, tail))
}

/// Accessory `id`'s container and its secret values, which its output must not show.
pub(crate) async fn accessory_logs(state: &AppState, id: i64) -> WebResult<ContainerLogs> {
    let accessory = state
        .store
        .get_accessory(id)
        .await
        .map_err(not_found_as(format!("no accessory with id {id}")))?;
    let Some(container_id) = accessory.container_id else {
        return Err(WebError::conflict(
            None,
            format!("accessory {} has no container, so no logs", accessory.name),
        ));
    };
    let values: Vec<String> = state
        .store
        .accessory_secrets(id)
        .await?
        .values()
        .filter_map(|sealed| state.secrets.open(sealed).ok())
        .collect();
    Ok(ContainerLogs {
        container_id,
        mask: SecretMask::new(values),
        owner: format!("accessory {}", accessory.name),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::extract::parse_json;

    #[test]
    fn a_patch_tells_absent_from_null() {
        let patch: AccessoryPatchRequest = parse_json(br#"{"port": null, "env": {"A": "1"}}"#).unwrap();
        assert_eq!(patch.port, Some(None));
        assert_eq!(patch.command, None);
        assert!(patch.env.is_some_and(|env| env.is_some()));
        let err = parse_json::<AccessoryPatchRequest>(br#"{"name": "other"}"#).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("name"));
    }

    #[test]
    fn a_bad_secret_of_an_accessory_names_its_key_and_never_its_value() {
        let request: AccessoryCreateRequest =
            parse_json(br#"{"name": "db", "image": "db:1", "secret_env": {"1BAD": "hunter2-value"}}"#)
                .unwrap();
        let spec = AccessorySpec::default();
        let err = check_secret_input(&request.secret_env, &spec.env, &[], "", "accessory").unwrap_err();
        assert_eq!(err.field.as_deref(), Some("secret_env.1BAD"));
        assert!(!err.message.contains("hunter2"));
    }
}
