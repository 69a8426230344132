//! Notifications (SPEC §3 "Notifications"): telling people what happened, off the request path.
//!
//! The flow, in three steps that each survive what the previous one cannot:
//! 1. **Intake** ([`outbox::run_intake`]): a lossless tap on the event bus. Events are gathered
//!    for a short window ([`NotifierOptions::window`], 300 ms) from the first one, matched
//!    against every enabled channel's rule, coalesced per channel and kind
//!    ([`coalesce`]: a scan that finds 40 stale instances is one message) and written to the
//!    outbox in one transaction. Publishing an event costs the publisher one channel send.
//! 2. **Outbox** (`notification_outbox` in the store): a message is persisted before any
//!    attempt, so a restart loses nothing queued; it leaves only once delivered or given up.
//! 3. **Delivery** ([`outbox::run_delivery`]): due messages are claimed and sent concurrently
//!    ([`message`] renders each kind's format, [`transport`] sends it); a failure that can
//!    pass is retried with exponential backoff (5 attempts in all, `Retry-After` honoured), one
//!    that cannot (a `404` hook) is given up at once. Every attempt is logged (the last 100 per
//!    channel) and counted in `/metrics`.
//!
//! Delivery is at least once: a message delivered just before a crash, and not yet marked, is
//! sent again after the restart with the same `X-Docker-Watcher-Delivery` id.
//!
//! This module owns channel secrets too: they arrive in clear from the API, are sealed with
//! the installation's [`SecretBox`] before they reach the store, and are opened only to send.

pub mod coalesce;
pub mod message;
pub mod outbox;
pub mod transport;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::SharedClock;
use crate::domain::event::Event;
use crate::domain::notification::{
    Channel, ChannelFieldError, ChannelPatch, ChannelSecrets, ChannelSettings, DeliveryStatus, NewChannel,
    NewDelivery, parse_channel_name,
};
use crate::metrics::{Metrics, NotificationLabels};
use crate::secrets::SecretBox;
use crate::store::{Store, StoreError};
use message::Message;
use transport::{SendError, Sent, Transport};

/// Tunables; tests shorten the window and the backoff.
#[derive(Debug, Clone)]
pub struct NotifierOptions {
    /// How long events are gathered, from the first, before they are coalesced and queued.
    pub window: Duration,
    /// The wait after the first failed attempt; it doubles after each further one.
    pub retry_base: Duration,
    /// Attempts per message, the first included.
    pub max_attempts: u32,
    /// Messages sent at the same time.
    pub concurrency: usize,
}

impl Default for NotifierOptions {
    fn default() -> Self {
        Self {
            window: Duration::from_millis(300),
            retry_base: Duration::from_secs(10),
            max_attempts: 5,
            concurrency: 16,
        }
    }
}

/// What callers of the notifier can be told.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("{0}")]
    Invalid(#[from] ChannelFieldError),
    #[error("no notification channel with id {0}")]
    NotFound(i64),
    #[error("{message}")]
    Conflict { field: &'static str, message: String },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl NotifyError {
    /// A store error about channel `id`, as callers of the notifier see it.
    pub fn from_store(err: StoreError, id: i64) -> Self {
        match err {
            StoreError::NotFound => Self::NotFound(id),
            StoreError::Conflict { field, message } => Self::Conflict { field, message },
            other => Self::Internal(anyhow::Error::new(other)),
        }
    }
}

/// The outcome of "send test".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestOutcome {
    pub delivered: bool,
    pub http_status: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// The notifier: channel management, "send test", and the background intake and delivery.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    secrets: SecretBox,
    clock: SharedClock,
    metrics: Arc<Metrics>,
    transport: Transport,
    options: NotifierOptions,
    /// Nudges the delivery loop: something was queued, or an attempt ended.
    wake: Notify,
}

impl Notifier {
    pub fn new(
        store: Store,
        secrets: SecretBox,
        clock: SharedClock,
        metrics: Arc<Metrics>,
        options: NotifierOptions,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                secrets,
                clock,
                metrics,
                transport: Transport::new().context("building the notification HTTP client")?,
                options,
                wake: Notify::new(),
            }),
        })
    }

    /// Starts intake (reading `tap`, taken from the bus before anything was published) and
    /// delivery, under `shutdown`. Claims a crash left behind are let go first.
    pub async fn start(
        &self,
        tap: mpsc::UnboundedReceiver<Arc<Event>>,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let released = self
            .inner
            .store
            .release_notification_claims()
            .await
            .context("releasing the notification outbox's claims")?;
        if released > 0 {
            tracing::info!(
                released,
                "notifications interrupted by the last stop will be sent again"
            );
        }
        tasks.spawn(outbox::run_intake(self.clone(), tap, shutdown.clone()));
        tasks.spawn(outbox::run_delivery(self.clone(), tasks.clone(), shutdown));
        Ok(())
    }

    /// Creates a channel; its secrets are sealed before they are stored.
    pub async fn create_channel(&self, new: &NewChannel) -> Result<Channel, NotifyError> {
        let sealed = self.seal(&new.secrets);
        self.inner
            .store
            .insert_channel(new, sealed.as_ref(), self.inner.clock.now())
            .await
            .map_err(|e| NotifyError::from_store(e, 0))
    }

    /// Applies a change: settings are checked against the channel's kind, secrets patched key
    /// by key (the current ones are opened to merge, and sealed again).
    pub async fn update_channel(&self, id: i64, patch: &ChannelPatch) -> Result<Channel, NotifyError> {
        let store = &self.inner.store;
        let current = store
            .get_channel(id)
            .await
            .map_err(|e| NotifyError::from_store(e, id))?;
        let secrets = self.open_secrets(id).await?;
        let settings = match &patch.settings {
            Some(raw) => ChannelSettings::parse(current.kind, raw)?,
            None => current.settings,
        };
        let name = match &patch.name {
            Some(raw) => parse_channel_name(raw).map_err(|e| ChannelFieldError::new("name", e.0))?,
            None => current.name,
        };
        let updated = NewChannel {
            name,
            enabled: patch.enabled.unwrap_or(current.enabled),
            settings,
            secrets: secrets.patched(current.kind, &patch.secrets)?,
            rule: patch.rule.clone().unwrap_or(current.rule),
        };
        let sealed = self.seal(&updated.secrets);
        let channel = store
            .replace_channel(id, &updated, sealed.as_ref(), self.inner.clock.now())
            .await
            .map_err(|e| NotifyError::from_store(e, id))?;
        self.inner.wake.notify_one();
        Ok(channel)
    }

    /// Deletes a channel, with its queued messages and its delivery log.
    pub async fn delete_channel(&self, id: i64) -> Result<(), NotifyError> {
        self.inner
            .store
            .delete_channel(id)
            .await
            .map_err(|e| NotifyError::from_store(e, id))
    }

    /// Sends a test message to the channel now (enabled or not), logs the attempt and says how
    /// it went. Not queued and not retried: the person who asked is waiting for the answer.
    pub async fn send_test(&self, id: i64) -> Result<TestOutcome, NotifyError> {
        let channel = self
            .inner
            .store
            .get_channel(id)
            .await
            .map_err(|e| NotifyError::from_store(e, id))?;
        let now = self.inner.clock.now();
        let message = Message::test(format!("test-{}-{}", id, now.timestamp_millis()), &channel.name);
        let started = Instant::now();
        let result = self.send(&channel, &message).await;
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (status, http_status, error) = match &result {
            Ok(sent) => (DeliveryStatus::Delivered, sent.http_status, None),
            Err(e) => (DeliveryStatus::Failed, e.http_status, Some(e.message.clone())),
        };
        self.log_delivery(
            &channel,
            &message,
            status,
            1,
            http_status,
            error.clone(),
            duration_ms,
        )
        .await;
        Ok(TestOutcome {
            delivered: result.is_ok(),
            http_status,
            error,
            duration_ms,
        })
    }

    /// Renders `message` for `channel` and sends it.
    async fn send(&self, channel: &Channel, message: &Message) -> Result<Sent, SendError> {
        let secrets = self.open_secrets(channel.id).await.map_err(|e| SendError {
            message: format!("cannot read the channel's secrets: {e}"),
            http_status: None,
            retryable: false,
            retry_after: None,
        })?;
        let outgoing = message::render(message, &channel.settings, &secrets).map_err(|e| SendError {
            message: e.to_string(),
            http_status: None,
            retryable: false,
            retry_after: None,
        })?;
        self.inner.transport.send(outgoing).await
    }

    /// The channel's secrets, opened: for configuration as code, which compares them with a
    /// stack file's and never shows them.
    pub async fn channel_secrets(&self, id: i64) -> Result<ChannelSecrets, NotifyError> {
        self.open_secrets(id).await
    }

    fn seal(&self, secrets: &ChannelSecrets) -> Option<crate::domain::project::SealedSecret> {
        (!secrets.keys().is_empty()).then(|| self.inner.secrets.seal(&secrets.to_json()))
    }

    async fn open_secrets(&self, id: i64) -> Result<ChannelSecrets, NotifyError> {
        let sealed = self
            .inner
            .store
            .channel_secrets(id)
            .await
            .map_err(|e| NotifyError::from_store(e, id))?;
        let Some(sealed) = sealed else {
            return Ok(ChannelSecrets::default());
        };
        let plain = self
            .inner
            .secrets
            .open(&sealed)
            .context("opening the channel's secrets")?;
        ChannelSecrets::from_json(&plain).map_err(|e| NotifyError::Internal(anyhow::anyhow!(e.0)))
    }

    #[allow(clippy::too_many_arguments)]
    async fn log_delivery(
        &self,
        channel: &Channel,
        message: &Message,
        status: DeliveryStatus,
        attempt: u32,
        http_status: Option<u16>,
        error: Option<String>,
        duration_ms: u64,
    ) {
        self.inner
            .metrics
            .notification_deliveries
            .get_or_create(&NotificationLabels {
                outcome: status.as_str(),
                channel_kind: channel.kind.as_str(),
            })
            .inc();
        let delivery = NewDelivery {
            channel_id: channel.id,
            at: self.inner.clock.now(),
            status,
            is_test: message.is_test,
            attempt,
            event_count: message.event_count,
            summary: message.title.clone(),
            http_status,
            error,
            duration_ms,
        };
        if let Err(e) = self.inner.store.insert_delivery(&delivery).await {
            tracing::error!(error = %e, channel_id = channel.id, "could not log a notification delivery");
        }
    }

    /// Where the channel delivers, as much as may be shown: a secret URL's scheme and host, a
    /// Gotify server, an SMTP server and the recipients.
    pub async fn target(&self, channel: &Channel) -> String {
        match &channel.settings {
            ChannelSettings::Gotify(gotify) => gotify.url.clone(),
            ChannelSettings::Email(email) => format!(
                "{}:{} ({}) → {}",
                email.smtp_host,
                email.port(),
                match email.tls {
                    crate::domain::notification::SmtpTls::Starttls => "STARTTLS",
                    crate::domain::notification::SmtpTls::Tls => "TLS",
                    crate::domain::notification::SmtpTls::None => "no TLS",
                },
                email.to.join(", ")
            ),
            _ => match self.open_secrets(channel.id).await {
                Ok(secrets) => secrets.url().map_or_else(|| "(no URL)".to_owned(), |u| u.hint()),
                Err(e) => {
                    tracing::warn!(error = %e, channel_id = channel.id, "cannot open a channel's secrets");
                    "(secrets unreadable)".to_owned()
                }
            },
        }
    }

    /// Messages waiting in the outbox, per channel id (for the UI).
    pub async fn queued(&self) -> Result<Vec<(i64, u64)>, NotifyError> {
        self.inner
            .store
            .queued_notifications()
            .await
            .map_err(|e| NotifyError::Internal(e.into()))
    }
}

/// The wait after failed attempt number `attempt` (1-based): `base`, then doubling, capped at
/// an hour; a receiver's `Retry-After` wins when it asks for longer.
pub fn retry_delay(base: Duration, attempt: u32, retry_after: Option<Duration>) -> Duration {
    let exponent = attempt.saturating_sub(1).min(16);
    let backoff = base.saturating_mul(1 << exponent).min(Duration::from_secs(3600));
    retry_after.map_or(backoff, |asked| asked.max(backoff))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_and_honour_a_longer_retry_after() {
        let base = Duration::from_secs(10);
        let delays: Vec<u64> = (1..=4).map(|n| retry_delay(base, n, None).as_secs()).collect();
        assert_eq!(delays, vec![10, 20, 40, 80]);
        assert_eq!(
            retry_delay(base, 1, Some(Duration::from_secs(120))).as_secs(),
            120
        );
        assert_eq!(retry_delay(base, 3, Some(Duration::from_secs(1))).as_secs(), 40);
        assert_eq!(retry_delay(base, 40, None).as_secs(), 3600);
    }
}
