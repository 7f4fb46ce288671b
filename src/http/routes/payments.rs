//! `/v1/payments/*` and `/v1/admin/payments`: what is for sale, Checkout,
//! the billing portal, auto top-up, and Stripe's webhook (verified against
//! the raw body before anything is parsed or stored).

use crate::domain::{PaymentId, UserId};
use crate::error::Error;
use crate::http::error::ApiError;
use crate::http::response::Response;
use crate::http::route::{Access, Ctx, PAGED, Route, doc, not_replayable, route, with_query};
use crate::payments::{self, Gateway, Item};
use serde::{Deserialize, Serialize};

pub static ROUTES: &[Route] = &[
    route(
        "GET",
        "/v1/payments/catalog",
        Access::User,
        catalog,
        doc("What is for sale: credit packages and plans", None, 200, "PaymentCatalog"),
    ),
    not_replayable(route(
        "POST",
        "/v1/payments/checkout",
        Access::User,
        checkout,
        doc(
            "Start a Stripe Checkout for a package or a plan (no Idempotency-Key)",
            Some("CheckoutBody"),
            201,
            "Checkout",
        ),
    )),
    with_query(
        route(
            "GET",
            "/v1/payments",
            Access::User,
            list,
            doc("Your payments and the grants they made", None, 200, "PaymentList"),
        ),
        PAGED,
    ),
    not_replayable(route(
        "POST",
        "/v1/payments/portal",
        Access::Session,
        portal,
        doc(
            "Stripe's billing portal for you (cancel a plan, change the card)",
            Some("PortalBody"),
            200,
            "PortalSession",
        ),
    )),
    route(
        "GET",
        "/v1/payments/auto-topup",
        Access::User,
        get_topup,
        doc("Your auto top-up setting", None, 200, "AutoTopupView"),
    ),
    route(
        "PUT",
        "/v1/payments/auto-topup",
        Access::Session,
        put_topup,
        doc(
            "Charge your saved card for a package when credits fall below a threshold",
            Some("AutoTopupBody"),
            200,
            "AutoTopupView",
        ),
    ),
    not_replayable(route(
        "POST",
        "/v1/payments/stripe/webhook",
        Access::Public,
        webhook,
        doc("Stripe's events, signed (Stripe-Signature); each acted on once", None, 200, "PaymentEventReceived"),
    )),
    with_query(
        route(
            "GET",
            "/v1/admin/payments",
            Access::Admin,
            admin_list,
            doc("Everyone's payments (refund shortfalls included)", None, 200, "PaymentList"),
        ),
        PAGED,
    ),
];

fn gateway<'a>(ctx: &Ctx<'a>) -> Result<&'a Gateway, ApiError> {
    ctx.app
        .payments
        .as_ref()
        .ok_or_else(|| Error::NotFound("Payments are not enabled on this server ([payments] provider).".into()).into())
}

/// What is for sale.
#[derive(Serialize, schemars::JsonSchema)]
#[schemars(rename = "PaymentCatalog")]
pub(crate) struct CatalogView<'c> {
    object: &'static str,
    provider: &'c str,
    packages: Vec<PackageView<'c>>,
    plans: Vec<PlanView<'c>>,
}

#[derive(Serialize, schemars::JsonSchema)]
pub(crate) struct PackageView<'c> {
    id: &'c str,
    name: Option<&'c str>,
    credits: i64,
    /// In the currency's minor unit.
    price: i64,
    currency: &'c str,
    category: &'c str,
    expires_days: Option<i64>,
}

#[derive(Serialize, schemars::JsonSchema)]
pub(crate) struct PlanView<'c> {
    id: &'c str,
    name: Option<&'c str>,
    credits_per_period: i64,
    price: i64,
    currency: &'c str,
    interval: &'c str,
    rollover: bool,
}

pub fn catalog(ctx: &Ctx) -> Result<Response, ApiError> {
    gateway(ctx)?;
    let cfg = &ctx.app.config.payments;
    let view = CatalogView {
        object: "payment_catalog",
        provider: &cfg.provider,
        packages: cfg
            .packages
            .iter()
            .map(|p| PackageView {
                id: &p.id,
                name: p.name.as_deref(),
                credits: p.credits,
                price: p.price,
                currency: &p.currency,
                category: &p.category,
                expires_days: p.expires_days,
            })
            .collect(),
        plans: cfg
            .plans
            .iter()
            .map(|p| PlanView {
                id: &p.id,
                name: p.name.as_deref(),
                credits_per_period: p.credits_per_period,
                price: p.price,
                currency: &p.currency,
                interval: &p.interval,
                rollover: p.rollover,
            })
            .collect(),
    };
    Ok(Response::json(200, &view))
}

/// `POST /v1/payments/checkout`: exactly one of `package` and `plan`.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "CheckoutBody")]
pub(crate) struct CheckoutBody {
    #[serde(default)]
    package: Option<String>,
    #[serde(default)]
    plan: Option<String>,
    /// Where Stripe sends the buyer after paying; must start with one of
    /// `[payments] return_urls`.
    success_url: String,
    cancel_url: String,
}

pub fn checkout(ctx: &Ctx) -> Result<Response, ApiError> {
    let gw = gateway(ctx)?;
    let body: CheckoutBody = ctx.req.json()?;
    let item = match (body.package, body.plan) {
        (Some(p), None) => Item::Package(p),
        (None, Some(p)) => Item::Plan(p),
        _ => return Err(Error::invalid("package", "send exactly one of package and plan").into()),
    };
    let user = ctx.user()?.id;
    let out = payments::checkout(
        &ctx.app.db,
        &ctx.app.config.payments,
        gw,
        user,
        &item,
        &body.success_url,
        &body.cancel_url,
    )?;
    Ok(Response::json(201, &out))
}

pub fn list(ctx: &Ctx) -> Result<Response, ApiError> {
    let page = ctx.req.page_after(PaymentId::PREFIX)?;
    Ok(Response::json(200, &payments::list(&ctx.app.db, Some(ctx.user()?.id), &page)?))
}

pub fn admin_list(ctx: &Ctx) -> Result<Response, ApiError> {
    let user = match ctx.req.query("user_id") {
        Some(u) => Some(UserId::parse(u).ok_or_else(|| Error::not_found("user"))?),
        None => None,
    };
    let page = ctx.req.page_after(PaymentId::PREFIX)?;
    Ok(Response::json(200, &payments::list(&ctx.app.db, user, &page)?))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "PortalBody")]
pub(crate) struct PortalBody {
    return_url: String,
}

#[derive(Serialize, schemars::JsonSchema)]
#[schemars(rename = "PortalSession")]
pub(crate) struct PortalSession {
    object: &'static str,
    url: String,
}

pub fn portal(ctx: &Ctx) -> Result<Response, ApiError> {
    let gw = gateway(ctx)?;
    let body: PortalBody = ctx.req.json()?;
    let url = payments::portal(&ctx.app.db, &ctx.app.config.payments, gw, ctx.user()?.id, &body.return_url)?;
    Ok(Response::json(200, &PortalSession { object: "billing_portal_session", url }))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "AutoTopupBody")]
pub(crate) struct AutoTopupBody {
    /// The package to buy.
    package: String,
    /// Fires when available credits fall below this.
    threshold: i64,
    enabled: bool,
}

#[derive(Serialize, schemars::JsonSchema)]
#[schemars(rename = "AutoTopupView")]
pub(crate) struct AutoTopupView {
    object: &'static str,
    /// Null: never set.
    setting: Option<payments::TopUp>,
}

pub fn get_topup(ctx: &Ctx) -> Result<Response, ApiError> {
    gateway(ctx)?;
    let setting = payments::topup::get(&ctx.app.db, ctx.user()?.id)?;
    Ok(Response::json(200, &AutoTopupView { object: "auto_topup", setting }))
}

pub fn put_topup(ctx: &Ctx) -> Result<Response, ApiError> {
    gateway(ctx)?;
    let b: AutoTopupBody = ctx.req.json()?;
    let t = payments::topup::set(
        &ctx.app.db,
        &ctx.app.config.payments,
        ctx.user()?.id,
        &b.package,
        b.threshold,
        b.enabled,
    )?;
    Ok(Response::json(200, &AutoTopupView { object: "auto_topup", setting: Some(t) }))
}

/// `POST /v1/payments/stripe/webhook`: 400 `invalid_signature` for a body
/// that is not Stripe's, before anything is parsed or stored; 200 with the
/// outcome for every verified event (refusals included: Stripe would only
/// retry them).
pub fn webhook(ctx: &Ctx) -> Result<Response, ApiError> {
    let gw = gateway(ctx)?;
    let cfg = &ctx.app.config.payments;
    let header = ctx.req.header("stripe-signature").unwrap_or("");
    let now_s = crate::domain::Timestamp::now().millis().div_euclid(1000);
    let events = &crate::metrics::global().payment_events;
    payments::signature::verify(header, &ctx.req.body, &gw.webhook_secrets, cfg.webhook_tolerance_s, now_s).map_err(
        |r| {
            events.with_label_values(&["bad_signature"]).inc();
            ApiError::refuse("webhook_signature_invalid", r.message(cfg.webhook_tolerance_s))
        },
    )?;
    let event: serde_json::Value =
        serde_json::from_slice(&ctx.req.body).map_err(|e| ApiError::invalid_json(&e.to_string()))?;
    let cfg = cfg.clone();
    let received =
        ctx.app.db.write(move |c| payments::webhook::receive(c, &cfg, &event, crate::domain::Timestamp::now()))?;
    // Counted once committed: the outcome is what the ledger now says.
    events.with_label_values(&[received.outcome]).inc();
    Ok(Response::json(200, &received))
}
