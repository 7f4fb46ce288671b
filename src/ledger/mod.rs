//! The credit ledger: the only module that writes money.
//!
//! Every balance change is one appended `credit_transactions` row (never
//! updated, never deleted: triggers refuse it) plus, in the same transaction,
//! the cached `users.credits`. Holds reserve credits for work whose cost is
//! known only afterwards: `available = balance - held`; a hold is later
//! settled into one `consume` row (never more than the hold) or released.
//!
//! The functions here take a `&Conn` and must run inside the writer's
//! transaction (`Db::write`): that is what makes check-then-append atomic.
//! This module never talks HTTP and never calls a provider.

pub mod audit;
pub mod chain;
mod grant_storage;
pub mod grants;
pub mod seal;
pub mod seal_storage;
pub mod storage;

use crate::domain::{ApiKeyId, Credits, GrantId, HoldId, JobId, Timestamp, TxnId, UserId, day_number, day_start};
use crate::error::{Error, Result};
use crate::logs::{self, Level, NewLog};
use crate::storage::Conn;
use serde::Serialize;
use serde_json::json;
use storage::NewRow;

/// A description is a note for humans; this keeps the ledger compact.
pub const DESCRIPTION_CHARS_MAX: usize = 500;
/// Holds expired per sweep transaction, so one sweep never stalls the writer.
pub const SWEEP_BATCH_MAX: i64 = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Grant,
    Consume,
    Refund,
    Adjust,
    /// A grant's unused remainder leaving at its expiry.
    Expire,
    /// A grant's remainder leaving when an admin voids it.
    Void,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Grant => "grant",
            Kind::Consume => "consume",
            Kind::Refund => "refund",
            Kind::Adjust => "adjust",
            Kind::Expire => "expire",
            Kind::Void => "void",
        }
    }
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "grant" => Some(Kind::Grant),
            "consume" => Some(Kind::Consume),
            "refund" => Some(Kind::Refund),
            "adjust" => Some(Kind::Adjust),
            "expire" => Some(Kind::Expire),
            "void" => Some(Kind::Void),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HoldStatus {
    Active,
    Settled,
    Released,
    Expired,
}

impl HoldStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldStatus::Active => "active",
            HoldStatus::Settled => "settled",
            HoldStatus::Released => "released",
            HoldStatus::Expired => "expired",
        }
    }
    pub fn parse(s: &str) -> Option<HoldStatus> {
        match s {
            "active" => Some(HoldStatus::Active),
            "settled" => Some(HoldStatus::Settled),
            "released" => Some(HoldStatus::Released),
            "expired" => Some(HoldStatus::Expired),
            _ => None,
        }
    }
}

/// A ledger row as the API shows it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Transaction {
    pub id: TxnId,
    pub object: &'static str,
    pub amount: Credits,
    pub kind: Kind,
    pub balance_after: Credits,
    pub job_id: Option<JobId>,
    pub hold_id: Option<HoldId>,
    pub description: String,
    pub created_at: Timestamp,
    /// A metered consume's exact cost, in millionths of a credit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_micro: Option<i64>,
    /// The user's unbilled fraction after this row, in millionths.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub carry_after_micro: Option<i64>,
    /// A token-metered consume: what it was charged for (`cost_micro`,
    /// `breakdown` by component, the price group's multiplier), as the
    /// answer showed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub components: Option<serde_json::Value>,
}

/// Millionths of a credit in one credit.
pub const MICRO_PER_CREDIT: i64 = 1_000_000;

/// What a metered call cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cost {
    /// Whole credits (per image, per video second, a hold's bound).
    Credits(Credits),
    /// Millionths of a credit (token prices are per 1M tokens): charged
    /// through the user's carry, so many small calls are billed their exact
    /// sum rounded once, not each rounded up.
    Micro(i64),
}

#[derive(Debug, Clone, Copy, Serialize, schemars::JsonSchema)]
pub struct Balance {
    pub object: &'static str,
    pub balance: Credits,
    pub held: Credits,
    pub available: Credits,
    /// The soonest expiry of the user's credits, and how many expire then.
    pub next_expiry: Option<grants::NextExpiry>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Consumed {
    pub transaction_id: TxnId,
    pub balance: Credits,
    pub available: Credits,
}

/// The spend limits that apply to one charge, resolved by the caller from
/// config and per-user overrides.
#[derive(Debug, Clone, Copy)]
pub struct SpendCaps {
    /// Credits per user per day; `None` = no cap.
    pub daily_cap: Option<Credits>,
    /// Credits per day for all users together; `None` = off.
    pub global_daily_cap: Option<Credits>,
    pub day_utc_offset_minutes: i32,
    /// The API key the charge is made through: its spend limits apply and
    /// its spend is counted (`None` for a session token).
    pub key: Option<ApiKeyId>,
    /// `credits.low` fires when a charge takes the available balance below
    /// this (0 = off).
    pub low_balance: Credits,
}

impl SpendCaps {
    /// The user a charge under these caps may lock alone, running beside
    /// the charges of other users (`Db::write_for_user`): all but a charge
    /// under the global budget, whose check reads every user's spend and so
    /// runs alone (`None`).
    pub fn lock_user(&self, user: UserId) -> Option<UserId> {
        self.global_daily_cap.is_none().then_some(user)
    }

    pub const NONE: SpendCaps = SpendCaps {
        daily_cap: None,
        global_daily_cap: None,
        day_utc_offset_minutes: 0,
        key: None,
        low_balance: Credits::ZERO,
    };
}

/// How a hold ended. Settling or releasing a closed hold returns this again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HoldOutcome {
    pub hold_id: HoldId,
    pub status: HoldStatus,
    pub charged: Credits,
    pub transaction_id: Option<TxnId>,
}

pub fn parse_description(raw: Option<&str>) -> Result<String> {
    let d = raw.unwrap_or("").trim();
    if d.chars().count() > DESCRIPTION_CHARS_MAX {
        return Err(Error::invalid(
            "description",
            format!("description must be at most {DESCRIPTION_CHARS_MAX} characters"),
        ));
    }
    Ok(d.to_owned())
}

fn account(conn: &Conn<'_>, user: UserId) -> Result<(Credits, Credits)> {
    let a = storage::account(conn, user)?.ok_or_else(|| Error::not_found("user"))?;
    Ok((a.credits, a.held))
}

/// The account a new charge draws on, after expiring the user's grants
/// whose time has come (only when the cached next expiry says one has: the
/// common charge pays one read for it).
fn account_for_charge(conn: &Conn<'_>, user: UserId, now: Timestamp) -> Result<(Credits, Credits)> {
    let a = storage::account(conn, user)?.ok_or_else(|| Error::not_found("user"))?;
    if a.next_expiry_at.is_some_and(|at| at <= now) {
        grants::expire_user(conn, user, now)?;
        return account(conn, user);
    }
    Ok((a.credits, a.held))
}

/// Appends a row for `amount` after the user's current balance and updates
/// the balance cache: the one way every non-metered row is written.
fn append_change(
    conn: &Conn<'_>,
    user: UserId,
    amount: Credits,
    kind: Kind,
    grant: Option<GrantId>,
    description: &str,
    now: Timestamp,
) -> Result<Transaction> {
    // The balance and the chain head move in one statement; the row follows.
    let (after, moved) =
        storage::add_credits_moving_head(conn, user, amount, None)?.ok_or_else(|| Error::not_found("user"))?;
    let row = NewRow { grant, moved: Some(moved), ..NewRow::plain(user, amount, kind, after, description, now) };
    Ok(storage::append(conn, &row)?)
}

/// Seconds from `now` until the spend day after `day` begins.
fn seconds_to_next_day(day: i64, caps: &SpendCaps, now: Timestamp) -> u64 {
    let next = day_start(day + 1, caps.day_utc_offset_minutes);
    ((next.millis() - now.millis()) as u64).div_ceil(1000).max(1)
}

/// Refuses when today's spend plus `amount` would pass the cap.
fn check_daily_cap(conn: &Conn<'_>, user: UserId, amount: Credits, caps: &SpendCaps, now: Timestamp) -> Result<i64> {
    let day = day_number(now, caps.day_utc_offset_minutes);
    let retry_after_s = || seconds_to_next_day(day, caps, now);
    if let Some(cap) = caps.daily_cap {
        let spent = crate::usage::spent_on(conn, user, day)?;
        if spent + amount > cap {
            return Err(Error::DailyCapExceeded { cap, spent, retry_after_s: retry_after_s() });
        }
    }
    if let Some(cap) = caps.global_daily_cap {
        let spent = storage::global_spent_on(conn, day)?;
        if spent + amount > cap {
            return Err(Error::BudgetExhausted { cap, spent, retry_after_s: retry_after_s() });
        }
    }
    Ok(day)
}

/// Today's spend (consumed plus reserved) for `/v1/limits`.
pub fn spent_today(conn: &Conn<'_>, user: UserId, day_utc_offset_minutes: i32) -> Result<Credits> {
    crate::usage::spent_on(conn, user, day_number(Timestamp::now(), day_utc_offset_minutes))
}

/// Adds credits as a promotional grant with the defaults (no expiry). For
/// the CLI and tests; the API builds a [`grants::NewGrant`].
pub fn grant(conn: &Conn<'_>, user: UserId, amount: Credits, description: &str) -> Result<grants::Grant> {
    let (g, _) =
        grants::create(conn, &grants::NewGrant::promotional(user, amount, grants::Source::Admin, description))?;
    Ok(g)
}

/// An admin correction: positive is a promotional grant with the defaults,
/// negative an `adjust` drawn from the user's grants in draw order, which
/// may not take available credits below zero. Returns the ledger row.
pub fn admin_adjust(conn: &Conn<'_>, user: UserId, amount: Credits, description: &str) -> Result<Transaction> {
    admin_adjust_at(conn, user, amount, description, Timestamp::now())
}

/// [`admin_adjust`] at a given time (tests move the clock).
pub fn admin_adjust_at(
    conn: &Conn<'_>,
    user: UserId,
    amount: Credits,
    description: &str,
    now: Timestamp,
) -> Result<Transaction> {
    if amount.0 > 0 {
        let (g, _) = grants::create_at(
            conn,
            &grants::NewGrant::promotional(user, amount, grants::Source::Admin, description),
            now,
        )?;
        let id = g.transaction_id.ok_or_else(|| Error::Internal("a new grant has no ledger row".into()))?;
        return storage::get(conn, id)?.ok_or_else(|| Error::Internal("a new grant's ledger row vanished".into()));
    }
    check_available(conn, user, -amount, now)?;
    let draw = grants::draw(conn, user, -amount, now)?;
    let txn = append_change(conn, user, amount, Kind::Adjust, draw.single(), description, now)?;
    grants::record_draw(conn, &draw, txn.id)?;
    logs::write(
        conn,
        &NewLog::business(
            user,
            "credits_changed",
            true,
            json!({ "transaction_id": txn.id, "amount": amount, "kind": Kind::Adjust.as_str(), "balance_after": txn.balance_after }),
        ),
    )?;
    Ok(txn)
}

/// What a charge may draw on, once `take_spend` has allowed it: the user's
/// balance and held amount before it.
struct Spendable {
    balance: Credits,
    held: Credits,
    /// The spend day the charge counts toward.
    day: i64,
    /// The chain head a debit moved (its row must be appended next).
    moved: Option<storage::MovedHead>,
    /// A debit's draw from the first grant in draw order, tried in the
    /// debit's own statement.
    first_draw: FirstDraw,
}

/// What became of a charge's draw from the first grant in draw order.
enum FirstDraw {
    /// Not tried (a hold, or a debit on the general path).
    Untried,
    /// All of the charge came from this grant.
    Drew(GrantId),
    /// Tried: that grant alone does not cover it (the general draw does).
    Uncovered,
}

/// The checks every new charge passes (enough available credits, then room
/// under the daily caps and the key's limits), and the change it makes to
/// the user's row. The caps are read first; then one conditional
/// `UPDATE ... RETURNING` checks the available credits and takes them (a
/// debit, or a hold's reservation), instead of a read and a write of the
/// same row (issue 19). When that update takes nothing (too few credits, a
/// grant due to expire first, no such user), the general path decides.
fn take_spend(
    conn: &Conn<'_>,
    user: UserId,
    amount: Credits,
    caps: &SpendCaps,
    take: storage::Take,
    now: Timestamp,
) -> Result<Spendable> {
    let day = match check_caps(conn, user, amount, caps, now) {
        Ok(day) => day,
        Err(refused) => {
            // A charge refused on both counts hears about the credits first.
            check_available(conn, user, amount, now)?;
            return Err(refused);
        }
    };
    // A debit draws from the first grant in the same statement.
    let taken = match take {
        storage::Take::Debit => storage::debit_and_draw_first(conn, user, amount, now)?
            .map(|(t, first)| (t, first.map_or(FirstDraw::Uncovered, FirstDraw::Drew))),
        storage::Take::Hold => {
            storage::take_if_available(conn, user, amount, take, now)?.map(|t| (t, FirstDraw::Untried))
        }
    };
    if let Some((t, first_draw)) = taken {
        return Ok(Spendable { balance: t.balance, held: t.held, day, moved: t.moved, first_draw });
    }
    let (balance, held) = check_available(conn, user, amount, now)?;
    match take {
        storage::Take::Debit => storage::set_credits(conn, user, balance - amount)?,
        storage::Take::Hold => storage::add_held(conn, user, amount)?,
    }
    Ok(Spendable { balance, held, day, moved: None, first_draw: FirstDraw::Untried })
}

/// The user's balance and held amount after expiring what was due, or a
/// refusal when their available credits do not cover `amount`.
fn check_available(conn: &Conn<'_>, user: UserId, amount: Credits, now: Timestamp) -> Result<(Credits, Credits)> {
    let (balance, held) = account_for_charge(conn, user, now)?;
    let available = balance - held;
    if available < amount {
        return Err(Error::InsufficientCredits { needed: amount, available });
    }
    Ok((balance, held))
}

/// Room under the daily caps and the key's limits; returns the spend day.
fn check_caps(conn: &Conn<'_>, user: UserId, amount: Credits, caps: &SpendCaps, now: Timestamp) -> Result<i64> {
    let day = check_daily_cap(conn, user, amount, caps, now)?;
    if let Some(key) = caps.key {
        check_key_limits(conn, key, amount, day, caps, now)?;
    }
    Ok(day)
}

/// Refuses when the charge would take the API key past its lifetime or
/// daily spend limit (read from the key's row in this transaction, so
/// concurrent charges through one key cannot pass it together).
fn check_key_limits(
    conn: &Conn<'_>,
    key: ApiKeyId,
    amount: Credits,
    day: i64,
    caps: &SpendCaps,
    now: Timestamp,
) -> Result<()> {
    let Some(s) = storage::key_spend(conn, key, day)? else {
        return Err(Error::Unauthorized("This API key is unknown or has been revoked.".into()));
    };
    if let Some(limit) = s.spend_limit
        && s.total + amount > limit
    {
        return Err(Error::KeySpendLimitExceeded { limit, spent: s.total });
    }
    if let Some(limit) = s.daily_spend_limit
        && s.today + amount > limit
    {
        return Err(Error::KeyDailyLimitExceeded {
            limit,
            spent: s.today,
            retry_after_s: seconds_to_next_day(day, caps, now),
        });
    }
    Ok(())
}

/// The writes that count `delta` (possibly negative) toward the day's
/// spend of the user, of everyone, and of the key it was made through;
/// with `usage`, the call's usage goes on the user's row of the day in the
/// same writes as their spend (one row per user and day). Five to seven
/// counters, none read back: the caller sends them with its other writes
/// (on PostgreSQL one statement, one round trip).
fn spend_writes(
    user: UserId,
    key: Option<ApiKeyId>,
    day: i64,
    delta: Credits,
    usage: Option<&crate::usage::Counted>,
) -> Vec<crate::storage::Write> {
    let mut writes = crate::usage::spent_writes(user, day, usage, delta);
    writes.push(storage::global_spent_write(user, day, delta));
    if let Some(k) = key {
        writes.extend(storage::key_spent_writes(k, day, delta));
    }
    writes
}

/// Spends `amount` now: checks available credits and the daily cap, appends
/// the `consume` row, updates the cache, today's spend and the usage
/// aggregate.
pub fn consume(
    conn: &Conn<'_>,
    user: UserId,
    amount: Credits,
    description: &str,
    caps: &SpendCaps,
) -> Result<Consumed> {
    consume_at(conn, user, amount, description, caps, Timestamp::now())
}

/// [`consume`] at a given time (tests move the clock).
pub fn consume_at(
    conn: &Conn<'_>,
    user: UserId,
    amount: Credits,
    description: &str,
    caps: &SpendCaps,
    now: Timestamp,
) -> Result<Consumed> {
    let Spendable { balance, held, day, moved, first_draw } =
        take_spend(conn, user, amount, caps, storage::Take::Debit, now)?;
    let after = balance - amount;
    // Draws append no row: the head the debit moved is still this row's.
    let draw = match first_draw {
        FirstDraw::Drew(first) => grants::Draw::one(first, amount),
        FirstDraw::Uncovered => grants::draw_planned(conn, user, amount, now)?,
        FirstDraw::Untried => grants::draw(conn, user, amount, now)?,
    };
    let used = crate::usage::Metered::default().request(caps.key, amount);
    // The counters go with the row (one statement on PostgreSQL).
    let txn = storage::append_with(
        conn,
        &NewRow {
            api_key: caps.key,
            grant: draw.single(),
            moved,
            ..NewRow::plain(user, -amount, Kind::Consume, after, description, now)
        },
        spend_writes(user, caps.key, day, amount, Some(&used)),
    )?;
    grants::record_draw(conn, &draw, txn.id)?;
    crate::events::spent(conn, user, balance - held, amount, caps.low_balance)?;
    // No business log: the ledger row (with its description) is the record
    // of a plain consume and the usage aggregate counts it; a log row cost
    // every consume an insert and three index entries (issue 19).
    Ok(Consumed { transaction_id: txn.id, balance: after, available: after - held })
}

/// Reserves `amount` for work whose cost is known later. The reservation
/// counts toward today's spend now, so concurrent holds cannot pass the cap.
pub fn hold(
    conn: &Conn<'_>,
    user: UserId,
    amount: Credits,
    job: Option<JobId>,
    ttl_ms: i64,
    caps: &SpendCaps,
) -> Result<HoldId> {
    hold_at(conn, user, amount, job, ttl_ms, caps, Timestamp::now())
}

/// [`hold`] at a given time (tests move the clock).
pub fn hold_at(
    conn: &Conn<'_>,
    user: UserId,
    amount: Credits,
    job: Option<JobId>,
    ttl_ms: i64,
    caps: &SpendCaps,
    now: Timestamp,
) -> Result<HoldId> {
    let Spendable { balance, held, day, .. } = take_spend(conn, user, amount, caps, storage::Take::Hold, now)?;
    let id = storage::insert_hold(
        conn,
        &storage::NewHold { user, amount, job, api_key: caps.key, day, expires_at: now.plus_ms(ttl_ms), at: now },
    )?;
    // The reservations and the counters read nothing back: one statement
    // on PostgreSQL.
    let mut writes = grants::reserve_writes(conn, user, amount, id, now)?;
    writes.extend(spend_writes(user, caps.key, day, amount, None));
    conn.execute_together(&writes)?;
    crate::events::spent(conn, user, balance - held, amount, caps.low_balance)?;
    Ok(id)
}

fn closed_outcome(h: &storage::HoldRow) -> HoldOutcome {
    HoldOutcome {
        hold_id: h.id,
        status: h.status,
        charged: h.charged.unwrap_or(Credits::ZERO),
        transaction_id: h.transaction,
    }
}

/// Charges what the call cost, never more than the hold, as one `consume`
/// row and closes the hold. A `Cost::Micro` is added to the user's carry;
/// the whole credits that makes are charged and the rest carried, both
/// recorded on the row (a row of amount 0 when the carry absorbs it all).
pub fn settle(conn: &Conn<'_>, id: HoldId, cost: Cost, description: &str) -> Result<HoldOutcome> {
    settle_at(conn, id, cost, description, Timestamp::now())
}

/// [`settle`] at a given time (tests move the clock).
pub fn settle_at(conn: &Conn<'_>, id: HoldId, cost: Cost, description: &str, now: Timestamp) -> Result<HoldOutcome> {
    settle_metered(conn, id, cost, description, &crate::usage::Metered::default(), now)
}

/// [`settle`] of a metered call: the usage aggregate counts the request
/// with what it used (model, tokens, images, seconds) and what it cost.
pub fn settle_metered(
    conn: &Conn<'_>,
    id: HoldId,
    cost: Cost,
    description: &str,
    used: &crate::usage::Metered,
    now: Timestamp,
) -> Result<HoldOutcome> {
    let h = storage::hold(conn, id)?.ok_or_else(|| Error::not_found("hold"))?;
    if h.status != HoldStatus::Active {
        return Ok(closed_outcome(&h));
    }
    // A capped charge keeps no components: they would price to more than
    // the row charged (the `settle_capped` log has both figures).
    let mut components = used.components.as_deref();
    let (charge, micro) = match cost {
        Cost::Credits(actual) => {
            let actual = actual.max(Credits::ZERO);
            if actual > h.amount {
                capped(conn, id, h.amount, actual.0.saturating_mul(MICRO_PER_CREDIT))?;
            }
            (actual.min(h.amount), None)
        }
        Cost::Micro(exact) if exact <= 0 => (Credits::ZERO, None),
        Cost::Micro(exact) => {
            let carry = storage::carry(conn, h.user)?;
            // A cost within the hold makes at most the hold in whole credits
            // even with the carry added (the carry is under one credit).
            let bound = h.amount.0.saturating_mul(MICRO_PER_CREDIT);
            if exact > bound {
                capped(conn, id, h.amount, exact)?;
                components = None;
            }
            let exact = exact.min(bound);
            let total = carry + exact;
            let micro = storage::Micro { cost: exact, carry_after: total % MICRO_PER_CREDIT };
            (Credits(total / MICRO_PER_CREDIT), Some(micro))
        }
    };
    let settlement = grants::plan_settle(conn, id, charge, now)?;
    let txn = if charge > Credits::ZERO || micro.is_some() {
        // The balance (and carry) and the chain head move in one
        // statement, before the reservations close: a grant that ended
        // meanwhile leaves in a row of its own, after this balance.
        let (after, moved) = storage::add_credits_moving_head(conn, h.user, -charge, micro.map(|m| m.carry_after))?
            .ok_or_else(|| Error::not_found("user"))?;
        let t = storage::append(
            conn,
            &NewRow {
                user: h.user,
                amount: -charge,
                kind: Kind::Consume,
                balance_after: after,
                job: h.job,
                hold: Some(id),
                description,
                at: now,
                micro,
                components,
                api_key: h.api_key,
                grant: settlement.single(),
                moved: Some(moved),
            },
        )?;
        Some(t.id)
    } else {
        // Nothing to write on the user's row; a user gone is still refused.
        account(conn, h.user)?;
        None
    };
    grants::close_reservations(conn, id, &settlement, txn, now)?;
    // What is held, the counters and the hold itself: none read back, so
    // one statement on PostgreSQL.
    let mut writes = vec![storage::add_held_write(h.user, -h.amount)?];
    writes.extend(spend_writes(h.user, h.api_key, h.day, charge - h.amount, Some(&used.request(h.api_key, charge))));
    writes.push(storage::close_hold_write(id, HoldStatus::Settled, Some(charge), txn, now)?);
    conn.execute_together(&writes)?;
    Ok(HoldOutcome { hold_id: id, status: HoldStatus::Settled, charged: charge, transaction_id: txn })
}

/// A provider reported more than the bound that was held: charged the
/// hold, and logged, because a bound should never be wrong.
/// A cost past its hold is charged up to the hold (the user agreed to no
/// more), and never silently: a system `warn` log `settle_capped` with both
/// figures and what went uncharged, and `tollgate_settle_capped_credits_total`.
/// Normal traffic never gets here: the bound covers the dearest component.
fn capped(conn: &Conn<'_>, id: HoldId, held: Credits, cost_micro: i64) -> Result<()> {
    let uncharged_micro = cost_micro.saturating_sub(held.0.saturating_mul(MICRO_PER_CREDIT));
    logs::write(
        conn,
        &NewLog::system(
            Level::Warn,
            "settle_capped",
            json!({ "hold_id": id, "held": held, "cost_micro": cost_micro, "uncharged_micro": uncharged_micro }),
        ),
    )?;
    // Counted as the write runs: a group the writer replays counts it twice,
    // an over-count on a warning metric, never a charge.
    crate::metrics::global().settle_capped_credits.inc_by(uncharged_micro as f64 / MICRO_PER_CREDIT as f64);
    Ok(())
}

pub fn release(conn: &Conn<'_>, id: HoldId) -> Result<HoldOutcome> {
    close_uncharged(conn, id, HoldStatus::Released, Timestamp::now())
}

/// [`release`] at a given time (tests move the clock).
pub fn release_at(conn: &Conn<'_>, id: HoldId, now: Timestamp) -> Result<HoldOutcome> {
    close_uncharged(conn, id, HoldStatus::Released, now)
}

fn close_uncharged(conn: &Conn<'_>, id: HoldId, status: HoldStatus, now: Timestamp) -> Result<HoldOutcome> {
    let h = storage::hold(conn, id)?.ok_or_else(|| Error::not_found("hold"))?;
    if h.status != HoldStatus::Active {
        return Ok(closed_outcome(&h));
    }
    let settlement = grants::plan_settle(conn, id, Credits::ZERO, now)?;
    grants::close_reservations(conn, id, &settlement, None, now)?;
    let mut writes = vec![storage::add_held_write(h.user, -h.amount)?];
    writes.extend(spend_writes(h.user, h.api_key, h.day, -h.amount, None));
    writes.push(storage::close_hold_write(id, status, Some(Credits::ZERO), None, now)?);
    conn.execute_together(&writes)?;
    Ok(HoldOutcome { hold_id: id, status, charged: Credits::ZERO, transaction_id: None })
}

/// Keeps a hold alive while its work runs.
pub fn extend(conn: &Conn<'_>, id: HoldId, until: Timestamp) -> Result<bool> {
    Ok(storage::extend_hold(conn, id, until)? == 1)
}

/// Expires active holds past their time (a batch at most), then grants
/// whose expiry has come (a batch of users at most); returns how many holds
/// and grants. Runs from the sweeper and at startup, after a crash.
pub fn expire_due(conn: &Conn<'_>, now: Timestamp) -> Result<usize> {
    let due = storage::due_holds(conn, now, SWEEP_BATCH_MAX)?;
    for id in &due {
        close_uncharged(conn, *id, HoldStatus::Expired, now)?;
    }
    if !due.is_empty() {
        logs::write(conn, &NewLog::system(Level::Info, "holds_expired", json!({ "count": due.len() })))?;
    }
    Ok(due.len() + grants::expire_due(conn, now)?)
}

/// The sweeper's pass: [`expire_due`], in a write only when a read finds
/// something due. On PostgreSQL a write that is not a charge waits for the
/// charges in flight and holds up the next ones, so an idle pass, from every
/// instance, must not write.
pub fn sweep(db: &crate::storage::Db, now: Timestamp) -> Result<usize> {
    let due = db.read(|c| {
        Ok::<_, Error>(
            !storage::due_holds(c, now, 1)?.is_empty() || !grant_storage::users_with_due_grants(c, now, 1)?.is_empty(),
        )
    })?;
    if !due {
        return Ok(0);
    }
    db.write(move |c| expire_due(c, now))
}

/// At start, before any request: releases (a batch at most of) the holds
/// of calls that died with the previous process. Jobs' holds are left to job
/// recovery, which resumes or fails their jobs. Returns how many.
pub fn release_unattached(conn: &Conn<'_>) -> Result<usize> {
    let orphaned = storage::unattached_active_holds(conn, SWEEP_BATCH_MAX)?;
    for id in &orphaned {
        close_uncharged(conn, *id, HoldStatus::Released, Timestamp::now())?;
    }
    if !orphaned.is_empty() {
        logs::write(conn, &NewLog::system(Level::Warn, "holds_released_at_start", json!({ "count": orphaned.len() })))?;
    }
    Ok(orphaned.len())
}

/// Balance = SUM of the ledger (the seed's `getBalance`); held from the
/// cache, which the audit checks against the active holds.
pub fn balance(conn: &Conn<'_>, user: UserId) -> Result<Balance> {
    // Deactivated users too: an admin looks at their balance.
    let held = storage::held(conn, user)?.ok_or_else(|| Error::not_found("user"))?;
    let (sum, _) = storage::ledger_sum(conn, user)?;
    let next_expiry = grants::next_expiry(conn, user)?;
    Ok(Balance { object: "balance", balance: sum, held, available: sum - held, next_expiry })
}

pub fn list(conn: &Conn<'_>, user: UserId, page: &crate::paging::Page) -> Result<crate::paging::List<Transaction>> {
    Ok(storage::list(conn, user, page)?)
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Validation {
    pub valid: bool,
    pub ledger_balance: Credits,
    pub cached_balance: Credits,
    pub difference: Credits,
    pub last_balance_after: Option<Credits>,
    pub held: Credits,
    pub active_holds_sum: Credits,
}

/// The seed's `validateBalance`: ledger SUM, the cache and the last row's
/// `balance_after` must agree, and so must the held cache and active holds.
pub fn validate(conn: &Conn<'_>, user: UserId) -> Result<Validation> {
    let (cached, held) = account(conn, user)?;
    let (sum, last) = storage::ledger_sum(conn, user)?;
    let active = storage::active_held_sum(conn, user)?;
    let valid = sum == cached && last.unwrap_or(Credits::ZERO) == sum && held == active && held <= cached;
    Ok(Validation {
        valid,
        ledger_balance: sum,
        cached_balance: cached,
        difference: cached - sum,
        last_balance_after: last,
        held,
        active_holds_sum: active,
    })
}

#[cfg(test)]
mod tests;
