//! Differential fuzz target of the proxy's request codec: every input goes to
//! `docker_watcher::proxy::frame_request` and to the reference parser (hyper's HTTP/1.1 server,
//! `tests/it/reference_parser.rs`, shared with the stable proptest), and the property of that
//! file must hold — the proxy never accepts a request the reference refuses, nor frames its body
//! differently.
//!
//! ```sh
//! cargo +nightly fuzz run request_framing -- -max_total_time=300   # from the repository root
//! ```

#![no_main]

#[path = "../../tests/it/reference_parser.rs"]
mod reference_parser;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let ours = docker_watcher::proxy::frame_request(data, 64 * 1024);
    let theirs = reference_parser::reference_verdict(data);
    if let Err(why) = reference_parser::check_against_reference(&ours, &theirs) {
        panic!(
            "{why}\n  input: {:?}\n  proxy: {ours:?}",
            String::from_utf8_lossy(data)
        );
    }
});
