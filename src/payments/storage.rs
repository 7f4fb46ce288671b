//! SQL for `payments`, `payment_events`, `subscriptions` and `auto_topups`
//! (the grants a payment makes live in `credit_grants`, written by
//! `ledger::grants`).

use super::{Payment, PaymentKind, PaymentStatus, Subscription, TopUp};
use crate::domain::{Credits, GrantId, PaymentId, Timestamp, UserId};
use crate::paging::{List, Page};
use crate::storage::{Conn, Row, StorageError};
use rusqlite::params;

type Result<T> = std::result::Result<T, StorageError>;

const COLUMNS: &str = "id, user_id, kind, item, status, amount_minor, currency, credits, grant_id, refunded_minor,
     credits_taken_back, shortfall, frozen, failure, created_at, updated_at, session_id, invoice_id, payment_intent,
     customer, subscription_id, payment_method";

/// A payment row with the provider's references (never all shown to users).
#[derive(Debug, Clone)]
pub struct PaymentRow {
    pub view: Payment,
    pub session_id: Option<String>,
    pub invoice_id: Option<String>,
    pub payment_intent: Option<String>,
    pub customer: Option<String>,
    pub subscription_id: Option<String>,
    pub payment_method: Option<String>,
}

fn from_row(r: &Row<'_>) -> Result<PaymentRow> {
    let kind: String = r.get(2)?;
    let status: String = r.get(4)?;
    Ok(PaymentRow {
        view: Payment {
            id: r.get(0)?,
            object: "payment",
            user_id: r.get(1)?,
            kind: PaymentKind::parse(&kind).unwrap_or(PaymentKind::Package),
            item: r.get(3)?,
            status: PaymentStatus::parse(&status).unwrap_or(PaymentStatus::Failed),
            amount_minor: r.get(5)?,
            currency: r.get(6)?,
            credits: r.get(7)?,
            grant_id: r.get(8)?,
            refunded_minor: r.get(9)?,
            credits_taken_back: r.get(10)?,
            shortfall: r.get(11)?,
            frozen: r.get(12)?,
            failure: r.get(13)?,
            created_at: r.get(14)?,
            updated_at: r.get(15)?,
        },
        session_id: r.get(16)?,
        invoice_id: r.get(17)?,
        payment_intent: r.get(18)?,
        customer: r.get(19)?,
        subscription_id: r.get(20)?,
        payment_method: r.get(21)?,
    })
}

pub struct NewPayment<'a> {
    pub user: UserId,
    pub kind: PaymentKind,
    pub item: &'a str,
    pub status: PaymentStatus,
    pub amount_minor: i64,
    pub currency: &'a str,
    pub credits: Credits,
    pub invoice_id: Option<&'a str>,
    pub payment_intent: Option<&'a str>,
    pub customer: Option<&'a str>,
    pub subscription_id: Option<&'a str>,
}

/// The new payment's id; `None` when its invoice or payment intent is
/// already recorded (a second event for the same money).
pub fn insert(conn: &Conn<'_>, p: &NewPayment<'_>, now: Timestamp) -> Result<Option<PaymentId>> {
    conn.query_opt(
        "INSERT INTO payments (user_id, kind, item, status, amount_minor, currency, credits, invoice_id, payment_intent,
             customer, subscription_id, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12) ON CONFLICT DO NOTHING RETURNING id",
        params![
            p.user,
            p.kind.as_str(),
            p.item,
            p.status.as_str(),
            p.amount_minor,
            p.currency,
            p.credits,
            p.invoice_id,
            p.payment_intent,
            p.customer,
            p.subscription_id,
            now
        ],
        |r| r.get(0),
    )
}

pub fn get(conn: &Conn<'_>, id: PaymentId) -> Result<Option<PaymentRow>> {
    conn.query_opt(&format!("SELECT {COLUMNS} FROM payments WHERE id = ?1"), params![id], from_row)
}

/// The payment a provider reference names: `column` is one of the unique
/// reference columns.
pub fn by_reference(conn: &Conn<'_>, column: Reference, value: &str) -> Result<Option<PaymentRow>> {
    let column = match column {
        Reference::Session => "session_id",
        Reference::Invoice => "invoice_id",
        Reference::PaymentIntent => "payment_intent",
    };
    conn.query_opt(&format!("SELECT {COLUMNS} FROM payments WHERE {column} = ?1"), params![value], from_row)
}

#[derive(Debug, Clone, Copy)]
pub enum Reference {
    Session,
    Invoice,
    PaymentIntent,
}

pub fn set_session(conn: &Conn<'_>, id: PaymentId, session: &str, now: Timestamp) -> Result<()> {
    conn.execute("UPDATE payments SET session_id = ?2, updated_at = ?3 WHERE id = ?1", params![id, session, now])?;
    Ok(())
}

pub fn set_status(
    conn: &Conn<'_>,
    id: PaymentId,
    status: PaymentStatus,
    failure: Option<&str>,
    now: Timestamp,
) -> Result<()> {
    conn.execute(
        "UPDATE payments SET status = ?2, failure = COALESCE(?3, failure), updated_at = ?4 WHERE id = ?1",
        params![id, status.as_str(), failure, now],
    )?;
    Ok(())
}

/// Paid: the grant it made and the provider's references learned.
pub struct Settled<'a> {
    pub grant: GrantId,
    pub payment_intent: Option<&'a str>,
    pub customer: Option<&'a str>,
    pub subscription_id: Option<&'a str>,
}

pub fn set_paid(conn: &Conn<'_>, id: PaymentId, s: &Settled<'_>, now: Timestamp) -> Result<()> {
    conn.execute(
        "UPDATE payments SET status = 'paid', grant_id = ?2, payment_intent = COALESCE(?3, payment_intent),
             customer = COALESCE(?4, customer), subscription_id = COALESCE(?5, subscription_id), updated_at = ?6
         WHERE id = ?1",
        params![id, s.grant, s.payment_intent, s.customer, s.subscription_id, now],
    )?;
    Ok(())
}

pub fn set_references(
    conn: &Conn<'_>,
    id: PaymentId,
    customer: Option<&str>,
    subscription_id: Option<&str>,
    payment_method: Option<&str>,
    now: Timestamp,
) -> Result<()> {
    conn.execute(
        "UPDATE payments SET customer = COALESCE(?2, customer), subscription_id = COALESCE(?3, subscription_id),
             payment_method = COALESCE(?4, payment_method), updated_at = ?5 WHERE id = ?1",
        params![id, customer, subscription_id, payment_method, now],
    )?;
    Ok(())
}

/// A refund or dispute's effect on the row.
pub struct TakenBack {
    pub status: PaymentStatus,
    pub refunded_minor: i64,
    pub credits_taken_back: Credits,
    pub shortfall: Credits,
    pub frozen: Credits,
}

impl TakenBack {
    /// The payment's figures as they stand.
    pub fn of(p: &Payment) -> TakenBack {
        TakenBack {
            status: p.status,
            refunded_minor: p.refunded_minor,
            credits_taken_back: p.credits_taken_back,
            shortfall: p.shortfall,
            frozen: p.frozen,
        }
    }
}

pub fn set_taken_back(conn: &Conn<'_>, id: PaymentId, t: &TakenBack, now: Timestamp) -> Result<()> {
    conn.execute(
        "UPDATE payments SET status = ?2, refunded_minor = ?3, credits_taken_back = ?4, shortfall = ?5, frozen = ?6,
             updated_at = ?7 WHERE id = ?1",
        params![id, t.status.as_str(), t.refunded_minor, t.credits_taken_back, t.shortfall, t.frozen, now],
    )?;
    Ok(())
}

/// A user's payments (or everyone's), newest first.
pub fn list(conn: &Conn<'_>, user: Option<UserId>, page: &Page) -> Result<List<Payment>> {
    let view = |r: &Row<'_>| from_row(r).map(|p| p.view);
    let rows = match user {
        Some(u) => conn.query_all(
            &format!("SELECT {COLUMNS} FROM payments WHERE id < ?1 AND user_id = ?2 ORDER BY id DESC LIMIT ?3"),
            params![page.before_id(), u, page.fetch()],
            view,
        )?,
        None => conn.query_all(
            &format!("SELECT {COLUMNS} FROM payments WHERE id < ?1 ORDER BY id DESC LIMIT ?2"),
            params![page.before_id(), page.fetch()],
            view,
        )?,
    };
    Ok(List::from_rows(rows, page))
}

/// The user's Stripe customer, from their latest payment that has one,
/// and the payment method it last paid with.
pub fn customer_of(conn: &Conn<'_>, user: UserId) -> Result<Option<(String, Option<String>)>> {
    conn.query_opt(
        "SELECT customer, payment_method FROM payments WHERE user_id = ?1 AND customer IS NOT NULL
         ORDER BY (payment_method IS NULL), id DESC LIMIT 1",
        params![user],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
}

/// Records a provider event by id; false when it was already recorded.
pub fn insert_event(conn: &Conn<'_>, id: &str, etype: &str, created: Timestamp, now: Timestamp) -> Result<bool> {
    let n = conn.execute(
        "INSERT INTO payment_events (id, type, outcome, created_at, received_at) VALUES (?1, ?2, 'received', ?3, ?4)
         ON CONFLICT (id) DO NOTHING",
        params![id, etype, created, now],
    )?;
    Ok(n == 1)
}

pub fn set_event_outcome(conn: &Conn<'_>, id: &str, outcome: &str, payment: Option<PaymentId>) -> Result<()> {
    conn.execute(
        "UPDATE payment_events SET outcome = ?2, payment_id = ?3 WHERE id = ?1",
        params![id, outcome, payment],
    )?;
    Ok(())
}

fn subscription_row(r: &Row<'_>) -> Result<Subscription> {
    Ok(Subscription {
        id: r.get(0)?,
        user_id: r.get(1)?,
        plan: r.get(2)?,
        status: r.get(3)?,
        current_period_end: r.get(4)?,
        customer: r.get(5)?,
    })
}

pub fn subscription(conn: &Conn<'_>, id: &str) -> Result<Option<Subscription>> {
    conn.query_opt(
        "SELECT id, user_id, plan, status, current_period_end, customer FROM subscriptions WHERE id = ?1",
        params![id],
        subscription_row,
    )
}

/// The user's active subscription, the newest if several.
pub fn active_subscription(conn: &Conn<'_>, user: UserId) -> Result<Option<Subscription>> {
    conn.query_opt(
        "SELECT id, user_id, plan, status, current_period_end, customer FROM subscriptions
         WHERE user_id = ?1 AND status = 'active' ORDER BY created_at DESC LIMIT 1",
        params![user],
        subscription_row,
    )
}

/// Records a subscription once (the first event that names it wins).
pub fn insert_subscription(conn: &Conn<'_>, s: &Subscription, now: Timestamp) -> Result<()> {
    conn.execute(
        "INSERT INTO subscriptions (id, user_id, plan, status, customer, current_period_end, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7) ON CONFLICT (id) DO NOTHING",
        params![s.id, s.user_id, s.plan, s.status, s.customer, s.current_period_end, now],
    )?;
    Ok(())
}

pub fn set_subscription(
    conn: &Conn<'_>,
    id: &str,
    status: &str,
    period_end: Option<Timestamp>,
    now: Timestamp,
) -> Result<()> {
    conn.execute(
        "UPDATE subscriptions SET status = ?2, current_period_end = COALESCE(?3, current_period_end), updated_at = ?4
         WHERE id = ?1",
        params![id, status, period_end, now],
    )?;
    Ok(())
}

fn topup_row(r: &Row<'_>) -> Result<TopUp> {
    let (enabled, armed): (i64, i64) = (r.get(3)?, r.get(4)?);
    Ok(TopUp {
        user_id: r.get(0)?,
        package: r.get(1)?,
        threshold: r.get(2)?,
        enabled: enabled != 0,
        armed: armed != 0,
        fired_day: r.get(5)?,
        fired_count: r.get(6)?,
    })
}

const TOPUP_COLUMNS: &str = "user_id, package, threshold, enabled, armed, fired_day, fired_count";

pub fn topup(conn: &Conn<'_>, user: UserId) -> Result<Option<TopUp>> {
    conn.query_opt(&format!("SELECT {TOPUP_COLUMNS} FROM auto_topups WHERE user_id = ?1"), params![user], topup_row)
}

pub fn put_topup(
    conn: &Conn<'_>,
    user: UserId,
    package: &str,
    threshold: Credits,
    enabled: bool,
    now: Timestamp,
) -> Result<()> {
    conn.execute(
        "INSERT INTO auto_topups (user_id, package, threshold, enabled, armed, updated_at) VALUES (?1, ?2, ?3, ?4, 1, ?5)
         ON CONFLICT (user_id) DO UPDATE SET package = excluded.package, threshold = excluded.threshold,
             enabled = excluded.enabled, armed = 1, updated_at = excluded.updated_at",
        params![user, package, threshold, i64::from(enabled), now],
    )?;
    Ok(())
}

/// Enabled, armed top-ups whose user's available credits are below the
/// threshold: the crossings to act on (at most `limit`).
pub fn topups_crossed(conn: &Conn<'_>, limit: i64) -> Result<Vec<TopUp>> {
    conn.query_all(
        &format!(
            "SELECT {} FROM auto_topups a JOIN users u ON u.id = a.user_id
             WHERE a.enabled = 1 AND a.armed = 1 AND u.deleted_at IS NULL AND u.credits - u.held < a.threshold
             ORDER BY a.user_id LIMIT ?1",
            TOPUP_COLUMNS.split(", ").map(|c| format!("a.{c}")).collect::<Vec<_>>().join(", ")
        ),
        params![limit],
        topup_row,
    )
}

/// Disarms a crossed top-up and counts it for `day`; false when another
/// instance or pass already did (the conditional update is the lock).
pub fn fire_topup(conn: &Conn<'_>, user: UserId, day: i64, now: Timestamp) -> Result<bool> {
    let n = conn.execute(
        "UPDATE auto_topups SET armed = 0,
             fired_count = CASE WHEN fired_day = ?2 THEN fired_count + 1 ELSE 1 END, fired_day = ?2, updated_at = ?3
         WHERE user_id = ?1 AND armed = 1",
        params![user, day, now],
    )?;
    Ok(n == 1)
}

/// Arms again the top-ups of users whose available credits are back at or
/// above their threshold.
pub fn rearm_topups(conn: &Conn<'_>, now: Timestamp) -> Result<usize> {
    conn.execute(
        "UPDATE auto_topups SET armed = 1, updated_at = ?1
         WHERE armed = 0 AND user_id IN (SELECT a.user_id FROM auto_topups a JOIN users u ON u.id = a.user_id
                                          WHERE u.credits - u.held >= a.threshold)",
        params![now],
    )
}

pub fn set_intent(conn: &Conn<'_>, id: PaymentId, intent: &str, now: Timestamp) -> Result<()> {
    conn.execute("UPDATE payments SET payment_intent = ?2, updated_at = ?3 WHERE id = ?1", params![id, intent, now])?;
    Ok(())
}
