//! `/v1/logs`: the caller's own business logs.

use crate::domain::LogId;
use crate::http::error::ApiError;
use crate::http::response::Response;
use crate::http::router::Ctx;
use crate::logs;

pub fn mine(ctx: &Ctx) -> Result<Response, ApiError> {
    let list = logs::list_for_user(&ctx.app.db, ctx.user()?.id, &ctx.req.page_after(LogId::PREFIX)?)?;
    Ok(Response::json(200, &list))
}
