//! One request through the proxy: find the route for its host in the current table (one
//! lock-free load), write its head on for the upstream, send it on a pooled keep-alive
//! connection with the body streamed behind it, and stream the answer back to the client — or
//! answer with a small page when the host is unknown (404), the upstream refuses (502) or is
//! too slow (504). An `Upgrade` (WebSocket) that the upstream accepts becomes a byte tunnel
//! between the two connections.
//!
//! A request for a stage a `stop_first` deploy holds waits, without a drain guard, until the
//! hold is released, and is then routed afresh (see `wait_for_release`).
//!
//! A request to an instance holds a drain guard from its arrival until its last response byte —
//! and a tunnel for as long as it is open — so a deploy that switched the route away waits for
//! it before stopping the old container.

use std::future::poll_fn;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use http::{Method, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::ProxyOptions;
use super::body::{BodyProgress, RequestGuard};
use super::codec::{
    self, Checked, ClientConnection, ClientFraming, RequestFraming, RequestHead, ResponseFraming,
    ResponseHead, TargetForm, Upstreamed,
};
use super::connection::{BodyError, BufferPool, ClientBody, ClientConn, ClientIo, RequestBody};
use super::headers;
use super::pages::{self, Page};
use super::upstream::{Connector, Exchange, Outgoing, OutgoingBody, UpstreamFailure, WorkerPool};
use crate::clock::SharedClock;
use crate::metrics::{Metrics, RouteMetrics};
use crate::routes::{ConnectionGuard, Hold, Route, RouteTable, RouteTarget};

/// Response bodies up to this size are copied behind their head and go out in one write.
const COALESCE_BYTES: usize = 16 * 1024;

/// How many times a request follows a host that moves while it is being routed.
const MAX_ROUTE_LOOKUPS: usize = 4;

/// What the proxy shares between all its listeners and connections.
#[derive(Debug)]
pub struct Forwarder {
    routes: RouteTable,
    /// TLS for `https` upstreams; each worker builds its own pool with it.
    upstream_tls: rustls::ClientConfig,
    metrics: Arc<Metrics>,
    clock: SharedClock,
    pub(super) options: ProxyOptions,
    pub(super) shutdown: CancellationToken,
}

/// What one client connection knows about itself.
#[derive(Debug)]
pub struct ConnectionContext {
    pub forwarder: Arc<Forwarder>,
    /// The upstream connections of the worker thread serving this connection: each request
    /// takes one and gives it back when its response is complete.
    pub upstream: Arc<WorkerPool>,
    /// The worker's read and write buffers, held by a connection only while it has data.
    pub buffers: Arc<BufferPool>,
    /// The client's address, as it goes into `X-Forwarded-For`.
    pub client_ip: String,
    /// `http` or `https`, for `X-Forwarded-Proto`.
    pub proto: &'static str,
    /// On a plain listener that redirects to HTTPS: the HTTPS listener's port.
    pub redirect_to_https_port: Option<u16>,
}

/// How a held request's wait ended.
enum Held {
    /// The hold was released and the host routes here now.
    Released(Arc<Route>, Option<ConnectionGuard>),
    /// The host is not routed any more.
    Gone,
    /// Waited too long, too many wait, or the proxy is stopping: 503 with `Retry-After`.
    Unavailable { retry_after: u64 },
}

/// How an upstream failure is counted and answered.
trait FailurePage {
    /// The `kind` label of `proxy_upstream_errors`.
    fn kind(self) -> &'static str;
    /// The page the client gets: 504 for timeouts, 502 otherwise.
    fn page(self) -> Page;
}

impl FailurePage for UpstreamFailure {
    fn kind(self) -> &'static str {
        match self {
            Self::Refused => "refused",
            Self::Timeout => "timeout",
            Self::Broken => "upstream",
            Self::Client => "client",
            Self::ClientTimeout => "client_timeout",
        }
    }

    fn page(self) -> Page {
        match self {
            Self::Timeout => pages::gateway_timeout(),
            Self::Refused | Self::Broken => pages::bad_gateway(),
            Self::Client => pages::malformed(),
            Self::ClientTimeout => pages::request_timeout(),
        }
    }
}

impl Forwarder {
    pub fn new(
        routes: RouteTable,
        metrics: Arc<Metrics>,
        clock: SharedClock,
        options: ProxyOptions,
        shutdown: CancellationToken,
    ) -> Result<Self, rustls::Error> {
        Ok(Self {
            upstream_tls: upstream_tls()?,
            routes,
            metrics,
            clock,
            options,
            shutdown,
        })
    }

    /// A new pool of idle upstream connections (one per worker thread).
    pub fn worker_pool(&self) -> WorkerPool {
        let connector = Connector::new(self.upstream_tls.clone(), self.options.connect_timeout);
        WorkerPool::new(
            connector,
            self.options.pool_idle_timeout,
            self.options.pool_max_idle_per_upstream,
        )
    }

    /// The gauge of client connections open on the proxy's listeners.
    pub fn metrics_client_connections(&self) -> &prometheus_client::metrics::gauge::Gauge {
        &self.metrics.proxy.client_connections
    }

    /// Answers one request on `conn`. Never fails: every problem becomes a page. Returns
    /// whether the connection can carry another request.
    pub async fn handle<I>(
        &self,
        connection: &ConnectionContext,
        conn: &mut ClientConn<'_, I>,
        head: RequestHead,
    ) -> bool
    where
        I: ClientIo,
    {
        let started = Instant::now();
        let answer = Answer::for_request(&head);
        let checked = match codec::check_request(&head) {
            Ok(checked) => checked,
            Err(refusal) => {
                self.metrics.proxy.unmatched_requests.inc();
                tracing::debug!(rule = refusal.rule, "a request was refused");
                // The body, if any, is in the way of the next request: close.
                return answer.closing().page(conn, pages::refused(refusal.status)).await;
            }
        };
        let framing = checked.framing;
        let host = checked.host;
        // A page sent before the body was read leaves that body in the way of the next request.
        let page_answer = match framing {
            RequestFraming::None => answer,
            _ => answer.closing(),
        };
        if host.is_empty() {
            self.metrics.proxy.unmatched_requests.inc();
            return page_answer.page(conn, pages::bad_request()).await;
        }
        let Some((mut route, mut drain)) = self.route_for(host) else {
            self.metrics.proxy.unmatched_requests.inc();
            return page_answer.page(conn, pages::not_found()).await;
        };
        if let Some(hold) = route.hold.clone() {
            // Off the hot path, and boxed so the held path's state costs unheld requests nothing.
            match Box::pin(self.wait_for_release(host, hold)).await {
                Held::Released(next, guard) => (route, drain) = (next, guard),
                Held::Gone => {
                    self.metrics.proxy.unmatched_requests.inc();
                    return page_answer.page(conn, pages::not_found()).await;
                }
                Held::Unavailable { retry_after } => {
                    let page = pages::held_too_long(retry_after);
                    self.metrics.proxy.route(&route.hostname).record(
                        page.status.as_u16(),
                        started.elapsed(),
                        self.clock.now().timestamp(),
                    );
                    return page_answer.page(conn, page).await;
                }
            }
        }
        let metrics = self.metrics.proxy.route(&route.hostname);
        let arrived = self.clock.now().timestamp();
        if let Some(port) = connection.redirect_to_https_port {
            let page = https_redirect(&route, host, port, &head);
            metrics.record(page.status.as_u16(), started.elapsed(), arrived);
            return page_answer.page(conn, page).await;
        }
        let guard = RequestGuard::new(metrics.open(), drain);
        let record = Recorder {
            metrics: &metrics,
            started,
            arrived,
        };
        self.forward(connection, conn, &head, &checked, &route, answer, guard, &record)
            .await
    }

    /// The route for `host` and, for an instance, a guard that counts this request against its
    /// drain. The route is kept for the whole request even if the table is swapped meanwhile, so
    /// the request finishes on the upstream it started with.
    ///
    /// A deploy may swap the table between our look-up and our guard, see no connection to wait
    /// for, and stop the old container under us. So once the guard counts, the table is read
    /// again: if the host moved meanwhile, the request follows it (and a deploy that checks
    /// after the swap is sure to see the guard of any request still bound to the old instance).
    ///
    /// A held route comes back without a guard: its request waits, and must not keep the
    /// instance being stopped from draining.
    fn route_for(&self, host: &str) -> Option<(Arc<Route>, Option<ConnectionGuard>)> {
        let mut route = self.routes.current().lookup(host).cloned()?;
        for _ in 0..MAX_ROUTE_LOOKUPS {
            let RouteTarget::Instance { instance_id, .. } = route.target else {
                return Some((route, None));
            };
            if route.hold.is_some() {
                return Some((route, None));
            }
            let guard = self.routes.track_connection(instance_id);
            let now = self.routes.current().lookup(host).cloned()?;
            if now.target == route.target {
                return Some((route, Some(guard)));
            }
            route = now;
        }
        // A host switching instances this fast is not a real deploy; take the last look-up.
        let guard = match route.target {
            RouteTarget::Instance { instance_id, .. } => Some(self.routes.track_connection(instance_id)),
            RouteTarget::Proxy { .. } => None,
        };
        Some((route, guard))
    }

    /// Parks a request whose stage is held until the hold is released, then routes it again:
    /// to the new instance, or to the old one brought back. It waits at most the hold's
    /// `max_wait` from its arrival, and only while fewer than `max_held_requests` wait on the
    /// same hold; otherwise, or when the proxy shuts down, it is answered 503.
    async fn wait_for_release(&self, host: &str, mut hold: Arc<Hold>) -> Held {
        let retry_after = hold.max_wait().as_secs().max(1);
        let deadline = Instant::now() + hold.max_wait();
        loop {
            let Some(ticket) = hold.park(self.options.max_held_requests) else {
                return Held::Unavailable { retry_after };
            };
            tokio::select! {
                () = ticket.released() => {}
                () = tokio::time::sleep_until(deadline) => return Held::Unavailable { retry_after },
                () = self.shutdown.cancelled() => return Held::Unavailable { retry_after },
            }
            drop(ticket);
            let Some((route, guard)) = self.route_for(host) else {
                return Held::Gone;
            };
            match route.hold.clone() {
                None => return Held::Released(route, guard),
                // A release swaps the table before it wakes anyone, so a released hold is
                // never found again; if it were, waiting on it would spin.
                Some(next) if next.is_released() => return Held::Unavailable { retry_after },
                // Held again (another deploy of the stage): wait on that one, same deadline.
                Some(next) => hold = next,
            }
        }
    }

    /// Sends the request upstream and the answer back, recording its status and the time to
    /// its head before anything of the answer is written (so whoever reads the metrics after
    /// the answer sees it counted); whether the client connection stays open.
    #[allow(clippy::too_many_arguments)]
    async fn forward<I>(
        &self,
        connection: &ConnectionContext,
        conn: &mut ClientConn<'_, I>,
        head: &RequestHead,
        checked: &Checked<'_>,
        route: &Route,
        mut answer: Answer,
        guard: RequestGuard,
        record: &Recorder<'_>,
    ) -> bool
    where
        I: ClientIo,
    {
        let upstream = &route.upstream;
        let (host, framing) = (checked.host, checked.framing);
        let target = match checked.target {
            TargetForm::Asterisk => "*".into(),
            TargetForm::Origin | TargetForm::Absolute => headers::upstream_target(upstream, head.target()),
        };
        let upgrade = head.upgrade();
        // `Expect: 100-continue` is answered here, before the body is read.
        if framing != RequestFraming::None && !head.http10 && head.fields.has_token("expect", "100-continue")
        {
            conn.out().extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
            if conn.flush_out().await.is_err() {
                record.status(StatusCode::BAD_REQUEST);
                return false;
            }
        }
        // A small body is read whole before an upstream connection is taken: a slow client
        // ties up no upstream connection while it sends it. A larger one streams.
        let body = match conn
            .buffer_body(
                framing,
                self.options.request_buffer_bytes,
                self.options.client_body_timeout,
            )
            .await
        {
            Ok(body) => body,
            Err(error) => {
                let page = match error {
                    BodyError::TimedOut => pages::request_timeout(),
                    BodyError::Malformed => pages::malformed(),
                    BodyError::Io(error) => {
                        tracing::debug!(%error, "a client broke off in the middle of a request body");
                        record.status(StatusCode::BAD_REQUEST);
                        return false;
                    }
                };
                record.status(page.status);
                answer.closing().page(conn, page).await;
                return false;
            }
        };
        // A buffered body goes upstream with its length, whatever its framing from the client.
        let upstream_framing = match (&body, framing) {
            (_, RequestFraming::None) => RequestFraming::None,
            (RequestBody::Buffered(data), _) => RequestFraming::Length(data.len() as u64),
            (RequestBody::Streamed { .. }, framing) => framing,
        };
        let mut upstream_head = conn.pool().take_write();
        codec::write_upstream_head(
            &mut upstream_head,
            head,
            &Upstreamed {
                target: target.as_bytes(),
                host: match upstream.preserve_host {
                    true => host.as_bytes(),
                    false => headers::upstream_host(upstream).as_bytes(),
                },
                client_ip: connection.client_ip.as_bytes(),
                proto: connection.proto,
                forwarded_host: host.as_bytes(),
                framing: upstream_framing,
                upgrade,
                underscores: upstream.underscores_in_headers,
            },
        );
        let progress = BodyProgress::default();
        let pool = conn.pool();
        let (sent, body_done) = match body {
            RequestBody::Buffered(data) => {
                let outgoing = Outgoing {
                    method: &head.method,
                    head: &upstream_head,
                    body: OutgoingBody::Buffered(data),
                    max_head_bytes: self.options.max_header_bytes,
                    body_timeout: self.options.client_body_timeout,
                };
                (
                    self.send(&connection.upstream, upstream, outgoing, None).await,
                    true,
                )
            }
            RequestBody::Streamed { read, rest } => {
                let mut body = ClientBody::new(conn, rest, &progress);
                let outgoing = Outgoing {
                    method: &head.method,
                    head: &upstream_head,
                    body: OutgoingBody::Streamed {
                        read,
                        rest: &mut body,
                        chunked: upstream_framing == RequestFraming::Chunked,
                    },
                    max_head_bytes: self.options.max_header_bytes,
                    body_timeout: self.options.client_body_timeout,
                };
                let sent = self
                    .send(&connection.upstream, upstream, outgoing, Some(&progress))
                    .await;
                (sent, body.is_done())
            }
        };
        pool.put_write(upstream_head);
        if !body_done {
            answer = answer.closing();
        }
        let (response, exchange) = match sent {
            Ok(exchange) => exchange,
            Err(failure) => {
                if !matches!(failure, UpstreamFailure::Client | UpstreamFailure::ClientTimeout) {
                    self.metrics.proxy.upstream_error(&route.hostname, failure.kind());
                }
                let page = failure.page();
                record.status(page.status);
                return answer.page(conn, page).await;
            }
        };
        if response.status == StatusCode::SWITCHING_PROTOCOLS {
            let Some(protocol) = upgrade else {
                // An upstream may not switch protocols unasked (RFC 9110 §15.2.2).
                self.metrics
                    .proxy
                    .upstream_error(&route.hostname, UpstreamFailure::Broken.kind());
                record.status(StatusCode::BAD_GATEWAY);
                return answer.closing().page(conn, pages::bad_gateway()).await;
            };
            codec::write_client_head(
                conn.out(),
                &response,
                ClientFraming::NoBody,
                ClientConnection::Upgrade(protocol),
            );
            record.status(response.status);
            self.tunnel(conn, exchange, guard).await;
            return false;
        }
        let client_framing = match exchange.framing() {
            ResponseFraming::Empty => ClientFraming::NoBody,
            ResponseFraming::Length(_) => ClientFraming::Length,
            // An HTTP/1.0 client cannot take chunks: the body ends when we close.
            ResponseFraming::Chunked | ResponseFraming::UntilClose if head.http10 => {
                ClientFraming::UntilClose
            }
            ResponseFraming::Chunked | ResponseFraming::UntilClose => ClientFraming::Chunked,
        };
        if client_framing == ClientFraming::UntilClose {
            answer = answer.closing();
        }
        codec::write_client_head(conn.out(), &response, client_framing, answer.connection());
        record.status(response.status);
        let complete = self
            .stream_body(conn, exchange, client_framing, &connection.upstream, guard)
            .await;
        complete && answer.keep_alive
    }

    /// Streams the response body behind its head (already in `conn.out`): small pieces are
    /// coalesced with it, larger ones go out with what is pending in one vectored write. An
    /// upstream silent for the idle timeout mid-body is cut off. The upstream connection goes
    /// back to the pool as soon as the body is read. True when the whole body went out.
    async fn stream_body<I>(
        &self,
        conn: &mut ClientConn<'_, I>,
        mut exchange: Exchange,
        framing: ClientFraming,
        pool: &WorkerPool,
        _guard: RequestGuard,
    ) -> bool
    where
        I: ClientIo,
    {
        let chunked = framing == ClientFraming::Chunked;
        loop {
            // What the upstream already sent is taken at once; only then is the wait timed.
            let next = match poll_fn(|cx| Poll::Ready(exchange.poll_data(cx))).await {
                Poll::Ready(next) => next,
                Poll::Pending => {
                    if conn.flush_out().await.is_err() {
                        return false;
                    }
                    let waiting = poll_fn(|cx| exchange.poll_data(cx));
                    match tokio::time::timeout(self.options.idle_timeout, waiting).await {
                        Ok(next) => next,
                        Err(_) => {
                            tracing::debug!("an upstream went silent in the middle of a response body");
                            return false;
                        }
                    }
                }
            };
            match next {
                Some(Ok(data)) => {
                    if chunked {
                        codec::chunk_header(conn.out(), data.len());
                    }
                    if data.len() <= COALESCE_BYTES {
                        conn.out().extend_from_slice(&data);
                    } else if conn.write_with_out(&data).await.is_err() {
                        return false;
                    }
                    if chunked {
                        conn.out().extend_from_slice(b"\r\n");
                    }
                    if conn.out.len() >= 4 * COALESCE_BYTES && conn.flush_out().await.is_err() {
                        return false;
                    }
                }
                None => {
                    if chunked {
                        conn.out().extend_from_slice(codec::LAST_CHUNK);
                    }
                    if let Some(connection) = exchange.into_reusable() {
                        pool.put(connection);
                    }
                    return conn.flush_out().await.is_ok();
                }
                Some(Err(error)) => {
                    tracing::debug!(%error, "an upstream broke off a response body");
                    let _ = conn.flush_out().await;
                    return false;
                }
            }
        }
    }

    /// Sends a request upstream and waits for the response head. The response timeout counts
    /// from the later of the request's start and the last piece of its body, so a long upload
    /// is not cut while it still flows.
    async fn send(
        &self,
        pool: &WorkerPool,
        upstream: &crate::routes::Upstream,
        outgoing: Outgoing<'_>,
        progress: Option<&BodyProgress>,
    ) -> Result<(ResponseHead, Exchange), UpstreamFailure> {
        let timeout = self.options.response_timeout;
        let response = pool.send(upstream.scheme == "https", &upstream.authority, outgoing);
        tokio::pin!(response);
        let mut deadline = Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, response.as_mut()).await {
                Ok(result) => return result,
                Err(_) => match progress.map(|p| p.last() + timeout) {
                    Some(next) if next > Instant::now() => deadline = next,
                    _ => return Err(UpstreamFailure::Timeout),
                },
            }
        }
    }

    /// Joins the client connection (the `101` head waiting in its buffer) to the upstream's
    /// until both are done; the guard lives as long as the tunnel.
    async fn tunnel<I>(&self, conn: &mut ClientConn<'_, I>, exchange: Exchange, _guard: RequestGuard)
    where
        I: ClientIo,
    {
        let (mut upstream, early) = exchange.into_tunnel();
        // What the upstream sent right behind its `101` head goes first, after the head.
        conn.out().extend_from_slice(&early);
        if conn.flush_out().await.is_err() {
            return;
        }
        // And what the client sent right behind its request goes up first.
        if !conn.buf.is_empty() {
            if upstream.write_all(&conn.buf).await.is_err() {
                return;
            }
            conn.buf.clear();
        }
        pipe(&mut conn.io, &mut upstream, self.options.idle_timeout).await;
    }
}

/// Records one forwarded request in its route's metrics: its status and the time from its
/// arrival to the moment its answer's head was ready.
struct Recorder<'a> {
    metrics: &'a RouteMetrics,
    started: Instant,
    arrived: i64,
}

impl Recorder<'_> {
    fn status(&self, status: StatusCode) {
        self.metrics
            .record(status.as_u16(), self.started.elapsed(), self.arrived);
    }
}

/// How a client connection is answered: kept alive or closed, said the HTTP/1.0 way or not.
#[derive(Debug, Clone, Copy)]
struct Answer {
    keep_alive: bool,
    http10: bool,
    head_only: bool,
}

impl Answer {
    fn for_request(head: &RequestHead) -> Self {
        Self {
            keep_alive: head.keeps_alive(),
            http10: head.http10,
            head_only: head.method == Method::HEAD,
        }
    }

    fn closing(self) -> Self {
        Self {
            keep_alive: false,
            ..self
        }
    }

    fn connection(self) -> ClientConnection<'static> {
        match (self.keep_alive, self.http10) {
            (false, _) => ClientConnection::Close,
            (true, true) => ClientConnection::KeepAlive10,
            (true, false) => ClientConnection::KeepAlive,
        }
    }

    /// Answers with `page`; whether the connection stays open.
    async fn page<I>(self, conn: &mut ClientConn<'_, I>, page: Page) -> bool
    where
        I: ClientIo,
    {
        page.write(conn.out(), self.head_only, self.connection());
        conn.flush_out().await.is_ok() && self.keep_alive
    }
}

/// Copies bytes both ways until both sides are done. When one side closes, the other gets
/// `linger` to finish: a client that never closes its half would otherwise keep the tunnel —
/// and a deploy's drain — waiting after the upstream has gone.
async fn pipe<C, U>(client: C, upstream: U, linger: Duration)
where
    C: AsyncRead + AsyncWrite,
    U: AsyncRead + AsyncWrite,
{
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut upstream_read, mut upstream_write) = tokio::io::split(upstream);
    let up = async {
        let _ = tokio::io::copy(&mut client_read, &mut upstream_write).await;
        let _ = upstream_write.shutdown().await;
    };
    let down = async {
        let _ = tokio::io::copy(&mut upstream_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };
    tokio::pin!(up, down);
    tokio::select! {
        () = &mut up => { let _ = tokio::time::timeout(linger, down).await; }
        () = &mut down => { let _ = tokio::time::timeout(linger, up).await; }
    }
}

/// `308` to the same host and path on the HTTPS listener. The port is kept explicit only when
/// the client used one (it talks to our listeners directly); without one it reached us on the
/// default port, so HTTPS is on its default port too.
fn https_redirect(route: &Route, host: &str, port: u16, head: &RequestHead) -> Page {
    let client_used_a_port = host
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let path = headers::path_and_query(head.target());
    let location = match client_used_a_port && port != 443 {
        true => format!("https://{}:{port}{path}", route.hostname),
        false => format!("https://{}{path}", route.hostname),
    };
    pages::redirect(location)
}

/// The TLS configuration for `https` upstreams: aws-lc-rs and the platform's roots.
fn upstream_tls() -> Result<rustls::ClientConfig, rustls::Error> {
    use rustls_platform_verifier::BuilderVerifierExt;

    Ok(
        rustls::ClientConfig::builder_with_provider(super::tls::provider())
            .with_safe_default_protocol_versions()?
            .with_platform_verifier()?
            .with_no_client_auth(),
    )
}
