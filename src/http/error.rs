//! The HTTP error: status, stable code and message, in the contract's shape
//! `{"error":{"type","code","message","param"}}`. Every error, the service's
//! (`From<Error>`) and the HTTP layer's own ([`ApiError::refuse`]), gets its
//! status from its code in [`status_of`], the only place statuses are chosen.

use super::response::Response;
use super::route::Dialect;
use crate::error::Error;
use serde::Serialize;

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
    /// A refusal by its stable code; [`status_of`] gives the status.
    pub fn refuse(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(status_of(code), code, message)
    }

    fn new(status: u16, code: &'static str, message: impl Into<String>) -> ApiError {
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
        ApiError::refuse("invalid_json", format!("The request body is not valid JSON ({detail}). Send a JSON object."))
    }

    pub fn payload_too_large(limit: usize) -> ApiError {
        ApiError::refuse(
            "payload_too_large",
            format!("The request body is larger than {limit} bytes. Send a smaller body."),
        )
    }

    /// The error as `dialect`'s clients parse it.
    pub fn into_response_in(self, dialect: Dialect) -> Response {
        let (status, body) = match dialect {
            Dialect::OpenAi => return self.into_response(),
            Dialect::Google => (
                self.status,
                serde_json::json!({"error": {"code": self.status, "message": self.message, "status": google_status(self.status),
                    "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": self.code, "domain": "tollgate"}]}}),
            ),
            Dialect::Anthropic => {
                let (status, kind) = anthropic_kind(self.status, self.code);
                (
                    status,
                    serde_json::json!({"type": "error", "error": {"type": kind, "message": self.message, "code": self.code}}),
                )
            }
        };
        let mut r = Response::json_value(status, &body);
        retry_headers(&mut r, self.retry_after_s);
        r
    }

    pub fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
                param: self.param,
                kind: self.kind,
                retry_after_s: self.retry_after_s,
            },
        };
        let mut r = Response::json(self.status, &body);
        retry_headers(&mut r, self.retry_after_s);
        r
    }
}

/// The longest wait sent as `Retry-After`. SDKs sleep for whatever it says
/// before retrying (openai-node slept 17.6 h on a daily cap): past this,
/// the wait is only in `X-RateLimit-Reset` and the body's `retry_after_s`,
/// and SDKs fail fast.
pub const RETRY_AFTER_MAX_S: u64 = 60;

fn retry_headers(r: &mut Response, retry_after_s: Option<u64>) {
    match retry_after_s {
        Some(s) if s <= RETRY_AFTER_MAX_S => r.headers.push(("Retry-After", s.to_string())),
        Some(s) => r.headers.push(("X-RateLimit-Reset", s.to_string())),
        None => {}
    }
}

/// The status and error type Anthropic's SDKs map to their exceptions:
/// `billing_error` for credits, `overloaded_error` (529, which the SDKs
/// retry) when tollgate's own queues are full.
fn anthropic_kind(status: u16, code: &str) -> (u16, &'static str) {
    if code == "server_busy" {
        return (529, "overloaded_error");
    }
    match status {
        401 => (401, "authentication_error"),
        402 => (402, "billing_error"),
        403 => (403, "permission_error"),
        404 => (404, "not_found_error"),
        413 => (413, "request_too_large"),
        429 => (429, "rate_limit_error"),
        504 => (504, "timeout_error"),
        500..=599 => (status, "api_error"),
        _ => (status, "invalid_request_error"),
    }
}

/// Google's canonical status name for an HTTP status.
fn google_status(status: u16) -> &'static str {
    match status {
        400 | 413 | 422 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        402 => "FAILED_PRECONDITION",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    }
}

/// Every error's body, the contract's shape. Fields in name order: the
/// bytes the answer has always had.
#[derive(Serialize, schemars::JsonSchema)]
#[schemars(rename = "Error")]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize, schemars::JsonSchema)]
struct ErrorDetail {
    /// Stable: what a client branches on.
    code: &'static str,
    /// What went wrong and what to do next.
    message: String,
    /// The field or header at fault, when one is.
    param: Option<String>,
    /// OpenAI's error type for the status.
    #[serde(rename = "type")]
    kind: &'static str,
    /// Seconds until a retry can succeed, when one can.
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_s: Option<u64>,
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
        match &e {
            Error::Storage(err) if err.is_disk_full() => log::error!("storage error, disk full: {err}"),
            Error::Storage(err) => log::error!("storage error: {err}"),
            Error::Internal(detail) => log::error!("internal error: {detail}"),
            _ => {}
        }
        let view = e.client_view();
        let mut a = ApiError::refuse(view.code, view.message);
        a.param = view.param;
        a.retry_after_s = view.retry_after_s;
        a
    }
}

/// The one place an error gets its HTTP status: from its stable code, as
/// the reference's error table (docs/API.md) lists them; a test holds the
/// two together. An unknown code is our fault (500).
pub fn status_of(code: &str) -> u16 {
    match code {
        "invalid_json"
        | "invalid_request"
        | "unsupported_parameter"
        | "idempotency_not_supported"
        | "code_invalid"
        | "code_expired"
        | "webhook_url_refused"
        | "unknown_parameter"
        | "weak_password"
        | "wrong_password"
        | "invalid_reset_token"
        | "reset_token_expired"
        | "redirect_uri_not_allowed"
        | "invalid_oidc_state"
        | "invalid_oidc_code"
        | "invalid_http"
        | "webhook_signature_invalid" => 400,
        "unauthorized"
        | "invalid_refresh_token"
        | "refresh_token_reused"
        | "refresh_token_expired"
        | "oidc_token_invalid" => 401,
        "insufficient_credits" | "max_cost_exceeded" | "key_spend_limit_exceeded" => 402,
        "forbidden"
        | "key_not_allowed"
        | "cors_origin_not_allowed"
        | "oidc_domain_not_allowed"
        | "oidc_email_unverified"
        | "signup_disabled"
        | "model_not_allowed"
        | "invalid_signature"
        | "url_expired" => 403,
        "not_found" | "oidc_provider_not_found" | "model_not_found" => 404,
        "method_not_allowed" => 405,
        "request_timeout" => 408,
        // A state the request conflicts with.
        "oidc_account_exists"
        | "email_taken"
        | "job_not_cancelable"
        | "job_not_retryable"
        | "grant_expired"
        | "code_used_up"
        | "code_already_redeemed"
        | "webhook_from_config"
        | "config_managed"
        | "name_taken"
        | "secret_key_unset"
        | "webhook_endpoint_deleted"
        | "request_in_progress"
        | "no_customer"
        | "no_saved_card" => 409,
        "file_expired" => 410,
        "payload_too_large" => 413,
        "uri_too_long" => 414,
        "range_not_satisfiable" => 416,
        "expectation_failed" => 417,
        "idempotency_key_reused" => 422,
        "rate_limited"
        | "daily_cap_exceeded"
        | "key_daily_limit_exceeded"
        | "too_many_streams"
        | "queue_full"
        | "too_many_jobs" => 429,
        "request_header_too_large" | "too_many_headers" => 431,
        "unsupported_transfer_encoding" => 501,
        "oidc_provider_error" | "upstream_error" => 502,
        "server_busy" | "budget_exhausted" | "database_busy" | "database_unavailable" => 503,
        "upstream_timeout" => 504,
        "http_version_not_supported" => 505,
        "storage_full" => 507,
        _ => 500,
    }
}

#[cfg(test)]
mod tests {
    use super::status_of;

    /// Every row of the reference's error table has the status [`status_of`]
    /// gives its code (`/readyz` answers in its own shape, not through here).
    #[test]
    fn every_code_has_the_status_the_reference_gives_it() {
        let reference = include_str!("../../docs/API.md");
        let mut rows = 0;
        let mut wrong = Vec::new();
        for line in reference.lines() {
            let cells: Vec<&str> = line.split(" | ").collect();
            let (Some(status), Some(code), Some(when)) = (cells.first(), cells.get(1), cells.get(3)) else { continue };
            let (Ok(status), Some(code)) = (
                status.trim_start_matches("| ").parse::<u16>(),
                code.strip_prefix('`').and_then(|c| c.strip_suffix('`')),
            ) else {
                continue;
            };
            rows += 1;
            if !when.starts_with("`/readyz`") && status_of(code) != status {
                wrong.push(format!("{code}: documented {status}, answered {}", status_of(code)));
            }
        }
        assert!(rows > 60, "the error table was not found ({rows} rows)");
        assert!(wrong.is_empty(), "{wrong:#?}");
    }
}
