//! Notifications, `GET /notifications` (admins): the channels with where they deliver, what
//! they forward, how many messages wait and how the last attempt went; forms to add, edit,
//! test, enable or disable and delete them; the delivery log. Every change goes through the
//! API's handlers (`api::notifications`), so the rules, the sealing of secrets and the events
//! exist once. Secrets are never put back into a page: an edit form leaves them blank, and a
//! blank secret keeps the one that is set.

use std::collections::HashMap;

use askama::Template;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::form::{FormData, Forms, api_body, json_number};
use super::page::{Chrome, Flash, FlashMessage, Nav, PageTemplate, Ui, error_page, render, see_other_with};
use super::view::When;
use crate::domain::event::{EventKind, Source};
use crate::domain::notification::{Channel, ChannelKind, ChannelSettings, DeliveryStatus, SmtpTls};
use crate::web::api;
use crate::web::auth::{Admin, CurrentUser};
use crate::web::extract::ApiJson;
use crate::web::path::IdPath;
use crate::web::state::AppState;

/// The inputs of a channel form, so an error lands next to the one it names.
const CHANNEL_FIELDS: &[&str] = &[
    "name",
    "kind",
    "secrets.url",
    "secrets.signing_secret",
    "secrets.token",
    "secrets.password",
    "settings.smtp_host",
    "settings.smtp_port",
    "settings.tls",
    "settings.from",
    "settings.to",
    "settings.username",
    "settings.ca_pem",
    "settings.priority",
    "settings.tags",
    "settings.url",
    "rule.min_severity",
];

#[derive(Template)]
#[template(path = "notifications.html")]
pub struct NotificationsPage {
    pub chrome: Chrome,
    pub forms: Forms,
    pub channels: Vec<ChannelRow>,
    /// The add form's blank values.
    pub new_channel: ChannelFormValues,
    pub deliveries: Vec<DeliveryRow>,
}

impl PageTemplate for NotificationsPage {
    fn chrome(&self) -> &Chrome {
        &self.chrome
    }
}

pub struct ChannelRow {
    pub id: i64,
    pub name: String,
    pub kind: &'static str,
    pub target: String,
    /// The rule in words: "warn and worse · deploy failed, stale found · all projects".
    pub forwards: String,
    pub enabled: bool,
    pub queued: u64,
    pub last: Option<DeliveryRow>,
    pub form: ChannelFormValues,
}

pub struct DeliveryRow {
    pub channel: String,
    pub at: When,
    pub status: &'static str,
    /// The badge class of the status.
    pub class: &'static str,
    pub test: bool,
    pub attempt: u32,
    pub summary: String,
    pub answer: String,
}

/// One checkbox of the rule's lists.
pub struct Choice {
    /// The form input's name (`kind.deploy_failed`).
    pub input: String,
    pub label: String,
    pub checked: bool,
}

/// What a channel form shows.
pub struct ChannelFormValues {
    /// The form's id (`new-channel`, `channel-3`).
    pub id: String,
    pub is_new: bool,
    pub name: String,
    pub kind: &'static str,
    pub enabled: bool,
    /// Secrets that are set (their inputs say "set: leave blank to keep").
    pub secret_keys: Vec<String>,
    pub smtp_host: String,
    pub smtp_port: String,
    pub tls: &'static str,
    pub from: String,
    pub to: String,
    pub username: String,
    pub ca_pem: String,
    pub priority: String,
    pub tags: String,
    pub gotify_url: String,
    pub min_severity: &'static str,
    pub kinds: Vec<Choice>,
    pub sources: Vec<Choice>,
    pub projects: Vec<Choice>,
}

impl ChannelFormValues {
    pub fn has_secret(&self, key: &str) -> bool {
        self.secret_keys.iter().any(|k| k == key)
    }

    /// The hint under a secret's input: that it is set (and blank keeps it), or what it is.
    pub fn secret_hint(&self, key: &str) -> &'static str {
        match (self.has_secret(key), key) {
            (true, "url") => "Set. Leave blank to keep it; it is never shown again.",
            (true, _) => "Set. Leave blank to keep it.",
            (false, "url") => {
                "The webhook, incoming-webhook or ntfy topic URL (write-only: it usually holds a token)."
            }
            (false, "signing_secret") => {
                "Optional: bodies are then signed, X-Docker-Watcher-Signature: sha256=HMAC."
            }
            (false, "token") => "Gotify: the application token (required). ntfy: an access token (optional).",
            (false, _) => "The SMTP login's password (write-only).",
        }
    }

    /// Whether this form's fields for `kinds` (space-separated) are shown: all kinds on the add
    /// form (the stylesheet then shows the selected kind's), one on an edit form.
    pub fn shows(&self, kinds: &str) -> bool {
        self.is_new || kinds.split(' ').any(|k| k == self.kind)
    }

    fn new(id: String, channel: Option<&Channel>, projects: &[(i64, String)]) -> Self {
        let rule = channel.map(|c| c.rule.clone()).unwrap_or_default();
        let mut values = Self {
            id,
            is_new: channel.is_none(),
            name: channel.map(|c| c.name.clone()).unwrap_or_default(),
            kind: channel.map_or("webhook", |c| c.kind.as_str()),
            enabled: channel.is_none_or(|c| c.enabled),
            secret_keys: channel.map(|c| c.secret_keys.clone()).unwrap_or_default(),
            smtp_host: String::new(),
            smtp_port: String::new(),
            tls: "starttls",
            from: String::new(),
            to: String::new(),
            username: String::new(),
            ca_pem: String::new(),
            priority: String::new(),
            tags: String::new(),
            gotify_url: String::new(),
            min_severity: rule.min_severity.as_str(),
            kinds: EventKind::ALL
                .iter()
                .map(|k| Choice {
                    input: format!("kind.{}", k.as_str()),
                    label: k.label().to_owned(),
                    checked: rule.kinds.contains(k),
                })
                .collect(),
            sources: Source::ALL
                .iter()
                .map(|s| Choice {
                    input: format!("source.{}", s.as_str()),
                    label: s.as_str().to_owned(),
                    checked: rule.sources.contains(s),
                })
                .collect(),
            projects: projects
                .iter()
                .map(|(id, name)| Choice {
                    input: format!("project.{id}"),
                    label: name.clone(),
                    checked: rule.project_ids.contains(id),
                })
                .collect(),
        };
        match channel.map(|c| &c.settings) {
            Some(ChannelSettings::Email(email)) => {
                values.smtp_host = email.smtp_host.clone();
                values.smtp_port = email.smtp_port.map(|p| p.to_string()).unwrap_or_default();
                values.tls = match email.tls {
                    SmtpTls::Starttls => "starttls",
                    SmtpTls::Tls => "tls",
                    SmtpTls::None => "none",
                };
                values.from = email.from.clone();
                values.to = email.to.join(", ");
                values.username = email.username.clone().unwrap_or_default();
                values.ca_pem = email.ca_pem.clone().unwrap_or_default();
            }
            Some(ChannelSettings::Ntfy(ntfy)) => {
                values.priority = ntfy.priority.map(|p| p.to_string()).unwrap_or_default();
                values.tags = ntfy.tags.join(", ");
            }
            Some(ChannelSettings::Gotify(gotify)) => {
                values.gotify_url = gotify.url.clone();
                values.priority = gotify.priority.map(|p| p.to_string()).unwrap_or_default();
            }
            _ => {}
        }
        values
    }
}

/// The rule in words.
fn describe_rule(channel: &Channel, projects: &HashMap<i64, String>) -> String {
    let rule = &channel.rule;
    let mut parts = vec![format!("{} and worse", rule.min_severity)];
    if !rule.kinds.is_empty() {
        parts.push(
            rule.kinds
                .iter()
                .map(|k| k.label())
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
    if !rule.sources.is_empty() {
        parts.push(format!(
            "from {}",
            rule.sources
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !rule.project_ids.is_empty() {
        parts.push(format!(
            "projects {}",
            rule.project_ids
                .iter()
                .map(|id| projects.get(id).cloned().unwrap_or_else(|| format!("#{id}")))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    parts.join(" · ")
}

pub async fn notifications_get(
    State(state): State<AppState>,
    Ui(admin): Ui<Admin>,
    flash: FlashMessage,
) -> Response {
    render_notifications(&state, &admin.0, flash, Forms::none(), StatusCode::OK).await
}

async fn render_notifications(
    state: &AppState,
    current: &CurrentUser,
    flash: FlashMessage,
    forms: Forms,
    status: StatusCode,
) -> Response {
    let loaded = async {
        let channels = state.store.list_channels().await?;
        let deliveries = state.store.list_deliveries(None, 50).await?;
        let projects = state.store.list_projects().await?;
        let queued = state.notifier.queued().await?;
        Ok::<_, crate::web::error::WebError>((channels, deliveries, projects, queued))
    }
    .await;
    let (channels, deliveries, projects, queued) = match loaded {
        Ok(loaded) => loaded,
        Err(e) => return error_page(e, Some(current)),
    };
    let now = state.clock.now();
    let project_list: Vec<(i64, String)> = projects.iter().map(|p| (p.id, p.name.to_string())).collect();
    let project_names: HashMap<i64, String> = project_list.iter().cloned().collect();
    let names: HashMap<i64, String> = channels.iter().map(|c| (c.id, c.name.clone())).collect();
    let queued: HashMap<i64, u64> = queued.into_iter().collect();
    let delivery_row = |d: &crate::domain::notification::Delivery| DeliveryRow {
        channel: names.get(&d.channel_id).cloned().unwrap_or_default(),
        at: When::new(d.at, now),
        status: d.status.as_str(),
        class: match d.status {
            DeliveryStatus::Delivered => "ok",
            DeliveryStatus::Retrying => "warn",
            DeliveryStatus::Failed => "bad",
        },
        test: d.is_test,
        attempt: d.attempt,
        summary: d.summary.clone(),
        answer: match (&d.http_status, &d.error) {
            (_, Some(error)) => error.clone(),
            (Some(status), None) => format!("HTTP {status}"),
            (None, None) => "accepted".to_owned(),
        },
    };
    let mut rows = Vec::with_capacity(channels.len());
    for channel in &channels {
        rows.push(ChannelRow {
            id: channel.id,
            name: channel.name.clone(),
            kind: channel.kind.as_str(),
            target: state.notifier.target(channel).await,
            forwards: describe_rule(channel, &project_names),
            enabled: channel.enabled,
            queued: queued.get(&channel.id).copied().unwrap_or(0),
            last: deliveries
                .iter()
                .find(|d| d.channel_id == channel.id)
                .map(&delivery_row),
            form: ChannelFormValues::new(format!("channel-{}", channel.id), Some(channel), &project_list),
        });
    }
    let page = NotificationsPage {
        chrome: Chrome::new(current, "Notifications", Nav::Notifications, flash).engine(state),
        forms,
        channels: rows,
        new_channel: ChannelFormValues::new("new-channel".to_owned(), None, &project_list),
        deliveries: deliveries.iter().map(delivery_row).collect(),
    };
    render(status, &page)
}

/// The API request a channel form asks for. `kind` is the channel's (the add form's select,
/// or the edited channel's). Blank secrets are left out (kept, on an edit); a ticked "remove"
/// box removes an optional one.
fn channel_request(form: &FormData, kind: Option<ChannelKind>, is_new: bool) -> Value {
    let kind_name = kind.map_or_else(|| form.text("kind"), |k| k.as_str().to_owned());
    let list = |name: &str| -> Vec<String> {
        form.text(name)
            .split([',', '\n'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let settings = match kind_name.as_str() {
        "email" => json!({
            "smtp_host": form.text("settings.smtp_host"),
            "smtp_port": json_number(&form.text("settings.smtp_port")),
            "tls": form.text("settings.tls"),
            "from": form.text("settings.from"),
            "to": list("settings.to"),
            "username": form.opt("settings.username"),
            "ca_pem": form.opt("settings.ca_pem"),
        }),
        "ntfy" => json!({
            "priority": json_number(&form.text("settings.priority")),
            "tags": list("settings.tags"),
        }),
        "gotify" => json!({
            "url": form.text("settings.url"),
            "priority": json_number(&form.text("settings.priority")),
        }),
        _ => json!({}),
    };
    let mut secrets = Map::new();
    let known = kind_name
        .parse::<ChannelKind>()
        .map(|k| k.secret_fields())
        .unwrap_or(&[]);
    for (key, _) in known {
        if let Some(value) = form.opt(&format!("secrets.{key}")) {
            secrets.insert((*key).to_owned(), Value::from(value));
        } else if form.checked(&format!("remove.{key}")) {
            secrets.insert((*key).to_owned(), Value::Null);
        }
    }
    let rule = json!({
        "min_severity": form.text("rule.min_severity"),
        "kinds": EventKind::ALL.iter().filter(|k| form.checked(&format!("kind.{}", k.as_str()))).map(|k| k.as_str()).collect::<Vec<_>>(),
        "sources": Source::ALL.iter().filter(|s| form.checked(&format!("source.{}", s.as_str()))).map(|s| s.as_str()).collect::<Vec<_>>(),
        "project_ids": form.pairs_with_prefix("project.").filter(|(_, v)| matches!(*v, "on" | "true")).filter_map(|(k, _)| k.parse::<i64>().ok()).collect::<Vec<_>>(),
    });
    let mut body = json!({
        "name": form.text("name"),
        "enabled": form.checked("enabled"),
        "settings": settings,
        "secrets": secrets,
        "rule": rule,
    });
    if is_new {
        body["kind"] = Value::from(kind_name);
    }
    body
}

/// `POST /notifications`: adds a channel.
pub async fn notifications_post(
    State(state): State<AppState>,
    Ui(admin): Ui<Admin>,
    body: Bytes,
) -> Response {
    let form = FormData::parse(&body);
    let result = async {
        let request = api_body(&channel_request(&form, None, true))?;
        api::notifications::channels_post(admin.clone(), State(state.clone()), ApiJson(request)).await
    }
    .await;
    match result {
        Ok((_, Json(channel))) => see_other_with(
            "/notifications",
            Flash::notice(format!(
                "Channel {} added; it forwards what its rule matches. Send it a test to check it.",
                channel.name
            )),
        ),
        Err(err) => {
            let forms = Forms::failed("new-channel", &form, &err, CHANNEL_FIELDS);
            render_notifications(&state, &admin.0, FlashMessage(None), forms, err.status).await
        }
    }
}

/// `POST /notifications/{id}/edit`: changes a channel.
pub async fn notification_edit_post(
    State(state): State<AppState>,
    Ui(admin): Ui<Admin>,
    Ui(IdPath(id)): Ui<IdPath>,
    body: Bytes,
) -> Response {
    let form = FormData::parse(&body);
    let result = async {
        let channel = state
            .store
            .get_channel(id)
            .await
            .map_err(|e| crate::notify::NotifyError::from_store(e, id))?;
        let request = api_body(&channel_request(&form, Some(channel.kind), false))?;
        api::notifications::channel_patch(admin.clone(), IdPath(id), State(state.clone()), ApiJson(request))
            .await
    }
    .await;
    match result {
        Ok(Json(channel)) => see_other_with(
            "/notifications",
            Flash::notice(format!("Channel {} saved.", channel.name)),
        ),
        Err(err) => {
            let forms = Forms::failed(format!("channel-{id}"), &form, &err, CHANNEL_FIELDS);
            render_notifications(&state, &admin.0, FlashMessage(None), forms, err.status).await
        }
    }
}

/// `POST /notifications/{id}/enabled`: enables (`enabled=true`) or disables a channel.
pub async fn notification_enabled_post(
    State(state): State<AppState>,
    Ui(admin): Ui<Admin>,
    Ui(IdPath(id)): Ui<IdPath>,
    body: Bytes,
) -> Response {
    let enabled = FormData::parse(&body).checked("enabled");
    let result = async {
        let request = api_body(&json!({ "enabled": enabled }))?;
        api::notifications::channel_patch(admin.clone(), IdPath(id), State(state.clone()), ApiJson(request))
            .await
    }
    .await;
    match result {
        Ok(Json(channel)) => see_other_with(
            "/notifications",
            Flash::notice(format!(
                "Channel {} {}.",
                channel.name,
                if channel.enabled { "enabled" } else { "disabled" }
            )),
        ),
        Err(err) => see_other_with("/notifications", Flash::error(err.message)),
    }
}

/// `POST /notifications/{id}/test`: sends a test message and says how it went.
pub async fn notification_test_post(
    State(state): State<AppState>,
    Ui(admin): Ui<Admin>,
    Ui(IdPath(id)): Ui<IdPath>,
) -> Response {
    match api::notifications::channel_test_post(admin, IdPath(id), State(state.clone())).await {
        Ok(Json(outcome)) if outcome.delivered => see_other_with(
            "/notifications",
            Flash::notice(format!(
                "Test delivered{} in {} ms.",
                outcome
                    .http_status
                    .map(|s| format!(" (HTTP {s})"))
                    .unwrap_or_default(),
                outcome.duration_ms
            )),
        ),
        Ok(Json(outcome)) => see_other_with(
            "/notifications",
            Flash::error(format!(
                "Test not delivered: {}",
                outcome.error.unwrap_or_else(|| "unknown error".to_owned())
            )),
        ),
        Err(err) => see_other_with("/notifications", Flash::error(err.message)),
    }
}

/// `POST /notifications/{id}/delete` (confirmed): deletes a channel.
pub async fn notification_delete_post(
    State(state): State<AppState>,
    Ui(admin): Ui<Admin>,
    Ui(IdPath(id)): Ui<IdPath>,
    body: Bytes,
) -> Response {
    if !FormData::parse(&body).confirmed() {
        return super::stages::confirmation_page(
            &admin.0,
            "Delete the notification channel?",
            &format!("/notifications/{id}/delete"),
            "Messages waiting for it and its delivery log go with it.",
            "Delete channel",
            "/notifications",
        );
    }
    match api::notifications::channel_delete(admin.clone(), IdPath(id), State(state.clone())).await {
        Ok(_) => see_other_with("/notifications", Flash::notice("Channel deleted.")),
        Err(err) => see_other_with("/notifications", Flash::error(err.message)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_email_form_becomes_the_apis_json_and_blank_secrets_are_left_out() {
        let form = FormData::parse(
            b"name=ops&kind=email&enabled=false&enabled=true&settings.smtp_host=mail.example.com&settings.smtp_port=465\
              &settings.tls=tls&settings.from=dw%40example.com&settings.to=a%40example.com%2C+b%40example.com\
              &secrets.password=&secrets.url=ignored&rule.min_severity=error&kind.deploy_failed=false&kind.deploy_failed=true\
              &source.stale=false&project.3=false&project.4=true",
        );
        let body = channel_request(&form, None, true);
        assert_eq!(body["kind"], "email");
        assert_eq!(body["settings"]["smtp_port"], 465);
        assert_eq!(body["settings"]["to"], json!(["a@example.com", "b@example.com"]));
        assert_eq!(
            body["secrets"],
            json!({}),
            "a blank password and another kind's secret are left out"
        );
        assert_eq!(body["rule"]["kinds"], json!(["deploy_failed"]));
        assert_eq!(body["rule"]["sources"], json!([]));
        assert_eq!(body["rule"]["project_ids"], json!([4]));
        let edit = FormData::parse(b"name=ops&secrets.signing_secret=&remove.signing_secret=true&secrets.url=https%3A%2F%2Fh.example%2Fx");
        let body = channel_request(&edit, Some(ChannelKind::Webhook), false);
        assert_eq!(
            body["secrets"],
            json!({"url": "https://h.example/x", "signing_secret": null})
        );
        assert!(body.get("kind").is_none());
    }
}
