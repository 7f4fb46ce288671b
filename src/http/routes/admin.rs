//! `/v1/admin/*`: user management, credits, logs and the audit. The router
//! has already checked `role = admin`.

use crate::domain::{Credits, Email, LogId, Role, Timestamp, UserId};
use crate::error::Error;
use crate::http::error::ApiError;
use crate::http::response::Response;
use crate::http::route::{Access, Ctx, PAGED, Route, doc, route, with_query};
use crate::logs::{self, Level, LogFilter, LogType};
use crate::{ledger, users};
use serde::{Deserialize, Serialize};

/// The admin routes, in the order the router tries them.
pub static ROUTES: &[Route] = &[
    route("POST", "/v1/admin/users", Access::Admin, create_user, doc("Create a user", Some("CreateUser"), 201, "User")),
    with_query(
        route(
            "GET",
            "/v1/admin/users",
            Access::Admin,
            list_users,
            doc("List users (?email= finds addresses containing it)", None, 200, "UserList"),
        ),
        &["email", "limit", "starting_after"],
    ),
    route(
        "GET",
        "/v1/admin/users/{id}",
        Access::Admin,
        get_user,
        doc("One user with balance, limits and active grants", None, 200, "UserDetail"),
    ),
    route(
        "PATCH",
        "/v1/admin/users/{id}",
        Access::Admin,
        update_user,
        doc("Set a user's price group (null: list prices) or role", Some("UserUpdate"), 200, "UserDetail"),
    ),
    route(
        "POST",
        "/v1/admin/users/{id}/reactivate",
        Access::Admin,
        reactivate_user,
        doc("Let a deactivated user sign in again", None, 200, "UserDetail"),
    ),
    with_query(
        route(
            "GET",
            "/v1/admin/users/{id}/transactions",
            Access::Admin,
            user_transactions,
            doc("A user's ledger rows", None, 200, "TransactionList"),
        ),
        PAGED,
    ),
    route(
        "DELETE",
        "/v1/admin/users/{id}",
        Access::Admin,
        deactivate_user,
        doc("Deactivate a user", None, 200, "Deleted"),
    ),
    route(
        "POST",
        "/v1/admin/users/{id}/credits",
        Access::Admin,
        adjust_credits,
        doc("Grant or adjust a user's credits", Some("AdjustCredits"), 201, "Transaction"),
    ),
    with_query(
        route("GET", "/v1/admin/logs", Access::Admin, logs, doc("All logs, filtered", None, 200, "LogList")),
        &["log_type", "level", "user_id", "limit", "starting_after"],
    ),
    route(
        "GET",
        "/v1/admin/audit",
        Access::Admin,
        audit,
        doc("Audit every balance, hold and the hash chain", None, 200, "AuditReport"),
    ),
];

pub(super) fn user_param(ctx: &Ctx) -> Result<UserId, ApiError> {
    Ok(UserId::parse(ctx.param(0)).ok_or_else(|| Error::not_found("user"))?)
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "CreateUser")]
pub(crate) struct NewUser {
    email: String,
    password: String,
    #[serde(default)]
    role: Option<String>,
}

pub fn create_user(ctx: &Ctx) -> Result<Response, ApiError> {
    let body: NewUser = ctx.req.json()?;
    let email = Email::parse(&body.email).map_err(|m| Error::invalid("email", m))?;
    let password = crate::auth::password::policy(&body.password, "password")?;
    let role = match body.role.as_deref() {
        None => Role::User,
        Some(r) => Role::parse(r).ok_or_else(|| Error::invalid("role", "role must be \"user\" or \"admin\""))?,
    };
    let hash = crate::auth::password::hash(&password)?;
    ctx.commit(201, move |c| users::insert(c, &email, &hash, role))
}

/// Email searches are substrings of an address, not documents.
const EMAIL_SEARCH_CHARS_MAX: usize = 254;

pub fn list_users(ctx: &Ctx) -> Result<Response, ApiError> {
    let email = ctx.req.query("email");
    if email.is_some_and(|e| e.is_empty() || e.chars().count() > EMAIL_SEARCH_CHARS_MAX) {
        return Err(Error::invalid("email", format!("email must be 1 to {EMAIL_SEARCH_CHARS_MAX} characters")).into());
    }
    let list = users::list(&ctx.app.db, email, &ctx.req.page_after(UserId::PREFIX)?)?;
    Ok(Response::json(200, &list))
}

/// One user as an admin sees them: the account, the money and the limits.
#[derive(Serialize, schemars::JsonSchema)]
pub(crate) struct UserDetail {
    #[serde(flatten)]
    user: users::User,
    deactivated_at: Option<Timestamp>,
    balance: Credits,
    held: Credits,
    available: Credits,
    next_expiry: Option<ledger::grants::NextExpiry>,
    limits: LimitsView,
    /// Grants with credits left, in the order charges draw on them.
    active_grants: Vec<ledger::grants::Grant>,
}

#[derive(Serialize, schemars::JsonSchema)]
struct LimitsView {
    rpm: u32,
    burst: u32,
    /// 0 = no cap.
    max_cost_per_request: i64,
    /// 0 = no cap.
    daily_cap: i64,
    spent_today: Credits,
}

fn user_detail(ctx: &Ctx, id: UserId) -> Result<Response, ApiError> {
    let e = ctx.app.guard.effective(id);
    let offset = ctx.app.guard.day_utc_offset_minutes();
    let detail = ctx.app.db.read(|c| {
        let (user, deactivated_at) = users::get_any(c, id)?;
        let b = ledger::balance(c, id)?;
        Ok::<_, Error>(UserDetail {
            user,
            deactivated_at,
            balance: b.balance,
            held: b.held,
            available: b.available,
            next_expiry: b.next_expiry,
            limits: LimitsView {
                rpm: e.rpm,
                burst: e.burst,
                max_cost_per_request: e.max_cost_per_request,
                daily_cap: e.daily_cap,
                spent_today: ledger::spent_today(c, id, offset)?,
            },
            active_grants: ledger::grants::active(c, id)?,
        })
    })?;
    Ok(Response::json(200, &detail))
}

pub fn get_user(ctx: &Ctx) -> Result<Response, ApiError> {
    user_detail(ctx, user_param(ctx)?)
}

/// What an administrator may change of a user.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "UserUpdate")]
pub(crate) struct UserUpdate {
    /// A group of `[pricing] groups`, or null for list prices. Left out:
    /// unchanged.
    #[serde(default)]
    price_group: Option<String>,
    /// `user` or `admin`. Left out: unchanged.
    #[serde(default)]
    role: Option<String>,
}

/// `PATCH /v1/admin/users/{id}`: the fields sent change. A new price
/// group applies from the user's next call (a call in flight keeps the
/// group it was reserved at); a new role from their next request (the
/// credential cache is dropped), with the same session.
pub fn update_user(ctx: &Ctx) -> Result<Response, ApiError> {
    let id = user_param(ctx)?;
    let (body, raw): (UserUpdate, serde_json::Map<String, serde_json::Value>) = ctx.req.json_and_object()?;
    let groups = &ctx.app.config.pricing.groups;
    if let Some(g) = &body.price_group
        && !groups.contains_key(g)
    {
        let known: Vec<&str> = groups.keys().map(String::as_str).collect();
        let known =
            if known.is_empty() { "none are configured ([pricing] groups)".to_owned() } else { known.join(", ") };
        return Err(Error::invalid("price_group", format!("{g:?} is not a price group; the groups: {known}")).into());
    }
    let role = match body.role.as_deref() {
        None if raw.contains_key("role") => return Err(Error::invalid("role", "role is \"user\" or \"admin\"").into()),
        None => None,
        Some(r) => Some(Role::parse(r).ok_or_else(|| Error::invalid("role", "role is \"user\" or \"admin\""))?),
    };
    let admin = ctx.user()?.id;
    // The caller stays an administrator, so one always remains.
    if id == admin && role == Some(Role::User) {
        return Err(Error::invalid("role", "an administrator cannot take away their own admin role").into());
    }
    let group = raw.contains_key("price_group").then_some(body.price_group);
    ctx.app.db.write(move |c| {
        users::get_any(c, id)?;
        if let Some(group) = &group {
            users::storage::set_price_group(c, id, group.as_deref())?;
            let detail = serde_json::json!({ "price_group": group, "by": admin });
            crate::logs::write(c, &crate::logs::NewLog::business(id, "price_group_set", true, detail))?;
        }
        if let Some(role) = role {
            users::storage::set_role(c, id, role)?;
            let detail = serde_json::json!({ "role": role.as_str(), "by": admin });
            crate::logs::write(c, &crate::logs::NewLog::business(id, "role_set", true, detail))?;
        }
        Ok::<_, Error>(())
    })?;
    ctx.app.credentials.invalidate();
    user_detail(ctx, id)
}

pub fn reactivate_user(ctx: &Ctx) -> Result<Response, ApiError> {
    let id = user_param(ctx)?;
    users::reactivate(&ctx.app.db, id)?;
    user_detail(ctx, id)
}

/// `GET /v1/admin/users/{id}/transactions`: the user's ledger rows.
pub fn user_transactions(ctx: &Ctx) -> Result<Response, ApiError> {
    let id = user_param(ctx)?;
    let page = ctx.req.page_after(crate::domain::TxnId::PREFIX)?;
    let list = ctx.app.db.read(|c| {
        users::get_any(c, id)?;
        ledger::list(c, id, &page)
    })?;
    Ok(Response::json(200, &list))
}

pub fn deactivate_user(ctx: &Ctx) -> Result<Response, ApiError> {
    let id = user_param(ctx)?;
    if id == ctx.user()?.id {
        return Err(Error::invalid("id", "an administrator cannot deactivate their own account").into());
    }
    crate::auth::accounts::deactivate(&ctx.app.db, id)?;
    ctx.app.credentials.invalidate();
    Ok(Response::json(200, &super::Deleted::new(id, "user")))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "AdjustCredits")]
pub(crate) struct Adjust {
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
    // Only this user's rows: beside other users' writes (`Db::write_for_user`).
    ctx.commit_for(Some(user), 201, move |c| ledger::admin_adjust(c, user, amount, &description))
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
    // The whole ledger: exempt from the request statement timeout.
    let report = ctx.app.db.read_unbounded(|c| ledger::audit::audit(c, None))?;
    Ok(Response::json(200, &report))
}
