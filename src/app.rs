//! `App`: the shared state every request and background task sees: the
//! settings, the database, the signing keys and the guard. Built once at start.

use crate::auth::jwt::JwtKeys;
use crate::config::Config;
use crate::guard::Guard;
use crate::providers::ModelAdapter;
use crate::storage::Db;
use std::sync::Arc;

pub struct App {
    pub config: Config,
    pub db: Db,
    pub keys: JwtKeys,
    /// Callers of recently verified credentials (see `auth::cache`).
    pub credentials: crate::auth::cache::CredentialCache,
    pub guard: Guard,
    pub adapter: ModelAdapter,
    /// Wakes job workers when work is queued.
    pub notifier: crate::support::notify::Notifier,
    /// Wakes the webhook dispatcher (a sender finished, an admin redelivered).
    pub webhook_wake: Arc<crate::support::notify::Notifier>,
    /// Wakes job event streams when a job changes.
    pub job_changes: crate::support::notify::Notifier,
    /// The media store (kept job outputs).
    pub media: crate::media::Store,
    /// Identity providers for "sign in with ...".
    pub oidc: crate::oidc::Providers,
    /// Password reset requests, handled off the request path.
    pub resets: crate::auth::reset::Requests,
    /// Seals the secrets tollgate stores (`TOLLGATE_SECRET_KEY`), if set.
    pub seal_key: Option<crate::support::sealed::SealKey>,
    /// The payment provider (`[payments]`), when payments are on.
    pub payments: Option<crate::payments::Gateway>,
}

impl App {
    pub fn hold_ttl_ms(&self) -> i64 {
        (self.config.ledger.hold_ttl_s as i64).saturating_mul(1000)
    }
}
