//! `GET /v1/usage` (your own) and `GET /v1/admin/usage` (everyone's): the
//! daily usage aggregate, grouped, as JSON or CSV.

use crate::domain::UserId;
use crate::error::Error;
use crate::http::error::ApiError;
use crate::http::response::Response;
use crate::http::route::{Access, Ctx, Route, doc, route, with_query};
use crate::usage::{self, Dim, Query};

/// The usage routes, in the order the router tries them.
pub static ROUTES: &[Route] = &[
    with_query(
        route(
            "GET",
            "/v1/usage",
            Access::User,
            mine,
            doc(
                "Your usage from the daily aggregate (?start=&end=YYYY-MM-DD, group_by=day|model|key, format=csv)",
                None,
                200,
                "UsageReport",
            ),
        ),
        &["start", "end", "group_by", "format"],
    ),
    with_query(
        route(
            "GET",
            "/v1/admin/usage",
            Access::Admin,
            admin,
            doc(
                "Everyone's usage (?start=&end=&user_id=, group_by=day|model|user|key, format=csv)",
                None,
                200,
                "UsageReport",
            ),
        ),
        &["start", "end", "user_id", "group_by", "format"],
    ),
];

/// The range when none is given: the last 30 days, today included.
const DEFAULT_RANGE_DAYS: i64 = 30;

fn query(ctx: &Ctx, user: Option<UserId>, allowed: &[Dim]) -> Result<Query, ApiError> {
    let q = |n: &str| ctx.req.query(n);
    let today = ctx.app.guard.today();
    let end = q("end").map(|e| usage::parse_day(e, "end")).transpose()?.unwrap_or(today);
    let start = q("start").map(|s| usage::parse_day(s, "start")).transpose()?.unwrap_or(end - (DEFAULT_RANGE_DAYS - 1));
    Ok(Query::new(start, end, user, q("group_by").unwrap_or("day"), allowed)?)
}

fn answer(ctx: &Ctx, q: Query) -> Result<Response, ApiError> {
    let csv = match ctx.req.query("format") {
        None => ctx.req.header("accept").is_some_and(|a| a.contains("text/csv")),
        Some("csv") => true,
        Some("json") => false,
        Some(_) => return Err(Error::invalid("format", "format must be json or csv").into()),
    };
    let report = ctx.app.db.read(|c| usage::report(c, &q))?;
    if !csv {
        return Ok(Response::json(200, &report));
    }
    let mut r = Response::text(200, "text/csv; charset=utf-8", usage::csv(&report));
    let file = format!("attachment; filename=\"usage-{}-{}.csv\"", report.start, report.end);
    r.headers.push(("Content-Disposition", file));
    Ok(r)
}

pub fn mine(ctx: &Ctx) -> Result<Response, ApiError> {
    let q = query(ctx, Some(ctx.user()?.id), &[Dim::Day, Dim::Model, Dim::Key])?;
    answer(ctx, q)
}

pub fn admin(ctx: &Ctx) -> Result<Response, ApiError> {
    let user = match ctx.req.query("user_id") {
        None => None,
        Some(s) => {
            Some(UserId::parse(s).ok_or_else(|| Error::invalid("user_id", "user_id must be a user id (usr_...)"))?)
        }
    };
    let mut q = query(ctx, user, &[Dim::Day, Dim::Model, Dim::User, Dim::Key, Dim::Channel])?;
    q.operator = true;
    answer(ctx, q)
}
