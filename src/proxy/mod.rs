//! The reverse proxy (SPEC §3 "Reverse proxy"): its own listeners route each request by `Host`
//! to the current instance of a stage, a per-tag instance, or an enabled standalone proxy, as
//! the [`RouteTable`] says at the moment the request arrives.
//!
//! - [`listener`]: accept loops (plain HTTP and TLS with SNI), one worker thread per core,
//!   graceful shutdown.
//! - [`server`]: one client connection — request heads within the header timeout and size
//!   limit, keep-alive and pipelining, request bodies read as the upstream takes them.
//! - [`connection`]: a client connection's socket and buffers, and request bodies read out of it.
//! - [`forward`]: one request — route look-up, the head written on, the exchange upstream,
//!   the answer streamed back, timeouts, WebSocket/`Upgrade` tunnels, drain guards and metrics.
//! - [`codec`]: the HTTP/1.1 wire format of both sides on `httparse` — heads parsed in place
//!   and forwarded as text minus hop-by-hop fields, body framing, chunked decoding.
//! - [`headers`]: where a request goes — its host, the upstream's `Host`, the upstream target.
//! - [`body`]: request guards, body progress, the request-body source.
//! - [`upstream`]: keep-alive upstream connections kept next to the client connection using
//!   them and spoken to on its task, with a per-worker pool for the rest.
//! - [`pages`]: the small HTML pages the proxy answers with itself (404, 502, 504, …).
//! - [`tls`]: certificates per hostname or wildcard, picked by SNI.
//!
//! Invariants: the request path takes no lock and builds no table — it reads the table once
//! through `ArcSwap`; it never forwards to a host that is not routed (no open proxy: `CONNECT`
//! and absolute-form requests for other hosts are refused); and nothing here is known to the
//! rest of the crate but `app.rs`.

mod body;
mod codec;
mod connection;
mod forward;
mod headers;
mod listener;
mod pages;
mod server;
pub mod tls;
mod upstream;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// What the proxy makes of a client's first request, as a pure function of its bytes: the
/// surface the differential fuzz target (`fuzz/`) and its stable proptest hold against a
/// reference parser.
pub use codec::{RequestVerdict, frame_request};
pub use listener::{ListenerKind, serve};

use crate::clock::SharedClock;
use crate::metrics::Metrics;
use crate::routes::RouteTable;

/// Limits and timeouts of the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyOptions {
    /// Connecting to an upstream; past it the client gets a 504.
    pub connect_timeout: Duration,
    /// Waiting for an upstream's response headers after the request (and its body) went out;
    /// past it the client gets a 504.
    pub response_timeout: Duration,
    /// An upstream silent in the middle of a response body for this long is cut off.
    pub idle_timeout: Duration,
    /// A client gets this long to send a request's headers, which also closes keep-alive
    /// connections idle for that long.
    pub client_header_timeout: Duration,
    /// A client gets this long for each read of a request body (nginx's
    /// `client_body_timeout`); past it the request gets `408`.
    pub client_body_timeout: Duration,
    /// Request bodies up to this size are read whole before an upstream connection is taken
    /// (nginx's `proxy_request_buffering`), so a slow client holds no upstream connection;
    /// larger ones stream.
    pub request_buffer_bytes: usize,
    /// The request line and headers together; larger requests get `431`.
    pub max_header_bytes: usize,
    /// Idle keep-alive connections to an upstream are closed after this long (shorter than
    /// most servers' own keep-alive timeout, so we rarely reuse one the server is closing).
    pub pool_idle_timeout: Duration,
    /// Idle keep-alive connections kept per upstream.
    pub pool_max_idle_per_upstream: usize,
    /// How long requests in progress get to finish when the application stops.
    pub shutdown_grace: Duration,
    /// Worker threads serving connections; 0 means one per CPU.
    pub workers: usize,
    /// Requests that may wait at once for one held stage (a `stop_first` deploy); more are
    /// answered 503 at once, so a hold cannot pile up without bound.
    pub max_held_requests: usize,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            client_header_timeout: Duration::from_secs(60),
            client_body_timeout: Duration::from_secs(60),
            request_buffer_bytes: 64 * 1024,
            max_header_bytes: 64 * 1024,
            pool_idle_timeout: Duration::from_secs(30),
            pool_max_idle_per_upstream: 256,
            shutdown_grace: Duration::from_secs(5),
            workers: 0,
            max_held_requests: 4096,
        }
    }
}

/// The proxy: route table, upstream connection pool, metrics, options. Cheap to clone; serve
/// it on any number of listeners with [`serve`].
#[derive(Debug, Clone)]
pub struct Proxy {
    forwarder: Arc<forward::Forwarder>,
    workers: Arc<listener::Workers>,
}

/// The proxy could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("building the TLS client for https upstreams: {0}")]
    UpstreamTls(#[from] rustls::Error),
    #[error("starting the proxy's worker threads: {0}")]
    Workers(#[from] std::io::Error),
}

impl Proxy {
    /// Builds the proxy and starts its worker threads; it stops serving when `shutdown` is
    /// cancelled.
    pub fn new(
        routes: RouteTable,
        metrics: Arc<Metrics>,
        clock: SharedClock,
        options: ProxyOptions,
        shutdown: CancellationToken,
    ) -> Result<Self, ProxyError> {
        let workers = match options.workers {
            0 => std::thread::available_parallelism().map_or(2, usize::from),
            n => n,
        };
        let forwarder = Arc::new(forward::Forwarder::new(
            routes, metrics, clock, options, shutdown,
        )?);
        let workers = Arc::new(listener::Workers::start(&forwarder, workers)?);
        Ok(Self { forwarder, workers })
    }
}
