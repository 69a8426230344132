//! Registry webhook payloads, read into the pushes they announce, and the rule that matches a
//! push to a project. Two formats are understood (SPEC §3, "Webhooks"):
//!
//! - the CNCF distribution notification envelope (`application/vnd.docker.distribution.events.v1+json`),
//!   `{"events": [{"action": "push", "target": {"repository", "tag", "digest", …},
//!   "request": {"host", …}, …}]}` — only pushes that carry a tag count; pulls, blob uploads
//!   and mounts (which have none) are ignored;
//! - Docker Hub's push payload, `{"push_data": {"tag"}, "repository": {"repo_name"}}`, whose
//!   repository lives on `docker.io` (`nginx` being `library/nginx`);
//! - Harbor's webhook payload (its *Default* format), `{"type": "PUSH_ARTIFACT", "event_data":
//!   {"resources": [{"tag", "digest", "resource_url"}], "repository": {"repo_full_name"}}}` —
//!   the registry host is read from `resource_url` (`harbor.example.com/library/app:v1`); other
//!   event types (pulls, deletes, scans) announce no push.
//!
//! Parsing is strict about the fields it uses and silent about the rest, and a payload that
//! does not read names the field ([`PayloadError::field`], `events[0].target.repository`), so
//! whoever configures the registry sees what is wrong. No HTTP here: the web layer hands the body
//! over and answers.

use serde_json::{Map, Value};

use crate::domain::image_ref::{Digest, ImageRef, is_valid_tag};

/// Docker Hub's canonical registry name.
const DOCKER_HUB: &str = "docker.io";

/// One pushed tag announced by a webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// The registry host the push went to, when the payload says (`127.0.0.1:5000`).
    pub registry: Option<String>,
    /// The repository path inside the registry (`team/app`, `library/nginx`).
    pub repository: String,
    pub tag: String,
    /// The manifest digest pushed under the tag, when the payload says (distribution does,
    /// Docker Hub does not).
    pub digest: Option<Digest>,
}

/// Why a payload could not be read: the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct PayloadError {
    pub field: String,
    pub message: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> PayloadError {
    PayloadError {
        field: field.into(),
        message: message.into(),
    }
}

/// Reads a webhook body into the pushes it announces (possibly none).
pub fn parse_payload(body: &[u8]) -> Result<Vec<Push>, PayloadError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| invalid("body", format!("the body is not valid JSON: {e}")))?;
    let Value::Object(root) = value else {
        return Err(invalid("body", "expected a JSON object"));
    };
    if let Some(events) = root.get("events") {
        return parse_envelope(events);
    }
    if root.contains_key("event_data") {
        return parse_harbor(&root);
    }
    if root.contains_key("push_data") || root.contains_key("repository") {
        return parse_docker_hub(&root).map(|push| vec![push]);
    }
    Err(invalid(
        "events",
        "expected a distribution notification envelope ({\"events\": [...]}), a Docker Hub \
         push payload ({\"push_data\": ..., \"repository\": ...}) or a Harbor payload \
         ({\"type\": ..., \"event_data\": ...})",
    ))
}

/// Harbor's event types that announce a pushed tag: 2.x's, and 1.x's name for the same.
const HARBOR_PUSH_TYPES: [&str; 2] = ["PUSH_ARTIFACT", "pushImage"];

fn parse_harbor(root: &Map<String, Value>) -> Result<Vec<Push>, PayloadError> {
    let kind = required_str(root, "type", "")?;
    if !HARBOR_PUSH_TYPES.contains(&kind) {
        return Ok(Vec::new());
    }
    let data = object(root, "event_data", "")?.ok_or_else(|| invalid("event_data", "is required"))?;
    let repository = object(data, "repository", "event_data")?
        .ok_or_else(|| invalid("event_data.repository", "is required"))?;
    let repository = checked_repository(
        required_str(repository, "repo_full_name", "event_data.repository")?,
        "event_data.repository.repo_full_name",
    )?;
    let Some(Value::Array(resources)) = data.get("resources") else {
        return Err(invalid("event_data.resources", "must be an array"));
    };
    let mut pushes = Vec::new();
    for (i, resource) in resources.iter().enumerate() {
        let at = format!("event_data.resources[{i}]");
        let Value::Object(resource) = resource else {
            return Err(invalid(at, "must be an object"));
        };
        let Some(tag) = optional_str(resource, "tag", &at)?.filter(|tag| !tag.is_empty()) else {
            // An artifact pushed by digest only.
            continue;
        };
        let tag = checked_tag(tag, &format!("{at}.tag"))?;
        let digest = optional_str(resource, "digest", &at)?
            .map(|digest| Digest::parse(digest).map_err(|e| invalid(format!("{at}.digest"), e.to_string())))
            .transpose()?;
        // `harbor.example.com/library/app:v1`, sometimes with a scheme.
        let registry = optional_str(resource, "resource_url", &at)?.and_then(|url| {
            let rest = url
                .strip_prefix("https://")
                .or_else(|| url.strip_prefix("http://"))
                .unwrap_or(url);
            rest.split_once('/')
                .map(|(host, _)| host.to_owned())
                .filter(|host| !host.is_empty())
        });
        pushes.push(Push {
            registry,
            repository: repository.clone(),
            tag,
            digest,
        });
    }
    Ok(pushes)
}

fn parse_envelope(events: &Value) -> Result<Vec<Push>, PayloadError> {
    let Value::Array(events) = events else {
        return Err(invalid("events", "must be an array"));
    };
    let mut pushes = Vec::new();
    for (i, event) in events.iter().enumerate() {
        let at = format!("events[{i}]");
        let Value::Object(event) = event else {
            return Err(invalid(at, "must be an object"));
        };
        let action = required_str(event, "action", &at)?;
        if action != "push" {
            continue;
        }
        let target_at = format!("{at}.target");
        let target = object(event, "target", &at)?.ok_or_else(|| invalid(&target_at, "is required"))?;
        let Some(tag) = optional_str(target, "tag", &target_at)? else {
            // A blob upload or a push by digest: nothing a tag policy can follow.
            continue;
        };
        let tag = checked_tag(tag, &format!("{target_at}.tag"))?;
        let repository = checked_repository(
            required_str(target, "repository", &target_at)?,
            &format!("{target_at}.repository"),
        )?;
        let digest = optional_str(target, "digest", &target_at)?
            .map(|digest| {
                Digest::parse(digest).map_err(|e| invalid(format!("{target_at}.digest"), e.to_string()))
            })
            .transpose()?;
        let registry = match object(event, "request", &at)? {
            Some(request) => optional_str(request, "host", &format!("{at}.request"))?
                .filter(|host| !host.is_empty())
                .map(str::to_owned),
            None => None,
        };
        let registry = match registry {
            Some(host) => Some(host),
            None => optional_str(target, "url", &target_at)?.and_then(host_of_url),
        };
        pushes.push(Push {
            registry,
            repository,
            tag,
            digest,
        });
    }
    Ok(pushes)
}

fn parse_docker_hub(root: &Map<String, Value>) -> Result<Push, PayloadError> {
    let push_data = object(root, "push_data", "")?.ok_or_else(|| invalid("push_data", "is required"))?;
    let repository = object(root, "repository", "")?.ok_or_else(|| invalid("repository", "is required"))?;
    let tag = checked_tag(required_str(push_data, "tag", "push_data")?, "push_data.tag")?;
    let name = required_str(repository, "repo_name", "repository")?;
    // Official images are named without their namespace.
    let name = if name.contains('/') {
        name.to_owned()
    } else {
        format!("library/{name}")
    };
    Ok(Push {
        registry: Some(DOCKER_HUB.to_owned()),
        repository: checked_repository(&name, "repository.repo_name")?,
        tag,
        digest: None,
    })
}

fn path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

fn object<'a>(
    parent: &'a Map<String, Value>,
    key: &str,
    at: &str,
) -> Result<Option<&'a Map<String, Value>>, PayloadError> {
    match parent.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map)),
        Some(_) => Err(invalid(path(at, key), "must be an object")),
    }
}

fn optional_str<'a>(
    parent: &'a Map<String, Value>,
    key: &str,
    at: &str,
) -> Result<Option<&'a str>, PayloadError> {
    match parent.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(path(at, key), "must be a string")),
    }
}

fn required_str<'a>(parent: &'a Map<String, Value>, key: &str, at: &str) -> Result<&'a str, PayloadError> {
    optional_str(parent, key, at)?.ok_or_else(|| invalid(path(at, key), "is required"))
}

fn checked_tag(tag: &str, field: &str) -> Result<String, PayloadError> {
    if is_valid_tag(tag) {
        Ok(tag.to_owned())
    } else {
        Err(invalid(field, format!("\"{tag}\" is not a valid image tag")))
    }
}

/// Checks a repository path with the image-reference grammar (lowercase components joined by
/// `/`), by reading it under a placeholder registry.
fn checked_repository(repository: &str, field: &str) -> Result<String, PayloadError> {
    let parsed = ImageRef::parse(&format!("localhost/{repository}"))
        .ok()
        .filter(|image| image.tag().is_none() && image.digest().is_none());
    match parsed {
        Some(image) if image.repository() == repository => Ok(repository.to_owned()),
        _ => Err(invalid(
            field,
            format!("\"{repository}\" is not a valid repository name"),
        )),
    }
}

/// The `host[:port]` of an `http(s)://host[:port]/…` URL.
fn host_of_url(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let host = rest.split('/').next()?;
    (!host.is_empty()).then(|| host.to_owned())
}

/// Whether a push is to a project's repository: the same repository path, and — when the push
/// names its registry — the same registry. Registry names compare without case, Docker Hub's
/// aliases are one registry, and loopback names (`localhost`, `127.0.0.1`, `[::1]`) with the
/// same port are one registry, because a registry reports the host its client dialled.
pub fn push_matches(image: &ImageRef, push: &Push) -> bool {
    if image.repository() != push.repository {
        return false;
    }
    match &push.registry {
        None => true,
        Some(host) => same_registry(image.registry(), host),
    }
}

fn same_registry(a: &str, b: &str) -> bool {
    let (a, b) = (canonical_registry(a), canonical_registry(b));
    if a == b {
        return true;
    }
    let (a_host, a_port) = split_port(&a);
    let (b_host, b_port) = split_port(&b);
    a_port == b_port && is_loopback(a_host) && is_loopback(b_host)
}

fn canonical_registry(host: &str) -> String {
    let host = host.trim().to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => DOCKER_HUB.to_owned(),
        _ => host,
    }
}

/// `host` and `port` of `host[:port]` (IPv6 hosts in brackets).
fn split_port(registry: &str) -> (&str, Option<&str>) {
    if let Some(rest) = registry.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((host, after)) => (host, after.strip_prefix(':')),
            None => (registry, None),
        };
    }
    match registry.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (registry, None),
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(value: Value) -> Result<Vec<Push>, PayloadError> {
        parse_payload(value.to_string().as_bytes())
    }

    fn field_of(value: Value) -> String {
        match parse(value) {
            Ok(pushes) => panic!("expected an error, got {pushes:?}"),
            Err(e) => e.field,
        }
    }

    fn push(registry: Option<&str>, repository: &str, tag: &str) -> Push {
        Push {
            registry: registry.map(str::to_owned),
            repository: repository.to_owned(),
            tag: tag.to_owned(),
            digest: None,
        }
    }

    fn sha(n: u8) -> String {
        format!("sha256:{}", format!("{n:02x}").repeat(32))
    }

    fn image(s: &str) -> ImageRef {
        ImageRef::parse(s).expect("a valid image")
    }

    /// An envelope as distribution 2.8 sends it for `docker push 127.0.0.1:5000/team/app:v2`.
    fn distribution_envelope() -> Value {
        json!({"events": [
            {
                "id": "1", "timestamp": "2026-03-01T12:00:00Z", "action": "push",
                "target": {
                    "mediaType": "application/octet-stream", "size": 10,
                    "digest": "sha256:aa", "length": 10, "repository": "team/app",
                    "url": "http://127.0.0.1:5000/v2/team/app/blobs/sha256:aa"
                },
                "request": {"id": "r1", "addr": "127.0.0.1:4242", "host": "127.0.0.1:5000",
                            "method": "PUT", "useragent": "docker/20.10"},
                "actor": {}, "source": {"addr": "host:5000", "instanceID": "x"}
            },
            {
                "id": "2", "timestamp": "2026-03-01T12:00:01Z", "action": "push",
                "target": {
                    "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                    "size": 527, "digest": sha(0xbb), "length": 527,
                    "repository": "team/app", "tag": "v2",
                    "url": "http://127.0.0.1:5000/v2/team/app/manifests/sha256:bb"
                },
                "request": {"host": "127.0.0.1:5000", "method": "PUT"},
                "actor": {}, "source": {}
            },
            {
                "id": "3", "action": "pull",
                "target": {"repository": "team/app", "tag": "v1"},
                "request": {"host": "127.0.0.1:5000"}
            }
        ]})
    }

    #[test]
    fn a_distribution_envelope_yields_its_tagged_pushes_only() {
        let expected = Push {
            digest: Some(Digest::parse(&sha(0xbb)).expect("a valid digest")),
            ..push(Some("127.0.0.1:5000"), "team/app", "v2")
        };
        assert_eq!(parse(distribution_envelope()), Ok(vec![expected]));
    }

    #[test]
    fn the_registry_comes_from_the_target_url_when_the_request_has_no_host() {
        let pushes = parse(json!({"events": [{
            "action": "push",
            "target": {"repository": "a/b", "tag": "t", "url": "https://reg.example.com:8443/v2/a/b/manifests/t"}
        }]}));
        assert_eq!(pushes, Ok(vec![push(Some("reg.example.com:8443"), "a/b", "t")]));
        let pushes =
            parse(json!({"events": [{"action": "push", "target": {"repository": "a/b", "tag": "t"}}]}));
        assert_eq!(pushes, Ok(vec![push(None, "a/b", "t")]));
    }

    #[test]
    fn an_empty_envelope_announces_nothing() {
        assert_eq!(parse(json!({"events": []})), Ok(vec![]));
    }

    #[test]
    fn a_docker_hub_payload_is_a_push_to_docker_io() {
        let payload = json!({
            "callback_url": "https://registry.hub.docker.com/u/org/app/hook/x/",
            "push_data": {"pushed_at": 1, "pusher": "me", "tag": "v2"},
            "repository": {"repo_name": "org/app", "name": "app", "namespace": "org"}
        });
        assert_eq!(parse(payload), Ok(vec![push(Some("docker.io"), "org/app", "v2")]));
        let official = json!({"push_data": {"tag": "1.25"}, "repository": {"repo_name": "nginx"}});
        assert_eq!(
            parse(official),
            Ok(vec![push(Some("docker.io"), "library/nginx", "1.25")])
        );
    }

    #[test]
    fn malformed_payloads_name_the_field() {
        assert_eq!(
            parse_payload(b"not json").map_err(|e| e.field),
            Err("body".to_owned())
        );
        assert_eq!(field_of(json!([1, 2])), "body");
        assert_eq!(field_of(json!({"hello": "world"})), "events");
        assert_eq!(field_of(json!({"events": {}})), "events");
        assert_eq!(field_of(json!({"events": [1]})), "events[0]");
        assert_eq!(field_of(json!({"events": [{"target": {}}]})), "events[0].action");
        assert_eq!(
            field_of(json!({"events": [{"action": "push"}]})),
            "events[0].target"
        );
        assert_eq!(
            field_of(json!({"events": [{"action": "push", "target": {"tag": "v1"}}]})),
            "events[0].target.repository"
        );
        assert_eq!(
            field_of(json!({"events": [{"action": "push", "target": {"tag": 5, "repository": "a"}}]})),
            "events[0].target.tag"
        );
        assert_eq!(
            field_of(
                json!({"events": [{"action": "push", "target": {"tag": "bad tag", "repository": "a"}}]})
            ),
            "events[0].target.tag"
        );
        assert_eq!(
            field_of(
                json!({"events": [{"action": "push", "target": {"tag": "v1", "repository": "Team/App"}}]})
            ),
            "events[0].target.repository"
        );
        assert_eq!(
            field_of(json!({"events": [{"action": "push", "target": {"tag": "v1", "repository": "a:b"}}]})),
            "events[0].target.repository"
        );
        assert_eq!(
            field_of(
                json!({"events": [{"action": "push", "target": {"tag": "v1", "repository": "a", "digest": "sha256:x"}}]})
            ),
            "events[0].target.digest"
        );
        assert_eq!(
            field_of(
                json!({"events": [{"action": "push", "target": {"tag": "v1", "repository": "a"}, "request": []}]})
            ),
            "events[0].request"
        );
        assert_eq!(field_of(json!({"push_data": {"tag": "v1"}})), "repository");
        assert_eq!(
            field_of(json!({"push_data": {}, "repository": {"repo_name": "a/b"}})),
            "push_data.tag"
        );
        assert_eq!(
            field_of(json!({"push_data": {"tag": "v1"}, "repository": {}})),
            "repository.repo_name"
        );
        assert_eq!(field_of(json!({"push_data": "x", "repository": {}})), "push_data");
    }

    #[test]
    fn a_push_matches_a_project_by_repository_and_registry() {
        let project = image("127.0.0.1:5000/team/app");
        assert!(push_matches(
            &project,
            &push(Some("127.0.0.1:5000"), "team/app", "v1")
        ));
        assert!(push_matches(&project, &push(None, "team/app", "v1")));
        assert!(!push_matches(
            &project,
            &push(Some("127.0.0.1:5000"), "team/other", "v1")
        ));
        assert!(!push_matches(
            &project,
            &push(Some("127.0.0.1:5001"), "team/app", "v1")
        ));
        assert!(!push_matches(&project, &push(Some("ghcr.io"), "team/app", "v1")));
    }

    #[test]
    fn loopback_spellings_and_docker_hub_aliases_are_one_registry() {
        let local = image("localhost:5000/team/app");
        assert!(push_matches(
            &local,
            &push(Some("127.0.0.1:5000"), "team/app", "v1")
        ));
        assert!(push_matches(&local, &push(Some("[::1]:5000"), "team/app", "v1")));
        assert!(!push_matches(
            &local,
            &push(Some("127.0.0.1:5002"), "team/app", "v1")
        ));
        assert!(push_matches(
            &image("GHCR.io/a/b"),
            &push(Some("ghcr.IO"), "a/b", "v1")
        ));
        let hub = image("nginx");
        assert!(push_matches(&hub, &push(Some("docker.io"), "library/nginx", "1")));
        assert!(push_matches(
            &hub,
            &push(Some("index.docker.io"), "library/nginx", "1")
        ));
        assert!(push_matches(
            &hub,
            &push(Some("registry-1.docker.io"), "library/nginx", "1")
        ));
        assert!(!push_matches(&hub, &push(Some("docker.io"), "nginx", "1")));
    }
}
