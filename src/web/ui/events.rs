//! The event log, `GET /events`: persisted events newest first, filtered by severity, source
//! and project with a plain GET form (checkboxes may repeat a parameter; the API's filters are
//! comma-separated, so repeats are joined), paginated, and — on the first page — with new
//! events prepended live by `static/live.js`. The filters are parsed by the API's own
//! [`EventLogParams::parse`], so a bad one is named next to its input exactly as `/api/events`
//! names it.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::page::{Chrome, FlashMessage, Nav, PageTemplate, Ui, error_page, render};
use super::view::When;
use crate::domain::event::{Event, EventQuery, Severity, Source};
use crate::web::api::events::EventLogParams;
use crate::web::auth::Viewer;
use crate::web::error::{WebError, WebResult};
use crate::web::state::AppState;

/// The page sizes offered; a size given in the URL that is not among them is offered too, so
/// the control always shows the size in use.
const PER_PAGE_CHOICES: [u32; 6] = [10, 20, 50, 100, 200, 500];

/// The page sizes to offer when `in_use` is the one in use, smallest first.
fn per_page_choices(in_use: u32) -> Vec<u32> {
    let mut sizes = PER_PAGE_CHOICES.to_vec();
    if !sizes.contains(&in_use) {
        sizes.push(in_use);
        sizes.sort_unstable();
    }
    sizes
}

#[derive(Template)]
#[template(path = "events.html")]
pub struct EventsPage {
    pub chrome: Chrome,
    pub severities: Vec<Choice>,
    pub sources: Vec<Choice>,
    pub projects: Vec<Choice>,
    pub per_page_choices: Vec<Choice>,
    pub since: String,
    pub until: String,
    /// A refused filter: its input's name and the message.
    pub filter_error: Option<(String, String)>,
    pub rows: Vec<EventRow>,
    pub total: u64,
    pub page: u32,
    pub pages: u64,
    pub prev_href: Option<String>,
    pub next_href: Option<String>,
    /// The filters as the live script applies them to new events (comma-separated).
    pub live_severity: String,
    pub live_source: String,
    pub live_project: String,
    /// Every stage's name by id, as a JSON object, so rows arriving live name their stage as
    /// rendered rows do (project names come from the project filter's options).
    pub live_stage_names: String,
}

impl PageTemplate for EventsPage {
    fn chrome(&self) -> &Chrome {
        &self.chrome
    }
}

impl EventsPage {
    /// The error to show next to filter input `name`.
    pub fn filter_error_for(&self, name: &str) -> Option<&str> {
        self.filter_error
            .as_ref()
            .filter(|(field, _)| field == name)
            .map(|(_, message)| message.as_str())
    }
}

/// An option of a filter: a checkbox or a select option.
pub struct Choice {
    pub value: String,
    pub label: String,
    pub checked: bool,
}

pub struct EventRow {
    pub id: i64,
    pub when: When,
    pub severity: &'static str,
    pub source: &'static str,
    pub message: String,
    pub project: Option<(i64, String)>,
    pub stage: Option<(i64, String)>,
    pub instance_id: Option<i64>,
    /// `key=value` pairs of the details.
    pub details: String,
}

pub async fn events_get(
    State(state): State<AppState>,
    Ui(viewer): Ui<Viewer>,
    flash: FlashMessage,
    RawQuery(query): RawQuery,
) -> Response {
    match build(&state, &viewer, flash, query.as_deref().unwrap_or("")).await {
        Ok((status, page)) => render(status, &page),
        Err(err) => error_page(err, Some(&viewer.0)),
    }
}

/// The query's parameters, repeated ones joined with commas as the API expects.
fn params_of(query: &str) -> (EventLogParams, HashMap<String, Vec<String>>) {
    let mut raw: HashMap<String, Vec<String>> = HashMap::new();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let value = value.trim().to_owned();
        if !value.is_empty() {
            raw.entry(key.into_owned()).or_default().push(value);
        }
    }
    let joined = |key: &str| raw.get(key).map(|values| values.join(","));
    let last = |key: &str| raw.get(key).and_then(|values| values.last().cloned());
    let params = EventLogParams {
        severity: joined("severity"),
        source: joined("source"),
        project_id: last("project_id"),
        since: last("since"),
        until: last("until"),
        page: last("page"),
        per_page: last("per_page"),
    };
    (params, raw)
}

/// The current filters as a query string, with another page.
fn page_href(query: &EventQuery, raw: &HashMap<String, Vec<String>>, page: u32) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for s in &query.severities {
        out.append_pair("severity", s.as_str());
    }
    for s in &query.sources {
        out.append_pair("source", s.as_str());
    }
    if let Some(p) = query.project_id {
        out.append_pair("project_id", &p.to_string());
    }
    for key in ["since", "until"] {
        if let Some(v) = raw.get(key).and_then(|v| v.last()) {
            out.append_pair(key, v);
        }
    }
    if query.per_page != EventQuery::default().per_page {
        out.append_pair("per_page", &query.per_page.to_string());
    }
    out.append_pair("page", &page.to_string());
    format!("/events?{}", out.finish())
}

async fn build(
    state: &AppState,
    viewer: &Viewer,
    flash: FlashMessage,
    query: &str,
) -> WebResult<(StatusCode, EventsPage)> {
    let (params, raw) = params_of(query);
    let (status, parsed, filter_error) = match params.parse() {
        Ok(parsed) => (StatusCode::OK, parsed, None),
        Err(err) => (err.status, EventQuery::default(), Some(filter_error(err))),
    };
    let (events, total) = state.store.list_events(&parsed).await?;
    let projects = state.store.list_projects().await?;
    let stages = state.store.list_all_stages().await?;
    let project_names: HashMap<i64, String> = projects.iter().map(|p| (p.id, p.name.to_string())).collect();
    let stage_names: HashMap<i64, String> = stages.iter().map(|s| (s.id, s.name.to_string())).collect();
    let now = state.clock.now();
    let rows = events
        .iter()
        .map(|e| row(e, &project_names, &stage_names, now))
        .collect();

    let pages = total.div_ceil(u64::from(parsed.per_page)).max(1);
    let page = parsed.page;
    let joined = |list: Vec<&str>| list.join(",");
    let mut chrome = Chrome::new(&viewer.0, "Event log", Nav::Events, flash).engine(state);
    if page == 1 {
        chrome = chrome.live(state, "events").await;
    }
    let page_view = EventsPage {
        chrome,
        severities: Severity::ALL
            .iter()
            .map(|s| Choice {
                value: s.as_str().to_owned(),
                label: s.as_str().to_owned(),
                checked: parsed.severities.contains(s),
            })
            .collect(),
        sources: Source::ALL
            .iter()
            .map(|s| Choice {
                value: s.as_str().to_owned(),
                label: s.as_str().to_owned(),
                checked: parsed.sources.contains(s),
            })
            .collect(),
        projects: projects
            .iter()
            .map(|p| Choice {
                value: p.id.to_string(),
                label: p.name.to_string(),
                checked: parsed.project_id == Some(p.id),
            })
            .collect(),
        per_page_choices: per_page_choices(parsed.per_page)
            .into_iter()
            .map(|n| Choice {
                value: n.to_string(),
                label: n.to_string(),
                checked: parsed.per_page == n,
            })
            .collect(),
        since: raw
            .get("since")
            .and_then(|v| v.last().cloned())
            .unwrap_or_default(),
        until: raw
            .get("until")
            .and_then(|v| v.last().cloned())
            .unwrap_or_default(),
        filter_error,
        rows,
        total,
        page,
        pages,
        prev_href: (page > 1).then(|| page_href(&parsed, &raw, page - 1)),
        next_href: (u64::from(page) < pages).then(|| page_href(&parsed, &raw, page + 1)),
        live_severity: joined(parsed.severities.iter().map(|s| s.as_str()).collect()),
        live_source: joined(parsed.sources.iter().map(|s| s.as_str()).collect()),
        live_project: parsed.project_id.map_or_else(String::new, |p| p.to_string()),
        live_stage_names: serde_json::to_string(&stage_names).unwrap_or_default(),
    };
    Ok((status, page_view))
}

fn filter_error(err: WebError) -> (String, String) {
    (err.field.unwrap_or_default(), err.message)
}

fn row(
    e: &Event,
    projects: &HashMap<i64, String>,
    stages: &HashMap<i64, String>,
    now: chrono::DateTime<chrono::Utc>,
) -> EventRow {
    let name =
        |names: &HashMap<i64, String>, id: i64| names.get(&id).cloned().unwrap_or_else(|| format!("#{id}"));
    EventRow {
        id: e.id.unwrap_or_default(),
        when: When::new(e.ts, now),
        severity: e.severity.as_str(),
        source: e.source.as_str(),
        message: e.message.clone(),
        project: e.project_id.map(|id| (id, name(projects, id))),
        stage: e.stage_id.map(|id| (id, name(stages, id))),
        instance_id: e.instance_id,
        details: details_text(&e.details),
    }
}

/// Details as `key=value` pairs; strings without their quotes.
pub fn details_text(details: &serde_json::Map<String, serde_json::Value>) -> String {
    details
        .iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_filters_are_joined_and_blank_ones_dropped() {
        let (params, _) = params_of("severity=warn&severity=error&source=&project_id=3&page=2");
        assert_eq!(params.severity.as_deref(), Some("warn,error"));
        assert_eq!(params.source, None);
        assert_eq!(params.project_id.as_deref(), Some("3"));
        let query = params.parse().unwrap();
        let (_, raw) = params_of("");
        assert_eq!(
            page_href(&query, &raw, 3),
            "/events?severity=warn&severity=error&project_id=3&page=3"
        );
    }
}
