//! Stripe's events, each recorded once by its id and acted on in the same
//! writer transaction, so a repeat, a concurrent duplicate or a retry after
//! a crash changes nothing twice. What an event does to the ledger:
//!
//! | event | effect |
//! |---|---|
//! | `checkout.session.completed` (paid), `checkout.session.async_payment_succeeded` | the package's grant (`external_id` = the session); a plan's Checkout records the subscription |
//! | `invoice.paid` | the plan's credits for the period, expiring at its end unless `rollover` (`external_id` = the invoice) |
//! | `charge.refunded` | the refunded share of the credits taken back from the grant's remainder; what was already spent is the `shortfall` |
//! | `charge.dispute.created` | the grant's remainder frozen (voided) |
//! | `charge.dispute.closed` (won) | the frozen credits granted again |
//! | `customer.subscription.deleted` | the plan ends: no more period grants |
//! | `payment_intent.succeeded` / `.payment_failed` | an auto top-up's grant, or its failure |
//!
//! An event for an unknown object, for another user's payment, or whose
//! amount or currency differs from what was sold is recorded with its
//! outcome and a system log, and changes nothing else. Never sees an
//! unverified body: the route checks the signature first.

use super::storage::{self, Reference, Settled, TakenBack};
use super::{PaymentKind, PaymentStatus, Subscription};
use crate::config::PaymentsConfig;
use crate::domain::{Credits, EventType, PaymentId, Timestamp};
use crate::error::{Error, Result};
use crate::ledger::grants::{self, Category, NewGrant, PRIORITY_DEFAULT, Source};
use crate::logs::{self, Level, NewLog};
use crate::storage::Conn;
use serde_json::{Value, json};

/// A plan's period grants are drawn before the wallet's by default.
pub const PLAN_PRIORITY_DEFAULT: i64 = 10;
/// Longest provider id we store (Stripe's are ~30 characters).
pub const PROVIDER_ID_CHARS_MAX: usize = 255;

/// What one event did.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
#[schemars(rename = "PaymentEventReceived")]
pub struct Received {
    pub id: String,
    /// `granted`, `subscribed`, `renewed`, `refunded`, `frozen`, `restored`,
    /// `plan_ended`, `recorded`, `failed`, `not_paid`, `duplicate`,
    /// `ignored`, or a refusal: `unknown_object`, `other_account`,
    /// `amount_mismatch`, `unknown_plan`, `plan_ended`.
    pub outcome: &'static str,
    pub duplicate: bool,
    pub payment_id: Option<PaymentId>,
}

type Outcome = (&'static str, Option<PaymentId>);

fn s<'v>(v: &'v Value, pointer: &str) -> Option<&'v str> {
    v.pointer(pointer).and_then(Value::as_str).filter(|s| !s.is_empty() && s.len() <= PROVIDER_ID_CHARS_MAX)
}

fn n(v: &Value, pointer: &str) -> Option<i64> {
    v.pointer(pointer).and_then(Value::as_i64)
}

/// A refusal: recorded with a system log saying why; nothing else changes.
fn refuse(conn: &Conn<'_>, outcome: &'static str, level: Level, detail: Value) -> Result<Outcome> {
    logs::write(conn, &NewLog::system(level, "payment_event_refused", json!({"outcome": outcome, "detail": detail})))?;
    Ok((outcome, None))
}

/// Records `event` and acts on it. 400 for a body that is not an event.
pub fn receive(conn: &Conn<'_>, cfg: &PaymentsConfig, event: &Value, now: Timestamp) -> Result<Received> {
    let id = s(event, "/id").ok_or_else(|| Error::invalid("id", "the event has no id"))?.to_owned();
    let etype = s(event, "/type").ok_or_else(|| Error::invalid("type", "the event has no type"))?;
    let created = n(event, "/created").map_or(now, |t| Timestamp(t.saturating_mul(1000)));
    if !storage::insert_event(conn, &id, etype, created, now)? {
        return Ok(Received { id, outcome: "duplicate", duplicate: true, payment_id: None });
    }
    let obj = event.pointer("/data/object").unwrap_or(&Value::Null);
    let (outcome, payment_id) = match etype {
        "checkout.session.completed" | "checkout.session.async_payment_succeeded" => {
            session_completed(conn, cfg, obj, now)?
        }
        "checkout.session.async_payment_failed" | "checkout.session.expired" => session_failed(conn, obj, now)?,
        "invoice.paid" => invoice_paid(conn, cfg, obj, now)?,
        "charge.refunded" => charge_refunded(conn, obj, now)?,
        "charge.dispute.created" => dispute_created(conn, obj, now)?,
        "charge.dispute.closed" => dispute_closed(conn, cfg, obj, now)?,
        "customer.subscription.deleted" => subscription_deleted(conn, obj, now)?,
        "payment_intent.succeeded" => intent_succeeded(conn, cfg, obj, now)?,
        "payment_intent.payment_failed" => intent_failed(conn, obj, now)?,
        _ => ("ignored", None),
    };
    storage::set_event_outcome(conn, &id, outcome, payment_id)?;
    Ok(Received { id, outcome, duplicate: false, payment_id })
}

/// The payment a Stripe object's `metadata.payment_id` names, checked to
/// belong to `user` when the object says whose it is.
fn by_metadata(conn: &Conn<'_>, obj: &Value, meta: &str) -> Result<Option<storage::PaymentRow>> {
    let Some(id) = s(obj, &format!("{meta}/payment_id")).and_then(PaymentId::parse) else { return Ok(None) };
    Ok(storage::get(conn, id)?)
}

fn user_matches(row: &storage::PaymentRow, claimed: Option<&str>) -> bool {
    claimed == Some(row.view.user_id.to_string().as_str())
}

/// The grant for a paid package (checkout or auto top-up), once per
/// `external_id`.
fn grant_package(
    conn: &Conn<'_>,
    cfg: &PaymentsConfig,
    row: &storage::PaymentRow,
    external_id: &str,
    refs: (Option<&str>, Option<&str>),
    now: Timestamp,
) -> Result<Outcome> {
    let p = &row.view;
    let g = package_grant(cfg, p, p.credits, Some(now), format!("payment {}: {}", p.id, p.item), external_id);
    let (grant, created) = grants::create_at(conn, &g, now)?;
    let settled = Settled { grant: grant.id, payment_intent: refs.0, customer: refs.1, subscription_id: None };
    storage::set_paid(conn, p.id, &settled, now)?;
    if !created {
        return Ok(("duplicate", Some(p.id)));
    }
    let view = storage::get(conn, p.id)?.map(|r| r.view);
    crate::events::emit(conn, EventType::PaymentSucceeded, Some(p.user_id), &view)?;
    Ok(("granted", Some(p.id)))
}

/// A grant of `amount` for payment `p`, with the terms of the package it
/// bought: category, priority and, counted from `expiring_from`, its
/// expiry. A package taken off sale after the purchase is granted as
/// bought (the credits recorded on the payment), with the default terms.
fn package_grant(
    cfg: &PaymentsConfig,
    p: &super::Payment,
    amount: Credits,
    expiring_from: Option<Timestamp>,
    description: String,
    external_id: &str,
) -> NewGrant {
    let pkg = cfg.package(&p.item);
    NewGrant {
        user: p.user_id,
        amount,
        category: pkg.and_then(|k| Category::parse(&k.category)).unwrap_or(Category::Paid),
        priority: pkg.and_then(|k| k.priority).unwrap_or(PRIORITY_DEFAULT),
        expires_at: expiring_from.and_then(|at| pkg?.expires_days.map(|d| at.plus_ms(d * 86_400_000))),
        source: Source::Payment,
        description,
        external_id: Some(external_id.to_owned()),
        code: None,
    }
}

fn amounts_match(row: &storage::PaymentRow, amount: Option<i64>, currency: Option<&str>) -> bool {
    amount == Some(row.view.amount_minor) && currency == Some(row.view.currency.as_str())
}

fn mismatch(
    conn: &Conn<'_>,
    row: &storage::PaymentRow,
    amount: Option<i64>,
    currency: Option<&str>,
    now: Timestamp,
) -> Result<Outcome> {
    let why = format!(
        "paid {} {} for {} sold at {} {}",
        amount.map_or("?".into(), |a| a.to_string()),
        currency.unwrap_or("?"),
        row.view.item,
        row.view.amount_minor,
        row.view.currency
    );
    storage::set_status(conn, row.view.id, PaymentStatus::Failed, Some(&why), now)?;
    refuse(conn, "amount_mismatch", Level::Error, json!({"payment_id": row.view.id, "why": why}))
        .map(|(o, _)| (o, Some(row.view.id)))
}

fn session_completed(conn: &Conn<'_>, cfg: &PaymentsConfig, obj: &Value, now: Timestamp) -> Result<Outcome> {
    let Some(session) = s(obj, "/id") else { return refuse(conn, "unknown_object", Level::Warn, json!({})) };
    let row = match by_metadata(conn, obj, "/metadata")? {
        Some(r) => Some(r),
        None => storage::by_reference(conn, Reference::Session, session)?,
    };
    let Some(row) = row else {
        return refuse(conn, "unknown_object", Level::Warn, json!({"session": session}));
    };
    let claimed = s(obj, "/client_reference_id");
    if !user_matches(&row, claimed) || row.session_id.as_deref().is_some_and(|sid| sid != session) {
        return refuse(
            conn,
            "other_account",
            Level::Error,
            json!({"session": session, "payment_id": row.view.id, "client_reference_id": claimed}),
        );
    }
    match row.view.kind {
        PaymentKind::Package => {
            if s(obj, "/payment_status") != Some("paid") {
                return Ok(("not_paid", Some(row.view.id)));
            }
            let (amount, currency) = (n(obj, "/amount_total"), s(obj, "/currency"));
            if !amounts_match(&row, amount, currency) {
                return mismatch(conn, &row, amount, currency, now);
            }
            grant_package(conn, cfg, &row, session, (s(obj, "/payment_intent"), s(obj, "/customer")), now)
        }
        PaymentKind::Plan => {
            let Some(sub) = s(obj, "/subscription") else { return Ok(("not_paid", Some(row.view.id))) };
            let customer = s(obj, "/customer");
            start_subscription(conn, &row, sub, customer, now)?;
            storage::set_references(conn, row.view.id, customer, Some(sub), None, now)?;
            storage::set_status(conn, row.view.id, PaymentStatus::Paid, None, now)?;
            Ok(("subscribed", Some(row.view.id)))
        }
        PaymentKind::Period | PaymentKind::AutoTopup => Ok(("ignored", Some(row.view.id))),
    }
}

fn session_failed(conn: &Conn<'_>, obj: &Value, now: Timestamp) -> Result<Outcome> {
    let Some(session) = s(obj, "/id") else { return Ok(("ignored", None)) };
    let Some(row) = storage::by_reference(conn, Reference::Session, session)? else {
        return refuse(conn, "unknown_object", Level::Warn, json!({"session": session}));
    };
    if row.view.status == PaymentStatus::Pending {
        storage::set_status(
            conn,
            row.view.id,
            PaymentStatus::Failed,
            Some("the checkout expired or its payment failed"),
            now,
        )?;
    }
    Ok(("failed", Some(row.view.id)))
}

/// The subscription an invoice is for: known, or learned from the
/// metadata tollgate put on it at Checkout (an `invoice.paid` may arrive
/// before the Checkout's own event).
fn subscription_of(conn: &Conn<'_>, inv: &Value, sub: &str, now: Timestamp) -> Result<Option<Subscription>> {
    if let Some(known) = storage::subscription(conn, sub)? {
        return Ok(Some(known));
    }
    let meta = ["/subscription_details/metadata", "/parent/subscription_details/metadata"]
        .into_iter()
        .find(|p| inv.pointer(p).is_some_and(Value::is_object));
    let Some(meta) = meta else { return Ok(None) };
    let Some(row) = by_metadata(conn, inv, meta)? else { return Ok(None) };
    if row.view.kind != PaymentKind::Plan || !user_matches(&row, s(inv, &format!("{meta}/user_id"))) {
        return Ok(None);
    }
    start_subscription(conn, &row, sub, s(inv, "/customer"), now).map(Some)
}

/// Records the subscription a plan's Checkout started (once: the first of
/// its Checkout and first invoice events to arrive).
fn start_subscription(
    conn: &Conn<'_>,
    row: &storage::PaymentRow,
    sub: &str,
    customer: Option<&str>,
    now: Timestamp,
) -> Result<Subscription> {
    let new = Subscription {
        id: sub.to_owned(),
        user_id: row.view.user_id,
        plan: row.view.item.clone(),
        status: "active".into(),
        current_period_end: None,
        customer: customer.map(str::to_owned),
    };
    storage::insert_subscription(conn, &new, now)?;
    Ok(new)
}

fn invoice_paid(conn: &Conn<'_>, cfg: &PaymentsConfig, inv: &Value, now: Timestamp) -> Result<Outcome> {
    let Some(invoice) = s(inv, "/id") else { return refuse(conn, "unknown_object", Level::Warn, json!({})) };
    let Some(sub_id) = s(inv, "/subscription").or_else(|| s(inv, "/parent/subscription_details/subscription")) else {
        return Ok(("ignored", None));
    };
    let Some(sub) = subscription_of(conn, inv, sub_id, now)? else {
        return refuse(conn, "unknown_object", Level::Warn, json!({"invoice": invoice, "subscription": sub_id}));
    };
    if sub.status != "active" {
        return refuse(conn, "plan_ended", Level::Warn, json!({"invoice": invoice, "subscription": sub_id}));
    }
    let Some(plan) = cfg.plan(&sub.plan) else {
        return refuse(conn, "unknown_plan", Level::Error, json!({"invoice": invoice, "plan": sub.plan}));
    };
    let (amount, currency) = (n(inv, "/amount_paid"), s(inv, "/currency"));
    if amount != Some(plan.price) || currency != Some(plan.currency.as_str()) {
        let why = format!(
            "invoice {invoice} paid {amount:?} {currency:?} for plan {} at {} {}",
            plan.id, plan.price, plan.currency
        );
        return refuse(conn, "amount_mismatch", Level::Error, json!({"why": why, "user_id": sub.user_id}));
    }
    let period_end =
        n(inv, "/lines/data/0/period/end").or_else(|| n(inv, "/period_end")).map(|t| Timestamp(t.saturating_mul(1000)));
    let new = storage::NewPayment {
        user: sub.user_id,
        kind: PaymentKind::Period,
        item: &plan.id,
        status: PaymentStatus::Pending,
        amount_minor: plan.price,
        currency: &plan.currency,
        credits: Credits(plan.credits_per_period),
        invoice_id: Some(invoice),
        payment_intent: s(inv, "/payment_intent"),
        customer: s(inv, "/customer"),
        subscription_id: Some(sub_id),
    };
    let Some(pid) = storage::insert(conn, &new, now)? else { return Ok(("duplicate", None)) };
    let g = NewGrant {
        user: sub.user_id,
        amount: Credits(plan.credits_per_period),
        category: Category::Paid,
        priority: plan.priority.unwrap_or(PLAN_PRIORITY_DEFAULT),
        expires_at: if plan.rollover { None } else { period_end },
        source: Source::Payment,
        description: format!("plan {} period (payment {pid})", plan.id),
        external_id: Some(invoice.to_owned()),
        code: None,
    };
    let (grant, _) = grants::create_at(conn, &g, now)?;
    storage::set_paid(
        conn,
        pid,
        &Settled { grant: grant.id, payment_intent: None, customer: None, subscription_id: None },
        now,
    )?;
    storage::set_subscription(conn, sub_id, "active", period_end, now)?;
    let data = json!({"subscription_id": sub_id, "plan": plan.id, "payment_id": pid, "grant_id": grant.id,
                      "credits": plan.credits_per_period, "current_period_end": period_end, "user_id": sub.user_id});
    crate::events::emit(conn, EventType::SubscriptionRenewed, Some(sub.user_id), &data)?;
    Ok(("renewed", Some(pid)))
}

/// The payment a charge, dispute or intent is for.
fn by_charge(conn: &Conn<'_>, obj: &Value) -> Result<Option<storage::PaymentRow>> {
    if let Some(pi) = s(obj, "/payment_intent")
        && let Some(row) = storage::by_reference(conn, Reference::PaymentIntent, pi)?
    {
        return Ok(Some(row));
    }
    match s(obj, "/invoice") {
        Some(inv) => Ok(storage::by_reference(conn, Reference::Invoice, inv)?),
        None => Ok(None),
    }
}

/// Credits owed back for `refunded_minor` of `amount_minor`: the same
/// share of the credits, rounded up (a refund never leaves a fraction of a
/// credit behind).
pub fn credits_for_refund(credits: Credits, refunded_minor: i64, amount_minor: i64) -> Credits {
    if amount_minor <= 0 {
        return Credits::ZERO;
    }
    let share = i128::from(credits.0) * i128::from(refunded_minor.clamp(0, amount_minor));
    Credits(((share + i128::from(amount_minor) - 1) / i128::from(amount_minor)) as i64)
}

fn charge_refunded(conn: &Conn<'_>, ch: &Value, now: Timestamp) -> Result<Outcome> {
    let Some(row) = by_charge(conn, ch)? else {
        return refuse(conn, "unknown_object", Level::Warn, json!({"charge": s(ch, "/id")}));
    };
    let p = &row.view;
    let Some(grant) = p.grant_id else { return Ok(("not_paid", Some(p.id))) };
    if s(ch, "/currency") != Some(p.currency.as_str()) {
        return refuse(
            conn,
            "amount_mismatch",
            Level::Error,
            json!({"payment_id": p.id, "currency": s(ch, "/currency")}),
        );
    }
    let refunded = n(ch, "/amount_refunded").unwrap_or(0).clamp(0, p.amount_minor);
    let owed = credits_for_refund(p.credits, refunded, p.amount_minor);
    // What earlier refund events already took (or could not take).
    let delta = owed - p.credits_taken_back - p.shortfall;
    if delta <= Credits::ZERO {
        return Ok(("duplicate", Some(p.id)));
    }
    let taken = grants::take_back(conn, grant, delta, &format!("refund of payment {}", p.id), now)?;
    let short = delta - taken;
    let status = if refunded >= p.amount_minor { PaymentStatus::Refunded } else { PaymentStatus::PartiallyRefunded };
    let after = TakenBack {
        status,
        refunded_minor: refunded,
        credits_taken_back: p.credits_taken_back + taken,
        shortfall: p.shortfall + short,
        ..TakenBack::of(p)
    };
    storage::set_taken_back(conn, p.id, &after, now)?;
    if short > Credits::ZERO {
        logs::write(
            conn,
            &NewLog::system(
                Level::Warn,
                "payment_refund_shortfall",
                json!({"payment_id": p.id, "user_id": p.user_id, "owed": delta, "taken": taken, "shortfall": short}),
            ),
        )?;
    }
    let view = storage::get(conn, p.id)?.map(|r| r.view);
    crate::events::emit(conn, EventType::PaymentRefunded, Some(p.user_id), &view)?;
    Ok(("refunded", Some(p.id)))
}

fn dispute_created(conn: &Conn<'_>, d: &Value, now: Timestamp) -> Result<Outcome> {
    let Some(row) = by_charge(conn, d)? else {
        return refuse(conn, "unknown_object", Level::Warn, json!({"dispute": s(d, "/id")}));
    };
    let p = &row.view;
    let Some(grant) = p.grant_id else { return Ok(("not_paid", Some(p.id))) };
    if p.status == PaymentStatus::Disputed {
        return Ok(("duplicate", Some(p.id)));
    }
    let frozen = grants::void_taking(conn, grant, now)?;
    let after = TakenBack { status: PaymentStatus::Disputed, frozen: p.frozen + frozen, ..TakenBack::of(p) };
    storage::set_taken_back(conn, p.id, &after, now)?;
    logs::write(
        conn,
        &NewLog::system(
            Level::Warn,
            "payment_disputed",
            json!({"payment_id": p.id, "user_id": p.user_id, "frozen": frozen}),
        ),
    )?;
    Ok(("frozen", Some(p.id)))
}

fn dispute_closed(conn: &Conn<'_>, cfg: &PaymentsConfig, d: &Value, now: Timestamp) -> Result<Outcome> {
    let Some(row) = by_charge(conn, d)? else {
        return refuse(conn, "unknown_object", Level::Warn, json!({"dispute": s(d, "/id")}));
    };
    let p = &row.view;
    let Some(dispute) = s(d, "/id") else { return Ok(("ignored", Some(p.id))) };
    if s(d, "/status") != Some("won") || p.status != PaymentStatus::Disputed || p.frozen <= Credits::ZERO {
        return Ok(("recorded", Some(p.id)));
    }
    let g = package_grant(cfg, p, p.frozen, None, format!("dispute won: payment {}", p.id), dispute);
    grants::create_at(conn, &g, now)?;
    let after = TakenBack { status: PaymentStatus::Paid, frozen: Credits::ZERO, ..TakenBack::of(p) };
    storage::set_taken_back(conn, p.id, &after, now)?;
    Ok(("restored", Some(p.id)))
}

fn subscription_deleted(conn: &Conn<'_>, sub: &Value, now: Timestamp) -> Result<Outcome> {
    let Some(id) = s(sub, "/id") else { return Ok(("ignored", None)) };
    if storage::subscription(conn, id)?.is_none() {
        return refuse(conn, "unknown_object", Level::Warn, json!({"subscription": id}));
    }
    storage::set_subscription(conn, id, "canceled", None, now)?;
    Ok(("plan_ended", None))
}

fn intent_succeeded(conn: &Conn<'_>, cfg: &PaymentsConfig, pi: &Value, now: Timestamp) -> Result<Outcome> {
    let Some(intent) = s(pi, "/id") else { return Ok(("ignored", None)) };
    let Some(row) = by_metadata(conn, pi, "/metadata")? else { return Ok(("ignored", None)) };
    // The card a Checkout saved: what auto top-ups charge.
    storage::set_references(conn, row.view.id, s(pi, "/customer"), None, s(pi, "/payment_method"), now)?;
    if row.view.kind != PaymentKind::AutoTopup {
        return Ok(("recorded", Some(row.view.id)));
    }
    if row.payment_intent.as_deref() != Some(intent) || !user_matches(&row, s(pi, "/metadata/user_id")) {
        return refuse(
            conn,
            "other_account",
            Level::Error,
            json!({"payment_intent": intent, "payment_id": row.view.id}),
        );
    }
    let (amount, currency) = (n(pi, "/amount_received").or_else(|| n(pi, "/amount")), s(pi, "/currency"));
    if !amounts_match(&row, amount, currency) {
        return mismatch(conn, &row, amount, currency, now);
    }
    grant_package(conn, cfg, &row, intent, (None, None), now)
}

fn intent_failed(conn: &Conn<'_>, pi: &Value, now: Timestamp) -> Result<Outcome> {
    let Some(row) = by_metadata(conn, pi, "/metadata")? else { return Ok(("ignored", None)) };
    if row.view.kind != PaymentKind::AutoTopup || row.view.status != PaymentStatus::Pending {
        return Ok(("recorded", Some(row.view.id)));
    }
    let why = s(pi, "/last_payment_error/message").unwrap_or("the card was declined");
    storage::set_status(conn, row.view.id, PaymentStatus::Failed, Some(why), now)?;
    super::topup::failed(conn, &row.view, why)?;
    Ok(("failed", Some(row.view.id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configs_priority_range_is_the_ledgers() {
        assert_eq!(crate::config::GRANT_PRIORITY_MAX, crate::ledger::grants::PRIORITY_MAX);
    }

    #[test]
    fn a_refund_takes_back_its_share_rounded_up() {
        assert_eq!(credits_for_refund(Credits(1000), 500, 500), Credits(1000));
        assert_eq!(credits_for_refund(Credits(1000), 250, 500), Credits(500));
        assert_eq!(credits_for_refund(Credits(1000), 1, 3), Credits(334));
        assert_eq!(credits_for_refund(Credits(1000), 0, 500), Credits::ZERO);
        assert_eq!(credits_for_refund(Credits(1000), 900, 500), Credits(1000), "never more than was sold");
        assert_eq!(
            credits_for_refund(Credits(i64::MAX / 2), 99_999_999, 100_000_000),
            Credits(i64::MAX / 2 - (i64::MAX / 2) / 100_000_000)
        );
    }
}
