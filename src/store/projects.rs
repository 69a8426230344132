//! Projects (`projects`): one image repository each, with optional registry credentials.
//!
//! The registry password is stored sealed (see [`SealedSecret`]) and never read back with the
//! project: [`Project`] only says whether there is one, and [`Store::project_registry_password`]
//! hands out the sealed bytes to the one caller that pulls images. A project is deleted only
//! when it has no stages left, so deleting one never orphans the record of a running container.

use chrono::{DateTime, Utc};
use sqlx::FromRow;

use crate::domain::image_ref::ImageRef;
use crate::domain::name::Name;
use crate::domain::project::{NewProject, Project, ProjectPatch, SealedSecret};

use super::{Store, StoreError, StoreResult, parse_col, parse_ts, ts, unique_to_conflict};

const TABLE: &str = "projects";

macro_rules! project_columns {
    () => {
        "id, name, image, registry_username, registry_password_enc IS NOT NULL AS has_registry_password, \
         insecure_registry, created_at, updated_at"
    };
}

#[derive(FromRow)]
struct ProjectRow {
    id: i64,
    name: String,
    image: String,
    registry_username: Option<String>,
    has_registry_password: bool,
    insecure_registry: bool,
    created_at: String,
    updated_at: String,
}

impl ProjectRow {
    fn into_project(self) -> StoreResult<Project> {
        Ok(Project {
            id: self.id,
            name: parse_col::<Name>(TABLE, &self.name)?,
            image: parse_col::<ImageRef>(TABLE, &self.image)?,
            registry_username: self.registry_username,
            has_registry_password: self.has_registry_password,
            insecure_registry: self.insecure_registry,
            created_at: parse_ts(TABLE, &self.created_at)?,
            updated_at: parse_ts(TABLE, &self.updated_at)?,
        })
    }
}

fn name_conflict(err: sqlx::Error, name: &Name) -> StoreError {
    unique_to_conflict(err, "name", format!("a project named '{name}' already exists"))
}

impl Store {
    /// Creates a project; a name already in use is a conflict on `name`.
    pub async fn insert_project(&self, new: &NewProject, now: DateTime<Utc>) -> StoreResult<Project> {
        let row: ProjectRow = sqlx::query_as(concat!(
            "INSERT INTO projects (name, image, registry_username, registry_password_enc, insecure_registry, \
             created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING ",
            project_columns!()
        ))
        .bind(new.name.as_str())
        .bind(new.image.to_string())
        .bind(new.registry_username.as_deref())
        .bind(new.registry_password.as_ref().map(|s| s.0.as_slice()))
        .bind(new.insecure_registry)
        .bind(ts(now))
        .bind(ts(now))
        .fetch_one(self.pool())
        .await
        .map_err(|e| name_conflict(e, &new.name))?;
        row.into_project()
    }

    pub async fn get_project(&self, id: i64) -> StoreResult<Project> {
        let row: Option<ProjectRow> = sqlx::query_as(concat!(
            "SELECT ",
            project_columns!(),
            " FROM projects WHERE id = ?"
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.ok_or(StoreError::NotFound)?.into_project()
    }

    /// Every project, oldest first.
    pub async fn list_projects(&self) -> StoreResult<Vec<Project>> {
        let rows: Vec<ProjectRow> = sqlx::query_as(concat!(
            "SELECT ",
            project_columns!(),
            " FROM projects ORDER BY id"
        ))
        .fetch_all(self.pool())
        .await?;
        rows.into_iter().map(ProjectRow::into_project).collect()
    }

    /// Applies a partial update. Each field is written as a plain value (`coalesce` keeps the
    /// stored one), and clearing a nullable field is told apart from leaving it by a flag, so the
    /// whole update is one statement and cannot interleave with another writer.
    pub async fn update_project(
        &self,
        id: i64,
        patch: &ProjectPatch,
        now: DateTime<Utc>,
    ) -> StoreResult<Project> {
        let row: Option<ProjectRow> = sqlx::query_as(concat!(
            "UPDATE projects SET \
               name = coalesce(?, name), \
               image = coalesce(?, image), \
               registry_username = CASE WHEN ? THEN ? ELSE registry_username END, \
               registry_password_enc = CASE WHEN ? THEN ? ELSE registry_password_enc END, \
               insecure_registry = coalesce(?, insecure_registry), \
               updated_at = ? \
             WHERE id = ? RETURNING ",
            project_columns!()
        ))
        .bind(patch.name.as_ref().map(Name::as_str))
        .bind(patch.image.as_ref().map(ToString::to_string))
        .bind(patch.registry_username.is_some())
        .bind(patch.registry_username.clone().flatten())
        .bind(patch.registry_password.is_some())
        .bind(patch.registry_password.clone().flatten().map(|s| s.0))
        .bind(patch.insecure_registry)
        .bind(ts(now))
        .bind(id)
        .fetch_optional(self.pool())
        .await
        .map_err(|e| match &patch.name {
            Some(name) => name_conflict(e, name),
            None => e.into(),
        })?;
        row.ok_or(StoreError::NotFound)?.into_project()
    }

    /// Deletes a project that has no stages. A project with stages is a conflict on `id`: its
    /// stages (and so their containers' records) must be deleted one by one first.
    pub async fn delete_project(&self, id: i64) -> StoreResult<()> {
        let mut tx = self.write_tx().await?;
        let stages: Option<i64> = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM stages WHERE project_id = p.id) \
             + (SELECT count(*) FROM accessories WHERE project_id = p.id) FROM projects p WHERE p.id = ?",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        match stages {
            None => return Err(StoreError::NotFound),
            Some(0) => {}
            Some(_) => {
                return Err(StoreError::Conflict {
                    field: "id",
                    message: "the project still has stages or accessories; delete them first".into(),
                });
            }
        }
        sqlx::query("DELETE FROM projects WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The project's sealed registry password, if it has one.
    pub async fn project_registry_password(&self, id: i64) -> StoreResult<Option<SealedSecret>> {
        let sealed: Option<Option<Vec<u8>>> =
            sqlx::query_scalar("SELECT registry_password_enc FROM projects WHERE id = ?")
                .bind(id)
                .fetch_optional(self.pool())
                .await?;
        Ok(sealed.ok_or(StoreError::NotFound)?.map(SealedSecret))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{at, new_project, temp_store};
    use super::*;

    #[tokio::test]
    async fn a_project_is_stored_and_read_back_as_it_was_given() {
        let (store, _dir) = temp_store().await;
        let mut new = new_project("shop");
        new.registry_username = Some("ci".into());
        new.registry_password = Some(SealedSecret(vec![1, 2, 3]));
        new.insecure_registry = true;
        let project = store.insert_project(&new, at(0)).await.unwrap();
        assert_eq!(project.name, new.name);
        assert_eq!(project.image, new.image);
        assert_eq!(project.registry_username.as_deref(), Some("ci"));
        assert!(project.has_registry_password && project.insecure_registry);
        assert_eq!((project.created_at, project.updated_at), (at(0), at(0)));
        assert_eq!(store.get_project(project.id).await.unwrap(), project);
        assert_eq!(store.list_projects().await.unwrap(), vec![project.clone()]);
        assert_eq!(
            store.project_registry_password(project.id).await.unwrap(),
            Some(SealedSecret(vec![1, 2, 3]))
        );
    }

    #[tokio::test]
    async fn a_duplicate_project_name_is_a_conflict_on_name() {
        let (store, _dir) = temp_store().await;
        store.insert_project(&new_project("shop"), at(0)).await.unwrap();
        let err = store
            .insert_project(&new_project("shop"), at(0))
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Conflict { field: "name", .. }),
            "{err:?}"
        );
        let other = store.insert_project(&new_project("blog"), at(0)).await.unwrap();
        let patch = ProjectPatch {
            name: Some(Name::parse("shop").unwrap()),
            ..Default::default()
        };
        let err = store.update_project(other.id, &patch, at(1)).await.unwrap_err();
        assert!(
            matches!(err, StoreError::Conflict { field: "name", .. }),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_patch_changes_what_it_names_and_can_clear_the_credentials() {
        let (store, _dir) = temp_store().await;
        let mut new = new_project("shop");
        new.registry_username = Some("ci".into());
        new.registry_password = Some(SealedSecret(vec![9]));
        let project = store.insert_project(&new, at(0)).await.unwrap();

        let untouched = store
            .update_project(project.id, &ProjectPatch::default(), at(1))
            .await
            .unwrap();
        assert_eq!(untouched.registry_username.as_deref(), Some("ci"));
        assert!(untouched.has_registry_password);
        assert_eq!(untouched.updated_at, at(1));

        let patch = ProjectPatch {
            image: Some(ImageRef::parse("nginx").unwrap()),
            registry_username: Some(None),
            registry_password: Some(None),
            insecure_registry: Some(true),
            ..Default::default()
        };
        let changed = store.update_project(project.id, &patch, at(2)).await.unwrap();
        assert_eq!(changed.name, project.name);
        assert_eq!(changed.image, ImageRef::parse("nginx").unwrap());
        assert_eq!(changed.registry_username, None);
        assert!(!changed.has_registry_password && changed.insecure_registry);
        assert_eq!(store.project_registry_password(project.id).await.unwrap(), None);
        assert!(matches!(
            store.update_project(999, &patch, at(2)).await,
            Err(StoreError::NotFound)
        ));
    }

    #[tokio::test]
    async fn deleting_a_project_removes_it_once() {
        let (store, _dir) = temp_store().await;
        let project = store.insert_project(&new_project("shop"), at(0)).await.unwrap();
        store.delete_project(project.id).await.unwrap();
        assert!(matches!(
            store.get_project(project.id).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            store.delete_project(project.id).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            store.project_registry_password(project.id).await,
            Err(StoreError::NotFound)
        ));
    }
}
