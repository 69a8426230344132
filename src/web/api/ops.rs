//! Operations endpoints: liveness (`/healthz`), readiness of the store and the Docker engine
//! (`/readyz`), Prometheus metrics (`/metrics`) and the OpenAPI document (`/api/openapi.json`).
//! None needs authentication: orchestrators and scrapers call them.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::web::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz_get))
        .routes(routes!(readyz_get))
        .routes(routes!(metrics_get))
        .routes(routes!(openapi_get))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`, `ready` or `unavailable`.
    pub status: &'static str,
    pub version: &'static str,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, body = Health)))]
async fn healthz_get() -> Json<Health> {
    Json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
    })
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Readiness {
    pub status: &'static str,
    /// One entry per dependency: `ok` or the reason it failed.
    pub checks: ReadinessChecks,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReadinessChecks {
    pub store: String,
    pub docker: String,
}

/// Readiness: the store answers a query and the Docker engine answers a ping.
#[utoipa::path(get, path = "/readyz", tag = "ops", responses(
    (status = 200, body = Readiness, description = "store and Docker engine answer"),
    (status = 503, body = Readiness, description = "a dependency does not answer"),
))]
async fn readyz_get(State(state): State<AppState>) -> impl IntoResponse {
    let timeout = Duration::from_secs(2);
    let (store, docker) = tokio::join!(
        tokio::time::timeout(timeout, state.store.ping()),
        state.docker.ping(timeout)
    );
    let store = match store {
        Ok(Ok(())) => "ok".to_owned(),
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no answer within {timeout:?}"),
    };
    let docker = match docker {
        Ok(()) => "ok".to_owned(),
        Err(e) => e.to_string(),
    };
    let ready = store == "ok" && docker == "ok";
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Readiness {
        status: if ready { "ready" } else { "unavailable" },
        checks: ReadinessChecks { store, docker },
    };
    (status, Json(body))
}

/// The content type of `/metrics` (the document names it too; the ops test checks they agree).
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Prometheus metrics in the OpenMetrics text format.
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String)))]
async fn metrics_get(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, OPENMETRICS)], state.metrics.encode())
}

/// The OpenAPI document of every route.
#[utoipa::path(get, path = "/api/openapi.json", tag = "ops", responses((status = 200, content_type = "application/json", body = Object)))]
async fn openapi_get(Extension(doc): Extension<Arc<utoipa::openapi::OpenApi>>) -> impl IntoResponse {
    Json(doc.as_ref().clone())
}
