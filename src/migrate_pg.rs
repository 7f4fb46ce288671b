//! `tollgate migrate-to-postgres`: moves a SQLite database into an empty
//! PostgreSQL one, and proves the copy.
//!
//! The source is audited first (a database that fails its audit is not
//! moved), then copied inside one PostgreSQL transaction, and audited there
//! before the commit: the copy commits only when both audits pass and agree
//! on every user, every ledger row and the chain head (the chain's hashes
//! are recomputed from the copied rows, so an equal head proves every
//! hashed field arrived unchanged). Any difference rolls the copy back and
//! leaves PostgreSQL empty. The source is never written.
//!
//! Kept media files stay where they are: point `media.dir` at them.

use crate::ledger::audit::{self, AuditReport};
use crate::storage::backup::ServerLock;
use crate::storage::{self, Conn, Db, StorageError, Synchronous, copy};
use serde::Serialize;
use std::path::Path;

#[derive(Debug, Serialize)]
pub struct MigrationReport {
    /// Rows copied, per table.
    pub tables: Vec<(&'static str, u64)>,
    /// The audit of the PostgreSQL copy (equal to the source's).
    pub audit: AuditReport,
}

enum Refusal {
    Storage(StorageError),
    Refused(String),
}

impl From<StorageError> for Refusal {
    fn from(e: StorageError) -> Refusal {
        Refusal::Storage(e)
    }
}

impl From<crate::error::Error> for Refusal {
    fn from(e: crate::error::Error) -> Refusal {
        Refusal::Refused(e.to_string())
    }
}

/// What the two audits must agree on.
type Summary = (bool, usize, u64, Option<(i64, String)>, Option<(i64, String)>);

fn summary(r: &AuditReport) -> Summary {
    let pair = |id: i64, hash: &str| (id, hash.to_owned());
    (
        r.valid,
        r.users_checked,
        r.rows_checked,
        r.head.as_ref().map(|h| pair(h.id, &h.hash)),
        r.seal.as_ref().map(|s| pair(s.id, &s.hash)),
    )
}

pub fn migrate_to_postgres(
    from: &Path,
    to: &str,
    progress: impl FnMut(&str, u64) + Send + 'static,
) -> Result<MigrationReport, String> {
    if !from.is_file() {
        return Err(format!("no database at {}", from.display()));
    }
    // No server may write the file while it is copied.
    let _lock = ServerLock::try_acquire(from)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("a tollgate server is using {}: stop it first", from.display()))?;
    let mut source = storage::open_connection(from, Synchronous::Full).map_err(|e| e.to_string())?;
    storage::migrate(&mut source).map_err(|e| e.to_string())?;
    // One read transaction: the audit and the copy see the same rows.
    source.execute_batch("BEGIN").map_err(|e| e.to_string())?;
    let source_audit = audit::audit_in(&Conn::Sqlite(&source), None).map_err(|e| e.to_string())?;
    if !source_audit.valid {
        return Err(format!(
            "{} fails its own audit ({} mismatch(es)); nothing was copied. Run `tollgate audit` to see them.",
            from.display(),
            source_audit.mismatch_count
        ));
    }
    let target = Db::open_postgres(to).map_err(|e| e.to_string())?;
    let expected = summary(&source_audit);
    // The source connection moves into the write closure (it runs once).
    let outcome = target.write_once(move |pg| -> Result<MigrationReport, Refusal> {
        if !copy::is_empty(pg)? {
            return Err(Refusal::Refused(
                "the PostgreSQL database already holds users or ledger rows; migrate into an empty database".into(),
            ));
        }
        let tables = copy::copy_all(&Conn::Sqlite(&source), pg, progress)?;
        let copied = audit::audit_in(pg, None)?;
        if summary(&copied) != expected {
            return Err(Refusal::Refused(format!(
                "the copy's audit differs from the source's (source: {expected:?}; copy: {:?}, {} mismatch(es)); nothing was kept",
                summary(&copied),
                copied.mismatch_count
            )));
        }
        Ok(MigrationReport { tables, audit: copied })
    });
    match outcome {
        Ok(r) => Ok(r),
        Err(Refusal::Refused(m)) => Err(m),
        Err(Refusal::Storage(e)) => Err(format!("the copy failed and was rolled back: {e}")),
    }
}
