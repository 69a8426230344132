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

//!
//! Strictness is part of the format: [`check_request`] holds a request head to the rules of
//! RFC 9112 and to what nginx refuses (one `Host`, one `Content-Length`, `Transfer-Encoding`
//! only as `chunked`, only in HTTP/1.1 and never with a length, a request target of one of the
//! four forms), and the chunked decoder owns its grammar (§7.1) instead of borrowing a lenient
//! one. `conformance.rs` has a row per rule, named after its section.

mod chunked;
#[cfg(test)]
mod conformance;
mod framing;
mod head;
#[cfg(test)]
mod tests;
mod write;

pub use chunked::{ChunkedDecoder, Decoded, take_counted};
pub use framing::{
    Checked, RequestFraming, RequestVerdict, ResponseFraming, TargetForm, check_request, frame_request,
    keeps_alive,
};
pub use head::{RequestHead, ResponseHead, parse_request_head, parse_response_head};
pub use write::{
    ClientConnection, ClientFraming, LAST_CHUNK, Upstreamed, chunk_header, connection_fields, status_line,
    write_client_head, write_upstream_head,
};

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
    #[error("malformed chunked body")]
    Chunked,
}
