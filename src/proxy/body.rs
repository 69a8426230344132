//! What a request carries while it streams through the proxy: bodies are never buffered whole —
//! each piece read from one side is written to the other as it comes, so a 1 GB upload or
//! download passes in the memory of a few pieces, and backpressure flows end to end.
//!
//! - [`RequestGuard`] keeps a request counted (open-requests gauge, drain counter) until its
//!   last byte is sent.
//! - [`BodyProgress`] notes when a request body last moved, so the response timeout does not
//!   fire while a large upload is still flowing.
//! - [`RequestSource`] is how the upstream side reads a request body from the client side.

use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::metrics::OpenGuard;
use crate::routes::ConnectionGuard;

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

impl Default for BodyProgress {
    /// A body with no progress yet.
    fn default() -> Self {
        Self {
            start: Instant::now(),
            last: AtomicU64::new(0),
        }
    }
}

impl BodyProgress {
    pub fn last(&self) -> Instant {
        self.start + Duration::from_nanos(self.last.load(Ordering::Relaxed))
    }

    pub fn touch(&self) {
        let elapsed = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last.store(elapsed, Ordering::Relaxed);
    }
}

/// A request body on its way upstream, read from the client as the upstream takes it.
pub trait RequestSource: Send {
    /// The next piece of the body; `None` at its end.
    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<std::io::Result<Bytes>>>;
}
