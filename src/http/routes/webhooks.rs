//! `/v1/admin/webhooks` and `/v1/admin/webhook-deliveries`: endpoints
//! (the signing secret shown once, at creation), and what was sent to them.

use crate::domain::{DeliveryId, EndpointId};
use crate::error::Error;
use crate::events::{self, endpoints, url_guard};
use crate::http::error::ApiError;
use crate::http::response::Response;
use crate::http::router::Ctx;
use serde::Deserialize;

/// `POST /v1/admin/webhooks`.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewWebhookBody {
    url: String,
    /// Event types to send; omitted or empty = every type.
    #[serde(default)]
    events: Vec<String>,
    #[serde(default)]
    description: Option<String>,
}

pub fn create(ctx: &Ctx) -> Result<Response, ApiError> {
    let body: NewWebhookBody = ctx.req.json()?;
    endpoints::check_types(&body.events).map_err(|m| Error::invalid("events", m))?;
    // Resolved here, on the HTTP worker: never inside the writer.
    url_guard::check(&body.url, ctx.app.config.events.allow_private_urls)
        .map_err(|m| ApiError::new(400, "webhook_url_refused", format!("{m}.")).with_param("url"))?;
    let description = body.description.unwrap_or_default();
    ctx.commit(201, move |c| endpoints::create(c, &body.url, &body.events, &description))
}

pub fn list(ctx: &Ctx) -> Result<Response, ApiError> {
    let page = ctx.req.page_after(EndpointId::PREFIX)?;
    Ok(Response::json(200, &endpoints::list(&ctx.app.db, &page)?))
}

pub fn delete(ctx: &Ctx) -> Result<Response, ApiError> {
    let id = EndpointId::parse(ctx.param(0)).ok_or_else(|| Error::not_found("webhook endpoint"))?;
    ctx.commit(200, move |c| endpoints::delete(c, id))
}

pub fn deliveries(ctx: &Ctx) -> Result<Response, ApiError> {
    let status = match ctx.req.query("status") {
        None => None,
        Some(s) => Some(
            events::DELIVERY_STATUSES
                .into_iter()
                .find(|k| *k == s)
                .ok_or_else(|| Error::invalid("status", "status must be pending, delivered or failed"))?,
        ),
    };
    let endpoint = match ctx.req.query("endpoint_id") {
        None => None,
        Some(s) => Some(
            EndpointId::parse(s)
                .ok_or_else(|| Error::invalid("endpoint_id", "endpoint_id must be a webhook id (wh_...)"))?,
        ),
    };
    let page = ctx.req.page_after(DeliveryId::PREFIX)?;
    Ok(Response::json(200, &events::list_deliveries(&ctx.app.db, status, endpoint, &page)?))
}

pub fn redeliver(ctx: &Ctx) -> Result<Response, ApiError> {
    let id = DeliveryId::parse(ctx.param(0)).ok_or_else(|| Error::not_found("webhook delivery"))?;
    let response = ctx.commit(202, move |c| events::redeliver(c, id))?;
    ctx.app.webhook_wake.notify();
    Ok(response)
}
