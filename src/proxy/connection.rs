//! One client connection of the proxy and its buffers: [`ClientConn`] is the socket with its
//! read buffer (bytes read past a head are the body or the next request) and its write buffer (a
//! response head and a small body go out in one write); [`ClientBody`] reads a request body out
//! of it, by length or chunked, as the upstream side takes it. The server loop
//! ([`super::server`]) reads heads with it, the forwarder ([`super::forward`]) answers on it.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::io::poll_read_buf;

use super::body::{BodyProgress, RequestSource};
use super::codec::{self, ChunkedDecoder, CodecError, Decoded, RequestFraming, RequestHead};

/// Room made in a connection's read buffer before each read.
const READ_CHUNK: usize = 8 * 1024;

/// A client connection and its buffers.
#[derive(Debug)]
pub struct ClientConn<I> {
    pub io: I,
    /// Read but not yet used: the rest of a request body, or the next request.
    pub buf: BytesMut,
    /// To be written: a response head, and small bodies coalesced behind it.
    pub out: Vec<u8>,
    /// Kept between requests for the head sent upstream.
    pub upstream_head: Vec<u8>,
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

impl<I> ClientConn<I>
where
    I: AsyncRead + AsyncWrite + Unpin + Send,
{
    pub fn new(io: I) -> Self {
        Self {
            io,
            buf: BytesMut::with_capacity(READ_CHUNK),
            out: Vec::with_capacity(READ_CHUNK),
            upstream_head: Vec::with_capacity(1024),
        }
    }

    /// Reads what the client has into the buffer; `Ok(0)` at its end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK);
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
            match poll_fn(|cx| self.poll_fill(cx)).await {
                Ok(0) if self.buf.is_empty() => return Ok(None),
                Ok(0) => return Err(ReadError::Io(io::ErrorKind::UnexpectedEof.into())),
                Ok(_) => {}
                Err(error) => return Err(ReadError::Io(error)),
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

    /// Writes `data` behind what `out` holds.
    pub async fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.flush_out().await?;
        self.io.write_all(data).await
    }
}

/// A request body read out of its client connection, as the upstream takes it.
pub struct ClientBody<'a, I> {
    conn: &'a mut ClientConn<I>,
    state: BodyState,
    progress: &'a BodyProgress,
}

#[derive(Debug)]
enum BodyState {
    Length(u64),
    Chunked(ChunkedDecoder),
    Done,
}

impl<'a, I> ClientBody<'a, I>
where
    I: AsyncRead + AsyncWrite + Unpin + Send,
{
    pub fn new(conn: &'a mut ClientConn<I>, framing: RequestFraming, progress: &'a BodyProgress) -> Self {
        let state = match framing {
            RequestFraming::None | RequestFraming::Length(0) => BodyState::Done,
            RequestFraming::Length(n) => BodyState::Length(n),
            RequestFraming::Chunked => BodyState::Chunked(ChunkedDecoder::default()),
        };
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

impl<I> RequestSource for ClientBody<'_, I>
where
    I: AsyncRead + AsyncWrite + Unpin + Send,
{
    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        loop {
            let buf = &mut self.conn.buf;
            match &mut self.state {
                BodyState::Done => return Poll::Ready(None),
                BodyState::Length(remaining) if !buf.is_empty() => {
                    let data = codec::take_counted(buf, remaining);
                    if *remaining == 0 {
                        self.state = BodyState::Done;
                    }
                    self.progress.touch();
                    return Poll::Ready(Some(Ok(data)));
                }
                BodyState::Length(_) => {}
                BodyState::Chunked(decoder) => match decoder.decode(buf) {
                    Ok(Decoded::Data(data)) => {
                        self.progress.touch();
                        return Poll::Ready(Some(Ok(data)));
                    }
                    Ok(Decoded::Done) => {
                        self.state = BodyState::Done;
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::NeedMore) => {}
                    Err(error) => {
                        return Poll::Ready(Some(Err(io::Error::new(io::ErrorKind::InvalidData, error))));
                    }
                },
            }
            match ready!(self.conn.poll_fill(cx)) {
                Ok(0) => return Poll::Ready(Some(Err(io::ErrorKind::UnexpectedEof.into()))),
                Ok(_) => {}
                Err(error) => return Poll::Ready(Some(Err(error))),
            }
        }
    }
}
