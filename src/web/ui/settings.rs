//! Settings, `GET /settings`: every setting with its value; admins get them as one form, saved
//! all or nothing by the API's `PATCH /api/settings` handler (a bad value is named next to its
//! input and nothing changes). Admins also get the registry webhook ("deploy on push"): its URL
//! with the token, a `notifications:` block to paste into a distribution registry's config, how
//! to point Harbor, GitLab, GHCR (a CI step) and Docker Hub at it, and a button that rotates the
//! token (`POST /settings/webhook/rotate`, confirmed).

use askama::Template;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value};

use super::form::{FormData, Forms, json_number, json_text};
use super::page::{Chrome, Flash, FlashMessage, Nav, PageTemplate, Ui, render, see_other_with};
use crate::domain::settings::Settings;
use crate::domain::user::Role;
use crate::web::api;
use crate::web::auth::{Admin, CurrentUser, Viewer};
use crate::web::extract::ApiJson;
use crate::web::state::AppState;

#[derive(Template)]
#[template(path = "settings.html")]
pub struct SettingsPage {
    pub chrome: Chrome,
    pub forms: Forms,
    pub settings: Vec<SettingRow>,
    /// The registry webhook, for admins.
    pub webhook: Option<WebhookPanel>,
}

/// What the settings page shows admins about the registry webhook.
pub struct WebhookPanel {
    pub url: String,
    /// The URL without its token, for prose.
    pub endpoint: String,
    pub configured_by_env: bool,
    /// A distribution registry's `notifications:` configuration, ready to paste.
    pub distribution: String,
    /// A CI step that calls the webhook after a push (for registries that cannot, like GHCR).
    pub ci_step: String,
}

impl WebhookPanel {
    fn new(state: &AppState, headers: &HeaderMap) -> Self {
        let token = api::hooks::WebhookToken::of(state, headers);
        let endpoint = token.url.split('?').next().unwrap_or_default().to_owned();
        let distribution = format!(
            "notifications:\n  events:\n    includereferences: true\n  endpoints:\n    - name: docker-watcher\n      url: {}\n      timeout: 5s\n      threshold: 5\n      backoff: 10s\n      ignoredmediatypes:\n        - application/octet-stream\n",
            token.url
        );
        let ci_step = format!(
            "- name: Tell docker-watcher\n  run: |\n    curl -fsS -X POST '{endpoint}?token=${{{{ secrets.DOCKER_WATCHER_WEBHOOK_TOKEN }}}}' \\\n      -H 'content-type: application/json' \\\n      -d '{{\"events\":[{{\"action\":\"push\",\"target\":{{\"repository\":\"${{{{ github.repository }}}}\",\"tag\":\"${{{{ github.ref_name }}}}\"}},\"request\":{{\"host\":\"ghcr.io\"}}}}]}}'\n"
        );
        Self {
            url: token.url,
            endpoint,
            configured_by_env: token.configured_by_env,
            distribution,
            ci_step,
        }
    }
}

impl PageTemplate for SettingsPage {
    fn chrome(&self) -> &Chrome {
        &self.chrome
    }
}

pub struct SettingRow {
    pub key: &'static str,
    pub label: &'static str,
    pub value: String,
    /// The input type.
    pub kind: &'static str,
    pub hint: &'static str,
}

/// How each setting is shown: label, input type, hint.
fn describe(key: &str) -> (&'static str, &'static str, &'static str) {
    match key {
        "stale_threshold_days" => (
            "Stale threshold (days)",
            "number",
            "An instance not running for longer than this is stale. 1 to 3650.",
        ),
        "stale_scan_interval" => (
            "Stale scan interval",
            "text",
            "Like 30m or 6h; blank: derived, max(1h, threshold / 7).",
        ),
        "default_poll_schedule" => (
            "Default poll schedule",
            "text",
            "For stages without their own: cron (*/5 * * * *) or @every 5m.",
        ),
        "event_retention_days" => (
            "Event retention (days)",
            "number",
            "Older events are pruned daily. 1 to 3650.",
        ),
        "base_domain" => (
            "Base domain",
            "text",
            "Stages without a hostname route {stage}.{project}.{base_domain}; blank: none.",
        ),
        "deploy_health_timeout_seconds" => (
            "Deploy health timeout (seconds)",
            "number",
            "How long a deploy's health gate waits. 1 to 3600.",
        ),
        "proxy_hold_seconds" => (
            "Proxy hold (seconds)",
            "number",
            "How long a request to a stop-first stage waits while its instance is replaced; then 503. 1 to 300.",
        ),
        "allowed_bind_paths" => (
            "Allowed bind paths",
            "text",
            "Host directories stages may bind-mount, separated by commas; blank: none. Never / nor the Docker socket.",
        ),
        _ => ("", "text", ""),
    }
}

fn shown(value: Option<Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s,
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(", "),
        Some(other) => other.to_string(),
    }
}

pub async fn settings_get(
    State(state): State<AppState>,
    Ui(viewer): Ui<Viewer>,
    headers: HeaderMap,
    flash: FlashMessage,
) -> Response {
    render_settings(&state, &viewer.0, &headers, flash, Forms::none(), StatusCode::OK)
}

fn render_settings(
    state: &AppState,
    current: &CurrentUser,
    headers: &HeaderMap,
    flash: FlashMessage,
    forms: Forms,
    status: StatusCode,
) -> Response {
    let settings = state.settings.current();
    let page = SettingsPage {
        chrome: Chrome::new(current, "Settings", Nav::Settings, flash).engine(state),
        forms,
        webhook: (current.user.role >= Role::Admin).then(|| WebhookPanel::new(state, headers)),
        settings: Settings::KEYS
            .iter()
            .map(|key| {
                let (label, kind, hint) = describe(key);
                SettingRow {
                    key,
                    label,
                    value: shown(settings.get(key)),
                    kind,
                    hint,
                }
            })
            .collect(),
    };
    render(status, &page)
}

/// `POST /settings`: saves every setting of the form.
pub async fn settings_post(
    State(state): State<AppState>,
    Ui(admin): Ui<Admin>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = FormData::parse(&body);
    let mut patch = Map::new();
    for key in Settings::KEYS {
        let value = match key {
            "stale_scan_interval" | "base_domain" => json_text(form.opt(key)),
            "default_poll_schedule" => Value::from(form.text(key)),
            "allowed_bind_paths" => Value::from(
                form.text(key)
                    .split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .collect::<Vec<_>>(),
            ),
            _ => json_number(&form.text(key)),
        };
        patch.insert(key.to_owned(), value);
    }
    match api::settings::settings_patch(admin.clone(), State(state.clone()), ApiJson(Value::Object(patch)))
        .await
    {
        Ok(Json(_)) => see_other_with("/settings", Flash::notice("Settings saved.")),
        Err(err) => {
            let forms = Forms::failed("settings", &form, &err, &Settings::KEYS);
            render_settings(&state, &admin.0, &headers, FlashMessage(None), forms, err.status)
        }
    }
}

/// `POST /settings/webhook/rotate` (confirmed): replaces the webhook token.
pub async fn webhook_rotate_post(
    State(state): State<AppState>,
    Ui(admin): Ui<Admin>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !FormData::parse(&body).confirmed() {
        return super::stages::confirmation_page(
            &admin.0,
            "Rotate the webhook token?",
            "/settings/webhook/rotate",
            "The current token stops working at once: every registry that calls the webhook needs the new URL.",
            "Rotate token",
            "/settings#webhook",
        );
    }
    match api::hooks::hooks_registry_token_rotate_post(State(state.clone()), admin, headers).await {
        Ok(_) => see_other_with(
            "/settings#webhook",
            Flash::notice("Webhook token rotated: give the registries the new URL below."),
        ),
        Err(err) => see_other_with("/settings#webhook", Flash::error(err.message)),
    }
}
