//! Jobs: durable asynchronous generation work.
//!
//! A job is created `queued` with a hold for its cost bound, in one
//! transaction; a worker claims it (`processing`, with a lease), calls the
//! ModelAdapter, and in one transaction settles the hold for the actual cost,
//! stores the output and marks it `completed`. Transient failures go back to
//! `queued` with exponential backoff until `max_attempts`; then, or on a
//! permanent error, `failed` with the hold released. Asynchronous provider
//! tasks are persisted (`provider_task_id`) before they are polled, so a
//! restart resumes polling instead of paying twice. Every transition is
//! checked by `state::check` and recorded in `job_events` in the same
//! transaction. This module never formats HTTP.

pub mod input;
pub mod state;
pub mod storage;
#[cfg(test)]
mod tests;
pub mod worker;

use crate::domain::{Credits, JobId, Timestamp, UserId};
use crate::error::{Error, Result};
use crate::events::{self, EventType};
use crate::ledger::{self, SpendCaps};
use crate::logs::{self, Level, NewLog};
use crate::paging::{List, Page};
use crate::storage::Conn;
use crate::storage::Db;
use serde_json::{Value, json};
pub use state::{JobStatus, JobType};
use storage::JobRow;

/// The provider_task_id of a job whose task is being submitted: if the
/// process dies in this window, nobody knows whether the provider took it.
pub const TASK_SUBMITTING: &str = "submitting";

/// Everything `create` needs, parsed and checked by the caller.
pub struct Create {
    pub user: UserId,
    pub jtype: JobType,
    pub model: String,
    pub input: Value,
    pub bound: Credits,
    pub max_attempts: u32,
    pub bounds: QueueBounds,
    pub hold_ttl_ms: i64,
    pub caps: SpendCaps,
}

/// How many jobs may wait: all users together, and one user.
#[derive(Debug, Clone, Copy)]
pub struct QueueBounds {
    pub queue_max: usize,
    pub queued_per_user_max: usize,
}

impl QueueBounds {
    pub fn of(cfg: &crate::config::JobsConfig) -> QueueBounds {
        QueueBounds { queue_max: cfg.queue_max, queued_per_user_max: cfg.queued_per_user_max }
    }

    /// Room for one more of `user`'s jobs (429 `too_many_jobs` past the
    /// user's bound, `queue_full` past everyone's); the turn it takes.
    fn admit(&self, conn: &Conn<'_>, user: UserId) -> Result<i64> {
        let mine = storage::queue_of(conn, user)?;
        if mine.queued >= self.queued_per_user_max as i64 {
            return Err(Error::TooManyJobs { queued_per_user_max: self.queued_per_user_max });
        }
        // Everyone's count: exact only while no other creation counts too.
        storage::lock_queue(conn)?;
        if storage::count_queued(conn)? >= self.queue_max as i64 {
            return Err(Error::QueueFull { queue_max: self.queue_max });
        }
        Ok(mine.next_turn)
    }
}

/// Queues a job and holds its bound, in the caller's transaction: a refusal
/// (402, 429) leaves no job behind.
pub fn create(conn: &Conn<'_>, c: &Create) -> Result<Value> {
    let turn = c.bounds.admit(conn, c.user)?;
    let now = Timestamp::now();
    let new = storage::NewJob {
        user: c.user,
        jtype: c.jtype,
        model: &c.model,
        input: &c.input,
        estimated_cost: c.bound,
        max_attempts: c.max_attempts,
    };
    let id = storage::insert(conn, &new, turn, now)?;
    if c.bound > Credits::ZERO {
        let hold = ledger::hold(conn, c.user, c.bound, Some(id), c.hold_ttl_ms, &c.caps)?;
        storage::set_hold(conn, id, Some(hold))?;
    }
    logs::write(
        conn,
        &NewLog::business(
            c.user,
            "job_created",
            true,
            json!({"job_id": id, "type": c.jtype.as_str(), "model": c.model, "estimated_cost": c.bound}),
        ),
    )?;
    view(conn, id)
}

/// The webhook event for a job that just ended (completed, failed or
/// canceled), with the job object as its data, in the same transaction.
/// Returns that job object.
pub fn emit_end(conn: &Conn<'_>, id: JobId, etype: EventType) -> Result<Value> {
    let j = storage::get(conn, id)?.ok_or_else(|| Error::not_found("job"))?;
    let data = render(&j, storage::events(conn, id)?);
    events::emit(conn, etype, Some(j.user), &data)?;
    Ok(data)
}

/// The job object of the API, with its events.
pub fn view(conn: &Conn<'_>, id: JobId) -> Result<Value> {
    let j = storage::get(conn, id)?.ok_or_else(|| Error::not_found("job"))?;
    Ok(render(&j, storage::events(conn, id)?))
}

fn render(j: &JobRow, events: Vec<storage::Event>) -> Value {
    json!({
        "id": j.id, "object": "job", "type": j.jtype, "model": j.model, "status": j.status,
        "input": j.input, "output": j.output,
        "error": j.error.as_ref().map(|(code, message)| json!({"code": code, "message": message})),
        "estimated_cost": j.estimated_cost, "credit_cost": j.credit_cost, "hold_id": j.hold, "transaction_id": j.transaction,
        "attempts": j.attempts, "created_at": j.created_at, "started_at": j.started_at, "finished_at": j.finished_at,
        "events": events,
    })
}

/// A job the user owns (others' jobs do not exist for them).
pub fn get_for(db: &Db, user: Option<UserId>, id: JobId) -> Result<Value> {
    db.read(|c| {
        let j =
            storage::get(c, id)?.filter(|j| user.is_none_or(|u| u == j.user)).ok_or_else(|| Error::not_found("job"))?;
        Ok(render(&j, storage::events(c, id)?))
    })
}

/// A page of jobs, at most this many bytes of JSON: a page ends early
/// (`has_more`) rather than grow with what jobs hold.
pub const LIST_PAGE_BYTES_MAX: usize = 4 << 20;

pub fn list(db: &Db, user: Option<UserId>, status: Option<JobStatus>, page: &Page) -> Result<List<Value>> {
    db.read(|c| {
        let rows = storage::list(c, user, status, page)?;
        let (mut data, mut bytes, mut has_more) = (Vec::new(), 0usize, rows.has_more);
        for j in &rows.data {
            let v = render(j, storage::events(c, j.id)?);
            bytes += serde_json::to_vec(&v).map_or(0, |b| b.len());
            // Always at least one job, so a page makes progress.
            if bytes > LIST_PAGE_BYTES_MAX && !data.is_empty() {
                has_more = true;
                break;
            }
            data.push(v);
        }
        Ok(List { object: "list", data, has_more })
    })
}

/// Transitions sent per read of a job's event stream.
const STREAM_EVENTS_PER_READ_MAX: usize = 100;

/// One read of a job's event stream, in one snapshot: the transitions after
/// `after` (`job_events` id, status, from, at, message) and, once the job
/// has ended and nothing is left to send, the final job object.
pub struct StreamStep {
    pub transitions: Vec<(i64, Value)>,
    pub last: Option<Value>,
}

pub fn stream_step(db: &Db, user: UserId, id: JobId, after: i64) -> Result<StreamStep> {
    db.read(|c| {
        let j = storage::get(c, id)?.filter(|j| j.user == user).ok_or_else(|| Error::not_found("job"))?;
        let rows = storage::events_after(c, id, after, STREAM_EVENTS_PER_READ_MAX)?;
        let drained = rows.len() < STREAM_EVENTS_PER_READ_MAX;
        let transitions = rows
            .into_iter()
            .map(|(eid, from, e)| {
                (eid, json!({"job_id": id, "from": from, "status": e.status, "at": e.at, "message": e.message}))
            })
            .collect();
        let last = if drained && j.status.is_final() { Some(render(&j, storage::events(c, id)?)) } else { None };
        Ok(StreamStep { transitions, last })
    })
}

fn owned(conn: &Conn<'_>, user: UserId, id: JobId) -> Result<JobRow> {
    storage::get(conn, id)?.filter(|j| j.user == user).ok_or_else(|| Error::not_found("job"))
}

/// Cancels a queued or processing job and releases its hold. A worker
/// holding it notices and cancels the provider task (best effort).
pub fn cancel(conn: &Conn<'_>, user: UserId, id: JobId) -> Result<Value> {
    let j = owned(conn, user, id)?;
    if !matches!(j.status, JobStatus::Queued | JobStatus::Processing) {
        return Err(Error::Conflict {
            code: "job_not_cancelable",
            message: format!("This job is {}; only queued or processing jobs can be canceled.", j.status.as_str()),
        });
    }
    let now = Timestamp::now();
    storage::set_status(conn, id, j.status, JobStatus::Canceled, "canceled by the user", now)?;
    if let Some(h) = j.hold {
        ledger::release(conn, h)?;
    }
    logs::write(conn, &NewLog::business(user, "job_canceled", true, json!({"job_id": id})))?;
    emit_end(conn, id, EventType::JobCanceled)
}

/// Runs a failed or canceled job again, as a new attempt with a new hold;
/// it waits in the queue under the same bounds as a new job.
pub fn retry(
    conn: &Conn<'_>,
    user: UserId,
    id: JobId,
    bounds: &QueueBounds,
    hold_ttl_ms: i64,
    caps: &SpendCaps,
) -> Result<Value> {
    let j = owned(conn, user, id)?;
    if !matches!(j.status, JobStatus::Failed | JobStatus::Canceled) {
        return Err(Error::Conflict {
            code: "job_not_retryable",
            message: format!("This job is {}; only failed or canceled jobs can be retried.", j.status.as_str()),
        });
    }
    bounds.admit(conn, user)?;
    let now = Timestamp::now();
    storage::set_status(conn, id, j.status, JobStatus::Queued, "retried by the user", now)?;
    storage::reset_for_retry(conn, id, now)?;
    let hold = if j.estimated_cost > Credits::ZERO {
        Some(ledger::hold(conn, user, j.estimated_cost, Some(id), hold_ttl_ms, caps)?)
    } else {
        None
    };
    storage::set_hold(conn, id, hold)?;
    logs::write(
        conn,
        &NewLog::business(user, "job_retried", true, json!({"job_id": id, "estimated_cost": j.estimated_cost})),
    )?;
    view(conn, id)
}

/// At startup, before workers run (one server per file, so every
/// `processing` job is an orphan): a job caught submitting a provider task
/// fails (the task may or may not exist: never pay twice); the others go
/// back to `queued`, and those with a task resume polling it. Holds of
/// finished jobs are released.
///
/// On PostgreSQL other instances may be running jobs: only jobs whose lease
/// ran out are recovered (a dead instance's, once its leases lapse).
pub fn recover(db: &Db) -> Result<(usize, usize)> {
    recover_where(db, db.is_shared().then(Timestamp::now))
}

/// While serving: jobs whose worker stopped renewing the lease (it died, or
/// could not record the outcome) are recovered the same way.
pub fn recover_expired_leases(db: &Db) -> Result<(usize, usize)> {
    let now = Timestamp::now();
    // Written only when there is one: an idle pass must not hold up the
    // charges (see `ledger::sweep`).
    if db.read(|c| Ok::<_, Error>(storage::processing(c, Some(now))?.is_empty()))? {
        return Ok((0, 0));
    }
    recover_where(db, Some(now))
}

fn recover_where(db: &Db, lease_expired_before: Option<Timestamp>) -> Result<(usize, usize)> {
    db.write(move |c| {
        let now = Timestamp::now();
        let (mut requeued, mut failed) = (0, 0);
        for j in storage::processing(c, lease_expired_before)? {
            if j.provider_task_id.as_deref() == Some(TASK_SUBMITTING) {
                storage::set_status(
                    c,
                    j.id,
                    JobStatus::Processing,
                    JobStatus::Failed,
                    "the process stopped while submitting the provider task",
                    now,
                )?;
                storage::set_error(
                    c,
                    j.id,
                    "submission_unknown",
                    "The service restarted while submitting this job to the provider; it was not charged. Retry it.",
                )?;
                if let Some(h) = j.hold {
                    ledger::release(c, h)?;
                }
                logs::write(
                    c,
                    &NewLog::business(
                        j.user,
                        "job_failed",
                        false,
                        json!({"job_id": j.id, "error": "submission_unknown"}),
                    ),
                )?;
                emit_end(c, j.id, EventType::JobFailed)?;
                failed += 1;
            } else {
                let why = if lease_expired_before.is_some() {
                    "its worker's lease expired"
                } else {
                    "recovered after a restart"
                };
                storage::set_status(c, j.id, JobStatus::Processing, JobStatus::Queued, why, now)?;
                storage::schedule(c, j.id, now)?;
                requeued += 1;
            }
        }
        for (hold, job) in ledger::storage::active_holds_of_finished_jobs(c)? {
            ledger::release(c, hold)?;
            logs::write(c, &NewLog::system(Level::Warn, "job_hold_released", json!({"hold_id": hold, "job_id": job})))?;
        }
        if requeued + failed > 0 {
            logs::write(
                c,
                &NewLog::system(Level::Warn, "jobs_recovered", json!({"requeued": requeued, "failed": failed})),
            )?;
        }
        Ok((requeued, failed))
    })
}

/// Sets the jobs gauges (at scrape time).
pub fn observe(db: &Db) {
    let m = crate::metrics::global();
    if let Ok(counts) = db.read(storage::counts_by_status) {
        for s in JobStatus::ALL {
            let n = counts.iter().find(|(k, _)| k == s.as_str()).map_or(0, |(_, n)| *n);
            m.jobs.with_label_values(&[s.as_str()]).set(n);
        }
    }
}
