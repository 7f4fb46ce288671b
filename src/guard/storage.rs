//! SQL for `user_limits`: per-user overrides of the configured limits.
//! The same text runs on SQLite and PostgreSQL.

use super::Overrides;
use crate::domain::{Timestamp, UserId};
use crate::storage::{Conn, StorageError};
use rusqlite::params;

pub fn all_overrides(conn: &Conn<'_>) -> Result<Vec<(UserId, Overrides)>, StorageError> {
    conn.query_all("SELECT user_id, rpm, burst, max_cost_per_request, daily_cap FROM user_limits", &[], |r| {
        Ok((
            r.get(0)?,
            Overrides { rpm: r.get(1)?, burst: r.get(2)?, max_cost_per_request: r.get(3)?, daily_cap: r.get(4)? },
        ))
    })
}

pub fn put_overrides(conn: &Conn<'_>, user: UserId, o: &Overrides, now: Timestamp) -> Result<(), StorageError> {
    conn.execute(
        "INSERT INTO user_limits (user_id, rpm, burst, max_cost_per_request, daily_cap, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT(user_id) DO UPDATE SET rpm = ?2, burst = ?3, max_cost_per_request = ?4, daily_cap = ?5, updated_at = ?6",
        params![user, o.rpm, o.burst, o.max_cost_per_request, o.daily_cap, now],
    )?;
    Ok(())
}
