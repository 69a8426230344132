//! Instances (`instances`): the containers docker-watcher runs for a stage, with their status and
//! the times the stale rule reads (`last_alive_at`, `stale_since`).
//!
//! An instance is recorded *before* its container is created, so a crash in between leaves a row
//! to finish or roll back rather than an unrecorded container. Reads join the project and stage
//! names (every API shape shows them) and derive `is_current` from the stage's
//! `current_instance_id`, so there is one source of truth for which instance a stage routes.
//! Lists are newest first and each filter walks an index that ends in `id`.

use chrono::{DateTime, Utc};
use sqlx::{FromRow, QueryBuilder, Sqlite, SqliteConnection};

use crate::domain::instance::{Instance, InstanceFilter, InstanceStatus, NewInstance};

use super::hostnames::{self, OwnerKind};
use super::{
    Store, StoreError, StoreResult, narrow, parse_col, parse_opt_ts, parse_ts, ts, unique_to_conflict,
};

const TABLE: &str = "instances";

macro_rules! instance_select {
    () => {
        "SELECT i.id, i.project_id, p.name AS project_name, i.stage_id, s.name AS stage_name, i.image_tag, \
         i.image_digest, i.container_id, i.container_name, i.status, \
         coalesce(s.current_instance_id = i.id, 0) AS is_current, i.host_port, i.hostname, i.exit_code, \
         i.created_at, i.started_at, i.last_alive_at, i.stopped_at, i.stale_since \
         FROM instances i JOIN stages s ON s.id = i.stage_id JOIN projects p ON p.id = i.project_id"
    };
}

#[derive(FromRow)]
struct InstanceRow {
    id: i64,
    project_id: i64,
    project_name: String,
    stage_id: i64,
    stage_name: String,
    image_tag: String,
    image_digest: Option<String>,
    container_id: Option<String>,
    container_name: Option<String>,
    status: String,
    is_current: bool,
    host_port: Option<i64>,
    hostname: Option<String>,
    exit_code: Option<i64>,
    created_at: String,
    started_at: Option<String>,
    last_alive_at: Option<String>,
    stopped_at: Option<String>,
    stale_since: Option<String>,
}

impl InstanceRow {
    fn into_instance(self) -> StoreResult<Instance> {
        Ok(Instance {
            id: self.id,
            project_id: self.project_id,
            project_name: self.project_name,
            stage_id: self.stage_id,
            stage_name: self.stage_name,
            image_tag: self.image_tag,
            image_digest: self.image_digest,
            container_id: self.container_id,
            container_name: self.container_name,
            status: parse_col(TABLE, &self.status)?,
            is_current: self.is_current,
            host_port: self
                .host_port
                .map(|p| narrow(TABLE, "host_port", p))
                .transpose()?,
            hostname: self.hostname,
            exit_code: self.exit_code,
            created_at: parse_ts(TABLE, &self.created_at)?,
            started_at: parse_opt_ts(TABLE, self.started_at.as_deref())?,
            last_alive_at: parse_opt_ts(TABLE, self.last_alive_at.as_deref())?,
            stopped_at: parse_opt_ts(TABLE, self.stopped_at.as_deref())?,
            stale_since: parse_opt_ts(TABLE, self.stale_since.as_deref())?,
        })
    }
}

async fn fetch_instance(conn: &mut SqliteConnection, id: i64) -> StoreResult<Instance> {
    let row: Option<InstanceRow> = sqlx::query_as(concat!(instance_select!(), " WHERE i.id = ?"))
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.ok_or(StoreError::NotFound)?.into_instance()
}

/// The statuses in which an instance's container is not running and has stopped for good or for
/// now: entering one stamps `stopped_at`.
fn is_stopped(status: InstanceStatus) -> bool {
    matches!(
        status,
        InstanceStatus::Stopped | InstanceStatus::Failed | InstanceStatus::Missing
    )
}

impl Store {
    /// Records a new instance of a stage, claiming its hostname (a per-tag instance's) in the same
    /// transaction. `NotFound` when the stage does not exist or is not the project's; a conflict
    /// on `hostname` when someone else routes it. An older instance of the same stage that held
    /// the hostname hands it over (see [`hostnames::claim_for_instance`]).
    pub async fn insert_instance(&self, new: &NewInstance) -> StoreResult<Instance> {
        let mut tx = self.write_tx().await?;
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO instances (project_id, stage_id, image_tag, image_digest, status, hostname, created_at) \
             SELECT project_id, id, ?, ?, ?, ?, ? FROM stages WHERE id = ? AND project_id = ? RETURNING id",
        )
        .bind(&new.image_tag)
        .bind(new.image_digest.as_deref())
        .bind(new.status.as_str())
        .bind(new.hostname.as_deref())
        .bind(ts(new.created_at))
        .bind(new.stage_id)
        .bind(new.project_id)
        .fetch_optional(&mut *tx)
        .await?;
        let id = id.ok_or(StoreError::NotFound)?;
        if let Some(hostname) = &new.hostname {
            hostnames::claim_for_instance(&mut tx, &hostname.to_ascii_lowercase(), new.stage_id, id).await?;
        }
        let instance = fetch_instance(&mut tx, id).await?;
        tx.commit().await?;
        Ok(instance)
    }

    pub async fn get_instance(&self, id: i64) -> StoreResult<Instance> {
        let mut conn = self.pool().acquire().await?;
        fetch_instance(&mut conn, id).await
    }

    /// Instances matching every given filter, newest first.
    pub async fn list_instances(&self, filter: &InstanceFilter) -> StoreResult<Vec<Instance>> {
        let mut query: QueryBuilder<Sqlite> = QueryBuilder::new(concat!(instance_select!(), " WHERE 1 = 1"));
        if let Some(project_id) = filter.project_id {
            query.push(" AND i.project_id = ").push_bind(project_id);
        }
        if let Some(stage_id) = filter.stage_id {
            query.push(" AND i.stage_id = ").push_bind(stage_id);
        }
        if let Some(status) = filter.status {
            query.push(" AND i.status = ").push_bind(status.as_str());
        }
        query.push(" ORDER BY i.id DESC");
        let rows: Vec<InstanceRow> = query.build_query_as().fetch_all(self.pool()).await?;
        rows.into_iter().map(InstanceRow::into_instance).collect()
    }

    /// Moves an instance to `status`. Entering `stopped`, `failed` or `missing` stamps
    /// `stopped_at` (kept if it is already stopped, so `stopped` → `missing` does not move it) and
    /// keeps the exit code when one is given; entering `running` is [`Store::mark_instance_alive`].
    /// `removing` and the early statuses change nothing else, so a failed cleanup can put the
    /// previous status back without losing its times.
    pub async fn update_instance_status(
        &self,
        id: i64,
        status: InstanceStatus,
        exit_code: Option<i64>,
        now: DateTime<Utc>,
    ) -> StoreResult<Instance> {
        if status == InstanceStatus::Running {
            return self.mark_instance_alive(id, now).await;
        }
        let stopped = is_stopped(status);
        let done = sqlx::query(
            "UPDATE instances SET status = ?1, \
               stopped_at = CASE WHEN ?2 THEN coalesce(stopped_at, ?3) ELSE stopped_at END, \
               exit_code = coalesce(?4, exit_code) \
             WHERE id = ?5",
        )
        .bind(status.as_str())
        .bind(stopped)
        .bind(ts(now))
        .bind(exit_code)
        .bind(id)
        .execute(self.pool())
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        self.get_instance(id).await
    }

    /// Records the container created for an instance. A container id recorded for another
    /// instance is a conflict on `container_id`.
    pub async fn set_instance_container(
        &self,
        id: i64,
        container_id: &str,
        container_name: &str,
        host_port: Option<u16>,
    ) -> StoreResult<Instance> {
        let done = sqlx::query(
            "UPDATE instances SET container_id = ?, container_name = ?, host_port = ? WHERE id = ?",
        )
        .bind(container_id)
        .bind(container_name)
        .bind(host_port)
        .bind(id)
        .execute(self.pool())
        .await
        .map_err(|e| {
            unique_to_conflict(
                e,
                "container_id",
                format!("container {container_id} belongs to another instance"),
            )
        })?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        self.get_instance(id).await
    }

    /// Records that the instance was seen running now: status `running`, `last_alive_at` = now,
    /// `started_at` if it never started, and the stale mark and the stop cleared (an instance that
    /// comes back and goes stale again gets a new warning).
    pub async fn mark_instance_alive(&self, id: i64, now: DateTime<Utc>) -> StoreResult<Instance> {
        let done = sqlx::query(
            "UPDATE instances SET status = 'running', last_alive_at = ?1, started_at = coalesce(started_at, ?1), \
             stale_since = NULL, stopped_at = NULL, exit_code = NULL WHERE id = ?2",
        )
        .bind(ts(now))
        .bind(id)
        .execute(self.pool())
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        self.get_instance(id).await
    }

    /// Deletes an instance (its container is gone), releasing its hostname and unsetting it as
    /// its stage's current instance. Deployments keep its id as history.
    pub async fn delete_instance(&self, id: i64) -> StoreResult<()> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query("DELETE FROM instances WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        hostnames::release(&mut tx, OwnerKind::Instance, id).await?;
        sqlx::query("UPDATE stages SET current_instance_id = NULL WHERE current_instance_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{at, shop_prod, temp_store};
    use super::*;

    fn new_instance(project_id: i64, stage_id: i64, tag: &str, secs: i64) -> NewInstance {
        NewInstance {
            project_id,
            stage_id,
            image_tag: tag.into(),
            image_digest: Some(format!("sha256:{tag}")),
            status: InstanceStatus::Pending,
            hostname: None,
            created_at: at(secs),
        }
    }

    #[tokio::test]
    async fn an_instance_is_read_back_with_its_project_and_stage_names() {
        let (store, _dir) = temp_store().await;
        let (project, stage) = shop_prod(&store).await;
        let instance = store
            .insert_instance(&new_instance(project.id, stage.id, "v1", 0))
            .await
            .unwrap();
        assert_eq!(
            (instance.project_name.as_str(), instance.stage_name.as_str()),
            ("shop", "prod")
        );
        assert_eq!(
            (instance.status, instance.is_current),
            (InstanceStatus::Pending, false)
        );
        assert_eq!(instance.image_digest.as_deref(), Some("sha256:v1"));
        assert_eq!((instance.created_at, instance.started_at), (at(0), None));
        store
            .set_current_instance(stage.id, Some(instance.id))
            .await
            .unwrap();
        assert!(store.get_instance(instance.id).await.unwrap().is_current);
    }

    #[tokio::test]
    async fn an_instance_of_a_stage_outside_its_project_is_not_found() {
        let (store, _dir) = temp_store().await;
        let (project, stage) = shop_prod(&store).await;
        assert!(matches!(
            store
                .insert_instance(&new_instance(project.id, 999, "v1", 0))
                .await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            store.insert_instance(&new_instance(999, stage.id, "v1", 0)).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(store.get_instance(1).await, Err(StoreError::NotFound)));
    }

    #[tokio::test]
    async fn instances_are_listed_newest_first_and_filtered() {
        let (store, _dir) = temp_store().await;
        let (project, prod) = shop_prod(&store).await;
        let dev = store
            .insert_stage(project.id, &super::super::testing::new_stage("dev"), at(0))
            .await
            .unwrap();
        let a = store
            .insert_instance(&new_instance(project.id, prod.id, "v1", 0))
            .await
            .unwrap();
        let b = store
            .insert_instance(&new_instance(project.id, dev.id, "v2", 1))
            .await
            .unwrap();
        let c = store
            .insert_instance(&new_instance(project.id, prod.id, "v3", 2))
            .await
            .unwrap();
        store.mark_instance_alive(c.id, at(3)).await.unwrap();
        let ids = |list: Vec<Instance>| list.iter().map(|i| i.id).collect::<Vec<_>>();
        assert_eq!(
            ids(store.list_instances(&InstanceFilter::default()).await.unwrap()),
            vec![c.id, b.id, a.id]
        );
        let prod_only = InstanceFilter {
            stage_id: Some(prod.id),
            ..Default::default()
        };
        assert_eq!(
            ids(store.list_instances(&prod_only).await.unwrap()),
            vec![c.id, a.id]
        );
        let running = InstanceFilter {
            project_id: Some(project.id),
            status: Some(InstanceStatus::Running),
            ..Default::default()
        };
        assert_eq!(ids(store.list_instances(&running).await.unwrap()), vec![c.id]);
        let none = InstanceFilter {
            project_id: Some(999),
            ..Default::default()
        };
        assert!(store.list_instances(&none).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn being_seen_alive_sets_the_start_once_and_clears_the_stale_mark() {
        let (store, _dir) = temp_store().await;
        let (project, stage) = shop_prod(&store).await;
        let instance = store
            .insert_instance(&new_instance(project.id, stage.id, "v1", 0))
            .await
            .unwrap();
        sqlx::query("UPDATE instances SET stale_since = ? WHERE id = ?")
            .bind(ts(at(1)))
            .bind(instance.id)
            .execute(store.pool())
            .await
            .unwrap();
        let alive = store.mark_instance_alive(instance.id, at(10)).await.unwrap();
        assert_eq!(alive.status, InstanceStatus::Running);
        assert_eq!(
            (alive.started_at, alive.last_alive_at, alive.stale_since),
            (Some(at(10)), Some(at(10)), None)
        );
        let later = store.mark_instance_alive(instance.id, at(20)).await.unwrap();
        assert_eq!(
            (later.started_at, later.last_alive_at),
            (Some(at(10)), Some(at(20)))
        );
    }

    #[tokio::test]
    async fn stopping_stamps_the_stop_once_and_keeps_the_exit_code() {
        let (store, _dir) = temp_store().await;
        let (project, stage) = shop_prod(&store).await;
        let instance = store
            .insert_instance(&new_instance(project.id, stage.id, "v1", 0))
            .await
            .unwrap();
        store
            .update_instance_status(instance.id, InstanceStatus::Running, None, at(1))
            .await
            .unwrap();
        let failed = store
            .update_instance_status(instance.id, InstanceStatus::Failed, Some(137), at(5))
            .await
            .unwrap();
        assert_eq!(
            (failed.status, failed.exit_code, failed.stopped_at),
            (InstanceStatus::Failed, Some(137), Some(at(5)))
        );
        let removing = store
            .update_instance_status(instance.id, InstanceStatus::Removing, None, at(6))
            .await
            .unwrap();
        assert_eq!(removing.stopped_at, Some(at(5)));
        let missing = store
            .update_instance_status(instance.id, InstanceStatus::Missing, None, at(7))
            .await
            .unwrap();
        assert_eq!((missing.exit_code, missing.stopped_at), (Some(137), Some(at(5))));
        let restarted = store
            .update_instance_status(instance.id, InstanceStatus::Running, None, at(8))
            .await
            .unwrap();
        assert_eq!((restarted.exit_code, restarted.stopped_at), (None, None));
        assert!(matches!(
            store
                .update_instance_status(999, InstanceStatus::Stopped, None, at(0))
                .await,
            Err(StoreError::NotFound)
        ));
    }

    #[tokio::test]
    async fn a_container_id_belongs_to_one_instance_only() {
        let (store, _dir) = temp_store().await;
        let (project, stage) = shop_prod(&store).await;
        let a = store
            .insert_instance(&new_instance(project.id, stage.id, "v1", 0))
            .await
            .unwrap();
        let b = store
            .insert_instance(&new_instance(project.id, stage.id, "v2", 0))
            .await
            .unwrap();
        let with = store
            .set_instance_container(a.id, "c0ffee", "dw-shop-prod-1", Some(32768))
            .await
            .unwrap();
        assert_eq!(
            (with.container_id.as_deref(), with.host_port),
            (Some("c0ffee"), Some(32768))
        );
        let err = store
            .set_instance_container(b.id, "c0ffee", "dw-shop-prod-2", None)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Conflict {
                    field: "container_id",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_per_tag_hostname_passes_to_the_newer_instance_of_its_stage_only() {
        let (store, _dir) = temp_store().await;
        let (project, stage) = shop_prod(&store).await;
        let mut first = new_instance(project.id, stage.id, "pr-1", 0);
        first.hostname = Some("pr-1.prod.shop.example.com".into());
        let first = store.insert_instance(&first).await.unwrap();
        let mut second = new_instance(project.id, stage.id, "pr-1", 1);
        second.hostname = first.hostname.clone();
        let second = store.insert_instance(&second).await.unwrap();
        let host = "pr-1.prod.shop.example.com";
        assert_eq!(
            store.hostname_owner(host).await.unwrap(),
            Some(("instance".into(), second.id))
        );

        let other = store
            .insert_stage(project.id, &super::super::testing::new_stage("dev"), at(0))
            .await
            .unwrap();
        let mut clash = new_instance(project.id, other.id, "pr-1", 2);
        clash.hostname = Some(host.into());
        let err = store.insert_instance(&clash).await.unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Conflict {
                    field: "hostname",
                    ..
                }
            ),
            "{err:?}"
        );

        store.delete_instance(first.id).await.unwrap();
        assert_eq!(
            store.hostname_owner(host).await.unwrap(),
            Some(("instance".into(), second.id))
        );
        store
            .set_current_instance(stage.id, Some(second.id))
            .await
            .unwrap();
        store.delete_instance(second.id).await.unwrap();
        assert_eq!(store.hostname_owner(host).await.unwrap(), None);
        assert_eq!(store.get_stage(stage.id).await.unwrap().current_instance_id, None);
        assert!(matches!(
            store.delete_instance(second.id).await,
            Err(StoreError::NotFound)
        ));
    }
}
