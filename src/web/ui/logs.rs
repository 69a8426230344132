//! The logs panel of the stage page (`/stages/{id}?logs=<instance id>&logs_filter=<text>`),
//! shown right under the instances with its instance's row marked, and the download of the same
//! output as a text file (`GET /instances/{id}/logs.txt`).
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

use super::page::{Ui, error_page};
use super::view::InstanceView;
use crate::web::api::instances::instance_logs;
use crate::web::api::logs::{LogLineResponse, MAX_TAIL};
use crate::web::auth::Viewer;
use crate::web::path::IdPath;
use crate::web::state::AppState;

/// How many lines the panel shows.
const PANEL_LINES: usize = 200;
/// How far back a filter looks: the matches among this many last lines (the newest
/// [`PANEL_LINES`] of them are shown).
const FILTER_DEPTH: u32 = 2_000;
/// The longest filter kept (a longer one is cut; it would match nothing anyway).
const MAX_FILTER: usize = 200;

pub struct LogsView {
    pub instance_id: i64,
    pub tag: String,
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

/// The panel for `instance`: its last lines (matching `filter`), or why there are none.
pub async fn logs_panel(state: &AppState, instance: &InstanceView, filter: String) -> LogsView {
    let depth = if filter.is_empty() {
        PANEL_LINES as u32
    } else {
        FILTER_DEPTH
    };
    let read = async {
        let logs = instance_logs(state, instance.id).await?;
        logs.read(state, depth).await
    };
    let (lines, error) = match read.await {
        Ok(lines) => {
            let wanted = filter.to_lowercase();
            let mut lines: Vec<LogLineView> = lines
                .into_iter()
                .filter(|l| matches(&l.text, &wanted))
                .map(LogLineView::new)
                .collect();
            let extra = lines.len().saturating_sub(PANEL_LINES);
            lines.drain(..extra);
            (lines, None)
        }
        Err(err) => (Vec::new(), Some(err.message)),
    };
    LogsView {
        instance_id: instance.id,
        tag: instance.tag.clone(),
        lines,
        filter,
        follow: instance.status == "running",
        error,
    }
}

/// `GET /instances/{id}/logs.txt`: the last lines of an instance's output as a file, one line
/// each: time, stream, text. Viewers may read it, as they may read the panel.
pub async fn instance_logs_txt_get(
    State(state): State<AppState>,
    Ui(viewer): Ui<Viewer>,
    Ui(IdPath(id)): Ui<IdPath>,
) -> Response {
    let read = async {
        let logs = instance_logs(&state, id).await?;
        logs.read(&state, MAX_TAIL).await
    };
    match read.await {
        Ok(lines) => {
            let body: String = lines.iter().map(LogLineResponse::to_text_line).collect();
            let disposition = format!("attachment; filename=\"instance-{id}.log\"");
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
