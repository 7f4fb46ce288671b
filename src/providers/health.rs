//! The health of upstream keys: what each did lately (latency, last error)
//! for the console, and the taking out of service of a key the provider
//! refused (401, 403, 402, an exhausted quota): stored as `failed` with the
//! reason, a system log and a `channel.disabled` event in one transaction.
//! A failed key comes back when a probe call succeeds (`probe`) or an
//! administrator enables it. Cooling down after 429 or 5xx is the
//! breaker's, not this module's.

use super::ProviderError;
use super::store;
use crate::domain::{EventType, Timestamp};
use crate::error::Result;
use crate::logs::{self, Level, NewLog};
use crate::storage::Db;
use serde::Serialize;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Mutex;

/// What a key did lately (this instance's view since it started).
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema)]
pub struct KeyStats {
    pub calls: u64,
    pub failures: u64,
    /// Of the last call.
    pub last_latency_ms: Option<u64>,
    pub last_error: Option<String>,
    pub last_used_at: Option<crate::domain::Timestamp>,
}

#[derive(Default)]
pub struct Health {
    stats: Mutex<HashMap<String, KeyStats>>,
}

impl Health {
    fn with(&self, key: &str, f: impl FnOnce(&mut KeyStats)) {
        let mut map = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        // Every call lands here: no allocation once the key is known.
        match map.get_mut(key) {
            Some(s) => f(s),
            None => f(map.entry(key.to_owned()).or_default()),
        }
    }

    pub fn succeeded(&self, key: &str, latency_ms: u64) {
        self.with(key, |s| {
            s.calls += 1;
            s.last_latency_ms = Some(latency_ms);
            s.last_used_at = Some(Timestamp::now());
        });
    }

    pub fn failed(&self, key: &str, latency_ms: u64, e: &ProviderError) {
        self.failed_with(key, latency_ms, &e.to_string());
    }

    pub fn failed_with(&self, key: &str, latency_ms: u64, error: &str) {
        let message: String = error.chars().take(300).collect();
        self.with(key, |s| {
            s.calls += 1;
            s.failures += 1;
            s.last_latency_ms = Some(latency_ms);
            s.last_error = Some(message);
            s.last_used_at = Some(Timestamp::now());
        });
    }

    pub fn stats(&self, key: &str) -> KeyStats {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).get(key).cloned().unwrap_or_default()
    }
}

/// What `channel.disabled` carries.
#[derive(Serialize)]
struct Disabled<'a> {
    channel_id: &'a str,
    channel: &'a str,
    key_id: &'a str,
    reason: &'a str,
}

/// Marks `key` failed with why the provider refused it; true when it was
/// enabled until now (a key refused by two calls at once is disabled, and
/// announced, once). A channel with no key (`key` = the channel's id) has
/// nothing to disable.
pub fn disable(db: &Db, channel_id: &str, channel: &str, key: &str, why: &ProviderError) -> Result<bool> {
    let reason: String = why.to_string().chars().take(300).collect();
    let (channel_id, channel, key) = (channel_id.to_owned(), channel.to_owned(), key.to_owned());
    db.write_once(move |conn| {
        let Some(mut row) = store::key(conn, &key)? else { return Ok(false) };
        if row.status != "enabled" {
            return Ok(false);
        }
        row.set_status("failed", Some(reason.clone()));
        store::update_key(conn, &row)?;
        store::bump_version(conn)?;
        logs::write(
            conn,
            &NewLog::system(
                Level::Error,
                "channel_key_disabled",
                json!({"channel_id": channel_id, "channel": channel, "key_id": key, "last4": row.last4, "reason": reason}),
            ),
        )?;
        crate::events::emit(
            conn,
            EventType::ChannelDisabled,
            None,
            &Disabled { channel_id: &channel_id, channel: &channel, key_id: &key, reason: &reason },
        )?;
        Ok(true)
    })
}

/// Enables `key` again after a probe call succeeded (only a key health
/// disabled: one an administrator disabled stays so).
pub fn recovered(db: &Db, channel: &str, key: &str) -> Result<bool> {
    let (channel, key) = (channel.to_owned(), key.to_owned());
    db.write_once(move |conn| {
        let Some(mut row) = store::key(conn, &key)? else { return Ok(false) };
        if row.status != "failed" {
            return Ok(false);
        }
        row.set_status("enabled", None);
        store::update_key(conn, &row)?;
        store::bump_version(conn)?;
        logs::write(
            conn,
            &NewLog::system(
                Level::Info,
                "channel_key_enabled",
                json!({"channel": channel, "key_id": key, "by": "probe"}),
            ),
        )?;
        Ok(true)
    })
}
