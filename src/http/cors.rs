//! Cross-origin access for browser frontends (`server.cors_origins`).
//!
//! Origins are matched exactly (scheme, host and port); there is no `*` and
//! no credentials mode, since callers authenticate with a bearer token, never
//! a cookie. A request from an origin not on the list gets no CORS headers at
//! all (the browser then refuses it), and a preflight from one gets 403
//! `cors_origin_not_allowed`. This module never authenticates and never
//! routes: it only answers preflights and adds headers to answers.

use super::error::ApiError;
use super::response::Response;
use crate::domain::Origin;
use std::collections::HashSet;

/// Methods the API uses.
const ALLOW_METHODS: &str = "GET, POST, PUT, PATCH, DELETE";
/// Request headers a frontend sends.
const ALLOW_HEADERS: &str = "Authorization, Content-Type, Idempotency-Key, Last-Event-ID, Range";
/// Response headers a frontend may read.
const EXPOSE_HEADERS: &str = "X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, Retry-After, Idempotent-Replayed, X-Request-Id, Content-Range";

pub struct Cors {
    origins: HashSet<String>,
    max_age_s: u64,
}

impl Cors {
    pub fn new(origins: &[Origin], max_age_s: u64) -> Cors {
        Cors { origins: origins.iter().map(|o| o.as_str().to_owned()).collect(), max_age_s }
    }

    pub fn enabled(&self) -> bool {
        !self.origins.is_empty()
    }

    fn allowed<'a>(&self, origin: Option<&'a str>) -> Option<&'a str> {
        origin.filter(|o| self.origins.contains(*o))
    }

    /// The answer to a CORS preflight (`OPTIONS` with
    /// `Access-Control-Request-Method`), or `None` when the request is not one.
    pub fn preflight(&self, method: &str, origin: Option<&str>, requested: Option<&str>) -> Option<Response> {
        if method != "OPTIONS" || requested.is_none() {
            return None;
        }
        if self.allowed(origin).is_none() {
            let why = if self.enabled() {
                "This origin is not allowed to call the API from a browser; an operator can add it to server.cors_origins."
            } else {
                "Cross-origin calls are off on this server; an operator can list allowed origins in server.cors_origins."
            };
            return Some(ApiError::refuse("cors_origin_not_allowed", why).into_response());
        }
        // `Allow-Origin` and `Vary` come from `decorate`, like every answer's.
        let mut r = Response::text(204, "text/plain", Vec::new());
        r.headers.extend([
            ("Access-Control-Allow-Methods", ALLOW_METHODS.into()),
            ("Access-Control-Allow-Headers", ALLOW_HEADERS.into()),
            ("Access-Control-Max-Age", self.max_age_s.to_string()),
        ]);
        Some(r)
    }

    /// Adds the CORS headers to an answer (a preflight's too) for an
    /// allowed origin.
    pub fn decorate(&self, origin: Option<&str>, response: &mut Response) {
        response.headers.extend(self.headers_for(origin));
    }

    /// The CORS headers of any answer to a request from `origin` (the
    /// connection layer's refusals too).
    pub fn headers_for(&self, origin: Option<&str>) -> Vec<(&'static str, String)> {
        if !self.enabled() {
            return Vec::new();
        }
        // Caches must not serve one origin's answer to another.
        let mut out = vec![("Vary", "Origin".to_owned())];
        if let Some(origin) = self.allowed(origin) {
            out.push(("Access-Control-Allow-Origin", origin.to_owned()));
            out.push(("Access-Control-Expose-Headers", EXPOSE_HEADERS.into()));
        }
        out
    }
}
