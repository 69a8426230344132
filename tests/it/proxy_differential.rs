//! The differential property of the proxy's request codec on stable, in the test suite: for
//! every input, the proxy ([`frame_request`]) never accepts a request the reference parser
//! (hyper's server, see [`reference_parser`]) refuses, and never frames its body differently.
//! The same property is the `request_framing` fuzz target (`fuzz/`, `cargo +nightly fuzz`);
//! here it runs over the fuzz corpus kept in the repository and over requests generated from
//! the pieces smuggling attacks are made of — framing fields and their look-alikes, odd chunk
//! lines, versions and target forms — bounded so the suite stays fast.

use std::path::PathBuf;

use docker_watcher::proxy::frame_request;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use crate::reference_parser::{check_against_reference, reference_verdict};

const MAX_HEAD: usize = 64 * 1024;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/request_framing")
}

fn check(bytes: &[u8]) -> Result<(), String> {
    let ours = frame_request(bytes, MAX_HEAD);
    let theirs = reference_verdict(bytes);
    check_against_reference(&ours, &theirs).map_err(|why| {
        format!(
            "{why}\n  input: {:?}\n  proxy: {ours:?}",
            String::from_utf8_lossy(bytes)
        )
    })
}

#[test]
fn the_codec_agrees_with_the_reference_parser_on_the_whole_fuzz_corpus() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("the fuzz corpus is in the repository")
        .map(|entry| entry.expect("a corpus entry").path())
        .collect();
    files.sort();
    assert!(files.len() >= 50, "the corpus has only {} inputs", files.len());
    let failures: Vec<String> = files
        .iter()
        .filter_map(|file| {
            let bytes = std::fs::read(file).expect("a readable corpus file");
            check(&bytes)
                .err()
                .map(|why| format!("{}: {why}", file.display()))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Pieces of request heads: framing fields, their look-alikes and their broken forms.
fn field() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("Host: a.test".to_owned()),
        Just("Host: a.test".to_owned()),
        Just("Host: b.test:8080".to_owned()),
        Just("Host: ".to_owned()),
        Just("Host: a/b".to_owned()),
        (0u32..200).prop_map(|n| format!("Content-Length: {n}")),
        Just("Content-Length: 3".to_owned()),
        Just("Content-Length: 3, 3".to_owned()),
        Just("Content-Length: +3".to_owned()),
        Just("Content-Length: 0x3".to_owned()),
        Just("Content-Length:".to_owned()),
        Just("Content-Length: 99999999999999999999999".to_owned()),
        Just("Transfer-Encoding: chunked".to_owned()),
        Just("Transfer-Encoding: Chunked".to_owned()),
        Just("Transfer-Encoding:  chunked ".to_owned()),
        Just("Transfer-Encoding: gzip, chunked".to_owned()),
        Just("Transfer-Encoding: chunked, gzip".to_owned()),
        Just("Transfer-Encoding: identity".to_owned()),
        Just("Transfer-Encoding: xchunked".to_owned()),
        Just("Transfer-Encoding:".to_owned()),
        Just("Transfer_Encoding: chunked".to_owned()),
        Just("Content_Length: 5".to_owned()),
        Just("Connection: close".to_owned()),
        Just("Connection: keep-alive, Upgrade".to_owned()),
        Just("Upgrade: websocket".to_owned()),
        Just("Expect: 100-continue".to_owned()),
        Just("X-A: b".to_owned()),
        Just("X-A:b".to_owned()),
        Just("X-A : b".to_owned()),
        Just(" X-A: b".to_owned()),
        Just("X-A: \tb\t".to_owned()),
        Just("X-A: \u{e9}".to_owned()),
        "[A-Za-z-]{1,8}: [ -~]{0,8}",
    ]
}

fn request_line() -> impl Strategy<Value = String> {
    let method = prop_oneof![
        Just("GET"),
        Just("POST"),
        Just("PUT"),
        Just("OPTIONS"),
        Just("HEAD"),
        Just("CONNECT"),
        Just("G T"),
        Just("get")
    ];
    let target = prop_oneof![
        Just("/"),
        Just("/a?b=c"),
        Just("*"),
        Just("http://a.test/x"),
        Just("https://u@a.test/"),
        Just("ftp://a.test/"),
        Just("a.test:443"),
        Just("/a b"),
        Just("//x"),
        Just("/%zz"),
        Just("/{}|^`"),
        Just("")
    ];
    let version = prop_oneof![
        Just("HTTP/1.1"),
        Just("HTTP/1.1"),
        Just("HTTP/1.0"),
        Just("HTTP/2.0"),
        Just("http/1.1"),
        Just("HTTP/1.1 ")
    ];
    (method, target, version).prop_map(|(m, t, v)| format!("{m} {t} {v}"))
}

/// A chunk-size line, valid or nearly so.
fn chunk_line(size: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        Just(format!("{size:x}")),
        Just(format!("{size:X}")),
        Just(format!("00{size:x}")),
        Just(format!("{size:x};ext")),
        Just(format!("{size:x} ; a = \"q;\\\"\" ")),
        Just(format!("{size:x};a=")),
        Just(format!("{size:x} ")),
        Just(format!("+{size:x}")),
        Just(format!("0x{size:x}")),
        Just(";x".to_owned()),
        Just(String::new()),
    ]
}

/// A body: plain bytes, or chunks of it with generated size lines, line ends and trailers.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let chunk = (0usize..12).prop_flat_map(|size| {
        (
            chunk_line(size),
            prop_oneof![Just("\r\n"), Just("\r\n"), Just("\n"), Just("\r")],
            proptest::collection::vec(any::<u8>(), size..=size),
            prop_oneof![Just("\r\n"), Just("\r\n"), Just("\n"), Just("")],
        )
            .prop_map(|(line, eol, data, end)| {
                let mut bytes = line.into_bytes();
                bytes.extend_from_slice(eol.as_bytes());
                bytes.extend_from_slice(&data);
                bytes.extend_from_slice(end.as_bytes());
                bytes
            })
    });
    let trailer = prop_oneof![
        Just("0\r\n\r\n"),
        Just("0\r\n\r\n"),
        Just("0\r\nX-T: 1\r\n\r\n"),
        Just("0\r\nbroken\r\n\r\n"),
        Just("0\r\n"),
        Just("0\n\n"),
        Just("")
    ];
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..40),
        (proptest::collection::vec(chunk, 0..4), trailer).prop_map(|(chunks, end)| {
            let mut bytes = chunks.concat();
            bytes.extend_from_slice(end.as_bytes());
            bytes
        }),
    ]
}

fn request() -> impl Strategy<Value = Vec<u8>> {
    (
        request_line(),
        proptest::collection::vec(field(), 0..6),
        prop_oneof![Just("\r\n"), Just("\r\n"), Just("\r\n"), Just("\n")],
        body(),
    )
        .prop_map(|(line, fields, eol, body)| {
            let mut bytes = line.into_bytes();
            bytes.extend_from_slice(eol.as_bytes());
            for field in fields {
                bytes.extend_from_slice(field.as_bytes());
                bytes.extend_from_slice(eol.as_bytes());
            }
            bytes.extend_from_slice(eol.as_bytes());
            bytes.extend_from_slice(&body);
            bytes
        })
}

#[test]
fn the_codec_agrees_with_the_reference_parser_on_generated_requests() {
    // Bounded: a few seconds in a debug build. The fuzz target explores without a bound.
    let mut runner = TestRunner::new(Config {
        cases: 1500,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&request(), |bytes| check(&bytes).map_err(TestCaseError::fail));
    if let Err(error) = result {
        panic!("{error}");
    }
}
