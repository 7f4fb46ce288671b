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
    match ctx
        .app
        .db
        .write(|c| Ok::<_, crate::error::Error>(c.execute_batch("SELECT 1")?))
    {
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
