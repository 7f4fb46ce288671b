//! SQL for `files`: the kept outputs' rows.

use crate::domain::{FileId, JobId, Timestamp, UserId};
use crate::error::Result;
use crate::storage::Conn;
use rusqlite::{OptionalExtension, Row, params};

#[derive(Debug, Clone)]
pub struct FileRow {
    pub id: FileId,
    pub user: UserId,
    pub job: Option<JobId>,
    pub sha256: String,
    pub bytes: u64,
    pub content_type: String,
    pub source_url: String,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub deleted_at: Option<Timestamp>,
}

const COLUMNS: &str =
    "id, user_id, job_id, sha256, bytes, content_type, source_url, created_at, expires_at, deleted_at";

fn row(r: &Row<'_>) -> rusqlite::Result<FileRow> {
    Ok(FileRow {
        id: r.get(0)?,
        user: r.get(1)?,
        job: r.get(2)?,
        sha256: r.get(3)?,
        bytes: r.get::<_, i64>(4)?.max(0) as u64,
        content_type: r.get(5)?,
        source_url: r.get(6)?,
        created_at: r.get(7)?,
        expires_at: r.get(8)?,
        deleted_at: r.get(9)?,
    })
}

pub struct NewFile<'a> {
    pub user: UserId,
    pub job: Option<JobId>,
    pub sha256: &'a str,
    pub bytes: u64,
    pub content_type: &'a str,
    pub source_url: &'a str,
    pub expires_at: Option<Timestamp>,
}

pub fn insert(conn: &Conn<'_>, f: &NewFile<'_>, now: Timestamp) -> Result<FileId> {
    let conn = conn.sqlite()?;
    conn.prepare_cached(
        "INSERT INTO files (user_id, job_id, sha256, bytes, content_type, source_url, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![f.user, f.job, f.sha256, f.bytes as i64, f.content_type, f.source_url, now, f.expires_at])?;
    Ok(FileId(conn.last_insert_rowid()))
}

pub fn get(conn: &Conn<'_>, id: FileId) -> Result<Option<FileRow>> {
    let conn = conn.sqlite()?;
    Ok(conn.prepare_cached(&format!("SELECT {COLUMNS} FROM files WHERE id = ?1"))?.query_row([id], row).optional()?)
}

/// Bytes of every live file (the store's size limit counts these).
pub fn live_bytes(conn: &Conn<'_>) -> Result<u64> {
    let conn = conn.sqlite()?;
    Ok(conn
        .prepare_cached("SELECT COALESCE(SUM(bytes), 0) FROM files WHERE deleted_at IS NULL")?
        .query_row([], |r| r.get::<_, i64>(0))?
        .max(0) as u64)
}

/// Marks up to `limit` files past retention deleted; returns their content
/// hashes that no live row holds any more (their bytes may go).
pub fn expire(conn: &Conn<'_>, now: Timestamp, limit: usize) -> Result<Vec<String>> {
    let conn = conn.sqlite()?;
    let due: Vec<(FileId, String)> = conn
        .prepare_cached(
            "SELECT id, sha256 FROM files WHERE deleted_at IS NULL AND expires_at IS NOT NULL AND expires_at <= ?1
             ORDER BY expires_at LIMIT ?2",
        )?
        .query_map(params![now, limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut orphaned = Vec::new();
    for (id, sha) in due {
        conn.prepare_cached("UPDATE files SET deleted_at = ?2 WHERE id = ?1")?.execute(params![id, now])?;
        if !still_held(&Conn::Sqlite(conn), &sha)? {
            orphaned.push(sha);
        }
    }
    Ok(orphaned)
}

/// Whether a live row holds this content.
pub fn still_held(conn: &Conn<'_>, sha256: &str) -> Result<bool> {
    let conn = conn.sqlite()?;
    Ok(conn
        .prepare_cached("SELECT 1 FROM files WHERE sha256 = ?1 AND deleted_at IS NULL LIMIT 1")?
        .query_row([sha256], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Every live file's content hash (a backup copies these).
pub fn live_hashes(conn: &Conn<'_>) -> Result<Vec<String>> {
    let conn = conn.sqlite()?;
    Ok(conn
        .prepare("SELECT DISTINCT sha256 FROM files WHERE deleted_at IS NULL")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?)
}
