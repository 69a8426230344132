//! The event log: `GET /api/events` pages through persisted events, newest first, filtered by
//! severity, source, project and time (SPEC §5); `GET /api/events/stream` is the live SSE
//! stream, implemented in [`crate::web::sse`] and registered here so both sit under the
//! `events` tag of the OpenAPI document. Both need a viewer.
//!
//! Query parameters arrive as strings and are parsed on the handler's first line, so every bad
//! one is a 400 naming the parameter (`severity`, `per_page`, `since`). An empty parameter means
//! "no filter", which is what an HTML filter form left blank sends.

use std::str::FromStr;

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::ParseError;
use crate::domain::event::{Event, EventQuery};
use crate::web::auth::Viewer;
use crate::web::error::{ErrorBody, WebError, WebResult};
use crate::web::extract::ApiQuery;
use crate::web::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(events_get))
        .routes(routes!(crate::web::sse::events_stream_get))
}

/// The query of `GET /api/events`, as sent; see [`EventLogParams::parse`].
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventLogParams {
    /// Comma-separated severities (`debug`, `info`, `warn`, `error`); any when absent.
    #[param(
        example = "warn,error",
        pattern = "^ *((debug|info|warn|error) *)?(, *((debug|info|warn|error) *)?)*$"
    )]
    pub severity: Option<String>,
    /// Comma-separated sources (`poller`, `deployer`, `docker`, `proxy`, `stale`, `api`, `auth`,
    /// `system`); any when absent.
    #[param(
        example = "poller,deployer",
        pattern = "^ *((poller|deployer|docker|proxy|stale|api|auth|system) *)?(, *((poller|deployer|docker|proxy|stale|api|auth|system) *)?)*$"
    )]
    pub source: Option<String>,
    /// Only events about this project.
    #[param(value_type = Option<i64>, minimum = 1)]
    pub project_id: Option<String>,
    /// Only events at or after this time (RFC 3339; an empty value is refused).
    #[param(value_type = Option<String>, format = DateTime)]
    pub since: Option<String>,
    /// Only events at or before this time (RFC 3339; an empty value is refused).
    #[param(value_type = Option<String>, format = DateTime)]
    pub until: Option<String>,
    /// The page, from 1 (the default) to 1000000.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000000)]
    pub page: Option<String>,
    /// Events per page, 1 to 500; 50 by default.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    pub per_page: Option<String>,
}

impl EventLogParams {
    /// Parses every parameter, naming the first bad one.
    pub fn parse(&self) -> WebResult<EventQuery> {
        let defaults = EventQuery::default();
        let query = EventQuery {
            severities: list("severity", self.severity.as_deref())?,
            sources: list("source", self.source.as_deref())?,
            project_id: present(self.project_id.as_deref())
                .map(|raw| positive("project_id", raw))
                .transpose()?,
            // A time sent empty is not a time: refused, as the document's `date-time` says.
            since: self
                .since
                .as_deref()
                .map(|raw| time("since", raw.trim()))
                .transpose()?,
            // A time sent empty is not a time: refused, as the document's `date-time` says.
            until: self
                .until
                .as_deref()
                .map(|raw| time("until", raw.trim()))
                .transpose()?,
            page: present(self.page.as_deref())
                .map(|raw| in_range("page", raw, 1, EventQuery::MAX_PAGE))
                .transpose()?
                .unwrap_or(defaults.page),
            per_page: present(self.per_page.as_deref())
                .map(|raw| in_range("per_page", raw, 1, EventQuery::MAX_PER_PAGE))
                .transpose()?
                .unwrap_or(defaults.per_page),
        };
        // `until` before `since` is an empty window, not an error: nothing is in it.
        Ok(query)
    }
}

/// A value that was sent and is not blank.
fn present(raw: Option<&str>) -> Option<&str> {
    raw.map(str::trim).filter(|s| !s.is_empty())
}

/// A comma-separated list of domain values; blank items are skipped and repeats are dropped.
fn list<T: FromStr<Err = ParseError> + PartialEq>(field: &str, raw: Option<&str>) -> WebResult<Vec<T>> {
    let mut values = Vec::new();
    for item in raw
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let value = item.parse::<T>().map_err(|e| WebError::field(field, e))?;
        if !values.contains(&value) {
            values.push(value);
        }
    }
    Ok(values)
}

fn positive(field: &str, raw: &str) -> WebResult<i64> {
    raw.parse::<i64>().ok().filter(|n| *n >= 1).ok_or_else(|| {
        WebError::validation(field, format!("{field} must be a positive integer, not '{raw}'"))
    })
}

fn in_range(field: &str, raw: &str, min: u32, max: u32) -> WebResult<u32> {
    raw.parse::<u32>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| {
            WebError::validation(
                field,
                format!("{field} must be an integer from {min} to {max}, not '{raw}'"),
            )
        })
}

fn time(field: &str, raw: &str) -> WebResult<DateTime<Utc>> {
    // An unencoded `+02:00` offset arrives as ` 02:00` (a `+` in a query string is a space).
    let repaired = raw.rfind(' ').map(|i| format!("{}+{}", &raw[..i], &raw[i + 1..]));
    let parsed = DateTime::parse_from_rfc3339(raw).or_else(|e| {
        repaired
            .as_deref()
            .and_then(|r| DateTime::parse_from_rfc3339(r).ok())
            .ok_or(e)
    });
    parsed.map(|t| t.with_timezone(&Utc)).map_err(|e| {
        WebError::validation(
            field,
            format!("{field} must be an RFC 3339 time like 2026-01-02T03:04:05Z, not '{raw}': {e}"),
        )
    })
}

/// One page of the event log.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventPage {
    /// Newest first.
    pub items: Vec<Event>,
    pub page: u32,
    pub per_page: u32,
    /// How many events match the filters, over all pages.
    pub total: u64,
}

/// A page of the event log, newest first.
#[utoipa::path(
    get,
    path = "/api/events",
    tag = "events",
    params(EventLogParams),
    responses(
        (status = 200, body = EventPage),
        (status = 400, body = ErrorBody, description = "a bad parameter, named in `error.field`"),
        (status = 401, body = ErrorBody),
    ),
    security(("token" = []), ("session" = [])),
)]
async fn events_get(
    _: Viewer,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<EventLogParams>,
) -> WebResult<Json<EventPage>> {
    let query = params.parse()?;
    let (items, total) = state.store.list_events(&query).await?;
    Ok(Json(EventPage {
        items,
        page: query.page,
        per_page: query.per_page,
        total,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::{Severity, Source};

    fn field_of(params: EventLogParams) -> Option<String> {
        params.parse().err().and_then(|e| e.field)
    }

    #[test]
    fn absent_and_blank_parameters_mean_no_filter_and_the_default_page() {
        assert_eq!(
            EventLogParams::default().parse().ok(),
            Some(EventQuery::default())
        );
        let blank = EventLogParams {
            severity: Some(String::new()),
            project_id: Some(" ".to_owned()),
            page: Some(String::new()),
            ..Default::default()
        };
        assert_eq!(blank.parse().ok(), Some(EventQuery::default()));
    }

    #[test]
    fn lists_split_on_commas_and_parse_each_item() {
        let params = EventLogParams {
            severity: Some("warn, error,warn,".to_owned()),
            source: Some("poller".to_owned()),
            ..Default::default()
        };
        let query = params.parse().ok();
        assert_eq!(
            query.as_ref().map(|q| q.severities.clone()),
            Some(vec![Severity::Warn, Severity::Error])
        );
        assert_eq!(query.map(|q| q.sources), Some(vec![Source::Poller]));
    }

    #[test]
    fn every_bad_parameter_is_named() {
        let p = |f: fn(&mut EventLogParams)| {
            let mut params = EventLogParams::default();
            f(&mut params);
            params
        };
        assert_eq!(
            field_of(p(|q| q.severity = Some("warn,fatal".into()))).as_deref(),
            Some("severity")
        );
        assert_eq!(
            field_of(p(|q| q.source = Some("kernel".into()))).as_deref(),
            Some("source")
        );
        assert_eq!(
            field_of(p(|q| q.project_id = Some("x".into()))).as_deref(),
            Some("project_id")
        );
        assert_eq!(
            field_of(p(|q| q.project_id = Some("0".into()))).as_deref(),
            Some("project_id")
        );
        assert_eq!(
            field_of(p(|q| q.since = Some("yesterday".into()))).as_deref(),
            Some("since")
        );
        assert_eq!(
            field_of(p(|q| q.until = Some("2026-13-01T00:00:00Z".into()))).as_deref(),
            Some("until")
        );
        assert_eq!(
            field_of(p(|q| q.page = Some("0".into()))).as_deref(),
            Some("page")
        );
        assert_eq!(
            field_of(p(|q| q.per_page = Some("501".into()))).as_deref(),
            Some("per_page")
        );
        assert_eq!(
            field_of(p(|q| q.per_page = Some("-1".into()))).as_deref(),
            Some("per_page")
        );
    }

    #[test]
    fn until_before_since_is_an_empty_window_and_the_page_is_bounded() {
        let params = EventLogParams {
            since: Some("2026-01-02T00:00:00Z".into()),
            until: Some("2026-01-01T00:00:00+00:00".into()),
            ..Default::default()
        };
        assert_eq!(
            field_of(params),
            None,
            "a window with nothing in it, not an error"
        );
        for (page, field) in [
            ("1000000", None),
            ("1000001", Some("page")),
            ("2147483648", Some("page")),
        ] {
            let params = EventLogParams {
                page: Some(page.into()),
                ..Default::default()
            };
            assert_eq!(field_of(params).as_deref(), field, "{page}");
        }
    }

    #[test]
    fn times_with_offsets_are_read_as_utc() {
        for raw in ["2026-01-02T03:00:00+02:00", "2026-01-02T03:00:00 02:00"] {
            let params = EventLogParams {
                since: Some(raw.into()),
                ..Default::default()
            };
            let since = params.parse().ok().and_then(|q| q.since).map(|t| t.to_rfc3339());
            assert_eq!(since.as_deref(), Some("2026-01-02T01:00:00+00:00"), "{raw}");
        }
    }
}
