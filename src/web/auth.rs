//! Who is calling, and may they? Extractors resolve the caller from an API token
//! (`Authorization: Bearer dw_…`) or the `dw_session` cookie, check the CSRF token on unsafe
//! requests authenticated by cookie, and enforce a minimum role. A handler states its role in its
//! signature — `_: Member` — so the guard cannot be forgotten in the body.
//!
//! Logging in and out lives here too ([`log_in`], [`log_out`], the cookie headers), so the JSON
//! API and the UI's login form share one implementation of rate limiting, timing-safe password
//! checks and failed-login events.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum_extra::extract::CookieJar;

use super::error::{WebError, WebResult};
use super::state::AppState;
use crate::auth::rate_limit::{LoginKeys, LoginVerdict};
use crate::auth::sessions::{SESSION_TTL, new_session};
use crate::auth::{constant_time_eq, dummy_password_hash, hash_token, verify_password};
use crate::domain::event::{NewEvent, Source};
use crate::domain::user::{Role, User, Username};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "dw_session";
/// The header carrying the CSRF token on unsafe requests authenticated by cookie.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The form field carrying the CSRF token in the UI's forms.
pub const CSRF_FORM_FIELD: &str = "csrf_token";

/// How the caller proved who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    Token { token_id: i64 },
    Session { id_hash: String, csrf_token: String },
}

/// An authenticated caller, any role.
#[derive(Debug, Clone)]
pub struct CurrentUser {
    pub user: User,
    pub credential: Credential,
}

impl CurrentUser {
    pub fn require(&self, role: Role) -> Result<(), WebError> {
        if self.user.role >= role {
            Ok(())
        } else {
            Err(WebError::forbidden(format!(
                "this action needs the {role} role; you are {}",
                self.user.role
            )))
        }
    }

    /// The CSRF token of the caller's session; `None` when authenticated by API token.
    pub fn csrf_token(&self) -> Option<&str> {
        match &self.credential {
            Credential::Session { csrf_token, .. } => Some(csrf_token),
            Credential::Token { .. } => None,
        }
    }
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        // Role extractors and `CurrentUser` may both appear in one handler: resolve once.
        if let Some(extension) = parts.extensions.get::<CurrentUser>() {
            return Ok(extension.clone());
        }
        let now = state.clock.now();
        let current = if let Some(token) = bearer_token(&parts.headers) {
            let (user, token) = state
                .store
                .find_user_by_token_hash(&hash_token(token), now)
                .await?
                .ok_or_else(|| WebError::unauthorized("invalid or revoked API token"))?;
            CurrentUser {
                user,
                credential: Credential::Token { token_id: token.id },
            }
        } else {
            let jar = CookieJar::from_headers(&parts.headers);
            let cookie = jar
                .get(SESSION_COOKIE)
                .ok_or_else(|| WebError::unauthorized("log in or send an API token"))?;
            let id_hash = hash_token(cookie.value());
            let (session, user) = state
                .store
                .find_session(&id_hash, now)
                .await?
                .ok_or_else(|| WebError::unauthorized("your session has expired; log in again"))?;
            // A cookie is sent by the browser on its own, also to requests another site
            // triggers; only a page of ours can know the CSRF token, so unsafe requests need it.
            if !is_safe(&parts.method) {
                let sent = parts
                    .headers
                    .get(CSRF_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if !constant_time_eq(sent, &session.csrf_token) {
                    return Err(WebError::forbidden(
                        "missing or wrong CSRF token: send the csrf_token from login in the X-CSRF-Token header",
                    ));
                }
            }
            CurrentUser {
                user,
                credential: Credential::Session {
                    id_hash,
                    csrf_token: session.csrf_token,
                },
            }
        };
        parts.extensions.insert(current.clone());
        Ok(current)
    }
}

/// The token of an `Authorization: Bearer …` header (the scheme is case-insensitive).
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

macro_rules! role_extractor {
    ($(#[$meta:meta])* $name:ident, $role:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone)]
        pub struct $name(pub CurrentUser);

        impl FromRequestParts<AppState> for $name {
            type Rejection = WebError;

            async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
                let current = CurrentUser::from_request_parts(parts, state).await?;
                current.require($role)?;
                Ok($name(current))
            }
        }

        impl $name {
            pub fn user(&self) -> &User {
                &self.0.user
            }
        }
    };
}

role_extractor!(
    /// Any authenticated user (read access).
    Viewer,
    Role::Viewer
);
role_extractor!(
    /// A member or admin (configuration, deploys, instance actions).
    Member,
    Role::Member
);
role_extractor!(
    /// An admin (users, settings, proxies, bulk cleanup, project deletion).
    Admin,
    Role::Admin
);

/// The address of the client, for rate limiting and the failed-login event. It is the TCP peer:
/// `X-Forwarded-For` is not trusted, since any client can send it to escape the rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        // The app serves with connect info; a router embedded without it (a unit test) gets one
        // shared "unknown" client rather than a 500.
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |ConnectInfo(addr)| addr.ip());
        Ok(ClientAddr(ip))
    }
}

/// A successful login: the user and the new session's secrets for the response.
#[derive(Debug, Clone)]
pub struct LoggedIn {
    pub user: User,
    /// The `dw_session` cookie value (only its hash is stored).
    pub cookie_value: String,
    pub csrf_token: String,
}

/// The message of every failed login, whatever failed: a client must not learn which usernames
/// exist.
const WRONG_CREDENTIALS: &str = "wrong username or password";

/// Checks a username and password and opens a session.
///
/// Refused with 429 while the client address, or the address for this username, has too many
/// recent failures; a username's failures from everywhere only delay its logins (see
/// [`crate::auth::rate_limit`]). An unknown username is verified against a dummy hash, so it answers in the same time and
/// with the same message as a wrong password. Every failure is a `warn` event naming the
/// username and the client (never the password).
pub async fn log_in(state: &AppState, username: &str, password: &str, client: IpAddr) -> WebResult<LoggedIn> {
    let keys = LoginKeys::new(client, username);
    let delay = throttle(state, &keys, client)?;
    if !delay.is_zero() {
        // Failures for this username from elsewhere slow it down, for everyone alike.
        tokio::time::sleep(delay).await;
    }
    // Wait for a turn before the slow part, then look again: failures recorded while this
    // attempt waited count against it too.
    let permit = state.login_limiter.verification_permit().await;
    throttle(state, &keys, client)?;

    // A name that cannot exist is looked up as nobody, not answered differently.
    let found = match Username::parse(username) {
        Ok(name) => state.store.find_user_by_username(name.as_str()).await?,
        Err(_) => None,
    };
    let (user, hash) = match found {
        Some((user, hash)) => (Some(user), Some(hash)),
        None => (None, None),
    };
    let password = password.to_owned();
    // argon2 takes tens of milliseconds of CPU: off the async workers.
    let verified = tokio::task::spawn_blocking(move || {
        let hash: &str = match &hash {
            Some(hash) => hash,
            None => dummy_password_hash(),
        };
        verify_password(hash, &password)
    })
    .await
    .map_err(|e| WebError::internal(anyhow::anyhow!("password verification task: {e}")))?;
    drop(permit);

    let now = state.clock.now();
    let user = match user {
        Some(user) if verified => user,
        _ => {
            state.login_limiter.record_failure(&keys, now);
            let shown = shown_username(username);
            state
                .bus
                .publish(
                    NewEvent::warn(Source::Auth, format!("failed login for '{shown}'"))
                        .detail("username", shown)
                        .detail("client", client.to_string()),
                )
                .await;
            return Err(WebError::unauthorized(WRONG_CREDENTIALS));
        }
    };
    // Only the username's failures are forgiven: clearing the client's too would let one valid
    // account reset the counter of an address guessing other accounts' passwords.
    state.login_limiter.record_success(&keys);
    let new = new_session(user.id, now);
    state.store.insert_session(&new.session).await?;
    Ok(LoggedIn {
        user,
        cookie_value: new.cookie_value,
        csrf_token: new.session.csrf_token,
    })
}

/// Refuses the attempt when its address, or its address for this username, failed too often;
/// otherwise says how long the username's failures slow it down.
fn throttle(state: &AppState, keys: &LoginKeys, client: IpAddr) -> WebResult<std::time::Duration> {
    match state.login_limiter.check(keys, state.clock.now()) {
        LoginVerdict::Allowed { delay } => Ok(delay),
        LoginVerdict::Refused { retry_after } => {
            tracing::warn!(%client, retry_after, "login refused: too many failed attempts");
            Err(WebError::rate_limited(retry_after))
        }
    }
}

/// A username as it may appear in an event: cut to the longest valid username and without
/// control characters, since it is whatever a client sent.
fn shown_username(raw: &str) -> String {
    raw.chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Ends the caller's session, if they authenticated with one (an API token stays valid: it is
/// revoked by deleting it).
pub async fn log_out(state: &AppState, current: &CurrentUser) -> WebResult<()> {
    if let Credential::Session { id_hash, .. } = &current.credential {
        state.store.delete_session(id_hash).await?;
    }
    Ok(())
}

/// The `Set-Cookie` value that gives the browser a session. `HttpOnly` keeps it from scripts,
/// `SameSite=Lax` from most cross-site requests (the CSRF token covers the rest), and `Secure`
/// is set when the UI is served over TLS.
pub fn session_cookie(cookie_value: &str, secure: bool) -> WebResult<HeaderValue> {
    let max_age = SESSION_TTL.num_seconds();
    cookie_header(&format!(
        "{SESSION_COOKIE}={cookie_value}; HttpOnly; SameSite=Lax; Path=/; Max-Age={max_age}{}",
        if secure { "; Secure" } else { "" }
    ))
}

/// The `Set-Cookie` value that makes the browser forget its session.
pub fn cleared_session_cookie(secure: bool) -> WebResult<HeaderValue> {
    cookie_header(&format!(
        "{SESSION_COOKIE}=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    ))
}

fn cookie_header(value: &str) -> WebResult<HeaderValue> {
    HeaderValue::from_str(value)
        .map_err(|e| WebError::internal(anyhow::anyhow!("building the session cookie: {e}")))
}

/// Middleware for the UI's routes: an HTML form cannot set headers, so a form post carries the
/// CSRF token in its `csrf_token` field. This copies that field into the `X-CSRF-Token` header
/// before the extractors run, so the one check in [`CurrentUser`] covers forms too. Requests
/// that already have the header, safe methods and non-form bodies pass through untouched.
pub async fn csrf_form_field_to_header(request: Request, next: Next) -> Response {
    let is_form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if is_safe(request.method()) || request.headers().contains_key(CSRF_HEADER) || !is_form {
        return next.run(request).await;
    }
    let (mut parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, super::MAX_BODY_BYTES).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return WebError {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                ..WebError::bad_request("the request body is larger than 1 MiB")
            }
            .into_response();
        }
    };
    let token = form_urlencoded::parse(&bytes)
        .find(|(key, _)| key == CSRF_FORM_FIELD)
        .and_then(|(_, value)| HeaderValue::from_str(&value).ok());
    if let Some(token) = token {
        parts.headers.insert(CSRF_HEADER, token);
    }
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(authorization: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(authorization).unwrap(),
        );
        headers
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_other_schemes_are_ignored() {
        assert_eq!(bearer_token(&headers("Bearer dw_abc")), Some("dw_abc"));
        assert_eq!(bearer_token(&headers("bearer dw_abc ")), Some("dw_abc"));
        assert_eq!(bearer_token(&headers("BEARER dw_abc")), Some("dw_abc"));
        assert_eq!(bearer_token(&headers("Basic YWRtaW46eA==")), None);
        assert_eq!(bearer_token(&HeaderMap::new()), None);
    }

    #[test]
    fn the_session_cookie_is_http_only_same_site_and_secure_under_tls() {
        let plain = session_cookie("abc", false).unwrap();
        let plain = plain.to_str().unwrap();
        assert!(plain.starts_with("dw_session=abc;"), "{plain}");
        for attribute in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=604800"] {
            assert!(plain.contains(attribute), "{plain} lacks {attribute}");
        }
        assert!(!plain.contains("Secure"));
        assert!(
            session_cookie("abc", true)
                .unwrap()
                .to_str()
                .unwrap()
                .ends_with("; Secure")
        );
        assert!(
            cleared_session_cookie(false)
                .unwrap()
                .to_str()
                .unwrap()
                .contains("Max-Age=0")
        );
    }

    #[test]
    fn usernames_in_events_are_cut_and_cleaned() {
        assert_eq!(shown_username("alice"), "alice");
        assert_eq!(shown_username("a\nb\u{7}"), "a?b?");
        assert_eq!(shown_username(&"x".repeat(500)).len(), 64);
    }

    #[tokio::test]
    async fn a_form_post_gets_its_csrf_field_as_a_header() {
        use tower::ServiceExt;
        let app = axum::Router::new()
            .route(
                "/",
                axum::routing::post(|headers: HeaderMap, body: String| async move {
                    let csrf = headers
                        .get(CSRF_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    format!("{csrf}|{body}")
                }),
            )
            .layer(axum::middleware::from_fn(csrf_form_field_to_header));
        let request = Request::post("/")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from("name=x&csrf_token=t0k3n"))
            .unwrap();
        let response = app.oneshot(request).await.unwrap();
        let body = axum::body::to_bytes(response.into_body(), 1024).await.unwrap();
        assert_eq!(&body[..], b"t0k3n|name=x&csrf_token=t0k3n");
    }
}
