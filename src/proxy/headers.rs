//! Where a request goes, as pure functions over its target: the upstream's `Host` when the
//! client's is not preserved, and the target sent upstream with a standalone proxy's path
//! prefix joined in. The fields themselves are rewritten by [`super::codec`] as the head is
//! written out.
//!
//! The request path runs these for every request, so the common case — origin-form, no
//! prefix — borrows instead of allocating.

use std::borrow::Cow;

use crate::routes::Upstream;

/// The target's scheme and authority when it is in absolute form (`http://host:port/path`).
fn absolute_form(target: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = target.split_once("://")?;
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    {
        return None;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some(rest.split_at(end))
}

/// The path and query of a request target: an origin-form target as it is, the rest of an
/// absolute-form one, `/` for anything else (`*`).
pub fn path_and_query(target: &str) -> Cow<'_, str> {
    if target.starts_with('/') {
        return Cow::Borrowed(target);
    }
    match absolute_form(target) {
        Some((_, rest)) if rest.starts_with('/') => Cow::Borrowed(rest),
        Some((_, rest)) if rest.starts_with('?') => Cow::Owned(format!("/{rest}")),
        _ => Cow::Borrowed("/"),
    }
}

/// The `Host` an upstream expects when the client's is not preserved: its authority, without
/// the scheme's default port (`example.com`, not `example.com:443`).
pub fn upstream_host(upstream: &Upstream) -> &str {
    let default_port = if upstream.scheme == "https" { ":443" } else { ":80" };
    upstream
        .authority
        .strip_suffix(default_port)
        .unwrap_or(&upstream.authority)
}

/// The origin-form target to send upstream: the upstream's path prefix joined to the request's
/// path with exactly one slash between them, and the request's query.
pub fn upstream_target<'a>(upstream: &Upstream, target: &'a str) -> Cow<'a, str> {
    let request = path_and_query(target);
    let base = upstream.base_path.trim_end_matches('/');
    if base.is_empty() {
        return request;
    }
    let (path, query) = match request.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (request.as_ref(), None),
    };
    let mut joined = String::with_capacity(base.len() + request.len() + 1);
    joined.push_str(base);
    if !path.starts_with('/') {
        joined.push('/');
    }
    joined.push_str(path);
    if let Some(query) = query {
        joined.push('?');
        joined.push_str(query);
    }
    Cow::Owned(joined)
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
            underscores_in_headers: false,
        }
    }

    #[test]
    fn the_upstream_host_drops_the_default_port_only() {
        assert_eq!(
            upstream_host(&upstream("https", "example.com:443", "")),
            "example.com"
        );
        assert_eq!(
            upstream_host(&upstream("http", "example.com:80", "")),
            "example.com"
        );
        assert_eq!(
            upstream_host(&upstream("http", "127.0.0.1:9000", "")),
            "127.0.0.1:9000"
        );
        assert_eq!(
            upstream_host(&upstream("https", "example.com:80", "")),
            "example.com:80"
        );
    }

    #[test]
    fn a_path_prefix_is_joined_with_one_slash_and_the_query_kept() {
        let target = |u: &Upstream, r: &str| upstream_target(u, r).into_owned();
        let plain = upstream("http", "127.0.0.1:9000", "");
        assert_eq!(target(&plain, "/a/b?x=1"), "/a/b?x=1");
        assert!(matches!(upstream_target(&plain, "/a"), Cow::Borrowed(_)));
        assert_eq!(target(&plain, "http://app.test/"), "/");
        assert_eq!(target(&plain, "http://app.test"), "/");
        assert_eq!(target(&plain, "http://app.test?q"), "/?q");
        assert_eq!(target(&plain, "*"), "/");
        let prefixed = upstream("https", "example.com:443", "/api/v1");
        assert_eq!(target(&prefixed, "/users?id=2"), "/api/v1/users?id=2");
        assert_eq!(target(&prefixed, "/"), "/api/v1/");
        assert_eq!(target(&prefixed, "http://app.test?q"), "/api/v1/?q");
        let trailing = upstream("http", "127.0.0.1:9000", "/api/");
        assert_eq!(target(&trailing, "/x"), "/api/x");
    }
}
