//! Logging in and out of the UI: `GET/POST /login`, `POST /logout`. The checks (rate limit,
//! timing-safe verification, failed-login events) are [`crate::web::auth::log_in`]'s, shared
//! with `POST /api/auth/login`; this page only turns them into a cookie and a redirect.
//!
//! On a first start the login page says how to log in as the bootstrap admin: while the only
//! user is `admin` and its password has never been changed.

use askama::Template;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;

use super::form::FormData;
use super::page::{
    Chrome, Flash, FlashMessage, PageTemplate, Ui, render, safe_next, see_other, see_other_with,
};
use crate::web::auth::{ClientAddr, CurrentUser, cleared_session_cookie, log_in, log_out, session_cookie};
use crate::web::error::WebError;
use crate::web::state::AppState;

#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    pub chrome: Chrome,
    /// Where to go after logging in (a local path).
    pub next: String,
    pub username: String,
    pub error: Option<String>,
    /// Show how to log in as the bootstrap admin.
    pub bootstrap_hint: bool,
}

impl PageTemplate for LoginPage {
    fn chrome(&self) -> &Chrome {
        &self.chrome
    }
}

/// The `next` parameter of a query string, made safe.
fn next_of(query: Option<&str>) -> String {
    let raw = form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == "next")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| "/".to_owned());
    safe_next(&raw)
}

/// Whether this is still a first start: the only user is the bootstrap `admin`, whose password
/// was never changed.
async fn is_first_start(state: &AppState) -> bool {
    match state.store.list_users().await {
        Ok(users) => matches!(
            users.as_slice(),
            [only] if only.username.as_str() == "admin" && only.created_at == only.updated_at
        ),
        Err(e) => {
            tracing::warn!(error = %e, "could not list users for the login page");
            false
        }
    }
}

/// The login form; someone already logged in goes straight on.
pub async fn login_get(
    State(state): State<AppState>,
    current: Result<CurrentUser, WebError>,
    flash: FlashMessage,
    RawQuery(query): RawQuery,
) -> Response {
    let next = next_of(query.as_deref());
    if current.is_ok() {
        return see_other(&next);
    }
    let mut chrome = Chrome::anonymous("Log in");
    chrome.flash = flash.0;
    let page = LoginPage {
        chrome,
        next,
        username: String::new(),
        error: None,
        bootstrap_hint: is_first_start(&state).await,
    };
    render(StatusCode::OK, &page)
}

/// Checks the username and password; on success sets the session cookie and goes to `next`.
pub async fn login_post(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    body: Bytes,
) -> Response {
    let form = FormData::parse(&body);
    let username = form.text("username");
    let password = form.get("password").unwrap_or("").to_owned();
    let next = safe_next(form.get("next").unwrap_or("/"));
    let err = match log_in(&state, &username, &password, client).await {
        Ok(logged_in) => match session_cookie(&logged_in.cookie_value, state.secure_cookies) {
            Ok(cookie) => {
                let mut response = see_other(&next);
                response.headers_mut().append(header::SET_COOKIE, cookie);
                return response;
            }
            Err(err) => err,
        },
        Err(err) => err,
    };
    let message = match (err.status, err.retry_after) {
        (StatusCode::TOO_MANY_REQUESTS, Some(secs)) => {
            format!("Too many failed attempts; try again in {secs} s.")
        }
        _ => err.message.clone(),
    };
    let page = LoginPage {
        chrome: Chrome::anonymous("Log in"),
        next,
        username,
        error: Some(message),
        bootstrap_hint: is_first_start(&state).await,
    };
    let mut response = render(err.status, &page);
    if let Some(secs) = err.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// Ends the session and forgets its cookie.
pub async fn logout_post(State(state): State<AppState>, Ui(current): Ui<CurrentUser>) -> Response {
    if let Err(e) = log_out(&state, &current).await {
        return super::page::error_page(e, Some(&current));
    }
    let mut response = see_other_with("/login", Flash::notice("You are logged out."));
    if let Ok(cookie) = cleared_session_cookie(state.secure_cookies) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}
