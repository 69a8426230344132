//! Keep-alive HTTP/1.1 connections to upstreams, pooled per worker thread, and the exchange of
//! one request and response on such a connection.
//!
//! A general-purpose pooled client (hyper-util's) runs every upstream connection as a task of
//! its own and hands each request to it through channels; for a proxy that is most of its cost
//! per request. Here a request takes a connection out of its worker's [`WorkerPool`] (or opens
//! one), talks to it directly with [`super::codec`] on its own task — the head and a buffered
//! body in one vectored write, the response head parsed out of the read buffer, the body read
//! by the response body itself — and gives it back the moment the response is complete. So a
//! connection belongs to the pool, not to a client: an idle client holds none, and a new
//! client's first request reuses the connection the previous one gave back.
//!
//! Idle connections are not polled; before one is reused it is polled once, so a connection
//! the upstream closed meanwhile is noticed and replaced. A request that a reused connection
//! could not deliver — its head did not go out, or the connection closed before a byte of the
//! answer came back and the request can be repeated (idempotent, and its body buffered or
//! absent) — is tried once more on a fresh one.

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
use super::codec::{self, ChunkedDecoder, Decoded, ResponseFraming, ResponseHead};

/// Room made in a connection's read buffer before each read.
const READ_CHUNK: usize = 16 * 1024;

/// Room made for a large response body still to come: fewer, larger reads.
const LARGE_READ: usize = 64 * 1024;

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
    /// The client was too slow sending its request body (408).
    ClientTimeout,
}

/// One request for [`WorkerPool::send`]: its head already encoded, and its body.
pub struct Outgoing<'a> {
    pub method: &'a Method,
    pub head: &'a [u8],
    pub body: OutgoingBody<'a>,
    /// The response head may not be larger than this.
    pub max_head_bytes: usize,
    /// The client gets this long for each piece of a streamed body.
    pub body_timeout: Duration,
}

/// A request body on its way upstream.
pub enum OutgoingBody<'a> {
    /// All of it (possibly empty), read before the connection was taken: written with the head.
    Buffered(Bytes),
    /// Too large to buffer: what was read (written with the head), then the rest as the client
    /// sends it — as chunks when `chunked`, else as the length the head announced.
    Streamed {
        read: Bytes,
        rest: &'a mut dyn RequestSource,
        chunked: bool,
    },
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

    /// Reads what the upstream has into the buffer, with room for `want` bytes (more when a
    /// large body is coming: fewer reads); `Ok(0)` at its end.
    fn poll_fill(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < want.min(READ_CHUNK) / 4 {
            self.buf.reserve(want);
        }
        poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }

    /// Sends the request — the head and what is buffered of the body in one vectored write,
    /// then the rest of a streamed body as it comes — and reads the response head, skipping
    /// interim `1xx` answers other than `101`.
    async fn exchange(
        &mut self,
        outgoing: &mut Outgoing<'_>,
        reused: bool,
    ) -> Result<ResponseHead, ExchangeError> {
        let broken = |retryable| ExchangeError {
            failure: UpstreamFailure::Broken,
            retryable: reused && retryable,
        };
        let (first, streamed) = match &mut outgoing.body {
            OutgoingBody::Buffered(body) => (body.clone(), None),
            OutgoingBody::Streamed { read, rest, chunked } => (read.clone(), Some((&mut **rest, *chunked))),
        };
        let chunked = streamed.as_ref().is_some_and(|(_, chunked)| *chunked);
        let mut size_line = Vec::new();
        if chunked && !first.is_empty() {
            codec::chunk_header(&mut size_line, first.len());
        }
        let crlf: &[u8] = if chunked && !first.is_empty() {
            b"\r\n"
        } else {
            b""
        };
        if let Err(error) =
            write_all_vectored(&mut self.io, &mut [outgoing.head, &size_line, &first, crlf]).await
        {
            tracing::debug!(%error, authority = &*self.authority, "writing a request upstream failed");
            return Err(broken(true));
        }
        // A streamed body the client has begun to send cannot be sent again.
        let mut body_used = false;
        if let Some((rest, chunked)) = streamed {
            body_used = true;
            loop {
                let next = poll_fn(|cx| rest.poll_data(cx));
                let data = match tokio::time::timeout(outgoing.body_timeout, next).await {
                    Ok(Some(Ok(data))) => data,
                    Ok(None) => break,
                    Ok(Some(Err(_))) => {
                        return Err(ExchangeError {
                            failure: UpstreamFailure::Client,
                            retryable: false,
                        });
                    }
                    Err(_) => {
                        return Err(ExchangeError {
                            failure: UpstreamFailure::ClientTimeout,
                            retryable: false,
                        });
                    }
                };
                if data.is_empty() {
                    continue;
                }
                let written = match chunked {
                    true => {
                        size_line.clear();
                        codec::chunk_header(&mut size_line, data.len());
                        write_all_vectored(&mut self.io, &mut [&size_line, &data, b"\r\n"]).await
                    }
                    false => self.io.write_all(&data).await,
                };
                if written.is_err() {
                    return Err(broken(false));
                }
            }
            if chunked && self.io.write_all(codec::LAST_CHUNK).await.is_err() {
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
            match poll_fn(|cx| self.poll_fill(cx, READ_CHUNK)).await {
                Ok(0) | Err(_) => return Err(broken(repeatable && !received)),
                Ok(_) => received = true,
            }
        }
    }
}

/// Writes every byte of `slices` with as few (vectored) writes as the socket takes.
pub async fn write_all_vectored<W>(io: &mut W, slices: &mut [&[u8]]) -> io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    let mut io_slices: Vec<io::IoSlice<'_>> = slices
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| io::IoSlice::new(s))
        .collect();
    let mut slices = &mut io_slices[..];
    while !slices.is_empty() {
        let written = io.write_vectored(slices).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        io::IoSlice::advance_slices(&mut slices, written);
    }
    Ok(())
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
            let want = match self.body {
                BodyState::Length(remaining) => usize::try_from(remaining)
                    .unwrap_or(usize::MAX)
                    .clamp(READ_CHUNK, LARGE_READ),
                _ => READ_CHUNK,
            };
            match ready!(self.connection.poll_fill(cx, want)) {
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

/// The idle upstream connections of one worker thread, by upstream: a request takes one (or
/// opens one) and gives it back when its response is complete.
#[derive(Debug)]
pub struct WorkerPool {
    connector: Connector,
    /// Idle connections by authority, for plain and for TLS upstreams; the most recently given
    /// back is taken first (it is the least likely to have been closed by the upstream).
    idle: Mutex<[HashMap<Arc<str>, Vec<UpstreamConnection>>; 2]>,
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

    /// Gives back a connection whose exchange is complete.
    pub fn put(&self, mut connection: UpstreamConnection) {
        if self.max_idle_per_upstream == 0 {
            return;
        }
        connection.idle_since = Instant::now();
        // A buffer that grew for a large body is not kept around while idle.
        if connection.buf.capacity() > LARGE_READ {
            connection.buf = BytesMut::new();
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle[usize::from(connection.https)]
            .entry(connection.authority.clone())
            .or_default();
        list.push(connection);
        if list.len() > self.max_idle_per_upstream {
            list.remove(0);
        }
    }

    /// An idle connection to `https`/`authority` that can take a request, if any.
    fn take(&self, https: bool, authority: &str) -> Option<UpstreamConnection> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle[usize::from(https)].get_mut(authority)?;
        while let Some(mut connection) = list.pop() {
            if connection.idle_since.elapsed() < self.idle_timeout && connection.is_reusable() {
                return Some(connection);
            }
        }
        None
    }

    /// Closes connections idle for longer than the idle timeout.
    pub fn sweep(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        for map in idle.iter_mut() {
            for list in map.values_mut() {
                list.retain(|c| c.idle_since.elapsed() < self.idle_timeout);
            }
            map.retain(|_, list| !list.is_empty());
        }
    }

    /// Sends a request to `https`/`authority` on an idle connection of the pool, or a new one,
    /// and returns the response head with the exchange its body is read from. The exchange's
    /// connection goes back with [`WorkerPool::put`] once its body is read.
    pub async fn send(
        &self,
        https: bool,
        authority: &str,
        mut outgoing: Outgoing<'_>,
    ) -> Result<(ResponseHead, Exchange), UpstreamFailure> {
        let reused = self.take(https, authority);
        let was_reused = reused.is_some();
        let mut connection = match reused {
            Some(connection) => connection,
            None => self.connector.connect(https, authority).await?,
        };
        let head = match connection.exchange(&mut outgoing, was_reused).await {
            Ok(head) => head,
            // A reused connection the upstream closed as the request went out: once more, fresh.
            Err(ExchangeError { retryable: true, .. }) => {
                connection = self.connector.connect(https, authority).await?;
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
