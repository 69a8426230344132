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
         i.created_at, i.started_at, i.last_alive_at, i.stopped_at, i.stale_since, i.config_revision \
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
    config_revision: i64,
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
            config_revision: self.config_revision,
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
        // Hostnames compare without case; the stored spelling is the canonical lower-case one.
        let hostname = new.hostname.as_deref().map(str::to_ascii_lowercase);
        let mut tx = self.write_tx().await?;
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO instances (project_id, stage_id, image_tag, image_digest, status, hostname, created_at, \
             config_revision) \
             SELECT project_id, id, ?, ?, ?, ?, ?, ? FROM stages WHERE id = ? AND project_id = ? RETURNING id",
        )
        .bind(&new.image_tag)
        .bind(new.image_digest.as_deref())
        .bind(new.status.as_str())
        .bind(hostname.as_deref())
        .bind(ts(new.created_at))
        .bind(new.config_revision)
        .bind(new.stage_id)
        .bind(new.project_id)
        .fetch_optional(&mut *tx)
        .await?;
        let id = id.ok_or(StoreError::NotFound)?;
        if let Some(hostname) = &hostname {
            hostnames::claim_for_instance(&mut tx, hostname, new.stage_id, id).await?;
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

    /// Moves an instance to `status` only while it is still `expected`: for observers (Docker
    /// sync, the stale scan) that must never overwrite a status a workflow set in the meantime
    /// (a deploy, a cleanup), and for a workflow that claims an instance from the status it read.
    /// Stamps as [`Store::update_instance_status`] does, and entering `running` as
    /// [`Store::mark_instance_alive`] does. `Ok(None)` when the row is gone or its status moved
    /// on.
    pub async fn update_instance_status_if(
        &self,
        id: i64,
        expected: InstanceStatus,
        status: InstanceStatus,
        exit_code: Option<i64>,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Instance>> {
        self.update_instance_status_where(id, StatusGuard::Is(expected), status, exit_code, now)
            .await
    }

    /// Moves an instance to `status` unless a cleanup has claimed it (`removing`): for the
    /// instance actions' writes after their container call, which the Docker sync may have
    /// observed (and recorded) first — a restart's own `die` and `start` move the status under
    /// it — but which must never take an instance back from the cleanup that owns it. Stamps as
    /// [`Store::update_instance_status_if`] does. `Ok(None)` when the row is gone or `removing`.
    pub async fn update_instance_status_unless_removing(
        &self,
        id: i64,
        status: InstanceStatus,
        exit_code: Option<i64>,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Instance>> {
        self.update_instance_status_where(
            id,
            StatusGuard::IsNot(InstanceStatus::Removing),
            status,
            exit_code,
            now,
        )
        .await
    }

    async fn update_instance_status_where(
        &self,
        id: i64,
        guard: StatusGuard,
        status: InstanceStatus,
        exit_code: Option<i64>,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Instance>> {
        let (op, guarded) = match guard {
            StatusGuard::Is(s) => ("=", s),
            StatusGuard::IsNot(s) => ("<>", s),
        };
        let done = if status == InstanceStatus::Running {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE instances SET status = 'running', last_alive_at = ?1, started_at = coalesce(started_at, ?1), \
                 stale_since = NULL, stopped_at = NULL, exit_code = NULL WHERE id = ?2 AND status {op} ?3"
            )))
            .bind(ts(now))
            .bind(id)
            .bind(guarded.as_str())
            .execute(self.pool())
            .await?
        } else {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE instances SET status = ?1, \
                   stopped_at = CASE WHEN ?2 THEN coalesce(stopped_at, ?3) ELSE stopped_at END, \
                   exit_code = coalesce(?4, exit_code) \
                 WHERE id = ?5 AND status {op} ?6"
            )))
            .bind(status.as_str())
            .bind(is_stopped(status))
            .bind(ts(now))
            .bind(exit_code)
            .bind(id)
            .bind(guarded.as_str())
            .execute(self.pool())
            .await?
        };
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        match self.get_instance(id).await {
            Ok(instance) => Ok(Some(instance)),
            Err(StoreError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Which rows a conditional status write applies to; the operator is one of two literals, so the
/// statement is built from constants only.
#[derive(Debug, Clone, Copy)]
enum StatusGuard {
    Is(InstanceStatus),
    IsNot(InstanceStatus),
}

/// A status an observer saw (the stale scan, from its one list call), written only while the
/// row still has `expected` — the same guard as [`Store::update_instance_status_if`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObservedStatus {
    pub id: i64,
    pub expected: InstanceStatus,
    /// `running` means "seen alive now": it refreshes `last_alive_at` and clears the stale mark
    /// even when `expected` is `running` already.
    pub status: InstanceStatus,
    pub exit_code: Option<i64>,
}

/// What [`Store::write_stale_scan`] actually changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StaleScanWritten {
    /// Instances whose observed status was written.
    pub observed: Vec<i64>,
    /// Instances marked stale now: each one gets its single warning.
    pub marked: Vec<i64>,
    /// Marks taken off because the rule no longer holds.
    pub unmarked: u64,
}

/// Statuses the stale mark and the stale cleanup never apply to: alive, or owned by a deploy or a
/// cleanup in progress.
const NEVER_STALE_SQL: &str = "('running', 'pending', 'deploying', 'removing')";

/// A JSON array of ids, bound as one parameter and read with `json_each`: one statement per
/// group however many rows, and no limit on bound parameters.
fn id_array(ids: impl IntoIterator<Item = i64>) -> String {
    let ids: Vec<i64> = ids.into_iter().collect();
    serde_json::Value::from(ids).to_string()
}

/// Groups `(id, status)` pairs by status, in a stable order.
fn by_status(pairs: impl IntoIterator<Item = (i64, InstanceStatus)>) -> Vec<(InstanceStatus, Vec<i64>)> {
    let mut groups: Vec<(InstanceStatus, Vec<i64>)> = Vec::new();
    for (id, status) in pairs {
        match groups.iter_mut().find(|(s, _)| *s == status) {
            Some((_, ids)) => ids.push(id),
            None => groups.push((status, vec![id])),
        }
    }
    groups
}

impl Store {
    /// Writes what one stale scan decided, in one transaction, every write conditional so that
    /// nothing a workflow or Docker sync did since the scan's list is overwritten:
    /// - `observed`: status refreshes, each only while the row has its `expected` status;
    ///   sightings of running containers (the bulk of a scan) go in one statement per expected
    ///   status;
    /// - `marks`: `stale_since = now` for rows that still have the given status, are not marked
    ///   yet and were last alive (or created) before `cutoff` — the rule, re-checked on the row;
    /// - `unmarks`: the mark taken off rows (not `removing`) last alive at or after `cutoff`.
    pub async fn write_stale_scan(
        &self,
        observed: &[ObservedStatus],
        marks: &[(i64, InstanceStatus)],
        unmarks: &[i64],
        cutoff: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<StaleScanWritten> {
        let mut written = StaleScanWritten::default();
        if observed.is_empty() && marks.is_empty() && unmarks.is_empty() {
            return Ok(written);
        }
        let now_ts = ts(now);
        let cutoff_ts = ts(cutoff);
        let mut tx = self.write_tx().await?;
        let alive = observed
            .iter()
            .filter(|o| o.status == InstanceStatus::Running)
            .map(|o| (o.id, o.expected));
        for (expected, ids) in by_status(alive) {
            let done: Vec<i64> = sqlx::query_scalar(
                "UPDATE instances SET status = 'running', last_alive_at = ?1, started_at = coalesce(started_at, ?1), \
                 stale_since = NULL, stopped_at = NULL, exit_code = NULL \
                 WHERE status = ?2 AND id IN (SELECT value FROM json_each(?3)) RETURNING id",
            )
            .bind(&now_ts)
            .bind(expected.as_str())
            .bind(id_array(ids))
            .fetch_all(&mut *tx)
            .await?;
            written.observed.extend(done);
        }
        for change in observed.iter().filter(|o| o.status != InstanceStatus::Running) {
            let done = sqlx::query(
                "UPDATE instances SET status = ?1, \
                   stopped_at = CASE WHEN ?2 THEN coalesce(stopped_at, ?3) ELSE stopped_at END, \
                   exit_code = coalesce(?4, exit_code) \
                 WHERE id = ?5 AND status = ?6",
            )
            .bind(change.status.as_str())
            .bind(is_stopped(change.status))
            .bind(&now_ts)
            .bind(change.exit_code)
            .bind(change.id)
            .bind(change.expected.as_str())
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() > 0 {
                written.observed.push(change.id);
            }
        }
        for (expected, ids) in by_status(marks.iter().copied()) {
            let done: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "UPDATE instances SET stale_since = ?1 \
                 WHERE stale_since IS NULL AND status = ?2 AND status NOT IN {NEVER_STALE_SQL} \
                   AND coalesce(last_alive_at, created_at) < ?3 \
                   AND id IN (SELECT value FROM json_each(?4)) RETURNING id"
            )))
            .bind(&now_ts)
            .bind(expected.as_str())
            .bind(&cutoff_ts)
            .bind(id_array(ids))
            .fetch_all(&mut *tx)
            .await?;
            written.marked.extend(done);
        }
        if !unmarks.is_empty() {
            let done = sqlx::query(
                "UPDATE instances SET stale_since = NULL \
                 WHERE stale_since IS NOT NULL AND status <> 'removing' \
                   AND coalesce(last_alive_at, created_at) >= ?1 \
                   AND id IN (SELECT value FROM json_each(?2))",
            )
            .bind(&cutoff_ts)
            .bind(id_array(unmarks.iter().copied()))
            .execute(&mut *tx)
            .await?;
            written.unmarked = done.rows_affected();
        }
        tx.commit().await?;
        written.marked.sort_unstable();
        Ok(written)
    }

    /// Instances a stale scan has marked (`stale_since` set), whatever their status now.
    pub async fn list_instances_marked_stale(&self) -> StoreResult<Vec<Instance>> {
        let rows: Vec<InstanceRow> = sqlx::query_as(concat!(
            instance_select!(),
            " WHERE i.stale_since IS NOT NULL ORDER BY i.id"
        ))
        .fetch_all(self.pool())
        .await?;
        rows.into_iter().map(InstanceRow::into_instance).collect()
    }

    /// Claims a stale instance for its cleanup: status `removing`, in one conditional statement,
    /// only while the row still has `expected`, still carries its stale mark and was last alive
    /// (or created) before `cutoff`. `false` when another cleanup claimed it first, or it came
    /// back, or it is gone — two concurrent cleanups of one instance remove it once. The previous
    /// status is `expected`, for the caller to put back if the cleanup fails.
    pub async fn begin_stale_removal(
        &self,
        id: i64,
        expected: InstanceStatus,
        cutoff: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let done = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE instances SET status = 'removing' \
             WHERE id = ?1 AND status = ?2 AND status NOT IN {NEVER_STALE_SQL} \
               AND stale_since IS NOT NULL AND coalesce(last_alive_at, created_at) < ?3"
        )))
        .bind(id)
        .bind(expected.as_str())
        .bind(ts(cutoff))
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
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
            config_revision: 1,
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

    #[tokio::test]
    async fn a_conditional_status_change_applies_only_to_the_expected_status() {
        let (store, _dir) = temp_store().await;
        let (project, stage) = shop_prod(&store).await;
        let instance = store
            .insert_instance(&new_instance(project.id, stage.id, "v1", 0))
            .await
            .unwrap();
        let skipped = store
            .update_instance_status_if(
                instance.id,
                InstanceStatus::Running,
                InstanceStatus::Failed,
                Some(1),
                at(1),
            )
            .await
            .unwrap();
        assert_eq!(skipped, None);
        let alive = store
            .update_instance_status_if(
                instance.id,
                InstanceStatus::Pending,
                InstanceStatus::Running,
                None,
                at(2),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (alive.status, alive.last_alive_at),
            (InstanceStatus::Running, Some(at(2)))
        );
        let failed = store
            .update_instance_status_if(
                instance.id,
                InstanceStatus::Running,
                InstanceStatus::Failed,
                Some(137),
                at(3),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (failed.status, failed.exit_code, failed.stopped_at),
            (InstanceStatus::Failed, Some(137), Some(at(3)))
        );
        assert_eq!(
            store
                .update_instance_status_if(999, InstanceStatus::Running, InstanceStatus::Stopped, None, at(4))
                .await
                .unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn a_cleanups_claim_is_never_overwritten_by_an_action_that_read_the_status_before() {
        let (store, _dir) = temp_store().await;
        let rows = three_with_containers(&store).await;
        let (a, b) = (rows[0].id, rows[1].id);
        for id in [a, b] {
            store
                .update_instance_status(id, InstanceStatus::Stopped, Some(0), at(1))
                .await
                .unwrap();
        }
        // An action read `stopped`; then the stale cleanup claimed the instance.
        store
            .write_stale_scan(&[], &[(a, InstanceStatus::Stopped)], &[], at(50), at(100))
            .await
            .unwrap();
        assert!(
            store
                .begin_stale_removal(a, InstanceStatus::Stopped, at(50))
                .await
                .unwrap()
        );
        for status in [
            InstanceStatus::Removing,
            InstanceStatus::Running,
            InstanceStatus::Missing,
        ] {
            assert_eq!(
                store
                    .update_instance_status_if(a, InstanceStatus::Stopped, status, None, at(101))
                    .await
                    .unwrap(),
                None,
                "{status} from the status read"
            );
            assert_eq!(
                store
                    .update_instance_status_unless_removing(a, status, None, at(101))
                    .await
                    .unwrap(),
                None,
                "{status} unless removing"
            );
        }
        let claimed = store.get_instance(a).await.unwrap();
        assert_eq!(
            (claimed.status, claimed.last_alive_at, claimed.stale_since),
            (InstanceStatus::Removing, None, Some(at(100)))
        );

        // Unclaimed, the write applies whatever the Docker sync recorded in between.
        store
            .update_instance_status(b, InstanceStatus::Failed, Some(1), at(2))
            .await
            .unwrap();
        let alive = store
            .update_instance_status_unless_removing(b, InstanceStatus::Running, None, at(3))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (alive.status, alive.last_alive_at, alive.exit_code),
            (InstanceStatus::Running, Some(at(3)), None)
        );
        let missing = store
            .update_instance_status_unless_removing(b, InstanceStatus::Missing, None, at(4))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (missing.status, missing.stopped_at),
            (InstanceStatus::Missing, Some(at(4)))
        );
        assert_eq!(
            store
                .update_instance_status_unless_removing(999, InstanceStatus::Stopped, None, at(5))
                .await
                .unwrap(),
            None
        );
    }

    /// Three instances of one stage, each with a container, for the stale-scan writes.
    async fn three_with_containers(store: &Store) -> Vec<Instance> {
        let (project, stage) = shop_prod(store).await;
        let mut out = Vec::new();
        for n in 0..3 {
            let i = store
                .insert_instance(&new_instance(project.id, stage.id, &format!("v{n}"), 0))
                .await
                .unwrap();
            out.push(
                store
                    .set_instance_container(i.id, &format!("c{n}"), &format!("dw-shop-prod-{}", i.id), None)
                    .await
                    .unwrap(),
            );
        }
        out
    }

    #[tokio::test]
    async fn a_stale_scan_writes_sightings_changes_and_marks_only_where_the_row_agrees() {
        let (store, _dir) = temp_store().await;
        let rows = three_with_containers(&store).await;
        let (a, b, c) = (rows[0].id, rows[1].id, rows[2].id);
        store.mark_instance_alive(a, at(10)).await.unwrap();
        store
            .update_instance_status(b, InstanceStatus::Stopped, Some(0), at(10))
            .await
            .unwrap();
        store
            .update_instance_status(c, InstanceStatus::Failed, Some(1), at(10))
            .await
            .unwrap();
        let observed = [
            ObservedStatus {
                id: a,
                expected: InstanceStatus::Running,
                status: InstanceStatus::Running,
                exit_code: None,
            },
            // Decided on a status the row no longer has: skipped.
            ObservedStatus {
                id: b,
                expected: InstanceStatus::Running,
                status: InstanceStatus::Missing,
                exit_code: None,
            },
            ObservedStatus {
                id: c,
                expected: InstanceStatus::Failed,
                status: InstanceStatus::Missing,
                exit_code: None,
            },
        ];
        let marks = [(b, InstanceStatus::Stopped), (c, InstanceStatus::Missing)];
        let written = store
            .write_stale_scan(&observed, &marks, &[], at(50), at(100))
            .await
            .unwrap();
        assert_eq!(written.observed, vec![a, c]);
        assert_eq!(written.marked, vec![b, c]);
        let a_now = store.get_instance(a).await.unwrap();
        assert_eq!(a_now.last_alive_at, Some(at(100)));
        let c_now = store.get_instance(c).await.unwrap();
        assert_eq!(
            (c_now.status, c_now.exit_code, c_now.stale_since),
            (InstanceStatus::Missing, Some(1), Some(at(100)))
        );

        // Marked already: a second scan does not mark again, so nobody warns again.
        let again = store
            .write_stale_scan(&[], &marks, &[], at(150), at(200))
            .await
            .unwrap();
        assert!(again.marked.is_empty());
        assert_eq!(store.get_instance(b).await.unwrap().stale_since, Some(at(100)));

        // A raised threshold takes the mark off; a sighting clears it too.
        let unmarked = store
            .write_stale_scan(&[], &[], &[b], at(0), at(300))
            .await
            .unwrap();
        assert_eq!(unmarked.unmarked, 1);
        assert_eq!(store.get_instance(b).await.unwrap().stale_since, None);
        let seen = [ObservedStatus {
            id: c,
            expected: InstanceStatus::Missing,
            status: InstanceStatus::Running,
            exit_code: None,
        }];
        store
            .write_stale_scan(&seen, &[], &[], at(5), at(300))
            .await
            .unwrap();
        let c_alive = store.get_instance(c).await.unwrap();
        assert_eq!(
            (c_alive.status, c_alive.stale_since),
            (InstanceStatus::Running, None)
        );
    }

    #[tokio::test]
    async fn a_mark_is_refused_when_the_row_was_alive_after_the_cutoff_or_is_running() {
        let (store, _dir) = temp_store().await;
        let rows = three_with_containers(&store).await;
        let (a, b) = (rows[0].id, rows[1].id);
        store.mark_instance_alive(a, at(60)).await.unwrap();
        store
            .update_instance_status(a, InstanceStatus::Stopped, None, at(61))
            .await
            .unwrap();
        store.mark_instance_alive(b, at(10)).await.unwrap();
        let written = store
            .write_stale_scan(
                &[],
                &[(a, InstanceStatus::Stopped), (b, InstanceStatus::Running)],
                &[],
                at(50),
                at(100),
            )
            .await
            .unwrap();
        assert!(written.marked.is_empty(), "{written:?}");
    }

    #[tokio::test]
    async fn only_one_of_two_concurrent_claims_of_a_stale_instance_wins() {
        let (store, _dir) = temp_store().await;
        let rows = three_with_containers(&store).await;
        let (a, b) = (rows[0].id, rows[1].id);
        for id in [a, b] {
            store
                .update_instance_status(id, InstanceStatus::Stopped, None, at(1))
                .await
                .unwrap();
        }
        store
            .write_stale_scan(&[], &[(a, InstanceStatus::Stopped)], &[], at(50), at(100))
            .await
            .unwrap();
        assert!(
            !store
                .begin_stale_removal(b, InstanceStatus::Stopped, at(50))
                .await
                .unwrap(),
            "not marked: not claimable"
        );
        assert!(
            !store
                .begin_stale_removal(a, InstanceStatus::Failed, at(50))
                .await
                .unwrap(),
            "decided on another status"
        );
        let (first, second) = tokio::join!(
            store.begin_stale_removal(a, InstanceStatus::Stopped, at(50)),
            store.begin_stale_removal(a, InstanceStatus::Stopped, at(50)),
        );
        assert!(first.unwrap() ^ second.unwrap(), "exactly one claim wins");
        assert_eq!(
            store.get_instance(a).await.unwrap().status,
            InstanceStatus::Removing
        );
        assert_eq!(
            store
                .list_instances_marked_stale()
                .await
                .unwrap()
                .iter()
                .map(|i| i.id)
                .collect::<Vec<_>>(),
            vec![a]
        );
    }
}
