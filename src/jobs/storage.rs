//! SQL for `jobs` and `job_events`. Every status change goes through
//! [`set_status`], which checks the transition, changes the row only if it
//! is still in the expected state, and writes the event.

use super::state::{self, JobStatus, JobType};
use crate::domain::{Credits, HoldId, JobId, Timestamp, TxnId, UserId};
use crate::error::Result;
use crate::paging::{List, Page};
use crate::storage::{Conn, Row, Sql, StorageError};
use rusqlite::params;
use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: JobId,
    pub user: UserId,
    pub jtype: JobType,
    pub model: String,
    pub status: JobStatus,
    pub input: Value,
    pub output: Option<Value>,
    pub error: Option<(String, String)>,
    pub estimated_cost: Credits,
    pub credit_cost: Option<Credits>,
    pub hold: Option<HoldId>,
    pub transaction: Option<TxnId>,
    pub attempts: u32,
    pub max_attempts: u32,
    pub provider_task_id: Option<String>,
    pub next_attempt_at: Timestamp,
    pub created_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub status: JobStatus,
    pub at: Timestamp,
    pub message: String,
}

const COLUMNS: &str = "id, user_id, type, model, status, input, output, error_code, error_message, estimated_cost,
    credit_cost, hold_id, transaction_id, attempts, max_attempts, provider_task_id, next_attempt_at, created_at,
    started_at, finished_at";

fn row(r: &Row<'_>) -> std::result::Result<JobRow, StorageError> {
    let json = |s: Option<String>| s.and_then(|s| serde_json::from_str(&s).ok());
    let jtype: String = r.get(2)?;
    let status: String = r.get(4)?;
    let code: Option<String> = r.get(7)?;
    let message: Option<String> = r.get(8)?;
    Ok(JobRow {
        id: r.get(0)?,
        user: r.get(1)?,
        jtype: JobType::parse(&jtype).unwrap_or(JobType::Text),
        model: r.get(3)?,
        status: JobStatus::parse(&status).unwrap_or(JobStatus::Failed),
        input: json(r.get(5)?).unwrap_or(Value::Null),
        output: json(r.get(6)?),
        error: code.map(|c| (c, message.unwrap_or_default())),
        estimated_cost: r.get(9)?,
        credit_cost: r.get(10)?,
        hold: r.get(11)?,
        transaction: r.get(12)?,
        attempts: r.get(13)?,
        max_attempts: r.get(14)?,
        provider_task_id: r.get(15)?,
        next_attempt_at: r.get(16)?,
        created_at: r.get(17)?,
        started_at: r.get(18)?,
        finished_at: r.get(19)?,
    })
}

pub struct NewJob<'a> {
    pub user: UserId,
    pub jtype: JobType,
    pub model: &'a str,
    pub input: &'a Value,
    pub estimated_cost: Credits,
    pub max_attempts: u32,
}

/// A user's place in the queue: how many of their jobs are queued, and the
/// turn their next queued job takes (see [`queue_of`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserQueue {
    pub queued: i64,
    pub next_turn: i64,
}

/// The user's queued jobs and next turn, in one read of `jobs_queued_by_user`
/// and one of `jobs_fair`. The next turn is one after the user's last
/// queued job and never before the oldest turn still queued: claims go by
/// turn, so a user with one job waits behind at most one job of each
/// backlog, and two backlogs interleave.
pub fn queue_of(conn: &Conn<'_>, user: UserId) -> Result<UserQueue> {
    // Without the hint SQLite reads the oldest turn through `jobs_by_status`,
    // every queued job (measured: job creation 3x slower at 20,000 queued).
    let (queued, last, oldest): (i64, Option<i64>, Option<i64>) = conn.query_one(
        Sql::each(
            "SELECT count(*), MAX(turn), (SELECT MIN(turn) FROM jobs INDEXED BY jobs_fair WHERE status = 'queued')
             FROM jobs WHERE user_id = ?1 AND status = 'queued'",
            "SELECT count(*), MAX(turn), (SELECT MIN(turn) FROM jobs WHERE status = 'queued')
             FROM jobs WHERE user_id = ?1 AND status = 'queued'",
        ),
        params![user],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let next_turn = last.map_or(0, |t| t + 1).max(oldest.unwrap_or(0));
    Ok(UserQueue { queued, next_turn })
}

pub fn insert(conn: &Conn<'_>, j: &NewJob<'_>, turn: i64, now: Timestamp) -> Result<JobId> {
    let id: JobId = conn.query_one("INSERT INTO jobs (user_id, type, model, status, input, estimated_cost, max_attempts, next_attempt_at, created_at, turn)
         VALUES (?1, ?2, ?3, 'queued', ?4, ?5, ?6, ?7, ?7, ?8) RETURNING id", params![j.user, j.jtype.as_str(), j.model, j.input.to_string(), j.estimated_cost, j.max_attempts, now, turn], |r| r.get(0))?;
    event(conn, id, None, JobStatus::Queued, "created", now)?;
    Ok(id)
}

fn event(
    conn: &Conn<'_>,
    id: JobId,
    from: Option<JobStatus>,
    to: JobStatus,
    message: &str,
    at: Timestamp,
) -> Result<()> {
    conn.execute(
        "INSERT INTO job_events (job_id, from_status, to_status, message, at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![id, from.map(JobStatus::as_str), to.as_str(), message, at],
    )?;
    Ok(())
}

/// Moves a job `from -> to` if it is still in `from`; `Ok(false)` when it no
/// longer is (someone else moved it first). Writes the event.
pub fn set_status(
    conn: &Conn<'_>,
    id: JobId,
    from: JobStatus,
    to: JobStatus,
    message: &str,
    now: Timestamp,
) -> Result<bool> {
    state::check(from, to)?;
    let finished = to.is_final().then_some(now);
    // A job queued again (a retry, a transient failure, a recovery) takes
    // its user's next turn, as a new job would: behind their own backlog.
    let turn = match to {
        JobStatus::Queued => {
            let user: Option<UserId> =
                conn.query_opt("SELECT user_id FROM jobs WHERE id = ?1", params![id], |r| r.get(0))?;
            match user {
                Some(u) => Some(queue_of(conn, u)?.next_turn),
                None => None,
            }
        }
        _ => None,
    };
    let n = conn.execute(
        "UPDATE jobs SET status = ?3, finished_at = ?4, turn = COALESCE(?5, turn) WHERE id = ?1 AND status = ?2",
        params![id, from.as_str(), to.as_str(), finished, turn],
    )?;
    if n == 1 {
        event(conn, id, Some(from), to, message, now)?;
    }
    Ok(n == 1)
}

pub fn set_hold(conn: &Conn<'_>, id: JobId, hold: Option<HoldId>) -> Result<()> {
    conn.execute("UPDATE jobs SET hold_id = ?2 WHERE id = ?1", params![id, hold])?;
    Ok(())
}

pub fn get(conn: &Conn<'_>, id: JobId) -> Result<Option<JobRow>> {
    Ok(conn.query_opt(&format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1"), params![id], row)?)
}

/// The users with `processing_per_user_max` jobs processing: their queued
/// jobs wait. Processing jobs are few (bounded by the workers of every
/// instance), so this is a short read of `jobs_processing`.
/// (`$max` names the parameter holding the maximum.)
macro_rules! users_at_processing_max {
    ($max:literal) => {
        concat!("SELECT user_id FROM jobs WHERE status = 'processing' GROUP BY user_id HAVING count(*) >= ", $max)
    };
}

/// The user whose due queued job is next in turn order, whose next job
/// [`claim`] then claims (a read: on PostgreSQL the claim then locks that
/// user alone). Jobs of users with `processing_per_user_max` jobs running
/// are passed over, so one user's backlog holds at most that many workers.
pub fn next_user(conn: &Conn<'_>, now: Timestamp, processing_per_user_max: usize) -> Result<Option<UserId>> {
    // `jobs_fair` walks queued jobs in turn order; without the hint SQLite
    // may take `jobs_due` and sort every due job by turn.
    Ok(conn.query_opt(
        Sql::each(
            concat!(
                "SELECT user_id FROM jobs INDEXED BY jobs_fair WHERE status = 'queued' AND next_attempt_at <= ?1
                 AND user_id NOT IN (",
                users_at_processing_max!("?2"),
                ") ORDER BY turn, id LIMIT 1"
            ),
            concat!(
                "SELECT user_id FROM jobs WHERE status = 'queued' AND next_attempt_at <= ?1 AND user_id NOT IN (",
                users_at_processing_max!("?2"),
                ") ORDER BY turn, id LIMIT 1"
            ),
        ),
        params![now, processing_per_user_max as i64],
        |r| r.get(0),
    )?)
}

/// Claims the next due queued job of `user` (the one [`next_user`]
/// found) in their turn order: `processing`, leased, one more attempt;
/// `None` when they have none due or reached `processing_per_user_max`
/// meanwhile. Run under the user's lock (every move into `processing` is
/// made under it), so the check is exact; and since workers that read the
/// same candidate each claim the user's next job, they do not all race
/// for one.
pub fn claim(
    conn: &Conn<'_>,
    user: UserId,
    now: Timestamp,
    lease_until: Timestamp,
    processing_per_user_max: usize,
) -> Result<Option<JobRow>> {
    let id: Option<JobId> = conn.query_opt(
        "SELECT id FROM jobs WHERE user_id = ?1 AND status = 'queued' AND next_attempt_at <= ?2
           AND (SELECT count(*) FROM jobs WHERE user_id = ?1 AND status = 'processing') < ?3
         ORDER BY turn, id LIMIT 1",
        params![user, now, processing_per_user_max as i64],
        |r| r.get(0),
    )?;
    let Some(id) = id else { return Ok(None) };
    if !set_status(conn, id, JobStatus::Queued, JobStatus::Processing, "claimed by a worker", now)? {
        return Ok(None);
    }
    conn.execute("UPDATE jobs SET attempts = attempts + 1, lease_until = ?2, started_at = COALESCE(started_at, ?3) WHERE id = ?1", params![id, lease_until, now])?;
    get(conn, id)
}

/// [`next_user`] and [`claim`] in one transaction (tests).
pub fn claim_due(
    conn: &Conn<'_>,
    now: Timestamp,
    lease_until: Timestamp,
    processing_per_user_max: usize,
) -> Result<Option<JobRow>> {
    match next_user(conn, now, processing_per_user_max)? {
        Some(user) => claim(conn, user, now, lease_until, processing_per_user_max),
        None => Ok(None),
    }
}

/// When the next claimable queued job is due, for the workers' wait (jobs
/// of users at `processing_per_user_max` wait for one of theirs to end).
pub fn next_due(conn: &Conn<'_>, processing_per_user_max: usize) -> Result<Option<Timestamp>> {
    // `jobs_due` walks queued jobs by due time; without the hint SQLite
    // reads every queued job through `jobs_by_status` and sorts them.
    Ok(conn.query_opt(
        Sql::each(
            concat!(
                "SELECT next_attempt_at FROM jobs INDEXED BY jobs_due WHERE status = 'queued' AND user_id NOT IN (",
                users_at_processing_max!("?1"),
                ") ORDER BY next_attempt_at LIMIT 1"
            ),
            concat!(
                "SELECT next_attempt_at FROM jobs WHERE status = 'queued' AND user_id NOT IN (",
                users_at_processing_max!("?1"),
                ") ORDER BY next_attempt_at LIMIT 1"
            ),
        ),
        params![processing_per_user_max as i64],
        |r| r.get(0),
    )?)
}

/// Renews a processing job's lease; false when it is no longer processing.
pub fn renew_lease(conn: &Conn<'_>, id: JobId, until: Timestamp) -> Result<bool> {
    let n =
        conn.execute("UPDATE jobs SET lease_until = ?2 WHERE id = ?1 AND status = 'processing'", params![id, until])?;
    Ok(n == 1)
}

pub fn set_task(conn: &Conn<'_>, id: JobId, task: Option<&str>) -> Result<()> {
    conn.execute("UPDATE jobs SET provider_task_id = ?2 WHERE id = ?1", params![id, task])?;
    Ok(())
}

pub fn set_result(conn: &Conn<'_>, id: JobId, output: &Value, cost: Credits, txn: Option<TxnId>) -> Result<()> {
    conn.execute(
        "UPDATE jobs SET output = ?2, credit_cost = ?3, transaction_id = ?4, lease_until = NULL WHERE id = ?1",
        params![id, output.to_string(), cost, txn],
    )?;
    Ok(())
}

pub fn set_error(conn: &Conn<'_>, id: JobId, code: &str, message: &str) -> Result<()> {
    conn.execute(
        "UPDATE jobs SET error_code = ?2, error_message = ?3, lease_until = NULL WHERE id = ?1",
        params![id, code, message],
    )?;
    Ok(())
}

/// An attempt that never reached the provider does not count.
pub fn refund_attempt(conn: &Conn<'_>, id: JobId) -> Result<()> {
    conn.execute(
        Sql::each(
            "UPDATE jobs SET attempts = MAX(attempts - 1, 0) WHERE id = ?1",
            "UPDATE jobs SET attempts = GREATEST(attempts - 1, 0) WHERE id = ?1",
        ),
        params![id],
    )?;
    Ok(())
}

pub fn schedule(conn: &Conn<'_>, id: JobId, at: Timestamp) -> Result<()> {
    conn.execute("UPDATE jobs SET next_attempt_at = ?2, lease_until = NULL WHERE id = ?1", params![id, at])?;
    Ok(())
}

/// Clears a failed or canceled job for a fresh run.
pub fn reset_for_retry(conn: &Conn<'_>, id: JobId, now: Timestamp) -> Result<()> {
    conn.execute(
        "UPDATE jobs SET attempts = 0, output = NULL, error_code = NULL, error_message = NULL, credit_cost = NULL,
         transaction_id = NULL, provider_task_id = NULL, next_attempt_at = ?2, started_at = NULL, lease_until = NULL
         WHERE id = ?1",
        params![id, now],
    )?;
    Ok(())
}

/// The queue lock's key on PostgreSQL ("tgqueue").
const QUEUE_LOCK_KEY: i64 = 0x0074_6771_7565_7565;

/// Takes the queue lock for this transaction, waiting for it (at most the
/// lock timeout): job creations and retries, which check everyone's queued
/// jobs against `jobs.queue_max` while running beside other users' writes,
/// take it before counting, so two never both pass with room for one.
/// SQLite's single writer is the lock there.
pub fn lock_queue(conn: &Conn<'_>) -> Result<()> {
    if conn.engine() == crate::storage::Engine::Postgres {
        conn.execute("SELECT pg_advisory_xact_lock(?1)", params![QUEUE_LOCK_KEY])?;
    }
    Ok(())
}

pub fn count_queued(conn: &Conn<'_>) -> Result<i64> {
    Ok(conn.query_one("SELECT count(*) FROM jobs WHERE status = 'queued'", &[], |r| r.get(0))?)
}

pub fn counts_by_status(conn: &Conn<'_>) -> Result<Vec<(String, i64)>> {
    Ok(conn.query_all("SELECT status, count(*) FROM jobs GROUP BY status", &[], |r| Ok((r.get(0)?, r.get(1)?)))?)
}

/// Processing jobs; with `lease_before`, only those whose lease ran out.
pub fn processing(conn: &Conn<'_>, lease_before: Option<Timestamp>) -> Result<Vec<JobRow>> {
    Ok(conn
        .query_all(&format!(
            "SELECT {COLUMNS} FROM jobs WHERE status = 'processing' AND (CAST(?1 AS BIGINT) IS NULL OR COALESCE(lease_until, 0) < ?1)"
        ), params![lease_before], row)?)
}

pub fn list(conn: &Conn<'_>, user: Option<UserId>, status: Option<JobStatus>, page: &Page) -> Result<List<JobRow>> {
    let rows = conn
        .query_all(&format!(
            "SELECT {COLUMNS} FROM jobs WHERE id < ?1 AND (CAST(?2 AS BIGINT) IS NULL OR user_id = ?2) AND (CAST(?3 AS TEXT) IS NULL OR status = ?3)
             ORDER BY id DESC LIMIT ?4"
        ), params![page.before_id(), user, status.map(JobStatus::as_str), page.fetch()], row)?;
    Ok(List::from_rows(rows, page))
}

/// An event from `to_status, at, message` at column `first`.
fn event_at(r: &Row<'_>, first: usize) -> std::result::Result<Event, StorageError> {
    let s: String = r.get(first)?;
    Ok(Event {
        status: JobStatus::parse(&s).unwrap_or(JobStatus::Failed),
        at: r.get(first + 1)?,
        message: r.get(first + 2)?,
    })
}

pub fn events(conn: &Conn<'_>, id: JobId) -> Result<Vec<Event>> {
    Ok(conn.query_all(
        "SELECT to_status, at, message FROM job_events WHERE job_id = ?1 ORDER BY id",
        params![id],
        |r| event_at(r, 0),
    )?)
}

/// A job's transitions after `after` (a `job_events` id), oldest first.
pub fn events_after(conn: &Conn<'_>, id: JobId, after: i64, limit: usize) -> Result<Vec<(i64, Option<String>, Event)>> {
    Ok(conn.query_all(
        "SELECT id, from_status, to_status, at, message FROM job_events WHERE job_id = ?1 AND id > ?2
             ORDER BY id LIMIT ?3",
        params![id, after, limit as i64],
        |r| Ok((r.get(0)?, r.get(1)?, event_at(r, 2)?)),
    )?)
}
