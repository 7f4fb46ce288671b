//! The blocking HTTP client every provider uses: one ureq agent per provider
//! with its connect and read timeouts, 4xx/5xx returned as values so their
//! bodies can be read, and bounded reads of error and JSON bodies.

use super::ProviderError;
use crate::config::ProviderConfig;
use serde_json::Value;
use std::time::Duration;
use ureq::Agent;
use ureq::http::Response;

/// Largest JSON body read from a provider (a chat answer, a task status).
pub const PROVIDER_BODY_BYTES_MAX: u64 = 16 << 20;
/// Of an error body, only this much is kept for the message.
const ERROR_BODY_BYTES_MAX: u64 = 64 << 10;

/// `callers_max`: threads that may call this provider at once. Each keeps its
/// connection alive for the next call; ureq's default of 3 idle connections
/// per host made most calls under load open (and close) a new one.
pub fn agent(cfg: &ProviderConfig, callers_max: usize) -> Agent {
    Agent::config_builder()
        .max_idle_connections(callers_max)
        .max_idle_connections_per_host(callers_max)
        .timeout_connect(Some(Duration::from_millis(cfg.connect_timeout_ms)))
        .timeout_recv_response(Some(Duration::from_millis(cfg.read_timeout_ms)))
        .timeout_recv_body(Some(Duration::from_millis(cfg.read_timeout_ms)))
        .http_status_as_error(false)
        .build()
        .into()
}

/// Turns a non-2xx answer into `ProviderError::Status` with the provider's
/// own message when it gave one (`{"error":{"message"}}`, `{"message"}`).
pub fn check(mut resp: Response<ureq::Body>) -> Result<Response<ureq::Body>, ProviderError> {
    let status = resp.status().as_u16();
    if (200..300).contains(&status) {
        return Ok(resp);
    }
    let text = resp.body_mut().with_config().limit(ERROR_BODY_BYTES_MAX).read_to_string().unwrap_or_default();
    let parsed = serde_json::from_str::<Value>(&text).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| {
            v.pointer("/error/message").or_else(|| v.get("message")).and_then(Value::as_str).map(str::to_owned)
        })
        .unwrap_or_else(|| text.chars().take(300).collect());
    if key_refused(status, parsed.as_ref()) {
        return Err(ProviderError::KeyRefused { status, message });
    }
    Err(ProviderError::Status { status, message })
}

/// Error codes with which providers say the account behind a key cannot
/// pay (OpenAI's `insufficient_quota`, Anthropic's `billing_error`...).
const QUOTA_CODES: [&str; 4] = ["insufficient_quota", "billing_error", "billing_not_active", "quota_exceeded"];

/// Whether an error answer refuses the key rather than the request: a bad
/// or revoked key (401), one without access (403), an account that cannot
/// pay (402, or a quota code with any status).
fn key_refused(status: u16, body: Option<&Value>) -> bool {
    if (401..=403).contains(&status) {
        return true;
    }
    let code = |p: &str| body.and_then(|v| v.pointer(p)).and_then(Value::as_str);
    ["/error/code", "/error/type", "/code", "/type"].iter().filter_map(|p| code(p)).any(|c| QUOTA_CODES.contains(&c))
}

pub fn read_json(mut resp: Response<ureq::Body>) -> Result<Value, ProviderError> {
    let text = resp
        .body_mut()
        .with_config()
        .limit(PROVIDER_BODY_BYTES_MAX)
        .read_to_string()
        .map_err(ProviderError::from_ureq)?;
    serde_json::from_str(&text).map_err(|e| ProviderError::BadResponse(format!("not JSON: {e}")))
}

pub fn u64_at(v: &Value, pointer: &str) -> u64 {
    v.pointer(pointer).and_then(Value::as_u64).unwrap_or(0)
}
