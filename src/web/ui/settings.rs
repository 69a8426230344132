//! Settings, `GET /settings`: every setting with its value; admins get them as one form, saved
//! all or nothing by the API's `PATCH /api/settings` handler (a bad value is named next to its
//! input and nothing changes).

use askama::Template;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value};

use super::form::{FormData, Forms, json_number, json_text};
use super::page::{Chrome, Flash, FlashMessage, Nav, PageTemplate, Ui, render, see_other_with};
use crate::domain::settings::Settings;
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
        _ => ("", "text", ""),
    }
}

fn shown(value: Option<Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s,
        Some(other) => other.to_string(),
    }
}

pub async fn settings_get(
    State(state): State<AppState>,
    Ui(viewer): Ui<Viewer>,
    flash: FlashMessage,
) -> Response {
    render_settings(&state, &viewer.0, flash, Forms::none(), StatusCode::OK)
}

fn render_settings(
    state: &AppState,
    current: &CurrentUser,
    flash: FlashMessage,
    forms: Forms,
    status: StatusCode,
) -> Response {
    let settings = state.settings.current();
    let page = SettingsPage {
        chrome: Chrome::new(current, "Settings", Nav::Settings, flash),
        forms,
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
pub async fn settings_post(State(state): State<AppState>, Ui(admin): Ui<Admin>, body: Bytes) -> Response {
    let form = FormData::parse(&body);
    let mut patch = Map::new();
    for key in Settings::KEYS {
        let value = match key {
            "stale_scan_interval" | "base_domain" => json_text(form.opt(key)),
            "default_poll_schedule" => Value::from(form.text(key)),
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
            render_settings(&state, &admin.0, FlashMessage(None), forms, err.status)
        }
    }
}
