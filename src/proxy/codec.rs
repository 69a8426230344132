//! The HTTP/1.1 wire format on the upstream side, as pure functions and a state machine over
//! byte buffers: the request head we send (RFC 9112 §3, §6), the response head we read, how the
//! response body is framed (§6.3), and the chunked-coding decoder (§7.1).
//!
//! The client-facing side is hyper's server; the upstream side is this codec, driven by
//! [`super::upstream`] on the client connection's own task. hyper's client keeps a channel, a
//! oneshot and a body channel between a request and its connection; a proxy that already owns
//! the connection needs none of them, and dropping them halves the instructions a proxied
//! request costs (`scripts/bench-proxy.sh`). Parsing itself is `httparse`, the parser hyper uses.

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, HeaderMap, HeaderName, HeaderValue, TRANSFER_ENCODING};
use http::{Method, StatusCode, Version};

/// Response headers beyond this many are refused (the upstream gets a 502).
const MAX_RESPONSE_HEADERS: usize = 128;

/// How long a chunk-size line (with extensions) or a trailer line may be.
const MAX_CHUNK_LINE: usize = 4096;

/// What is wrong with what an upstream sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("malformed response head: {0}")]
    Head(String),
    #[error("response head larger than {0} bytes")]
    HeadTooLarge(usize),
    #[error("conflicting or invalid Content-Length")]
    ContentLength,
    #[error("malformed chunked body")]
    Chunked,
}

/// How the request body goes upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFraming {
    /// No body and no length header (`GET` and the like).
    None,
    /// `Content-Length: n`.
    Length(u64),
    /// Length unknown up front: chunked coding.
    Chunked,
}

/// Writes the request head: request line, `headers` (which must carry no framing headers of
/// their own), and the framing header `framing` asks for.
pub fn encode_request_head(
    out: &mut Vec<u8>,
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    framing: RequestFraming,
) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        RequestFraming::None => {}
        RequestFraming::Length(length) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(length.to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        RequestFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// The size line that opens a chunk of `len` bytes.
pub fn chunk_header(len: usize) -> Bytes {
    Bytes::from(format!("{len:x}\r\n"))
}

/// The end of a chunked body: the last chunk and an empty trailer section.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// A parsed response head.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
}

/// Parses a response head at the start of `buf`. `Ok(None)`: not complete yet (read more,
/// unless `buf` already holds `max_bytes`). On success the head is split off `buf`, and the
/// header values share its memory rather than being copied.
pub fn parse_response_head(buf: &mut BytesMut, max_bytes: usize) -> Result<Option<ResponseHead>, CodecError> {
    // Left uninitialised: zeroing room for every header a response may have costs more than
    // parsing the few it has.
    let mut slots = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_RESPONSE_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut response, buf, &mut slots)
        .map_err(|e| CodecError::Head(e.to_string()))?;
    let consumed = match parsed {
        httparse::Status::Complete(consumed) => consumed,
        httparse::Status::Partial if buf.len() >= max_bytes => {
            return Err(CodecError::HeadTooLarge(max_bytes));
        }
        httparse::Status::Partial => return Ok(None),
    };
    if consumed > max_bytes {
        return Err(CodecError::HeadTooLarge(max_bytes));
    }
    let status = response
        .code
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or_else(|| CodecError::Head("invalid status code".into()))?;
    let version = match response.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    // Where each header sits in the buffer, so the values can point into it once it is frozen.
    let base = buf.as_ptr() as usize;
    let mut spans = Vec::with_capacity(response.headers.len());
    for header in response.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes())
            .map_err(|_| CodecError::Head(format!("invalid header name {:?}", header.name)))?;
        let start = header.value.as_ptr() as usize - base;
        spans.push((name, start, start + header.value.len()));
    }
    let head = buf.split_to(consumed).freeze();
    let mut headers = HeaderMap::with_capacity(spans.len());
    for (name, start, end) in spans {
        let value = HeaderValue::from_maybe_shared(head.slice(start..end))
            .map_err(|_| CodecError::Head(format!("invalid value of header {name}")))?;
        headers.append(name, value);
    }
    Ok(Some(ResponseHead {
        status,
        version,
        headers,
    }))
}

/// How a response's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// No body: a response to `HEAD`, or `1xx`, `204`, `304`.
    Empty,
    Length(u64),
    Chunked,
    /// Until the upstream closes the connection.
    UntilClose,
}

impl ResponseFraming {
    /// The framing of a response to a `method` request (RFC 9112 §6.3).
    pub fn of(method: &Method, head: &ResponseHead) -> Result<Self, CodecError> {
        let status = head.status;
        if method == Method::HEAD
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            return Ok(Self::Empty);
        }
        if head.headers.contains_key(TRANSFER_ENCODING) {
            // Chunked must be the final coding; anything else runs until the upstream closes.
            let last = head
                .headers
                .get_all(TRANSFER_ENCODING)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .rfind(|t| !t.is_empty());
            return Ok(match last {
                Some(coding) if coding.eq_ignore_ascii_case("chunked") => Self::Chunked,
                _ => Self::UntilClose,
            });
        }
        let mut length = None;
        for value in head.headers.get_all(CONTENT_LENGTH) {
            for part in value.to_str().map_err(|_| CodecError::ContentLength)?.split(',') {
                let part = part.trim();
                if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(CodecError::ContentLength);
                }
                let n: u64 = part.parse().map_err(|_| CodecError::ContentLength)?;
                if length.is_some_and(|l| l != n) {
                    return Err(CodecError::ContentLength);
                }
                length = Some(n);
            }
        }
        Ok(match length {
            Some(0) => Self::Empty,
            Some(n) => Self::Length(n),
            None => Self::UntilClose,
        })
    }
}

/// Whether the connection can carry another request after this response: HTTP/1.1 unless it
/// says `Connection: close`, HTTP/1.0 only with `Connection: keep-alive`.
pub fn keeps_alive(head: &ResponseHead) -> bool {
    let mut close = false;
    let mut keep_alive = false;
    for value in head.headers.get_all(http::header::CONNECTION) {
        for token in value.to_str().unwrap_or("").split(',').map(str::trim) {
            close |= token.eq_ignore_ascii_case("close");
            keep_alive |= token.eq_ignore_ascii_case("keep-alive");
        }
    }
    match head.version {
        Version::HTTP_10 => keep_alive && !close,
        _ => !close,
    }
}

/// What the chunked decoder got out of the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Body bytes.
    Data(Bytes),
    /// The buffer ends mid-way: read more.
    NeedMore,
    /// The last chunk and the trailers are through; the body is complete.
    Done,
}

/// Decodes chunked coding out of a read buffer, handing the data out without copying it.
/// Chunk extensions and trailer fields are read and dropped.
#[derive(Debug, Default)]
pub struct ChunkedDecoder {
    state: ChunkState,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Expecting a chunk-size line.
    #[default]
    Size,
    /// This many bytes of chunk data to go.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Trailer lines, until an empty one.
    Trailers,
    Done,
}

impl ChunkedDecoder {
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, CodecError> {
        loop {
            match self.state {
                ChunkState::Size => match httparse::parse_chunk_size(buf) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        let _ = buf.split_to(used);
                        self.state = match size {
                            0 => ChunkState::Trailers,
                            n => ChunkState::Data(n),
                        };
                    }
                    Ok(httparse::Status::Partial) if buf.len() < MAX_CHUNK_LINE => {
                        return Ok(Decoded::NeedMore);
                    }
                    _ => return Err(CodecError::Chunked),
                },
                ChunkState::Data(remaining) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = usize::try_from(remaining).unwrap_or(usize::MAX).min(buf.len());
                    let data = buf.split_to(take).freeze();
                    let left = remaining - take as u64;
                    self.state = match left {
                        0 => ChunkState::DataEnd,
                        n => ChunkState::Data(n),
                    };
                    return Ok(Decoded::Data(data));
                }
                ChunkState::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(CodecError::Chunked);
                    }
                    let _ = buf.split_to(2);
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => {
                    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
                        if buf.len() >= MAX_CHUNK_LINE {
                            return Err(CodecError::Chunked);
                        }
                        return Ok(Decoded::NeedMore);
                    };
                    let _ = buf.split_to(end + 2);
                    if end == 0 {
                        self.state = ChunkState::Done;
                    }
                }
                ChunkState::Done => return Ok(Decoded::Done),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head_of(raw: &str) -> ResponseHead {
        let mut buf = BytesMut::from(raw);
        parse_response_head(&mut buf, 64 * 1024).unwrap().unwrap()
    }

    #[test]
    fn the_request_head_carries_the_framing_it_is_asked_for() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("app.test"));
        let mut out = Vec::new();
        encode_request_head(&mut out, &Method::GET, "/a?b=1", &headers, RequestFraming::None);
        assert_eq!(out, b"GET /a?b=1 HTTP/1.1\r\nhost: app.test\r\n\r\n");
        out.clear();
        encode_request_head(&mut out, &Method::POST, "/", &headers, RequestFraming::Length(12));
        assert_eq!(
            out,
            b"POST / HTTP/1.1\r\nhost: app.test\r\ncontent-length: 12\r\n\r\n"
        );
        out.clear();
        encode_request_head(&mut out, &Method::PUT, "/", &headers, RequestFraming::Chunked);
        assert_eq!(
            out,
            b"PUT / HTTP/1.1\r\nhost: app.test\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        assert_eq!(chunk_header(255), Bytes::from_static(b"ff\r\n"));
    }

    #[test]
    fn a_response_head_is_split_off_and_its_body_bytes_stay() {
        let mut buf = BytesMut::from("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nX-A: 2\r\n\r\nhello");
        let head = parse_response_head(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(head.version, Version::HTTP_11);
        assert_eq!(head.headers.get_all("x-a").iter().count(), 2);
        assert_eq!(&buf[..], b"hello");
        assert_eq!(
            ResponseFraming::of(&Method::GET, &head),
            Ok(ResponseFraming::Length(5))
        );
        assert!(keeps_alive(&head));
    }

    #[test]
    fn partial_heads_wait_for_more_and_oversized_or_malformed_ones_are_refused() {
        let mut buf = BytesMut::from("HTTP/1.1 200 OK\r\nContent-Le");
        assert!(parse_response_head(&mut buf, 1024).unwrap().is_none());
        assert_eq!(
            parse_response_head(&mut buf, 10).unwrap_err(),
            CodecError::HeadTooLarge(10)
        );
        let mut garbage = BytesMut::from("SSH-2.0-OpenSSH\r\n\r\n");
        assert!(matches!(
            parse_response_head(&mut garbage, 1024),
            Err(CodecError::Head(_))
        ));
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let chunked = head_of("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert_eq!(
            ResponseFraming::of(&Method::GET, &chunked),
            Ok(ResponseFraming::Chunked)
        );
        assert_eq!(
            ResponseFraming::of(&Method::HEAD, &chunked),
            Ok(ResponseFraming::Empty)
        );
        let gzip_only = head_of("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n");
        assert_eq!(
            ResponseFraming::of(&Method::GET, &gzip_only),
            Ok(ResponseFraming::UntilClose)
        );
        let no_content = head_of("HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n");
        assert_eq!(
            ResponseFraming::of(&Method::GET, &no_content),
            Ok(ResponseFraming::Empty)
        );
        let not_modified = head_of("HTTP/1.1 304 Not Modified\r\n\r\n");
        assert_eq!(
            ResponseFraming::of(&Method::GET, &not_modified),
            Ok(ResponseFraming::Empty)
        );
        let unframed = head_of("HTTP/1.0 200 OK\r\n\r\n");
        assert_eq!(
            ResponseFraming::of(&Method::GET, &unframed),
            Ok(ResponseFraming::UntilClose)
        );
        assert!(!keeps_alive(&unframed));
        let same_twice = head_of("HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\n");
        assert_eq!(
            ResponseFraming::of(&Method::GET, &same_twice),
            Ok(ResponseFraming::Length(3))
        );
        for bad in [
            "Content-Length: 3\r\nContent-Length: 4",
            "Content-Length: -1",
            "Content-Length: 1e3",
        ] {
            let head = head_of(&format!("HTTP/1.1 200 OK\r\n{bad}\r\n\r\n"));
            assert_eq!(
                ResponseFraming::of(&Method::GET, &head),
                Err(CodecError::ContentLength),
                "{bad}"
            );
        }
    }

    #[test]
    fn keep_alive_depends_on_version_and_connection() {
        assert!(!keeps_alive(&head_of(
            "HTTP/1.1 200 OK\r\nConnection: Close\r\n\r\n"
        )));
        assert!(keeps_alive(&head_of(
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n"
        )));
    }

    fn decode_all(decoder: &mut ChunkedDecoder, buf: &mut BytesMut) -> (Vec<u8>, Decoded) {
        let mut data = Vec::new();
        loop {
            match decoder.decode(buf).unwrap() {
                Decoded::Data(bytes) => data.extend_from_slice(&bytes),
                other => return (data, other),
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_with_extensions_and_trailers_across_reads() {
        let wire = b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: yes\r\n\r\nNEXT";
        // Fed one byte at a time, the decoder must come to the same result.
        let mut decoder = ChunkedDecoder::default();
        let mut buf = BytesMut::new();
        let mut data = Vec::new();
        let mut done = false;
        for byte in wire.iter() {
            buf.extend_from_slice(&[*byte]);
            let (got, state) = decode_all(&mut decoder, &mut buf);
            data.extend(got);
            if state == Decoded::Done {
                done = true;
                break;
            }
        }
        assert!(done);
        assert_eq!(data, b"hello, world");
        // Whole, the bytes after the body stay in the buffer.
        let mut decoder = ChunkedDecoder::default();
        let mut buf = BytesMut::from(&wire[..]);
        let (data, state) = decode_all(&mut decoder, &mut buf);
        assert_eq!((data.as_slice(), state), (&b"hello, world"[..], Decoded::Done));
        assert_eq!(&buf[..], b"NEXT");
    }

    #[test]
    fn malformed_chunked_bodies_are_refused() {
        for wire in [&b"zz\r\n"[..], b"3\r\nabcX\r\n", &[b'1'; MAX_CHUNK_LINE + 1]] {
            let mut buf = BytesMut::from(wire);
            let mut decoder = ChunkedDecoder::default();
            let mut result = Ok(Decoded::NeedMore);
            for _ in 0..4 {
                result = decoder.decode(&mut buf);
                if !matches!(result, Ok(Decoded::Data(_))) {
                    break;
                }
            }
            assert_eq!(
                result,
                Err(CodecError::Chunked),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
    }
}
