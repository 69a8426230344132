//! Notifications: channels (`notification_channels`, secrets sealed by the caller and kept as an
//! opaque blob), the outbox of messages waiting for delivery (`notification_outbox`), and the
//! delivery log (`notification_deliveries`, the last [`DELIVERIES_KEPT`] attempts per channel).
//!
//! The outbox is what makes delivery survive a restart: a message is written here before any
//! attempt and deleted only once it was delivered or given up.

use chrono::{DateTime, Utc};
use sqlx::{FromRow, SqliteConnection};

use crate::domain::event::Event;
use crate::domain::notification::{
    Channel, ChannelKind, ChannelSettings, Delivery, DeliveryStatus, NewChannel, NewDelivery,
    NotificationRule, OutboxMessage,
};
use crate::domain::project::SealedSecret;

use super::{Store, StoreError, StoreResult, narrow, parse_col, parse_ts, ts, unique_to_conflict};

const CHANNELS: &str = "notification_channels";
const OUTBOX: &str = "notification_outbox";
const DELIVERIES: &str = "notification_deliveries";

/// How many delivery attempts the log keeps per channel.
pub const DELIVERIES_KEPT: i64 = 100;

macro_rules! channel_columns {
    () => {
        "id, name, kind, enabled, settings, secret_keys, rule, created_at, updated_at"
    };
}

#[derive(FromRow)]
struct ChannelRow {
    id: i64,
    name: String,
    kind: String,
    enabled: bool,
    settings: String,
    secret_keys: String,
    rule: String,
    created_at: String,
    updated_at: String,
}

fn corrupt(table: &'static str, message: String) -> StoreError {
    StoreError::Corrupt { table, message }
}

impl ChannelRow {
    fn into_channel(self) -> StoreResult<Channel> {
        let kind = parse_col::<ChannelKind>(CHANNELS, &self.kind)?;
        let settings: serde_json::Value = serde_json::from_str(&self.settings)
            .map_err(|e| corrupt(CHANNELS, format!("settings of channel {}: {e}", self.id)))?;
        let settings = ChannelSettings::parse(kind, &settings)
            .map_err(|e| corrupt(CHANNELS, format!("settings of channel {}: {e}", self.id)))?;
        let secret_keys: Vec<String> = serde_json::from_str(&self.secret_keys)
            .map_err(|e| corrupt(CHANNELS, format!("secret keys of channel {}: {e}", self.id)))?;
        let rule: NotificationRule = serde_json::from_str(&self.rule)
            .map_err(|e| corrupt(CHANNELS, format!("rule of channel {}: {e}", self.id)))?;
        Ok(Channel {
            id: self.id,
            name: self.name,
            kind,
            enabled: self.enabled,
            settings,
            secret_keys,
            rule,
            created_at: parse_ts(CHANNELS, &self.created_at)?,
            updated_at: parse_ts(CHANNELS, &self.updated_at)?,
        })
    }
}

#[derive(FromRow)]
struct OutboxRow {
    id: i64,
    channel_id: i64,
    events: String,
    event_count: i64,
    attempts: i64,
    created_at: String,
    due_at: String,
}

impl OutboxRow {
    fn into_message(self) -> StoreResult<OutboxMessage> {
        let events: Vec<Event> = serde_json::from_str(&self.events)
            .map_err(|e| corrupt(OUTBOX, format!("events of message {}: {e}", self.id)))?;
        Ok(OutboxMessage {
            id: self.id,
            channel_id: self.channel_id,
            events,
            event_count: narrow(OUTBOX, "event_count", self.event_count)?,
            attempts: narrow(OUTBOX, "attempts", self.attempts)?,
            created_at: parse_ts(OUTBOX, &self.created_at)?,
            due_at: parse_ts(OUTBOX, &self.due_at)?,
        })
    }
}

#[derive(FromRow)]
struct DeliveryRow {
    id: i64,
    channel_id: i64,
    at: String,
    status: String,
    is_test: bool,
    attempt: i64,
    event_count: i64,
    summary: String,
    http_status: Option<i64>,
    error: Option<String>,
    duration_ms: i64,
}

impl DeliveryRow {
    fn into_delivery(self) -> StoreResult<Delivery> {
        Ok(Delivery {
            id: self.id,
            channel_id: self.channel_id,
            at: parse_ts(DELIVERIES, &self.at)?,
            status: parse_col::<DeliveryStatus>(DELIVERIES, &self.status)?,
            is_test: self.is_test,
            attempt: narrow(DELIVERIES, "attempt", self.attempt)?,
            event_count: narrow(DELIVERIES, "event_count", self.event_count)?,
            summary: self.summary,
            http_status: self
                .http_status
                .map(|s| narrow(DELIVERIES, "http_status", s))
                .transpose()?,
            error: self.error,
            duration_ms: narrow(DELIVERIES, "duration_ms", self.duration_ms)?,
        })
    }
}

async fn fetch_channel(conn: &mut SqliteConnection, id: i64) -> StoreResult<Channel> {
    let row: Option<ChannelRow> = sqlx::query_as(concat!(
        "SELECT ",
        channel_columns!(),
        " FROM notification_channels WHERE id = ?"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?;
    row.ok_or(StoreError::NotFound)?.into_channel()
}

fn json_text<T: serde::Serialize>(value: &T) -> String {
    // Domain records of strings, numbers and enums always serialize.
    serde_json::to_string(value).unwrap_or_default()
}

fn name_taken(err: sqlx::Error, name: &str) -> StoreError {
    unique_to_conflict(err, "name", format!("a channel named '{name}' exists already"))
}

impl Store {
    /// Creates a channel. Its secrets arrive sealed; only their names are kept in clear.
    pub async fn insert_channel(
        &self,
        new: &NewChannel,
        sealed: Option<&SealedSecret>,
        now: DateTime<Utc>,
    ) -> StoreResult<Channel> {
        let mut tx = self.write_tx().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO notification_channels (name, kind, enabled, settings, secrets_enc, secret_keys, rule, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(&new.name)
        .bind(new.settings.kind().as_str())
        .bind(new.enabled)
        .bind(new.settings.to_json().to_string())
        .bind(sealed.map(|s| s.0.clone()))
        .bind(json_text(&new.secrets.keys()))
        .bind(json_text(&new.rule))
        .bind(ts(now))
        .bind(ts(now))
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| name_taken(e, &new.name))?;
        let channel = fetch_channel(&mut tx, id).await?;
        tx.commit().await?;
        Ok(channel)
    }

    /// Rewrites a channel whole (the caller merged the change into `channel`); its kind stays.
    pub async fn replace_channel(
        &self,
        id: i64,
        channel: &NewChannel,
        sealed: Option<&SealedSecret>,
        now: DateTime<Utc>,
    ) -> StoreResult<Channel> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(
            "UPDATE notification_channels SET name = ?, enabled = ?, settings = ?, secrets_enc = ?, secret_keys = ?, \
             rule = ?, updated_at = ? WHERE id = ? AND kind = ?",
        )
        .bind(&channel.name)
        .bind(channel.enabled)
        .bind(channel.settings.to_json().to_string())
        .bind(sealed.map(|s| s.0.clone()))
        .bind(json_text(&channel.secrets.keys()))
        .bind(json_text(&channel.rule))
        .bind(ts(now))
        .bind(id)
        .bind(channel.settings.kind().as_str())
        .execute(&mut *tx)
        .await
        .map_err(|e| name_taken(e, &channel.name))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        let channel = fetch_channel(&mut tx, id).await?;
        tx.commit().await?;
        Ok(channel)
    }

    pub async fn get_channel(&self, id: i64) -> StoreResult<Channel> {
        let mut conn = self.pool().acquire().await?;
        fetch_channel(&mut conn, id).await
    }

    /// Every channel, oldest first.
    pub async fn list_channels(&self) -> StoreResult<Vec<Channel>> {
        let rows: Vec<ChannelRow> = sqlx::query_as(concat!(
            "SELECT ",
            channel_columns!(),
            " FROM notification_channels ORDER BY id"
        ))
        .fetch_all(self.pool())
        .await?;
        rows.into_iter().map(ChannelRow::into_channel).collect()
    }

    /// The channel's sealed secrets, if any are set.
    pub async fn channel_secrets(&self, id: i64) -> StoreResult<Option<SealedSecret>> {
        let sealed: Option<Option<Vec<u8>>> =
            sqlx::query_scalar("SELECT secrets_enc FROM notification_channels WHERE id = ?")
                .bind(id)
                .fetch_optional(self.pool())
                .await?;
        Ok(sealed.ok_or(StoreError::NotFound)?.map(SealedSecret))
    }

    /// Deletes a channel with its queued messages and its delivery log.
    pub async fn delete_channel(&self, id: i64) -> StoreResult<()> {
        let done = sqlx::query("DELETE FROM notification_channels WHERE id = ?")
            .bind(id)
            .execute(self.pool())
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Queues messages — `(channel id, events, how many the burst had)` — due at `now`, in one
    /// transaction; returns how many were queued. A channel deleted meanwhile is skipped.
    pub async fn enqueue_notifications(
        &self,
        messages: &[(i64, Vec<Event>, u32)],
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        if messages.is_empty() {
            return Ok(0);
        }
        let now = ts(now);
        let mut tx = self.write_tx().await?;
        let mut queued = 0;
        for (channel_id, events, count) in messages {
            // INSERT … SELECT: a channel deleted since the events were matched queues nothing
            // instead of failing the whole batch on its foreign key.
            queued += sqlx::query(
                "INSERT INTO notification_outbox (channel_id, events, event_count, attempts, created_at, due_at) \
                 SELECT id, ?, ?, 0, ?, ? FROM notification_channels WHERE id = ?",
            )
            .bind(json_text(events))
            .bind(i64::from(*count))
            .bind(&now)
            .bind(&now)
            .bind(channel_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(queued)
    }

    /// Claims up to `limit` messages due at `now`, the longest due first: they are not handed
    /// out again until [`Store::reschedule_notification`] lets them go (or the next start does,
    /// through [`Store::release_notification_claims`]).
    pub async fn claim_due_notifications(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<OutboxMessage>> {
        let mut rows: Vec<OutboxRow> = sqlx::query_as(
            "UPDATE notification_outbox SET claimed = 1 WHERE id IN \
             (SELECT id FROM notification_outbox WHERE claimed = 0 AND due_at <= ? ORDER BY due_at, id LIMIT ?) \
             RETURNING id, channel_id, events, event_count, attempts, created_at, due_at",
        )
        .bind(ts(now))
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.sort_by(|a, b| (a.due_at.as_str(), a.id).cmp(&(b.due_at.as_str(), b.id)));
        rows.into_iter().map(OutboxRow::into_message).collect()
    }

    /// Lets go of every claim: at start, nothing is being attempted.
    pub async fn release_notification_claims(&self) -> StoreResult<u64> {
        Ok(
            sqlx::query("UPDATE notification_outbox SET claimed = 0 WHERE claimed = 1")
                .execute(self.pool())
                .await?
                .rows_affected(),
        )
    }

    /// When the next unclaimed message is due, if any is queued.
    pub async fn next_notification_due(&self) -> StoreResult<Option<DateTime<Utc>>> {
        let due: Option<String> =
            sqlx::query_scalar("SELECT min(due_at) FROM notification_outbox WHERE claimed = 0")
                .fetch_one(self.pool())
                .await?;
        due.map(|d| parse_ts(OUTBOX, &d)).transpose()
    }

    /// How many messages wait in the outbox, per channel id.
    pub async fn queued_notifications(&self) -> StoreResult<Vec<(i64, u64)>> {
        let rows: Vec<(i64, i64)> =
            sqlx::query_as("SELECT channel_id, count(*) FROM notification_outbox GROUP BY channel_id")
                .fetch_all(self.pool())
                .await?;
        Ok(rows
            .into_iter()
            .map(|(id, n)| (id, u64::try_from(n).unwrap_or(0)))
            .collect())
    }

    /// Records a failed attempt of a message that will be tried again at `due_at`, and lets it go.
    pub async fn reschedule_notification(
        &self,
        id: i64,
        attempts: u32,
        due_at: DateTime<Utc>,
        error: &str,
    ) -> StoreResult<()> {
        sqlx::query("UPDATE notification_outbox SET attempts = ?, due_at = ?, last_error = ?, claimed = 0 WHERE id = ?")
            .bind(i64::from(attempts))
            .bind(ts(due_at))
            .bind(error)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Removes a message that was delivered or given up.
    pub async fn delete_notification(&self, id: i64) -> StoreResult<()> {
        sqlx::query("DELETE FROM notification_outbox WHERE id = ?")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Logs a delivery attempt and forgets the channel's attempts beyond the last
    /// [`DELIVERIES_KEPT`], in one transaction. A channel deleted meanwhile logs nothing.
    pub async fn insert_delivery(&self, delivery: &NewDelivery) -> StoreResult<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO notification_deliveries \
             (channel_id, at, status, is_test, attempt, event_count, summary, http_status, error, duration_ms) \
             SELECT id, ?, ?, ?, ?, ?, ?, ?, ?, ? FROM notification_channels WHERE id = ?",
        )
        .bind(ts(delivery.at))
        .bind(delivery.status.as_str())
        .bind(delivery.is_test)
        .bind(i64::from(delivery.attempt))
        .bind(i64::from(delivery.event_count))
        .bind(&delivery.summary)
        .bind(delivery.http_status.map(i64::from))
        .bind(delivery.error.as_deref())
        .bind(i64::try_from(delivery.duration_ms).unwrap_or(i64::MAX))
        .bind(delivery.channel_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM notification_deliveries WHERE channel_id = ?1 AND id <= \
             (SELECT id FROM notification_deliveries WHERE channel_id = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
        )
        .bind(delivery.channel_id)
        .bind(DELIVERIES_KEPT)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The newest `limit` delivery attempts, of one channel or of all.
    pub async fn list_deliveries(&self, channel_id: Option<i64>, limit: u32) -> StoreResult<Vec<Delivery>> {
        let rows: Vec<DeliveryRow> = sqlx::query_as(
            "SELECT id, channel_id, at, status, is_test, attempt, event_count, summary, http_status, error, duration_ms \
             FROM notification_deliveries WHERE ?1 IS NULL OR channel_id = ?1 ORDER BY id DESC LIMIT ?2",
        )
        .bind(channel_id)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.into_iter().map(DeliveryRow::into_delivery).collect()
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;
    use crate::domain::event::{Severity, Source};
    use crate::domain::notification::ChannelSecrets;
    use crate::store::testing::{at, temp_store as store};

    fn slack(name: &str) -> NewChannel {
        NewChannel {
            name: name.into(),
            enabled: true,
            settings: ChannelSettings::Slack,
            secrets: ChannelSecrets::default()
                .patched(
                    ChannelKind::Slack,
                    &[("url".to_owned(), Some("https://hooks.example.com/x".to_owned()))].into(),
                )
                .unwrap(),
            rule: NotificationRule::default(),
        }
    }

    fn event(n: i64) -> Event {
        Event {
            id: Some(n),
            ts: at(0),
            severity: Severity::Error,
            source: Source::Deployer,
            message: format!("event {n}"),
            project_id: None,
            stage_id: None,
            instance_id: None,
            details: Default::default(),
        }
    }

    #[tokio::test]
    async fn a_channel_keeps_its_sealed_secrets_apart_and_its_name_unique() {
        let (store, _dir) = store().await;
        let sealed = SealedSecret(vec![9, 9, 9]);
        let channel = store
            .insert_channel(&slack("ops"), Some(&sealed), at(0))
            .await
            .unwrap();
        assert_eq!(channel.secret_keys, vec!["url"]);
        assert_eq!(store.channel_secrets(channel.id).await.unwrap(), Some(sealed));
        let err = store
            .insert_channel(&slack("ops"), None, at(0))
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Conflict { field: "name", .. }),
            "{err:?}"
        );
        let mut renamed = slack("dev");
        renamed.enabled = false;
        let updated = store
            .replace_channel(channel.id, &renamed, None, at(1))
            .await
            .unwrap();
        assert_eq!((updated.name.as_str(), updated.enabled), ("dev", false));
        assert_eq!(store.channel_secrets(channel.id).await.unwrap(), None);
        store.delete_channel(channel.id).await.unwrap();
        assert!(matches!(
            store.get_channel(channel.id).await,
            Err(StoreError::NotFound)
        ));
    }

    #[tokio::test]
    async fn queued_messages_come_due_in_order_and_wait_after_a_failure() {
        let (store, _dir) = store().await;
        let channel = store.insert_channel(&slack("ops"), None, at(0)).await.unwrap();
        let queued = store
            .enqueue_notifications(
                &[
                    (channel.id, vec![event(1)], 1),
                    (channel.id, vec![event(2), event(3)], 40),
                    (999, vec![event(4)], 1),
                ],
                at(0),
            )
            .await
            .unwrap();
        assert_eq!(
            queued, 2,
            "a message for a channel that does not exist is skipped"
        );
        let due = store.claim_due_notifications(at(0), 10).await.unwrap();
        assert_eq!(due.len(), 2);
        assert_eq!(due[1].event_count, 40);
        assert_eq!(due[1].events.len(), 2);
        assert!(
            store.claim_due_notifications(at(0), 10).await.unwrap().is_empty(),
            "claimed once"
        );
        assert_eq!(store.next_notification_due().await.unwrap(), None);
        store
            .reschedule_notification(due[0].id, 1, at(0) + Duration::seconds(10), "HTTP 500")
            .await
            .unwrap();
        assert!(
            store.claim_due_notifications(at(0), 10).await.unwrap().is_empty(),
            "not due yet"
        );
        assert_eq!(
            store.next_notification_due().await.unwrap(),
            Some(at(0) + Duration::seconds(10))
        );
        store.delete_notification(due[1].id).await.unwrap();
        let retried = store
            .claim_due_notifications(at(0) + Duration::seconds(10), 10)
            .await
            .unwrap();
        assert_eq!((retried.len(), retried[0].attempts), (1, 1));
        assert_eq!(
            store.release_notification_claims().await.unwrap(),
            1,
            "a restart lets go of the claim"
        );
        assert_eq!(
            store
                .claim_due_notifications(at(0) + Duration::seconds(10), 10)
                .await
                .unwrap()
                .len(),
            1
        );
    }

    #[tokio::test]
    async fn the_delivery_log_keeps_the_last_hundred_attempts_of_each_channel() {
        let (store, _dir) = store().await;
        let a = store.insert_channel(&slack("a"), None, at(0)).await.unwrap();
        let b = store.insert_channel(&slack("b"), None, at(0)).await.unwrap();
        for (channel, n) in [(a.id, 130), (b.id, 3)] {
            for attempt in 0..n {
                store
                    .insert_delivery(&NewDelivery {
                        channel_id: channel,
                        at: at(attempt),
                        status: DeliveryStatus::Delivered,
                        is_test: false,
                        attempt: 1,
                        event_count: 1,
                        summary: format!("message {attempt}"),
                        http_status: Some(200),
                        error: None,
                        duration_ms: 3,
                    })
                    .await
                    .unwrap();
            }
        }
        let log = store.list_deliveries(Some(a.id), 500).await.unwrap();
        assert_eq!(log.len(), 100);
        assert_eq!(log[0].summary, "message 129");
        assert_eq!(log[99].summary, "message 30");
        assert_eq!(store.list_deliveries(Some(b.id), 500).await.unwrap().len(), 3);
        assert_eq!(store.list_deliveries(None, 500).await.unwrap().len(), 103);
    }
}
