//! Hostname claims (`hostname_claims`): every hostname the proxy routes, whoever owns it — a
//! stage, a per-tag instance or a standalone proxy. A hostname is unique across all three
//! (SPEC §2), and one PRIMARY KEY enforces that, so two requests racing for the same name cannot
//! both win the way two "is it free?" look-ups followed by two inserts could.
//!
//! Claims are taken and released inside the transaction that writes their owner, by the helpers
//! here, so a hostname is never claimed by a row that does not exist nor held by a deleted one.

use sqlx::SqliteConnection;

use super::{Store, StoreError, StoreResult};

/// Who holds a hostname; the strings are the stored `owner_kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OwnerKind {
    Stage,
    Instance,
    Proxy,
}

impl OwnerKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Stage => "stage",
            Self::Instance => "instance",
            Self::Proxy => "proxy",
        }
    }
}

/// Claims `hostname` for an owner, or fails with a conflict on `hostname` that names the holder.
pub(crate) async fn claim(
    conn: &mut SqliteConnection,
    hostname: &str,
    kind: OwnerKind,
    owner_id: i64,
) -> StoreResult<()> {
    let inserted =
        sqlx::query("INSERT INTO hostname_claims (hostname, owner_kind, owner_id) VALUES (?, ?, ?)")
            .bind(hostname)
            .bind(kind.as_str())
            .bind(owner_id)
            .execute(&mut *conn)
            .await;
    match inserted {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(db)) if db.is_unique_violation() => Err(taken(conn, hostname).await?),
        Err(e) => Err(e.into()),
    }
}

/// The conflict to report when `hostname` is already claimed, naming its holder.
pub(crate) async fn taken(conn: &mut SqliteConnection, hostname: &str) -> StoreResult<StoreError> {
    let holder = describe_holder(conn, hostname).await?;
    Ok(StoreError::Conflict {
        field: "hostname",
        message: match holder {
            Some(holder) => format!("hostname {hostname} is already used by {holder}"),
            None => format!("hostname {hostname} is already used"),
        },
    })
}

/// Claims `hostname` for a new per-tag instance. When an older instance of the same stage holds
/// it (the same tag deployed again), the claim moves to the new one: the old instance is being
/// replaced and stays behind only for rollback.
pub(crate) async fn claim_for_instance(
    conn: &mut SqliteConnection,
    hostname: &str,
    stage_id: i64,
    instance_id: i64,
) -> StoreResult<()> {
    let moved = sqlx::query(
        "UPDATE hostname_claims SET owner_id = ? WHERE hostname = ? AND owner_kind = 'instance' \
         AND owner_id IN (SELECT id FROM instances WHERE stage_id = ?)",
    )
    .bind(instance_id)
    .bind(hostname)
    .bind(stage_id)
    .execute(&mut *conn)
    .await?;
    if moved.rows_affected() == 1 {
        return Ok(());
    }
    claim(conn, hostname, OwnerKind::Instance, instance_id).await
}

/// Releases whatever hostname an owner holds (nothing, if it holds none).
pub(crate) async fn release(conn: &mut SqliteConnection, kind: OwnerKind, owner_id: i64) -> StoreResult<()> {
    sqlx::query("DELETE FROM hostname_claims WHERE owner_kind = ? AND owner_id = ?")
        .bind(kind.as_str())
        .bind(owner_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Who holds a hostname, in words a user recognises in a conflict message.
async fn describe_holder(conn: &mut SqliteConnection, hostname: &str) -> StoreResult<Option<String>> {
    let holder: Option<String> = sqlx::query_scalar(
        "SELECT CASE c.owner_kind \
             WHEN 'stage' THEN (SELECT 'stage ' || p.name || '/' || s.name FROM stages s \
                                JOIN projects p ON p.id = s.project_id WHERE s.id = c.owner_id) \
             WHEN 'instance' THEN (SELECT 'instance ' || i.id || ' of ' || p.name || '/' || s.name \
                                   FROM instances i JOIN stages s ON s.id = i.stage_id \
                                   JOIN projects p ON p.id = i.project_id WHERE i.id = c.owner_id) \
             WHEN 'proxy' THEN (SELECT 'standalone proxy ''' || name || '''' FROM standalone_proxies \
                                WHERE id = c.owner_id) \
         END FROM hostname_claims c WHERE c.hostname = ?",
    )
    .bind(hostname)
    .fetch_optional(conn)
    .await?
    .flatten();
    Ok(holder)
}

impl Store {
    /// Who routes a hostname: `("stage" | "instance" | "proxy", id)`. Hostnames are stored
    /// lower-cased, so the look-up ignores case.
    pub async fn hostname_owner(&self, hostname: &str) -> StoreResult<Option<(String, i64)>> {
        let owner = sqlx::query_as("SELECT owner_kind, owner_id FROM hostname_claims WHERE hostname = ?")
            .bind(hostname.to_ascii_lowercase())
            .fetch_optional(self.pool())
            .await?;
        Ok(owner)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::temp_store;
    use super::*;

    #[tokio::test]
    async fn a_claimed_hostname_cannot_be_claimed_again_and_the_conflict_names_the_field() {
        let (store, _dir) = temp_store().await;
        let mut conn = store.pool().acquire().await.unwrap();
        claim(&mut conn, "app.example.com", OwnerKind::Proxy, 1)
            .await
            .unwrap();
        let err = claim(&mut conn, "app.example.com", OwnerKind::Stage, 2)
            .await
            .unwrap_err();
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
            store.hostname_owner("App.Example.com").await.unwrap(),
            Some(("proxy".to_owned(), 1))
        );
    }

    #[tokio::test]
    async fn a_released_hostname_is_free_again() {
        let (store, _dir) = temp_store().await;
        let mut conn = store.pool().acquire().await.unwrap();
        claim(&mut conn, "a.example.com", OwnerKind::Stage, 7)
            .await
            .unwrap();
        release(&mut conn, OwnerKind::Stage, 7).await.unwrap();
        assert_eq!(store.hostname_owner("a.example.com").await.unwrap(), None);
        claim(&mut conn, "a.example.com", OwnerKind::Proxy, 7)
            .await
            .unwrap();
    }
}
