//! `/v1/auth/oidc/{name}/start`, `/callback` and `/v1/auth/oidc/exchange`:
//! sign-in through an identity provider (see `oidc`). Limited like login.

use crate::http::error::ApiError;
use crate::http::response::Response;
use crate::http::route::{Access, Ctx, Route, doc, not_replayable, route, with_query};
use crate::oidc;
use serde::Deserialize;

/// The oidc routes, in the order the router tries them.
pub static ROUTES: &[Route] = &[
    Route {
        upstream: true,
        ..with_query(
            route(
                "GET",
                "/v1/auth/oidc/{name}/start",
                Access::Public,
                start,
                doc(
                    "Sign in through an identity provider: 302 to it (?redirect_uri=, optional state)",
                    None,
                    302,
                    "Redirect",
                ),
            ),
            &["redirect_uri", "state"],
        )
    },
    Route {
        upstream: true,
        // The provider adds what it likes (code, state, iss, scope, ...).
        query: None,
        ..route(
            "GET",
            "/v1/auth/oidc/{name}/callback",
            Access::Public,
            callback,
            doc("The provider returns here: 302 to redirect_uri with ?code= (or ?error=)", None, 302, "Redirect"),
        )
    },
    not_replayable(route(
        "POST",
        "/v1/auth/oidc/exchange",
        Access::Public,
        exchange,
        doc("Exchange a sign-in's one-time code for tokens", Some("ExchangeBody"), 200, "LoginResponse"),
    )),
];

/// Redirects the browser to the provider.
pub fn start(ctx: &Ctx) -> Result<Response, ApiError> {
    super::account_rate(ctx)?;
    let redirect_uri = ctx
        .req
        .query("redirect_uri")
        .ok_or_else(|| ApiError::refuse("invalid_request", "redirect_uri is required.").with_param("redirect_uri"))?;
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
