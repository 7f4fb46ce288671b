//! The service-layer error: what went wrong, split by whose fault it is.
//!
//! Modules below HTTP return this; `http::error` maps each variant to a status
//! and a stable code in one place. Client-fault variants carry a message that
//! says what to do next; server-fault variants carry detail for the log only.

use crate::domain::Credits;
use crate::storage::StorageError;
use std::fmt;

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
    Redemption(crate::codes::Refusal),
    /// An account request refused (sessions, passwords, identity providers).
    Account(crate::auth::refusal::Refusal),
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

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Storage(StorageError::Sqlite(e))
    }
}
