//! The registry edge: a small client for the handful of OCI distribution endpoints polling
//! needs — list a repository's tags (`GET /v2/<name>/tags/list`, following `Link` pagination)
//! and read a tag's manifest digest (`HEAD /v2/<name>/manifests/<tag>`) — with anonymous, basic
//! and bearer-token authentication. It knows nothing of stages, schedules or the store: the
//! poller decides what to ask, this module only asks (SPEC §3, "Registry watching").
//!
//! # Why a client of our own
//! The poller treats each registry as a budget, so it needs what generic clients hide:
//! `RateLimit-Remaining`, `Retry-After` on a 429, `Link` pagination and a count of requests
//! sent. [`RegistryClient`] is one `reqwest` client (connection pool and keep-alive shared by
//! every repository) plus, per registry host, a semaphore bounding concurrent requests and what
//! the host last said about authentication.
//!
//! # Authentication
//! A request to a host not heard from yet goes out anonymously. On a 401 the client reads
//! `WWW-Authenticate`: for `Basic` it retries with the repository's credentials; for `Bearer` it
//! gets a token for `repository:<name>:pull` from the challenge's realm (sending the credentials,
//! when there are any, as basic auth) and retries with it. Tokens are cached per (host, scope,
//! credentials) until shortly before they expire, and the host's challenge is remembered, so later
//! requests carry a token (or basic credentials) from the start and the 401 round trip happens
//! once per host, not once per request. A cached token the registry refuses is fetched anew once.
//!
//! # Transport
//! HTTPS by default; plain HTTP for repositories marked insecure and for loopback registries
//! (`localhost`, `127.0.0.0/8`, `[::1]`). Credentials are never sent to a plain-HTTP token realm
//! announced by an HTTPS registry, and `Link` targets on another host are refused rather than
//! followed with credentials attached.

mod challenge;
mod error;
mod headers;
mod token;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::{ACCEPT, DATE, HeaderMap, LINK, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use tokio::sync::Semaphore;
use url::Url;

use crate::domain::image_ref::{Digest, ImageRef, is_valid_tag};

pub use error::RegistryError;

use challenge::parse_challenges;
use token::{CachedToken, TokenCache, TokenKey, credentials_identity, parse_token_response};

/// The manifest media types a digest may be read for, most specific first: a multi-platform
/// image is an index / manifest list, and its digest is what `docker pull` resolves a tag to.
/// Without them a registry may convert to schema 1 and answer a different digest.
pub const MANIFEST_MEDIA_TYPES: [&str; 4] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// Tags asked for per page; registries may answer fewer and link to the next page.
const TAGS_PAGE_SIZE: u32 = 1000;
/// Pages followed before giving up: a registry linking in circles must not keep a poll busy.
const MAX_TAG_PAGES: usize = 1000;
/// Body limits: far above real answers, far below what would hurt memory.
const MAX_TAGS_BODY: usize = 16 << 20;
/// Distribution refuses manifests over 4 MiB itself.
const MAX_MANIFEST_BODY: usize = 4 << 20;
const MAX_TOKEN_BODY: usize = 1 << 20;
/// Connecting takes no longer than this even with a longer request timeout: a registry that
/// cannot be connected to in 10 s is down, and the poller should hear so early.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest server error message kept in an error, in characters.
const MAX_SERVER_MESSAGE: usize = 300;

/// How the client behaves; one per application.
#[derive(Debug, Clone)]
pub struct RegistryClientConfig {
    /// Requests in flight to one registry host at most (token services count as their own
    /// host). At least 1.
    pub max_concurrent_per_host: usize,
    /// The limit for one HTTP request, from sending to the end of the body.
    pub request_timeout: Duration,
    pub user_agent: String,
}

impl Default for RegistryClientConfig {
    fn default() -> Self {
        Self {
            max_concurrent_per_host: 4,
            request_timeout: Duration::from_secs(30),
            user_agent: concat!("docker-watcher/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// A registry username and password (or access token used as a password).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// One repository and how to reach it. Only the image's registry and repository are used; a
/// tag or digest in it is ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryAccess {
    pub image: ImageRef,
    /// Speak plain HTTP to this registry (loopback registries get HTTP without this).
    pub insecure: bool,
    pub credentials: Option<Credentials>,
}

impl RepositoryAccess {
    /// Anonymous access over the default transport to `image`'s repository.
    pub fn new(image: &ImageRef) -> Self {
        Self {
            image: image.repository_only(),
            insecure: false,
            credentials: None,
        }
    }

    fn uses_plain_http(&self) -> bool {
        self.insecure || self.image.is_loopback_registry()
    }

    fn host(&self) -> &str {
        self.image.registry_api_host()
    }

    fn pull_scope(&self) -> String {
        format!("repository:{}:pull", self.image.repository())
    }

    /// `https://host/v2/<name>/<rest>`.
    fn url(&self, rest: &str) -> Result<Url, RegistryError> {
        let scheme = if self.uses_plain_http() { "http" } else { "https" };
        let url = format!("{scheme}://{}/v2/{}/{rest}", self.host(), self.image.repository());
        Url::parse(&url).map_err(|e| RegistryError::protocol(format!("cannot form the URL {url}: {e}")))
    }
}

/// The distribution API client; see the module documentation. Cheap to clone: clones share the
/// connection pool, the budgets, the token cache and the request counter.
#[derive(Clone)]
pub struct RegistryClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    max_concurrent_per_host: usize,
    /// Per registry (or token service) host, as `host[:port]`; entries are never removed (there
    /// are as many as registries in use).
    hosts: Mutex<HashMap<String, Arc<HostState>>>,
    tokens: TokenCache,
    /// Every HTTP request sent, token requests included.
    requests: AtomicU64,
}

struct HostState {
    /// The concurrency budget of the host.
    permits: Semaphore,
    /// The last `RateLimit-Remaining` the host sent.
    rate_limit_remaining: Mutex<Option<u64>>,
    /// How the host last challenged us, to authenticate up front next time.
    auth: Mutex<Option<HostAuth>>,
}

#[derive(Debug, Clone)]
enum HostAuth {
    Basic,
    Bearer { realm: Url, service: Option<String> },
}

/// What a request carries.
#[derive(Debug, Clone)]
enum Authorization {
    Anonymous,
    /// The repository's credentials as basic auth.
    Basic,
    /// `fresh`: fetched in answer to this very request's challenge, so refusing it is final.
    Bearer {
        token: String,
        fresh: bool,
    },
}

/// An HTTP answer, body read (within a limit) while the host's permit was held.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
    /// The final URL, after redirects: the base of relative `Link` targets.
    url: Url,
}

impl Answer {
    fn header(&self, name: impl reqwest::header::AsHeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn header_values(&self, name: impl reqwest::header::AsHeaderName) -> impl Iterator<Item = &str> {
        self.headers.get_all(name).iter().filter_map(|v| v.to_str().ok())
    }

    fn retry_after(&self) -> Option<Duration> {
        headers::retry_after(self.header(RETRY_AFTER)?, self.header(DATE), chrono::Utc::now())
    }

    /// The first message of a distribution error body, `{"errors":[{"code","message"}]}`.
    fn server_message(&self) -> Option<String> {
        #[derive(Deserialize)]
        struct Errors {
            errors: Vec<ErrorEntry>,
        }
        #[derive(Deserialize)]
        struct ErrorEntry {
            #[serde(default)]
            code: String,
            #[serde(default)]
            message: String,
        }
        let first = serde_json::from_slice::<Errors>(&self.body)
            .ok()?
            .errors
            .into_iter()
            .next()?;
        let text = match (first.message.is_empty(), first.code.is_empty()) {
            (false, false) => format!("{} ({})", first.message, first.code),
            (false, true) => first.message,
            (true, false) => first.code,
            (true, true) => return None,
        };
        Some(text.chars().take(MAX_SERVER_MESSAGE).collect())
    }

    /// The error for a status the caller did not expect.
    fn status_error(&self) -> RegistryError {
        match self.status {
            StatusCode::NOT_FOUND => RegistryError::NotFound,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => RegistryError::unauthorized(
                self.server_message()
                    .unwrap_or_else(|| format!("access denied (HTTP {})", self.status.as_u16())),
            ),
            StatusCode::TOO_MANY_REQUESTS => RegistryError::RateLimited {
                retry_after: self.retry_after(),
            },
            status => RegistryError::Server {
                status: status.as_u16(),
            },
        }
    }

    fn digest_header(&self) -> Option<&str> {
        self.header("docker-content-digest")
            .filter(|v| !v.trim().is_empty())
    }
}

impl fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryClient")
            .field("max_concurrent_per_host", &self.inner.max_concurrent_per_host)
            .field("requests", &self.request_count())
            .finish_non_exhaustive()
    }
}

impl RegistryClient {
    pub fn new(config: RegistryClientConfig) -> Result<Self, RegistryError> {
        let http = reqwest::Client::builder()
            .user_agent(config.user_agent.as_str())
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout.min(MAX_CONNECT_TIMEOUT))
            .build()
            .map_err(|e| RegistryError::Setup {
                message: error_chain(&e),
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                max_concurrent_per_host: config.max_concurrent_per_host.max(1),
                hosts: Mutex::default(),
                tokens: TokenCache::default(),
                requests: AtomicU64::new(0),
            }),
        })
    }

    /// The total number of HTTP requests sent so far (registry and token service alike).
    pub fn request_count(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    /// The last `RateLimit-Remaining` that `host` (as in [`ImageRef::registry_api_host`]) sent,
    /// if it ever sent one.
    pub fn rate_limit_remaining(&self, host: &str) -> Option<u64> {
        let hosts = self.inner.hosts.lock().unwrap_or_else(|e| e.into_inner());
        let state = hosts.get(host)?;
        *state
            .rate_limit_remaining
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Every tag of the repository, sorted and without duplicates. Follows `Link: <…>;
    /// rel="next"` pagination (relative or absolute targets on the same host) for up to 1000
    /// pages. Names that are not valid tags are left out: they could not be pulled, and would
    /// end up in URLs and hostnames.
    pub async fn list_tags(&self, repo: &RepositoryAccess) -> Result<Vec<String>, RegistryError> {
        #[derive(Deserialize)]
        struct TagPage {
            // `null` for a repository without tags on some registries.
            #[serde(default)]
            tags: Option<Vec<String>>,
        }

        let first = repo.url(&format!("tags/list?n={TAGS_PAGE_SIZE}"))?;
        let mut url = first.clone();
        let mut visited = HashSet::new();
        let mut tags = Vec::new();
        for _ in 0..MAX_TAG_PAGES {
            visited.insert(url.clone());
            let answer = self
                .send(repo, Method::GET, &url, &["application/json"], MAX_TAGS_BODY)
                .await?;
            if answer.status != StatusCode::OK {
                return Err(answer.status_error());
            }
            let page: TagPage = serde_json::from_slice(&answer.body).map_err(|e| {
                RegistryError::protocol(format!("the tag list at {url} is not the expected JSON: {e}"))
            })?;
            tags.extend(
                page.tags
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|t| is_valid_tag(t)),
            );

            let Some(next) = headers::next_link(answer.header_values(LINK)) else {
                tags.sort_unstable();
                tags.dedup();
                return Ok(tags);
            };
            let next = answer.url.join(&next).map_err(|e| {
                RegistryError::protocol(format!(
                    "the tag list at {url} links to an invalid next page: {e}"
                ))
            })?;
            if next.origin() != first.origin() {
                return Err(RegistryError::protocol(format!(
                    "the tag list at {url} links its next page to another host ({next})"
                )));
            }
            if visited.contains(&next) {
                return Err(RegistryError::protocol(format!(
                    "the tag list pagination loops back to {next}"
                )));
            }
            url = next;
        }
        Err(RegistryError::protocol(format!(
            "the tag list of {} has more than {MAX_TAG_PAGES} pages",
            repo.image.name()
        )))
    }

    /// The digest of the manifest (or index) `reference` — a tag or a digest — points to, as
    /// `docker pull` would resolve it. Asked with `HEAD` and read from `Docker-Content-Digest`.
    /// Only when a registry omits that header (or refuses `HEAD` with 405) is the manifest
    /// fetched with `GET`, and then the header of that answer, or else the SHA-256 of the
    /// manifest bytes, is the digest. A reference that is neither a valid tag nor a digest
    /// cannot exist, and is `NotFound` without a request.
    pub async fn manifest_digest(
        &self,
        repo: &RepositoryAccess,
        reference: &str,
    ) -> Result<Digest, RegistryError> {
        if !is_valid_tag(reference) && Digest::parse(reference).is_err() {
            return Err(RegistryError::NotFound);
        }
        let url = repo.url(&format!("manifests/{reference}"))?;
        let head = self
            .send(repo, Method::HEAD, &url, &MANIFEST_MEDIA_TYPES, 0)
            .await?;
        match head.status {
            StatusCode::OK => {
                if let Some(digest) = head.digest_header() {
                    return parse_digest_header(digest, &url);
                }
                tracing::debug!(%url, "no Docker-Content-Digest on HEAD; fetching the manifest");
            }
            StatusCode::METHOD_NOT_ALLOWED => {
                tracing::debug!(%url, "HEAD refused; fetching the manifest");
            }
            _ => return Err(head.status_error()),
        }

        let get = self
            .send(repo, Method::GET, &url, &MANIFEST_MEDIA_TYPES, MAX_MANIFEST_BODY)
            .await?;
        if get.status != StatusCode::OK {
            return Err(get.status_error());
        }
        if let Some(digest) = get.digest_header() {
            return parse_digest_header(digest, &url);
        }
        if get.body.is_empty() {
            return Err(RegistryError::protocol(format!(
                "{url} answered neither a Docker-Content-Digest header nor a manifest"
            )));
        }
        let computed = format!("sha256:{}", hex::encode(Sha256::digest(&get.body)));
        Digest::parse(&computed).map_err(|e| RegistryError::protocol(e.to_string()))
    }

    /// Sends one request to the repository's registry, authenticating as the host demands:
    /// up front when the host's scheme is known, else after its 401 challenge.
    async fn send(
        &self,
        repo: &RepositoryAccess,
        method: Method,
        url: &Url,
        accept: &[&str],
        body_limit: usize,
    ) -> Result<Answer, RegistryError> {
        let mut authorization = self.authorization_up_front(repo).await?;
        // At most three tries: as we start, after a challenge, after a cached token was refused.
        // The third answer is final whatever it is: its 401 becomes `Unauthorized` upstream.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut request = self.inner.http.request(method.clone(), url.clone());
            for media_type in accept {
                // One header line per type (appended): the most widely understood form.
                request = request.header(ACCEPT, *media_type);
            }
            request = match (&authorization, &repo.credentials) {
                (Authorization::Basic, Some(credentials)) => {
                    request.basic_auth(&credentials.username, Some(&credentials.password))
                }
                (Authorization::Bearer { token, .. }, _) => request.bearer_auth(token),
                _ => request,
            };
            let answer = self.execute(repo.host(), request, body_limit).await?;
            if answer.status != StatusCode::UNAUTHORIZED || attempt == 3 {
                return Ok(answer);
            }
            authorization = self.answer_challenge(repo, &authorization, &answer).await?;
        }
    }

    /// What to send before the host has said anything in this request: what it asked for last
    /// time, so known hosts cost no 401 round trip.
    async fn authorization_up_front(&self, repo: &RepositoryAccess) -> Result<Authorization, RegistryError> {
        let known = self
            .host_state(repo.host())
            .auth
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Ok(match known {
            None => Authorization::Anonymous,
            Some(HostAuth::Basic) if repo.credentials.is_some() => Authorization::Basic,
            Some(HostAuth::Basic) => Authorization::Anonymous,
            Some(HostAuth::Bearer { realm, service }) => {
                let (token, fetched) = self.bearer_token(repo, &realm, service.as_deref(), None).await?;
                Authorization::Bearer {
                    token,
                    fresh: fetched,
                }
            }
        })
    }

    /// Decides the next authorization after a 401, or that there is no point in trying again.
    async fn answer_challenge(
        &self,
        repo: &RepositoryAccess,
        tried: &Authorization,
        answer: &Answer,
    ) -> Result<Authorization, RegistryError> {
        let challenges = parse_challenges(answer.header_values(WWW_AUTHENTICATE));
        let username = repo.credentials.as_ref().map(|c| c.username.as_str());
        let refused = |what: &str| {
            let detail = answer
                .server_message()
                .map(|m| format!(": {m}"))
                .unwrap_or_default();
            RegistryError::unauthorized(format!("{what}{detail}"))
        };

        let bearer = challenges
            .iter()
            .find(|c| c.scheme == "bearer" && c.param("realm").is_some_and(|r| !r.is_empty()));
        if let Some(bearer) = bearer {
            let realm_text = bearer.param("realm").unwrap_or_default();
            let realm = Url::parse(realm_text)
                .ok()
                .filter(|realm| matches!(realm.scheme(), "http" | "https"))
                .ok_or_else(|| {
                    RegistryError::protocol(format!(
                        "the registry named an invalid token realm \"{realm_text}\""
                    ))
                })?;
            let service = bearer.param("service").map(str::to_owned);
            self.remember_host_auth(
                repo.host(),
                HostAuth::Bearer {
                    realm: realm.clone(),
                    service: service.clone(),
                },
            );
            let stale = match tried {
                Authorization::Bearer { fresh: true, .. } => {
                    return Err(refused(&match username {
                        Some(user) => format!("the registry refused the token issued to user {user}"),
                        None => {
                            "the registry refused the anonymous token; credentials may be needed".to_owned()
                        }
                    }));
                }
                Authorization::Bearer { token, fresh: false } => Some(token.as_str()),
                _ => None,
            };
            let (token, _) = self.bearer_token(repo, &realm, service.as_deref(), stale).await?;
            return Ok(Authorization::Bearer { token, fresh: true });
        }

        if challenges.iter().any(|c| c.scheme == "basic") {
            self.remember_host_auth(repo.host(), HostAuth::Basic);
            return match (tried, username) {
                (_, None) => Err(refused(
                    "the registry requires credentials and none are configured",
                )),
                (Authorization::Basic, Some(user)) => Err(refused(&format!(
                    "the registry rejected the credentials of user {user}"
                ))),
                (_, Some(_)) => Ok(Authorization::Basic),
            };
        }
        Err(refused(
            "the registry answered 401 without a Basic or Bearer challenge",
        ))
    }

    fn remember_host_auth(&self, host: &str, auth: HostAuth) {
        tracing::debug!(host, ?auth, "registry authentication scheme learned");
        *self
            .host_state(host)
            .auth
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(auth);
    }

    /// A bearer token for pulling `repo`: the cached one unless it is `stale` (just refused) or
    /// about to expire, else a new one from the token service. The flag says whether it was
    /// fetched now.
    async fn bearer_token(
        &self,
        repo: &RepositoryAccess,
        realm: &Url,
        service: Option<&str>,
        stale: Option<&str>,
    ) -> Result<(String, bool), RegistryError> {
        let scope = repo.pull_scope();
        let key = TokenKey {
            host: repo.host().to_owned(),
            scope: scope.clone(),
            identity: repo
                .credentials
                .as_ref()
                .map(|c| credentials_identity(&c.username, &c.password)),
        };
        let slot = self.inner.tokens.slot(&key);
        // Held across the fetch: concurrent requests for this key wait for one token.
        let mut cached = slot.lock().await;
        if let Some(token) = cached.as_ref()
            && token.is_fresh(tokio::time::Instant::now())
            && stale != Some(token.token.as_str())
        {
            return Ok((token.token.clone(), false));
        }
        *cached = None;

        if repo.credentials.is_some() && realm.scheme() != "https" && !repo.uses_plain_http() {
            return Err(RegistryError::protocol(format!(
                "the HTTPS registry {} sends credentials to the plain-HTTP token service {realm}; refusing",
                repo.host()
            )));
        }
        let mut url = realm.clone();
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = service {
                query.append_pair("service", service);
            }
            query.append_pair("scope", &scope);
            if let Some(credentials) = &repo.credentials {
                // Docker sends the account too; some token services want it.
                query.append_pair("account", &credentials.username);
            }
        }
        tracing::debug!(realm = %realm, scope, "fetching a registry token");
        let mut request = self.inner.http.get(url).header(ACCEPT, "application/json");
        if let Some(credentials) = &repo.credentials {
            request = request.basic_auth(&credentials.username, Some(&credentials.password));
        }
        let answer = self.execute(&host_key(realm), request, MAX_TOKEN_BODY).await?;
        match answer.status {
            StatusCode::OK => {}
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                let who = match &repo.credentials {
                    Some(credentials) => format!("the credentials of user {}", credentials.username),
                    None => "anonymous access; credentials may be needed".to_owned(),
                };
                let detail = answer
                    .server_message()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default();
                return Err(RegistryError::unauthorized(format!(
                    "the token service {realm} refused {who}{detail}"
                )));
            }
            _ => return Err(answer.status_error()),
        }
        let (token, lifetime) = parse_token_response(&answer.body)?;
        *cached = Some(CachedToken::new(
            token.clone(),
            lifetime,
            tokio::time::Instant::now(),
        ));
        Ok((token, true))
    }

    fn host_state(&self, host: &str) -> Arc<HostState> {
        let mut hosts = self.inner.hosts.lock().unwrap_or_else(|e| e.into_inner());
        hosts
            .entry(host.to_owned())
            .or_insert_with(|| {
                Arc::new(HostState {
                    permits: Semaphore::new(self.inner.max_concurrent_per_host),
                    rate_limit_remaining: Mutex::default(),
                    auth: Mutex::default(),
                })
            })
            .clone()
    }

    /// Sends one HTTP request within `host`'s concurrency budget and reads its body (up to
    /// `body_limit` bytes) before giving the permit back.
    async fn execute(
        &self,
        host: &str,
        request: reqwest::RequestBuilder,
        body_limit: usize,
    ) -> Result<Answer, RegistryError> {
        let request = request
            .build()
            .map_err(|e| RegistryError::protocol(format!("cannot build the request: {}", error_chain(&e))))?;
        let (method, url) = (request.method().clone(), request.url().clone());
        let state = self.host_state(host);
        let _permit = state.permits.acquire().await.map_err(|_| RegistryError::Setup {
            message: "the request budget of the host was closed".to_owned(),
        })?;
        self.inner.requests.fetch_add(1, Ordering::Relaxed);
        let unreachable = |e: reqwest::Error| {
            let what = if e.is_timeout() { "timed out: " } else { "" };
            RegistryError::Unreachable {
                message: format!("{method} {url}: {what}{}", error_chain(&e.without_url())),
            }
        };
        let mut response = self.inner.http.execute(request).await.map_err(unreachable)?;

        if let Some(remaining) = response
            .headers()
            .get("ratelimit-remaining")
            .and_then(|v| v.to_str().ok())
            .and_then(headers::rate_limit_remaining)
        {
            *state
                .rate_limit_remaining
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(remaining);
        }
        let status = response.status();
        let headers = response.headers().clone();
        let final_url = response.url().clone();
        let mut body = Vec::new();
        if method != Method::HEAD {
            while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
                if body.len() + chunk.len() > body_limit {
                    if status.is_success() {
                        return Err(RegistryError::protocol(format!(
                            "{method} {url} answered more than {body_limit} bytes"
                        )));
                    }
                    // An error page's text only decorates the error; its start is enough.
                    break;
                }
                body.extend_from_slice(&chunk);
            }
        }
        Ok(Answer {
            status,
            headers,
            body,
            url: final_url,
        })
    }
}

fn parse_digest_header(value: &str, url: &Url) -> Result<Digest, RegistryError> {
    Digest::parse(value)
        .map_err(|e| RegistryError::protocol(format!("{url} answered an invalid Docker-Content-Digest: {e}")))
}

/// `host[:port]` of a URL, spelled like an image reference's registry (`[::1]:5000`), so a
/// token service on the registry's own host shares its budget.
fn host_key(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

/// An error and its sources, `outer: inner: innermost`: reqwest's own message alone ("error
/// sending request") hides the reason (connection refused, DNS, certificate).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests;
