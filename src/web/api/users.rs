//! User management, for admins: list, create, change a role or password, delete. Two rules keep
//! an installation administrable: the last admin can be neither demoted nor deleted, and an
//! admin cannot delete their own account. The first is the store's: the demoting or deleting
//! statement itself checks that another admin remains, so two admins demoting each other at once
//! cannot both pass, whichever process or task runs them. Changing a password ends that user's
//! sessions (its API tokens stay: they are separate credentials, revoked one by one).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::hash_password;
use crate::domain::event::{NewEvent, Source};
use crate::domain::user::{Password, Role, User, Username};
use crate::web::auth::Admin;
use crate::web::error::{ErrorBody, FieldResult, WebError, WebResult};
use crate::web::extract::ApiJson;
use crate::web::path::IdPath;
use crate::web::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(users_get, users_post))
        .routes(routes!(user_patch, user_delete))
}

/// A user as the API shows it. The password hash never leaves the store.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserView {
    pub id: i64,
    pub username: String,
    pub role: Role,
    #[serde(with = "crate::domain::time_format")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "crate::domain::time_format")]
    pub updated_at: DateTime<Utc>,
}

impl From<User> for UserView {
    fn from(user: User) -> Self {
        Self {
            id: user.id,
            username: user.username.as_str().to_owned(),
            role: user.role,
            created_at: user.created_at,
            updated_at: user.updated_at,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserList {
    pub items: Vec<UserView>,
}

/// A new user. Not `Debug`: it holds a password.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserCreate {
    /// 1 to 64 characters: letters, digits, `.`, `_`, `-`; unique in any letter case.
    #[schema(example = "alice")]
    pub username: String,
    /// 8 to 1024 characters.
    #[schema(format = Password, min_length = 8, max_length = 1024)]
    pub password: String,
    /// `viewer` (the default), `member` or `admin`.
    #[serde(default)]
    #[schema(value_type = Option<Role>)]
    pub role: Option<String>,
}

/// Changes to a user; absent fields stay as they are. Not `Debug`: it may hold a password.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    #[serde(default)]
    #[schema(value_type = Option<Role>)]
    pub role: Option<String>,
    /// A new password (8 to 1024 characters); ends the user's sessions.
    #[serde(default)]
    #[schema(format = Password, min_length = 8, max_length = 1024)]
    pub password: Option<String>,
}

/// Every user, oldest first.
#[utoipa::path(
    get,
    path = "/api/users",
    tag = "users",
    responses(
        (status = 200, body = UserList, description = "every user"),
        (status = 401, body = ErrorBody, description = "not logged in"),
        (status = 403, body = ErrorBody, description = "not an admin"),
    ),
    security(("token" = []), ("session" = [])),
)]
async fn users_get(State(state): State<AppState>, _: Admin) -> WebResult<Json<UserList>> {
    let users = state.store.list_users().await?;
    Ok(Json(UserList {
        items: users.into_iter().map(UserView::from).collect(),
    }))
}

/// Create a user.
#[utoipa::path(
    post,
    path = "/api/users",
    tag = "users",
    request_body = UserCreate,
    responses(
        (status = 201, body = UserView, description = "created"),
        (status = 400, body = ErrorBody, description = "a field is invalid; `field` names it"),
        (status = 415, body = ErrorBody, description = "the body is not JSON"),
        (status = 401, body = ErrorBody, description = "not logged in"),
        (status = 403, body = ErrorBody, description = "not an admin"),
        (status = 409, body = ErrorBody, description = "the username is taken"),
    ),
    security(("token" = []), ("session" = [])),
)]
pub(crate) async fn users_post(
    State(state): State<AppState>,
    Admin(admin): Admin,
    ApiJson(body): ApiJson<UserCreate>,
) -> WebResult<(StatusCode, Json<UserView>)> {
    let username = Username::parse(&body.username).field("username")?;
    let password = Password::parse(&body.password).field("password")?;
    let role = body
        .role
        .as_deref()
        .map(str::parse::<Role>)
        .transpose()
        .field("role")?
        .unwrap_or(Role::Viewer);

    let hash = hash_in_background(password).await?;
    let user = state
        .store
        .insert_user(&username, &hash, role, state.clock.now())
        .await?;
    state
        .bus
        .publish(
            NewEvent::info(
                Source::Auth,
                format!("created {} user '{}'", user.role, user.username),
            )
            .detail("username", user.username.as_str())
            .detail("actor", admin.user.username.as_str())
            .recorded(),
        )
        .await;
    Ok((StatusCode::CREATED, Json(UserView::from(user))))
}

/// Change a user's role or password.
///
/// A new password ends the user's sessions. The last admin cannot be demoted (409).
#[utoipa::path(
    patch,
    path = "/api/users/{id}",
    tag = "users",
    params(("id" = i64, Path, description = "the user's id")),
    request_body = UserPatch,
    responses(
        (status = 200, body = UserView, description = "updated"),
        (status = 400, body = ErrorBody, description = "a field is invalid; `field` names it"),
        (status = 415, body = ErrorBody, description = "the body is not JSON"),
        (status = 401, body = ErrorBody, description = "not logged in"),
        (status = 403, body = ErrorBody, description = "not an admin"),
        (status = 404, body = ErrorBody, description = "no such user"),
        (status = 409, body = ErrorBody, description = "this would leave no admin"),
    ),
    security(("token" = []), ("session" = [])),
)]
pub(crate) async fn user_patch(
    State(state): State<AppState>,
    Admin(admin): Admin,
    IdPath(id): IdPath,
    ApiJson(body): ApiJson<UserPatch>,
) -> WebResult<Json<UserView>> {
    let role = body
        .role
        .as_deref()
        .map(str::parse::<Role>)
        .transpose()
        .field("role")?;
    let password = body
        .password
        .as_deref()
        .map(Password::parse)
        .transpose()
        .field("password")?;

    if role.is_none() && password.is_none() {
        // Nothing to change: answer the user as it is, without touching `updated_at`.
        return Ok(Json(UserView::from(
            state.store.get_user(id).await.map_err(not_found)?,
        )));
    }
    let hash = match password {
        Some(password) => Some(hash_in_background(password).await?),
        None => None,
    };
    // Read for the event only ("from … to …"); the last-admin rule is checked by the write.
    let before = state.store.get_user(id).await.map_err(not_found)?;
    let user = state
        .store
        .update_user(id, role, hash.as_deref(), state.clock.now())
        .await
        .map_err(not_found)?
        .ok_or_else(|| last_admin("demote", Some("role")))?;
    if hash.is_some() {
        // Whoever knew the old password may hold a session opened with it.
        state.store.delete_sessions_of_user(id).await?;
    }
    if before.role != user.role {
        state
            .bus
            .publish(
                NewEvent::info(
                    Source::Auth,
                    format!(
                        "changed the role of '{}' from {} to {}",
                        user.username, before.role, user.role
                    ),
                )
                .detail("username", user.username.as_str())
                .detail("actor", admin.user.username.as_str())
                .recorded(),
            )
            .await;
    }
    Ok(Json(UserView::from(user)))
}

/// Delete a user, with their tokens and sessions.
///
/// An admin cannot delete their own account, and the last admin cannot be deleted (409).
#[utoipa::path(
    delete,
    path = "/api/users/{id}",
    tag = "users",
    params(("id" = i64, Path, description = "the user's id")),
    responses(
        (status = 204, description = "deleted"),
        (status = 400, body = ErrorBody, description = "the id is not a positive integer"),
        (status = 401, body = ErrorBody, description = "not logged in"),
        (status = 403, body = ErrorBody, description = "not an admin"),
        (status = 404, body = ErrorBody, description = "no such user"),
        (status = 409, body = ErrorBody, description = "your own account, or the last admin"),
    ),
    security(("token" = []), ("session" = [])),
)]
pub(crate) async fn user_delete(
    State(state): State<AppState>,
    Admin(admin): Admin,
    IdPath(id): IdPath,
) -> WebResult<StatusCode> {
    if id == admin.user.id {
        return Err(WebError::conflict(
            None,
            "you cannot delete your own account; another admin can",
        ));
    }
    let deleted = state.store.get_user(id).await.map_err(not_found)?;
    if !state.store.delete_user(id).await.map_err(not_found)? {
        return Err(last_admin("delete", None));
    }
    state
        .bus
        .publish(
            NewEvent::info(Source::Auth, format!("deleted user '{}'", deleted.username))
                .detail("username", deleted.username.as_str())
                .detail("actor", admin.user.username.as_str())
                .recorded(),
        )
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// The 409 of a demotion or deletion the store refused because no admin would remain.
fn last_admin(verb: &str, field: Option<&str>) -> WebError {
    WebError::conflict(
        field,
        format!("cannot {verb} the last admin; make another user an admin first"),
    )
}

/// A store `NotFound` about the user in the path, said as such.
fn not_found(err: crate::store::StoreError) -> WebError {
    match err {
        crate::store::StoreError::NotFound => WebError::not_found("no such user"),
        other => other.into(),
    }
}

/// argon2id takes tens of milliseconds of CPU: off the async workers.
async fn hash_in_background(password: Password) -> WebResult<String> {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| WebError::internal(anyhow::anyhow!("password hashing task: {e}")))?
        .map_err(WebError::internal)
}
