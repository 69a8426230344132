//! The data dir's lock: a running server holds an exclusive `flock` on `docker-watcher.lock` in
//! its data dir for as long as it runs. The kernel drops the lock when the process ends however
//! it ends (a crash, `kill -9`), so a stale lock file never blocks anything; and it is seen
//! across containers sharing the volume. `restore` takes the same lock, so it cannot replace the
//! store under a running server, and a server cannot start in the middle of a restore; two
//! servers on one data dir are refused as well.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

/// An exclusive lock on a data dir, held until dropped.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum DataDirLockError {
    /// Another process holds the lock: a server runs on this data dir (or a restore).
    #[error(
        "{path} is locked by another process{holder}: a docker-watcher server (or a restore) is using this data dir"
    )]
    Held { path: PathBuf, holder: String },
    #[error("cannot lock {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

impl DataDirLock {
    /// The lock file's name inside the data dir.
    pub const FILE_NAME: &'static str = "docker-watcher.lock";

    /// Takes the lock without waiting; fails with [`DataDirLockError::Held`] when another
    /// process has it. Writes this process's id into the file, for the message others get.
    pub fn acquire(data_dir: &Path) -> Result<DataDirLock, DataDirLockError> {
        let path = data_dir.join(Self::FILE_NAME);
        let io = |source| DataDirLockError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path)
                    .ok()
                    .map(|pid| pid.trim().to_owned())
                    .filter(|pid| !pid.is_empty())
                    .map(|pid| format!(" (pid {pid})"))
                    .unwrap_or_default();
                return Err(DataDirLockError::Held { path, holder });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(DataDirLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_data_dir_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        let err = DataDirLock::acquire(dir.path()).unwrap_err();
        assert!(matches!(err, DataDirLockError::Held { .. }), "{err}");
        assert!(
            err.to_string().contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        DataDirLock::acquire(dir.path()).unwrap();
    }
}
