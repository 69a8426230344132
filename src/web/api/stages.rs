//! Stages: `GET/POST /api/projects/{id}/stages`, `GET/PATCH/DELETE /api/stages/{id}` (SPEC §5).
//! A stage is an environment of a project: which tags to follow (`tag_policy`), how often to
//! look (`schedule`, null = the `default_poll_schedule` setting), how to run the container
//! (`container`) and where to route it (`hostname`). Every value is parsed here, at the API,
//! so a bad cron expression is a 400 naming `schedule` instead of a failure on the first tick.
//!
//! Reading needs a viewer; creating, updating and deleting a member. Hostnames are unique
//! across stages, instances and standalone proxies, which the store enforces (409 `hostname`).
//! Every change is recorded as an `info` event (source `api`) naming the actor.
//!
//! A stage's hostname is one of the reverse proxy's routes: the route table is rebuilt after each
//! successful create, update and delete here. So is the poller's job plan: a new stage is polled at
//! once, a changed schedule takes effect at once, a deleted stage is no longer polled.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::accessories::check_no_accessory_named;
use super::projects::{double_option, not_found_as, not_null};
use super::stage_container::{ContainerRequest, ContainerResponse, check_workload, sealed_changes};
use super::workload_resources::{DeleteParams, remove_volumes as remove_volumes_now, stage_volumes};
use crate::domain::ParseError;
use crate::domain::duration::HumanDuration;
use crate::domain::event::{NewEvent, Source};
use crate::domain::hostname::Hostname;
use crate::domain::instance::InstanceFilter;
use crate::domain::name::Name;
use crate::domain::schedule::Schedule;
use crate::domain::stage::{DeployStrategy, NewStage, Stage, StagePatch, parse_max_instances};
use crate::domain::tag_policy::TagPolicy;
use crate::domain::user::Role;
use crate::domain::workload::Hooks;
use crate::web::auth::{Member, Viewer};
use crate::web::error::{ErrorBody, FieldResult, WebError, WebResult};
use crate::web::extract::{ApiJson, ApiQuery};
use crate::web::path::IdPath;
use crate::web::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(project_stages_get, project_stages_post))
        .routes(routes!(stage_get, stage_patch, stage_delete))
}

/// A stage as the API answers it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StageResponse {
    pub id: i64,
    pub project_id: i64,
    pub name: String,
    /// `tag:NAME`, `semver:REQ`, `glob:PATTERN` or `regex:RE`.
    #[schema(example = "semver:^1.2")]
    pub tag_policy: String,
    /// A cron expression or descriptor; null means the `default_poll_schedule` setting.
    #[schema(example = "@every 5m", required = true)]
    pub schedule: Option<String>,
    /// Off: monitor only (record the available tag, deploy nothing).
    pub auto_deploy: bool,
    #[schema(required = true)]
    pub hostname: Option<String>,
    /// The most instances a per-tag stage keeps.
    pub max_instances: u32,
    /// A new digest is deployed only once it has been seen this long (`10m`).
    #[schema(required = true)]
    pub min_release_age: Option<String>,
    pub container: ContainerResponse,
    /// Commands run in one-off containers of the new image: `pre_deploy` before the new
    /// instance takes traffic (its failure fails the deploy), `post_deploy` after the switch.
    pub hooks: Hooks,
    /// How a deploy replaces the running instance: `start_first` (the new one passes its
    /// health gate before the old one stops) or `stop_first` (the proxy holds the stage's
    /// requests while the old one stops and the new one starts; for apps that must never run
    /// twice).
    pub strategy: DeployStrategy,
    #[schema(required = true)]
    pub current_instance_id: Option<i64>,
    /// The newest tag the policy selected, deployed or not.
    #[schema(required = true)]
    pub available_tag: Option<String>,
    #[serde(with = "crate::domain::time_format")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    #[serde(with = "crate::domain::time_format")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: DateTime<Utc>,
}

impl StageResponse {
    /// The answer for a caller of `role`: plain env values only for members and admins.
    pub fn for_role(stage: &Stage, role: Role) -> Self {
        Self::new(stage, role >= Role::Member)
    }

    pub fn new(stage: &Stage, reveal_env: bool) -> Self {
        Self {
            id: stage.id,
            project_id: stage.project_id,
            name: stage.name.to_string(),
            tag_policy: stage.tag_policy.to_string(),
            schedule: stage.schedule.as_ref().map(ToString::to_string),
            auto_deploy: stage.auto_deploy,
            hostname: stage.hostname.as_ref().map(ToString::to_string),
            max_instances: stage.max_instances,
            min_release_age: stage.min_release_age.as_ref().map(ToString::to_string),
            container: ContainerResponse::new(&stage.container, &stage.secret_env_keys, reveal_env),
            hooks: stage.hooks.clone(),
            strategy: stage.strategy,
            current_instance_id: stage.current_instance_id,
            available_tag: stage.available_tag.clone(),
            created_at: stage.created_at,
            updated_at: stage.updated_at,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StageListResponse {
    pub items: Vec<StageResponse>,
}

/// The body of `POST /api/projects/{id}/stages`. Only `name` and `tag_policy` are required.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StageCreateRequest {
    /// A lowercase DNS label, unique within the project.
    #[schema(example = "prod", pattern = "^ *[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])? *$")]
    pub name: String,
    #[schema(example = "semver:^1", pattern = "^ *(tag|semver|glob|regex):.*[^ ] *$")]
    pub tag_policy: String,
    /// Default null: the `default_poll_schedule` setting.
    #[serde(default)]
    pub schedule: Option<String>,
    /// Default true.
    #[serde(default = "default_auto_deploy")]
    pub auto_deploy: bool,
    /// Default null: `{stage}.{project}.{base_domain}` when `base_domain` is set.
    #[serde(default)]
    pub hostname: Option<String>,
    /// 1 to 1000, default 10.
    #[serde(default)]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub max_instances: Option<i64>,
    #[serde(default)]
    pub min_release_age: Option<String>,
    /// Default: port 8080, no env, the image's command, no health check, 2 s minimum ready time.
    #[serde(default)]
    pub container: Option<ContainerRequest>,
    /// Default: no hooks.
    #[serde(default)]
    pub hooks: Option<Hooks>,
    /// Default `start_first`.
    #[serde(default)]
    #[schema(value_type = Option<DeployStrategy>)]
    pub strategy: Option<String>,
}

fn default_auto_deploy() -> bool {
    true
}

/// The body of `PATCH /api/stages/{id}`: an absent field is left as it is; `null` clears
/// `schedule`, `hostname` and `min_release_age`. A `container` object replaces the whole
/// container spec (fields it leaves out take their defaults): send back the `container` of
/// `GET /api/stages/{id}` with your changes. Its `secret_env` is the exception: a key set to a
/// string is set or replaced, a key set to `null` removed, and keys not named are kept.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StagePatchRequest {
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = String, pattern = "^ *[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])? *$")]
    pub name: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = String, pattern = "^ *(tag|semver|glob|regex):.*[^ ] *$")]
    pub tag_policy: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub schedule: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = bool)]
    pub auto_deploy: Option<Option<bool>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub hostname: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = u32, minimum = 1, maximum = 1000)]
    pub max_instances: Option<Option<i64>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub min_release_age: Option<Option<String>>,
    /// Replaces the whole container spec (`secret_env` is merged key by key).
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = ContainerRequest)]
    pub container: Option<Option<ContainerRequest>>,
    /// Replaces both hooks (a hook left out is removed).
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<Hooks>)]
    pub hooks: Option<Option<Hooks>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = DeployStrategy)]
    pub strategy: Option<Option<String>>,
}

impl StagePatchRequest {
    /// The names of the fields this request changes, for the event log.
    fn changed_fields(&self) -> Vec<&'static str> {
        [
            ("name", self.name.is_some()),
            ("tag_policy", self.tag_policy.is_some()),
            ("schedule", self.schedule.is_some()),
            ("auto_deploy", self.auto_deploy.is_some()),
            ("hostname", self.hostname.is_some()),
            ("max_instances", self.max_instances.is_some()),
            ("min_release_age", self.min_release_age.is_some()),
            ("container", self.container.is_some()),
            ("hooks", self.hooks.is_some()),
            ("strategy", self.strategy.is_some()),
        ]
        .into_iter()
        .filter_map(|(field, given)| given.then_some(field))
        .collect()
    }
}

fn checked_hooks(hooks: Hooks) -> WebResult<Hooks> {
    hooks
        .validate()
        .map_err(|(field, err)| WebError::field(field, err))?;
    Ok(hooks)
}

/// Parses a nullable string field of a PATCH: absent stays `None`, `null` is `Some(None)`.
fn parse_clearable<T>(
    raw: Option<Option<String>>,
    parse: impl Fn(&str) -> Result<T, ParseError>,
) -> Result<Option<Option<T>>, ParseError> {
    raw.map(|value| value.as_deref().map(parse).transpose())
        .transpose()
}

/// The stages of a project, oldest first.
#[utoipa::path(
    get,
    path = "/api/projects/{id}/stages",
    tag = "stages",
    params(("id" = i64, Path, description = "the project's id")),
    responses(
        (status = 200, body = StageListResponse),
        (status = 400, body = ErrorBody, description = "the id is not an integer"),
        (status = 401, body = ErrorBody, description = "not authenticated"),
        (status = 404, body = ErrorBody, description = "no such project"),
    ),
    security(("token" = []), ("session" = [])),
)]
async fn project_stages_get(
    user: Viewer,
    IdPath(project_id): IdPath,
    State(state): State<AppState>,
) -> WebResult<Json<StageListResponse>> {
    // An unknown project is a 404, not an empty list.
    let stages = state
        .store
        .list_stages(project_id)
        .await
        .map_err(not_found_as(format!("no project with id {project_id}")))?;
    Ok(Json(StageListResponse {
        items: stages
            .iter()
            .map(|stage| StageResponse::for_role(stage, user.user().role))
            .collect(),
    }))
}

/// Creates a stage of a project.
#[utoipa::path(
    post,
    path = "/api/projects/{id}/stages",
    tag = "stages",
    params(("id" = i64, Path, description = "the project's id")),
    request_body = StageCreateRequest,
    responses(
        (status = 201, body = StageResponse),
        (status = 400, body = ErrorBody, description = "a field is invalid; `error.field` names it"),
        (status = 401, body = ErrorBody, description = "not authenticated"),
        (status = 403, body = ErrorBody, description = "needs the member role"),
        (status = 404, body = ErrorBody, description = "no such project"),
        (status = 409, body = ErrorBody, description = "the name is taken in this project, or the hostname is routed elsewhere"),
        (status = 415, body = ErrorBody, description = "the body is not JSON"),
    ),
    security(("token" = []), ("session" = [])),
)]
pub(crate) async fn project_stages_post(
    user: Member,
    IdPath(project_id): IdPath,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<StageCreateRequest>,
) -> WebResult<(StatusCode, Json<StageResponse>)> {
    let (container, secret_env) = body.container.unwrap_or_default().into_parts(&[])?;
    check_workload(&state, &container).await?;
    let new = NewStage {
        name: Name::parse(&body.name).field("name")?,
        tag_policy: TagPolicy::parse(&body.tag_policy).field("tag_policy")?,
        schedule: body
            .schedule
            .as_deref()
            .map(Schedule::parse)
            .transpose()
            .field("schedule")?,
        auto_deploy: body.auto_deploy,
        hostname: body
            .hostname
            .as_deref()
            .map(Hostname::parse)
            .transpose()
            .field("hostname")?,
        max_instances: match body.max_instances {
            Some(raw) => parse_max_instances(raw).field("max_instances")?,
            None => NewStage::DEFAULT_MAX_INSTANCES,
        },
        min_release_age: body
            .min_release_age
            .as_deref()
            .map(HumanDuration::parse)
            .transpose()
            .field("min_release_age")?,
        container,
        hooks: body.hooks.map(checked_hooks).transpose()?.unwrap_or_default(),
        strategy: body
            .strategy
            .as_deref()
            .map(DeployStrategy::parse)
            .transpose()
            .field("strategy")?
            .unwrap_or_default(),
        // Nothing to remove yet: `null`s are dropped.
        secret_env: sealed_changes(secret_env, &Default::default(), &state.secrets)
            .into_iter()
            .filter_map(|(key, sealed)| Some((key, sealed?)))
            .collect(),
    };
    check_no_accessory_named(&state, project_id, &new.name).await?;

    let stage = state
        .store
        .insert_stage(project_id, &new, state.clock.now())
        .await
        .map_err(not_found_as(format!("no project with id {project_id}")))?;
    state.refresh_routes().await;
    state.poller.refresh_logged().await;
    state
        .bus
        .publish(
            NewEvent::info(Source::Api, format!("stage {} created", stage.name))
                .project(stage.project_id)
                .stage(stage.id)
                .recorded()
                .detail("actor", user.user().username.as_str())
                .detail("tag_policy", stage.tag_policy.to_string()),
        )
        .await;
    Ok((
        StatusCode::CREATED,
        Json(StageResponse::for_role(&stage, user.user().role)),
    ))
}

/// One stage.
#[utoipa::path(
    get,
    path = "/api/stages/{id}",
    tag = "stages",
    params(("id" = i64, Path, description = "the stage's id")),
    responses(
        (status = 200, body = StageResponse),
        (status = 400, body = ErrorBody, description = "the id is not an integer"),
        (status = 401, body = ErrorBody, description = "not authenticated"),
        (status = 404, body = ErrorBody, description = "no such stage"),
    ),
    security(("token" = []), ("session" = [])),
)]
async fn stage_get(
    user: Viewer,
    IdPath(id): IdPath,
    State(state): State<AppState>,
) -> WebResult<Json<StageResponse>> {
    let stage = state
        .store
        .get_stage(id)
        .await
        .map_err(not_found_as(format!("no stage with id {id}")))?;
    Ok(Json(StageResponse::for_role(&stage, user.user().role)))
}

/// Updates a stage.
///
/// Absent fields are left as they are; `null` clears `schedule`, `hostname`
/// and `min_release_age`. A `container` object **replaces** the whole container spec: fields
/// it leaves out take their defaults, so send back the `container` from `GET` with your
/// changes. A change of the container spec or its secrets makes the stage out of date: an
/// auto-deploy stage redeploys the digest it runs with the new spec at once (trigger
/// `config`, health-gated); a monitor-only stage waits for a deploy.
#[utoipa::path(
    patch,
    path = "/api/stages/{id}",
    tag = "stages",
    params(("id" = i64, Path, description = "the stage's id")),
    request_body = StagePatchRequest,
    responses(
        (status = 200, body = StageResponse),
        (status = 400, body = ErrorBody, description = "a field is invalid; `error.field` names it"),
        (status = 401, body = ErrorBody, description = "not authenticated"),
        (status = 403, body = ErrorBody, description = "needs the member role"),
        (status = 404, body = ErrorBody, description = "no such stage"),
        (status = 409, body = ErrorBody, description = "the name is taken in this project, or the hostname is routed elsewhere"),
        (status = 415, body = ErrorBody, description = "the body is not JSON"),
    ),
    security(("token" = []), ("session" = [])),
)]
pub(crate) async fn stage_patch(
    user: Member,
    IdPath(id): IdPath,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<StagePatchRequest>,
) -> WebResult<Json<StageResponse>> {
    let changed = body.changed_fields();
    let container = match not_null("container", body.container)? {
        Some(request) => {
            let current = state
                .store
                .stage_secrets(id)
                .await
                .map_err(not_found_as(format!("no stage with id {id}")))?;
            let keys: Vec<String> = current.keys().cloned().collect();
            let (spec, secret_env) = request.into_parts(&keys)?;
            check_workload(&state, &spec).await?;
            Some((spec, sealed_changes(secret_env, &current, &state.secrets)))
        }
        None => None,
    };
    let (container, secret_env) = match container {
        Some((spec, secrets)) => (Some(spec), secrets),
        None => (None, Default::default()),
    };
    // The names (never the values) of the secrets this update sets or removes, for the event.
    let secret_keys: Vec<String> = secret_env.keys().cloned().collect();
    let patch = StagePatch {
        name: not_null("name", body.name)?
            .map(|raw| Name::parse(&raw))
            .transpose()
            .field("name")?,
        tag_policy: not_null("tag_policy", body.tag_policy)?
            .map(|raw| TagPolicy::parse(&raw))
            .transpose()
            .field("tag_policy")?,
        schedule: parse_clearable(body.schedule, Schedule::parse).field("schedule")?,
        auto_deploy: not_null("auto_deploy", body.auto_deploy)?,
        hostname: parse_clearable(body.hostname, Hostname::parse).field("hostname")?,
        max_instances: not_null("max_instances", body.max_instances)?
            .map(parse_max_instances)
            .transpose()
            .field("max_instances")?,
        min_release_age: parse_clearable(body.min_release_age, HumanDuration::parse)
            .field("min_release_age")?,
        container,
        hooks: not_null("hooks", body.hooks)?.map(checked_hooks).transpose()?,
        strategy: not_null("strategy", body.strategy)?
            .as_deref()
            .map(DeployStrategy::parse)
            .transpose()
            .field("strategy")?,
        secret_env,
    };
    if let Some(name) = &patch.name {
        let current = state
            .store
            .get_stage(id)
            .await
            .map_err(not_found_as(format!("no stage with id {id}")))?;
        check_no_accessory_named(&state, current.project_id, name).await?;
    }

    let stage = state
        .store
        .update_stage(id, &patch, state.clock.now())
        .await
        .map_err(not_found_as(format!("no stage with id {id}")))?;
    state.refresh_routes().await;
    state.poller.refresh_logged().await;
    state
        .bus
        .publish(
            NewEvent::info(Source::Api, format!("stage {} updated", stage.name))
                .project(stage.project_id)
                .stage(stage.id)
                .recorded()
                .detail("actor", user.user().username.as_str())
                .detail("fields", changed)
                .detail("secret_env_keys_changed", secret_keys),
        )
        .await;
    // A new configuration reaches an auto-deploy stage's running container by a redeploy.
    state
        .poller
        .redeploy_if_out_of_date(&stage, Some(user.user().username.as_str()))
        .await;
    Ok(Json(StageResponse::for_role(&stage, user.user().role)))
}

/// Deletes a stage.
///
/// Only a stage without instances can go (409 otherwise: clean them up first); its hostname
/// is free again. Its named volumes are kept unless an admin adds `?remove_volumes=true`: then
/// the volumes it mounts that no other stage of the project mounts are removed too (409, and
/// nothing deleted, while a container still uses one).
#[utoipa::path(
    delete,
    path = "/api/stages/{id}",
    tag = "stages",
    params(("id" = i64, Path, description = "the stage's id"), DeleteParams),
    responses(
        (status = 204, description = "deleted"),
        (status = 400, body = ErrorBody, description = "the id is not an integer, or a bad `remove_volumes`"),
        (status = 401, body = ErrorBody, description = "not authenticated"),
        (status = 403, body = ErrorBody, description = "needs the member role (the admin role to remove volumes)"),
        (status = 404, body = ErrorBody, description = "no such stage"),
        (status = 409, body = ErrorBody, description = "the stage still has instances, or a volume to remove is in use"),
    ),
    security(("token" = []), ("session" = [])),
)]
pub(crate) async fn stage_delete(
    user: Member,
    IdPath(id): IdPath,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<DeleteParams>,
) -> WebResult<StatusCode> {
    let remove_volumes = params.remove_volumes(&user.0)?;
    let not_found = || not_found_as(format!("no stage with id {id}"));
    let stage = state.store.get_stage(id).await.map_err(not_found())?;
    let mut removed = Vec::new();
    if remove_volumes {
        let instances = state
            .store
            .list_instances(&InstanceFilter {
                stage_id: Some(id),
                ..InstanceFilter::default()
            })
            .await?;
        if !instances.is_empty() {
            return Err(WebError::conflict(
                Some("id"),
                "the stage still has instances; remove its instances first",
            ));
        }
        let project = state.store.get_project(stage.project_id).await?;
        removed = stage_volumes(&state, &project, &stage).await?;
        remove_volumes_now(&state, &removed).await?;
    }
    state.store.delete_stage(id).await.map_err(not_found())?;
    state.refresh_routes().await;
    state.poller.refresh_logged().await;
    state
        .bus
        .publish(
            NewEvent::info(Source::Api, format!("stage {} deleted", stage.name))
                .project(stage.project_id)
                .stage(stage.id)
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
    fn max_instances_must_be_from_1_to_1000() {
        assert_eq!(parse_max_instances(1), Ok(1));
        assert_eq!(parse_max_instances(1000), Ok(1000));
        assert!(parse_max_instances(0).is_err());
        assert!(parse_max_instances(1001).is_err());
        assert!(parse_max_instances(-1).is_err());
        assert!(parse_max_instances(i64::MAX).is_err());
    }

    #[test]
    fn a_create_request_takes_the_documented_defaults() {
        let body: StageCreateRequest =
            serde_json::from_str(r#"{"name":"prod","tag_policy":"tag:latest"}"#).unwrap();
        assert!(body.auto_deploy);
        assert_eq!(body.max_instances, None);
        assert!(body.container.is_none());
    }

    #[test]
    fn clearable_fields_tell_absent_from_null() {
        assert_eq!(parse_clearable(None, Hostname::parse), Ok(None));
        assert_eq!(parse_clearable(Some(None), Hostname::parse), Ok(Some(None)));
        let parsed = parse_clearable(Some(Some("A.Example.com".to_owned())), Hostname::parse).unwrap();
        assert_eq!(
            parsed.flatten().map(|h| h.to_string()).as_deref(),
            Some("a.example.com")
        );
        assert!(parse_clearable(Some(Some("bad_host".to_owned())), Hostname::parse).is_err());
    }
}
