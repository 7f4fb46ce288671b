//! Provider failures, split by what the adapter does with them: transient
//! ones fail over to the next route; a rejected request is returned.

use std::fmt;

#[derive(Debug, Clone)]
pub enum ProviderError {
    /// Could not connect (refused, DNS, TLS).
    Connect(String),
    /// No answer within the configured time.
    Timeout,
    /// The provider answered with an error status.
    Status { status: u16, message: String },
    /// The provider answered 2xx with something we cannot read.
    BadResponse(String),
    /// The model has no usable route (unknown provider, no such capability).
    Unavailable(String),
    /// Every route's circuit is open; the first closes in `retry_in_ms`.
    CircuitOpen { retry_in_ms: u64 },
    /// The provider refused the key itself (401, 402, 403, an exhausted
    /// quota or billing): the key is taken out of service and the call
    /// fails over.
    KeyRefused { status: u16, message: String },
}

impl ProviderError {
    /// Worth trying the next route: connect errors, timeouts, 429 and 5xx.
    pub fn is_transient(&self) -> bool {
        match self {
            ProviderError::Connect(_)
            | ProviderError::Timeout
            | ProviderError::Unavailable(_)
            | ProviderError::CircuitOpen { .. }
            | ProviderError::KeyRefused { .. } => true,
            ProviderError::Status { status, .. } => *status == 429 || *status >= 500 || *status == 408,
            ProviderError::BadResponse(_) => true,
        }
    }

    /// The client's request was refused by the provider (400, 404, 422...).
    pub fn is_client_error(&self) -> bool {
        matches!(self, ProviderError::Status { status, .. } if (400..500).contains(status) && ![401, 403, 408, 429].contains(status))
    }

    pub fn status_label(&self) -> String {
        match self {
            ProviderError::Connect(_) => "connect_error".into(),
            ProviderError::Timeout => "timeout".into(),
            ProviderError::Status { status, .. } | ProviderError::KeyRefused { status, .. } => status.to_string(),
            ProviderError::BadResponse(_) => "bad_response".into(),
            ProviderError::Unavailable(_) => "unavailable".into(),
            ProviderError::CircuitOpen { .. } => "circuit_open".into(),
        }
    }

    pub fn from_ureq(e: ureq::Error) -> ProviderError {
        match e {
            ureq::Error::Timeout(_) => ProviderError::Timeout,
            ureq::Error::Io(io)
                if matches!(io.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock) =>
            {
                ProviderError::Timeout
            }
            ureq::Error::StatusCode(s) => ProviderError::Status { status: s, message: String::new() },
            other => ProviderError::Connect(other.to_string()),
        }
    }
}

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProviderError::Connect(m) => write!(f, "cannot reach the provider: {m}"),
            ProviderError::Timeout => write!(f, "the provider did not answer in time"),
            ProviderError::Status { status, message } => write!(f, "the provider answered {status}: {message}"),
            ProviderError::KeyRefused { status, message } => {
                write!(f, "the provider refused the key ({status}): {message}")
            }
            ProviderError::BadResponse(m) => write!(f, "the provider's answer could not be read: {m}"),
            ProviderError::Unavailable(m) => write!(f, "{m}"),
            ProviderError::CircuitOpen { retry_in_ms } => {
                write!(
                    f,
                    "every route of this model is cooling down after repeated failures (next try in {retry_in_ms} ms)"
                )
            }
        }
    }
}

impl std::error::Error for ProviderError {}
