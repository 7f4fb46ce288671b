//! Business and system logs, kept in the database.
//!
//! Business logs record what a user did (`user_id` set); system logs record
//! what the service itself met (`user_id` null). Every module writes logs
//! through here, inside its own transaction when the log must agree with the
//! change it describes. A log never holds a secret: no password, key or token.

pub mod storage;

use crate::domain::{LogId, Timestamp, UserId};
use crate::paging::{List, Page};
use crate::storage::Conn;
use crate::storage::Db;
use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogType {
    Business,
    System,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Info,
    Warn,
    Error,
}

impl LogType {
    pub fn as_str(self) -> &'static str {
        match self {
            LogType::Business => "business",
            LogType::System => "system",
        }
    }
    pub fn parse(s: &str) -> Option<LogType> {
        match s {
            "business" => Some(LogType::Business),
            "system" => Some(LogType::System),
            _ => None,
        }
    }
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
    pub fn parse(s: &str) -> Option<Level> {
        match s {
            "info" => Some(Level::Info),
            "warn" => Some(Level::Warn),
            "error" => Some(Level::Error),
            _ => None,
        }
    }
}

/// A log entry about to be written. Build it with [`NewLog::business`] or
/// [`NewLog::system`], so that the type/user pairing is always right.
#[derive(Debug, Clone)]
pub struct NewLog {
    pub log_type: LogType,
    pub level: Level,
    pub action: &'static str,
    pub details: Value,
    pub success: bool,
    pub user_id: Option<UserId>,
}

impl NewLog {
    pub fn business(user: UserId, action: &'static str, success: bool, details: Value) -> NewLog {
        let level = if success { Level::Info } else { Level::Warn };
        NewLog { log_type: LogType::Business, level, action, details, success, user_id: Some(user) }
    }

    pub fn system(level: Level, action: &'static str, details: Value) -> NewLog {
        NewLog { log_type: LogType::System, level, action, details, success: level == Level::Info, user_id: None }
    }
}

/// A stored log as the API shows it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[schemars(rename = "Log")]
pub struct LogEntry {
    pub id: LogId,
    pub object: &'static str,
    pub log_type: LogType,
    pub level: Level,
    pub action: String,
    pub details: Value,
    pub success: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<UserId>,
    pub created_at: Timestamp,
}

#[derive(Debug, Default, Clone)]
pub struct LogFilter {
    pub log_type: Option<LogType>,
    pub level: Option<Level>,
    pub user_id: Option<UserId>,
}

/// Writes a log inside the caller's transaction.
pub fn write(conn: &Conn<'_>, log: &NewLog) -> crate::error::Result<LogId> {
    Ok(storage::insert(conn, log, Timestamp::now())?)
}

/// Writes a log in a transaction of its own. A failure to log must never fail
/// the request that caused it, so it is reported to the process log instead.
pub fn record(db: &Db, log: NewLog) {
    let action = log.action;
    if let Err(e) = db.write(move |c| write(c, &log)) {
        log::error!("could not write log entry {action}: {e}");
    }
}

/// The caller's own business logs, newest first.
pub fn list_for_user(db: &Db, user: UserId, page: &Page) -> crate::error::Result<List<LogEntry>> {
    let filter = LogFilter { log_type: Some(LogType::Business), level: None, user_id: Some(user) };
    let mut list = db.read(|c| storage::list(c, &filter, page))?;
    // A user's own view does not repeat their id on every row.
    list.data.iter_mut().for_each(|e| e.user_id = None);
    Ok(list)
}

pub fn list_all(db: &Db, filter: &LogFilter, page: &Page) -> crate::error::Result<List<LogEntry>> {
    Ok(db.read(|c| storage::list(c, filter, page))?)
}

/// Deletes logs older than the retention window; returns how many.
pub fn prune(db: &Db, retention_days: u32) -> crate::error::Result<usize> {
    if retention_days == 0 {
        return Ok(0);
    }
    prune_before(db, Timestamp::now().plus_ms(-i64::from(retention_days) * 86_400_000), PRUNE_BATCH_MAX)
}

/// Logs deleted per writer transaction, so a first prune of a large backlog
/// never holds the writer for long.
pub const PRUNE_BATCH_MAX: usize = 5_000;

fn prune_before(db: &Db, cutoff: Timestamp, batch: usize) -> crate::error::Result<usize> {
    db.write_in_batches(batch, move |c, n| Ok(storage::delete_oldest_before(c, cutoff, n)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_deletes_exactly_the_old_logs_in_bounded_batches() {
        for (_dir, db) in crate::storage::test_engines() {
            prune_on(&db);
        }
    }

    fn prune_on(db: &Db) {
        let cutoff = Timestamp(1_000_000);
        db.write(move |c| {
            for i in 0..25 {
                let log = NewLog::system(Level::Info, "old", serde_json::json!({ "i": i }));
                storage::insert(c, &log, Timestamp(cutoff.0 - 1000 + i))?;
            }
            // A clock step back: an old stamp after a newer one waits.
            storage::insert(c, &NewLog::system(Level::Info, "new", serde_json::json!({})), cutoff)?;
            storage::insert(c, &NewLog::system(Level::Info, "stepped_back", serde_json::json!({})), Timestamp(5))?;
            storage::insert(c, &NewLog::system(Level::Info, "new", serde_json::json!({})), Timestamp(cutoff.0 + 1))?;
            Ok::<_, crate::error::Error>(())
        })
        .unwrap();
        assert_eq!(prune_before(db, cutoff, 10).unwrap(), 25, "three batches: 10 + 10 + 5");
        let left = list_all(db, &LogFilter::default(), &Page::default()).unwrap();
        let actions: Vec<&str> = left.data.iter().rev().map(|l| l.action.as_str()).collect();
        assert_eq!(actions, ["new", "stepped_back", "new"]);
        let system = LogFilter { log_type: Some(LogType::System), level: Some(Level::Info), user_id: None };
        assert_eq!(list_all(db, &system, &Page::default()).unwrap().data.len(), 3);
        assert_eq!(prune_before(db, cutoff, 10).unwrap(), 0);
    }
}
