//! Configuration: a TOML file, `DOCKER_WATCHER_*` environment variables and command-line flags,
//! merged once at start (flags win over env, env over the file, the file over defaults) into a
//! [`Config`] that is valid by construction. Nothing reads the environment after this.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Deserialize;

use crate::domain::duration::HumanDuration;

/// The default config file, read when present.
pub const DEFAULT_CONFIG_FILE: &str = "./docker-watcher.toml";

#[derive(Debug, Parser)]
#[command(
    name = "docker-watcher",
    version,
    about = "Continuous deployment from container registries to Docker"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags shared by every command (they locate the data dir and the config file).
#[derive(Debug, Clone, Default, Args)]
pub struct GlobalArgs {
    /// TOML configuration file.
    #[arg(long, global = true, env = "DOCKER_WATCHER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address of the API and UI listener.
    #[arg(long, global = true, env = "DOCKER_WATCHER_LISTEN")]
    pub listen: Option<String>,
    /// Address of the reverse proxy listener.
    #[arg(long, global = true, env = "DOCKER_WATCHER_PROXY_LISTEN")]
    pub proxy_listen: Option<String>,
    /// Directory of the SQLite database and the key file.
    #[arg(long, global = true, env = "DOCKER_WATCHER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Docker engine address (unix:///var/run/docker.sock, tcp://host:2375).
    #[arg(long, global = true, env = "DOCKER_HOST")]
    pub docker_host: Option<String>,
    /// Log format.
    #[arg(long, global = true, env = "DOCKER_WATCHER_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service.
    Serve,
    /// Check the configuration and print it.
    CheckConfig,
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Write a consistent copy of the store to FILE, also while the server runs.
    Backup {
        /// The backup file to create (never overwritten).
        file: PathBuf,
    },
    /// Replace the data dir's store with a backup (refused while a server runs on it).
    Restore {
        /// A file written by `docker-watcher backup`.
        file: PathBuf,
        /// Replace an existing store (it is moved aside, not deleted).
        #[arg(long)]
        force: bool,
    },
    /// Exit 0 when the local server answers /healthz (for container health checks).
    Healthcheck {
        /// The URL to ask; default: /healthz on the configured listen address.
        #[arg(long)]
        url: Option<String>,
    },
    /// Make a running installation match a stack file (configuration as code).
    Apply(ApplyArgs),
    /// Print a running installation's configuration as a stack file.
    Export(ExportArgs),
}

/// Where a running server is and who is asking (`apply`, `export`).
#[derive(Debug, Clone, Args)]
pub struct RemoteArgs {
    /// The server's API address, like http://127.0.0.1:8080.
    #[arg(long, env = "DOCKER_WATCHER_URL")]
    pub url: String,
    /// An API token (dw_…); prefer the environment variable, which `ps` does not show.
    #[arg(long, env = "DOCKER_WATCHER_TOKEN", hide_env_values = true)]
    pub token: String,
}

#[derive(Debug, Clone, Args)]
pub struct ApplyArgs {
    /// The stack file (TOML); `-` reads standard input.
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// Also delete what the file's sections no longer name.
    #[arg(long)]
    pub prune: bool,
    /// Print what would change and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// Write to this file instead of standard output.
    #[arg(short = 'o', long = "output")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user; the password is read from stdin (or generated with --generate-password).
    Add {
        username: String,
        #[arg(long, default_value = "viewer")]
        role: String,
        #[arg(long)]
        generate_password: bool,
    },
    /// Set a user's password, read from stdin.
    Passwd { username: String },
    /// List users.
    List,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an API token for a user and print it once.
    Create {
        #[arg(long)]
        user: String,
        #[arg(long)]
        name: String,
    },
    /// List API tokens (never the tokens themselves: only their ids, names and use), of one
    /// user or of everyone.
    List {
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke a user's API token by its id (see `token list`); it stops working at once.
    Revoke {
        #[arg(long)]
        user: String,
        id: i64,
    },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

/// The configuration file's shape. Secrets are not accepted here: they come from the
/// environment only, so the file can be committed.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    proxy_listen: Option<String>,
    data_dir: Option<PathBuf>,
    docker_host: Option<String>,
    log_format: Option<LogFormat>,
    proxy_https_listen: Option<String>,
    proxy_redirect_http_to_https: Option<bool>,
    proxy: Option<FileProxyConfig>,
    api: Option<FileApiConfig>,
}

/// The `[api]` table of the configuration file: the API and UI listener's limits.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileApiConfig {
    header_timeout: Option<HumanDuration>,
    idle_timeout: Option<HumanDuration>,
    max_connections: Option<usize>,
}

/// The API and UI listener's limits (`[api]`): a client that sends nothing, trickles its
/// request, stops mid-body or stops reading is closed, and connections are capped, so slow
/// clients cannot pile up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiListenerConfig {
    /// `[api] header_timeout` (default 30s): a request's head must arrive within this long of
    /// the connection opening or the previous response ending — which also closes keep-alive
    /// connections idle for that long.
    pub header_timeout: std::time::Duration,
    /// `[api] idle_timeout` (default 60s): a request body that stops arriving, or a client that
    /// stops reading the response, for this long is cut off.
    pub idle_timeout: std::time::Duration,
    /// `[api] max_connections` (default 512): connections beyond it are answered `503` and
    /// closed at once.
    pub max_connections: usize,
}

impl Default for ApiListenerConfig {
    fn default() -> Self {
        Self {
            header_timeout: std::time::Duration::from_secs(30),
            idle_timeout: std::time::Duration::from_secs(60),
            max_connections: 512,
        }
    }
}

impl ApiListenerConfig {
    fn from_file(file: FileApiConfig) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let config = Self {
            header_timeout: file
                .header_timeout
                .map_or(defaults.header_timeout, |d| d.as_std()),
            idle_timeout: file.idle_timeout.map_or(defaults.idle_timeout, |d| d.as_std()),
            max_connections: file.max_connections.unwrap_or(defaults.max_connections),
        };
        for (key, value) in [
            ("api.header_timeout", config.header_timeout),
            ("api.idle_timeout", config.idle_timeout),
        ] {
            if value.is_zero() {
                return Err(ConfigError::Invalid {
                    key,
                    message: "must be longer than 0s".into(),
                });
            }
        }
        if config.max_connections == 0 {
            return Err(ConfigError::Invalid {
                key: "api.max_connections",
                message: "must be at least 1".into(),
            });
        }
        Ok(config)
    }
}

/// The `[proxy]` table of the configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileProxyConfig {
    connect_timeout: Option<HumanDuration>,
    response_timeout: Option<HumanDuration>,
    idle_timeout: Option<HumanDuration>,
    client_body_timeout: Option<HumanDuration>,
    #[serde(default)]
    tls: Vec<TlsCertificateConfig>,
}

/// One `[[proxy.tls]]` entry: the certificate and key PEM files for a hostname or a wildcard
/// (`*.example.com`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsCertificateConfig {
    pub hostname: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The reverse proxy's configuration beyond its plain listener (`proxy_listen`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// The HTTPS listener (`proxy_https_listen`; `0.0.0.0:8443` when certificates are given
    /// without it). None: plain HTTP only.
    pub https_listen: Option<SocketAddr>,
    /// Redirect plain-HTTP requests for routed hosts to HTTPS (`proxy_redirect_http_to_https`).
    pub redirect_http_to_https: bool,
    /// `[[proxy.tls]]`: certificates by hostname, chosen by SNI.
    pub tls: Vec<TlsCertificateConfig>,
    /// `[proxy] connect_timeout` (default 5s): connecting to an upstream.
    pub connect_timeout: std::time::Duration,
    /// `[proxy] response_timeout` (default 60s): waiting for an upstream's response headers.
    pub response_timeout: std::time::Duration,
    /// `[proxy] idle_timeout` (default 60s): an upstream silent mid-body, or a client idle
    /// between requests.
    pub idle_timeout: std::time::Duration,
    /// `[proxy] client_body_timeout` (default 60s): a client silent while sending a request
    /// body gets `408`.
    pub client_body_timeout: std::time::Duration,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            https_listen: None,
            redirect_http_to_https: false,
            tls: Vec::new(),
            connect_timeout: std::time::Duration::from_secs(5),
            response_timeout: std::time::Duration::from_secs(60),
            idle_timeout: std::time::Duration::from_secs(60),
            client_body_timeout: std::time::Duration::from_secs(60),
        }
    }
}

/// The validated configuration.
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    pub listen: SocketAddr,
    pub proxy_listen: SocketAddr,
    pub data_dir: PathBuf,
    pub docker_host: Option<String>,
    pub log_format: LogFormat,
    /// The bootstrap admin's password (first start only).
    pub admin_password: Option<String>,
    /// The key for secrets at rest; else a key file in the data dir.
    pub secret_key: Option<String>,
    /// The webhook token; else generated once and kept in the store.
    pub webhook_token: Option<String>,
    /// The reverse proxy's TLS, redirect and timeouts.
    pub proxy: ProxyConfig,
    /// `DOCKER_WATCHER_DATABASE_URL`: unset (or `sqlite:`) is the SQLite store in the data dir.
    /// A `postgres://` URL is recognised so that `backup` can point at `pg_dump`; this version
    /// serves from SQLite only.
    pub database_url: Option<String>,
    /// The API listener's timeouts and connection cap.
    pub api: ApiListenerConfig,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redact = |v: &Option<String>| if v.is_some() { "(set)" } else { "(unset)" };
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("proxy_listen", &self.proxy_listen)
            .field("proxy", &self.proxy)
            .field("api", &self.api)
            .field("data_dir", &self.data_dir)
            .field("docker_host", &self.docker_host)
            .field("log_format", &self.log_format)
            .field("admin_password", &redact(&self.admin_password))
            .field("secret_key", &redact(&self.secret_key))
            .field("webhook_token", &redact(&self.webhook_token))
            .field("database_url", &redact(&self.database_url))
            .finish()
    }
}

/// The secrets that only come from the environment.
#[derive(Debug, Default, Clone)]
pub struct SecretEnv {
    pub admin_password: Option<String>,
    pub secret_key: Option<String>,
    pub webhook_token: Option<String>,
    /// A database URL can carry a password, so it is accepted from the environment only.
    pub database_url: Option<String>,
}

impl SecretEnv {
    pub fn from_process_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Self {
            admin_password: var("DOCKER_WATCHER_ADMIN_PASSWORD"),
            secret_key: var("DOCKER_WATCHER_SECRET_KEY"),
            webhook_token: var("DOCKER_WATCHER_WEBHOOK_TOKEN"),
            database_url: var("DOCKER_WATCHER_DATABASE_URL"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{key}: {message}")]
    Invalid { key: &'static str, message: String },
}

impl Config {
    /// The configuration as the TOML file spells it, for `check-config`: every value in force,
    /// whether it came from a flag, the environment, the file or a default. Secrets are accepted
    /// from the environment only; they appear as comments saying whether each is set, never
    /// with their values.
    pub fn to_redacted_toml(&self) -> String {
        use toml::{Table, Value};
        fn duration(d: std::time::Duration) -> Value {
            Value::from(if d.subsec_millis() == 0 {
                format!("{}s", d.as_secs())
            } else {
                format!("{}ms", d.as_millis())
            })
        }
        let mut table = Table::new();
        table.insert("listen".into(), Value::from(self.listen.to_string()));
        table.insert("proxy_listen".into(), Value::from(self.proxy_listen.to_string()));
        table.insert(
            "data_dir".into(),
            Value::from(self.data_dir.display().to_string()),
        );
        if let Some(host) = &self.docker_host {
            table.insert("docker_host".into(), Value::from(host.clone()));
        }
        let format = match self.log_format {
            LogFormat::Pretty => "pretty",
            LogFormat::Json => "json",
        };
        table.insert("log_format".into(), Value::from(format));
        if let Some(addr) = self.proxy.https_listen {
            table.insert("proxy_https_listen".into(), Value::from(addr.to_string()));
        }
        table.insert(
            "proxy_redirect_http_to_https".into(),
            Value::from(self.proxy.redirect_http_to_https),
        );
        let mut proxy = Table::new();
        proxy.insert("connect_timeout".into(), duration(self.proxy.connect_timeout));
        proxy.insert("response_timeout".into(), duration(self.proxy.response_timeout));
        proxy.insert("idle_timeout".into(), duration(self.proxy.idle_timeout));
        if !self.proxy.tls.is_empty() {
            let certificates = self
                .proxy
                .tls
                .iter()
                .map(|t| {
                    let mut entry = Table::new();
                    entry.insert("hostname".into(), Value::from(t.hostname.clone()));
                    entry.insert("cert".into(), Value::from(t.cert.display().to_string()));
                    entry.insert("key".into(), Value::from(t.key.display().to_string()));
                    Value::Table(entry)
                })
                .collect();
            proxy.insert("tls".into(), Value::Array(certificates));
        }
        table.insert("proxy".into(), Value::Table(proxy));
        let set = |v: &Option<String>| if v.is_some() { "set (not shown)" } else { "not set" };
        format!(
            "# docker-watcher: the configuration in force (flags, environment, file, defaults).\n\
             # Secrets come from the environment only:\n\
             #   DOCKER_WATCHER_ADMIN_PASSWORD: {}\n\
             #   DOCKER_WATCHER_SECRET_KEY: {}\n\
             #   DOCKER_WATCHER_WEBHOOK_TOKEN: {}\n\n{}",
            set(&self.admin_password),
            if self.secret_key.is_some() {
                "set (not shown)"
            } else {
                "not set: the key file secret.key in the data dir"
            },
            if self.webhook_token.is_some() {
                "set (not shown)"
            } else {
                "not set: generated once and kept in the store"
            },
            toml::to_string(&table).unwrap_or_default()
        )
    }

    /// A configuration for tests and embedding: everything on loopback with OS-chosen ports.
    pub fn for_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen: "127.0.0.1:0".parse().expect("valid address"),
            proxy_listen: "127.0.0.1:0".parse().expect("valid address"),
            data_dir: data_dir.into(),
            docker_host: None,
            log_format: LogFormat::Pretty,
            admin_password: None,
            secret_key: None,
            webhook_token: None,
            proxy: ProxyConfig::default(),
            database_url: None,
            api: ApiListenerConfig::default(),
        }
    }

    /// Whether `DOCKER_WATCHER_DATABASE_URL` names a PostgreSQL database.
    pub fn database_is_postgres(&self) -> bool {
        self.database_url
            .as_deref()
            .is_some_and(|url| url.starts_with("postgres://") || url.starts_with("postgresql://"))
    }

    /// Merges flags/env (already merged by clap), the config file and defaults, and validates.
    pub fn load(args: &GlobalArgs, secrets: SecretEnv) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None if Path::new(DEFAULT_CONFIG_FILE).exists() => read_file(Path::new(DEFAULT_CONFIG_FILE))?,
            None => FileConfig::default(),
        };
        let listen = args
            .listen
            .clone()
            .or(file.listen)
            .unwrap_or_else(|| "127.0.0.1:8080".to_owned());
        let proxy_listen = args
            .proxy_listen
            .clone()
            .or(file.proxy_listen)
            .unwrap_or_else(|| "0.0.0.0:8000".to_owned());
        let data_dir = args
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("./data"));
        let docker_host = args
            .docker_host
            .clone()
            .or(file.docker_host)
            .filter(|h| !h.is_empty());
        let log_format = args.log_format.or(file.log_format).unwrap_or_default();
        let proxy = proxy_config(
            file.proxy.unwrap_or_default(),
            file.proxy_https_listen,
            file.proxy_redirect_http_to_https,
        )?;
        let api = ApiListenerConfig::from_file(file.api.unwrap_or_default())?;

        let config = Config {
            listen: parse_addr("listen", &listen)?,
            proxy_listen: parse_addr("proxy_listen", &proxy_listen)?,
            data_dir,
            docker_host,
            log_format,
            admin_password: secrets.admin_password,
            secret_key: secrets.secret_key,
            webhook_token: secrets.webhook_token,
            proxy,
            database_url: secrets.database_url,
            api,
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::Invalid {
                key: "data_dir",
                message: "must not be empty".into(),
            });
        }
        if self.data_dir.exists() && !self.data_dir.is_dir() {
            return Err(ConfigError::Invalid {
                key: "data_dir",
                message: format!("{} exists and is not a directory", self.data_dir.display()),
            });
        }
        if let Some(host) = &self.docker_host {
            let known = ["unix://", "tcp://", "http://"]
                .iter()
                .any(|p| host.starts_with(p))
                || host.starts_with('/');
            if !known {
                return Err(ConfigError::Invalid {
                    key: "docker_host",
                    message: format!("'{host}' must start with unix://, tcp:// or http://"),
                });
            }
        }
        if let Some(pw) = &self.admin_password
            && crate::domain::user::Password::parse(pw).is_err()
        {
            return Err(ConfigError::Invalid {
                key: "DOCKER_WATCHER_ADMIN_PASSWORD",
                message: "must be 8 to 1024 characters".into(),
            });
        }
        if let Some(token) = &self.webhook_token
            && token.len() < 16
        {
            return Err(ConfigError::Invalid {
                key: "DOCKER_WATCHER_WEBHOOK_TOKEN",
                message: "must be at least 16 characters".into(),
            });
        }
        if let Some(url) = &self.database_url
            && !(url.starts_with("sqlite:") || self.database_is_postgres())
        {
            return Err(ConfigError::Invalid {
                key: "DOCKER_WATCHER_DATABASE_URL",
                message: "must be a postgres:// or sqlite: URL".into(),
            });
        }
        if self.listen == self.proxy_listen && self.listen.port() != 0 {
            return Err(ConfigError::Invalid {
                key: "proxy_listen",
                message: format!("must differ from listen ({})", self.listen),
            });
        }
        self.proxy.validate(self.listen, self.proxy_listen)
    }
}

/// Merges the proxy's file settings with their defaults.
fn proxy_config(
    file: FileProxyConfig,
    https_listen: Option<String>,
    redirect: Option<bool>,
) -> Result<ProxyConfig, ConfigError> {
    let defaults = ProxyConfig::default();
    let https_listen = match https_listen {
        Some(raw) => Some(parse_addr("proxy_https_listen", &raw)?),
        None if !file.tls.is_empty() => Some(parse_addr("proxy_https_listen", "0.0.0.0:8443")?),
        None => None,
    };
    Ok(ProxyConfig {
        https_listen,
        redirect_http_to_https: redirect.unwrap_or(false),
        tls: file.tls,
        connect_timeout: file
            .connect_timeout
            .map_or(defaults.connect_timeout, |d| d.as_std()),
        response_timeout: file
            .response_timeout
            .map_or(defaults.response_timeout, |d| d.as_std()),
        idle_timeout: file.idle_timeout.map_or(defaults.idle_timeout, |d| d.as_std()),
        client_body_timeout: file
            .client_body_timeout
            .map_or(defaults.client_body_timeout, |d| d.as_std()),
    })
}

impl ProxyConfig {
    /// Checks what can be checked before the listeners start: a certificate for HTTPS, valid
    /// hostnames, and readable certificate and key files (so a typo fails at start, naming the
    /// key, not at the first handshake).
    fn validate(&self, listen: SocketAddr, proxy_listen: SocketAddr) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, message: String| ConfigError::Invalid { key, message };
        if let Some(https) = self.https_listen {
            if self.tls.is_empty() {
                return Err(invalid(
                    "proxy_https_listen",
                    "needs at least one [[proxy.tls]] certificate".into(),
                ));
            }
            if https.port() != 0 && (https == listen || https == proxy_listen) {
                return Err(invalid(
                    "proxy_https_listen",
                    format!("must differ from listen and proxy_listen ({https})"),
                ));
            }
        }
        if self.redirect_http_to_https && self.tls.is_empty() {
            return Err(invalid(
                "proxy_redirect_http_to_https",
                "needs at least one [[proxy.tls]] certificate".into(),
            ));
        }
        for (i, entry) in self.tls.iter().enumerate() {
            let which = format!("entry {} ({})", i + 1, entry.hostname);
            if let Err(e) = crate::domain::hostname::Hostname::parse_wildcard(&entry.hostname) {
                return Err(invalid("proxy.tls.hostname", format!("{which}: {e}")));
            }
            for (key, path) in [("proxy.tls.cert", &entry.cert), ("proxy.tls.key", &entry.key)] {
                if let Err(e) = std::fs::File::open(path) {
                    return Err(invalid(
                        key,
                        format!("{which}: cannot read {}: {e}", path.display()),
                    ));
                }
            }
        }
        Ok(())
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let raw = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&raw).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

fn parse_addr(key: &'static str, raw: &str) -> Result<SocketAddr, ConfigError> {
    raw.parse().map_err(|_| ConfigError::Invalid {
        key,
        message: format!("'{raw}' is not a socket address like 127.0.0.1:8080"),
    })
}

#[cfg(test)]
mod redaction_tests {
    use super::*;

    #[test]
    fn check_config_prints_toml_that_reads_back_and_never_shows_a_secret() {
        let mut config = Config::for_data_dir("/var/lib/dw");
        config.admin_password = Some("admin-secret-1".into());
        config.secret_key = Some("key-secret-2".into());
        config.proxy.tls.push(TlsCertificateConfig {
            hostname: "*.example.com".into(),
            cert: "/etc/dw/cert.pem".into(),
            key: "/etc/dw/key.pem".into(),
        });
        let text = config.to_redacted_toml();
        assert!(
            !text.contains("admin-secret-1") && !text.contains("key-secret-2"),
            "{text}"
        );
        assert!(
            text.contains("DOCKER_WATCHER_ADMIN_PASSWORD: set (not shown)"),
            "{text}"
        );
        assert!(text.contains("DOCKER_WATCHER_WEBHOOK_TOKEN: not set"), "{text}");
        let file: FileConfig = toml::from_str(&text).expect("the printed configuration is a valid file");
        assert_eq!(
            file.data_dir.as_deref(),
            Some(std::path::Path::new("/var/lib/dw"))
        );
        assert_eq!(file.proxy.expect("a [proxy] table").tls.len(), 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> GlobalArgs {
        GlobalArgs {
            config: Some(PathBuf::from("/nonexistent/none.toml")),
            ..Default::default()
        }
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9001\"\nproxy_listen = \"127.0.0.1:9002\"\n",
        )
        .unwrap();
        let mut a = GlobalArgs {
            config: Some(file),
            ..Default::default()
        };
        let c = Config::load(&a, SecretEnv::default()).unwrap();
        assert_eq!(c.listen.port(), 9001);
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        a.listen = Some("127.0.0.1:9003".into());
        assert_eq!(
            Config::load(&a, SecretEnv::default()).unwrap().listen.port(),
            9003
        );
    }

    #[test]
    fn a_missing_explicit_config_file_is_an_error() {
        assert!(matches!(
            Config::load(&args(), SecretEnv::default()),
            Err(ConfigError::Read { .. })
        ));
    }

    #[test]
    fn bad_values_name_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "listen = \"nowhere\"\n").unwrap();
        let a = GlobalArgs {
            config: Some(file.clone()),
            ..Default::default()
        };
        let err = Config::load(&a, SecretEnv::default()).unwrap_err();
        assert!(err.to_string().starts_with("listen:"), "{err}");
        std::fs::write(&file, "colour = \"red\"\n").unwrap();
        let err = Config::load(&a, SecretEnv::default()).unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
        std::fs::write(&file, "").unwrap();
        let a = GlobalArgs {
            config: Some(file),
            docker_host: Some("ftp://x".into()),
            ..Default::default()
        };
        assert!(
            Config::load(&a, SecretEnv::default())
                .unwrap_err()
                .to_string()
                .starts_with("docker_host:")
        );
    }

    #[test]
    fn the_api_listener_limits_come_from_the_api_table_and_are_validated() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        let load = |toml: &str| {
            std::fs::write(&file, toml).unwrap();
            let a = GlobalArgs {
                config: Some(file.clone()),
                ..Default::default()
            };
            Config::load(&a, SecretEnv::default())
        };
        assert_eq!(load("").unwrap().api, ApiListenerConfig::default());
        let api = load("[api]\nheader_timeout = \"5s\"\nidle_timeout = \"2m\"\nmax_connections = 64\n")
            .unwrap()
            .api;
        assert_eq!(api.header_timeout, std::time::Duration::from_secs(5));
        assert_eq!(api.idle_timeout, std::time::Duration::from_secs(120));
        assert_eq!(api.max_connections, 64);
        let err = load("[api]\nmax_connections = 0\n").unwrap_err().to_string();
        assert!(err.starts_with("api.max_connections:"), "{err}");
        let err = load("[api]\nheader_timout = \"5s\"\n").unwrap_err().to_string();
        assert!(err.contains("header_timout"), "{err}");
    }

    #[test]
    fn proxy_tls_settings_are_validated_at_start_naming_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        let load = |toml: &str| {
            std::fs::write(&file, toml).unwrap();
            let a = GlobalArgs {
                config: Some(file.clone()),
                ..Default::default()
            };
            Config::load(&a, SecretEnv::default())
        };
        let err = load("[[proxy.tls]]\nhostname = \"app.example.test\"\ncert = \"/nonexistent/c.pem\"\nkey = \"/nonexistent/k.pem\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("proxy.tls.cert:"), "{err}");
        assert!(err.contains("/nonexistent/c.pem"), "{err}");
        let err = load("proxy_redirect_http_to_https = true\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("proxy_redirect_http_to_https:"), "{err}");
        let err = load("proxy_https_listen = \"127.0.0.1:8443\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("proxy_https_listen:"), "{err}");

        let pem = dir.path().join("x.pem");
        std::fs::write(&pem, "").unwrap();
        let toml = format!(
            "[proxy]\nresponse_timeout = \"1s\"\n[[proxy.tls]]\nhostname = \"*.example.test\"\ncert = {pem:?}\nkey = {pem:?}\n"
        );
        let config = load(&toml).unwrap();
        assert_eq!(config.proxy.https_listen, Some("0.0.0.0:8443".parse().unwrap()));
        assert_eq!(config.proxy.response_timeout, std::time::Duration::from_secs(1));
        assert_eq!(config.proxy.connect_timeout, std::time::Duration::from_secs(5));
    }
}
