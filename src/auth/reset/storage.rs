//! SQL for `password_resets`.

use crate::domain::{Timestamp, UserId};
use crate::storage::{Conn, StorageError};
use rusqlite::params;

type Result<T> = std::result::Result<T, StorageError>;

pub fn insert(conn: &Conn<'_>, user: UserId, hash: &str, now: Timestamp, expires_at: Timestamp) -> Result<()> {
    conn.execute(
        "INSERT INTO password_resets (user_id, token_hash, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
        params![user, hash, now, expires_at],
    )?;
    Ok(())
}

/// Tokens issued to `user` since `since`.
pub fn issued_since(conn: &Conn<'_>, user: UserId, since: Timestamp) -> Result<u32> {
    conn.query_one(
        "SELECT count(*) FROM password_resets WHERE user_id = ?1 AND created_at >= ?2",
        params![user, since],
        |r| r.get(0),
    )
}

/// A token by its hash: (id, user, expires_at, used), for an active user.
pub fn find(conn: &Conn<'_>, hash: &str) -> Result<Option<(i64, UserId, Timestamp, bool)>> {
    conn.query_opt(
        "SELECT r.id, r.user_id, r.expires_at, r.used_at IS NOT NULL FROM password_resets r
         JOIN users u ON u.id = r.user_id WHERE r.token_hash = ?1 AND u.deleted_at IS NULL",
        params![hash],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )
}

/// Marks every unused token of `user` used: the one presented, and any
/// other still out (a reset ends them all).
pub fn use_all(conn: &Conn<'_>, user: UserId, now: Timestamp) -> Result<usize> {
    conn.execute("UPDATE password_resets SET used_at = ?2 WHERE user_id = ?1 AND used_at IS NULL", params![user, now])
}

pub fn set_password(conn: &Conn<'_>, user: UserId, hash: &str) -> Result<usize> {
    conn.execute("UPDATE users SET password_hash = ?2 WHERE id = ?1 AND deleted_at IS NULL", params![user, hash])
}

pub fn password_hash(conn: &Conn<'_>, user: UserId) -> Result<Option<(String, String)>> {
    conn.query_opt("SELECT email, password_hash FROM users WHERE id = ?1 AND deleted_at IS NULL", params![user], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })
}

/// Deletes tokens that expired before `before`.
pub fn prune(conn: &Conn<'_>, before: Timestamp) -> Result<usize> {
    conn.execute("DELETE FROM password_resets WHERE expires_at < ?1", params![before])
}
