//! `GET /v1/jobs/{id}/events`: a job's life as server-sent events.
//!
//! First a `retry:` hint, then every transition so far (`event: status`,
//! `id:` = the transition's id), then each new one as it commits, then the
//! final job object (`event: job`), and the stream ends. A client that
//! reconnects with `Last-Event-ID` gets only what it missed. Each open
//! stream holds an HTTP worker, so streams are bounded in total and per
//! user, and each ends after `jobs.stream_duration_s_max` (the client
//! reconnects and resumes). Comments keep idle streams alive and find
//! clients that left.

use crate::domain::{JobId, UserId};
use crate::error::Error;
use crate::http::error::ApiError;
use crate::http::response::Response;
use crate::http::route::{Access, Ctx, Route, doc, route};
use crate::http::state::HttpState;
use crate::jobs;
use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The job_events routes, in the order the router tries them.
pub static ROUTES: &[Route] = &[route(
    "GET",
    "/v1/jobs/{id}/events",
    Access::User,
    stream,
    doc(
        "The job's transitions as server-sent events, then the final job (Last-Event-ID resumes)",
        None,
        200,
        "EventStream",
    ),
)];

/// The reconnect delay suggested to clients.
const RETRY_MS: u64 = 2_000;
/// A comment is sent after this much silence.
const KEEPALIVE_S: u64 = 15;
/// Longest wait for a change before the database is read again.
const POLL_MS_MAX: u64 = 1_000;

/// Open streams, in total and per user.
#[derive(Default)]
pub struct Streams {
    open: Mutex<(usize, HashMap<UserId, usize>)>,
}

impl Streams {
    fn try_open(&self, user: UserId, total_max: usize, per_user_max: usize) -> Result<(), ApiError> {
        let Ok(mut g) = self.open.lock() else { return Err(Error::Internal("stream count poisoned".into()).into()) };
        let mine = g.1.get(&user).copied().unwrap_or(0);
        if g.0 >= total_max || mine >= per_user_max {
            let mut e = ApiError::refuse(
                "too_many_streams",
                format!(
                    "At most {per_user_max} job event streams per user and {total_max} in all may be open; close one or poll GET /v1/jobs/{{id}}."
                ),
            );
            e.retry_after_s = Some(RETRY_MS / 1000);
            return Err(e);
        }
        g.0 += 1;
        *g.1.entry(user).or_default() += 1;
        Ok(())
    }

    fn close(&self, user: UserId) {
        if let Ok(mut g) = self.open.lock() {
            g.0 = g.0.saturating_sub(1);
            if let Some(n) = g.1.get_mut(&user) {
                *n -= 1;
                if *n == 0 {
                    g.1.remove(&user);
                }
            }
        }
    }
}

pub fn stream(ctx: &Ctx) -> Result<Response, ApiError> {
    let user = ctx.user()?.id;
    let id = JobId::parse(ctx.param(0)).ok_or_else(|| Error::not_found("job"))?;
    let after = match ctx.req.header("last-event-id").map(str::trim) {
        None | Some("") => 0,
        Some(s) => s.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            ApiError::refuse("invalid_request", "Last-Event-ID must be an id this stream sent.")
                .with_param("Last-Event-ID")
        })?,
    };
    // A job of another user is 404 before any stream slot is taken.
    let first = jobs::stream_step(&ctx.app.db, user, id, after)?;
    let cfg = &ctx.app.config.jobs;
    let total_max = cfg.streams_max_effective(&ctx.app.config.server);
    ctx.http.job_streams.try_open(user, total_max, cfg.streams_per_user_max)?;
    let mut s = JobStream {
        http: Arc::clone(ctx.http),
        user,
        job: id,
        after,
        buf: format!("retry: {RETRY_MS}\n\n").into_bytes(),
        pos: 0,
        done: false,
        deadline: Instant::now() + Duration::from_secs(cfg.stream_duration_s_max),
        last_sent: Instant::now(),
    };
    s.push(first);
    Ok(Response::event_stream(Box::new(s)))
}

struct JobStream {
    http: Arc<HttpState>,
    user: UserId,
    job: JobId,
    after: i64,
    buf: Vec<u8>,
    pos: usize,
    done: bool,
    deadline: Instant,
    last_sent: Instant,
}

impl JobStream {
    fn push(&mut self, step: jobs::StreamStep) {
        for (eid, data) in step.transitions {
            self.buf.extend_from_slice(format!("id: {eid}\nevent: status\ndata: {data}\n\n").as_bytes());
            self.after = eid;
        }
        if let Some(mut job) = step.last {
            if let Some(out) = job.get_mut("output") {
                crate::media::sign_output(&self.http.app.media, out);
            }
            self.buf.extend_from_slice(format!("id: {}\nevent: job\ndata: {job}\n\n", self.after).as_bytes());
            self.done = true;
        }
    }

    /// Waits for something to send; false when the stream should end.
    fn fill(&mut self) -> bool {
        loop {
            if self.done {
                return false;
            }
            let now = Instant::now();
            if now >= self.deadline {
                // The client reconnects after `retry` with Last-Event-ID.
                self.buf.extend_from_slice(b": stream time limit reached; reconnect with Last-Event-ID\n\n");
                self.done = true;
                return true;
            }
            match jobs::stream_step(&self.http.app.db, self.user, self.job, self.after) {
                Ok(step) => self.push(step),
                Err(e) => {
                    log::warn!("job event stream for {}: {e}", self.job);
                    self.done = true;
                    return false;
                }
            }
            if !self.buf.is_empty() {
                return true;
            }
            if self.last_sent.elapsed() >= Duration::from_secs(KEEPALIVE_S) {
                self.buf.extend_from_slice(b": keepalive\n\n");
                return true;
            }
            let left = self.deadline.saturating_duration_since(now);
            self.http.app.job_changes.wait(left.min(Duration::from_millis(POLL_MS_MAX)));
        }
    }
}

impl Read for JobStream {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.buf.len() {
            self.buf.clear();
            self.pos = 0;
            if !self.fill() && self.buf.is_empty() {
                return Ok(0);
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        self.last_sent = Instant::now();
        Ok(n)
    }
}

impl Drop for JobStream {
    fn drop(&mut self) {
        self.http.job_streams.close(self.user);
    }
}
