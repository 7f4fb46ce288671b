//! `[jobs]`: the queue, its workers, their fairness and the job event
//! streams. Reads settings only; `jobs` acts on them.

use super::{ConfigError, ServerConfig, bad};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsConfig {
    pub workers: usize,
    pub attempts_max: u32,
    /// Queued jobs (all users) before new ones get 429 `queue_full`.
    pub queue_max: usize,
    /// Queued jobs of one user before their next gets 429 `too_many_jobs`,
    /// so that one user cannot fill the queue for everyone.
    pub queued_per_user_max: usize,
    /// Jobs of one user processing at once, across every worker (and every
    /// instance); their other jobs wait while other users' jobs run.
    pub processing_per_user_max: usize,
    /// First retry delay; doubles per attempt, with jitter.
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// Provider task polling interval bounds (grows from min to max).
    pub poll_interval_min_ms: u64,
    pub poll_interval_max_ms: u64,
    /// An asynchronous provider task that takes longer is canceled and failed.
    pub task_timeout_s: u64,
    /// How long a worker owns a claimed job without renewing it.
    pub lease_s: u64,
    /// Open `GET /v1/jobs/{id}/events` streams, all users together, and per
    /// user (429 `too_many_streams` past either). Each holds an HTTP worker
    /// while it is open, so at most half the HTTP workers are given to
    /// streams, whatever this says.
    pub streams_max: usize,
    pub streams_per_user_max: usize,
    /// A stream ends after this long with a reconnect hint; the client
    /// resumes with `Last-Event-ID` and misses nothing.
    pub stream_duration_s_max: u64,
    /// A job's `input`, as stored (413 `payload_too_large` past it): what
    /// a client sends beyond the fields a job reads is kept, so it is
    /// bounded.
    pub input_bytes_max: usize,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            workers: 4,
            attempts_max: 3,
            queue_max: 10_000,
            queued_per_user_max: 100,
            processing_per_user_max: 2,
            backoff_base_ms: 2_000,
            backoff_max_ms: 300_000,
            poll_interval_min_ms: 1_000,
            poll_interval_max_ms: 10_000,
            task_timeout_s: 1_800,
            lease_s: 300,
            streams_max: 16,
            streams_per_user_max: 4,
            stream_duration_s_max: 300,
            input_bytes_max: 64 * 1024,
        }
    }
}

impl JobsConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        let j = self;
        if j.workers > 256 || j.attempts_max == 0 || j.attempts_max > 100 || j.queue_max == 0 {
            return bad("jobs", "workers must be at most 256, attempts_max from 1 to 100, queue_max at least 1");
        }
        if j.queued_per_user_max == 0 || j.processing_per_user_max == 0 {
            return bad(
                "jobs.queued_per_user_max / jobs.processing_per_user_max",
                "must be at least 1 (a user needs room for one job)",
            );
        }
        if j.backoff_base_ms == 0 || j.poll_interval_min_ms == 0 || j.poll_interval_max_ms < j.poll_interval_min_ms {
            return bad(
                "jobs",
                "backoff_base_ms and poll_interval_min_ms must be positive, poll_interval_max_ms >= poll_interval_min_ms",
            );
        }
        if j.task_timeout_s == 0 || j.lease_s < 5 {
            return bad("jobs.task_timeout_s / jobs.lease_s", "task_timeout_s must be positive and lease_s at least 5");
        }
        if j.streams_per_user_max == 0 || j.streams_max < j.streams_per_user_max {
            return bad(
                "jobs.streams_max / streams_per_user_max",
                "at least 1 each, and the total at least the per-user",
            );
        }
        if j.input_bytes_max < 1024 || j.input_bytes_max > 16 << 20 {
            return bad("jobs.input_bytes_max", "must be between 1024 and 16777216 bytes");
        }
        if j.stream_duration_s_max == 0 || j.stream_duration_s_max > 86_400 {
            return bad("jobs.stream_duration_s_max", "must be between 1 and 86400 seconds");
        }
        Ok(())
    }

    /// Streams allowed at once: `streams_max`, but never more than half the
    /// HTTP workers (the rest keep answering everything else).
    pub fn streams_max_effective(&self, server: &ServerConfig) -> usize {
        self.streams_max.min(server.http_workers_effective() / 2).max(1)
    }
}
