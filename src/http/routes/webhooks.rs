//! `/v1/admin/webhooks` and `/v1/admin/webhook-deliveries`: endpoints
//! (the signing secret shown once, at creation), and what was sent to them.

use crate::domain::{DeliveryId, EndpointId};
use crate::error::Error;
use crate::events::{self, endpoints, url_guard};
use crate::http::error::ApiError;
use crate::http::response::Response;
use crate::http::route::{Access, Ctx, PAGED, Route, doc, not_replayable, route, with_query};
use serde::Deserialize;

/// The webhooks routes, in the order the router tries them.
pub static ROUTES: &[Route] = &[
    not_replayable(route(
        "POST",
        "/v1/admin/webhooks",
        Access::Admin,
        create,
        doc(
            "Add a webhook endpoint (its signing secret is shown once; no Idempotency-Key)",
            Some("NewWebhookBody"),
            201,
            "CreatedEndpoint",
        ),
    )),
    with_query(
        route(
            "GET",
            "/v1/admin/webhooks",
            Access::Admin,
            list,
            doc("Webhook endpoints, from the config file and the API", None, 200, "EndpointList"),
        ),
        PAGED,
    ),
    route(
        "DELETE",
        "/v1/admin/webhooks/{id}",
        Access::Admin,
        delete,
        doc("Delete an API webhook endpoint (its pending deliveries fail)", None, 200, "Endpoint"),
    ),
    with_query(
        route(
            "GET",
            "/v1/admin/webhook-deliveries",
            Access::Admin,
            deliveries,
            doc("Webhook deliveries (?status=pending|delivered|failed&endpoint_id=)", None, 200, "DeliveryList"),
        ),
        &["status", "endpoint_id", "limit", "starting_after"],
    ),
    route(
        "POST",
        "/v1/admin/webhook-deliveries/{id}/redeliver",
        Access::Admin,
        redeliver,
        doc("Send a delivery again from its first attempt", None, 202, "Delivery"),
    ),
];

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
    crate::domain::check_event_types(&body.events).map_err(|m| Error::invalid("events", m))?;
    // Resolved here, on the HTTP worker: never inside the writer.
    url_guard::check(&body.url, ctx.app.config.events.allow_private_urls)
        .map_err(|m| ApiError::refuse("webhook_url_refused", format!("{m}.")).with_param("url"))?;
    let description = body.description.unwrap_or_default();
    let key = ctx.app.seal_key.clone();
    ctx.commit(201, move |c| endpoints::create(c, &body.url, &body.events, &description, key.as_ref()))
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
