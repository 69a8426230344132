//! Container output as lines: the engine's log frames (one per write, with the engine's
//! timestamp in front when asked for) cut into [`LogLine`]s, for a one-off read and for a
//! followed stream alike.
//!
//! A frame is not a line. Without a TTY the engine usually sends one frame per line, but a long
//! line may come in several frames and one frame may hold several lines; with a TTY it sends raw
//! chunks. [`LineSplitter`] keeps the unfinished end of each stream until its newline arrives, so
//! a followed line is never shown in pieces, and [`LineSplitter::finish`] flushes what is left
//! when the stream ends. The timestamp the engine puts before each line (RFC 3339 with
//! nanoseconds, then one space) becomes [`LogLine::time`]; a line without one keeps its text.

use bollard::container::LogOutput;
use chrono::{DateTime, Utc};

use super::engine::{LogLine, LogStream};

/// The longest unfinished line kept while waiting for its newline; longer output is cut into
/// lines of this size so a process that never prints a newline cannot grow the buffer forever.
const MAX_PENDING: usize = 64 * 1024;

/// Cuts log frames into lines, per stream.
#[derive(Debug, Default)]
pub(super) struct LineSplitter {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl LineSplitter {
    /// The complete lines `frame` finishes (none, one or several).
    pub(super) fn push(&mut self, frame: LogOutput) -> Vec<LogLine> {
        let (stream, message) = match frame {
            LogOutput::StdOut { message } | LogOutput::Console { message } => (LogStream::Stdout, message),
            LogOutput::StdErr { message } => (LogStream::Stderr, message),
            LogOutput::StdIn { .. } => return Vec::new(),
        };
        let pending = self.pending(stream);
        pending.extend_from_slice(&message);
        let mut lines = Vec::new();
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let rest = pending.split_off(end + 1);
            let line = std::mem::replace(pending, rest);
            lines.push(parse_line(stream, &line[..end]));
        }
        if pending.len() > MAX_PENDING {
            let line = std::mem::take(pending);
            lines.push(parse_line(stream, &line));
        }
        lines
    }

    /// What is left unfinished when the stream ends: stdout's last line, then stderr's.
    pub(super) fn finish(&mut self) -> Vec<LogLine> {
        [LogStream::Stdout, LogStream::Stderr]
            .into_iter()
            .filter_map(|stream| {
                let rest = std::mem::take(self.pending(stream));
                (!rest.is_empty()).then(|| parse_line(stream, &rest))
            })
            .collect()
    }

    fn pending(&mut self, stream: LogStream) -> &mut Vec<u8> {
        match stream {
            LogStream::Stdout => &mut self.stdout,
            LogStream::Stderr => &mut self.stderr,
        }
    }
}

/// Every line of a finished read, in order.
pub(super) fn lines_of(frames: Vec<LogOutput>) -> Vec<LogLine> {
    let mut splitter = LineSplitter::default();
    let mut lines: Vec<LogLine> = frames.into_iter().flat_map(|f| splitter.push(f)).collect();
    lines.extend(splitter.finish());
    lines
}

/// One line (without its newline): the engine's timestamp split off when there is one, a
/// trailing `\r` (from a TTY) dropped, bytes that are not UTF-8 replaced.
fn parse_line(stream: LogStream, bytes: &[u8]) -> LogLine {
    let text = String::from_utf8_lossy(bytes);
    let text = text.strip_suffix('\r').unwrap_or(&text);
    let (time, text) = match text.split_once(' ') {
        Some((stamp, rest)) => match DateTime::parse_from_rfc3339(stamp) {
            Ok(time) => (Some(time.with_timezone(&Utc)), rest),
            Err(_) => (None, text),
        },
        // A line that is only a timestamp is an empty line the engine stamped.
        None => match DateTime::parse_from_rfc3339(text) {
            Ok(time) => (Some(time.with_timezone(&Utc)), ""),
            Err(_) => (None, text),
        },
    };
    LogLine {
        stream,
        time,
        text: text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn out(text: &str) -> LogOutput {
        LogOutput::StdOut {
            message: Bytes::from(text.to_owned()),
        }
    }

    fn err(text: &str) -> LogOutput {
        LogOutput::StdErr {
            message: Bytes::from(text.to_owned()),
        }
    }

    fn texts(lines: &[LogLine]) -> Vec<&str> {
        lines.iter().map(|l| l.text.as_str()).collect()
    }

    #[test]
    fn the_engine_timestamp_becomes_the_line_time_and_leaves_the_text() {
        let lines = lines_of(vec![out("2026-12-03T16:20:01.123456789Z listening on :8080\n")]);
        assert_eq!(texts(&lines), ["listening on :8080"]);
        let time = lines[0].time.expect("a time");
        assert_eq!(time.to_rfc3339(), "2026-12-03T16:20:01.123456789+00:00");
        assert_eq!(lines[0].stream, LogStream::Stdout);
    }

    #[test]
    fn a_line_without_a_timestamp_keeps_all_its_text() {
        let lines = lines_of(vec![err("panic: at the disco\n"), out("plain\n")]);
        assert_eq!(texts(&lines), ["panic: at the disco", "plain"]);
        assert!(lines.iter().all(|l| l.time.is_none()));
        assert_eq!(lines[0].stream, LogStream::Stderr);
    }

    #[test]
    fn a_stamped_empty_line_is_an_empty_line_with_its_time() {
        let lines = lines_of(vec![
            out("2026-12-03T16:20:01Z \n"),
            out("2026-12-03T16:20:02Z\n"),
        ]);
        assert_eq!(texts(&lines), ["", ""]);
        assert!(lines.iter().all(|l| l.time.is_some()));
    }

    #[test]
    fn a_line_split_over_frames_comes_out_once_and_whole() {
        let mut splitter = LineSplitter::default();
        assert!(splitter.push(out("2026-12-03T16:20:01Z hel")).is_empty());
        assert!(
            splitter.push(err("warn")).is_empty(),
            "stderr's piece waits on its own"
        );
        let lines = splitter.push(out("lo\nwor"));
        assert_eq!(texts(&lines), ["hello"]);
        let lines = splitter.push(err("ing\n"));
        assert_eq!(texts(&lines), ["warning"]);
        assert_eq!(lines[0].stream, LogStream::Stderr);
        assert_eq!(texts(&splitter.finish()), ["wor"]);
        assert!(splitter.finish().is_empty(), "finish empties the buffers");
    }

    #[test]
    fn several_lines_in_one_frame_and_tty_carriage_returns() {
        let lines = lines_of(vec![LogOutput::Console {
            message: Bytes::from_static(b"one\r\ntwo\r\nthree"),
        }]);
        assert_eq!(texts(&lines), ["one", "two", "three"]);
    }

    #[test]
    fn output_without_newlines_is_cut_instead_of_growing_forever() {
        let mut splitter = LineSplitter::default();
        let chunk = "x".repeat(40 * 1024);
        assert!(splitter.push(out(&chunk)).is_empty());
        let lines = splitter.push(out(&chunk));
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].text.len(), 80 * 1024);
        assert!(splitter.finish().is_empty());
    }

    #[test]
    fn bytes_that_are_not_utf8_are_replaced_not_dropped() {
        let lines = lines_of(vec![LogOutput::StdOut {
            message: Bytes::from_static(b"caf\xe9\n"),
        }]);
        assert_eq!(texts(&lines), ["caf\u{fffd}"]);
    }
}
