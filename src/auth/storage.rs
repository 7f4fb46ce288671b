//! SQL for `settings` and `api_keys`.

use super::key_limits::{KeyLimits, KeyTerms};
use crate::domain::{ApiKeyId, Credits, Role, Timestamp, UserId};
use crate::paging::{List, Page};
use crate::storage::{Conn, Row, StorageError};
use rusqlite::params;
use schemars::JsonSchema;
use serde::Serialize;

type Result<T> = std::result::Result<T, StorageError>;

pub fn setting(conn: &Conn<'_>, key: &str) -> Result<Option<String>> {
    conn.query_opt("SELECT value FROM settings WHERE key = ?1", params![key], |r| r.get(0))
}

/// Stores `value` unless the key exists; returns what is stored either way.
pub fn setting_init(conn: &Conn<'_>, key: &str, value: &str) -> Result<String> {
    conn.execute("INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO NOTHING", params![key, value])?;
    conn.query_one("SELECT value FROM settings WHERE key = ?1", params![key], |r| r.get(0))
}

/// An API key as the API shows it (never the key itself).
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ApiKeyView {
    pub id: ApiKeyId,
    pub object: &'static str,
    pub name: String,
    /// The first characters of the key, to recognise it in a list.
    pub prefix: String,
    pub created_at: Timestamp,
    #[serde(flatten)]
    pub limits: KeyLimits,
    /// Credits charged through this key, plus what its calls in flight hold.
    pub spent_total: Credits,
    /// The same, today (the day of the limits' `day_utc_offset_minutes`).
    pub spent_today: Credits,
}

const KEY_COLUMNS: &str = "k.id, k.name, k.key_prefix, k.created_at, k.expires_at, k.models, k.spend_limit,
     k.daily_spend_limit, k.rpm, k.spent_total, COALESCE(d.spent, 0)";

fn models_from(text: Option<String>) -> Option<Vec<String>> {
    text.and_then(|t| serde_json::from_str(&t).ok())
}

fn models_to(models: &Option<Vec<String>>) -> Option<String> {
    models.as_ref().map(|m| serde_json::Value::from(m.clone()).to_string())
}

fn view_from(r: &Row<'_>) -> Result<ApiKeyView> {
    Ok(ApiKeyView {
        id: r.get(0)?,
        object: "api_key",
        name: r.get(1)?,
        prefix: r.get(2)?,
        created_at: r.get(3)?,
        limits: KeyLimits {
            expires_at: r.get(4)?,
            models: models_from(r.get(5)?),
            spend_limit: r.get(6)?,
            daily_spend_limit: r.get(7)?,
            rpm: r.get(8)?,
        },
        spent_total: r.get(9)?,
        spent_today: r.get(10)?,
    })
}

pub fn insert_key(
    conn: &Conn<'_>,
    user: UserId,
    name: &str,
    hash: &str,
    prefix: &str,
    limits: &KeyLimits,
    now: Timestamp,
) -> Result<ApiKeyId> {
    conn.query_one(
        "INSERT INTO api_keys (user_id, name, key_hash, key_prefix, created_at, expires_at, models, spend_limit,
             daily_spend_limit, rpm)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) RETURNING id",
        params![
            user,
            name,
            hash,
            prefix,
            now,
            limits.expires_at,
            models_to(&limits.models),
            limits.spend_limit,
            limits.daily_spend_limit,
            limits.rpm,
        ],
        |r| r.get(0),
    )
}

/// The user's live key, with today's spend (`day`).
pub fn get_key(conn: &Conn<'_>, user: UserId, id: ApiKeyId, day: i64) -> Result<Option<ApiKeyView>> {
    conn.query_opt(
        &format!(
            "SELECT {KEY_COLUMNS} FROM api_keys k LEFT JOIN api_key_daily_spend d ON d.api_key_id = k.id AND d.day = ?3
         WHERE k.id = ?1 AND k.user_id = ?2 AND k.revoked_at IS NULL"
        ),
        params![id, user, day],
        view_from,
    )
}

pub fn update_key(conn: &Conn<'_>, user: UserId, id: ApiKeyId, name: &str, limits: &KeyLimits) -> Result<usize> {
    conn.execute("UPDATE api_keys SET name = ?3, expires_at = ?4, models = ?5, spend_limit = ?6, daily_spend_limit = ?7, rpm = ?8
         WHERE id = ?1 AND user_id = ?2 AND revoked_at IS NULL", params![
        id,
        user,
        name,
        limits.expires_at,
        models_to(&limits.models),
        limits.spend_limit,
        limits.daily_spend_limit,
        limits.rpm
    ])
}

pub fn list_keys(conn: &Conn<'_>, user: UserId, page: &Page, day: i64) -> Result<List<ApiKeyView>> {
    let rows = conn.query_all(
        &format!(
            "SELECT {KEY_COLUMNS} FROM api_keys k LEFT JOIN api_key_daily_spend d ON d.api_key_id = k.id AND d.day = ?4
             WHERE k.user_id = ?1 AND k.revoked_at IS NULL AND k.id < ?2 ORDER BY k.id DESC LIMIT ?3"
        ),
        params![user, page.before_id(), page.fetch(), day],
        view_from,
    )?;
    Ok(List::from_rows(rows, page))
}

/// Revokes the user's own key; 0 rows when it is not theirs or already revoked.
pub fn revoke_key(conn: &Conn<'_>, user: UserId, id: ApiKeyId, now: Timestamp) -> Result<usize> {
    conn.execute(
        "UPDATE api_keys SET revoked_at = ?3 WHERE id = ?1 AND user_id = ?2 AND revoked_at IS NULL",
        params![id, user, now],
    )
}

/// The active user (and their role) behind a live key, and the key's terms.
/// The user behind an unrevoked key of an active user: who, their role and
/// price group, and the key's terms.
pub fn user_by_key_hash(conn: &Conn<'_>, hash: &str) -> Result<Option<(UserId, Standing, KeyTerms)>> {
    conn.query_opt(
        "SELECT u.id, u.role, u.price_group, k.id, k.expires_at, k.models, k.rpm FROM api_keys k
         JOIN users u ON u.id = k.user_id WHERE k.key_hash = ?1 AND k.revoked_at IS NULL AND u.deleted_at IS NULL",
        params![hash],
        |r| {
            let terms =
                KeyTerms { id: r.get(3)?, expires_at: r.get(4)?, models: models_from(r.get(5)?), rpm: r.get(6)? };
            Ok((r.get(0)?, Standing::from_row(r, 1)?, terms))
        },
    )
}

/// What authentication reads of an active user besides who they are: their
/// role and their price group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    pub role: Role,
    pub price_group: Option<String>,
}

impl Standing {
    /// From columns `at` (`role`) and `at + 1` (`price_group`).
    pub fn from_row(r: &Row<'_>, at: usize) -> Result<Standing> {
        let role: String = r.get(at)?;
        Ok(Standing { role: Role::parse(&role).unwrap_or(Role::User), price_group: r.get(at + 1)? })
    }
}

/// The price group of a user, if they have one.
pub fn price_group(conn: &Conn<'_>, user: UserId) -> Result<Option<String>> {
    Ok(conn
        .query_opt("SELECT price_group FROM users WHERE id = ?1", params![user], |r| r.get::<Option<String>>(0))?
        .flatten())
}

/// The role of an active user, for a verified JWT.
pub fn active_standing(conn: &Conn<'_>, user: UserId) -> Result<Option<Standing>> {
    conn.query_opt("SELECT role, price_group FROM users WHERE id = ?1 AND deleted_at IS NULL", params![user], |r| {
        Standing::from_row(r, 0)
    })
}
