//! Storage failures (beside the error floor, so that every layer can carry
//! them). None of these is the client's fault: the HTTP layer maps
//! a full disk to 507 `storage_full` and everything else to 500, and logs
//! the detail.

use std::fmt;
use std::path::Path;

#[derive(Debug)]
pub enum StorageError {
    /// The file could not be opened or configured.
    Open { path: String, source: rusqlite::Error },
    /// A query failed.
    Sqlite(rusqlite::Error),
    /// A PostgreSQL query (or the connection) failed.
    Postgres(postgres::Error),
    /// A column held a value its Rust type cannot take, or a value could
    /// not be bound: a bug in a storage module, never the client's input.
    Column(String),
    /// A statement that must return a row returned none.
    NoRow,
    /// PostgreSQL gave up on the transaction for a concurrent one, as many
    /// times as a write is tried.
    Conflict(String),
    /// The read pool could not hand out a connection in time.
    Pool(String),
    /// A migration failed; the schema is unchanged.
    Migration(String),
    /// The group this write belonged to could not be committed; nothing of
    /// it was written.
    NotCommitted(NotCommitted),
    /// The writer thread is gone (shut down, or died); nothing was written.
    WriterGone,
    /// A write closure panicked; its changes were rolled back.
    WritePanicked,
}

/// Why a group of writes was not committed.
#[derive(Debug, Clone)]
pub struct NotCommitted {
    pub reason: String,
    /// The disk (or the file system holding the database) is full.
    pub disk_full: bool,
}

impl NotCommitted {
    pub fn other(reason: &str) -> NotCommitted {
        NotCommitted { reason: reason.to_owned(), disk_full: false }
    }

    pub fn from_sqlite(e: &rusqlite::Error) -> NotCommitted {
        NotCommitted { reason: e.to_string(), disk_full: sqlite_disk_full(e) }
    }
}

/// SQLite says `SQLITE_FULL` when a write meets a full disk (its VFS maps
/// `ENOSPC` to it).
fn sqlite_disk_full(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)
}

/// How the PostgreSQL client says a wait for the server passed its bound.
const PG_SILENT: &str = "timeout waiting for server";

impl StorageError {
    pub fn open(path: &Path, source: rusqlite::Error) -> StorageError {
        StorageError::Open { path: path.display().to_string(), source }
    }

    /// The write failed because the disk is full: the client is told so
    /// (507), and the service recovers by itself once space is freed.
    pub fn is_disk_full(&self) -> bool {
        match self {
            StorageError::Sqlite(e) | StorageError::Open { source: e, .. } => sqlite_disk_full(e),
            StorageError::NotCommitted(n) => n.disk_full,
            StorageError::Postgres(e) => e.code() == Some(&postgres::error::SqlState::DISK_FULL),
            _ => false,
        }
    }

    /// PostgreSQL cancelled a statement past `database.statement_timeout_ms`
    /// or a lock wait past `database.lock_timeout_ms`: the transaction
    /// rolled back, nothing changed, and the client may retry.
    pub fn is_timeout(&self) -> bool {
        use postgres::error::SqlState;
        match self {
            StorageError::Postgres(e) => {
                matches!(e.code(), Some(c) if *c == SqlState::QUERY_CANCELED || *c == SqlState::LOCK_NOT_AVAILABLE)
            }
            _ => false,
        }
    }

    /// The database could not be reached (PostgreSQL down or restarting,
    /// the connection lost, no pooled connection in time).
    pub fn is_unavailable(&self) -> bool {
        match self {
            StorageError::Pool(_) => true,
            StorageError::Postgres(e) => {
                use postgres::error::SqlState;
                let shutting_down = matches!(e.code(), Some(c) if *c == SqlState::ADMIN_SHUTDOWN
                    || *c == SqlState::CRASH_SHUTDOWN || *c == SqlState::CANNOT_CONNECT_NOW);
                // The vendored client's wait bound (vendor/postgres/PATCHES.md)
                // passed: the server answered nothing, the connection is gone.
                let silent = e.as_db_error().is_none() && e.to_string() == PG_SILENT;
                shutting_down
                    || silent
                    || e.is_closed()
                    || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
            }
            _ => false,
        }
    }

    /// PostgreSQL gave up on the transaction because a concurrent one
    /// conflicted with it (serialization failure, deadlock): running the
    /// whole transaction again is the documented answer.
    pub fn is_retryable(&self) -> bool {
        use postgres::error::SqlState;
        match self {
            StorageError::Postgres(e) => {
                matches!(e.code(), Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED)
            }
            _ => false,
        }
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::Open { path, source } => {
                write!(f, "cannot open database {path}: {source}")
            }
            StorageError::Sqlite(e) => write!(f, "database error: {e}"),
            StorageError::Postgres(e) => match e.as_db_error() {
                Some(db) => write!(f, "database error: {} ({})", db.message(), db.code().code()),
                None => write!(f, "database error: {e}"),
            },
            StorageError::Column(e) => write!(f, "database value error: {e}"),
            StorageError::NoRow => write!(f, "database error: a statement returned no row"),
            StorageError::Conflict(e) => write!(f, "database conflict: {e}"),
            StorageError::Pool(e) => write!(f, "no database connection available: {e}"),
            StorageError::Migration(e) => write!(f, "migration failed: {e}"),
            StorageError::NotCommitted(e) => write!(f, "transaction not committed: {}", e.reason),
            StorageError::WriterGone => write!(f, "the database writer has stopped"),
            StorageError::WritePanicked => {
                write!(f, "a database write panicked and was rolled back")
            }
        }
    }
}

impl std::error::Error for StorageError {}

impl From<rusqlite::Error> for StorageError {
    fn from(e: rusqlite::Error) -> Self {
        StorageError::Sqlite(e)
    }
}

impl From<postgres::Error> for StorageError {
    fn from(e: postgres::Error) -> Self {
        StorageError::Postgres(e)
    }
}
