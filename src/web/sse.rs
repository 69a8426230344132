//! `GET /api/events/stream`: the event log, live, as Server-Sent Events (SPEC §3). Each event
//! is `id: <event id>`, `event: event`, `data: <event JSON>`; a comment every 15 s keeps proxies
//! from closing an idle stream. `?all=1` adds the transient `info`/`debug` events, which have no
//! id and cannot be replayed.
//!
//! Resuming (`Last-Event-ID`, or `?last_event_id=` for clients that cannot set headers) is
//! gap-free and duplicate-free without pausing publishers: the handler subscribes to the bus
//! *before* reading the store, the stream replays every stored event after the given id in
//! ascending pages, then forwards live events, dropping those whose id it has already sent. That
//! works because the bus commits a persisted event before broadcasting it and broadcasts in id
//! order (see `crate::events`). A subscriber that falls so far behind that the channel drops
//! events (`Lagged`) is counted in `event_bus_lagged` and catches up from the store the same way.
//!
//! The stream ends when the application shuts down, so the listener's graceful shutdown is not
//! held open by connected browsers (which reconnect, with `Last-Event-ID`, to the next process).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::Stream;
use prometheus_client::metrics::gauge::Gauge;
use serde::Deserialize;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::domain::event::Event;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::web::auth::Viewer;
use crate::web::error::{ErrorBody, WebError, WebResult};
use crate::web::extract::ApiQuery;
use crate::web::state::AppState;

/// How often an idle stream sends a keep-alive comment.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(15);

/// How many stored events one replay query reads.
const REPLAY_PAGE: u32 = 200;

/// The header a reconnecting `EventSource` sends.
const LAST_EVENT_ID: &str = "last-event-id";

/// The query of `GET /api/events/stream`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventStreamParams {
    /// `1` (or `true`) adds the transient `info`/`debug` events, which have no id.
    #[param(value_type = Option<bool>, example = "1")]
    pub all: Option<String>,
    /// Resume after this event id, for clients that cannot send the `Last-Event-ID` header;
    /// the header wins when both are sent.
    #[param(value_type = Option<i64>, minimum = 0)]
    pub last_event_id: Option<String>,
}

/// One message of `GET /api/events/stream` as the OpenAPI document describes it: for a
/// `text/event-stream` answer the schema is that of each message, not of the whole stream.
#[derive(utoipa::ToSchema)]
#[expect(
    dead_code,
    reason = "documents the wire format; axum's `Sse` writes the messages"
)]
pub struct EventStreamMessage {
    /// Always `event`.
    #[schema(pattern = "^event$", example = "event")]
    event: String,
    /// The Event, as JSON.
    data: String,
    /// The event's id, for `Last-Event-ID`; transient events have none (a client keeps the last
    /// one it saw).
    id: Option<String>,
}

/// The live event stream (Server-Sent Events). Each message is `id: <event id>` (absent for
/// transient events), `event: event`, `data: <Event JSON>`. A reconnecting client resumes with
/// the `Last-Event-ID` header (browsers send it themselves) or `?last_event_id=`.
#[utoipa::path(
    get,
    path = "/api/events/stream",
    tag = "events",
    params(EventStreamParams),
    responses(
        (status = 200, content_type = "text/event-stream", body = EventStreamMessage, description = "the stream itself: `event` messages whose `data` is an Event as JSON"),
        (status = 400, body = ErrorBody, description = "a bad `all`, `last_event_id` or `Last-Event-ID`"),
        (status = 401, body = ErrorBody),
    ),
    security(("token" = []), ("session" = [])),
)]
pub async fn events_stream_get(
    _: Viewer,
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(params): ApiQuery<EventStreamParams>,
) -> WebResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let all = flag("all", params.all.as_deref())?;
    let header = headers
        .get(LAST_EVENT_ID)
        .map(|v| {
            v.to_str()
                .map_err(|_| WebError::validation("Last-Event-ID", "Last-Event-ID must be an event id"))
        })
        .transpose()?;
    let resume_after = match present(header) {
        Some(raw) => Some(event_id("Last-Event-ID", raw)?),
        None => present(params.last_event_id.as_deref())
            .map(|raw| event_id("last_event_id", raw))
            .transpose()?,
    };

    // Subscribe before reading the store: anything committed after this line is received live.
    let live = state.bus.subscribe(all);
    let latest = state.store.latest_event_id().await?.unwrap_or(0);
    // An id above the newest stored one comes from another database (a reset data dir): resume
    // from the newest, or the ids below it would be dropped as already sent.
    let cursor = resume_after.map_or(latest, |after| after.min(latest));
    let stream = EventStream {
        store: state.store.clone(),
        live,
        cursor,
        catching_up: cursor < latest,
        backlog: VecDeque::new(),
        shutdown: state.shutdown.clone(),
        metrics: state.metrics.clone(),
        _client: ConnectedClient::new(&state.metrics.sse_clients),
    };
    let stream = futures::stream::unfold(stream, |mut stream| async move {
        let event = stream.next().await?;
        Some((Ok(event), stream))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE_INTERVAL)))
}

/// One connected client's position in the event log.
struct EventStream {
    store: Store,
    live: broadcast::Receiver<Arc<Event>>,
    /// The id of the last persisted event sent, or known to the client; nothing at or below it is
    /// sent again.
    cursor: i64,
    /// Whether the store may hold events after `cursor` that were not received live.
    catching_up: bool,
    /// Stored events read but not yet sent, ascending.
    backlog: VecDeque<Event>,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
    _client: ConnectedClient,
}

impl EventStream {
    /// The next message, or `None` when the stream ends (shutdown, or the store failed during a
    /// replay: the client reconnects with its last id and nothing is lost).
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if self.shutdown.is_cancelled() {
                return None;
            }
            if let Some(event) = self.backlog.pop_front() {
                if let Some(message) = self.message(&event) {
                    return Some(message);
                }
                continue;
            }
            if self.catching_up {
                match self.store.events_after(self.cursor, REPLAY_PAGE).await {
                    Ok(page) => {
                        self.catching_up = page.len() >= REPLAY_PAGE as usize;
                        self.backlog.extend(page);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, after = self.cursor, "ending an event stream: replaying from the store failed");
                        return None;
                    }
                }
                continue;
            }
            let received = tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return None,
                received = self.live.recv() => received,
            };
            match received {
                Ok(event) => {
                    if let Some(message) = self.message(&event) {
                        return Some(message);
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    // Persisted events among the missed ones are in the store; transient ones
                    // are gone, as their name says.
                    self.metrics.event_bus_lagged.inc_by(missed);
                    self.catching_up = true;
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }

    /// The message for `event`, or `None` when it was already sent (or cannot be encoded).
    fn message(&mut self, event: &Event) -> Option<SseEvent> {
        if let Some(id) = event.id {
            if id <= self.cursor {
                return None;
            }
            self.cursor = id;
        }
        sse_message(event)
    }
}

/// Encodes an event as one SSE message.
pub fn sse_message(event: &Event) -> Option<SseEvent> {
    let data = match serde_json::to_string(event) {
        Ok(data) => data,
        Err(e) => {
            tracing::error!(error = %e, "could not encode an event for the stream; skipped it");
            return None;
        }
    };
    let message = SseEvent::default().event("event").data(data);
    Some(match event.id {
        Some(id) => message.id(id.to_string()),
        None => message,
    })
}

/// Counts an open stream in `sse_clients` for as long as it lives.
struct ConnectedClient(Gauge);

impl ConnectedClient {
    fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for ConnectedClient {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn present(raw: Option<&str>) -> Option<&str> {
    raw.map(str::trim).filter(|s| !s.is_empty())
}

fn event_id(field: &str, raw: &str) -> WebResult<i64> {
    raw.parse::<i64>().ok().filter(|id| *id >= 0).ok_or_else(|| {
        WebError::validation(
            field,
            format!("{field} must be an event id (a non-negative integer), not '{raw}'"),
        )
    })
}

fn flag(field: &str, raw: Option<&str>) -> WebResult<bool> {
    match present(raw).map(str::to_ascii_lowercase).as_deref() {
        None | Some("0" | "false" | "no" | "off") => Ok(false),
        Some("1" | "true" | "yes" | "on") => Ok(true),
        Some(other) => Err(WebError::validation(
            field,
            format!("{field} must be 1 or 0, not '{other}'"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::{NewEvent, Source};

    #[test]
    fn flags_read_the_usual_spellings() {
        assert_eq!(flag("all", None).ok(), Some(false));
        assert_eq!(flag("all", Some("1")).ok(), Some(true));
        assert_eq!(flag("all", Some("TRUE")).ok(), Some(true));
        assert_eq!(flag("all", Some("0")).ok(), Some(false));
        assert_eq!(
            flag("all", Some("maybe")).err().and_then(|e| e.field).as_deref(),
            Some("all")
        );
    }

    #[test]
    fn event_ids_are_non_negative_integers() {
        assert_eq!(event_id("Last-Event-ID", "42").ok(), Some(42));
        assert_eq!(
            event_id("Last-Event-ID", "-1")
                .err()
                .and_then(|e| e.field)
                .as_deref(),
            Some("Last-Event-ID")
        );
        assert!(event_id("last_event_id", "abc").is_err());
    }

    /// Builds a stream on a channel of two slots, and the store behind it.
    async fn lagging_stream(
        dir: &tempfile::TempDir,
    ) -> (EventStream, broadcast::Sender<Arc<Event>>, Store, Arc<Metrics>) {
        let store = Store::open(dir.path()).await.expect("the store opens");
        let (sender, live) = broadcast::channel(2);
        let metrics = Arc::new(Metrics::new());
        let stream = EventStream {
            store: store.clone(),
            live,
            cursor: 0,
            catching_up: false,
            backlog: VecDeque::new(),
            shutdown: CancellationToken::new(),
            metrics: metrics.clone(),
            _client: ConnectedClient::new(&metrics.sse_clients),
        };
        (stream, sender, store, metrics)
    }

    fn id_of(message: Option<SseEvent>) -> String {
        let debug = format!("{message:?}");
        debug
            .split("id: ")
            .nth(1)
            .and_then(|rest| rest.split('\\').next())
            .unwrap_or("")
            .to_owned()
    }

    #[tokio::test]
    async fn a_lagging_client_resyncs_from_the_store_without_gaps_or_repeats() {
        let dir = tempfile::tempdir().expect("a temporary dir");
        let (mut stream, sender, store, metrics) = lagging_stream(&dir).await;
        assert_eq!(metrics.sse_clients.get(), 1);
        // Five events stored and broadcast before the client reads: the channel keeps the last
        // two, so the client lags by three.
        for n in 1..=5 {
            let event = NewEvent::warn(Source::Poller, format!("e{n}"));
            let stored = store
                .insert_event(&event, chrono::Utc::now())
                .await
                .expect("stored");
            let _ = sender.send(Arc::new(stored));
        }
        let received: Vec<String> = {
            let mut ids = Vec::new();
            for _ in 0..5 {
                ids.push(id_of(stream.next().await));
            }
            ids
        };
        assert_eq!(received, ["1", "2", "3", "4", "5"]);
        assert_eq!(metrics.event_bus_lagged.get(), 3);
        // The two events still in the channel were replayed already: nothing more comes.
        let next = tokio::time::timeout(Duration::from_millis(100), stream.next()).await;
        assert!(next.is_err(), "no duplicate may follow: {next:?}");
        drop(stream);
        assert_eq!(metrics.sse_clients.get(), 0);
    }

    #[tokio::test]
    async fn a_stream_ends_at_shutdown() {
        let dir = tempfile::tempdir().expect("a temporary dir");
        let (mut stream, _sender, _store, _) = lagging_stream(&dir).await;
        stream.shutdown.cancel();
        assert!(stream.next().await.is_none());
    }

    #[test]
    fn a_message_carries_the_id_only_for_stored_events() {
        let mut event = Event {
            id: Some(7),
            ts: chrono::Utc::now(),
            severity: crate::domain::event::Severity::Warn,
            source: crate::domain::event::Source::Poller,
            message: "m".to_owned(),
            project_id: None,
            stage_id: None,
            instance_id: None,
            details: serde_json::Map::new(),
        };
        // axum's Event exposes no getters; its Debug output shows the encoded buffer.
        let stored = format!("{:?}", sse_message(&event));
        assert!(stored.contains("id: 7"), "{stored}");
        assert!(stored.contains("event: event"), "{stored}");
        event.id = None;
        let transient = format!("{:?}", sse_message(&event));
        assert!(!transient.contains("id: "), "{transient}");
    }
}
