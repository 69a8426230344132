//! Unit tests of the codec: heads, framing, the heads written on either side, chunked decoding.

use bytes::BytesMut;
use http::Method;

use super::chunked::MAX_CHUNK_LINE;
use super::head::MAX_REQUEST_FIELDS;
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
        underscores: false,
    }
}

#[test]
fn a_request_head_is_split_off_and_its_body_bytes_stay() {
    let mut buf = BytesMut::from("POST /a?b=1 HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\n\r\nhello");
    let head = parse_request_head(&mut buf, 1024).unwrap().unwrap();
    assert_eq!(head.method, Method::POST);
    assert_eq!(head.target(), "/a?b=1");
    assert!(!head.http10 && head.keeps_alive());
    assert_eq!(head.fields.get("HOST"), Some(&b"app.test"[..]));
    assert_eq!(
        check_request(&head).map(|c| c.framing),
        Ok(RequestFraming::Length(5))
    );
    assert_eq!(&buf[..], b"hello");
}

#[test]
fn keep_alive_and_upgrades_follow_rfc_9112() {
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
