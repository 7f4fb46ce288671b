//! Credit grants: an admin grants and voids; a user lists their own.

use super::positive_amount;
use crate::domain::{GrantId, Timestamp, UserId};
use crate::error::Error;
use crate::http::error::ApiError;
use crate::http::response::Response;
use crate::http::route::{Access, Ctx, PAGED_STATUS, Route, doc, route, with_query};
use crate::ledger;
use crate::ledger::grants::{self, GrantStatus, NewGrant, Source};
use serde::Deserialize;

/// The grants routes, in the order the router tries them.
pub static ROUTES: &[Route] = &[
    with_query(
        route(
            "GET",
            "/v1/credits/grants",
            Access::User,
            mine,
            doc("Your credit grants (?status=active|expired|voided|depleted)", None, 200, "GrantList"),
        ),
        PAGED_STATUS,
    ),
    route(
        "POST",
        "/v1/admin/users/{id}/grants",
        Access::Admin,
        create,
        doc(
            "Grant credits (201; 200 with the first grant for a repeated external_id)",
            Some("NewGrantBody"),
            201,
            "Grant",
        ),
    ),
    with_query(
        route(
            "GET",
            "/v1/admin/users/{id}/grants",
            Access::Admin,
            of_user,
            doc("A user's credit grants (?status=)", None, 200, "GrantList"),
        ),
        PAGED_STATUS,
    ),
    route(
        "POST",
        "/v1/admin/grants/{id}/void",
        Access::Admin,
        void,
        doc("End a grant early; its unheld remainder leaves in a void row", None, 200, "Grant"),
    ),
];

/// `POST /v1/admin/users/{id}/grants`; `expires_at` is RFC 3339.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewGrantBody {
    amount: i64,
    #[serde(default)]
    category: Option<String>,
    #[serde(default)]
    priority: Option<i64>,
    #[serde(default)]
    expires_at: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    external_id: Option<String>,
}

pub fn create(ctx: &Ctx) -> Result<Response, ApiError> {
    let user = super::admin::user_param(ctx)?;
    let body: NewGrantBody = ctx.req.json()?;
    let g = NewGrant {
        user,
        amount: positive_amount(body.amount, "amount")?,
        category: grants::parse_category(body.category.as_deref())?,
        priority: grants::parse_priority(body.priority)?,
        expires_at: grants::parse_expires_at(body.expires_at.as_deref(), "expires_at", Timestamp::now())?,
        source: Source::Admin,
        description: ledger::parse_description(body.description.as_deref())?,
        external_id: grants::parse_external_id(body.external_id.as_deref())?,
        code: None,
    };
    ctx.commit_status_for(Some(user), move |c| {
        let (grant, created) = grants::create(c, &g)?;
        Ok((if created { 201 } else { 200 }, grant))
    })
}

pub fn void(ctx: &Ctx) -> Result<Response, ApiError> {
    let id = GrantId::parse(ctx.param(0)).ok_or_else(|| Error::not_found("grant"))?;
    // A grant's user never changes: the void locks that user's row alone.
    let owner = ctx.app.db.read(|c| grants::owner(c, id))?.ok_or_else(|| Error::not_found("grant"))?;
    ctx.commit_for(Some(owner), 200, move |c| grants::void(c, id))
}

fn status_filter(ctx: &Ctx) -> Result<Option<GrantStatus>, ApiError> {
    match ctx.req.query("status") {
        None => Ok(None),
        Some(s) => Ok(Some(
            GrantStatus::parse(s)
                .ok_or_else(|| Error::invalid("status", "status must be active, expired, voided or depleted"))?,
        )),
    }
}

fn list_of(ctx: &Ctx, user: UserId) -> Result<Response, ApiError> {
    let status = status_filter(ctx)?;
    let page = ctx.req.page_after(GrantId::PREFIX)?;
    let list = ctx.app.db.read(|c| grants::list(c, user, status, &page))?;
    Ok(Response::json(200, &list))
}

pub fn mine(ctx: &Ctx) -> Result<Response, ApiError> {
    list_of(ctx, ctx.user()?.id)
}

pub fn of_user(ctx: &Ctx) -> Result<Response, ApiError> {
    let user = super::admin::user_param(ctx)?;
    crate::users::get(&ctx.app.db, user)?;
    list_of(ctx, user)
}
