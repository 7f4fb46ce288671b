//! Limits several instances share, kept in Redis (`[redis] url`): the
//! request rate buckets (users, keys, logins per IP) and the login failure
//! counts behind lockouts. Each check is one Lua script, atomic in Redis,
//! on Redis's own clock (`TIME`), so instances with skewed clocks agree.
//!
//! When Redis cannot be reached, a call answers `None` and the guard falls
//! back as `[redis]` says; after a failure Redis is not tried again for
//! `redis.retry_after_ms`, so an outage costs no timeout per request. Never
//! holds money: the ledger's limits stay in the database.

use super::bucket::{Decision, Rate};
use super::lockout::Locked;
use crate::config::RedisConfig;
use redis::{Connection, Script};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Idle connections kept for reuse.
pub const REDIS_IDLE_CONNECTIONS_MAX: usize = 32;
/// How often a subscriber looks at its stop flag.
const LISTEN_POLL: Duration = Duration::from_millis(200);
/// The channel credential changes are published on.
pub const CREDENTIALS_CHANNEL: &str = "credentials";

/// A token bucket as `bucket::Bucket` keeps it, in a hash: `u` units (a
/// token is 60,000), `t` last refill (ms), `r` refusing since the last
/// allowed request. Answers {allowed, units, first refusal}.
const TAKE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rpm = tonumber(ARGV[1])
local cap = tonumber(ARGV[2]) * 60000
local v = redis.call('HMGET', KEYS[1], 'u', 't', 'r')
local u = tonumber(v[1]) or cap
local last = tonumber(v[2]) or now
local refusing = tonumber(v[3]) or 0
if now > last then u = u + (now - last) * rpm end
if u > cap then u = cap end
local allowed, first = 0, 0
if u >= 60000 then
  u = u - 60000
  allowed = 1
  refusing = 0
else
  if refusing == 0 then first = 1 end
  refusing = 1
end
redis.call('HSET', KEYS[1], 'u', string.format('%.0f', u), 't', now, 'r', refusing)
redis.call('PEXPIRE', KEYS[1], math.ceil(cap / rpm) + 60000)
return {allowed, string.format('%.0f', u), first}
";

/// A token back (never above capacity).
const GIVE_BACK: &str = r"
local cap = tonumber(ARGV[1]) * 60000
local u = tonumber(redis.call('HGET', KEYS[1], 'u') or cap)
if u + 60000 < cap then cap = u + 60000 end
redis.call('HSET', KEYS[1], 'u', string.format('%.0f', cap))
";

/// `lockout::Attempts::reserve`: `c` tries since `s`, locked until `l`.
/// Answers {reserved, retry_after_ms, lockout started}.
const RESERVE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local max = tonumber(ARGV[1])
local win = tonumber(ARGV[2])
local v = redis.call('HMGET', KEYS[1], 'c', 's', 'l')
local c = tonumber(v[1]) or 0
local s = tonumber(v[2]) or now
local l = tonumber(v[3]) or 0
if now < l then return {0, l - now, 0} end
if now - s >= win then c = 0; s = now end
if c >= max then
  redis.call('HSET', KEYS[1], 'c', 0, 's', now, 'l', now + win)
  redis.call('PEXPIRE', KEYS[1], win * 2)
  return {0, win, 1}
end
redis.call('HSET', KEYS[1], 'c', c + 1, 's', s, 'l', l)
redis.call('PEXPIRE', KEYS[1], win * 2)
return {1, 0, 0}
";

/// A reservation given back.
const REFUND: &str = r"
local c = tonumber(redis.call('HGET', KEYS[1], 'c') or 0)
if c > 0 then redis.call('HINCRBY', KEYS[1], 'c', -1) end
";

pub struct Shared {
    client: redis::Client,
    idle: Mutex<Vec<Connection>>,
    timeout: Duration,
    retry_after_ms: u64,
    prefix: String,
    /// Wall-clock ms until which Redis is not tried (after a failure); 0
    /// while it answers.
    down_until_ms: AtomicU64,
    take: Script,
    give_back: Script,
    reserve: Script,
    refund: Script,
}

/// This process's wall clock in ms (only ever compared with itself).
fn wall_ms() -> u64 {
    crate::domain::Timestamp::now().millis().max(0) as u64
}

impl Shared {
    /// A client for `cfg.url` (not connected yet: a Redis that is down at
    /// start is a fallback, not a failed start). `None` without a URL.
    pub fn open(cfg: &RedisConfig) -> Result<Option<Shared>, String> {
        let Some(url) = cfg.url() else { return Ok(None) };
        let client = redis::Client::open(url).map_err(|e| format!("redis.url: {e}"))?;
        Ok(Some(Shared {
            client,
            idle: Mutex::new(Vec::new()),
            timeout: Duration::from_millis(cfg.timeout_ms),
            retry_after_ms: cfg.retry_after_ms,
            prefix: cfg.key_prefix.clone(),
            down_until_ms: AtomicU64::new(0),
            take: Script::new(TAKE),
            give_back: Script::new(GIVE_BACK),
            reserve: Script::new(RESERVE),
            refund: Script::new(REFUND),
        }))
    }

    /// Whether the last call reached Redis.
    pub fn is_up(&self) -> bool {
        self.down_until_ms.load(Ordering::Relaxed) == 0
    }

    /// Runs `f` on a connection; `None` when Redis is down (or was, less
    /// than `retry_after_ms` ago).
    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> redis::RedisResult<T>) -> Option<T> {
        let down_until = self.down_until_ms.load(Ordering::Relaxed);
        if down_until != 0 && wall_ms() < down_until {
            return None;
        }
        let pooled = self.idle.lock().ok().and_then(|mut v| v.pop());
        let conn = match pooled {
            Some(c) => Ok(c),
            None => self.client.get_connection_with_timeout(self.timeout).and_then(|c| {
                c.set_read_timeout(Some(self.timeout))?;
                c.set_write_timeout(Some(self.timeout))?;
                Ok(c)
            }),
        };
        let result = conn.and_then(|mut c| f(&mut c).map(|v| (v, c)));
        match result {
            Ok((v, c)) => {
                if let Ok(mut idle) = self.idle.lock()
                    && idle.len() < REDIS_IDLE_CONNECTIONS_MAX
                {
                    idle.push(c);
                }
                if self.down_until_ms.swap(0, Ordering::Relaxed) != 0 {
                    log::warn!("redis reachable again: shared limits back in force");
                }
                Some(v)
            }
            Err(e) => {
                if self.down_until_ms.swap(wall_ms() + self.retry_after_ms, Ordering::Relaxed) == 0 {
                    log::error!("redis unreachable ({e}): limits fall back as [redis] says");
                }
                if let Ok(mut idle) = self.idle.lock() {
                    idle.clear();
                }
                None
            }
        }
    }

    fn key(&self, kind: &str, id: &str) -> String {
        format!("{}{kind}:{id}", self.prefix)
    }

    /// Takes a token from the shared bucket `kind:id`.
    pub fn take(&self, kind: &str, id: &str, rate: Rate) -> Option<Decision> {
        let key = self.key(kind, id);
        let (allowed, units, first): (i64, String, i64) =
            self.with(|c| self.take.key(&key).arg(rate.rpm.max(1)).arg(rate.burst.max(1)).invoke(c))?;
        let units = units.parse::<u64>().unwrap_or(0);
        Some(Decision::of(rate, units, allowed == 1, first == 1))
    }

    pub fn give_back(&self, kind: &str, id: &str, rate: Rate) {
        let key = self.key(kind, id);
        let _ = self.with(|c| self.give_back.key(&key).arg(rate.burst.max(1)).invoke::<()>(c));
    }

    /// Reserves a try against the shared count `kind:id`.
    pub fn reserve(&self, kind: &str, id: &str, max: u32, window_ms: u64) -> Option<Result<(), Locked>> {
        let key = self.key(kind, id);
        let (ok, retry_ms, started): (i64, u64, i64) =
            self.with(|c| self.reserve.key(&key).arg(max).arg(window_ms.max(1)).invoke(c))?;
        Some(if ok == 1 {
            Ok(())
        } else {
            Err(Locked { retry_after_s: retry_ms.div_ceil(1000).max(1), started: started == 1 })
        })
    }

    pub fn refund(&self, kind: &str, id: &str) {
        let key = self.key(kind, id);
        let _ = self.with(|c| self.refund.key(&key).invoke::<()>(c));
    }

    /// Tries counted in the current window (0 when none, or Redis is down).
    pub fn count(&self, kind: &str, id: &str) -> Option<u32> {
        let key = self.key(kind, id);
        self.with(|c| redis::cmd("HGET").arg(&key).arg("c").query::<Option<u32>>(c)).map(Option::unwrap_or_default)
    }

    pub fn forget(&self, kind: &str, id: &str) {
        let key = self.key(kind, id);
        let _ = self.with(|c| redis::cmd("DEL").arg(&key).query::<()>(c));
    }

    /// Publishes a message on `channel` (best effort: a subscriber that
    /// misses it still re-reads within its cache's TTL).
    pub fn publish(&self, channel: &str) {
        let ch = self.key("channel", channel);
        let _ = self.with(|c| redis::cmd("PUBLISH").arg(&ch).arg(1).query::<i64>(c));
    }

    /// Until `stop`: `on_message` for every message on `channel`, and once
    /// after every (re)subscription, since messages sent while this
    /// instance was not listening are lost.
    pub fn listen(&self, channel: &str, stop: &AtomicBool, on_message: impl Fn()) {
        let ch = self.key("channel", channel);
        while !stop.load(Ordering::Relaxed) {
            let Ok(mut conn) = self.client.get_connection_with_timeout(self.timeout) else {
                std::thread::sleep(Duration::from_millis(self.retry_after_ms));
                continue;
            };
            let mut sub = conn.as_pubsub();
            if sub.subscribe(&ch).is_err() || sub.set_read_timeout(Some(LISTEN_POLL)).is_err() {
                std::thread::sleep(Duration::from_millis(self.retry_after_ms));
                continue;
            }
            on_message();
            while !stop.load(Ordering::Relaxed) {
                match sub.get_message() {
                    Ok(_) => on_message(),
                    Err(e) if e.is_timeout() => {}
                    Err(_) => break,
                }
            }
        }
    }

    /// A PING now, whatever the last call found (readiness).
    pub fn ping(&self) -> bool {
        self.down_until_ms.store(0, Ordering::Relaxed);
        self.with(|c| redis::cmd("PING").query::<String>(c)).is_some()
    }
}
