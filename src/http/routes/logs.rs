//! `/v1/logs`: the caller's own business logs.

use crate::domain::LogId;
use crate::http::error::ApiError;
use crate::http::response::Response;
use crate::http::route::{Access, Ctx, PAGED, Route, doc, route, with_query};
use crate::logs;

/// The logs routes, in the order the router tries them.
pub static ROUTES: &[Route] =
    &[with_query(route("GET", "/v1/logs", Access::User, mine, doc("Your business logs", None, 200, "LogList")), PAGED)];

pub fn mine(ctx: &Ctx) -> Result<Response, ApiError> {
    let list = logs::list_for_user(&ctx.app.db, ctx.user()?.id, &ctx.req.page_after(LogId::PREFIX)?)?;
    Ok(Response::json(200, &list))
}
