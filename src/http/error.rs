//! The HTTP error: status, stable code and message, in the contract's shape
//! `{"error":{"type","code","message","param"}}`. Every service error becomes
//! one of these in `From<Error>`, the only place statuses are chosen.

use super::response::Response;
use crate::error::Error;
use serde_json::json;

#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub kind: &'static str,
    pub code: &'static str,
    pub message: String,
    pub param: Option<String>,
    pub retry_after_s: Option<u64>,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> ApiError {
        let kind = match status {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            402 => "billing_error",
            429 => "rate_limit_error",
            409 | 422 if matches!(code, "request_in_progress" | "idempotency_key_reused") => "idempotency_error",
            500..=599 => "api_error",
            _ => "invalid_request_error",
        };
        ApiError { status, kind, code, message: message.into(), param: None, retry_after_s: None }
    }

    pub fn with_param(mut self, param: impl Into<String>) -> ApiError {
        self.param = Some(param.into());
        self
    }

    pub fn invalid_json(detail: &str) -> ApiError {
        ApiError::new(
            400,
            "invalid_json",
            format!("The request body is not valid JSON ({detail}). Send a JSON object."),
        )
    }

    pub fn payload_too_large(limit: usize) -> ApiError {
        ApiError::new(
            413,
            "payload_too_large",
            format!("The request body is larger than {limit} bytes. Send a smaller body."),
        )
    }

    pub fn into_response(self) -> Response {
        let body = json!({ "error": {
            "type": self.kind, "code": self.code, "message": self.message, "param": self.param
        }});
        let mut r = Response::json_value(self.status, &body);
        if let Some(s) = self.retry_after_s {
            r.headers.push(("Retry-After", s.to_string()));
        }
        r
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        let reason = match &e {
            Error::InsufficientCredits { .. } => Some("insufficient_credits"),
            Error::MaxCostExceeded { .. } => Some("max_cost_exceeded"),
            Error::DailyCapExceeded { .. } => Some("daily_cap_exceeded"),
            Error::BudgetExhausted { .. } => Some("budget_exhausted"),
            _ => None,
        };
        if let Some(r) = reason {
            crate::metrics::global().credits_refused.with_label_values(&[r]).inc();
        }
        match e {
            Error::Invalid { param, message } => {
                let mut a = ApiError::new(400, "invalid_request", message);
                a.param = param;
                a
            }
            Error::Unauthorized(m) => ApiError::new(401, "unauthorized", m),
            Error::Forbidden(m) => ApiError::new(403, "forbidden", m),
            Error::ModelNotAllowed(m) => ApiError::new(403, "model_not_allowed", m).with_param("model"),
            Error::KeySpendLimitExceeded { limit, spent } => ApiError::new(
                402,
                "key_spend_limit_exceeded",
                format!(
                    "This API key's spend limit of {limit} credits would be passed ({spent} already spent or reserved through it). Raise the key's spend_limit or use another key."
                ),
            ),
            Error::KeyDailyLimitExceeded { limit, spent, retry_after_s } => {
                let mut a = ApiError::new(
                    429,
                    "key_daily_limit_exceeded",
                    format!(
                        "This API key's daily spend limit of {limit} credits would be passed ({spent} already spent or reserved through it today). Retry after the day rolls over, in {retry_after_s} s."
                    ),
                );
                a.retry_after_s = Some(retry_after_s);
                a
            }
            Error::NotFound(m) => ApiError::new(404, "not_found", m),
            Error::InsufficientCredits { needed, available } => ApiError::new(
                402,
                "insufficient_credits",
                format!(
                    "Insufficient credits: this needs {needed} and {available} are available. Top up, or wait for pending jobs to finish."
                ),
            ),
            Error::DailyCapExceeded { cap, spent, retry_after_s } => {
                let mut a = ApiError::new(
                    429,
                    "daily_cap_exceeded",
                    format!(
                        "Your daily spend cap of {cap} credits would be passed ({spent} already spent or reserved today). Retry after the day rolls over, in {retry_after_s} s."
                    ),
                );
                a.retry_after_s = Some(retry_after_s);
                a
            }
            Error::BudgetExhausted { retry_after_s, .. } => {
                let mut a = ApiError::new(
                    503,
                    "budget_exhausted",
                    "The service's daily spending budget is exhausted; charged requests resume when the day rolls over.",
                );
                a.retry_after_s = Some(retry_after_s);
                a
            }
            Error::MaxCostExceeded { bound, cap } => ApiError::new(
                402,
                "max_cost_exceeded",
                format!(
                    "This request could cost up to {bound} credits, over your per-request cap of {cap}. Ask for less (e.g. a lower max_tokens or max_cost)."
                ),
            ),
            Error::RateLimited { retry_after_s, message } => {
                let mut a = ApiError::new(429, "rate_limited", message);
                a.retry_after_s = Some(retry_after_s);
                a
            }
            Error::Upstream { timeout: true, message } => ApiError::new(
                504,
                "upstream_timeout",
                format!("The model provider did not answer in time ({message}). Nothing was charged; retry later."),
            ),
            Error::Upstream { timeout: false, message } => ApiError::new(
                502,
                "upstream_error",
                format!("The model provider failed ({message}). Nothing was charged; retry later."),
            ),
            Error::UpstreamRejected(message) => ApiError::new(
                400,
                "invalid_request",
                format!("The model provider rejected the request: {message}. Nothing was charged."),
            ),
            Error::QueueFull { queue_max } => {
                let mut a = ApiError::new(
                    429,
                    "queue_full",
                    format!("The job queue is full ({queue_max} queued jobs). Retry in a little while."),
                );
                a.retry_after_s = Some(5);
                a
            }
            Error::TooManyJobs { queued_per_user_max } => {
                let mut a = ApiError::new(
                    429,
                    "too_many_jobs",
                    format!(
                        "You have {queued_per_user_max} jobs waiting, the most one user may queue. Retry when one of them has started, or cancel one."
                    ),
                );
                a.retry_after_s = Some(5);
                a
            }
            Error::Busy(message) => {
                let mut a = ApiError::new(503, "server_busy", message);
                a.retry_after_s = Some(1);
                a
            }
            Error::Conflict { code, message } => ApiError::new(409, code, message),
            Error::Account(r) => {
                let spec = r.spec();
                let mut a = ApiError::new(spec.status, spec.code, spec.message);
                a.param = spec.param.map(str::to_owned);
                a
            }
            Error::Redemption(r) => {
                // A code that cannot be used is a bad request; one that
                // was used up (by others, or by this user) conflicts with state.
                let status = match r {
                    crate::codes::Refusal::Invalid | crate::codes::Refusal::Expired => 400,
                    crate::codes::Refusal::UsedUp | crate::codes::Refusal::AlreadyRedeemed => 409,
                };
                ApiError::new(status, r.code(), r.message())
            }
            Error::Storage(err) if err.is_disk_full() => {
                log::error!("storage error, disk full: {err}");
                let mut a = ApiError::new(
                    507,
                    "storage_full",
                    "The server's disk is full, so nothing was changed. Retry later; the operator must free disk space.",
                );
                a.retry_after_s = Some(30);
                a
            }
            Error::Storage(err) => {
                log::error!("storage error: {err}");
                ApiError::new(500, "internal_error", "An internal error occurred; nothing was changed. Retry later.")
            }
            Error::Internal(detail) => {
                log::error!("internal error: {detail}");
                ApiError::new(500, "internal_error", "An internal error occurred; nothing was changed. Retry later.")
            }
        }
    }
}
