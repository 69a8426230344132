//! Upstream connections belong to the proxy's pool, not to client connections, and client
//! connections cost little while idle — through the real listener, in front of an upstream
//! that counts the TCP connections it gets:
//!
//! - an idle keep-alive client holds no upstream connection, and a new client's request reuses
//!   the connection the previous one gave back (instead of connecting again);
//! - a small request body is read whole before an upstream connection is taken, so slow
//!   uploaders hold none (nginx's `proxy_request_buffering`), and a client that stops sending
//!   its body gets `408` after the body timeout;
//! - an idle keep-alive connection holds no buffers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{ApiClient, spawn_app, spawn_app_with};

/// What the counting upstream saw: connections accepted and connections open now.
#[derive(Clone, Default)]
struct Counts {
    accepted: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

impl Counts {
    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
    fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// An HTTP/1.1 keep-alive upstream that answers every request with the length of its body
/// (`Content-Length` bodies only) and counts its TCP connections.
async fn start_counting_upstream() -> (SocketAddr, Counts) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let addr = listener.local_addr().expect("an address");
    let counts = Counts::default();
    let shared = counts.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            shared.accepted.fetch_add(1, Ordering::SeqCst);
            shared.open.fetch_add(1, Ordering::SeqCst);
            let counts = shared.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                'requests: loop {
                    let end = loop {
                        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break at + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => break 'requests,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    while buf.len() < end + length {
                        let mut chunk = [0u8; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => break 'requests,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..end + length);
                    counts.requests.fetch_add(1, Ordering::SeqCst);
                    let body = length.to_string();
                    let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                    if stream.write_all(answer.as_bytes()).await.is_err() {
                        break;
                    }
                }
                counts.open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (addr, counts)
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

/// Reads one response (status line, head, `Content-Length` body) off `stream`.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let read = async {
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + length {
                    return;
                }
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), read).await;
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn idle_clients_hold_no_upstream_connection_and_new_clients_reuse_warm_ones() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let (upstream, counts) = start_counting_upstream().await;
    create_proxy(&admin, "pool.test", upstream).await;
    let proxy = app.app().proxy_addr();

    // Twenty keep-alive clients, one after the other: each sends a request and stays open.
    let mut idle = Vec::new();
    for _ in 0..20 {
        let mut stream = TcpStream::connect(proxy).await.expect("a connection");
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: pool.test\r\n\r\n")
            .await
            .expect("written");
        let answer = read_response(&mut stream).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        idle.push(stream);
    }
    // Then ten clients that close after their one request.
    for _ in 0..10 {
        let mut stream = TcpStream::connect(proxy).await.expect("a connection");
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: pool.test\r\nConnection: close\r\n\r\n")
            .await
            .expect("written");
        let answer = read_response(&mut stream).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    assert_eq!(counts.requests(), 30);
    // Every request found the connection the previous one gave back: the proxy's workers
    // (one per core) opened at most one each, and the twenty idle clients hold none of them.
    let workers = std::thread::available_parallelism().map_or(2, usize::from);
    assert!(
        counts.accepted() <= workers,
        "{} upstream connections for 30 sequential requests",
        counts.accepted()
    );
    assert!(
        counts.open() <= workers,
        "{} upstream connections open",
        counts.open()
    );
    drop(idle);
    app.stop().await;
}

#[tokio::test]
async fn slow_uploaders_hold_no_upstream_connection_while_their_small_bodies_arrive() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let (upstream, counts) = start_counting_upstream().await;
    create_proxy(&admin, "slow.test", upstream).await;
    let proxy = app.app().proxy_addr();

    // Thirty clients send a head announcing ten bytes, and three of them.
    let mut uploaders = Vec::new();
    for _ in 0..30 {
        let mut stream = TcpStream::connect(proxy).await.expect("a connection");
        stream
            .write_all(b"POST /up HTTP/1.1\r\nHost: slow.test\r\nContent-Length: 10\r\n\r\nabc")
            .await
            .expect("written");
        uploaders.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        (counts.accepted(), counts.open()),
        (0, 0),
        "upstream connections taken for bodies still arriving"
    );
    // A chunked body is buffered the same way.
    let mut chunked = TcpStream::connect(proxy).await.expect("a connection");
    chunked
        .write_all(b"POST /up HTTP/1.1\r\nHost: slow.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        .await
        .expect("written");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(counts.accepted(), 0);
    chunked.write_all(b"2\r\nde\r\n0\r\n\r\n").await.expect("written");
    // Sent on as one body with its length.
    let answer = read_response(&mut chunked).await;
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("\r\n\r\n5"),
        "{answer}"
    );

    for stream in &mut uploaders {
        stream.write_all(b"defghij").await.expect("written");
    }
    for stream in &mut uploaders {
        let answer = read_response(stream).await;
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("\r\n\r\n10"),
            "{answer}"
        );
    }
    assert_eq!(counts.requests(), 31);
    app.stop().await;
}

#[tokio::test]
async fn a_client_that_stops_sending_its_body_gets_408_and_the_upstream_sees_nothing() {
    let app = spawn_app_with(|config| config.proxy.client_body_timeout = Duration::from_millis(300)).await;
    let admin = app.admin().await;
    let (upstream, counts) = start_counting_upstream().await;
    create_proxy(&admin, "stall.test", upstream).await;

    for request in [
        &b"POST / HTTP/1.1\r\nHost: stall.test\r\nContent-Length: 10\r\n\r\nab"[..],
        b"POST / HTTP/1.1\r\nHost: stall.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
    ] {
        let mut stream = TcpStream::connect(app.app().proxy_addr())
            .await
            .expect("a connection");
        stream.write_all(request).await.expect("written");
        let started = std::time::Instant::now();
        let answer = read_response(&mut stream).await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(started.elapsed() < Duration::from_secs(5));
        // And the connection is closed.
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "the connection stays open after the 408");
    }
    assert_eq!(counts.accepted(), 0);
    app.stop().await;
}

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
async fn an_idle_keep_alive_client_holds_no_buffers_nor_upstream_connection() {
    const CLIENTS: usize = 2000;
    let app = spawn_app().await;
    let admin = app.admin().await;
    let (upstream, counts) = start_counting_upstream().await;
    create_proxy(&admin, "idle.test", upstream).await;
    let proxy = app.app().proxy_addr();
    // Warm up: the workers' pools and runtimes have what they need before measuring.
    for _ in 0..50 {
        let mut stream = TcpStream::connect(proxy).await.expect("a connection");
        stream
            .write_all(b"POST / HTTP/1.1\r\nHost: idle.test\r\nContent-Length: 3\r\n\r\nabc")
            .await
            .expect("written");
        read_response(&mut stream).await;
    }

    let before = resident_bytes();
    let mut idle = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        let mut stream = TcpStream::connect(proxy).await.expect("a connection");
        stream
            .write_all(b"POST / HTTP/1.1\r\nHost: idle.test\r\nContent-Length: 3\r\n\r\nabc")
            .await
            .expect("written");
        let answer = read_response(&mut stream).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        idle.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let per_client = resident_bytes().saturating_sub(before) / CLIENTS as u64;
    eprintln!(
        "{CLIENTS} idle keep-alive clients: {per_client} bytes each (both ends of the socket in this process), {} upstream connections open",
        counts.open()
    );
    // The client's end of each socket lives in this process too, and this is a debug build
    // (futures several times their release size): the bound is loose, but a connection that
    // kept its 8 + 8 KiB of buffers and an upstream connection with its own would be far over
    // it. scripts/bench-proxy.sh measures the release binary alone.
    assert!(per_client <= 12 * 1024, "{per_client} bytes per idle client");
    let workers = std::thread::available_parallelism().map_or(2, usize::from);
    assert!(
        counts.open() <= workers,
        "{} upstream connections open",
        counts.open()
    );
    drop(idle);
    app.stop().await;
}
