//! SQLite-specific file operations: an online backup through SQLite's backup
//! API, integrity checks, and the lock file that marks a running server.

use super::{StorageError, schema_version};
use rusqlite::{Connection, OpenFlags};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

/// Copies the live database at `src` into a new file at `dest`, consistent
/// as of one moment, while other connections keep writing. All pages are
/// copied in one step, under one read transaction: in WAL mode that does not
/// block writers, and unlike a stepped copy it never restarts because a
/// writer changed the source.
pub fn online_copy(src: &Path, dest: &Path) -> Result<(), StorageError> {
    let from = Connection::open_with_flags(src, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|e| StorageError::open(src, e))?;
    from.busy_timeout(std::time::Duration::from_millis(super::BUSY_TIMEOUT_MS))?;
    let mut to = Connection::open(dest).map_err(|e| StorageError::open(dest, e))?;
    {
        let backup = rusqlite::backup::Backup::new(&from, &mut to)?;
        backup.step(-1)?;
    }
    // The copy is a standalone file: fold its journal into it.
    to.execute_batch("PRAGMA journal_mode=DELETE;")?;
    Ok(())
}

/// What a database file looks like from outside.
pub struct FileFacts {
    pub integrity: String,
    pub schema_version: i64,
}

/// `PRAGMA integrity_check` and the schema version of a file, opened read-only.
pub fn inspect(path: &Path) -> Result<(Connection, FileFacts), StorageError> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|e| StorageError::open(path, e))?;
    let rows: Vec<String> =
        conn.prepare("PRAGMA integrity_check")?.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    let integrity = rows.join("; ");
    let version = if integrity == "ok" { schema_version(&conn)? } else { -1 };
    Ok((conn, FileFacts { integrity, schema_version: version }))
}

pub fn count(conn: &Connection, table: &str) -> Result<i64, StorageError> {
    Ok(conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?)
}

/// The lock file beside a database: `tollgate.db` -> `tollgate.db.lock`.
pub fn lock_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

/// An exclusive advisory lock on the database's lock file, held for the
/// life of a server. The OS drops it when the process dies, even by SIGKILL.
pub struct ServerLock {
    _file: File,
}

impl ServerLock {
    /// `Ok(None)` when another process holds it.
    pub fn try_acquire(db: &Path) -> Result<Option<ServerLock>, StorageError> {
        let path = lock_path(db);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| StorageError::Pool(format!("cannot open lock file {}: {e}", path.display())))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(ServerLock { _file: file })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(StorageError::Pool(format!("cannot lock {}: {e}", path.display())))
            }
        }
    }
}
