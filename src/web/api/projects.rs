//! Projects: `GET/POST /api/projects`, `GET/PATCH/DELETE /api/projects/{id}` (SPEC §5). A
//! project is one image repository with optional registry credentials. Its `image` is stored
//! normalised and without a tag or digest (stages choose tags with their `tag_policy`). The
//! registry password is write-only: it is sealed with the installation's key before it reaches
//! the store and only `has_registry_password` is ever answered (SPEC §4).
//!
//! Reading needs a viewer, creating and updating a member, deleting an admin. Every change is
//! recorded as an `info` event (source `api`) naming the actor.
//!
//! This file also holds the PATCH helpers the other configuration resources share:
//! [`double_option`] tells an absent field (unchanged) from `null` (cleared), and
//! [`not_null`] rejects `null` for a field that cannot be cleared.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::workload_resources::{
    DeleteParams, project_volumes, remove_project_network, remove_volumes as remove_volumes_now,
};
use crate::domain::event::{NewEvent, Source};
use crate::domain::name::Name;
use crate::domain::project::{
    NewProject, Project, ProjectPatch, parse_project_image, parse_registry_password, parse_registry_username,
};
use crate::store::StoreError;
use crate::web::auth::{Admin, Member, Viewer};
use crate::web::error::{ErrorBody, FieldResult, WebError, WebResult};
use crate::web::extract::{ApiJson, ApiQuery};
use crate::web::path::IdPath;
use crate::web::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(projects_get, projects_post))
        .routes(routes!(project_get, project_patch, project_delete))
}

/// A project as the API answers it. The registry password never leaves the server.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProjectResponse {
    pub id: i64,
    pub name: String,
    /// The normalised repository: `nginx` is `docker.io/library/nginx`.
    #[schema(example = "docker.io/library/nginx")]
    pub image: String,
    #[schema(required = true)]
    pub registry_username: Option<String>,
    /// Whether a registry password is stored (it is never returned).
    pub has_registry_password: bool,
    /// Talk plain HTTP to the registry (loopback registries always are).
    pub insecure_registry: bool,
    #[serde(with = "crate::domain::time_format")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    #[serde(with = "crate::domain::time_format")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: DateTime<Utc>,
}

impl From<&Project> for ProjectResponse {
    fn from(project: &Project) -> Self {
        Self {
            id: project.id,
            name: project.name.to_string(),
            image: project.image.name(),
            registry_username: project.registry_username.clone(),
            has_registry_password: project.has_registry_password,
            insecure_registry: project.insecure_registry,
            created_at: project.created_at,
            updated_at: project.updated_at,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProjectListResponse {
    pub items: Vec<ProjectResponse>,
}

/// The body of `POST /api/projects`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectCreateRequest {
    /// A lowercase DNS label: `a-z`, `0-9`, `-`, 1 to 63 characters.
    #[schema(example = "shop", pattern = "^ *[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])? *$")]
    pub name: String,
    /// The repository without a tag or digest (`nginx`, `ghcr.io/org/app`,
    /// `127.0.0.1:5000/team/app`); stages choose tags.
    #[schema(example = "ghcr.io/org/app", min_length = 1)]
    pub image: String,
    /// 1 to 255 characters, no `:`.
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = "^[^:\\u0000-\\u001F\\u007F-\\u009F]*$"
    )]
    pub registry_username: Option<String>,
    /// Write-only: stored encrypted, never returned. 1 to 4096 characters.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 4096, pattern = "^[^\\u0000]*$")]
    pub registry_password: Option<String>,
    /// Default false.
    #[serde(default)]
    pub insecure_registry: bool,
}

/// The body of `PATCH /api/projects/{id}`: an absent field is left as it is; `null` clears
/// `registry_username` and `registry_password`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectPatchRequest {
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = String, pattern = "^ *[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])? *$")]
    pub name: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = String, min_length = 1)]
    pub image: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 255, pattern = "^[^:\\u0000-\\u001F\\u007F-\\u009F]*$")]
    pub registry_username: Option<Option<String>>,
    /// Write-only; `null` removes the stored password. 1 to 4096 characters.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 4096, pattern = "^[^\\u0000]*$")]
    pub registry_password: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = bool)]
    pub insecure_registry: Option<Option<bool>>,
}

impl ProjectPatchRequest {
    /// The names of the fields this request changes, for the event log (never their values:
    /// one of them is a password).
    fn changed_fields(&self) -> Vec<&'static str> {
        [
            ("name", self.name.is_some()),
            ("image", self.image.is_some()),
            ("registry_username", self.registry_username.is_some()),
            ("registry_password", self.registry_password.is_some()),
            ("insecure_registry", self.insecure_registry.is_some()),
        ]
        .into_iter()
        .filter_map(|(field, given)| given.then_some(field))
        .collect()
    }
}

/// Deserializes a PATCH field so that an absent field (`None`, through `#[serde(default)]`)
/// differs from an explicit `null` (`Some(None)`).
pub(super) fn double_option<'de, T, D>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// A PATCH field that cannot be cleared: absent stays `None`, `null` is a 400 naming it.
pub(super) fn not_null<T>(field: &str, value: Option<Option<T>>) -> WebResult<Option<T>> {
    match value {
        None => Ok(None),
        Some(Some(value)) => Ok(Some(value)),
        Some(None) => Err(WebError::validation(
            field,
            "must not be null; leave the field out to keep it",
        )),
    }
}

/// A 404 naming what was looked for, instead of the store's bare "not found".
pub(super) fn not_found_as(what: String) -> impl FnOnce(StoreError) -> WebError {
    move |err| match err {
        StoreError::NotFound => WebError::not_found(what),
        other => other.into(),
    }
}

/// Every project, oldest first.
#[utoipa::path(
    get,
    path = "/api/projects",
    tag = "projects",
    responses(
        (status = 200, body = ProjectListResponse),
        (status = 401, body = ErrorBody, description = "not authenticated"),
    ),
    security(("token" = []), ("session" = [])),
)]
async fn projects_get(_: Viewer, State(state): State<AppState>) -> WebResult<Json<ProjectListResponse>> {
    let projects = state.store.list_projects().await?;
    Ok(Json(ProjectListResponse {
        items: projects.iter().map(ProjectResponse::from).collect(),
    }))
}

/// Creates a project.
#[utoipa::path(
    post,
    path = "/api/projects",
    tag = "projects",
    request_body = ProjectCreateRequest,
    responses(
        (status = 201, body = ProjectResponse),
        (status = 400, body = ErrorBody, description = "a field is invalid; `error.field` names it"),
        (status = 401, body = ErrorBody, description = "not authenticated"),
        (status = 403, body = ErrorBody, description = "needs the member role"),
        (status = 409, body = ErrorBody, description = "the name is taken"),
        (status = 415, body = ErrorBody, description = "the body is not JSON"),
    ),
    security(("token" = []), ("session" = [])),
)]
pub(crate) async fn projects_post(
    user: Member,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<ProjectCreateRequest>,
) -> WebResult<(StatusCode, Json<ProjectResponse>)> {
    let name = Name::parse(&body.name).field("name")?;
    let image = parse_project_image(&body.image).field("image")?;
    let registry_username = body
        .registry_username
        .as_deref()
        .map(parse_registry_username)
        .transpose()
        .field("registry_username")?;
    let registry_password = body
        .registry_password
        .as_deref()
        .map(parse_registry_password)
        .transpose()
        .field("registry_password")?;
    let new = NewProject {
        name,
        image,
        registry_username,
        registry_password: registry_password.map(|p| state.secrets.seal(&p)),
        insecure_registry: body.insecure_registry,
    };

    let project = state.store.insert_project(&new, state.clock.now()).await?;
    state
        .bus
        .publish(
            NewEvent::info(Source::Api, format!("project {} created", project.name))
                .project(project.id)
                .recorded()
                .detail("actor", user.user().username.as_str())
                .detail("image", project.image.name()),
        )
        .await;
    Ok((StatusCode::CREATED, Json(ProjectResponse::from(&project))))
}

/// One project.
#[utoipa::path(
    get,
    path = "/api/projects/{id}",
    tag = "projects",
    params(("id" = i64, Path, description = "the project's id")),
    responses(
        (status = 200, body = ProjectResponse),
        (status = 400, body = ErrorBody, description = "the id is not an integer"),
        (status = 401, body = ErrorBody, description = "not authenticated"),
        (status = 404, body = ErrorBody, description = "no such project"),
    ),
    security(("token" = []), ("session" = [])),
)]
async fn project_get(
    _: Viewer,
    IdPath(id): IdPath,
    State(state): State<AppState>,
) -> WebResult<Json<ProjectResponse>> {
    let project = state
        .store
        .get_project(id)
        .await
        .map_err(not_found_as(format!("no project with id {id}")))?;
    Ok(Json(ProjectResponse::from(&project)))
}

/// Updates a project.
///
/// Absent fields are left as they are; `null` clears `registry_username`
/// and `registry_password`. Changing `image` does not touch running containers: the next poll
/// looks at the new repository.
#[utoipa::path(
    patch,
    path = "/api/projects/{id}",
    tag = "projects",
    params(("id" = i64, Path, description = "the project's id")),
    request_body = ProjectPatchRequest,
    responses(
        (status = 200, body = ProjectResponse),
        (status = 400, body = ErrorBody, description = "a field is invalid; `error.field` names it"),
        (status = 401, body = ErrorBody, description = "not authenticated"),
        (status = 403, body = ErrorBody, description = "needs the member role"),
        (status = 404, body = ErrorBody, description = "no such project"),
        (status = 409, body = ErrorBody, description = "the name is taken"),
        (status = 415, body = ErrorBody, description = "the body is not JSON"),
    ),
    security(("token" = []), ("session" = [])),
)]
pub(crate) async fn project_patch(
    user: Member,
    IdPath(id): IdPath,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<ProjectPatchRequest>,
) -> WebResult<Json<ProjectResponse>> {
    let changed = body.changed_fields();
    let patch = ProjectPatch {
        name: not_null("name", body.name)?
            .map(|raw| Name::parse(&raw))
            .transpose()
            .field("name")?,
        image: not_null("image", body.image)?
            .map(|raw| parse_project_image(&raw))
            .transpose()
            .field("image")?,
        registry_username: body
            .registry_username
            .map(|raw| raw.as_deref().map(parse_registry_username).transpose())
            .transpose()
            .field("registry_username")?,
        registry_password: body
            .registry_password
            .map(|raw| raw.as_deref().map(parse_registry_password).transpose())
            .transpose()
            .field("registry_password")?
            .map(|password| password.map(|p| state.secrets.seal(&p))),
        insecure_registry: not_null("insecure_registry", body.insecure_registry)?,
    };

    let project = state
        .store
        .update_project(id, &patch, state.clock.now())
        .await
        .map_err(not_found_as(format!("no project with id {id}")))?;
    state
        .bus
        .publish(
            NewEvent::info(Source::Api, format!("project {} updated", project.name))
                .project(project.id)
                .recorded()
                .detail("actor", user.user().username.as_str())
                .detail("fields", changed),
        )
        .await;
    Ok(Json(ProjectResponse::from(&project)))
}

/// Deletes a project.
///
/// Only a project without stages can go (409 `id` otherwise: delete its stages first). Its
/// network goes with it; its named volumes are kept unless `?remove_volumes=true` (then every
/// volume of the project is removed — 409, and nothing deleted, while one is in use).
#[utoipa::path(
    delete,
    path = "/api/projects/{id}",
    tag = "projects",
    params(("id" = i64, Path, description = "the project's id"), DeleteParams),
    responses(
        (status = 204, description = "deleted"),
        (status = 400, body = ErrorBody, description = "the id is not an integer, or a bad `remove_volumes`"),
        (status = 401, body = ErrorBody, description = "not authenticated"),
        (status = 403, body = ErrorBody, description = "needs the admin role"),
        (status = 404, body = ErrorBody, description = "no such project"),
        (status = 409, body = ErrorBody, description = "the project still has stages or accessories, or a volume to remove is in use"),
    ),
    security(("token" = []), ("session" = [])),
)]
pub(crate) async fn project_delete(
    user: Admin,
    IdPath(id): IdPath,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<DeleteParams>,
) -> WebResult<StatusCode> {
    let remove_volumes = params.remove_volumes(&user.0)?;
    let not_found = || not_found_as(format!("no project with id {id}"));
    let project = state.store.get_project(id).await.map_err(not_found())?;
    let mut removed = Vec::new();
    if remove_volumes {
        if !state.store.list_stages(id).await?.is_empty()
            || !state.store.list_accessories(id).await?.is_empty()
        {
            return Err(WebError::conflict(
                Some("id"),
                "the project still has stages or accessories; delete them first",
            ));
        }
        removed = project_volumes(&state, &project).await?;
        remove_volumes_now(&state, &removed).await?;
    }
    state.store.delete_project(id).await.map_err(not_found())?;
    remove_project_network(&state, &project).await;
    state
        .bus
        .publish(
            NewEvent::info(Source::Api, format!("project {} deleted", project.name))
                .project(project.id)
                .recorded()
                .detail("actor", user.user().username.as_str())
                .detail("volumes_removed", removed),
        )
        .await;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_project_image_is_normalised_and_must_not_carry_a_tag_or_digest() {
        assert_eq!(
            parse_project_image("nginx").map(|i| i.name()),
            Ok("docker.io/library/nginx".to_owned())
        );
        assert!(
            parse_project_image("nginx:1.25")
                .unwrap_err()
                .0
                .contains("tag_policy")
        );
        let digest = format!("nginx@sha256:{}", "a".repeat(64));
        assert!(parse_project_image(&digest).is_err());
    }

    #[test]
    fn registry_usernames_are_printable_and_bounded() {
        assert_eq!(parse_registry_username("robot$ci").as_deref(), Ok("robot$ci"));
        assert!(parse_registry_username("").is_err());
        assert!(parse_registry_username(&"u".repeat(256)).is_err());
        assert!(parse_registry_username("a\nb").is_err());
        assert!(parse_registry_username("a:b").is_err());
    }

    #[test]
    fn a_patch_tells_absent_fields_from_null_ones() {
        let patch: ProjectPatchRequest = serde_json::from_str(r#"{"registry_password": null}"#).unwrap();
        assert_eq!(patch.registry_password, Some(None));
        assert_eq!(patch.registry_username, None);
        assert_eq!(patch.changed_fields(), vec!["registry_password"]);
        assert!(not_null("name", Some(None::<String>)).is_err());
    }
}
