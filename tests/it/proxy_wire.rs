//! The proxy's request parsing on the wire, as strict as RFC 9112 and nginx: one row per rule,
//! named after its section, sent as raw bytes to the real proxy listener in front of a
//! recording upstream. Each row says what the client gets back and what — if anything — the
//! upstream receives, so a request the proxy must refuse is proven never to reach an
//! application (no request smuggling through a looser reading than the upstream's).
//!
//! The codec's own table (`src/proxy/codec/conformance.rs`) checks the same rules without
//! sockets, and `proxy_differential.rs` compares the codec with a reference parser.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{ApiClient, spawn_app};

/// What the recording upstream received: each request's head as text and its body.
type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// An upstream that records every request it gets (head and body, by `Content-Length` or
/// chunked) and answers each with `200 ok`.
async fn start_recording_upstream() -> (SocketAddr, Received) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let addr = listener.local_addr().expect("an address");
    let received: Received = Arc::default();
    let log = received.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(end) =
                        fill_until(&mut stream, &mut buf, |b| find(b, b"\r\n\r\n").map(|at| at + 4)).await
                    else {
                        return;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    let lower = head.to_ascii_lowercase();
                    let length = lower
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok());
                    let body = if lower.contains("\r\ntransfer-encoding: chunked\r\n") {
                        let Some(body_end) = fill_until(&mut stream, &mut buf, |b| {
                            find(&b[end..], b"0\r\n\r\n").map(|at| end + at + 5)
                        })
                        .await
                        else {
                            return;
                        };
                        let body = dechunk(&buf[end..body_end]);
                        buf.drain(..body_end);
                        log.lock().unwrap().push((head, body));
                        if stream.write_all(OK).await.is_err() {
                            return;
                        }
                        continue;
                    } else {
                        let total = end + length.unwrap_or(0);
                        if fill_until(&mut stream, &mut buf, |b| (b.len() >= total).then_some(total))
                            .await
                            .is_none()
                        {
                            return;
                        }
                        buf[end..total].to_vec()
                    };
                    let used = end + body.len();
                    buf.drain(..used);
                    log.lock().unwrap().push((head, body));
                    if stream.write_all(OK).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, received)
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

/// The data of a chunked body as the proxy writes it (sizes in hex, no extensions).
fn dechunk(mut wire: &[u8]) -> Vec<u8> {
    let mut data = Vec::new();
    while let Some(line_end) = find(wire, b"\r\n") {
        let size =
            usize::from_str_radix(std::str::from_utf8(&wire[..line_end]).unwrap_or("0"), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        data.extend_from_slice(&wire[line_end + 2..line_end + 2 + size]);
        wire = &wire[line_end + 2 + size + 2..];
    }
    data
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Reads into `buf` until `done` finds what it needs; `None` when the peer closes first.
async fn fill_until(
    stream: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
    done: impl Fn(&[u8]) -> Option<usize>,
) -> Option<usize> {
    loop {
        if let Some(at) = done(buf) {
            return Some(at);
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Writes raw bytes on a fresh connection and reads the first answer's status line (the
/// proxy closes after a refusal; an accepted request gets its answer, then we close).
async fn status_of(proxy: SocketAddr, request: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(proxy).await.expect("a connection");
    stream.write_all(request).await.expect("the request is written");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let mut chunk = [0u8; 4096];
        while find(&answer, b"\r\n").is_none() {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&answer);
    text.lines().next().unwrap_or("").to_owned()
}

async fn create_proxy(admin: &ApiClient, hostname: &str, upstream: SocketAddr) {
    let (status, body) = admin
        .post(
            "/api/proxies",
            json!({"name": hostname, "hostname": hostname, "target_url": format!("http://{upstream}/")}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// What a row expects the upstream to receive.
enum Upstream {
    /// Nothing: the proxy refused the request itself.
    Nothing,
    /// This request line, and this body.
    Got { line: &'static str, body: &'static [u8] },
    /// A request whose head has none of these field names (case-insensitive) and has these.
    Fields {
        absent: &'static [&'static str],
        present: &'static [&'static str],
    },
}

struct Row {
    rule: &'static str,
    request: &'static [u8],
    status: u16,
    upstream: Upstream,
}

const fn refused(rule: &'static str, request: &'static [u8], status: u16) -> Row {
    Row {
        rule,
        request,
        status,
        upstream: Upstream::Nothing,
    }
}

const fn passed(rule: &'static str, request: &'static [u8], line: &'static str, body: &'static [u8]) -> Row {
    Row {
        rule,
        request,
        status: 200,
        upstream: Upstream::Got { line, body },
    }
}

/// The rules, one per row. Host `wire.test` is routed to the recording upstream.
const ROWS: &[Row] = &[
    passed(
        "RFC 9112 §6.2: a Content-Length body goes upstream as it is",
        b"POST /a HTTP/1.1\r\nHost: wire.test\r\nContent-Length: 5\r\n\r\nhello",
        "POST /a HTTP/1.1",
        b"hello",
    ),
    passed(
        "RFC 9112 §7.1: a chunked body with extensions and trailers is decoded",
        b"POST /a HTTP/1.1\r\nHost: wire.test\r\nTransfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
        "POST /a HTTP/1.1",
        b"hello",
    ),
    passed(
        "RFC 9112 §7: transfer-coding names are case-insensitive (as in nginx)",
        b"POST /a HTTP/1.1\r\nHost: wire.test\r\nTransfer-Encoding: Chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
        "POST /a HTTP/1.1",
        b"hi",
    ),
    refused(
        "RFC 9112 §3.2: two Host fields are refused",
        b"GET / HTTP/1.1\r\nHost: wire.test\r\nHost: other.test\r\n\r\n",
        400,
    ),
    refused(
        "RFC 9112 §3.2: an HTTP/1.1 request without Host is refused, even in absolute form",
        b"GET http://wire.test/ HTTP/1.1\r\n\r\n",
        400,
    ),
    refused(
        "RFC 9112 §3.2: a Host that is not a valid authority is refused",
        b"GET / HTTP/1.1\r\nHost: wire.test/../x\r\n\r\n",
        400,
    ),
    refused(
        "RFC 9112 §6.3: Content-Length repeated, even with equal values, is refused (nginx)",
        b"POST / HTTP/1.1\r\nHost: wire.test\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        400,
    ),
    refused(
        "RFC 9110 §8.6: Content-Length as a list is refused",
        b"POST / HTTP/1.1\r\nHost: wire.test\r\nContent-Length: 5, 5\r\n\r\nhello",
        400,
    ),
    refused(
        "RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 request is refused",
        b"POST / HTTP/1.0\r\nHost: wire.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        400,
    ),
    refused(
        "RFC 9112 §6.1: Transfer-Encoding with Content-Length is refused (nginx)",
        b"POST / HTTP/1.1\r\nHost: wire.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        400,
    ),
    refused(
        "RFC 9112 §6.1: a transfer coding the proxy cannot decode gets 501",
        b"POST / HTTP/1.1\r\nHost: wire.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
        501,
    ),
    refused(
        "RFC 9112 §6.1: Transfer-Encoding repeated is refused (nginx)",
        b"POST / HTTP/1.1\r\nHost: wire.test\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    refused(
        "RFC 9112 §7.1: a chunk-size line without a hex digit is refused",
        b"POST / HTTP/1.1\r\nHost: wire.test\r\nTransfer-Encoding: chunked\r\n\r\n;ext\r\n\r\n",
        400,
    ),
    refused(
        "RFC 9112 §7.1: an empty chunk-size line is refused",
        b"POST / HTTP/1.1\r\nHost: wire.test\r\nTransfer-Encoding: chunked\r\n\r\n\r\n\r\n",
        400,
    ),
    refused(
        "RFC 9112 §7.1: a chunk-size line ended by a bare LF is refused",
        b"POST / HTTP/1.1\r\nHost: wire.test\r\nTransfer-Encoding: chunked\r\n\r\n2\nhi\r\n0\r\n\r\n",
        400,
    ),
    refused(
        "RFC 9112 §7.1: a chunk size that overflows is refused",
        b"POST / HTTP/1.1\r\nHost: wire.test\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000001\r\nhi\r\n",
        400,
    ),
    passed(
        "RFC 9112 §3.2.4: OPTIONS * goes upstream as OPTIONS *",
        b"OPTIONS * HTTP/1.1\r\nHost: wire.test\r\n\r\n",
        "OPTIONS * HTTP/1.1",
        b"",
    ),
    refused(
        "RFC 9112 §3.2.4: the asterisk form with any other method is refused",
        b"GET * HTTP/1.1\r\nHost: wire.test\r\n\r\n",
        400,
    ),
    refused(
        "RFC 9112 §3.2: a request target that is no URI reference is refused",
        b"GET \xff\xfe HTTP/1.1\r\nHost: wire.test\r\n\r\n",
        400,
    ),
    refused(
        "RFC 9112 §5.1: whitespace between a field name and its colon is refused",
        b"GET / HTTP/1.1\r\nHost: wire.test\r\nContent-Length : 5\r\n\r\nhello",
        400,
    ),
    Row {
        rule: "nginx underscores_in_headers off: field names with `_` are dropped, not forwarded",
        request: b"POST / HTTP/1.1\r\nHost: wire.test\r\nContent_Length: 900\r\nTransfer_Encoding: chunked\r\nX_Custom: 1\r\nX-Kept: 1\r\nContent-Length: 2\r\n\r\nhi",
        status: 200,
        upstream: Upstream::Fields {
            absent: &["content_length", "transfer_encoding", "x_custom"],
            present: &["x-kept: 1", "content-length: 2"],
        },
    },
];

#[tokio::test]
async fn requests_are_read_as_strictly_as_rfc_9112_and_nginx() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let (upstream, received) = start_recording_upstream().await;
    create_proxy(&admin, "wire.test", upstream).await;
    let proxy = app.app().proxy_addr();

    let mut failures = Vec::new();
    for row in ROWS {
        received.lock().unwrap().clear();
        let status = status_of(proxy, row.request).await;
        // The upstream has answered by the time the client has; give a refused request's
        // bytes a moment anyway in case something was forwarded.
        if matches!(row.upstream, Upstream::Nothing) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let got = received.lock().unwrap().clone();
        let expected_status = format!("HTTP/1.1 {} ", row.status);
        let upstream_ok = match &row.upstream {
            Upstream::Nothing => got.is_empty(),
            Upstream::Got { line, body } => {
                got.len() == 1 && got[0].0.lines().next() == Some(*line) && got[0].1 == *body
            }
            Upstream::Fields { absent, present } => {
                got.len() == 1 && {
                    let head = got[0].0.to_ascii_lowercase();
                    absent.iter().all(|name| !head.contains(&format!("\r\n{name}:")))
                        && present
                            .iter()
                            .all(|field| head.contains(&format!("\r\n{field}\r\n")))
                }
            }
        };
        if !status.starts_with(&expected_status) || !upstream_ok {
            failures.push(format!(
                "{}\n    client got {status:?} (expected {expected_status:?}), upstream got {:?}",
                row.rule,
                got.iter()
                    .map(|(h, b)| format!("{h}{}", String::from_utf8_lossy(b)))
                    .collect::<Vec<_>>()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} rule(s) broken:\n{}",
        failures.len(),
        failures.join("\n")
    );
    app.stop().await;
}
