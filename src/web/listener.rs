//! The API and UI listener's connections: our own accept loop around hyper's HTTP/1.1 server,
//! so that no client can hold a connection for free. A request's head must arrive within the
//! header timeout (counted from the connection opening, or from the previous response on a
//! keep-alive connection, so idle connections close too); a request body that stops arriving,
//! or a client that stops reading its response, is cut off after the idle timeout; and
//! connections beyond the cap are answered `503` and closed at once instead of queueing. On
//! shutdown the listener stops accepting, idle connections close at once, and requests in
//! progress get a grace period.
//!
//! `axum::serve` has none of these: a client that connects and sends nothing keeps its
//! connection (and a task) for ever, so a few hundred slow clients pile up without bound.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// The listener's limits (from the `[api]` configuration table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiListenerOptions {
    /// A request's head must arrive within this long of the connection opening or the previous
    /// response ending.
    pub header_timeout: Duration,
    /// A request body stalled, or a response the client does not read, for this long ends the
    /// connection.
    pub idle_timeout: Duration,
    /// Connections served at once; more are answered `503` and closed.
    pub max_connections: usize,
    /// How long requests in progress get to finish at shutdown.
    pub shutdown_grace: Duration,
}

impl Default for ApiListenerOptions {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 512,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// What a connection beyond the cap is told before it is closed.
const OVER_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
retry-after: 1\r\nconnection: close\r\ncontent-length: 94\r\n\r\n\
{\"error\":{\"code\":\"unavailable\",\"message\":\"too many connections; retry shortly\",\"field\":null}}\n";

/// Serves `router` on `listener` until `shutdown` is cancelled, then lets requests in progress
/// finish within the grace period.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    options: ApiListenerOptions,
    shutdown: CancellationToken,
) {
    let router = router.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
        options.idle_timeout,
    ));
    let slots = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(options.header_timeout)
        .keep_alive(true);
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "the API listener could not accept a connection");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    }
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refuse_over_capacity(stream, peer);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(request)
        });
        let io = TokioIo::new(WriteStallTimeout::new(stream, options.idle_timeout));
        let connection = graceful.watch(http.serve_connection(io, service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "an API connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(options.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("API requests still in progress after the shutdown grace period were cut off");
    }
}

/// Answers a connection beyond the cap with a `503` — written only if the socket takes it at
/// once, since waiting for a client is what the cap is there to avoid — and closes it.
fn refuse_over_capacity(stream: TcpStream, peer: SocketAddr) {
    tracing::debug!(%peer, "API connection refused: too many connections");
    let _ = stream.try_write(OVER_CAPACITY);
    // Closing with unread request bytes would send a reset that can destroy the 503 before the
    // client reads it; lingering is not worth a task per refused connection, so the reset is
    // accepted — the client sees a failed connection either way.
    drop(stream);
}

/// A stream whose writes fail with `TimedOut` once one has been pending for the idle timeout:
/// a client that stops reading a response (its receive window full) is cut off instead of
/// holding the connection and its task for ever. Reads pass through untouched — the header
/// timeout and the request body timeout bound those, and hyper reads while a slow handler runs
/// to notice a client that went away.
#[derive(Debug)]
pub struct WriteStallTimeout<S> {
    inner: S,
    timeout: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> WriteStallTimeout<S> {
    pub fn new(inner: S, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            stalled: None,
        }
    }

    /// Turns a pending write into `TimedOut` once it has been pending for the timeout; any
    /// progress disarms the timer.
    fn watch<T>(&mut self, cx: &mut Context<'_>, poll: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
        match poll {
            Poll::Ready(result) => {
                self.stalled = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                let timeout = self.timeout;
                let stalled = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                ready!(stalled.as_mut().poll(cx));
                self.stalled = None;
                Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the client stopped reading the response",
                )))
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteStallTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteStallTimeout<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_write_the_peer_never_reads_fails_after_the_idle_timeout() {
        let (ours, _theirs) = tokio::io::duplex(16);
        let mut stream = WriteStallTimeout::new(ours, Duration::from_secs(60));
        let started = tokio::time::Instant::now();
        let error = stream.write_all(&[0u8; 64]).await.unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_that_keeps_reading_is_never_cut_off() {
        use tokio::io::AsyncReadExt;
        let (ours, mut theirs) = tokio::io::duplex(16);
        let mut stream = WriteStallTimeout::new(ours, Duration::from_secs(60));
        let reader = tokio::spawn(async move {
            let mut received = 0;
            let mut buf = [0u8; 8];
            while received < 256 {
                // Slower than nothing at all for most of the timeout, but never stalled for it.
                tokio::time::sleep(Duration::from_secs(50)).await;
                received += theirs.read(&mut buf).await.unwrap();
            }
            received
        });
        stream.write_all(&[0u8; 256]).await.unwrap();
        assert_eq!(reader.await.unwrap(), 256);
    }

    #[test]
    fn the_over_capacity_answer_has_the_length_it_says() {
        let text = std::str::from_utf8(OVER_CAPACITY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{}",
            body.len()
        );
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "unavailable");
    }
}
