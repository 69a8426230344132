//! Settings (`settings`): one row per key that was ever changed, its value as JSON.
//!
//! Keys never set are absent and take their defaults from [`Settings::default`], so a new setting
//! needs no migration. Loading never fails on a bad stored value: an older, looser version may
//! have written it, and the service must still start, so the key falls back to its default with
//! a warning in the log.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::domain::settings::Settings;

use super::{Store, StoreResult, ts};

impl Store {
    /// The current settings: the stored values over the defaults.
    pub async fn load_settings(&self) -> StoreResult<Settings> {
        let rows: Vec<(String, String)> = sqlx::query_as("SELECT key, value FROM settings ORDER BY key")
            .fetch_all(self.pool())
            .await?;
        let mut pairs = Vec::with_capacity(rows.len());
        for (key, raw) in &rows {
            match serde_json::from_str::<Value>(raw) {
                Ok(value) => pairs.push((key.as_str(), value)),
                Err(e) => tracing::warn!(%key, error = %e, "stored setting is not JSON; using its default"),
            }
        }
        let (settings, problems) = Settings::from_stored(pairs.iter().map(|(k, v)| (*k, v)));
        for problem in problems {
            tracing::warn!(key = %problem.key, error = %problem.message, "stored setting is invalid; using its default");
        }
        Ok(settings)
    }

    /// Writes the value of each key in `keys` from `changed`, all in one transaction: a patch is
    /// stored whole or not at all.
    pub async fn save_settings(
        &self,
        changed: &Settings,
        keys: &[String],
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let mut tx = self.write_tx().await?;
        for key in keys {
            let Some(value) = changed.get(key) else {
                // Keys come from `Settings::patched`, which knows only real keys; an unknown one
                // is a caller's bug, and storing it would only be ignored on the next load.
                tracing::warn!(%key, "not saving an unknown setting");
                continue;
            };
            sqlx::query(
                "INSERT INTO settings (key, value, updated_at) VALUES (?, ?, ?) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            )
            .bind(key)
            .bind(value.to_string())
            .bind(ts(now))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::testing::{at, temp_store};
    use super::*;

    #[tokio::test]
    async fn an_empty_store_has_the_default_settings() {
        let (store, _dir) = temp_store().await;
        assert_eq!(store.load_settings().await.unwrap(), Settings::default());
    }

    #[tokio::test]
    async fn saved_settings_are_loaded_back() {
        let (store, _dir) = temp_store().await;
        let patch = json!({"stale_threshold_days": 14, "base_domain": "apps.example.com", "stale_scan_interval": "30m"});
        let (next, changed) = Settings::default().patched(patch.as_object().unwrap()).unwrap();
        store.save_settings(&next, &changed, at(0)).await.unwrap();
        assert_eq!(store.load_settings().await.unwrap(), next);

        let patch = json!({"base_domain": null});
        let (after, changed) = next.patched(patch.as_object().unwrap()).unwrap();
        store.save_settings(&after, &changed, at(1)).await.unwrap();
        let loaded = store.load_settings().await.unwrap();
        assert_eq!((loaded.base_domain, loaded.stale_threshold_days), (None, 14));
    }

    #[tokio::test]
    async fn a_bad_stored_value_falls_back_to_its_default_without_failing() {
        let (store, _dir) = temp_store().await;
        for (key, value) in [
            ("stale_threshold_days", "\"seven\""),
            ("event_retention_days", "not json"),
            ("colour", "1"),
        ] {
            sqlx::query("INSERT INTO settings (key, value, updated_at) VALUES (?, ?, ?)")
                .bind(key)
                .bind(value)
                .bind(ts(at(0)))
                .execute(store.pool())
                .await
                .unwrap();
        }
        sqlx::query(
            "INSERT INTO settings (key, value, updated_at) VALUES ('deploy_health_timeout_seconds', '90', ?)",
        )
        .bind(ts(at(0)))
        .execute(store.pool())
        .await
        .unwrap();
        let loaded = store.load_settings().await.unwrap();
        assert_eq!(
            loaded.stale_threshold_days,
            Settings::default().stale_threshold_days
        );
        assert_eq!(
            loaded.event_retention_days,
            Settings::default().event_retention_days
        );
        assert_eq!(loaded.deploy_health_timeout_seconds, 90);
    }
}
