//! Sending: the IO half of a delivery. HTTP channels POST through one shared `reqwest` client
//! (timeouts, no redirects: a notification endpoint that moves is a configuration to fix);
//! email goes through `lettre`'s SMTP client over rustls — `STARTTLS` that must succeed,
//! implicit TLS, or plain SMTP for a local relay — trusting the system's roots plus the
//! channel's own CA when it names one.
//!
//! Every failure says whether trying again can help ([`SendError::retryable`]): a refused
//! connection, a timeout, `408`, `425`, `429` and `5xx` (and transient SMTP replies) can; other
//! `4xx` (a revoked Slack hook, a wrong token) and permanent SMTP replies cannot.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::message::Outgoing;
use crate::domain::notification::{EmailSettings, SmtpTls};

/// How long one delivery attempt may take, connection included.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest `Retry-After` honoured; beyond, the normal backoff applies.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// A failed attempt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    pub message: String,
    /// The receiver's HTTP status, when it answered.
    pub http_status: Option<u16>,
    /// Whether another attempt may succeed.
    pub retryable: bool,
    /// How long the receiver asked us to wait (`Retry-After` on a `429`/`503`).
    pub retry_after: Option<Duration>,
}

impl SendError {
    fn retryable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            http_status: None,
            retryable: true,
            retry_after: None,
        }
    }

    fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            http_status: None,
            retryable: false,
            retry_after: None,
        }
    }
}

/// The answer of a delivered message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub http_status: Option<u16>,
}

/// Sends what channels render. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Transport {
    http: reqwest::Client,
}

impl Transport {
    pub fn new() -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(SEND_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("docker-watcher/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { http })
    }

    pub async fn send(&self, outgoing: Outgoing) -> Result<Sent, SendError> {
        match outgoing {
            Outgoing::Http {
                url,
                headers,
                content_type,
                body,
            } => self.post(&url, headers, content_type, body).await,
            Outgoing::Email {
                settings,
                password,
                subject,
                body,
            } => send_mail(&settings, password, &subject, body).await,
        }
    }

    async fn post(
        &self,
        url: &str,
        headers: Vec<(&'static str, String)>,
        content_type: &'static str,
        body: Vec<u8>,
    ) -> Result<Sent, SendError> {
        let mut request = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = request.send().await.map_err(|e| {
            // reqwest's errors name the URL, which may carry a token: say what failed, not where.
            let what = if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "could not connect"
            } else {
                "the request failed"
            };
            SendError::retryable(format!("{what}: {}", source_chain(&e.without_url())))
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(Sent {
                http_status: Some(status.as_u16()),
            });
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|secs| Duration::from_secs(secs).min(MAX_RETRY_AFTER));
        let text = response.text().await.unwrap_or_default();
        let excerpt: String = text.trim().chars().take(200).collect();
        let retryable = matches!(status.as_u16(), 408 | 425 | 429) || status.is_server_error();
        Err(SendError {
            message: if excerpt.is_empty() {
                format!("HTTP {status}")
            } else {
                format!("HTTP {status}: {excerpt}")
            },
            http_status: Some(status.as_u16()),
            retryable,
            retry_after,
        })
    }
}

/// An error and its causes on one line, without repeating the URL.
fn source_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = e.source();
    }
    text
}

async fn send_mail(
    settings: &EmailSettings,
    password: Option<String>,
    subject: &str,
    body: String,
) -> Result<Sent, SendError> {
    let mut builder = lettre::Message::builder()
        .from(
            settings
                .from
                .parse()
                .map_err(|e| SendError::permanent(format!("the sender {}: {e}", settings.from)))?,
        )
        .subject(subject)
        .header(ContentType::TEXT_PLAIN);
    for to in &settings.to {
        builder = builder.to(to
            .parse()
            .map_err(|e| SendError::permanent(format!("the recipient {to}: {e}")))?);
    }
    let mail = builder
        .body(body)
        .map_err(|e| SendError::permanent(format!("cannot build the mail: {e}")))?;

    let host = settings.smtp_host.clone();
    let tls_parameters = || -> Result<TlsParameters, SendError> {
        let mut tls = TlsParameters::builder(host.clone());
        if let Some(pem) = &settings.ca_pem {
            let certificate = Certificate::from_pem(pem.as_bytes())
                .map_err(|e| SendError::permanent(format!("the channel's CA certificate: {e}")))?;
            tls = tls.add_root_certificate(certificate);
        }
        tls.build_rustls()
            .map_err(|e| SendError::permanent(format!("TLS settings: {e}")))
    };
    let tls = match settings.tls {
        SmtpTls::Starttls => Tls::Required(tls_parameters()?),
        SmtpTls::Tls => Tls::Wrapper(tls_parameters()?),
        SmtpTls::None => Tls::None,
    };
    let mut transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(settings.port())
        .tls(tls)
        .timeout(Some(SEND_TIMEOUT));
    if let Some(username) = &settings.username {
        transport = transport.credentials(Credentials::new(username.clone(), password.unwrap_or_default()));
    }
    let transport = transport.build();
    match tokio::time::timeout(SEND_TIMEOUT * 2, transport.send(mail)).await {
        Err(_) => Err(SendError::retryable("the SMTP exchange timed out")),
        Ok(Ok(_)) => Ok(Sent { http_status: None }),
        Ok(Err(e)) => {
            let message = format!("SMTP: {}", source_chain(&e));
            Err(if e.is_permanent() {
                SendError::permanent(message)
            } else {
                SendError::retryable(message)
            })
        }
    }
}
