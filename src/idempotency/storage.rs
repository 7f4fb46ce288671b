//! SQL for `idempotency_keys`. The same text runs on SQLite and PostgreSQL.

use super::StoredResponse;
use crate::domain::{Timestamp, UserId};
use crate::storage::{Conn, StorageError};
use rusqlite::params;

type Result<T> = std::result::Result<T, StorageError>;

pub struct Row {
    pub fingerprint: String,
    pub created_at: Timestamp,
    pub response: Option<StoredResponse>,
}

pub fn get(conn: &Conn<'_>, user: UserId, key: &str) -> Result<Option<Row>> {
    conn.query_opt(
        "SELECT fingerprint, created_at, state, status, content_type, body FROM idempotency_keys
         WHERE user_id = ?1 AND key = ?2",
        params![user, key],
        |r| {
            let state: String = r.get(2)?;
            let response = if state == "done" {
                let status: i64 = r.get(3)?;
                let status = u16::try_from(status).map_err(|_| StorageError::Column(format!("status {status}")))?;
                Some(StoredResponse { status, content_type: r.get(4)?, body: r.get(5)? })
            } else {
                None
            };
            Ok(Row { fingerprint: r.get(0)?, created_at: r.get(1)?, response })
        },
    )
}

/// Claims the key, replacing an expired record if there is one.
pub fn claim(conn: &Conn<'_>, user: UserId, key: &str, fingerprint: &str, now: Timestamp) -> Result<()> {
    conn.execute(
        "INSERT INTO idempotency_keys (user_id, key, fingerprint, state, created_at)
         VALUES (?1, ?2, ?3, 'in_progress', ?4)
         ON CONFLICT(user_id, key) DO UPDATE SET fingerprint = excluded.fingerprint, state = 'in_progress',
             status = NULL, content_type = NULL, body = NULL, created_at = excluded.created_at",
        params![user, key, fingerprint, now],
    )?;
    Ok(())
}

pub fn complete(conn: &Conn<'_>, user: UserId, key: &str, r: &StoredResponse) -> Result<()> {
    conn.execute(
        "UPDATE idempotency_keys SET state = 'done', status = ?3, content_type = ?4, body = ?5
         WHERE user_id = ?1 AND key = ?2",
        params![user, key, r.status, r.content_type, r.body],
    )?;
    Ok(())
}

pub fn delete_in_progress(conn: &Conn<'_>, user: UserId, key: &str) -> Result<usize> {
    conn.execute(
        "DELETE FROM idempotency_keys WHERE user_id = ?1 AND key = ?2 AND state = 'in_progress'",
        params![user, key],
    )
}

pub fn any_in_progress_before(conn: &Conn<'_>, before: Timestamp) -> Result<bool> {
    conn.query_one(
        "SELECT EXISTS (SELECT 1 FROM idempotency_keys WHERE state = 'in_progress' AND created_at < ?1)",
        params![before],
        |r| r.get(0),
    )
}

pub fn delete_in_progress_before(conn: &Conn<'_>, before: Timestamp) -> Result<usize> {
    conn.execute("DELETE FROM idempotency_keys WHERE state = 'in_progress' AND created_at < ?1", params![before])
}

pub fn delete_all_in_progress(conn: &Conn<'_>) -> Result<usize> {
    conn.execute("DELETE FROM idempotency_keys WHERE state = 'in_progress'", &[])
}

/// Deletes at most `batch` records older than `cutoff`, oldest first.
pub fn delete_before(conn: &Conn<'_>, cutoff: Timestamp, batch: usize) -> Result<usize> {
    conn.execute(
        "DELETE FROM idempotency_keys WHERE (user_id, key) IN
         (SELECT user_id, key FROM idempotency_keys WHERE created_at < ?1 ORDER BY created_at LIMIT ?2)",
        params![cutoff, batch as i64],
    )
}
