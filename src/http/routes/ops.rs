//! Unauthenticated operations endpoints.

use crate::error::Error;
use crate::http::error::ApiError;
use crate::http::response::Response;
use crate::http::route::{Access, Ctx, Route, doc, route};
use serde_json::json;

/// The ops routes, in the order the router tries them.
pub static ROUTES: &[Route] = &[
    route("GET", "/healthz", Access::Public, healthz, doc("Process is up", None, 200, "Status")),
    route("GET", "/readyz", Access::Public, readyz, doc("Database is writable", None, 200, "Status")),
    route("GET", "/metrics", Access::Public, metrics, doc("Prometheus metrics", None, 200, "Metrics")),
    route("GET", "/openapi.json", Access::Public, openapi, doc("This OpenAPI 3.1 document", None, 200, "OpenApi")),
];

pub fn healthz(_: &Ctx) -> Result<Response, ApiError> {
    Ok(Response::json_value(200, &json!({ "status": "ok" })))
}

/// Ready means the database's disk has room (`server.disk_free_bytes_min`)
/// and a small real write was committed (at FULL, fsynced) right now.
/// Otherwise 503, with `storage_full` when space is what is missing.
pub fn readyz(ctx: &Ctx) -> Result<Response, ApiError> {
    let cfg = &ctx.app.config.server;
    let free = crate::storage::free_bytes(&cfg.db);
    if let Ok(free) = free
        && free < cfg.disk_free_bytes_min
    {
        log::error!("not ready: {free} bytes free beside {} (minimum {})", cfg.db.display(), cfg.disk_free_bytes_min);
        let message = format!(
            "The database's disk has {free} bytes free, under the {} required. Free disk space.",
            cfg.disk_free_bytes_min
        );
        return Ok(unavailable("storage_full", &message));
    }
    let now = crate::domain::Timestamp::now();
    match ctx.app.db.write(move |c| Ok::<_, Error>(crate::storage::probe_write(c, now.0)?)) {
        Ok(()) => Ok(Response::json_value(200, &ready(ctx))),
        Err(e) => {
            log::error!("readiness check failed: {e}");
            Ok(match &e {
                Error::Storage(s) if s.is_disk_full() => {
                    unavailable("storage_full", "The database cannot take a write: its disk is full. Free disk space.")
                }
                _ => unavailable("not_ready", "The database is not writable; see the server log."),
            })
        }
    }
}

/// Ready, and, with `[redis]`, whether the shared limits are in force or
/// their fallbacks are (the instance serves either way).
fn ready(ctx: &Ctx) -> serde_json::Value {
    let Some(up) = ctx.app.guard.shared_reachable() else { return json!({ "status": "ready" }) };
    let r = &ctx.app.config.redis;
    let fallback = |f: crate::config::Fallback| match f {
        crate::config::Fallback::Closed => "refused",
        crate::config::Fallback::Local => "per instance",
    };
    let redis = if up {
        json!({"status": "ok"})
    } else {
        json!({"status": "unreachable", "rate_limits": fallback(r.rate_limit_fallback),
               "login_lockouts": fallback(r.login_fallback)})
    };
    json!({ "status": "ready", "redis": redis })
}

fn unavailable(code: &str, message: &str) -> Response {
    Response::json_value(
        503,
        &json!({ "status": "unavailable", "error": { "type": "api_error", "code": code, "message": message, "param": null } }),
    )
}

/// Prometheus text format. Gauges that mirror the database are read now.
pub fn metrics(ctx: &Ctx) -> Result<Response, ApiError> {
    let m = crate::metrics::global();
    match ctx.app.db.read(|c| Ok::<_, crate::error::Error>(crate::ledger::storage::count_active_holds(c)?)) {
        Ok(n) => m.holds_active.set(n),
        Err(e) => log::warn!("metrics: cannot count holds: {e}"),
    }
    crate::jobs::observe(&ctx.app.db);
    Ok(Response::text(200, "text/plain; version=0.0.4; charset=utf-8", m.render()))
}

pub fn openapi(_: &Ctx) -> Result<Response, ApiError> {
    // The document is the binary's: built once, then served as bytes.
    static DOCUMENT: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let body = DOCUMENT.get_or_init(|| serde_json::to_vec(&crate::http::openapi::document()).unwrap_or_default());
    Ok(Response::text(200, "application/json", body.clone()))
}
