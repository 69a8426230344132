//! Configuration as code over HTTP: `POST /api/apply` makes the installation match a stack file
//! (create and update; with `prune`, delete what the file governs but does not name; with
//! `dry_run`, only say what would change), `GET /api/export` writes the installation as a
//! stack file. The file format, its diff and its export are [`crate::stack`]; the changes run
//! through the API's own handlers ([`super::stack_changes`]), so routes and schedules change
//! live, events name the actor, and roles are the API's: a member applies projects and
//! stages, an admin also settings, standalone proxies, notification channels and project
//! deletions. Channels are an admin's to read too: a member's file may not name them, and a
//! member's export leaves them out and says so.
//!
//! Secrets in a file are `${VARIABLE}` references; the request carries the values of the
//! variables the file names (the `apply` command reads them from its environment). They are
//! compared with the installation's, never answered, and an export writes references again.
//! A file is checked whole — every value, the roles every change needs, stages that still run
//! instances — before the first change is made; errors name the file, the line and the field.

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::stack_changes::{carry_out, check_changes, load_installation};
use crate::domain::event::{NewEvent, Source};
use crate::domain::user::Role;
use crate::stack::render::Omitted;
use crate::stack::{self, Action, Change, FieldChange};
use crate::web::auth::Member;
use crate::web::error::{ErrorBody, WebError, WebResult};
use crate::web::extract::ApiJson;
use crate::web::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(apply_post))
        .routes(routes!(export_get))
}

/// The body of `POST /api/apply`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyRequest {
    /// The file's name, for error messages (`stack.toml:12:3: …`).
    #[serde(default = "default_file_name")]
    #[schema(example = "stack.toml")]
    pub file_name: String,
    /// The stack file's text (TOML).
    pub content: String,
    /// Values of the `${VARIABLE}` references the file makes (secrets).
    #[serde(default)]
    pub variables: HashMap<String, String>,
    /// Also delete what the file's sections no longer name.
    #[serde(default)]
    pub prune: bool,
    /// Say what would change; change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

fn default_file_name() -> String {
    "stack.toml".to_owned()
}

/// One change of an apply.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChangeResponse {
    pub action: Action,
    /// `settings`, `project`, `stage`, `proxy`, `channel`.
    pub kind: String,
    /// `shop`, `shop/prod`, `grafana.example.com`, a channel's name; `settings` for the settings.
    pub key: String,
    pub fields: Vec<FieldChange>,
}

impl From<&Change> for ChangeResponse {
    fn from(change: &Change) -> Self {
        Self {
            action: change.action,
            kind: change.kind.noun().to_owned(),
            key: change.resource.display_key(),
            fields: change.fields.clone(),
        }
    }
}

/// What an apply did (or, with `dry_run`, would do).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApplyResponse {
    pub dry_run: bool,
    /// Whether anything changed (would change, for a dry run).
    pub changed: bool,
    pub changes: Vec<ChangeResponse>,
    /// `2 created, 1 updated, 0 deleted`, or `no changes`.
    pub summary: String,
}

fn summary(changes: &[Change]) -> String {
    if changes.is_empty() {
        return "no changes".to_owned();
    }
    let count = |action| changes.iter().filter(|c| c.action == action).count();
    format!(
        "{} created, {} updated, {} deleted",
        count(Action::Create),
        count(Action::Update),
        count(Action::Delete)
    )
}

/// Makes the installation match a stack file.
///
/// Checks the whole file first — values, roles, stages that still have instances — and
/// answers `400`/`403`/`409` naming `file:line:column` and the field (`error.field` is its
/// dotted path, like `projects.shop.stages.prod.tag_policy`) before changing anything. Then
/// creates and updates in order (settings, projects, stages, proxies, notification channels)
/// and, with `prune`, deletes what the file's sections no longer name. A second apply of the
/// same file changes nothing (`changed: false`).
#[utoipa::path(
    post,
    path = "/api/apply",
    tag = "configuration as code",
    request_body = ApplyRequest,
    responses(
        (status = 200, body = ApplyResponse),
        (status = 400, body = ErrorBody, description = "the file is invalid; the message names file, line and column, `error.field` the field"),
        (status = 401, body = ErrorBody, description = "not authenticated"),
        (status = 403, body = ErrorBody, description = "a change needs the admin role (settings, proxies, notification channels, deleting a project); nothing changed"),
        (status = 409, body = ErrorBody, description = "a change conflicts (a hostname routed elsewhere, a stage that still has instances)"),
        (status = 415, body = ErrorBody, description = "the body is not JSON"),
    ),
    security(("token" = []), ("session" = [])),
)]
async fn apply_post(
    user: Member,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<ApplyRequest>,
) -> WebResult<Json<ApplyResponse>> {
    let file_name = body.file_name.trim();
    if file_name.is_empty() || file_name.len() > 255 || file_name.chars().any(char::is_control) {
        return Err(WebError::validation(
            "file_name",
            "must be 1 to 255 printable characters",
        ));
    }
    let stack = stack::parse(file_name, &body.content, &body.variables)
        .map_err(|e| WebError::validation(e.location.path.clone(), e.to_string()))?;
    let is_admin = user.0.require(Role::Admin).is_ok();
    let mut installation = load_installation(&state, is_admin).await?;
    let changes = stack::plan(&stack, &installation.resources, body.prune);
    check_changes(&state, &user.0, &stack, &installation, &changes).await?;
    if !body.dry_run && !changes.is_empty() {
        carry_out(&state, &user.0, &stack, &mut installation, &changes).await?;
        let actor = user.user().username.to_string();
        state
            .bus
            .publish(
                NewEvent::info(
                    Source::Api,
                    format!("{actor} applied {file_name}: {}", summary(&changes)),
                )
                .recorded()
                .detail("actor", actor)
                .detail("prune", body.prune),
            )
            .await;
    }
    Ok(Json(ApplyResponse {
        dry_run: body.dry_run,
        changed: !changes.is_empty(),
        changes: changes.iter().map(ChangeResponse::from).collect(),
        summary: summary(&changes),
    }))
}

/// The installation as a stack file.
///
/// Every section and every field, in a stable order: exporting, applying the file to an empty
/// installation and exporting again gives the same text. Secrets are written as `${VARIABLE}`
/// references (`SHOP_REGISTRY_PASSWORD`), never as values. It holds plain `env` values, which
/// viewers may not read: a member's or an admin's. Notification channels are in an admin's
/// export only; a member's leaves the `[notifications]` section out and says so in a comment.
#[utoipa::path(
    get,
    path = "/api/export",
    tag = "configuration as code",
    responses(
        (status = 200, content_type = "application/toml", body = String, description = "the stack file"),
        (status = 401, body = ErrorBody, description = "not authenticated"),
        (status = 403, body = ErrorBody, description = "a viewer (the file holds plain env values)"),
    ),
    security(("token" = []), ("session" = [])),
)]
async fn export_get(user: Member, State(state): State<AppState>) -> WebResult<impl IntoResponse> {
    let is_admin = user.0.require(Role::Admin).is_ok();
    let installation = load_installation(&state, is_admin).await?;
    let omitted = if is_admin {
        Omitted::Nothing
    } else {
        Omitted::Channels
    };
    Ok((
        [(header::CONTENT_TYPE, "application/toml; charset=utf-8")],
        stack::render(&installation.resources, omitted),
    ))
}
