//! The HTTP boundary of the API listener: the router, the shared [`state::AppState`], the one
//! [`error::WebError`] mapping, extractors that name bad fields, and authentication. Nothing
//! below `web` knows HTTP; nothing depends on `web`.
//!
//! # Layout
//! - [`state`]: the handles handlers use.
//! - [`error`]: the JSON error shape.
//! - [`extract`]: `ApiJson`, `ApiQuery`.
//! - [`auth`]: `CurrentUser`, `Viewer`, `Member`, `Admin` extractors.
//! - [`api`]: one file per resource.
//! - [`ui`]: the server-rendered pages (HTML, not in the OpenAPI document).

pub mod api;
pub mod auth;
pub mod error;
pub mod extract;
pub mod path;
pub mod sse;
pub mod state;
pub mod ui;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
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
    let (router, doc) = utoipa_axum::router::OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(api::routes())
        .split_for_parts();
    router
        .merge(ui::routes())
        .fallback(fallback)
        .layer(axum::Extension(Arc::new(doc)))
        .layer(middleware::from_fn_with_state(state.clone(), count_requests))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn fallback() -> WebError {
    WebError::not_found("no such route")
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
