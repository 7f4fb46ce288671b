//! The listener and its worker threads.
//!
//! Each worker loops on `recv_timeout`, so that a shutdown flag is seen within
//! [`WORKER_POLL_MS`] without having to wake blocked threads. On shutdown the
//! workers finish the request they hold, then the listener is closed.

use super::request;
use super::response::Response;
use super::router;
use crate::app::App;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How often an idle worker checks for shutdown.
pub const WORKER_POLL_MS: u64 = 100;

static REQUEST_SEQ: AtomicU64 = AtomicU64::new(1);

pub struct HttpServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
    server: Arc<tiny_http::Server>,
}

impl HttpServer {
    pub fn start(app: Arc<App>) -> Result<HttpServer, String> {
        let server = tiny_http::Server::http(&app.config.server.addr)
            .map_err(|e| format!("cannot listen on {}: {e}", app.config.server.addr))?;
        let addr = server.server_addr().to_ip().ok_or_else(|| "the listener has no IP address".to_owned())?;
        let server = Arc::new(server);
        let stop = Arc::new(AtomicBool::new(false));
        let n = app.config.server.http_workers_effective();
        let mut workers = Vec::with_capacity(n);
        for i in 0..n {
            let (app, server, stop) = (Arc::clone(&app), Arc::clone(&server), Arc::clone(&stop));
            let h = thread::Builder::new()
                .name(format!("http-{i}"))
                .spawn(move || worker(&app, &server, &stop))
                .map_err(|e| format!("cannot start HTTP worker: {e}"))?;
            workers.push(h);
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

fn worker(app: &App, server: &tiny_http::Server, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match server.recv_timeout(Duration::from_millis(WORKER_POLL_MS)) {
            Ok(Some(rq)) => handle(app, rq),
            Ok(None) => {}
            Err(e) => log::warn!("accepting a request failed: {e}"),
        }
    }
}

fn handle(app: &App, mut rq: tiny_http::Request) {
    let started = Instant::now();
    let id = REQUEST_SEQ.fetch_add(1, Ordering::Relaxed);
    let (mut response, route, close) = match request::read(&mut rq, app.config.server.body_bytes_max) {
        Ok(req) => {
            let (r, route) = router::dispatch(app, &req);
            (r, route, false)
        }
        // The rest of an oversized body is not read; the connection is closed.
        Err(e) => (e.into_response(), "unread", true),
    };
    let status = response.status;
    response.headers.push(("X-Request-Id", format!("req_{id:x}")));
    if close {
        response.headers.push(("Connection", "close".into()));
    }
    let method = rq.method().as_str().to_owned();
    let url = rq.url().split('?').next().unwrap_or("").to_owned();
    if let Err(e) = rq.respond(to_tiny(response)) {
        log::debug!("req_{id:x}: client went away before the response was sent: {e}");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let m = crate::metrics::global();
    m.http_requests.with_label_values(&[route, method.as_str(), status_label(status)]).inc();
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
        409 => "409",
        413 => "413",
        422 => "422",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        _ => "other",
    }
}

fn header(name: &str, value: &str) -> Option<tiny_http::Header> {
    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()).ok()
}

fn to_tiny(r: Response) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    let mut out = tiny_http::Response::from_data(r.body).with_status_code(r.status);
    if let Some(h) = header("Content-Type", r.content_type) {
        out.add_header(h);
    }
    for (k, v) in &r.headers {
        if let Some(h) = header(k, v) {
            out.add_header(h);
        }
    }
    out
}
