//! `[database]`: which engine, how many instances share it, and how hard
//! SQLite syncs. Reads settings only; `storage` acts on them.

use super::{ConfigError, bad};
use serde::{Deserialize, Serialize};

/// How hard SQLite syncs (`server.sqlite_synchronous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    Full,
    Normal,
}

impl Synchronous {
    pub fn parse(s: &str) -> Option<Synchronous> {
        match s.to_ascii_lowercase().as_str() {
            "full" => Some(Synchronous::Full),
            "normal" => Some(Synchronous::Normal),
            _ => None,
        }
    }

    /// The SQLite pragma value.
    pub fn pragma(self) -> &'static str {
        match self {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        }
    }
}

/// Most instances one database's rates are divided among.
pub const DATABASE_INSTANCES_MAX: u32 = 64;

/// Where the data lives: the SQLite file `server.db` unless `url` names a
/// PostgreSQL database.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `postgres://user:password@host:port/dbname` (or `postgresql://`);
    /// empty = SQLite. Several instances may share one database.
    pub url: String,
    /// How many instances serve this database: each enforces that share of
    /// every request rate (`limits.rpm`, keys' rpm, the login rate per IP).
    /// PostgreSQL only; 1 to 64.
    pub instances: u32,
    /// PostgreSQL: the longest a request's statement may run before the
    /// server cancels it (503 `database_busy`); a server that answers
    /// nothing is given up `pg::PG_IO_GRACE_MS` later, and a pooled
    /// connection is waited for no longer than this. The audit and
    /// `migrate-to-postgres` are exempt.
    pub statement_timeout_ms: u64,
    /// PostgreSQL: the longest a request waits for a row lock another
    /// session holds (503 `database_busy`).
    pub lock_timeout_ms: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig { url: String::new(), instances: 1, statement_timeout_ms: 5_000, lock_timeout_ms: 2_000 }
    }
}

impl DatabaseConfig {
    /// The PostgreSQL URL, if one is configured.
    pub fn postgres_url(&self) -> Option<&str> {
        Some(self.url.trim()).filter(|u| !u.is_empty())
    }
}

impl DatabaseConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if let Some(url) = self.postgres_url()
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return bad(
                "database.url",
                "must start with postgres:// or postgresql:// (empty = the SQLite file server.db)",
            );
        }
        if !(1..=DATABASE_INSTANCES_MAX).contains(&self.instances) {
            return bad("database.instances", &format!("must be 1 to {DATABASE_INSTANCES_MAX}"));
        }
        if !(100..=600_000).contains(&self.statement_timeout_ms) {
            return bad("database.statement_timeout_ms", "must be 100 to 600000");
        }
        if !(100..=self.statement_timeout_ms).contains(&self.lock_timeout_ms) {
            return bad("database.lock_timeout_ms", "must be 100 to database.statement_timeout_ms");
        }
        if self.instances > 1 && self.postgres_url().is_none() {
            return bad("database.instances", "only several instances on PostgreSQL (database.url) share a database");
        }
        Ok(())
    }
}
