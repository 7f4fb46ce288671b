//! Stripe's HTTP API, the calls tollgate makes: a Checkout Session, a
//! billing portal session, an off-session PaymentIntent (auto top-up).
//! Form-encoded requests with the secret key as a bearer token and an
//! `Idempotency-Key` on every call (a retry after a timeout never makes a
//! second session or a second charge); JSON answers, read bounded.
//!
//! Knows Stripe's wire format only; never touches the database.

use crate::error::{Error, Result};
use serde_json::Value;
use std::time::Duration;

/// An answer from Stripe larger than this is refused.
pub const STRIPE_RESPONSE_BYTES_MAX: u64 = 1 << 20;

pub struct Stripe {
    agent: ureq::Agent,
    base: String,
    secret_key: String,
}

impl std::fmt::Debug for Stripe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stripe").field("base", &self.base).finish_non_exhaustive()
    }
}

impl Stripe {
    pub fn new(base: &str, secret_key: String, timeout_ms: u64) -> Stripe {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_millis(timeout_ms)))
            .max_redirects(0)
            .http_status_as_error(false)
            .user_agent("tollgate")
            .build()
            .into();
        Stripe { agent, base: base.trim_end_matches('/').to_owned(), secret_key }
    }

    /// `POST /v1/<path>` with `form`; the answer's JSON, or what Stripe said.
    pub fn post(&self, path: &str, form: &[(String, String)], idempotency_key: &str) -> Result<Value> {
        let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
        let url = format!("{}/v1/{path}", self.base);
        let sent = self
            .agent
            .post(&url)
            .header("Authorization", &format!("Bearer {}", self.secret_key))
            .header("Idempotency-Key", idempotency_key)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .send(body.as_bytes());
        let mut answer = sent.map_err(|e| Error::Upstream {
            timeout: matches!(e, ureq::Error::Timeout(_)),
            message: format!("Stripe could not be reached ({e}); nothing was charged. Try again."),
        })?;
        let status = answer.status().as_u16();
        let bytes = answer.body_mut().with_config().limit(STRIPE_RESPONSE_BYTES_MAX).read_to_vec().map_err(|e| {
            Error::Upstream { timeout: false, message: format!("Stripe's answer could not be read: {e}") }
        })?;
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            return Ok(v);
        }
        let said = v.pointer("/error/message").and_then(Value::as_str).unwrap_or("no message");
        if (400..500).contains(&status) && status != 429 {
            Err(Error::UpstreamRejected(format!("Stripe refused the request ({status}): {said}")))
        } else {
            Err(Error::Upstream { timeout: false, message: format!("Stripe failed ({status}): {said}; try again.") })
        }
    }
}

/// A string field of a Stripe object, or a 502 naming it.
pub fn field<'v>(v: &'v Value, name: &str) -> Result<&'v str> {
    v.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| Error::Upstream { timeout: false, message: format!("Stripe's answer has no {name:?}") })
}
