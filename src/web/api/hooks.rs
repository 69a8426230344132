//! Registry webhooks (SPEC §3 "Webhooks", §4, §5).
//!
//! `POST /api/hooks/registry?token=…` is how a registry says "a tag was pushed": it takes no user
//! credentials but the installation's webhook token, compared in constant time (401 when missing
//! or wrong, before the body is looked at). The body is a CNCF distribution notification
//! envelope (`application/vnd.docker.distribution.events.v1+json`, as the distribution registry
//! sends it), a Docker Hub push payload or a Harbor webhook payload; whatever its content
//! type, it is read as JSON ([`crate::poll::webhook`]). The pushes are matched to projects by repository (and registry
//! host when the payload names it), each matching project is polled at once in the background,
//! and the answer is `202 {"matched_projects": [ids]}` without waiting for the polls or deploys.
//! A malformed payload is a 400 naming the field; a payload that matches nothing is a 202 with an
//! empty list, since registries notify about every repository.
//!
//! `GET /api/hooks/registry/token` shows admins the token to paste into the registry's settings
//! (configured by `DOCKER_WATCHER_WEBHOOK_TOKEN`, or generated once and kept in the store) with
//! the whole URL, as this request reached the server; `POST /api/hooks/registry/token/rotate`
//! replaces a generated token (the old one stops working at once; a configured one is the
//! operator's to change: 409).

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::constant_time_eq;
use crate::auth::webhook_token::RotateError;
use crate::domain::event::{NewEvent, Source};
use crate::poll::webhook::parse_payload;
use crate::web::auth::Admin;
use crate::web::error::{ErrorBody, WebError, WebResult};
use crate::web::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(hooks_registry_token_get))
        .routes(routes!(hooks_registry_token_rotate_post))
        .routes(routes!(hooks_registry_post))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookToken {
    /// Append as `?token=` to `/api/hooks/registry` in the registry's notification settings.
    pub token: String,
    /// The whole webhook URL with the token, as this request reached the server (behind a
    /// proxy, `X-Forwarded-Proto` and `X-Forwarded-Host` are taken into account).
    #[schema(example = "https://dw.example.com/api/hooks/registry?token=…")]
    pub url: String,
    /// Whether `DOCKER_WATCHER_WEBHOOK_TOKEN` sets it (then it cannot be rotated here).
    pub configured_by_env: bool,
}

impl WebhookToken {
    pub(crate) fn of(state: &AppState, headers: &HeaderMap) -> Self {
        let token = state.webhook_token.get();
        Self {
            url: webhook_url(headers, &token),
            token: token.to_string(),
            configured_by_env: state.webhook_token.is_configured(),
        }
    }
}

/// The webhook URL as the caller reached this server.
pub(crate) fn webhook_url(headers: &HeaderMap, token: &str) -> String {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let scheme = match header("x-forwarded-proto") {
        Some("https") => "https",
        _ => "http",
    };
    let host = header("x-forwarded-host")
        .or_else(|| header("host"))
        .filter(|h| {
            h.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c))
        })
        .unwrap_or("127.0.0.1:8080");
    let token: String = form_urlencoded::byte_serialize(token.as_bytes()).collect();
    format!("{scheme}://{host}/api/hooks/registry?token={token}")
}

/// The answer to a webhook: which projects are being polled.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookAccepted {
    /// The ids of the projects whose repository the pushes went to; each is polled now.
    pub matched_projects: Vec<i64>,
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
async fn hooks_registry_token_get(
    State(state): State<AppState>,
    _: Admin,
    headers: HeaderMap,
) -> Json<WebhookToken> {
    Json(WebhookToken::of(&state, &headers))
}

/// Replaces the webhook token with a new one.
///
/// The old token stops working at once: update the registries that call the webhook.
#[utoipa::path(
    post,
    path = "/api/hooks/registry/token/rotate",
    tag = "hooks",
    responses(
        (status = 200, body = WebhookToken, description = "the new token"),
        (status = 401, body = ErrorBody, description = "not logged in"),
        (status = 403, body = ErrorBody, description = "not an admin"),
        (status = 409, body = ErrorBody, description = "the token is set by DOCKER_WATCHER_WEBHOOK_TOKEN"),
    ),
    security(("token" = []), ("session" = [])),
)]
pub(crate) async fn hooks_registry_token_rotate_post(
    State(state): State<AppState>,
    user: Admin,
    headers: HeaderMap,
) -> WebResult<Json<WebhookToken>> {
    match state.webhook_token.rotate().await {
        Ok(_) => {}
        Err(RotateError::Configured) => {
            return Err(WebError::conflict(None, RotateError::Configured.to_string()));
        }
        Err(RotateError::Store(e)) => return Err(e.into()),
    }
    state
        .bus
        .publish(
            NewEvent::warn(
                Source::Auth,
                "the registry webhook token was rotated; registries must use the new one",
            )
            .detail("actor", user.user().username.as_str()),
        )
        .await;
    Ok(Json(WebhookToken::of(&state, &headers)))
}

/// Receives a registry's push notification.
///
/// Accepts CNCF distribution notification envelopes (`{"events": [{"action": "push",
/// "target": {"repository", "tag", …}, "request": {"host"}}]}`; pulls and events without a tag
/// are ignored) and Docker Hub push payloads (`{"push_data": {"tag"}, "repository":
/// {"repo_name"}}`) and Harbor payloads (`{"type": "PUSH_ARTIFACT", "event_data": {"resources":
/// [{"tag", "digest", "resource_url"}], "repository": {"repo_full_name"}}}`; other types are
/// ignored). Every project whose repository was pushed to is polled now, in the
/// background; deploys it leads to have the trigger `webhook`.
#[utoipa::path(
    post,
    path = "/api/hooks/registry",
    tag = "hooks",
    params(("token" = String, Query, description = "the webhook token (`GET /api/hooks/registry/token`)")),
    request_body(
        description = "a distribution notification envelope, a Docker Hub push payload or a Harbor payload",
        content(
            (serde_json::Value = "application/vnd.docker.distribution.events.v1+json"),
            (serde_json::Value = "application/json"),
        ),
    ),
    responses(
        (status = 202, body = WebhookAccepted, description = "the matching projects are being polled"),
        (status = 400, body = ErrorBody, description = "the payload is malformed; `error.field` names what"),
        (status = 401, body = ErrorBody, description = "the token is missing or wrong"),
        (status = 413, body = ErrorBody, description = "the body is larger than 1 MiB"),
    ),
    security(()),
)]
async fn hooks_registry_post(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> WebResult<(StatusCode, Json<WebhookAccepted>)> {
    let token = query.as_deref().and_then(|query| {
        form_urlencoded::parse(query.as_bytes())
            .find(|(key, _)| key == "token")
            .map(|(_, value)| value.into_owned())
    });
    if !token.is_some_and(|token| constant_time_eq(&token, &state.webhook_token.get())) {
        return Err(WebError::unauthorized(
            "missing or wrong webhook token: append ?token=… as shown by GET /api/hooks/registry/token",
        ));
    }
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            WebError {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                ..WebError::bad_request("the request body is larger than 1 MiB")
            }
        } else {
            WebError::bad_request(format!("could not read the request body: {rejection}"))
        }
    })?;
    let pushes = parse_payload(&body).map_err(|e| WebError::validation(e.field, e.message))?;
    let matched = state
        .poller
        .match_pushes(&pushes)
        .await
        .map_err(WebError::internal)?;
    let matched_projects: Vec<i64> = matched.iter().map(|(id, _)| *id).collect();
    for push in &pushes {
        tracing::info!(
            registry = push.registry.as_deref().unwrap_or("-"),
            repository = %push.repository,
            tag = %push.tag,
            projects = ?matched_projects,
            "registry webhook: push"
        );
    }
    for (project_id, pushes) in matched {
        state.poller.poll_project_in_background(project_id, pushes);
    }
    Ok((StatusCode::ACCEPTED, Json(WebhookAccepted { matched_projects })))
}
