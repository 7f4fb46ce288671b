//! Handlers, one file per area, mirroring the URL paths. A handler parses
//! its input into domain types, calls one service function (inside
//! `Ctx::commit` when it writes) and shapes the JSON. No SQL here.

pub mod admin;
pub mod ai;
pub mod auth;
pub mod codes;
pub mod console;
pub mod credits;
pub mod files;
pub mod grants;
pub mod job_events;
pub mod jobs;
pub mod limits;
pub mod logs;
mod metered_stream;
pub mod oidc;
pub mod ops;
pub mod responses;
pub mod sessions;
pub mod usage;
pub mod webhooks;

use super::error::ApiError;
use crate::domain::Credits;

/// Account routes that check no password (refresh, logout, resets,
/// sign-in through a provider) share the client IP's login bucket.
pub(crate) fn account_rate(ctx: &super::router::Ctx) -> Result<(), ApiError> {
    Ok(ctx.app.guard.check_account_rate(ctx.client_ip())?)
}

/// A strictly positive amount of credits, or 400 naming `param`.
pub(crate) fn positive_amount(n: i64, param: &str) -> Result<Credits, ApiError> {
    Credits::positive(n).ok_or_else(|| {
        ApiError::new(
            400,
            "invalid_request",
            format!("{param} must be a whole number of credits from 1 to {}.", crate::domain::CREDITS_AMOUNT_MAX),
        )
        .with_param(param)
    })
}
