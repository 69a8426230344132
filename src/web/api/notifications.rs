//! Notification channels (SPEC §3 "Notifications"): `GET/POST /api/notifications/channels`,
//! `GET/PATCH/DELETE /api/notifications/channels/{id}`, `POST …/{id}/test`, and the delivery
//! log `GET /api/notifications/deliveries?channel_id=&limit=`. Admins only: a channel can post
//! anywhere the server reaches, and its log quotes receivers' answers.
//!
//! Secrets (`secrets`: URLs with tokens, passwords, signing secrets) are write-only: answers
//! carry only `secret_keys` and a `target` that shows a URL's scheme and host and nothing
//! more. In a PATCH a secret set to `null` is removed and absent secrets are kept; `settings`
//! and `rule`, when given, replace the old ones whole.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::deployments::{in_range, positive_id, present};
use crate::domain::event::{EventKind, NewEvent, Severity, Source};
use crate::domain::notification::{
    Channel, ChannelKind, ChannelPatch, ChannelSecrets, ChannelSettings, Delivery, NewChannel,
    NotificationRule, parse_channel_name,
};
use crate::notify::TestOutcome;
use crate::web::auth::Admin;
use crate::web::error::{ErrorBody, FieldResult, WebError, WebResult};
use crate::web::extract::{ApiJson, ApiQuery};
use crate::web::path::IdPath;
use crate::web::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(channels_get, channels_post))
        .routes(routes!(channel_get, channel_patch, channel_delete))
        .routes(routes!(channel_test_post))
        .routes(routes!(deliveries_get))
}

/// Which events a channel forwards, as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuleResponse {
    /// `debug`, `info`, `warn` or `error`.
    #[schema(example = "warn")]
    pub min_severity: String,
    /// Sources (`deployer`, `stale`, …); empty: any.
    pub sources: Vec<String>,
    /// Projects; empty: any.
    pub project_ids: Vec<i64>,
    /// Event kinds (`deploy_failed`, `stale_found`, …); empty: any event, with a kind or not.
    pub kinds: Vec<String>,
}

impl From<&NotificationRule> for RuleResponse {
    fn from(rule: &NotificationRule) -> Self {
        Self {
            min_severity: rule.min_severity.to_string(),
            sources: rule.sources.iter().map(ToString::to_string).collect(),
            project_ids: rule.project_ids.clone(),
            kinds: rule.kinds.iter().map(ToString::to_string).collect(),
        }
    }
}

/// A channel as the API answers it; its secrets are never in it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChannelResponse {
    pub id: i64,
    pub name: String,
    /// `webhook`, `slack`, `discord`, `ntfy`, `gotify` or `email`.
    #[schema(example = "slack")]
    pub kind: String,
    pub enabled: bool,
    /// The kind's settings that are not secret.
    #[schema(value_type = Object)]
    pub settings: serde_json::Value,
    /// The names of the secrets that are set.
    pub secret_keys: Vec<String>,
    /// Where it delivers, as much as may be shown (`https://hooks.slack.com/…`).
    #[schema(example = "https://hooks.slack.com/…")]
    pub target: String,
    pub rule: RuleResponse,
    #[serde(with = "crate::domain::time_format")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    #[serde(with = "crate::domain::time_format")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: DateTime<Utc>,
}

impl ChannelResponse {
    async fn of(state: &AppState, channel: &Channel) -> Self {
        Self {
            id: channel.id,
            name: channel.name.clone(),
            kind: channel.kind.to_string(),
            enabled: channel.enabled,
            settings: channel.settings.to_json(),
            secret_keys: channel.secret_keys.clone(),
            target: state.notifier.target(channel).await,
            rule: RuleResponse::from(&channel.rule),
            created_at: channel.created_at,
            updated_at: channel.updated_at,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChannelListResponse {
    pub items: Vec<ChannelResponse>,
}

/// A rule as requests give it; absent lists mean "any", an absent severity `warn`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleRequest {
    #[schema(example = "warn")]
    pub min_severity: Option<String>,
    #[serde(default)]
    pub sources: Vec<String>,
    #[serde(default)]
    pub project_ids: Vec<i64>,
    #[serde(default)]
    #[schema(example = json!(["deploy_failed", "stale_found"]), value_type = Vec<crate::domain::event::EventKind>)]
    pub kinds: Vec<String>,
}

impl RuleRequest {
    pub(crate) fn parse(&self) -> WebResult<NotificationRule> {
        let min_severity = match present(self.min_severity.as_deref()) {
            Some(raw) => raw.parse::<Severity>().field("rule.min_severity")?,
            None => Severity::Warn,
        };
        let sources = self
            .sources
            .iter()
            .map(|s| s.trim().parse::<Source>())
            .collect::<Result<_, _>>()
            .field("rule.sources")?;
        let kinds = self
            .kinds
            .iter()
            .map(|k| k.trim().parse::<EventKind>())
            .collect::<Result<_, _>>()
            .field("rule.kinds")?;
        if let Some(bad) = self.project_ids.iter().find(|id| **id < 1) {
            return Err(WebError::validation(
                "rule.project_ids",
                format!("project ids are positive integers, not {bad}"),
            ));
        }
        Ok(NotificationRule {
            min_severity,
            sources,
            project_ids: self.project_ids.clone(),
            kinds,
        }
        .normalized())
    }
}

/// The body of `POST /api/notifications/channels`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelCreateRequest {
    /// 1 to 100 characters, unique.
    #[schema(example = "ops-slack")]
    pub name: String,
    #[schema(example = "slack")]
    pub kind: String,
    /// Default true.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// By kind — ntfy: `priority` (1–5), `tags`; gotify: `url`, `priority` (0–10); email:
    /// `smtp_host`, `smtp_port`, `tls` (`starttls`, `tls`, `none`), `from`, `to` [..],
    /// `username`, `ca_pem`. Webhook, Slack and Discord have none.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub settings: serde_json::Value,
    /// Write-only, by kind — webhook: `url`, `signing_secret`; slack, discord: `url`; ntfy:
    /// `url` (the topic), `token`; gotify: `token`; email: `password`.
    #[serde(default)]
    #[schema(value_type = Object, example = json!({"url": "https://hooks.slack.com/services/…"}))]
    pub secrets: BTreeMap<String, Option<String>>,
    /// Default: every event of severity `warn` or worse.
    #[serde(default)]
    pub rule: Option<RuleRequest>,
}

fn default_enabled() -> bool {
    true
}

/// The body of `PATCH /api/notifications/channels/{id}`; the kind cannot change.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelPatchRequest {
    pub name: Option<String>,
    pub enabled: Option<bool>,
    /// Replaces the settings whole.
    #[schema(value_type = Option<Object>)]
    pub settings: Option<serde_json::Value>,
    /// A value sets a secret, `null` removes it, absent ones are kept.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub secrets: BTreeMap<String, Option<String>>,
    /// Replaces the rule whole.
    pub rule: Option<RuleRequest>,
}

/// How "send test" went.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TestResponse {
    pub delivered: bool,
    /// The receiver's HTTP status, for HTTP channels that answered.
    #[schema(required = true)]
    pub http_status: Option<u16>,
    #[schema(required = true)]
    pub error: Option<String>,
    pub duration_ms: u64,
}

impl From<TestOutcome> for TestResponse {
    fn from(t: TestOutcome) -> Self {
        Self {
            delivered: t.delivered,
            http_status: t.http_status,
            error: t.error,
            duration_ms: t.duration_ms,
        }
    }
}

/// One delivery attempt.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryResponse {
    pub id: i64,
    pub channel_id: i64,
    #[serde(with = "crate::domain::time_format")]
    #[schema(value_type = String, format = DateTime)]
    pub at: DateTime<Utc>,
    /// `delivered`, `retrying` (failed, will be tried again) or `failed` (given up).
    #[schema(example = "delivered")]
    pub status: String,
    /// A "send test" attempt.
    pub test: bool,
    /// 1 for the first attempt of a message.
    pub attempt: u32,
    /// How many events the message carried (a coalesced burst counts them all).
    pub event_count: u32,
    /// The message's title.
    pub summary: String,
    #[schema(required = true)]
    pub http_status: Option<u16>,
    #[schema(required = true)]
    pub error: Option<String>,
    pub duration_ms: u64,
}

impl From<&Delivery> for DeliveryResponse {
    fn from(d: &Delivery) -> Self {
        Self {
            id: d.id,
            channel_id: d.channel_id,
            at: d.at,
            status: d.status.as_str().to_owned(),
            test: d.is_test,
            attempt: d.attempt,
            event_count: d.event_count,
            summary: d.summary.clone(),
            http_status: d.http_status,
            error: d.error.clone(),
            duration_ms: d.duration_ms,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryListResponse {
    pub items: Vec<DeliveryResponse>,
}

/// The query of `GET /api/notifications/deliveries`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveryListParams {
    /// Only this channel's attempts.
    #[param(value_type = Option<i64>, minimum = 1)]
    pub channel_id: Option<String>,
    /// How many, 1 to 500; 100 by default.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    pub limit: Option<String>,
}

/// Every notification channel, oldest first.
#[utoipa::path(
    get,
    path = "/api/notifications/channels",
    tag = "notifications",
    responses(
        (status = 200, body = ChannelListResponse),
        (status = 401, body = ErrorBody, description = "not authenticated"),
        (status = 403, body = ErrorBody, description = "needs the admin role"),
    ),
    security(("token" = []), ("session" = [])),
)]
async fn channels_get(_: Admin, State(state): State<AppState>) -> WebResult<Json<ChannelListResponse>> {
    let channels = state.store.list_channels().await?;
    let mut items = Vec::with_capacity(channels.len());
    for channel in &channels {
        items.push(ChannelResponse::of(&state, channel).await);
    }
    Ok(Json(ChannelListResponse { items }))
}

/// Creates a notification channel.
#[utoipa::path(
    post,
    path = "/api/notifications/channels",
    tag = "notifications",
    request_body = ChannelCreateRequest,
    responses(
        (status = 201, body = ChannelResponse),
        (status = 400, body = ErrorBody, description = "a field is invalid; `error.field` names it (`secrets.url`, `settings.smtp_host`, `rule.kinds`)"),
        (status = 401, body = ErrorBody, description = "not authenticated"),
        (status = 403, body = ErrorBody, description = "needs the admin role"),
        (status = 409, body = ErrorBody, description = "a channel has that name"),
        (status = 415, body = ErrorBody, description = "the body is not JSON"),
    ),
    security(("token" = []), ("session" = [])),
)]
pub(crate) async fn channels_post(
    user: Admin,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<ChannelCreateRequest>,
) -> WebResult<(StatusCode, Json<ChannelResponse>)> {
    let name = parse_channel_name(&body.name).field("name")?;
    let kind = body.kind.trim().parse::<ChannelKind>().field("kind")?;
    let settings = ChannelSettings::parse(kind, &body.settings)?;
    let secrets = ChannelSecrets::default().patched(kind, &body.secrets)?;
    let rule = body.rule.unwrap_or_default().parse()?;
    let new = NewChannel {
        name,
        enabled: body.enabled,
        settings,
        secrets,
        rule,
    };

    let channel = state.notifier.create_channel(&new).await?;
    state
        .bus
        .publish(
            NewEvent::info(
                Source::Api,
                format!("notification channel {} created", channel.name),
            )
            .recorded()
            .detail("actor", user.user().username.as_str())
            .detail("channel_id", channel.id)
            .detail("channel_kind", channel.kind.as_str()),
        )
        .await;
    Ok((
        StatusCode::CREATED,
        Json(ChannelResponse::of(&state, &channel).await),
    ))
}

/// One notification channel.
#[utoipa::path(
    get,
    path = "/api/notifications/channels/{id}",
    tag = "notifications",
    params(("id" = i64, Path, description = "the channel's id")),
    responses(
        (status = 200, body = ChannelResponse),
        (status = 400, body = ErrorBody, description = "the id is not an integer"),
        (status = 401, body = ErrorBody, description = "not authenticated"),
        (status = 403, body = ErrorBody, description = "needs the admin role"),
        (status = 404, body = ErrorBody, description = "no such channel"),
    ),
    security(("token" = []), ("session" = [])),
)]
async fn channel_get(
    _: Admin,
    IdPath(id): IdPath,
    State(state): State<AppState>,
) -> WebResult<Json<ChannelResponse>> {
    let channel = state
        .store
        .get_channel(id)
        .await
        .map_err(|e| WebError::from(crate::notify::NotifyError::from_store(e, id)))?;
    Ok(Json(ChannelResponse::of(&state, &channel).await))
}

/// Changes a notification channel.
///
/// Absent fields are kept; `settings` and `rule` replace the old ones whole; a secret set to
/// `null` is removed.
#[utoipa::path(
    patch,
    path = "/api/notifications/channels/{id}",
    tag = "notifications",
    params(("id" = i64, Path, description = "the channel's id")),
    request_body = ChannelPatchRequest,
    responses(
        (status = 200, body = ChannelResponse),
        (status = 400, body = ErrorBody, description = "a field is invalid; `error.field` names it"),
        (status = 401, body = ErrorBody, description = "not authenticated"),
        (status = 403, body = ErrorBody, description = "needs the admin role"),
        (status = 404, body = ErrorBody, description = "no such channel"),
        (status = 409, body = ErrorBody, description = "a channel has that name"),
        (status = 415, body = ErrorBody, description = "the body is not JSON"),
    ),
    security(("token" = []), ("session" = [])),
)]
pub(crate) async fn channel_patch(
    user: Admin,
    IdPath(id): IdPath,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<ChannelPatchRequest>,
) -> WebResult<Json<ChannelResponse>> {
    let patch = ChannelPatch {
        name: body
            .name
            .map(|raw| parse_channel_name(&raw))
            .transpose()
            .field("name")?,
        enabled: body.enabled,
        settings: body.settings,
        secrets: body.secrets,
        rule: body.rule.map(|r| r.parse()).transpose()?,
    };
    let changed: Vec<&str> = [
        ("name", patch.name.is_some()),
        ("enabled", patch.enabled.is_some()),
        ("settings", patch.settings.is_some()),
        ("secrets", !patch.secrets.is_empty()),
        ("rule", patch.rule.is_some()),
    ]
    .into_iter()
    .filter_map(|(field, given)| given.then_some(field))
    .collect();

    let channel = state.notifier.update_channel(id, &patch).await?;
    state
        .bus
        .publish(
            NewEvent::info(
                Source::Api,
                format!("notification channel {} updated", channel.name),
            )
            .recorded()
            .detail("actor", user.user().username.as_str())
            .detail("channel_id", channel.id)
            .detail("fields", changed),
        )
        .await;
    Ok(Json(ChannelResponse::of(&state, &channel).await))
}

/// Deletes a notification channel, with its queued messages and its delivery log.
#[utoipa::path(
    delete,
    path = "/api/notifications/channels/{id}",
    tag = "notifications",
    params(("id" = i64, Path, description = "the channel's id")),
    responses(
        (status = 204, description = "deleted"),
        (status = 400, body = ErrorBody, description = "the id is not an integer"),
        (status = 401, body = ErrorBody, description = "not authenticated"),
        (status = 403, body = ErrorBody, description = "needs the admin role"),
        (status = 404, body = ErrorBody, description = "no such channel"),
    ),
    security(("token" = []), ("session" = [])),
)]
pub(crate) async fn channel_delete(
    user: Admin,
    IdPath(id): IdPath,
    State(state): State<AppState>,
) -> WebResult<StatusCode> {
    let channel = state
        .store
        .get_channel(id)
        .await
        .map_err(|e| WebError::from(crate::notify::NotifyError::from_store(e, id)))?;
    state.notifier.delete_channel(id).await?;
    state
        .bus
        .publish(
            NewEvent::info(
                Source::Api,
                format!("notification channel {} deleted", channel.name),
            )
            .recorded()
            .detail("actor", user.user().username.as_str())
            .detail("channel_id", id),
        )
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// Sends a test message to the channel now and says how it went.
///
/// The attempt is in the delivery log too; a disabled channel can be tested.
#[utoipa::path(
    post,
    path = "/api/notifications/channels/{id}/test",
    tag = "notifications",
    params(("id" = i64, Path, description = "the channel's id")),
    responses(
        (status = 200, body = TestResponse, description = "attempted: `delivered` says whether it arrived"),
        (status = 400, body = ErrorBody, description = "the id is not an integer"),
        (status = 401, body = ErrorBody, description = "not authenticated"),
        (status = 403, body = ErrorBody, description = "needs the admin role"),
        (status = 404, body = ErrorBody, description = "no such channel"),
    ),
    security(("token" = []), ("session" = [])),
)]
pub(crate) async fn channel_test_post(
    _: Admin,
    IdPath(id): IdPath,
    State(state): State<AppState>,
) -> WebResult<Json<TestResponse>> {
    Ok(Json(state.notifier.send_test(id).await?.into()))
}

/// The delivery log, newest first: every attempt, the last 100 per channel.
#[utoipa::path(
    get,
    path = "/api/notifications/deliveries",
    tag = "notifications",
    params(DeliveryListParams),
    responses(
        (status = 200, body = DeliveryListResponse),
        (status = 400, body = ErrorBody, description = "a bad parameter, named in `error.field`"),
        (status = 401, body = ErrorBody, description = "not authenticated"),
        (status = 403, body = ErrorBody, description = "needs the admin role"),
    ),
    security(("token" = []), ("session" = [])),
)]
async fn deliveries_get(
    _: Admin,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<DeliveryListParams>,
) -> WebResult<Json<DeliveryListResponse>> {
    let channel_id = present(params.channel_id.as_deref())
        .map(|raw| positive_id("channel_id", raw))
        .transpose()?;
    let limit = present(params.limit.as_deref())
        .map(|raw| in_range("limit", raw, 1, 500))
        .transpose()?
        .unwrap_or(100);
    let deliveries = state.store.list_deliveries(channel_id, limit).await?;
    Ok(Json(DeliveryListResponse {
        items: deliveries.iter().map(DeliveryResponse::from).collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_request_names_the_field_it_cannot_parse() {
        let bad = |rule: RuleRequest| rule.parse().unwrap_err().field;
        assert_eq!(
            bad(RuleRequest {
                min_severity: Some("fatal".into()),
                ..Default::default()
            }),
            Some("rule.min_severity".into())
        );
        assert_eq!(
            bad(RuleRequest {
                kinds: vec!["deploy_exploded".into()],
                ..Default::default()
            }),
            Some("rule.kinds".into())
        );
        assert_eq!(
            bad(RuleRequest {
                project_ids: vec![0],
                ..Default::default()
            }),
            Some("rule.project_ids".into())
        );
        let rule = RuleRequest {
            kinds: vec!["stale_found".into(), "deploy_failed".into(), "stale_found".into()],
            ..Default::default()
        }
        .parse()
        .unwrap();
        assert_eq!(rule.min_severity, Severity::Warn);
        assert_eq!(rule.kinds, vec![EventKind::DeployFailed, EventKind::StaleFound]);
    }
}
