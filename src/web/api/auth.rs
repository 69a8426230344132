//! Logging in and out, and who am I: `POST /api/auth/login` checks a username and password and
//! answers with the session cookie and its CSRF token; `POST /api/auth/logout` ends the session;
//! `GET /api/auth/me` says who the credentials belong to. The work itself (rate limiting,
//! timing-safe checks, failed-login events) is in [`crate::web::auth`], shared with the UI.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::user::{Role, User};
use crate::web::auth::{ClientAddr, CurrentUser, cleared_session_cookie, log_in, log_out, session_cookie};
use crate::web::error::{ErrorBody, WebResult};
use crate::web::extract::ApiJson;
use crate::web::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(auth_login_post))
        .routes(routes!(auth_logout_post))
        .routes(routes!(auth_me_get))
}

/// A username and password. Not `Debug`: nothing should ever print the password.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    #[schema(example = "admin")]
    pub username: String,
    #[schema(format = Password)]
    pub password: String,
}

/// Who a session or token belongs to.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UserSummary {
    pub id: i64,
    pub username: String,
    pub role: Role,
}

impl From<&User> for UserSummary {
    fn from(user: &User) -> Self {
        Self {
            id: user.id,
            username: user.username.as_str().to_owned(),
            role: user.role,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LoginResponse {
    pub user: UserSummary,
    /// Send this in the `X-CSRF-Token` header with every unsafe request made with the cookie.
    pub csrf_token: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MeResponse {
    pub user: UserSummary,
    /// The session's CSRF token; `null` when authenticated by API token (which needs none).
    pub csrf_token: Option<String>,
}

/// Log in with a username and password.
///
/// Sets the `dw_session` cookie (HttpOnly, SameSite=Lax, seven days). Too many failed attempts
/// from one address, or from one address for one username, answer 429 with `Retry-After`; a
/// username's failures from other addresses only slow its logins down (up to 5 s).
#[utoipa::path(
    post,
    path = "/api/auth/login",
    tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, body = LoginResponse, description = "logged in",
            headers(("set-cookie" = String, description = "the `dw_session` cookie"))),
        (status = 400, body = ErrorBody, description = "a field is missing or of the wrong type"),
        (status = 415, body = ErrorBody, description = "the body is not JSON"),
        (status = 401, body = ErrorBody, description = "wrong username or password"),
        (status = 429, body = ErrorBody, description = "too many failed attempts",
            headers(("retry-after" = u64, description = "seconds to wait"))),
    ),
)]
async fn auth_login_post(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    ApiJson(body): ApiJson<LoginRequest>,
) -> WebResult<Response> {
    let logged_in = log_in(&state, &body.username, &body.password, client).await?;
    let cookie = session_cookie(&logged_in.cookie_value, state.secure_cookies)?;
    let body = LoginResponse {
        user: UserSummary::from(&logged_in.user),
        csrf_token: logged_in.csrf_token,
    };
    Ok(([(header::SET_COOKIE, cookie)], Json(body)).into_response())
}

/// Log out: ends the session and clears its cookie.
///
/// With an API token this only answers 204: a token is revoked by deleting it.
#[utoipa::path(
    post,
    path = "/api/auth/logout",
    tag = "auth",
    responses(
        (status = 204, description = "logged out",
            headers(("set-cookie" = String, description = "clears the `dw_session` cookie"))),
        (status = 401, body = ErrorBody, description = "not logged in"),
        (status = 403, body = ErrorBody, description = "the CSRF token is missing or wrong"),
    ),
    security(("token" = []), ("session" = [])),
)]
async fn auth_logout_post(State(state): State<AppState>, current: CurrentUser) -> WebResult<Response> {
    log_out(&state, &current).await?;
    let cookie = cleared_session_cookie(state.secure_cookies)?;
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response())
}

/// The user the credentials belong to, and the session's CSRF token.
#[utoipa::path(
    get,
    path = "/api/auth/me",
    tag = "auth",
    responses(
        (status = 200, body = MeResponse, description = "the caller"),
        (status = 401, body = ErrorBody, description = "not logged in"),
    ),
    security(("token" = []), ("session" = [])),
)]
async fn auth_me_get(current: CurrentUser) -> Json<MeResponse> {
    Json(MeResponse {
        user: UserSummary::from(&current.user),
        csrf_token: current.csrf_token().map(str::to_owned),
    })
}
