//! Bodies that stream through the proxy without being buffered: each frame hyper reads from one
//! side is handed to the other as it comes, so a 1 GB upload or download passes in the memory of
//! a few frames, and backpressure flows end to end (a slow client slows the upstream read).
//!
//! - [`RequestBody`] carries the client's body upstream and notes when it last made progress, so
//!   the response timeout does not fire while a large upload is still flowing.
//! - [`ProxyBody`] is what the client receives: a static page, or the upstream's body with an
//!   idle timeout, owning the guards (open-connection gauge, drain counter) that must live until
//!   the last byte is sent.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use super::upstream::{Exchange, UpstreamSlot};
use crate::metrics::OpenGuard;
use crate::routes::ConnectionGuard;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Keeps a request counted while any part of it is alive: the open-requests gauge of its route
/// and, for instance routes, the drain counter a deploy waits on.
#[derive(Debug)]
pub struct RequestGuard {
    _open: OpenGuard,
    _drain: Option<ConnectionGuard>,
}

impl RequestGuard {
    pub fn new(open: OpenGuard, drain: Option<ConnectionGuard>) -> Self {
        Self {
            _open: open,
            _drain: drain,
        }
    }
}

/// When a request body last delivered a frame, shared with the task waiting for the response.
#[derive(Debug)]
pub struct BodyProgress {
    start: Instant,
    /// Nanoseconds after `start` of the last frame (0: none yet).
    last: AtomicU64,
}

impl BodyProgress {
    pub fn last(&self) -> Instant {
        self.start + Duration::from_nanos(self.last.load(Ordering::Relaxed))
    }

    fn touch(&self) {
        let elapsed = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last.store(elapsed, Ordering::Relaxed);
    }
}

/// The client's request body on its way upstream.
#[derive(Debug)]
pub struct RequestBody {
    inner: Incoming,
    progress: Option<Arc<BodyProgress>>,
}

impl RequestBody {
    /// Wraps a body; the progress tracker exists only when there is a body to track.
    pub fn new(inner: Incoming) -> (Self, Option<Arc<BodyProgress>>) {
        let progress = (!inner.is_end_stream()).then(|| {
            Arc::new(BodyProgress {
                start: Instant::now(),
                last: AtomicU64::new(0),
            })
        });
        (
            Self {
                inner,
                progress: progress.clone(),
            },
            progress,
        )
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if let Some(progress) = &this.progress {
            progress.touch();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The upstream went quiet in the middle of a response body for longer than the idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("the upstream sent nothing for {0:?} in the middle of the response body")]
pub struct IdleTimeout(Duration);

/// What the proxy sends back to the client.
#[derive(Debug)]
pub struct ProxyBody {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Page(Option<Bytes>),
    Upstream(UpstreamBody),
}

#[derive(Debug)]
struct UpstreamBody {
    /// The exchange the body is read from; handed back to the client connection's slot once
    /// the body is complete (`None` after that).
    exchange: Option<Exchange>,
    slot: Arc<UpstreamSlot>,
    idle_timeout: Duration,
    /// Armed the first time the upstream has nothing ready, reset after each frame.
    idle: Option<Pin<Box<Sleep>>>,
    progressed: bool,
    _guard: RequestGuard,
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        self.release();
    }
}

impl ProxyBody {
    pub fn page(html: &'static str) -> Self {
        Self {
            kind: Kind::Page(Some(Bytes::from_static(html.as_bytes()))),
        }
    }

    pub fn empty() -> Self {
        Self {
            kind: Kind::Page(None),
        }
    }

    pub fn upstream(
        exchange: Exchange,
        slot: Arc<UpstreamSlot>,
        idle_timeout: Duration,
        guard: RequestGuard,
    ) -> Self {
        let mut body = UpstreamBody {
            exchange: Some(exchange),
            slot,
            idle_timeout,
            idle: None,
            progressed: false,
            _guard: guard,
        };
        // A body-less response frees its connection for the next request at once.
        body.release();
        Self {
            kind: Kind::Upstream(body),
        }
    }
}

impl UpstreamBody {
    /// Once the body is complete, hands its connection back to the slot (only a connection
    /// whose response was read to the end can carry another request).
    fn release(&mut self) {
        if self.exchange.as_ref().is_some_and(Exchange::is_done)
            && let Some(connection) = self.exchange.take().and_then(Exchange::into_reusable)
        {
            self.slot.release(connection);
        }
    }

    fn poll_inner(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BoxError>>> {
        let Some(exchange) = &mut self.exchange else {
            return Poll::Ready(None);
        };
        let data = ready!(exchange.poll_data(cx));
        self.release();
        Poll::Ready(data.map(|d| d.map_err(BoxError::from)))
    }

    /// Whether the upstream has been silent for the idle timeout; registers the waker otherwise.
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = Instant::now() + self.idle_timeout;
        let sleep = match &mut self.idle {
            Some(sleep) => {
                if self.progressed {
                    sleep.as_mut().reset(deadline);
                }
                sleep
            }
            None => self.idle.insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        self.progressed = false;
        sleep.as_mut().poll(cx).is_ready()
    }

    fn is_end_stream(&self) -> bool {
        self.exchange.as_ref().is_none_or(Exchange::is_done)
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().kind {
            Kind::Page(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream(body) => match body.poll_inner(cx) {
                Poll::Ready(data) => {
                    body.progressed = true;
                    Poll::Ready(data.map(|d| d.map(Frame::data)))
                }
                Poll::Pending if body.idle_expired(cx) => {
                    Poll::Ready(Some(Err(Box::new(IdleTimeout(body.idle_timeout)))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Page(bytes) => bytes.is_none(),
            Kind::Upstream(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Page(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Upstream(body) => match body.exchange.as_ref().map_or(Some(0), Exchange::remaining) {
                Some(remaining) => SizeHint::with_exact(remaining),
                None => SizeHint::default(),
            },
        }
    }
}
