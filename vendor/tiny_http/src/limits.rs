//! PATCH (tollgate): the limits and deadlines every connection is held to,
//! and the rejections a connection answers by itself (see PATCHES.md).
//!
//! A connection thread reads each request's head and its whole body under
//! these limits before any worker sees the request, so a slow or hostile
//! client can hold at most its own connection thread, never a worker.

use std::sync::Arc;
use std::time::Duration;

use crate::Method;

/// Chooses the body limit for a request from its method and path.
pub type BodyLimit = Arc<dyn Fn(&Method, &str) -> usize + Send + Sync>;

/// Renders the body of a rejection: `(content type, body)`.
pub type RejectionBody = Arc<dyn Fn(&Rejection) -> (&'static str, Vec<u8>) + Send + Sync>;

/// Headers a rejection carries for the request's `Origin` (when the head
/// got far enough to name one): CORS, so a browser shows the message
/// instead of a network error.
pub type RejectionHeaders = Arc<dyn Fn(Option<&str>) -> Vec<(&'static str, String)> + Send + Sync>;

/// Why the connection layer answered a request itself and closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    /// A stable, machine-readable code (`request_timeout`, ...).
    pub code: &'static str,
    /// A sentence for a person: what went wrong and what to do.
    pub message: String,
}

impl Rejection {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Rejection {
        Rejection { status, code, message: message.into() }
    }
}

#[derive(Clone)]
pub struct Limits {
    /// Request line and headers together, in bytes (431 past it).
    pub head_bytes_max: usize,
    /// The request target, in bytes (414 past it).
    pub url_bytes_max: usize,
    /// Header lines per request (431 past it).
    pub headers_max: usize,
    /// From a connection's first byte of a request to the end of its head
    /// (408 past it). On a new connection it runs from the accept.
    pub head_timeout: Duration,
    /// A kept-alive connection with no new request for this long is closed.
    pub idle_timeout: Duration,
    /// Every body gets at least this long ...
    pub body_timeout_min: Duration,
    /// ... plus one second per this many bytes received (408 past it).
    pub body_bytes_per_s_min: u64,
    /// A single write to the socket that makes no progress for this long fails.
    pub write_timeout: Duration,
    /// Open connections at once; past it a new one gets 503 and is closed.
    pub connections_max: usize,
    /// The largest body a request may carry (413 past it).
    pub body_bytes_max: BodyLimit,
    /// Request bodies held in memory at once, all connections together
    /// (bytes received and not yet released by their request): past it a
    /// body gets 503 and its connection is closed. Bounds memory whatever
    /// many clients send at once.
    pub body_bytes_in_flight_max: usize,
    /// The body of every rejection.
    pub rejection_body: RejectionBody,
    /// More headers of every rejection, from the request's `Origin`.
    pub rejection_headers: RejectionHeaders,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            head_bytes_max: 16 * 1024,
            url_bytes_max: 8 * 1024,
            headers_max: 100,
            head_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            body_timeout_min: Duration::from_secs(10),
            body_bytes_per_s_min: 16 * 1024,
            write_timeout: Duration::from_secs(30),
            connections_max: 1024,
            body_bytes_max: Arc::new(|_, _| 1024 * 1024),
            body_bytes_in_flight_max: 256 * 1024 * 1024,
            rejection_body: Arc::new(|r| ("text/plain; charset=utf-8", r.message.clone().into_bytes())),
            rejection_headers: Arc::new(|_| Vec::new()),
        }
    }
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("head_bytes_max", &self.head_bytes_max)
            .field("url_bytes_max", &self.url_bytes_max)
            .field("headers_max", &self.headers_max)
            .field("head_timeout", &self.head_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("body_timeout_min", &self.body_timeout_min)
            .field("body_bytes_per_s_min", &self.body_bytes_per_s_min)
            .field("write_timeout", &self.write_timeout)
            .field("connections_max", &self.connections_max)
            .field("body_bytes_in_flight_max", &self.body_bytes_in_flight_max)
            .finish()
    }
}

/// The whole HTTP response for a rejection, with `Connection: close`;
/// `origin` is the request's, when its head named one.
pub(crate) fn rejection_bytes(limits: &Limits, r: &Rejection, origin: Option<&str>) -> Vec<u8> {
    let (content_type, body) = (limits.rejection_body)(r);
    let reason = crate::StatusCode(r.status).default_reason_phrase();
    let retry = if r.status == 503 { "Retry-After: 1\r\n" } else { "" };
    let more: String = (limits.rejection_headers)(origin)
        .into_iter()
        .filter(|(_, v)| !v.contains(['\r', '\n']))
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let mut out = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{retry}{more}Connection: close\r\n\r\n",
        r.status,
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

/// Bytes of request bodies held by one request, counted in a pool shared
/// by all connections; given back when the request (its body) is dropped.
pub(crate) struct BodyBudget {
    pool: Arc<std::sync::atomic::AtomicUsize>,
    held: usize,
}

impl BodyBudget {
    pub(crate) fn new(pool: Arc<std::sync::atomic::AtomicUsize>) -> BodyBudget {
        BodyBudget { pool, held: 0 }
    }

    /// Takes `n` more bytes from the pool; `false` (taking nothing) when
    /// that would pass `max`.
    pub(crate) fn grow(&mut self, n: usize, max: usize) -> bool {
        use std::sync::atomic::Ordering;
        let before = self.pool.fetch_add(n, Ordering::AcqRel);
        if before.saturating_add(n) > max {
            self.pool.fetch_sub(n, Ordering::AcqRel);
            return false;
        }
        self.held += n;
        true
    }
}

impl Drop for BodyBudget {
    fn drop(&mut self) {
        self.pool.fetch_sub(self.held, std::sync::atomic::Ordering::AcqRel);
    }
}
