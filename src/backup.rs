//! The `backup` and `restore` commands. `backup FILE` writes a consistent copy of the store
//! while the server runs (SQLite's `VACUUM INTO` on a read-only connection: one snapshot, no
//! lock on the writers); `restore FILE` puts such a copy in place of the data dir's store, and
//! refuses while a server holds the data dir's lock ([`crate::data_dir`]). Sealed secrets in a
//! backup open only with the key they were sealed with, so a restore checks the key first and
//! says what to do when it is missing or wrong, instead of letting the first deploy fail.
//!
//! PostgreSQL (a `postgres://` `DOCKER_WATCHER_DATABASE_URL`) is backed up with `pg_dump`; the
//! commands say so rather than copying a file that is not the database.

use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::data_dir::{DataDirLock, DataDirLockError};
use crate::domain::project::SealedSecret;
use crate::secrets::{KeyMismatch, SecretBox};
use crate::store::backup::{BackupSummary, backup_database, inspect_backup};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(
        "this installation keeps its data in PostgreSQL (DOCKER_WATCHER_DATABASE_URL): back it up with pg_dump and restore with pg_restore or psql; docker-watcher's backup and restore handle the SQLite store only"
    )]
    Postgres,
    #[error("there is no store to back up: {0} does not exist (check --data-dir)")]
    NoDatabase(PathBuf),
    #[error("{0} already exists; choose a new file name (a backup never overwrites one)")]
    TargetExists(PathBuf),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Locked(#[from] DataDirLockError),
    #[error(
        "{data_dir} already holds a store; stop its server and pass --force to replace it (the old files are kept as {}.before-restore-*)",
        Store::FILE_NAME
    )]
    StoreExists { data_dir: PathBuf },
    #[error(
        "the backup holds secrets sealed with its installation's key, and none is configured here: set DOCKER_WATCHER_SECRET_KEY to that key, or copy that installation's secret.key into {data_dir} first"
    )]
    NoKey { data_dir: PathBuf },
    #[error(transparent)]
    KeyMismatch(#[from] KeyMismatch),
    #[error("{0}")]
    Store(#[from] StoreError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_owned(),
        source,
    }
}

fn refuse_postgres(config: &Config) -> Result<(), BackupError> {
    if config.database_is_postgres() {
        return Err(BackupError::Postgres);
    }
    Ok(())
}

/// What a backup or restore did, for the command's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    pub file: PathBuf,
    pub bytes: u64,
    pub summary: BackupSummary,
    /// Where the store that a forced restore replaced was moved.
    pub replaced: Option<PathBuf>,
}

impl std::fmt::Display for BackupReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} projects, {} stages, {} events, {} bytes",
            self.file.display(),
            self.summary.projects,
            self.summary.stages,
            self.summary.events,
            self.bytes
        )?;
        if let Some(old) = &self.replaced {
            write!(f, "; the previous store was moved to {}", old.display())?;
        }
        Ok(())
    }
}

/// `docker-watcher backup FILE`: a consistent copy of the data dir's store, taken online. The
/// copy is written next to `target` under a temporary name, checked, and then renamed, so
/// `target` never holds half a backup.
pub async fn backup(config: &Config, target: &Path) -> Result<BackupReport, BackupError> {
    refuse_postgres(config)?;
    let db = config.data_dir.join(Store::FILE_NAME);
    if !db.is_file() {
        return Err(BackupError::NoDatabase(db));
    }
    if target.exists() {
        return Err(BackupError::TargetExists(target.to_owned()));
    }
    let partial = sibling(target, &format!("partial-{}", std::process::id()));
    let _ = std::fs::remove_file(&partial);
    let result = async {
        backup_database(&db, &partial).await?;
        let summary = inspect_backup(&partial).await?;
        sync_file(&partial)?;
        // `hard_link` fails if `target` appeared meanwhile, where `rename` would replace it.
        std::fs::hard_link(&partial, target).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                BackupError::TargetExists(target.to_owned())
            } else {
                io(target)(e)
            }
        })?;
        Ok::<_, BackupError>(summary)
    }
    .await;
    let _ = std::fs::remove_file(&partial);
    let summary = result?;
    sync_parent(target)?;
    let bytes = std::fs::metadata(target).map_err(io(target))?.len();
    Ok(BackupReport {
        file: target.to_owned(),
        bytes,
        summary,
        replaced: None,
    })
}

/// `docker-watcher restore FILE [--force]`: checks the backup and the key, then puts the backup
/// in place of the data dir's store — never while a server runs on the data dir (its lock), and
/// over an existing store only with `force` (the old files are moved aside, not deleted).
pub async fn restore(config: &Config, source: &Path, force: bool) -> Result<BackupReport, BackupError> {
    refuse_postgres(config)?;
    std::fs::create_dir_all(&config.data_dir).map_err(io(&config.data_dir))?;
    // Held until the end: no server can start on a half-restored data dir.
    let _lock = DataDirLock::acquire(&config.data_dir)?;
    if !source.is_file() {
        return Err(io(source)(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no such backup file",
        )));
    }
    let summary = inspect_backup(source).await?;
    check_key(config, &summary)?;

    let db = config.data_dir.join(Store::FILE_NAME);
    let replaced = if db.exists() {
        if !force {
            return Err(BackupError::StoreExists {
                data_dir: config.data_dir.clone(),
            });
        }
        Some(move_aside(&db)?)
    } else {
        None
    };
    let incoming = sibling(&db, "restoring");
    std::fs::copy(source, &incoming).map_err(io(&incoming))?;
    sync_file(&incoming)?;
    std::fs::rename(&incoming, &db).map_err(io(&db))?;
    sync_parent(&db)?;
    let bytes = std::fs::metadata(&db).map_err(io(&db))?.len();
    Ok(BackupReport {
        file: db,
        bytes,
        summary,
        replaced,
    })
}

/// The key this data dir will run with must open the backup's secrets.
fn check_key(config: &Config, summary: &BackupSummary) -> Result<(), BackupError> {
    if summary.secret_key_check.is_none() && summary.sample_secret.is_none() {
        return Ok(());
    }
    let key_file = config.data_dir.join(SecretBox::KEY_FILE);
    let secrets = match &config.secret_key {
        // A passphrase is stretched with the backup's own salt (none: a backup from before it).
        Some(key) => SecretBox::from_configured(key, summary.secret_kdf_salt.as_deref()).map_err(|e| {
            io(&key_file)(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{e:#}"),
            ))
        })?,
        None if key_file.exists() => SecretBox::from_key_file(&config.data_dir)
            .map(|(secrets, _)| secrets)
            .map_err(|e| {
                io(&key_file)(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{e:#}"),
                ))
            })?,
        None => {
            return Err(BackupError::NoKey {
                data_dir: config.data_dir.clone(),
            });
        }
    };
    match (&summary.secret_key_check, &summary.sample_secret) {
        (Some(check), _) => secrets.verify_key_check(check)?,
        (None, Some(sealed)) => {
            secrets
                .open(&SealedSecret(sealed.clone()))
                .map_err(|_| KeyMismatch)?;
        }
        (None, None) => {}
    }
    Ok(())
}

/// Moves the store and its WAL files to `*.before-restore-<time>`; returns the store's new path.
fn move_aside(db: &Path) -> Result<PathBuf, BackupError> {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let moved = sibling(db, &format!("before-restore-{stamp}"));
    for suffix in ["-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", db.display()));
        if from.exists() {
            let to = PathBuf::from(format!("{}{suffix}", moved.display()));
            std::fs::rename(&from, &to).map_err(io(&from))?;
        }
    }
    std::fs::rename(db, &moved).map_err(io(db))?;
    Ok(moved)
}

/// `dir/name` → `dir/name.suffix`.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{suffix}"));
    path.with_file_name(name)
}

fn sync_file(path: &Path) -> Result<(), BackupError> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io(path))
}

fn sync_parent(path: &Path) -> Result<(), BackupError> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::File::open(parent)
        .and_then(|f| f.sync_all())
        .map_err(io(parent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siblings_keep_the_directory_and_extend_the_name() {
        assert_eq!(
            sibling(Path::new("/b/x.db"), "partial-1"),
            PathBuf::from("/b/x.db.partial-1")
        );
        assert_eq!(sibling(Path::new("x.db"), "r"), PathBuf::from("x.db.r"));
    }
}
