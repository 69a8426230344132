//! The HTTP boundary of the API listener: the router, the shared [`state::AppState`], the one
//! [`error::WebError`] mapping, extractors that name bad fields, and authentication. Nothing
//! below `web` knows HTTP; nothing depends on `web`.
//!
//! # Layout
//! - [`state`]: the handles handlers use.
//! - [`error`]: the JSON error shape.
//! - [`extract`]: `ApiJson`, `ApiQuery`.
//! - [`listener`]: the accept loop — header and idle timeouts, the connection cap.
//! - [`auth`]: `CurrentUser`, `Viewer`, `Member`, `Admin` extractors.
//! - [`api`]: one file per resource.
//! - [`ui`]: the server-rendered pages (HTML, not in the OpenAPI document).

pub mod api;
pub mod auth;
pub mod error;
pub mod extract;
pub mod listener;
pub mod path;
pub mod sse;
pub mod state;
pub mod ui;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts, MatchedPath, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;

use crate::metrics::HttpLabels;
use error::WebError;
use state::AppState;

/// The largest request body accepted (SPEC.md §4).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

#[derive(OpenApi)]
#[openapi(
    info(title = "docker-watcher", description = "Continuous deployment from container registries to Docker, with a reverse proxy and stale-container cleanup."),
    components(schemas(error::ErrorBody, error::ErrorDetail, error::ErrorCode)),
    modifiers(&SecuritySchemes),
)]
struct ApiDoc;

struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("dw_…")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(auth::SESSION_COOKIE))),
        );
    }
}

/// Builds the API listener's router.
pub fn router(state: AppState) -> Router {
    let (router, mut doc) = utoipa_axum::router::OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(api::routes())
        .split_for_parts();
    bound_path_ids(&mut doc);
    router
        .merge(ui::routes())
        .fallback(fallback)
        .layer(middleware::from_fn_with_state(state.clone(), form_only_pages))
        .layer(axum::Extension(Arc::new(doc)))
        .layer(middleware::from_fn_with_state(state.clone(), count_requests))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Every integer in a path is a record's id, and [`path::IdPath`] (like the other id extractors)
/// refuses anything below 1 with a 400: the document says so once, for every route, instead of
/// each handler repeating `minimum = 1`.
fn bound_path_ids(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::path::ParameterIn;
    use utoipa::openapi::schema::{Schema, SchemaType, Type};
    for item in doc.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
            &mut item.head,
            &mut item.options,
            &mut item.trace,
        ];
        let parameters = operations
            .into_iter()
            .flatten()
            .filter_map(|op| op.parameters.as_mut())
            .chain(item.parameters.as_mut())
            .flatten();
        for parameter in parameters {
            let RefOr::T(parameter) = parameter else { continue };
            if !matches!(parameter.parameter_in, ParameterIn::Path) {
                continue;
            }
            if let Some(RefOr::T(Schema::Object(object))) = parameter.schema.as_mut()
                && matches!(object.schema_type, SchemaType::Type(Type::Integer))
                && object.minimum.is_none()
            {
                object.minimum = Some(1.into());
            }
        }
    }
}

/// Unknown paths. The API answers its JSON 404 — under `/api/`, and to clients that ask for
/// JSON — and everything else is a browser that followed a dead link or mistyped an address:
/// it gets the UI's 404 page, with the navigation when the caller is logged in.
async fn fallback(State(state): State<AppState>, request: Request) -> Response {
    let (mut parts, _body) = request.into_parts();
    if is_api_path(parts.uri.path()) || prefers_json(&parts.headers) {
        return WebError::not_found("no such route").into_response();
    }
    // Only for the navigation: a caller who is not logged in sees the page without it.
    let current = auth::CurrentUser::from_request_parts(&mut parts, &state)
        .await
        .ok();
    ui::page::error_page(
        WebError::not_found(format!("There is no page at {}.", parts.uri.path())),
        current.as_ref(),
    )
}

/// A UI form's address opened in a browser (a `GET` from the address bar on a route that takes
/// only `POST`) gets the UI's `405` page, which links to the form's page, instead of an empty
/// `405`. Other methods and other routes keep axum's answer.
async fn form_only_pages(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let opened = matches!(
        *request.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    if !opened || is_api_path(request.uri().path()) || prefers_json(request.headers()) {
        return next.run(request).await;
    }
    let (uri, headers) = (request.uri().clone(), request.headers().clone());
    let response = next.run(request).await;
    // Outside `/api`, every route takes GET or POST: a GET refused here is a form's address.
    // (axum adds the `Allow` header around this layer, so it is not seen here, and the page
    // leaves it to axum.)
    if response.status() != axum::http::StatusCode::METHOD_NOT_ALLOWED {
        return response;
    }
    let (mut parts, ()) = axum::http::Request::new(()).into_parts();
    parts.uri = uri;
    parts.headers = headers;
    // Only for the navigation: a caller who is not logged in sees the page without it.
    let current = auth::CurrentUser::from_request_parts(&mut parts, &state)
        .await
        .ok();
    ui::form_only::form_only_page(parts.uri.path(), current.as_ref())
}

fn is_api_path(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/")
}

/// Whether the `Accept` header rates JSON above HTML (`application/json`, `…+json`).
/// Browsers list `text/html` first for page loads; clients that send no `Accept`, or `*/*`,
/// get HTML outside `/api/`.
fn prefers_json(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let (mut html, mut json) = (0.0_f32, 0.0_f32);
    for range in accept.split(',') {
        let mut params = range.split(';');
        let media = params.next().unwrap_or("").trim().to_ascii_lowercase();
        let quality = params
            .find_map(|p| p.trim().strip_prefix("q="))
            .and_then(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        if media == "text/html" || media == "application/xhtml+xml" {
            html = html.max(quality);
        } else if media == "application/json" || media.ends_with("+json") {
            json = json.max(quality);
        }
    }
    json > html
}

/// Counts requests by matched route and status for `/metrics`.
async fn count_requests(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await.into_response();
    state
        .metrics
        .http_requests
        .get_or_create(&HttpLabels {
            method,
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn json_is_preferred_only_when_the_client_rates_it_above_html() {
        assert!(prefers_json(&accept("application/json")));
        assert!(prefers_json(&accept("application/problem+json, */*;q=0.1")));
        assert!(prefers_json(&accept("text/html;q=0.5, application/json")));
        assert!(!prefers_json(&accept(
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
        )));
        assert!(!prefers_json(&accept("*/*")));
        assert!(!prefers_json(&HeaderMap::new()));
    }

    #[test]
    fn only_paths_under_api_are_api_paths() {
        assert!(is_api_path("/api"));
        assert!(is_api_path("/api/no-such-thing"));
        assert!(!is_api_path("/apis"));
        assert!(!is_api_path("/projects/abc/xyz"));
    }
}
