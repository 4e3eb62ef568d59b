//! One process at a time creates and migrates an SQLite file.
//!
//! sqlx's SQLite migrator takes no lock (its `lock` is a no-op on SQLite). Two processes starting
//! on a fresh file — two workers, a worker and `quire submit` — both find migration 1 unapplied,
//! and the slower one fails on a table the faster one just created, or on the primary key of
//! `_sqlx_migrations`. An advisory lock on a file beside the database (`quire.db-migrate.lock`,
//! next to SQLite's own `-wal` and `-shm`) makes them take turns: the second finds every migration
//! applied and applies none.
//!
//! The lock is the operating system's (`flock` on Unix), so it is released when its holder
//! exits, however it exits. The file itself is never removed: a process that removed it while
//! another waited on it would let a third lock a new file of the same name at the same time.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use crate::error::{StoreError, StoreResult};

/// Held while the database is created and migrated; dropping it lets the next process in.
#[derive(Debug)]
pub(super) struct MigrationLock {
    /// The locked file; closing it releases the lock.
    _file: File,
}

impl MigrationLock {
    /// [`MigrationLock::acquire`] for a database file; nothing for one in memory.
    pub(super) async fn acquire_for(database: Option<&Path>) -> StoreResult<Option<MigrationLock>> {
        match database {
            Some(database) => Ok(Some(MigrationLock::acquire(database).await?)),
            None => Ok(None),
        }
    }

    /// Waits until no other process migrates the database at `database`, then holds the lock.
    pub(super) async fn acquire(database: &Path) -> StoreResult<MigrationLock> {
        let path = lock_path(database);
        let locked = path.clone();
        // `lock` blocks until the holder lets go, so it waits off the async threads.
        let taken = tokio::task::spawn_blocking(move || {
            let file = OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&locked)?;
            file.lock()?;
            Ok(file)
        })
        .await;
        match taken.unwrap_or_else(|join| Err(std::io::Error::other(join))) {
            Ok(file) => Ok(MigrationLock { _file: file }),
            Err(source) => Err(StoreError::MigrationLock { path, source }),
        }
    }
}

/// `DATABASE-migrate.lock`, beside the database file.
pub(super) fn lock_path(database: &Path) -> PathBuf {
    let mut name = OsString::from(database.as_os_str());
    name.push("-migrate.lock");
    PathBuf::from(name)
}

/// Whether a `sqlite:` URL names an in-memory database, which no other process can open and so
/// needs no lock (and has no directory to put one in).
pub(super) fn is_in_memory(url: &str) -> bool {
    let (database, query) = url.split_once('?').unwrap_or((url, ""));
    database.ends_with(":memory:") || query.split('&').any(|pair| pair == "mode=memory")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_file_sits_beside_the_database() {
        assert_eq!(lock_path(Path::new("/var/lib/quire/quire.db")), Path::new("/var/lib/quire/quire.db-migrate.lock"));
    }

    #[test]
    fn in_memory_urls_need_no_lock() {
        assert!(is_in_memory("sqlite::memory:"));
        assert!(is_in_memory("sqlite://whatever?mode=memory&cache=shared"));
        assert!(!is_in_memory("sqlite:///var/lib/quire/quire.db"));
        assert!(!is_in_memory("sqlite://quire.db?mode=rwc"));
    }
}
