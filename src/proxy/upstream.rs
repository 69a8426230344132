//! Keep-alive connections to upstreams, kept next to the client connection that uses them.
//!
//! A general-purpose pooled client (hyper-util's) runs every upstream connection as a task of
//! its own and hands each request to it through channels, with a shared pool map in between.
//! For a proxy that is most of its cost per request. Here instead a client connection keeps the
//! upstream connection it last used in its [`UpstreamSlot`], and the upstream connection's
//! state machine is polled by the request and response-body futures themselves — on the same
//! task, so a request costs no task switch and no pool look-up. When the client connection
//! closes, its upstream connection goes to the worker's [`WorkerPool`] for the next client.
//!
//! Idle connections are not polled; before one is reused it is polled once, so a connection
//! the upstream closed meanwhile is noticed and replaced. A request that a reused connection
//! could not even send is retried once on a fresh one.

use std::collections::HashMap;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::body::RequestBody;

/// Why an upstream could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// Refused, unreachable, or a TLS handshake that failed: 502.
    Refused,
    /// Connecting or waiting for the response headers took too long: 504.
    Timeout,
    /// The upstream closed or broke the exchange (a malformed answer): 502.
    Broken,
}

/// The connection's state machine (hyper's upgradeable client connection, whose type is not
/// nameable): it writes requests, reads responses, and hands the socket over on a `101`.
type Driver = dyn std::future::Future<Output = hyper::Result<()>> + Send;

/// One HTTP/1.1 connection to an upstream: the handle requests are sent on, and the state
/// machine that whoever waits on it must poll.
pub struct UpstreamConnection {
    sender: http1::SendRequest<RequestBody>,
    /// `None` once the connection has ended.
    driver: Option<Pin<Box<Driver>>>,
    https: bool,
    authority: String,
    idle_since: Instant,
}

impl std::fmt::Debug for UpstreamConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamConnection")
            .field("https", &self.https)
            .field("authority", &self.authority)
            .field("open", &self.driver.is_some())
            .finish()
    }
}

impl UpstreamConnection {
    fn serves(&self, https: bool, authority: &str) -> bool {
        self.https == https && self.authority == authority
    }

    /// Drives the connection; false once it has ended. Call it whenever the task is polled
    /// while this connection has work in flight.
    pub fn poll_drive(&mut self, cx: &mut Context<'_>) -> bool {
        match &mut self.driver {
            Some(driver) => {
                if driver.as_mut().poll(cx).is_ready() {
                    self.driver = None;
                }
                self.driver.is_some()
            }
            None => false,
        }
    }

    /// Whether the connection can take a request now (an idle one is polled to find out if
    /// the upstream closed it meanwhile).
    async fn ready(&mut self) -> bool {
        let (driver, sender) = (&mut self.driver, &mut self.sender);
        poll_fn(|cx| {
            let Some(running) = driver else {
                return Poll::Ready(false);
            };
            if running.as_mut().poll(cx).is_ready() {
                *driver = None;
                return Poll::Ready(false);
            }
            sender.poll_ready(cx).map(|ready| ready.is_ok())
        })
        .await
    }

    /// Sends a request and waits for the response headers, driving the connection meanwhile.
    /// On failure, the request comes back when it was not sent at all.
    async fn exchange(
        &mut self,
        request: Request<RequestBody>,
    ) -> Result<Response<Incoming>, (hyper::Error, Option<Request<RequestBody>>)> {
        let response = self.sender.try_send_request(request);
        tokio::pin!(response);
        let driver = &mut self.driver;
        let result = poll_fn(|cx| {
            if let Some(running) = driver
                && running.as_mut().poll(cx).is_ready()
            {
                *driver = None;
            }
            response.as_mut().poll(cx)
        })
        .await;
        result.map_err(|mut e| {
            let message = e.take_message();
            (e.into_error(), message)
        })
    }

    /// Gives up the connection's state machine, to be driven to the end by a tunnel (an
    /// upgrade completes only once it has handed the connection over).
    pub fn into_driver(mut self) -> Option<Pin<Box<Driver>>> {
        self.driver.take()
    }
}

/// Opens connections to upstreams: TCP with a timeout and `TCP_NODELAY`, then TLS for `https`.
#[derive(Clone)]
pub struct Connector {
    tls: tokio_rustls::TlsConnector,
    connect_timeout: Duration,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

impl Connector {
    pub fn new(mut tls: rustls::ClientConfig, connect_timeout: Duration) -> Self {
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Self {
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
            connect_timeout,
        }
    }

    async fn connect(&self, https: bool, authority: &str) -> Result<UpstreamConnection, UpstreamFailure> {
        let io = tokio::time::timeout(self.connect_timeout, self.open(https, authority))
            .await
            .map_err(|_| UpstreamFailure::Timeout)??;
        let (sender, driver) = http1::Builder::new()
            .handshake(TokioIo::new(io))
            .await
            .map_err(|_| UpstreamFailure::Broken)?;
        Ok(UpstreamConnection {
            sender,
            driver: Some(Box::pin(driver.with_upgrades())),
            https,
            authority: authority.to_owned(),
            idle_since: Instant::now(),
        })
    }

    async fn open(&self, https: bool, authority: &str) -> Result<UpstreamIo, UpstreamFailure> {
        let failure = |e: io::Error| match e.kind() {
            io::ErrorKind::TimedOut => UpstreamFailure::Timeout,
            _ => UpstreamFailure::Refused,
        };
        let mut last = UpstreamFailure::Refused;
        // An IP literal resolves at once; a name goes through the system resolver.
        for addr in tokio::net::lookup_host(authority).await.map_err(failure)? {
            match TcpStream::connect(addr).await {
                Ok(tcp) => {
                    let _ = tcp.set_nodelay(true);
                    if !https {
                        return Ok(UpstreamIo::Plain(tcp));
                    }
                    let host = authority.rsplit_once(':').map_or(authority, |(host, _)| host);
                    let host = host.trim_start_matches('[').trim_end_matches(']');
                    let name = ServerName::try_from(host.to_owned()).map_err(|_| UpstreamFailure::Refused)?;
                    return match self.tls.connect(name, tcp).await {
                        Ok(tls) => Ok(UpstreamIo::Tls(Box::new(tls))),
                        Err(error) => {
                            tracing::debug!(%error, authority, "the TLS handshake with an upstream failed");
                            Err(UpstreamFailure::Refused)
                        }
                    };
                }
                Err(e) => last = failure(e),
            }
        }
        Err(last)
    }
}

/// The idle upstream connections of one worker thread, by upstream, for client connections
/// that have none of their own yet.
#[derive(Debug)]
pub struct WorkerPool {
    connector: Connector,
    idle: Mutex<HashMap<(bool, String), Vec<UpstreamConnection>>>,
    idle_timeout: Duration,
    max_idle_per_upstream: usize,
}

impl WorkerPool {
    pub fn new(connector: Connector, idle_timeout: Duration, max_idle_per_upstream: usize) -> Self {
        Self {
            connector,
            idle: Mutex::default(),
            idle_timeout,
            max_idle_per_upstream,
        }
    }

    fn put(&self, mut connection: UpstreamConnection) {
        if connection.driver.is_none() || self.max_idle_per_upstream == 0 {
            return;
        }
        connection.idle_since = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle
            .entry((connection.https, connection.authority.clone()))
            .or_default();
        list.push(connection);
        if list.len() > self.max_idle_per_upstream {
            list.remove(0);
        }
    }

    fn take(&self, https: bool, authority: &str) -> Option<UpstreamConnection> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(&(https, authority.to_owned()))?;
        while let Some(connection) = list.pop() {
            if connection.idle_since.elapsed() < self.idle_timeout {
                return Some(connection);
            }
        }
        None
    }

    /// Closes connections idle for longer than the idle timeout.
    pub fn sweep(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        for list in idle.values_mut() {
            list.retain(|c| c.idle_since.elapsed() < self.idle_timeout);
        }
        idle.retain(|_, list| !list.is_empty());
    }
}

/// The upstream connection a client connection holds between its requests. Dropped with the
/// client connection, it hands the upstream connection to the worker's pool.
#[derive(Debug)]
pub struct UpstreamSlot {
    held: Mutex<Option<UpstreamConnection>>,
    pool: Arc<WorkerPool>,
}

impl UpstreamSlot {
    pub fn new(pool: Arc<WorkerPool>) -> Self {
        Self {
            held: Mutex::new(None),
            pool,
        }
    }

    /// Keeps a connection whose exchange is complete for the next request.
    pub fn release(&self, connection: UpstreamConnection) {
        if connection.driver.is_none() {
            return;
        }
        let previous = self
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(connection);
        if let Some(previous) = previous {
            self.pool.put(previous);
        }
    }

    fn take(&self, https: bool, authority: &str) -> Option<UpstreamConnection> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        match held.take() {
            Some(connection) if connection.serves(https, authority) => Some(connection),
            Some(other) => {
                drop(held);
                self.pool.put(other);
                None
            }
            None => None,
        }
    }

    /// Sends `request` to `https`/`authority` on a ready connection — this client connection's,
    /// an idle one of the worker's, or a new one — and returns the response headers with the
    /// connection, which the response body must keep driving.
    pub async fn send(
        &self,
        https: bool,
        authority: &str,
        request: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, UpstreamConnection), UpstreamFailure> {
        let mut reused = None;
        let mut candidate = self.take(https, authority);
        while let Some(mut connection) = candidate {
            let ready = tokio::time::timeout(self.pool.connector.connect_timeout, connection.ready()).await;
            if ready == Ok(true) {
                reused = Some(connection);
                break;
            }
            candidate = self.pool.take(https, authority);
        }
        let (mut connection, was_reused) = match reused {
            Some(connection) => (connection, true),
            None => (self.pool.connector.connect(https, authority).await?, false),
        };
        match connection.exchange(request).await {
            Ok(response) => Ok((response, connection)),
            // A reused connection that closed before the request went out: once more, fresh.
            Err((_, Some(request))) if was_reused => {
                let mut fresh = self.pool.connector.connect(https, authority).await?;
                match fresh.exchange(request).await {
                    Ok(response) => Ok((response, fresh)),
                    Err(_) => Err(UpstreamFailure::Broken),
                }
            }
            Err((error, _)) => {
                tracing::debug!(%error, authority, "an upstream exchange failed");
                Err(UpstreamFailure::Broken)
            }
        }
    }
}

impl Drop for UpstreamSlot {
    fn drop(&mut self) {
        if let Some(connection) = self.held.get_mut().unwrap_or_else(|e| e.into_inner()).take() {
            self.pool.put(connection);
        }
    }
}

/// A connection to an upstream, plain or TLS.
#[derive(Debug)]
enum UpstreamIo {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for UpstreamIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(io) => Pin::new(io).poll_read(cx, buf),
            Self::Tls(io) => Pin::new(io.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(io) => Pin::new(io).poll_write(cx, buf),
            Self::Tls(io) => Pin::new(io.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            Self::Tls(io) => Pin::new(io.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(io) => io.is_write_vectored(),
            Self::Tls(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(io) => Pin::new(io).poll_flush(cx),
            Self::Tls(io) => Pin::new(io.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(io) => Pin::new(io).poll_shutdown(cx),
            Self::Tls(io) => Pin::new(io.as_mut()).poll_shutdown(cx),
        }
    }
}
