//! The data dir's files kept private, and the ways a database can be unusable told plainly.
//! The data dir is created 0700 (or tightened to it), the database file 0600 before SQLite
//! opens it — SQLite gives its `-wal` and `-shm` files the database file's mode, so they are
//! private too — and files found looser are tightened, each fix reported so the caller can say
//! so. A database that is read-only, corrupt or not a database at all is a
//! [`super::StoreError::Unusable`] naming the file and what to do, instead of SQLite's code.

use std::fmt;
use std::path::{Path, PathBuf};

/// A file or directory whose mode was tightened because other users could read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModeTightened {
    pub path: PathBuf,
    /// The permission bits it had (e.g. `0o644`).
    pub was: u32,
    /// The permission bits it has now (`0o600`, `0o700`).
    pub now: u32,
}

impl fmt::Display for ModeTightened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} was accessible to other users (mode {:04o}); changed it to {:04o}",
            self.path.display(),
            self.was,
            self.now
        )
    }
}

/// Makes sure `path` has no permission bits for group and others, tightening it to `private`
/// when it has. `None` when it already was private (or does not exist).
pub fn tighten(path: &Path, private: u32) -> std::io::Result<Option<ModeTightened>> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let metadata = match std::fs::metadata(path) {
            Ok(metadata) => metadata,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let was = metadata.permissions().mode() & 0o7777;
        if was & 0o077 == 0 {
            return Ok(None);
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(private))?;
        Ok(Some(ModeTightened {
            path: path.to_owned(),
            was,
            now: private,
        }))
    }
    #[cfg(not(unix))]
    {
        let _ = (path, private);
        Ok(None)
    }
}

/// Creates the data dir with mode 0700 (parents it creates too), or tightens an existing one.
pub fn prepare_data_dir(dir: &Path) -> Result<Vec<ModeTightened>, super::StoreError> {
    let failed = |source: std::io::Error| super::StoreError::DataDir {
        path: dir.to_owned(),
        source,
    };
    if !dir.exists() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder.create(dir).map_err(failed)?;
    }
    Ok(tighten(dir, 0o700).map_err(failed)?.into_iter().collect())
}

/// Creates the database file with mode 0600 when it does not exist yet, and tightens it and its
/// `-wal` and `-shm` files when they do.
pub(super) fn prepare_database_files(file: &Path) -> Result<Vec<ModeTightened>, super::StoreError> {
    let failed = |path: &Path| {
        let path = path.to_owned();
        move |source: std::io::Error| super::StoreError::DataDir { path, source }
    };
    if !file.exists() {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        options.open(file).map_err(failed(file))?;
    }
    let mut fixed = Vec::new();
    for path in [
        file.to_owned(),
        with_suffix(file, "-wal"),
        with_suffix(file, "-shm"),
    ] {
        fixed.extend(tighten(&path, 0o600).map_err(failed(&path))?);
    }
    Ok(fixed)
}

fn with_suffix(file: &Path, suffix: &str) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Why a database cannot be used, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnusableDatabase {
    /// SQLite cannot write it (file mode, owner, a read-only mount).
    ReadOnly,
    /// Not a SQLite database, or a damaged one.
    Corrupt { detail: String },
    /// SQLite cannot open it at all (a missing directory, a directory in its place).
    CannotOpen { detail: String },
}

impl fmt::Display for UnusableDatabase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ReadOnly => f.write_str(
                "the database is read-only: docker-watcher must write to it. Make the file, its \
                 -wal and -shm files and the data dir writable by the user docker-watcher runs as \
                 (and the file system writable)",
            ),
            Self::Corrupt { detail } => write!(
                f,
                "this is not a docker-watcher database, or it is damaged ({detail}). Restore it \
                 from a backup, or move it (with its -wal and -shm files) aside to start with an \
                 empty database"
            ),
            Self::CannotOpen { detail } => write!(
                f,
                "cannot open the database ({detail}). Check that the data dir exists, is a \
                 directory and is writable by the user docker-watcher runs as"
            ),
        }
    }
}

impl UnusableDatabase {
    /// Recognises the SQLite errors that make a database unusable; `None` for the others.
    pub(super) fn classify(error: &sqlx::Error) -> Option<Self> {
        let sqlx::Error::Database(db) = error else {
            return None;
        };
        // SQLite reports extended result codes; the primary code is the low byte.
        let code = db.code()?.parse::<i32>().ok()? & 0xff;
        let detail = db.message().to_owned();
        match code {
            // SQLITE_READONLY, SQLITE_PERM
            8 | 3 => Some(Self::ReadOnly),
            // SQLITE_CORRUPT, SQLITE_NOTADB
            11 | 26 => Some(Self::Corrupt { detail }),
            // SQLITE_CANTOPEN
            14 => Some(Self::CannotOpen { detail }),
            _ => None,
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn a_new_data_dir_is_created_private_with_its_parents() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        assert!(prepare_data_dir(&dir).unwrap().is_empty());
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&root.path().join("a")), 0o700);
    }

    #[test]
    fn an_existing_data_dir_open_to_others_is_tightened_and_reported() {
        let root = tempfile::tempdir().unwrap();
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let fixed = prepare_data_dir(root.path()).unwrap();
        assert_eq!(fixed.len(), 1);
        assert_eq!((fixed[0].was, fixed[0].now), (0o755, 0o700));
        assert!(fixed[0].to_string().contains("mode 0755"), "{}", fixed[0]);
        assert_eq!(mode(root.path()), 0o700);
        assert!(prepare_data_dir(root.path()).unwrap().is_empty());
    }

    #[test]
    fn database_files_are_created_private_and_loose_ones_tightened() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("x.db");
        assert!(prepare_database_files(&file).unwrap().is_empty());
        assert_eq!(mode(&file), 0o600);
        let wal = root.path().join("x.db-wal");
        std::fs::write(&wal, b"").unwrap();
        std::fs::set_permissions(&wal, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        let fixed = prepare_database_files(&file).unwrap();
        assert_eq!(fixed.len(), 2, "{fixed:?}");
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(&wal), 0o600);
    }
}
