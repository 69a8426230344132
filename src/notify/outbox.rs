//! The notifier's two background loops. [`run_intake`] reads the bus tap, gathers a window of
//! events, coalesces them per channel and queues the messages in the store's outbox in one
//! transaction; on shutdown it queues what it holds before it stops. [`run_delivery`] claims
//! due messages and attempts each on its own task (at most `concurrency` at once), then logs
//! the attempt and deletes, reschedules or gives up the message.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::coalesce;
use super::message::Message;
use super::{Notifier, retry_delay};
use crate::domain::event::Event;
use crate::domain::notification::{DeliveryStatus, OutboxMessage};
use crate::store::StoreError;

/// How many due messages one pass of the delivery loop claims.
const CLAIM_BATCH: u32 = 64;
/// The longest the delivery loop sleeps without looking at the outbox (a safety net; queuing
/// and finished attempts wake it at once).
const IDLE_RECHECK: Duration = Duration::from_secs(30);

/// Gathers events into windows and queues their messages.
pub async fn run_intake(
    notifier: Notifier,
    mut tap: mpsc::UnboundedReceiver<Arc<Event>>,
    shutdown: CancellationToken,
) {
    let window = notifier.inner.options.window;
    loop {
        // An event that arrived before the stop is queued, not dropped by a coin toss between
        // two ready branches.
        let first = tokio::select! {
            biased;
            event = tap.recv() => match event {
                Some(event) => event,
                None => return,
            },
            _ = shutdown.cancelled() => return,
        };
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + window;
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep_until(deadline) => break,
                event = tap.recv() => match event {
                    Some(event) => batch.push(event),
                    None => break,
                },
            }
        }
        while let Ok(event) = tap.try_recv() {
            batch.push(event);
        }
        queue(&notifier, &batch).await;
        if shutdown.is_cancelled() {
            return;
        }
    }
}

/// Matches, coalesces and queues one window's events. A failure is logged: these events are
/// in the event log (when persisted) but will not be notified.
async fn queue(notifier: &Notifier, batch: &[Arc<Event>]) {
    let store = &notifier.inner.store;
    let channels = match store.list_channels().await {
        Ok(channels) => channels,
        Err(e) => {
            tracing::error!(error = %e, events = batch.len(), "could not read the notification channels; these events are not notified");
            return;
        }
    };
    let planned = coalesce::plan(&channels, batch);
    if planned.is_empty() {
        return;
    }
    let messages: Vec<(i64, Vec<Event>, u32)> = planned
        .into_iter()
        .map(|p| (p.channel_id, p.events, p.event_count))
        .collect();
    match store
        .enqueue_notifications(&messages, notifier.inner.clock.now())
        .await
    {
        Ok(_) => notifier.inner.wake.notify_one(),
        Err(e) => {
            tracing::error!(error = %e, messages = messages.len(), "could not queue notifications");
        }
    }
}

/// Claims due messages and attempts them until shutdown.
pub async fn run_delivery(notifier: Notifier, tasks: TaskTracker, shutdown: CancellationToken) {
    let inner = &notifier.inner;
    let permits = Arc::new(Semaphore::new(inner.options.concurrency.max(1)));
    loop {
        // Registered before looking, so a wake-up between the look and the wait is not lost.
        let woken = inner.wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();

        let now = inner.clock.now();
        let free = u32::try_from(permits.available_permits()).unwrap_or(u32::MAX);
        let claimed = if free == 0 {
            Vec::new()
        } else {
            match inner
                .store
                .claim_due_notifications(now, free.min(CLAIM_BATCH))
                .await
            {
                Ok(claimed) => claimed,
                Err(e) => {
                    tracing::error!(error = %e, "could not read the notification outbox");
                    Vec::new()
                }
            }
        };
        for message in claimed {
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                // Cannot happen (we claimed at most the free permits); let it go to be safe.
                let _ = inner
                    .store
                    .reschedule_notification(message.id, message.attempts, message.due_at, "not attempted")
                    .await;
                continue;
            };
            let notifier = notifier.clone();
            let shutdown = shutdown.clone();
            tasks.spawn(async move {
                tokio::select! {
                    // Abandoned mid-attempt: the claim is let go at the next start.
                    _ = shutdown.cancelled() => {}
                    _ = attempt(&notifier, message) => {}
                }
                drop(permit);
                notifier.inner.wake.notify_one();
            });
        }

        let sleep = match inner.store.next_notification_due().await {
            Ok(Some(due)) => (due - inner.clock.now())
                .to_std()
                .unwrap_or(Duration::ZERO)
                .min(IDLE_RECHECK),
            Ok(None) => IDLE_RECHECK,
            Err(e) => {
                tracing::error!(error = %e, "could not read the notification outbox");
                IDLE_RECHECK
            }
        };
        // A message due now but not claimable (no free permit) waits for an attempt to end.
        let sleep = if sleep.is_zero() && permits.available_permits() == 0 {
            IDLE_RECHECK
        } else {
            sleep
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = &mut woken => {}
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

/// One attempt of one message: send, log, then delete, reschedule or give up.
async fn attempt(notifier: &Notifier, queued: OutboxMessage) {
    let inner = &notifier.inner;
    let channel = match inner.store.get_channel(queued.channel_id).await {
        Ok(channel) => channel,
        // Deleted meanwhile: its messages went with it.
        Err(StoreError::NotFound) => return,
        Err(e) => {
            tracing::error!(error = %e, message_id = queued.id, "could not read a notification's channel");
            let due = inner.clock.now() + chrono::Duration::seconds(5);
            let _ = inner
                .store
                .reschedule_notification(queued.id, queued.attempts, due, "could not read the channel")
                .await;
            return;
        }
    };
    let attempt = queued.attempts + 1;
    let message = Message::from_events(queued.id.to_string(), queued.events.clone(), queued.event_count);
    let started = Instant::now();
    let result = if channel.enabled {
        notifier.send(&channel, &message).await
    } else {
        Err(super::transport::SendError {
            message: "the channel was disabled before the message was sent".to_owned(),
            http_status: None,
            retryable: false,
            retry_after: None,
        })
    };
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let store = &inner.store;
    match result {
        Ok(sent) => {
            notifier
                .log_delivery(
                    &channel,
                    &message,
                    DeliveryStatus::Delivered,
                    attempt,
                    sent.http_status,
                    None,
                    duration_ms,
                )
                .await;
            if let Err(e) = store.delete_notification(queued.id).await {
                tracing::error!(error = %e, message_id = queued.id, "a delivered notification could not be taken off the outbox; it may be sent again");
            }
            let now = inner.clock.now();
            for event in &queued.events {
                let latency = (now - event.ts).to_std().unwrap_or(Duration::ZERO);
                inner
                    .metrics
                    .notification_latency_seconds
                    .observe(latency.as_secs_f64());
            }
        }
        Err(e) if e.retryable && attempt < inner.options.max_attempts => {
            let delay = retry_delay(inner.options.retry_base, attempt, e.retry_after);
            tracing::info!(channel = %channel.name, attempt, error = %e, ?delay, "a notification failed; it will be tried again");
            notifier
                .log_delivery(
                    &channel,
                    &message,
                    DeliveryStatus::Retrying,
                    attempt,
                    e.http_status,
                    Some(e.message.clone()),
                    duration_ms,
                )
                .await;
            let due =
                inner.clock.now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::hours(1));
            if let Err(err) = store
                .reschedule_notification(queued.id, attempt, due, &e.message)
                .await
            {
                tracing::error!(error = %err, message_id = queued.id, "could not reschedule a notification");
            }
        }
        Err(e) => {
            tracing::warn!(channel = %channel.name, attempt, error = %e, "a notification was given up");
            notifier
                .log_delivery(
                    &channel,
                    &message,
                    DeliveryStatus::Failed,
                    attempt,
                    e.http_status,
                    Some(e.message.clone()),
                    duration_ms,
                )
                .await;
            if let Err(err) = store.delete_notification(queued.id).await {
                tracing::error!(error = %err, message_id = queued.id, "could not take a given-up notification off the outbox");
            }
        }
    }
}
