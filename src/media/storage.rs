//! SQL for `files`: the kept outputs' rows.

use crate::domain::{FileId, JobId, Timestamp, UserId};
use crate::error::Result;
use crate::storage::{Conn, Row, StorageError};
use rusqlite::params;

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

fn row(r: &Row<'_>) -> std::result::Result<FileRow, StorageError> {
    Ok(FileRow {
        id: r.get(0)?,
        user: r.get(1)?,
        job: r.get(2)?,
        sha256: r.get(3)?,
        bytes: r.get::<i64>(4)?.max(0) as u64,
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
    Ok(conn.query_one(
        "INSERT INTO files (user_id, job_id, sha256, bytes, content_type, source_url, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING id",
        params![f.user, f.job, f.sha256, f.bytes as i64, f.content_type, f.source_url, now, f.expires_at],
        |r| r.get(0),
    )?)
}

pub fn get(conn: &Conn<'_>, id: FileId) -> Result<Option<FileRow>> {
    Ok(conn.query_opt(&format!("SELECT {COLUMNS} FROM files WHERE id = ?1"), params![id], row)?)
}

/// Bytes of every live file (the store's size limit counts these).
pub fn live_bytes(conn: &Conn<'_>) -> Result<u64> {
    Ok(conn
        .query_one("SELECT CAST(COALESCE(SUM(bytes), 0) AS BIGINT) FROM files WHERE deleted_at IS NULL", &[], |r| {
            r.get::<i64>(0)
        })?
        .max(0) as u64)
}

/// Marks up to `limit` files past retention deleted; returns their content
/// hashes that no live row holds any more (their bytes may go).
pub fn expire(conn: &Conn<'_>, now: Timestamp, limit: usize) -> Result<Vec<String>> {
    let due: Vec<(FileId, String)> = conn.query_all(
        "SELECT id, sha256 FROM files WHERE deleted_at IS NULL AND expires_at IS NOT NULL AND expires_at <= ?1
             ORDER BY expires_at LIMIT ?2",
        params![now, limit as i64],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let mut orphaned = Vec::new();
    for (id, sha) in due {
        conn.execute("UPDATE files SET deleted_at = ?2 WHERE id = ?1", params![id, now])?;
        if !still_held(conn, &sha)? {
            orphaned.push(sha);
        }
    }
    Ok(orphaned)
}

/// Whether a live row holds this content.
pub fn still_held(conn: &Conn<'_>, sha256: &str) -> Result<bool> {
    Ok(conn
        .query_opt("SELECT 1 FROM files WHERE sha256 = ?1 AND deleted_at IS NULL LIMIT 1", params![sha256], |_| Ok(()))?
        .is_some())
}

/// Every live file's content hash (a backup copies these).
pub fn live_hashes(conn: &Conn<'_>) -> Result<Vec<String>> {
    Ok(conn.query_all("SELECT DISTINCT sha256 FROM files WHERE deleted_at IS NULL", &[], |r| r.get(0))?)
}
