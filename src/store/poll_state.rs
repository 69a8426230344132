//! What the poller keeps between polls (`digest_first_seen`, and reads of `failed_digests` and
//! the stages' available tag): when each stage first saw each digest, so `min_release_age`
//! survives a restart; the stage's failed digests in one read; and the available tag, written
//! only when it changes so the poller can tell a new one from one it already reported.
//!
//! Polling is the hot path of a quiet installation (hundreds of stages every few minutes, most
//! of them unchanged), so in the steady state each call here is a single read and writes nothing.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use super::{Store, StoreResult, parse_ts, ts};

const TABLE: &str = "digest_first_seen";

impl Store {
    /// When the stage first saw each of `digests` (the digests its policy selects now),
    /// recording `now` for those it never saw and forgetting the ones it no longer selects.
    /// Writes only when something is new or gone.
    pub async fn digests_first_seen(
        &self,
        stage_id: i64,
        digests: &[&str],
        now: DateTime<Utc>,
    ) -> StoreResult<BTreeMap<String, DateTime<Utc>>> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT digest, first_seen_at FROM digest_first_seen WHERE stage_id = ?")
                .bind(stage_id)
                .fetch_all(self.pool())
                .await?;
        let wanted: BTreeSet<&str> = digests.iter().copied().collect();
        let mut seen = BTreeMap::new();
        let mut gone = Vec::new();
        for (digest, at) in rows {
            if wanted.contains(digest.as_str()) {
                seen.insert(digest, parse_ts(TABLE, &at)?);
            } else {
                gone.push(digest);
            }
        }
        let new: Vec<&str> = wanted
            .into_iter()
            .filter(|digest| !seen.contains_key(*digest))
            .collect();
        if new.is_empty() && gone.is_empty() {
            return Ok(seen);
        }
        let mut tx = self.write_tx().await?;
        for digest in &gone {
            sqlx::query("DELETE FROM digest_first_seen WHERE stage_id = ? AND digest = ?")
                .bind(stage_id)
                .bind(digest)
                .execute(&mut *tx)
                .await?;
        }
        for digest in new {
            // The stage may be deleted while it is polled: then there is nothing to remember.
            sqlx::query(
                "INSERT OR IGNORE INTO digest_first_seen (stage_id, digest, first_seen_at) \
                 SELECT id, ?, ? FROM stages WHERE id = ?",
            )
            .bind(digest)
            .bind(ts(now))
            .bind(stage_id)
            .execute(&mut *tx)
            .await?;
            seen.insert(digest.to_owned(), now);
        }
        tx.commit().await?;
        Ok(seen)
    }

    /// Every digest whose deploy failed on the stage (see [`Store::is_failed_digest`]).
    pub async fn failed_digests(&self, stage_id: i64) -> StoreResult<BTreeSet<String>> {
        let digests: Vec<String> = sqlx::query_scalar("SELECT digest FROM failed_digests WHERE stage_id = ?")
            .bind(stage_id)
            .fetch_all(self.pool())
            .await?;
        Ok(digests.into_iter().collect())
    }

    /// Sets the stage's available tag and digest when they differ from what is stored; answers
    /// whether they did (false as well for a stage that no longer exists).
    pub async fn record_available_tag(
        &self,
        stage_id: i64,
        tag: Option<&str>,
        digest: Option<&str>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE stages SET available_tag = ?1, available_digest = ?2, updated_at = ?3 \
             WHERE id = ?4 AND (available_tag IS NOT ?1 OR available_digest IS NOT ?2)",
        )
        .bind(tag)
        .bind(digest)
        .bind(ts(now))
        .bind(stage_id)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{at, shop_prod, temp_store};

    #[tokio::test]
    async fn a_digest_keeps_the_time_it_was_first_seen() {
        let (store, _dir) = temp_store().await;
        let (_, stage) = shop_prod(&store).await;
        let first = store
            .digests_first_seen(stage.id, &["sha256:a"], at(0))
            .await
            .unwrap();
        assert_eq!(first.get("sha256:a"), Some(&at(0)));
        let later = store
            .digests_first_seen(stage.id, &["sha256:a", "sha256:b"], at(10))
            .await
            .unwrap();
        assert_eq!(later.get("sha256:a"), Some(&at(0)));
        assert_eq!(later.get("sha256:b"), Some(&at(10)));
        assert_eq!(later.len(), 2);
    }

    #[tokio::test]
    async fn a_digest_no_longer_selected_is_forgotten() {
        let (store, _dir) = temp_store().await;
        let (_, stage) = shop_prod(&store).await;
        store
            .digests_first_seen(stage.id, &["sha256:a"], at(0))
            .await
            .unwrap();
        let now = store
            .digests_first_seen(stage.id, &["sha256:b"], at(5))
            .await
            .unwrap();
        assert_eq!(now.keys().collect::<Vec<_>>(), ["sha256:b"]);
        let back = store
            .digests_first_seen(stage.id, &["sha256:a"], at(9))
            .await
            .unwrap();
        assert_eq!(back.get("sha256:a"), Some(&at(9)));
    }

    #[tokio::test]
    async fn first_seen_times_are_per_stage_and_go_with_the_stage() {
        let (store, _dir) = temp_store().await;
        let (project, prod) = shop_prod(&store).await;
        let dev = store
            .insert_stage(project.id, &super::super::testing::new_stage("dev"), at(0))
            .await
            .unwrap();
        store
            .digests_first_seen(prod.id, &["sha256:a"], at(0))
            .await
            .unwrap();
        let dev_seen = store
            .digests_first_seen(dev.id, &["sha256:a"], at(7))
            .await
            .unwrap();
        assert_eq!(dev_seen.get("sha256:a"), Some(&at(7)));
        store.delete_stage(dev.id).await.unwrap();
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM digest_first_seen WHERE stage_id = ?")
            .bind(dev.id)
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(count, 0);
        // A stage that is gone records nothing.
        let none = store
            .digests_first_seen(dev.id, &["sha256:b"], at(8))
            .await
            .unwrap();
        assert_eq!(none.len(), 1);
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM digest_first_seen WHERE stage_id = ?")
            .bind(dev.id)
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(count, 0);
    }

    #[tokio::test]
    async fn failed_digests_are_read_in_one_go() {
        let (store, _dir) = temp_store().await;
        let (_, stage) = shop_prod(&store).await;
        assert!(store.failed_digests(stage.id).await.unwrap().is_empty());
        for digest in ["sha256:a", "sha256:b"] {
            store
                .record_failed_digest(stage.id, digest, "v1", "boom", at(0))
                .await
                .unwrap();
        }
        let failed = store.failed_digests(stage.id).await.unwrap();
        assert_eq!(failed.into_iter().collect::<Vec<_>>(), ["sha256:a", "sha256:b"]);
    }

    #[tokio::test]
    async fn the_available_tag_reports_whether_it_changed() {
        let (store, _dir) = temp_store().await;
        let (_, stage) = shop_prod(&store).await;
        let set = |tag: Option<&'static str>, digest: Option<&'static str>, secs| {
            let store = store.clone();
            async move {
                store
                    .record_available_tag(stage.id, tag, digest, at(secs))
                    .await
                    .unwrap()
            }
        };
        assert!(set(Some("v1"), Some("sha256:a"), 1).await);
        assert!(!set(Some("v1"), Some("sha256:a"), 2).await);
        assert!(set(Some("v1"), Some("sha256:b"), 3).await);
        assert!(set(None, None, 4).await);
        assert!(!set(None, None, 5).await);
        let read = store.get_stage(stage.id).await.unwrap();
        assert_eq!((read.available_tag, read.updated_at), (None, at(4)));
        assert!(
            !store
                .record_available_tag(999, Some("v1"), None, at(0))
                .await
                .unwrap()
        );
    }
}
