//! SQL for `password_resets`.

use crate::domain::{Timestamp, UserId};
use crate::storage::Conn;
use rusqlite::{OptionalExtension, params};

pub fn insert(
    conn: &Conn<'_>,
    user: UserId,
    hash: &str,
    now: Timestamp,
    expires_at: Timestamp,
) -> rusqlite::Result<()> {
    let conn = conn.sqlite()?;
    conn.prepare_cached(
        "INSERT INTO password_resets (user_id, token_hash, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![user, hash, now, expires_at])?;
    Ok(())
}

/// Tokens issued to `user` since `since`.
pub fn issued_since(conn: &Conn<'_>, user: UserId, since: Timestamp) -> rusqlite::Result<u32> {
    let conn = conn.sqlite()?;
    conn.prepare_cached("SELECT count(*) FROM password_resets WHERE user_id = ?1 AND created_at >= ?2")?
        .query_row(params![user, since], |r| r.get(0))
}

/// A token by its hash: (id, user, expires_at, used), for an active user.
pub fn find(conn: &Conn<'_>, hash: &str) -> rusqlite::Result<Option<(i64, UserId, Timestamp, bool)>> {
    let conn = conn.sqlite()?;
    conn.prepare_cached(
        "SELECT r.id, r.user_id, r.expires_at, r.used_at IS NOT NULL FROM password_resets r
         JOIN users u ON u.id = r.user_id WHERE r.token_hash = ?1 AND u.deleted_at IS NULL",
    )?
    .query_row([hash], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
    .optional()
}

/// Marks every unused token of `user` used: the one presented, and any
/// other still out (a reset ends them all).
pub fn use_all(conn: &Conn<'_>, user: UserId, now: Timestamp) -> rusqlite::Result<usize> {
    let conn = conn.sqlite()?;
    conn.prepare_cached("UPDATE password_resets SET used_at = ?2 WHERE user_id = ?1 AND used_at IS NULL")?
        .execute(params![user, now])
}

pub fn set_password(conn: &Conn<'_>, user: UserId, hash: &str) -> rusqlite::Result<usize> {
    let conn = conn.sqlite()?;
    conn.prepare_cached("UPDATE users SET password_hash = ?2 WHERE id = ?1 AND deleted_at IS NULL")?
        .execute(params![user, hash])
}

pub fn password_hash(conn: &Conn<'_>, user: UserId) -> rusqlite::Result<Option<(String, String)>> {
    let conn = conn.sqlite()?;
    conn.prepare_cached("SELECT email, password_hash FROM users WHERE id = ?1 AND deleted_at IS NULL")?
        .query_row([user], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
}

/// Deletes tokens that expired before `before`.
pub fn prune(conn: &Conn<'_>, before: Timestamp) -> rusqlite::Result<usize> {
    let conn = conn.sqlite()?;
    conn.execute("DELETE FROM password_resets WHERE expires_at < ?1", [before])
}
