//! This installation's identity and the secrets it generates once (`installation`, `meta`).
//!
//! The installation id labels every container docker-watcher manages, so it must never change
//! once a container carries it: it is created on first use and read back ever after. Two tasks
//! asking at the same first moment both try `INSERT OR IGNORE` and then read the one row that
//! won, so neither can hand out an id that was not stored.

use chrono::Utc;

use super::{Store, StoreResult, ts};

impl Store {
    /// This installation's id (32 hex characters), created on first call and stable forever after.
    pub async fn installation_id(&self) -> StoreResult<String> {
        let candidate = hex::encode(rand::random::<[u8; 16]>());
        sqlx::query("INSERT OR IGNORE INTO installation (singleton, id, created_at) VALUES (1, ?, ?)")
            .bind(&candidate)
            .bind(ts(Utc::now()))
            .execute(self.pool())
            .await?;
        let id: String = sqlx::query_scalar("SELECT id FROM installation WHERE singleton = 1")
            .fetch_one(self.pool())
            .await?;
        Ok(id)
    }

    /// A stored value, if any.
    pub async fn meta_get(&self, key: &str) -> StoreResult<Option<String>> {
        let value = sqlx::query_scalar("SELECT value FROM meta WHERE key = ?")
            .bind(key)
            .fetch_optional(self.pool())
            .await?;
        Ok(value)
    }

    /// Stores `value` under `key`, replacing what was there (a rotated webhook token).
    pub async fn meta_set(&self, key: &str, value: &str) -> StoreResult<()> {
        sqlx::query("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
            .bind(key)
            .bind(value)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Stores `value` under `key` unless a value is already there, and returns the stored one:
    /// the first writer wins, so a generated secret (the webhook token) is generated once.
    pub async fn meta_get_or_insert(&self, key: &str, value: &str) -> StoreResult<String> {
        sqlx::query("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)")
            .bind(key)
            .bind(value)
            .execute(self.pool())
            .await?;
        let stored: String = sqlx::query_scalar("SELECT value FROM meta WHERE key = ?")
            .bind(key)
            .fetch_one(self.pool())
            .await?;
        Ok(stored)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::temp_store;

    #[tokio::test]
    async fn the_installation_id_is_created_once_and_then_stays_the_same() {
        let (store, _dir) = temp_store().await;
        let first = store.installation_id().await.unwrap();
        assert_eq!(first.len(), 32);
        assert!(first.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(store.installation_id().await.unwrap(), first);
    }

    #[tokio::test]
    async fn concurrent_first_calls_agree_on_one_installation_id() {
        let (store, _dir) = temp_store().await;
        let calls = (0..8).map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.installation_id().await.unwrap() })
        });
        let ids: Vec<String> = futures::future::join_all(calls)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert!(ids.iter().all(|id| *id == ids[0]));
    }

    #[tokio::test]
    async fn the_first_stored_meta_value_wins() {
        let (store, _dir) = temp_store().await;
        assert_eq!(store.meta_get("webhook_token").await.unwrap(), None);
        assert_eq!(
            store.meta_get_or_insert("webhook_token", "first").await.unwrap(),
            "first"
        );
        assert_eq!(
            store.meta_get_or_insert("webhook_token", "second").await.unwrap(),
            "first"
        );
        assert_eq!(
            store.meta_get("webhook_token").await.unwrap().as_deref(),
            Some("first")
        );
    }
}
