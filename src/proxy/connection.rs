//! One client connection of the proxy and its buffers: [`ClientConn`] is the socket with its
//! read buffer (bytes read past a head are the body or the next request) and its write buffer (a
//! response head and a small body go out in one write); [`ClientConn::buffer_body`] reads a
//! request body whole when it is small, before any upstream connection is taken (nginx's
//! `proxy_request_buffering`), and [`ClientBody`] streams the rest of a larger one as the
//! upstream side takes it. The server loop ([`super::server`]) reads heads with it, the
//! forwarder ([`super::forward`]) answers on it.
//!
//! Buffers belong to the worker's [`BufferPool`], not to the connection: they are taken when
//! data arrives and given back when the connection goes idle, so a keep-alive client waiting
//! for its next request holds no buffer at all — plain TCP waits for readability without one
//! ([`ClientIo`]); TLS keeps its own decrypted bytes, so it reads with a buffer.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::io::poll_read_buf;

use super::body::{BodyProgress, RequestSource};
use super::codec::{self, ChunkedDecoder, CodecError, Decoded, RequestFraming, RequestHead};

/// Room made in a connection's read buffer before each read.
const READ_CHUNK: usize = 8 * 1024;

/// Room made for a large body still to come: fewer, larger reads.
const LARGE_READ: usize = 64 * 1024;

/// Buffers larger than this are not kept in the pool.
const MAX_POOLED_BUFFER: usize = 32 * 1024;

/// A client socket: what the connection needs beyond reading and writing.
pub trait ClientIo: AsyncRead + AsyncWrite + Unpin + Send {
    /// Resolves when the socket has something to read, without reading it: `Ok(true)`. A socket
    /// that cannot tell (TLS, which holds decrypted bytes of its own) answers `Ok(false)` at once
    /// and is read with a buffer instead.
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<bool>>;
}

impl ClientIo for TcpStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        TcpStream::poll_read_ready(self, cx).map_ok(|()| true)
    }
}

impl ClientIo for tokio_rustls::server::TlsStream<TcpStream> {
    fn poll_read_ready(&self, _cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        Poll::Ready(Ok(false))
    }
}

/// The read and write buffers of one worker's connections, handed out while a connection has
/// data and taken back when it goes idle. Bounded: what it does not keep is freed.
#[derive(Debug)]
pub struct BufferPool {
    reads: Mutex<Vec<BytesMut>>,
    writes: Mutex<Vec<Vec<u8>>>,
    keep: usize,
}

impl BufferPool {
    /// A pool that keeps up to `keep` buffers of each kind.
    pub fn new(keep: usize) -> Self {
        Self {
            reads: Mutex::default(),
            writes: Mutex::default(),
            keep,
        }
    }

    fn take_read(&self) -> BytesMut {
        let taken = self.reads.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut buf = taken.unwrap_or_default();
        // Reclaims the allocation in place when nothing else refers to it.
        buf.reserve(READ_CHUNK);
        buf
    }

    fn put_read(&self, mut buf: BytesMut) {
        buf.clear();
        if buf.capacity() == 0 || buf.capacity() > MAX_POOLED_BUFFER {
            return;
        }
        let mut reads = self.reads.lock().unwrap_or_else(|e| e.into_inner());
        if reads.len() < self.keep {
            reads.push(buf);
        }
    }

    /// A write buffer (empty).
    pub fn take_write(&self) -> Vec<u8> {
        let taken = self.writes.lock().unwrap_or_else(|e| e.into_inner()).pop();
        taken.unwrap_or_else(|| Vec::with_capacity(READ_CHUNK))
    }

    /// Gives back a write buffer.
    pub fn put_write(&self, mut buf: Vec<u8>) {
        buf.clear();
        if buf.capacity() == 0 || buf.capacity() > MAX_POOLED_BUFFER {
            return;
        }
        let mut writes = self.writes.lock().unwrap_or_else(|e| e.into_inner());
        if writes.len() < self.keep {
            writes.push(buf);
        }
    }
}

/// A client connection and its buffers.
#[derive(Debug)]
pub struct ClientConn<'p, I> {
    pub io: I,
    /// Read but not yet used: the rest of a request body, or the next request. Empty, without
    /// capacity, while the connection is idle.
    pub buf: BytesMut,
    /// To be written: a response head, and small bodies coalesced behind it. Without capacity
    /// while the connection is idle.
    pub out: Vec<u8>,
    pool: &'p BufferPool,
}

/// Why no request head could be read.
#[derive(Debug)]
pub enum ReadError {
    /// Larger than the limit: `431`.
    TooLarge,
    /// Not HTTP/1.x: `400`.
    Malformed,
    Io(io::Error),
}

/// Why a request body could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// Nothing came for the body timeout: `408`.
    TimedOut,
    /// Not valid chunked coding: `400`.
    Malformed,
    /// The client went away.
    Io(io::Error),
}

/// A request body as read before an upstream connection is taken.
#[derive(Debug)]
pub enum RequestBody {
    /// All of it (empty for none): the body is complete.
    Buffered(Bytes),
    /// Larger than the buffer: what was read of it (decoded), and how the rest comes.
    Streamed { read: Bytes, rest: BodyState },
}

/// How the rest of a request body is read from the client.
#[derive(Debug)]
pub enum BodyState {
    Length(u64),
    Chunked(ChunkedDecoder),
    Done,
}

impl<'p, I> ClientConn<'p, I>
where
    I: ClientIo,
{
    pub fn new(io: I, pool: &'p BufferPool) -> Self {
        Self {
            io,
            buf: BytesMut::new(),
            out: Vec::new(),
            pool,
        }
    }

    /// Gives the buffers back to the pool while nothing is pending in them: the connection is
    /// idle between requests.
    pub fn release_buffers(&mut self) {
        if self.buf.is_empty() {
            self.pool.put_read(std::mem::take(&mut self.buf));
        }
        if self.out.is_empty() {
            self.pool.put_write(std::mem::take(&mut self.out));
        }
    }

    /// The write buffer, taken from the pool if the connection has none.
    pub fn out(&mut self) -> &mut Vec<u8> {
        if self.out.capacity() == 0 {
            self.out = self.pool.take_write();
        }
        &mut self.out
    }

    /// The pool the connection's buffers come from.
    pub fn pool(&self) -> &'p BufferPool {
        self.pool
    }

    /// Reads what the client has into the buffer, with room for at least `want` more bytes;
    /// `Ok(0)` at its end.
    fn poll_fill(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        if self.buf.capacity() == 0 {
            self.buf = self.pool.take_read();
        }
        let room = self.buf.capacity() - self.buf.len();
        let need = match want > READ_CHUNK {
            true => want.min(LARGE_READ),
            false => READ_CHUNK / 4,
        };
        if room < need {
            self.buf.reserve(need.max(READ_CHUNK));
        }
        poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }

    /// The next request head; `None` when the client closed the connection between requests.
    pub async fn read_head(&mut self, max_bytes: usize) -> Result<Option<RequestHead>, ReadError> {
        loop {
            match codec::parse_request_head(&mut self.buf, max_bytes) {
                Ok(Some(head)) => return Ok(Some(head)),
                Ok(None) => {}
                Err(CodecError::HeadTooLarge(_) | CodecError::TooManyFields) => {
                    return Err(ReadError::TooLarge);
                }
                Err(_) => return Err(ReadError::Malformed),
            }
            // Idle: wait for the next request without holding a buffer.
            if self.buf.capacity() == 0 {
                poll_fn(|cx| self.io.poll_read_ready(cx))
                    .await
                    .map_err(ReadError::Io)?;
            }
            match poll_fn(|cx| self.poll_fill(cx, READ_CHUNK)).await {
                Ok(0) if self.buf.is_empty() => return Ok(None),
                Ok(0) => return Err(ReadError::Io(io::ErrorKind::UnexpectedEof.into())),
                Ok(_) => {}
                Err(error) => return Err(ReadError::Io(error)),
            }
        }
    }

    /// Reads more of a request body, giving up after `timeout` without a byte.
    async fn fill_body(&mut self, want: usize, timeout: Duration) -> Result<(), BodyError> {
        match tokio::time::timeout(timeout, poll_fn(|cx| self.poll_fill(cx, want))).await {
            Err(_) => Err(BodyError::TimedOut),
            Ok(Ok(0)) => Err(BodyError::Io(io::ErrorKind::UnexpectedEof.into())),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(BodyError::Io(error)),
        }
    }

    /// Reads a request body of `framing` whole when it is at most `limit` bytes (decoded), each
    /// read within `timeout`; a larger one is returned as what was read so far and the rest to
    /// stream. A body that is buffered never ties up an upstream connection while a slow
    /// client sends it.
    pub async fn buffer_body(
        &mut self,
        framing: RequestFraming,
        limit: usize,
        timeout: Duration,
    ) -> Result<RequestBody, BodyError> {
        match framing {
            RequestFraming::None => Ok(RequestBody::Buffered(Bytes::new())),
            RequestFraming::Length(n) if n <= limit as u64 => {
                let n = n as usize;
                while self.buf.len() < n {
                    self.fill_body(n - self.buf.len(), timeout).await?;
                }
                Ok(RequestBody::Buffered(self.buf.split_to(n).freeze()))
            }
            RequestFraming::Length(n) => Ok(RequestBody::Streamed {
                read: Bytes::new(),
                rest: BodyState::Length(n),
            }),
            RequestFraming::Chunked => {
                let mut decoder = ChunkedDecoder::default();
                let mut data = BytesMut::new();
                loop {
                    match decoder.decode(&mut self.buf) {
                        Ok(Decoded::Data(piece)) => {
                            data.extend_from_slice(&piece);
                            if data.len() > limit {
                                return Ok(RequestBody::Streamed {
                                    read: data.freeze(),
                                    rest: BodyState::Chunked(decoder),
                                });
                            }
                        }
                        Ok(Decoded::Done) => return Ok(RequestBody::Buffered(data.freeze())),
                        Ok(Decoded::NeedMore) => self.fill_body(READ_CHUNK, timeout).await?,
                        Err(_) => return Err(BodyError::Malformed),
                    }
                }
            }
        }
    }

    /// Writes out what `out` holds.
    pub async fn flush_out(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.io.write_all(&self.out).await?;
            self.out.clear();
        }
        // TLS keeps what it encrypted until flushed; for TCP this does nothing.
        self.io.flush().await
    }

    /// Writes what `out` holds and then `data`, in one vectored write where the socket takes it.
    pub async fn write_with_out(&mut self, data: &[u8]) -> io::Result<()> {
        super::upstream::write_all_vectored(&mut self.io, &mut [&self.out, data]).await?;
        self.out.clear();
        Ok(())
    }
}

/// The rest of a request body read out of its client connection, as the upstream takes it.
pub struct ClientBody<'a, 'p, I> {
    conn: &'a mut ClientConn<'p, I>,
    state: BodyState,
    progress: &'a BodyProgress,
}

impl<'a, 'p, I> ClientBody<'a, 'p, I>
where
    I: ClientIo,
{
    pub fn new(conn: &'a mut ClientConn<'p, I>, state: BodyState, progress: &'a BodyProgress) -> Self {
        Self {
            conn,
            state,
            progress,
        }
    }

    /// Whether the whole body has been read (so the connection can carry another request).
    pub fn is_done(&self) -> bool {
        matches!(self.state, BodyState::Done)
    }
}

impl<I> RequestSource for ClientBody<'_, '_, I>
where
    I: ClientIo,
{
    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        loop {
            let buf = &mut self.conn.buf;
            let want = match &mut self.state {
                BodyState::Done => return Poll::Ready(None),
                BodyState::Length(remaining) if !buf.is_empty() => {
                    let data = codec::take_counted(buf, remaining);
                    if *remaining == 0 {
                        self.state = BodyState::Done;
                    }
                    self.progress.touch();
                    return Poll::Ready(Some(Ok(data)));
                }
                // A large body is coming: read it in large pieces.
                BodyState::Length(remaining) => {
                    usize::try_from(*remaining).unwrap_or(usize::MAX).min(LARGE_READ)
                }
                BodyState::Chunked(decoder) => match decoder.decode(buf) {
                    Ok(Decoded::Data(data)) => {
                        self.progress.touch();
                        return Poll::Ready(Some(Ok(data)));
                    }
                    Ok(Decoded::Done) => {
                        self.state = BodyState::Done;
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::NeedMore) => READ_CHUNK,
                    Err(error) => {
                        return Poll::Ready(Some(Err(io::Error::new(io::ErrorKind::InvalidData, error))));
                    }
                },
            };
            match ready!(self.conn.poll_fill(cx, want)) {
                Ok(0) => return Poll::Ready(Some(Err(io::ErrorKind::UnexpectedEof.into()))),
                Ok(_) => {}
                Err(error) => return Poll::Ready(Some(Err(error))),
            }
        }
    }
}
