//! Seals over the per-user chains. A user's chain proves their rows are
//! unedited and in order, but a tamperer who rewrites one user's chain
//! from some row on (and the head on their row) leaves it consistent. A
//! seal, written in the background, is a hash over the heads of every
//! user whose chain moved since the previous seal, chained to that seal:
//! rewriting a sealed row changes the head the seal recorded, and
//! rewriting the seals changes the newest seal's hash, which an operator
//! pins (`tollgate audit --expect seal_N:HASH`). The first seal also pins
//! the head of the global chain of the rows written before per-user
//! chains (the genesis), once that chain has been verified.
//!
//! One sealer at a time: SQLite's writer, or an advisory lock on
//! PostgreSQL that a second instance does not wait for. On PostgreSQL a
//! seal runs beside charges: it records the heads one snapshot saw and
//! waits for no user's row, so sealing holds no charge up. This module never repairs a chain; the audit reports what
//! it finds.

use super::chain::{self, GENESIS_HASH};
use super::seal_storage::{self, Head, SealRow};
use super::storage;
use crate::domain::Timestamp;
use crate::error::{Error, Result};
use crate::storage::{Conn, Db};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Heads one seal records at most; a pass writes more seals while users
/// are left (a writer transaction stays short).
pub const SEAL_HEADS_MAX: i64 = 5_000;
/// Rows the genesis check reads per query.
const LEGACY_CHUNK_ROWS: i64 = 50_000;

/// A seal as an operator pins it: `seal_ID:HASH`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct SealRef {
    pub id: i64,
    pub hash: String,
}

/// A seal's hash, fed in the order it is stored: `SHA-256(prev_hash ||
/// [id, created_at, legacy_id, legacy_hash, heads] || each head as
/// [user_id, seq, txn_id, hash], by user id)`. JSON arrays delimit
/// themselves, so no two seals hash the same bytes.
pub struct SealHasher(Sha256);

impl SealHasher {
    pub fn new(prev_hash: &str, id: i64, created_at: i64, legacy: Option<&(i64, String)>, heads: i64) -> SealHasher {
        let mut h = Sha256::new();
        h.update(prev_hash.as_bytes());
        let header = (id, created_at, legacy.map(|l| l.0), legacy.map(|l| l.1.as_str()), heads);
        h.update(serde_json::to_vec(&header).unwrap_or_default());
        SealHasher(h)
    }

    pub fn head(&mut self, head: &Head) {
        let row = (head.user_id, head.seq, head.txn_id, head.hash.as_str());
        self.0.update(serde_json::to_vec(&row).unwrap_or_default());
    }

    pub fn finish(self) -> String {
        crate::support::token::hex(&self.0.finalize())
    }
}

/// Walks the global chain of the rows written before per-user chains and
/// answers its head, or why it does not verify.
pub fn verified_legacy_head(conn: &Conn<'_>) -> Result<Option<(i64, String)>> {
    let Some((last, _)) = seal_storage::legacy_head(conn)? else { return Ok(None) };
    let (mut prev_id, mut prev_hash) = (0i64, GENESIS_HASH.to_owned());
    let mut broken: Option<String> = None;
    let mut after = 0i64;
    while after < last {
        let through = after.saturating_add(LEGACY_CHUNK_ROWS).min(last);
        storage::for_each_row(conn, after, through, |r| {
            if broken.is_some() {
                return;
            }
            if r.seq.is_some() || r.id != prev_id + 1 {
                broken = Some(format!("row {} is out of place in the global chain", r.id));
            } else if chain::row_hash(&prev_hash, &r.chained) != r.hash {
                broken = Some(format!("row {} does not match its hash", r.id));
            }
            prev_id = r.id;
            prev_hash.clear();
            prev_hash.push_str(r.hash);
        })?;
        after = through;
    }
    match broken {
        Some(why) => Err(Error::Internal(format!("the ledger's chain before per-user chains does not verify: {why}"))),
        None => Ok(Some((prev_id, prev_hash))),
    }
}

/// Writes one seal of the heads that moved (at most [`SEAL_HEADS_MAX`]),
/// and answers it with how many heads it holds; `None` when nothing moved
/// or another instance is sealing. `legacy` is the verified head of the
/// global chain, needed only for the first seal.
pub fn seal_once(conn: &Conn<'_>, now: Timestamp, legacy: Option<&(i64, String)>) -> Result<Option<(SealRef, usize)>> {
    if !seal_storage::try_lock(conn)? {
        return Ok(None);
    }
    let last = seal_storage::last(conn)?;
    let genesis = match last {
        Some(_) => None,
        None => {
            let stored = seal_storage::legacy_head(conn)?;
            if stored.as_ref() != legacy {
                return Err(Error::Internal("the ledger's global chain changed since it was verified".into()));
            }
            stored
        }
    };
    let heads = seal_storage::moved_heads(conn, SEAL_HEADS_MAX)?;
    if heads.is_empty() && (last.is_some() || genesis.is_none()) {
        return Ok(None);
    }
    let (id, prev_hash) = match last {
        Some((id, hash)) => (id + 1, hash),
        None => (1, GENESIS_HASH.to_owned()),
    };
    let count = heads.len() as i64;
    let mut hasher = SealHasher::new(&prev_hash, id, now.0, genesis.as_ref(), count);
    for h in &heads {
        hasher.head(h);
    }
    let seal = SealRow { id, created_at: now.0, legacy: genesis, heads: count, prev_hash, hash: hasher.finish() };
    seal_storage::insert(conn, &seal, &heads)?;
    seal_storage::mark_sealed(conn, &heads)?;
    Ok(Some((SealRef { id, hash: seal.hash }, heads.len())))
}

/// Seals every head that moved; answers the newest seal written. The first
/// time (no seal yet) the global chain of older rows is verified once, and
/// nothing is sealed while it does not verify.
pub fn seal_all(db: &Db) -> Result<Option<SealRef>> {
    let legacy = match db.read(seal_storage::last)? {
        Some(_) => None,
        None => db.read_unbounded(verified_legacy_head)?,
    };
    let mut newest = None;
    loop {
        let legacy = legacy.clone();
        let written = db.write_rows(move |c| seal_once(c, Timestamp::now(), legacy.as_ref()))?;
        match written {
            Some((seal, heads)) => {
                newest = Some(seal);
                if (heads as i64) < SEAL_HEADS_MAX {
                    return Ok(newest);
                }
            }
            None => return Ok(newest),
        }
    }
}
