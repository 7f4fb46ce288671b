//! SQL for `settings` and `api_keys`.

use crate::domain::{ApiKeyId, Role, Timestamp, UserId};
use crate::paging::{List, Page};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

pub fn setting(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| r.get(0)).optional()
}

/// Stores `value` unless the key exists; returns what is stored either way.
pub fn setting_init(conn: &Connection, key: &str, value: &str) -> rusqlite::Result<String> {
    conn.execute("INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO NOTHING", [key, value])?;
    conn.query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| r.get(0))
}

#[derive(Debug, Clone, Serialize)]
pub struct ApiKeyView {
    pub id: ApiKeyId,
    pub object: &'static str,
    pub name: String,
    /// The first characters of the key, to recognise it in a list.
    pub prefix: String,
    pub created_at: Timestamp,
}

pub fn insert_key(
    conn: &Connection,
    user: UserId,
    name: &str,
    hash: &str,
    prefix: &str,
    now: Timestamp,
) -> rusqlite::Result<ApiKeyId> {
    conn.prepare_cached(
        "INSERT INTO api_keys (user_id, name, key_hash, key_prefix, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![user, name, hash, prefix, now])?;
    Ok(ApiKeyId(conn.last_insert_rowid()))
}

pub fn list_keys(conn: &Connection, user: UserId, page: &Page) -> rusqlite::Result<List<ApiKeyView>> {
    let mut st = conn.prepare_cached(
        "SELECT id, name, key_prefix, created_at FROM api_keys
         WHERE user_id = ?1 AND revoked_at IS NULL AND id < ?2 ORDER BY id DESC LIMIT ?3",
    )?;
    let rows = st
        .query_map(params![user, page.before_id(), page.fetch()], |r| {
            Ok(ApiKeyView {
                id: r.get(0)?,
                object: "api_key",
                name: r.get(1)?,
                prefix: r.get(2)?,
                created_at: r.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(List::from_rows(rows, page))
}

/// Revokes the user's own key; 0 rows when it is not theirs or already revoked.
pub fn revoke_key(conn: &Connection, user: UserId, id: ApiKeyId, now: Timestamp) -> rusqlite::Result<usize> {
    conn.execute(
        "UPDATE api_keys SET revoked_at = ?3 WHERE id = ?1 AND user_id = ?2 AND revoked_at IS NULL",
        params![id, user, now],
    )
}

/// The active user (and their role) behind a live key.
pub fn user_by_key_hash(conn: &Connection, hash: &str) -> rusqlite::Result<Option<(UserId, Role, ApiKeyId)>> {
    conn.prepare_cached(
        "SELECT u.id, u.role, k.id FROM api_keys k JOIN users u ON u.id = k.user_id
         WHERE k.key_hash = ?1 AND k.revoked_at IS NULL AND u.deleted_at IS NULL",
    )?
    .query_row([hash], |r| {
        let role: String = r.get(1)?;
        Ok((r.get(0)?, Role::parse(&role).unwrap_or(Role::User), r.get(2)?))
    })
    .optional()
}

/// The role of an active user, for a verified JWT.
pub fn active_role(conn: &Connection, user: UserId) -> rusqlite::Result<Option<Role>> {
    conn.prepare_cached("SELECT role FROM users WHERE id = ?1 AND deleted_at IS NULL")?
        .query_row([user], |r| r.get::<_, String>(0))
        .optional()
        .map(|o| o.and_then(|s| Role::parse(&s)))
}
