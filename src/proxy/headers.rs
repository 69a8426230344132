//! Header rewriting between the client and the upstream, as pure functions over `HeaderMap`s:
//! which host a request is for, hop-by-hop headers stripped in both directions (RFC 9110 §7.6.1),
//! the `X-Forwarded-*` family set, the upstream's `Host`, and the upstream URI with a standalone
//! proxy's path prefix joined in.
//!
//! The request path runs these for every request, so they avoid allocating unless a header they
//! rewrite is actually there.

use http::header::{
    CONNECTION, HOST, HeaderMap, HeaderName, HeaderValue, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use http::uri::{PathAndQuery, Uri};

use crate::routes::Upstream;

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// Hop-by-hop headers that are never forwarded, whatever `Connection` says (`Connection` first).
static HOP_BY_HOP: [HeaderName; 6] = [CONNECTION, KEEP_ALIVE, TE, TRAILER, TRANSFER_ENCODING, UPGRADE];

/// The host a request is for: the authority of an absolute-form URI (RFC 9112 §3.2.2: it
/// overrides `Host`), else the `Host` header. `None` when neither is there (or it is not text).
pub fn request_host(uri: &Uri, headers: &HeaderMap) -> Option<HeaderValue> {
    if let Some(authority) = uri.authority() {
        // Userinfo (`user@host`) is never part of the host we route or forward.
        let host = authority
            .as_str()
            .rsplit_once('@')
            .map_or(authority.as_str(), |(_, host)| host);
        return HeaderValue::from_str(host).ok();
    }
    let host = headers.get(HOST)?;
    host.to_str().ok().filter(|h| !h.is_empty())?;
    Some(host.clone())
}

/// The protocol a request asks to switch to, when it is an `Upgrade` request (`Connection`
/// lists `upgrade` and an `Upgrade` header names the protocol).
pub fn requested_upgrade(headers: &HeaderMap) -> Option<HeaderValue> {
    let protocol = headers.get(UPGRADE)?;
    connection_tokens(headers)
        .any(|token| token.eq_ignore_ascii_case("upgrade"))
        .then(|| protocol.clone())
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Removes the hop-by-hop headers: `Connection` and every header it names, `Keep-Alive`,
/// `Proxy-*`, `TE`, `Trailer`, `Transfer-Encoding` and `Upgrade` (callers put `Upgrade` back
/// when they tunnel).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names first, noting which are there: most requests carry none of
    // these, most responses only `Connection: keep-alive`, and a look at each name is cheaper
    // than a hashed removal of every hop-by-hop name.
    let (mut present, mut proxy_prefixed) = (0u8, false);
    for name in headers.keys() {
        match HOP_BY_HOP.iter().position(|hop| hop == name) {
            Some(index) => present |= 1 << index,
            None => proxy_prefixed |= name.as_str().starts_with("proxy-"),
        }
    }
    if present == 0 && !proxy_prefixed {
        return;
    }
    let listed = match present & 1 {
        0 => Vec::new(),
        _ => listed_in_connection(headers),
    };
    for (index, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << index) != 0 {
            headers.remove(name);
        }
    }
    if proxy_prefixed {
        let names: Vec<HeaderName> = headers
            .keys()
            .filter(|name| name.as_str().starts_with("proxy-"))
            .cloned()
            .collect();
        for name in names {
            headers.remove(name);
        }
    }
    for name in listed {
        headers.remove(name);
    }
}

/// The header names `Connection` lists beyond its usual options (`keep-alive`, `close`,
/// `upgrade`, whose headers go anyway): rare, so usually no allocation.
fn listed_in_connection(headers: &HeaderMap) -> Vec<HeaderName> {
    let mut listed = Vec::new();
    for token in connection_tokens(headers) {
        let usual = ["keep-alive", "close", "upgrade"]
            .iter()
            .any(|option| token.eq_ignore_ascii_case(option));
        if !usual && let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
            listed.push(name);
        }
    }
    listed
}

/// Sets `X-Forwarded-For` (the client's address appended to what came in), `X-Forwarded-Proto`
/// (the listener's scheme) and `X-Forwarded-Host` (the host the client asked for). Proto and
/// host are replaced, never trusted from the client: the proxy is the edge.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    client_ip: &HeaderValue,
    proto: &'static str,
    host: HeaderValue,
) {
    let forwarded_for = if headers.contains_key(&X_FORWARDED_FOR) {
        let mut chain = String::new();
        for value in headers.get_all(X_FORWARDED_FOR) {
            if let Ok(value) = value.to_str() {
                let value = value.trim();
                if !value.is_empty() {
                    chain.push_str(value);
                    chain.push_str(", ");
                }
            }
        }
        chain.push_str(client_ip.to_str().unwrap_or_default());
        HeaderValue::from_str(&chain).unwrap_or_else(|_| client_ip.clone())
    } else {
        client_ip.clone()
    };
    headers.insert(X_FORWARDED_FOR, forwarded_for);
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    headers.insert(X_FORWARDED_HOST, host);
}

/// The `Host` an upstream expects when the client's is not preserved: its authority, without
/// the scheme's default port (`example.com`, not `example.com:443`).
pub fn upstream_host(upstream: &Upstream) -> Option<HeaderValue> {
    let default_port = if upstream.scheme == "https" { ":443" } else { ":80" };
    let host = upstream
        .authority
        .strip_suffix(default_port)
        .unwrap_or(&upstream.authority);
    HeaderValue::from_str(host).ok()
}

/// The origin-form URI to send upstream: the upstream's path prefix joined to the request's
/// path with exactly one slash between them, and the request's query.
pub fn upstream_uri(upstream: &Upstream, request: &Uri) -> Option<Uri> {
    Some(Uri::from(join_path(
        &upstream.base_path,
        request.path_and_query(),
    )?))
}

fn join_path(base: &str, request: Option<&PathAndQuery>) -> Option<PathAndQuery> {
    let base = base.trim_end_matches('/');
    let (path, query) = match request {
        Some(pq) => (pq.path(), pq.query()),
        None => ("/", None),
    };
    if base.is_empty() {
        return match request {
            // The common case: forwarded as it came, without copying.
            Some(pq) if pq.as_str().starts_with('/') => Some(pq.clone()),
            _ => PathAndQuery::try_from(with_query("/", query).as_str()).ok(),
        };
    }
    let path = path.trim_start_matches('*');
    let joined = if path.starts_with('/') {
        format!("{base}{path}")
    } else {
        format!("{base}/{path}")
    };
    PathAndQuery::try_from(with_query(&joined, query).as_str()).ok()
}

fn with_query(path: &str, query: Option<&str>) -> String {
    match query {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(scheme: &str, authority: &str, base_path: &str) -> Upstream {
        Upstream {
            scheme: scheme.into(),
            authority: authority.into(),
            base_path: base_path.into(),
            preserve_host: false,
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn the_host_comes_from_an_absolute_uri_before_the_host_header() {
        let h = headers(&[("host", "routed.test")]);
        let absolute: Uri = "http://user@other.test:8000/x".parse().unwrap();
        assert_eq!(request_host(&absolute, &h).unwrap(), "other.test:8000");
        let origin: Uri = "/x".parse().unwrap();
        assert_eq!(request_host(&origin, &h).unwrap(), "routed.test");
        assert!(request_host(&origin, &HeaderMap::new()).is_none());
    }

    #[test]
    fn hop_by_hop_headers_and_the_ones_connection_names_are_stripped() {
        let mut h = headers(&[
            ("connection", "keep-alive, X-Secret"),
            ("connection", "close"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("accept", "text/html"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["accept"], "text/html");
    }

    #[test]
    fn an_upgrade_needs_both_the_connection_token_and_the_protocol() {
        let ws = headers(&[("connection", "keep-alive, Upgrade"), ("upgrade", "websocket")]);
        assert_eq!(requested_upgrade(&ws).unwrap(), "websocket");
        assert!(requested_upgrade(&headers(&[("upgrade", "websocket")])).is_none());
        assert!(requested_upgrade(&headers(&[("connection", "upgrade")])).is_none());
    }

    #[test]
    fn forwarded_for_appends_and_proto_and_host_are_replaced() {
        let mut h = headers(&[
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-for", "10.0.0.2"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.test"),
        ]);
        let ip = HeaderValue::from_static("127.0.0.1");
        set_forwarded(&mut h, &ip, "http", HeaderValue::from_static("app.test:8000"));
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 10.0.0.2, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "app.test:8000");
        let mut fresh = HeaderMap::new();
        set_forwarded(&mut fresh, &ip, "https", HeaderValue::from_static("app.test"));
        assert_eq!(fresh["x-forwarded-for"], "127.0.0.1");
    }

    #[test]
    fn the_upstream_host_drops_the_default_port_only() {
        assert_eq!(
            upstream_host(&upstream("https", "example.com:443", "")).unwrap(),
            "example.com"
        );
        assert_eq!(
            upstream_host(&upstream("http", "example.com:80", "")).unwrap(),
            "example.com"
        );
        assert_eq!(
            upstream_host(&upstream("http", "127.0.0.1:9000", "")).unwrap(),
            "127.0.0.1:9000"
        );
        assert_eq!(
            upstream_host(&upstream("https", "example.com:80", "")).unwrap(),
            "example.com:80"
        );
    }

    #[test]
    fn a_path_prefix_is_joined_with_one_slash_and_the_query_kept() {
        let uri = |u: &Upstream, r: &str| upstream_uri(u, &r.parse().unwrap()).unwrap().to_string();
        let plain = upstream("http", "127.0.0.1:9000", "");
        assert_eq!(uri(&plain, "/a/b?x=1"), "/a/b?x=1");
        assert_eq!(uri(&plain, "http://app.test/"), "/");
        assert_eq!(uri(&plain, "http://app.test?q"), "/?q");
        let prefixed = upstream("https", "example.com:443", "/api/v1");
        assert_eq!(uri(&prefixed, "/users?id=2"), "/api/v1/users?id=2");
        assert_eq!(uri(&prefixed, "/"), "/api/v1/");
        assert_eq!(uri(&prefixed, "http://app.test?q"), "/api/v1/?q");
        let trailing = upstream("http", "127.0.0.1:9000", "/api/");
        assert_eq!(uri(&trailing, "/x"), "/api/x");
    }
}
