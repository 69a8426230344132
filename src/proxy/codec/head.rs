//! Request and response heads parsed in place with `httparse`: a head is the bytes it arrived
//! in plus where each field sits, so nothing is copied or decoded that is only passed through.

use std::mem::MaybeUninit;
use std::ops::Range;

use bytes::{Bytes, BytesMut};
use http::{Method, StatusCode};

use super::CodecError;

/// Request fields beyond this many are refused (`431`); responses get more room.
pub(super) const MAX_REQUEST_FIELDS: usize = 100;
const MAX_RESPONSE_FIELDS: usize = 128;

/// One field of a head: where its name and value sit in the head's bytes.
#[derive(Debug, Clone)]
pub(super) struct Field {
    name: Range<usize>,
    value: Range<usize>,
}

/// The fields of a parsed head, over the bytes it arrived in.
#[derive(Debug, Clone)]
pub struct Fields {
    pub(super) bytes: Bytes,
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
    pub(super) fn listed_in_connection(&self) -> Vec<&[u8]> {
        self.tokens("connection")
            .filter(|t| {
                !["keep-alive", "close", "upgrade"]
                    .iter()
                    .any(|o| t.eq_ignore_ascii_case(o.as_bytes()))
            })
            .collect()
    }

    /// The one valid `Content-Length` (repeats of one value allowed), if any.
    pub(super) fn content_length(&self) -> Result<Option<u64>, CodecError> {
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
    pub(super) fn chunked(&self) -> Option<bool> {
        self.get("transfer-encoding")?;
        Some(
            self.tokens("transfer-encoding")
                .last()
                .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked")),
        )
    }
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
    pub fn target_bytes(&self) -> &[u8] {
        &self.fields.bytes[self.target.clone()]
    }

    /// The request target as text (`/` if it is not UTF-8, which [`super::check_request`]
    /// refuses).
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
    pub(super) fn reason(&self) -> &[u8] {
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
