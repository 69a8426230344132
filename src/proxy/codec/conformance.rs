//! The codec's conformance table: one row per rule of RFC 9112 (and RFC 9110 where framing
//! depends on it), named after its section, each a request as bytes and what the proxy makes of
//! it ([`frame_request`]). Rows marked "nginx" are where nginx is stricter than the RFC's
//! "MAY" and the proxy follows nginx. Every accepted row is also fed split at every byte, so a
//! rule cannot depend on how reads happen to fall.

use bytes::BytesMut;

use super::chunked::{ChunkedDecoder, Decoded};
use super::framing::{RequestVerdict, frame_request};
use super::head::parse_request_head;

const MAX_HEAD: usize = 64 * 1024;

enum Expect {
    /// Accepted with this body.
    Body(&'static [u8]),
    /// Refused with this status.
    Status(u16),
    /// Not complete: the proxy waits for more.
    Incomplete,
}

use Expect::{Body, Incomplete, Status};

const ROWS: &[(&str, &[u8], Expect)] = &[
    // §2.2, §3: the message and its request line.
    ("§3 a plain GET is read", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", Body(b"")),
    ("§2.3 HTTP/2 in an HTTP/1 request line is refused", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", Status(400)),
    ("§3 two spaces in the request line are refused", b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", Status(400)),
    ("§3.1 a method is a token", b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", Status(400)),
    ("§3.2 a target with a space is refused", b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", Status(400)),
    ("§3.2 a target with non-ASCII bytes is refused", b"GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", Status(400)),
    ("§3.2 a target with characters RFC 3986 leaves out is refused", b"GET /{a}|b HTTP/1.1\r\nHost: a\r\n\r\n", Status(400)),
    ("§3.2 a target has no fragment", b"GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n", Status(400)),
    ("§3.2 a target with reserved characters and percent-encodings is read", b"GET /a;b/c:d@e!$&'()*+,=?x=%20&y=[1] HTTP/1.1\r\nHost: a\r\n\r\n", Body(b"")),
    ("§3.2 a target in no known form is refused", b"GET a/b HTTP/1.1\r\nHost: a\r\n\r\n", Status(400)),
    ("§3.2.2 an absolute-form target is read", b"GET http://a/x HTTP/1.1\r\nHost: a\r\n\r\n", Body(b"")),
    ("§3.2.2 an absolute-form target of another scheme is refused", b"GET ftp://a/x HTTP/1.1\r\nHost: a\r\n\r\n", Status(400)),
    ("RFC 9110 §4.2.4 userinfo in an absolute-form target is refused", b"GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n", Status(400)),
    ("§3.2.3 CONNECT's authority form is refused: no forward proxy", b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n", Status(405)),
    ("§3.2.4 OPTIONS * is read", b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", Body(b"")),
    ("§3.2.4 the asterisk form with another method is refused", b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", Status(400)),
    // §3.2: Host.
    ("§3.2 an HTTP/1.1 request without Host is refused", b"GET / HTTP/1.1\r\n\r\n", Status(400)),
    ("§3.2 an HTTP/1.1 absolute-form request without Host is refused", b"GET http://a/ HTTP/1.1\r\n\r\n", Status(400)),
    ("§3.2 an HTTP/1.0 request may lack Host", b"GET / HTTP/1.0\r\n\r\n", Body(b"")),
    ("§3.2 two Host fields are refused", b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", Status(400)),
    ("§3.2 two Host fields are refused in HTTP/1.0 too", b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", Status(400)),
    ("§3.2 a Host with a path is refused", b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", Status(400)),
    ("§3.2 a Host with userinfo is refused", b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", Status(400)),
    ("§3.2 a Host with a non-numeric port is refused", b"GET / HTTP/1.1\r\nHost: a:8x\r\n\r\n", Status(400)),
    ("§3.2 a Host with a port is read", b"GET / HTTP/1.1\r\nHost: a.test:8000\r\n\r\n", Body(b"")),
    ("§3.2 a Host with an IPv6 literal is read", b"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", Body(b"")),
    ("§3.2 a Host with a broken IPv6 literal is refused", b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", Status(400)),
    // §5: field lines.
    ("§5.1 whitespace between a field name and its colon is refused", b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", Status(400)),
    ("§5.2 obsolete line folding is refused", b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n 2\r\n\r\n", Status(400)),
    ("RFC 9110 §5.5 a NUL in a field value is refused", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", Status(400)),
    ("RFC 9110 §5.5 a bare CR in a field value is refused", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", Status(400)),
    ("§2.2 a head without its blank line is incomplete", b"GET / HTTP/1.1\r\nHost: a\r\n", Incomplete),
    // §6: framing.
    ("§6.2 a Content-Length body is read", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcNEXT", Body(b"abc")),
    ("§6.2 a Content-Length body cut short is incomplete", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9\r\n\r\nabc", Incomplete),
    ("§6.3 Content-Length repeated with one value is refused (nginx)", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", Status(400)),
    ("§6.3 Content-Length repeated with two values is refused", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", Status(400)),
    ("RFC 9110 §8.6 a Content-Length list is refused", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc", Status(400)),
    ("RFC 9110 §8.6 a signed Content-Length is refused", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc", Status(400)),
    ("RFC 9110 §8.6 an empty Content-Length is refused", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n", Status(400)),
    ("RFC 9110 §8.6 a Content-Length too large to count is refused", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", Status(400)),
    ("§6.1 Transfer-Encoding with Content-Length is refused (nginx)", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n", Status(400)),
    ("§6.1 Transfer-Encoding in HTTP/1.0 is refused", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", Status(400)),
    ("§6.1 Transfer-Encoding repeated is refused (nginx)", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", Status(400)),
    ("§6.1 a coding other than chunked gets 501", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", Status(501)),
    ("§6.1 chunked after another coding gets 501 (nginx)", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", Status(501)),
    ("§6.1 chunked applied twice gets 501 (nginx)", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", Status(501)),
    ("§6.1 a coding that only contains chunked gets 501", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", Status(501)),
    ("§7 a transfer-coding name is case-insensitive", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\n\r\n1\r\nx\r\n0\r\n\r\n", Body(b"x")),
    ("§6.3 a request without length or coding has no body", b"POST / HTTP/1.1\r\nHost: a\r\n\r\nabc", Body(b"")),
    // §7.1: chunked.
    ("§7.1 chunks are joined", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nA\r\n0123456789\r\n0\r\n\r\n", Body(b"abc0123456789")),
    ("§7.1 a chunk-size is hex in either case", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n0\r\n\r\n", Body(b"0123456789")),
    ("§7.1 a chunk-size with leading zeros is read", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0003\r\nabc\r\n000\r\n\r\n", Body(b"abc")),
    ("§7.1 a chunk-size without a hex digit is refused", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n;x\r\n\r\n", Status(400)),
    ("§7.1 an empty chunk-size line is refused", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\r\n\r\n", Status(400)),
    ("§7.1 a signed chunk-size is refused", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n+3\r\nabc\r\n0\r\n\r\n", Status(400)),
    ("§7.1 a 0x-prefixed chunk-size is refused", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n", Status(400)),
    ("§7.1 a chunk-size line ended by a bare LF is refused", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n", Status(400)),
    ("§7.1 whitespace after a chunk-size without an extension is refused", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3 \r\nabc\r\n0\r\n\r\n", Status(400)),
    ("§7.1 a chunk-size beyond 15 hex digits is refused", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1000000000000000\r\n", Status(400)),
    ("§7.1.1 extensions with token and quoted values are read", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3 ; a = b ;c;d=\"x;\\\"y\"\r\nabc\r\n0;e\r\n\r\n", Body(b"abc")),
    ("§7.1.1 an extension without a name is refused", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;=b\r\nabc\r\n0\r\n\r\n", Status(400)),
    ("§7.1.1 an extension with an empty value is refused", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;a=\r\nabc\r\n0\r\n\r\n", Status(400)),
    ("§7.1.1 an unterminated quoted extension is refused", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;a=\"b\r\nabc\r\n0\r\n\r\n", Status(400)),
    ("§7.1 chunk data not followed by CRLF is refused", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n", Status(400)),
    ("§7.1 chunk data followed by a bare LF is refused", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\n0\r\n\r\n", Status(400)),
    ("§7.1.2 trailer fields are read and dropped", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\nA: 1\r\nB-c: two words\r\n\r\n", Body(b"x")),
    ("§7.1.2 a trailer line without a colon is refused", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\nbroken\r\n\r\n", Status(400)),
    ("§7.1.2 a trailer line ended by a bare LF is refused", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\nA: 1\n\r\n", Status(400)),
    ("§7.1.2 a folded trailer line is refused", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\nA: 1\r\n 2\r\n\r\n", Status(400)),
    ("§7.1 a chunked body without its last chunk is incomplete", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n", Incomplete),
    ("§7.1 a chunked body without its final CRLF is incomplete", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n", Incomplete),
];

#[test]
fn every_rfc_9112_rule_in_the_table_holds() {
    let mut broken = Vec::new();
    for (rule, bytes, expect) in ROWS {
        let verdict = frame_request(bytes, MAX_HEAD);
        let ok = match (expect, &verdict) {
            (Body(expected), RequestVerdict::Accepted { body, .. }) => body == expected,
            (Status(expected), RequestVerdict::Refused(status)) => status == expected,
            (Incomplete, RequestVerdict::Incomplete) => true,
            _ => false,
        };
        if !ok {
            broken.push(format!("{rule}: got {verdict:?}"));
        }
    }
    assert!(
        broken.is_empty(),
        "{} rule(s) broken:\n{}",
        broken.len(),
        broken.join("\n")
    );
}

/// The body the decoder yields when `bytes` (a head and a chunked body) arrive split at `at`,
/// as two reads: `None` if it refuses, `Some` with what it decoded when done.
fn decode_split(bytes: &[u8], at: usize) -> Option<Vec<u8>> {
    let mut buf = BytesMut::from(&bytes[..at]);
    let mut rest = &bytes[at..];
    loop {
        match parse_request_head(&mut buf, MAX_HEAD) {
            Ok(Some(_)) => break,
            Ok(None) if !rest.is_empty() => {
                buf.extend_from_slice(rest);
                rest = &[];
            }
            _ => return None,
        }
    }
    let mut decoder = ChunkedDecoder::default();
    let mut body = Vec::new();
    loop {
        match decoder.decode(&mut buf) {
            Ok(Decoded::Data(data)) => body.extend_from_slice(&data),
            Ok(Decoded::Done) => return Some(body),
            Ok(Decoded::NeedMore) if !rest.is_empty() => {
                buf.extend_from_slice(rest);
                rest = &[];
            }
            _ => return None,
        }
    }
}

#[test]
fn chunked_rows_decode_the_same_however_the_bytes_are_split() {
    for (rule, bytes, expect) in ROWS {
        let Body(expected) = expect else { continue };
        if !bytes.windows(7).any(|w| w.eq_ignore_ascii_case(b"chunked")) {
            continue;
        }
        for at in 0..=bytes.len() {
            assert_eq!(
                decode_split(bytes, at).as_deref(),
                Some(*expected),
                "{rule}: split at {at}"
            );
        }
    }
    for (rule, bytes, expect) in ROWS {
        if !matches!(expect, Status(400)) || !rule.starts_with("§7.1") {
            continue;
        }
        for at in 0..=bytes.len() {
            assert_eq!(decode_split(bytes, at), None, "{rule}: split at {at}");
        }
    }
}
