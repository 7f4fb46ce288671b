//! Cost guardrails: rate limits, the per-request cost cap, and the limits
//! behind the ledger's daily caps.
//!
//! Rate limits are in-memory token buckets (per user, per API key, per client
//! IP for login and signup) in bounded, sharded maps. Failed logins lock out
//! an (email, IP) pair and, past a larger count, an IP; an email attacked
//! from many IPs is slowed down for the IPs that failed on it, never locked,
//! so its owner can still sign in from elsewhere (see `lockout.rs`). Daily caps are *enforced by the ledger*
//! inside the charging transaction; this module only says what they are.
//! This module never writes money and never calls a provider.

pub mod bucket;
mod lockout;
pub mod shared;
pub mod storage;

use crate::auth::{Credential, CurrentUser};
use crate::config::{AuthConfig, Fallback, LimitsConfig};
use crate::domain::{ApiKeyId, Credits, Timestamp, UserId};
use crate::error::{Error, Result};
use crate::ledger::SpendCaps;
use crate::logs::{self, Level, NewLog};
use crate::storage::Db;
use crate::support::bounded::BoundedMap;
use bucket::{Bucket, Decision, Rate};
use lockout::{Attempts, Locked, Pace};
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
    /// `events.credits_low_threshold`, carried into every charge's caps.
    low_balance: Credits,
    /// Instances sharing the database (`database.instances`): each enforces
    /// its share of every request rate, so that together they allow the
    /// configured rate. Buckets stay in memory (no database round trip per
    /// request); a load balancer that spreads requests evenly makes the sum
    /// exact, an uneven one makes it stricter, never looser.
    instances: u32,
    overrides: RwLock<HashMap<UserId, Overrides>>,
    users: BoundedMap<UserId, Bucket>,
    keys: BoundedMap<ApiKeyId, Bucket>,
    ips: BoundedMap<IpAddr, Bucket>,
    signups: BoundedMap<Option<IpAddr>, Attempts>,
    ip_failures: BoundedMap<IpAddr, Attempts>,
    pair_failures: BoundedMap<(String, Option<IpAddr>), Attempts>,
    email_pace: BoundedMap<String, Pace>,
    redeem_users: BoundedMap<UserId, Attempts>,
    redeem_ips: BoundedMap<IpAddr, Attempts>,
    clock: Arc<dyn Clock>,
    /// Limits shared through Redis, and what to do while it is down.
    shared: Option<shared::Shared>,
    rate_fallback: Fallback,
    login_fallback: Fallback,
}

impl Guard {
    pub fn new(limits: LimitsConfig, auth: AuthConfig, clock: Arc<dyn Clock>) -> Guard {
        Guard {
            limits,
            auth,
            low_balance: Credits::ZERO,
            instances: 1,
            overrides: RwLock::new(HashMap::new()),
            users: BoundedMap::new(LIMITER_ENTRIES_MAX),
            keys: BoundedMap::new(LIMITER_ENTRIES_MAX),
            ips: BoundedMap::new(LIMITER_ENTRIES_MAX),
            signups: BoundedMap::new(LIMITER_ENTRIES_MAX),
            ip_failures: BoundedMap::new(LIMITER_ENTRIES_MAX),
            pair_failures: BoundedMap::new(LIMITER_ENTRIES_MAX),
            email_pace: BoundedMap::new(LIMITER_ENTRIES_MAX),
            redeem_users: BoundedMap::new(LIMITER_ENTRIES_MAX),
            redeem_ips: BoundedMap::new(LIMITER_ENTRIES_MAX),
            clock,
            shared: None,
            rate_fallback: Fallback::Local,
            login_fallback: Fallback::Local,
        }
    }

    /// Keeps the request rates and login failure counts in Redis, shared
    /// by every instance, with the fallbacks `[redis]` names.
    pub fn with_shared(mut self, shared: Option<shared::Shared>, cfg: &crate::config::RedisConfig) -> Guard {
        self.shared = shared;
        self.rate_fallback = cfg.rate_limit_fallback;
        self.login_fallback = cfg.login_fallback;
        self
    }

    /// The Redis-backed limits, when configured.
    pub fn shared(&self) -> Option<&shared::Shared> {
        self.shared.as_ref()
    }

    /// `None` without Redis; whether it answers now.
    pub fn shared_reachable(&self) -> Option<bool> {
        self.shared.as_ref().map(shared::Shared::ping)
    }

    /// A token from the bucket `kind` of `key`: the shared one when Redis
    /// answers, else (or without Redis) this instance's share in memory;
    /// `closed` fallback: refused for a second.
    fn take<K>(&self, map: &BoundedMap<K, Bucket>, kind: &str, key: &K, rate: Rate, now: u64) -> Decision
    where
        K: std::hash::Hash + Eq + Clone + std::fmt::Display,
    {
        if let Some(s) = &self.shared {
            if let Some(d) = s.take(kind, &key.to_string(), rate) {
                return d;
            }
            if self.rate_fallback == Fallback::Closed {
                return Decision::of(rate, 0, false, false);
            }
        }
        let rate = self.share(rate);
        map.with(key, now, || Bucket::full(rate, now), |b| b.take(rate, now))
    }

    fn give_back<K>(&self, map: &BoundedMap<K, Bucket>, kind: &str, key: &K, rate: Rate, now: u64)
    where
        K: std::hash::Hash + Eq + Clone + std::fmt::Display,
    {
        if let Some(s) = &self.shared
            && s.is_up()
        {
            return s.give_back(kind, &key.to_string(), rate);
        }
        let rate = self.share(rate);
        map.with(key, now, || Bucket::full(rate, now), Bucket::give_back);
    }

    /// One try reserved against the failure count `kind` of `key` (shared
    /// through Redis when configured). While Redis is down: this instance's
    /// count (`local`), or the login refused (`closed`, 503).
    fn reserve<K>(
        &self,
        map: &BoundedMap<K, Attempts>,
        kind: &str,
        key: &K,
        (now, max, window): (u64, u32, u64),
    ) -> std::result::Result<std::result::Result<(), Locked>, Error>
    where
        K: std::hash::Hash + Eq + Clone + std::fmt::Debug,
    {
        if let Some(s) = &self.shared {
            if let Some(r) = s.reserve(kind, &format!("{key:?}"), max, window) {
                return Ok(r);
            }
            if self.login_fallback == Fallback::Closed {
                return Err(Error::Busy(
                    "Sign-in is paused: its brute-force protection cannot reach its shared store. Retry shortly.",
                ));
            }
        }
        Ok(map.with(key, now, Attempts::default, |f| f.reserve(now, max, window)))
    }

    fn refund<K>(&self, map: &BoundedMap<K, Attempts>, kind: &str, key: &K, now: u64)
    where
        K: std::hash::Hash + Eq + Clone + std::fmt::Debug,
    {
        if let Some(s) = &self.shared
            && s.is_up()
        {
            return s.refund(kind, &format!("{key:?}"));
        }
        map.with(key, now, Attempts::default, Attempts::refund);
    }

    /// Charges that take a user's available credits below `threshold` emit
    /// `credits.low` (0 = never).
    pub fn with_low_balance(mut self, threshold: Credits) -> Guard {
        self.low_balance = threshold;
        self
    }

    /// Divides every request rate among `instances` (at least 1).
    pub fn with_instances(mut self, instances: u32) -> Guard {
        self.instances = instances.max(1);
        self
    }

    /// This instance's share of a rate (at least one request a minute).
    fn share(&self, rate: Rate) -> Rate {
        Rate { rpm: (rate.rpm / self.instances).max(1), burst: (rate.burst / self.instances).max(1) }
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

    /// Takes one token from the caller's bucket (and their API key's); a
    /// refusal by either takes nothing from the other.
    pub fn check_rate(&self, user: &CurrentUser) -> Decision {
        let e = self.effective(user.id);
        let rate = Rate { rpm: e.rpm, burst: e.burst };
        let now = self.clock.now_ms();
        let Credential::ApiKey(terms) = &user.via else {
            return self.take(&self.users, "rate:user", &user.id, rate, now);
        };
        let key = terms.id;
        // A key with its own rate has a bucket of that size.
        let key_rate = terms.rpm.map_or(rate, |rpm| Rate { rpm, burst: rpm });
        let d = self.take(&self.keys, "rate:key", &key, key_rate, now);
        if !d.allowed {
            return d;
        }
        let u = self.take(&self.users, "rate:user", &user.id, rate, now);
        if !u.allowed {
            // The key's token was not used: a refused request must not
            // drain the key's bucket (its Retry-After would then be short).
            self.give_back(&self.keys, "rate:key", &key, key_rate, now);
        }
        u
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
    pub fn spend_caps(&self, caller: &CurrentUser) -> SpendCaps {
        let e = self.effective(caller.id);
        SpendCaps {
            daily_cap: Credits::positive(e.daily_cap),
            global_daily_cap: Credits::positive(self.limits.global_daily_cap),
            day_utc_offset_minutes: self.limits.day_utc_offset_minutes,
            key: caller.key(),
            low_balance: self.low_balance,
        }
    }

    /// Today's spend day number.
    pub fn today(&self) -> i64 {
        crate::domain::day_number(Timestamp::now(), self.limits.day_utc_offset_minutes)
    }

    pub fn day_utc_offset_minutes(&self) -> i32 {
        self.limits.day_utc_offset_minutes
    }

    /// The client IP's login/signup rate (a token bucket per minute).
    fn check_ip_rate(&self, ip: Option<IpAddr>, now: u64) -> Result<()> {
        let Some(ip) = ip else { return Ok(()) };
        let rate = Rate { rpm: self.auth.login_rpm_per_ip, burst: self.auth.login_rpm_per_ip };
        let d = self.take(&self.ips, "rate:ip", &ip, rate, now);
        if d.allowed {
            return Ok(());
        }
        Err(Error::RateLimited {
            retry_after_s: d.retry_after_s,
            message: format!("Too many login attempts from this address. Retry in {} s.", d.retry_after_s),
        })
    }

    /// The client IP's rate for account routes that check no password
    /// (refresh, logout, password reset, sign-in through a provider): the
    /// same bucket as login, so together they are limited like login.
    pub fn check_account_rate(&self, ip: Option<IpAddr>) -> Result<()> {
        self.check_ip_rate(ip, self.clock.now_ms())
    }

    /// Before a password is checked: the IP's rate, then one try reserved
    /// against the IP's and the (email, IP) pair's failure counts, and, for
    /// an IP that already failed on this email, the email's pace. Counting
    /// before the (slow) check keeps concurrent guesses within the limits.
    pub fn begin_login(&self, ip: Option<IpAddr>, email: &str) -> std::result::Result<LoginAttempt, LoginRefused> {
        let now = self.clock.now_ms();
        let a = &self.auth;
        let window = a.login_lockout_s.saturating_mul(1000);
        self.check_ip_rate(ip, now).map_err(LoginRefused::plain)?;
        let email = normalize(email);
        if let Some(ip) = ip {
            self.reserve(&self.ip_failures, "login:ip", &ip, (now, a.login_ip_failures_max, window))
                .map_err(LoginRefused::plain)?
                .map_err(LoginRefused::locked)?;
        }
        let attempt = LoginAttempt { ip, email };
        let pair = (attempt.email.clone(), ip);
        let repeat = match &self.shared {
            Some(s) if s.is_up() => s.count("login:pair", &format!("{pair:?}")).unwrap_or(0) > 0,
            _ => self.pair_failures.with(&pair, now, Attempts::default, |f| f.count() > 0),
        };
        if repeat {
            let (free, max_ms) = (a.login_email_failures_free, a.login_email_delay_max_s.saturating_mul(1000));
            let paced = self.email_pace.with(&attempt.email, now, Pace::default, |p| p.pass(now, free, max_ms, window));
            if let Err(retry_after_s) = paced {
                self.refund_ip(ip, now);
                return Err(LoginRefused::plain(Error::RateLimited {
                    retry_after_s,
                    message: format!(
                        "Too many failed logins for this account; retry in {retry_after_s} s or reset your password."
                    ),
                }));
            }
        }
        let reserved = self.reserve(&self.pair_failures, "login:pair", &pair, (now, a.login_failures_max, window));
        match reserved {
            Ok(Ok(())) => Ok(attempt),
            Ok(Err(l)) => {
                self.refund_ip(ip, now);
                Err(LoginRefused::locked(l))
            }
            Err(e) => {
                self.refund_ip(ip, now);
                Err(LoginRefused::plain(e))
            }
        }
    }

    fn refund_ip(&self, ip: Option<IpAddr>, now: u64) {
        if let Some(ip) = ip {
            self.refund(&self.ip_failures, "login:ip", &ip, now);
        }
    }

    /// The password was right: the IP's try is given back and the pair's
    /// failures forgotten.
    pub fn login_succeeded(&self, attempt: LoginAttempt) {
        let now = self.clock.now_ms();
        self.refund_ip(attempt.ip, now);
        let pair = (attempt.email, attempt.ip);
        if let Some(s) = &self.shared {
            s.forget("login:pair", &format!("{pair:?}"));
        }
        self.pair_failures.remove(&pair);
    }

    /// The password was wrong: the reserved tries stay counted, and the
    /// email's pace counts one more failure.
    pub fn login_failed(&self, attempt: LoginAttempt) {
        let now = self.clock.now_ms();
        let window = self.auth.login_lockout_s.saturating_mul(1000);
        self.email_pace.with(&attempt.email, now, Pace::default, |p| p.fail(now, window));
    }

    /// The check could not run (e.g. no hashing slot): nothing was tried.
    pub fn login_not_tried(&self, attempt: LoginAttempt) {
        let now = self.clock.now_ms();
        self.refund_ip(attempt.ip, now);
        self.refund(&self.pair_failures, "login:pair", &(attempt.email, attempt.ip), now);
    }

    /// Before a signup: the IP's login rate and its hourly signup count. The
    /// reservation is given back with [`Guard::signup_not_made`].
    pub fn begin_signup(&self, ip: Option<IpAddr>) -> Result<()> {
        let now = self.clock.now_ms();
        self.check_ip_rate(ip, now)?;
        let max = self.auth.signups_per_ip_per_hour;
        self.signups.with(&ip, now, Attempts::default, |a| a.reserve(now, max, SIGNUP_WINDOW_MS)).map_err(|l| {
            Error::RateLimited {
                retry_after_s: l.retry_after_s,
                message: format!(
                    "Too many accounts created from this address ({max} per hour). Retry in {} s.",
                    l.retry_after_s
                ),
            }
        })
    }

    pub fn signup_not_made(&self, ip: Option<IpAddr>) {
        let now = self.clock.now_ms();
        self.signups.with(&ip, now, Attempts::default, Attempts::refund);
    }
}

impl Guard {
    /// Before a redemption: reserves one try for the user and one for the
    /// IP, so concurrent guesses cannot pass the maximum. A try that was not
    /// a wrong guess gives its reservations back ([`Guard::redeem_not_guessed`]).
    pub fn begin_redeem(&self, user: UserId, ip: Option<IpAddr>) -> Result<()> {
        let now = self.clock.now_ms();
        let l = &self.limits;
        let window = l.redeem_lockout_s.saturating_mul(1000);
        let refused = |locked: Locked| Error::RateLimited {
            retry_after_s: locked.retry_after_s,
            message: format!(
                "Too many redemption codes that do not exist were tried. Retry in {} s.",
                locked.retry_after_s
            ),
        };
        self.redeem_users
            .with(&user, now, Attempts::default, |a| a.reserve(now, l.redeem_failures_max, window))
            .map_err(refused)?;
        if let Some(ip) = ip
            && let Err(locked) =
                self.redeem_ips.with(&ip, now, Attempts::default, |a| a.reserve(now, l.redeem_ip_failures_max, window))
        {
            self.redeem_users.with(&user, now, Attempts::default, Attempts::refund);
            return Err(refused(locked));
        }
        Ok(())
    }

    /// The redemption succeeded, or named a real code: not a guess.
    pub fn redeem_not_guessed(&self, user: UserId, ip: Option<IpAddr>) {
        let now = self.clock.now_ms();
        self.redeem_users.with(&user, now, Attempts::default, Attempts::refund);
        if let Some(ip) = ip {
            self.redeem_ips.with(&ip, now, Attempts::default, Attempts::refund);
        }
    }
}

/// The window signups per IP are counted in.
const SIGNUP_WINDOW_MS: u64 = 3_600_000;

fn normalize(email: &str) -> String {
    email.trim().to_ascii_lowercase()
}

/// A login try that passed the guard; hand it back with the outcome.
#[derive(Debug)]
pub struct LoginAttempt {
    ip: Option<IpAddr>,
    email: String,
}

/// A login refused before any password was checked.
#[derive(Debug)]
pub struct LoginRefused {
    pub error: Error,
    /// This refusal started a lockout (log it once).
    pub lockout_started: bool,
}

impl LoginRefused {
    fn plain(error: Error) -> LoginRefused {
        LoginRefused { error, lockout_started: false }
    }

    fn locked(l: Locked) -> LoginRefused {
        LoginRefused { error: locked(l.retry_after_s), lockout_started: l.started }
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
    fn each_of_three_instances_allows_a_third_of_the_rate_and_at_least_one() {
        let clock = Arc::new(ManualClock::default());
        let limits = LimitsConfig { rpm: 10, burst: 10, ..LimitsConfig::default() };
        let g = Guard::new(limits, AuthConfig::default(), clock).with_instances(3);
        let caller = CurrentUser {
            id: UserId(1),
            role: Role::User,
            price_group: None,
            via: Credential::ApiKey(Arc::new(crate::auth::key_limits::KeyTerms {
                id: ApiKeyId(1),
                expires_at: None,
                models: None,
                rpm: Some(2),
            })),
        };
        // The key's 2 rpm shared by three instances is one here (never 0);
        // the user's 10 is 3.
        assert!(g.check_rate(&caller).allowed);
        let d = g.check_rate(&caller);
        assert!(!d.allowed);
        assert_eq!(d.limit, 1);
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
            let caller = CurrentUser {
                id: UserId(1),
                role: Role::User,
                price_group: None,
                via: Credential::ApiKey(Arc::new(crate::auth::key_limits::KeyTerms {
                    id: ApiKeyId((x >> 1) as i64),
                    expires_at: None,
                    models: None,
                    rpm: None,
                })),
            };
            g.check_rate(&caller);
            if i % 1000 == 0 {
                clock.advance_ms(1);
            }
        }
        assert!(g.keys.len() <= g.keys.capacity(), "{} > {}", g.keys.len(), g.keys.capacity());
        assert!(g.keys.capacity() <= LIMITER_ENTRIES_MAX + crate::support::bounded::SHARDS);
    }

    fn guard_with_auth(clock: Arc<ManualClock>, auth: AuthConfig) -> Guard {
        let limits = LimitsConfig { rpm: 10, burst: 10, ..LimitsConfig::default() };
        Guard::new(limits, auth, clock)
    }

    #[test]
    fn failures_lock_the_pair_and_then_the_ip_but_never_the_owner_elsewhere() {
        let clock = Arc::new(ManualClock::default());
        let auth = AuthConfig { login_failures_max: 3, login_ip_failures_max: 5, ..AuthConfig::default() };
        let g = guard_with_auth(Arc::clone(&clock), auth);
        let bad: IpAddr = "10.0.0.1".parse().unwrap();
        let good: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            g.login_failed(g.begin_login(Some(bad), "victim@example.com").unwrap());
        }
        let e = g.begin_login(Some(bad), "Victim@example.com ").unwrap_err();
        assert!(e.lockout_started && matches!(e.error, Error::RateLimited { retry_after_s: 900, .. }), "{e:?}");
        assert!(g.begin_login(Some(good), "victim@example.com").is_ok(), "the owner's IP did not fail");
        g.login_failed(g.begin_login(Some(bad), "other@example.com").unwrap());
        g.login_failed(g.begin_login(Some(bad), "third@example.com").unwrap());
        let e = g.begin_login(Some(bad), "fourth@example.com").unwrap_err();
        assert!(e.lockout_started, "five failures lock the IP for every email: {e:?}");
        clock.advance_ms(900_000);
        assert!(g.begin_login(Some(bad), "fourth@example.com").is_ok(), "the window passed");
    }

    #[test]
    fn a_success_gives_the_tries_back() {
        let clock = Arc::new(ManualClock::default());
        let auth = AuthConfig { login_failures_max: 2, login_ip_failures_max: 2, ..AuthConfig::default() };
        let g = guard_with_auth(clock, auth);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..10 {
            g.login_succeeded(g.begin_login(Some(ip), "me@example.com").unwrap());
        }
        g.login_not_tried(g.begin_login(Some(ip), "me@example.com").unwrap());
        assert!(g.begin_login(Some(ip), "me@example.com").is_ok());
    }

    #[test]
    fn signups_per_ip_are_counted_per_hour() {
        let clock = Arc::new(ManualClock::default());
        let auth = AuthConfig { signups_per_ip_per_hour: 2, ..AuthConfig::default() };
        let g = guard_with_auth(Arc::clone(&clock), auth);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(g.begin_signup(Some(ip)).is_ok());
        assert!(g.begin_signup(Some(ip)).is_ok());
        g.signup_not_made(Some(ip));
        assert!(g.begin_signup(Some(ip)).is_ok(), "a refused signup does not count");
        assert!(matches!(g.begin_signup(Some(ip)), Err(Error::RateLimited { .. })));
        assert!(g.begin_signup(Some("10.0.0.2".parse().unwrap())).is_ok());
    }
}
