//! Redemption codes: admins mint, list and disable; users redeem.

use super::positive_amount;
use crate::codes::{self, CODES_PER_BATCH_MAX, CodeTerms, GRANT_EXPIRES_DAYS_MAX, NewCodes, REDEMPTIONS_PER_CODE_MAX};
use crate::domain::{CodeId, Timestamp};
use crate::error::Error;
use crate::http::error::ApiError;
use crate::http::response::Response;
use crate::http::route::{Access, Ctx, PAGED, Route, doc, route, with_query};
use crate::ledger::{self, grants};
use serde::Deserialize;

/// The codes routes, in the order the router tries them.
pub static ROUTES: &[Route] = &[
    route(
        "POST",
        "/v1/credits/redeem",
        Access::User,
        redeem,
        doc("Redeem a code into a credit grant", Some("RedeemBody"), 201, "Grant"),
    ),
    route(
        "POST",
        "/v1/admin/codes",
        Access::Admin,
        mint,
        doc("Mint redemption codes (each code shown only here)", Some("NewCodesBody"), 201, "RedemptionCodeList"),
    ),
    with_query(
        route(
            "GET",
            "/v1/admin/codes",
            Access::Admin,
            list,
            doc("Redemption codes (no secrets)", None, 200, "RedemptionCodeList"),
        ),
        PAGED,
    ),
    route(
        "POST",
        "/v1/admin/codes/{id}/disable",
        Access::Admin,
        disable,
        doc("Disable a redemption code", None, 200, "RedemptionCode"),
    ),
];

/// `POST /v1/admin/codes`; `redeem_by` is RFC 3339.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewCodesBody {
    amount: i64,
    count: i64,
    #[serde(default)]
    category: Option<String>,
    #[serde(default)]
    priority: Option<i64>,
    #[serde(default)]
    grant_expires_days: Option<i64>,
    #[serde(default)]
    redeem_by: Option<String>,
    #[serde(default)]
    max_redemptions: Option<i64>,
    #[serde(default)]
    description: Option<String>,
}

fn within(n: i64, param: &str, max: i64) -> Result<i64, Error> {
    if (1..=max).contains(&n) {
        Ok(n)
    } else {
        Err(Error::invalid(param, format!("{param} must be a whole number from 1 to {max}")))
    }
}

pub fn mint(ctx: &Ctx) -> Result<Response, ApiError> {
    let by = ctx.user()?.id;
    let b: NewCodesBody = ctx.req.json()?;
    let c = NewCodes {
        count: within(b.count, "count", CODES_PER_BATCH_MAX)?,
        terms: CodeTerms {
            amount: positive_amount(b.amount, "amount")?,
            category: grants::parse_category(b.category.as_deref())?,
            priority: grants::parse_priority(b.priority)?,
            grant_expires_days: b
                .grant_expires_days
                .map(|d| within(d, "grant_expires_days", GRANT_EXPIRES_DAYS_MAX))
                .transpose()?,
            redeem_by: grants::parse_expires_at(b.redeem_by.as_deref(), "redeem_by", Timestamp::now())?,
            max_redemptions: within(b.max_redemptions.unwrap_or(1), "max_redemptions", REDEMPTIONS_PER_CODE_MAX)?,
            description: ledger::parse_description(b.description.as_deref())?,
        },
    };
    ctx.commit(201, move |conn| {
        let minted = codes::mint(conn, by, &c)?;
        Ok(crate::paging::List { object: "list", data: minted, has_more: false })
    })
}

pub fn list(ctx: &Ctx) -> Result<Response, ApiError> {
    let page = ctx.req.page_after(CodeId::PREFIX)?;
    let list = ctx.app.db.read(|c| codes::list(c, &page))?;
    Ok(Response::json(200, &list))
}

pub fn disable(ctx: &Ctx) -> Result<Response, ApiError> {
    let id = CodeId::parse(ctx.param(0)).ok_or_else(|| Error::not_found("redemption code"))?;
    ctx.commit(200, move |c| codes::disable(c, id))
}

/// `POST /v1/credits/redeem`.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RedeemBody {
    code: String,
}

pub fn redeem(ctx: &Ctx) -> Result<Response, ApiError> {
    let user = ctx.user()?.id;
    let body: RedeemBody = ctx.req.json()?;
    let ip = ctx.client_ip();
    ctx.app.guard.begin_redeem(user, ip)?;
    let typed = body.code;
    // The code's own count is a conditional update of its row, so
    // redemptions by different users run side by side.
    let result = ctx.commit_for(Some(user), 201, move |c| Ok(codes::redeem(c, user, &typed)?));
    let guessed = matches!(&result, Err(e) if e.code == crate::error::redemption::Refusal::Invalid.code());
    if !guessed {
        ctx.app.guard.redeem_not_guessed(user, ip);
    }
    result
}
