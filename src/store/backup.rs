//! Online backups of the SQLite store and the checks a restore needs. A backup is `VACUUM INTO`
//! on a read-only connection of its own: SQLite copies one consistent snapshot (a read
//! transaction in WAL mode) while the server goes on writing, and the copy is a compact database
//! without a WAL. Nothing here migrates: a backup of a running installation must not change it.

use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use sqlx::{ConnectOptions, Connection, SqliteConnection};

use super::{MIGRATOR, StoreError, StoreResult};

/// What a backup file holds, as far as a restore needs to know before it replaces anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    /// The newest migration applied to it.
    pub schema_version: i64,
    pub projects: i64,
    pub stages: i64,
    pub events: i64,
    /// The key check value (`meta.secret_key_check`), when the installation had one.
    pub secret_key_check: Option<String>,
    /// One sealed registry password, to check a key against when there is no check value.
    pub sample_secret: Option<Vec<u8>>,
    /// The argon2id salt of a passphrase key (`meta.secret_kdf_salt`), when it has one.
    pub secret_kdf_salt: Option<String>,
}

async fn connect_read_only(path: &Path) -> StoreResult<SqliteConnection> {
    Ok(SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .busy_timeout(Duration::from_secs(30))
        .connect()
        .await?)
}

/// Writes a consistent copy of the database at `db` to `target` (which must not exist) with
/// `VACUUM INTO`, while other connections may be writing.
pub async fn backup_database(db: &Path, target: &Path) -> StoreResult<()> {
    let mut conn = connect_read_only(db).await?;
    let target = target.to_str().ok_or_else(|| StoreError::Corrupt {
        table: "backup",
        message: format!("{} is not a UTF-8 path", target.display()),
    })?;
    sqlx::query("VACUUM INTO ?")
        .bind(target)
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(())
}

/// Checks that `path` is a whole docker-watcher database this binary can run (integrity, a
/// schema no newer than its migrations) and says what it holds.
pub async fn inspect_backup(path: &Path) -> StoreResult<BackupSummary> {
    let corrupt = |message: String| StoreError::Corrupt {
        table: "backup",
        message,
    };
    let mut conn = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .journal_mode(SqliteJournalMode::Delete)
        .connect()
        .await
        .map_err(|e| corrupt(format!("{} is not a SQLite database: {e}", path.display())))?;
    let check: String = sqlx::query_scalar("PRAGMA quick_check")
        .fetch_one(&mut conn)
        .await
        .map_err(|e| corrupt(format!("{} is not a SQLite database: {e}", path.display())))?;
    if check != "ok" {
        return Err(corrupt(format!("{} is damaged: {check}", path.display())));
    }
    let schema_version: Option<i64> =
        sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success = 1")
            .fetch_one(&mut conn)
            .await
            .map_err(|_| {
                corrupt(format!(
                    "{} is a SQLite database but not a docker-watcher backup",
                    path.display()
                ))
            })?;
    let schema_version = schema_version.unwrap_or(0);
    let known = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    if schema_version > known {
        return Err(corrupt(format!(
            "{} comes from a newer docker-watcher (schema {schema_version}; this one knows up to {known}): restore it with that version",
            path.display()
        )));
    }
    let projects: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM projects")
        .fetch_one(&mut conn)
        .await?;
    let stages: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM stages")
        .fetch_one(&mut conn)
        .await?;
    let events: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM event_log")
        .fetch_one(&mut conn)
        .await?;
    let secret_key_check: Option<String> =
        sqlx::query_scalar("SELECT value FROM meta WHERE key = 'secret_key_check'")
            .fetch_optional(&mut conn)
            .await?;
    let sample_secret: Option<Vec<u8>> = sqlx::query_scalar(
        "SELECT registry_password_enc FROM projects WHERE registry_password_enc IS NOT NULL LIMIT 1",
    )
    .fetch_optional(&mut conn)
    .await?;
    let secret_kdf_salt: Option<String> =
        sqlx::query_scalar("SELECT value FROM meta WHERE key = 'secret_kdf_salt'")
            .fetch_optional(&mut conn)
            .await?;
    conn.close().await?;
    Ok(BackupSummary {
        schema_version,
        projects,
        stages,
        events,
        secret_key_check,
        sample_secret,
        secret_kdf_salt,
    })
}
