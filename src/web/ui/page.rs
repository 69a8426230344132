//! What every page shares: the [`Ui`] extractor (the API's role extractors, with a redirect to
//! the login page instead of a JSON 401), the [`Chrome`] around each page (who is logged in,
//! the CSRF token for its forms, the flash message, what the live script should listen to),
//! rendering with the UI's security headers, redirects with one-shot flash messages, error
//! pages, and [`within`], which waits a little for a long action before answering "still
//! running".

use std::future::Future;
use std::time::Duration;

use askama::Template;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum_extra::extract::CookieJar;

use crate::domain::user::Role;
use crate::web::auth::CurrentUser;
use crate::web::error::WebError;
use crate::web::state::AppState;

/// The cookie carrying a flash message across a POST → 303 → GET.
pub const FLASH_COOKIE: &str = "dw_flash";

/// How long a form post waits for a long action (a deploy, a stop with its grace period) before
/// answering that it is still running; the page then shows the outcome live.
pub const ACTION_WAIT: Duration = Duration::from_millis(1500);

/// The UI's security headers: nothing but our own origin may be loaded, framed or posted to.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// An API extractor (`CurrentUser`, `Viewer`, `Member`, `Admin`) used by a page: the same role
/// check, but a caller who is not logged in is sent to the login page (and back afterwards), and
/// a refusal is an HTML page rather than JSON.
#[derive(Debug, Clone)]
pub struct Ui<E>(pub E);

impl<E> FromRequestParts<AppState> for Ui<E>
where
    E: FromRequestParts<AppState, Rejection = WebError> + Send,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        match E::from_request_parts(parts, state).await {
            Ok(inner) => Ok(Ui(inner)),
            Err(err) if err.status == StatusCode::UNAUTHORIZED => Err(to_login(parts)),
            Err(err) => {
                let current = parts.extensions.get::<CurrentUser>().cloned();
                Err(error_page(err, current.as_ref()))
            }
        }
    }
}

/// The redirect to the login page, coming back to this page (a GET) or to the page a form was
/// posted from (its `Referer`) afterwards.
fn to_login(parts: &Parts) -> Response {
    let back = if parts.method == axum::http::Method::GET {
        parts
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned())
    } else {
        referer_path(&parts.headers).unwrap_or_else(|| "/".to_owned())
    };
    let next = safe_next(&back);
    if next == "/" {
        return see_other("/login");
    }
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("next", &next)
        .finish();
    see_other(&format!("/login?{query}"))
}

/// The path and query of the `Referer` header, if there is one.
pub fn referer_path(headers: &HeaderMap) -> Option<String> {
    let referer = headers.get(header::REFERER)?.to_str().ok()?;
    let url = url::Url::parse(referer).ok()?;
    Some(match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    })
}

/// A path on this site to go to after logging in: anything else (`//evil.example`, `https://…`,
/// `/\evil`) becomes `/`, so the login page cannot be used to send users elsewhere.
pub fn safe_next(raw: &str) -> String {
    let local = raw.starts_with('/')
        && !raw.starts_with("//")
        && !raw.starts_with("/\\")
        && !raw.chars().any(|c| c.is_control());
    if local && !raw.starts_with("/login") && !raw.starts_with("/logout") {
        raw.to_owned()
    } else {
        "/".to_owned()
    }
}

/// The kind of a flash message, also its CSS class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlashKind {
    Notice,
    /// Nothing failed, but nothing happened either, for a reason the user should read.
    Warning,
    Error,
}

impl FlashKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Notice => "notice",
            Self::Warning => "warning",
            Self::Error => "error",
        }
    }
}

/// A one-shot message shown on the page a redirect leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flash {
    pub kind: FlashKind,
    pub message: String,
}

impl Flash {
    pub fn notice(message: impl Into<String>) -> Self {
        Self {
            kind: FlashKind::Notice,
            message: message.into(),
        }
    }

    pub fn warning(message: impl Into<String>) -> Self {
        Self {
            kind: FlashKind::Warning,
            message: message.into(),
        }
    }

    pub fn error(message: impl Into<String>) -> Self {
        Self {
            kind: FlashKind::Error,
            message: message.into(),
        }
    }

    /// The cookie value: `k=<kind>&m=<message>`, URL-encoded (cookie-safe).
    fn encode(&self) -> String {
        let message: String = self.message.chars().take(500).collect();
        form_urlencoded::Serializer::new(String::new())
            .append_pair("k", self.kind.as_str())
            .append_pair("m", &message)
            .finish()
    }

    fn decode(raw: &str) -> Option<Self> {
        let mut kind = None;
        let mut message = None;
        for (key, value) in form_urlencoded::parse(raw.as_bytes()) {
            match &*key {
                "k" => {
                    kind = Some(match &*value {
                        "error" => FlashKind::Error,
                        "warning" => FlashKind::Warning,
                        _ => FlashKind::Notice,
                    })
                }
                "m" => message = Some(value.into_owned()),
                _ => {}
            }
        }
        Some(Self {
            kind: kind?,
            message: message.filter(|m| !m.is_empty())?,
        })
    }
}

/// The flash message the request carries, if any. Rendering a page that shows it clears it.
#[derive(Debug, Clone, Default)]
pub struct FlashMessage(pub Option<Flash>);

impl<S: Send + Sync> FromRequestParts<S> for FlashMessage {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let jar = CookieJar::from_headers(&parts.headers);
        Ok(FlashMessage(
            jar.get(FLASH_COOKIE).and_then(|c| Flash::decode(c.value())),
        ))
    }
}

/// Which top-level page is active in the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Dashboard,
    Events,
    Stale,
    Proxies,
    Notifications,
    Settings,
    Users,
    Tokens,
    None,
}

impl Nav {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dashboard => "dashboard",
            Self::Events => "events",
            Self::Stale => "stale",
            Self::Proxies => "proxies",
            Self::Notifications => "notifications",
            Self::Settings => "settings",
            Self::Users => "users",
            Self::Tokens => "tokens",
            Self::None => "",
        }
    }
}

/// The logged-in user as the chrome shows them.
#[derive(Debug, Clone)]
pub struct ChromeUser {
    pub username: String,
    pub role: String,
    pub is_member: bool,
    pub is_admin: bool,
}

/// Everything around a page's own content.
#[derive(Debug, Clone)]
pub struct Chrome {
    pub title: String,
    pub user: Option<ChromeUser>,
    /// The session's CSRF token, for every form of the page (empty for API-token callers,
    /// who cannot post forms anyway).
    pub csrf_token: String,
    pub nav: Nav,
    pub flash: Option<Flash>,
    /// What `static/live.js` does on this page: `""` nothing, `"regions"` refresh the
    /// `data-live-region` parts on events, `"events"` prepend new event-log rows.
    pub live: &'static str,
    /// Resume the live stream after this event id (the newest one when the page rendered), so
    /// nothing published between the render and the script's connection is missed.
    pub last_event_id: i64,
    /// Only events about this stage refresh the page (the stage page).
    pub live_stage: Option<i64>,
    /// The Docker engine is unreachable now: every page says so in a banner.
    pub engine_down: bool,
}

impl Chrome {
    pub fn new(current: &CurrentUser, title: impl Into<String>, nav: Nav, flash: FlashMessage) -> Self {
        let role = current.user.role;
        Self {
            title: title.into(),
            user: Some(ChromeUser {
                username: current.user.username.as_str().to_owned(),
                role: role.to_string(),
                is_member: role >= Role::Member,
                is_admin: role >= Role::Admin,
            }),
            csrf_token: current.csrf_token().unwrap_or("").to_owned(),
            nav,
            flash: flash.0,
            live: "",
            last_event_id: 0,
            live_stage: None,
            engine_down: false,
        }
    }

    /// The chrome of a page without a logged-in user (login, errors).
    pub fn anonymous(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            user: None,
            csrf_token: String::new(),
            nav: Nav::None,
            flash: None,
            live: "",
            last_event_id: 0,
            live_stage: None,
            engine_down: false,
        }
    }

    /// Shows the banner when the Docker engine is unreachable: the sync's event stream is down
    /// (it reconnects as soon as the engine answers again; `/readyz` says 503 meanwhile).
    pub fn engine(mut self, state: &AppState) -> Self {
        self.engine_down = !state.sync.is_connected();
        self
    }

    /// Turns on live updates of the given kind, resuming after the newest stored event.
    pub async fn live(mut self, state: &AppState, kind: &'static str) -> Self {
        self = self.engine(state);
        self.live = kind;
        self.last_event_id = state.store.latest_event_id().await.ok().flatten().unwrap_or(0);
        self
    }

    pub fn is_member(&self) -> bool {
        self.user.as_ref().is_some_and(|u| u.is_member)
    }

    pub fn is_admin(&self) -> bool {
        self.user.as_ref().is_some_and(|u| u.is_admin)
    }

    /// `aria-current` for the navigation link to `name` (`"events"`).
    pub fn current(&self, name: &str) -> &'static str {
        if self.nav.as_str() == name {
            "page"
        } else {
            "false"
        }
    }
}

/// A page template: askama renders it; the chrome tells whether a flash was shown.
pub trait PageTemplate: Template {
    fn chrome(&self) -> &Chrome;
}

/// Renders a page with `status` and the UI's headers; clears the flash cookie it showed.
pub fn render<T: PageTemplate>(status: StatusCode, page: &T) -> Response {
    let html = match page.render() {
        Ok(html) => html,
        Err(e) => {
            tracing::error!(error = %e, "rendering a page failed");
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                html_headers(),
                "<!doctype html><title>error</title><p>The page could not be rendered.</p>",
            )
                .into_response();
        }
    };
    let mut response = (status, html_headers(), html).into_response();
    if page.chrome().flash.is_some() {
        response
            .headers_mut()
            .append(header::SET_COOKIE, HeaderValue::from_static(CLEARED_FLASH));
    }
    response
}

const CLEARED_FLASH: &str = "dw_flash=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0";

fn html_headers() -> [(header::HeaderName, HeaderValue); 5] {
    [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        ),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (header::REFERRER_POLICY, HeaderValue::from_static("same-origin")),
        // Pages show live state and CSRF tokens: never from a cache.
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
    ]
}

/// 303 See Other to a path of ours.
pub fn see_other(location: &str) -> Response {
    let location = HeaderValue::from_str(location).unwrap_or_else(|_| HeaderValue::from_static("/"));
    (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response()
}

/// 303 See Other with a flash message for the page it leads to.
pub fn see_other_with(location: &str, flash: Flash) -> Response {
    let mut response = see_other(location);
    let cookie = format!(
        "{FLASH_COOKIE}={}; HttpOnly; SameSite=Lax; Path=/; Max-Age=120",
        flash.encode()
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// The page shown for a refused or failed request.
#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub chrome: Chrome,
    pub status: u16,
    pub reason: String,
    pub message: String,
    /// Where to go from here, and its name (the dashboard, unless a page knows better).
    pub back_href: String,
    pub back_label: String,
}

impl PageTemplate for ErrorPage {
    fn chrome(&self) -> &Chrome {
        &self.chrome
    }
}

/// An HTML page for an error, with the navigation when the caller is known.
pub fn error_page(err: WebError, current: Option<&CurrentUser>) -> Response {
    let reason = err.status.canonical_reason().unwrap_or("Error").to_owned();
    let title = format!("{} {reason}", err.status.as_u16());
    let chrome = match current {
        Some(current) => Chrome::new(current, title, Nav::None, FlashMessage(None)),
        None => Chrome::anonymous(title),
    };
    // A refused path parameter (`/projects/abc`) says which one, as the API's error does.
    let message = match &err.field {
        Some(field) => format!("{field}: {}", err.message),
        None => err.message.clone(),
    };
    let page = ErrorPage {
        chrome,
        status: err.status.as_u16(),
        reason,
        message,
        back_href: "/".to_owned(),
        back_label: "the dashboard".to_owned(),
    };
    let mut response = render(err.status, &page);
    if let Some(secs) = err.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// How a long action went within [`ACTION_WAIT`].
#[derive(Debug)]
pub enum Finished<T> {
    Done(T),
    /// Still running, in its own task: the page shows the outcome when it comes.
    StillRunning,
}

/// Runs `work` in its own task and waits up to `wait` for it. A browser should not hang on a
/// minute-long deploy: after `wait` the form's answer says it is running, and the page updates
/// live when it ends. The task is never cancelled.
pub async fn within<T: Send + 'static>(
    wait: Duration,
    work: impl Future<Output = T> + Send + 'static,
) -> Result<Finished<T>, WebError> {
    let mut task = tokio::spawn(work);
    match tokio::time::timeout(wait, &mut task).await {
        Ok(Ok(done)) => Ok(Finished::Done(done)),
        Ok(Err(e)) => Err(WebError::internal(anyhow::anyhow!(
            "a UI action's task failed: {e}"
        ))),
        Err(_) => Ok(Finished::StillRunning),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_login() {
        assert_eq!(safe_next("/stages/3?logs=4"), "/stages/3?logs=4");
        for bad in [
            "//evil.example/",
            "https://evil.example/",
            "/\\evil.example",
            "evil",
            "",
            "/login?next=/x",
            "/x\n",
        ] {
            assert_eq!(safe_next(bad), "/", "{bad:?}");
        }
    }

    #[test]
    fn a_flash_survives_its_cookie_encoding() {
        let flash = Flash::error("deploy of v2; failed: \"exit 1\" = bad");
        let encoded = flash.encode();
        assert!(!encoded.contains(';') && !encoded.contains(' ') && !encoded.contains('"'));
        assert_eq!(Flash::decode(&encoded), Some(flash));
        assert_eq!(Flash::decode("garbage"), None);
    }
}
