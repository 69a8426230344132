//! Standalone proxies: `GET/POST /api/proxies`, `GET/PATCH/DELETE /api/proxies/{id}` (SPEC §5).
//! A standalone proxy routes a hostname to any `http`/`https` upstream, not tied to a container.
//! Reading needs a viewer; creating, updating and deleting an admin, because a proxy can point
//! the listener at any address the server reaches. Hostnames are unique across stages,
//! instances and proxies, which the store enforces (409 `hostname`). Every change is recorded
//! as an `info` event (source `api`) naming the actor.
//!
//! The route table the reverse proxy serves is rebuilt here, after each successful create,
//! update and delete, so a change is live without waiting for a reconcile.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::projects::{double_option, not_found_as, not_null};
use crate::domain::event::{NewEvent, Source};
use crate::domain::hostname::Hostname;
use crate::domain::proxy::{NewProxy, ProxyPatch, StandaloneProxy, TargetUrl, parse_proxy_name};
use crate::web::auth::{Admin, Viewer};
use crate::web::error::{ErrorBody, FieldResult, WebResult};
use crate::web::extract::ApiJson;
use crate::web::path::IdPath;
use crate::web::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(proxies_get, proxies_post))
        .routes(routes!(proxy_get, proxy_patch, proxy_delete))
}

/// A standalone proxy as the API answers it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProxyResponse {
    pub id: i64,
    pub name: String,
    #[schema(example = "docs.example.com")]
    pub hostname: String,
    #[schema(example = "http://127.0.0.1:9000/")]
    pub target_url: String,
    /// Send the client's `Host` upstream instead of the target's.
    pub preserve_host: bool,
    pub enabled: bool,
    #[serde(with = "crate::domain::time_format")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    #[serde(with = "crate::domain::time_format")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: DateTime<Utc>,
}

impl From<&StandaloneProxy> for ProxyResponse {
    fn from(proxy: &StandaloneProxy) -> Self {
        Self {
            id: proxy.id,
            name: proxy.name.clone(),
            hostname: proxy.hostname.to_string(),
            target_url: proxy.target_url.to_string(),
            preserve_host: proxy.preserve_host,
            enabled: proxy.enabled,
            created_at: proxy.created_at,
            updated_at: proxy.updated_at,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProxyListResponse {
    pub items: Vec<ProxyResponse>,
}

/// The body of `POST /api/proxies`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProxyCreateRequest {
    /// 1 to 100 characters, for people; no control characters.
    #[schema(
        example = "docs",
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*[^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u001F\\u007F-\\u009F]*$"
    )]
    pub name: String,
    /// An exact RFC 1123 hostname, compared case-insensitively.
    #[schema(example = "docs.example.com", min_length = 1)]
    pub hostname: String,
    /// An `http://` or `https://` URL with a host.
    #[schema(example = "http://127.0.0.1:9000", pattern = "^[Hh][Tt][Tt][Pp][Ss]?://")]
    pub target_url: String,
    /// Default false.
    #[serde(default)]
    pub preserve_host: bool,
    /// Default true.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
}

fn default_enabled() -> bool {
    true
}

/// The body of `PATCH /api/proxies/{id}`: an absent field is left as it is. No field is
/// nullable.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProxyPatchRequest {
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = String, min_length = 1, max_length = 100, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*[^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    pub name: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = String, min_length = 1)]
    pub hostname: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = String, pattern = "^[Hh][Tt][Tt][Pp][Ss]?://")]
    pub target_url: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = bool)]
    pub preserve_host: Option<Option<bool>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = bool)]
    pub enabled: Option<Option<bool>>,
}

impl ProxyPatchRequest {
    /// The names of the fields this request changes, for the event log.
    fn changed_fields(&self) -> Vec<&'static str> {
        [
            ("name", self.name.is_some()),
            ("hostname", self.hostname.is_some()),
            ("target_url", self.target_url.is_some()),
            ("preserve_host", self.preserve_host.is_some()),
            ("enabled", self.enabled.is_some()),
        ]
        .into_iter()
        .filter_map(|(field, given)| given.then_some(field))
        .collect()
    }
}

/// Every standalone proxy, oldest first.
#[utoipa::path(
    get,
    path = "/api/proxies",
    tag = "proxies",
    responses(
        (status = 200, body = ProxyListResponse),
        (status = 401, body = ErrorBody, description = "not authenticated"),
    ),
    security(("token" = []), ("session" = [])),
)]
async fn proxies_get(_: Viewer, State(state): State<AppState>) -> WebResult<Json<ProxyListResponse>> {
    let proxies = state.store.list_proxies().await?;
    Ok(Json(ProxyListResponse {
        items: proxies.iter().map(ProxyResponse::from).collect(),
    }))
}

/// Creates a standalone proxy.
#[utoipa::path(
    post,
    path = "/api/proxies",
    tag = "proxies",
    request_body = ProxyCreateRequest,
    responses(
        (status = 201, body = ProxyResponse),
        (status = 400, body = ErrorBody, description = "a field is invalid; `error.field` names it"),
        (status = 401, body = ErrorBody, description = "not authenticated"),
        (status = 403, body = ErrorBody, description = "needs the admin role"),
        (status = 409, body = ErrorBody, description = "the hostname is routed elsewhere"),
        (status = 415, body = ErrorBody, description = "the body is not JSON"),
    ),
    security(("token" = []), ("session" = [])),
)]
pub(crate) async fn proxies_post(
    user: Admin,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<ProxyCreateRequest>,
) -> WebResult<(StatusCode, Json<ProxyResponse>)> {
    let new = NewProxy {
        name: parse_proxy_name(&body.name).field("name")?,
        hostname: Hostname::parse(&body.hostname).field("hostname")?,
        target_url: TargetUrl::parse(&body.target_url).field("target_url")?,
        preserve_host: body.preserve_host,
        enabled: body.enabled,
    };

    let proxy = state.store.insert_proxy(&new, state.clock.now()).await?;
    state.refresh_routes().await;
    state
        .bus
        .publish(
            NewEvent::info(Source::Api, format!("proxy {} created", proxy.hostname))
                .recorded()
                .detail("actor", user.user().username.as_str())
                .detail("proxy_id", proxy.id)
                .detail("target_url", proxy.target_url.to_string()),
        )
        .await;
    Ok((StatusCode::CREATED, Json(ProxyResponse::from(&proxy))))
}

/// One standalone proxy.
#[utoipa::path(
    get,
    path = "/api/proxies/{id}",
    tag = "proxies",
    params(("id" = i64, Path, description = "the proxy's id")),
    responses(
        (status = 200, body = ProxyResponse),
        (status = 400, body = ErrorBody, description = "the id is not an integer"),
        (status = 401, body = ErrorBody, description = "not authenticated"),
        (status = 404, body = ErrorBody, description = "no such proxy"),
    ),
    security(("token" = []), ("session" = [])),
)]
async fn proxy_get(
    _: Viewer,
    IdPath(id): IdPath,
    State(state): State<AppState>,
) -> WebResult<Json<ProxyResponse>> {
    let proxy = state
        .store
        .get_proxy(id)
        .await
        .map_err(not_found_as(format!("no proxy with id {id}")))?;
    Ok(Json(ProxyResponse::from(&proxy)))
}

/// Updates a standalone proxy.
///
/// Absent fields are left as they are; none is nullable.
#[utoipa::path(
    patch,
    path = "/api/proxies/{id}",
    tag = "proxies",
    params(("id" = i64, Path, description = "the proxy's id")),
    request_body = ProxyPatchRequest,
    responses(
        (status = 200, body = ProxyResponse),
        (status = 400, body = ErrorBody, description = "a field is invalid; `error.field` names it"),
        (status = 401, body = ErrorBody, description = "not authenticated"),
        (status = 403, body = ErrorBody, description = "needs the admin role"),
        (status = 404, body = ErrorBody, description = "no such proxy"),
        (status = 409, body = ErrorBody, description = "the hostname is routed elsewhere"),
        (status = 415, body = ErrorBody, description = "the body is not JSON"),
    ),
    security(("token" = []), ("session" = [])),
)]
pub(crate) async fn proxy_patch(
    user: Admin,
    IdPath(id): IdPath,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<ProxyPatchRequest>,
) -> WebResult<Json<ProxyResponse>> {
    let changed = body.changed_fields();
    let patch = ProxyPatch {
        name: not_null("name", body.name)?
            .map(|raw| parse_proxy_name(&raw))
            .transpose()
            .field("name")?,
        hostname: not_null("hostname", body.hostname)?
            .map(|raw| Hostname::parse(&raw))
            .transpose()
            .field("hostname")?,
        target_url: not_null("target_url", body.target_url)?
            .map(|raw| TargetUrl::parse(&raw))
            .transpose()
            .field("target_url")?,
        preserve_host: not_null("preserve_host", body.preserve_host)?,
        enabled: not_null("enabled", body.enabled)?,
    };

    let proxy = state
        .store
        .update_proxy(id, &patch, state.clock.now())
        .await
        .map_err(not_found_as(format!("no proxy with id {id}")))?;
    state.refresh_routes().await;
    state
        .bus
        .publish(
            NewEvent::info(Source::Api, format!("proxy {} updated", proxy.hostname))
                .recorded()
                .detail("actor", user.user().username.as_str())
                .detail("proxy_id", proxy.id)
                .detail("fields", changed),
        )
        .await;
    Ok(Json(ProxyResponse::from(&proxy)))
}

/// Deletes a standalone proxy.
///
/// Its hostname is free again.
#[utoipa::path(
    delete,
    path = "/api/proxies/{id}",
    tag = "proxies",
    params(("id" = i64, Path, description = "the proxy's id")),
    responses(
        (status = 204, description = "deleted"),
        (status = 400, body = ErrorBody, description = "the id is not an integer"),
        (status = 401, body = ErrorBody, description = "not authenticated"),
        (status = 403, body = ErrorBody, description = "needs the admin role"),
        (status = 404, body = ErrorBody, description = "no such proxy"),
    ),
    security(("token" = []), ("session" = [])),
)]
pub(crate) async fn proxy_delete(
    user: Admin,
    IdPath(id): IdPath,
    State(state): State<AppState>,
) -> WebResult<StatusCode> {
    let not_found = || not_found_as(format!("no proxy with id {id}"));
    let proxy = state.store.get_proxy(id).await.map_err(not_found())?;
    state.store.delete_proxy(id).await.map_err(not_found())?;
    state.refresh_routes().await;
    state
        .bus
        .publish(
            NewEvent::info(Source::Api, format!("proxy {} deleted", proxy.hostname))
                .recorded()
                .detail("actor", user.user().username.as_str())
                .detail("proxy_id", proxy.id),
        )
        .await;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_create_request_defaults_to_enabled_without_preserving_the_host() {
        let body: ProxyCreateRequest = serde_json::from_str(
            r#"{"name":"docs","hostname":"docs.example.com","target_url":"http://127.0.0.1:9000"}"#,
        )
        .unwrap();
        assert!(body.enabled);
        assert!(!body.preserve_host);
    }

    #[test]
    fn a_patch_lists_only_the_fields_it_changes() {
        let body: ProxyPatchRequest = serde_json::from_str(r#"{"enabled":false}"#).unwrap();
        assert_eq!(body.changed_fields(), vec!["enabled"]);
    }
}
