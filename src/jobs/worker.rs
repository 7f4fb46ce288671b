//! The job workers: N threads that claim due jobs (one `UPDATE` through the
//! writer each, so no job is ever claimed twice), run them through the
//! ModelAdapter and record the outcome. Idle workers sleep on a condition
//! variable until a job is queued or the next retry is due.

use super::TASK_SUBMITTING;
use super::input::{self, JobInput};
use super::state::JobStatus;
use super::storage::{self, JobRow};
use crate::app::App;
use crate::domain::Timestamp;
use crate::error::{Error, Result};
use crate::events::EventType;
use crate::ledger::{self, Cost};
use crate::logs::{self, Level, NewLog};
use crate::metered;
use crate::providers::types::TaskState;
use crate::providers::{CallInfo, Model, ProviderError, Submitted, TaskRef};
use crate::support::notify::Notifier;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// Longest an idle worker sleeps before looking for due work again.
const IDLE_WAIT_MS_MAX: u64 = 1_000;

pub struct Workers {
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<()>>,
}

impl Workers {
    pub fn start(app: &Arc<App>) -> std::result::Result<Workers, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::new();
        for i in 0..app.config.jobs.workers {
            let (app, stop) = (Arc::clone(app), Arc::clone(&stop));
            let h = thread::Builder::new()
                .name(format!("job-{i}"))
                .spawn(move || work(&app, &stop))
                .map_err(|e| format!("cannot start a job worker: {e}"))?;
            handles.push(h);
        }
        Ok(Workers { stop, handles })
    }

    /// Stops after the current step; a job being polled stays `processing`
    /// and is resumed by recovery at the next start.
    pub fn stop(self, notifier: &Notifier) {
        self.stop.store(true, Ordering::SeqCst);
        notifier.notify();
        for h in self.handles {
            let _ = h.join();
        }
    }
}

fn lease_until(app: &App) -> Timestamp {
    Timestamp::now().plus_ms(app.config.jobs.lease_s as i64 * 1000)
}

fn work(app: &Arc<App>, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let per_user = app.config.jobs.processing_per_user_max;
        // A read first, and a claim only when a job is due: an idle worker
        // takes no write. On PostgreSQL every write but a charge runs alone,
        // so an idle claim a second per worker would hold up every charge
        // in flight each time.
        let wait = match app.db.read(|c| storage::next_due(c, per_user)) {
            Ok(Some(t)) => (t.millis() - Timestamp::now().millis()).min(IDLE_WAIT_MS_MAX as i64),
            Ok(None) => IDLE_WAIT_MS_MAX as i64,
            Err(e) => {
                log::error!("job worker cannot read the queue: {e}");
                thread::sleep(Duration::from_millis(IDLE_WAIT_MS_MAX));
                continue;
            }
        };
        if wait > 0 {
            app.notifier.wait(Duration::from_millis(wait.max(5) as u64));
            continue;
        }
        let until = lease_until(app);
        let hold_until = until.plus_ms(app.hold_ttl_ms());
        // Whose turn it is is read first, so that the claim locks that
        // user alone (on PostgreSQL, beside other users' writes).
        let claimed = app.db.read(move |c| storage::next_user(c, Timestamp::now(), per_user)).and_then(|found| {
            let Some(user) = found else { return Ok(None) };
            app.db.write_for_user(Some(user), move |c| {
                let job = storage::claim(c, user, Timestamp::now(), until, per_user)?;
                if let Some(h) = job.as_ref().and_then(|j| j.hold) {
                    ledger::extend(c, h, hold_until)?;
                }
                Ok::<_, Error>(job)
            })
        });
        match claimed {
            // Its provider calls count as its owner's (the breaker counts
            // distinct callers).
            Ok(Some(job)) => crate::providers::breaker::as_caller(Some(job.user.0), || run(app, job, stop)),
            // Another worker took it first.
            Ok(None) => app.notifier.wait(Duration::from_millis(5)),
            Err(e) => {
                log::error!("job worker cannot claim work: {e}");
                thread::sleep(Duration::from_millis(IDLE_WAIT_MS_MAX));
            }
        }
    }
}

/// What a finished provider call produced.
struct Done {
    output: Value,
    cost: Cost,
    description: String,
    info: CallInfo,
    /// What the job used, for the usage aggregate.
    used: crate::usage::Metered,
}

fn run(app: &App, job: JobRow, stop: &AtomicBool) {
    let Some(model) = app.adapter.model(&job.model) else {
        return fail(app, &job, "model_unavailable", &format!("The model {} is no longer configured.", job.model));
    };
    let parsed = match input::parse(job.jtype, &model, &job.input) {
        Ok(i) => i,
        Err(e) => return fail(app, &job, "invalid_input", &e.to_string()),
    };
    if let Some(stored) = job.provider_task_id.as_deref() {
        // A restart found this job mid-task: resume polling, never resubmit.
        return match TaskRef::decode(stored) {
            Some(task) => poll(app, &job, &model, &parsed, task, None, stop),
            None => {
                fail(app, &job, "submission_unknown", "The provider task of this job is unknown; it was not charged.")
            }
        };
    }
    match &parsed {
        JobInput::Text(req) => match app.adapter.chat(&model, req) {
            Ok((resp, info)) => {
                let u = resp.usage;
                let multiplier = metered::multiplier_for(app, job.user);
                complete(
                    app,
                    &job,
                    Done {
                        output: json!({"text": resp.text, "finish_reason": resp.finish_reason,
                                       "usage": {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens}}),
                        cost: metered::chat_cost(&model, &u, multiplier),
                        description: format!(
                            "job {} text {} ({} in / {} out tokens)",
                            job.id,
                            model.priced_name(),
                            u.prompt_tokens,
                            u.completion_tokens
                        ),
                        info,
                        used: metered::used_tokens(&model, &u, &metered::cost_detail(&model, &u, multiplier)),
                    },
                    stop,
                )
            }
            Err(e) => failed_call(app, &job, e),
        },
        JobInput::Image(req) => {
            if !mark_submitting(app, &job) {
                return;
            }
            match app.adapter.image_submit(&model, req) {
                Ok((Submitted::Done(resp), info)) => {
                    let n = (resp.urls.len() as u32).min(req.n);
                    let images: Vec<Value> = resp.urls.iter().take(n as usize).map(|u| json!({"url": u})).collect();
                    complete(
                        app,
                        &job,
                        Done {
                            output: json!({"images": images}),
                            cost: Cost::Credits(metered::scale_credits(
                                model.price.images_of(req, n),
                                metered::multiplier_for(app, job.user),
                            )),
                            description: format!("job {} images {} ({n})", job.id, model.priced_name()),
                            info,
                            used: crate::usage::Metered {
                                images: u64::from(n),
                                provider_cost_micro: model.provider_cost.as_ref().map_or(0, |p| {
                                    p.images_of(req, n).0.saturating_mul(crate::ledger::MICRO_PER_CREDIT)
                                }),
                                ..crate::usage::Metered::model(&model.name)
                            },
                        },
                        stop,
                    )
                }
                Ok((Submitted::Task(task), info)) => poll(app, &job, &model, &parsed, task, Some(info), stop),
                Err(e) => {
                    unmark_submitting(app, &job);
                    failed_call(app, &job, e)
                }
            }
        }
        JobInput::Video(req) => {
            if !mark_submitting(app, &job) {
                return;
            }
            match app.adapter.video_submit(&model, req) {
                Ok((task, info)) => poll(app, &job, &model, &parsed, task, Some(info), stop),
                Err(e) => {
                    unmark_submitting(app, &job);
                    failed_call(app, &job, e)
                }
            }
        }
    }
}

/// Records that a provider task is about to be submitted. False when the job
/// is no longer ours (canceled meanwhile).
fn mark_submitting(app: &App, job: &JobRow) -> bool {
    let id = job.id;
    app.db
        .write_for_user(Some(job.user), move |c| {
            let live = storage::get(c, id)?.is_some_and(|j| j.status == JobStatus::Processing);
            if live {
                storage::set_task(c, id, Some(TASK_SUBMITTING))?;
            }
            Ok::<_, Error>(live)
        })
        .unwrap_or(false)
}

fn unmark_submitting(app: &App, job: &JobRow) {
    let id = job.id;
    if let Err(e) = app.db.write_for_user(Some(job.user), move |c| storage::set_task(c, id, None)) {
        log::error!("job {id}: cannot clear the submission marker: {e}");
    }
}

/// Polls a provider task until it finishes, fails, times out or the job is
/// canceled. The task id is persisted first, so a restart resumes here.
fn poll(
    app: &App,
    job: &JobRow,
    model: &Model,
    parsed: &JobInput,
    task: TaskRef,
    info: Option<CallInfo>,
    stop: &AtomicBool,
) {
    let id = job.id;
    let encoded = task.encode();
    if let Err(e) = app.db.write_for_user(Some(job.user), move |c| storage::set_task(c, id, Some(&encoded))) {
        // Leave the marker: recovery fails the job rather than pay twice.
        log::error!("job {id}: cannot record provider task {}: {e}", task.task_id);
        return;
    }
    let info = info.unwrap_or_else(|| app.adapter.task_info(model, &task));
    let cfg = &app.config.jobs;
    let started = job.started_at.unwrap_or_else(Timestamp::now);
    let mut interval = cfg.poll_interval_min_ms;
    loop {
        let current = app.db.read(|c| storage::get(c, id)).ok().flatten();
        if current.as_ref().is_none_or(|j| j.status != JobStatus::Processing) {
            // Canceled while running: stop the provider's work too.
            if let Err(e) = app.adapter.task_cancel(model, &task) {
                log::info!("job {id}: the provider task could not be canceled ({e})");
            }
            return;
        }
        if Timestamp::now().millis() - started.millis() > cfg.task_timeout_s as i64 * 1000 {
            let _ = app.adapter.task_cancel(model, &task);
            return fail(
                app,
                job,
                "task_timeout",
                &format!("The provider did not finish within {} s.", cfg.task_timeout_s),
            );
        }
        match app.adapter.task_poll(model, &task) {
            Ok(TaskState::Running) => {}
            Ok(TaskState::Succeeded { urls, duration_s }) => {
                let done = match parsed {
                    JobInput::Video(req) => {
                        let seconds = duration_s.unwrap_or(req.duration_s);
                        Done {
                            output: json!({"video_url": urls.first(), "duration_s": seconds}),
                            cost: Cost::Credits(metered::scale_credits(
                                model.price.video_of(req, seconds),
                                metered::multiplier_for(app, job.user),
                            )),
                            description: format!("job {id} video {} ({seconds} s)", model.priced_name()),
                            info,
                            used: crate::usage::Metered {
                                video_seconds: u64::from(seconds),
                                provider_cost_micro: model.provider_cost.as_ref().map_or(0, |p| {
                                    p.video_of(req, seconds).0.saturating_mul(crate::ledger::MICRO_PER_CREDIT)
                                }),
                                ..crate::usage::Metered::model(&model.name)
                            },
                        }
                    }
                    JobInput::Image(req) => {
                        let n = (urls.len() as u32).min(req.n);
                        let images: Vec<Value> = urls.iter().take(n as usize).map(|u| json!({"url": u})).collect();
                        Done {
                            output: json!({"images": images}),
                            cost: Cost::Credits(metered::scale_credits(
                                model.price.images_of(req, n),
                                metered::multiplier_for(app, job.user),
                            )),
                            description: format!("job {id} images {} ({n})", model.priced_name()),
                            info,
                            used: crate::usage::Metered {
                                images: u64::from(n),
                                provider_cost_micro: model.provider_cost.as_ref().map_or(0, |p| {
                                    p.images_of(req, n).0.saturating_mul(crate::ledger::MICRO_PER_CREDIT)
                                }),
                                ..crate::usage::Metered::model(&model.name)
                            },
                        }
                    }
                    JobInput::Text(_) => return fail(app, job, "invalid_input", "a text job has no provider task"),
                };
                return complete(app, job, done, stop);
            }
            Ok(TaskState::Failed { code, message }) => {
                return fail(app, job, "provider_task_failed", &format!("{code}: {message}"));
            }
            Err(e) => return failed_call(app, job, e),
        }
        if !sleep_unless_stopped(Duration::from_millis(interval), stop) {
            return;
        }
        interval = (interval * 2).min(cfg.poll_interval_max_ms);
        renew(app, job);
    }
}

/// Renews the job's lease and extends its hold past it. False when the job
/// is no longer processing (canceled meanwhile) or the write failed.
fn renew(app: &App, job: &JobRow) -> bool {
    let (id, hold, until) = (job.id, job.hold, lease_until(app));
    let hold_until = until.plus_ms(app.hold_ttl_ms());
    app.db
        .write_for_user(Some(job.user), move |c| {
            let live = storage::renew_lease(c, id, until)?;
            if live && let Some(h) = hold {
                ledger::extend(c, h, hold_until)?;
            }
            Ok::<_, Error>(live)
        })
        .unwrap_or(false)
}

fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) -> bool {
    let step = Duration::from_millis(50);
    let mut left = d;
    while !left.is_zero() {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let s = left.min(step);
        thread::sleep(s);
        left -= s;
    }
    !stop.load(Ordering::Relaxed)
}

/// Downloads the job's outputs into the media store (when configured),
/// renewing the lease between attempts. Outputs that cannot be kept stay
/// at the provider (`kept: false`): the user paid for the generation.
fn keep_outputs(app: &App, job: &JobRow, output: &Value, stop: &AtomicBool) -> Vec<crate::media::fetch::Outcome> {
    let urls = crate::media::output_urls(output);
    if urls.is_empty() || !app.config.media.keep_outputs {
        return Vec::new();
    }
    let used = if app.config.media.store_bytes_max > 0 {
        app.db.read(crate::media::storage::live_bytes).unwrap_or(u64::MAX)
    } else {
        0
    };
    crate::media::fetch::keep_all(&app.media, &urls, used, |wait| sleep_unless_stopped(wait, stop) && renew(app, job))
}

/// The user a job's settle locks: alone beside other users' writes, unless
/// a global daily cap makes every charge run alone
/// (`SpendCaps::lock_user`). The job's other writes (claim, lease, task,
/// failure, retry) are its user's alone either way.
fn charge_lock(app: &App, user: crate::domain::UserId) -> Option<crate::domain::UserId> {
    (app.config.limits.global_daily_cap == 0).then_some(user)
}

/// Settles the hold, stores the output and completes the job, in one
/// transaction. A job canceled meanwhile is left alone (its hold is gone).
fn complete(app: &App, job: &JobRow, mut done: Done, stop: &AtomicBool) {
    done.used = metered::carried(app, &done.info, std::mem::take(&mut done.used));
    let kept = keep_outputs(app, job, &done.output, stop);
    let (id, user, model) = (job.id, job.user, job.model.clone());
    let retention_days = app.config.media.retention_days;
    let today = app.guard.today();
    let lock = charge_lock(app, user);
    let result = app.db.write_for_user(lock, move |c| {
        let Some(cur) = storage::get(c, id)? else { return Ok(false) };
        if cur.status != JobStatus::Processing {
            return Ok(false);
        }
        // A copy per run: the writer may run this closure again.
        let mut output = done.output.clone();
        crate::media::attach(c, user, id, &mut output, &kept, retention_days)?;
        for not_kept in kept.iter().filter_map(|o| o.result.as_ref().err().map(|why| (&o.url, why))) {
            logs::write(
                c,
                &NewLog::system(
                    Level::Warn,
                    "job_output_not_kept",
                    json!({"job_id": id, "url": not_kept.0, "reason": not_kept.1}),
                ),
            )?;
        }
        // A job's hold knows its key and day; a free job counts today, keyless.
        let reservation = metered::Reservation {
            user,
            hold: cur.hold,
            bound: cur.estimated_cost,
            key: None,
            day: today,
            multiplier_micro: crate::domain::MULTIPLIER_ONE_MICRO,
            lock,
        };
        let log = NewLog::business(
            user,
            "job_completed",
            true,
            json!({"job_id": id, "model": model, "provider": done.info.provider, "latency_ms": done.info.latency_ms}),
        );
        let outcome = metered::settle_in(c, &reservation, done.cost, &done.description, &log, &done.used)?;
        storage::set_result(c, id, &output, outcome.charged, outcome.transaction_id)?;
        storage::set_status(c, id, JobStatus::Processing, JobStatus::Completed, "completed", Timestamp::now())?;
        super::emit_end(c, id, EventType::JobCompleted)?;
        Ok::<_, Error>(true)
    });
    app.job_changes.notify();
    match result {
        Ok(true) => {}
        Ok(false) => log::info!("job {id} finished after it was canceled; result discarded"),
        Err(e) => log::error!("job {id}: cannot record completion: {e}; recovery will retry it"),
    }
}

/// A permanent failure: `failed`, hold released, nothing charged.
fn fail(app: &App, job: &JobRow, code: &str, message: &str) {
    let (id, user, code, message) = (job.id, job.user, code.to_owned(), message.to_owned());
    let (failed, today) = (crate::usage::Metered::model(&job.model).failure(None), app.guard.today());
    let r = app.db.write_for_user(Some(user), move |c| -> Result<()> {
        let Some(cur) = storage::get(c, id)? else { return Ok(()) };
        if cur.status != JobStatus::Processing {
            return Ok(());
        }
        storage::set_status(c, id, JobStatus::Processing, JobStatus::Failed, &message, Timestamp::now())?;
        storage::set_error(c, id, &code, &message)?;
        if let Some(h) = cur.hold {
            ledger::release(c, h)?;
        }
        crate::usage::count(c, user, today, &failed)?;
        logs::write(
            c,
            &NewLog::business(
                user,
                "job_failed",
                false,
                json!({"job_id": id, "error": code, "message": message, "cost": 0}),
            ),
        )?;
        super::emit_end(c, id, EventType::JobFailed)?;
        Ok(())
    });
    app.job_changes.notify();
    if let Err(e) = r {
        log::error!("job {id}: cannot record failure: {e}");
    }
}

/// A provider failure: transient ones are retried with exponential backoff
/// and jitter until `max_attempts`; the rest fail the job.
fn failed_call(app: &App, job: &JobRow, e: ProviderError) {
    if let ProviderError::CircuitOpen { retry_in_ms } = e {
        // Nothing was called: wait for the circuit, without using an attempt.
        let (id, at) = (job.id, Timestamp::now().plus_ms(retry_in_ms as i64));
        let r = app.db.write_for_user(Some(job.user), move |c| -> Result<()> {
            let why = "waiting for the provider's circuit to close";
            if storage::set_status(c, id, JobStatus::Processing, JobStatus::Queued, why, Timestamp::now())? {
                storage::schedule(c, id, at)?;
                storage::refund_attempt(c, id)?;
            }
            Ok(())
        });
        if let Err(e) = r {
            log::error!("job {id}: cannot reschedule it: {e}");
        }
        return;
    }
    if !e.is_transient() || job.attempts >= job.max_attempts {
        let code = if e.is_client_error() {
            "provider_rejected"
        } else if matches!(e, ProviderError::Timeout) {
            "upstream_timeout"
        } else {
            "upstream_error"
        };
        let attempts = job.attempts;
        return fail(app, job, code, &format!("{e} (after {attempts} attempt(s))"));
    }
    let cfg = &app.config.jobs;
    let exp = cfg.backoff_base_ms.saturating_mul(1u64 << job.attempts.saturating_sub(1).min(20));
    let delay = exp.min(cfg.backoff_max_ms);
    let jitter = crate::support::token::random_bytes::<2>().map(|b| u64::from(u16::from_le_bytes(b))).unwrap_or(0)
        % (delay / 2 + 1);
    let at = Timestamp::now().plus_ms((delay + jitter) as i64);
    let (id, message) = (job.id, format!("attempt {} failed ({e}); retrying in {} ms", job.attempts, delay + jitter));
    let r = app.db.write_for_user(Some(job.user), move |c| -> Result<()> {
        if storage::set_status(c, id, JobStatus::Processing, JobStatus::Queued, &message, Timestamp::now())? {
            storage::schedule(c, id, at)?;
        }
        Ok(())
    });
    if let Err(e) = r {
        log::error!("job {id}: cannot schedule its retry: {e}");
    }
}
