//! The reference parser of the proxy codec's differential test: hyper's HTTP/1.1 server, fed
//! the same bytes as `docker_watcher::proxy::frame_request`, and the property both must hold —
//! the proxy never accepts a request the reference refuses, and never frames its body
//! differently.
//!
//! Why hyper: it is the most used Rust HTTP/1.1 implementation, maintained, already in this
//! project's dependency tree (under axum), and it runs in process on stable and under libFuzzer
//! alike, so the same property is checked by the test suite and by `cargo +nightly fuzz`. Its
//! tokenizer is httparse, as ours is, but everything a request is *judged* by is hyper's own —
//! `Content-Length`/`Transfer-Encoding` rules (its `role.rs`), the chunked decoder with its own
//! chunk-size and extension grammar (`decode.rs`), URI parsing through `http` — which is where
//! smuggling bugs live. Debian has no maintained C parser to call instead (llhttp is not
//! packaged for bookworm; its predecessor http-parser is archived). hyper is more lenient than
//! the proxy in places (it accepts two `Host` fields and `Content-Length` lists); the property
//! only runs one way, and the conformance table pins the proxy's extra strictness.
//!
//! This file is shared with `fuzz/fuzz_targets/request_framing.rs` (included by path), so it
//! uses nothing of the test binary.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use docker_watcher::proxy::RequestVerdict;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What hyper makes of a request's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// The head and the whole body were read.
    Accepted { method: String, body: Vec<u8> },
    /// Refused, as a malformed head or body.
    Refused,
    /// The bytes end before the request does.
    Incomplete,
}

/// Runs `bytes` through hyper's HTTP/1.1 server on an in-memory connection that ends after
/// them, and reports what the service saw of the first request.
pub fn reference_verdict(bytes: &[u8]) -> Reference {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(reference_async(bytes))
}

async fn reference_async(bytes: &[u8]) -> Reference {
    type Seen = Arc<Mutex<Option<Result<(String, Vec<u8>), bool>>>>;
    let seen: Seen = Arc::default();
    let (mut client, server) = tokio::io::duplex(bytes.len() + 64 * 1024);
    let service_seen = seen.clone();
    let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        let seen = service_seen.clone();
        async move {
            let method = request.method().to_string();
            let outcome = match request.into_body().collect().await {
                Ok(body) => Ok((method, body.to_bytes().to_vec())),
                Err(error) => Err(error.is_incomplete_message()),
            };
            seen.lock().expect("not poisoned").get_or_insert(outcome);
            Ok::<_, std::convert::Infallible>(hyper::Response::new(
                http_body_util::Empty::<bytes::Bytes>::new(),
            ))
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        // The bytes end with a half-close; the request before it is still answered.
        .half_close(true)
        .serve_connection(hyper_util::rt::TokioIo::new(server), service);
    let feed = async {
        let _ = client.write_all(bytes).await;
        let _ = client.shutdown().await;
        // Drain the answer so hyper never waits on a full pipe.
        let mut sink = Vec::new();
        let _ = client.read_to_end(&mut sink).await;
    };
    let (served, ()) = tokio::join!(tokio::time::timeout(Duration::from_secs(5), connection), feed);
    let outcome = seen.lock().expect("not poisoned").take();
    match outcome {
        Some(Ok((method, body))) => Reference::Accepted { method, body },
        Some(Err(true)) => Reference::Incomplete,
        Some(Err(false)) => Reference::Refused,
        None => match served {
            Ok(Err(error)) if error.is_incomplete_message() => Reference::Incomplete,
            // Nothing at all is not a request either side reads.
            Ok(Ok(())) if bytes.iter().all(|b| matches!(b, b'\r' | b'\n')) => Reference::Incomplete,
            _ => Reference::Refused,
        },
    }
}

/// The differential property: `Err` with an explanation when the proxy accepts what the
/// reference refuses, or reads a different body.
pub fn check_against_reference(ours: &RequestVerdict, theirs: &Reference) -> Result<(), String> {
    match (ours, theirs) {
        (
            RequestVerdict::Accepted { method, body, .. },
            Reference::Accepted {
                method: their_method,
                body: their_body,
            },
        ) => {
            if method != their_method || body != their_body {
                return Err(format!(
                    "framed differently: the proxy read {method} with {} body bytes {:?}, the reference {their_method} with {} {:?}",
                    body.len(),
                    String::from_utf8_lossy(body),
                    their_body.len(),
                    String::from_utf8_lossy(their_body)
                ));
            }
            Ok(())
        }
        (RequestVerdict::Accepted { .. }, other) => Err(format!(
            "the proxy accepted a request the reference found {other:?}"
        )),
        // Waiting for more bytes where the reference already has a whole request would be a
        // framing difference too.
        (RequestVerdict::Incomplete, Reference::Accepted { body, .. }) => Err(format!(
            "the proxy waits for more where the reference read a whole request ({} body bytes)",
            body.len()
        )),
        _ => Ok(()),
    }
}
