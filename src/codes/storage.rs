//! SQL for `redemption_codes` (the grants a redemption makes live in
//! `credit_grants`, written by `ledger::grants`).

use super::{CodeStatus, CodeTerms, RedemptionCode};
use crate::domain::{CodeId, Timestamp, UserId};
use crate::ledger::grants::Category;
use crate::paging::{List, Page};
use crate::storage::{Conn, Row, StorageError};
use rusqlite::params;

type Result<T> = std::result::Result<T, StorageError>;

const COLUMNS: &str = "id, code_hint, amount, category, priority, grant_expires_days, redeem_by, max_redemptions,
     redemptions, description, batch_id, created_at, disabled_at";

pub struct NewCodeRow<'a> {
    pub hash: &'a str,
    pub hint: &'a str,
    pub terms: &'a CodeTerms,
    pub batch_id: &'a str,
    pub created_by: UserId,
    pub at: Timestamp,
}

fn from_row(r: &Row<'_>, now: Timestamp) -> Result<RedemptionCode> {
    let category: String = r.get(3)?;
    let redeem_by: Option<Timestamp> = r.get(6)?;
    let max_redemptions: i64 = r.get(7)?;
    let redemptions: i64 = r.get(8)?;
    let disabled_at: Option<Timestamp> = r.get(12)?;
    Ok(RedemptionCode {
        id: r.get(0)?,
        object: "redemption_code",
        code: None,
        hint: r.get(1)?,
        terms: CodeTerms {
            amount: r.get(2)?,
            category: Category::parse(&category).unwrap_or(Category::Promotional),
            priority: r.get(4)?,
            grant_expires_days: r.get(5)?,
            redeem_by,
            max_redemptions,
            description: r.get(9)?,
        },
        redemptions,
        status: CodeStatus::of(disabled_at, redeem_by, redemptions, max_redemptions, now),
        batch_id: r.get(10)?,
        created_at: r.get(11)?,
        disabled_at,
    })
}

pub fn insert(conn: &Conn<'_>, c: &NewCodeRow<'_>) -> Result<CodeId> {
    conn.query_one(
        "INSERT INTO redemption_codes (code_hash, code_hint, amount, category, priority, grant_expires_days,
             redeem_by, max_redemptions, description, batch_id, created_by, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) RETURNING id",
        params![
            c.hash,
            c.hint,
            c.terms.amount,
            c.terms.category.as_str(),
            c.terms.priority,
            c.terms.grant_expires_days,
            c.terms.redeem_by,
            c.terms.max_redemptions,
            c.terms.description,
            c.batch_id,
            c.created_by,
            c.at,
        ],
        |r| r.get(0),
    )
}

pub fn get(conn: &Conn<'_>, id: CodeId, now: Timestamp) -> Result<Option<RedemptionCode>> {
    conn.query_opt(&format!("SELECT {COLUMNS} FROM redemption_codes WHERE id = ?1"), params![id], |r| from_row(r, now))
}

pub fn by_hash(conn: &Conn<'_>, hash: &str, now: Timestamp) -> Result<Option<RedemptionCode>> {
    conn.query_opt(&format!("SELECT {COLUMNS} FROM redemption_codes WHERE code_hash = ?1"), params![hash], |r| {
        from_row(r, now)
    })
}

pub fn list(conn: &Conn<'_>, page: &Page, now: Timestamp) -> Result<List<RedemptionCode>> {
    let rows = conn.query_all(
        &format!("SELECT {COLUMNS} FROM redemption_codes WHERE id < ?1 ORDER BY id DESC LIMIT ?2"),
        params![page.before_id(), page.fetch()],
        |r| from_row(r, now),
    )?;
    Ok(List::from_rows(rows, page))
}

/// Counts one redemption unless the code is used up; whether it counted.
pub fn count_redemption(conn: &Conn<'_>, id: CodeId) -> Result<bool> {
    let n = conn.execute(
        "UPDATE redemption_codes SET redemptions = redemptions + 1 WHERE id = ?1 AND redemptions < max_redemptions",
        params![id],
    )?;
    Ok(n == 1)
}

pub fn redeemed_by(conn: &Conn<'_>, id: CodeId, user: UserId) -> Result<bool> {
    conn.query_opt("SELECT 1 FROM credit_grants WHERE code_id = ?1 AND user_id = ?2", params![id, user], |_| Ok(()))
        .map(|o| o.is_some())
}

pub fn disable(conn: &Conn<'_>, id: CodeId, now: Timestamp) -> Result<()> {
    conn.execute(
        "UPDATE redemption_codes SET disabled_at = ?2 WHERE id = ?1 AND disabled_at IS NULL",
        params![id, now],
    )?;
    Ok(())
}
