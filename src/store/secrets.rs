//! Secret environment variables (`stage_secrets`, `accessory_secrets`) and the one-time
//! re-sealing of every sealed value when the installation's key derivation changes.
//!
//! Values are stored sealed ([`SealedSecret`], opened only by `secrets`); the store never sees
//! a plain value. Keys are not secret: they are listed with their owner so the API can say which
//! variables are set.

use std::collections::{BTreeMap, HashMap};

use sqlx::{AssertSqlSafe, SqliteConnection};

use crate::domain::project::SealedSecret;

use super::{Store, StoreResult};

/// Whose secrets: the two tables have the same shape. Their table and column names are the only
/// parts of these queries built at run time, from this closed enum (hence `AssertSqlSafe`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SecretOwner {
    Stage,
    Accessory,
}

impl SecretOwner {
    fn table(self) -> &'static str {
        match self {
            Self::Stage => "stage_secrets",
            Self::Accessory => "accessory_secrets",
        }
    }

    fn column(self) -> &'static str {
        match self {
            Self::Stage => "stage_id",
            Self::Accessory => "accessory_id",
        }
    }
}

/// The keys of one owner's secrets, sorted.
pub(crate) async fn secret_keys(
    conn: &mut SqliteConnection,
    owner: SecretOwner,
    id: i64,
) -> StoreResult<Vec<String>> {
    let sql = format!(
        "SELECT key FROM {} WHERE {} = ? ORDER BY key",
        owner.table(),
        owner.column()
    );
    Ok(sqlx::query_scalar(AssertSqlSafe(sql.as_str()))
        .bind(id)
        .fetch_all(conn)
        .await?)
}

/// The keys of every owner's secrets, by owner id.
pub(crate) async fn all_secret_keys(
    conn: &mut SqliteConnection,
    owner: SecretOwner,
) -> StoreResult<HashMap<i64, Vec<String>>> {
    let sql = format!(
        "SELECT {}, key FROM {} ORDER BY {}, key",
        owner.column(),
        owner.table(),
        owner.column()
    );
    let rows: Vec<(i64, String)> = sqlx::query_as(AssertSqlSafe(sql.as_str()))
        .fetch_all(conn)
        .await?;
    let mut keys: HashMap<i64, Vec<String>> = HashMap::new();
    for (id, key) in rows {
        keys.entry(id).or_default().push(key);
    }
    Ok(keys)
}

/// Sets (`Some`) or removes (`None`) secrets of one owner, inside the caller's transaction.
pub(crate) async fn write_secrets<'a>(
    conn: &mut SqliteConnection,
    owner: SecretOwner,
    id: i64,
    changes: Vec<(&'a String, Option<&'a SealedSecret>)>,
) -> StoreResult<()> {
    let upsert = format!(
        "INSERT INTO {} ({}, key, value_enc) VALUES (?, ?, ?) \
         ON CONFLICT ({}, key) DO UPDATE SET value_enc = excluded.value_enc",
        owner.table(),
        owner.column(),
        owner.column()
    );
    let delete = format!(
        "DELETE FROM {} WHERE {} = ? AND key = ?",
        owner.table(),
        owner.column()
    );
    for (key, value) in changes {
        match value {
            Some(sealed) => {
                sqlx::query(AssertSqlSafe(upsert.as_str()))
                    .bind(id)
                    .bind(key)
                    .bind(&sealed.0)
                    .execute(&mut *conn)
                    .await?;
            }
            None => {
                sqlx::query(AssertSqlSafe(delete.as_str()))
                    .bind(id)
                    .bind(key)
                    .execute(&mut *conn)
                    .await?;
            }
        }
    }
    Ok(())
}

/// How a re-seal ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resealed {
    /// The marker was already set (by an earlier start or another replica): nothing was
    /// touched. Its stored value.
    AlreadyDone(String),
    /// Every sealed value was re-sealed and the marker set; how many values, and how many could
    /// not be opened (left as they were).
    Done { resealed: usize, unreadable: usize },
}

impl Store {
    /// The sealed secret variables of a stage or an accessory, by key.
    pub(crate) async fn sealed_secrets(
        &self,
        owner: SecretOwner,
        id: i64,
    ) -> StoreResult<BTreeMap<String, SealedSecret>> {
        let sql = format!(
            "SELECT key, value_enc FROM {} WHERE {} = ? ORDER BY key",
            owner.table(),
            owner.column()
        );
        let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(AssertSqlSafe(sql.as_str()))
            .bind(id)
            .fetch_all(self.pool())
            .await?;
        Ok(rows
            .into_iter()
            .map(|(key, value)| (key, SealedSecret(value)))
            .collect())
    }

    /// The sealed secret variables of a stage.
    pub async fn stage_secrets(&self, stage_id: i64) -> StoreResult<BTreeMap<String, SealedSecret>> {
        self.sealed_secrets(SecretOwner::Stage, stage_id).await
    }

    /// The sealed secret variables of an accessory.
    pub async fn accessory_secrets(&self, accessory_id: i64) -> StoreResult<BTreeMap<String, SealedSecret>> {
        self.sealed_secrets(SecretOwner::Accessory, accessory_id).await
    }

    /// Keeps the secret values an instance's container is given (sealed as one value).
    pub async fn set_instance_secrets(&self, instance_id: i64, sealed: &SealedSecret) -> StoreResult<()> {
        sqlx::query("UPDATE instances SET secret_env_enc = ? WHERE id = ?")
            .bind(&sealed.0)
            .bind(instance_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// The secret values an instance's container was given, when it was given any.
    pub async fn instance_secrets(&self, instance_id: i64) -> StoreResult<Option<SealedSecret>> {
        let sealed: Option<Option<Vec<u8>>> =
            sqlx::query_scalar("SELECT secret_env_enc FROM instances WHERE id = ?")
                .bind(instance_id)
                .fetch_optional(self.pool())
                .await?;
        Ok(sealed.flatten().map(SealedSecret))
    }

    /// Re-seals every sealed value in the store — registry passwords, secret variables, the
    /// instances' snapshots of them, and the hex-encoded sealed values in `meta` under
    /// `hex_meta_keys` — with
    /// `reseal` (which opens with the old key and seals with the new; `None` when it cannot open
    /// a value, which is then left as it is), and records `marker = value` in `meta`, all in one
    /// transaction. When `marker` is already there nothing is done: the first writer wins, so
    /// replicas starting together re-seal once and agree on the value.
    pub async fn reseal_secrets(
        &self,
        marker: &str,
        value: &str,
        hex_meta_keys: &[&str],
        reseal: impl Fn(&SealedSecret) -> Option<SealedSecret>,
    ) -> StoreResult<Resealed> {
        let mut tx = self.write_tx().await?;
        let existing: Option<String> = sqlx::query_scalar("SELECT value FROM meta WHERE key = ?")
            .bind(marker)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(existing) = existing {
            return Ok(Resealed::AlreadyDone(existing));
        }
        let (mut resealed, mut unreadable) = (0, 0);
        let passwords: Vec<(i64, Vec<u8>)> = sqlx::query_as(
            "SELECT id, registry_password_enc FROM projects WHERE registry_password_enc IS NOT NULL",
        )
        .fetch_all(&mut *tx)
        .await?;
        for (id, sealed) in passwords {
            match reseal(&SealedSecret(sealed)) {
                Some(new) => {
                    sqlx::query("UPDATE projects SET registry_password_enc = ? WHERE id = ?")
                        .bind(new.0)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    resealed += 1;
                }
                None => unreadable += 1,
            }
        }
        let snapshots: Vec<(i64, Vec<u8>)> =
            sqlx::query_as("SELECT id, secret_env_enc FROM instances WHERE secret_env_enc IS NOT NULL")
                .fetch_all(&mut *tx)
                .await?;
        for (id, sealed) in snapshots {
            match reseal(&SealedSecret(sealed)) {
                Some(new) => {
                    sqlx::query("UPDATE instances SET secret_env_enc = ? WHERE id = ?")
                        .bind(new.0)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    resealed += 1;
                }
                None => unreadable += 1,
            }
        }
        for owner in [SecretOwner::Stage, SecretOwner::Accessory] {
            let select = format!("SELECT {}, key, value_enc FROM {}", owner.column(), owner.table());
            let rows: Vec<(i64, String, Vec<u8>)> = sqlx::query_as(AssertSqlSafe(select.as_str()))
                .fetch_all(&mut *tx)
                .await?;
            let update = format!(
                "UPDATE {} SET value_enc = ? WHERE {} = ? AND key = ?",
                owner.table(),
                owner.column()
            );
            for (id, key, sealed) in rows {
                match reseal(&SealedSecret(sealed)) {
                    Some(new) => {
                        sqlx::query(AssertSqlSafe(update.as_str()))
                            .bind(new.0)
                            .bind(id)
                            .bind(&key)
                            .execute(&mut *tx)
                            .await?;
                        resealed += 1;
                    }
                    None => unreadable += 1,
                }
            }
        }
        // Sealed values kept hex-encoded in `meta` (the key check value).
        for key in hex_meta_keys {
            let stored: Option<String> = sqlx::query_scalar("SELECT value FROM meta WHERE key = ?")
                .bind(key)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(stored) = stored else { continue };
            match hex::decode(stored.trim())
                .ok()
                .and_then(|bytes| reseal(&SealedSecret(bytes)))
            {
                Some(new) => {
                    sqlx::query("UPDATE meta SET value = ? WHERE key = ?")
                        .bind(hex::encode(new.0))
                        .bind(key)
                        .execute(&mut *tx)
                        .await?;
                    resealed += 1;
                }
                None => unreadable += 1,
            }
        }
        sqlx::query("INSERT INTO meta (key, value) VALUES (?, ?)")
            .bind(marker)
            .bind(value)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Resealed::Done { resealed, unreadable })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{at, shop_prod, temp_store};
    use super::*;

    fn sealed(text: &str) -> SealedSecret {
        SealedSecret(text.as_bytes().to_vec())
    }

    #[tokio::test]
    async fn secrets_are_set_replaced_and_removed_by_key() {
        let (store, _dir) = temp_store().await;
        let (_, stage) = shop_prod(&store).await;
        let mut conn = store.pool().acquire().await.unwrap();
        let (a, b) = ("A".to_owned(), "B".to_owned());
        let (one, two) = (sealed("1"), sealed("2"));
        write_secrets(
            &mut conn,
            SecretOwner::Stage,
            stage.id,
            vec![(&a, Some(&one)), (&b, Some(&two))],
        )
        .await
        .unwrap();
        write_secrets(
            &mut conn,
            SecretOwner::Stage,
            stage.id,
            vec![(&a, Some(&two)), (&b, None)],
        )
        .await
        .unwrap();
        assert_eq!(
            secret_keys(&mut conn, SecretOwner::Stage, stage.id)
                .await
                .unwrap(),
            ["A"]
        );
        drop(conn);
        let secrets = store.stage_secrets(stage.id).await.unwrap();
        assert_eq!(secrets, BTreeMap::from([("A".to_owned(), two)]));
    }

    #[tokio::test]
    async fn a_reseal_rewrites_every_sealed_value_once() {
        let (store, _dir) = temp_store().await;
        let (_, stage) = shop_prod(&store).await;
        let mut project = super::super::testing::new_project("registry");
        project.registry_username = Some("u".into());
        project.registry_password = Some(sealed("old:pw"));
        let project = store.insert_project(&project, at(0)).await.unwrap();
        let key = "K".to_owned();
        let mut conn = store.pool().acquire().await.unwrap();
        write_secrets(
            &mut conn,
            SecretOwner::Stage,
            stage.id,
            vec![(&key, Some(&sealed("old:value")))],
        )
        .await
        .unwrap();
        drop(conn);
        let reseal = |s: &SealedSecret| {
            let text = String::from_utf8(s.0.clone()).ok()?;
            Some(sealed(&format!("new:{}", text.strip_prefix("old:")?)))
        };
        let done = store.reseal_secrets("kdf", "salt-1", &[], reseal).await.unwrap();
        assert_eq!(
            done,
            Resealed::Done {
                resealed: 2,
                unreadable: 0
            }
        );
        assert_eq!(
            store.project_registry_password(project.id).await.unwrap(),
            Some(sealed("new:pw"))
        );
        assert_eq!(
            store.stage_secrets(stage.id).await.unwrap()[&key],
            sealed("new:value")
        );
        let again = store
            .reseal_secrets("kdf", "salt-2", &[], |_| None)
            .await
            .unwrap();
        assert_eq!(again, Resealed::AlreadyDone("salt-1".into()));
        assert_eq!(
            store.stage_secrets(stage.id).await.unwrap()[&key],
            sealed("new:value")
        );
    }
}
