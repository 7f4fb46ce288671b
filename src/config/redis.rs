//! `[redis]`: where the limits several instances share live, and what each
//! instance does when that Redis cannot be reached. Reads settings only;
//! `guard` acts on them.

use super::{ConfigError, bad};
use serde::{Deserialize, Serialize};

/// What an instance does with a shared limit while Redis is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fallback {
    /// Refuse what the limit guards (503 `limits_unavailable`).
    Closed,
    /// Enforce the limit in this instance's memory, at its share of the
    /// rate (`database.instances`), as without Redis.
    Local,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://host:port/db`; empty = no Redis (each instance keeps its
    /// share of every limit in memory).
    pub url: String,
    /// Whole time of one Redis command (connect included).
    pub timeout_ms: u64,
    /// After Redis failed, how long an instance uses the fallback before
    /// trying Redis again (so a down Redis costs no timeout per request).
    pub retry_after_ms: u64,
    /// Request rate limits (users, keys, logins per IP) while Redis is down.
    pub rate_limit_fallback: Fallback,
    /// Login failure counts and lockouts while Redis is down: `closed`
    /// refuses logins (a guesser gains nothing from an outage).
    pub login_fallback: Fallback,
    /// Prefix of every key tollgate writes (several deployments, one Redis).
    pub key_prefix: String,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: String::new(),
            timeout_ms: 200,
            retry_after_ms: 1_000,
            rate_limit_fallback: Fallback::Local,
            login_fallback: Fallback::Closed,
            key_prefix: "tollgate:".into(),
        }
    }
}

impl RedisConfig {
    pub fn url(&self) -> Option<&str> {
        Some(self.url.trim()).filter(|u| !u.is_empty())
    }

    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if let Some(u) = self.url()
            && !(u.starts_with("redis://") || u.starts_with("rediss://") || u.starts_with("unix://"))
        {
            return bad("redis.url", "must start with redis:// (or rediss://, unix://); empty = no Redis");
        }
        if !(10..=10_000).contains(&self.timeout_ms) {
            return bad("redis.timeout_ms", "must be 10 to 10000");
        }
        if !(100..=60_000).contains(&self.retry_after_ms) {
            return bad("redis.retry_after_ms", "must be 100 to 60000");
        }
        if self.key_prefix.len() > 64 {
            return bad("redis.key_prefix", "at most 64 bytes");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_settings_are_checked_at_their_limits() {
        let with = |f: &dyn Fn(&mut RedisConfig)| {
            let mut c = RedisConfig { url: "redis://127.0.0.1:6379/0".into(), ..RedisConfig::default() };
            f(&mut c);
            c.check().map_err(|e| e.to_string())
        };
        assert!(with(&|_| {}).is_ok());
        assert!(with(&|c| c.url = String::new()).is_ok(), "no Redis");
        assert!(with(&|c| c.url = "http://x".into()).unwrap_err().contains("redis.url"));
        assert!(with(&|c| c.timeout_ms = 10).is_ok());
        assert!(with(&|c| c.timeout_ms = 9).is_err());
        assert!(with(&|c| c.timeout_ms = 10_000).is_ok());
        assert!(with(&|c| c.timeout_ms = 10_001).is_err());
        assert!(with(&|c| c.retry_after_ms = 99).is_err());
        assert!(with(&|c| c.key_prefix = "k".repeat(64)).is_ok());
        assert!(with(&|c| c.key_prefix = "k".repeat(65)).is_err());
    }
}
