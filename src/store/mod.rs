//! The database: SQLite in WAL mode, opened once, migrated forward at start. Each file holds the
//! queries of one table group and hands records out as `domain` types, never as raw rows; a row
//! that no longer parses is a [`StoreError::Corrupt`], not a panic.
//!
//! The store knows nothing of Docker, registries or HTTP. Uniqueness (names, hostnames) is
//! enforced by constraints and reported as [`StoreError::Conflict`] naming the field, so callers
//! never race a look-up against an insert.
//!
//! # Layout
//! - [`files`]: the data dir's files kept private; an unusable database told plainly.
//! - [`installation`]: the installation id and generated secrets (`installation`, `meta`).
//! - [`users`]: users, API tokens, sessions.
//! - [`projects`], [`stages`]: configuration; [`hostnames`]: the claims that keep a routed
//!   hostname unique across stages, instances and standalone proxies; [`secrets`]: the sealed
//!   secret variables of stages and accessories.
//! - [`instances`], [`deployments`]: what runs and what was attempted; failed digests.
//! - [`poll_state`]: what the poller keeps between polls (digests' first-seen times).
//! - [`proxies`]: standalone proxies.
//! - [`settings`]: typed settings as key/value JSON.
//! - [`events`]: the event log.
//! - [`backup`]: online copies (`VACUUM INTO`) and the checks a restore makes.
//! - [`notifications`]: notification channels, the outbox of messages to deliver, the delivery log.

pub mod accessories;
pub mod backup;
pub mod deployments;
pub mod events;
pub mod files;
pub mod hostnames;
pub mod installation;
pub mod instances;
pub mod notifications;
pub mod poll_state;
pub mod projects;
pub mod proxies;
pub mod secrets;
pub mod settings;
pub mod stages;
pub mod users;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};

/// The migrations, embedded in the binary at build time.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A uniqueness rule was broken; `field` is the API field that collides.
    #[error("{message}")]
    Conflict { field: &'static str, message: String },
    /// A stored row does not parse as its domain type.
    #[error("corrupt record in {table}: {message}")]
    Corrupt { table: &'static str, message: String },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database file cannot be used as it is; the message says what to do.
    #[error("{}: {problem}", path.display())]
    Unusable {
        path: std::path::PathBuf,
        problem: files::UnusableDatabase,
    },
    /// The data dir or one of its files could not be created or made private.
    #[error("{}: {source}", path.display())]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A store just opened, and the data dir's files that were open to other users and are not any
/// more (to be reported: someone may have read them).
#[derive(Debug)]
pub struct Opened {
    pub store: Store,
    pub tightened: Vec<files::ModeTightened>,
}

/// A handle on the database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
}

impl Store {
    /// The database file inside a data dir.
    pub const FILE_NAME: &'static str = "docker-watcher.db";

    /// Opens (creating if needed) the database in `data_dir` and applies pending migrations.
    pub async fn open(data_dir: &Path) -> StoreResult<Store> {
        Ok(Self::open_data_dir(data_dir).await?.store)
    }

    /// Opens the database in `data_dir` like [`Store::open`], creating the data dir 0700 and the
    /// database 0600 first, and reports the files it found open to other users and tightened.
    pub async fn open_data_dir(data_dir: &Path) -> StoreResult<Opened> {
        let mut tightened = files::prepare_data_dir(data_dir)?;
        let file = data_dir.join(Self::FILE_NAME);
        tightened.extend(files::prepare_database_files(&file)?);
        let store = Self::open_file(&file).await?;
        Ok(Opened { store, tightened })
    }

    pub async fn open_file(path: &Path) -> StoreResult<Store> {
        let unusable = |error: sqlx::Error| match files::UnusableDatabase::classify(&error) {
            Some(problem) => StoreError::Unusable {
                path: path.to_owned(),
                problem,
            },
            None => StoreError::Database(error),
        };
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL makes NORMAL durable across application crashes; only power loss can lose
            // the last transactions.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true)
            .pragma("temp_store", "memory")
            .pragma("cache_size", "-16000");
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .min_connections(1)
            .connect_with(options)
            .await
            .map_err(unusable)?;
        MIGRATOR.run(&pool).await.map_err(|error| match error {
            sqlx::migrate::MigrateError::Execute(error) => unusable(error),
            other => StoreError::Migrate(other),
        })?;
        // A database opened read-only (its file not writable, a read-only mount) reads fine and
        // would fail on the first write, deep in some request: find out now. Taking the write
        // lock is enough, and writes nothing.
        let probe = async {
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            sqlx::query("DELETE FROM meta WHERE 0").execute(&mut *tx).await?;
            tx.rollback().await
        };
        probe.await.map_err(unusable)?;
        Ok(Store { pool })
    }

    /// Answers whether the database can be queried (for `/readyz`).
    pub async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes every connection; used at shutdown so the WAL is checkpointed.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Starts a transaction that takes the write lock at once. A deferred transaction that reads
    /// first and writes later fails with `SQLITE_BUSY` (without waiting for the busy timeout)
    /// when another connection committed in between; taking the lock up front makes concurrent
    /// writers queue on the busy timeout instead.
    pub(crate) async fn write_tx(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }
}

/// Formats a time for storage: RFC 3339, UTC, milliseconds — lexically sortable.
pub(crate) fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Parses a stored time.
pub(crate) fn parse_ts(table: &'static str, raw: &str) -> StoreResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt {
            table,
            message: format!("bad time '{raw}': {e}"),
        })
}

pub(crate) fn parse_opt_ts(table: &'static str, raw: Option<&str>) -> StoreResult<Option<DateTime<Utc>>> {
    raw.map(|r| parse_ts(table, r)).transpose()
}

/// Parses a stored string into a domain type, reporting a corrupt row instead of panicking.
pub(crate) fn parse_col<T: FromStr>(table: &'static str, raw: &str) -> StoreResult<T>
where
    T::Err: std::fmt::Display,
{
    raw.parse().map_err(|e: T::Err| StoreError::Corrupt {
        table,
        message: format!("'{raw}': {e}"),
    })
}

/// Parses a stored string with a parser that is not a `FromStr` (for example `TargetUrl::parse`).
pub(crate) fn parse_col_with<T, E: std::fmt::Display>(
    table: &'static str,
    raw: &str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> StoreResult<T> {
    parse(raw).map_err(|e| StoreError::Corrupt {
        table,
        message: format!("'{raw}': {e}"),
    })
}

/// Converts a stored integer into a narrower domain type (a port, a count), reporting a corrupt
/// row when it does not fit.
pub(crate) fn narrow<T: TryFrom<i64>>(table: &'static str, column: &str, raw: i64) -> StoreResult<T> {
    T::try_from(raw).map_err(|_| StoreError::Corrupt {
        table,
        message: format!("{column} {raw} is out of range"),
    })
}

/// Whether an error is a FOREIGN KEY violation: the row it points at does not exist.
pub(crate) fn is_foreign_key_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_foreign_key_violation())
}

/// Maps a UNIQUE violation to a conflict on `field`, passing every other error through.
pub(crate) fn unique_to_conflict(
    err: sqlx::Error,
    field: &'static str,
    message: impl Into<String>,
) -> StoreError {
    match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict {
            field,
            message: message.into(),
        },
        _ => StoreError::Database(err),
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers shared by the store's unit tests.

    use chrono::{DateTime, TimeZone, Utc};

    use super::Store;
    use crate::domain::image_ref::ImageRef;
    use crate::domain::name::Name;
    use crate::domain::project::{NewProject, Project};
    use crate::domain::stage::{ContainerSpec, NewStage, Stage};
    use crate::domain::tag_policy::TagPolicy;

    /// A fresh, migrated store in its own temporary directory (kept alive by the returned guard).
    pub(crate) async fn temp_store() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).await.expect("open store");
        (store, dir)
    }

    /// A fixed instant, plus `secs` seconds, so tests compare exact times.
    pub(crate) fn at(secs: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap() + chrono::TimeDelta::seconds(secs)
    }

    pub(crate) fn new_project(name: &str) -> NewProject {
        NewProject {
            name: Name::parse(name).unwrap(),
            image: ImageRef::parse("127.0.0.1:5000/team/app").unwrap(),
            registry_username: None,
            registry_password: None,
            insecure_registry: false,
        }
    }

    pub(crate) fn new_stage(name: &str) -> NewStage {
        NewStage {
            name: Name::parse(name).unwrap(),
            tag_policy: TagPolicy::parse("tag:latest").unwrap(),
            schedule: None,
            auto_deploy: true,
            hostname: None,
            max_instances: NewStage::DEFAULT_MAX_INSTANCES,
            min_release_age: None,
            container: ContainerSpec::default(),
            hooks: Default::default(),
            strategy: Default::default(),
            secret_env: Default::default(),
        }
    }

    /// A project `shop` with a stage `prod`, the usual parents of instances and deployments.
    pub(crate) async fn shop_prod(store: &Store) -> (Project, Stage) {
        let project = store.insert_project(&new_project("shop"), at(0)).await.unwrap();
        let stage = store
            .insert_stage(project.id, &new_stage("prod"), at(0))
            .await
            .unwrap();
        (project, stage)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::temp_store;
    use super::*;

    #[tokio::test]
    async fn a_new_store_is_migrated_and_answers_pings() {
        let (store, dir) = temp_store().await;
        store.ping().await.unwrap();
        assert!(dir.path().join(Store::FILE_NAME).exists());
    }

    #[tokio::test]
    async fn reopening_a_store_keeps_its_data_and_does_not_migrate_twice() {
        let (store, dir) = temp_store().await;
        let id = store.installation_id().await.unwrap();
        store.close().await;
        let reopened = Store::open(dir.path()).await.unwrap();
        assert_eq!(reopened.installation_id().await.unwrap(), id);
    }

    #[test]
    fn stored_times_sort_lexically_and_parse_back() {
        let t = DateTime::parse_from_rfc3339("2026-01-02T03:04:05.678Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(ts(t), "2026-01-02T03:04:05.678Z");
        assert_eq!(parse_ts("t", &ts(t)).unwrap(), t);
        assert!(ts(t) < ts(t + chrono::TimeDelta::milliseconds(1)));
        assert!(matches!(
            parse_ts("t", "yesterday"),
            Err(StoreError::Corrupt { table: "t", .. })
        ));
    }

    #[test]
    fn values_that_do_not_parse_or_fit_are_corrupt_not_panics() {
        assert!(matches!(
            parse_col::<i64>("t", "x"),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(matches!(
            narrow::<u16>("t", "port", 70_000),
            Err(StoreError::Corrupt { .. })
        ));
        assert_eq!(narrow::<u16>("t", "port", 8080).unwrap(), 8080);
    }
}
