//! Handlers, one file per area, mirroring the URL paths. A handler parses
//! its input into domain types, calls one service function (inside
//! `Ctx::commit` when it writes) and shapes the JSON. No SQL here.

pub mod admin;
pub mod ai;
pub mod audio;
pub mod auth;
pub mod channels;
pub mod codes;
pub mod console;
pub mod credits;
pub mod files;
pub mod gemini;
pub mod grants;
pub mod job_events;
pub mod jobs;
pub mod limits;
pub mod logs;
pub mod messages;
mod metered_stream;
pub mod oidc;
pub mod ops;
pub mod payments;
pub mod responses;
pub mod sessions;
pub mod usage;
pub mod webhooks;

use super::error::ApiError;
use crate::domain::Credits;
use serde::Serialize;

/// What a `DELETE` answers: the id, what it named, and `deleted: true`.
/// (Fields in name order: the bytes the answer has always had.)
#[derive(Serialize, schemars::JsonSchema)]
#[schemars(rename = "Deleted")]
pub(crate) struct Deleted {
    deleted: bool,
    id: String,
    object: &'static str,
}

impl Deleted {
    pub(crate) fn new(id: impl ToString, object: &'static str) -> Deleted {
        Deleted { deleted: true, id: id.to_string(), object }
    }
}

/// Account routes that check no password (refresh, logout, resets,
/// sign-in through a provider) share the client IP's login bucket.
pub(crate) fn account_rate(ctx: &super::route::Ctx) -> Result<(), ApiError> {
    Ok(ctx.app.guard.check_account_rate(ctx.client_ip())?)
}

/// A strictly positive amount of credits, or 400 naming `param`.
pub(crate) fn positive_amount(n: i64, param: &str) -> Result<Credits, ApiError> {
    Credits::positive(n).ok_or_else(|| {
        ApiError::refuse(
            "invalid_request",
            format!("{param} must be a whole number of credits from 1 to {}.", crate::domain::CREDITS_AMOUNT_MAX),
        )
        .with_param(param)
    })
}
