//! `/v1/admin/*`: user management, credits, logs and the audit. The router
//! has already checked `role = admin`.

use crate::domain::{Credits, Email, LogId, Password, Role, UserId};
use crate::error::Error;
use crate::http::error::ApiError;
use crate::http::response::Response;
use crate::http::router::Ctx;
use crate::logs::{self, Level, LogFilter, LogType};
use crate::{ledger, users};
use serde::Deserialize;

pub(super) fn user_param(ctx: &Ctx) -> Result<UserId, ApiError> {
    Ok(UserId::parse(ctx.param(0)).ok_or_else(|| Error::not_found("user"))?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    email: String,
    password: String,
    #[serde(default)]
    role: Option<String>,
}

pub fn create_user(ctx: &Ctx) -> Result<Response, ApiError> {
    let body: NewUser = ctx.req.json()?;
    let email = Email::parse(&body.email).map_err(|m| Error::invalid("email", m))?;
    let password = Password::parse(&body.password).map_err(|m| Error::invalid("password", m))?;
    let role = match body.role.as_deref() {
        None => Role::User,
        Some(r) => Role::parse(r).ok_or_else(|| Error::invalid("role", "role must be \"user\" or \"admin\""))?,
    };
    let hash = crate::auth::password::hash(&password)?;
    ctx.commit(201, move |c| users::insert(c, &email, &hash, role))
}

pub fn list_users(ctx: &Ctx) -> Result<Response, ApiError> {
    let list = users::list(&ctx.app.db, &ctx.req.page_after(UserId::PREFIX)?)?;
    Ok(Response::json(200, &list))
}

pub fn deactivate_user(ctx: &Ctx) -> Result<Response, ApiError> {
    let id = user_param(ctx)?;
    if id == ctx.user()?.id {
        return Err(Error::invalid("id", "an administrator cannot deactivate their own account").into());
    }
    users::deactivate(&ctx.app.db, id)?;
    ctx.app.credentials.invalidate();
    Ok(Response::json_value(200, &serde_json::json!({ "id": id.to_string(), "object": "user", "deleted": true })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Adjust {
    amount: i64,
    description: String,
}

pub fn adjust_credits(ctx: &Ctx) -> Result<Response, ApiError> {
    let user = user_param(ctx)?;
    let body: Adjust = ctx.req.json()?;
    // unsigned_abs: `abs()` of i64::MIN overflows (and wrapped past this check).
    if body.amount == 0 || body.amount.unsigned_abs() > crate::domain::CREDITS_AMOUNT_MAX.unsigned_abs() {
        return Err(Error::invalid(
            "amount",
            format!("amount must be a non-zero whole number of credits within ±{}", crate::domain::CREDITS_AMOUNT_MAX),
        )
        .into());
    }
    let description = ledger::parse_description(Some(&body.description))?;
    let amount = Credits(body.amount);
    ctx.commit(201, move |c| ledger::admin_adjust(c, user, amount, &description))
}

pub fn logs(ctx: &Ctx) -> Result<Response, ApiError> {
    let q = |name: &str| ctx.req.query(name);
    let filter = LogFilter {
        log_type: match q("log_type") {
            None => None,
            Some(s) => Some(
                LogType::parse(s).ok_or_else(|| Error::invalid("log_type", "log_type must be business or system"))?,
            ),
        },
        level: match q("level") {
            None => None,
            Some(s) => {
                Some(Level::parse(s).ok_or_else(|| Error::invalid("level", "level must be info, warn or error"))?)
            }
        },
        user_id: match q("user_id") {
            None => None,
            Some(s) => {
                Some(UserId::parse(s).ok_or_else(|| Error::invalid("user_id", "user_id must be a user id (usr_...)"))?)
            }
        },
    };
    let list = logs::list_all(&ctx.app.db, &filter, &ctx.req.page_after(LogId::PREFIX)?)?;
    Ok(Response::json(200, &list))
}

pub fn audit(ctx: &Ctx) -> Result<Response, ApiError> {
    let report = ctx.app.db.read(|c| ledger::audit::audit(c, None))?;
    Ok(Response::json(200, &report))
}
