//! SQL for the `users` table (identity columns; the ledger owns `credits`).

use super::User;
use crate::domain::{Email, Role, Timestamp, UserId};
use crate::paging::{List, Page};
use crate::storage::Conn;
use rusqlite::{OptionalExtension, Row, params};

fn user_from_row(r: &Row<'_>) -> rusqlite::Result<User> {
    let role: String = r.get(2)?;
    Ok(User {
        id: r.get(0)?,
        object: "user",
        email: r.get(1)?,
        role: Role::parse(&role).unwrap_or(Role::User),
        created_at: r.get(3)?,
    })
}

/// `None` when the email is already taken.
pub fn insert(
    conn: &Conn<'_>,
    email: &Email,
    hash: &str,
    role: Role,
    now: Timestamp,
) -> rusqlite::Result<Option<UserId>> {
    let conn = conn.sqlite()?;
    let mut st = conn.prepare_cached(
        "INSERT INTO users (email, password_hash, role, created_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(email) DO NOTHING",
    )?;
    let n = st.execute(params![email.as_str(), hash, role.as_str(), now])?;
    Ok((n == 1).then(|| UserId(conn.last_insert_rowid())))
}

pub fn get_active(conn: &Conn<'_>, id: UserId) -> crate::error::Result<Option<User>> {
    let conn = conn.sqlite()?;
    let mut st =
        conn.prepare_cached("SELECT id, email, role, created_at FROM users WHERE id = ?1 AND deleted_at IS NULL")?;
    Ok(st.query_row([id], user_from_row).optional()?)
}

/// The active user with this email and their password hash.
pub fn by_email(conn: &Conn<'_>, email: &Email) -> crate::error::Result<Option<(User, String)>> {
    let conn = conn.sqlite()?;
    let mut st = conn.prepare_cached(
        "SELECT id, email, role, created_at, password_hash FROM users WHERE email = ?1 AND deleted_at IS NULL",
    )?;
    Ok(st.query_row([email.as_str()], |r| Ok((user_from_row(r)?, r.get(4)?))).optional()?)
}

/// Active users, newest first; with `email`, those whose address contains
/// it (any case).
pub fn list(conn: &Conn<'_>, email: Option<&str>, page: &Page) -> crate::error::Result<List<User>> {
    let conn = conn.sqlite()?;
    let pattern = email.map(|e| {
        let escaped = e.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
        format!("%{escaped}%")
    });
    let mut st = conn.prepare_cached(
        "SELECT id, email, role, created_at FROM users
         WHERE id < ?1 AND deleted_at IS NULL AND (?3 IS NULL OR lower(email) LIKE ?3 ESCAPE '\\')
         ORDER BY id DESC LIMIT ?2",
    )?;
    let rows = st
        .query_map(params![page.before_id(), page.fetch(), pattern], user_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(List::from_rows(rows, page))
}

/// Any user, active or deactivated, and when they were deactivated.
pub fn get_any(conn: &Conn<'_>, id: UserId) -> rusqlite::Result<Option<(User, Option<Timestamp>)>> {
    let conn = conn.sqlite()?;
    conn.prepare_cached("SELECT id, email, role, created_at, deleted_at FROM users WHERE id = ?1")?
        .query_row([id], |r| Ok((user_from_row(r)?, r.get(4)?)))
        .optional()
}

pub fn reactivate(conn: &Conn<'_>, id: UserId) -> rusqlite::Result<usize> {
    let conn = conn.sqlite()?;
    conn.execute("UPDATE users SET deleted_at = NULL WHERE id = ?1 AND deleted_at IS NOT NULL", [id])
}

pub fn deactivate(conn: &Conn<'_>, id: UserId, now: Timestamp) -> rusqlite::Result<usize> {
    let conn = conn.sqlite()?;
    conn.execute("UPDATE users SET deleted_at = ?2 WHERE id = ?1 AND deleted_at IS NULL", params![id, now])
}
