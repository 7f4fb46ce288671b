//! Auto top-up (opt-in per user): when available credits cross below the
//! user's threshold, the package they chose is charged to the card their
//! last Checkout saved (an off-session PaymentIntent), and granted when
//! Stripe's signed `payment_intent.succeeded` arrives, like any payment.
//!
//! Once per crossing: a pass of the payments worker disarms the setting in
//! the same transaction that records the pending payment (a conditional
//! update, so two instances cannot both fire), and only available credits
//! back at the threshold arm it again. At most
//! `payments.auto_topup_per_day_max` firings a UTC day. A refused card is a
//! `payment.failed` event and a log, never a retry: the next crossing
//! tries again.

use super::storage::{self, NewPayment};
use super::{Gateway, Payment, PaymentKind, PaymentStatus, TopUp};
use crate::config::PaymentsConfig;
use crate::domain::{CREDITS_AMOUNT_MAX, Credits, EventType, Timestamp, UserId};
use crate::error::{Error, Result};
use crate::logs::{self, Level, NewLog};
use crate::storage::{Conn, Db};
use serde_json::json;

/// Crossed top-ups one pass acts on.
pub const TOPUP_PASS_USERS_MAX: i64 = 100;

/// `PUT /v1/payments/auto-topup`: the package and threshold; enabling needs
/// a card saved by an earlier Checkout.
pub fn set(db: &Db, cfg: &PaymentsConfig, user: UserId, package: &str, threshold: i64, enabled: bool) -> Result<TopUp> {
    if cfg.package(package).is_none() {
        return Err(Error::invalid("package", format!("no package {package:?} is for sale")));
    }
    if !(1..=CREDITS_AMOUNT_MAX).contains(&threshold) {
        return Err(Error::invalid("threshold", format!("threshold must be 1..{CREDITS_AMOUNT_MAX} credits")));
    }
    let package = package.to_owned();
    db.write(move |c| {
        if enabled && storage::customer_of(c, user)?.is_none_or(|(_, pm)| pm.is_none()) {
            return Err(Error::Conflict {
                code: "no_saved_card",
                message: "Buy a package once through Checkout first: its card is the one auto top-ups charge.".into(),
            });
        }
        let now = Timestamp::now();
        storage::put_topup(c, user, &package, Credits(threshold), enabled, now)?;
        let detail = json!({"package": package, "threshold": threshold, "enabled": enabled});
        logs::write(c, &NewLog::business(user, "auto_topup_set", true, detail))?;
        storage::topup(c, user)?.ok_or_else(|| Error::Internal("an auto top-up vanished".into()))
    })
}

pub fn get(db: &Db, user: UserId) -> Result<Option<TopUp>> {
    Ok(db.read(|c| storage::topup(c, user))?)
}

/// A top-up the provider refused: an event and a log.
pub fn failed(conn: &Conn<'_>, payment: &Payment, why: &str) -> Result<()> {
    crate::events::emit(conn, EventType::PaymentFailed, Some(payment.user_id), payment)?;
    logs::write(
        conn,
        &NewLog::system(
            Level::Warn,
            "auto_topup_failed",
            json!({"payment_id": payment.id, "user_id": payment.user_id, "why": why}),
        ),
    )?;
    Ok(())
}

/// One pass: arm again the settings whose credits recovered, then fire the
/// crossed ones. Returns how many PaymentIntents it asked for.
pub fn run_once(db: &Db, cfg: &PaymentsConfig, gw: &Gateway) -> Result<usize> {
    let per_day = i64::from(cfg.auto_topup_per_day_max);
    let packages = cfg.packages.clone();
    let fired: Vec<(Payment, String, String)> = db.write(move |c| {
        let now = Timestamp::now();
        storage::rearm_topups(c, now)?;
        let day = now.millis().div_euclid(86_400_000);
        let mut out = Vec::new();
        for t in storage::topups_crossed(c, TOPUP_PASS_USERS_MAX)? {
            if !storage::fire_topup(c, t.user_id, day, now)? {
                continue;
            }
            let today = if t.fired_day == day { t.fired_count + 1 } else { 1 };
            let pkg = packages.iter().find(|p| p.id == t.package);
            let card = storage::customer_of(c, t.user_id)?;
            let (Some(pkg), Some((customer, Some(method)))) = (pkg, card) else {
                let detail =
                    json!({"user_id": t.user_id, "package": t.package, "why": "no such package or no saved card"});
                logs::write(c, &NewLog::system(Level::Warn, "auto_topup_skipped", detail))?;
                continue;
            };
            if today > per_day {
                let detail = json!({"user_id": t.user_id, "per_day_max": per_day});
                logs::write(c, &NewLog::system(Level::Warn, "auto_topup_daily_limit", detail))?;
                continue;
            }
            let new = NewPayment {
                user: t.user_id,
                kind: PaymentKind::AutoTopup,
                item: &pkg.id,
                status: PaymentStatus::Pending,
                amount_minor: pkg.price,
                currency: &pkg.currency,
                credits: Credits(pkg.credits),
                invoice_id: None,
                payment_intent: None,
                customer: Some(&customer),
                subscription_id: None,
            };
            let id = storage::insert(c, &new, now)?.ok_or_else(|| Error::Internal("a new payment collided".into()))?;
            let row = storage::get(c, id)?.ok_or_else(|| Error::Internal("a payment vanished".into()))?;
            out.push((row.view, customer, method));
        }
        Ok::<_, Error>(out)
    })?;
    let n = fired.len();
    for (payment, customer, method) in fired {
        // One top-up's failure to record must not strand the others.
        if let Err(e) = charge(db, gw, &payment, &customer, &method) {
            log::error!("auto top-up {} could not be recorded: {e}", payment.id);
        }
    }
    Ok(n)
}

/// Asks Stripe for the off-session charge; the webhook grants it.
fn charge(db: &Db, gw: &Gateway, payment: &Payment, customer: &str, method: &str) -> Result<()> {
    let form = [
        ("amount", payment.amount_minor.to_string()),
        ("currency", payment.currency.clone()),
        ("customer", customer.to_owned()),
        ("payment_method", method.to_owned()),
        ("off_session", "true".into()),
        ("confirm", "true".into()),
        ("description", format!("auto top-up: {}", payment.item)),
        ("metadata[payment_id]", payment.id.to_string()),
        ("metadata[user_id]", payment.user_id.to_string()),
    ]
    .map(|(k, v)| (k.to_owned(), v));
    let answer = gw.stripe.post("payment_intents", &form, &format!("tollgate-topup-{}", payment.id));
    let (id, user) = (payment.id, payment.user_id);
    match answer {
        Ok(pi) => {
            let intent = super::stripe::field(&pi, "id")?.to_owned();
            db.write(move |c| storage::set_intent(c, id, &intent, Timestamp::now()))?;
            Ok(())
        }
        Err(e) => {
            let why = e.to_string();
            let view = payment.clone();
            db.write(move |c| {
                storage::set_status(c, id, PaymentStatus::Failed, Some(&why), Timestamp::now())?;
                failed(c, &view, &why)
            })?;
            log::warn!("auto top-up {id} for {user} failed: {e}");
            Ok(())
        }
    }
}
