//! The HTTP edge: the limits and deadlines every connection is held to, the
//! JSON answer given when the connection layer refuses a request by itself,
//! and the file-descriptor budget that bounds open connections.
//!
//! The enforcing happens in the vendored tiny_http's connection layer
//! (`vendor/tiny_http/src/client.rs`), which reads each request's head and
//! whole body before any worker sees it. This module only configures it; it
//! never reads a socket.

use super::error::ApiError;
use crate::config::ServerConfig;
use std::sync::Arc;
use std::time::Duration;

/// Descriptors kept back for the database, providers and logs before
/// connections get a share of the limit (plus an eighth of the limit).
pub const FDS_RESERVED_MIN: u64 = 128;
/// Each connection holds its socket twice (a read and a write half).
pub const FDS_PER_CONNECTION: u64 = 2;
/// The derived default never goes past this: each connection is a thread.
pub const CONNECTIONS_DEFAULT_MAX: usize = 10_000;
/// ... nor below this.
pub const CONNECTIONS_DEFAULT_MIN: usize = 16;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the limit
/// now in force (the soft one, if raising failed).
pub fn raise_fd_limit() -> u64 {
    match rlimit::Resource::NOFILE.get() {
        Ok((soft, hard)) if soft < hard => match rlimit::Resource::NOFILE.set(hard, hard) {
            Ok(()) => hard,
            Err(e) => {
                log::warn!("cannot raise the open-file limit from {soft} to {hard}: {e}");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(e) => {
            log::warn!("cannot read the open-file limit ({e}); assuming 1024");
            1024
        }
    }
}

/// Open connections allowed: the configured number, or what the descriptor
/// limit leaves after the reserve.
pub fn connections_max(config: &ServerConfig, fd_limit: u64) -> usize {
    if config.connections_max > 0 {
        return config.connections_max;
    }
    let reserved = FDS_RESERVED_MIN + fd_limit / 8;
    let derived = fd_limit.saturating_sub(reserved) / FDS_PER_CONNECTION;
    usize::try_from(derived).unwrap_or(usize::MAX).clamp(CONNECTIONS_DEFAULT_MIN, CONNECTIONS_DEFAULT_MAX)
}

/// Routes whose bodies may carry images inline get the chat limit.
const CHAT_BODY_PATHS: &[&str] =
    &["/v1/chat/completions", "/v1/responses", "/v1/messages", "/v1/messages/count_tokens", "/v1/audio/transcriptions"];
/// ... and every POST under these prefixes (Gemini's
/// `/v1beta/models/{model}:{method}`, and `/v1/...`).
const CHAT_BODY_PREFIXES: &[&str] = &["/v1beta/models/", "/v1/models/"];

/// The body limit for a request to `url` (path, perhaps with a query).
pub fn body_bytes_max(config: &ServerConfig, url: &str) -> usize {
    let path = url.split('?').next().unwrap_or(url);
    if CHAT_BODY_PATHS.contains(&path) || CHAT_BODY_PREFIXES.iter().any(|p| path.starts_with(p)) {
        config.chat_body_bytes_max
    } else {
        config.body_bytes_max
    }
}

/// The connection layer's settings from `[server]`.
pub fn limits(config: &ServerConfig, connections_max: usize) -> tiny_http::Limits {
    let for_bodies = config.clone();
    let cors = super::cors::Cors::new(&config.cors_origins, config.cors_max_age_s);
    tiny_http::Limits {
        head_bytes_max: config.head_bytes_max,
        url_bytes_max: config.url_bytes_max,
        headers_max: config.headers_max,
        head_timeout: Duration::from_secs(config.head_timeout_s),
        idle_timeout: Duration::from_secs(config.idle_timeout_s),
        body_timeout_min: Duration::from_secs(config.body_timeout_min_s),
        body_bytes_per_s_min: config.body_bytes_per_s_min,
        write_timeout: Duration::from_secs(config.write_timeout_s),
        connections_max,
        body_bytes_in_flight_max: config.body_bytes_in_flight_max,
        body_bytes_max: Arc::new(move |_, url| body_bytes_max(&for_bodies, url)),
        rejection_body: Arc::new(rejection_body),
        // A browser shows a refusal's message only with the CORS headers.
        rejection_headers: Arc::new(move |origin| cors.headers_for(origin)),
    }
}

/// A refusal by the connection layer in the contract's error shape.
fn rejection_body(r: &tiny_http::Rejection) -> (&'static str, Vec<u8>) {
    crate::metrics::global().edge_rejections.with_label_values(&[r.code]).inc();
    let body = ApiError::refuse(r.code, r.message.clone()).into_response().body;
    ("application/json", body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_connection_limit_follows_the_descriptor_limit() {
        let c = ServerConfig::default();
        assert_eq!(connections_max(&c, 256), 48);
        assert_eq!(connections_max(&c, 20_000), 8_686);
        assert_eq!(connections_max(&c, 1 << 20), CONNECTIONS_DEFAULT_MAX);
        assert_eq!(connections_max(&c, 64), CONNECTIONS_DEFAULT_MIN);
        let c = ServerConfig { connections_max: 7, ..ServerConfig::default() };
        assert_eq!(connections_max(&c, 20_000), 7);
    }
}
