//! Unauthenticated operations endpoints.

use crate::http::error::ApiError;
use crate::http::response::Response;
use crate::http::router::Ctx;
use serde_json::json;

pub fn healthz(_: &Ctx) -> Result<Response, ApiError> {
    Ok(Response::json_value(200, &json!({ "status": "ok" })))
}

/// Ready means a write transaction can be opened and committed right now.
pub fn readyz(ctx: &Ctx) -> Result<Response, ApiError> {
    match ctx.app.db.write(|c| Ok::<_, crate::error::Error>(c.execute_batch("SELECT 1")?)) {
        Ok(()) => Ok(Response::json_value(200, &json!({ "status": "ready" }))),
        Err(e) => {
            log::error!("readiness check failed: {e}");
            Ok(Response::json_value(
                503,
                &json!({ "status": "unavailable", "error": { "type": "api_error", "code": "not_ready", "message": "The database is not writable.", "param": null } }),
            ))
        }
    }
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
    Ok(Response::json_value(200, &crate::http::openapi::document()))
}
