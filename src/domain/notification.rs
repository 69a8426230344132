//! Notification channels (SPEC §3 "Notifications"): where docker-watcher tells people what
//! happened — a JSON webhook, Slack, Discord, ntfy, Gotify or email — and which events each one
//! forwards ([`NotificationRule`]). A channel's configuration is parsed here per kind: the
//! settings that are not secret ([`ChannelSettings`]) and the secrets ([`ChannelSecrets`]: URLs
//! that carry tokens, passwords, signing secrets), which are write-only — the store keeps them
//! sealed and the API only ever says which are set. Parse errors never quote a secret.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ParseError;
use super::event::{Event, EventKind, Severity, Source};

/// The kinds of channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    /// A POST of the events as JSON, optionally signed with HMAC-SHA256.
    Webhook,
    /// A Slack incoming webhook (`{"text"}`; Mattermost and Discord's `/slack` URLs speak it).
    Slack,
    /// A Discord webhook (`{"content"}`).
    Discord,
    /// A POST of the text to an ntfy topic URL with `Title`, `Priority` and `Tags`.
    Ntfy,
    /// A Gotify server's `/message?token=` endpoint.
    Gotify,
    /// Mail over SMTP (STARTTLS, implicit TLS, or plain for a local relay).
    Email,
}

impl ChannelKind {
    pub const ALL: [ChannelKind; 6] = [
        Self::Webhook,
        Self::Slack,
        Self::Discord,
        Self::Ntfy,
        Self::Gotify,
        Self::Email,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::Slack => "slack",
            Self::Discord => "discord",
            Self::Ntfy => "ntfy",
            Self::Gotify => "gotify",
            Self::Email => "email",
        }
    }

    /// The secrets this kind knows, and whether each is required.
    pub fn secret_fields(self) -> &'static [(&'static str, bool)] {
        match self {
            Self::Webhook => &[("url", true), ("signing_secret", false)],
            Self::Slack | Self::Discord => &[("url", true)],
            Self::Ntfy => &[("url", true), ("token", false)],
            Self::Gotify => &[("token", true)],
            Self::Email => &[("password", false)],
        }
    }
}

impl fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ChannelKind {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| {
            ParseError::new(format!(
                "unknown channel kind '{s}': expected one of webhook, slack, discord, ntfy, gotify, email"
            ))
        })
    }
}

/// A configuration error of a channel, naming the field it is about (`secrets.url`,
/// `settings.smtp_host`, `rule.min_severity`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ChannelFieldError {
    pub field: String,
    pub message: String,
}

impl ChannelFieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Which events a channel forwards. Every condition must hold; an empty list means "any".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationRule {
    /// Events below this severity are not forwarded.
    pub min_severity: Severity,
    #[serde(default)]
    pub sources: Vec<Source>,
    #[serde(default)]
    pub project_ids: Vec<i64>,
    /// Event kinds (deploy failed, stale found, …). When set, events without a kind never match.
    #[serde(default)]
    pub kinds: Vec<EventKind>,
}

impl Default for NotificationRule {
    fn default() -> Self {
        Self {
            min_severity: Severity::Warn,
            sources: Vec::new(),
            project_ids: Vec::new(),
            kinds: Vec::new(),
        }
    }
}

impl NotificationRule {
    /// Whether the rule forwards `event`.
    pub fn matches(&self, event: &Event) -> bool {
        event.severity >= self.min_severity
            && (self.sources.is_empty() || self.sources.contains(&event.source))
            && (self.project_ids.is_empty()
                || event.project_id.is_some_and(|id| self.project_ids.contains(&id)))
            && (self.kinds.is_empty() || event.kind().is_some_and(|kind| self.kinds.contains(&kind)))
    }

    /// Sorts and de-duplicates the lists, so a stored rule reads the same however it was given.
    pub fn normalized(mut self) -> Self {
        self.sources.sort_by_key(|s| s.as_str());
        self.sources.dedup();
        self.project_ids.sort_unstable();
        self.project_ids.dedup();
        self.kinds.sort();
        self.kinds.dedup();
        self
    }
}

/// An `http://` or `https://` URL a channel posts to. The parse errors never quote it: such URLs
/// carry tokens.
#[derive(Clone, PartialEq, Eq)]
pub struct ChannelUrl(url::Url);

impl fmt::Debug for ChannelUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChannelUrl({})", self.hint())
    }
}

impl ChannelUrl {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let url = url::Url::parse(raw.trim()).map_err(|e| ParseError::new(format!("not a URL ({e})")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ParseError::new("must be an http:// or https:// URL"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(ParseError::new("the URL needs a host"));
        }
        if url.fragment().is_some() {
            return Err(ParseError::new("the URL must not have a #fragment"));
        }
        Ok(Self(url))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub fn url(&self) -> &url::Url {
        &self.0
    }

    /// What may be shown of it: scheme, host and port, the rest elided
    /// (`https://hooks.slack.com/…`).
    pub fn hint(&self) -> String {
        let host = self.0.host_str().unwrap_or("?");
        let port = self.0.port().map(|p| format!(":{p}")).unwrap_or_default();
        format!("{}://{host}{port}/…", self.0.scheme())
    }
}

/// How an email channel talks to its SMTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain SMTP upgraded with `STARTTLS`, which must succeed (port 587 by default).
    Starttls,
    /// TLS from the first byte, "SMTPS" (port 465 by default).
    Tls,
    /// No encryption: only for a relay on the same host or network (port 25 by default).
    None,
}

impl SmtpTls {
    pub fn default_port(self) -> u16 {
        match self {
            Self::Starttls => 587,
            Self::Tls => 465,
            Self::None => 25,
        }
    }
}

/// The settings of an ntfy channel.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NtfySettings {
    /// 1 (min) to 5 (max); by default derived from the severity.
    #[serde(default)]
    pub priority: Option<u8>,
    /// Tags (emoji short codes) added to every message; by default one per severity.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// The settings of a Gotify channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GotifySettings {
    /// The server's base URL (`https://gotify.example.com`); the token is a secret.
    pub url: String,
    /// 0 to 10; by default derived from the severity.
    #[serde(default)]
    pub priority: Option<u8>,
}

/// The settings of an email channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailSettings {
    pub smtp_host: String,
    /// By default the port of the TLS mode (587, 465 or 25).
    #[serde(default)]
    pub smtp_port: Option<u16>,
    pub tls: SmtpTls,
    /// The sender, `docker-watcher@example.com` or `Watcher <dw@example.com>`.
    pub from: String,
    /// One or more recipients.
    pub to: Vec<String>,
    /// Login to the server, with the secret `password`.
    #[serde(default)]
    pub username: Option<String>,
    /// A PEM certificate to trust besides the system's roots (a private CA).
    #[serde(default)]
    pub ca_pem: Option<String>,
}

impl EmailSettings {
    pub fn port(&self) -> u16 {
        self.smtp_port.unwrap_or_else(|| self.tls.default_port())
    }
}

/// A channel's settings that are not secret, by kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelSettings {
    Webhook,
    Slack,
    Discord,
    Ntfy(NtfySettings),
    Gotify(GotifySettings),
    Email(EmailSettings),
}

impl ChannelSettings {
    /// Parses the settings of a channel of `kind` (`null` or absent is `{}`).
    pub fn parse(kind: ChannelKind, value: &serde_json::Value) -> Result<Self, ChannelFieldError> {
        let value = if value.is_null() {
            serde_json::Value::Object(Default::default())
        } else {
            value.clone()
        };
        let settings = match kind {
            ChannelKind::Webhook | ChannelKind::Slack | ChannelKind::Discord => {
                let empty = value.as_object().is_some_and(serde_json::Map::is_empty);
                if !empty {
                    return Err(ChannelFieldError::new(
                        "settings",
                        format!("a {kind} channel has no settings (its URL is a secret)"),
                    ));
                }
                match kind {
                    ChannelKind::Webhook => Self::Webhook,
                    ChannelKind::Slack => Self::Slack,
                    _ => Self::Discord,
                }
            }
            ChannelKind::Ntfy => {
                let s: NtfySettings = from_value(value)?;
                if let Some(p) = s.priority
                    && !(1..=5).contains(&p)
                {
                    return Err(ChannelFieldError::new("settings.priority", "must be 1 to 5"));
                }
                for tag in &s.tags {
                    if tag.is_empty() || tag.len() > 64 || tag.contains(',') || !tag.is_ascii() {
                        return Err(ChannelFieldError::new(
                            "settings.tags",
                            "each tag must be 1 to 64 ASCII characters without commas",
                        ));
                    }
                }
                Self::Ntfy(s)
            }
            ChannelKind::Gotify => {
                let mut s: GotifySettings = from_value(value)?;
                let url =
                    ChannelUrl::parse(&s.url).map_err(|e| ChannelFieldError::new("settings.url", e.0))?;
                s.url = url.as_str().trim_end_matches('/').to_owned();
                if let Some(p) = s.priority
                    && p > 10
                {
                    return Err(ChannelFieldError::new("settings.priority", "must be 0 to 10"));
                }
                Self::Gotify(s)
            }
            ChannelKind::Email => {
                let mut s: EmailSettings = from_value(value)?;
                s.smtp_host = s.smtp_host.trim().to_owned();
                if s.smtp_host.is_empty()
                    || s.smtp_host.len() > 253
                    || s.smtp_host
                        .contains(|c: char| c.is_whitespace() || c == '/' || c == '@')
                {
                    return Err(ChannelFieldError::new(
                        "settings.smtp_host",
                        "must be a host name or IP address",
                    ));
                }
                if s.smtp_port == Some(0) {
                    return Err(ChannelFieldError::new("settings.smtp_port", "must be 1 to 65535"));
                }
                s.from = parse_mailbox(&s.from).map_err(|e| ChannelFieldError::new("settings.from", e.0))?;
                if s.to.is_empty() || s.to.len() > 50 {
                    return Err(ChannelFieldError::new("settings.to", "needs 1 to 50 recipients"));
                }
                s.to =
                    s.to.iter()
                        .map(|to| parse_mailbox(to))
                        .collect::<Result<_, _>>()
                        .map_err(|e| ChannelFieldError::new("settings.to", e.0))?;
                s.username = s.username.map(|u| u.trim().to_owned()).filter(|u| !u.is_empty());
                if let Some(pem) = &s.ca_pem {
                    if pem.trim().is_empty() {
                        s.ca_pem = None;
                    } else if !pem.contains("-----BEGIN CERTIFICATE-----") {
                        return Err(ChannelFieldError::new(
                            "settings.ca_pem",
                            "must be a PEM certificate (-----BEGIN CERTIFICATE-----)",
                        ));
                    }
                }
                Self::Email(s)
            }
        };
        Ok(settings)
    }

    pub fn kind(&self) -> ChannelKind {
        match self {
            Self::Webhook => ChannelKind::Webhook,
            Self::Slack => ChannelKind::Slack,
            Self::Discord => ChannelKind::Discord,
            Self::Ntfy(_) => ChannelKind::Ntfy,
            Self::Gotify(_) => ChannelKind::Gotify,
            Self::Email(_) => ChannelKind::Email,
        }
    }

    /// The settings as the API shows them and the store keeps them.
    pub fn to_json(&self) -> serde_json::Value {
        let value = match self {
            Self::Webhook | Self::Slack | Self::Discord => Ok(serde_json::json!({})),
            Self::Ntfy(s) => serde_json::to_value(s),
            Self::Gotify(s) => serde_json::to_value(s),
            Self::Email(s) => serde_json::to_value(s),
        };
        // Plain structs of strings and numbers always serialize.
        value.unwrap_or_default()
    }
}

fn from_value<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, ChannelFieldError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." || path.is_empty() {
            "settings".to_owned()
        } else {
            format!("settings.{path}")
        };
        // serde's own messages name fields and types, never values of secrets (there are none here).
        ChannelFieldError::new(field, e.into_inner().to_string())
    })
}

/// Checks a mailbox (`dw@example.com` or `Name <dw@example.com>`) enough to refuse what no
/// server would take; the SMTP client parses it fully when it sends.
fn parse_mailbox(raw: &str) -> Result<String, ParseError> {
    let raw = raw.trim();
    let address = match (raw.rfind('<'), raw.strip_suffix('>')) {
        (Some(open), Some(rest)) => &rest[open + 1..],
        _ => raw,
    };
    let valid = address
        .split_once('@')
        .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty() && !domain.contains('@'))
        && !address.contains(char::is_whitespace)
        && !raw.contains(char::is_control);
    if valid && raw.len() <= 320 {
        Ok(raw.to_owned())
    } else {
        Err(ParseError::new(format!("'{raw}' is not an email address")))
    }
}

/// A channel's secrets by name. Its `Debug` never shows a value.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ChannelSecrets(BTreeMap<String, String>);

impl fmt::Debug for ChannelSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// A change to a channel's secrets: a value sets one, `None` removes it, absent keys are kept.
pub type SecretsPatch = BTreeMap<String, Option<String>>;

impl ChannelSecrets {
    /// Applies `patch` and checks the result against what `kind` knows and requires.
    pub fn patched(&self, kind: ChannelKind, patch: &SecretsPatch) -> Result<Self, ChannelFieldError> {
        let mut secrets = self.0.clone();
        for (key, value) in patch {
            let field = format!("secrets.{key}");
            if !kind.secret_fields().iter().any(|(name, _)| name == key) {
                let known: Vec<&str> = kind.secret_fields().iter().map(|(n, _)| *n).collect();
                return Err(ChannelFieldError::new(
                    field,
                    format!(
                        "a {kind} channel has no such secret (it knows {})",
                        known.join(", ")
                    ),
                ));
            }
            match value.as_deref().map(str::trim) {
                None | Some("") => {
                    secrets.remove(key);
                }
                Some(value) => {
                    if value.len() > 4096 || value.contains(char::is_control) {
                        return Err(ChannelFieldError::new(
                            field,
                            "must be at most 4096 characters without control characters",
                        ));
                    }
                    if key == "url" {
                        ChannelUrl::parse(value).map_err(|e| ChannelFieldError::new(&field, e.0))?;
                    }
                    secrets.insert(key.clone(), value.to_owned());
                }
            }
        }
        for (name, required) in kind.secret_fields() {
            if *required && !secrets.contains_key(*name) {
                return Err(ChannelFieldError::new(
                    format!("secrets.{name}"),
                    format!("a {kind} channel needs it"),
                ));
            }
        }
        Ok(Self(secrets))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// The URL secret, parsed (it was checked when set).
    pub fn url(&self) -> Option<ChannelUrl> {
        self.get("url").and_then(|raw| ChannelUrl::parse(raw).ok())
    }

    pub fn keys(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.0).unwrap_or_default()
    }

    pub fn from_json(raw: &str) -> Result<Self, ParseError> {
        serde_json::from_str(raw)
            .map(Self)
            .map_err(|e| ParseError::new(format!("sealed channel secrets do not parse: {e}")))
    }
}

/// A channel, as stored (its secrets apart, sealed).
#[derive(Debug, Clone, PartialEq)]
pub struct Channel {
    pub id: i64,
    pub name: String,
    pub kind: ChannelKind,
    pub enabled: bool,
    pub settings: ChannelSettings,
    /// The names of the secrets that are set.
    pub secret_keys: Vec<String>,
    pub rule: NotificationRule,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A channel about to be created, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct NewChannel {
    pub name: String,
    pub enabled: bool,
    pub settings: ChannelSettings,
    pub secrets: ChannelSecrets,
    pub rule: NotificationRule,
}

/// A change to a channel: absent fields are kept. Settings are replaced whole (they are checked
/// against the channel's kind, which never changes); secrets are patched key by key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChannelPatch {
    pub name: Option<String>,
    pub enabled: Option<bool>,
    pub settings: Option<serde_json::Value>,
    pub secrets: SecretsPatch,
    pub rule: Option<NotificationRule>,
}

/// Parses a channel's name: 1 to 100 characters, no control characters.
pub fn parse_channel_name(raw: &str) -> Result<String, ParseError> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ParseError::new("must be 1 to 100 characters"));
    }
    if name.chars().any(char::is_control) {
        return Err(ParseError::new("must not contain control characters"));
    }
    Ok(name.to_owned())
}

/// How one delivery attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    Delivered,
    /// Failed; the message will be tried again.
    Retrying,
    /// Failed for good: the last attempt, an error retrying cannot fix, or a test.
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Retrying => "retrying",
            Self::Failed => "failed",
        }
    }
}

impl FromStr for DeliveryStatus {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "delivered" => Ok(Self::Delivered),
            "retrying" => Ok(Self::Retrying),
            "failed" => Ok(Self::Failed),
            _ => Err(ParseError::new(format!("unknown delivery status '{s}'"))),
        }
    }
}

/// One entry of the delivery log.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub id: i64,
    pub channel_id: i64,
    pub at: DateTime<Utc>,
    pub status: DeliveryStatus,
    pub is_test: bool,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub event_count: u32,
    /// The message's title.
    pub summary: String,
    pub http_status: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// A delivery attempt about to be logged.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDelivery {
    pub channel_id: i64,
    pub at: DateTime<Utc>,
    pub status: DeliveryStatus,
    pub is_test: bool,
    pub attempt: u32,
    pub event_count: u32,
    pub summary: String,
    pub http_status: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// A message waiting in the outbox: one event or a coalesced burst.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxMessage {
    pub id: i64,
    pub channel_id: i64,
    /// The events it carries (at most the first [`OutboxMessage::MAX_EVENTS`] of a burst).
    pub events: Vec<Event>,
    /// How many events the burst had, carried or not.
    pub event_count: u32,
    /// Attempts made so far.
    pub attempts: u32,
    pub created_at: DateTime<Utc>,
    pub due_at: DateTime<Utc>,
}

impl OutboxMessage {
    /// The most events one message carries in full; a larger burst says how many more there were.
    pub const MAX_EVENTS: usize = 100;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(severity: Severity, source: Source, project: Option<i64>, kind: Option<EventKind>) -> Event {
        let mut details = serde_json::Map::new();
        if let Some(kind) = kind {
            details.insert("kind".into(), kind.as_str().into());
        }
        Event {
            id: Some(1),
            ts: Utc::now(),
            severity,
            source,
            message: "m".into(),
            project_id: project,
            stage_id: None,
            instance_id: None,
            details,
        }
    }

    #[test]
    fn a_rule_forwards_only_what_every_condition_allows() {
        let rule = NotificationRule {
            min_severity: Severity::Warn,
            sources: vec![Source::Deployer],
            project_ids: vec![7],
            kinds: vec![EventKind::DeployFailed],
        };
        let failed = event(
            Severity::Error,
            Source::Deployer,
            Some(7),
            Some(EventKind::DeployFailed),
        );
        assert!(rule.matches(&failed));
        assert!(!rule.matches(&event(
            Severity::Info,
            Source::Deployer,
            Some(7),
            Some(EventKind::DeployFailed)
        )));
        assert!(!rule.matches(&event(
            Severity::Error,
            Source::Docker,
            Some(7),
            Some(EventKind::DeployFailed)
        )));
        assert!(!rule.matches(&event(
            Severity::Error,
            Source::Deployer,
            Some(8),
            Some(EventKind::DeployFailed)
        )));
        assert!(!rule.matches(&event(
            Severity::Error,
            Source::Deployer,
            None,
            Some(EventKind::DeployFailed)
        )));
        assert!(!rule.matches(&event(Severity::Error, Source::Deployer, Some(7), None)));
        assert!(NotificationRule::default().matches(&event(Severity::Warn, Source::Auth, None, None)));
        assert!(!NotificationRule::default().matches(&event(Severity::Info, Source::Auth, None, None)));
    }

    #[test]
    fn secrets_are_patched_key_by_key_and_checked_against_the_kind() {
        let none = ChannelSecrets::default();
        let err = none
            .patched(ChannelKind::Slack, &SecretsPatch::new())
            .unwrap_err();
        assert_eq!(err.field, "secrets.url");
        let patch = SecretsPatch::from([(
            "url".to_owned(),
            Some("https://hooks.example.com/T0/B0/XyZ".to_owned()),
        )]);
        let set = none.patched(ChannelKind::Webhook, &patch).unwrap();
        assert_eq!(set.keys(), vec!["url"]);
        let with_secret = set
            .patched(
                ChannelKind::Webhook,
                &SecretsPatch::from([("signing_secret".to_owned(), Some("s3cret".to_owned()))]),
            )
            .unwrap();
        assert_eq!(with_secret.keys(), vec!["signing_secret", "url"]);
        let removed = with_secret
            .patched(
                ChannelKind::Webhook,
                &SecretsPatch::from([("signing_secret".to_owned(), None)]),
            )
            .unwrap();
        assert_eq!(removed.keys(), vec!["url"]);
        let unknown = set
            .patched(
                ChannelKind::Webhook,
                &SecretsPatch::from([("password".to_owned(), Some("x".to_owned()))]),
            )
            .unwrap_err();
        assert_eq!(unknown.field, "secrets.password");
    }

    #[test]
    fn a_bad_secret_url_is_refused_without_quoting_it() {
        let patch =
            SecretsPatch::from([("url".to_owned(), Some("ftp://token-abc@example.com/x".to_owned()))]);
        let err = ChannelSecrets::default()
            .patched(ChannelKind::Slack, &patch)
            .unwrap_err();
        assert_eq!(err.field, "secrets.url");
        assert!(!err.message.contains("token-abc"), "{}", err.message);
        assert!(
            !format!(
                "{:?}",
                ChannelSecrets::default()
                    .patched(
                        ChannelKind::Slack,
                        &SecretsPatch::from([(
                            "url".to_owned(),
                            Some("https://h.example/secret-path".to_owned())
                        )])
                    )
                    .unwrap()
            )
            .contains("secret-path")
        );
    }

    #[test]
    fn a_channel_url_shows_only_its_scheme_host_and_port() {
        let url = ChannelUrl::parse("https://hooks.slack.com:8443/services/T0/B0/XyZ?x=1").unwrap();
        assert_eq!(url.hint(), "https://hooks.slack.com:8443/…");
    }

    #[test]
    fn email_settings_name_the_field_that_is_wrong() {
        let parse = |v: serde_json::Value| ChannelSettings::parse(ChannelKind::Email, &v);
        let ok = parse(serde_json::json!({
            "smtp_host": "mail.example.com", "tls": "starttls",
            "from": "Watcher <dw@example.com>", "to": ["ops@example.com"]
        }))
        .unwrap();
        let ChannelSettings::Email(email) = ok else {
            panic!("email settings")
        };
        assert_eq!(email.port(), 587);
        let missing =
            parse(serde_json::json!({"smtp_host": "mail.example.com", "tls": "tls", "from": "a@b.c"}))
                .unwrap_err();
        assert_eq!(missing.field, "settings");
        assert!(missing.message.contains("to"), "{}", missing.message);
        let bad_tls =
            parse(serde_json::json!({"smtp_host": "m", "tls": "ssl", "from": "a@b.c", "to": ["x@y.z"]}))
                .unwrap_err();
        assert_eq!(bad_tls.field, "settings.tls");
        let bad_to =
            parse(serde_json::json!({"smtp_host": "m", "tls": "tls", "from": "a@b.c", "to": ["nobody"]}))
                .unwrap_err();
        assert_eq!(bad_to.field, "settings.to");
        let extra = ChannelSettings::parse(ChannelKind::Slack, &serde_json::json!({"url": "x"})).unwrap_err();
        assert_eq!(extra.field, "settings");
    }

    #[test]
    fn ntfy_and_gotify_priorities_are_bounded() {
        let ntfy =
            ChannelSettings::parse(ChannelKind::Ntfy, &serde_json::json!({"priority": 6})).unwrap_err();
        assert_eq!(ntfy.field, "settings.priority");
        let gotify = ChannelSettings::parse(
            ChannelKind::Gotify,
            &serde_json::json!({"url": "https://g.example.com/", "priority": 4}),
        )
        .unwrap();
        assert_eq!(
            gotify,
            ChannelSettings::Gotify(GotifySettings {
                url: "https://g.example.com".into(),
                priority: Some(4)
            })
        );
        assert_eq!(
            ChannelSettings::parse(ChannelKind::Ntfy, &serde_json::Value::Null).unwrap(),
            ChannelSettings::Ntfy(NtfySettings::default())
        );
    }
}
