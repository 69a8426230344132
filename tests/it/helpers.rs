//! Test helpers: [`spawn_app`] starts the real application on port 0 with a fresh data dir and a
//! movable clock; [`TestApp`] restarts it on the same data and hands out [`ApiClient`]s logged in
//! with each role. Requests and answers are plain JSON so tests read like API calls.

#![allow(dead_code)]

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncBufReadExt as _;

use docker_watcher::app::{App, AppOptions};
use docker_watcher::clock::OffsetClock;
use docker_watcher::config::Config;
use docker_watcher::notify::NotifierOptions;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The bootstrap admin's password in every test app.
pub const ADMIN_PASSWORD: &str = "admin-password-for-tests";
/// The webhook token of every test app.
pub const WEBHOOK_TOKEN: &str = "webhook-token-for-tests";

pub struct TestApp {
    app: Option<App>,
    pub data_dir: Arc<tempfile::TempDir>,
    pub clock: Arc<OffsetClock>,
    pub base_url: String,
    /// Adjusts the configuration of every start (see [`spawn_app_with`]).
    configure: Arc<dyn Fn(&mut Config) + Send + Sync>,
}

/// Starts the real application with a fresh data dir.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts the real application with a fresh data dir and a configuration adjusted by
/// `configure` (short proxy timeouts, TLS certificates), also on restarts.
pub async fn spawn_app_with(configure: impl Fn(&mut Config) + Send + Sync + 'static) -> TestApp {
    init_test_tracing();
    let data_dir = Arc::new(tempfile::tempdir().expect("a temporary data dir"));
    let clock = Arc::new(OffsetClock::new());
    let configure: Arc<dyn Fn(&mut Config) + Send + Sync> = Arc::new(configure);
    let app = start(&data_dir, &clock, &*configure).await;
    let base_url = format!("http://{}", app.api_addr());
    TestApp {
        app: Some(app),
        data_dir,
        clock,
        base_url,
        configure,
    }
}

async fn start(
    data_dir: &tempfile::TempDir,
    clock: &Arc<OffsetClock>,
    configure: &dyn Fn(&mut Config),
) -> App {
    let mut config = Config::for_data_dir(data_dir.path());
    config.admin_password = Some(ADMIN_PASSWORD.to_owned());
    config.webhook_token = Some(WEBHOOK_TOKEN.to_owned());
    configure(&mut config);
    App::spawn(
        config,
        AppOptions {
            clock: clock.clone(),
            notifier: NotifierOptions {
                // Retries in tests: 500 ms, 1 s, 2 s, 4 s — enough to watch, quick to wait for.
                retry_base: std::time::Duration::from_millis(500),
                ..NotifierOptions::default()
            },
        },
    )
    .await
    .expect("the app starts")
}

fn init_test_tracing() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("DOCKER_WATCHER_LOG")
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .with_test_writer()
            .try_init();
    });
}

impl TestApp {
    pub fn app(&self) -> &App {
        self.app.as_ref().expect("the app is running")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// Stops the app and starts it again on the same data dir (the port changes).
    pub async fn restart(&mut self) {
        if let Some(app) = self.app.take() {
            app.stop().await;
        }
        let app = start(&self.data_dir, &self.clock, &*self.configure).await;
        self.base_url = format!("http://{}", app.api_addr());
        self.app = Some(app);
    }

    /// Stops the app, runs `between` (to change its files), and starts it again on the same
    /// data dir.
    pub async fn restart_with(&mut self, between: impl FnOnce()) {
        if let Some(app) = self.app.take() {
            app.stop().await;
        }
        between();
        let app = start(&self.data_dir, &self.clock, &*self.configure).await;
        self.base_url = format!("http://{}", app.api_addr());
        self.app = Some(app);
    }

    /// A client without credentials.
    pub fn anonymous(&self) -> ApiClient {
        ApiClient::new(&self.base_url, Auth::None)
    }

    /// Logs in with a username and password; the client then uses the session cookie and CSRF token.
    pub async fn login(&self, username: &str, password: &str) -> ApiClient {
        login_at(&self.base_url, username, password).await
    }

    /// The bootstrap admin, authenticated by an API token.
    pub async fn admin(&self) -> ApiClient {
        token_client_at(&self.base_url, "admin", ADMIN_PASSWORD).await
    }

    /// A new user with `role`, authenticated by an API token.
    pub async fn user_with_role(&self, username: &str, role: &str) -> ApiClient {
        let admin = self.admin().await;
        let password = format!("{username}-password");
        let (status, body) = admin
            .post(
                "/api/users",
                json!({"username": username, "password": password, "role": role}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let session = self.login(username, &password).await;
        let (status, body) = session.post("/api/tokens", json!({"name": "tests"})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        ApiClient::new(
            &self.base_url,
            Auth::Token(body["token"].as_str().expect("token").to_owned()),
        )
    }

    pub async fn stop(mut self) {
        if let Some(app) = self.app.take() {
            app.stop().await;
        }
    }
}

/// Logs in to the server at `base_url` (any server: a test app, a container); the client uses
/// the session cookie and CSRF token.
pub async fn login_at(base_url: &str, username: &str, password: &str) -> ApiClient {
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .expect("a client");
    let response = client
        .post(format!("{base_url}/api/auth/login"))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .expect("login request");
    assert_eq!(response.status(), StatusCode::OK, "login as {username}");
    let body: Value = response.json().await.expect("login body");
    let csrf = body["csrf_token"].as_str().expect("csrf_token").to_owned();
    ApiClient {
        base_url: base_url.to_owned(),
        client,
        auth: Auth::Session { csrf },
    }
}

/// Logs in to the server at `base_url` and returns a client with a new API token of that user.
pub async fn token_client_at(base_url: &str, username: &str, password: &str) -> ApiClient {
    let (_, client) = new_token_at(base_url, username, password).await;
    client
}

/// A new API token of `username` on the server at `base_url`, and a client using it.
pub async fn new_token_at(base_url: &str, username: &str, password: &str) -> (String, ApiClient) {
    let session = login_at(base_url, username, password).await;
    let (status, body) = session
        .post(
            "/api/tokens",
            json!({"name": format!("tests-{}", rand::random::<u32>())}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let token = body["token"].as_str().expect("token").to_owned();
    (token.clone(), ApiClient::new(base_url, Auth::Token(token)))
}

#[derive(Debug, Clone)]
pub enum Auth {
    None,
    Token(String),
    Session { csrf: String },
}

/// A JSON client of the API with one set of credentials.
#[derive(Debug, Clone)]
pub struct ApiClient {
    pub base_url: String,
    pub client: reqwest::Client,
    pub auth: Auth,
}

impl ApiClient {
    pub fn new(base_url: &str, auth: Auth) -> Self {
        Self {
            base_url: base_url.to_owned(),
            client: reqwest::Client::new(),
            auth,
        }
    }

    /// The same client without the CSRF header (to prove it is required).
    pub fn without_csrf(&self) -> Self {
        Self {
            auth: match &self.auth {
                Auth::Session { .. } => Auth::Session { csrf: String::new() },
                a => a.clone(),
            },
            ..self.clone()
        }
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let builder = self.client.request(method, format!("{}{}", self.base_url, path));
        match &self.auth {
            Auth::None => builder,
            Auth::Token(token) => builder.bearer_auth(token),
            Auth::Session { csrf } if csrf.is_empty() => builder,
            Auth::Session { csrf } => builder.header("X-CSRF-Token", csrf),
        }
    }

    pub async fn send(&self, builder: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let response = builder.send().await.expect("the request is sent");
        let status = response.status();
        let text = response.text().await.expect("a body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, body)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(self.request(reqwest::Method::POST, path).json(&body))
            .await
    }

    pub async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(self.request(reqwest::Method::PATCH, path).json(&body))
            .await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.request(reqwest::Method::DELETE, path)).await
    }

    /// Posts raw bytes with a content type (for malformed-body tests).
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, Value) {
        self.send(
            self.request(reqwest::Method::POST, path)
                .header("content-type", content_type)
                .body(body),
        )
        .await
    }
}

/// Asserts a 4xx validation error naming `field`.
#[track_caller]
pub fn assert_field_error(status: StatusCode, body: &Value, field: &str) {
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "expected 400 for {field}: {body}"
    );
    assert_eq!(body["error"]["code"], "validation", "{body}");
    assert_eq!(body["error"]["field"], field, "{body}");
    assert!(
        body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

/// The real binary, serving on ephemeral ports; SIGKILLed when dropped.
pub struct Binary {
    child: tokio::process::Child,
    pub base_url: String,
}

impl Binary {
    /// Starts `docker-watcher serve` on `data_dir`, its log in `data_dir/stderr.log`.
    pub async fn start(data_dir: &Path) -> Self {
        Self::start_with(data_dir, &data_dir.join("stderr.log"), &[]).await
    }

    /// Starts `docker-watcher serve` on `data_dir` with extra environment variables, its log
    /// (stderr) appended to `log`.
    pub async fn start_with(data_dir: &Path, log: &Path, envs: &[(&str, &str)]) -> Self {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("a log file");
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_docker-watcher"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--proxy-listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(data_dir)
            .env("DOCKER_WATCHER_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_WATCHER_CONFIG")
            .envs(envs.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .expect("the binary starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let base_url = tokio::time::timeout(Duration::from_secs(90), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(url) = line.strip_prefix("docker-watcher listening on ") {
                    return Some(url.trim().to_owned());
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| {
            panic!(
                "the binary never said where it listens:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            )
        });
        // Keep reading stdout so the binary never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { child, base_url }
    }

    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    pub async fn terminate(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        if tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// Logs in as the bootstrap admin of the app at `base_url`; a client with an API token.
pub async fn admin_client(base_url: &str) -> ApiClient {
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .expect("a client");
    let response = client
        .post(format!("{base_url}/api/auth/login"))
        .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .expect("login request");
    assert_eq!(response.status(), StatusCode::OK, "login");
    let body: Value = response.json().await.expect("login body");
    let csrf = body["csrf_token"].as_str().expect("csrf_token").to_owned();
    let session = ApiClient {
        base_url: base_url.to_owned(),
        client,
        auth: Auth::Session { csrf },
    };
    let (status, body) = session.post("/api/tokens", json!({"name": "tests"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    ApiClient::new(
        base_url,
        Auth::Token(body["token"].as_str().expect("token").to_owned()),
    )
}

/// A new user with `role` on the app at `base_url`, created by `admin`; a client with an API
/// token of theirs.
pub async fn user_client(admin: &ApiClient, username: &str, role: &str) -> ApiClient {
    let password = format!("{username}-password");
    let (status, body) = admin
        .post(
            "/api/users",
            json!({"username": username, "password": password, "role": role}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .expect("a client");
    let response = client
        .post(format!("{}/api/auth/login", admin.base_url))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .expect("login request");
    assert_eq!(response.status(), StatusCode::OK, "login as {username}");
    let csrf = response.json::<Value>().await.expect("login body")["csrf_token"]
        .as_str()
        .expect("csrf_token")
        .to_owned();
    let session = ApiClient {
        base_url: admin.base_url.clone(),
        client,
        auth: Auth::Session { csrf },
    };
    let (status, body) = session.post("/api/tokens", json!({"name": "tests"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    ApiClient::new(
        &admin.base_url,
        Auth::Token(body["token"].as_str().expect("token").to_owned()),
    )
}

/// Removes, when dropped — also when the test panics — what one installation left in the shared
/// engine: its containers, volumes and networks (all carry its installation label), and the
/// local images of the test's repositories.
#[derive(Default)]
pub struct InstallationCleanup {
    installation: Option<String>,
    repos: Vec<String>,
}

impl InstallationCleanup {
    /// For an in-process app.
    pub fn new(app: &TestApp) -> Self {
        Self {
            installation: Some(app.app().state().installation_id.to_string()),
            repos: Vec::new(),
        }
    }

    /// Takes the installation id from the label of an instance's container (an app running
    /// as a separate process).
    pub fn installation_of(&mut self, instance: &Value) {
        let container = instance["container_id"].as_str().expect("a container id");
        let output = std::process::Command::new("docker")
            .args([
                "inspect",
                "-f",
                "{{index .Config.Labels \"io.docker-watcher.installation\"}}",
                container,
            ])
            .output()
            .expect("docker inspect runs");
        let id = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        assert!(!id.is_empty(), "the container carries an installation label");
        self.installation = Some(id);
    }

    /// Also removes the local images of `repo` (`REGISTRY/REPO`) at the end.
    pub fn repo(&mut self, repo: &str) {
        self.repos.push(format!("{}/{repo}", crate::testenv::registry()));
    }
}

impl Drop for InstallationCleanup {
    fn drop(&mut self) {
        let docker = |args: &[&str]| {
            std::process::Command::new("docker")
                .args(args)
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        let remove_all = |list: &[&str], remove: &[&str]| {
            let ids = docker(list);
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let mut args = remove.to_vec();
                args.extend(ids);
                docker(&args);
            }
        };
        if let Some(installation) = &self.installation {
            let filter = format!("label=io.docker-watcher.installation={installation}");
            remove_all(&["ps", "-aq", "--filter", &filter], &["rm", "-f"]);
            remove_all(
                &["volume", "ls", "-q", "--filter", &filter],
                &["volume", "rm", "-f"],
            );
            remove_all(&["network", "ls", "-q", "--filter", &filter], &["network", "rm"]);
        }
        for repo in &self.repos {
            remove_all(&["images", "-q", repo], &["rmi", "-f"]);
        }
    }
}
