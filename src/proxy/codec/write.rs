//! The heads the proxy writes: a request's as it goes upstream (hop-by-hop fields out, `Host`,
//! `X-Forwarded-*` and our framing in) and a response's as it goes to the client.

use http::StatusCode;

use super::framing::RequestFraming;
use super::head::{RequestHead, ResponseHead};

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
    /// Forward fields whose names hold `_` (else they are dropped, as nginx does by default).
    pub underscores: bool,
}

/// Writes the head of `request` as it goes upstream: its method and `up.target`; its fields
/// without the hop-by-hop ones, those with `_` in their names (unless `up.underscores`), `Expect` (answered here) and those the proxy sets itself —
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
        if is_hop_by_hop(name, &listed)
            || SET_HERE.iter().any(|s| name.eq_ignore_ascii_case(s))
            || (!up.underscores && name.contains(&b'_'))
        {
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
