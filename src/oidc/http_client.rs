//! The HTTP client the `openidconnect` crate calls (discovery, JWKS, the
//! token endpoint), over our one ureq agent type rather than a second HTTP
//! stack: no redirects (a provider endpoint that redirects is refused, not
//! followed), one deadline per call, and a bound on what is read back.

use openidconnect::{HttpRequest, HttpResponse};
use std::time::Duration;

/// One call to the identity provider, whole (connect to last byte).
pub const OIDC_HTTP_TIMEOUT_MS: u64 = 10_000;
/// A discovery document, key set or token response larger than this is refused.
pub const OIDC_RESPONSE_BYTES_MAX: u64 = 1 << 20;

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_millis(OIDC_HTTP_TIMEOUT_MS)))
        .max_redirects(0)
        .http_status_as_error(false)
        .user_agent("tollgate-oidc")
        .build()
        .into()
}

/// Sends `request` and reads the answer, whatever its status (the crate
/// reads error bodies: a token endpoint's `invalid_grant` is one).
pub fn call(agent: &ureq::Agent, request: HttpRequest) -> Result<HttpResponse, ureq::Error> {
    let response = agent.run(request)?;
    let (parts, mut body) = response.into_parts();
    let bytes = body.with_config().limit(OIDC_RESPONSE_BYTES_MAX).read_to_vec()?;
    Ok(HttpResponse::from_parts(parts, bytes))
}
