//! The small HTML pages the proxy answers itself with: unknown host (404), upstream refused or
//! broke off (502), upstream timed out (504), a request that cannot be read or routed (400,
//! 405, 431, 501), a request body too slow to arrive (408), and the HTTP→HTTPS redirect (308). They are static text — nothing from the request is echoed, so
//! nothing a client sends can end up in the page.

use http::StatusCode;

use super::codec::{ClientConnection, connection_fields, status_line};

macro_rules! page {
    ($code:literal, $reason:literal, $message:literal) => {
        concat!(
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>",
            $code,
            " ",
            $reason,
            "</title></head>\n<body><h1>",
            $code,
            " ",
            $reason,
            "</h1><p>",
            $message,
            "</p><hr><p>docker-watcher</p></body></html>\n"
        )
    };
}

/// A page the proxy answers with: its status, its HTML, and a field it needs (`Location`,
/// `Allow`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub status: StatusCode,
    html: &'static str,
    field: Option<(&'static str, String)>,
}

impl Page {
    /// Writes the whole response; without the body for a `HEAD` request.
    pub fn write(&self, out: &mut Vec<u8>, head_only: bool, connection: ClientConnection<'_>) {
        status_line(out, self.status, b"");
        out.extend_from_slice(
            b"content-type: text/html; charset=utf-8\r\ncache-control: no-store\r\ncontent-length: ",
        );
        out.extend_from_slice(self.html.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        if let Some((name, value)) = &self.field {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        connection_fields(out, connection);
        out.extend_from_slice(b"\r\n");
        if !head_only {
            out.extend_from_slice(self.html.as_bytes());
        }
    }
}

fn page(status: StatusCode, html: &'static str) -> Page {
    Page {
        status,
        html,
        field: None,
    }
}

/// No route serves this host.
pub fn not_found() -> Page {
    page(
        StatusCode::NOT_FOUND,
        page!(
            "404",
            "Not Found",
            "No application is served under this host name."
        ),
    )
}

/// The request names no host (or one that is not text).
pub fn bad_request() -> Page {
    page(
        StatusCode::BAD_REQUEST,
        page!(
            "400",
            "Bad Request",
            "The request does not name a host this proxy serves."
        ),
    )
}

/// The request could not be read as HTTP/1.1.
pub fn malformed() -> Page {
    page(
        StatusCode::BAD_REQUEST,
        page!("400", "Bad Request", "The request could not be read."),
    )
}

/// The request line and fields are larger than the proxy accepts.
pub fn header_too_large() -> Page {
    page(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        page!(
            "431",
            "Request Header Fields Too Large",
            "The request's header fields are larger than this proxy accepts."
        ),
    )
}

/// `CONNECT`: this is a reverse proxy, never a forward one.
pub fn method_not_allowed() -> Page {
    let mut page = page(
        StatusCode::METHOD_NOT_ALLOWED,
        page!(
            "405",
            "Method Not Allowed",
            "This proxy does not open tunnels to other hosts."
        ),
    );
    page.field = Some(("allow", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS".into()));
    page
}

/// The client was too slow sending its request body.
pub fn request_timeout() -> Page {
    page(
        StatusCode::REQUEST_TIMEOUT,
        page!(
            "408",
            "Request Timeout",
            "The request body did not arrive in time."
        ),
    )
}

/// The request uses a transfer coding the proxy cannot decode (RFC 9112 §6.1).
pub fn not_implemented() -> Page {
    page(
        StatusCode::NOT_IMPLEMENTED,
        page!(
            "501",
            "Not Implemented",
            "The request's transfer coding is not supported."
        ),
    )
}

/// The page for a request refused before routing, by its status.
pub fn refused(status: StatusCode) -> Page {
    match status {
        StatusCode::METHOD_NOT_ALLOWED => method_not_allowed(),
        StatusCode::NOT_IMPLEMENTED => not_implemented(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => header_too_large(),
        _ => malformed(),
    }
}

/// The upstream refused the connection, could not be reached, or broke off the exchange.
pub fn bad_gateway() -> Page {
    page(
        StatusCode::BAD_GATEWAY,
        page!(
            "502",
            "Bad Gateway",
            "The application behind this host could not be reached."
        ),
    )
}

/// The upstream did not answer in time.
pub fn gateway_timeout() -> Page {
    page(
        StatusCode::GATEWAY_TIMEOUT,
        page!(
            "504",
            "Gateway Timeout",
            "The application behind this host did not answer in time."
        ),
    )
}

/// A request held while its stage's instance was replaced waited too long (or too many
/// waited): try again in `retry_after` seconds.
pub fn held_too_long(retry_after: u64) -> Page {
    let mut page = page(
        StatusCode::SERVICE_UNAVAILABLE,
        page!(
            "503",
            "Service Unavailable",
            "The application is being replaced and did not come back in time. Try again shortly."
        ),
    );
    page.field = Some(("retry-after", retry_after.to_string()));
    page
}

/// A permanent redirect that keeps the method (`308`), for HTTP→HTTPS.
pub fn redirect(location: String) -> Page {
    let mut page = page(
        StatusCode::PERMANENT_REDIRECT,
        page!(
            "308",
            "Permanent Redirect",
            "This application is served over HTTPS."
        ),
    );
    page.field = Some(("location", location));
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_small_html_with_their_status() {
        let page = bad_gateway();
        assert_eq!(page.status, StatusCode::BAD_GATEWAY);
        let mut out = Vec::new();
        page.write(&mut out, false, ClientConnection::Close);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/html; charset=utf-8\r\n"),
            "{text}"
        );
        assert!(
            text.contains("\r\nconnection: close\r\n\r\n<!doctype html>"),
            "{text}"
        );
        let mut head = Vec::new();
        redirect("https://a.test/".into()).write(&mut head, true, ClientConnection::KeepAlive);
        let head = String::from_utf8(head).unwrap();
        assert!(
            head.contains("location: https://a.test/\r\n") && head.ends_with("\r\n\r\n"),
            "{head}"
        );
        let html = page!("502", "Bad Gateway", "x");
        assert!(html.starts_with("<!doctype html>"));
        assert!(html.contains("<title>502 Bad Gateway</title>"));
        assert!(html.len() < 512);
    }
}
