//! Deployments (`deployments`) and failed digests (`failed_digests`).
//!
//! A deployment is recorded when an attempt starts and finished when it ends, so one that was
//! interrupted by a crash is visible as `running` on the next start. A digest whose deploy failed
//! is remembered per stage so that automatic deploys skip it across restarts until a newer digest
//! appears or a user deploys it by hand (SPEC §3, step 7).

use chrono::{DateTime, Utc};
use sqlx::FromRow;

use crate::domain::instance::{Deployment, DeploymentStatus, FailedDigest, Trigger};

use super::{
    Store, StoreError, StoreResult, is_foreign_key_violation, parse_col, parse_opt_ts, parse_ts, ts,
};

const TABLE: &str = "deployments";

macro_rules! deployment_columns {
    () => {
        "id, stage_id, instance_id, image_tag, image_digest, trigger, status, error, actor, started_at, finished_at, \
         hook_output"
    };
}

#[derive(FromRow)]
struct DeploymentRow {
    id: i64,
    stage_id: i64,
    instance_id: Option<i64>,
    image_tag: String,
    image_digest: Option<String>,
    trigger: String,
    status: String,
    error: Option<String>,
    actor: Option<String>,
    started_at: String,
    finished_at: Option<String>,
    hook_output: Option<String>,
}

impl DeploymentRow {
    fn into_deployment(self) -> StoreResult<Deployment> {
        Ok(Deployment {
            id: self.id,
            stage_id: self.stage_id,
            instance_id: self.instance_id,
            image_tag: self.image_tag,
            image_digest: self.image_digest,
            trigger: parse_col(TABLE, &self.trigger)?,
            status: parse_col(TABLE, &self.status)?,
            error: self.error,
            actor: self.actor,
            started_at: parse_ts(TABLE, &self.started_at)?,
            finished_at: parse_opt_ts(TABLE, self.finished_at.as_deref())?,
            hook_output: self.hook_output,
        })
    }
}

impl Store {
    /// Records the start of a deployment (status `running`); `NotFound` when the stage does not
    /// exist.
    #[allow(clippy::too_many_arguments)]
    pub async fn insert_deployment(
        &self,
        stage_id: i64,
        instance_id: Option<i64>,
        tag: &str,
        digest: Option<&str>,
        trigger: Trigger,
        actor: Option<&str>,
        now: DateTime<Utc>,
    ) -> StoreResult<Deployment> {
        let row: DeploymentRow = sqlx::query_as(concat!(
            "INSERT INTO deployments (stage_id, instance_id, image_tag, image_digest, trigger, status, actor, started_at) \
             VALUES (?, ?, ?, ?, ?, 'running', ?, ?) RETURNING ",
            deployment_columns!()
        ))
        .bind(stage_id)
        .bind(instance_id)
        .bind(tag)
        .bind(digest)
        .bind(trigger.as_str())
        .bind(actor)
        .bind(ts(now))
        .fetch_one(self.pool())
        .await
        .map_err(|e| if is_foreign_key_violation(&e) { StoreError::NotFound } else { e.into() })?;
        row.into_deployment()
    }

    /// Records how a deployment ended.
    pub async fn finish_deployment(
        &self,
        id: i64,
        status: DeploymentStatus,
        error: Option<&str>,
        now: DateTime<Utc>,
    ) -> StoreResult<Deployment> {
        let row: Option<DeploymentRow> = sqlx::query_as(concat!(
            "UPDATE deployments SET status = ?, error = ?, finished_at = ? WHERE id = ? RETURNING ",
            deployment_columns!()
        ))
        .bind(status.as_str())
        .bind(error)
        .bind(ts(now))
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.ok_or(StoreError::NotFound)?.into_deployment()
    }

    /// Appends a hook's output to the deployment's, keeping the last 64 Ki characters.
    pub async fn append_hook_output(&self, id: i64, output: &str) -> StoreResult<()> {
        let done = sqlx::query(
            "UPDATE deployments SET hook_output = \
             substr(COALESCE(hook_output || char(10), '') || ?, -65536) WHERE id = ?",
        )
        .bind(output)
        .bind(id)
        .execute(self.pool())
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Up to `limit` deployments, of one stage or of all, newest first.
    pub async fn list_deployments(&self, stage_id: Option<i64>, limit: u32) -> StoreResult<Vec<Deployment>> {
        // Two statements rather than `stage_id = ?1 OR ?1 IS NULL`, which SQLite cannot plan on
        // the (stage_id, id) index.
        let rows: Vec<DeploymentRow> = match stage_id {
            Some(stage_id) => {
                sqlx::query_as(concat!(
                    "SELECT ",
                    deployment_columns!(),
                    " FROM deployments WHERE stage_id = ? ORDER BY id DESC LIMIT ?"
                ))
                .bind(stage_id)
                .bind(limit)
                .fetch_all(self.pool())
                .await?
            }
            None => {
                sqlx::query_as(concat!(
                    "SELECT ",
                    deployment_columns!(),
                    " FROM deployments ORDER BY id DESC LIMIT ?"
                ))
                .bind(limit)
                .fetch_all(self.pool())
                .await?
            }
        };
        rows.into_iter().map(DeploymentRow::into_deployment).collect()
    }

    /// Every deployment still `running`, oldest first: at startup these are the deploys a crash
    /// interrupted (Docker sync finishes or rolls them back).
    pub async fn list_running_deployments(&self) -> StoreResult<Vec<Deployment>> {
        let rows: Vec<DeploymentRow> = sqlx::query_as(concat!(
            "SELECT ",
            deployment_columns!(),
            " FROM deployments WHERE status = 'running' ORDER BY id"
        ))
        .fetch_all(self.pool())
        .await?;
        rows.into_iter().map(DeploymentRow::into_deployment).collect()
    }

    /// Remembers that deploying `digest` on a stage failed (the latest failure wins).
    pub async fn record_failed_digest(
        &self,
        stage_id: i64,
        digest: &str,
        tag: &str,
        error: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO failed_digests (stage_id, digest, image_tag, error, failed_at) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (stage_id, digest) DO UPDATE SET image_tag = excluded.image_tag, error = excluded.error, \
             failed_at = excluded.failed_at",
        )
        .bind(stage_id)
        .bind(digest)
        .bind(tag)
        .bind(error)
        .bind(ts(now))
        .execute(self.pool())
        .await
        .map_err(|e| if is_foreign_key_violation(&e) { StoreError::NotFound } else { e.into() })?;
        Ok(())
    }

    /// Whether automatic deploys of `digest` on this stage are to be skipped.
    pub async fn is_failed_digest(&self, stage_id: i64, digest: &str) -> StoreResult<bool> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM failed_digests WHERE stage_id = ? AND digest = ?")
                .bind(stage_id)
                .bind(digest)
                .fetch_optional(self.pool())
                .await?;
        Ok(found.is_some())
    }

    /// A stage's failed digests, the latest failure first.
    pub async fn list_failed_digests(&self, stage_id: i64) -> StoreResult<Vec<FailedDigest>> {
        let rows: Vec<(String, String, Option<String>, String)> = sqlx::query_as(
            "SELECT digest, image_tag, error, failed_at FROM failed_digests WHERE stage_id = ? \
             ORDER BY failed_at DESC, digest",
        )
        .bind(stage_id)
        .fetch_all(self.pool())
        .await?;
        rows.into_iter()
            .map(|(digest, image_tag, error, failed_at)| {
                Ok(FailedDigest {
                    stage_id,
                    digest,
                    image_tag,
                    error: error.unwrap_or_default(),
                    failed_at: parse_ts("failed_digests", &failed_at)?,
                })
            })
            .collect()
    }

    /// Forgets a failed digest (a user deployed it by hand, or it succeeded). Forgetting one that
    /// was never recorded is not an error.
    pub async fn clear_failed_digest(&self, stage_id: i64, digest: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM failed_digests WHERE stage_id = ? AND digest = ?")
            .bind(stage_id)
            .bind(digest)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{at, shop_prod, temp_store};
    use super::*;

    #[tokio::test]
    async fn a_deployment_starts_running_and_finishes_with_its_outcome() {
        let (store, _dir) = temp_store().await;
        let (_, stage) = shop_prod(&store).await;
        let started = store
            .insert_deployment(
                stage.id,
                None,
                "v2",
                Some("sha256:bb"),
                Trigger::Manual,
                Some("alice"),
                at(0),
            )
            .await
            .unwrap();
        assert_eq!(
            (started.status, started.trigger),
            (DeploymentStatus::Running, Trigger::Manual)
        );
        assert_eq!(
            (started.actor.as_deref(), started.finished_at),
            (Some("alice"), None)
        );
        let failed = store
            .finish_deployment(
                started.id,
                DeploymentStatus::Failed,
                Some("health check timed out"),
                at(9),
            )
            .await
            .unwrap();
        assert_eq!(failed.status, DeploymentStatus::Failed);
        assert_eq!(
            (failed.error.as_deref(), failed.finished_at),
            (Some("health check timed out"), Some(at(9)))
        );
        assert_eq!(failed.started_at, at(0));
        assert!(matches!(
            store
                .finish_deployment(999, DeploymentStatus::Succeeded, None, at(0))
                .await,
            Err(StoreError::NotFound)
        ));
    }

    #[tokio::test]
    async fn a_deployment_of_a_missing_stage_is_not_found() {
        let (store, _dir) = temp_store().await;
        let err = store
            .insert_deployment(42, None, "v1", None, Trigger::Poll, None, at(0))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::NotFound), "{err:?}");
    }

    #[tokio::test]
    async fn deployments_are_listed_newest_first_per_stage_or_all_within_the_limit() {
        let (store, _dir) = temp_store().await;
        let (project, prod) = shop_prod(&store).await;
        let dev = store
            .insert_stage(project.id, &super::super::testing::new_stage("dev"), at(0))
            .await
            .unwrap();
        let mut ids = Vec::new();
        for (i, stage) in [prod.id, dev.id, prod.id].into_iter().enumerate() {
            let d = store
                .insert_deployment(stage, None, "v1", None, Trigger::Poll, None, at(i as i64))
                .await
                .unwrap();
            ids.push(d.id);
        }
        let list = |v: Vec<Deployment>| v.iter().map(|d| d.id).collect::<Vec<_>>();
        assert_eq!(
            list(store.list_deployments(Some(prod.id), 10).await.unwrap()),
            vec![ids[2], ids[0]]
        );
        assert_eq!(
            list(store.list_deployments(None, 2).await.unwrap()),
            vec![ids[2], ids[1]]
        );
        assert!(store.list_deployments(Some(999), 10).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_failed_digest_is_remembered_until_cleared() {
        let (store, _dir) = temp_store().await;
        let (_, stage) = shop_prod(&store).await;
        assert!(!store.is_failed_digest(stage.id, "sha256:bad").await.unwrap());
        store
            .record_failed_digest(stage.id, "sha256:bad", "v3", "exited 1", at(0))
            .await
            .unwrap();
        store
            .record_failed_digest(stage.id, "sha256:bad", "v3", "exited 2", at(1))
            .await
            .unwrap();
        assert!(store.is_failed_digest(stage.id, "sha256:bad").await.unwrap());
        assert!(!store.is_failed_digest(stage.id, "sha256:good").await.unwrap());
        let listed = store.list_failed_digests(stage.id).await.unwrap();
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(
            (
                listed[0].digest.as_str(),
                listed[0].image_tag.as_str(),
                listed[0].error.as_str()
            ),
            ("sha256:bad", "v3", "exited 2")
        );
        assert_eq!(listed[0].failed_at, at(1));
        store.clear_failed_digest(stage.id, "sha256:bad").await.unwrap();
        store.clear_failed_digest(stage.id, "sha256:bad").await.unwrap();
        assert!(store.list_failed_digests(stage.id).await.unwrap().is_empty());
        assert!(!store.is_failed_digest(stage.id, "sha256:bad").await.unwrap());
        let err = store
            .record_failed_digest(999, "sha256:x", "v1", "e", at(0))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::NotFound), "{err:?}");
    }
}
