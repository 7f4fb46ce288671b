//! SQL for the `logs` table. Only this file knows its columns.

use super::{Level, LogEntry, LogFilter, LogType, NewLog};
use crate::domain::{LogId, Timestamp, UserId};
use crate::paging::{List, Page};
use rusqlite::{Connection, params};

pub fn insert(conn: &Connection, log: &NewLog, at: Timestamp) -> rusqlite::Result<LogId> {
    let mut st = conn.prepare_cached(
        "INSERT INTO logs (log_type, level, action, details, success, user_id, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    st.execute(params![
        log.log_type.as_str(),
        log.level.as_str(),
        log.action,
        log.details.to_string(),
        log.success,
        log.user_id,
        at
    ])?;
    Ok(LogId(conn.last_insert_rowid()))
}

pub fn list(conn: &Connection, f: &LogFilter, page: &Page) -> crate::error::Result<List<LogEntry>> {
    let mut st = conn.prepare_cached(
        "SELECT id, log_type, level, action, details, success, user_id, created_at FROM logs
         WHERE id < ?1
           AND (?2 IS NULL OR log_type = ?2)
           AND (?3 IS NULL OR level = ?3)
           AND (?4 IS NULL OR user_id = ?4)
         ORDER BY id DESC LIMIT ?5",
    )?;
    let rows = st
        .query_map(
            params![
                page.before_id(),
                f.log_type.map(LogType::as_str),
                f.level.map(Level::as_str),
                f.user_id,
                page.fetch()
            ],
            |r| {
                let log_type: String = r.get(1)?;
                let level: String = r.get(2)?;
                let details: String = r.get(4)?;
                Ok(LogEntry {
                    id: r.get(0)?,
                    object: "log",
                    log_type: LogType::parse(&log_type).unwrap_or(LogType::System),
                    level: Level::parse(&level).unwrap_or(Level::Error),
                    action: r.get(3)?,
                    details: serde_json::from_str(&details).unwrap_or(serde_json::Value::Null),
                    success: r.get(5)?,
                    user_id: r.get::<_, Option<UserId>>(6)?,
                    created_at: r.get(7)?,
                })
            },
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(List::from_rows(rows, page))
}

/// Deletes the oldest logs while they are older than `cutoff`, at most
/// `batch` of them. Ids grow with time (the one writer stamps each row as it
/// inserts it), so old rows are a prefix of the id order and the first newer
/// row ends it; a row stamped before a clock step back waits for a later
/// pass rather than a newer row going early.
pub fn delete_oldest_before(conn: &Connection, cutoff: Timestamp, batch: usize) -> rusqlite::Result<usize> {
    let mut last_old = None;
    {
        let mut st = conn.prepare_cached("SELECT id, created_at FROM logs ORDER BY id LIMIT ?1")?;
        let mut rows = st.query([batch as i64])?;
        while let Some(r) = rows.next()? {
            if r.get::<_, Timestamp>(1)? >= cutoff {
                break;
            }
            last_old = Some(r.get::<_, i64>(0)?);
        }
    }
    match last_old {
        Some(id) => conn.prepare_cached("DELETE FROM logs WHERE id <= ?1")?.execute([id]),
        None => Ok(0),
    }
}
