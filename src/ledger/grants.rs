//! Credit grants: where a user's credits came from, in what order they are
//! spent, and when they end.
//!
//! Every credit addition is a grant (a `grant` ledger row and a
//! `credit_grants` row, in one transaction). Every charge draws on the
//! user's grants in the draw order (priority, then soonest expiry with
//! never-expiring last, then promotional before paid, then oldest), and
//! `grant_draws` records which grants paid for which ledger row. A hold
//! reserves credits on specific grants; they stay spendable by that hold
//! even if their grant expires or is voided meanwhile, and what the hold
//! leaves unused ends with the grant when the hold closes. An ending (expiry
//! or void) is an explicit `expire`/`void` ledger row for the unreserved
//! remainder, so balance = SUM(ledger) = SUM(remaining) at every commit.
//!
//! Like the rest of `ledger`, these functions run inside the writer's
//! transaction; they never talk HTTP.

use super::grant_storage as store;
use super::{Kind, Transaction};
use crate::domain::{CodeId, Credits, GrantId, HoldId, Timestamp, TxnId, UserId};
use crate::error::{Error, Result};
use crate::logs::{self, NewLog};
use crate::paging::{List, Page};
use crate::storage::Conn;
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::json;

/// Grants drawn first have the lowest priority number.
pub const PRIORITY_MAX: i64 = 100;
pub const PRIORITY_DEFAULT: i64 = 50;
/// An `external_id` is a payment or order reference, not a document.
pub const EXTERNAL_ID_CHARS_MAX: usize = 200;
/// Active grants shown in an admin's view of a user.
pub const ACTIVE_GRANTS_SHOWN_MAX: i64 = 100;
/// Users whose due grants one sweep transaction expires.
pub const EXPIRY_SWEEP_USERS_MAX: i64 = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    Paid,
    Promotional,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Paid => "paid",
            Category::Promotional => "promotional",
        }
    }
    pub fn parse(s: &str) -> Option<Category> {
        match s {
            "paid" => Some(Category::Paid),
            "promotional" => Some(Category::Promotional),
            _ => None,
        }
    }
}

/// Where a grant came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Admin,
    Signup,
    Code,
    Payment,
    /// The balance a user held when grants were introduced (migration V8).
    Legacy,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Admin => "admin",
            Source::Signup => "signup",
            Source::Code => "code",
            Source::Payment => "payment",
            Source::Legacy => "legacy",
        }
    }
    pub fn parse(s: &str) -> Option<Source> {
        match s {
            "admin" => Some(Source::Admin),
            "signup" => Some(Source::Signup),
            "code" => Some(Source::Code),
            "payment" => Some(Source::Payment),
            "legacy" => Some(Source::Legacy),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum GrantStatus {
    /// Spendable credits remain.
    Active,
    /// Its expiry has come.
    Expired,
    /// An admin ended it.
    Voided,
    /// Spent to zero before it ended.
    Depleted,
}

impl GrantStatus {
    pub fn parse(s: &str) -> Option<GrantStatus> {
        match s {
            "active" => Some(GrantStatus::Active),
            "expired" => Some(GrantStatus::Expired),
            "voided" => Some(GrantStatus::Voided),
            "depleted" => Some(GrantStatus::Depleted),
            _ => None,
        }
    }

    pub fn of(remaining: Credits, expires_at: Option<Timestamp>, voided_at: Option<Timestamp>, now: Timestamp) -> Self {
        if voided_at.is_some() {
            GrantStatus::Voided
        } else if expires_at.is_some_and(|at| at <= now) {
            GrantStatus::Expired
        } else if remaining == Credits::ZERO {
            GrantStatus::Depleted
        } else {
            GrantStatus::Active
        }
    }
}

/// A grant as the API shows it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Grant {
    pub id: GrantId,
    pub object: &'static str,
    pub user_id: UserId,
    pub amount: Credits,
    /// Credits not yet spent, expired or voided.
    pub remaining: Credits,
    /// Of `remaining`, what active holds have reserved.
    pub held: Credits,
    pub category: Category,
    pub priority: i64,
    pub status: GrantStatus,
    pub effective_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub voided_at: Option<Timestamp>,
    pub source: Source,
    pub description: String,
    pub external_id: Option<String>,
    pub transaction_id: Option<TxnId>,
    pub code_id: Option<CodeId>,
    pub created_at: Timestamp,
}

/// A grant to add, already validated.
#[derive(Debug, Clone)]
pub struct NewGrant {
    pub user: UserId,
    pub amount: Credits,
    pub category: Category,
    pub priority: i64,
    pub expires_at: Option<Timestamp>,
    pub source: Source,
    pub description: String,
    pub external_id: Option<String>,
    pub code: Option<CodeId>,
}

impl NewGrant {
    /// An admin's grant with the defaults: promotional, priority 50, no
    /// expiry.
    pub fn promotional(user: UserId, amount: Credits, source: Source, description: &str) -> NewGrant {
        NewGrant {
            user,
            amount,
            category: Category::Promotional,
            priority: PRIORITY_DEFAULT,
            expires_at: None,
            source,
            description: description.to_owned(),
            external_id: None,
            code: None,
        }
    }
}

pub fn parse_priority(raw: Option<i64>) -> Result<i64> {
    match raw {
        None => Ok(PRIORITY_DEFAULT),
        Some(p) if (0..=PRIORITY_MAX).contains(&p) => Ok(p),
        Some(_) => {
            Err(Error::invalid("priority", format!("priority must be 0..{PRIORITY_MAX} (lower is spent first)")))
        }
    }
}

pub fn parse_category(raw: Option<&str>) -> Result<Category> {
    match raw {
        None => Ok(Category::Promotional),
        Some(s) => {
            Category::parse(s).ok_or_else(|| Error::invalid("category", "category must be \"paid\" or \"promotional\""))
        }
    }
}

/// An expiry in the future, as RFC 3339.
pub fn parse_expires_at(raw: Option<&str>, param: &str, now: Timestamp) -> Result<Option<Timestamp>> {
    let Some(s) = raw else { return Ok(None) };
    let at = Timestamp::parse_rfc3339(s).ok_or_else(|| {
        Error::invalid(param, format!("{param} must be an RFC 3339 date-time, e.g. 2027-01-31T00:00:00Z"))
    })?;
    if at <= now {
        return Err(Error::invalid(param, format!("{param} must be in the future")));
    }
    Ok(Some(at))
}

pub fn parse_external_id(raw: Option<&str>) -> Result<Option<String>> {
    match raw.map(str::trim) {
        None => Ok(None),
        Some(s) if s.is_empty() || s.chars().count() > EXTERNAL_ID_CHARS_MAX || s.chars().any(char::is_control) => {
            Err(Error::invalid(
                "external_id",
                format!("external_id must be 1..{EXTERNAL_ID_CHARS_MAX} printable characters"),
            ))
        }
        Some(s) => Ok(Some(s.to_owned())),
    }
}

/// Adds a grant: its `grant` ledger row and the grant, in one transaction.
/// With an `external_id` the user already used, returns that grant and
/// `false` instead (a payment webhook retried is granted once).
pub fn create(conn: &Conn<'_>, g: &NewGrant) -> Result<(Grant, bool)> {
    create_at(conn, g, Timestamp::now())
}

/// [`create`] at a given time (tests move the clock).
pub fn create_at(conn: &Conn<'_>, g: &NewGrant, now: Timestamp) -> Result<(Grant, bool)> {
    if let Some(ext) = &g.external_id
        && let Some(existing) = store::by_external_id(conn, g.user, ext, now)?
    {
        return Ok((existing, false));
    }
    let txn = super::append_change(conn, g.user, g.amount, Kind::Grant, None, &g.description, now)?;
    let id = store::insert(conn, g, txn.id, now)?;
    logs::write(
        conn,
        &NewLog::business(
            g.user,
            "credits_granted",
            true,
            json!({ "grant_id": id, "transaction_id": txn.id, "amount": g.amount, "source": g.source.as_str(),
                    "balance_after": txn.balance_after }),
        ),
    )?;
    let grant =
        store::get(conn, id, now)?.ok_or_else(|| Error::Internal("a grant vanished as it was written".into()))?;
    crate::events::emit(conn, crate::events::EventType::CreditsGranted, Some(g.user), &grant)?;
    Ok((grant, true))
}

/// The user a grant belongs to (which never changes), if it exists.
pub fn owner(conn: &Conn<'_>, id: GrantId) -> Result<Option<UserId>> {
    Ok(store::get(conn, id, Timestamp::now())?.map(|g| g.user_id))
}

fn get_at(conn: &Conn<'_>, id: GrantId, now: Timestamp) -> Result<Grant> {
    store::get(conn, id, now)?.ok_or_else(|| Error::not_found("grant"))
}

pub fn list(conn: &Conn<'_>, user: UserId, status: Option<GrantStatus>, page: &Page) -> Result<List<Grant>> {
    Ok(store::list(conn, user, status, page, Timestamp::now())?)
}

pub fn active(conn: &Conn<'_>, user: UserId) -> Result<Vec<Grant>> {
    Ok(store::active_in_draw_order(conn, user, Timestamp::now(), ACTIVE_GRANTS_SHOWN_MAX)?)
}

/// The soonest expiry of the user's credits and how much expires then.
#[derive(Debug, Clone, Copy, Serialize, JsonSchema)]
pub struct NextExpiry {
    pub at: Timestamp,
    pub amount: Credits,
}

pub fn next_expiry(conn: &Conn<'_>, user: UserId) -> Result<Option<NextExpiry>> {
    Ok(store::next_expiry(conn, user, Timestamp::now())?.map(|(at, amount)| NextExpiry { at, amount }))
}

/// Which grants, in draw order, paid for a charge, and how much each.
pub(super) struct Draw(Vec<(GrantId, Credits)>);

impl Draw {
    /// All of `amount` from one grant.
    pub(super) fn one(grant: GrantId, amount: Credits) -> Draw {
        Draw(vec![(grant, amount)])
    }

    /// The grant, when the charge drew on exactly one: the ledger row names
    /// it, and no `grant_draws` row is written.
    pub(super) fn single(&self) -> Option<GrantId> {
        match self.0.as_slice() {
            [(g, _)] => Some(*g),
            _ => None,
        }
    }
}

/// Takes a charge of `amount` from the user's spendable grants, in draw
/// order; [`record_draw`] then records it against the ledger row. The
/// caller has checked that available credits cover it (after expiring what
/// was due), so a shortfall here is a broken invariant.
pub(super) fn draw(conn: &Conn<'_>, user: UserId, amount: Credits, now: Timestamp) -> Result<Draw> {
    if let Some(g) = store::take_from_first(conn, user, amount, now)? {
        return Ok(Draw::one(g, amount));
    }
    draw_planned(conn, user, amount, now)
}

/// [`draw`] past its common case (the first grant alone covers it with
/// some to spare), when that was tried already: in draw order, emptying
/// grants as it goes.
pub(super) fn draw_planned(conn: &Conn<'_>, user: UserId, amount: Credits, now: Timestamp) -> Result<Draw> {
    let plan = plan_draw(conn, user, amount, now)?;
    for (g, take) in &plan {
        store::take(conn, g.id, *take, g.remaining == *take, now)?;
    }
    Ok(Draw(plan.into_iter().map(|(g, take)| (g.id, take)).collect()))
}

/// Records which grants paid for ledger row `txn`, when there were several.
pub(super) fn record_draw(conn: &Conn<'_>, draw: &Draw, txn: TxnId) -> Result<()> {
    if draw.single().is_none() {
        for (g, take) in &draw.0 {
            store::record_draw(conn, txn, *g, *take)?;
        }
    }
    Ok(())
}

/// Which grants, in draw order, cover `amount`, and how much of each.
fn plan_draw(
    conn: &Conn<'_>,
    user: UserId,
    amount: Credits,
    now: Timestamp,
) -> Result<Vec<(store::Spendable, Credits)>> {
    let mut left = amount;
    let mut out = Vec::new();
    for g in store::spendable(conn, user, amount, now)? {
        let take = g.free.min(left);
        out.push((g, take));
        left = left - take;
    }
    if left > Credits::ZERO {
        return Err(Error::Internal(format!("grants of {user} cover {} of {amount} available credits", amount - left)));
    }
    Ok(out)
}

/// The writes that reserve `amount` on the user's spendable grants for
/// `hold`, in draw order (the plan read now; the caller sends them).
pub(super) fn reserve_writes(
    conn: &Conn<'_>,
    user: UserId,
    amount: Credits,
    hold: HoldId,
    now: Timestamp,
) -> Result<Vec<crate::storage::Write>> {
    let mut writes = Vec::new();
    for (g, take) in plan_draw(conn, user, amount, now)? {
        writes.extend(store::reserve_writes(hold, g.id, take)?);
    }
    Ok(writes)
}

/// How a hold's charge splits over what it reserved, in draw order.
pub(super) struct Settlement {
    reserved: Vec<store::Reservation>,
    /// Per reservation, the part charged.
    taken: Vec<Credits>,
}

impl Settlement {
    /// The grant, when the charge falls on exactly one.
    pub(super) fn single(&self) -> Option<GrantId> {
        let mut charged = self.reserved.iter().zip(&self.taken).filter(|(_, t)| **t > Credits::ZERO);
        match (charged.next(), charged.next()) {
            (Some((r, _)), None) => Some(r.grant),
            _ => None,
        }
    }
}

/// Plans charging `charged` (at most the hold) from a hold's reservations.
pub(super) fn plan_settle(conn: &Conn<'_>, hold: HoldId, charged: Credits, now: Timestamp) -> Result<Settlement> {
    let reserved = store::reservations(conn, hold, now)?;
    let mut left = charged;
    let taken = reserved
        .iter()
        .map(|r| {
            let take = r.amount.min(left);
            left = left - take;
            take
        })
        .collect();
    if left > Credits::ZERO {
        return Err(Error::Internal(format!("{hold} reserved less than the {charged} it charged")));
    }
    Ok(Settlement { reserved, taken })
}

/// Closes a hold's reservations as planned: the charged parts are taken
/// from their grants (recorded against ledger row `txn` when there are
/// several), the rest returns to the grants. A grant that ended while the
/// hold was open loses what the hold left unused now.
pub(super) fn close_reservations(
    conn: &Conn<'_>,
    hold: HoldId,
    s: &Settlement,
    txn: Option<TxnId>,
    now: Timestamp,
) -> Result<()> {
    let several = s.single().is_none();
    for (r, take) in s.reserved.iter().zip(&s.taken) {
        store::unreserve(conn, r, *take, now)?;
        if several
            && *take > Credits::ZERO
            && let Some(t) = txn
        {
            store::record_draw(conn, t, r.grant, *take)?;
        }
    }
    store::delete_reservations(conn, hold)?;
    // Only a grant that had ended loses what the hold leaves: the common
    // settle reads nothing more.
    for r in s.reserved.iter().filter(|r| r.ended) {
        end_if_due(conn, r.grant, now)?;
    }
    Ok(())
}

/// If the grant has ended (voided, or its expiry has come), its unreserved
/// credits leave the balance in an `expire` or `void` row.
fn end_if_due(conn: &Conn<'_>, grant: GrantId, now: Timestamp) -> Result<Option<Transaction>> {
    let Some(e) = store::ending(conn, grant, now)? else { return Ok(None) };
    let kind = if e.voided {
        Kind::Void
    } else if e.expired {
        Kind::Expire
    } else {
        return Ok(None);
    };
    if e.unreserved <= Credits::ZERO {
        return Ok(None);
    }
    let what = if kind == Kind::Void { "voided" } else { "expired" };
    let txn = super::append_change(conn, e.user, -e.unreserved, kind, Some(grant), &format!("{grant} {what}"), now)?;
    store::take(conn, grant, e.unreserved, e.empties, now)?;
    Ok(Some(txn))
}

/// Expires the user's grants whose time has come (their unreserved part;
/// a reserved part expires when its hold closes). Runs first in every
/// charge when the user's `next_expiry_at` has come, and from the sweeper.
pub(super) fn expire_user(conn: &Conn<'_>, user: UserId, now: Timestamp) -> Result<usize> {
    let due = store::due_of_user(conn, user, now)?;
    let mut expired = Credits::ZERO;
    for grant in &due {
        if let Some(t) = end_if_due(conn, *grant, now)? {
            expired = expired - t.amount;
        }
    }
    store::refresh_next_expiry(conn, user)?;
    if !due.is_empty() {
        logs::write(
            conn,
            &NewLog::business(user, "credits_expired", true, json!({ "grants": due.len(), "amount": expired })),
        )?;
    }
    Ok(due.len())
}

/// The sweeper's grant expiry: a batch of users at most; returns how many
/// grants it expired.
pub(super) fn expire_due(conn: &Conn<'_>, now: Timestamp) -> Result<usize> {
    let mut n = 0;
    for user in store::users_with_due_grants(conn, now, EXPIRY_SWEEP_USERS_MAX)? {
        n += expire_user(conn, user, now)?;
    }
    Ok(n)
}

/// Ends a grant early. Its unreserved remainder leaves in a `void` row now;
/// what active holds reserved on it stays theirs, and what they leave
/// unused is voided when they close. Voiding a voided grant returns it
/// again; an expired grant cannot be voided.
pub fn void(conn: &Conn<'_>, id: GrantId) -> Result<Grant> {
    void_at(conn, id, Timestamp::now())
}

/// [`void`] at a given time (tests move the clock).
pub fn void_at(conn: &Conn<'_>, id: GrantId, now: Timestamp) -> Result<Grant> {
    let g = get_at(conn, id, now)?;
    match g.status {
        GrantStatus::Voided => return Ok(g),
        GrantStatus::Expired => {
            return Err(Error::Conflict {
                code: "grant_expired",
                message: format!("{id} has already expired; there is nothing left to void."),
            });
        }
        GrantStatus::Active | GrantStatus::Depleted => {}
    }
    end_now(conn, &g, now)?;
    get_at(conn, id, now)
}

/// Voids the grant and answers the credits that left it now (a payment
/// dispute freezing what is left; 0 when it had already ended).
pub fn void_taking(conn: &Conn<'_>, id: GrantId, now: Timestamp) -> Result<Credits> {
    let g = get_at(conn, id, now)?;
    match g.status {
        GrantStatus::Voided | GrantStatus::Expired => Ok(Credits::ZERO),
        GrantStatus::Active | GrantStatus::Depleted => end_now(conn, &g, now),
    }
}

fn end_now(conn: &Conn<'_>, g: &Grant, now: Timestamp) -> Result<Credits> {
    store::set_voided(conn, g.id, now)?;
    let txn = end_if_due(conn, g.id, now)?;
    let amount = txn.as_ref().map_or(Credits::ZERO, |t| -t.amount);
    logs::write(
        conn,
        &NewLog::business(
            g.user_id,
            "grant_voided",
            true,
            json!({ "grant_id": g.id, "amount": amount, "transaction_id": txn.map(|t| t.id) }),
        ),
    )?;
    Ok(amount)
}

/// Takes up to `amount` of a grant's unreserved remainder back in a `void`
/// row, leaving the grant active with the rest (a partial refund). What
/// active holds reserved stays theirs; the balance never goes below zero.
/// Answers what it took: less than `amount` when the credits were already
/// spent (the caller records the shortfall).
pub fn take_back(conn: &Conn<'_>, id: GrantId, amount: Credits, description: &str, now: Timestamp) -> Result<Credits> {
    let Some(e) = store::ending(conn, id, now)? else { return Err(Error::not_found("grant")) };
    if e.voided || e.expired {
        return Ok(Credits::ZERO);
    }
    let take = amount.min(e.unreserved);
    if take <= Credits::ZERO {
        return Ok(Credits::ZERO);
    }
    let txn = super::append_change(conn, e.user, -take, Kind::Void, Some(id), description, now)?;
    store::take(conn, id, take, e.empties && take == e.unreserved, now)?;
    logs::write(
        conn,
        &NewLog::business(
            e.user,
            "grant_taken_back",
            true,
            json!({ "grant_id": id, "amount": take, "asked": amount, "transaction_id": txn.id }),
        ),
    )?;
    Ok(take)
}
