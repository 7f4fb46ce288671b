//! `/v1/limits` (the caller's) and `PUT /v1/admin/users/{id}/limits`.

use crate::domain::UserId;
use crate::error::Error;
use crate::guard::{Overrides, RATE_MAX};
use crate::http::error::ApiError;
use crate::http::response::Response;
use crate::http::route::{Access, Ctx, Route, doc, route};
use crate::ledger;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The limits routes, in the order the router tries them.
pub static ROUTES: &[Route] = &[
    route("GET", "/v1/limits", Access::User, mine, doc("Your limits and what is left of them", None, 200, "Limits")),
    route(
        "PUT",
        "/v1/admin/users/{id}/limits",
        Access::Admin,
        set,
        doc("Set a user's limit overrides", Some("LimitsUpdate"), 200, "LimitsSet"),
    ),
];

pub fn mine(ctx: &Ctx) -> Result<Response, ApiError> {
    let user = ctx.user()?.id;
    let e = ctx.app.guard.effective(user);
    let offset = ctx.app.guard.day_utc_offset_minutes();
    let spent = ctx.app.db.read(|c| ledger::spent_today(c, user, offset))?;
    let remaining_today = (e.daily_cap > 0).then(|| (e.daily_cap - spent.0).max(0));
    Ok(Response::json(
        200,
        &LimitsView {
            burst: e.burst,
            daily_cap: e.daily_cap,
            max_cost_per_request: e.max_cost_per_request,
            object: "limits",
            remaining: ctx.rate.map(|d| d.remaining),
            remaining_today,
            rpm: e.rpm,
            spent_today: spent,
        },
    ))
}

/// The caller's limits and what is left of them (0 = no cap). Fields in
/// name order: the bytes the answer has always had.
#[derive(Serialize, schemars::JsonSchema)]
#[schemars(rename = "Limits")]
pub(crate) struct LimitsView {
    burst: u32,
    daily_cap: i64,
    max_cost_per_request: i64,
    object: &'static str,
    /// Requests left in the bucket now.
    remaining: Option<u32>,
    /// Credits left under the daily cap today; null without a cap.
    remaining_today: Option<i64>,
    rpm: u32,
    spent_today: crate::domain::Credits,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "LimitsUpdate")]
pub(crate) struct SetLimits {
    #[serde(default)]
    rpm: Option<u32>,
    #[serde(default)]
    burst: Option<u32>,
    #[serde(default)]
    max_cost_per_request: Option<i64>,
    #[serde(default)]
    daily_cap: Option<i64>,
}

pub fn set(ctx: &Ctx) -> Result<Response, ApiError> {
    let user = UserId::parse(ctx.param(0)).ok_or_else(|| Error::not_found("user"))?;
    let body: SetLimits = ctx.req.json()?;
    for (name, v) in [("rpm", body.rpm), ("burst", body.burst)] {
        if v.is_some_and(|n| n == 0 || n > RATE_MAX) {
            return Err(
                Error::invalid(name, format!("{name} must be from 1 to {RATE_MAX}, or null for the default")).into()
            );
        }
    }
    for (name, v) in [("max_cost_per_request", body.max_cost_per_request), ("daily_cap", body.daily_cap)] {
        if v.is_some_and(|n| !(0..=crate::domain::CREDITS_AMOUNT_MAX).contains(&n)) {
            return Err(Error::invalid(
                name,
                format!("{name} must be 0 (no cap) or a positive number of credits, or null for the default"),
            )
            .into());
        }
    }
    let o = Overrides {
        rpm: body.rpm,
        // An rpm without a burst sets the burst too: a bucket the size of one
        // minute's refill is what "N per minute" means to most people.
        burst: body.burst.or(body.rpm),
        max_cost_per_request: body.max_cost_per_request,
        daily_cap: body.daily_cap,
    };
    let e = ctx.app.guard.set_overrides(&ctx.app.db, user, o)?;
    Ok(Response::json_value(200, &json!({ "object": "limits", "user_id": user, "effective": e, "overrides": o })))
}
