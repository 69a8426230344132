//! The small HTML pages the proxy answers itself with: unknown host (404), upstream refused or
//! broke off (502), upstream timed out (504), a request that cannot be routed (400, 405), and
//! the HTTP→HTTPS redirect (308). They are static text — nothing from the request is echoed, so
//! nothing a client sends can end up in the page.

use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue, LOCATION};
use http::{Response, StatusCode};

use super::body::ProxyBody;

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

fn page(status: StatusCode, html: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::page(html));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// No route serves this host.
pub fn not_found() -> Response<ProxyBody> {
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
pub fn bad_request() -> Response<ProxyBody> {
    page(
        StatusCode::BAD_REQUEST,
        page!(
            "400",
            "Bad Request",
            "The request does not name a host this proxy serves."
        ),
    )
}

/// `CONNECT`: this is a reverse proxy, never a forward one.
pub fn method_not_allowed() -> Response<ProxyBody> {
    let mut response = page(
        StatusCode::METHOD_NOT_ALLOWED,
        page!(
            "405",
            "Method Not Allowed",
            "This proxy does not open tunnels to other hosts."
        ),
    );
    response.headers_mut().insert(
        http::header::ALLOW,
        HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
    );
    response
}

/// The upstream refused the connection, could not be reached, or broke off the exchange.
pub fn bad_gateway() -> Response<ProxyBody> {
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
pub fn gateway_timeout() -> Response<ProxyBody> {
    page(
        StatusCode::GATEWAY_TIMEOUT,
        page!(
            "504",
            "Gateway Timeout",
            "The application behind this host did not answer in time."
        ),
    )
}

/// A permanent redirect that keeps the method (`308`), for HTTP→HTTPS.
pub fn redirect(location: HeaderValue) -> Response<ProxyBody> {
    let mut response = page(
        StatusCode::PERMANENT_REDIRECT,
        page!(
            "308",
            "Permanent Redirect",
            "This application is served over HTTPS."
        ),
    );
    response.headers_mut().insert(LOCATION, location);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_small_html_with_their_status() {
        let response = bad_gateway();
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(response.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
        let html = page!("502", "Bad Gateway", "x");
        assert!(html.starts_with("<!doctype html>"));
        assert!(html.contains("<title>502 Bad Gateway</title>"));
        assert!(html.len() < 512);
    }
}
