//! SQL for `redemption_codes` (the grants a redemption makes live in
//! `credit_grants`, written by `ledger::grants`).

use super::{CodeStatus, CodeTerms, RedemptionCode};
use crate::domain::{CodeId, Timestamp, UserId};
use crate::ledger::grants::Category;
use crate::paging::{List, Page};
use crate::storage::Conn;
use rusqlite::{OptionalExtension, Row, params};

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

fn from_row(r: &Row<'_>, now: Timestamp) -> rusqlite::Result<RedemptionCode> {
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

pub fn insert(conn: &Conn<'_>, c: &NewCodeRow<'_>) -> rusqlite::Result<CodeId> {
    let conn = conn.sqlite()?;
    conn.prepare_cached(
        "INSERT INTO redemption_codes (code_hash, code_hint, amount, category, priority, grant_expires_days,
             redeem_by, max_redemptions, description, batch_id, created_by, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?
    .execute(params![
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
    ])?;
    Ok(CodeId(conn.last_insert_rowid()))
}

pub fn get(conn: &Conn<'_>, id: CodeId, now: Timestamp) -> rusqlite::Result<Option<RedemptionCode>> {
    let conn = conn.sqlite()?;
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM redemption_codes WHERE id = ?1"))?
        .query_row([id], |r| from_row(r, now))
        .optional()
}

pub fn by_hash(conn: &Conn<'_>, hash: &str, now: Timestamp) -> rusqlite::Result<Option<RedemptionCode>> {
    let conn = conn.sqlite()?;
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM redemption_codes WHERE code_hash = ?1"))?
        .query_row([hash], |r| from_row(r, now))
        .optional()
}

pub fn list(conn: &Conn<'_>, page: &Page, now: Timestamp) -> rusqlite::Result<List<RedemptionCode>> {
    let conn = conn.sqlite()?;
    let rows = conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM redemption_codes WHERE id < ?1 ORDER BY id DESC LIMIT ?2"))?
        .query_map(params![page.before_id(), page.fetch()], |r| from_row(r, now))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(List::from_rows(rows, page))
}

/// Counts one redemption unless the code is used up; whether it counted.
pub fn count_redemption(conn: &Conn<'_>, id: CodeId) -> rusqlite::Result<bool> {
    let conn = conn.sqlite()?;
    let n = conn
        .prepare_cached(
            "UPDATE redemption_codes SET redemptions = redemptions + 1 WHERE id = ?1 AND redemptions < max_redemptions",
        )?
        .execute([id])?;
    Ok(n == 1)
}

pub fn redeemed_by(conn: &Conn<'_>, id: CodeId, user: UserId) -> rusqlite::Result<bool> {
    let conn = conn.sqlite()?;
    conn.prepare_cached("SELECT 1 FROM credit_grants WHERE code_id = ?1 AND user_id = ?2")?
        .query_row(params![id, user], |_| Ok(()))
        .optional()
        .map(|o| o.is_some())
}

pub fn disable(conn: &Conn<'_>, id: CodeId, now: Timestamp) -> rusqlite::Result<()> {
    let conn = conn.sqlite()?;
    conn.prepare_cached("UPDATE redemption_codes SET disabled_at = ?2 WHERE id = ?1 AND disabled_at IS NULL")?
        .execute(params![id, now])?;
    Ok(())
}
