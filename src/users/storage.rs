//! SQL for the `users` table (identity columns; the ledger owns `credits`).
//! The same text runs on SQLite and PostgreSQL.

use super::User;
use crate::domain::{Email, Role, Timestamp, UserId};
use crate::paging::{List, Page};
use crate::storage::{Conn, Row, StorageError};
use rusqlite::params;

type Result<T> = std::result::Result<T, StorageError>;

fn user_from_row(r: &Row<'_>) -> Result<User> {
    let role: String = r.get(2)?;
    Ok(User {
        id: r.get(0)?,
        object: "user",
        email: r.get(1)?,
        role: Role::parse(&role).unwrap_or(Role::User),
        created_at: r.get(3)?,
        price_group: r.get(4)?,
    })
}

/// `None` when the email is already taken.
pub fn insert(conn: &Conn<'_>, email: &Email, hash: &str, role: Role, now: Timestamp) -> Result<Option<UserId>> {
    conn.query_opt(
        "INSERT INTO users (email, password_hash, role, created_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(email) DO NOTHING RETURNING id",
        params![email.as_str(), hash, role.as_str(), now],
        |r| r.get(0),
    )
}

pub fn get_active(conn: &Conn<'_>, id: UserId) -> Result<Option<User>> {
    conn.query_opt(
        "SELECT id, email, role, created_at, price_group FROM users WHERE id = ?1 AND deleted_at IS NULL",
        params![id],
        user_from_row,
    )
}

/// The active user with this email and their password hash.
pub fn by_email(conn: &Conn<'_>, email: &Email) -> Result<Option<(User, String)>> {
    conn.query_opt(
        "SELECT id, email, role, created_at, price_group, password_hash FROM users WHERE email = ?1 AND deleted_at IS NULL",
        params![email.as_str()],
        |r| Ok((user_from_row(r)?, r.get(5)?)),
    )
}

/// Active users, newest first; with `email`, those whose address contains
/// it (any case).
pub fn list(conn: &Conn<'_>, email: Option<&str>, page: &Page) -> Result<List<User>> {
    let pattern = email.map(|e| {
        let escaped = e.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
        format!("%{escaped}%")
    });
    let rows = conn.query_all(
        "SELECT id, email, role, created_at, price_group FROM users
         WHERE id < ?1 AND deleted_at IS NULL AND (CAST(?3 AS TEXT) IS NULL OR lower(email) LIKE ?3 ESCAPE '\\')
         ORDER BY id DESC LIMIT ?2",
        params![page.before_id(), page.fetch(), pattern],
        user_from_row,
    )?;
    Ok(List::from_rows(rows, page))
}

/// Any user, active or deactivated, and when they were deactivated.
pub fn get_any(conn: &Conn<'_>, id: UserId) -> Result<Option<(User, Option<Timestamp>)>> {
    conn.query_opt(
        "SELECT id, email, role, created_at, price_group, deleted_at FROM users WHERE id = ?1",
        params![id],
        |r| Ok((user_from_row(r)?, r.get(5)?)),
    )
}

/// Sets (or clears) the user's price group; 0 when there is no such user.
pub fn set_price_group(conn: &Conn<'_>, id: UserId, group: Option<&str>) -> Result<usize> {
    conn.execute("UPDATE users SET price_group = ?2 WHERE id = ?1", params![id, group])
}

/// Sets the user's role; 0 when there is no such user.
pub fn set_role(conn: &Conn<'_>, id: UserId, role: Role) -> Result<usize> {
    conn.execute("UPDATE users SET role = ?2 WHERE id = ?1", params![id, role.as_str()])
}

pub fn reactivate(conn: &Conn<'_>, id: UserId) -> Result<usize> {
    conn.execute("UPDATE users SET deleted_at = NULL WHERE id = ?1 AND deleted_at IS NOT NULL", params![id])
}

pub fn deactivate(conn: &Conn<'_>, id: UserId, now: Timestamp) -> Result<usize> {
    conn.execute("UPDATE users SET deleted_at = ?2 WHERE id = ?1 AND deleted_at IS NULL", params![id, now])
}
