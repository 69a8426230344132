//! Standalone proxies: user-created routes from a hostname to any HTTP(S) upstream, not tied to a
//! container. [`TargetUrl`] accepts only `http` and `https` URLs with a host, so the proxy can
//! never be pointed at `file:` or a bare path.

use chrono::{DateTime, Utc};

use super::ParseError;
use super::hostname::Hostname;

#[derive(Debug, Clone, PartialEq)]
pub struct StandaloneProxy {
    pub id: i64,
    pub name: String,
    pub hostname: Hostname,
    pub target_url: TargetUrl,
    /// Send the client's `Host` upstream instead of the target's.
    pub preserve_host: bool,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewProxy {
    pub name: String,
    pub hostname: Hostname,
    pub target_url: TargetUrl,
    pub preserve_host: bool,
    pub enabled: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProxyPatch {
    pub name: Option<String>,
    pub hostname: Option<Hostname>,
    pub target_url: Option<TargetUrl>,
    pub preserve_host: Option<bool>,
    pub enabled: Option<bool>,
}

/// An upstream URL: `http` or `https`, with a host, no credentials, no fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetUrl(url::Url);

impl TargetUrl {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let url =
            url::Url::parse(raw.trim()).map_err(|e| ParseError::new(format!("'{raw}' is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ParseError::new("only http:// and https:// targets are allowed"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(ParseError::new("the URL needs a host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ParseError::new("credentials in the URL are not allowed"));
        }
        if url.fragment().is_some() {
            return Err(ParseError::new(
                "a fragment (#...) has no meaning for an upstream",
            ));
        }
        Ok(Self(url))
    }

    pub fn as_url(&self) -> &url::Url {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl std::fmt::Display for TargetUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.as_str())
    }
}

/// Checks a proxy's display name: 1 to 100 characters, no control characters.
pub fn parse_proxy_name(raw: &str) -> Result<String, ParseError> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ParseError::new("must be 1 to 100 characters"));
    }
    if name.chars().any(char::is_control) {
        return Err(ParseError::new("must not contain control characters"));
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_and_https_targets_with_a_host_are_accepted() {
        assert!(TargetUrl::parse("http://127.0.0.1:9000/api").is_ok());
        assert!(TargetUrl::parse("https://example.com").is_ok());
        assert!(TargetUrl::parse("ftp://example.com").is_err());
        assert!(TargetUrl::parse("file:///etc/passwd").is_err());
        assert!(TargetUrl::parse("example.com").is_err());
        assert!(TargetUrl::parse("http://user:pw@example.com").is_err());
        assert!(TargetUrl::parse("").is_err());
    }

    #[test]
    fn proxy_names_are_trimmed_and_bounded() {
        assert_eq!(parse_proxy_name("  docs ").unwrap(), "docs");
        assert!(parse_proxy_name("").is_err());
        assert!(parse_proxy_name(&"x".repeat(101)).is_err());
    }
}
