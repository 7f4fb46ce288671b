//! Storage failures. None of these is the client's fault: the HTTP layer maps
//! them all to 500 and logs the detail.

use std::fmt;
use std::path::Path;

#[derive(Debug)]
pub enum StorageError {
    /// The file could not be opened or configured.
    Open { path: String, source: rusqlite::Error },
    /// A query failed.
    Sqlite(rusqlite::Error),
    /// The read pool could not hand out a connection in time.
    Pool(String),
    /// A migration failed; the schema is unchanged.
    Migration(String),
    /// The group this write belonged to could not be committed; nothing of
    /// it was written.
    NotCommitted(String),
    /// The writer thread is gone (shut down, or died); nothing was written.
    WriterGone,
    /// A write closure panicked; its changes were rolled back.
    WritePanicked,
}

impl StorageError {
    pub fn open(path: &Path, source: rusqlite::Error) -> StorageError {
        StorageError::Open { path: path.display().to_string(), source }
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::Open { path, source } => {
                write!(f, "cannot open database {path}: {source}")
            }
            StorageError::Sqlite(e) => write!(f, "database error: {e}"),
            StorageError::Pool(e) => write!(f, "no database connection available: {e}"),
            StorageError::Migration(e) => write!(f, "migration failed: {e}"),
            StorageError::NotCommitted(e) => write!(f, "transaction not committed: {e}"),
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
