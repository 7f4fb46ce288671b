//! The service-layer error: what went wrong, split by whose fault it is.
//!
//! Part of the floor: it knows no HTTP status. Modules below HTTP return
//! this; [`Error::client_view`] gives each its stable code and message, and
//! `http::error` maps each variant to a status in one place. Client-fault variants carry a message that says what to do
//! next; server-fault variants carry detail for the log only.

pub mod account;
pub mod redemption;
pub mod storage;

use crate::domain::Credits;
use std::fmt;
pub use storage::{NotCommitted, StorageError};

#[derive(Debug)]
pub enum Error {
    // --- the client's fault ---
    /// A field is missing or invalid; `param` names it.
    Invalid {
        param: Option<String>,
        message: String,
    },
    /// No, bad, expired or revoked credential.
    Unauthorized(String),
    /// A valid user who may not do this.
    Forbidden(String),
    /// Unknown id, or one that belongs to someone else (we do not say which).
    NotFound(String),
    /// Available balance below what is needed.
    InsufficientCredits {
        needed: Credits,
        available: Credits,
    },
    /// Today's spend plus this amount would pass the daily cap.
    DailyCapExceeded {
        cap: Credits,
        spent: Credits,
        retry_after_s: u64,
    },
    /// All users together would pass the operator's daily budget.
    BudgetExhausted {
        cap: Credits,
        spent: Credits,
        retry_after_s: u64,
    },
    /// The request's cost bound is over the per-request cap.
    MaxCostExceeded {
        bound: Credits,
        cap: Credits,
    },
    /// The caller's token bucket is empty, or a login lockout is in force.
    RateLimited {
        retry_after_s: u64,
        message: String,
    },
    /// The model provider failed (after failover); nothing was charged.
    Upstream {
        timeout: bool,
        message: String,
    },
    /// The model provider refused the request as invalid.
    UpstreamRejected(String),
    /// A bounded pool is full (provider-bound workers, password hashing);
    /// the message says which and what to do.
    Busy(&'static str),
    /// The job queue is full.
    QueueFull {
        queue_max: usize,
    },
    /// The caller already has `jobs.queued_per_user_max` jobs waiting.
    TooManyJobs {
        queued_per_user_max: usize,
    },
    /// The API key's model allow-list does not include the model.
    ModelNotAllowed(String),
    /// The charge would take the API key's lifetime spend past its limit.
    KeySpendLimitExceeded {
        limit: Credits,
        spent: Credits,
    },
    /// The charge would take the API key's spend today past its limit.
    KeyDailyLimitExceeded {
        limit: Credits,
        spent: Credits,
        retry_after_s: u64,
    },
    /// A redemption code refused (unknown, expired, used up, or already
    /// redeemed by this user).
    Redemption(redemption::Refusal),
    /// An account request refused (sessions, passwords, identity providers).
    Account(account::Refusal),
    /// A conflict with existing state (e.g. an email already taken).
    Conflict {
        code: &'static str,
        message: String,
    },

    // --- our fault ---
    Storage(StorageError),
    Internal(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn invalid(param: &str, message: impl Into<String>) -> Error {
        Error::Invalid { param: Some(param.to_owned()), message: message.into() }
    }

    pub fn not_found(what: &str) -> Error {
        Error::NotFound(format!("No such {what}. Check the id; ids are only visible to their owner."))
    }
}

/// What a client is told about an error: a stable code, a message that says
/// what to do next, the field at fault and when to retry. No HTTP status:
/// `http::error` chooses it, in one place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientView {
    pub code: &'static str,
    pub message: String,
    pub param: Option<String>,
    pub retry_after_s: Option<u64>,
}

impl ClientView {
    fn new(code: &'static str, message: impl Into<String>) -> ClientView {
        ClientView { code, message: message.into(), param: None, retry_after_s: None }
    }

    fn param(mut self, param: Option<String>) -> ClientView {
        self.param = param;
        self
    }

    fn retry_after_s(mut self, s: u64) -> ClientView {
        self.retry_after_s = Some(s);
        self
    }
}

/// Said for every server fault: the detail goes to the log only.
const INTERNAL_MESSAGE: &str = "An internal error occurred; nothing was changed. Retry later.";

impl Error {
    /// The error as the client sees it. Server faults say only that
    /// nothing was changed; their detail is for the log.
    pub fn client_view(&self) -> ClientView {
        match self {
            Error::Invalid { param, message } => ClientView::new("invalid_request", message.clone()).param(param.clone()),
            Error::Unauthorized(m) => ClientView::new("unauthorized", m.clone()),
            Error::Forbidden(m) => ClientView::new("forbidden", m.clone()),
            Error::ModelNotAllowed(m) => ClientView::new("model_not_allowed", m.clone()).param(Some("model".into())),
            Error::KeySpendLimitExceeded { limit, spent } => ClientView::new(
                "key_spend_limit_exceeded",
                format!(
                    "This API key's spend limit of {limit} credits would be passed ({spent} already spent or reserved through it). Raise the key's spend_limit or use another key."
                ),
            ),
            Error::KeyDailyLimitExceeded { limit, spent, retry_after_s } => ClientView::new(
                "key_daily_limit_exceeded",
                format!(
                    "This API key's daily spend limit of {limit} credits would be passed ({spent} already spent or reserved through it today). Retry after the day rolls over, in {retry_after_s} s."
                ),
            )
            .retry_after_s(*retry_after_s),
            Error::NotFound(m) => ClientView::new("not_found", m.clone()),
            Error::InsufficientCredits { needed, available } => ClientView::new(
                "insufficient_credits",
                format!(
                    "Insufficient credits: this needs {needed} and {available} are available. Top up, or wait for pending jobs to finish."
                ),
            ),
            Error::DailyCapExceeded { cap, spent, retry_after_s } => ClientView::new(
                "daily_cap_exceeded",
                format!(
                    "Your daily spend cap of {cap} credits would be passed ({spent} already spent or reserved today). Retry after the day rolls over, in {retry_after_s} s."
                ),
            )
            .retry_after_s(*retry_after_s),
            Error::BudgetExhausted { retry_after_s, .. } => ClientView::new(
                "budget_exhausted",
                "The service's daily spending budget is exhausted; charged requests resume when the day rolls over.",
            )
            .retry_after_s(*retry_after_s),
            Error::MaxCostExceeded { bound, cap } => ClientView::new(
                "max_cost_exceeded",
                format!(
                    "This request could cost up to {bound} credits, over your per-request cap of {cap}. Ask for less (e.g. a lower max_tokens or max_cost)."
                ),
            ),
            Error::RateLimited { retry_after_s, message } => {
                ClientView::new("rate_limited", message.clone()).retry_after_s(*retry_after_s)
            }
            Error::Upstream { timeout: true, message } => ClientView::new(
                "upstream_timeout",
                format!("The model provider did not answer in time ({message}). Nothing was charged; retry later."),
            ),
            Error::Upstream { timeout: false, message } => ClientView::new(
                "upstream_error",
                format!("The model provider failed ({message}). Nothing was charged; retry later."),
            ),
            Error::UpstreamRejected(message) => ClientView::new(
                "invalid_request",
                format!("The model provider rejected the request: {message}. Nothing was charged."),
            ),
            Error::QueueFull { queue_max } => ClientView::new(
                "queue_full",
                format!("The job queue is full ({queue_max} queued jobs). Retry in a little while."),
            )
            .retry_after_s(5),
            Error::TooManyJobs { queued_per_user_max } => ClientView::new(
                "too_many_jobs",
                format!(
                    "You have {queued_per_user_max} jobs waiting, the most one user may queue. Retry when one of them has started, or cancel one."
                ),
            )
            .retry_after_s(5),
            Error::Busy(message) => ClientView::new("server_busy", *message).retry_after_s(1),
            Error::Conflict { code, message } => ClientView::new(code, message.clone()),
            Error::Account(r) => {
                let spec = r.spec();
                ClientView::new(spec.code, spec.message).param(spec.param.map(str::to_owned))
            }
            Error::Redemption(r) => ClientView::new(r.code(), r.message()),
            Error::Storage(err) if err.is_disk_full() => ClientView::new(
                "storage_full",
                "The server's disk is full, so nothing was changed. Retry later; the operator must free disk space.",
            )
            .retry_after_s(30),
            Error::Storage(err) if err.is_timeout() => ClientView::new(
                "database_busy",
                "The database did not answer in time (a statement or a lock wait passed its limit); nothing was changed. Retry shortly.",
            )
            .retry_after_s(1),
            Error::Storage(err) if err.is_unavailable() => ClientView::new(
                "database_unavailable",
                "The database cannot be reached right now. Retry shortly (a retry with the same Idempotency-Key is safe).",
            )
            .retry_after_s(1),
            Error::Storage(_) | Error::Internal(_) => ClientView::new("internal_error", INTERNAL_MESSAGE),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Invalid { message, .. }
            | Error::Unauthorized(message)
            | Error::Forbidden(message)
            | Error::ModelNotAllowed(message)
            | Error::NotFound(message)
            | Error::Conflict { message, .. }
            | Error::Internal(message) => f.write_str(message),
            Error::InsufficientCredits { needed, available } => {
                write!(f, "insufficient credits: {needed} needed, {available} available")
            }
            Error::DailyCapExceeded { cap, spent, .. } => {
                write!(f, "daily cap {cap} reached ({spent} spent)")
            }
            Error::BudgetExhausted { cap, .. } => write!(f, "global daily budget {cap} exhausted"),
            Error::MaxCostExceeded { bound, cap } => write!(f, "cost bound {bound} over the cap {cap}"),
            Error::RateLimited { message, .. } => f.write_str(message),
            Error::Upstream { message, .. } | Error::UpstreamRejected(message) => f.write_str(message),
            Error::Busy(message) => f.write_str(message),
            Error::QueueFull { queue_max } => write!(f, "job queue full ({queue_max})"),
            Error::TooManyJobs { queued_per_user_max } => {
                write!(f, "too many queued jobs of this user ({queued_per_user_max})")
            }
            Error::Redemption(r) => f.write_str(r.message()),
            Error::Account(r) => f.write_str(&r.spec().message),
            Error::KeySpendLimitExceeded { limit, spent } => {
                write!(f, "key spend limit {limit} reached ({spent} spent)")
            }
            Error::KeyDailyLimitExceeded { limit, spent, .. } => {
                write!(f, "key daily spend limit {limit} reached ({spent} spent)")
            }
            Error::Storage(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<StorageError> for Error {
    fn from(e: StorageError) -> Self {
        Error::Storage(e)
    }
}

impl From<crate::support::token::NoRandomness> for Error {
    fn from(e: crate::support::token::NoRandomness) -> Self {
        Error::Internal(e.to_string())
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Storage(StorageError::Sqlite(e))
    }
}
