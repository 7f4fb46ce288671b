//! Sending events: one dispatcher thread and a bounded pool of senders.
//!
//! The dispatcher fans committed events out into deliveries (one writer
//! transaction moves them and the cursor together, so a crash neither
//! loses nor doubles one), then hands due deliveries to the senders through
//! a bounded queue, at most `endpoint_concurrency_max` per endpoint at once.
//! A sender signs and posts one delivery with a whole-attempt timeout and
//! records the outcome: delivered (2xx), retried later with exponential
//! backoff and jitter, or failed after `attempts_max`. Delivery is
//! at-least-once: a process killed after the receiver answered but before
//! the outcome committed sends it again, with the same event id.

use super::signing::Secret;
use super::storage::{self, Attempt, DeliveryRow, EndpointRow};
use super::{endpoints, url_guard};
use crate::config::EventsConfig;
use crate::domain::{DeliveryId, EndpointId, Timestamp};
use crate::error::Error;
use crate::logs::{self, Level, NewLog};
use crate::storage::Db;
use crate::support::notify::Notifier;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// Events moved into deliveries per writer transaction.
const FAN_OUT_BATCH_MAX: usize = 500;
/// Due deliveries read per dispatcher pass.
const DUE_BATCH_MAX: usize = 200;
/// Longest the dispatcher sleeps before looking again.
const IDLE_WAIT_MS_MAX: i64 = 250;
/// Of a receiver's answer, only this much is read (then dropped).
const RESPONSE_BYTES_MAX: u64 = 64 << 10;
/// Longest error text kept on a delivery.
const ERROR_CHARS_MAX: usize = 300;

/// Deliveries being sent now, by endpoint: what the concurrency bound counts.
#[derive(Default)]
struct InFlight {
    ids: HashSet<DeliveryId>,
    per_endpoint: HashMap<EndpointId, usize>,
}

struct Task {
    delivery: DeliveryRow,
    url: String,
    secret: Secret,
}

pub struct Deliverer {
    stop: Arc<AtomicBool>,
    wake: Arc<Notifier>,
    handles: Vec<JoinHandle<()>>,
}

/// What the sender works with, and nothing more of the service.
pub struct Handles {
    pub db: Db,
    pub config: EventsConfig,
    /// Wakes the dispatcher (a sender finished, an admin redelivered).
    pub wake: Arc<Notifier>,
    /// Opens the signing secrets stored sealed.
    pub seal_key: Option<crate::support::sealed::SealKey>,
}

impl Deliverer {
    /// Starts the dispatcher and the senders. `config_secrets` are the
    /// secrets of the config file's endpoints (`endpoints::sync_config`).
    pub fn start(handles: Handles, config_secrets: HashMap<EndpointId, Secret>) -> Result<Deliverer, String> {
        let app = Arc::new(handles);
        let cfg = app.config.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let in_flight = Arc::new(Mutex::new(InFlight::default()));
        let (tx, rx) = sync_channel::<Task>(cfg.delivery_workers);
        let rx = Arc::new(Mutex::new(rx));
        let agent = url_guard::agent(
            ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_millis(cfg.attempt_timeout_ms)))
                .max_redirects(0)
                .http_status_as_error(false)
                .user_agent("tollgate-webhooks")
                .build(),
            cfg.allow_private_urls,
        );
        let mut handles = Vec::new();
        for i in 0..cfg.delivery_workers {
            let (app, rx, stop, in_flight, agent) =
                (Arc::clone(&app), Arc::clone(&rx), Arc::clone(&stop), Arc::clone(&in_flight), agent.clone());
            handles.push(spawn(format!("webhook-{i}"), move || send_loop(&app, &rx, &stop, &in_flight, &agent))?);
        }
        let wake = Arc::clone(&app.wake);
        let stop2 = Arc::clone(&stop);
        handles.push(spawn("webhook-dispatch".into(), move || {
            let mut secrets = config_secrets;
            while !stop2.load(Ordering::Relaxed) {
                if let Err(e) = fan_out(&app) {
                    log::error!("webhook fan-out failed: {e}");
                }
                let wait = match dispatch(&app, &mut secrets, &in_flight, &tx) {
                    Ok(w) => w,
                    Err(e) => {
                        log::error!("webhook dispatch failed: {e}");
                        IDLE_WAIT_MS_MAX
                    }
                };
                app.wake.wait(Duration::from_millis(wait as u64));
            }
        })?);
        Ok(Deliverer { stop, wake, handles })
    }

    /// Stops after the attempts in flight; pending deliveries wait for the
    /// next start.
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake.notify();
        for h in self.handles {
            let _ = h.join();
        }
    }
}

fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, String> {
    thread::Builder::new().name(name).spawn(f).map_err(|e| format!("cannot start a webhook thread: {e}"))
}

/// Moves events past the cursor into deliveries for the endpoints that
/// existed when each event happened and want its type.
fn fan_out(app: &Handles) -> crate::error::Result<()> {
    loop {
        if app.db.read(|c| storage::events_to_fan_out(c, 1))?.is_empty() {
            return Ok(());
        }
        let moved = app.db.write(|c| {
            let events = storage::events_to_fan_out(c, FAN_OUT_BATCH_MAX)?;
            let hooks = storage::live_endpoints(c)?;
            let now = Timestamp::now();
            for e in &events {
                for h in hooks.iter().filter(|h| h.created_at <= e.created_at && endpoints::wants(h, &e.etype)) {
                    storage::insert_delivery(c, e.id, h.id, now)?;
                }
            }
            if let Some(last) = events.last() {
                storage::set_fanned_out_through(c, last.id)?;
            }
            Ok::<_, Error>(events.len())
        })?;
        if moved < FAN_OUT_BATCH_MAX {
            return Ok(());
        }
    }
}

/// Hands due deliveries to the senders; returns how long to sleep (ms).
fn dispatch(
    app: &Handles,
    secrets: &mut HashMap<EndpointId, Secret>,
    in_flight: &Mutex<InFlight>,
    tx: &std::sync::mpsc::SyncSender<Task>,
) -> crate::error::Result<i64> {
    let now = Timestamp::now();
    let (due, hooks) =
        app.db.read(|c| Ok::<_, Error>((storage::due(c, now, DUE_BATCH_MAX)?, storage::live_endpoints(c)?)))?;
    let hooks: HashMap<EndpointId, EndpointRow> = hooks.into_iter().map(|h| (h.id, h)).collect();
    let per_endpoint_max = app.config.endpoint_concurrency_max;
    let mut queue_full = false;
    for d in due {
        let Ok(mut f) = in_flight.lock() else { break };
        let busy = f.per_endpoint.get(&d.endpoint).copied().unwrap_or(0);
        if f.ids.contains(&d.id) || busy >= per_endpoint_max {
            continue;
        }
        let Some(hook) = hooks.get(&d.endpoint) else { continue };
        let secret = match &hook.secret {
            Some(stored) => match crate::support::sealed::reveal(app.seal_key.as_ref(), stored)
                .and_then(|text| Secret::parse(&text).map_err(|e| e.to_string()))
            {
                Ok(s) => s,
                Err(e) => {
                    log::error!("webhook {}: its stored secret is unusable ({e})", hook.id);
                    continue;
                }
            },
            None => match secrets.get(&hook.id) {
                Some(s) => s.clone(),
                None => continue, // a config endpoint this process has no secret for
            },
        };
        let id = d.id;
        match tx.try_send(Task { delivery: d, url: hook.url.clone(), secret }) {
            Ok(()) => {
                f.ids.insert(id);
                *f.per_endpoint.entry(hook.id).or_default() += 1;
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                queue_full = true;
                break;
            }
        }
    }
    if queue_full {
        return Ok(IDLE_WAIT_MS_MAX);
    }
    let next = app.db.read(storage::next_due)?;
    Ok(next.map_or(IDLE_WAIT_MS_MAX, |t| (t.millis() - Timestamp::now().millis()).clamp(1, IDLE_WAIT_MS_MAX)))
}

fn send_loop(
    app: &Handles,
    rx: &Mutex<Receiver<Task>>,
    stop: &AtomicBool,
    in_flight: &Mutex<InFlight>,
    agent: &ureq::Agent,
) {
    loop {
        let next = match rx.lock() {
            Ok(r) => r.recv_timeout(Duration::from_millis(100)),
            Err(_) => return,
        };
        match next {
            Ok(task) => {
                let (id, endpoint) = (task.delivery.id, task.delivery.endpoint);
                send(app, agent, &task);
                if let Ok(mut f) = in_flight.lock() {
                    f.ids.remove(&id);
                    if let Some(n) = f.per_endpoint.get_mut(&endpoint) {
                        *n = n.saturating_sub(1);
                    }
                }
                app.wake.notify();
            }
            Err(_) if stop.load(Ordering::Relaxed) => return,
            Err(_) => {}
        }
    }
}

/// Exponential backoff after `failures` failed attempts, plus up to half
/// again of jitter, so receivers coming back are not hit all at once.
pub fn backoff_ms(cfg: &EventsConfig, failures: u32) -> u64 {
    let exp = cfg.backoff_base_ms.saturating_mul(1u64 << failures.saturating_sub(1).min(30));
    let delay = exp.min(cfg.backoff_max_ms);
    let jitter = crate::support::token::random_bytes::<4>().map(u32::from_le_bytes).map(u64::from).unwrap_or(0)
        % (delay / 2 + 1);
    delay + jitter
}

/// One attempt, and its outcome recorded.
fn send(app: &Handles, agent: &ureq::Agent, task: &Task) {
    let cfg = &app.config;
    let d = &task.delivery;
    let (status, error) = match attempt(agent, cfg, task) {
        Ok(s) if (200..300).contains(&s) => (Some(s), None),
        Ok(s) => (Some(s), Some(format!("the receiver answered {s}"))),
        Err(e) => (None, Some(e)),
    };
    let now = Timestamp::now();
    let failures = d.attempts + 1;
    let outcome = match (error, status) {
        (None, Some(s)) => Attempt::Delivered { status: s },
        (Some(error), _) if failures >= cfg.attempts_max => Attempt::Failed { status, error },
        (Some(error), _) => Attempt::Retry { status, error, at: now.plus_ms(backoff_ms(cfg, failures) as i64) },
        (None, None) => return,
    };
    let label = match outcome {
        Attempt::Delivered { .. } => "delivered",
        Attempt::Retry { .. } => "retry",
        Attempt::Failed { .. } => "failed",
    };
    let (id, event, url) = (d.id, d.event.uid.clone(), task.url.clone());
    let r = app.db.write(move |c| {
        let changed = storage::record(c, id, &outcome, Timestamp::now())?;
        if changed && let Attempt::Failed { status, error } = &outcome {
            logs::write(
                c,
                &NewLog::system(
                    Level::Warn,
                    "webhook_delivery_failed",
                    json!({"delivery_id": id, "event_id": event, "url": url, "attempts": failures,
                           "last_status_code": status, "error": error}),
                ),
            )?;
        }
        Ok::<_, Error>(())
    });
    if let Err(e) = r {
        log::error!("webhook delivery {id}: cannot record the attempt: {e}");
    }
    crate::metrics::global().webhook_attempts.with_label_values(&[label]).inc();
}

/// Posts the event, signed; the receiver's status, or why there was none.
fn attempt(agent: &ureq::Agent, cfg: &EventsConfig, task: &Task) -> Result<u16, String> {
    url_guard::check(&task.url, cfg.allow_private_urls)?;
    let body = super::wire_body(&task.delivery.event);
    let ts = Timestamp::now().millis() / 1000;
    let uid = &task.delivery.event.uid;
    let signature = task.secret.sign(uid, ts, &body);
    let mut resp = agent
        .post(&task.url)
        .header("content-type", "application/json")
        .header("webhook-id", uid)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", signature)
        .send(body.as_bytes())
        .map_err(|e| e.to_string().chars().take(ERROR_CHARS_MAX).collect::<String>())?;
    let _ = resp.body_mut().with_config().limit(RESPONSE_BYTES_MAX).read_to_vec();
    Ok(resp.status().as_u16())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_schedule_retries_for_more_than_a_day() {
        let cfg = EventsConfig::default();
        // Without jitter (its lower bound): the waits between attempts.
        let total_ms: u64 = (1..cfg.attempts_max)
            .map(|f| cfg.backoff_base_ms.saturating_mul(1 << (f - 1).min(30)).min(cfg.backoff_max_ms))
            .sum();
        assert!(total_ms >= 24 * 3_600_000, "only {} h of retries", total_ms / 3_600_000);
        assert!(backoff_ms(&cfg, 1) >= cfg.backoff_base_ms && backoff_ms(&cfg, 1) <= cfg.backoff_base_ms * 3 / 2);
        assert!(backoff_ms(&cfg, 40) <= cfg.backoff_max_ms * 3 / 2, "capped, even far out");
    }
}
