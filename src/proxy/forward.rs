//! One request through the proxy: find the route for its host in the current table (one
//! lock-free load), rewrite the headers, send it upstream on a pooled keep-alive connection,
//! and stream the answer back — or answer with a small page when the host is unknown (404), the
//! upstream refuses (502) or is too slow (504). An `Upgrade` (WebSocket) that the upstream
//! accepts becomes a byte tunnel between the two upgraded connections.
//!
//! A request to an instance holds a drain guard from its arrival until its last response byte —
//! and a tunnel for as long as it is open — so a deploy that switched the route away waits for
//! it before stopping the old container.

use std::sync::Arc;
use std::time::Duration;

use http::header::{CONNECTION, CONTENT_LENGTH, HOST, HeaderValue, UPGRADE};
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::ProxyOptions;
use super::body::{BodyProgress, ProxyBody, RequestBody, RequestGuard};
use super::codec::{self, RequestFraming, ResponseHead};
use super::upstream::{Connector, Exchange, Outgoing, UpstreamFailure, UpstreamSlot, WorkerPool};
use super::{headers, pages};
use crate::clock::SharedClock;
use crate::metrics::Metrics;
use crate::routes::{ConnectionGuard, Route, RouteTable, RouteTarget};

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
    /// The upstream connection this client connection keeps between requests (from the pool
    /// of the worker thread serving it).
    pub upstream: Arc<UpstreamSlot>,
    /// The client's address, as it goes into `X-Forwarded-For`.
    pub client_ip: HeaderValue,
    /// `http` or `https`, for `X-Forwarded-Proto`.
    pub proto: &'static str,
    /// On a plain listener that redirects to HTTPS: the HTTPS listener's port.
    pub redirect_to_https_port: Option<u16>,
}

/// How an upstream failure is counted and answered.
trait FailurePage {
    /// The `kind` label of `proxy_upstream_errors`.
    fn kind(self) -> &'static str;
    /// The page the client gets: 504 for timeouts, 502 otherwise.
    fn page(self) -> Response<ProxyBody>;
}

impl FailurePage for UpstreamFailure {
    fn kind(self) -> &'static str {
        match self {
            Self::Refused => "refused",
            Self::Timeout => "timeout",
            Self::Broken => "upstream",
        }
    }

    fn page(self) -> Response<ProxyBody> {
        match self {
            Self::Timeout => pages::gateway_timeout(),
            Self::Refused | Self::Broken => pages::bad_gateway(),
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

    /// Answers one request. Never fails: every problem becomes a page.
    pub async fn handle(
        &self,
        connection: &ConnectionContext,
        mut request: Request<Incoming>,
    ) -> Response<ProxyBody> {
        let started = Instant::now();
        if request.method() == Method::CONNECT {
            self.metrics.proxy.unmatched_requests.inc();
            return pages::method_not_allowed();
        }
        let Some(host) = headers::request_host(request.uri(), request.headers()) else {
            self.metrics.proxy.unmatched_requests.inc();
            return pages::bad_request();
        };
        let Some((route, drain)) = host.to_str().ok().and_then(|h| self.route_for(h)) else {
            self.metrics.proxy.unmatched_requests.inc();
            return pages::not_found();
        };
        let metrics = self.metrics.proxy.route(&route.hostname);
        let arrived = self.clock.now().timestamp();
        let response = match connection.redirect_to_https_port {
            Some(port) => https_redirect(&route, &host, port, &request),
            None => {
                let guard = RequestGuard::new(metrics.open(), drain);
                let upgrade = headers::requested_upgrade(request.headers())
                    .map(|protocol| (protocol, hyper::upgrade::on(&mut request)));
                self.forward(connection, request, &route, host, upgrade, guard)
                    .await
            }
        };
        metrics.record(response.status().as_u16(), started.elapsed(), arrived);
        response
    }

    /// The route for `host` and, for an instance, a guard that counts this request against its
    /// drain. The route is kept for the whole request even if the table is swapped meanwhile, so
    /// the request finishes on the upstream it started with.
    ///
    /// A deploy may swap the table between our look-up and our guard, see no connection to wait
    /// for, and stop the old container under us. So once the guard counts, the table is read
    /// again: if the host moved meanwhile, the request follows it (and a deploy that checks
    /// after the swap is sure to see the guard of any request still bound to the old instance).
    fn route_for(&self, host: &str) -> Option<(Arc<Route>, Option<ConnectionGuard>)> {
        let mut route = self.routes.current().lookup(host).cloned()?;
        for _ in 0..MAX_ROUTE_LOOKUPS {
            let RouteTarget::Instance { instance_id, .. } = route.target else {
                return Some((route, None));
            };
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

    async fn forward(
        &self,
        connection: &ConnectionContext,
        request: Request<Incoming>,
        route: &Route,
        host: HeaderValue,
        upgrade: Option<(HeaderValue, OnUpgrade)>,
        guard: RequestGuard,
    ) -> Response<ProxyBody> {
        let (mut parts, body) = request.into_parts();
        let Some(uri) = headers::upstream_uri(&route.upstream, &parts.uri) else {
            return pages::bad_request();
        };
        let upstream_host = match route.upstream.preserve_host {
            true => host.clone(),
            false => match headers::upstream_host(&route.upstream) {
                Some(value) => value,
                None => return pages::bad_gateway(),
            },
        };
        let headers = &mut parts.headers;
        headers::strip_hop_by_hop(headers);
        headers::set_forwarded(headers, &connection.client_ip, connection.proto, host);
        headers.insert(HOST, upstream_host);
        if let Some((protocol, _)) = &upgrade {
            headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(UPGRADE, protocol.clone());
        }
        // The body's framing upstream is ours to write: a length when it is known, else chunks.
        let had_length = headers.remove(CONTENT_LENGTH).is_some();
        let framing = match body.size_hint().exact() {
            _ if body.is_end_stream() => match had_length || body_expected(&parts.method) {
                true => RequestFraming::Length(0),
                false => RequestFraming::None,
            },
            Some(length) => RequestFraming::Length(length),
            None => RequestFraming::Chunked,
        };
        let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
        let mut head = Vec::with_capacity(512);
        codec::encode_request_head(&mut head, &parts.method, target, &parts.headers, framing);
        let (body, progress) = RequestBody::new(body);
        let outgoing = Outgoing {
            method: &parts.method,
            head: &head,
            framing,
            body,
            max_head_bytes: self.options.max_header_bytes,
        };
        let sent = self
            .send(&connection.upstream, &route.upstream, outgoing, progress)
            .await;
        let (head, exchange) = match sent {
            Ok(exchange) => exchange,
            Err(failure) => {
                self.metrics.proxy.upstream_error(&route.hostname, failure.kind());
                return failure.page();
            }
        };
        let mut response_headers = head.headers;
        if head.status == StatusCode::SWITCHING_PROTOCOLS {
            return match upgrade {
                Some((_, client)) => self.tunnel(client, head.status, response_headers, exchange, guard),
                // An upstream may not switch protocols unasked (RFC 9110 §15.2.2).
                None => {
                    self.metrics
                        .proxy
                        .upstream_error(&route.hostname, UpstreamFailure::Broken.kind());
                    pages::bad_gateway()
                }
            };
        }
        headers::strip_hop_by_hop(&mut response_headers);
        let body = ProxyBody::upstream(
            exchange,
            connection.upstream.clone(),
            self.options.idle_timeout,
            guard,
        );
        let mut response = Response::new(body);
        *response.status_mut() = head.status;
        *response.headers_mut() = response_headers;
        response
    }

    /// Sends a request upstream and waits for the response head. The response timeout counts
    /// from the later of the request's start and the last frame of its body, so a long upload
    /// is not cut while it still flows.
    async fn send(
        &self,
        slot: &UpstreamSlot,
        upstream: &crate::routes::Upstream,
        outgoing: Outgoing<'_>,
        progress: Option<Arc<BodyProgress>>,
    ) -> Result<(ResponseHead, Exchange), UpstreamFailure> {
        let timeout = self.options.response_timeout;
        let response = slot.send(upstream.scheme == "https", &upstream.authority, outgoing);
        tokio::pin!(response);
        let mut deadline = Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, response.as_mut()).await {
                Ok(result) => return result,
                Err(_) => match progress.as_ref().map(|p| p.last() + timeout) {
                    Some(next) if next > Instant::now() => deadline = next,
                    _ => return Err(UpstreamFailure::Timeout),
                },
            }
        }
    }

    /// Answers `101` and joins the client's upgraded connection (hyper hands it over after this
    /// response is written) to the upstream's. The guard lives as long as the tunnel.
    fn tunnel(
        &self,
        client: OnUpgrade,
        status: StatusCode,
        mut headers: http::HeaderMap,
        exchange: Exchange,
        guard: RequestGuard,
    ) -> Response<ProxyBody> {
        let protocol = headers.get(UPGRADE).cloned();
        headers::strip_hop_by_hop(&mut headers);
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        if let Some(protocol) = protocol {
            headers.insert(UPGRADE, protocol);
        }
        let linger = self.options.idle_timeout;
        let (upstream, early) = exchange.into_tunnel();
        // A tunnel outlives the request that opened it, on the same worker thread; at shutdown
        // it ends with that thread's runtime.
        tokio::spawn(async move {
            let _guard = guard;
            let mut client = match client.await {
                Ok(upgraded) => TokioIo::new(upgraded),
                Err(error) => {
                    tracing::debug!(%error, "an upgrade did not complete");
                    return;
                }
            };
            // What the upstream sent right behind its `101` head goes first.
            if !early.is_empty() && client.write_all(&early).await.is_err() {
                return;
            }
            pipe(client, upstream, linger).await;
        });
        let mut response = Response::new(ProxyBody::empty());
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        response
    }
}

/// Whether a request with this method is expected to carry a body, so an empty one is sent
/// with `Content-Length: 0` rather than none (RFC 9110 §8.6).
fn body_expected(method: &Method) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH)
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
fn https_redirect(
    route: &Route,
    host: &HeaderValue,
    port: u16,
    request: &Request<Incoming>,
) -> Response<ProxyBody> {
    let client_used_a_port = host
        .to_str()
        .ok()
        .and_then(|h| h.rsplit_once(':'))
        .is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let path = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let location = match client_used_a_port && port != 443 {
        true => format!("https://{}:{port}{path}", route.hostname),
        false => format!("https://{}{path}", route.hostname),
    };
    match HeaderValue::from_str(&location) {
        Ok(location) => pages::redirect(location),
        Err(_) => pages::bad_request(),
    }
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
