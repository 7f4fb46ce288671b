//! Money in: credit packages and plans sold through a payment provider
//! (Stripe today; `[payments] provider` is the seam for another), turned
//! into ledger grants only by a signed provider event, exactly once.
//!
//! - [`checkout`] records a pending payment, then asks the provider for a
//!   Checkout Session (idempotency key = the payment id) and answers its
//!   URL. No credits move here.
//! - [`webhook::receive`] runs inside the writer: the event is recorded by
//!   its id (a repeat changes nothing) and acted on in the same
//!   transaction: a grant, a refund's take-back, a dispute's freeze, a
//!   subscription's renewal or end.
//! - [`topup`] charges a saved card when a user's available credits cross
//!   below their threshold, once per crossing.
//!
//! Never writes the ledger except through `ledger::grants`; never trusts a
//! body whose signature `signature` did not verify.

pub mod signature;
pub mod storage;
pub mod stripe;
pub mod topup;
pub mod webhook;

use crate::config::{PaymentsConfig, PlanConfig};
use crate::domain::{Credits, GrantId, PaymentId, Timestamp, UserId};
use crate::error::{Error, Result};
use crate::paging::{List, Page};
use crate::storage::Db;
use schemars::JsonSchema;
use serde::Serialize;
use storage::NewPayment;

/// What a payment bought.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentKind {
    /// A credit package, through Checkout.
    Package,
    /// A plan's subscription, through Checkout (its credits come with each
    /// paid period).
    Plan,
    /// One paid period of a subscription.
    Period,
    /// A package charged to the saved card when credits ran low.
    AutoTopup,
}

impl PaymentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentKind::Package => "package",
            PaymentKind::Plan => "plan",
            PaymentKind::Period => "period",
            PaymentKind::AutoTopup => "auto_topup",
        }
    }
    pub fn parse(s: &str) -> Option<PaymentKind> {
        [PaymentKind::Package, PaymentKind::Plan, PaymentKind::Period, PaymentKind::AutoTopup]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Waiting for the buyer (Checkout) or the provider (auto top-up).
    Pending,
    /// Paid and granted (a plan's Checkout: subscribed).
    Paid,
    PartiallyRefunded,
    Refunded,
    /// A dispute froze what was left of the grant.
    Disputed,
    /// The provider refused, or the payment did not match what was sold.
    Failed,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Pending => "pending",
            PaymentStatus::Paid => "paid",
            PaymentStatus::PartiallyRefunded => "partially_refunded",
            PaymentStatus::Refunded => "refunded",
            PaymentStatus::Disputed => "disputed",
            PaymentStatus::Failed => "failed",
        }
    }
    pub fn parse(s: &str) -> Option<PaymentStatus> {
        [
            PaymentStatus::Pending,
            PaymentStatus::Paid,
            PaymentStatus::PartiallyRefunded,
            PaymentStatus::Refunded,
            PaymentStatus::Disputed,
            PaymentStatus::Failed,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// A payment as the API shows it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Payment {
    pub id: PaymentId,
    pub object: &'static str,
    pub user_id: UserId,
    pub kind: PaymentKind,
    /// The package or plan id.
    pub item: String,
    pub status: PaymentStatus,
    /// What was paid, in the currency's minor unit.
    pub amount_minor: i64,
    pub currency: String,
    pub credits: Credits,
    /// The grant it made, once paid.
    pub grant_id: Option<GrantId>,
    pub refunded_minor: i64,
    /// Credits a refund took back from the grant.
    pub credits_taken_back: Credits,
    /// Credits a refund could not take back: already spent (the balance
    /// never goes below zero). For an administrator to settle.
    pub shortfall: Credits,
    /// Credits a dispute froze (voided; granted again if the dispute is won).
    pub frozen: Credits,
    pub failure: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A user's subscription to a plan.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Subscription {
    pub id: String,
    pub user_id: UserId,
    pub plan: String,
    /// `active` or `canceled`.
    pub status: String,
    /// When the paid period ends (the next renewal).
    pub current_period_end: Option<Timestamp>,
    #[serde(skip)]
    pub customer: Option<String>,
}

/// A user's auto top-up setting.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct TopUp {
    pub user_id: UserId,
    pub package: String,
    /// Fires when available credits go below this.
    pub threshold: Credits,
    pub enabled: bool,
    /// False from a firing until available credits are back at the threshold.
    pub armed: bool,
    #[serde(skip)]
    pub fired_day: i64,
    #[serde(skip)]
    pub fired_count: i64,
}

/// The provider, from the environment: the API client and the webhook
/// signing secrets.
pub struct Gateway {
    pub stripe: stripe::Stripe,
    pub webhook_secrets: Vec<String>,
}

impl Gateway {
    /// `None` when payments are off; an error naming the variable when they
    /// are on and a secret is missing (the start refuses).
    pub fn from_env(
        cfg: &PaymentsConfig,
        secret: &dyn Fn(&str) -> Option<String>,
    ) -> std::result::Result<Option<Gateway>, String> {
        if !cfg.enabled() {
            return Ok(None);
        }
        let key = secret(&cfg.secret_key_env).unwrap_or_default();
        if key.trim().is_empty() {
            return Err(format!(
                "[payments] provider = \"stripe\" needs the secret API key in {} (sk_test_... in test mode)",
                cfg.secret_key_env
            ));
        }
        let secrets: Vec<String> = cfg
            .webhook_secret_envs
            .iter()
            .filter_map(|v| secret(v))
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        if secrets.is_empty() {
            return Err(format!(
                "[payments] provider = \"stripe\" needs a webhook signing secret (whsec_...) in one of {}",
                cfg.webhook_secret_envs.join(", ")
            ));
        }
        let stripe = stripe::Stripe::new(&cfg.stripe_api_base, key.trim().to_owned(), cfg.request_timeout_ms);
        Ok(Some(Gateway { stripe, webhook_secrets: secrets }))
    }
}

/// What a checkout sells.
#[derive(Debug, Clone)]
pub enum Item {
    Package(String),
    Plan(String),
}

/// A Checkout Session to send the buyer to.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Checkout {
    pub payment: Payment,
    /// Stripe's hosted payment page.
    pub url: String,
}

/// Sale terms of an item, from the config.
struct Terms<'c> {
    kind: PaymentKind,
    id: &'c str,
    name: String,
    credits: i64,
    price: i64,
    currency: &'c str,
    plan: Option<&'c PlanConfig>,
}

fn terms<'c>(cfg: &'c PaymentsConfig, item: &Item) -> Result<Terms<'c>> {
    match item {
        Item::Package(id) => {
            let p =
                cfg.package(id).ok_or_else(|| Error::invalid("package", format!("no package {id:?} is for sale")))?;
            Ok(Terms {
                kind: PaymentKind::Package,
                id: &p.id,
                name: p.name.clone().unwrap_or_else(|| format!("{} credits", p.credits)),
                credits: p.credits,
                price: p.price,
                currency: &p.currency,
                plan: None,
            })
        }
        Item::Plan(id) => {
            let p = cfg.plan(id).ok_or_else(|| Error::invalid("plan", format!("no plan {id:?} is for sale")))?;
            Ok(Terms {
                kind: PaymentKind::Plan,
                id: &p.id,
                name: p.name.clone().unwrap_or_else(|| format!("{} credits a {}", p.credits_per_period, p.interval)),
                credits: p.credits_per_period,
                price: p.price,
                currency: &p.currency,
                plan: Some(p),
            })
        }
    }
}

fn check_return_url(cfg: &PaymentsConfig, url: &str, param: &str) -> Result<()> {
    if cfg.return_url_allowed(url) {
        Ok(())
    } else {
        Err(Error::invalid(
            param,
            format!(
                "{url:?} is not an allowed return URL; allowed: [payments] return_urls ({})",
                cfg.return_urls.join(", ")
            ),
        ))
    }
}

/// Starts a Checkout: a pending payment, then the provider's session.
pub fn checkout(
    db: &Db,
    cfg: &PaymentsConfig,
    gw: &Gateway,
    user: UserId,
    item: &Item,
    success_url: &str,
    cancel_url: &str,
) -> Result<Checkout> {
    let t = terms(cfg, item)?;
    check_return_url(cfg, success_url, "success_url")?;
    check_return_url(cfg, cancel_url, "cancel_url")?;
    let (kind, id, currency, credits, price) = (t.kind, t.id.to_owned(), t.currency.to_owned(), t.credits, t.price);
    let (payment, customer) = db.write(move |c| {
        let new = NewPayment {
            user,
            kind,
            item: &id,
            status: PaymentStatus::Pending,
            amount_minor: price,
            currency: &currency,
            credits: Credits(credits),
            invoice_id: None,
            payment_intent: None,
            customer: None,
            subscription_id: None,
        };
        let pid = storage::insert(c, &new, Timestamp::now())?
            .ok_or_else(|| Error::Internal("a new payment collided".into()))?;
        Ok::<_, Error>((pid, storage::customer_of(c, user)?.map(|(cus, _)| cus)))
    })?;
    let mut form = vec![
        ("client_reference_id".to_owned(), user.to_string()),
        ("success_url".into(), success_url.to_owned()),
        ("cancel_url".into(), cancel_url.to_owned()),
        ("line_items[0][quantity]".into(), "1".into()),
        ("line_items[0][price_data][currency]".into(), t.currency.to_owned()),
        ("line_items[0][price_data][unit_amount]".into(), t.price.to_string()),
        ("line_items[0][price_data][product_data][name]".into(), t.name.clone()),
        ("metadata[payment_id]".into(), payment.to_string()),
        ("metadata[user_id]".into(), user.to_string()),
    ];
    match t.plan {
        Some(plan) => {
            form.push(("mode".into(), "subscription".into()));
            form.push(("line_items[0][price_data][recurring][interval]".into(), plan.interval.clone()));
            form.push(("subscription_data[metadata][payment_id]".into(), payment.to_string()));
            form.push(("subscription_data[metadata][user_id]".into(), user.to_string()));
            form.push(("subscription_data[metadata][plan]".into(), plan.id.clone()));
        }
        None => {
            form.push(("mode".into(), "payment".into()));
            form.push(("payment_intent_data[metadata][payment_id]".into(), payment.to_string()));
            // Saved for auto top-ups (the buyer is told on the page).
            form.push(("payment_intent_data[setup_future_usage]".into(), "off_session".into()));
            if customer.is_none() {
                form.push(("customer_creation".into(), "always".into()));
            }
        }
    }
    if let Some(cus) = &customer {
        form.push(("customer".into(), cus.clone()));
    }
    let session = gw.stripe.post("checkout/sessions", &form, &format!("tollgate-checkout-{payment}"));
    let session = match session {
        Ok(s) => s,
        Err(e) => {
            let why = e.to_string();
            db.write(move |c| storage::set_status(c, payment, PaymentStatus::Failed, Some(&why), Timestamp::now()))?;
            return Err(e);
        }
    };
    let (sid, url) = (stripe::field(&session, "id")?.to_owned(), stripe::field(&session, "url")?.to_owned());
    let row = db.write(move |c| {
        storage::set_session(c, payment, &sid, Timestamp::now())?;
        storage::get(c, payment)?.ok_or_else(|| Error::Internal("a payment vanished".into()))
    })?;
    Ok(Checkout { payment: row.view, url })
}

/// The provider's billing portal for the caller (cancel a plan, change the
/// card): a URL to send them to.
pub fn portal(db: &Db, cfg: &PaymentsConfig, gw: &Gateway, user: UserId, return_url: &str) -> Result<String> {
    check_return_url(cfg, return_url, "return_url")?;
    let customer =
        db.read(|c| Ok::<_, Error>(storage::customer_of(c, user)?))?.map(|(cus, _)| cus).ok_or_else(|| {
            Error::Conflict {
                code: "no_customer",
                message: "You have not paid through Stripe yet, so there is no billing account to manage.".into(),
            }
        })?;
    let form = [("customer".to_owned(), customer), ("return_url".to_owned(), return_url.to_owned())];
    // A portal session is harmless to repeat; the key still makes a retried
    // call the same call.
    let key = format!("tollgate-portal-{user}-{}", Timestamp::now().millis() / 60_000);
    let session = gw.stripe.post("billing_portal/sessions", &form, &key)?;
    Ok(stripe::field(&session, "url")?.to_owned())
}

pub fn list(db: &Db, user: Option<UserId>, page: &Page) -> Result<List<Payment>> {
    Ok(db.read(|c| storage::list(c, user, page))?)
}

/// The user's active plan, for `/v1/me`.
pub fn active_plan(db: &Db, user: UserId) -> Result<Option<Subscription>> {
    Ok(db.read(|c| storage::active_subscription(c, user))?)
}
