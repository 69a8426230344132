//! Registry webhooks. For now the admin's side only: `GET /api/hooks/registry/token` shows the
//! secret a registry must send as `?token=` (configured by `DOCKER_WATCHER_WEBHOOK_TOKEN`, or
//! generated once and kept in the store), so it can be pasted into the registry's settings.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::web::auth::Admin;
use crate::web::error::ErrorBody;
use crate::web::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(hooks_registry_token_get))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookToken {
    /// Append as `?token=` to `/api/hooks/registry` in the registry's notification settings.
    pub token: String,
}

/// The webhook token registries must send.
#[utoipa::path(
    get,
    path = "/api/hooks/registry/token",
    tag = "hooks",
    responses(
        (status = 200, body = WebhookToken, description = "the webhook token"),
        (status = 401, body = ErrorBody, description = "not logged in"),
        (status = 403, body = ErrorBody, description = "not an admin"),
    ),
    security(("token" = []), ("session" = [])),
)]
async fn hooks_registry_token_get(State(state): State<AppState>, _: Admin) -> Json<WebhookToken> {
    Json(WebhookToken {
        token: state.webhook_token.to_string(),
    })
}
