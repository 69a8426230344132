//! Keep-alive HTTP/1.1 connections to upstreams, kept next to the client connection that uses
//! them, and the exchange of one request and response on such a connection.
//!
//! A general-purpose pooled client (hyper-util's) runs every upstream connection as a task of
//! its own and hands each request to it through channels, with a shared pool map in between;
//! hyper's bare client connection still puts a channel, a oneshot and a body channel between a
//! request and its socket. For a proxy that is most of its cost per request. Here a client
//! connection keeps the upstream connection it last used in its [`UpstreamSlot`] and talks to
//! it directly with [`super::codec`]: the request head goes out in one write, the response head
//! is parsed out of the read buffer, and the body is read by the response body itself, on the
//! same task — no task switch, no channel, no pool look-up. When the client connection closes,
//! its upstream connection goes to the worker's [`WorkerPool`] for the next client.
//!
//! Idle connections are not polled; before one is reused it is polled once, so a connection
//! the upstream closed meanwhile is noticed and replaced. A request that a reused connection
//! could not deliver — its head did not go out, or the connection closed before a byte of the
//! answer came back and no byte of the request body was used — is retried once on a fresh one.

use std::collections::HashMap;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::Method;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::io::poll_read_buf;

use super::body::RequestSource;
use super::codec::{self, ChunkedDecoder, Decoded, RequestFraming, ResponseFraming, ResponseHead};

/// Room made in a connection's read buffer before each read.
const READ_CHUNK: usize = 16 * 1024;

/// Why an upstream could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// Refused, unreachable, or a TLS handshake that failed: 502.
    Refused,
    /// Connecting or waiting for the response headers took too long: 504.
    Timeout,
    /// The upstream closed or broke the exchange (a malformed answer): 502.
    Broken,
    /// Not the upstream's fault: the client broke off or garbled its request body (400).
    Client,
}

/// One request for [`UpstreamSlot::send`]: its head already encoded, and its body.
pub struct Outgoing<'a> {
    pub method: &'a Method,
    pub head: &'a [u8],
    pub framing: RequestFraming,
    pub body: &'a mut dyn RequestSource,
    /// The response head may not be larger than this.
    pub max_head_bytes: usize,
}

/// An exchange that failed, and whether it may be tried again on a fresh connection.
struct ExchangeError {
    failure: UpstreamFailure,
    retryable: bool,
}

/// One HTTP/1.1 connection to an upstream and the bytes read from it but not used yet.
pub struct UpstreamConnection {
    io: UpstreamIo,
    buf: BytesMut,
    https: bool,
    authority: Arc<str>,
    idle_since: Instant,
}

impl std::fmt::Debug for UpstreamConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamConnection")
            .field("https", &self.https)
            .field("authority", &self.authority)
            .finish_non_exhaustive()
    }
}

impl UpstreamConnection {
    fn serves(&self, https: bool, authority: &str) -> bool {
        self.https == https && &*self.authority == authority
    }

    /// Whether an idle connection can take a request: one poll of its socket, which must have
    /// nothing to say — the upstream closing it, or sending unasked, rules it out.
    fn is_reusable(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut probe = [0u8; 1];
        let mut probe = ReadBuf::new(&mut probe);
        matches!(
            Pin::new(&mut self.io).poll_read(&mut cx, &mut probe),
            Poll::Pending
        )
    }

    /// Reads what the upstream has into the buffer; `Ok(0)` at its end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK);
        }
        poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }

    /// Sends the request (head, then the body as it comes) and reads the response head,
    /// skipping interim `1xx` answers other than `101`.
    async fn exchange(
        &mut self,
        outgoing: &mut Outgoing<'_>,
        reused: bool,
    ) -> Result<ResponseHead, ExchangeError> {
        let broken = |retryable| ExchangeError {
            failure: UpstreamFailure::Broken,
            retryable: reused && retryable,
        };
        if let Err(error) = self.io.write_all(outgoing.head).await {
            tracing::debug!(%error, authority = &*self.authority, "writing a request head upstream failed");
            return Err(broken(true));
        }
        let mut body_used = false;
        if outgoing.framing != RequestFraming::None {
            while let Some(data) = poll_fn(|cx| outgoing.body.poll_data(cx)).await {
                body_used = true;
                let Ok(data) = data else {
                    return Err(ExchangeError {
                        failure: UpstreamFailure::Client,
                        retryable: false,
                    });
                };
                if data.is_empty() {
                    continue;
                }
                let written = match outgoing.framing {
                    RequestFraming::Chunked => self.write_chunk(data).await,
                    _ => self.io.write_all(&data).await,
                };
                if written.is_err() {
                    return Err(broken(false));
                }
            }
            if outgoing.framing == RequestFraming::Chunked
                && self.io.write_all(codec::LAST_CHUNK).await.is_err()
            {
                return Err(broken(false));
            }
        }
        if self.io.flush().await.is_err() {
            return Err(broken(!body_used));
        }
        // A request whose answer never started may go again if it can be repeated safely.
        let repeatable = !body_used && outgoing.method.is_idempotent();
        let mut received = false;
        loop {
            match codec::parse_response_head(&mut self.buf, outgoing.max_head_bytes) {
                Ok(Some(head))
                    if head.status.is_informational()
                        && head.status != http::StatusCode::SWITCHING_PROTOCOLS =>
                {
                    continue;
                }
                Ok(Some(head)) => return Ok(head),
                Ok(None) => {}
                Err(error) => {
                    tracing::debug!(%error, authority = &*self.authority, "an upstream sent a malformed response");
                    return Err(broken(false));
                }
            }
            match poll_fn(|cx| self.poll_fill(cx)).await {
                Ok(0) | Err(_) => return Err(broken(repeatable && !received)),
                Ok(_) => received = true,
            }
        }
    }

    async fn write_chunk(&mut self, data: Bytes) -> io::Result<()> {
        let mut size = Vec::with_capacity(12);
        codec::chunk_header(&mut size, data.len());
        self.io.write_all(&size).await?;
        self.io.write_all(&data).await?;
        self.io.write_all(b"\r\n").await
    }
}

/// A response whose head has been read: the connection its body arrives on, and how far the
/// body has come.
#[derive(Debug)]
pub struct Exchange {
    connection: UpstreamConnection,
    framing: ResponseFraming,
    body: BodyState,
    keep_alive: bool,
}

#[derive(Debug)]
enum BodyState {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
    Done,
}

/// The upstream broke off a response body or sent a malformed one.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamBodyError {
    #[error("the upstream closed the connection before the end of the response body")]
    Incomplete,
    #[error("reading the response body: {0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Codec(#[from] codec::CodecError),
}

impl Exchange {
    fn new(connection: UpstreamConnection, framing: ResponseFraming, keep_alive: bool) -> Self {
        let body = match framing {
            ResponseFraming::Empty => BodyState::Done,
            ResponseFraming::Length(n) => BodyState::Length(n),
            ResponseFraming::Chunked => BodyState::Chunked(ChunkedDecoder::default()),
            ResponseFraming::UntilClose => BodyState::UntilClose,
        };
        Self {
            connection,
            framing,
            body,
            keep_alive: keep_alive && framing != ResponseFraming::UntilClose,
        }
    }

    /// How the response body is delimited.
    pub fn framing(&self) -> ResponseFraming {
        self.framing
    }

    /// Whether the whole body has been read.
    pub fn is_done(&self) -> bool {
        matches!(self.body, BodyState::Done)
    }

    /// The next piece of the body, straight out of the read buffer.
    pub fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, UpstreamBodyError>>> {
        loop {
            let buf = &mut self.connection.buf;
            match &mut self.body {
                BodyState::Done => return Poll::Ready(None),
                BodyState::Length(remaining) if !buf.is_empty() => {
                    let data = codec::take_counted(buf, remaining);
                    if *remaining == 0 {
                        self.body = BodyState::Done;
                    }
                    return Poll::Ready(Some(Ok(data)));
                }
                BodyState::Chunked(decoder) => match decoder.decode(buf) {
                    Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(data))),
                    Ok(Decoded::Done) => {
                        self.body = BodyState::Done;
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::NeedMore) => {}
                    Err(error) => {
                        self.body = BodyState::Done;
                        self.keep_alive = false;
                        return Poll::Ready(Some(Err(error.into())));
                    }
                },
                BodyState::UntilClose if !buf.is_empty() => {
                    let data = buf.split().freeze();
                    return Poll::Ready(Some(Ok(data)));
                }
                BodyState::Length(_) | BodyState::UntilClose => {}
            }
            match ready!(self.connection.poll_fill(cx)) {
                Ok(0) if matches!(self.body, BodyState::UntilClose) => {
                    self.body = BodyState::Done;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    self.body = BodyState::Done;
                    self.keep_alive = false;
                    return Poll::Ready(Some(Err(UpstreamBodyError::Incomplete)));
                }
                Ok(_) => {}
                Err(error) => {
                    self.body = BodyState::Done;
                    self.keep_alive = false;
                    return Poll::Ready(Some(Err(error.into())));
                }
            }
        }
    }

    /// The connection, when the body is complete and the connection can carry another request.
    pub fn into_reusable(self) -> Option<UpstreamConnection> {
        (self.is_done() && self.keep_alive && self.connection.buf.is_empty()).then_some(self.connection)
    }

    /// The raw connection after a `101`, and what the upstream already sent past its head.
    pub fn into_tunnel(self) -> (UpstreamIo, Bytes) {
        (self.connection.io, self.connection.buf.freeze())
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
        Ok(UpstreamConnection {
            io,
            buf: BytesMut::with_capacity(READ_CHUNK),
            https,
            authority: Arc::from(authority),
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
        if self.max_idle_per_upstream == 0 {
            return;
        }
        connection.idle_since = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle
            .entry((connection.https, connection.authority.to_string()))
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

    /// Sends a request to `https`/`authority` on a reusable connection — this client
    /// connection's, an idle one of the worker's, or a new one — and returns the response head
    /// with the exchange its body is read from.
    pub async fn send(
        &self,
        https: bool,
        authority: &str,
        mut outgoing: Outgoing<'_>,
    ) -> Result<(ResponseHead, Exchange), UpstreamFailure> {
        let mut candidate = self.take(https, authority);
        let mut reused = None;
        while let Some(mut connection) = candidate {
            if connection.is_reusable() {
                reused = Some(connection);
                break;
            }
            candidate = self.pool.take(https, authority);
        }
        let was_reused = reused.is_some();
        let mut connection = match reused {
            Some(connection) => connection,
            None => self.pool.connector.connect(https, authority).await?,
        };
        let head = match connection.exchange(&mut outgoing, was_reused).await {
            Ok(head) => head,
            // A reused connection the upstream closed as the request went out: once more, fresh.
            Err(ExchangeError { retryable: true, .. }) => {
                connection = self.pool.connector.connect(https, authority).await?;
                connection
                    .exchange(&mut outgoing, false)
                    .await
                    .map_err(|e| e.failure)?
            }
            Err(error) => return Err(error.failure),
        };
        let framing = ResponseFraming::of(outgoing.method, &head).map_err(|error| {
            tracing::debug!(%error, authority, "an upstream response has an unusable framing");
            UpstreamFailure::Broken
        })?;
        let keep_alive = codec::keeps_alive(&head);
        Ok((head, Exchange::new(connection, framing, keep_alive)))
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
pub enum UpstreamIo {
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
