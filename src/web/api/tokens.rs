//! API tokens, for any authenticated user: list, create and revoke one's own. A token (`dw_…`)
//! is shown once, in the answer to its creation; the store keeps only its SHA-256, so a lost
//! token is revoked and replaced, never recovered. Another user's token answers 404, the same as
//! one that does not exist, so ids cannot be probed.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{new_api_token, parse_token_name};
use crate::domain::user::ApiToken;
use crate::store::StoreError;
use crate::web::auth::Viewer;
use crate::web::error::{ErrorBody, FieldResult, WebError, WebResult};
use crate::web::extract::ApiJson;
use crate::web::path::IdPath;
use crate::web::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(tokens_get, tokens_post))
        .routes(routes!(token_delete))
}

/// A token as listed: never the token itself.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenView {
    pub id: i64,
    pub name: String,
    #[serde(with = "crate::domain::time_format")]
    pub created_at: DateTime<Utc>,
    /// When it last authenticated a request (to the minute); `null` if never.
    #[serde(with = "crate::domain::time_format::option")]
    pub last_used_at: Option<DateTime<Utc>>,
}

impl From<ApiToken> for TokenView {
    fn from(token: ApiToken) -> Self {
        Self {
            id: token.id,
            name: token.name,
            created_at: token.created_at,
            last_used_at: token.last_used_at,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenList {
    pub items: Vec<TokenView>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenCreate {
    /// What the token is for (`ci`, `laptop`): 1 to 100 characters, no control characters.
    #[schema(
        example = "ci",
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*[^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u001F\\u007F-\\u009F]*$"
    )]
    pub name: String,
}

/// A new token, the only time it is shown.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedToken {
    pub id: i64,
    pub name: String,
    /// Send as `Authorization: Bearer dw_…`. It cannot be shown again.
    #[schema(example = "dw_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")]
    pub token: String,
    #[serde(with = "crate::domain::time_format")]
    pub created_at: DateTime<Utc>,
}

/// The caller's own tokens, oldest first.
#[utoipa::path(
    get,
    path = "/api/tokens",
    tag = "tokens",
    responses(
        (status = 200, body = TokenList, description = "the caller's tokens"),
        (status = 401, body = ErrorBody, description = "not logged in"),
    ),
    security(("token" = []), ("session" = [])),
)]
async fn tokens_get(State(state): State<AppState>, caller: Viewer) -> WebResult<Json<TokenList>> {
    let tokens = state.store.list_tokens(caller.user().id).await?;
    Ok(Json(TokenList {
        items: tokens.into_iter().map(TokenView::from).collect(),
    }))
}

/// Create a token for the caller; the answer is the only time it is shown.
#[utoipa::path(
    post,
    path = "/api/tokens",
    tag = "tokens",
    request_body = TokenCreate,
    responses(
        (status = 201, body = CreatedToken, description = "created; keep the token, it is not shown again"),
        (status = 400, body = ErrorBody, description = "the name is invalid"),
        (status = 415, body = ErrorBody, description = "the body is not JSON"),
        (status = 401, body = ErrorBody, description = "not logged in"),
        (status = 403, body = ErrorBody, description = "the CSRF token is missing or wrong"),
    ),
    security(("token" = []), ("session" = [])),
)]
pub(crate) async fn tokens_post(
    State(state): State<AppState>,
    caller: Viewer,
    ApiJson(body): ApiJson<TokenCreate>,
) -> WebResult<(StatusCode, Json<CreatedToken>)> {
    let name = parse_token_name(&body.name).field("name")?;
    let (token, hash) = new_api_token();
    let record = state
        .store
        .insert_token(caller.user().id, &name, &hash, state.clock.now())
        .await?;
    let created = CreatedToken {
        id: record.id,
        name: record.name,
        token,
        created_at: record.created_at,
    };
    Ok((StatusCode::CREATED, Json(created)))
}

/// Revoke one of the caller's tokens.
#[utoipa::path(
    delete,
    path = "/api/tokens/{id}",
    tag = "tokens",
    params(("id" = i64, Path, description = "the token's id")),
    responses(
        (status = 204, description = "revoked"),
        (status = 400, body = ErrorBody, description = "the id is not a positive integer"),
        (status = 401, body = ErrorBody, description = "not logged in"),
        (status = 404, body = ErrorBody, description = "no such token of yours"),
    ),
    security(("token" = []), ("session" = [])),
)]
pub(crate) async fn token_delete(
    State(state): State<AppState>,
    caller: Viewer,
    IdPath(id): IdPath,
) -> WebResult<StatusCode> {
    match state.store.delete_token(caller.user().id, id).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(StoreError::NotFound) => Err(WebError::not_found("no such token of yours")),
        Err(other) => Err(other.into()),
    }
}
