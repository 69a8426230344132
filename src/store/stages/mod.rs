//! Stages (`stages`): the environments of a project, with their tag policy, schedule, container
//! spec (a JSON column) and optional hostname.
//!
//! A stage's hostname is claimed in `hostname_claims` in the same transaction that writes the
//! stage (see [`super::hostnames`]), so a stage never routes a name someone else holds. A stage
//! is deleted only once it has no instances, because an instance row is the only record of a
//! container docker-watcher started; its deployments and failed digests go with it.

use chrono::{DateTime, Utc};
use sqlx::{FromRow, SqliteConnection};

use crate::domain::duration::HumanDuration;
use crate::domain::hostname::Hostname;
use crate::domain::name::Name;
use crate::domain::schedule::Schedule;
use crate::domain::stage::{ContainerSpec, DeployStrategy, NewStage, Stage, StagePatch};
use crate::domain::tag_policy::TagPolicy;
use crate::domain::workload::Hooks;

use super::hostnames::{self, OwnerKind};
use super::secrets::{self, SecretOwner};
use super::{Store, StoreError, StoreResult, narrow, parse_col, parse_ts, ts, unique_to_conflict};

const TABLE: &str = "stages";

macro_rules! stage_columns {
    () => {
        "id, project_id, name, tag_policy, schedule, auto_deploy, hostname, max_instances, min_release_age, \
         container, hooks, strategy, config_revision, current_instance_id, available_tag, created_at, updated_at"
    };
}

#[derive(FromRow)]
struct StageRow {
    id: i64,
    project_id: i64,
    name: String,
    tag_policy: String,
    schedule: Option<String>,
    auto_deploy: bool,
    hostname: Option<String>,
    max_instances: i64,
    min_release_age: Option<String>,
    container: String,
    hooks: String,
    strategy: String,
    config_revision: i64,
    current_instance_id: Option<i64>,
    available_tag: Option<String>,
    created_at: String,
    updated_at: String,
}

impl StageRow {
    fn into_stage(self, secret_env_keys: Vec<String>) -> StoreResult<Stage> {
        Ok(Stage {
            id: self.id,
            project_id: self.project_id,
            name: parse_col::<Name>(TABLE, &self.name)?,
            tag_policy: parse_col::<TagPolicy>(TABLE, &self.tag_policy)?,
            schedule: self
                .schedule
                .as_deref()
                .map(|s| parse_col::<Schedule>(TABLE, s))
                .transpose()?,
            auto_deploy: self.auto_deploy,
            hostname: self
                .hostname
                .as_deref()
                .map(|h| parse_col::<Hostname>(TABLE, h))
                .transpose()?,
            max_instances: narrow(TABLE, "max_instances", self.max_instances)?,
            min_release_age: self
                .min_release_age
                .as_deref()
                .map(|d| parse_col::<HumanDuration>(TABLE, d))
                .transpose()?,
            container: serde_json::from_str(&self.container).map_err(|e| StoreError::Corrupt {
                table: TABLE,
                message: format!("container spec: {e}"),
            })?,
            hooks: serde_json::from_str(&self.hooks).map_err(|e| StoreError::Corrupt {
                table: TABLE,
                message: format!("hooks: {e}"),
            })?,
            strategy: parse_col::<DeployStrategy>(TABLE, &self.strategy)?,
            secret_env_keys,
            config_revision: self.config_revision,
            current_instance_id: self.current_instance_id,
            available_tag: self.available_tag,
            created_at: parse_ts(TABLE, &self.created_at)?,
            updated_at: parse_ts(TABLE, &self.updated_at)?,
        })
    }
}

/// The columns a user edits, as stored strings: what an insert writes and an update rewrites.
struct StageValues {
    name: String,
    tag_policy: String,
    schedule: Option<String>,
    auto_deploy: bool,
    hostname: Option<String>,
    max_instances: i64,
    min_release_age: Option<String>,
    container: String,
    hooks: String,
    strategy: &'static str,
}

impl StageValues {
    #[allow(clippy::too_many_arguments)]
    fn new(
        name: &Name,
        tag_policy: &TagPolicy,
        schedule: Option<&Schedule>,
        auto_deploy: bool,
        hostname: Option<&Hostname>,
        max_instances: u32,
        min_release_age: Option<&HumanDuration>,
        container: &ContainerSpec,
        hooks: &Hooks,
        strategy: DeployStrategy,
    ) -> StoreResult<Self> {
        let corrupt = |what: &str, e: serde_json::Error| StoreError::Corrupt {
            table: TABLE,
            message: format!("{what}: {e}"),
        };
        Ok(Self {
            name: name.to_string(),
            tag_policy: tag_policy.to_string(),
            schedule: schedule.map(ToString::to_string),
            auto_deploy,
            hostname: hostname.map(ToString::to_string),
            max_instances: i64::from(max_instances),
            min_release_age: min_release_age.map(ToString::to_string),
            // Serializing a plain struct cannot fail; the mapping only keeps this free of unwraps.
            container: serde_json::to_string(container).map_err(|e| corrupt("container spec", e))?,
            hooks: serde_json::to_string(hooks).map_err(|e| corrupt("hooks", e))?,
            strategy: strategy.as_str(),
        })
    }
}

fn name_conflict(err: sqlx::Error, name: &str) -> StoreError {
    unique_to_conflict(
        err,
        "name",
        format!("a stage named '{name}' already exists in this project"),
    )
}

async fn fetch_stage(conn: &mut SqliteConnection, id: i64) -> StoreResult<Stage> {
    let row: Option<StageRow> =
        sqlx::query_as(concat!("SELECT ", stage_columns!(), " FROM stages WHERE id = ?"))
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    let row = row.ok_or(StoreError::NotFound)?;
    let keys = secrets::secret_keys(conn, SecretOwner::Stage, id).await?;
    row.into_stage(keys)
}

/// Rows into stages, with each stage's secret keys from one query.
async fn into_stages(conn: &mut SqliteConnection, rows: Vec<StageRow>) -> StoreResult<Vec<Stage>> {
    let mut keys = secrets::all_secret_keys(conn, SecretOwner::Stage).await?;
    rows.into_iter()
        .map(|row| {
            let id = row.id;
            row.into_stage(keys.remove(&id).unwrap_or_default())
        })
        .collect()
}

async fn project_exists(conn: &mut SqliteConnection, project_id: i64) -> StoreResult<bool> {
    let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM projects WHERE id = ?")
        .bind(project_id)
        .fetch_optional(conn)
        .await?;
    Ok(found.is_some())
}

impl Store {
    /// Creates a stage of a project and claims its hostname, all or nothing. `NotFound` when
    /// the project does not exist; a conflict on `name` or `hostname` when either is taken.
    pub async fn insert_stage(
        &self,
        project_id: i64,
        new: &NewStage,
        now: DateTime<Utc>,
    ) -> StoreResult<Stage> {
        let values = StageValues::new(
            &new.name,
            &new.tag_policy,
            new.schedule.as_ref(),
            new.auto_deploy,
            new.hostname.as_ref(),
            new.max_instances,
            new.min_release_age.as_ref(),
            &new.container,
            &new.hooks,
            new.strategy,
        )?;
        let mut tx = self.write_tx().await?;
        if !project_exists(&mut tx, project_id).await? {
            return Err(StoreError::NotFound);
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO stages (project_id, name, tag_policy, schedule, auto_deploy, hostname, max_instances, \
             min_release_age, container, hooks, strategy, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(project_id)
        .bind(&values.name)
        .bind(&values.tag_policy)
        .bind(&values.schedule)
        .bind(values.auto_deploy)
        .bind(&values.hostname)
        .bind(values.max_instances)
        .bind(&values.min_release_age)
        .bind(&values.container)
        .bind(&values.hooks)
        .bind(values.strategy)
        .bind(ts(now))
        .bind(ts(now))
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| name_conflict(e, &values.name))?;
        if let Some(hostname) = &values.hostname {
            hostnames::claim(&mut tx, hostname, OwnerKind::Stage, id).await?;
        }
        secrets::write_secrets(
            &mut tx,
            SecretOwner::Stage,
            id,
            new.secret_env.iter().map(|(k, v)| (k, Some(v))).collect(),
        )
        .await?;
        let stage = fetch_stage(&mut tx, id).await?;
        tx.commit().await?;
        Ok(stage)
    }

    pub async fn get_stage(&self, id: i64) -> StoreResult<Stage> {
        let mut conn = self.pool().acquire().await?;
        fetch_stage(&mut conn, id).await
    }

    /// The stages of a project, oldest first; `NotFound` when the project does not exist (an
    /// empty list would hide a wrong id).
    pub async fn list_stages(&self, project_id: i64) -> StoreResult<Vec<Stage>> {
        // One read transaction, so the project cannot vanish between the check and the list.
        let mut tx = self.pool().begin().await?;
        if !project_exists(&mut tx, project_id).await? {
            return Err(StoreError::NotFound);
        }
        let rows: Vec<StageRow> = sqlx::query_as(concat!(
            "SELECT ",
            stage_columns!(),
            " FROM stages WHERE project_id = ? ORDER BY id"
        ))
        .bind(project_id)
        .fetch_all(&mut *tx)
        .await?;
        let stages = into_stages(&mut tx, rows).await?;
        tx.commit().await?;
        Ok(stages)
    }

    /// Every stage of every project, by project then age: what the poller and the router load.
    pub async fn list_all_stages(&self) -> StoreResult<Vec<Stage>> {
        let mut tx = self.pool().begin().await?;
        let rows: Vec<StageRow> = sqlx::query_as(concat!(
            "SELECT ",
            stage_columns!(),
            " FROM stages ORDER BY project_id, id"
        ))
        .fetch_all(&mut *tx)
        .await?;
        let stages = into_stages(&mut tx, rows).await?;
        tx.commit().await?;
        Ok(stages)
    }

    /// Applies a partial update; a changed hostname moves the stage's claim in the same
    /// transaction (the old name is released only if the new one can be claimed). A change of
    /// what its containers are made of (the container spec, a secret, the hooks, the strategy) bumps
    /// `config_revision`.
    pub async fn update_stage(&self, id: i64, patch: &StagePatch, now: DateTime<Utc>) -> StoreResult<Stage> {
        let mut tx = self.write_tx().await?;
        let current = fetch_stage(&mut tx, id).await?;
        let hostname = patch
            .hostname
            .as_ref()
            .map_or(current.hostname.as_ref(), Option::as_ref);
        let values = StageValues::new(
            patch.name.as_ref().unwrap_or(&current.name),
            patch.tag_policy.as_ref().unwrap_or(&current.tag_policy),
            patch
                .schedule
                .as_ref()
                .map_or(current.schedule.as_ref(), Option::as_ref),
            patch.auto_deploy.unwrap_or(current.auto_deploy),
            hostname,
            patch.max_instances.unwrap_or(current.max_instances),
            patch
                .min_release_age
                .as_ref()
                .map_or(current.min_release_age.as_ref(), Option::as_ref),
            patch.container.as_ref().unwrap_or(&current.container),
            patch.hooks.as_ref().unwrap_or(&current.hooks),
            patch.strategy.unwrap_or(current.strategy),
        )?;
        let reconfigured = patch.container.as_ref().is_some_and(|c| *c != current.container)
            || patch.hooks.as_ref().is_some_and(|h| *h != current.hooks)
            || patch.strategy.is_some_and(|s| s != current.strategy)
            || !patch.secret_env.is_empty();
        sqlx::query(
            "UPDATE stages SET name = ?, tag_policy = ?, schedule = ?, auto_deploy = ?, hostname = ?, \
             max_instances = ?, min_release_age = ?, container = ?, hooks = ?, strategy = ?, updated_at = ?, \
             config_revision = config_revision + ? WHERE id = ?",
        )
        .bind(&values.name)
        .bind(&values.tag_policy)
        .bind(&values.schedule)
        .bind(values.auto_deploy)
        .bind(&values.hostname)
        .bind(values.max_instances)
        .bind(&values.min_release_age)
        .bind(&values.container)
        .bind(&values.hooks)
        .bind(values.strategy)
        .bind(ts(now))
        .bind(i64::from(reconfigured))
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(|e| name_conflict(e, &values.name))?;
        if hostname != current.hostname.as_ref() {
            hostnames::release(&mut tx, OwnerKind::Stage, id).await?;
            if let Some(hostname) = &values.hostname {
                hostnames::claim(&mut tx, hostname, OwnerKind::Stage, id).await?;
            }
        }
        secrets::write_secrets(
            &mut tx,
            SecretOwner::Stage,
            id,
            patch.secret_env.iter().map(|(k, v)| (k, v.as_ref())).collect(),
        )
        .await?;
        let stage = fetch_stage(&mut tx, id).await?;
        tx.commit().await?;
        Ok(stage)
    }

    /// Deletes a stage that has no instances, releasing its hostname; its deployments and
    /// failed digests go with it. A stage with instances is a conflict on `id`.
    pub async fn delete_stage(&self, id: i64) -> StoreResult<()> {
        let mut tx = self.write_tx().await?;
        let instances: Option<i64> = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM instances WHERE stage_id = s.id) FROM stages s WHERE s.id = ?",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        match instances {
            None => return Err(StoreError::NotFound),
            Some(0) => {}
            Some(_) => {
                return Err(StoreError::Conflict {
                    field: "id",
                    message: "the stage still has instances; remove its instances first".into(),
                });
            }
        }
        hostnames::release(&mut tx, OwnerKind::Stage, id).await?;
        sqlx::query("DELETE FROM stages WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records the newest tag (and digest) the policy found, for monitor-only stages and the UI.
    /// `updated_at` moves only when the value does, so polling an unchanged registry writes
    /// nothing new.
    pub async fn set_available_tag(
        &self,
        stage_id: i64,
        tag: Option<&str>,
        digest: Option<&str>,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let done = sqlx::query(
            "UPDATE stages SET \
               updated_at = CASE WHEN available_tag IS ?1 AND available_digest IS ?2 THEN updated_at ELSE ?3 END, \
               available_tag = ?1, available_digest = ?2 \
             WHERE id = ?4",
        )
        .bind(tag)
        .bind(digest)
        .bind(ts(now))
        .bind(stage_id)
        .execute(self.pool())
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Points the stage at the instance it routes to (or at none). `NotFound` when the stage
    /// does not exist or the instance is not one of its own.
    pub async fn set_current_instance(&self, stage_id: i64, instance_id: Option<i64>) -> StoreResult<()> {
        let done = sqlx::query(
            "UPDATE stages SET current_instance_id = ?1 WHERE id = ?2 \
             AND (?1 IS NULL OR EXISTS (SELECT 1 FROM instances WHERE id = ?1 AND stage_id = ?2))",
        )
        .bind(instance_id)
        .bind(stage_id)
        .execute(self.pool())
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
