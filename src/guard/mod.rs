//! Cost guardrails: rate limits, the per-request cost cap, and the limits
//! behind the ledger's daily caps.
//!
//! Rate limits are in-memory token buckets (per user, per API key, per client
//! IP for login and signup) in bounded, sharded maps; login failures lock an
//! IP or an email out for a window. Daily caps are *enforced by the ledger*
//! inside the charging transaction; this module only says what they are.
//! This module never writes money and never calls a provider.

pub(crate) mod bounded;
pub mod bucket;
mod lockout;
pub mod storage;

use crate::auth::{Credential, CurrentUser};
use crate::config::{AuthConfig, LimitsConfig};
use crate::domain::{ApiKeyId, Credits, Timestamp, UserId};
use crate::error::{Error, Result};
use crate::ledger::SpendCaps;
use crate::logs::{self, Level, NewLog};
use crate::storage::Db;
use bounded::BoundedMap;
use bucket::{Bucket, Decision, Rate};
use lockout::Failures;
use serde::Serialize;
use serde_json::json;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

/// Entries per limiter map. A flood of random keys cannot grow a map past
/// this; at ~100 bytes an entry, each map stays under ~10 MiB.
pub const LIMITER_ENTRIES_MAX: usize = 100_000;
/// The largest rpm or burst an override may set.
pub const RATE_MAX: u32 = 1_000_000;

/// Milliseconds from a monotonic origin. Injectable so that tests can move
/// time instead of sleeping.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> u64;
}

pub struct SystemClock(Instant);

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock(Instant::now())
    }
}

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        self.0.elapsed().as_millis() as u64
    }
}

/// A clock that moves only when told to.
#[derive(Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn advance_ms(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Per-user overrides; `None` means the configured default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Overrides {
    pub rpm: Option<u32>,
    pub burst: Option<u32>,
    pub max_cost_per_request: Option<i64>,
    pub daily_cap: Option<i64>,
}

/// The limits in force for one user.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Effective {
    pub rpm: u32,
    pub burst: u32,
    /// 0 = no cap.
    pub max_cost_per_request: i64,
    /// 0 = no cap.
    pub daily_cap: i64,
}

pub struct Guard {
    limits: LimitsConfig,
    auth: AuthConfig,
    overrides: RwLock<HashMap<UserId, Overrides>>,
    users: BoundedMap<UserId, Bucket>,
    keys: BoundedMap<ApiKeyId, Bucket>,
    ips: BoundedMap<IpAddr, Bucket>,
    ip_failures: BoundedMap<IpAddr, Failures>,
    email_failures: BoundedMap<String, Failures>,
    clock: Arc<dyn Clock>,
}

impl Guard {
    pub fn new(limits: LimitsConfig, auth: AuthConfig, clock: Arc<dyn Clock>) -> Guard {
        Guard {
            limits,
            auth,
            overrides: RwLock::new(HashMap::new()),
            users: BoundedMap::new(LIMITER_ENTRIES_MAX),
            keys: BoundedMap::new(LIMITER_ENTRIES_MAX),
            ips: BoundedMap::new(LIMITER_ENTRIES_MAX),
            ip_failures: BoundedMap::new(LIMITER_ENTRIES_MAX),
            email_failures: BoundedMap::new(LIMITER_ENTRIES_MAX),
            clock,
        }
    }

    /// Loads the per-user overrides from the database (at start).
    pub fn load(&self, db: &Db) -> Result<()> {
        let all = db.read(|c| Ok::<_, Error>(storage::all_overrides(c)?))?;
        let mut map = self.overrides.write().unwrap_or_else(|p| p.into_inner());
        map.clear();
        map.extend(all);
        Ok(())
    }

    pub fn effective(&self, user: UserId) -> Effective {
        let o = self.overrides.read().unwrap_or_else(|p| p.into_inner()).get(&user).copied().unwrap_or_default();
        Effective {
            rpm: o.rpm.unwrap_or(self.limits.rpm),
            burst: o.burst.unwrap_or(self.limits.burst),
            max_cost_per_request: o.max_cost_per_request.unwrap_or(self.limits.max_cost_per_request),
            daily_cap: o.daily_cap.unwrap_or(self.limits.daily_cap),
        }
    }

    /// Stores a user's overrides and applies them at once.
    pub fn set_overrides(&self, db: &Db, user: UserId, o: Overrides) -> Result<Effective> {
        db.write(move |c| {
            if crate::ledger::storage::account(c, user)?.is_none() {
                return Err(Error::not_found("user"));
            }
            storage::put_overrides(c, user, &o, Timestamp::now())?;
            logs::write(c, &NewLog::business(user, "limits_changed", true, json!({ "overrides": o })))?;
            Ok(())
        })?;
        self.overrides.write().unwrap_or_else(|p| p.into_inner()).insert(user, o);
        Ok(self.effective(user))
    }

    /// Takes one token from the caller's bucket (and their API key's).
    pub fn check_rate(&self, user: &CurrentUser) -> Decision {
        let e = self.effective(user.id);
        let rate = Rate { rpm: e.rpm, burst: e.burst };
        let now = self.clock.now_ms();
        if let Credential::ApiKey(key) = user.via {
            let d = self.keys.with(&key, now, || Bucket::full(rate, now), |b| b.take(rate, now));
            if !d.allowed {
                return d;
            }
        }
        self.users.with(&user.id, now, || Bucket::full(rate, now), |b| b.take(rate, now))
    }

    /// Refuses a request whose cost bound is over the caller's cap.
    pub fn check_cost(&self, user: UserId, bound: Credits) -> Result<()> {
        let cap = self.effective(user).max_cost_per_request;
        if cap > 0 && bound.0 > cap {
            return Err(Error::MaxCostExceeded { bound, cap: Credits(cap) });
        }
        Ok(())
    }

    /// The caps the ledger enforces when this user is charged.
    pub fn spend_caps(&self, user: UserId) -> SpendCaps {
        let e = self.effective(user);
        SpendCaps {
            daily_cap: Credits::positive(e.daily_cap),
            global_daily_cap: Credits::positive(self.limits.global_daily_cap),
            day_utc_offset_minutes: self.limits.day_utc_offset_minutes,
        }
    }

    pub fn day_utc_offset_minutes(&self) -> i32 {
        self.limits.day_utc_offset_minutes
    }

    /// Before a login or signup: the client IP's rate, then any lockout of
    /// the IP or the email.
    pub fn check_login(&self, ip: Option<IpAddr>, email: &str) -> Result<()> {
        let now = self.clock.now_ms();
        let rate = Rate { rpm: self.auth.login_rpm_per_ip, burst: self.auth.login_rpm_per_ip };
        if let Some(ip) = ip {
            let d = self.ips.with(&ip, now, || Bucket::full(rate, now), |b| b.take(rate, now));
            if !d.allowed {
                return Err(Error::RateLimited {
                    retry_after_s: d.retry_after_s,
                    message: format!("Too many login attempts from this address. Retry in {} s.", d.retry_after_s),
                });
            }
            self.ip_failures.with(&ip, now, Failures::default, |f| f.check(now)).map_err(locked)?;
        }
        let email = email.trim().to_ascii_lowercase();
        self.email_failures.with(&email, now, Failures::default, |f| f.check(now)).map_err(locked)
    }

    /// Counts a failed login; true when it started a lockout (worth a log).
    pub fn login_failed(&self, ip: Option<IpAddr>, email: &str) -> bool {
        let now = self.clock.now_ms();
        let (max, window) = (self.auth.login_failures_max, self.auth.login_lockout_s.saturating_mul(1000));
        let mut locked = false;
        if let Some(ip) = ip {
            locked |= self.ip_failures.with(&ip, now, Failures::default, |f| f.record_failure(now, max, window));
        }
        let email = email.trim().to_ascii_lowercase();
        locked |= self.email_failures.with(&email, now, Failures::default, |f| f.record_failure(now, max, window));
        locked
    }

    pub fn login_succeeded(&self, email: &str) {
        self.email_failures.remove(&email.trim().to_ascii_lowercase());
    }
}

fn locked(retry_after_s: u64) -> Error {
    Error::RateLimited {
        retry_after_s,
        message: format!("Too many failed logins; locked for {retry_after_s} s. Reset your password or retry later."),
    }
}

/// Records a refusal by a guard: a business log for a known user, a system
/// log otherwise.
pub fn log_refusal(db: &Db, user: Option<UserId>, guard: &'static str, details: serde_json::Value) {
    crate::metrics::global().guard_refusals.with_label_values(&[guard]).inc();
    let mut details = details;
    details["guard"] = json!(guard);
    let log = match user {
        Some(u) => NewLog::business(u, "guard_refused", false, details),
        None => NewLog::system(Level::Warn, "guard_refused", details),
    };
    logs::record(db, log);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Role;

    fn guard(clock: Arc<ManualClock>) -> Guard {
        let limits = LimitsConfig { rpm: 10, burst: 10, ..LimitsConfig::default() };
        Guard::new(limits, AuthConfig::default(), clock)
    }

    #[test]
    fn a_flood_of_random_api_keys_leaves_the_limiter_bounded() {
        let clock = Arc::new(ManualClock::default());
        let g = guard(Arc::clone(&clock));
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for i in 0..1_000_000u64 {
            // xorshift: cheap, different keys every time.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let caller =
                CurrentUser { id: UserId(1), role: Role::User, via: Credential::ApiKey(ApiKeyId((x >> 1) as i64)) };
            g.check_rate(&caller);
            if i % 1000 == 0 {
                clock.advance_ms(1);
            }
        }
        assert!(g.keys.len() <= g.keys.capacity(), "{} > {}", g.keys.len(), g.keys.capacity());
        assert!(g.keys.capacity() <= LIMITER_ENTRIES_MAX + bounded::SHARDS);
    }

    #[test]
    fn twenty_failed_logins_lock_the_ip_and_the_email_but_not_others() {
        let clock = Arc::new(ManualClock::default());
        let g = guard(Arc::clone(&clock));
        let bad: IpAddr = "10.0.0.1".parse().unwrap();
        let good: IpAddr = "10.0.0.2".parse().unwrap();
        for i in 0..20 {
            assert!(g.check_login(Some(bad), &format!("victim{i}@example.com")).is_ok(), "attempt {i}");
            g.login_failed(Some(bad), &format!("victim{i}@example.com"));
        }
        let e = g.check_login(Some(bad), "someone@example.com").unwrap_err();
        assert!(matches!(e, Error::RateLimited { retry_after_s: 900, .. }), "{e:?}");
        assert!(g.check_login(Some(good), "someone@example.com").is_ok());
        clock.advance_ms(900_000);
        assert!(g.check_login(Some(bad), "someone@example.com").is_ok(), "the window passed");
    }
}
