//! Redemption codes: an admin mints a batch of codes worth credits; a user
//! redeems one into a credit grant.
//!
//! A code is `TG-` and 20 characters of Crockford base32 in groups of five
//! (100 random bits), typed by a human, so input is forgiving: any case,
//! dashes and spaces ignored, O read as 0, I and L as 1. Only its SHA-256 is
//! stored (as for API keys: 100 random bits leave nothing to guess, so a
//! fast hash is right), plus its last four characters as a hint for admins.
//! Each code is redeemed at most `max_redemptions` times and at most once per
//! user: the count is a conditional UPDATE in the writer's transaction, and a
//! unique index on (code, user) over the grants backs the second rule.
//! Guessing is slowed by the guard (failed redemptions per user and per IP).
//! This module never talks HTTP.

pub mod storage;

use crate::domain::{CodeId, Credits, Timestamp, UserId};
use crate::error::redemption::Refusal;
use crate::error::{Error, Result};
use crate::ledger::grants::{self, Category, Grant, NewGrant, Source};
use crate::logs::{self, NewLog};
use crate::paging::{List, Page};
use crate::storage::Conn;
use crate::support::token::{hex, random_bytes};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};

/// Codes minted in one call.
pub const CODES_PER_BATCH_MAX: i64 = 1_000;
/// Redemptions one code may allow.
pub const REDEMPTIONS_PER_CODE_MAX: i64 = 1_000_000;
/// A grant made by a code expires at most this many days after redemption.
pub const GRANT_EXPIRES_DAYS_MAX: i64 = 3_650;
/// The characters after `TG`; 32 symbols = 5 bits each.
const CODE_CHARS: usize = 20;
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const MS_PER_DAY: i64 = 86_400_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CodeStatus {
    Active,
    Disabled,
    Expired,
    UsedUp,
}

impl CodeStatus {
    pub fn of(
        disabled_at: Option<Timestamp>,
        redeem_by: Option<Timestamp>,
        redemptions: i64,
        max_redemptions: i64,
        now: Timestamp,
    ) -> CodeStatus {
        if disabled_at.is_some() {
            CodeStatus::Disabled
        } else if redeem_by.is_some_and(|at| at <= now) {
            CodeStatus::Expired
        } else if redemptions >= max_redemptions {
            CodeStatus::UsedUp
        } else {
            CodeStatus::Active
        }
    }
}

/// A code as the API shows it; `code` only in the answer that minted it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct RedemptionCode {
    pub id: CodeId,
    pub object: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The code's last four characters, to recognise it.
    pub hint: String,
    #[serde(flatten)]
    pub terms: CodeTerms,
    pub redemptions: i64,
    pub status: CodeStatus,
    /// Shared by the codes minted in one call.
    pub batch_id: String,
    pub created_at: Timestamp,
    pub disabled_at: Option<Timestamp>,
}

/// What a code is worth and how long and often it may be redeemed.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CodeTerms {
    pub amount: Credits,
    pub category: Category,
    pub priority: i64,
    /// The grant a redemption makes expires this many days later (null =
    /// never).
    pub grant_expires_days: Option<i64>,
    pub redeem_by: Option<Timestamp>,
    pub max_redemptions: i64,
    pub description: String,
}

/// A batch to mint, already validated.
#[derive(Debug, Clone)]
pub struct NewCodes {
    pub count: i64,
    pub terms: CodeTerms,
}

/// `TG-XXXXX-XXXXX-XXXXX-XXXXX` from 20 random symbols.
fn generate() -> Result<String> {
    let bytes = random_bytes::<CODE_CHARS>()?;
    let mut s = String::from("TG");
    for (i, b) in bytes.iter().enumerate() {
        if i % 5 == 0 {
            s.push('-');
        }
        s.push(char::from(ALPHABET[usize::from(b & 31)]));
    }
    Ok(s)
}

/// The 20 symbols of a code as a human typed it, or `None` if it cannot be
/// one.
pub fn normalize(typed: &str) -> Option<String> {
    let mut s: String = typed
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| match c.to_ascii_uppercase() {
            'O' => '0',
            'I' | 'L' => '1',
            c => c,
        })
        .collect();
    if s.len() == CODE_CHARS + 2 && s.starts_with("TG") {
        s.drain(..2);
    }
    (s.len() == CODE_CHARS && s.bytes().all(|b| ALPHABET.contains(&b))).then_some(s)
}

fn hash(symbols: &str) -> String {
    hex(&Sha256::digest(format!("TG{symbols}").as_bytes()))
}

/// Mints a batch in one transaction; the codes are in the answer only.
pub fn mint(conn: &Conn<'_>, by: UserId, c: &NewCodes) -> Result<Vec<RedemptionCode>> {
    let now = Timestamp::now();
    let batch_id = format!("batch_{}", hex(&random_bytes::<8>()?));
    let mut out = Vec::with_capacity(c.count as usize);
    for _ in 0..c.count {
        let code = generate()?;
        let symbols = normalize(&code).ok_or_else(|| Error::Internal("a minted code does not parse".into()))?;
        let id = storage::insert(
            conn,
            &storage::NewCodeRow {
                hash: &hash(&symbols),
                hint: &symbols[CODE_CHARS - 4..],
                terms: &c.terms,
                batch_id: &batch_id,
                created_by: by,
                at: now,
            },
        )?;
        let mut minted =
            storage::get(conn, id, now)?.ok_or_else(|| Error::Internal("a minted code vanished".into()))?;
        minted.code = Some(code);
        out.push(minted);
    }
    logs::write(
        conn,
        &NewLog::business(
            by,
            "codes_minted",
            true,
            json!({ "batch_id": batch_id, "count": c.count, "amount": c.terms.amount }),
        ),
    )?;
    Ok(out)
}

pub fn list(conn: &Conn<'_>, page: &Page) -> Result<List<RedemptionCode>> {
    Ok(storage::list(conn, page, Timestamp::now())?)
}

pub fn disable(conn: &Conn<'_>, id: CodeId) -> Result<RedemptionCode> {
    let now = Timestamp::now();
    storage::disable(conn, id, now)?;
    storage::get(conn, id, now)?.ok_or_else(|| Error::not_found("redemption code"))
}

/// Redeems a typed code for `user`: a grant with the code's terms. Runs in
/// the writer, so the checks and the count are one atomic step.
pub fn redeem(conn: &Conn<'_>, user: UserId, typed: &str) -> std::result::Result<Grant, RedeemError> {
    let now = Timestamp::now();
    let symbols = normalize(typed).ok_or(RedeemError::Refused(Refusal::Invalid))?;
    let code = storage::by_hash(conn, &hash(&symbols), now)?.ok_or(RedeemError::Refused(Refusal::Invalid))?;
    match code.status {
        CodeStatus::Disabled => return Err(RedeemError::Refused(Refusal::Invalid)),
        CodeStatus::Expired => return Err(RedeemError::Refused(Refusal::Expired)),
        CodeStatus::UsedUp | CodeStatus::Active => {}
    }
    if storage::redeemed_by(conn, code.id, user)? {
        return Err(RedeemError::Refused(Refusal::AlreadyRedeemed));
    }
    if !storage::count_redemption(conn, code.id)? {
        return Err(RedeemError::Refused(Refusal::UsedUp));
    }
    let t = &code.terms;
    let description =
        if t.description.is_empty() { format!("redemption code {}", code.id) } else { t.description.clone() };
    let (grant, _) = grants::create_at(
        conn,
        &NewGrant {
            user,
            amount: t.amount,
            category: t.category,
            priority: t.priority,
            expires_at: t.grant_expires_days.map(|d| now.plus_ms(d * MS_PER_DAY)),
            source: Source::Code,
            description,
            external_id: None,
            code: Some(code.id),
        },
        now,
    )?;
    Ok(grant)
}

/// A redemption's failure: refused (a client error the guard may count) or
/// an error of ours.
#[derive(Debug)]
pub enum RedeemError {
    Refused(Refusal),
    Failed(Error),
}

impl From<Error> for RedeemError {
    fn from(e: Error) -> Self {
        RedeemError::Failed(e)
    }
}

impl From<crate::storage::StorageError> for RedeemError {
    fn from(e: crate::storage::StorageError) -> Self {
        RedeemError::Failed(e.into())
    }
}

impl From<rusqlite::Error> for RedeemError {
    fn from(e: rusqlite::Error) -> Self {
        RedeemError::Failed(e.into())
    }
}

impl From<RedeemError> for Error {
    fn from(e: RedeemError) -> Self {
        match e {
            RedeemError::Refused(r) => Error::Redemption(r),
            RedeemError::Failed(e) => e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_typable_and_normalize_forgivingly() {
        let code = generate().unwrap();
        assert_eq!(code.len(), 2 + 4 * 6);
        let symbols = normalize(&code).unwrap();
        assert_eq!(normalize(&code.to_lowercase()), Some(symbols.clone()));
        assert_eq!(normalize(&code.replace('-', " ")), Some(symbols.clone()));
        assert_eq!(normalize(&symbols), Some(symbols.clone()), "the TG- prefix is optional");
        assert_eq!(normalize("TG-0OIL1-00000-00000-00000"), Some("00111000000000000000".into()));
        assert_eq!(normalize("TG-UUUUU-00000-00000-00000"), None, "U is not in the alphabet");
        assert_eq!(normalize("TG-00000-00000-00000"), None);
        assert_ne!(generate().unwrap(), code);
    }
}
