//! The logs panel of a container: an instance's on the stage page
//! (`/stages/{id}?logs=<instance id>&logs_filter=<text>`), right under the instances with its
//! row marked, and an accessory's on the project page (`/projects/{id}?logs=<accessory id>`),
//! right under the accessories; and the download of the same output as a text file
//! (`GET /instances/{id}/logs.txt`, `GET /accessories/{id}/logs.txt`).
//!
//! The page renders the last lines with their times, already filtered when `logs_filter` is
//! given, so it works without scripts. `static/logs.js` then makes the panel live: a follow
//! toggle (on for a running container) streams new lines from the API's SSE endpoint, and the
//! filter box hides non-matching lines as the user types, new lines included. Every way in goes
//! through the API's own handlers, so secrets are masked alike.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::SecondsFormat;

use super::accessory_view::AccessoryRow;
use super::page::{Ui, error_page};
use super::view::InstanceView;
use crate::web::api::accessories::accessory_logs;
use crate::web::api::instances::instance_logs;
use crate::web::api::logs::{ContainerLogs, LogLineResponse, MAX_TAIL};
use crate::web::auth::Viewer;
use crate::web::error::WebResult;
use crate::web::path::IdPath;
use crate::web::state::AppState;

/// How many lines the panel shows.
const PANEL_LINES: usize = 200;
/// How far back a filter looks: the matches among this many last lines (the newest
/// [`PANEL_LINES`] of them are shown).
const FILTER_DEPTH: u32 = 2_000;
/// The longest filter kept (a longer one is cut; it would match nothing anyway).
const MAX_FILTER: usize = 200;

/// The logs panel a page view asks for (`?logs=<id>&logs_filter=`).
pub struct LogsRequest {
    /// The instance's id on a stage page, the accessory's on a project page.
    pub id: i64,
    pub filter: String,
}

impl LogsRequest {
    /// The panel asked for in a page's query, if any.
    pub fn from_query(query: Option<&str>) -> Option<Self> {
        form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .find(|(k, _)| k == "logs")
            .and_then(|(_, v)| v.parse::<i64>().ok())
            .map(|id| Self {
                id,
                filter: filter_from_query(query),
            })
    }
}

pub struct LogsView {
    /// The id of the instance or accessory whose output this is.
    pub target_id: i64,
    /// "instance 7", "accessory db".
    pub target: String,
    /// What else names it: the tag, the image.
    pub detail: String,
    /// The page the panel is on, without its query (`/stages/3`).
    pub page: String,
    /// The live stream and the download.
    pub stream_url: String,
    pub download_url: String,
    pub lines: Vec<LogLineView>,
    /// The filter the lines were chosen with ("" for none).
    pub filter: String,
    /// Whether the panel starts following (the container runs).
    pub follow: bool,
    pub error: Option<String>,
}

pub struct LogLineView {
    pub stderr: bool,
    /// RFC 3339, for the `<time datetime>`; "" when the engine did not stamp the line.
    pub time: String,
    /// The time of day shown (UTC, milliseconds).
    pub time_short: String,
    pub text: String,
}

impl LogLineView {
    fn new(line: LogLineResponse) -> Self {
        Self {
            stderr: line.stream == "stderr",
            time: line
                .time
                .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
                .unwrap_or_default(),
            time_short: line
                .time
                .map(|t| t.format("%H:%M:%S%.3f").to_string())
                .unwrap_or_default(),
            text: line.text,
        }
    }
}

/// The filter as given in the query (`logs_filter`), trimmed and bounded.
pub fn filter_from_query(query: Option<&str>) -> String {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "logs_filter")
        .map(|(_, v)| v.trim().chars().take(MAX_FILTER).collect())
        .unwrap_or_default()
}

/// Whether `text` matches `filter`: a case-insensitive substring, as the script filters.
fn matches(text: &str, filter_lower: &str) -> bool {
    filter_lower.is_empty() || text.to_lowercase().contains(filter_lower)
}

/// The panel for `instance` on its stage page (`page`).
pub async fn instance_panel(
    state: &AppState,
    instance: &InstanceView,
    page: String,
    filter: String,
) -> LogsView {
    let logs = instance_logs(state, instance.id).await;
    let view = LogsView {
        target_id: instance.id,
        target: format!("instance {}", instance.id),
        detail: format!("tag {}", instance.tag),
        page,
        stream_url: format!("/api/instances/{}/logs/stream", instance.id),
        download_url: format!("/instances/{}/logs.txt", instance.id),
        lines: Vec::new(),
        filter,
        follow: instance.status == "running",
        error: None,
    };
    fill(state, view, logs).await
}

/// The panel for `accessory` on its project's page (`page`).
pub async fn accessory_panel(
    state: &AppState,
    accessory: &AccessoryRow,
    page: String,
    filter: String,
) -> LogsView {
    let logs = accessory_logs(state, accessory.id).await;
    let view = LogsView {
        target_id: accessory.id,
        target: format!("accessory {}", accessory.name),
        detail: accessory.image.clone(),
        page,
        stream_url: format!("/api/accessories/{}/logs/stream", accessory.id),
        download_url: format!("/accessories/{}/logs.txt", accessory.id),
        lines: Vec::new(),
        filter,
        follow: accessory.status == "running",
        error: None,
    };
    fill(state, view, logs).await
}

/// `view` with the container's last lines (matching its filter), or why there are none.
async fn fill(state: &AppState, mut view: LogsView, logs: WebResult<ContainerLogs>) -> LogsView {
    let depth = if view.filter.is_empty() {
        PANEL_LINES as u32
    } else {
        FILTER_DEPTH
    };
    let read = async { logs?.read(state, depth).await };
    match read.await {
        Ok(lines) => {
            let wanted = view.filter.to_lowercase();
            let mut lines: Vec<LogLineView> = lines
                .into_iter()
                .filter(|l| matches(&l.text, &wanted))
                .map(LogLineView::new)
                .collect();
            let extra = lines.len().saturating_sub(PANEL_LINES);
            lines.drain(..extra);
            view.lines = lines;
        }
        Err(err) => view.error = Some(err.message),
    }
    view
}

/// `GET /instances/{id}/logs.txt`: the last lines of an instance's output as a file, one line
/// each: time, stream, text. Viewers may read it, as they may read the panel.
pub async fn instance_logs_txt_get(
    State(state): State<AppState>,
    Ui(viewer): Ui<Viewer>,
    Ui(IdPath(id)): Ui<IdPath>,
) -> Response {
    let logs = instance_logs(&state, id).await;
    download(&state, &viewer, logs, format!("instance-{id}.log")).await
}

/// `GET /accessories/{id}/logs.txt`: the same for an accessory.
pub async fn accessory_logs_txt_get(
    State(state): State<AppState>,
    Ui(viewer): Ui<Viewer>,
    Ui(IdPath(id)): Ui<IdPath>,
) -> Response {
    let logs = accessory_logs(&state, id).await;
    download(&state, &viewer, logs, format!("accessory-{id}.log")).await
}

/// The last lines of `logs` as a text file named `file_name`, or the error page.
async fn download(
    state: &AppState,
    viewer: &Viewer,
    logs: WebResult<ContainerLogs>,
    file_name: String,
) -> Response {
    let read = async { logs?.read(state, MAX_TAIL).await };
    match read.await {
        Ok(lines) => {
            let body: String = lines.iter().map(LogLineResponse::to_text_line).collect();
            let disposition = format!("attachment; filename=\"{file_name}\"");
            (
                StatusCode::OK,
                [
                    (
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/plain; charset=utf-8"),
                    ),
                    (
                        header::CONTENT_DISPOSITION,
                        HeaderValue::from_str(&disposition)
                            .unwrap_or_else(|_| HeaderValue::from_static("attachment")),
                    ),
                    (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
                ],
                body,
            )
                .into_response()
        }
        Err(err) => error_page(err, Some(&viewer.0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_comes_from_the_query_trimmed_and_bounded() {
        assert_eq!(filter_from_query(None), "");
        assert_eq!(filter_from_query(Some("logs=4")), "");
        assert_eq!(
            filter_from_query(Some("logs=4&logs_filter=+GET+%2Fhealth+")),
            "GET /health"
        );
        let long = format!("logs_filter={}", "x".repeat(500));
        assert_eq!(filter_from_query(Some(&long)).len(), MAX_FILTER);
    }

    #[test]
    fn matching_ignores_case_and_an_empty_filter_matches_all() {
        assert!(matches("GET /Health 200", "/health"));
        assert!(!matches("POST /login", "/health"));
        assert!(matches("anything", ""));
    }
}
