//! `/v1/auth/oidc/{name}/start`, `/callback` and `/v1/auth/oidc/exchange`:
//! sign-in through an identity provider (see `oidc`). Limited like login.

use crate::http::error::ApiError;
use crate::http::response::Response;
use crate::http::router::Ctx;
use crate::oidc;
use serde::Deserialize;

/// Redirects the browser to the provider.
pub fn start(ctx: &Ctx) -> Result<Response, ApiError> {
    super::account_rate(ctx)?;
    let redirect_uri = ctx
        .req
        .query("redirect_uri")
        .ok_or_else(|| ApiError::new(400, "invalid_request", "redirect_uri is required.").with_param("redirect_uri"))?;
    let url = ctx.app.oidc.start(&ctx.app.db, ctx.param(0), redirect_uri, ctx.req.query("state"))?;
    Ok(Response::redirect(&url))
}

/// The provider sends the browser here; it goes on to the frontend.
pub fn callback(ctx: &Ctx) -> Result<Response, ApiError> {
    super::account_rate(ctx)?;
    let oidc::Redirect(url) = ctx.app.oidc.callback(&ctx.app.db, &ctx.app.config.auth, ctx.param(0), &ctx.req.query)?;
    Ok(Response::redirect(&url))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExchangeBody {
    /// The one-time code the callback put in the frontend's URL.
    pub code: String,
}

/// The frontend's one-time code for a session's tokens.
pub fn exchange(ctx: &Ctx) -> Result<Response, ApiError> {
    super::account_rate(ctx)?;
    let body: ExchangeBody = ctx.req.json()?;
    let out = oidc::exchange(&ctx.app.db, &ctx.app.keys, &ctx.app.credentials, &ctx.app.config.auth, &body.code)?;
    Ok(Response::json(200, &out))
}
