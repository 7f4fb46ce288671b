//! `Idempotency-Key` records: claim a key, then either store the first 2xx
//! response or drop the claim.
//!
//! The response is stored *in the same transaction* as the effect it reports
//! (see `http::Ctx::commit`), so after a crash either both exist and a retry
//! replays, or neither does and a retry runs again: never a double effect.
//! Claims still `in_progress` at startup belong to a dead process whose effect
//! was never committed, so they are cleared.

pub mod storage;

use crate::domain::{Timestamp, UserId};
use crate::error::{Error, Result};
use crate::storage::Conn;
use crate::storage::Db;

/// How long a stored response is replayed.
pub const IDEMPOTENCY_TTL_MS: i64 = 24 * 3_600_000;
/// Keys are opaque client strings; this bounds what we store per key.
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 255;

/// A claim on a key, held while the request runs.
#[derive(Debug, Clone)]
pub struct Token {
    pub user: UserId,
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

#[derive(Debug)]
pub enum Claim {
    /// First use: run the request.
    Fresh(Token),
    /// Same key and body as a finished request: send this back.
    Replay(StoredResponse),
    /// Same key while the first request still runs.
    InProgress,
    /// Same key with a different request.
    Reused,
}

pub fn parse_key(raw: &str) -> Result<String> {
    if raw.is_empty() || raw.len() > IDEMPOTENCY_KEY_BYTES_MAX || !raw.bytes().all(|b| (0x21..0x7f).contains(&b)) {
        return Err(Error::invalid(
            "Idempotency-Key",
            format!(
                "Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_BYTES_MAX} visible ASCII characters (a UUID is ideal)"
            ),
        ));
    }
    Ok(raw.to_owned())
}

pub fn begin(db: &Db, user: UserId, key: String, fingerprint: String) -> Result<Claim> {
    // A claim lost in a power cut is one startup would clear anyway. Keys
    // are the user's own: the claim locks that user alone (on PostgreSQL,
    // beside other users' writes), which makes its read-then-claim exact.
    db.write_lazy_for_user(Some(user), move |c| {
        let now = Timestamp::now();
        let fresh_after = now.plus_ms(-IDEMPOTENCY_TTL_MS);
        match storage::get(c, user, &key)? {
            Some(row) if row.created_at >= fresh_after => {
                if row.fingerprint != fingerprint {
                    return Ok(Claim::Reused);
                }
                Ok(match row.response {
                    Some(r) => Claim::Replay(r),
                    None => Claim::InProgress,
                })
            }
            _ => {
                storage::claim(c, user, &key, &fingerprint, now)?;
                Ok(Claim::Fresh(Token { user, key: key.clone() }))
            }
        }
    })
}

/// Stores the response inside the transaction that made the effect.
pub fn complete(conn: &Conn<'_>, token: &Token, response: &StoredResponse) -> Result<()> {
    Ok(storage::complete(conn, token.user, &token.key, response)?)
}

/// Drops a claim whose request failed: failures are not stored, so a retry
/// after a top-up can succeed.
pub fn abandon(db: &Db, token: Token) {
    if let Err(e) = db.write_for_user(Some(token.user), move |c| {
        Ok::<_, Error>(storage::delete_in_progress(c, token.user, &token.key)?)
    }) {
        log::error!("could not drop an idempotency claim: {e}");
    }
}

/// At startup: claims left by a process that died mid-request.
pub fn clear_in_progress(db: &Db) -> Result<usize> {
    db.write(|c| Ok(storage::delete_all_in_progress(c)?))
}

/// Longer than any request runs (the slowest are streamed chats, bounded by
/// the providers' timeouts): a claim this old belongs to a dead process.
pub const CLAIM_STALE_MS: i64 = 3_600_000;

/// With several instances (PostgreSQL): claims older than
/// [`CLAIM_STALE_MS`], left by an instance that died mid-request. Younger
/// claims may be another instance's request in flight: a retry meanwhile
/// gets `request_in_progress`, never a second effect.
pub fn clear_stale_in_progress(db: &Db) -> Result<usize> {
    let before = Timestamp::now().plus_ms(-CLAIM_STALE_MS);
    // Written only when there is one: an idle pass must not hold up the
    // charges (see `ledger::sweep`).
    if !db.read(|c| storage::any_in_progress_before(c, before))? {
        return Ok(0);
    }
    db.write(move |c| Ok(storage::delete_in_progress_before(c, before)?))
}

/// Records deleted per writer transaction when pruning.
pub const PRUNE_BATCH_MAX: usize = 5_000;

pub fn prune(db: &Db) -> Result<usize> {
    prune_before(db, Timestamp::now().plus_ms(-IDEMPOTENCY_TTL_MS), PRUNE_BATCH_MAX)
}

fn prune_before(db: &Db, cutoff: Timestamp, batch: usize) -> Result<usize> {
    db.write_in_batches(batch, move |c, n| Ok(storage::delete_before(c, cutoff, n)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Email, Role};

    #[test]
    fn prune_deletes_only_expired_records_in_bounded_batches() {
        for (_dir, db) in crate::storage::test_engines() {
            let cutoff = Timestamp(1_000_000);
            let email = Email::parse("a@example.com").unwrap();
            db.write(move |c| {
                let u = crate::users::storage::insert(c, &email, "x", Role::User, Timestamp(1))?.expect("a new user");
                for i in 0..12 {
                    storage::claim(c, u, &format!("old{i}"), "f", Timestamp(cutoff.0 - 100 + i))?;
                }
                storage::claim(c, u, "new1", "f", cutoff)?;
                storage::claim(c, u, "new2", "f", Timestamp(cutoff.0 + 5))?;
                Ok::<_, Error>(())
            })
            .unwrap();
            assert_eq!(prune_before(&db, cutoff, 5).unwrap(), 12, "5 + 5 + 2");
            let left: i64 =
                db.read(|c| c.query_one("SELECT count(*) FROM idempotency_keys", &[], |r| r.get(0))).unwrap();
            assert_eq!(left, 2);
        }
    }

    #[test]
    fn a_claim_completes_reads_back_and_a_new_claim_replaces_it_on_both_engines() {
        for (_dir, db) in crate::storage::test_engines() {
            let email = Email::parse("b@example.com").unwrap();
            let u = db
                .write(move |c| {
                    Ok::<_, Error>(crate::users::storage::insert(c, &email, "x", Role::User, Timestamp(1))?)
                })
                .unwrap()
                .expect("a new user");
            let done = StoredResponse { status: 201, content_type: "application/json".into(), body: b"{}".to_vec() };
            let stored = done.clone();
            db.write(move |c| {
                storage::claim(c, u, "k", "f1", Timestamp(1))?;
                storage::complete(c, u, "k", &stored)
            })
            .unwrap();
            let row = db.read(|c| storage::get(c, u, "k")).unwrap().expect("the record");
            assert_eq!((row.fingerprint.as_str(), row.created_at, row.response), ("f1", Timestamp(1), Some(done)));
            db.write(move |c| storage::claim(c, u, "k", "f2", Timestamp(2))).unwrap();
            let row = db.read(|c| storage::get(c, u, "k")).unwrap().expect("the new claim");
            assert_eq!((row.fingerprint.as_str(), row.response), ("f2", None));
            assert_eq!(db.write(move |c| storage::delete_in_progress(c, u, "k")).unwrap(), 1);
        }
    }
}
