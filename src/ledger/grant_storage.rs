//! SQL for credit grants: `credit_grants`, `grant_draws` (which grants paid
//! for which ledger row), `hold_reservations` (what an active hold reserved
//! on which grant) and the `users.next_expiry_at` cache.
//!
//! Nothing here decides what may be drawn; `ledger::grants` does, inside the
//! writer's transaction, before calling these.

use super::grants::{Category, Grant, GrantStatus, NewGrant, Source};
use crate::domain::{Credits, GrantId, HoldId, Timestamp, TxnId, UserId};
use crate::paging::{List, Page};
use crate::storage::{Conn, Row, Sql, StorageError, Write};
use rusqlite::params;

type Result<T> = std::result::Result<T, StorageError>;

/// The draw order as SQL, shared by every query that must follow it.
const DRAW_ORDER: &str = "priority, expires_at IS NULL, expires_at, category = 'paid', id";

const GRANT_COLUMNS: &str = "id, user_id, amount, remaining, reserved, category, priority, effective_at, expires_at,
     voided_at, source, description, external_id, transaction_id, code_id, created_at";

fn grant_from_row(r: &Row<'_>, now: Timestamp) -> Result<Grant> {
    let category: String = r.get(5)?;
    let source: String = r.get(10)?;
    let remaining: Credits = r.get(3)?;
    let expires_at: Option<Timestamp> = r.get(8)?;
    let voided_at: Option<Timestamp> = r.get(9)?;
    Ok(Grant {
        id: r.get(0)?,
        object: "credit_grant",
        user_id: r.get(1)?,
        amount: r.get(2)?,
        remaining,
        held: r.get(4)?,
        category: Category::parse(&category).unwrap_or(Category::Paid),
        priority: r.get(6)?,
        status: GrantStatus::of(remaining, expires_at, voided_at, now),
        effective_at: r.get(7)?,
        expires_at,
        voided_at,
        source: Source::parse(&source).unwrap_or(Source::Admin),
        description: r.get(11)?,
        external_id: r.get(12)?,
        transaction_id: r.get(13)?,
        code_id: r.get(14)?,
        created_at: r.get(15)?,
    })
}

/// Inserts the grant that ledger row `transaction` added, at `at`.
pub fn insert(conn: &Conn<'_>, g: &NewGrant, transaction: TxnId, at: Timestamp) -> Result<GrantId> {
    let id: GrantId = conn.query_one(
        "INSERT INTO credit_grants (user_id, amount, remaining, category, priority, effective_at, expires_at,
             source, description, external_id, code_id, transaction_id, created_at)
         VALUES (?1, ?2, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?5) RETURNING id",
        params![
            g.user,
            g.amount,
            g.category.as_str(),
            g.priority,
            at,
            g.expires_at,
            g.source.as_str(),
            g.description,
            g.external_id,
            g.code,
            transaction,
        ],
        |r| r.get(0),
    )?;
    if let Some(at) = g.expires_at {
        conn.execute(
            Sql::each(
                "UPDATE users SET next_expiry_at = MIN(COALESCE(next_expiry_at, ?2), ?2) WHERE id = ?1",
                "UPDATE users SET next_expiry_at = LEAST(COALESCE(next_expiry_at, ?2), ?2) WHERE id = ?1",
            ),
            params![g.user, at],
        )?;
    }
    Ok(id)
}

pub fn get(conn: &Conn<'_>, id: GrantId, now: Timestamp) -> Result<Option<Grant>> {
    conn.query_opt(&format!("SELECT {GRANT_COLUMNS} FROM credit_grants WHERE id = ?1"), params![id], |r| {
        grant_from_row(r, now)
    })
}

pub fn by_external_id(conn: &Conn<'_>, user: UserId, external_id: &str, now: Timestamp) -> Result<Option<Grant>> {
    conn.query_opt(
        &format!("SELECT {GRANT_COLUMNS} FROM credit_grants WHERE user_id = ?1 AND external_id = ?2"),
        params![user, external_id],
        |r| grant_from_row(r, now),
    )
}

/// The SQL condition for each status filter (`?1` is now).
/// Every condition names `?1` (now), so that PostgreSQL can type it even
/// where it decides nothing.
fn status_condition(status: Option<GrantStatus>) -> &'static str {
    match status {
        None => "CAST(?1 AS BIGINT) IS NOT NULL",
        Some(GrantStatus::Active) => "voided_at IS NULL AND (expires_at IS NULL OR expires_at > ?1) AND remaining > 0",
        Some(GrantStatus::Expired) => "voided_at IS NULL AND expires_at <= ?1",
        Some(GrantStatus::Voided) => "voided_at IS NOT NULL AND CAST(?1 AS BIGINT) IS NOT NULL",
        Some(GrantStatus::Depleted) => {
            "voided_at IS NULL AND (expires_at IS NULL OR expires_at > ?1) AND remaining = 0"
        }
    }
}

/// A user's grants, newest first, optionally of one status.
pub fn list(
    conn: &Conn<'_>,
    user: UserId,
    status: Option<GrantStatus>,
    page: &Page,
    now: Timestamp,
) -> Result<List<Grant>> {
    let sql = format!(
        "SELECT {GRANT_COLUMNS} FROM credit_grants WHERE user_id = ?2 AND id < ?3 AND {}
         ORDER BY id DESC LIMIT ?4",
        status_condition(status)
    );
    let rows = conn.query_all(&sql, params![now, user, page.before_id(), page.fetch()], |r| grant_from_row(r, now))?;
    Ok(List::from_rows(rows, page))
}

/// A user's active grants in draw order, at most `limit`.
pub fn active_in_draw_order(conn: &Conn<'_>, user: UserId, now: Timestamp, limit: i64) -> Result<Vec<Grant>> {
    conn.query_all(
        &format!(
            "SELECT {GRANT_COLUMNS} FROM credit_grants
         WHERE user_id = ?1 AND emptied_at IS NULL AND voided_at IS NULL AND (expires_at IS NULL OR expires_at > ?2)
         ORDER BY {DRAW_ORDER} LIMIT ?3"
        ),
        params![user, now, limit],
        |r| grant_from_row(r, now),
    )
}

/// A grant a charge may draw on: its unreserved credits, and all it has
/// left (to know whether a draw empties it).
#[derive(Debug, Clone, Copy)]
pub struct Spendable {
    pub id: GrantId,
    pub free: Credits,
    pub remaining: Credits,
}

/// The credits a charge may draw on: the user's unexpired, unvoided grants
/// with unreserved credits, in draw order, until `amount` is covered.
pub fn spendable(conn: &Conn<'_>, user: UserId, amount: Credits, now: Timestamp) -> Result<Vec<Spendable>> {
    let mut found = Vec::new();
    if amount.0 <= 0 {
        return Ok(found);
    }
    let mut covered = 0i64;
    conn.query_each(
        &format!(
            "SELECT id, remaining - reserved, remaining FROM credit_grants
             WHERE user_id = ?1 AND emptied_at IS NULL AND remaining > reserved AND voided_at IS NULL
               AND (expires_at IS NULL OR expires_at > ?2)
             ORDER BY {DRAW_ORDER}"
        ),
        params![user, now],
        |r| {
            let free: Credits = r.get(1)?;
            covered += free.0;
            found.push(Spendable { id: r.get(0)?, free, remaining: r.get(2)? });
            Ok(covered < amount.0)
        },
    )?;
    Ok(found)
}

/// The common charge in one statement: takes `amount` from the first grant
/// in draw order when its unreserved credits cover it with some to spare
/// (so it does not empty, and no index entry is rewritten). `None`: the
/// charge needs the general path (several grants, or one it empties).
pub fn take_from_first(conn: &Conn<'_>, user: UserId, amount: Credits, now: Timestamp) -> Result<Option<GrantId>> {
    conn.query_opt(&format!("{} RETURNING id", take_from_first_update()), params![user, amount, now], |r| r.get(0))
}

/// [`take_from_first`]'s statement up to its `RETURNING` (`?1` the user,
/// `?2` the amount, `?3` now), for a statement that adds a condition.
pub(super) fn take_from_first_update() -> String {
    format!(
        "UPDATE credit_grants SET remaining = remaining - ?2
         WHERE id = (SELECT id FROM credit_grants
                     WHERE user_id = ?1 AND emptied_at IS NULL AND remaining > reserved AND voided_at IS NULL
                       AND (expires_at IS NULL OR expires_at > ?3)
                     ORDER BY {DRAW_ORDER} LIMIT 1)
           AND remaining - reserved > ?2"
    )
}

/// Takes `amount` from a grant's remaining credits (a draw or an ending);
/// `empties` when that leaves nothing, which is recorded (and only then is
/// the partial index on `emptied_at` touched).
pub fn take(conn: &Conn<'_>, grant: GrantId, amount: Credits, empties: bool, now: Timestamp) -> Result<()> {
    if empties {
        conn.execute(
            "UPDATE credit_grants SET remaining = remaining - ?2, emptied_at = ?3 WHERE id = ?1",
            params![grant, amount, now],
        )?;
    } else {
        conn.execute("UPDATE credit_grants SET remaining = remaining - ?2 WHERE id = ?1", params![grant, amount])?;
    }
    Ok(())
}

pub fn record_draw(conn: &Conn<'_>, txn: TxnId, grant: GrantId, amount: Credits) -> Result<()> {
    conn.execute(
        "INSERT INTO grant_draws (transaction_id, grant_id, amount) VALUES (?1, ?2, ?3)",
        params![txn, grant, amount],
    )?;
    Ok(())
}

/// A hold's reservation of `amount` on a grant, as writes to send with
/// others (`Conn::execute_together`).
pub fn reserve_writes(hold: HoldId, grant: GrantId, amount: Credits) -> Result<[Write; 2]> {
    Ok([
        Write::of("UPDATE credit_grants SET reserved = reserved + ?2 WHERE id = ?1", params![grant, amount])?,
        Write::of(
            "INSERT INTO hold_reservations (hold_id, grant_id, amount) VALUES (?1, ?2, ?3)",
            params![hold, grant, amount],
        )?,
    ])
}

/// A hold's reservation on one grant, what the grant has left, and whether
/// the grant had ended (voided, or expired) when it was read.
#[derive(Debug, Clone, Copy)]
pub struct Reservation {
    pub grant: GrantId,
    pub amount: Credits,
    pub remaining: Credits,
    pub ended: bool,
}

/// What a hold reserved, in draw order: a settle charges in this order.
pub fn reservations(conn: &Conn<'_>, hold: HoldId, now: Timestamp) -> Result<Vec<Reservation>> {
    conn.query_all(
        &format!(
            "SELECT r.grant_id, r.amount, g.remaining,
                g.voided_at IS NOT NULL OR (g.expires_at IS NOT NULL AND g.expires_at <= ?2)
         FROM hold_reservations r JOIN credit_grants g ON g.id = r.grant_id
         WHERE r.hold_id = ?1 ORDER BY {}",
            DRAW_ORDER.split(", ").map(|c| format!("g.{c}")).collect::<Vec<_>>().join(", ")
        ),
        params![hold, now],
        |r| Ok(Reservation { grant: r.get(0)?, amount: r.get(1)?, remaining: r.get(2)?, ended: r.get(3)? }),
    )
}

/// Ends a hold's reservation on one grant, taking `charged` of it.
pub fn unreserve(conn: &Conn<'_>, r: &Reservation, charged: Credits, now: Timestamp) -> Result<()> {
    if r.remaining == charged {
        conn.execute("UPDATE credit_grants SET reserved = reserved - ?2, remaining = remaining - ?3, emptied_at = ?4 WHERE id = ?1", params![r.grant, r.amount, charged, now])?;
    } else {
        conn.execute(
            "UPDATE credit_grants SET reserved = reserved - ?2, remaining = remaining - ?3 WHERE id = ?1",
            params![r.grant, r.amount, charged],
        )?;
    }
    Ok(())
}

pub fn delete_reservations(conn: &Conn<'_>, hold: HoldId) -> Result<()> {
    conn.execute("DELETE FROM hold_reservations WHERE hold_id = ?1", params![hold])?;
    Ok(())
}

/// A grant's owner, unreserved credits and whether it has ended (voided, or
/// its expiry has come): what an ending would remove.
pub struct Ending {
    pub user: UserId,
    pub unreserved: Credits,
    /// Nothing is reserved: the ending empties the grant.
    pub empties: bool,
    pub voided: bool,
    pub expired: bool,
}

pub fn ending(conn: &Conn<'_>, grant: GrantId, now: Timestamp) -> Result<Option<Ending>> {
    conn.query_opt(
        "SELECT user_id, remaining - reserved, reserved = 0, voided_at IS NOT NULL,
                expires_at IS NOT NULL AND expires_at <= ?2
         FROM credit_grants WHERE id = ?1",
        params![grant, now],
        |r| {
            Ok(Ending {
                user: r.get(0)?,
                unreserved: r.get(1)?,
                empties: r.get(2)?,
                voided: r.get(3)?,
                expired: r.get(4)?,
            })
        },
    )
}

pub fn set_voided(conn: &Conn<'_>, grant: GrantId, now: Timestamp) -> Result<()> {
    conn.execute("UPDATE credit_grants SET voided_at = ?2 WHERE id = ?1 AND voided_at IS NULL", params![grant, now])?;
    Ok(())
}

/// The user's grants whose expiry has come and that still have unreserved
/// credits.
pub fn due_of_user(conn: &Conn<'_>, user: UserId, now: Timestamp) -> Result<Vec<GrantId>> {
    conn.query_all(
        "SELECT id FROM credit_grants
         WHERE user_id = ?1 AND emptied_at IS NULL AND remaining > reserved AND voided_at IS NULL
           AND expires_at IS NOT NULL AND expires_at <= ?2
         ORDER BY expires_at, id",
        params![user, now],
        |r| r.get(0),
    )
}

/// Recomputes the user's `next_expiry_at` cache after an expiry run.
pub fn refresh_next_expiry(conn: &Conn<'_>, user: UserId) -> Result<()> {
    conn.execute(
        "UPDATE users SET next_expiry_at = (SELECT MIN(expires_at) FROM credit_grants
             WHERE user_id = ?1 AND emptied_at IS NULL AND remaining > reserved AND voided_at IS NULL
               AND expires_at IS NOT NULL)
         WHERE id = ?1",
        params![user],
    )?;
    Ok(())
}

/// Users with a grant whose expiry has come and that still has unreserved
/// credits, at most `limit` (the sweeper's batch).
pub fn users_with_due_grants(conn: &Conn<'_>, now: Timestamp, limit: i64) -> Result<Vec<UserId>> {
    conn.query_all(
        "SELECT DISTINCT user_id FROM credit_grants
         WHERE emptied_at IS NULL AND expires_at IS NOT NULL AND expires_at <= ?1
           AND remaining > reserved AND voided_at IS NULL
         LIMIT ?2",
        params![now, limit],
        |r| r.get(0),
    )
}

/// The soonest expiry among the user's active grants and how many credits
/// expire then.
pub fn next_expiry(conn: &Conn<'_>, user: UserId, now: Timestamp) -> Result<Option<(Timestamp, Credits)>> {
    conn.query_opt(
        "SELECT expires_at, CAST(SUM(remaining) AS BIGINT) FROM credit_grants
         WHERE user_id = ?1 AND emptied_at IS NULL AND voided_at IS NULL AND expires_at > ?2
         GROUP BY expires_at ORDER BY expires_at LIMIT 1",
        params![user, now],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
}

/// Everything the audit compares about grants.
pub struct GrantAudit {
    /// Ledger rows from this id on draw on grants (rows before grants
    /// existed do not).
    pub draws_from_txn: i64,
    /// Per grant: id, user, amount, remaining, reserved, expiry, voided,
    /// its `grant` ledger row.
    pub grants: Vec<GrantFacts>,
    /// Per grant: the sum of active holds' reservations on it.
    pub reserved: Vec<(GrantId, Credits)>,
    /// Per active hold: the sum of its reservations.
    pub hold_reserved: Vec<(HoldId, Credits, Credits)>,
}

pub struct GrantFacts {
    pub id: GrantId,
    pub user: UserId,
    pub amount: Credits,
    pub remaining: Credits,
    pub reserved: Credits,
    pub expires_at: Option<Timestamp>,
    pub voided_at: Option<Timestamp>,
    pub transaction: Option<TxnId>,
}

pub fn audit_input(conn: &Conn<'_>) -> Result<GrantAudit> {
    let draws_from_txn = conn
        .query_opt("SELECT value FROM settings WHERE key = 'grants_from_transaction_id'", &[], |r| r.get::<String>(0))?
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let grants = conn.query_all(
        "SELECT id, user_id, amount, remaining, reserved, expires_at, voided_at, transaction_id
             FROM credit_grants ORDER BY id",
        &[],
        |r| {
            Ok(GrantFacts {
                id: r.get(0)?,
                user: r.get(1)?,
                amount: r.get(2)?,
                remaining: r.get(3)?,
                reserved: r.get(4)?,
                expires_at: r.get(5)?,
                voided_at: r.get(6)?,
                transaction: r.get(7)?,
            })
        },
    )?;
    let reserved = conn.query_all(
        "SELECT grant_id, CAST(SUM(amount) AS BIGINT) FROM hold_reservations GROUP BY grant_id",
        &[],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let hold_reserved = conn
        .query_all("SELECT h.id, h.amount, COALESCE((SELECT CAST(SUM(amount) AS BIGINT) FROM hold_reservations r WHERE r.hold_id = h.id), 0)
             FROM credit_holds h WHERE h.status = 'active'", &[], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(GrantAudit { draws_from_txn, grants, reserved, hold_reserved })
}

/// The `grant_draws` rows of ledger rows `after < id <= through` (all of
/// them past the last row when `through` is `i64::MAX`), in ledger-row
/// order, read beside the audit's walk over the same rows:
/// [`DrawCursor::draws_of`] hands out each row's.
pub struct DrawCursor {
    rows: std::vec::IntoIter<(i64, GrantId, Credits)>,
    pending: Option<(i64, GrantId, Credits)>,
}

impl DrawCursor {
    pub fn new(conn: &Conn<'_>, after: i64, through: i64) -> Result<DrawCursor> {
        let rows = conn.query_all(
            "SELECT transaction_id, grant_id, amount FROM grant_draws
             WHERE transaction_id > ?1 AND transaction_id <= ?2 ORDER BY transaction_id",
            params![after, through],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        Ok(DrawCursor { rows: rows.into_iter(), pending: None })
    }

    /// The draws of ledger row `txn` (rows are visited in increasing id
    /// order); draws of skipped rows are returned in `orphans`.
    pub fn draws_of(&mut self, txn: i64, orphans: &mut Vec<i64>) -> Vec<(GrantId, Credits)> {
        let mut out = Vec::new();
        loop {
            let next = self.pending.take().or_else(|| self.rows.next());
            match next {
                Some((t, g, a)) if t == txn => out.push((g, a)),
                Some((t, _, _)) if t < txn => orphans.push(t),
                Some(p) => {
                    self.pending = Some(p);
                    return out;
                }
                None => return out,
            }
        }
    }

    /// Draws left after the walk: of no ledger row.
    pub fn rest(self) -> impl Iterator<Item = i64> {
        self.pending.into_iter().chain(self.rows).map(|(t, _, _)| t)
    }
}
