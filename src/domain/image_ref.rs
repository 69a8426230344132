//! `ImageRef`, `Digest` and [`is_valid_tag`]: image references as users write them
//! (`nginx`, `ghcr.io/org/app:v2`, `127.0.0.1:5000/team/app@sha256:…`), parsed into their
//! canonical parts so that the registry client, Docker and the store all agree on which image
//! is meant.
//!
//! The grammar is Docker's (github.com/distribution/reference, `ParseNormalizedNamed`):
//! `[domain[:port]/]path[:tag][@digest]`. The first path component is a registry only if it
//! contains `.` or `:` or is `localhost`; otherwise the image is on Docker Hub (`docker.io`),
//! where a single-component name is an official image under `library/`. Two normalisations go
//! beyond that package, because a reference is an identity here (projects are compared and
//! looked up by it): the registry host is lower-cased (hosts are case-insensitive), and
//! `index.docker.io` becomes `docker.io` as in Docker. Repository names must be lowercase; they
//! are rejected rather than lower-cased, as Docker does, because on most registries a different
//! case is a different repository. Digests are restricted to the algorithms registries actually
//! serve (`sha256`, and `sha512`), in lowercase hex.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::domain::ParseError;

/// Docker Hub's canonical registry name, and the host its distribution API is served from.
const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_LEGACY: &str = "index.docker.io";
const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";
/// The namespace of Docker Hub's official images (`nginx` is `library/nginx`).
const OFFICIAL_NAMESPACE: &str = "library/";
/// The longest `registry/repository`, as in distribution/reference.
const MAX_NAME_LEN: usize = 255;
/// The longest tag.
const MAX_TAG_LEN: usize = 128;

/// Whether `tag` is a valid image tag: 1 to 128 characters of ASCII letters, digits, `_`, `.`
/// and `-`, not starting with `.` or `-` (`[\w][\w.-]{0,127}`).
pub fn is_valid_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    tag.len() <= MAX_TAG_LEN
        && (first.is_ascii_alphanumeric() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn check_tag(tag: &str) -> Result<(), ParseError> {
    if tag.is_empty() {
        return Err(ParseError::new("tag must not be empty"));
    }
    if tag.len() > MAX_TAG_LEN {
        return Err(ParseError::new(format!(
            "tag must be at most {MAX_TAG_LEN} characters long (got {})",
            tag.len()
        )));
    }
    if !is_valid_tag(tag) {
        return Err(ParseError::new(format!(
            "invalid tag \"{tag}\": a tag may contain only letters, digits, '_', '.' and '-', \
             and must not start with '.' or '-'"
        )));
    }
    Ok(())
}

/// A content digest, `sha256:<64 lowercase hex>` (or `sha512:<128 lowercase hex>`), as
/// registries return in `Docker-Content-Digest` and Docker pulls by.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

impl Digest {
    /// Parses a digest. Surrounding whitespace is ignored.
    pub fn parse(input: &str) -> Result<Self, ParseError> {
        let s = input.trim();
        let Some((algorithm, hex)) = s.split_once(':') else {
            return Err(ParseError::new(format!(
                "invalid digest \"{s}\": expected sha256:<64 hex digits>"
            )));
        };
        let expected_len = match algorithm {
            "sha256" => 64,
            "sha512" => 128,
            _ => {
                return Err(ParseError::new(format!(
                    "unsupported digest algorithm \"{algorithm}\": expected sha256"
                )));
            }
        };
        if hex.len() != expected_len || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(ParseError::new(format!(
                "invalid digest \"{s}\": {algorithm} needs exactly {expected_len} hex digits"
            )));
        }
        if hex.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(ParseError::new(format!(
                "invalid digest \"{s}\": hex digits must be lowercase"
            )));
        }
        Ok(Self(s.to_owned()))
    }

    /// The whole digest, `sha256:…`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The algorithm, `sha256` or `sha512`.
    pub fn algorithm(&self) -> &str {
        self.0.split_once(':').map_or("", |(algorithm, _)| algorithm)
    }

    /// The hex part after the algorithm.
    pub fn hex(&self) -> &str {
        self.0.split_once(':').map_or("", |(_, hex)| hex)
    }

    /// The first 12 hex digits, as Docker shows IDs: enough to tell digests apart in a UI.
    pub fn short(&self) -> &str {
        let hex = self.hex();
        // Hex digits are ASCII, so any byte index is a character boundary.
        &hex[..hex.len().min(12)]
    }
}

impl FromStr for Digest {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for Digest {
    type Error = ParseError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Digest> for String {
    fn from(digest: Digest) -> Self {
        digest.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A normalised image reference; see the module documentation.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ImageRef {
    /// `docker.io`, `ghcr.io`, `127.0.0.1:5000`: lower-cased, with the port if one was given.
    registry: String,
    /// `library/nginx`, `team/app`: lowercase path components joined by `/`.
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl ImageRef {
    /// Parses an image reference. Surrounding whitespace is ignored.
    pub fn parse(input: &str) -> Result<Self, ParseError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(ParseError::new(
                "image must not be empty; give a repository like nginx or ghcr.io/org/app",
            ));
        }
        if s.contains("://") {
            return Err(ParseError::new(
                "image must not include a scheme like https://; write registry/repository[:tag]",
            ));
        }
        if s.chars().any(char::is_whitespace) {
            return Err(ParseError::new("image must not contain spaces"));
        }

        let (rest, digest) = match s.split_once('@') {
            Some((rest, digest)) => (rest, Some(Digest::parse(digest)?)),
            None => (s, None),
        };
        // A ':' after the last '/' starts the tag; one before it belongs to a registry port.
        let after_last_slash = rest.rfind('/').map_or(0, |slash| slash + 1);
        let (name, tag) = match rest[after_last_slash..].rfind(':') {
            Some(colon) => {
                let colon = after_last_slash + colon;
                (&rest[..colon], Some(&rest[colon + 1..]))
            }
            None => (rest, None),
        };
        if let Some(tag) = tag {
            check_tag(tag)?;
        }
        if name.is_empty() {
            return Err(ParseError::new(
                "image needs a repository name, like nginx or ghcr.io/org/app",
            ));
        }
        if name.len() == 64 && name.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')) {
            return Err(ParseError::new(format!(
                "\"{name}\" looks like an image ID, not a repository name"
            )));
        }

        let (registry, remainder) = match name.split_once('/') {
            Some((first, remainder))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (parse_registry(first)?, remainder)
            }
            _ => (DOCKER_HUB.to_owned(), name),
        };
        // Checked before the `library/` prefix is added, so errors quote what the user wrote.
        check_repository(remainder)?;
        let repository = if registry == DOCKER_HUB && !remainder.contains('/') {
            format!("{OFFICIAL_NAMESPACE}{remainder}")
        } else {
            remainder.to_owned()
        };
        let name_len = registry.len() + 1 + repository.len();
        if name_len > MAX_NAME_LEN {
            return Err(ParseError::new(format!(
                "image name must be at most {MAX_NAME_LEN} characters long (got {name_len})"
            )));
        }

        Ok(Self {
            registry,
            repository,
            tag: tag.map(str::to_owned),
            digest,
        })
    }

    /// The registry: `docker.io`, `ghcr.io`, `127.0.0.1:5000`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository within the registry: `library/nginx`, `org/app`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&str> {
        self.digest.as_ref().map(Digest::as_str)
    }

    /// `registry/repository`, without tag or digest: `docker.io/library/nginx`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The host (and port) serving the registry's distribution API: Docker Hub's API is not
    /// on `docker.io` but on `registry-1.docker.io`; every other registry serves its own.
    pub fn registry_api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API_HOST
        } else {
            &self.registry
        }
    }

    /// Whether the registry is on this machine (`localhost`, `127.0.0.0/8`, `[::1]`, with any
    /// port); such registries are spoken to over plain HTTP by default (SPEC §3).
    pub fn is_loopback_registry(&self) -> bool {
        let host = match self.registry.strip_prefix('[') {
            Some(bracketed) => bracketed.split_once(']').map_or("", |(host, _)| host),
            None => self
                .registry
                .split_once(':')
                .map_or(self.registry.as_str(), |(host, _)| host),
        };
        host == "localhost"
            || host.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
            || host.parse::<Ipv6Addr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// This reference with `tag` as its tag (any digest is kept).
    pub fn with_tag(&self, tag: &str) -> Result<Self, ParseError> {
        check_tag(tag)?;
        Ok(Self {
            tag: Some(tag.to_owned()),
            ..self.clone()
        })
    }

    /// This reference pinned to `digest` (any tag is kept; Docker pulls by the digest).
    pub fn with_digest(&self, digest: &str) -> Result<Self, ParseError> {
        Ok(self.at_digest(&Digest::parse(digest)?))
    }

    /// This reference pinned to an already parsed digest (any tag is kept).
    pub fn at_digest(&self, digest: &Digest) -> Self {
        Self {
            digest: Some(digest.clone()),
            ..self.clone()
        }
    }

    /// This reference without tag and digest: the repository a project watches.
    pub fn repository_only(&self) -> Self {
        Self {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: None,
            digest: None,
        }
    }
}

/// Parses and normalises the registry part, `host[:port]`, where host is a DNS name, an IPv4
/// address or a bracketed IPv6 address.
fn parse_registry(input: &str) -> Result<String, ParseError> {
    let registry = input.to_ascii_lowercase();
    let invalid = |why: &str| ParseError::new(format!("invalid registry \"{input}\": {why}"));
    let (host, port) = if let Some(bracketed) = registry.strip_prefix('[') {
        let Some((address, after)) = bracketed.split_once(']') else {
            return Err(invalid("missing ']' after the IPv6 address"));
        };
        if address.parse::<Ipv6Addr>().is_err() {
            return Err(invalid("not a valid IPv6 address between '[' and ']'"));
        }
        let port = match after.strip_prefix(':') {
            Some(port) => Some(port),
            None if after.is_empty() => None,
            None => return Err(invalid("unexpected characters after ']'")),
        };
        (None, port)
    } else {
        match registry.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(registry.as_str()), None),
        }
    };
    if let Some(host) = host {
        if host.is_empty() {
            return Err(invalid("the host name is empty"));
        }
        let valid_label = |label: &str| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        };
        if host.len() > 253 || !host.split('.').all(valid_label) {
            return Err(invalid(
                "the host name may contain only letters, digits, '-' and '.', with each part \
                 between dots starting and ending with a letter or digit",
            ));
        }
    }
    if let Some(port) = port {
        let valid_port = !port.is_empty()
            && port.chars().all(|c| c.is_ascii_digit())
            && port.parse::<u16>().is_ok_and(|p| p > 0);
        if !valid_port {
            return Err(invalid("the port must be a number from 1 to 65535"));
        }
    }
    if registry == DOCKER_HUB_LEGACY {
        return Ok(DOCKER_HUB.to_owned());
    }
    Ok(registry)
}

/// Checks a repository path: lowercase components joined by `/`, each matching
/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`.
fn check_repository(repository: &str) -> Result<(), ParseError> {
    if repository.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(ParseError::new(format!(
            "repository name \"{repository}\" must be lowercase"
        )));
    }
    for component in repository.split('/') {
        if component.is_empty() {
            return Err(ParseError::new(format!(
                "repository name \"{repository}\" must not have empty parts (\"//\", or a '/' at \
                 the start or end)"
            )));
        }
        if !is_path_component(component) {
            return Err(ParseError::new(format!(
                "invalid repository name \"{repository}\": each part between slashes may contain \
                 only lowercase letters and digits, separated by '.', '_', '__' or '-', and must \
                 start and end with a letter or digit"
            )));
        }
    }
    Ok(())
}

fn is_path_component(component: &str) -> bool {
    let is_alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = component.as_bytes();
    let mut i = 0;
    loop {
        // An alphanumeric run, which must not be empty…
        let run_start = i;
        while i < bytes.len() && is_alnum(&bytes[i]) {
            i += 1;
        }
        if i == run_start {
            return false;
        }
        if i == bytes.len() {
            return true;
        }
        // …then a separator: '.', '_', '__' or one or more '-'.
        let separator_start = i;
        while i < bytes.len() && !is_alnum(&bytes[i]) {
            i += 1;
        }
        let separator = &component[separator_start..i];
        let valid = matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-');
        if !valid {
            return false;
        }
    }
}

impl FromStr for ImageRef {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for ImageRef {
    type Error = ParseError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<ImageRef> for String {
    fn from(image: ImageRef) -> Self {
        image.to_string()
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn image(input: &str) -> ImageRef {
        match ImageRef::parse(input) {
            Ok(i) => i,
            Err(e) => panic!("{input:?} should parse: {e}"),
        }
    }

    fn error_of(input: &str) -> String {
        match ImageRef::parse(input) {
            Ok(i) => panic!("{input:?} should be rejected, got {i}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_bare_name_is_an_official_docker_hub_image() {
        let i = image("nginx");
        assert_eq!(i.registry(), "docker.io");
        assert_eq!(i.repository(), "library/nginx");
        assert_eq!(i.tag(), None);
        assert_eq!(i.digest(), None);
        assert_eq!(i.name(), "docker.io/library/nginx");
        assert_eq!(i.to_string(), "docker.io/library/nginx");
    }

    #[test]
    fn a_two_part_name_without_a_domain_is_a_docker_hub_user_image() {
        let i = image("bitnami/redis:7.2");
        assert_eq!(i.registry(), "docker.io");
        assert_eq!(i.repository(), "bitnami/redis");
        assert_eq!(i.tag(), Some("7.2"));
    }

    #[test]
    fn spellings_of_docker_hub_normalise_to_the_same_reference() {
        let canonical = image("nginx:1.25");
        for other in [
            "docker.io/nginx:1.25",
            "docker.io/library/nginx:1.25",
            "index.docker.io/library/nginx:1.25",
            " library/nginx:1.25 ",
        ] {
            assert_eq!(image(other), canonical, "{other}");
        }
    }

    #[test]
    fn a_first_component_with_a_dot_or_port_or_localhost_is_a_registry() {
        let ghcr = image("ghcr.io/org/app:v2");
        assert_eq!((ghcr.registry(), ghcr.repository()), ("ghcr.io", "org/app"));

        let local = image("127.0.0.1:5000/team/app");
        assert_eq!(
            (local.registry(), local.repository()),
            ("127.0.0.1:5000", "team/app")
        );
        assert_eq!(local.tag(), None);

        let localhost = image("localhost/app");
        assert_eq!(
            (localhost.registry(), localhost.repository()),
            ("localhost", "app")
        );

        let with_port = image("myregistry:5000/app:1.0");
        assert_eq!(with_port.registry(), "myregistry:5000");
        assert_eq!(with_port.tag(), Some("1.0"));
    }

    #[test]
    fn a_single_component_registry_outside_docker_hub_gets_no_library_prefix() {
        assert_eq!(image("ghcr.io/app").repository(), "app");
    }

    #[test]
    fn the_registry_host_is_lower_cased_but_the_repository_must_already_be_lowercase() {
        assert_eq!(image("GHCR.io/org/app").registry(), "ghcr.io");
        assert_eq!(
            error_of("ghcr.io/Org/App"),
            "repository name \"Org/App\" must be lowercase"
        );
        assert_eq!(error_of("Nginx"), "repository name \"Nginx\" must be lowercase");
    }

    #[test]
    fn ipv6_registries_are_bracketed() {
        let i = image("[::1]:5000/app:dev");
        assert_eq!(i.registry(), "[::1]:5000");
        assert_eq!(i.repository(), "app");
        assert_eq!(i.tag(), Some("dev"));
        assert!(error_of("[zz]:5000/app").contains("IPv6"));
        assert!(error_of("[::1/app").contains("']'"));
    }

    #[test]
    fn tags_and_digests_are_split_off_and_kept() {
        let i = image(&format!("ghcr.io/org/app:v1.2@{SHA}"));
        assert_eq!(i.tag(), Some("v1.2"));
        assert_eq!(i.digest(), Some(SHA));
        assert_eq!(i.to_string(), format!("ghcr.io/org/app:v1.2@{SHA}"));

        let pinned = image(&format!("nginx@{SHA}"));
        assert_eq!(pinned.tag(), None);
        assert_eq!(pinned.to_string(), format!("docker.io/library/nginx@{SHA}"));
    }

    #[test]
    fn display_parses_back_to_the_same_reference() {
        for input in [
            "nginx",
            "localhost:5000/a/b/c:latest",
            &format!("ghcr.io/x/y:t@{SHA}"),
            "[::1]/app",
        ] {
            let i = image(input);
            assert_eq!(ImageRef::parse(&i.to_string()), Ok(i));
        }
    }

    #[test]
    fn path_components_follow_the_distribution_grammar() {
        for ok in ["a.b/c_d", "a__b", "a---b", "a-b.c_d__e", "0/1"] {
            assert!(ImageRef::parse(ok).is_ok(), "{ok} should parse");
        }
        for bad in ["a..b", "a___b", "_a", "a_", "a.-b", "a_-b", "-a", "app!", "a/-/b"] {
            assert!(
                error_of(bad).contains("each part between slashes"),
                "{bad} should fail the component rule"
            );
        }
    }

    #[test]
    fn empty_path_components_are_rejected() {
        assert!(error_of("ghcr.io/org//app").contains("empty parts"));
        assert!(error_of("org/app/").contains("empty parts"));
        assert!(error_of("ghcr.io/").contains("empty parts"));
    }

    #[test]
    fn invalid_tags_are_rejected_with_the_tag_rules() {
        assert_eq!(error_of("nginx:"), "tag must not be empty");
        assert!(error_of("nginx:.hidden").contains("must not start with '.' or '-'"));
        assert!(error_of("nginx:a+b").contains("invalid tag"));
        assert!(error_of(&format!("nginx:{}", "a".repeat(129))).contains("at most 128"));
        assert!(ImageRef::parse(&format!("nginx:{}", "a".repeat(128))).is_ok());
    }

    #[test]
    fn invalid_digests_are_rejected() {
        assert!(error_of("nginx@sha256:abc").contains("exactly 64 hex digits"));
        assert!(error_of("nginx@md5:abc").contains("unsupported digest algorithm"));
        assert!(error_of("nginx@").contains("invalid digest"));
        assert!(
            error_of(&format!("nginx@{}", SHA.to_uppercase().replace("SHA", "sha"))).contains("lowercase")
        );
        assert!(error_of(&format!("nginx@{SHA}@{SHA}")).contains("invalid digest"));
    }

    #[test]
    fn invalid_registries_are_named_in_the_error() {
        assert!(error_of("my_registry.io/app").contains("invalid registry \"my_registry.io\""));
        assert!(error_of("localhost:port/app").contains("port must be a number"));
        assert!(error_of("localhost:0/app").contains("port must be a number"));
        assert!(error_of("localhost:70000/app").contains("port must be a number"));
        assert!(error_of(":5000/app").contains("host name is empty"));
        assert!(error_of("-bad.io/app").contains("invalid registry"));
    }

    #[test]
    fn garbage_is_rejected_without_panicking() {
        for bad in [
            "",
            " ",
            ":",
            "@",
            "/",
            ":tag",
            "@sha256:",
            "a b",
            "https://ghcr.io/a",
            "é",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn a_64_hex_name_is_taken_for_an_image_id_and_rejected() {
        let id = &SHA["sha256:".len()..];
        assert!(error_of(id).contains("looks like an image ID"));
    }

    #[test]
    fn names_longer_than_255_characters_are_rejected() {
        let repo = "a".repeat(255 - "docker.io/".len());
        assert!(ImageRef::parse(&format!("x/{}", &repo[2..])).is_ok());
        assert!(error_of(&format!("x/{repo}")).contains("at most 255"));
    }

    #[test]
    fn docker_hub_is_reached_through_its_api_host() {
        assert_eq!(image("nginx").registry_api_host(), "registry-1.docker.io");
        assert_eq!(image("ghcr.io/a/b").registry_api_host(), "ghcr.io");
        assert_eq!(image("127.0.0.1:5000/a").registry_api_host(), "127.0.0.1:5000");
    }

    #[test]
    fn loopback_registries_are_recognised_with_any_port() {
        for local in [
            "localhost/a",
            "localhost:5000/a",
            "127.0.0.1:5000/a",
            "127.1.2.3/a",
            "[::1]/a",
            "[::1]:5000/a",
        ] {
            assert!(image(local).is_loopback_registry(), "{local}");
        }
        for remote in [
            "nginx",
            "ghcr.io/a",
            "10.0.0.1:5000/a",
            "localhost.example.com/a",
            "[::2]/a",
        ] {
            assert!(!image(remote).is_loopback_registry(), "{remote}");
        }
    }

    #[test]
    fn builders_set_tag_and_digest_and_repository_only_drops_both() {
        let base = image("ghcr.io/org/app:v1");
        let tagged = base.with_tag("v2").expect("valid tag");
        assert_eq!(tagged.to_string(), "ghcr.io/org/app:v2");
        let pinned = tagged.with_digest(SHA).expect("valid digest");
        assert_eq!(pinned.to_string(), format!("ghcr.io/org/app:v2@{SHA}"));
        assert_eq!(pinned.repository_only().to_string(), "ghcr.io/org/app");
        assert!(base.with_tag("bad tag").is_err());
        assert!(base.with_digest("sha256:nope").is_err());
        let digest = Digest::parse(SHA).expect("valid");
        assert_eq!(base.at_digest(&digest).digest(), Some(SHA));
    }

    #[test]
    fn is_valid_tag_follows_the_tag_grammar() {
        for ok in ["latest", "v1.2.3", "1.25-alpine", "_internal", "A_B-c.d", "0"] {
            assert!(is_valid_tag(ok), "{ok}");
        }
        for bad in ["", ".x", "-x", "a/b", "a:b", "a@b", "ü", &"a".repeat(129)] {
            assert!(!is_valid_tag(bad), "{bad}");
        }
    }

    #[test]
    fn digest_exposes_algorithm_hex_and_a_short_form() {
        let d = Digest::parse(SHA).expect("valid");
        assert_eq!(d.as_str(), SHA);
        assert_eq!(d.algorithm(), "sha256");
        assert_eq!(d.hex().len(), 64);
        assert_eq!(d.short(), "0123456789ab");
        let sha512 = format!("sha512:{}", "ab".repeat(64));
        assert!(Digest::parse(&sha512).is_ok());
        assert!(Digest::parse(&format!("sha512:{}", "ab".repeat(32))).is_err());
    }

    #[test]
    fn serde_uses_the_canonical_strings() {
        let i = image("nginx:1.25");
        assert_eq!(
            serde_json::to_string(&i).expect("serializes"),
            "\"docker.io/library/nginx:1.25\""
        );
        let back: ImageRef = serde_json::from_str("\"nginx:1.25\"").expect("deserializes");
        assert_eq!(back, i);
        assert!(serde_json::from_str::<ImageRef>("\"Nginx\"").is_err());

        let d = Digest::parse(SHA).expect("valid");
        assert_eq!(
            serde_json::to_string(&d).expect("serializes"),
            format!("\"{SHA}\"")
        );
        assert!(serde_json::from_str::<Digest>("\"sha256:x\"").is_err());
    }
}
