//! SQL for `idempotency_keys`.

use super::StoredResponse;
use crate::domain::{Timestamp, UserId};
use crate::storage::Conn;
use rusqlite::{OptionalExtension, params};

pub struct Row {
    pub fingerprint: String,
    pub created_at: Timestamp,
    pub response: Option<StoredResponse>,
}

pub fn get(conn: &Conn<'_>, user: UserId, key: &str) -> rusqlite::Result<Option<Row>> {
    let conn = conn.sqlite()?;
    conn.prepare_cached(
        "SELECT fingerprint, created_at, state, status, content_type, body FROM idempotency_keys
         WHERE user_id = ?1 AND key = ?2",
    )?
    .query_row(params![user, key], |r| {
        let state: String = r.get(2)?;
        let response = if state == "done" {
            Some(StoredResponse { status: r.get::<_, i64>(3)? as u16, content_type: r.get(4)?, body: r.get(5)? })
        } else {
            None
        };
        Ok(Row { fingerprint: r.get(0)?, created_at: r.get(1)?, response })
    })
    .optional()
}

/// Claims the key, replacing an expired record if there is one.
pub fn claim(conn: &Conn<'_>, user: UserId, key: &str, fingerprint: &str, now: Timestamp) -> rusqlite::Result<()> {
    let conn = conn.sqlite()?;
    conn.prepare_cached(
        "INSERT OR REPLACE INTO idempotency_keys (user_id, key, fingerprint, state, created_at)
         VALUES (?1, ?2, ?3, 'in_progress', ?4)",
    )?
    .execute(params![user, key, fingerprint, now])?;
    Ok(())
}

pub fn complete(conn: &Conn<'_>, user: UserId, key: &str, r: &StoredResponse) -> rusqlite::Result<()> {
    let conn = conn.sqlite()?;
    conn.prepare_cached(
        "UPDATE idempotency_keys SET state = 'done', status = ?3, content_type = ?4, body = ?5
         WHERE user_id = ?1 AND key = ?2",
    )?
    .execute(params![user, key, r.status, r.content_type, r.body])?;
    Ok(())
}

pub fn delete_in_progress(conn: &Conn<'_>, user: UserId, key: &str) -> rusqlite::Result<usize> {
    let conn = conn.sqlite()?;
    conn.execute(
        "DELETE FROM idempotency_keys WHERE user_id = ?1 AND key = ?2 AND state = 'in_progress'",
        params![user, key],
    )
}

pub fn delete_all_in_progress(conn: &Conn<'_>) -> rusqlite::Result<usize> {
    let conn = conn.sqlite()?;
    conn.execute("DELETE FROM idempotency_keys WHERE state = 'in_progress'", [])
}

/// Deletes at most `batch` records older than `cutoff`, oldest first.
pub fn delete_before(conn: &Conn<'_>, cutoff: Timestamp, batch: usize) -> rusqlite::Result<usize> {
    let conn = conn.sqlite()?;
    conn.prepare_cached(
        "DELETE FROM idempotency_keys WHERE (user_id, key) IN
         (SELECT user_id, key FROM idempotency_keys WHERE created_at < ?1 ORDER BY created_at LIMIT ?2)",
    )?
    .execute(rusqlite::params![cutoff, batch as i64])
}
