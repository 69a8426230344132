//! Standalone proxies (`standalone_proxies`): user-created routes from a hostname to an upstream
//! URL. Each holds a hostname claim (see [`super::hostnames`]) taken, moved and released in the
//! transaction that writes the proxy, so it can never route a name a stage or instance owns.

use chrono::{DateTime, Utc};
use sqlx::{FromRow, SqliteConnection};

use crate::domain::hostname::Hostname;
use crate::domain::proxy::{NewProxy, ProxyPatch, StandaloneProxy, TargetUrl};

use super::hostnames::{self, OwnerKind};
use super::{Store, StoreError, StoreResult, parse_col, parse_col_with, parse_ts, ts};

const TABLE: &str = "standalone_proxies";

macro_rules! proxy_columns {
    () => {
        "id, name, hostname, target_url, preserve_host, enabled, created_at, updated_at"
    };
}

#[derive(FromRow)]
struct ProxyRow {
    id: i64,
    name: String,
    hostname: String,
    target_url: String,
    preserve_host: bool,
    enabled: bool,
    created_at: String,
    updated_at: String,
}

impl ProxyRow {
    fn into_proxy(self) -> StoreResult<StandaloneProxy> {
        Ok(StandaloneProxy {
            id: self.id,
            name: self.name,
            hostname: parse_col::<Hostname>(TABLE, &self.hostname)?,
            target_url: parse_col_with(TABLE, &self.target_url, TargetUrl::parse)?,
            preserve_host: self.preserve_host,
            enabled: self.enabled,
            created_at: parse_ts(TABLE, &self.created_at)?,
            updated_at: parse_ts(TABLE, &self.updated_at)?,
        })
    }
}

async fn fetch_proxy(conn: &mut SqliteConnection, id: i64) -> StoreResult<StandaloneProxy> {
    let row: Option<ProxyRow> = sqlx::query_as(concat!(
        "SELECT ",
        proxy_columns!(),
        " FROM standalone_proxies WHERE id = ?"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?;
    row.ok_or(StoreError::NotFound)?.into_proxy()
}

impl Store {
    /// Creates a proxy and claims its hostname; a taken hostname is a conflict on `hostname`.
    pub async fn insert_proxy(&self, new: &NewProxy, now: DateTime<Utc>) -> StoreResult<StandaloneProxy> {
        let mut tx = self.write_tx().await?;
        let inserted = sqlx::query_scalar(
            "INSERT INTO standalone_proxies (name, hostname, target_url, preserve_host, enabled, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(&new.name)
        .bind(new.hostname.as_str())
        .bind(new.target_url.as_str())
        .bind(new.preserve_host)
        .bind(new.enabled)
        .bind(ts(now))
        .bind(ts(now))
        .fetch_one(&mut *tx)
        .await;
        let id: i64 = match inserted {
            Ok(id) => id,
            // Another proxy has the name: report it the way a claim would, naming the holder.
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                return Err(hostnames::taken(&mut tx, new.hostname.as_str()).await?);
            }
            Err(e) => return Err(e.into()),
        };
        hostnames::claim(&mut tx, new.hostname.as_str(), OwnerKind::Proxy, id).await?;
        let proxy = fetch_proxy(&mut tx, id).await?;
        tx.commit().await?;
        Ok(proxy)
    }

    pub async fn get_proxy(&self, id: i64) -> StoreResult<StandaloneProxy> {
        let mut conn = self.pool().acquire().await?;
        fetch_proxy(&mut conn, id).await
    }

    /// Every standalone proxy, oldest first.
    pub async fn list_proxies(&self) -> StoreResult<Vec<StandaloneProxy>> {
        let rows: Vec<ProxyRow> = sqlx::query_as(concat!(
            "SELECT ",
            proxy_columns!(),
            " FROM standalone_proxies ORDER BY id"
        ))
        .fetch_all(self.pool())
        .await?;
        rows.into_iter().map(ProxyRow::into_proxy).collect()
    }

    /// Applies a partial update; a new hostname is claimed before the old one is let go, in one
    /// transaction.
    pub async fn update_proxy(
        &self,
        id: i64,
        patch: &ProxyPatch,
        now: DateTime<Utc>,
    ) -> StoreResult<StandaloneProxy> {
        let mut tx = self.write_tx().await?;
        let current = fetch_proxy(&mut tx, id).await?;
        if let Some(hostname) = patch.hostname.as_ref().filter(|h| **h != current.hostname) {
            hostnames::release(&mut tx, OwnerKind::Proxy, id).await?;
            hostnames::claim(&mut tx, hostname.as_str(), OwnerKind::Proxy, id).await?;
        }
        sqlx::query(
            "UPDATE standalone_proxies SET name = ?, hostname = ?, target_url = ?, preserve_host = ?, enabled = ?, \
             updated_at = ? WHERE id = ?",
        )
        .bind(patch.name.as_ref().unwrap_or(&current.name))
        .bind(patch.hostname.as_ref().unwrap_or(&current.hostname).as_str())
        .bind(patch.target_url.as_ref().unwrap_or(&current.target_url).as_str())
        .bind(patch.preserve_host.unwrap_or(current.preserve_host))
        .bind(patch.enabled.unwrap_or(current.enabled))
        .bind(ts(now))
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let proxy = fetch_proxy(&mut tx, id).await?;
        tx.commit().await?;
        Ok(proxy)
    }

    /// Deletes a proxy and releases its hostname.
    pub async fn delete_proxy(&self, id: i64) -> StoreResult<()> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query("DELETE FROM standalone_proxies WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        hostnames::release(&mut tx, OwnerKind::Proxy, id).await?;
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{at, new_project, new_stage, temp_store};
    use super::*;
    use crate::domain::stage::NewStage;

    fn new_proxy(name: &str, hostname: &str) -> NewProxy {
        NewProxy {
            name: name.into(),
            hostname: Hostname::parse(hostname).unwrap(),
            target_url: TargetUrl::parse("http://127.0.0.1:9000/api").unwrap(),
            preserve_host: false,
            enabled: true,
        }
    }

    #[tokio::test]
    async fn a_proxy_is_stored_with_its_hostname_claimed() {
        let (store, _dir) = temp_store().await;
        let proxy = store
            .insert_proxy(&new_proxy("docs", "docs.example.com"), at(0))
            .await
            .unwrap();
        assert_eq!(proxy.name, "docs");
        assert_eq!(proxy.hostname.as_str(), "docs.example.com");
        assert_eq!(proxy.target_url.as_str(), "http://127.0.0.1:9000/api");
        assert!(proxy.enabled && !proxy.preserve_host);
        assert_eq!(store.get_proxy(proxy.id).await.unwrap(), proxy);
        assert_eq!(store.list_proxies().await.unwrap(), vec![proxy.clone()]);
        assert_eq!(
            store.hostname_owner("docs.example.com").await.unwrap(),
            Some(("proxy".into(), proxy.id))
        );
    }

    #[tokio::test]
    async fn a_hostname_routed_by_a_stage_is_refused_to_a_proxy() {
        let (store, _dir) = temp_store().await;
        let project = store.insert_project(&new_project("shop"), at(0)).await.unwrap();
        let stage = NewStage {
            hostname: Some(Hostname::parse("shop.example.com").unwrap()),
            ..new_stage("prod")
        };
        store.insert_stage(project.id, &stage, at(0)).await.unwrap();
        let err = store
            .insert_proxy(&new_proxy("x", "shop.example.com"), at(0))
            .await
            .unwrap_err();
        match err {
            StoreError::Conflict {
                field: "hostname",
                message,
            } => {
                assert_eq!(
                    message,
                    "hostname shop.example.com is already used by stage shop/prod"
                );
            }
            other => panic!("expected a hostname conflict, got {other:?}"),
        }
        assert!(
            store.list_proxies().await.unwrap().is_empty(),
            "nothing was half-written"
        );
    }

    #[tokio::test]
    async fn updating_a_proxy_moves_its_claim_and_deleting_it_releases_it() {
        let (store, _dir) = temp_store().await;
        let a = store
            .insert_proxy(&new_proxy("a", "a.example.com"), at(0))
            .await
            .unwrap();
        store
            .insert_proxy(&new_proxy("b", "b.example.com"), at(0))
            .await
            .unwrap();

        let clash = ProxyPatch {
            hostname: Some(Hostname::parse("b.example.com").unwrap()),
            ..Default::default()
        };
        let err = store.update_proxy(a.id, &clash, at(1)).await.unwrap_err();
        match err {
            StoreError::Conflict {
                field: "hostname",
                message,
            } => assert!(message.contains("standalone proxy 'b'"), "{message}"),
            other => panic!("expected a hostname conflict, got {other:?}"),
        }

        let patch = ProxyPatch {
            hostname: Some(Hostname::parse("c.example.com").unwrap()),
            enabled: Some(false),
            target_url: Some(TargetUrl::parse("https://upstream.internal/").unwrap()),
            ..Default::default()
        };
        let updated = store.update_proxy(a.id, &patch, at(2)).await.unwrap();
        assert_eq!(
            (updated.hostname.as_str(), updated.enabled, updated.name.as_str()),
            ("c.example.com", false, "a")
        );
        assert_eq!((updated.created_at, updated.updated_at), (at(0), at(2)));
        assert_eq!(store.hostname_owner("a.example.com").await.unwrap(), None);
        assert_eq!(
            store.hostname_owner("c.example.com").await.unwrap(),
            Some(("proxy".into(), a.id))
        );

        store.delete_proxy(a.id).await.unwrap();
        assert_eq!(store.hostname_owner("c.example.com").await.unwrap(), None);
        assert!(matches!(
            store.delete_proxy(a.id).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            store.update_proxy(a.id, &ProxyPatch::default(), at(3)).await,
            Err(StoreError::NotFound)
        ));
    }
}
