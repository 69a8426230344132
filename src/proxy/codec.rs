//! The HTTP/1.1 wire format of the proxy (RFC 9112), as pure functions and a state machine over
//! byte buffers: request and response heads parsed in place, how each body is framed (§6.3),
//! the chunked-coding decoder (§7.1), and the heads the proxy writes on either side.
//!
//! The proxy forwards heads as text: a parsed head is the bytes it arrived in plus where each
//! field sits, and the head sent on is written field by field from them — minus the hop-by-hop
//! fields, plus `Host`, `X-Forwarded-*` and our own framing. No header map is built, nothing
//! is decoded that is only passed through, and no channel sits between a request and its
//! sockets; that is what makes a proxied request cost about as much as it does in nginx
//! (`scripts/bench-proxy.sh`). Parsing itself is `httparse`, the parser hyper uses.

use std::mem::MaybeUninit;
use std::ops::Range;

use bytes::{Bytes, BytesMut};
use http::{Method, StatusCode};

/// Request fields beyond this many are refused (`431`); responses get more room.
const MAX_REQUEST_FIELDS: usize = 100;
const MAX_RESPONSE_FIELDS: usize = 128;

/// How long a chunk-size line (with extensions) or a trailer line may be.
const MAX_CHUNK_LINE: usize = 4096;

/// What is wrong with a head or a body's framing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("malformed head: {0}")]
    Head(String),
    #[error("head larger than {0} bytes")]
    HeadTooLarge(usize),
    #[error("more header fields than the proxy accepts")]
    TooManyFields,
    #[error("conflicting or invalid Content-Length")]
    ContentLength,
    #[error("a transfer coding other than chunked last")]
    TransferEncoding,
    #[error("malformed chunked body")]
    Chunked,
}

/// One field of a head: where its name and value sit in the head's bytes.
#[derive(Debug, Clone)]
struct Field {
    name: Range<usize>,
    value: Range<usize>,
}

/// The fields of a parsed head, over the bytes it arrived in.
#[derive(Debug, Clone)]
pub struct Fields {
    bytes: Bytes,
    fields: Vec<Field>,
}

impl Fields {
    fn new(bytes: Bytes, fields: Vec<Field>) -> Self {
        Self { bytes, fields }
    }

    /// Every field as (name, value), in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.fields
            .iter()
            .map(|f| (&self.bytes[f.name.clone()], &self.bytes[f.value.clone()]))
    }

    /// Every value of the fields named `name` (case-insensitive).
    pub fn get_all(&self, name: &'static str) -> impl Iterator<Item = &[u8]> {
        self.iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// The first value of the field named `name`.
    pub fn get(&self, name: &'static str) -> Option<&[u8]> {
        self.get_all(name).next()
    }

    /// The comma-separated list elements of every `name` field, trimmed, empty ones skipped.
    pub fn tokens(&self, name: &'static str) -> impl Iterator<Item = &[u8]> {
        self.get_all(name)
            .flat_map(|v| v.split(|b| *b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|t| !t.is_empty())
    }

    /// Whether `name`'s list holds `token` (case-insensitive).
    pub fn has_token(&self, name: &'static str, token: &str) -> bool {
        self.tokens(name)
            .any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
    }

    /// The field names `Connection` lists beyond its usual options, which are hop-by-hop too
    /// (rare: usually no allocation).
    fn listed_in_connection(&self) -> Vec<&[u8]> {
        self.tokens("connection")
            .filter(|t| {
                !["keep-alive", "close", "upgrade"]
                    .iter()
                    .any(|o| t.eq_ignore_ascii_case(o.as_bytes()))
            })
            .collect()
    }

    /// The one valid `Content-Length` (repeats of one value allowed), if any.
    fn content_length(&self) -> Result<Option<u64>, CodecError> {
        let mut length = None;
        for part in self.tokens("content-length") {
            if !part.iter().all(u8::is_ascii_digit) {
                return Err(CodecError::ContentLength);
            }
            let n: u64 = std::str::from_utf8(part)
                .ok()
                .and_then(|p| p.parse().ok())
                .ok_or(CodecError::ContentLength)?;
            if length.is_some_and(|l| l != n) {
                return Err(CodecError::ContentLength);
            }
            length = Some(n);
        }
        // An empty value is as invalid as a malformed one.
        if length.is_none() && self.get("content-length").is_some() {
            return Err(CodecError::ContentLength);
        }
        Ok(length)
    }

    /// Whether `Transfer-Encoding` is present, and then whether chunked is its final coding.
    fn chunked(&self) -> Option<bool> {
        self.get("transfer-encoding")?;
        Some(
            self.tokens("transfer-encoding")
                .last()
                .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked")),
        )
    }
}

/// Whether a field never crosses the proxy: `Connection` and what it lists, `Keep-Alive`,
/// `Proxy-*`, `TE`, `Trailer`, `Transfer-Encoding` and `Upgrade` (RFC 9110 §7.6.1; an upgrade
/// is re-announced by whoever tunnels it).
fn is_hop_by_hop(name: &[u8], listed: &[&[u8]]) -> bool {
    const HOP_BY_HOP: [&[u8]; 6] = [
        b"connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    ];
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
        || (name.len() > 6 && name[..6].eq_ignore_ascii_case(b"proxy-"))
        || listed.iter().any(|l| name.eq_ignore_ascii_case(l))
}

/// Parses a head at the start of `buf` with `parse` (httparse's request or response parser),
/// splitting it off `buf` when complete.
fn parse_head<T>(
    buf: &mut BytesMut,
    max_bytes: usize,
    parse: impl FnOnce(&[u8]) -> Result<Option<(usize, T, Vec<Field>)>, CodecError>,
) -> Result<Option<(Bytes, T, Vec<Field>)>, CodecError> {
    if buf.is_empty() {
        return Ok(None);
    }
    match parse(buf)? {
        Some((consumed, _, _)) if consumed > max_bytes => Err(CodecError::HeadTooLarge(max_bytes)),
        Some((consumed, parsed, fields)) => Ok(Some((buf.split_to(consumed).freeze(), parsed, fields))),
        None if buf.len() >= max_bytes => Err(CodecError::HeadTooLarge(max_bytes)),
        None => Ok(None),
    }
}

/// Where each parsed field sits relative to `base`, the start of the buffer parsed.
fn fields_of(base: &[u8], headers: &[httparse::Header<'_>]) -> Vec<Field> {
    let start = base.as_ptr() as usize;
    headers
        .iter()
        .map(|h| {
            let name = h.name.as_ptr() as usize - start;
            let value = h.value.as_ptr() as usize - start;
            Field {
                name: name..name + h.name.len(),
                value: value..value + h.value.len(),
            }
        })
        .collect()
}

fn head_error(error: httparse::Error) -> CodecError {
    match error {
        httparse::Error::TooManyHeaders => CodecError::TooManyFields,
        other => CodecError::Head(other.to_string()),
    }
}

/// A parsed request head.
#[derive(Debug, Clone)]
pub struct RequestHead {
    pub method: Method,
    target: Range<usize>,
    /// An HTTP/1.0 request (else HTTP/1.1).
    pub http10: bool,
    pub fields: Fields,
}

impl RequestHead {
    /// The request target as sent: origin-form (`/path?q`), absolute-form, `*`, or an
    /// authority (`CONNECT`).
    pub fn target(&self) -> &str {
        std::str::from_utf8(&self.fields.bytes[self.target.clone()]).unwrap_or("/")
    }

    /// Whether the client wants the connection kept open after this exchange.
    pub fn keeps_alive(&self) -> bool {
        match self.http10 {
            true => self.fields.has_token("connection", "keep-alive"),
            false => !self.fields.has_token("connection", "close"),
        }
    }

    /// The protocol a request asks to switch to: `Connection` lists `upgrade` and an `Upgrade`
    /// field names the protocol.
    pub fn upgrade(&self) -> Option<&[u8]> {
        let protocol = self.fields.get("upgrade")?;
        self.fields.has_token("connection", "upgrade").then_some(protocol)
    }

    /// How the request's body is framed; `true` alongside when both a length and a transfer
    /// coding were sent, so the connection must close after this exchange (RFC 9112 §6.3).
    pub fn body_framing(&self) -> Result<(RequestFraming, bool), CodecError> {
        match self.fields.chunked() {
            Some(true) => Ok((
                RequestFraming::Chunked,
                self.fields.get("content-length").is_some(),
            )),
            Some(false) => Err(CodecError::TransferEncoding),
            None => Ok(match self.fields.content_length()? {
                Some(0) | None => (RequestFraming::None, false),
                Some(n) => (RequestFraming::Length(n), false),
            }),
        }
    }
}

/// Parses a request head at the start of `buf`; `Ok(None)`: not complete yet.
pub fn parse_request_head(buf: &mut BytesMut, max_bytes: usize) -> Result<Option<RequestHead>, CodecError> {
    let parsed = parse_head(buf, max_bytes, |bytes| {
        // Left uninitialised: zeroing room for every field a head may have costs more than
        // parsing the few it has.
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_REQUEST_FIELDS];
        let mut request = httparse::Request::new(&mut []);
        match httparse::ParserConfig::default().parse_request_with_uninit_headers(
            &mut request,
            bytes,
            &mut slots,
        ) {
            Ok(httparse::Status::Complete(consumed)) => {
                let method = Method::from_bytes(request.method.unwrap_or("").as_bytes())
                    .map_err(|_| CodecError::Head("invalid method".into()))?;
                let path = request.path.unwrap_or("");
                let start = path.as_ptr() as usize - bytes.as_ptr() as usize;
                let http10 = request.version == Some(0);
                let fields = fields_of(bytes, request.headers);
                Ok(Some((
                    consumed,
                    (method, start..start + path.len(), http10),
                    fields,
                )))
            }
            Ok(httparse::Status::Partial) => Ok(None),
            Err(error) => Err(head_error(error)),
        }
    })?;
    Ok(
        parsed.map(|(bytes, (method, target, http10), fields)| RequestHead {
            method,
            target,
            http10,
            fields: Fields::new(bytes, fields),
        }),
    )
}

/// A parsed response head.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    pub status: StatusCode,
    reason: Range<usize>,
    pub http10: bool,
    pub fields: Fields,
}

impl ResponseHead {
    fn reason(&self) -> &[u8] {
        &self.fields.bytes[self.reason.clone()]
    }
}

/// Parses a response head at the start of `buf`; `Ok(None)`: not complete yet (read more,
/// unless `buf` already holds `max_bytes`).
pub fn parse_response_head(buf: &mut BytesMut, max_bytes: usize) -> Result<Option<ResponseHead>, CodecError> {
    let parsed = parse_head(buf, max_bytes, |bytes| {
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_RESPONSE_FIELDS];
        let mut response = httparse::Response::new(&mut []);
        match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            bytes,
            &mut slots,
        ) {
            Ok(httparse::Status::Complete(consumed)) => {
                let status = response
                    .code
                    .and_then(|code| StatusCode::from_u16(code).ok())
                    .ok_or_else(|| CodecError::Head("invalid status code".into()))?;
                let reason = response.reason.unwrap_or("");
                let start = reason.as_ptr() as usize - bytes.as_ptr() as usize;
                let reason = match reason.is_empty() {
                    true => 0..0,
                    false => start..start + reason.len(),
                };
                let http10 = response.version == Some(0);
                let fields = fields_of(bytes, response.headers);
                Ok(Some((consumed, (status, reason, http10), fields)))
            }
            Ok(httparse::Status::Partial) => Ok(None),
            Err(error) => Err(head_error(error)),
        }
    })?;
    Ok(
        parsed.map(|(bytes, (status, reason, http10), fields)| ResponseHead {
            status,
            reason,
            http10,
            fields: Fields::new(bytes, fields),
        }),
    )
}

/// How a request body goes upstream (and comes from the client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFraming {
    /// No body.
    None,
    /// `Content-Length: n`.
    Length(u64),
    /// Chunked coding.
    Chunked,
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
        // Chunked must be the final coding; anything else runs until the upstream closes.
        match head.fields.chunked() {
            Some(true) => return Ok(Self::Chunked),
            Some(false) => return Ok(Self::UntilClose),
            None => {}
        }
        Ok(match head.fields.content_length()? {
            Some(0) => Self::Empty,
            Some(n) => Self::Length(n),
            None => Self::UntilClose,
        })
    }
}

/// Whether the upstream connection can carry another request after this response: HTTP/1.1
/// unless it says `Connection: close`, HTTP/1.0 only with `Connection: keep-alive`.
pub fn keeps_alive(head: &ResponseHead) -> bool {
    match head.http10 {
        true => {
            head.fields.has_token("connection", "keep-alive") && !head.fields.has_token("connection", "close")
        }
        false => !head.fields.has_token("connection", "close"),
    }
}

/// What the proxy adds to a request it sends upstream.
#[derive(Debug)]
pub struct Upstreamed<'a> {
    /// The origin-form target to request.
    pub target: &'a [u8],
    /// The upstream's `Host`.
    pub host: &'a [u8],
    /// The client's address, appended to `X-Forwarded-For`.
    pub client_ip: &'a [u8],
    /// `http` or `https`: `X-Forwarded-Proto`.
    pub proto: &'a str,
    /// The host the client asked for: `X-Forwarded-Host`.
    pub forwarded_host: &'a [u8],
    pub framing: RequestFraming,
    /// The protocol of an upgrade being forwarded.
    pub upgrade: Option<&'a [u8]>,
}

/// Writes the head of `request` as it goes upstream: its method and `up.target`; its fields
/// without the hop-by-hop ones, `Expect` (answered here) and those the proxy sets itself —
/// `Host`, `Content-Length` and `X-Forwarded-*`, the client's `X-Forwarded-For` chain kept and
/// extended, proto and host replaced (the proxy is the edge); then the body's framing and the
/// upgrade, if any.
pub fn write_upstream_head(out: &mut Vec<u8>, request: &RequestHead, up: &Upstreamed<'_>) {
    const SET_HERE: [&[u8]; 6] = [
        b"host",
        b"content-length",
        b"expect",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
    ];
    let listed = request.fields.listed_in_connection();
    out.extend_from_slice(request.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(up.target);
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(up.host);
    out.extend_from_slice(b"\r\n");
    for (name, value) in request.fields.iter() {
        if is_hop_by_hop(name, &listed) || SET_HERE.iter().any(|s| name.eq_ignore_ascii_case(s)) {
            continue;
        }
        field(out, name, value);
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    for hop in request.fields.tokens("x-forwarded-for") {
        out.extend_from_slice(hop);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(up.client_ip);
    out.extend_from_slice(b"\r\nx-forwarded-proto: ");
    out.extend_from_slice(up.proto.as_bytes());
    out.extend_from_slice(b"\r\nx-forwarded-host: ");
    out.extend_from_slice(up.forwarded_host);
    out.extend_from_slice(b"\r\n");
    match up.framing {
        RequestFraming::None => {}
        RequestFraming::Length(length) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(length.to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        RequestFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    if let Some(protocol) = up.upgrade {
        out.extend_from_slice(b"connection: upgrade\r\nupgrade: ");
        out.extend_from_slice(protocol);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// How the proxy frames a response body towards the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFraming {
    /// No body follows; the length fields stay as the upstream sent them (a `HEAD` answer, a
    /// `304`, a `101`).
    NoBody,
    /// The upstream's `Content-Length` is passed on.
    Length,
    /// Length unknown, HTTP/1.1 client: chunked.
    Chunked,
    /// Length unknown, HTTP/1.0 client: until the proxy closes.
    UntilClose,
}

/// What the client connection does after a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientConnection<'a> {
    /// HTTP/1.1 default: kept open, nothing said.
    KeepAlive,
    /// An HTTP/1.0 client that asked to keep it.
    KeepAlive10,
    Close,
    /// Switching to this protocol.
    Upgrade(&'a [u8]),
}

/// Writes the head of an upstream's response as it goes to the client: its status and reason,
/// its fields without the hop-by-hop ones (and without a length the new framing replaces),
/// the framing, and what becomes of the connection.
pub fn write_client_head(
    out: &mut Vec<u8>,
    response: &ResponseHead,
    framing: ClientFraming,
    connection: ClientConnection<'_>,
) {
    let listed = response.fields.listed_in_connection();
    status_line(out, response.status, response.reason());
    let status = response.status;
    let drop_length = matches!(framing, ClientFraming::Chunked | ClientFraming::UntilClose)
        || status.is_informational()
        || status == StatusCode::NO_CONTENT;
    for (name, value) in response.fields.iter() {
        if is_hop_by_hop(name, &listed) || (drop_length && name.eq_ignore_ascii_case(b"content-length")) {
            continue;
        }
        field(out, name, value);
    }
    if framing == ClientFraming::Chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    connection_fields(out, connection);
    out.extend_from_slice(b"\r\n");
}

/// `HTTP/1.1 <code> <reason>`: the reason given, else the standard one.
pub fn status_line(out: &mut Vec<u8>, status: StatusCode, reason: &[u8]) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    match reason.is_empty() {
        true => out.extend_from_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes()),
        false => out.extend_from_slice(reason),
    }
    out.extend_from_slice(b"\r\n");
}

/// The `Connection` (and `Upgrade`) fields that say what becomes of a client connection.
pub fn connection_fields(out: &mut Vec<u8>, connection: ClientConnection<'_>) {
    match connection {
        ClientConnection::KeepAlive => {}
        ClientConnection::KeepAlive10 => out.extend_from_slice(b"connection: keep-alive\r\n"),
        ClientConnection::Close => out.extend_from_slice(b"connection: close\r\n"),
        ClientConnection::Upgrade(protocol) => {
            out.extend_from_slice(b"connection: upgrade\r\nupgrade: ");
            out.extend_from_slice(protocol);
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// The size line that opens a chunk of `len` bytes.
pub fn chunk_header(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(format!("{len:x}\r\n").as_bytes());
}

/// The end of a chunked body: the last chunk and an empty trailer section.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Takes up to `remaining` bytes of a length-delimited body (or chunk) out of `buf` without
/// copying them, and counts them off.
pub fn take_counted(buf: &mut BytesMut, remaining: &mut u64) -> Bytes {
    let take = usize::try_from(*remaining).unwrap_or(usize::MAX).min(buf.len());
    *remaining -= take as u64;
    buf.split_to(take).freeze()
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
                    let mut left = remaining;
                    let data = take_counted(buf, &mut left);
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

    fn request(raw: &str) -> RequestHead {
        let mut buf = BytesMut::from(raw);
        parse_request_head(&mut buf, 64 * 1024).unwrap().unwrap()
    }

    fn response(raw: &str) -> ResponseHead {
        let mut buf = BytesMut::from(raw);
        parse_response_head(&mut buf, 64 * 1024).unwrap().unwrap()
    }

    fn upstreamed<'a>(framing: RequestFraming, upgrade: Option<&'a [u8]>) -> Upstreamed<'a> {
        Upstreamed {
            target: b"/api/x?y=1",
            host: b"10.0.0.9:8080",
            client_ip: b"127.0.0.1",
            proto: "http",
            forwarded_host: b"app.test:8000",
            framing,
            upgrade,
        }
    }

    #[test]
    fn a_request_head_is_split_off_and_its_body_bytes_stay() {
        let mut buf =
            BytesMut::from("POST /a?b=1 HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\n\r\nhello");
        let head = parse_request_head(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(head.method, Method::POST);
        assert_eq!(head.target(), "/a?b=1");
        assert!(!head.http10 && head.keeps_alive());
        assert_eq!(head.fields.get("HOST"), Some(&b"app.test"[..]));
        assert_eq!(head.body_framing(), Ok((RequestFraming::Length(5), false)));
        assert_eq!(&buf[..], b"hello");
    }

    #[test]
    fn request_framing_and_keep_alive_follow_rfc_9112() {
        let chunked =
            request("PUT / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(chunked.body_framing(), Ok((RequestFraming::Chunked, true)));
        let gzip = request("PUT / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n");
        assert_eq!(gzip.body_framing(), Err(CodecError::TransferEncoding));
        let conflicting = request("PUT / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n");
        assert_eq!(conflicting.body_framing(), Err(CodecError::ContentLength));
        let none = request("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(none.body_framing(), Ok((RequestFraming::None, false)));
        assert!(!request("GET / HTTP/1.1\r\nConnection: Close\r\n\r\n").keeps_alive());
        assert!(!request("GET / HTTP/1.0\r\n\r\n").keeps_alive());
        assert!(request("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keeps_alive());
        let ws = request("GET / HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n");
        assert_eq!(ws.upgrade(), Some(&b"websocket"[..]));
        assert_eq!(
            request("GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n").upgrade(),
            None
        );
    }

    #[test]
    fn partial_heads_wait_for_more_and_oversized_or_malformed_ones_are_refused() {
        let mut buf = BytesMut::from("GET / HTTP/1.1\r\nHost: a");
        assert!(parse_request_head(&mut buf, 1024).unwrap().is_none());
        assert_eq!(
            parse_request_head(&mut buf, 10).unwrap_err(),
            CodecError::HeadTooLarge(10)
        );
        let mut garbage = BytesMut::from("\x16\x03\x01 hello\r\n\r\n");
        assert!(matches!(
            parse_request_head(&mut garbage, 1024),
            Err(CodecError::Head(_))
        ));
        let mut ssh = BytesMut::from("SSH-2.0-OpenSSH\r\n\r\n");
        assert!(matches!(
            parse_response_head(&mut ssh, 1024),
            Err(CodecError::Head(_))
        ));
        assert!(parse_request_head(&mut BytesMut::new(), 1024).unwrap().is_none());
        let many = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "X-A: 1\r\n".repeat(MAX_REQUEST_FIELDS + 1)
        );
        assert_eq!(
            parse_request_head(&mut BytesMut::from(many.as_str()), 64 * 1024).unwrap_err(),
            CodecError::TooManyFields
        );
    }

    #[test]
    fn the_upstream_head_drops_hop_by_hop_fields_and_sets_host_framing_and_forwarding() {
        let head = request(concat!(
            "GET /x HTTP/1.1\r\nHost: app.test:8000\r\nConnection: keep-alive, X-Secret\r\n",
            "X-Secret: 1\r\nKeep-Alive: timeout=5\r\nProxy-Authorization: basic x\r\nTE: trailers\r\n",
            "Expect: 100-continue\r\nX-Forwarded-For: 10.0.0.1,10.0.0.2\r\nX-Forwarded-Proto: https\r\n",
            "Accept: text/html\r\nContent-Length: 9\r\n\r\n"
        ));
        let mut out = Vec::new();
        write_upstream_head(&mut out, &head, &upstreamed(RequestFraming::Length(9), None));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            concat!(
                "GET /api/x?y=1 HTTP/1.1\r\nhost: 10.0.0.9:8080\r\nAccept: text/html\r\n",
                "x-forwarded-for: 10.0.0.1, 10.0.0.2, 127.0.0.1\r\nx-forwarded-proto: http\r\n",
                "x-forwarded-host: app.test:8000\r\ncontent-length: 9\r\n\r\n"
            )
        );
        let ws = request("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
        let mut out = Vec::new();
        write_upstream_head(&mut out, &ws, &upstreamed(RequestFraming::None, ws.upgrade()));
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.ends_with("connection: upgrade\r\nupgrade: websocket\r\n\r\n"),
            "{text}"
        );
        assert_eq!(text.matches("pgrade").count(), 2, "{text}");
    }

    #[test]
    fn the_client_head_keeps_the_status_and_fields_and_says_what_follows() {
        let head = response(concat!(
            "HTTP/1.1 201 Made\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n",
            "Content-Length: 2\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n"
        ));
        let mut out = Vec::new();
        write_client_head(
            &mut out,
            &head,
            ClientFraming::Length,
            ClientConnection::KeepAlive,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 201 Made\r\nContent-Length: 2\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n"
        );
        let chunked = response("HTTP/1.1 200 \r\nTransfer-Encoding: chunked\r\n\r\n");
        let mut out = Vec::new();
        write_client_head(
            &mut out,
            &chunked,
            ClientFraming::Chunked,
            ClientConnection::Close,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
        );
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let chunked = response("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert_eq!(
            ResponseFraming::of(&Method::GET, &chunked),
            Ok(ResponseFraming::Chunked)
        );
        assert_eq!(
            ResponseFraming::of(&Method::HEAD, &chunked),
            Ok(ResponseFraming::Empty)
        );
        let gzip_only = response("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n");
        assert_eq!(
            ResponseFraming::of(&Method::GET, &gzip_only),
            Ok(ResponseFraming::UntilClose)
        );
        let no_content = response("HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n");
        assert_eq!(
            ResponseFraming::of(&Method::GET, &no_content),
            Ok(ResponseFraming::Empty)
        );
        let unframed = response("HTTP/1.0 200 OK\r\n\r\n");
        assert_eq!(
            ResponseFraming::of(&Method::GET, &unframed),
            Ok(ResponseFraming::UntilClose)
        );
        assert!(!keeps_alive(&unframed));
        assert!(keeps_alive(&response(
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n"
        )));
        assert!(!keeps_alive(&response(
            "HTTP/1.1 200 OK\r\nConnection: Close\r\n\r\n"
        )));
        let same_twice = response("HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\n");
        assert_eq!(
            ResponseFraming::of(&Method::GET, &same_twice),
            Ok(ResponseFraming::Length(3))
        );
        for bad in [
            "Content-Length: 3\r\nContent-Length: 4",
            "Content-Length: -1",
            "Content-Length: 1e3",
            "Content-Length: ",
        ] {
            let head = response(&format!("HTTP/1.1 200 OK\r\n{bad}\r\n\r\n"));
            assert_eq!(
                ResponseFraming::of(&Method::GET, &head),
                Err(CodecError::ContentLength),
                "{bad}"
            );
        }
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
