//! Container output as the API serves it, for any container docker-watcher runs (an instance's,
//! an accessory's): the last lines as JSON, the same lines followed live as Server-Sent Events,
//! and the same lines as a plain-text download. The resource handlers find the container and the
//! secret values to mask; everything after that is here, so each way of reading masks alike.
//!
//! The live stream sends `event: line` messages whose `data` is a [`LogLineResponse`], oldest
//! first: the last `tail` lines, then each new one as the container writes it. It ends with one
//! `event: end` message saying why (the container stopped, or the engine failed) — a client
//! should not reconnect after it — and ends without one when the application shuts down, so
//! the listener's graceful shutdown is not held open. A comment every 15 s keeps proxies from
//! closing an idle stream.

use std::convert::Infallible;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use chrono::{DateTime, SecondsFormat, Utc};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};

use super::deployments::{in_range, present};
use crate::docker::DockerError;
use crate::docker::engine::{LogLine, LogStream};
use crate::secrets::SecretMask;
use crate::web::error::{WebError, WebResult};
use crate::web::sse::KEEP_ALIVE_INTERVAL;
use crate::web::state::AppState;

/// Lines read when the client names no `tail`.
pub const DEFAULT_TAIL: u32 = 200;
/// The most lines one read (or the start of a stream) returns.
pub const MAX_TAIL: u32 = 10_000;

/// The query of the logs endpoints: how many of the last lines to send.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogsParams {
    /// The last lines to return, 0 to 10000 (0: none — for the live stream, only new lines);
    /// 200 by default.
    #[param(value_type = Option<u32>, minimum = 0, maximum = 10000)]
    pub tail: Option<String>,
}

impl LogsParams {
    /// The asked `tail`, [`DEFAULT_TAIL`] when absent; a bad one names `tail`.
    pub fn tail(&self) -> WebResult<u32> {
        Ok(present(self.tail.as_deref())
            .map(|raw| in_range("tail", raw, 0, MAX_TAIL))
            .transpose()?
            .unwrap_or(DEFAULT_TAIL))
    }
}

/// One message of a logs stream as the OpenAPI document describes it (for a
/// `text/event-stream` answer the schema is that of each message).
#[derive(utoipa::ToSchema)]
#[expect(
    dead_code,
    reason = "documents the wire format; axum's `Sse` writes the messages"
)]
pub struct LogStreamMessage {
    /// `line` (`data`: a LogLineResponse as JSON), or `end` once (`data`: `{"reason"}`).
    #[schema(pattern = "^(line|end)$", example = "line")]
    event: String,
    /// JSON, as `event` says.
    data: String,
}

/// One line of a container's output.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LogLineResponse {
    /// `stdout` or `stderr`.
    #[schema(example = "stdout")]
    pub stream: String,
    /// When the engine received the line (RFC 3339, UTC); null when it did not say.
    #[schema(required = true, value_type = Option<String>, format = DateTime)]
    pub time: Option<DateTime<Utc>>,
    pub text: String,
}

impl LogLineResponse {
    /// The line as served: secret values masked.
    pub fn masked(line: LogLine, mask: &SecretMask) -> Self {
        Self {
            stream: match line.stream {
                LogStream::Stdout => "stdout".into(),
                LogStream::Stderr => "stderr".into(),
            },
            time: line.time,
            text: mask.apply(&line.text).into_owned(),
        }
    }

    /// The line in a downloaded log file: time, stream, text.
    pub fn to_text_line(&self) -> String {
        let time = self.time.map_or_else(
            || "-".to_owned(),
            |t| t.to_rfc3339_opts(SecondsFormat::Millis, true),
        );
        format!("{time} {} {}\n", self.stream, self.text)
    }
}

/// The container whose output a request reads, and the secret values its output must not show.
pub struct ContainerLogs {
    pub container_id: String,
    pub mask: SecretMask,
    /// What the container belongs to, for messages: "instance 7", "accessory db".
    pub owner: String,
}

impl ContainerLogs {
    /// The last `tail` lines, masked.
    pub async fn read(&self, state: &AppState, tail: u32) -> WebResult<Vec<LogLineResponse>> {
        let lines = state
            .engine
            .logs(&self.container_id, tail)
            .await
            .map_err(|e| self.engine_error(e))?;
        Ok(lines
            .into_iter()
            .map(|line| LogLineResponse::masked(line, &self.mask))
            .collect())
    }

    /// The last `tail` lines, then the new ones as they come, as Server-Sent Events.
    pub fn follow(
        self,
        state: &AppState,
        tail: u32,
    ) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>> + use<>> {
        let shutdown = state.shutdown.clone();
        let lines = state.engine.follow_logs(&self.container_id, tail);
        let Self { mask, owner, .. } = self;
        let messages = lines
            .map(move |item| match item {
                Ok(line) => line_message(&LogLineResponse::masked(line, &mask)),
                Err(error) => end_message(&format!("reading the output of {owner} failed: {error}")),
            })
            // An error is the last item of the engine's stream; a stream that just ends means
            // the container stopped.
            .chain(futures::stream::once(async {
                end_message("the container stopped")
            }))
            .scan(false, |ended, message| {
                let first_end = message.1;
                let keep = !*ended;
                *ended |= first_end;
                futures::future::ready(keep.then_some(message.0))
            })
            .take_until(async move { shutdown.cancelled_owned().await })
            .map(Ok);
        Sse::new(messages).keep_alive(KeepAlive::new().interval(KEEP_ALIVE_INTERVAL))
    }

    /// The engine's failure as an answer: a container that is gone is a conflict (the record
    /// outlived it), an engine that is away is 503.
    fn engine_error(&self, error: DockerError) -> WebError {
        match error {
            DockerError::NotFound => {
                WebError::conflict(None, format!("the container of {} no longer exists", self.owner))
            }
            e if e.is_unavailable() => WebError::unavailable(format!("{e}")),
            e => WebError::internal(e),
        }
    }
}

/// A `line` message; the flag says whether it ends the stream (never).
fn line_message(line: &LogLineResponse) -> (SseEvent, bool) {
    let data = serde_json::to_string(line).unwrap_or_default();
    (SseEvent::default().event("line").data(data), false)
}

/// The `end` message with its reason; it ends the stream.
fn end_message(reason: &str) -> (SseEvent, bool) {
    let data = serde_json::json!({ "reason": reason }).to_string();
    (SseEvent::default().event("end").data(data), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_is_bounded_and_named_when_bad() {
        let params = |raw: &str| LogsParams {
            tail: Some(raw.to_owned()),
        };
        assert_eq!(LogsParams::default().tail().ok(), Some(DEFAULT_TAIL));
        assert_eq!(params("0").tail().ok(), Some(0));
        assert_eq!(params("10000").tail().ok(), Some(10_000));
        for bad in ["10001", "-1", "many", "4294967296"] {
            let error = params(bad).tail().expect_err(bad);
            assert_eq!(error.field.as_deref(), Some("tail"), "{bad}");
        }
    }

    #[test]
    fn a_line_is_masked_and_keeps_its_time_for_the_download() {
        let mask = SecretMask::new(vec!["hunter22".to_owned()]);
        let time = DateTime::parse_from_rfc3339("2026-12-03T16:20:01.5Z")
            .unwrap()
            .with_timezone(&Utc);
        let line = LogLineResponse::masked(
            LogLine {
                stream: LogStream::Stderr,
                time: Some(time),
                text: "password=hunter22".into(),
            },
            &mask,
        );
        assert_eq!(line.text, "password=[secret]");
        assert_eq!(
            line.to_text_line(),
            "2026-12-03T16:20:01.500Z stderr password=[secret]\n"
        );
        let untimed = LogLineResponse {
            stream: "stdout".into(),
            time: None,
            text: "hi".into(),
        };
        assert_eq!(untimed.to_text_line(), "- stdout hi\n");
    }
}
