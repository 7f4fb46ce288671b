//! Operating the one file: online backup, rotating backups, restore.
//!
//! A backup is a consistent copy taken through SQLite's backup API while the
//! server keeps writing, then checked (integrity, ledger audit) before it is
//! given its final name. A restore refuses a file that is corrupt, from a
//! newer schema, or fails the audit (unless forced), and refuses while a
//! server holds the database; it keeps the replaced file as
//! `*.pre-restore-<time>` (one per restore, never overwritten).
//! Every backup gets a `FILE.sha256` beside it; restore verifies it when it
//! is there, because `PRAGMA integrity_check` checks structure, not content,
//! and a flipped byte inside a row can pass it.
//! A backup also holds the media store's kept files that its database
//! references, in `FILE.media/` beside it, laid out as the live store
//! (`<2 hex>/<sha256>`; hard links where the file system allows, copies
//! otherwise), each checked against its SHA-256 (its name). Restore checks
//! them again and copies them into the live store.
//! Nothing here runs inside the server's writer: these are whole-file steps.

use crate::ledger::audit::{self, AuditReport};
use crate::storage::backup::{self as files, ServerLock};
use crate::storage::{self, Synchronous};
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Serialize)]
pub struct BackupReport {
    pub path: PathBuf,
    pub bytes: u64,
    pub integrity: String,
    pub schema_version: i64,
    pub users: i64,
    pub ledger_rows: i64,
    pub audit: AuditReport,
    /// Kept media files in the backup, and their bytes.
    pub media_files: usize,
    pub media_bytes: u64,
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// The media folder that belongs to a database or backup file.
pub fn media_beside(file: &Path) -> PathBuf {
    with_suffix(file, ".media")
}

/// Copies the live database at `db` to `dest` (which must not exist), and
/// the media it references from `media` into `dest.media/`.
pub fn backup(db: &Path, media: &Path, dest: &Path) -> Result<BackupReport, String> {
    if !db.exists() {
        return Err(format!("no database at {}", db.display()));
    }
    if dest.exists() {
        return Err(format!("{} already exists; choose a new file name", dest.display()));
    }
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        return Err(format!("the folder {} does not exist; create it first (mkdir -p)", dir.display()));
    }
    let partial = with_suffix(dest, ".partial");
    let _ = std::fs::remove_file(&partial);
    files::online_copy(db, &partial).map_err(|e| format!("backup failed: {e}"))?;
    let (report, hashes) = check_copy(&partial).inspect_err(|_| {
        let _ = std::fs::remove_file(&partial);
    })?;
    let digest = file_sha256(&partial)?;
    let name = dest.file_name().and_then(|n| n.to_str()).unwrap_or("backup");
    std::fs::write(sidecar(dest), format!("{digest}  {name}\n"))
        .map_err(|e| format!("cannot write the checksum: {e}"))?;
    let (media_files, media_bytes) = copy_media(&hashes, media, &media_beside(dest)).inspect_err(|_| {
        let _ = std::fs::remove_file(&partial);
        let _ = std::fs::remove_file(sidecar(dest));
    })?;
    std::fs::rename(&partial, dest).map_err(|e| format!("cannot move the backup into place: {e}"))?;
    let bytes = std::fs::metadata(dest).map(|m| m.len()).unwrap_or(0);
    Ok(BackupReport { path: dest.to_path_buf(), bytes, media_files, media_bytes, ..report })
}

/// Copies the kept files with these hashes (the ones a database references)
/// from the store `from` into `to` (same layout), checking each copy's
/// SHA-256. A file already in `to` with the right hash is kept as it is.
fn copy_media(hashes: &[String], from: &Path, to: &Path) -> Result<(usize, u64), String> {
    let mut bytes = 0;
    for sha in hashes {
        let (src, dst) = (crate::media::content_path(from, sha), crate::media::content_path(to, sha));
        if !(dst.exists() && file_sha256(&dst).as_deref() == Ok(sha.as_str())) {
            if let Some(dir) = dst.parent() {
                std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            }
            let _ = std::fs::remove_file(&dst);
            if std::fs::hard_link(&src, &dst).is_err() {
                std::fs::copy(&src, &dst).map_err(|e| format!("kept file {} cannot be copied: {e}", src.display()))?;
            }
            let actual = file_sha256(&dst)?;
            if actual != *sha {
                let _ = std::fs::remove_file(&dst);
                return Err(format!("kept file {} does not match its checksum (it is damaged)", src.display()));
            }
        }
        bytes += std::fs::metadata(&dst).map(|m| m.len()).unwrap_or(0);
    }
    Ok((hashes.len(), bytes))
}

fn sidecar(file: &Path) -> PathBuf {
    with_suffix(file, ".sha256")
}

fn file_sha256(path: &Path) -> Result<String, String> {
    use sha2::{Digest, Sha256};
    let mut f = std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(crate::support::token::hex(&h.finalize()))
}

/// Checks a fresh copy (integrity, audit) and reads what it references of
/// the media store, on one connection: the integrity check reads every page.
fn check_copy(path: &Path) -> Result<(BackupReport, Vec<String>), String> {
    let (conn, facts) = files::inspect(path).map_err(|e| format!("cannot read the copy: {e}"))?;
    if facts.integrity != "ok" {
        return Err(format!("the copy fails the integrity check: {}", facts.integrity));
    }
    let count = |t| files::count(&conn, t).map_err(|e| e.to_string());
    let audit =
        audit::audit(&crate::storage::Conn::Sqlite(&conn), None).map_err(|e| format!("cannot audit the copy: {e}"))?;
    let hashes = crate::media::storage::live_hashes(&crate::storage::Conn::Sqlite(&conn))
        .map_err(|e| format!("cannot read the copy's files: {e}"))?;
    let report = BackupReport {
        path: path.to_path_buf(),
        bytes: 0,
        integrity: facts.integrity,
        schema_version: facts.schema_version,
        users: count("users")?,
        ledger_rows: count("credit_transactions")?,
        audit,
        media_files: 0,
        media_bytes: 0,
    };
    Ok((report, hashes))
}

/// Writes `dir/tollgate-<timestamp>.db` (and its `.media/`) and keeps the
/// newest `keep`.
pub fn rotate(db: &Path, media: &Path, dir: &Path, keep: usize) -> Result<BackupReport, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let report = backup(db, media, &dir.join(format!("tollgate-{}.db", file_stamp())))?;
    let mut existing: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("tollgate-") && n.ends_with(".db"))
        })
        .collect();
    existing.sort();
    let excess = existing.len().saturating_sub(keep.max(1));
    for old in &existing[..excess] {
        if let Err(e) = std::fs::remove_file(old) {
            log::warn!("cannot remove old backup {}: {e}", old.display());
        }
        let _ = std::fs::remove_file(sidecar(old));
        let _ = std::fs::remove_dir_all(media_beside(old));
    }
    Ok(report)
}

#[derive(Debug, Serialize)]
pub struct RestoreReport {
    pub restored_from: PathBuf,
    pub previous_kept_as: Option<PathBuf>,
    pub schema_version_before_migration: i64,
    pub migrations_applied: usize,
    /// Kept media files checked and put into the live store.
    pub media_files: usize,
}

/// Now, for file names: `20261125T170102123Z`.
fn file_stamp() -> String {
    crate::domain::Timestamp::now().rfc3339().replace([':', '-', '.'], "")
}

/// A name beside `db` for the copy kept before a restore, never one in use:
/// every restore keeps its own safety copy.
fn pre_restore_path(db: &Path) -> PathBuf {
    let base = with_suffix(db, &format!(".pre-restore-{}", file_stamp()));
    (1..)
        .map(|n| if n == 1 { base.clone() } else { with_suffix(&base, &format!("-{n}")) })
        .find(|p| !p.exists())
        .unwrap_or(base)
}

/// Replaces the database at `db` with `file`, and puts the media the backup
/// holds (`file.media/`, each checked) into the store at `media`.
pub fn restore(db: &Path, media: &Path, file: &Path, force: bool) -> Result<RestoreReport, String> {
    let lock = ServerLock::try_acquire(db).map_err(|e| e.to_string())?.ok_or_else(|| {
        format!(
            "a tollgate server is using {} (it holds {}); stop it before restoring",
            db.display(),
            files::lock_path(db).display()
        )
    })?;
    if !file.exists() {
        return Err(format!("no file at {}", file.display()));
    }
    let untouched = "the live database was not touched";
    if file.extension().is_some_and(|e| e == "partial") && !force {
        return Err(format!(
            "{} is an unfinished backup (a killed `tollgate backup` leaves a .partial file); pass --force to restore it anyway; {untouched}",
            file.display()
        ));
    }
    match std::fs::read_to_string(sidecar(file)) {
        Ok(line) => {
            let expected = line.split_whitespace().next().unwrap_or("").to_ascii_lowercase();
            let actual = file_sha256(file)?;
            if expected != actual {
                return Err(format!(
                    "{} does not match its checksum in {} (the file changed or is damaged); {untouched}",
                    file.display(),
                    sidecar(file).display()
                ));
            }
        }
        Err(_) => {
            log::warn!("{} has no .sha256 beside it; relying on the integrity check and the audit", file.display())
        }
    }
    let (conn, facts) = files::inspect(file)
        .map_err(|e| format!("{} is not a readable SQLite database ({e}); {untouched}", file.display()))?;
    if facts.integrity != "ok" {
        return Err(format!("{} fails the integrity check ({}); {untouched}", file.display(), facts.integrity));
    }
    let max = storage::schema_version_max();
    if facts.schema_version == 0 {
        return Err(format!("{} is not a tollgate database (no schema history); {untouched}", file.display()));
    }
    if facts.schema_version > max {
        return Err(format!(
            "{} has schema version {}, newer than this binary's {max}; upgrade tollgate first; {untouched}",
            file.display(),
            facts.schema_version
        ));
    }
    let report = audit::audit(&crate::storage::Conn::Sqlite(&conn), None)
        .map_err(|e| format!("cannot audit {}: {e}; {untouched}", file.display()))?;
    let hashes = crate::media::storage::live_hashes(&crate::storage::Conn::Sqlite(&conn))
        .map_err(|e| format!("cannot read {}'s files: {e}; {untouched}", file.display()))?;
    drop(conn);
    if !report.valid && !force {
        return Err(format!(
            "{} fails the ledger audit ({} mismatch(es), first: {}); pass --force to restore it anyway; {untouched}",
            file.display(),
            report.mismatch_count,
            report.mismatches.first().and_then(|m| serde_json::to_string(m).ok()).unwrap_or_default()
        ));
    }
    // Media before the database: a backup whose files are missing or
    // damaged is refused before the live database changes (copying into the
    // store only adds content-addressed files, which nothing live can mind).
    let media_files = match copy_media(&hashes, &media_beside(file), media) {
        Ok((n, _)) => n,
        Err(e) if force => {
            log::warn!("restoring without all kept media: {e}");
            0
        }
        Err(e) => return Err(format!("{e}; pass --force to restore without it; {untouched}")),
    };
    let previous = if db.exists() {
        let pre = pre_restore_path(db);
        let tmp = with_suffix(&pre, ".partial");
        let _ = std::fs::remove_file(&tmp);
        files::online_copy(db, &tmp).map_err(|e| format!("cannot keep the current database: {e}; {untouched}"))?;
        std::fs::rename(&tmp, &pre).map_err(|e| format!("cannot keep the current database: {e}; {untouched}"))?;
        Some(pre)
    } else {
        None
    };
    let incoming = with_suffix(db, ".restoring");
    std::fs::copy(file, &incoming).map_err(|e| format!("cannot copy {}: {e}", file.display()))?;
    // The old file's WAL must not be replayed into the new one.
    for side in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(with_suffix(db, side));
    }
    std::fs::rename(&incoming, db).map_err(|e| format!("cannot move the restored file into place: {e}"))?;
    let mut conn = storage::open_connection(db, Synchronous::Full).map_err(|e| e.to_string())?;
    let applied = storage::migrate(&mut conn).map_err(|e| e.to_string())?;
    drop(lock);
    Ok(RestoreReport {
        restored_from: file.to_path_buf(),
        previous_kept_as: previous,
        schema_version_before_migration: facts.schema_version,
        migrations_applied: applied,
        media_files,
    })
}
