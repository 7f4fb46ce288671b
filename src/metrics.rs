//! Process metrics in the Prometheus text format, through the `prometheus`
//! crate. One registry per process: counters are cheap atomics, safe to bump
//! from any thread. Gauges that mirror database state are set at scrape time.
//! This module only counts; it never decides anything.

use prometheus::{
    Counter, Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use std::sync::OnceLock;

pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub credits_charged: IntCounter,
    pub credits_refused: IntCounterVec,
    pub guard_refusals: IntCounterVec,
    pub edge_rejections: IntCounterVec,
    pub holds_active: IntGauge,
    pub wal_frames: IntGauge,
    pub writer_group_size: HistogramVec,
    pub writer_commit_seconds: HistogramVec,
    pub writer_fsync_seconds: HistogramVec,
    pub writer_replays: IntCounter,
    /// PostgreSQL: round trips of one write transaction, its BEGIN and
    /// COMMIT included (all of them inside the write lock).
    pub pg_write_round_trips: HistogramVec,
    /// PostgreSQL: how long one write transaction held the write lock.
    pub pg_write_lock_held_seconds: HistogramVec,
    /// Credits a settle could not charge because the cost passed its hold.
    pub settle_capped_credits: Counter,
    pub provider_calls: IntCounterVec,
    /// Upstream keys taken out of service because the provider refused them.
    pub channel_keys_disabled: IntCounterVec,
    pub provider_duration: HistogramVec,
    pub jobs: IntGaugeVec,
    pub webhook_attempts: IntCounterVec,
    pub media_downloads: IntCounterVec,
    /// Verified payment-provider events, by outcome (granted, duplicate,
    /// amount_mismatch, ...), and bodies refused for their signature.
    pub payment_events: IntCounterVec,
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn histogram(r: &Registry, name: &str, help: &str, labels: &[&str], buckets: Vec<f64>) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels).expect("valid metric");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
}

impl Metrics {
    fn new() -> Metrics {
        let r = Registry::new_custom(Some("tollgate".into()), None).expect("registry");
        let latency = vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
        let credits_charged =
            IntCounter::new("credits_charged_total", "Credits charged (consume rows)").expect("metric");
        r.register(Box::new(credits_charged.clone())).expect("unique metric");
        let holds_active = IntGauge::new("holds_active", "Active credit holds").expect("metric");
        let wal_frames =
            IntGauge::new("wal_frames", "Frames in the SQLite WAL at the last background checkpoint").expect("metric");
        r.register(Box::new(holds_active.clone())).expect("unique metric");
        r.register(Box::new(wal_frames.clone())).expect("unique metric");
        let writer_replays = IntCounter::new(
            "writer_replays_total",
            "Groups rolled back and run again because a closure failed after writing",
        )
        .expect("metric");
        r.register(Box::new(writer_replays.clone())).expect("unique metric");
        let settle_capped_credits = Counter::new(
            "settle_capped_credits_total",
            "Credits not charged because a call cost more than its hold (a price bound too low)",
        )
        .expect("metric");
        r.register(Box::new(settle_capped_credits.clone())).expect("unique metric");
        let jobs = IntGaugeVec::new(Opts::new("jobs", "Jobs by status"), &["status"]).expect("metric");
        r.register(Box::new(jobs.clone())).expect("unique metric");
        Metrics {
            http_requests: counter_vec(
                &r,
                "http_requests_total",
                "HTTP requests by route and status",
                &["route", "method", "status"],
            ),
            http_duration: histogram(
                &r,
                "http_request_duration_seconds",
                "HTTP request latency",
                &["route"],
                latency.clone(),
            ),
            credits_charged,
            writer_replays,
            settle_capped_credits,
            credits_refused: counter_vec(&r, "credits_refused_total", "Charges refused, by reason", &["reason"]),
            guard_refusals: counter_vec(&r, "guard_refusals_total", "Requests refused by a guard", &["guard"]),
            edge_rejections: counter_vec(
                &r,
                "http_rejections_total",
                "Requests answered and closed by the connection layer (malformed, too large, too slow)",
                &["code"],
            ),
            holds_active,
            wal_frames,
            writer_group_size: histogram(
                &r,
                "writer_group_size",
                "Writes committed together in one transaction",
                &[],
                vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0],
            ),
            writer_commit_seconds: histogram(
                &r,
                "writer_commit_seconds",
                "Time to run and commit one group",
                &[],
                latency.clone(),
            ),
            pg_write_round_trips: histogram(
                &r,
                "pg_write_round_trips",
                "PostgreSQL: round trips of one write transaction, BEGIN and COMMIT included",
                &[],
                vec![2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 16.0, 20.0, 25.0, 32.0, 48.0, 64.0, 128.0],
            ),
            pg_write_lock_held_seconds: histogram(
                &r,
                "pg_write_lock_held_seconds",
                "PostgreSQL: time one write transaction held the write lock, from taking it to the commit's answer",
                &[],
                latency.clone(),
            ),
            writer_fsync_seconds: histogram(
                &r,
                "writer_fsync_seconds",
                "Time of one fsync of the WAL, which makes every group committed before it durable",
                &[],
                latency.clone(),
            ),
            provider_calls: counter_vec(
                &r,
                "provider_calls_total",
                "Calls to model providers",
                &["provider", "status"],
            ),
            channel_keys_disabled: counter_vec(
                &r,
                "channel_keys_disabled_total",
                "Upstream keys disabled because the provider refused them (401, 403, quota)",
                &["channel"],
            ),
            provider_duration: histogram(
                &r,
                "provider_call_duration_seconds",
                "Provider call latency",
                &["provider"],
                latency,
            ),
            jobs,
            webhook_attempts: counter_vec(
                &r,
                "webhook_attempts_total",
                "Webhook delivery attempts, by outcome (delivered, retry, failed)",
                &["outcome"],
            ),
            media_downloads: counter_vec(
                &r,
                "media_downloads_total",
                "Job outputs downloaded into the media store, by outcome (kept, retry, not_kept)",
                &["outcome"],
            ),
            payment_events: counter_vec(
                &r,
                "payment_events_total",
                "Payment webhook bodies, by outcome (granted, duplicate, refunded, amount_mismatch, ..., bad_signature)",
                &["outcome"],
            ),
            registry: r,
        }
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            log::error!("cannot encode metrics: {e}");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// The process-wide metrics.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}
