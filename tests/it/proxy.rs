//! The reverse proxy through its real listener (SPEC §3 "Reverse proxy"): routing by `Host`
//! (case and port ignored), the 404 page for unknown hosts and no open proxy, 502 when the
//! upstream refuses and 504 when it is slow, `X-Forwarded-*` and hop-by-hop stripping,
//! `preserve_host` and a path in `target_url`, large bodies streamed both ways in bounded memory,
//! WebSockets tunnelled, API changes live at once, TLS with SNI and the HTTP→HTTPS redirect, and
//! per-route metrics — against local upstream servers started by each test.
//!
//! Then against real containers deployed by the real deploy flow: a stage's hostname reaches its
//! container, and a redeploy under continuous load loses no request while a WebSocket opened
//! before it keeps working until it closes by itself. Those containers run
//! `tests/fixtures/ws_echo.rs`, compiled here into a static binary and imported as an image.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, Query, Request};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite;

use crate::deploy::{Cleanup, create_project, instance, registry, unique};
use crate::helpers::{ApiClient, TestApp, spawn_app, spawn_app_with};

// ----- Local upstreams ------------------------------------------------------------------------

/// An upstream server on 127.0.0.1 and the number of requests it received.
struct Upstream {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

impl Upstream {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// Starts an upstream named `name`: every path describes the request it got as JSON, except
/// `/slow` (answers after 3 s), `/stall` (sends one chunk, then nothing), `/upload` (counts the
/// bytes of the body), `/download?bytes=N` (streams N bytes) and `/ws` (a WebSocket echo).
async fn start_upstream(name: &'static str) -> Upstream {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let router = Router::new()
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                "late"
            }),
        )
        .route("/stall", get(stall))
        .route("/upload", post(count_upload))
        .route("/download", get(download))
        .route("/ws", get(websocket_echo))
        .fallback(move |request: Request| async move { axum::Json(describe(name, &request)) })
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn(move |request: Request, next: Next| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                next.run(request).await
            }
        }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("an upstream port");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Upstream { addr, hits }
}

fn describe(name: &str, request: &Request) -> Value {
    let mut headers: HashMap<String, Vec<String>> = HashMap::new();
    for (key, value) in request.headers() {
        headers
            .entry(key.as_str().to_owned())
            .or_default()
            .push(value.to_str().unwrap_or("?").to_owned());
    }
    json!({
        "upstream": name,
        "method": request.method().as_str(),
        "uri": request.uri().to_string(),
        "headers": headers,
    })
}

async fn stall() -> Body {
    let first = futures::stream::once(async { Ok::<_, Infallible>(Bytes::from_static(b"first chunk")) });
    Body::from_stream(first.chain(futures::stream::pending()))
}

async fn count_upload(body: Body) -> String {
    let mut stream = body.into_data_stream();
    let mut total = 0u64;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => total += chunk.len() as u64,
            Err(e) => return format!("error after {total}: {e}"),
        }
    }
    total.to_string()
}

async fn download(Query(query): Query<HashMap<String, u64>>) -> Body {
    let total = query.get("bytes").copied().unwrap_or(0);
    let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
    Body::from_stream(futures::stream::unfold(total, move |left| {
        let chunk = chunk.clone();
        async move {
            (left > 0).then(|| {
                let n = left.min(chunk.len() as u64);
                (Ok::<_, Infallible>(chunk.slice(..n as usize)), left - n)
            })
        }
    }))
}

async fn websocket_echo(upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(|mut socket| async move {
        while let Some(Ok(message)) = socket.recv().await {
            let echoed = matches!(message, Message::Text(_) | Message::Binary(_));
            if matches!(message, Message::Close(_)) || (echoed && socket.send(message).await.is_err()) {
                break;
            }
        }
    })
}

// ----- Talking to the proxy -------------------------------------------------------------------

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().expect("a client")
}

fn proxy_url(app: &TestApp, path: &str) -> String {
    format!("http://{}{path}", app.app().proxy_addr())
}

/// A GET through the proxy with `host` as the `Host` header.
async fn get_via_proxy(app: &TestApp, host: &str, path: &str) -> reqwest::Response {
    client()
        .get(proxy_url(app, path))
        .header("host", host)
        .send()
        .await
        .expect("the proxy answers")
}

/// What an echoing upstream saw of a request through the proxy.
async fn seen_upstream(response: reqwest::Response) -> Value {
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.expect("the upstream's description")
}

/// Writes `request` on a fresh connection to `addr` and reads the whole answer.
async fn raw_exchange(addr: SocketAddr, request: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("a connection");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("the request is written");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

async fn create_proxy(admin: &ApiClient, hostname: &str, target_url: &str, preserve_host: bool) -> Value {
    let (status, body) = admin
        .post(
            "/api/proxies",
            json!({"name": hostname, "hostname": hostname, "target_url": target_url, "preserve_host": preserve_host}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

async fn metrics_text(admin: &ApiClient) -> String {
    let response = admin
        .request(reqwest::Method::GET, "/metrics")
        .send()
        .await
        .expect("metrics");
    assert_eq!(response.status(), StatusCode::OK);
    response.text().await.expect("metrics text")
}

/// The value of one sample line of the metrics text, if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

// ----- Routing --------------------------------------------------------------------------------

#[tokio::test]
async fn requests_are_routed_by_host_ignoring_case_and_port() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let (one, two) = (start_upstream("one").await, start_upstream("two").await);
    create_proxy(&admin, "one.example.test", &one.url("/"), false).await;
    create_proxy(&admin, "two.example.test", &two.url("/"), false).await;

    for host in ["one.example.test", "ONE.Example.Test:8000", "one.example.test."] {
        let seen = seen_upstream(get_via_proxy(&app, host, "/a?b=c").await).await;
        assert_eq!(
            (&seen["upstream"], &seen["uri"]),
            (&json!("one"), &json!("/a?b=c")),
            "{host}"
        );
    }
    let seen = seen_upstream(get_via_proxy(&app, "two.example.test:1234", "/").await).await;
    assert_eq!(seen["upstream"], "two");
    assert_eq!((one.hits(), two.hits()), (3, 1));
    app.stop().await;
}

#[tokio::test]
async fn an_unknown_host_gets_the_404_page_and_no_upstream_sees_it() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let upstream = start_upstream("one").await;
    create_proxy(&admin, "known.example.test", &upstream.url("/"), false).await;

    let response = get_via_proxy(&app, "unknown.example.test", "/").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(response.headers()["content-type"], "text/html; charset=utf-8");
    let page = response.text().await.expect("a page");
    assert!(page.contains("404 Not Found"), "{page}");
    assert!(
        !page.contains("unknown.example.test"),
        "nothing from the request is echoed: {page}"
    );

    // No Host at all (HTTP/1.0) is a bad request, not a guess. (The answer's version is the
    // highest the proxy speaks, RFC 9110 §2.5, as nginx does.)
    let answer = raw_exchange(app.app().proxy_addr(), "GET / HTTP/1.0\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("\r\nconnection: close\r\n"), "{answer}");
    assert_eq!(upstream.hits(), 0);
    assert_eq!(
        sample(
            &metrics_text(&admin).await,
            "docker_watcher_proxy_unmatched_requests_total"
        ),
        Some(2.0)
    );
    app.stop().await;
}

#[tokio::test]
async fn the_proxy_is_never_an_open_proxy() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let routed = start_upstream("routed").await;
    let elsewhere = start_upstream("elsewhere").await;
    create_proxy(&admin, "routed.example.test", &routed.url("/"), false).await;
    let proxy = app.app().proxy_addr();

    // An absolute-form request names its target in the URI, which wins over `Host`: a host we
    // do not route is refused even when the Host header names one we do.
    let answer = raw_exchange(
        proxy,
        &format!(
            "GET http://{}/secret HTTP/1.1\r\nHost: routed.example.test\r\nConnection: close\r\n\r\n",
            elsewhere.addr
        ),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    let answer = raw_exchange(
        proxy,
        &format!(
            "CONNECT {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            elsewhere.addr, elsewhere.addr
        ),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    assert_eq!(elsewhere.hits(), 0);

    // An absolute-form request for a routed host is served like any other, in origin form.
    let answer = raw_exchange(
        proxy,
        "GET http://routed.example.test/path?q=1 HTTP/1.1\r\nHost: other.example.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""uri":"/path?q=1""#), "{answer}");
    assert_eq!(routed.hits(), 1);
    app.stop().await;
}

// ----- Upstream failures ----------------------------------------------------------------------

#[tokio::test]
async fn an_upstream_that_refuses_gets_the_502_page_and_is_counted() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
        listener.local_addr().expect("an address")
    };
    create_proxy(&admin, "down.example.test", &format!("http://{closed}/"), false).await;

    let response = get_via_proxy(&app, "down.example.test", "/").await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert!(response.text().await.expect("a page").contains("502 Bad Gateway"));
    let metrics = metrics_text(&admin).await;
    assert_eq!(
        sample(
            &metrics,
            r#"docker_watcher_proxy_upstream_errors_total{route="down.example.test",kind="refused"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            r#"docker_watcher_proxy_requests_total{route="down.example.test",status="5xx"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
    app.stop().await;
}

/// A scripted HTTP/1.1 upstream: for each request it reads (up to the end of its head, and a
/// `Content-Length` body), it writes the next canned answer of `answers` — raw bytes, framings
/// a general server would not produce on demand — and closes the connection after an answer
/// marked to close. Returns its address and the request heads it received.
async fn start_scripted_upstream(
    answers: Vec<(&'static str, bool)>,
) -> (SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let addr = listener.local_addr().expect("an address");
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let answers = Arc::new(std::sync::Mutex::new(std::collections::VecDeque::from(answers)));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (answers, log) = (answers.clone(), log.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(end) = read_head(&mut stream, &mut buf).await else {
                        return;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    let length = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().to_owned())
                        })
                        .and_then(|v| v.parse::<usize>().ok())
                        .unwrap_or(0);
                    while buf.len() < end + length {
                        let mut chunk = [0u8; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..end + length);
                    log.lock().unwrap().push(head);
                    let Some((answer, close)) = answers.lock().unwrap().pop_front() else {
                        return;
                    };
                    if stream.write_all(answer.as_bytes()).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// Reads until `buf` holds a whole request head; the index past its blank line.
async fn read_head(stream: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(at + 4);
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

#[tokio::test]
async fn every_response_framing_an_upstream_may_use_reaches_the_client_intact() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let (addr, seen) = start_scripted_upstream(vec![
        // Chunked, with an extension and a trailer; then the connection is reused.
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n7\r\n, world\r\n0\r\nX-T: 1\r\n\r\n", false),
        // An interim 100 before the real answer.
        ("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok", false),
        // A HEAD answer: a length but no body.
        ("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", false),
        // 204 and 304 carry no body whatever they say.
        ("HTTP/1.1 204 No Content\r\n\r\n", false),
        ("HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n", false),
        // Connection: close: the next request must go on a new connection.
        ("HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\nlast", true),
        // HTTP/1.0 without a length: the body runs until the upstream closes.
        ("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end", true),
        // A broken length: the client gets a 502, not a hang.
        ("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc", true),
    ])
    .await;
    create_proxy(&admin, "framing.example.test", &format!("http://{addr}/"), false).await;
    let http = client();
    let send = |method: reqwest::Method, path: &str| {
        http.request(method, proxy_url(&app, path))
            .header("host", "framing.example.test")
            .send()
    };

    let chunked = send(reqwest::Method::GET, "/chunked").await.expect("an answer");
    assert_eq!(chunked.status(), StatusCode::OK);
    assert_eq!(chunked.text().await.expect("a body"), "hello, world");

    let created = http
        .post(proxy_url(&app, "/continue"))
        .header("host", "framing.example.test")
        .body("payload")
        .send()
        .await
        .expect("an answer");
    assert_eq!(created.status(), StatusCode::CREATED);
    assert_eq!(created.text().await.expect("a body"), "ok");

    let head = send(reqwest::Method::HEAD, "/head").await.expect("an answer");
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.headers()["content-length"], "1000");
    assert_eq!(head.bytes().await.expect("no body").len(), 0);

    let no_content = send(reqwest::Method::DELETE, "/204").await.expect("an answer");
    assert_eq!(no_content.status(), StatusCode::NO_CONTENT);
    let not_modified = send(reqwest::Method::GET, "/304").await.expect("an answer");
    assert_eq!(not_modified.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(not_modified.headers()["etag"], "\"v1\"");

    let last = send(reqwest::Method::GET, "/close").await.expect("an answer");
    assert_eq!(last.text().await.expect("a body"), "last");
    let until_close = send(reqwest::Method::GET, "/http10").await.expect("an answer");
    assert_eq!(until_close.status(), StatusCode::OK);
    assert_eq!(until_close.text().await.expect("a body"), "until the end");

    let broken = send(reqwest::Method::GET, "/broken").await.expect("an answer");
    assert_eq!(broken.status(), StatusCode::BAD_GATEWAY);

    // What the upstream received: our framing of the POST body, and the right methods.
    let heads = seen.lock().unwrap().clone();
    assert_eq!(heads.len(), 8, "{heads:#?}");
    assert!(
        heads[1].starts_with("POST /continue HTTP/1.1\r\n"),
        "{}",
        heads[1]
    );
    assert!(
        heads[1].to_ascii_lowercase().contains("content-length: 7\r\n"),
        "{}",
        heads[1]
    );
    assert!(heads[2].starts_with("HEAD /head HTTP/1.1\r\n"), "{}", heads[2]);
    app.stop().await;
}

#[tokio::test]
async fn the_client_side_speaks_http_1_1_pipelining_keep_alive_chunks_and_expect() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let upstream = start_upstream("wire").await;
    create_proxy(&admin, "wire.example.test", &upstream.url("/"), false).await;
    let proxy = app.app().proxy_addr();

    // Two requests in one write are answered in order on the one connection; the second asks
    // to close, and the proxy says so and does.
    let answer = raw_exchange(
        proxy,
        concat!(
            "GET /first HTTP/1.1\r\nHost: wire.example.test\r\n\r\n",
            "GET /second HTTP/1.1\r\nHost: wire.example.test\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    let first = answer.find(r#""uri":"/first""#).expect(&answer);
    let second = answer.find(r#""uri":"/second""#).expect(&answer);
    assert!(first < second, "{answer}");
    assert_eq!(answer.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{answer}");
    assert!(answer.contains("\r\nconnection: close\r\n"), "{answer}");

    // An HTTP/1.0 client that asks for keep-alive gets it, said its way; then a chunked upload
    // with a trailer, announced with Expect: 100-continue, is counted whole by the upstream.
    let mut stream = tokio::net::TcpStream::connect(proxy).await.expect("a connection");
    stream
        .write_all(b"GET /old HTTP/1.0\r\nHost: wire.example.test\r\nConnection: keep-alive\r\n\r\n")
        .await
        .expect("written");
    let mut answer = Vec::new();
    let mut chunk = [0u8; 8192];
    while !String::from_utf8_lossy(&answer).contains(r#""uri":"/old""#) {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("an answer in time")
            .expect("read");
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&chunk[..n]);
    }
    let old = String::from_utf8_lossy(&answer).into_owned();
    assert!(old.contains("\r\nconnection: keep-alive\r\n"), "{old}");
    stream
        .write_all(
            concat!(
                "POST /upload HTTP/1.1\r\nHost: wire.example.test\r\nTransfer-Encoding: chunked\r\n",
                "Expect: 100-continue\r\nConnection: close\r\n\r\n",
                "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Checksum: 1\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .expect("written");
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
    let rest = String::from_utf8_lossy(&rest).into_owned();
    assert!(
        rest.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"),
        "{rest}"
    );
    assert!(
        rest.ends_with("\r\n\r\n11"),
        "the upstream counted 11 bytes: {rest}"
    );

    // What is not HTTP gets a 400 and the connection closed.
    let garbage = raw_exchange(proxy, "\x16\x03\x01\x02\x00 not http\r\n\r\n").await;
    assert!(garbage.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{garbage}");
    assert_eq!(upstream.hits(), 4);
    app.stop().await;
}

#[tokio::test]
async fn a_slow_upstream_gets_the_504_page_and_a_stalled_body_is_cut() {
    let app = spawn_app_with(|config| {
        config.proxy.response_timeout = Duration::from_secs(1);
        config.proxy.idle_timeout = Duration::from_secs(1);
    })
    .await;
    let admin = app.admin().await;
    let upstream = start_upstream("slow").await;
    create_proxy(&admin, "slow.example.test", &upstream.url("/"), false).await;

    let started = Instant::now();
    let response = get_via_proxy(&app, "slow.example.test", "/slow").await;
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(
        response
            .text()
            .await
            .expect("a page")
            .contains("504 Gateway Timeout")
    );
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );

    // Headers came in time, then the body stopped: the client sees the body break off.
    let started = Instant::now();
    let response = get_via_proxy(&app, "slow.example.test", "/stall").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.bytes().await.is_err(),
        "a stalled body does not end cleanly"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    let metrics = metrics_text(&admin).await;
    assert_eq!(
        sample(
            &metrics,
            r#"docker_watcher_proxy_upstream_errors_total{route="slow.example.test",kind="timeout"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
    app.stop().await;
}

#[tokio::test]
async fn oversized_request_headers_get_431() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let upstream = start_upstream("one").await;
    create_proxy(&admin, "big.example.test", &upstream.url("/"), false).await;

    let response = client()
        .get(proxy_url(&app, "/"))
        .header("host", "big.example.test")
        .header("x-big", "a".repeat(70 * 1024))
        .send()
        .await;
    // The proxy answers 431 and closes; a client may also see the reset first.
    if let Ok(response) = response {
        assert_eq!(response.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }
    let response = client()
        .get(proxy_url(&app, "/"))
        .header("host", "big.example.test")
        .header("x-fine", "a".repeat(16 * 1024))
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(upstream.hits(), 1);
    app.stop().await;
}

// ----- Headers, Host and paths ----------------------------------------------------------------

#[tokio::test]
async fn forwarded_headers_are_set_and_hop_by_hop_headers_are_stripped() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let upstream = start_upstream("one").await;
    create_proxy(&admin, "headers.example.test", &upstream.url("/"), false).await;

    let response = client()
        .get(proxy_url(&app, "/h"))
        .header("host", "headers.example.test:8000")
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "spoofed.example.test")
        .header("connection", "keep-alive, x-hop-secret")
        .header("x-hop-secret", "must not pass")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic c2VjcmV0")
        .header("te", "trailers")
        .header("x-end-to-end", "passes")
        .send()
        .await
        .expect("an answer");
    let seen = seen_upstream(response).await;
    let headers = &seen["headers"];
    assert_eq!(
        headers["x-forwarded-for"],
        json!(["203.0.113.7, 127.0.0.1"]),
        "{seen}"
    );
    assert_eq!(headers["x-forwarded-proto"], json!(["http"]), "{seen}");
    assert_eq!(
        headers["x-forwarded-host"],
        json!(["headers.example.test:8000"]),
        "{seen}"
    );
    assert_eq!(headers["x-end-to-end"], json!(["passes"]), "{seen}");
    for stripped in [
        "x-hop-secret",
        "keep-alive",
        "proxy-authorization",
        "te",
        "upgrade",
    ] {
        assert!(
            headers.get(stripped).is_none(),
            "{stripped} reached the upstream: {seen}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn preserve_host_sends_the_clients_host_and_otherwise_the_targets() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let upstream = start_upstream("one").await;
    create_proxy(&admin, "keep.example.test", &upstream.url("/"), true).await;
    create_proxy(&admin, "swap.example.test", &upstream.url("/"), false).await;

    let seen = seen_upstream(get_via_proxy(&app, "keep.example.test:8000", "/").await).await;
    assert_eq!(
        seen["headers"]["host"],
        json!(["keep.example.test:8000"]),
        "{seen}"
    );
    let seen = seen_upstream(get_via_proxy(&app, "swap.example.test", "/").await).await;
    assert_eq!(
        seen["headers"]["host"],
        json!([upstream.addr.to_string()]),
        "{seen}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_path_in_the_target_url_prefixes_every_request_path() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let upstream = start_upstream("one").await;
    create_proxy(&admin, "prefix.example.test", &upstream.url("/base/"), false).await;

    let seen = seen_upstream(get_via_proxy(&app, "prefix.example.test", "/x/y?z=1").await).await;
    assert_eq!(seen["uri"], "/base/x/y?z=1");
    let seen = seen_upstream(get_via_proxy(&app, "prefix.example.test", "/").await).await;
    assert_eq!(seen["uri"], "/base/");
    app.stop().await;
}

// ----- Streaming and upgrades -----------------------------------------------------------------

/// This process's resident memory, in bytes.
fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[tokio::test]
async fn large_bodies_stream_both_ways_in_bounded_memory() {
    const SIZE: u64 = 300 * 1024 * 1024;
    let app = spawn_app().await;
    let admin = app.admin().await;
    let upstream = start_upstream("big").await;
    create_proxy(&admin, "stream.example.test", &upstream.url("/"), false).await;

    // The proxy, the client and the upstream all live in this process: if any of them held a
    // whole body, the peak would grow by hundreds of megabytes.
    let baseline = resident_bytes();
    let peak = Arc::new(AtomicU64::new(baseline));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::SeqCst) {
                peak.fetch_max(resident_bytes(), Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    let chunk = Bytes::from(vec![b'u'; 64 * 1024]);
    let upload = futures::stream::unfold(SIZE, move |left| {
        let chunk = chunk.clone();
        async move {
            (left > 0).then(|| {
                let n = left.min(chunk.len() as u64);
                (Ok::<_, Infallible>(chunk.slice(..n as usize)), left - n)
            })
        }
    });
    let response = client()
        .post(proxy_url(&app, "/upload"))
        .header("host", "stream.example.test")
        .body(reqwest::Body::wrap_stream(upload))
        .send()
        .await
        .expect("the upload goes through");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.expect("a count"), SIZE.to_string());

    let response = get_via_proxy(&app, "stream.example.test", &format!("/download?bytes={SIZE}")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.bytes_stream();
    let mut received = 0u64;
    while let Some(chunk) = body.next().await {
        received += chunk.expect("the download goes on").len() as u64;
    }
    assert_eq!(received, SIZE);

    sampling.store(false, Ordering::SeqCst);
    let _ = sampler.await;
    let growth = peak.load(Ordering::SeqCst).saturating_sub(baseline);
    eprintln!(
        "streamed 2 × {} MiB; peak resident memory grew by {} MiB",
        SIZE >> 20,
        growth >> 20
    );
    assert!(
        growth < 150 * 1024 * 1024,
        "memory grew by {} MiB while streaming 2 × {} MiB",
        growth / (1024 * 1024),
        SIZE / (1024 * 1024)
    );
    app.stop().await;
}

/// Opens a WebSocket to `path` on `host` through the proxy at `proxy`.
async fn open_websocket(
    proxy: SocketAddr,
    host: &str,
    path: &str,
) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    let stream = tokio::net::TcpStream::connect(proxy)
        .await
        .expect("a connection to the proxy");
    let (socket, response) = tokio_tungstenite::client_async(format!("ws://{host}{path}"), stream)
        .await
        .expect("the WebSocket handshake passes through the proxy");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    socket
}

async fn echo_round_trip(socket: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>, text: &str) {
    socket
        .send(tungstenite::Message::text(text))
        .await
        .expect("a message is sent");
    let answer = tokio::time::timeout(Duration::from_secs(10), socket.next())
        .await
        .expect("an echo in time")
        .expect("the socket is open")
        .expect("a message");
    assert_eq!(answer.into_text().expect("text").as_str(), text);
}

/// Closes a WebSocket the way a browser does: the close handshake, then the connection.
async fn close_websocket(mut socket: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>) {
    socket.close(None).await.expect("a close frame is sent");
    while let Ok(Some(Ok(_))) = tokio::time::timeout(Duration::from_secs(10), socket.next()).await {}
}

#[tokio::test]
async fn a_websocket_is_tunnelled_and_counted_while_open() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let upstream = start_upstream("ws").await;
    create_proxy(&admin, "ws.example.test", &upstream.url("/"), false).await;

    let mut socket = open_websocket(app.app().proxy_addr(), "ws.example.test", "/ws").await;
    for i in 0..5 {
        echo_round_trip(&mut socket, &format!("hello {i}")).await;
    }
    let open = r#"docker_watcher_proxy_open_connections{route="ws.example.test"}"#;
    assert_eq!(sample(&metrics_text(&admin).await, open), Some(1.0));
    close_websocket(socket).await;
    // The tunnel ends when both sides are done; the gauge follows.
    let deadline = Instant::now() + Duration::from_secs(5);
    while sample(&metrics_text(&admin).await, open) != Some(0.0) {
        assert!(
            Instant::now() < deadline,
            "the tunnel is still counted after the close"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.stop().await;
}

// ----- Route changes and metrics --------------------------------------------------------------

#[tokio::test]
async fn proxies_created_edited_and_deleted_through_the_api_take_effect_at_once() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let (one, two) = (start_upstream("one").await, start_upstream("two").await);
    let host = "live.example.test";
    assert_eq!(
        get_via_proxy(&app, host, "/").await.status(),
        StatusCode::NOT_FOUND
    );

    let proxy = create_proxy(&admin, host, &one.url("/"), false).await;
    let path = format!("/api/proxies/{}", proxy["id"]);
    assert_eq!(
        seen_upstream(get_via_proxy(&app, host, "/").await).await["upstream"],
        "one"
    );

    let (status, body) = admin.patch(&path, json!({"target_url": two.url("/")})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        seen_upstream(get_via_proxy(&app, host, "/").await).await["upstream"],
        "two"
    );

    let (status, body) = admin.patch(&path, json!({"enabled": false})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        get_via_proxy(&app, host, "/").await.status(),
        StatusCode::NOT_FOUND
    );

    let (status, body) = admin
        .patch(&path, json!({"enabled": true, "hostname": "moved.example.test"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        get_via_proxy(&app, host, "/").await.status(),
        StatusCode::NOT_FOUND
    );
    let seen = seen_upstream(get_via_proxy(&app, "moved.example.test", "/").await).await;
    assert_eq!(seen["upstream"], "two");

    let (status, _) = admin.delete(&path).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        get_via_proxy(&app, "moved.example.test", "/").await.status(),
        StatusCode::NOT_FOUND
    );
    app.stop().await;
}

#[tokio::test]
async fn every_route_counts_its_requests_and_remembers_its_last_request() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let upstream = start_upstream("one").await;
    create_proxy(&admin, "counted.example.test", &upstream.url("/"), false).await;
    // The time comes from the app's clock, so preview expiry can be tested without waiting.
    app.clock.advance(chrono::TimeDelta::days(3));
    let expected = (chrono::Utc::now() + chrono::TimeDelta::days(3)).timestamp();

    for _ in 0..3 {
        assert_eq!(
            get_via_proxy(&app, "counted.example.test", "/").await.status(),
            StatusCode::OK
        );
    }
    let metrics = metrics_text(&admin).await;
    let series = |name: &str| format!(r#"docker_watcher_{name}{{route="counted.example.test"}}"#);
    assert_eq!(
        sample(
            &metrics,
            r#"docker_watcher_proxy_requests_total{route="counted.example.test",status="2xx"}"#
        ),
        Some(3.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, &series("proxy_request_duration_seconds_count")),
        Some(3.0),
        "{metrics}"
    );
    let last =
        sample(&metrics, &series("proxy_last_request_timestamp_seconds")).expect("a last request") as i64;
    assert!((last - expected).abs() <= 5, "{last} vs {expected}");
    let remembered = app
        .app()
        .state()
        .metrics
        .proxy
        .last_request_at("counted.example.test");
    assert_eq!(remembered, Some(last));
    app.stop().await;
}

// ----- TLS ------------------------------------------------------------------------------------

fn openssl(dir: &Path, args: &[&str]) {
    let output = std::process::Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A test CA and a certificate it signed for `name`; returns the certificate and key paths.
fn issue_certificate(dir: &Path, file: &str, name: &str) -> (PathBuf, PathBuf) {
    let (key, csr, cert, ext) = (
        format!("{file}.key"),
        format!("{file}.csr"),
        format!("{file}.pem"),
        format!("{file}.ext"),
    );
    std::fs::write(
        dir.join(&ext),
        format!(
            "subjectAltName=DNS:{name}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"
        ),
    )
    .expect("an extensions file");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        dir,
        &[
            &["req"][..],
            &ec,
            &["-keyout", &key, "-out", &csr, "-subj", &format!("/CN={name}")],
        ]
        .concat(),
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &cert,
            "-extfile",
            &ext,
        ],
    );
    (dir.join(cert), dir.join(key))
}

/// A throwaway CA (`ca.pem`, `ca.key`) in `dir`, trusted by nothing but the tests that ask.
fn test_ca(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=docker-watcher test CA",
        ],
    );
}

#[tokio::test]
async fn an_https_upstream_whose_certificate_is_not_trusted_gets_the_502_page() {
    let certs = tempfile::tempdir().expect("a directory for certificates");
    let dir = certs.path();
    test_ca(dir);
    let (cert, key) = issue_certificate(dir, "upstream", "localhost");
    let acceptor = docker_watcher::proxy::tls::acceptor(&[docker_watcher::proxy::tls::CertificateFiles {
        hostname: "localhost".into(),
        cert,
        key,
    }])
    .expect("a TLS acceptor");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let port = listener.local_addr().expect("an address").port();
    let (handshakes, completed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (started, done) = (handshakes.clone(), completed.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            started.fetch_add(1, Ordering::SeqCst);
            if let Ok(mut tls) = acceptor.accept(stream).await {
                done.fetch_add(1, Ordering::SeqCst);
                let _ = tls
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecret")
                    .await;
            }
        }
    });
    let app = spawn_app().await;
    let admin = app.admin().await;
    create_proxy(
        &admin,
        "tls-upstream.example.test",
        &format!("https://localhost:{port}/"),
        false,
    )
    .await;

    // The proxy verifies upstream certificates against the platform's roots: one signed by an
    // unknown CA is refused — the client gets the 502 page, never the upstream's answer.
    let response = get_via_proxy(&app, "tls-upstream.example.test", "/").await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert!(!response.text().await.expect("a page").contains("secret"));
    assert!(
        handshakes.load(Ordering::SeqCst) >= 1,
        "the proxy reached the upstream"
    );
    assert_eq!(completed.load(Ordering::SeqCst), 0, "no handshake completed");
    let metrics = metrics_text(&admin).await;
    assert_eq!(
        sample(
            &metrics,
            r#"docker_watcher_proxy_upstream_errors_total{route="tls-upstream.example.test",kind="refused"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_https_listener_picks_certificates_by_sni_and_plain_http_redirects() {
    let certs = tempfile::tempdir().expect("a directory for certificates");
    let dir = certs.path();
    test_ca(dir);
    let exact = issue_certificate(dir, "exact", "secure.example.test");
    let wildcard = issue_certificate(dir, "wildcard", "*.wild.example.test");
    let app = spawn_app_with(move |config| {
        config.proxy.https_listen = Some("127.0.0.1:0".parse().expect("an address"));
        config.proxy.redirect_http_to_https = true;
        config.proxy.tls = [
            ("secure.example.test", &exact),
            ("*.wild.example.test", &wildcard),
        ]
        .into_iter()
        .map(
            |(hostname, (cert, key))| docker_watcher::config::TlsCertificateConfig {
                hostname: hostname.into(),
                cert: cert.clone(),
                key: key.clone(),
            },
        )
        .collect();
    })
    .await;
    let admin = app.admin().await;
    let upstream = start_upstream("tls").await;
    create_proxy(&admin, "secure.example.test", &upstream.url("/"), false).await;
    create_proxy(&admin, "app.wild.example.test", &upstream.url("/"), false).await;
    let https = app.app().proxy_https_addr().expect("an HTTPS listener");

    // The client trusts only the test CA and checks the name, so each answer proves SNI chose
    // the certificate for that name.
    let ca =
        reqwest::Certificate::from_pem(&std::fs::read(dir.join("ca.pem")).expect("the CA")).expect("a CA");
    let tls_client = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([ca])
        .resolve("secure.example.test", https)
        .resolve("app.wild.example.test", https)
        .build()
        .expect("a TLS client");
    for host in ["secure.example.test", "app.wild.example.test"] {
        let response = tls_client
            .get(format!("https://{host}:{}/tls?x=1", https.port()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("HTTPS to {host}: {e:?}"));
        let seen = seen_upstream(response).await;
        assert_eq!(seen["headers"]["x-forwarded-proto"], json!(["https"]), "{seen}");
        assert_eq!(seen["uri"], "/tls?x=1");
    }

    // Plain HTTP for a routed host: a redirect to the same path over HTTPS (on our HTTPS port
    // when the client named a port, else on the default one).
    let no_redirects = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client");
    let plain = app.app().proxy_addr();
    let response = no_redirects
        .post(format!("http://{plain}/form?a=b"))
        .header("host", format!("Secure.Example.Test:{}", plain.port()))
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        response.headers()["location"],
        format!("https://secure.example.test:{}/form?a=b", https.port()).as_str()
    );
    let response = no_redirects
        .get(format!("http://{plain}/"))
        .header("host", "secure.example.test")
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.headers()["location"], "https://secure.example.test/");
    let response = no_redirects
        .get(format!("http://{plain}/"))
        .header("host", "unknown.example.test")
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    app.stop().await;
}

// ----- Real containers ------------------------------------------------------------------------

/// The static `ws_echo` binary, compiled once per test run from tests/fixtures/ws_echo.rs.
async fn ws_echo_binary() -> PathBuf {
    static BINARY: tokio::sync::OnceCell<PathBuf> = tokio::sync::OnceCell::const_new();
    BINARY
        .get_or_init(|| async {
            let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ws_echo.rs");
            let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("ws_echo-{}", std::process::id()));
            let output = tokio::process::Command::new("rustc")
                .args([
                    "--edition",
                    "2021",
                    "-O",
                    "-C",
                    "target-feature=+crt-static",
                    "-o",
                ])
                .arg(&out)
                .arg(&source)
                .output()
                .await
                .expect("rustc runs");
            assert!(
                output.status.success(),
                "compiling ws_echo: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            out
        })
        .await
        .clone()
}

/// Imports an image of the `ws_echo` server answering `marker`, pushes it to the test registry
/// as `repo:tag` and returns its digest. Fails (never skips) without Docker or the registry.
async fn push_ws_echo_image(repo: &str, tag: &str, marker: &str) -> String {
    let binary = ws_echo_binary().await;
    let work = tempfile::tempdir().expect("a work dir");
    let root = work.path().join("rootfs");
    std::fs::create_dir_all(&root).expect("a rootfs dir");
    std::fs::copy(&binary, root.join("ws_echo")).expect("the binary is copied");
    std::fs::write(root.join("marker"), marker).expect("the marker is written");
    let tarball = work.path().join("rootfs.tar");
    let run = |program: &str, args: Vec<String>| {
        let output = std::process::Command::new(program)
            .args(&args)
            .output()
            .expect("the command runs");
        assert!(
            output.status.success(),
            "{program} {args:?} failed (run scripts/services.sh): {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let arg = |s: &str| s.to_owned();
    run(
        "tar",
        vec![
            arg("-C"),
            root.display().to_string(),
            arg("--owner=0"),
            arg("--group=0"),
            arg("-cf"),
            tarball.display().to_string(),
            arg("."),
        ],
    );
    let image = format!("{}/{repo}:{tag}", registry());
    run(
        "docker",
        vec![
            arg("import"),
            arg("-c"),
            arg(r#"CMD ["/ws_echo"]"#),
            arg("-c"),
            arg("EXPOSE 8080"),
            tarball.display().to_string(),
            image.clone(),
        ],
    );
    let pushed = run("docker", vec![arg("push"), image]);
    pushed
        .split_whitespace()
        .find(|word| word.starts_with("sha256:"))
        .unwrap_or_else(|| panic!("no digest in the push output: {pushed}"))
        .to_owned()
}

/// A stage of a new project on `repo`, routed at `hostname`, deployed by hand only.
async fn create_routed_stage(admin: &ApiClient, repo: &str, hostname: &str) -> i64 {
    let project_id = create_project(admin, repo).await;
    let (status, body) = admin
        .post(
            &format!("/api/projects/{project_id}/stages"),
            json!({
                "name": unique("s"),
                "tag_policy": "tag:v1",
                "auto_deploy": false,
                "hostname": hostname,
                "container": {"port": 8080, "min_ready_seconds": 1},
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_i64().expect("a stage id")
}

async fn deploy_v1(admin: &ApiClient, stage_id: i64) -> Value {
    let (status, deployment) = admin
        .post(&format!("/api/stages/{stage_id}/deploy"), json!({"tag": "v1"}))
        .await;
    assert_eq!(
        (status, &deployment["status"]),
        (StatusCode::CREATED, &json!("succeeded")),
        "{deployment}"
    );
    deployment
}

/// What requests in a client loop saw.
#[derive(Debug, Default)]
struct LoadReport {
    ok_by_body: HashMap<String, u64>,
    failures: Vec<String>,
}

/// `clients` loops of GETs through the proxy until `stop` is set (or two minutes passed).
fn start_load(
    app: &TestApp,
    host: &str,
    clients: usize,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<LoadReport>> {
    (0..clients)
        .map(|_| {
            let (url, host, stop) = (proxy_url(app, "/"), host.to_owned(), stop.clone());
            tokio::spawn(async move {
                let client = client();
                let mut report = LoadReport::default();
                let deadline = Instant::now() + Duration::from_secs(120);
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                    let response = client
                        .get(&url)
                        .header("host", &host)
                        .timeout(Duration::from_secs(10))
                        .send()
                        .await;
                    match response {
                        Ok(r) if r.status() == StatusCode::OK => match r.text().await {
                            Ok(body) => *report.ok_by_body.entry(body.trim().to_owned()).or_default() += 1,
                            Err(e) => report.failures.push(format!("body: {e}")),
                        },
                        Ok(r) => report.failures.push(format!("status {}", r.status())),
                        Err(e) => report.failures.push(format!("request: {e:?}")),
                    }
                }
                report
            })
        })
        .collect()
}

#[tokio::test]
async fn a_redeploy_under_load_loses_no_request_and_keeps_an_open_websocket() {
    let app = spawn_app().await;
    let mut cleanup = Cleanup::new(&app);
    let repo = unique("dwtest/proxy-");
    cleanup.repo(&repo);
    let admin = app.admin().await;
    let hostname = format!("{}.example.test", unique("app-"));
    push_ws_echo_image(&repo, "v1", "first build").await;
    let stage_id = create_routed_stage(&admin, &repo, &hostname).await;
    let first = deploy_v1(&admin, stage_id).await;

    // The stage's hostname reaches its container through the proxy.
    let response = get_via_proxy(&app, &hostname.to_uppercase(), "/").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.expect("a body").trim(), "first build");

    // A WebSocket to the first container, opened before the redeploy.
    let mut socket = open_websocket(app.app().proxy_addr(), &hostname, "/ws").await;
    echo_round_trip(&mut socket, "before the redeploy").await;

    push_ws_echo_image(&repo, "v1", "second build").await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(&app, &hostname, 4, stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let redeploy = {
        let admin = admin.clone();
        tokio::spawn(async move { deploy_v1(&admin, stage_id).await })
    };

    // Wait for the switch: new requests reach the second build.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let body = get_via_proxy(&app, &hostname, "/")
            .await
            .text()
            .await
            .expect("a body");
        if body.trim() == "second build" {
            break;
        }
        assert!(Instant::now() < deadline, "the redeploy never switched the route");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The old container keeps serving the WebSocket after the switch, and the deploy waits for
    // it (the drain) instead of stopping the container under it.
    for i in 0..5 {
        echo_round_trip(&mut socket, &format!("after the switch {i}")).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !redeploy.is_finished(),
        "the deploy stopped the old instance with a WebSocket open"
    );
    let old = instance(&admin, first["instance_id"].as_i64().expect("an instance id")).await;
    assert_eq!(old["status"], "running", "{old}");

    // Once the WebSocket closes by itself, the drain ends and the old container is stopped.
    close_websocket(socket).await;
    let closed_at = Instant::now();
    let second = tokio::time::timeout(Duration::from_secs(60), redeploy)
        .await
        .expect("the deploy ends after the drain")
        .expect("the deploy task");
    assert!(
        closed_at.elapsed() < Duration::from_secs(15),
        "the drain waited for its timeout instead"
    );
    assert_ne!(second["instance_id"], first["instance_id"]);
    let old = instance(&admin, first["instance_id"].as_i64().expect("an instance id")).await;
    assert_eq!(old["status"], "stopped", "{old}");

    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let mut total = LoadReport::default();
    for client in load {
        let report = client.await.expect("a load client");
        for (body, n) in report.ok_by_body {
            *total.ok_by_body.entry(body).or_default() += n;
        }
        total.failures.extend(report.failures);
    }
    eprintln!(
        "requests during the redeploy: {:?}, failures: {}",
        total.ok_by_body,
        total.failures.len()
    );
    assert!(
        total.failures.is_empty(),
        "{} failed requests: {:?}",
        total.failures.len(),
        &total.failures[..total.failures.len().min(10)]
    );
    let (before, after) = (
        total.ok_by_body.get("first build"),
        total.ok_by_body.get("second build"),
    );
    assert!(
        before.is_some() && after.is_some(),
        "both builds served the load: {:?}",
        total.ok_by_body
    );
    assert_eq!(total.ok_by_body.len(), 2, "{:?}", total.ok_by_body);
    app.stop().await;
}
