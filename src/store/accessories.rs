//! Accessories (`accessories`, `accessory_secrets`): a project's long-running companions, their
//! spec (a JSON column), their sealed secret variables and what is known of their container.
//!
//! `config_revision` is bumped by every change of what the container is made of (the image, the
//! spec, a secret); `container_revision` is the revision the current container was created with,
//! so an accessory whose two differ is out of date. Names are unique per project (409 `name`).
//! Status writes by the Docker sync are conditional on the status the decision was taken on.

use chrono::{DateTime, Utc};
use sqlx::{FromRow, SqliteConnection};

use crate::domain::accessory::{
    Accessory, AccessoryPatch, AccessorySpec, AccessoryStatus, NewAccessory, image_reference,
};
use crate::domain::image_ref::ImageRef;
use crate::domain::name::Name;

use super::secrets::{self, SecretOwner};
use super::{
    Store, StoreError, StoreResult, parse_col, parse_col_with, parse_opt_ts, parse_ts, ts, unique_to_conflict,
};

const TABLE: &str = "accessories";

macro_rules! accessory_columns {
    () => {
        "id, project_id, name, image, spec, config_revision, container_revision, container_id, \
         container_name, image_id, status, host_port, exit_code, created_at, updated_at, started_at, \
         stopped_at, last_alive_at"
    };
}

#[derive(FromRow)]
struct AccessoryRow {
    id: i64,
    project_id: i64,
    name: String,
    image: String,
    spec: String,
    config_revision: i64,
    container_revision: Option<i64>,
    container_id: Option<String>,
    container_name: Option<String>,
    image_id: Option<String>,
    status: String,
    host_port: Option<i64>,
    exit_code: Option<i64>,
    created_at: String,
    updated_at: String,
    started_at: Option<String>,
    stopped_at: Option<String>,
    last_alive_at: Option<String>,
}

impl AccessoryRow {
    fn into_accessory(self, secret_env_keys: Vec<String>) -> StoreResult<Accessory> {
        Ok(Accessory {
            id: self.id,
            project_id: self.project_id,
            name: parse_col::<Name>(TABLE, &self.name)?,
            image: parse_col_with(TABLE, &self.image, ImageRef::parse)?,
            spec: serde_json::from_str(&self.spec).map_err(|e| StoreError::Corrupt {
                table: TABLE,
                message: format!("spec: {e}"),
            })?,
            secret_env_keys,
            config_revision: self.config_revision,
            container_revision: self.container_revision,
            container_id: self.container_id,
            container_name: self.container_name,
            image_id: self.image_id,
            status: parse_col::<AccessoryStatus>(TABLE, &self.status)?,
            host_port: self.host_port.and_then(|p| u16::try_from(p).ok()),
            exit_code: self.exit_code,
            created_at: parse_ts(TABLE, &self.created_at)?,
            updated_at: parse_ts(TABLE, &self.updated_at)?,
            started_at: parse_opt_ts(TABLE, self.started_at.as_deref())?,
            stopped_at: parse_opt_ts(TABLE, self.stopped_at.as_deref())?,
            last_alive_at: parse_opt_ts(TABLE, self.last_alive_at.as_deref())?,
        })
    }
}

fn spec_json(spec: &AccessorySpec) -> StoreResult<String> {
    serde_json::to_string(spec).map_err(|e| StoreError::Corrupt {
        table: TABLE,
        message: format!("spec: {e}"),
    })
}

fn name_conflict(err: sqlx::Error, name: &str) -> StoreError {
    unique_to_conflict(
        err,
        "name",
        format!("an accessory named '{name}' already exists in this project"),
    )
}

async fn fetch_accessory(conn: &mut SqliteConnection, id: i64) -> StoreResult<Accessory> {
    let row: Option<AccessoryRow> = sqlx::query_as(concat!(
        "SELECT ",
        accessory_columns!(),
        " FROM accessories WHERE id = ?"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let row = row.ok_or(StoreError::NotFound)?;
    let keys = secrets::secret_keys(conn, SecretOwner::Accessory, id).await?;
    row.into_accessory(keys)
}

async fn into_accessories(
    conn: &mut SqliteConnection,
    rows: Vec<AccessoryRow>,
) -> StoreResult<Vec<Accessory>> {
    let mut keys = secrets::all_secret_keys(conn, SecretOwner::Accessory).await?;
    rows.into_iter()
        .map(|row| {
            let id = row.id;
            row.into_accessory(keys.remove(&id).unwrap_or_default())
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

/// What the workflow records once it created an accessory's container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessoryContainer {
    pub container_id: String,
    pub container_name: String,
    pub image_id: Option<String>,
    /// The accessory's `config_revision` the container was made from.
    pub revision: i64,
}

impl Store {
    /// Records an accessory (status `pending`) with its secrets, all or nothing. `NotFound` when
    /// the project does not exist; a conflict on `name` when the project has one of that name.
    pub async fn insert_accessory(
        &self,
        project_id: i64,
        new: &NewAccessory,
        now: DateTime<Utc>,
    ) -> StoreResult<Accessory> {
        let spec = spec_json(&new.spec)?;
        let mut tx = self.write_tx().await?;
        if !project_exists(&mut tx, project_id).await? {
            return Err(StoreError::NotFound);
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO accessories (project_id, name, image, spec, status, created_at, updated_at) \
             VALUES (?, ?, ?, ?, 'pending', ?, ?) RETURNING id",
        )
        .bind(project_id)
        .bind(new.name.as_str())
        .bind(image_reference(&new.image))
        .bind(&spec)
        .bind(ts(now))
        .bind(ts(now))
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| name_conflict(e, new.name.as_str()))?;
        secrets::write_secrets(
            &mut tx,
            SecretOwner::Accessory,
            id,
            new.secret_env.iter().map(|(k, v)| (k, Some(v))).collect(),
        )
        .await?;
        let accessory = fetch_accessory(&mut tx, id).await?;
        tx.commit().await?;
        Ok(accessory)
    }

    pub async fn get_accessory(&self, id: i64) -> StoreResult<Accessory> {
        let mut conn = self.pool().acquire().await?;
        fetch_accessory(&mut conn, id).await
    }

    /// The accessories of a project by name; `NotFound` when the project does not exist.
    pub async fn list_accessories(&self, project_id: i64) -> StoreResult<Vec<Accessory>> {
        let mut tx = self.pool().begin().await?;
        if !project_exists(&mut tx, project_id).await? {
            return Err(StoreError::NotFound);
        }
        let rows: Vec<AccessoryRow> = sqlx::query_as(concat!(
            "SELECT ",
            accessory_columns!(),
            " FROM accessories WHERE project_id = ? ORDER BY name"
        ))
        .bind(project_id)
        .fetch_all(&mut *tx)
        .await?;
        let accessories = into_accessories(&mut tx, rows).await?;
        tx.commit().await?;
        Ok(accessories)
    }

    /// Every accessory of every project: what the Docker sync reconciles.
    pub async fn list_all_accessories(&self) -> StoreResult<Vec<Accessory>> {
        let mut tx = self.pool().begin().await?;
        let rows: Vec<AccessoryRow> = sqlx::query_as(concat!(
            "SELECT ",
            accessory_columns!(),
            " FROM accessories ORDER BY project_id, name"
        ))
        .fetch_all(&mut *tx)
        .await?;
        let accessories = into_accessories(&mut tx, rows).await?;
        tx.commit().await?;
        Ok(accessories)
    }

    /// Applies a partial update; a change of the image, the spec or a secret bumps
    /// `config_revision` (the container is recreated only by an explicit restart).
    pub async fn update_accessory(
        &self,
        id: i64,
        patch: &AccessoryPatch,
        now: DateTime<Utc>,
    ) -> StoreResult<Accessory> {
        let mut tx = self.write_tx().await?;
        let current = fetch_accessory(&mut tx, id).await?;
        let image = patch.image.as_ref().unwrap_or(&current.image);
        let spec = patch.spec.as_ref().unwrap_or(&current.spec);
        let reconfigured = *image != current.image || *spec != current.spec || !patch.secret_env.is_empty();
        sqlx::query(
            "UPDATE accessories SET image = ?, spec = ?, updated_at = ?, \
             config_revision = config_revision + ? WHERE id = ?",
        )
        .bind(image_reference(image))
        .bind(spec_json(spec)?)
        .bind(ts(now))
        .bind(i64::from(reconfigured))
        .bind(id)
        .execute(&mut *tx)
        .await?;
        secrets::write_secrets(
            &mut tx,
            SecretOwner::Accessory,
            id,
            patch.secret_env.iter().map(|(k, v)| (k, v.as_ref())).collect(),
        )
        .await?;
        let accessory = fetch_accessory(&mut tx, id).await?;
        tx.commit().await?;
        Ok(accessory)
    }

    /// Deletes an accessory and its secrets.
    pub async fn delete_accessory(&self, id: i64) -> StoreResult<()> {
        let done = sqlx::query("DELETE FROM accessories WHERE id = ?")
            .bind(id)
            .execute(self.pool())
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Sets the status as a workflow decided it (start, stop, failure), with the times that go
    /// with it; `exit_code` is kept unless given.
    pub async fn set_accessory_status(
        &self,
        id: i64,
        status: AccessoryStatus,
        exit_code: Option<i64>,
        now: DateTime<Utc>,
    ) -> StoreResult<Accessory> {
        let mut tx = self.write_tx().await?;
        write_status(&mut tx, id, status, exit_code, now).await?;
        let accessory = fetch_accessory(&mut tx, id).await?;
        tx.commit().await?;
        Ok(accessory)
    }

    /// Writes `to` only while the status is still `from` (the Docker sync's observations);
    /// `None` when it moved on meanwhile.
    pub async fn update_accessory_status_if(
        &self,
        id: i64,
        from: AccessoryStatus,
        to: AccessoryStatus,
        exit_code: Option<i64>,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Accessory>> {
        let mut tx = self.write_tx().await?;
        let status: Option<String> = sqlx::query_scalar("SELECT status FROM accessories WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        if status.as_deref() != Some(from.as_str()) {
            return Ok(None);
        }
        write_status(&mut tx, id, to, exit_code, now).await?;
        let accessory = fetch_accessory(&mut tx, id).await?;
        tx.commit().await?;
        Ok(Some(accessory))
    }

    /// Records the container just created for an accessory (status `starting`); `None` forgets
    /// the container (it was removed).
    pub async fn set_accessory_container(
        &self,
        id: i64,
        container: Option<&AccessoryContainer>,
        now: DateTime<Utc>,
    ) -> StoreResult<Accessory> {
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "UPDATE accessories SET container_id = ?, container_name = ?, image_id = ?, \
             container_revision = ?, host_port = NULL, exit_code = NULL, updated_at = ? WHERE id = ?",
        )
        .bind(container.map(|c| c.container_id.as_str()))
        .bind(container.map(|c| c.container_name.as_str()))
        .bind(container.and_then(|c| c.image_id.as_deref()))
        .bind(container.map(|c| c.revision))
        .bind(ts(now))
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let accessory = fetch_accessory(&mut tx, id).await?;
        tx.commit().await?;
        Ok(accessory)
    }

    /// The host port the engine published the accessory's port on, once started.
    pub async fn set_accessory_host_port(&self, id: i64, host_port: Option<u16>) -> StoreResult<()> {
        sqlx::query("UPDATE accessories SET host_port = ? WHERE id = ?")
            .bind(host_port.map(i64::from))
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Notes that the accessory's container was seen running now.
    pub async fn accessory_alive(&self, id: i64, now: DateTime<Utc>) -> StoreResult<()> {
        sqlx::query("UPDATE accessories SET last_alive_at = ? WHERE id = ?")
            .bind(ts(now))
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}

async fn write_status(
    conn: &mut SqliteConnection,
    id: i64,
    status: AccessoryStatus,
    exit_code: Option<i64>,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let now = ts(now);
    let (started, stopped) = match status {
        AccessoryStatus::Running => (Some(now.as_str()), None),
        AccessoryStatus::Stopped | AccessoryStatus::Failed | AccessoryStatus::Missing => {
            (None, Some(now.as_str()))
        }
        _ => (None, None),
    };
    let done = sqlx::query(
        "UPDATE accessories SET status = ?, exit_code = COALESCE(?, exit_code), \
         started_at = COALESCE(?, started_at), stopped_at = COALESCE(?, stopped_at), \
         last_alive_at = COALESCE(?, last_alive_at), updated_at = ? WHERE id = ?",
    )
    .bind(status.as_str())
    .bind(exit_code)
    .bind(started)
    .bind(stopped)
    .bind(started)
    .bind(&now)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::testing::{at, shop_prod, temp_store};
    use super::*;
    use crate::domain::accessory::parse_accessory_image;
    use crate::domain::project::SealedSecret;

    fn new_db() -> NewAccessory {
        NewAccessory {
            name: Name::parse("db").unwrap(),
            image: parse_accessory_image("127.0.0.1:5000/db:v1").unwrap(),
            spec: AccessorySpec::default(),
            secret_env: BTreeMap::from([("PASSWORD".to_owned(), SealedSecret(b"sealed".to_vec()))]),
        }
    }

    #[tokio::test]
    async fn an_accessory_is_stored_with_its_secret_keys_and_its_name_is_unique_per_project() {
        let (store, _dir) = temp_store().await;
        let (project, _) = shop_prod(&store).await;
        let db = store
            .insert_accessory(project.id, &new_db(), at(0))
            .await
            .unwrap();
        assert_eq!(db.status, AccessoryStatus::Pending);
        assert_eq!(db.secret_env_keys, ["PASSWORD"]);
        assert_eq!(image_reference(&db.image), "127.0.0.1:5000/db:v1");
        assert_eq!(store.get_accessory(db.id).await.unwrap(), db);
        assert_eq!(
            store.list_accessories(project.id).await.unwrap(),
            std::slice::from_ref(&db)
        );
        assert!(matches!(
            store.insert_accessory(project.id, &new_db(), at(0)).await,
            Err(StoreError::Conflict { field: "name", .. })
        ));
        assert!(matches!(
            store.insert_accessory(9999, &new_db(), at(0)).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            store.list_accessories(9999).await,
            Err(StoreError::NotFound)
        ));
        store.delete_accessory(db.id).await.unwrap();
        assert!(store.accessory_secrets(db.id).await.unwrap().is_empty());
        assert!(matches!(
            store.delete_accessory(db.id).await,
            Err(StoreError::NotFound)
        ));
    }

    #[tokio::test]
    async fn a_change_of_what_the_container_is_made_of_makes_it_out_of_date() {
        let (store, _dir) = temp_store().await;
        let (project, _) = shop_prod(&store).await;
        let db = store
            .insert_accessory(project.id, &new_db(), at(0))
            .await
            .unwrap();
        let container = AccessoryContainer {
            container_id: "c1".into(),
            container_name: "dw-shop-db".into(),
            image_id: None,
            revision: db.config_revision,
        };
        let db = store
            .set_accessory_container(db.id, Some(&container), at(1))
            .await
            .unwrap();
        assert!(!db.out_of_date());
        // The same spec again changes nothing.
        let same = AccessoryPatch {
            spec: Some(AccessorySpec::default()),
            ..AccessoryPatch::default()
        };
        let db = store.update_accessory(db.id, &same, at(2)).await.unwrap();
        assert!(!db.out_of_date());
        let mut spec = AccessorySpec::default();
        spec.env.insert("A".into(), "1".into());
        let changed = AccessoryPatch {
            spec: Some(spec.clone()),
            ..AccessoryPatch::default()
        };
        let db = store.update_accessory(db.id, &changed, at(3)).await.unwrap();
        assert!(db.out_of_date());
        assert_eq!(db.spec, spec);
        let removed = AccessoryPatch {
            secret_env: BTreeMap::from([("PASSWORD".to_owned(), None)]),
            ..AccessoryPatch::default()
        };
        let db = store.update_accessory(db.id, &removed, at(4)).await.unwrap();
        assert_eq!(db.config_revision, 3);
        assert!(db.secret_env_keys.is_empty());
    }

    #[tokio::test]
    async fn a_conditional_status_write_yields_to_a_workflow() {
        let (store, _dir) = temp_store().await;
        let (project, _) = shop_prod(&store).await;
        let db = store
            .insert_accessory(project.id, &new_db(), at(0))
            .await
            .unwrap();
        let running = store
            .set_accessory_status(db.id, AccessoryStatus::Running, None, at(1))
            .await
            .unwrap();
        assert_eq!(running.started_at, Some(at(1)));
        assert!(
            store
                .update_accessory_status_if(
                    db.id,
                    AccessoryStatus::Stopped,
                    AccessoryStatus::Missing,
                    None,
                    at(2)
                )
                .await
                .unwrap()
                .is_none()
        );
        let failed = store
            .update_accessory_status_if(
                db.id,
                AccessoryStatus::Running,
                AccessoryStatus::Failed,
                Some(3),
                at(2),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (failed.status, failed.exit_code),
            (AccessoryStatus::Failed, Some(3))
        );
    }
}
