//! `/v1/auth/refresh`, `/logout`, `/logout-all`, `/password-reset*`,
//! `/v1/me/password` and the admin's reset token: the token lifecycle and
//! passwords. Every route here is limited like login (the client IP's
//! bucket) or, for the signed-in ones, by the caller's rate.

use crate::auth::reset;
use crate::auth::sessions::{self, Ended, Rotation};
use crate::auth::{self, password};
use crate::domain::Email;
use crate::error::Error;
use crate::error::account::Refusal;
use crate::http::error::ApiError;
use crate::http::response::Response;
use crate::http::route::{Access, Ctx, Route, doc, not_replayable, route};
use crate::logs::{self, NewLog};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The sessions routes, in the order the router tries them.
pub static ROUTES: &[Route] = &[
    not_replayable(route(
        "POST",
        "/v1/auth/refresh",
        Access::Public,
        refresh,
        doc(
            "Exchange a refresh token for a new pair (the old one is retired; reusing it ends the session)",
            Some("RefreshBody"),
            200,
            "Tokens",
        ),
    )),
    route(
        "POST",
        "/v1/auth/logout",
        Access::Public,
        logout,
        doc(
            "End the refresh token's session (its access tokens stop at once)",
            Some("RefreshBody"),
            200,
            "SessionsEnded",
        ),
    ),
    route(
        "POST",
        "/v1/auth/logout-all",
        Access::Session,
        logout_all,
        doc("End every session of the caller", None, 200, "SessionsEnded"),
    ),
    route(
        "POST",
        "/v1/auth/password-reset",
        Access::Public,
        request_reset,
        doc(
            "Ask for a reset token (always 202; a real account gets a user.password_reset_requested event)",
            Some("ResetRequestBody"),
            202,
            "ResetAccepted",
        ),
    ),
    route(
        "POST",
        "/v1/auth/password-reset/confirm",
        Access::Public,
        confirm_reset,
        doc(
            "Set a new password with a reset token; ends every session",
            Some("ResetConfirmBody"),
            200,
            "PasswordReset",
        ),
    ),
    route(
        "POST",
        "/v1/me/password",
        Access::Session,
        change_password,
        doc(
            "Change your password (current_password required); ends your other sessions",
            Some("PasswordChangeBody"),
            200,
            "SessionsEnded",
        ),
    ),
    not_replayable(route(
        "POST",
        "/v1/admin/users/{id}/password-reset",
        Access::Admin,
        admin_reset,
        doc("Issue a password reset token for a user (shown once; no Idempotency-Key)", None, 201, "ResetToken"),
    )),
];

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshBody {
    pub refresh_token: String,
}

/// Sessions ended by a logout or a password change.
#[derive(Serialize, schemars::JsonSchema)]
pub struct SessionsEnded {
    pub object: &'static str,
    pub sessions_ended: usize,
}

/// `POST /v1/auth/refresh`: the next token pair; the presented refresh
/// token is retired.
pub fn refresh(ctx: &Ctx) -> Result<Response, ApiError> {
    super::account_rate(ctx)?;
    let body: RefreshBody = ctx.req.json()?;
    let cfg = ctx.app.config.auth.clone();
    let token = body.refresh_token;
    // A session's writes are its user's: a refresh runs beside other
    // users' writes, under that user's row lock (a token that is not ours
    // runs alone, to be refused).
    let owner = ctx.app.db.read(|c| sessions::owner(c, &token))?;
    match ctx.app.db.write_for_user(owner, move |c| sessions::rotate(c, &token, &cfg))? {
        Rotation::Rotated(issued) => {
            Ok(Response::json(200, &auth::tokens(&ctx.app.keys, &ctx.app.config.auth, issued)?))
        }
        Rotation::Refused(r) => {
            if r == Refusal::RefreshTokenReused {
                ctx.app.credentials.invalidate();
            }
            Err(Error::Account(r).into())
        }
    }
}

/// `POST /v1/auth/logout`: ends the refresh token's session (and with it
/// every access token of the session, at once).
pub fn logout(ctx: &Ctx) -> Result<Response, ApiError> {
    super::account_rate(ctx)?;
    let body: RefreshBody = ctx.req.json()?;
    let token = body.refresh_token;
    if ctx.app.db.write(move |c| sessions::end(c, &token))?.is_none() {
        return Err(Error::Account(Refusal::InvalidRefreshToken).into());
    }
    ctx.app.credentials.invalidate();
    Ok(Response::json(200, &SessionsEnded { object: "logout", sessions_ended: 1 }))
}

/// `POST /v1/auth/logout-all`: ends every session of the caller.
pub fn logout_all(ctx: &Ctx) -> Result<Response, ApiError> {
    let user = ctx.user()?.id;
    let ended = ctx.app.db.write(move |c| {
        let n = sessions::end_all(c, user, None, Ended::LogoutAll)?;
        logs::write(c, &NewLog::business(user, "logout_all", true, json!({ "sessions_ended": n })))?;
        Ok::<_, Error>(n)
    })?;
    ctx.app.credentials.invalidate();
    Ok(Response::json(200, &SessionsEnded { object: "logout", sessions_ended: ended }))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChangeBody {
    pub current_password: String,
    pub new_password: String,
}

/// `POST /v1/me/password`: checks the current password (counted against
/// the login lockout like a login), sets the new one, ends the caller's
/// other sessions.
pub fn change_password(ctx: &Ctx) -> Result<Response, ApiError> {
    let caller = ctx.user()?;
    let body: PasswordChangeBody = ctx.req.json()?;
    let new = password::policy(&body.new_password, "new_password")?;
    let (email, hash) = reset::current(&ctx.app.db, caller.id)?;
    let guard = &ctx.app.guard;
    let attempt = guard.begin_login(ctx.client_ip(), &email).map_err(|r| r.error)?;
    match password::verify(&body.current_password, &hash) {
        Ok(true) => guard.login_succeeded(attempt),
        Ok(false) => {
            guard.login_failed(attempt);
            let why = json!({ "reason": "wrong_password" });
            logs::record(&ctx.app.db, NewLog::business(caller.id, "password_changed", false, why));
            return Err(Error::Account(Refusal::WrongPassword).into());
        }
        Err(e) => {
            guard.login_not_tried(attempt);
            return Err(e.into());
        }
    }
    let new_hash = password::hash(&new)?;
    let (user, keep) = (caller.id, caller.session());
    let ended = ctx.app.db.write(move |c| reset::change(c, user, &new_hash, keep))?;
    ctx.app.credentials.invalidate();
    Ok(Response::json(200, &SessionsEnded { object: "password_change", sessions_ended: ended }))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetRequestBody {
    pub email: String,
}

/// The answer to every reset request, whether or not the address has an
/// account.
#[derive(Serialize, schemars::JsonSchema)]
pub struct ResetAccepted {
    pub object: &'static str,
    pub status: &'static str,
}

/// `POST /v1/auth/password-reset`: always 202 with the same body; the work
/// happens off the request path (see `auth::reset`).
pub fn request_reset(ctx: &Ctx) -> Result<Response, ApiError> {
    super::account_rate(ctx)?;
    let body: ResetRequestBody = ctx.req.json()?;
    let email = Email::parse(&body.email).map_err(|m| Error::invalid("email", m))?;
    ctx.app.resets.submit(email)?;
    Ok(Response::json(202, &ResetAccepted { object: "password_reset_request", status: "accepted" }))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetConfirmBody {
    pub token: String,
    pub new_password: String,
}

/// `POST /v1/auth/password-reset/confirm`: sets the password and ends every
/// session of the account; the token is used up.
/// A password set with a reset token.
#[derive(Serialize, schemars::JsonSchema)]
#[schemars(rename = "PasswordReset")]
pub struct PasswordResetDone {
    object: &'static str,
    user_id: String,
}

pub fn confirm_reset(ctx: &Ctx) -> Result<Response, ApiError> {
    super::account_rate(ctx)?;
    let body: ResetConfirmBody = ctx.req.json()?;
    let new = password::policy(&body.new_password, "new_password")?;
    reset::precheck(&ctx.app.db, &body.token)?.map_err(Error::Account)?;
    let new_hash = password::hash(&new)?;
    let token = body.token;
    match ctx.app.db.write(move |c| reset::confirm(c, &token, &new_hash))? {
        Ok(user) => {
            ctx.app.credentials.invalidate();
            Ok(Response::json(200, &PasswordResetDone { object: "password_reset", user_id: user.to_string() }))
        }
        Err(r) => Err(Error::Account(r).into()),
    }
}

/// `POST /v1/admin/users/{id}/password-reset`: a reset token handed to the
/// admin (to pass on by other means); not limited per hour, no event.
pub fn admin_reset(ctx: &Ctx) -> Result<Response, ApiError> {
    let user = super::admin::user_param(ctx)?;
    let admin = ctx.user()?.id;
    let cfg = ctx.app.config.auth.clone();
    let token = ctx.app.db.write(move |c| {
        let t = reset::issue(c, user, &cfg, false)?
            .ok_or_else(|| Error::Internal("an unlimited issue was refused".into()))?;
        logs::write(c, &NewLog::business(user, "password_reset_issued", true, json!({ "by": admin.to_string() })))?;
        Ok::<_, Error>(t)
    })?;
    Ok(Response::json(201, &token))
}
