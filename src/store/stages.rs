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
use crate::domain::stage::{ContainerSpec, NewStage, Stage, StagePatch};
use crate::domain::tag_policy::TagPolicy;
use crate::domain::workload::Hooks;

use super::hostnames::{self, OwnerKind};
use super::secrets::{self, SecretOwner};
use super::{Store, StoreError, StoreResult, narrow, parse_col, parse_ts, ts, unique_to_conflict};

const TABLE: &str = "stages";

macro_rules! stage_columns {
    () => {
        "id, project_id, name, tag_policy, schedule, auto_deploy, hostname, max_instances, min_release_age, \
         container, hooks, config_revision, current_instance_id, available_tag, created_at, updated_at"
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
        )?;
        let mut tx = self.write_tx().await?;
        if !project_exists(&mut tx, project_id).await? {
            return Err(StoreError::NotFound);
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO stages (project_id, name, tag_policy, schedule, auto_deploy, hostname, max_instances, \
             min_release_age, container, hooks, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
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
    /// what its containers are made of (the container spec, a secret, the hooks) bumps
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
        )?;
        let reconfigured = patch.container.as_ref().is_some_and(|c| *c != current.container)
            || patch.hooks.as_ref().is_some_and(|h| *h != current.hooks)
            || !patch.secret_env.is_empty();
        sqlx::query(
            "UPDATE stages SET name = ?, tag_policy = ?, schedule = ?, auto_deploy = ?, hostname = ?, \
             max_instances = ?, min_release_age = ?, container = ?, hooks = ?, updated_at = ?, \
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
mod tests {
    use std::collections::BTreeMap;

    use super::super::testing::{at, new_project, new_stage, temp_store};
    use super::*;
    use crate::domain::instance::{InstanceStatus, NewInstance};
    use crate::domain::stage::HealthCheck;

    fn host(h: &str) -> Hostname {
        Hostname::parse(h).unwrap()
    }

    #[tokio::test]
    async fn a_stage_round_trips_every_field_through_the_store() {
        let (store, _dir) = temp_store().await;
        let project = store.insert_project(&new_project("shop"), at(0)).await.unwrap();
        let mut env = BTreeMap::new();
        env.insert("RUST_LOG".to_owned(), "info".to_owned());
        let new = NewStage {
            tag_policy: TagPolicy::parse("semver:^1.2").unwrap(),
            schedule: Some(Schedule::parse("@every 30s").unwrap()),
            auto_deploy: false,
            hostname: Some(host("shop.example.com")),
            max_instances: 3,
            min_release_age: Some(HumanDuration::parse("10m").unwrap()),
            container: ContainerSpec {
                port: 3000,
                env,
                command: Some(vec!["serve".into(), "--fast".into()]),
                health_check: Some(HealthCheck {
                    path: "/healthz".into(),
                    expected_status: 204,
                }),
                min_ready_seconds: 5,
                memory_mb: Some(256),
                cpus: Some(0.5),
                volumes: serde_json::from_str(r#"[{"source": "data", "target": "/data"}]"#).unwrap(),
                restart_policy: "on-failure:3".parse().unwrap(),
                stop_signal: "SIGQUIT".parse().unwrap(),
                ..ContainerSpec::default()
            },
            ..new_stage("prod")
        };
        let stage = store.insert_stage(project.id, &new, at(0)).await.unwrap();
        assert_eq!(stage.project_id, project.id);
        assert_eq!(stage.name, new.name);
        assert_eq!(stage.tag_policy, new.tag_policy);
        assert_eq!(stage.schedule, new.schedule);
        assert_eq!(stage.hostname, new.hostname);
        assert_eq!(stage.min_release_age, new.min_release_age);
        assert_eq!(stage.container, new.container);
        assert_eq!((stage.auto_deploy, stage.max_instances), (false, 3));
        assert_eq!(
            (stage.current_instance_id, stage.available_tag.as_deref()),
            (None, None)
        );
        assert_eq!(store.get_stage(stage.id).await.unwrap(), stage);
        assert_eq!(store.list_stages(project.id).await.unwrap(), vec![stage.clone()]);
        assert_eq!(store.list_all_stages().await.unwrap(), vec![stage.clone()]);
        assert_eq!(
            store.hostname_owner("shop.example.com").await.unwrap(),
            Some(("stage".into(), stage.id))
        );
    }

    #[tokio::test]
    async fn a_stage_of_a_missing_project_is_not_found() {
        let (store, _dir) = temp_store().await;
        assert!(matches!(
            store.insert_stage(42, &new_stage("prod"), at(0)).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(store.list_stages(42).await, Err(StoreError::NotFound)));
    }

    #[tokio::test]
    async fn stage_names_are_unique_within_a_project_only() {
        let (store, _dir) = temp_store().await;
        let shop = store.insert_project(&new_project("shop"), at(0)).await.unwrap();
        let blog = store.insert_project(&new_project("blog"), at(0)).await.unwrap();
        store
            .insert_stage(shop.id, &new_stage("prod"), at(0))
            .await
            .unwrap();
        store
            .insert_stage(blog.id, &new_stage("prod"), at(0))
            .await
            .unwrap();
        let err = store
            .insert_stage(shop.id, &new_stage("prod"), at(0))
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Conflict { field: "name", .. }),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_taken_hostname_is_a_conflict_naming_its_holder_and_nothing_is_written() {
        let (store, _dir) = temp_store().await;
        let shop = store.insert_project(&new_project("shop"), at(0)).await.unwrap();
        let with_host = NewStage {
            hostname: Some(host("app.example.com")),
            ..new_stage("prod")
        };
        store.insert_stage(shop.id, &with_host, at(0)).await.unwrap();
        let clash = NewStage {
            hostname: Some(host("app.example.com")),
            ..new_stage("dev")
        };
        let err = store.insert_stage(shop.id, &clash, at(0)).await.unwrap_err();
        match err {
            StoreError::Conflict {
                field: "hostname",
                message,
            } => {
                assert_eq!(
                    message,
                    "hostname app.example.com is already used by stage shop/prod"
                );
            }
            other => panic!("expected a hostname conflict, got {other:?}"),
        }
        assert_eq!(
            store.list_stages(shop.id).await.unwrap().len(),
            1,
            "the stage was not half-created"
        );
    }

    #[tokio::test]
    async fn of_concurrent_stages_claiming_one_hostname_exactly_one_wins() {
        let (store, _dir) = temp_store().await;
        let shop = store.insert_project(&new_project("shop"), at(0)).await.unwrap();
        let attempts = (0..6).map(|i| {
            let store = store.clone();
            let new = NewStage {
                hostname: Some(host("race.example.com")),
                ..new_stage(&format!("s{i}"))
            };
            tokio::spawn(async move { store.insert_stage(shop.id, &new, at(0)).await })
        });
        let results: Vec<_> = futures::future::join_all(attempts)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
        assert!(
            results.iter().filter_map(|r| r.as_ref().err()).all(|e| matches!(
                e,
                StoreError::Conflict {
                    field: "hostname",
                    ..
                }
            )),
            "{results:?}"
        );
        assert_eq!(store.list_stages(shop.id).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn updating_a_hostname_moves_the_claim_and_clearing_it_releases_it() {
        let (store, _dir) = temp_store().await;
        let shop = store.insert_project(&new_project("shop"), at(0)).await.unwrap();
        let prod = NewStage {
            hostname: Some(host("a.example.com")),
            ..new_stage("prod")
        };
        let prod = store.insert_stage(shop.id, &prod, at(0)).await.unwrap();
        let dev = NewStage {
            hostname: Some(host("b.example.com")),
            ..new_stage("dev")
        };
        let dev = store.insert_stage(shop.id, &dev, at(0)).await.unwrap();

        let clash = StagePatch {
            hostname: Some(Some(host("b.example.com"))),
            ..Default::default()
        };
        let err = store.update_stage(prod.id, &clash, at(1)).await.unwrap_err();
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
        assert_eq!(
            store.hostname_owner("a.example.com").await.unwrap(),
            Some(("stage".into(), prod.id))
        );
        assert_eq!(
            store.get_stage(prod.id).await.unwrap().updated_at,
            at(0),
            "the failed update changed nothing"
        );

        let moved = StagePatch {
            hostname: Some(Some(host("c.example.com"))),
            ..Default::default()
        };
        let updated = store.update_stage(prod.id, &moved, at(2)).await.unwrap();
        assert_eq!(updated.hostname, Some(host("c.example.com")));
        assert_eq!(updated.updated_at, at(2));
        assert_eq!(store.hostname_owner("a.example.com").await.unwrap(), None);
        assert_eq!(
            store.hostname_owner("c.example.com").await.unwrap(),
            Some(("stage".into(), prod.id))
        );

        let cleared = StagePatch {
            hostname: Some(None),
            ..Default::default()
        };
        assert_eq!(
            store
                .update_stage(dev.id, &cleared, at(3))
                .await
                .unwrap()
                .hostname,
            None
        );
        assert_eq!(store.hostname_owner("b.example.com").await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_patch_leaves_unnamed_fields_alone() {
        let (store, _dir) = temp_store().await;
        let shop = store.insert_project(&new_project("shop"), at(0)).await.unwrap();
        let new = NewStage {
            schedule: Some(Schedule::parse("@hourly").unwrap()),
            ..new_stage("prod")
        };
        let stage = store.insert_stage(shop.id, &new, at(0)).await.unwrap();
        let patch = StagePatch {
            auto_deploy: Some(false),
            max_instances: Some(2),
            ..Default::default()
        };
        let updated = store.update_stage(stage.id, &patch, at(1)).await.unwrap();
        assert_eq!((updated.auto_deploy, updated.max_instances), (false, 2));
        assert_eq!(updated.schedule, stage.schedule);
        assert_eq!(updated.container, stage.container);
        let renamed = StagePatch {
            name: Some(Name::parse("live").unwrap()),
            schedule: Some(None),
            ..Default::default()
        };
        let updated = store.update_stage(stage.id, &renamed, at(2)).await.unwrap();
        assert_eq!((updated.name.as_str(), updated.schedule.as_ref()), ("live", None));
        assert!(matches!(
            store.update_stage(999, &patch, at(1)).await,
            Err(StoreError::NotFound)
        ));
    }

    #[tokio::test]
    async fn a_project_with_stages_and_a_stage_with_instances_refuse_deletion() {
        let (store, _dir) = temp_store().await;
        let shop = store.insert_project(&new_project("shop"), at(0)).await.unwrap();
        let new = NewStage {
            hostname: Some(host("shop.example.com")),
            ..new_stage("prod")
        };
        let stage = store.insert_stage(shop.id, &new, at(0)).await.unwrap();
        let err = store.delete_project(shop.id).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict { field: "id", .. }), "{err:?}");

        let instance = store
            .insert_instance(&NewInstance {
                project_id: shop.id,
                stage_id: stage.id,
                image_tag: "v1".into(),
                image_digest: None,
                status: InstanceStatus::Running,
                hostname: None,
                created_at: at(0),
                config_revision: 1,
            })
            .await
            .unwrap();
        store
            .insert_deployment(
                stage.id,
                Some(instance.id),
                "v1",
                None,
                crate::domain::instance::Trigger::Poll,
                None,
                at(0),
            )
            .await
            .unwrap();
        let err = store.delete_stage(stage.id).await.unwrap_err();
        match err {
            StoreError::Conflict { field: "id", message } => {
                assert!(message.contains("instances"), "{message}")
            }
            other => panic!("expected a conflict, got {other:?}"),
        }

        store.delete_instance(instance.id).await.unwrap();
        store.delete_stage(stage.id).await.unwrap();
        assert_eq!(store.hostname_owner("shop.example.com").await.unwrap(), None);
        assert!(
            store
                .list_deployments(Some(stage.id), 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(matches!(
            store.delete_stage(stage.id).await,
            Err(StoreError::NotFound)
        ));
        store.delete_project(shop.id).await.unwrap();
    }

    #[tokio::test]
    async fn the_available_tag_is_recorded_and_updated_at_moves_only_on_change() {
        let (store, _dir) = temp_store().await;
        let shop = store.insert_project(&new_project("shop"), at(0)).await.unwrap();
        let stage = store
            .insert_stage(shop.id, &new_stage("prod"), at(0))
            .await
            .unwrap();
        store
            .set_available_tag(stage.id, Some("v2"), Some("sha256:aa"), at(5))
            .await
            .unwrap();
        store
            .set_available_tag(stage.id, Some("v2"), Some("sha256:aa"), at(9))
            .await
            .unwrap();
        let read = store.get_stage(stage.id).await.unwrap();
        assert_eq!(
            (read.available_tag.as_deref(), read.updated_at),
            (Some("v2"), at(5))
        );
        store
            .set_available_tag(stage.id, None, None, at(10))
            .await
            .unwrap();
        assert_eq!(store.get_stage(stage.id).await.unwrap().available_tag, None);
        assert!(matches!(
            store.set_available_tag(999, None, None, at(0)).await,
            Err(StoreError::NotFound)
        ));
    }

    #[tokio::test]
    async fn only_an_instance_of_the_stage_can_become_its_current_one() {
        let (store, _dir) = temp_store().await;
        let shop = store.insert_project(&new_project("shop"), at(0)).await.unwrap();
        let prod = store
            .insert_stage(shop.id, &new_stage("prod"), at(0))
            .await
            .unwrap();
        let dev = store
            .insert_stage(shop.id, &new_stage("dev"), at(0))
            .await
            .unwrap();
        let new = NewInstance {
            project_id: shop.id,
            stage_id: prod.id,
            image_tag: "v1".into(),
            image_digest: None,
            status: InstanceStatus::Pending,
            hostname: None,
            created_at: at(0),
            config_revision: 1,
        };
        let instance = store.insert_instance(&new).await.unwrap();
        assert!(matches!(
            store.set_current_instance(dev.id, Some(instance.id)).await,
            Err(StoreError::NotFound)
        ));
        store
            .set_current_instance(prod.id, Some(instance.id))
            .await
            .unwrap();
        assert_eq!(
            store.get_stage(prod.id).await.unwrap().current_instance_id,
            Some(instance.id)
        );
        store.set_current_instance(prod.id, None).await.unwrap();
        assert_eq!(store.get_stage(prod.id).await.unwrap().current_instance_id, None);
        assert!(matches!(
            store.set_current_instance(999, None).await,
            Err(StoreError::NotFound)
        ));
    }
}
