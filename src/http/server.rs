//! The listener and its two worker pools.
//!
//! HTTP workers read every request and answer everything that does not wait
//! on a model provider (auth, ledger, jobs). Provider-bound routes are handed
//! to the upstream pool through a bounded queue, so slow AI calls can never
//! starve the rest; when that queue is full the answer is 503 `server_busy`.
//! Workers loop on `recv_timeout`, so a shutdown flag is seen within
//! [`WORKER_POLL_MS`]; on shutdown they finish the request they hold.
//!
//! A worker never reads from a socket: the connection layer (configured in
//! `edge.rs`) hands over requests whose head and body were read whole under
//! their limits and deadlines.

use super::error::ApiError;
use super::request::{self, Req};
use super::response::Response;
use super::router;
use super::state::HttpState;
use crate::app::App;
use crate::error::Error;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How often an idle worker checks for shutdown.
pub const WORKER_POLL_MS: u64 = 100;

static REQUEST_SEQ: AtomicU64 = AtomicU64::new(1);

/// A request read off the wire, waiting for an upstream worker.
struct Pending {
    raw: tiny_http::Request,
    req: Req,
    id: u64,
    started: Instant,
}

pub struct HttpServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
    server: Arc<tiny_http::Server>,
}

impl HttpServer {
    /// Binds the listening socket, before anything else of the service
    /// starts: a port in use fails the start before the database is touched.
    pub fn bind(addr: &str) -> Result<std::net::TcpListener, String> {
        std::net::TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))
    }

    pub fn start(app: Arc<App>, listener: std::net::TcpListener) -> Result<HttpServer, String> {
        let app = Arc::new(HttpState::new(app));
        let cfg = &app.app.config.server;
        let fd_limit = super::edge::raise_fd_limit();
        let connections_max = super::edge::connections_max(cfg, fd_limit);
        log::info!("accepting up to {connections_max} connections (open-file limit {fd_limit})");
        let server = tiny_http::Server::from_listener(listener, super::edge::limits(cfg, connections_max))
            .map_err(|e| format!("cannot listen on {}: {e}", cfg.addr))?;
        let addr = server.server_addr().to_ip().ok_or_else(|| "the listener has no IP address".to_owned())?;
        let server = Arc::new(server);
        let stop = Arc::new(AtomicBool::new(false));
        let upstream_n = cfg.upstream_workers;
        // Room for one waiting request per upstream worker, then 503.
        let (tx, rx) = sync_channel::<Pending>(upstream_n);
        let rx = Arc::new(Mutex::new(rx));
        let mut workers = Vec::new();
        for i in 0..upstream_n {
            let (app, rx, stop) = (Arc::clone(&app), Arc::clone(&rx), Arc::clone(&stop));
            workers.push(spawn(format!("upstream-{i}"), move || upstream_worker(&app, &rx, &stop))?);
        }
        for i in 0..cfg.http_workers_effective() {
            let (app, server, stop, tx) = (Arc::clone(&app), Arc::clone(&server), Arc::clone(&stop), tx.clone());
            workers.push(spawn(format!("http-{i}"), move || http_worker(&app, &server, &stop, &tx))?);
        }
        Ok(HttpServer { addr, stop, workers, server })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops taking requests, lets in-flight ones finish, closes the listener.
    pub fn shutdown(self) {
        self.stop.store(true, Ordering::SeqCst);
        for w in self.workers {
            let _ = w.join();
        }
        drop(self.server);
    }
}

fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, String> {
    thread::Builder::new().name(name).spawn(f).map_err(|e| format!("cannot start a worker thread: {e}"))
}

fn http_worker(app: &Arc<HttpState>, server: &tiny_http::Server, stop: &AtomicBool, upstream: &SyncSender<Pending>) {
    while !stop.load(Ordering::Relaxed) {
        match server.recv_timeout(Duration::from_millis(WORKER_POLL_MS)) {
            Ok(Some(rq)) => accept(app, rq, upstream),
            Ok(None) => {}
            Err(e) => log::warn!("accepting a request failed: {e}"),
        }
    }
}

fn upstream_worker(app: &Arc<HttpState>, rx: &Mutex<Receiver<Pending>>, stop: &AtomicBool) {
    loop {
        let next = match rx.lock() {
            Ok(r) => r.recv_timeout(Duration::from_millis(WORKER_POLL_MS)),
            Err(_) => return,
        };
        match next {
            Ok(p) => {
                let (response, route) = router::dispatch(app, &p.req);
                finish(app, p.raw, response, route, p.id, p.started, false);
            }
            Err(_) if stop.load(Ordering::Relaxed) => return,
            Err(_) => {}
        }
    }
}

fn accept(app: &Arc<HttpState>, mut raw: tiny_http::Request, upstream: &SyncSender<Pending>) {
    let started = Instant::now();
    let id = REQUEST_SEQ.fetch_add(1, Ordering::Relaxed);
    let limit = super::edge::body_bytes_max(&app.app.config.server, raw.url());
    let req = match request::read(&mut raw, limit) {
        Ok(req) => req,
        // The rest of an oversized body is not read; the connection is closed.
        Err(e) => return finish(app, raw, e.into_response(), "unread", id, started, true),
    };
    let origin = req.header("origin");
    if let Some(response) = app.cors.preflight(&req.method, origin, req.header("access-control-request-method")) {
        return finish(app, raw, response, "preflight", id, started, false);
    }
    // A plain `OPTIONS` (no preflight) asks what the path takes.
    if req.method == "OPTIONS" {
        let methods = router::methods_of(&req.path);
        let response = if methods.is_empty() {
            ApiError::refuse("not_found", format!("No route for {}. See /openapi.json.", req.path)).into_response()
        } else {
            let mut r = Response::text(204, "text/plain", Vec::new());
            r.headers.push(("Allow", format!("{}, OPTIONS", methods.join(", "))));
            r
        };
        return finish(app, raw, response, "options", id, started, false);
    }
    if router::find(&req.method, &req.path).is_ok_and(|(r, _)| r.upstream) {
        match upstream.try_send(Pending { raw, req, id, started }) {
            Ok(()) => {}
            Err(TrySendError::Full(p) | TrySendError::Disconnected(p)) => {
                crate::metrics::global().guard_refusals.with_label_values(&["server_busy"]).inc();
                let response =
                    ApiError::from(Error::Busy("All provider workers are busy. Retry in a moment.")).into_response();
                finish(app, p.raw, response, "busy", id, started, false);
            }
        }
        return;
    }
    let (response, route) = router::dispatch(app, &req);
    finish(app, raw, response, route, id, started, false);
}

/// Sends every answer: CORS headers for the request's origin, the request
/// id, then the metrics.
fn finish(
    http: &HttpState,
    raw: tiny_http::Request,
    mut response: Response,
    route: &'static str,
    id: u64,
    started: Instant,
    close: bool,
) {
    let status = response.status;
    let origin = raw.headers().iter().find(|h| h.field.equiv("Origin")).map(|h| h.value.as_str());
    http.cors.decorate(origin, &mut response);
    response.headers.push(("X-Request-Id", format!("req_{id:x}")));
    if close {
        response.headers.push(("Connection", "close".into()));
    }
    let url = raw.url().split('?').next().unwrap_or("").to_owned();
    // A clone of the enum (no allocation for the standard methods): `raw` is consumed by `respond`.
    let method = raw.method().clone();
    let method = method.as_str();
    let pace = Pace::of(&http.app.config.server);
    if pace.hands_off(&response) {
        // A large answer is written by a thread of its own, bounded by its
        // deadline: a client that reads slowly (or never) holds that thread
        // and its own connection, never a worker. One per connection at
        // most: a connection reads no new request until its answer is out.
        let spawned = std::thread::Builder::new().name("slow-write".into()).spawn(move || {
            if let Err(e) = respond(raw, response, pace) {
                log::debug!("req_{id:x}: the response was not sent whole: {e}");
            }
        });
        if let Err(e) = spawned {
            log::error!("req_{id:x}: no thread to write a large response ({e}); the connection is dropped");
        }
    } else if let Err(e) = respond(raw, response, pace) {
        log::debug!("req_{id:x}: client went away before the response was sent: {e}");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let m = crate::metrics::global();
    m.http_requests.with_label_values(&[route, method, status_label(status)]).inc();
    m.http_duration.with_label_values(&[route]).observe(elapsed);
    let ms = elapsed * 1000.0;
    if status >= 500 {
        log::warn!("req_{id:x} {method} {url} {status} {ms:.1}ms");
    } else {
        log::debug!("req_{id:x} {method} {url} {status} {ms:.1}ms");
    }
}

/// Status as a label without allocating for the common ones.
fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        201 => "201",
        202 => "202",
        204 => "204",
        400 => "400",
        401 => "401",
        402 => "402",
        403 => "403",
        404 => "404",
        405 => "405",
        408 => "408",
        409 => "409",
        413 => "413",
        414 => "414",
        422 => "422",
        429 => "429",
        431 => "431",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        505 => "505",
        507 => "507",
        _ => "other",
    }
}

fn header(name: &str, value: &str) -> Option<tiny_http::Header> {
    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()).ok()
}

/// How long writing an answer may take: `write_timeout_s`, plus a second
/// per `body_bytes_per_s_min` bytes (the floor a request body is held to).
#[derive(Debug, Clone, Copy)]
struct Pace {
    base: std::time::Duration,
    bytes_per_s_min: u64,
}

/// Answers at least this large are written off the worker.
pub const HANDOFF_BYTES_MIN: usize = 64 * 1024;

impl Pace {
    fn of(c: &crate::config::ServerConfig) -> Pace {
        Pace { base: std::time::Duration::from_secs(c.write_timeout_s), bytes_per_s_min: c.body_bytes_per_s_min.max(1) }
    }

    fn deadline(&self, bytes: usize) -> Instant {
        Instant::now() + self.base + std::time::Duration::from_secs_f64(bytes as f64 / self.bytes_per_s_min as f64)
    }

    /// A body in memory, or a file, large enough to fill a socket's buffer:
    /// streamed answers (server-sent events) stay on their worker.
    fn hands_off(&self, r: &Response) -> bool {
        match (&r.stream, r.stream_len) {
            (None, _) => r.body.len() >= HANDOFF_BYTES_MIN,
            (Some(_), Some(n)) => n >= HANDOFF_BYTES_MIN,
            (Some(_), None) => false,
        }
    }
}

/// A body that stops (the connection is then closed) once its answer's
/// deadline has passed: a client that reads too slowly cannot keep a
/// thread writing to it for ever, one slow write after another.
struct Paced<R> {
    inner: R,
    deadline: Instant,
}

impl<R: std::io::Read> std::io::Read for Paced<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if Instant::now() > self.deadline {
            crate::metrics::global().edge_rejections.with_label_values(&["response_deadline"]).inc();
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the client read the answer too slowly"));
        }
        self.inner.read(buf)
    }
}

fn respond(raw: tiny_http::Request, r: Response, pace: Pace) -> std::io::Result<()> {
    let mut headers: Vec<tiny_http::Header> = header("Content-Type", r.content_type).into_iter().collect();
    headers.extend(r.headers.iter().filter_map(|(k, v)| header(k, v)));
    match r.stream {
        // No length: tiny_http sends it chunked, flushing as we produce (a
        // stream's pace is its producer's; its socket writes are bounded
        // one by one).
        Some(body) if r.stream_len.is_none() => {
            raw.respond(tiny_http::Response::new(r.status.into(), headers, body, None, None))
        }
        Some(body) => {
            let len = r.stream_len.unwrap_or(0);
            let body = Paced { inner: body, deadline: pace.deadline(len) };
            raw.respond(tiny_http::Response::new(r.status.into(), headers, body, Some(len), None))
        }
        None => {
            let len = r.body.len();
            let body = Paced { inner: std::io::Cursor::new(r.body), deadline: pace.deadline(len) };
            raw.respond(tiny_http::Response::new(r.status.into(), headers, body, Some(len), None))
        }
    }
}
