//! `/v1/credits/*`: the caller's balance, ledger rows, consume and validate.

use super::positive_amount;
use crate::http::error::ApiError;
use crate::http::response::Response;
use crate::http::route::{Access, Ctx, PAGED, Route, doc, route, with_query};
use crate::ledger;
use serde::Deserialize;

/// The credits routes, in the order the router tries them.
pub static ROUTES: &[Route] = &[
    route(
        "GET",
        "/v1/credits/balance",
        Access::User,
        balance,
        doc("Your balance, held and available credits", None, 200, "Balance"),
    ),
    with_query(
        route(
            "GET",
            "/v1/credits/transactions",
            Access::User,
            transactions,
            doc("Your ledger rows", None, 200, "TransactionList"),
        ),
        PAGED,
    ),
    route(
        "POST",
        "/v1/credits/consume",
        Access::User,
        consume,
        doc("Spend credits", Some("ConsumeRequest"), 201, "Consumed"),
    ),
    route(
        "GET",
        "/v1/credits/validate",
        Access::User,
        validate,
        doc("Check your cached balance against the ledger", None, 200, "Validation"),
    ),
];

pub fn balance(ctx: &Ctx) -> Result<Response, ApiError> {
    let user = ctx.user()?.id;
    let b = ctx.app.db.read(|c| ledger::balance(c, user))?;
    Ok(Response::json(200, &b))
}

pub fn transactions(ctx: &Ctx) -> Result<Response, ApiError> {
    let user = ctx.user()?.id;
    let page = ctx.req.page_after(crate::domain::TxnId::PREFIX)?;
    let list = ctx.app.db.read(|c| ledger::list(c, user, &page))?;
    Ok(Response::json(200, &list))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ConsumeRequest")]
pub(crate) struct Consume {
    amount: i64,
    #[serde(default)]
    description: Option<String>,
}

pub fn consume(ctx: &Ctx) -> Result<Response, ApiError> {
    let caller = ctx.user()?;
    let user = caller.id;
    let body: Consume = ctx.req.json()?;
    let amount = positive_amount(body.amount, "amount")?;
    let description = ledger::parse_description(body.description.as_deref())?;
    ctx.app.guard.check_cost(user, amount)?;
    let caps = ctx.app.guard.spend_caps(&caller);
    let lock = caps.lock_user(user);
    let response = ctx.commit_for(lock, 201, move |c| ledger::consume(c, user, amount, &description, &caps))?;
    crate::metrics::global().credits_charged.inc_by(amount.0 as u64);
    Ok(response)
}

pub fn validate(ctx: &Ctx) -> Result<Response, ApiError> {
    let user = ctx.user()?.id;
    let v = ctx.app.db.read(|c| ledger::validate(c, user))?;
    Ok(Response::json(200, &v))
}
