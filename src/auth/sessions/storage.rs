//! SQL for `sessions` and `refresh_tokens`.

use crate::auth::storage::Standing;
use crate::domain::{Role, Timestamp, UserId};
use crate::storage::{Conn, Sql, StorageError};
use rusqlite::params;

type Result<T> = std::result::Result<T, StorageError>;

/// A refresh token as found by its hash, with its session.
pub struct Found {
    pub token_id: i64,
    pub session: i64,
    pub user: UserId,
    pub role: Role,
    pub token_expires_at: Timestamp,
    pub retired: bool,
    pub session_revoked: bool,
    /// The user was deactivated.
    pub user_gone: bool,
}

pub fn insert_session(
    conn: &Conn<'_>,
    user: UserId,
    method: &str,
    now: Timestamp,
    expires_at: Timestamp,
) -> Result<i64> {
    conn.query_one(
        "INSERT INTO sessions (user_id, method, created_at, expires_at) VALUES (?1, ?2, ?3, ?4) RETURNING id",
        params![user, method, now, expires_at],
        |r| r.get(0),
    )
}

pub fn insert_token(conn: &Conn<'_>, session: i64, hash: &str, now: Timestamp, expires_at: Timestamp) -> Result<()> {
    conn.execute(
        "INSERT INTO refresh_tokens (session_id, token_hash, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
        params![session, hash, now, expires_at],
    )?;
    conn.execute("UPDATE sessions SET expires_at = ?2 WHERE id = ?1", params![session, expires_at])?;
    Ok(())
}

pub fn find_token(conn: &Conn<'_>, hash: &str) -> Result<Option<Found>> {
    conn.query_opt(
        "SELECT t.id, t.session_id, s.user_id, u.role, t.expires_at, t.retired_at IS NOT NULL,
                s.revoked_at IS NOT NULL, u.deleted_at IS NOT NULL
         FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id JOIN users u ON u.id = s.user_id
         WHERE t.token_hash = ?1",
        params![hash],
        |r| {
            let role: String = r.get(3)?;
            Ok(Found {
                token_id: r.get(0)?,
                session: r.get(1)?,
                user: r.get(2)?,
                role: Role::parse(&role).unwrap_or(Role::User),
                token_expires_at: r.get(4)?,
                retired: r.get(5)?,
                session_revoked: r.get(6)?,
                user_gone: r.get(7)?,
            })
        },
    )
}

/// Retires a current token; 0 when another refresh retired it first.
pub fn retire_token(conn: &Conn<'_>, token_id: i64, now: Timestamp) -> Result<usize> {
    conn.execute(
        "UPDATE refresh_tokens SET retired_at = ?2 WHERE id = ?1 AND retired_at IS NULL",
        params![token_id, now],
    )
}

pub fn revoke_session(conn: &Conn<'_>, session: i64, reason: &str, now: Timestamp) -> Result<usize> {
    conn.execute(
        "UPDATE sessions SET revoked_at = ?2, revoked_reason = ?3 WHERE id = ?1 AND revoked_at IS NULL",
        params![session, now, reason],
    )
}

/// Revokes the user's live sessions but `except`; returns how many.
pub fn revoke_user(conn: &Conn<'_>, user: UserId, except: Option<i64>, reason: &str, now: Timestamp) -> Result<usize> {
    conn.execute(
        "UPDATE sessions SET revoked_at = ?2, revoked_reason = ?3
         WHERE user_id = ?1 AND revoked_at IS NULL AND id IS DISTINCT FROM ?4",
        params![user, now, reason, except],
    )
}

/// Live sessions of a user past the newest `keep`, oldest first.
pub fn sessions_over(conn: &Conn<'_>, user: UserId, keep: u32, now: Timestamp) -> Result<Vec<i64>> {
    conn.query_all(
        Sql::each(
            "SELECT id FROM sessions WHERE user_id = ?1 AND revoked_at IS NULL AND expires_at > ?3
             ORDER BY id DESC LIMIT -1 OFFSET ?2",
            "SELECT id FROM sessions WHERE user_id = ?1 AND revoked_at IS NULL AND expires_at > ?3
             ORDER BY id DESC OFFSET ?2",
        ),
        params![user, keep, now],
        |r| r.get(0),
    )
}

/// The role of `user` if the session is theirs, live, and they are active.
pub fn live_standing(conn: &Conn<'_>, user: UserId, session: i64, now: Timestamp) -> Result<Option<Standing>> {
    conn.query_opt("SELECT u.role, u.price_group FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE s.id = ?2 AND s.user_id = ?1 AND s.revoked_at IS NULL AND s.expires_at > ?3 AND u.deleted_at IS NULL", params![user, session, now], |r| Standing::from_row(r, 0))
}

/// Deletes sessions (and their tokens) that ended before `before`.
pub fn prune(conn: &Conn<'_>, before: Timestamp) -> Result<usize> {
    let ended = "SELECT id FROM sessions WHERE expires_at < ?1 OR revoked_at < ?1";
    conn.execute(&format!("DELETE FROM refresh_tokens WHERE session_id IN ({ended})"), params![before])?;
    conn.execute(&format!("DELETE FROM sessions WHERE id IN ({ended})"), params![before])
}
