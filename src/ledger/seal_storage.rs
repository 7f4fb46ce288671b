//! SQL for the seals: `ledger_seals`, `ledger_seal_heads`, and the chain
//! heads on `users` (`chain_seq`, `chain_hash`, `sealed_seq`).
//!
//! Nothing here hashes or decides; `seal.rs` does, and the audit reads
//! through these.

use crate::storage::sql::{dyn_params, values_list};
use crate::storage::{Conn, Engine, StorageError};
use rusqlite::params;
use rusqlite::types::Value;

type Result<T> = std::result::Result<T, StorageError>;

/// The seal lock's key on PostgreSQL ("tgseal"): one sealer at a time
/// across instances, never waited for (a busy sealer means a seal is being
/// written now).
const SEAL_LOCK_KEY: i64 = 0x7467_7365_616c;
/// Heads per INSERT (5 parameters each, far below PostgreSQL's limit).
const HEADS_PER_STATEMENT_MAX: usize = 500;

/// One user's chain head as a seal records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub user_id: i64,
    pub seq: i64,
    pub txn_id: i64,
    pub hash: String,
}

/// A seal as stored.
#[derive(Debug, Clone)]
pub struct SealRow {
    pub id: i64,
    pub created_at: i64,
    pub legacy: Option<(i64, String)>,
    pub heads: i64,
    pub prev_hash: String,
    pub hash: String,
}

/// Takes the sealer's lock for this transaction; `false` when another
/// instance holds it. SQLite's single writer is the lock there.
pub fn try_lock(conn: &Conn<'_>) -> Result<bool> {
    match conn.engine() {
        Engine::Sqlite => Ok(true),
        Engine::Postgres => {
            conn.query_one("SELECT pg_try_advisory_xact_lock(?1)", params![SEAL_LOCK_KEY], |r| r.get(0))
        }
    }
}

/// The newest seal's id and hash.
pub fn last(conn: &Conn<'_>) -> Result<Option<(i64, String)>> {
    conn.query_opt("SELECT id, hash FROM ledger_seals ORDER BY id DESC LIMIT 1", &[], |r| Ok((r.get(0)?, r.get(1)?)))
}

/// The last row of the global chain (rows written before per-user chains).
pub fn legacy_head(conn: &Conn<'_>) -> Result<Option<(i64, String)>> {
    conn.query_opt(
        "SELECT id, hash FROM credit_transactions WHERE user_seq IS NULL ORDER BY id DESC LIMIT 1",
        &[],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
}

/// The heads of up to `limit` users whose chains moved since the last
/// seal, by user id, as one snapshot saw them: a user's head (the
/// sequence and hash on their row, and their last ledger row) is written
/// in one transaction, so a snapshot never sees half of one. Nothing is
/// locked: a head that moves after the snapshot is sealed next time.
pub fn moved_heads(conn: &Conn<'_>, limit: i64) -> Result<Vec<Head>> {
    // The head's row is the user's last by id (a user's rows are numbered
    // in id order), found through the per-user index.
    conn.query_all(
        "SELECT u.id, u.chain_seq,
                (SELECT t.id FROM credit_transactions t WHERE t.user_id = u.id ORDER BY t.id DESC LIMIT 1),
                u.chain_hash
         FROM users u WHERE u.chain_seq > u.sealed_seq ORDER BY u.id LIMIT ?1",
        params![limit],
        |r| Ok(Head { user_id: r.get(0)?, seq: r.get(1)?, txn_id: r.get(2)?, hash: r.get(3)? }),
    )
}

/// Records that `heads` are sealed: each user's `sealed_seq` becomes the
/// sequence sealed (a user who moved since stays moved). On PostgreSQL a
/// user whose row is locked elsewhere (a charge in flight, an operator's
/// transaction) is skipped, not waited for: they stay moved, and the next
/// seal records their head again.
pub fn mark_sealed(conn: &Conn<'_>, heads: &[Head]) -> Result<()> {
    for chunk in heads.chunks(HEADS_PER_STATEMENT_MAX) {
        let ids = id_list(chunk.iter().map(|h| h.user_id));
        match conn.engine() {
            // The writer is the only one: nothing moved since the read.
            Engine::Sqlite => conn.execute(
                "UPDATE users SET sealed_seq = chain_seq WHERE id IN (SELECT value FROM json_each('[' || ?1 || ']'))",
                params![ids],
            )?,
            Engine::Postgres => conn.execute(
                "UPDATE users u SET sealed_seq = h.seq
                 FROM (SELECT unnest(string_to_array(?1, ',')::bigint[]) AS id,
                              unnest(string_to_array(?2, ',')::bigint[]) AS seq) h
                 WHERE u.id = h.id AND u.sealed_seq < h.seq
                   AND u.id IN (SELECT id FROM users WHERE id = ANY(string_to_array(?1, ',')::bigint[])
                                FOR UPDATE SKIP LOCKED)",
                params![ids, id_list(chunk.iter().map(|h| h.seq))],
            )?,
        };
    }
    Ok(())
}

/// Numbers as one parameter ("1,2,3"): one statement for any count.
fn id_list(ids: impl Iterator<Item = i64>) -> String {
    ids.map(|i| i.to_string()).collect::<Vec<_>>().join(",")
}

/// Inserts a seal and its heads.
pub fn insert(conn: &Conn<'_>, seal: &SealRow, heads: &[Head]) -> Result<()> {
    conn.execute(
        "INSERT INTO ledger_seals (id, created_at, legacy_id, legacy_hash, heads, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            seal.id,
            seal.created_at,
            seal.legacy.as_ref().map(|l| l.0),
            seal.legacy.as_ref().map(|l| l.1.as_str()),
            seal.heads,
            seal.prev_hash,
            seal.hash
        ],
    )?;
    for chunk in heads.chunks(HEADS_PER_STATEMENT_MAX) {
        let sql = format!(
            "INSERT INTO ledger_seal_heads (seal_id, user_id, seq, txn_id, hash) VALUES {}",
            values_list(chunk.len(), 5)
        );
        let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * 5);
        for h in chunk {
            values.extend([
                Value::Integer(seal.id),
                Value::Integer(h.user_id),
                Value::Integer(h.seq),
                Value::Integer(h.txn_id),
                Value::Text(h.hash.clone()),
            ]);
        }
        conn.execute(&sql, &dyn_params(&values))?;
    }
    Ok(())
}

/// Every seal, in id order.
pub fn all(conn: &Conn<'_>) -> Result<Vec<SealRow>> {
    conn.query_all(
        "SELECT id, created_at, legacy_id, legacy_hash, heads, prev_hash, hash FROM ledger_seals ORDER BY id",
        &[],
        |r| {
            let legacy = match (r.get::<Option<i64>>(2)?, r.get::<Option<String>>(3)?) {
                (Some(id), Some(hash)) => Some((id, hash)),
                _ => None,
            };
            Ok(SealRow {
                id: r.get(0)?,
                created_at: r.get(1)?,
                legacy,
                heads: r.get(4)?,
                prev_hash: r.get(5)?,
                hash: r.get(6)?,
            })
        },
    )
}

/// Calls `visit` with every seal head, by seal then user (the order the
/// seal's hash covers them in), without loading them all.
pub fn for_each_head(conn: &Conn<'_>, mut visit: impl FnMut(i64, Head)) -> Result<()> {
    conn.query_each(
        "SELECT seal_id, user_id, seq, txn_id, hash FROM ledger_seal_heads ORDER BY seal_id, user_id",
        &[],
        |r| {
            visit(r.get(0)?, Head { user_id: r.get(1)?, seq: r.get(2)?, txn_id: r.get(3)?, hash: r.get(4)? });
            Ok(true)
        },
    )
}

/// The seal heads that name a ledger row with `after < id <= through`.
pub fn heads_naming(conn: &Conn<'_>, after: i64, through: i64) -> Result<Vec<(i64, Head)>> {
    conn.query_all(
        "SELECT seal_id, user_id, seq, txn_id, hash FROM ledger_seal_heads WHERE txn_id > ?1 AND txn_id <= ?2",
        params![after, through],
        |r| Ok((r.get(0)?, Head { user_id: r.get(1)?, seq: r.get(2)?, txn_id: r.get(3)?, hash: r.get(4)? })),
    )
}
