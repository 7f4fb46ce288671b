//! `/v1/auth/*`, `/v1/me`, `/v1/api-keys`.

use crate::auth;
use crate::auth::key_limits::{KeyLimits, KeyLimitsBody};
use crate::domain::{ApiKeyId, Email, Timestamp, UserId};
use crate::error::Error;
use crate::http::error::ApiError;
use crate::http::response::Response;
use crate::http::route::{Access, Ctx, PAGED, Route, doc, not_replayable, route, with_query};
use crate::users;
use serde::Deserialize;
use std::collections::HashSet;

/// The auth routes, in the order the router tries them.
pub static ROUTES: &[Route] = &[
    route(
        "POST",
        "/v1/auth/login",
        Access::Public,
        login,
        doc("Log in; returns an access token", Some("LoginRequest"), 200, "LoginResponse"),
    ),
    route(
        "POST",
        "/v1/auth/signup",
        Access::Public,
        signup,
        doc("Create an account (when enabled)", Some("LoginRequest"), 201, "User"),
    ),
    route("GET", "/v1/me", Access::User, me, doc("The calling user, with their active plan", None, 200, "Me")),
    not_replayable(route(
        "POST",
        "/v1/api-keys",
        Access::Session,
        create_key,
        doc(
            "Create an API key with optional limits (shown once; no Idempotency-Key)",
            Some("KeyLimitsBody"),
            201,
            "CreatedApiKey",
        ),
    )),
    with_query(
        route("GET", "/v1/api-keys", Access::Session, list_keys, doc("List your API keys", None, 200, "ApiKeyList")),
        PAGED,
    ),
    route(
        "PATCH",
        "/v1/api-keys/{id}",
        Access::Session,
        update_key,
        doc("Change a key's name or limits (null clears a limit)", Some("KeyLimitsBody"), 200, "ApiKey"),
    ),
    route("DELETE", "/v1/api-keys/{id}", Access::Session, revoke_key, doc("Revoke an API key", None, 200, "Deleted")),
    not_replayable(route(
        "POST",
        "/v1/admin/users/{id}/api-keys",
        Access::Admin,
        admin_create_key,
        doc("Mint an API key for a user (shown once; no Idempotency-Key)", Some("KeyLimitsBody"), 201, "CreatedApiKey"),
    )),
    route(
        "PATCH",
        "/v1/admin/users/{id}/api-keys/{key_id}",
        Access::Admin,
        admin_update_key,
        doc("Change a user's key: name or limits (null clears a limit)", Some("KeyLimitsBody"), 200, "ApiKey"),
    ),
    route(
        "DELETE",
        "/v1/admin/users/{id}/api-keys/{key_id}",
        Access::Admin,
        admin_revoke_key,
        doc("Revoke a user's API key", None, 200, "Deleted"),
    ),
    with_query(
        route(
            "GET",
            "/v1/admin/users/{id}/api-keys",
            Access::Admin,
            admin_list_keys,
            doc("A user's API keys", None, 200, "ApiKeyList"),
        ),
        PAGED,
    ),
];

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "LoginRequest")]
pub(crate) struct Credentials {
    email: String,
    password: String,
}

pub fn login(ctx: &Ctx) -> Result<Response, ApiError> {
    let body: Credentials = ctx.req.json()?;
    let guard = &ctx.app.guard;
    let ip = ctx.client_ip();
    let attempt = guard.begin_login(ip, &body.email).map_err(|refused| {
        if refused.lockout_started {
            let ip = ip.map(|i| i.to_string());
            crate::guard::log_refusal(&ctx.app.db, None, "login_lockout", serde_json::json!({ "ip": ip }));
        }
        refused.error
    })?;
    match auth::login(
        &ctx.app.db,
        &ctx.app.keys,
        &ctx.app.credentials,
        &ctx.app.config.auth,
        &body.email,
        &body.password,
    ) {
        Ok(out) => {
            guard.login_succeeded(attempt);
            Ok(Response::json(200, &out))
        }
        Err(e @ Error::Unauthorized(_)) => {
            guard.login_failed(attempt);
            Err(e.into())
        }
        Err(e) => {
            guard.login_not_tried(attempt);
            Err(e.into())
        }
    }
}

pub fn signup(ctx: &Ctx) -> Result<Response, ApiError> {
    let cfg = &ctx.app.config.auth;
    if !cfg.signup_enabled {
        return Err(
            Error::Forbidden("Signup is disabled on this server; ask an administrator for an account.".into()).into()
        );
    }
    let body: Credentials = ctx.req.json()?;
    let email = Email::parse(&body.email).map_err(|m| Error::invalid("email", m))?;
    let password = crate::auth::password::policy(&body.password, "password")?;
    let ip = ctx.client_ip();
    ctx.app.guard.begin_signup(ip)?;
    let cfg = cfg.clone();
    let made = auth::password::hash(&password)
        .and_then(|hash| ctx.app.db.write(move |c| users::sign_up(c, &email, &hash, &cfg)));
    match made {
        Ok(user) => Ok(Response::json(201, &user)),
        Err(e) => {
            ctx.app.guard.signup_not_made(ip);
            Err(e.into())
        }
    }
}

/// `GET /v1/me`: the user and the plan they pay for, if any.
#[derive(serde::Serialize, schemars::JsonSchema)]
#[schemars(rename = "Me")]
pub(crate) struct Me {
    #[serde(flatten)]
    user: users::User,
    /// The active subscription (`[payments] plans`), or null.
    plan: Option<crate::payments::Subscription>,
}

pub fn me(ctx: &Ctx) -> Result<Response, ApiError> {
    let user = users::get(&ctx.app.db, ctx.user()?.id)?;
    let plan = match ctx.app.payments {
        Some(_) => crate::payments::active_plan(&ctx.app.db, user.id)?,
        None => None,
    };
    Ok(Response::json(200, &Me { user, plan }))
}

fn model_names(ctx: &Ctx) -> HashSet<String> {
    ctx.app.adapter.models().iter().map(|m| m.name.clone()).collect()
}

pub fn create_key(ctx: &Ctx) -> Result<Response, ApiError> {
    create_key_for(ctx, ctx.user()?.id)
}

/// `POST /v1/admin/users/{id}/api-keys`: a product backend gives each of its
/// users a scoped key.
pub fn admin_create_key(ctx: &Ctx) -> Result<Response, ApiError> {
    let user = super::admin::user_param(ctx)?;
    users::get(&ctx.app.db, user)?;
    create_key_for(ctx, user)
}

fn create_key_for(ctx: &Ctx, user: UserId) -> Result<Response, ApiError> {
    let (body, raw): (KeyLimitsBody, _) = ctx.req.json_and_object()?;
    let name = auth::parse_key_name(body.name.as_deref().unwrap_or(""))?;
    let mut limits = KeyLimits::default();
    let models = model_names(ctx);
    body.apply(&raw, &mut limits, |m| models.contains(m), Timestamp::now())?;
    let day = ctx.app.guard.today();
    ctx.commit(201, move |c| auth::create_api_key(c, user, &name, &limits, day))
}

/// The key named by the path's parameter `at`, of `user`, changed by the caller.
fn key_of(ctx: &Ctx, user: UserId, at: usize) -> Result<auth::KeyOf, ApiError> {
    let id = ApiKeyId::parse(ctx.param(at)).ok_or_else(|| Error::not_found("API key"))?;
    Ok(auth::KeyOf { user, id, by: ctx.user()?.id })
}

/// `PATCH /v1/api-keys/{id}`: the fields sent change, null clears a limit,
/// the others stay. Read, change and write in one transaction.
pub fn update_key(ctx: &Ctx) -> Result<Response, ApiError> {
    update_key_of(ctx, key_of(ctx, ctx.user()?.id, 0)?)
}

/// `PATCH /v1/admin/users/{id}/api-keys/{key_id}`: the same, on a user's key.
pub fn admin_update_key(ctx: &Ctx) -> Result<Response, ApiError> {
    update_key_of(ctx, key_of(ctx, super::admin::user_param(ctx)?, 1)?)
}

fn update_key_of(ctx: &Ctx, key: auth::KeyOf) -> Result<Response, ApiError> {
    let (body, raw): (KeyLimitsBody, serde_json::Map<String, serde_json::Value>) = ctx.req.json_and_object()?;
    let name = body.name.as_deref().map(auth::parse_key_name).transpose()?;
    let (models, day) = (model_names(ctx), ctx.app.guard.today());
    let response = ctx.commit(200, move |c| {
        let current = auth::get_api_key(c, key.user, key.id, day)?;
        let mut limits = current.limits.clone();
        body.apply(&raw, &mut limits, |m| models.contains(m), Timestamp::now())?;
        auth::update_api_key(c, key, name.as_deref().unwrap_or(&current.name), &limits, day)
    })?;
    ctx.app.credentials.invalidate();
    Ok(response)
}

pub fn list_keys(ctx: &Ctx) -> Result<Response, ApiError> {
    let list = auth::list_api_keys(
        &ctx.app.db,
        ctx.user()?.id,
        &ctx.req.page_after(ApiKeyId::PREFIX)?,
        ctx.app.guard.today(),
    )?;
    Ok(Response::json(200, &list))
}

pub fn admin_list_keys(ctx: &Ctx) -> Result<Response, ApiError> {
    let user = super::admin::user_param(ctx)?;
    users::get(&ctx.app.db, user)?;
    let list = auth::list_api_keys(&ctx.app.db, user, &ctx.req.page_after(ApiKeyId::PREFIX)?, ctx.app.guard.today())?;
    Ok(Response::json(200, &list))
}

pub fn revoke_key(ctx: &Ctx) -> Result<Response, ApiError> {
    revoke_key_of(ctx, key_of(ctx, ctx.user()?.id, 0)?)
}

/// `DELETE /v1/admin/users/{id}/api-keys/{key_id}`: an admin takes a
/// user's key away (a leaked key, a departed backend).
pub fn admin_revoke_key(ctx: &Ctx) -> Result<Response, ApiError> {
    revoke_key_of(ctx, key_of(ctx, super::admin::user_param(ctx)?, 1)?)
}

fn revoke_key_of(ctx: &Ctx, key: auth::KeyOf) -> Result<Response, ApiError> {
    auth::revoke_api_key(&ctx.app.db, key)?;
    ctx.app.credentials.invalidate();
    Ok(Response::json(200, &super::Deleted::new(key.id, "api_key")))
}
