//! Request flows of the registry client against `wiremock` servers: the edge cases a real local
//! registry does not produce (pagination, rate limits, bearer challenges, missing digest
//! headers). The real registries are exercised in `tests/it/registry.rs`.

use std::time::{Duration, Instant};

use base64::Engine as _;
use wiremock::matchers::{header, method, path, query_param, query_param_is_missing};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use super::*;

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn client() -> RegistryClient {
    RegistryClient::new(RegistryClientConfig::default()).expect("the client builds")
}

/// Access to `team/app` on the mock server (a loopback registry, so plain HTTP).
fn repo_on(server: &MockServer) -> RepositoryAccess {
    let host = server.uri().trim_start_matches("http://").to_owned();
    let image = ImageRef::parse(&format!("{host}/team/app")).expect("a valid image");
    RepositoryAccess::new(&image)
}

fn with_credentials(mut repo: RepositoryAccess, username: &str, password: &str) -> RepositoryAccess {
    repo.credentials = Some(Credentials {
        username: username.to_owned(),
        password: password.to_owned(),
    });
    repo
}

fn host_of(server: &MockServer) -> String {
    server.uri().trim_start_matches("http://").to_owned()
}

fn tags_body(tags: &[&str]) -> serde_json::Value {
    serde_json::json!({ "name": "team/app", "tags": tags })
}

fn basic(username: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    format!("Basic {encoded}")
}

#[test]
fn credentials_never_show_their_password_in_debug_output() {
    let credentials = Credentials {
        username: "dwtest".into(),
        password: "hunter2".into(),
    };
    let printed = format!("{credentials:?}");
    assert!(printed.contains("dwtest"));
    assert!(!printed.contains("hunter2"));
    let repo = RepositoryAccess {
        credentials: Some(credentials),
        ..RepositoryAccess::new(&ImageRef::parse("ghcr.io/a/b").expect("valid"))
    };
    assert!(!format!("{repo:?}").contains("hunter2"));
}

#[test]
fn loopback_and_insecure_registries_use_http_and_others_https() {
    let url = |image: &str, insecure: bool| {
        let repo = RepositoryAccess {
            insecure,
            ..RepositoryAccess::new(&ImageRef::parse(image).expect("valid"))
        };
        repo.url("tags/list").expect("a URL").to_string()
    };
    assert_eq!(
        url("nginx", false),
        "https://registry-1.docker.io/v2/library/nginx/tags/list"
    );
    assert_eq!(
        url("ghcr.io/org/app:v1", false),
        "https://ghcr.io/v2/org/app/tags/list"
    );
    assert_eq!(
        url("ghcr.io/org/app", true),
        "http://ghcr.io/v2/org/app/tags/list"
    );
    assert_eq!(
        url("localhost:5000/a", false),
        "http://localhost:5000/v2/a/tags/list"
    );
    assert_eq!(
        url("127.0.0.1:5000/a", false),
        "http://127.0.0.1:5000/v2/a/tags/list"
    );
    assert_eq!(url("[::1]:5000/a", false), "http://[::1]:5000/v2/a/tags/list");
}

#[tokio::test]
async fn tags_are_collected_across_link_pages_sorted_and_deduplicated() {
    let server = MockServer::start().await;
    let next_absolute = format!("{}/v2/team/app/tags/list?n=1000&last=c2", server.uri());
    Mock::given(method("GET"))
        .and(path("/v2/team/app/tags/list"))
        .and(query_param_is_missing("last"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(tags_body(&["v2", "latest", "v1"]))
                .insert_header("Link", r#"</v2/team/app/tags/list?n=1000&last=c1>; rel="next""#),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2/team/app/tags/list"))
        .and(query_param("last", "c1"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(tags_body(&["v1", "dev"]))
                .insert_header("Link", format!(r#"<{next_absolute}>; rel="next""#)),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2/team/app/tags/list"))
        .and(query_param("last", "c2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(tags_body(&["a-last", "bad/tag"])))
        .expect(1)
        .mount(&server)
        .await;

    let client = client();
    let tags = client.list_tags(&repo_on(&server)).await.expect("tags");
    assert_eq!(tags, ["a-last", "dev", "latest", "v1", "v2"]);
    assert_eq!(client.request_count(), 3);
    let first = &server.received_requests().await.expect("recorded")[0];
    assert_eq!(first.url.query(), Some("n=1000"));
}

#[tokio::test]
async fn a_pagination_loop_or_a_link_to_another_host_is_a_protocol_error() {
    let server = MockServer::start().await;
    Mock::given(path("/v2/team/app/tags/list"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(tags_body(&["a"]))
                .insert_header("Link", r#"</v2/team/app/tags/list?n=1000>; rel="next""#),
        )
        .mount(&server)
        .await;
    let error = client().list_tags(&repo_on(&server)).await.unwrap_err();
    assert!(
        matches!(&error, RegistryError::Protocol { message } if message.contains("loops")),
        "{error}"
    );

    server.reset().await;
    Mock::given(path("/v2/team/app/tags/list"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(tags_body(&["a"]))
                .insert_header("Link", r#"<http://elsewhere.example/v2/x?last=a>; rel="next""#),
        )
        .mount(&server)
        .await;
    let error = client().list_tags(&repo_on(&server)).await.unwrap_err();
    assert!(
        matches!(&error, RegistryError::Protocol { message } if message.contains("another host")),
        "{error}"
    );
}

#[tokio::test]
async fn a_tag_list_that_is_not_json_is_a_protocol_error_and_null_tags_are_empty() {
    let server = MockServer::start().await;
    Mock::given(path("/v2/team/app/tags/list"))
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(path("/v2/team/app/tags/list"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(serde_json::json!({"name": "team/app", "tags": null})),
        )
        .mount(&server)
        .await;
    let client = client();
    let repo = repo_on(&server);
    assert!(matches!(
        client.list_tags(&repo).await,
        Err(RegistryError::Protocol { .. })
    ));
    assert_eq!(client.list_tags(&repo).await, Ok(Vec::new()));
}

#[tokio::test]
async fn too_many_requests_is_rate_limited_with_the_retry_after_delay() {
    let server = MockServer::start().await;
    Mock::given(method("HEAD"))
        .and(path("/v2/team/app/manifests/latest"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "7")
                .insert_header("RateLimit-Remaining", "0;w=21600"),
        )
        .mount(&server)
        .await;
    Mock::given(path("/v2/team/app/tags/list"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "Sun, 06 Nov 1994 08:49:37 GMT")
                .insert_header("Date", "Sun, 06 Nov 1994 08:49:07 GMT"),
        )
        .mount(&server)
        .await;

    let client = client();
    let repo = repo_on(&server);
    assert_eq!(client.rate_limit_remaining(&host_of(&server)), None);
    let error = client.manifest_digest(&repo, "latest").await.unwrap_err();
    assert_eq!(
        error,
        RegistryError::RateLimited {
            retry_after: Some(Duration::from_secs(7))
        }
    );
    assert!(error.is_transient());
    assert_eq!(client.rate_limit_remaining(&host_of(&server)), Some(0));

    // A date is measured from the response's Date header, not from this machine's clock.
    assert_eq!(
        client.list_tags(&repo).await,
        Err(RegistryError::RateLimited {
            retry_after: Some(Duration::from_secs(30))
        })
    );
    // The last value seen is kept while later answers carry none.
    assert_eq!(client.rate_limit_remaining(&host_of(&server)), Some(0));
}

#[tokio::test]
async fn statuses_map_to_not_found_server_and_unauthorized_errors() {
    let server = MockServer::start().await;
    Mock::given(path("/v2/team/app/manifests/gone"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&server)
        .await;
    Mock::given(path("/v2/team/app/manifests/broken"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    Mock::given(path("/v2/team/app/tags/list"))
        .respond_with(ResponseTemplate::new(403).set_body_json(serde_json::json!({
            "errors": [{"code": "DENIED", "message": "requested access to the resource is denied"}]
        })))
        .mount(&server)
        .await;
    let client = client();
    let repo = repo_on(&server);
    assert_eq!(
        client.manifest_digest(&repo, "gone").await,
        Err(RegistryError::NotFound)
    );
    assert_eq!(
        client.manifest_digest(&repo, "broken").await,
        Err(RegistryError::Server { status: 503 })
    );
    assert_eq!(
        client.list_tags(&repo).await,
        Err(RegistryError::unauthorized(
            "requested access to the resource is denied (DENIED)"
        ))
    );
    // Not a tag and not a digest: nothing is asked.
    let before = client.request_count();
    assert_eq!(
        client.manifest_digest(&repo, "../x").await,
        Err(RegistryError::NotFound)
    );
    assert_eq!(client.request_count(), before);
}

#[tokio::test]
async fn the_digest_comes_from_a_head_request_with_the_four_manifest_types() {
    let server = MockServer::start().await;
    Mock::given(method("HEAD"))
        .and(path("/v2/team/app/manifests/v1"))
        .respond_with(ResponseTemplate::new(200).insert_header("Docker-Content-Digest", DIGEST))
        .expect(1)
        .mount(&server)
        .await;
    let client = client();
    let digest = client
        .manifest_digest(&repo_on(&server), "v1")
        .await
        .expect("a digest");
    assert_eq!(digest.as_str(), DIGEST);

    let requests = server.received_requests().await.expect("recorded");
    assert_eq!(requests.len(), 1, "only the HEAD request");
    let accepted: Vec<&str> = requests[0]
        .headers
        .get_all("accept")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    assert_eq!(accepted, MANIFEST_MEDIA_TYPES);
}

#[tokio::test]
async fn a_missing_digest_header_falls_back_to_hashing_the_manifest() {
    let server = MockServer::start().await;
    let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#;
    Mock::given(method("HEAD"))
        .and(path("/v2/team/app/manifests/v1"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2/team/app/manifests/v1"))
        .respond_with(ResponseTemplate::new(200).set_body_bytes(manifest.to_vec()))
        .expect(1)
        .mount(&server)
        .await;
    let digest = client()
        .manifest_digest(&repo_on(&server), "v1")
        .await
        .expect("a digest");
    assert_eq!(
        digest.as_str(),
        format!("sha256:{}", hex::encode(Sha256::digest(manifest)))
    );
}

#[tokio::test]
async fn an_invalid_digest_header_is_a_protocol_error() {
    let server = MockServer::start().await;
    Mock::given(method("HEAD"))
        .respond_with(ResponseTemplate::new(200).insert_header("Docker-Content-Digest", "sha256:nope"))
        .mount(&server)
        .await;
    let error = client()
        .manifest_digest(&repo_on(&server), "v1")
        .await
        .unwrap_err();
    assert!(matches!(error, RegistryError::Protocol { .. }), "{error}");
}

#[tokio::test]
async fn basic_challenges_are_answered_with_the_credentials_and_remembered() {
    let server = MockServer::start().await;
    Mock::given(path("/v2/team/app/tags/list"))
        .and(header("authorization", basic("user", "secret").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(tags_body(&["v1"])))
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(path("/v2/team/app/tags/list"))
        .respond_with(
            ResponseTemplate::new(401)
                .insert_header("WWW-Authenticate", r#"Basic realm="Registry Realm""#)
                .set_body_json(serde_json::json!({
                    "errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]
                })),
        )
        .mount(&server)
        .await;

    let client = client();
    let repo = with_credentials(repo_on(&server), "user", "secret");
    assert_eq!(client.list_tags(&repo).await, Ok(vec!["v1".to_owned()]));
    assert_eq!(client.request_count(), 2, "one 401, one retry");
    assert_eq!(client.list_tags(&repo).await, Ok(vec!["v1".to_owned()]));
    assert_eq!(
        client.request_count(),
        3,
        "credentials sent up front once the host asked for them"
    );

    let anonymous = client.list_tags(&repo_on(&server)).await.unwrap_err();
    assert!(
        matches!(&anonymous, RegistryError::Unauthorized { message } if message.contains("none are configured")),
        "{anonymous}"
    );
    let wrong = client
        .list_tags(&with_credentials(repo_on(&server), "user", "wrong"))
        .await
        .unwrap_err();
    assert!(
        matches!(&wrong, RegistryError::Unauthorized { message }
            if message.contains("rejected the credentials of user user") && !message.contains("wrong")),
        "{wrong}"
    );
}

/// A registry that wants `Bearer <token>` and a token service at `/token` that hands it out.
async fn mount_bearer_registry(server: &MockServer, token: &str, token_service_hits: u64) {
    let challenge = format!(
        r#"Bearer realm="{}/token",service="mock-registry",scope="repository:team/app:pull",error="invalid_token""#,
        server.uri()
    );
    Mock::given(path("/token"))
        .and(query_param("service", "mock-registry"))
        .and(query_param("scope", "repository:team/app:pull"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "token": token, "expires_in": 300
        })))
        .expect(token_service_hits)
        .mount(server)
        .await;
    Mock::given(path("/v2/team/app/tags/list"))
        .and(header("authorization", format!("Bearer {token}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(tags_body(&["v1", "v2"])))
        .with_priority(1)
        .mount(server)
        .await;
    Mock::given(method("HEAD"))
        .and(path("/v2/team/app/manifests/v1"))
        .and(header("authorization", format!("Bearer {token}").as_str()))
        .respond_with(ResponseTemplate::new(200).insert_header("Docker-Content-Digest", DIGEST))
        .with_priority(1)
        .mount(server)
        .await;
    Mock::given(path_regex_v2())
        .respond_with(ResponseTemplate::new(401).insert_header("WWW-Authenticate", challenge.as_str()))
        .with_priority(10)
        .mount(server)
        .await;
}

fn path_regex_v2() -> wiremock::matchers::PathRegexMatcher {
    wiremock::matchers::path_regex("^/v2/")
}

#[tokio::test]
async fn bearer_tokens_are_fetched_once_and_reused_without_a_challenge() {
    let server = MockServer::start().await;
    mount_bearer_registry(&server, "tok-1", 1).await;

    let client = client();
    let repo = repo_on(&server);
    assert_eq!(
        client.list_tags(&repo).await,
        Ok(vec!["v1".to_owned(), "v2".to_owned()])
    );
    assert_eq!(client.request_count(), 3, "401, token, retry");
    assert_eq!(
        client.manifest_digest(&repo, "v1").await.map(String::from),
        Ok(DIGEST.to_owned())
    );
    assert_eq!(client.list_tags(&repo).await.map(|t| t.len()), Ok(2));
    assert_eq!(client.request_count(), 5, "the cached token goes out up front");
    server.verify().await;
}

#[tokio::test]
async fn bearer_tokens_are_fetched_with_the_credentials_and_cached_per_credentials() {
    let server = MockServer::start().await;
    mount_bearer_registry(&server, "tok-1", 3).await;

    let client = client();
    let alice = with_credentials(repo_on(&server), "alice", "alice-secret");
    assert_eq!(client.list_tags(&alice).await.map(|t| t.len()), Ok(2));
    assert_eq!(client.list_tags(&alice).await.map(|t| t.len()), Ok(2));
    // Anonymous access gets its own token, never alice's.
    assert_eq!(client.list_tags(&repo_on(&server)).await.map(|t| t.len()), Ok(2));
    // Another password is another identity: it never rides on the token the first one got.
    let other_password = with_credentials(repo_on(&server), "alice", "not-alice-secret");
    assert_eq!(client.list_tags(&other_password).await.map(|t| t.len()), Ok(2));
    server.verify().await;

    let token_requests: Vec<Request> = server
        .received_requests()
        .await
        .expect("recorded")
        .into_iter()
        .filter(|r| r.url.path() == "/token")
        .collect();
    assert_eq!(
        token_requests[0]
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok()),
        Some(basic("alice", "alice-secret").as_str())
    );
    assert!(
        token_requests[0]
            .url
            .query()
            .is_some_and(|q| q.contains("account=alice"))
    );
    assert!(token_requests[1].headers.get("authorization").is_none());
    assert_eq!(
        token_requests[2]
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok()),
        Some(basic("alice", "not-alice-secret").as_str())
    );
}

#[tokio::test]
async fn a_refused_cached_token_is_replaced_once_and_a_refused_fresh_one_is_final() {
    let server = MockServer::start().await;
    mount_bearer_registry(&server, "tok-1", 1).await;
    let client = client();
    let repo = repo_on(&server);
    assert!(client.list_tags(&repo).await.is_ok());

    // The registry now only accepts a new token (say, the old one was revoked).
    server.reset().await;
    mount_bearer_registry(&server, "tok-2", 1).await;
    let before = client.request_count();
    assert!(client.list_tags(&repo).await.is_ok());
    assert_eq!(
        client.request_count() - before,
        3,
        "stale token, new token, retry"
    );
    server.verify().await;

    // A token service handing out tokens the registry refuses: one try, then Unauthorized.
    server.reset().await;
    Mock::given(path("/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"token": "useless"})))
        .mount(&server)
        .await;
    let challenge = format!(r#"Bearer realm="{}/token",service="mock-registry""#, server.uri());
    Mock::given(path_regex_v2())
        .respond_with(ResponseTemplate::new(401).insert_header("WWW-Authenticate", challenge.as_str()))
        .mount(&server)
        .await;
    let fresh_client = RegistryClient::new(RegistryClientConfig::default()).expect("builds");
    let error = fresh_client.list_tags(&repo).await.unwrap_err();
    assert!(
        matches!(&error, RegistryError::Unauthorized { message } if message.contains("anonymous token")),
        "{error}"
    );
    assert_eq!(
        fresh_client.request_count(),
        3,
        "401, token, refused retry: no loop"
    );
}

#[tokio::test]
async fn a_token_service_refusing_the_credentials_is_unauthorized() {
    let server = MockServer::start().await;
    Mock::given(path("/token"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&server)
        .await;
    let challenge = format!(r#"Bearer realm="{}/token""#, server.uri());
    Mock::given(path_regex_v2())
        .respond_with(ResponseTemplate::new(401).insert_header("WWW-Authenticate", challenge.as_str()))
        .mount(&server)
        .await;
    let repo = with_credentials(repo_on(&server), "bob", "bob-secret");
    let error = client().list_tags(&repo).await.unwrap_err();
    assert!(
        matches!(&error, RegistryError::Unauthorized { message }
            if message.contains("token service") && message.contains("user bob") && !message.contains("bob-secret")),
        "{error}"
    );
}

#[tokio::test]
async fn concurrent_requests_to_one_host_stay_within_its_budget() {
    let server = MockServer::start().await;
    Mock::given(method("HEAD"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("Docker-Content-Digest", DIGEST)
                .set_delay(Duration::from_millis(100)),
        )
        .mount(&server)
        .await;
    let client = RegistryClient::new(RegistryClientConfig {
        max_concurrent_per_host: 2,
        ..RegistryClientConfig::default()
    })
    .expect("builds");
    let repo = repo_on(&server);
    let started = Instant::now();
    let lookups = (0..6).map(|_| client.manifest_digest(&repo, "v1"));
    for result in futures::future::join_all(lookups).await {
        assert!(result.is_ok());
    }
    // Six 100 ms answers, two at a time: three rounds.
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(client.request_count(), 6);
}

#[tokio::test]
async fn a_closed_port_is_unreachable_at_once() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let port = listener.local_addr().expect("an address").port();
    drop(listener);
    let image = ImageRef::parse(&format!("127.0.0.1:{port}/team/app")).expect("valid");
    let started = Instant::now();
    let error = client()
        .list_tags(&RepositoryAccess::new(&image))
        .await
        .unwrap_err();
    assert!(matches!(error, RegistryError::Unreachable { .. }), "{error}");
    assert!(error.is_transient());
    assert!(started.elapsed() < Duration::from_secs(2));
}
