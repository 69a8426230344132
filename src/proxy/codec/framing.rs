//! How a body is framed (RFC 9112 §6): the rules a request head must hold to before the proxy
//! routes it — its host, its target's form, its body's framing — and how a response's body is
//! delimited.

use http::{Method, StatusCode};

use super::CodecError;
use super::chunked::{ChunkedDecoder, Decoded};
use super::head::{RequestHead, ResponseHead};

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

/// Why a request is refused before it is routed: the status it gets and the rule it broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub rule: &'static str,
}

const fn bad(rule: &'static str) -> Refusal {
    Refusal {
        status: StatusCode::BAD_REQUEST,
        rule,
    }
}

/// The form of a request target (RFC 9112 §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetForm {
    /// `/path?query`.
    Origin,
    /// `http://authority/path?query`.
    Absolute,
    /// `*`, for `OPTIONS` only.
    Asterisk,
}

/// A request head that holds to the rules: the host it is for, its target's form, and how its
/// body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked<'a> {
    /// The authority of an absolute-form target, else the `Host` field (RFC 9112 §3.2.2).
    pub host: &'a str,
    pub target: TargetForm,
    pub framing: RequestFraming,
}

/// Holds a request head to RFC 9112 and to what nginx refuses, before it is routed:
///
/// - §3.2: the target is origin-form, absolute-form (`http`/`https`, no userinfo) or `*` for
///   `OPTIONS`, of RFC 3986's characters only; `CONNECT`'s authority-form is refused with `405` (this is
///   no forward proxy).
/// - §3.2: an HTTP/1.1 request has exactly one `Host`, a valid `uri-host [":" port]`; more than
///   one is refused in HTTP/1.0 too.
/// - §6.1: `Transfer-Encoding` appears once, only in HTTP/1.1, never with `Content-Length`, and
///   only as `chunked` (case-insensitive, §7) — any other coding gets `501`, as in nginx,
///   because the proxy would pass on a body in a coding it dropped the name of.
/// - §6.2, §6.3: `Content-Length` appears once, as digits only (no list, even of equal values).
pub fn check_request(head: &RequestHead) -> Result<Checked<'_>, Refusal> {
    if head.method == Method::CONNECT {
        return Err(Refusal {
            status: StatusCode::METHOD_NOT_ALLOWED,
            rule: "CONNECT: this proxy opens no tunnels to other hosts",
        });
    }
    let raw_target = head.target_bytes();
    if raw_target.is_empty() || !raw_target.iter().all(|b| is_uri_byte(*b)) {
        return Err(bad(
            "RFC 9112 §3.2: the request target is a URI reference (RFC 3986 characters)",
        ));
    }
    let target = head.target();
    let (form, authority) = if target.starts_with('/') {
        (TargetForm::Origin, None)
    } else if target == "*" {
        if head.method != Method::OPTIONS {
            return Err(bad("RFC 9112 §3.2.4: the asterisk form is for OPTIONS only"));
        }
        (TargetForm::Asterisk, None)
    } else {
        let (scheme, rest) = target.split_once("://").ok_or(bad(
            "RFC 9112 §3.2: a target is origin, absolute or asterisk form",
        ))?;
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return Err(bad("RFC 9112 §3.2.2: an absolute-form target is an http(s) URI"));
        }
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let authority = &rest[..end];
        if authority.contains('@') {
            return Err(bad("RFC 9110 §4.2.4: an http URI with userinfo is an error"));
        }
        if !valid_authority(authority.as_bytes()) {
            return Err(bad("RFC 9112 §3.2.2: an absolute-form target names a valid host"));
        }
        (TargetForm::Absolute, Some(authority))
    };
    let mut hosts = head.fields.get_all("host");
    let host_field = hosts.next();
    if hosts.next().is_some() {
        return Err(bad("RFC 9112 §3.2: a request has one Host field"));
    }
    let host_field = match host_field {
        Some(value) => {
            let value = value.trim_ascii();
            if !value.is_empty() && !valid_authority(value) {
                return Err(bad("RFC 9112 §3.2: Host is a valid uri-host [\":\" port]"));
            }
            Some(value)
        }
        None if !head.http10 => return Err(bad("RFC 9112 §3.2: an HTTP/1.1 request has a Host field")),
        None => None,
    };
    let host = match authority {
        Some(authority) => authority,
        // Checked above: ASCII, so UTF-8.
        None => std::str::from_utf8(host_field.unwrap_or_default()).unwrap_or_default(),
    };
    Ok(Checked {
        host,
        target: form,
        framing: request_framing(head)?,
    })
}

/// How a request's body is framed (RFC 9112 §6.1–§6.3), or why it cannot be read.
fn request_framing(head: &RequestHead) -> Result<RequestFraming, Refusal> {
    let mut codings = head.fields.get_all("transfer-encoding");
    let coding = codings.next();
    if codings.next().is_some() {
        return Err(bad("RFC 9112 §6.1: Transfer-Encoding appears once (nginx)"));
    }
    let mut lengths = head.fields.get_all("content-length");
    let length = lengths.next();
    if lengths.next().is_some() {
        return Err(bad(
            "RFC 9112 §6.3: Content-Length appears once, even with equal values (nginx)",
        ));
    }
    if let Some(coding) = coding {
        if head.http10 {
            return Err(bad("RFC 9112 §6.1: HTTP/1.0 has no Transfer-Encoding"));
        }
        if length.is_some() {
            return Err(bad(
                "RFC 9112 §6.1: Transfer-Encoding and Content-Length together (nginx)",
            ));
        }
        if !coding.trim_ascii().eq_ignore_ascii_case(b"chunked") {
            return Err(Refusal {
                status: StatusCode::NOT_IMPLEMENTED,
                rule: "RFC 9112 §6.1: a transfer coding other than chunked alone",
            });
        }
        return Ok(RequestFraming::Chunked);
    }
    let Some(length) = length else {
        return Ok(RequestFraming::None);
    };
    let length = length.trim_ascii();
    // Up to 18 digits: always fits, and no body is that large.
    if length.is_empty() || length.len() > 18 || !length.iter().all(u8::is_ascii_digit) {
        return Err(bad("RFC 9110 §8.6: Content-Length is 1*DIGIT"));
    }
    let n = length.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Ok(match n {
        0 => RequestFraming::None,
        n => RequestFraming::Length(n),
    })
}

/// The characters of a request target (RFC 3986 §2): unreserved, reserved but `#` (a target
/// has no fragment), and `%` of percent-encodings. Not `"<>\^`{|}` nor spaces or controls,
/// which some servers let through unencoded and others refuse.
fn is_uri_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~:/?[]@!$&'()*+,;=%".contains(&b)
}

/// `uri-host [ ":" port ]` (RFC 3986 §3.2.2–§3.2.3): a reg-name of unreserved, sub-delims and
/// percent-encodings, or an IP literal in brackets; the port is digits.
fn valid_authority(value: &[u8]) -> bool {
    let (host, port) = match value.first() {
        Some(b'[') => match value.iter().position(|b| *b == b']') {
            Some(end) => {
                let literal = &value[1..end];
                if literal.is_empty() || !literal.iter().all(|b| b.is_ascii_hexdigit() || b":.".contains(b)) {
                    return false;
                }
                (&value[..=end], &value[end + 1..])
            }
            None => return false,
        },
        _ => match value.iter().position(|b| *b == b':') {
            Some(colon) => (&value[..colon], &value[colon..]),
            None => (value, &value[value.len()..]),
        },
    };
    let port_ok = match port.split_first() {
        None => true,
        Some((b':', digits)) => digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    };
    let host_ok = host.first() == Some(&b'[')
        || (!host.is_empty()
            && host
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(b)));
    host_ok && port_ok
}

/// What the proxy makes of the bytes a client sends, as far as its first request goes: the
/// same steps as a client connection takes (head, [`check_request`], body), as one pure
/// function — for the conformance table, the differential fuzz target and its proptest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestVerdict {
    /// Read whole: its method and target, and its body decoded.
    Accepted {
        method: String,
        target: String,
        body: Vec<u8>,
    },
    /// Refused with this status (400, 405, 431, 501).
    Refused(u16),
    /// The bytes end before the request does.
    Incomplete,
}

/// Reads the first request out of `bytes` as the proxy does (heads up to `max_head_bytes`).
pub fn frame_request(bytes: &[u8], max_head_bytes: usize) -> RequestVerdict {
    let mut buf = bytes::BytesMut::from(bytes);
    let head = match super::head::parse_request_head(&mut buf, max_head_bytes) {
        Ok(Some(head)) => head,
        Ok(None) => return RequestVerdict::Incomplete,
        Err(CodecError::HeadTooLarge(_) | CodecError::TooManyFields) => return RequestVerdict::Refused(431),
        Err(_) => return RequestVerdict::Refused(400),
    };
    let checked = match check_request(&head) {
        Ok(checked) => checked,
        Err(refusal) => return RequestVerdict::Refused(refusal.status.as_u16()),
    };
    let mut body = Vec::new();
    match checked.framing {
        RequestFraming::None => {}
        RequestFraming::Length(n) => {
            if (buf.len() as u64) < n {
                return RequestVerdict::Incomplete;
            }
            body.extend_from_slice(&buf[..n as usize]);
        }
        RequestFraming::Chunked => {
            let mut decoder = ChunkedDecoder::default();
            loop {
                match decoder.decode(&mut buf) {
                    Ok(Decoded::Data(data)) => body.extend_from_slice(&data),
                    Ok(Decoded::Done) => break,
                    Ok(Decoded::NeedMore) => return RequestVerdict::Incomplete,
                    Err(_) => return RequestVerdict::Refused(400),
                }
            }
        }
    }
    RequestVerdict::Accepted {
        method: head.method.to_string(),
        target: head.target().to_owned(),
        body,
    }
}
