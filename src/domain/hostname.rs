//! `Hostname`: a DNS name the reverse proxy routes on (a stage's `hostname`, a standalone
//! proxy's, the `base_domain` setting), and [`tag_slug`], which turns an image tag into the
//! first label of a per-tag instance's hostname.
//!
//! Hostnames follow RFC 1123: dot-separated labels of 1 to 63 characters of `a-z`, `0-9` and
//! `-`, not starting or ending with `-`, 253 characters in all. They are case-insensitive, so a
//! hostname is stored lower-cased and two spellings of the same name compare equal; a single
//! trailing dot (the fully-qualified spelling) is dropped for the same reason. Since users paste
//! URLs into hostname fields, a scheme, port or path gets its own error message rather than a
//! generic one. A leading `*.` wildcard label is accepted only by [`Hostname::parse_wildcard`],
//! for TLS certificate names: routes always match exact names.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::domain::ParseError;

/// The longest hostname, in characters, without a trailing dot (RFC 1035 §2.3.4).
const MAX_LEN: usize = 253;
/// The longest label.
const MAX_LABEL_LEN: usize = 63;

/// A lower-cased RFC 1123 hostname, possibly (only when made by
/// [`Hostname::parse_wildcard`]) starting with a `*.` wildcard label.
///
/// Serde goes through [`Hostname::parse`], so a deserialized hostname is never a wildcard.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Hostname(String);

impl Hostname {
    /// Parses an exact hostname. Surrounding whitespace is ignored, letters are lower-cased and
    /// one trailing dot is dropped. Wildcards are rejected.
    pub fn parse(input: &str) -> Result<Self, ParseError> {
        let host = normalize(input)?;
        if host.contains('*') {
            return Err(ParseError::new(
                "hostname must not contain a wildcard '*' here; give an exact hostname",
            ));
        }
        check_labels(&host)?;
        Ok(Self(host))
    }

    /// Parses an exact hostname or a wildcard one (`*.example.com`), as TLS certificate names
    /// allow: the wildcard must be the whole first label and stands for exactly one label.
    pub fn parse_wildcard(input: &str) -> Result<Self, ParseError> {
        let host = normalize(input)?;
        let rest = host.strip_prefix("*.").unwrap_or(&host);
        if rest.contains('*') {
            return Err(ParseError::new(
                "a wildcard '*' is only allowed as the whole first label, like *.example.com",
            ));
        }
        check_labels(rest)?;
        Ok(Self(host))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this hostname starts with a `*.` wildcard label.
    pub fn is_wildcard(&self) -> bool {
        self.0.starts_with("*.")
    }

    /// Whether `host` is this hostname or, for a wildcard, a name it covers: `*.example.com`
    /// covers `a.example.com` but neither `example.com` nor `a.b.example.com` (one label only,
    /// as in TLS).
    pub fn matches(&self, host: &Hostname) -> bool {
        match self.0.strip_prefix("*.") {
            None => self.0 == host.0,
            Some(suffix) => host
                .0
                .split_once('.')
                .is_some_and(|(first, rest)| first != "*" && rest == suffix),
        }
    }

    /// This hostname with one more label in front: `example.com` with `web` gives
    /// `web.example.com`. Used to build `{stage}.{project}.{base_domain}`; fails when `label`
    /// is not a valid label or the result would be too long.
    pub fn with_subdomain(&self, label: &str) -> Result<Hostname, ParseError> {
        if label.contains('.') {
            return Err(ParseError::new(format!(
                "\"{label}\" must be a single hostname label, without '.'"
            )));
        }
        Hostname::parse(&format!("{label}.{}", self.0))
    }
}

/// Trims, lower-cases, drops one trailing dot, and rejects the common ways a URL or an address
/// ends up where a bare hostname belongs, with a message that says which.
fn normalize(input: &str) -> Result<String, ParseError> {
    let trimmed = input.trim();
    if trimmed.contains("://") {
        return Err(ParseError::new(
            "hostname must not include a scheme like https://; give only the host name",
        ));
    }
    if trimmed.contains('/') {
        return Err(ParseError::new(
            "hostname must not include a path; give only the host name",
        ));
    }
    if trimmed.starts_with('[') || trimmed.matches(':').count() > 1 {
        return Err(ParseError::new(
            "hostname must be a DNS name; IPv6 addresses are not supported here",
        ));
    }
    if trimmed.contains(':') {
        return Err(ParseError::new(
            "hostname must not include a port; give only the host name",
        ));
    }
    if trimmed.contains('@') {
        return Err(ParseError::new(
            "hostname must not include a user name; give only the host name",
        ));
    }
    let host = trimmed.strip_suffix('.').unwrap_or(trimmed);
    if host.is_empty() {
        return Err(ParseError::new("hostname must not be empty"));
    }
    if !host.is_ascii() {
        return Err(ParseError::new(
            "hostname must be ASCII; write internationalized names in their xn-- (punycode) form",
        ));
    }
    let host = host.to_ascii_lowercase();
    if host.len() > MAX_LEN {
        return Err(ParseError::new(format!(
            "hostname must be at most {MAX_LEN} characters long (got {})",
            host.len()
        )));
    }
    Ok(host)
}

/// Checks every label of a lower-cased, non-empty ASCII hostname (without any wildcard).
fn check_labels(host: &str) -> Result<(), ParseError> {
    for label in host.split('.') {
        if label.is_empty() {
            return Err(ParseError::new(
                "hostname must not contain an empty label (two dots in a row, or a leading dot)",
            ));
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(ParseError::new(format!(
                "each part of a hostname between dots must be at most {MAX_LABEL_LEN} characters \
                 long; \"{label}\" has {}",
                label.len()
            )));
        }
        if label.contains('_') {
            return Err(ParseError::new("hostname must not contain '_'; use '-' instead"));
        }
        if let Some(bad) = label
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(ParseError::new(format!(
                "hostname may contain only letters, digits, '-' and '.', not {bad:?}"
            )));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(ParseError::new(format!(
                "each part of a hostname between dots must start and end with a letter or digit; \
                 \"{label}\" does not"
            )));
        }
    }
    Ok(())
}

/// Turns an image tag into a DNS label for a per-tag instance's hostname
/// (`{tag-slug}.{stage}.{project}.{base_domain}`, SPEC §2): lower-cased, every character
/// outside `[a-z0-9-]` replaced by `-`, leading `-` trimmed, cut to 63 characters, trailing `-`
/// trimmed.
///
/// The trimming goes beyond the SPEC's wording because a label may neither start nor end with
/// `-`, and the slug must always make a valid hostname. A tag made only of replaced characters
/// (`__` is a valid tag) would leave nothing, and a label cannot be empty, so such a tag gets
/// the placeholder `x`. Different tags can share a slug (`v1.2` and `v1-2`); the store's
/// hostname uniqueness check reports that as a conflict rather than this function guessing.
pub fn tag_slug(tag: &str) -> String {
    let mapped: String = tag
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    // Every char of `mapped` is ASCII, so byte positions are char positions.
    let start_trimmed = mapped.trim_start_matches('-');
    let cut = &start_trimmed[..start_trimmed.len().min(MAX_LABEL_LEN)];
    let slug = cut.trim_end_matches('-');
    if slug.is_empty() {
        "x".to_owned()
    } else {
        slug.to_owned()
    }
}

impl FromStr for Hostname {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for Hostname {
    type Error = ParseError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Hostname> for String {
    fn from(host: Hostname) -> Self {
        host.0
    }
}

impl AsRef<str> for Hostname {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(input: &str) -> Hostname {
        match Hostname::parse(input) {
            Ok(h) => h,
            Err(e) => panic!("{input:?} should parse: {e}"),
        }
    }

    fn error_of(input: &str) -> String {
        match Hostname::parse(input) {
            Ok(h) => panic!("{input:?} should be rejected, got {h:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn ordinary_hostnames_are_accepted() {
        for ok in [
            "example.com",
            "a.b.c.example.co.uk",
            "localhost",
            "web-1.staging.example.com",
            "127.0.0.1",
            "xn--bcher-kva.example",
            "1.example",
        ] {
            assert_eq!(host(ok).as_str(), ok);
        }
    }

    #[test]
    fn hostnames_are_lower_cased_and_trimmed() {
        assert_eq!(host("  App.Example.COM \t").as_str(), "app.example.com");
        assert_eq!(host("App.Example.com"), host("app.example.com"));
    }

    #[test]
    fn a_single_trailing_dot_is_dropped_but_two_are_not() {
        assert_eq!(host("example.com.").as_str(), "example.com");
        assert!(error_of("example.com..").contains("empty label"));
    }

    #[test]
    fn empty_input_and_empty_labels_are_rejected() {
        assert_eq!(error_of(""), "hostname must not be empty");
        assert_eq!(error_of("."), "hostname must not be empty");
        assert!(error_of(".example.com").contains("empty label"));
        assert!(error_of("a..b").contains("empty label"));
    }

    #[test]
    fn urls_pasted_into_the_field_get_specific_messages() {
        assert!(error_of("https://example.com").contains("scheme"));
        assert!(error_of("example.com:8080").contains("port"));
        assert!(error_of("example.com/path").contains("path"));
        assert!(error_of("user@example.com").contains("user name"));
        assert!(error_of("[::1]").contains("IPv6"));
    }

    #[test]
    fn underscores_and_other_characters_are_rejected() {
        assert!(error_of("my_app.example.com").contains("'_'"));
        assert!(error_of("my app.example.com").contains("' '"));
        assert!(error_of("bücher.example").contains("punycode"));
    }

    #[test]
    fn labels_must_not_start_or_end_with_a_hyphen() {
        assert!(error_of("-web.example.com").contains("\"-web\""));
        assert!(error_of("web-.example.com").contains("\"web-\""));
    }

    #[test]
    fn label_and_total_lengths_are_limited() {
        let label63 = "a".repeat(63);
        assert!(Hostname::parse(&format!("{label63}.com")).is_ok());
        assert!(error_of(&format!("{}.com", "a".repeat(64))).contains("at most 63"));

        // 4 labels of 63 plus 3 dots is 255; trim to exactly 253 and one more.
        let long = [label63.as_str(); 4].join(".");
        assert!(Hostname::parse(&long[..253]).is_ok());
        assert!(error_of(&long[..254]).contains("at most 253"));
    }

    #[test]
    fn plain_parse_rejects_wildcards() {
        assert!(error_of("*.example.com").contains("wildcard"));
        assert!(error_of("a*.example.com").contains("wildcard"));
    }

    #[test]
    fn parse_wildcard_accepts_a_leading_star_label_and_exact_names() {
        let wildcard = Hostname::parse_wildcard("*.Example.com").expect("valid wildcard");
        assert_eq!(wildcard.as_str(), "*.example.com");
        assert!(wildcard.is_wildcard());
        let exact = Hostname::parse_wildcard("example.com").expect("valid exact name");
        assert!(!exact.is_wildcard());
    }

    #[test]
    fn parse_wildcard_rejects_stars_anywhere_but_the_whole_first_label() {
        for bad in ["a.*.example.com", "a*.example.com", "*", "*.", "*.*.example.com"] {
            assert!(
                Hostname::parse_wildcard(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn a_wildcard_matches_exactly_one_extra_label() {
        let wildcard = Hostname::parse_wildcard("*.example.com").expect("valid");
        assert!(wildcard.matches(&host("a.example.com")));
        assert!(!wildcard.matches(&host("example.com")));
        assert!(!wildcard.matches(&host("a.b.example.com")));
        assert!(!wildcard.matches(&host("a.example.org")));
        assert!(host("example.com").matches(&host("EXAMPLE.com")));
    }

    #[test]
    fn with_subdomain_prepends_a_validated_label() {
        let base = host("example.com");
        assert_eq!(
            base.with_subdomain("web").map(|h| h.to_string()),
            Ok("web.example.com".to_owned())
        );
        assert!(base.with_subdomain("a.b").is_err());
        assert!(base.with_subdomain("").is_err());
        assert!(base.with_subdomain("-x").is_err());
        assert!(base.with_subdomain(&"a".repeat(64)).is_err());
    }

    #[test]
    fn serde_uses_the_canonical_string_and_validates_on_the_way_in() {
        let h = host("Example.com");
        assert_eq!(serde_json::to_string(&h).expect("serializes"), "\"example.com\"");
        let back: Hostname = serde_json::from_str("\"EXAMPLE.com\"").expect("deserializes");
        assert_eq!(back, h);
        assert!(serde_json::from_str::<Hostname>("\"*.example.com\"").is_err());
    }

    #[test]
    fn tag_slug_lower_cases_and_replaces_other_characters_with_hyphens() {
        assert_eq!(tag_slug("PR-12"), "pr-12");
        assert_eq!(tag_slug("v1.2.3"), "v1-2-3");
        assert_eq!(tag_slug("feature_Login.page"), "feature-login-page");
    }

    #[test]
    fn tag_slug_trims_hyphens_so_the_result_is_a_valid_label() {
        assert_eq!(tag_slug("_build_"), "build");
        assert_eq!(tag_slug("1.0-"), "1-0");
    }

    #[test]
    fn tag_slug_cuts_long_tags_to_63_characters() {
        let tag = "a".repeat(128);
        assert_eq!(tag_slug(&tag), "a".repeat(63));
        // A cut that lands just after a replaced character leaves no trailing hyphen.
        let tag = format!("{}.b", "a".repeat(62));
        assert_eq!(tag_slug(&tag), "a".repeat(62));
    }

    #[test]
    fn tag_slug_of_a_tag_with_nothing_usable_is_a_placeholder() {
        assert_eq!(tag_slug("__"), "x");
        assert_eq!(tag_slug(""), "x");
        assert_eq!(tag_slug("ü"), "x");
    }

    #[test]
    fn every_tag_slug_is_a_valid_hostname_label() {
        for tag in ["latest", "__", "V1.2-RC_3", "ü-ö", &"x.".repeat(80), "-a-", "9"] {
            let slug = tag_slug(tag);
            assert!(
                Hostname::parse(&format!("{slug}.example.com")).is_ok(),
                "slug {slug:?} of {tag:?} is not a valid label"
            );
        }
    }
}
