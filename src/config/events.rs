//! `[events]` and `[[webhooks]]`: the outbox's retention, the webhook
//! sender's pool, retries and guard, and the endpoints the file declares.
//! Reads settings only; `events` acts on them.

use super::{ConfigError, bad};
use crate::domain::{EVENT_TYPES_MAX, EventType};
use serde::{Deserialize, Serialize};

/// Events out: the outbox, webhook delivery and its retry schedule.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// `credits.low` is sent when a charge or hold takes a user's available
    /// credits from at least this to below it; 0 = never.
    pub credits_low_threshold: i64,
    /// Threads that send webhook requests.
    pub delivery_workers: usize,
    /// Requests in flight to one endpoint at once.
    pub endpoint_concurrency_max: usize,
    /// Whole time of one attempt (connect, send, answer).
    pub attempt_timeout_ms: u64,
    /// Attempts per delivery before it is marked failed. With the default
    /// backoff, 22 attempts span more than 24 hours.
    pub attempts_max: u32,
    /// Delay after the first failure; doubles per attempt up to the max,
    /// plus up to half again of jitter.
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// Webhook URLs that resolve to loopback, private, link-local or other
    /// non-public addresses are refused unless this is true.
    pub allow_private_urls: bool,
    /// Events whose deliveries have all finished are pruned after this many
    /// days; 0 keeps them forever.
    pub retention_days: u32,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            credits_low_threshold: 0,
            delivery_workers: 4,
            endpoint_concurrency_max: 4,
            attempt_timeout_ms: 10_000,
            attempts_max: 22,
            backoff_base_ms: 10_000,
            backoff_max_ms: 7_200_000,
            allow_private_urls: false,
            retention_days: 30,
        }
    }
}

/// A webhook endpoint from the config file (`[[webhooks]]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    /// The environment variable holding the signing secret (`whsec_...`).
    pub secret_env: String,
    /// Event types sent to it; empty = every type.
    #[serde(default)]
    pub events: Vec<EventType>,
    #[serde(default)]
    pub description: String,
}

impl EventsConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        let e = self;
        if e.credits_low_threshold < 0 {
            return bad("events.credits_low_threshold", "must not be negative (0 turns credits.low off)");
        }
        if e.delivery_workers == 0 || e.delivery_workers > 64 || e.endpoint_concurrency_max == 0 {
            return bad(
                "events.delivery_workers / endpoint_concurrency_max",
                "delivery_workers 1..=64, concurrency at least 1",
            );
        }
        if e.attempts_max == 0 || e.attempts_max > 100 || e.backoff_base_ms == 0 || e.backoff_max_ms < e.backoff_base_ms
        {
            return bad(
                "events.attempts_max / backoff_*",
                "attempts 1..=100, backoff_base_ms positive and at most backoff_max_ms",
            );
        }
        if e.attempt_timeout_ms < 100 || e.attempt_timeout_ms > 300_000 {
            return bad("events.attempt_timeout_ms", "must be between 100 and 300000");
        }
        Ok(())
    }
}

impl WebhookConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.events.len() > EVENT_TYPES_MAX {
            return Err(ConfigError(format!("invalid webhook {}: at most {EVENT_TYPES_MAX} event types", self.url)));
        }
        if self.secret_env.is_empty() {
            return Err(ConfigError(format!("invalid webhook {}: secret_env must name a variable", self.url)));
        }
        Ok(())
    }

    /// The event types' wire names, as endpoints store them.
    pub fn event_names(&self) -> Vec<String> {
        self.events.iter().map(|t| t.as_str().to_owned()).collect()
    }
}
