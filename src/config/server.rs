//! `[server]`: the listener, its workers and its limits, CORS and the
//! public address. Reads settings only; `http` acts on them.

use super::{ConfigError, bad};
use crate::domain::{Origin, url_shape};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Origins allowed at most (a list, not a pattern language).
pub const CORS_ORIGINS_MAX: usize = 100;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub addr: String,
    pub db: PathBuf,
    /// Threads for everything that does not wait on a provider. 0 = the
    /// larger of 2 x cores and [`HTTP_WORKERS_DEFAULT_MIN`].
    pub http_workers: usize,
    /// Threads for provider-bound requests (chat, images).
    pub upstream_workers: usize,
    pub body_bytes_max: usize,
    /// The body limit of `POST /v1/chat/completions`, where images travel
    /// inline as base64 data URIs.
    pub chat_body_bytes_max: usize,
    /// Request bodies held in memory at once, all connections together;
    /// past it a body gets 503 `server_busy` (bounds memory under a flood).
    pub body_bytes_in_flight_max: usize,
    /// `full` (default: every acknowledged write survives power loss) or `normal`.
    pub sqlite_synchronous: String,
    /// Peers whose `X-Forwarded-For` is believed (a reverse proxy's address).
    /// Requests from anyone else are identified by their socket address.
    pub trusted_proxies: Vec<String>,
    /// Open client connections at once; past it a new one gets 503 and is
    /// closed. 0 = derived from the file-descriptor limit (see `http::edge`).
    pub connections_max: usize,
    /// Request line and headers together (431 past it).
    pub head_bytes_max: usize,
    /// The request URL (414 past it).
    pub url_bytes_max: usize,
    /// Header lines per request (431 past it).
    pub headers_max: usize,
    /// A request's head must arrive within this (408 past it).
    pub head_timeout_s: u64,
    /// A kept-alive connection with no new request is closed after this.
    pub idle_timeout_s: u64,
    /// Every body gets this long, plus one second per `body_bytes_per_s_min`
    /// bytes received (408 past it).
    pub body_timeout_min_s: u64,
    pub body_bytes_per_s_min: u64,
    /// A write to a client that makes no progress for this long fails and
    /// the connection is closed.
    pub write_timeout_s: u64,
    /// `/readyz` answers 503 `storage_full` when the database's file system
    /// has less free space than this.
    pub disk_free_bytes_min: u64,
    /// Browser origins (`https://app.example.com`, exact) allowed to call
    /// the API cross-origin. Empty = no CORS headers at all.
    pub cors_origins: Vec<Origin>,
    /// How long a browser may cache a preflight's answer.
    pub cors_max_age_s: u64,
    /// The URL this service is reached at from browsers (`https://api.example.com`),
    /// for the OIDC callback. Empty = `http://<addr>`.
    pub public_url: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            addr: "127.0.0.1:8080".into(),
            db: PathBuf::from("./tollgate.db"),
            http_workers: 0,
            upstream_workers: 64,
            body_bytes_max: 1_048_576,
            chat_body_bytes_max: 20 * 1_048_576,
            body_bytes_in_flight_max: 256 * 1_048_576,
            sqlite_synchronous: "full".into(),
            trusted_proxies: Vec::new(),
            connections_max: 0,
            head_bytes_max: 16 * 1024,
            url_bytes_max: 8 * 1024,
            headers_max: 100,
            head_timeout_s: 10,
            idle_timeout_s: 30,
            body_timeout_min_s: 10,
            body_bytes_per_s_min: 16 * 1024,
            write_timeout_s: 30,
            disk_free_bytes_min: 64 * 1_048_576,
            cors_origins: Vec::new(),
            cors_max_age_s: 600,
            public_url: String::new(),
        }
    }
}

/// Fewest HTTP workers by default. A worker that writes waits for the
/// fsync, not the CPU, and the writer can only commit together the requests
/// that wait on it: with 2 x cores (4 here) a group held at most 4 consumes.
/// Measured, 64 connections: 4 -> 6.9k req/s, 16 -> 10.2k, 32 -> 11.2k
/// (p99 10.7 ms), 64 -> 10.5k (p99 14.8 ms).
pub const HTTP_WORKERS_DEFAULT_MIN: usize = 32;

impl ServerConfig {
    pub fn http_workers_effective(&self) -> usize {
        if self.http_workers > 0 {
            return self.http_workers;
        }
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        (cores * 2).max(HTTP_WORKERS_DEFAULT_MIN)
    }
}

impl ServerConfig {
    /// Checks what types alone cannot: ranges and cross-references.
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        let srv = self;
        if srv.body_bytes_max < 1024 || srv.body_bytes_max > 64 * 1_048_576 {
            return bad("server.body_bytes_max", "must be between 1024 and 67108864 bytes");
        }
        if srv.chat_body_bytes_max < srv.body_bytes_max || srv.chat_body_bytes_max > 256 * 1_048_576 {
            return bad("server.chat_body_bytes_max", "must be at least server.body_bytes_max and at most 268435456");
        }
        if srv.body_bytes_in_flight_max < srv.chat_body_bytes_max {
            return bad("server.body_bytes_in_flight_max", "must be at least server.chat_body_bytes_max");
        }
        if srv.upstream_workers == 0 || srv.upstream_workers > 1024 {
            return bad("server.upstream_workers", "must be between 1 and 1024");
        }
        if srv.http_workers > 1024 {
            return bad("server.http_workers", "must be at most 1024 (0 means the default)");
        }
        if super::Synchronous::parse(&srv.sqlite_synchronous).is_none() {
            return bad("server.sqlite_synchronous", "must be \"full\" or \"normal\"");
        }
        if let Some(bad_ip) = srv.trusted_proxies.iter().find(|p| p.parse::<std::net::IpAddr>().is_err()) {
            return bad("server.trusted_proxies", &format!("{bad_ip:?} is not an IP address"));
        }
        if srv.head_bytes_max < 1024 || srv.head_bytes_max > 1_048_576 {
            return bad("server.head_bytes_max", "must be between 1024 and 1048576 bytes");
        }
        if srv.url_bytes_max < 256 || srv.url_bytes_max > srv.head_bytes_max {
            return bad("server.url_bytes_max", "must be at least 256 bytes and at most server.head_bytes_max");
        }
        if srv.headers_max == 0 || srv.headers_max > 1000 {
            return bad("server.headers_max", "must be between 1 and 1000");
        }
        if srv.connections_max > 1_000_000 {
            return bad("server.connections_max", "must be at most 1000000 (0 derives it from the fd limit)");
        }
        for (key, v) in [
            ("server.head_timeout_s", srv.head_timeout_s),
            ("server.idle_timeout_s", srv.idle_timeout_s),
            ("server.body_timeout_min_s", srv.body_timeout_min_s),
            ("server.write_timeout_s", srv.write_timeout_s),
        ] {
            if v == 0 || v > 3600 {
                return bad(key, "must be between 1 and 3600 seconds");
            }
        }
        if srv.body_bytes_per_s_min == 0 {
            return bad("server.body_bytes_per_s_min", "must be at least 1 byte per second");
        }
        if srv.cors_origins.len() > CORS_ORIGINS_MAX {
            return bad("server.cors_origins", &format!("at most {CORS_ORIGINS_MAX} origins"));
        }
        if !srv.public_url.is_empty() && url_shape(&srv.public_url, false).is_err() {
            return bad("server.public_url", "must be an http(s) URL such as https://api.example.com");
        }
        Ok(())
    }
}
