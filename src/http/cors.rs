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
use std::collections::HashSet;

/// Methods the API uses.
const ALLOW_METHODS: &str = "GET, POST, PUT, PATCH, DELETE";
/// Request headers a frontend sends.
const ALLOW_HEADERS: &str = "Authorization, Content-Type, Idempotency-Key, Last-Event-ID, Range";
/// Response headers a frontend may read.
const EXPOSE_HEADERS: &str = "X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, Retry-After, Idempotent-Replayed, X-Request-Id, Content-Range";
/// Origins allowed at most (a list, not a pattern language).
pub const CORS_ORIGINS_MAX: usize = 100;

pub struct Cors {
    origins: HashSet<String>,
    max_age_s: u64,
}

/// Checks `server.cors_origins`: each an origin exactly as a browser sends
/// it (`https://app.example.com`, `http://localhost:5173`), lower case, with
/// no path and no trailing slash.
pub fn check_origins(origins: &[String]) -> Result<(), String> {
    if origins.len() > CORS_ORIGINS_MAX {
        return Err(format!("at most {CORS_ORIGINS_MAX} origins"));
    }
    for o in origins {
        if o == "*" {
            return Err("\"*\" is not allowed: list each origin exactly".into());
        }
        let parsed = crate::config::url_shape(o, false)?;
        if parsed.origin().ascii_serialization() != *o {
            return Err(format!(
                "{o:?} is not an origin as browsers send it (expected {:?})",
                parsed.origin().ascii_serialization()
            ));
        }
    }
    Ok(())
}

impl Cors {
    pub fn new(origins: &[String], max_age_s: u64) -> Cors {
        Cors { origins: origins.iter().cloned().collect(), max_age_s }
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
            return Some(ApiError::new(403, "cors_origin_not_allowed", why).into_response());
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
        if !self.enabled() {
            return;
        }
        // Caches must not serve one origin's answer to another.
        response.headers.push(("Vary", "Origin".into()));
        if let Some(origin) = self.allowed(origin) {
            response.headers.push(("Access-Control-Allow-Origin", origin.to_owned()));
            response.headers.push(("Access-Control-Expose-Headers", EXPOSE_HEADERS.into()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_must_be_exact_and_never_a_wildcard() {
        assert!(check_origins(&["https://app.example.com".into(), "http://localhost:5173".into()]).is_ok());
        for bad in ["*", "https://app.example.com/", "https://App.example.com", "app.example.com", "ftp://x.org"] {
            assert!(check_origins(&[bad.into()]).is_err(), "{bad} accepted");
        }
        let many = |n: usize| (0..n).map(|i| format!("https://app{i}.example.com")).collect::<Vec<_>>();
        assert!(check_origins(&many(CORS_ORIGINS_MAX)).is_ok(), "exactly the limit");
        assert!(check_origins(&many(CORS_ORIGINS_MAX + 1)).is_err());
    }
}
