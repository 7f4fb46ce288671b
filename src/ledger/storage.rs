//! SQL for the ledger tables: `credit_transactions`, `credit_holds`,
//! `daily_spend_global`, the API keys' spend, and the `credits`/`held`
//! caches on `users` (a user's own daily spend is on their usage row).
//!
//! Nothing here decides whether a write is allowed; `ledger` does, inside the
//! same transaction, before calling these.

use super::chain::{self, ChainFields};
use super::{HoldStatus, Kind, Transaction};
use crate::domain::{ApiKeyId, Credits, GrantId, HoldId, JobId, Timestamp, TxnId, UserId};
use crate::paging::{List, Page};
use crate::storage::{Conn, Engine, Row, Sql, StorageError, Write};
use rusqlite::params;
use rusqlite::types::Value;

type Result<T> = std::result::Result<T, StorageError>;

/// An active user's cached balance, held amount and next grant expiry.
pub struct Account {
    pub credits: Credits,
    pub held: Credits,
    pub next_expiry_at: Option<Timestamp>,
}

pub fn account(conn: &Conn<'_>, user: UserId) -> Result<Option<Account>> {
    conn.query_opt(
        "SELECT credits, held, next_expiry_at FROM users WHERE id = ?1 AND deleted_at IS NULL",
        params![user],
        |r| Ok(Account { credits: r.get(0)?, held: r.get(1)?, next_expiry_at: r.get(2)? }),
    )
}

/// The held cache of any user, active or not.
pub fn held(conn: &Conn<'_>, user: UserId) -> Result<Option<Credits>> {
    conn.query_opt("SELECT held FROM users WHERE id = ?1", params![user], |r| r.get(0))
}

pub fn set_credits(conn: &Conn<'_>, user: UserId, credits: Credits) -> Result<()> {
    conn.execute("UPDATE users SET credits = ?2 WHERE id = ?1", params![user, credits])?;
    Ok(())
}

/// What a new charge takes from the user's row.
#[derive(Debug, Clone, Copy)]
pub enum Take {
    /// `credits` goes down by the amount (a consume).
    Debit,
    /// `held` goes up by the amount (a hold).
    Hold,
}

/// The common charge's check and change in one statement: takes `amount`
/// when the active user's available credits cover it and no grant of
/// theirs is due to expire by `now`. Returns the balance and held amount
/// before it; `None` when nothing was taken.
pub fn take_if_available(
    conn: &Conn<'_>,
    user: UserId,
    amount: Credits,
    take: Take,
    now: Timestamp,
) -> Result<Option<Taken>> {
    // RETURNING sees the row after the change; the caller wants it before.
    match take {
        // A debit is always followed by its ledger row: the same statement
        // moves the user's chain head, a round trip `append` then saves.
        Take::Debit => conn.query_opt(DEBIT, params![user, amount, now], debit_taken),
        Take::Hold => conn.query_opt(
            "UPDATE users SET held = held + ?2
             WHERE id = ?1 AND deleted_at IS NULL AND credits - held >= ?2
               AND (next_expiry_at IS NULL OR next_expiry_at > ?3)
             RETURNING credits, held - ?2",
            params![user, amount, now],
            |r| Ok(Taken { balance: r.get(0)?, held: r.get(1)?, moved: None }),
        ),
    }
}

/// Adds `delta` to an active user's balance (with `carry`, sets a metered
/// charge's carry too) and moves their chain head, in one statement, for
/// the row appended next ([`NewRow::moved`]): the balance after it and the
/// head moved. `None`: no such active user.
pub fn add_credits_moving_head(
    conn: &Conn<'_>,
    user: UserId,
    delta: Credits,
    carry: Option<i64>,
) -> Result<Option<(Credits, MovedHead)>> {
    conn.query_opt(
        "UPDATE users SET credits = credits + ?2, carry_micro = COALESCE(?3, carry_micro), chain_seq = chain_seq + 1
         WHERE id = ?1 AND deleted_at IS NULL
         RETURNING credits, chain_seq, chain_hash",
        params![user, delta, carry],
        |r| Ok((r.get(0)?, MovedHead { seq: r.get(1)?, prev_hash: r.get(2)? })),
    )
}

/// [`take_if_available`]'s debit (`?1` the user, `?2` the amount, `?3`
/// now).
const DEBIT: &str = "UPDATE users SET credits = credits - ?2, chain_seq = chain_seq + 1
     WHERE id = ?1 AND deleted_at IS NULL AND credits - held >= ?2
       AND (next_expiry_at IS NULL OR next_expiry_at > ?3)
     RETURNING credits + ?2, held, chain_seq, chain_hash";

fn debit_taken(r: &Row<'_>) -> Result<Taken> {
    let moved = MovedHead { seq: r.get(2)?, prev_hash: r.get(3)? };
    Ok(Taken { balance: r.get(0)?, held: r.get(1)?, moved: Some(moved) })
}

/// A debit ([`take_if_available`]) and its draw from the first grant in
/// draw order (`grant_storage::take_from_first`), the draw only when the
/// debit took: on PostgreSQL one statement. `None`: nothing was taken;
/// `Some((taken, None))`: taken, but the first grant does not cover it
/// (the general draw decides).
pub fn debit_and_draw_first(
    conn: &Conn<'_>,
    user: UserId,
    amount: Credits,
    now: Timestamp,
) -> Result<Option<(Taken, Option<GrantId>)>> {
    match conn.engine() {
        Engine::Sqlite => {
            let Some(taken) = take_if_available(conn, user, amount, Take::Debit, now)? else { return Ok(None) };
            let first = super::grant_storage::take_from_first(conn, user, amount, now)?;
            Ok(Some((taken, first)))
        }
        Engine::Postgres => conn.query_opt(
            &format!(
                "WITH d AS ({DEBIT}), g AS ({} AND EXISTS (SELECT 1 FROM d) RETURNING id)
                 SELECT d.*, (SELECT id FROM g) FROM d",
                super::grant_storage::take_from_first_update()
            ),
            params![user, amount, now],
            |r| Ok((debit_taken(r)?, r.get(4)?)),
        ),
    }
}

/// What [`take_if_available`] took from: the balance and held amount before
/// it, and for a debit the chain head it moved.
pub struct Taken {
    pub balance: Credits,
    pub held: Credits,
    pub moved: Option<MovedHead>,
}

/// A user's chain head already moved by the statement that debited them:
/// the sequence their next row takes and the hash it chains to. Carried to
/// [`append`] in [`NewRow::moved`], which then does not move it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovedHead {
    pub seq: i64,
    pub prev_hash: String,
}

pub fn add_held(conn: &Conn<'_>, user: UserId, delta: Credits) -> Result<()> {
    conn.execute_together(&[add_held_write(user, delta)?])
}

/// [`add_held`] as one write to send with others
/// (`Conn::execute_together`).
pub fn add_held_write(user: UserId, delta: Credits) -> Result<Write> {
    Write::of("UPDATE users SET held = held + ?2 WHERE id = ?1", params![user, delta])
}

pub struct NewRow<'a> {
    pub user: UserId,
    pub amount: Credits,
    pub kind: Kind,
    pub balance_after: Credits,
    pub job: Option<JobId>,
    pub hold: Option<HoldId>,
    pub description: &'a str,
    pub at: Timestamp,
    /// A metered consume: its exact cost and the user's carry after it.
    pub micro: Option<Micro>,
    /// A token-metered consume: what it was charged for (JSON), chained.
    pub components: Option<&'a str>,
    /// The API key the charge was made through (not chained: attribution).
    pub api_key: Option<ApiKeyId>,
    /// The one grant the row drew on, when it drew on exactly one (not
    /// chained: attribution; several are listed in `grant_draws`).
    pub grant: Option<GrantId>,
    /// The head this row takes, when the caller's debit moved it (in this
    /// transaction, with nothing appended for the user since).
    pub moved: Option<MovedHead>,
}

impl<'a> NewRow<'a> {
    /// A row that names no job, hold, carry, key or grant; a caller adds
    /// what its row has with struct update syntax.
    pub fn plain(
        user: UserId,
        amount: Credits,
        kind: Kind,
        balance_after: Credits,
        description: &'a str,
        at: Timestamp,
    ) -> Self {
        NewRow {
            user,
            amount,
            kind,
            balance_after,
            job: None,
            hold: None,
            description,
            at,
            micro: None,
            components: None,
            api_key: None,
            grant: None,
            moved: None,
        }
    }
}

/// A metered consume's exact cost and the carry it leaves, in millionths of
/// a credit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Micro {
    pub cost: i64,
    pub carry_after: i64,
}

/// Appends a row at the head of its user's chain, and moves the head on the
/// user's row. Must run inside a write transaction: the head moves with a
/// row lock on PostgreSQL (usually held already: the charge updated the
/// row), so two writers for one user take turns and writers for different
/// users never meet. The id comes from the database as the row is inserted,
/// after the lock, so a user's rows are in id order too. Two round trips on
/// PostgreSQL, as the global chain's head read and insert were; one when
/// the caller's debit moved the head already ([`NewRow::moved`]).
pub fn append(conn: &Conn<'_>, row: &NewRow<'_>) -> Result<Transaction> {
    append_with(conn, row, Vec::new())
}

/// [`append`] with `writes` that read nothing back and that the row does
/// not read (the charge's counters): on PostgreSQL they go in the row's
/// own statement, one round trip for all.
pub fn append_with(conn: &Conn<'_>, row: &NewRow<'_>, mut writes: Vec<Write>) -> Result<Transaction> {
    // The sequence moves first (taking the lock); RETURNING shows the new
    // sequence and the hash it has not been given yet: the previous one.
    // A debit moved it already.
    let (seq, prev_hash): (i64, String) = match &row.moved {
        Some(m) => (m.seq, m.prev_hash.clone()),
        None => conn.query_one(
            "UPDATE users SET chain_seq = chain_seq + 1 WHERE id = ?1 RETURNING chain_seq, chain_hash",
            params![row.user],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?,
    };
    let hash = chain::row_hash(
        &prev_hash,
        &ChainFields {
            id: 0,
            seq: Some(seq),
            user_id: row.user.0,
            amount: row.amount.0,
            kind: row.kind.as_str(),
            balance_after: row.balance_after.0,
            job_id: row.job.map(|j| j.0),
            hold_id: row.hold.map(|h| h.0),
            description: row.description,
            created_at: row.at.0,
            micro: row.micro.map(|m| (m.cost, m.carry_after)),
            components: row.micro.and(row.components),
        },
    );
    // The head's hash is set with the row: on PostgreSQL in the same
    // statement (a data-modifying WITH part, beside `writes`).
    writes.push(Write::of("UPDATE users SET chain_hash = ?2 WHERE id = ?1", params![row.user, hash])?);
    let insert = Write::of(
        "INSERT INTO credit_transactions
         (user_id, amount, kind, balance_after, job_id, hold_id, description, created_at, hash, cost_micro, carry_after,
          api_key_id, grant_id, components, user_seq)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) RETURNING id",
        params![
            row.user,
            row.amount,
            row.kind.as_str(),
            row.balance_after,
            row.job,
            row.hold,
            row.description,
            row.at,
            hash,
            row.micro.map(|m| m.cost),
            row.micro.map(|m| m.carry_after),
            row.api_key,
            row.grant,
            row.micro.and(row.components),
            seq,
        ],
    )?;
    let id: i64 = conn.query_together(&writes, &insert, |r| r.get(0))?;
    Ok(Transaction {
        id: TxnId(id),
        object: "credit_transaction",
        amount: row.amount,
        kind: row.kind,
        balance_after: row.balance_after,
        job_id: row.job,
        hold_id: row.hold,
        description: row.description.to_owned(),
        created_at: row.at,
        cost_micro: row.micro.map(|m| m.cost),
        carry_after_micro: row.micro.map(|m| m.carry_after),
        // Not parsed back inside the writer: the caller has the components
        // it passed (lists read them from the row).
        components: None,
    })
}

/// The user's unbilled fraction of a credit, in millionths.
pub fn carry(conn: &Conn<'_>, user: UserId) -> Result<i64> {
    conn.query_one("SELECT carry_micro FROM users WHERE id = ?1", params![user], |r| r.get(0))
}

fn txn_from_row(r: &Row<'_>) -> Result<Transaction> {
    let kind: String = r.get(2)?;
    Ok(Transaction {
        id: r.get(0)?,
        object: "credit_transaction",
        amount: r.get(1)?,
        kind: Kind::parse(&kind).unwrap_or(Kind::Adjust),
        balance_after: r.get(3)?,
        job_id: r.get(4)?,
        hold_id: r.get(5)?,
        description: r.get(6)?,
        created_at: r.get(7)?,
        cost_micro: r.get(8)?,
        carry_after_micro: r.get(9)?,
        components: r.get::<Option<String>>(10)?.and_then(|c| serde_json::from_str(&c).ok()),
    })
}

const TXN_COLUMNS: &str =
    "id, amount, kind, balance_after, job_id, hold_id, description, created_at, cost_micro, carry_after, components";

pub fn get(conn: &Conn<'_>, id: TxnId) -> Result<Option<Transaction>> {
    conn.query_opt(&format!("SELECT {TXN_COLUMNS} FROM credit_transactions WHERE id = ?1"), params![id], txn_from_row)
}

pub fn list(conn: &Conn<'_>, user: UserId, page: &Page) -> Result<List<Transaction>> {
    let rows = conn.query_all(
        &format!(
            "SELECT {TXN_COLUMNS} FROM credit_transactions WHERE user_id = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3"
        ),
        params![user, page.before_id(), page.fetch()],
        txn_from_row,
    )?;
    Ok(List::from_rows(rows, page))
}

/// SUM over the user's rows (the seed's `getBalance`), and the last row's
/// `balance_after`.
pub fn ledger_sum(conn: &Conn<'_>, user: UserId) -> Result<(Credits, Option<Credits>)> {
    let sum: Credits = conn.query_one(
        "SELECT COALESCE(CAST(SUM(amount) AS BIGINT), 0) FROM credit_transactions WHERE user_id = ?1",
        params![user],
        |r| r.get(0),
    )?;
    let last: Option<Credits> = conn.query_opt(
        "SELECT balance_after FROM credit_transactions WHERE user_id = ?1 ORDER BY id DESC LIMIT 1",
        params![user],
        |r| r.get(0),
    )?;
    Ok((sum, last))
}

pub fn active_held_sum(conn: &Conn<'_>, user: UserId) -> Result<Credits> {
    conn.query_one(
        "SELECT COALESCE(CAST(SUM(amount) AS BIGINT), 0) FROM credit_holds WHERE user_id = ?1 AND status = 'active'",
        params![user],
        |r| r.get(0),
    )
}

/// Adds `delta` (possibly negative) to everyone's spend on `day`, in the
/// user's shard, never below zero (each user's own is on their usage row:
/// `usage::count_spent`).
pub fn global_spent_write(user: UserId, day: i64, delta: Credits) -> Write {
    Write::new(
        Sql::each(
            "INSERT INTO daily_spend_global (day, shard, spent) VALUES (?1, ?3, MAX(?2, 0))
             ON CONFLICT(day, shard) DO UPDATE SET spent = MAX(spent + ?2, 0)",
            "INSERT INTO daily_spend_global (day, shard, spent) VALUES (?1, ?3, GREATEST(?2, 0))
             ON CONFLICT(day, shard) DO UPDATE SET spent = GREATEST(daily_spend_global.spent + ?2, 0)",
        ),
        vec![Value::Integer(day), Value::Integer(delta.0), Value::Integer(crate::domain::total_shard(user))],
    )
}

/// An API key's spend limits and spend (in total, and on `day`).
pub struct KeySpend {
    pub spend_limit: Option<Credits>,
    pub daily_spend_limit: Option<Credits>,
    pub total: Credits,
    pub today: Credits,
}

/// `None` for a key that is gone (revoked since the request began).
pub fn key_spend(conn: &Conn<'_>, key: ApiKeyId, day: i64) -> Result<Option<KeySpend>> {
    conn.query_opt(
        "SELECT k.spend_limit, k.daily_spend_limit, k.spent_total, COALESCE(d.spent, 0)
         FROM api_keys k LEFT JOIN api_key_daily_spend d ON d.api_key_id = k.id AND d.day = ?2
         WHERE k.id = ?1 AND k.revoked_at IS NULL",
        params![key, day],
        |r| Ok(KeySpend { spend_limit: r.get(0)?, daily_spend_limit: r.get(1)?, total: r.get(2)?, today: r.get(3)? }),
    )
}

/// Adds `delta` (possibly negative) to an API key's spend, in total and on
/// `day`.
pub fn key_spent_writes(key: ApiKeyId, day: i64, delta: Credits) -> [Write; 2] {
    [
        Write::new(
            Sql::each(
                "UPDATE api_keys SET spent_total = MAX(spent_total + ?2, 0) WHERE id = ?1",
                "UPDATE api_keys SET spent_total = GREATEST(spent_total + ?2, 0) WHERE id = ?1",
            ),
            vec![Value::Integer(key.0), Value::Integer(delta.0)],
        ),
        Write::new(
            Sql::each(
                "INSERT INTO api_key_daily_spend (api_key_id, day, spent) VALUES (?1, ?2, MAX(?3, 0))
                 ON CONFLICT(api_key_id, day) DO UPDATE SET spent = MAX(spent + ?3, 0)",
                "INSERT INTO api_key_daily_spend (api_key_id, day, spent) VALUES (?1, ?2, GREATEST(?3, 0))
                 ON CONFLICT(api_key_id, day) DO UPDATE SET spent = GREATEST(api_key_daily_spend.spent + ?3, 0)",
            ),
            vec![Value::Integer(key.0), Value::Integer(day), Value::Integer(delta.0)],
        ),
    ]
}

pub fn global_spent_on(conn: &Conn<'_>, day: i64) -> Result<Credits> {
    Ok(conn
        .query_opt("SELECT CAST(SUM(spent) AS BIGINT) FROM daily_spend_global WHERE day = ?1", params![day], |r| {
            r.get::<Option<Credits>>(0)
        })?
        .flatten()
        .unwrap_or(Credits::ZERO))
}

#[derive(Debug, Clone)]
pub struct HoldRow {
    pub id: HoldId,
    pub user: UserId,
    pub amount: Credits,
    pub status: HoldStatus,
    pub job: Option<JobId>,
    pub api_key: Option<ApiKeyId>,
    pub day: i64,
    pub expires_at: Timestamp,
    pub charged: Option<Credits>,
    pub transaction: Option<TxnId>,
}

pub struct NewHold {
    pub user: UserId,
    pub amount: Credits,
    pub job: Option<JobId>,
    pub api_key: Option<ApiKeyId>,
    pub day: i64,
    pub expires_at: Timestamp,
    pub at: Timestamp,
}

pub fn insert_hold(conn: &Conn<'_>, h: &NewHold) -> Result<HoldId> {
    conn.query_one(
        "INSERT INTO credit_holds (user_id, amount, status, job_id, api_key_id, day, expires_at, created_at)
         VALUES (?1, ?2, 'active', ?3, ?4, ?5, ?6, ?7) RETURNING id",
        params![h.user, h.amount, h.job, h.api_key, h.day, h.expires_at, h.at],
        |r| r.get(0),
    )
}

pub fn hold(conn: &Conn<'_>, id: HoldId) -> Result<Option<HoldRow>> {
    conn.query_opt(
        "SELECT id, user_id, amount, status, job_id, day, expires_at, charged, transaction_id, api_key_id
         FROM credit_holds WHERE id = ?1",
        params![id],
        |r| {
            let status: String = r.get(3)?;
            Ok(HoldRow {
                id: r.get(0)?,
                user: r.get(1)?,
                amount: r.get(2)?,
                status: HoldStatus::parse(&status).unwrap_or(HoldStatus::Released),
                job: r.get(4)?,
                day: r.get(5)?,
                expires_at: r.get(6)?,
                charged: r.get(7)?,
                transaction: r.get(8)?,
                api_key: r.get(9)?,
            })
        },
    )
}

/// Closes an active hold (its settle or release), as one write to send
/// with the others the close makes (`Conn::execute_together`).
pub fn close_hold_write(
    id: HoldId,
    status: HoldStatus,
    charged: Option<Credits>,
    txn: Option<TxnId>,
    now: Timestamp,
) -> Result<Write> {
    Write::of(CLOSE_HOLD, params![id, status.as_str(), charged, txn, now])
}

const CLOSE_HOLD: &str = "UPDATE credit_holds SET status = ?2, charged = ?3, transaction_id = ?4, closed_at = ?5
         WHERE id = ?1 AND status = 'active'";

pub fn extend_hold(conn: &Conn<'_>, id: HoldId, until: Timestamp) -> Result<usize> {
    conn.execute(
        Sql::each(
            "UPDATE credit_holds SET expires_at = MAX(expires_at, ?2) WHERE id = ?1 AND status = 'active'",
            "UPDATE credit_holds SET expires_at = GREATEST(expires_at, ?2) WHERE id = ?1 AND status = 'active'",
        ),
        params![id, until],
    )
}

/// Active holds past their expiry, oldest first, at most `limit`.
pub fn due_holds(conn: &Conn<'_>, now: Timestamp, limit: i64) -> Result<Vec<HoldId>> {
    conn.query_all(
        "SELECT id FROM credit_holds WHERE status = 'active' AND expires_at < ?1
           AND (job_id IS NULL OR job_id NOT IN (SELECT id FROM jobs WHERE status IN ('queued', 'processing')))
         ORDER BY expires_at LIMIT ?2",
        params![now, limit],
        |r| r.get(0),
    )
}

/// Active holds not attached to a job: each belonged to a call (chat,
/// images) in flight in this process, so after a restart none is still live.
pub fn unattached_active_holds(conn: &Conn<'_>, limit: i64) -> Result<Vec<HoldId>> {
    conn.query_all(
        "SELECT id FROM credit_holds WHERE status = 'active' AND job_id IS NULL ORDER BY id LIMIT ?1",
        params![limit],
        |r| r.get(0),
    )
}

pub fn count_active_holds(conn: &Conn<'_>) -> Result<i64> {
    conn.query_one("SELECT count(*) FROM credit_holds WHERE status = 'active'", &[], |r| r.get(0))
}

/// A user's caches as stored, for the audit to compare with the walk.
pub struct CachedUser {
    pub id: UserId,
    pub credits: Credits,
    pub held: Credits,
    pub carry_micro: i64,
    /// The head of the user's chain: its sequence number and hash.
    pub chain_seq: i64,
    pub chain_hash: String,
}

/// Everything the audit compares, read in one pass each.
pub struct AuditInput {
    pub users: Vec<CachedUser>,
    pub active_held: Vec<(UserId, Credits)>,
}

pub fn audit_input(conn: &Conn<'_>) -> Result<AuditInput> {
    let users = conn.query_all(
        "SELECT id, credits, held, carry_micro, chain_seq, chain_hash FROM users ORDER BY id",
        &[],
        |r| {
            Ok(CachedUser {
                id: r.get(0)?,
                credits: r.get(1)?,
                held: r.get(2)?,
                carry_micro: r.get(3)?,
                chain_seq: r.get(4)?,
                chain_hash: r.get(5)?,
            })
        },
    )?;
    let active_held = conn.query_all(
        "SELECT user_id, CAST(SUM(amount) AS BIGINT) FROM credit_holds WHERE status = 'active' GROUP BY user_id",
        &[],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok(AuditInput { users, active_held })
}

/// One ledger row as stored, for the chain walk: the fields the chain
/// protects (read through `Deref`, so `row.amount` is the chained amount),
/// its stored hash, and the columns the audit checks outside the chain.
pub struct StoredRow<'a> {
    pub chained: ChainFields<'a>,
    pub hash: &'a str,
    pub api_key_id: Option<i64>,
    pub grant_id: Option<i64>,
}

impl<'a> std::ops::Deref for StoredRow<'a> {
    type Target = ChainFields<'a>;

    fn deref(&self) -> &ChainFields<'a> {
        &self.chained
    }
}

/// The largest ledger row id (0 for an empty ledger).
pub fn last_row_id(conn: &Conn<'_>) -> Result<i64> {
    conn.query_one("SELECT COALESCE(MAX(id), 0) FROM credit_transactions", &[], |r| r.get(0))
}

/// Calls `visit` for every ledger row with `after < id <= through`, in id
/// order, without loading them (and without copying their text: the row
/// borrows the driver's buffers). `visit` must not query: the connection
/// is busy with the stream.
pub fn for_each_row(conn: &Conn<'_>, after: i64, through: i64, mut visit: impl FnMut(&StoredRow<'_>)) -> Result<()> {
    conn.query_each(
        "SELECT id, user_id, amount, kind, balance_after, job_id, hold_id, description, created_at, hash,
                cost_micro, carry_after, api_key_id, grant_id, components, user_seq
         FROM credit_transactions WHERE id > ?1 AND id <= ?2 ORDER BY id",
        params![after, through],
        |r| {
            visit(&StoredRow {
                chained: ChainFields {
                    id: r.get(0)?,
                    seq: r.get(15)?,
                    user_id: r.get(1)?,
                    amount: r.get(2)?,
                    kind: r.get_str(3)?,
                    balance_after: r.get(4)?,
                    job_id: r.get(5)?,
                    hold_id: r.get(6)?,
                    description: r.get_str(7)?,
                    created_at: r.get(8)?,
                    micro: match (r.get::<Option<i64>>(10)?, r.get::<Option<i64>>(11)?) {
                        (Some(cost), Some(carry)) => Some((cost, carry)),
                        _ => None,
                    },
                    components: r.get_opt_str(14)?,
                },
                hash: r.get_str(9)?,
                api_key_id: r.get(12)?,
                grant_id: r.get(13)?,
            });
            Ok(true)
        },
    )
}

/// Active holds whose job has finished: a leak. Closed by job recovery,
/// reported by the audit.
pub fn active_holds_of_finished_jobs(conn: &Conn<'_>) -> Result<Vec<(HoldId, JobId)>> {
    conn.query_all(
        "SELECT h.id, h.job_id FROM credit_holds h JOIN jobs j ON j.id = h.job_id
         WHERE h.status = 'active' AND j.status IN ('completed', 'failed', 'canceled')",
        &[],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
}

/// Per API key: its cached spend, and what its active holds reserve.
pub fn key_spend_audit(conn: &Conn<'_>) -> Result<Vec<(ApiKeyId, i64, i64)>> {
    conn.query_all(
        "SELECT k.id, k.spent_total, COALESCE(h.held, 0) FROM api_keys k
         LEFT JOIN (SELECT api_key_id, CAST(SUM(amount) AS BIGINT) AS held FROM credit_holds
                    WHERE status = 'active' AND api_key_id IS NOT NULL GROUP BY api_key_id) h ON h.api_key_id = k.id",
        &[],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
}

/// The append-only triggers; a tamperer has to drop them first.
/// How many of the ledger's append-only triggers exist, and how many
/// should: SQLite has two (update, delete), PostgreSQL three (and truncate).
pub fn append_only_triggers(conn: &Conn<'_>) -> Result<(i64, i64)> {
    match conn.engine() {
        Engine::Sqlite => conn.query_one(
            "SELECT count(*) FROM sqlite_master WHERE type = 'trigger'
             AND name IN ('credit_transactions_no_update', 'credit_transactions_no_delete')",
            &[],
            |r| Ok((r.get(0)?, 2)),
        ),
        Engine::Postgres => conn.query_one(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'credit_transactions'::regclass AND tgenabled <> 'D'
             AND tgname IN ('credit_transactions_no_update', 'credit_transactions_no_delete',
                            'credit_transactions_no_truncate')",
            &[],
            |r| Ok((r.get(0)?, 3)),
        ),
    }
}
