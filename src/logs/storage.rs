//! SQL for the `logs` table. Only this file knows its columns. The same
//! text runs on SQLite and PostgreSQL.

use super::{Level, LogEntry, LogFilter, LogType, NewLog};
use crate::domain::{LogId, Timestamp, UserId};
use crate::paging::{List, Page};
use crate::storage::{Conn, StorageError};
use rusqlite::params;

pub fn insert(conn: &Conn<'_>, log: &NewLog, at: Timestamp) -> Result<LogId, StorageError> {
    conn.query_one(
        "INSERT INTO logs (log_type, level, action, details, success, user_id, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING id",
        params![
            log.log_type.as_str(),
            log.level.as_str(),
            log.action,
            log.details.to_string(),
            log.success,
            log.user_id,
            at
        ],
        |r| r.get(0),
    )
}

/// The indexed term of a filter's query: a business log has no entry in a
/// (type, level) index unless it is a warning or an error (migration V13),
/// so each filter names the index that holds what it asks for. A filter no
/// index narrows reads newest first by id, which is dense for the common
/// filters (everything, business logs).
fn narrowing(f: &LogFilter) -> &'static str {
    match (f.user_id, f.log_type, f.level) {
        (Some(_), _, _) => "user_id = ?4 AND",
        (None, Some(LogType::System), Some(_)) => "log_type = 'system' AND level = ?3 AND",
        (None, Some(LogType::System), None) => "log_type = 'system' AND",
        (None, Some(LogType::Business), Some(Level::Warn | Level::Error)) => {
            "log_type = 'business' AND level <> 'info' AND level = ?3 AND"
        }
        _ => "",
    }
}

/// Every filter's statement binds the same five parameters, so the
/// `?x IS NULL OR` terms stay beside the narrowing term (one of them then
/// repeats it, which costs SQLite nothing).
fn list_sql(f: &LogFilter) -> String {
    format!(
        "SELECT id, log_type, level, action, details, success, user_id, created_at FROM logs
         WHERE {} id < ?1
           AND (CAST(?2 AS TEXT) IS NULL OR log_type = ?2)
           AND (CAST(?3 AS TEXT) IS NULL OR level = ?3)
           AND (CAST(?4 AS BIGINT) IS NULL OR user_id = ?4)
         ORDER BY id DESC LIMIT ?5",
        narrowing(f)
    )
}

pub fn list(conn: &Conn<'_>, f: &LogFilter, page: &Page) -> Result<List<LogEntry>, StorageError> {
    let rows = conn.query_all(
        &list_sql(f),
        params![page.before_id(), f.log_type.map(LogType::as_str), f.level.map(Level::as_str), f.user_id, page.fetch()],
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
                user_id: r.get::<Option<UserId>>(6)?,
                created_at: r.get(7)?,
            })
        },
    )?;
    Ok(List::from_rows(rows, page))
}

/// Deletes the oldest logs while they are older than `cutoff`, at most
/// `batch` of them. Ids grow with time (the one writer stamps each row as it
/// inserts it), so old rows are a prefix of the id order and the first newer
/// row ends it; a row stamped before a clock step back waits for a later
/// pass rather than a newer row going early.
pub fn delete_oldest_before(conn: &Conn<'_>, cutoff: Timestamp, batch: usize) -> Result<usize, StorageError> {
    let oldest: Vec<(i64, Timestamp)> =
        conn.query_all("SELECT id, created_at FROM logs ORDER BY id LIMIT ?1", params![batch as i64], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    let last_old = oldest.iter().take_while(|(_, at)| *at < cutoff).last().map(|(id, _)| *id);
    match last_old {
        Some(id) => conn.execute("DELETE FROM logs WHERE id <= ?1", params![id]),
        None => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    use super::{LogFilter, list_sql};
    use crate::domain::UserId;
    use crate::logs::{Level, LogType};

    /// Each admin filter reads through the index meant for it, not a scan
    /// of every business log (there are millions).
    #[test]
    fn each_filter_uses_its_index() {
        let (_dir, db) = crate::storage::temp_db(crate::storage::Synchronous::Normal);
        let plan = |f: LogFilter| -> String {
            db.read(|c| {
                let mut st = c.sqlite()?.prepare(&format!("EXPLAIN QUERY PLAN {}", list_sql(&f)))?;
                let rows = st.query_map(
                    rusqlite::params![1, Option::<&str>::None, Option::<&str>::None, Option::<i64>::None, 10],
                    |r| r.get::<_, String>(3),
                )?;
                Ok::<_, crate::storage::StorageError>(rows.collect::<rusqlite::Result<Vec<_>>>()?.join("; "))
            })
            .unwrap()
        };
        let by = |log_type, level, user_id| LogFilter { log_type, level, user_id };
        for (f, index) in [
            (by(None, None, Some(UserId(1))), "logs_by_user"),
            (by(Some(LogType::Business), Some(Level::Warn), Some(UserId(1))), "logs_by_user"),
            (by(Some(LogType::System), None, None), "logs_system"),
            (by(Some(LogType::System), Some(Level::Error), None), "logs_system_by_level"),
            (by(Some(LogType::Business), Some(Level::Error), None), "logs_business_not_info"),
        ] {
            let p = plan(f);
            assert!(
                p.contains(&format!("USING INDEX {index} ")) || p.ends_with(&format!("USING INDEX {index}")),
                "{index}: {p}"
            );
            assert!(!p.contains("TEMP B-TREE"), "{index} needs no sort: {p}");
        }
    }
}
