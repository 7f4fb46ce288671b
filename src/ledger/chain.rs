//! The tamper-evident hash chains over the ledger rows:
//! `hash = SHA-256(prev_hash || canonical row)`. Editing any stored field of
//! any row changes its hash, and the next row's hash names the old one, so
//! an edit shows up at the edited row.
//!
//! Since schema V18 each user has a chain of their own: a row carries the
//! user's sequence number and names the user's previous row, so writes for
//! different users never wait on one chain head. The rows written before
//! stay in the single global chain (id order) they were written in; the
//! first seal (`seal.rs`) pins its head.

use sha2::{Digest, Sha256};

/// The `prev_hash` of the first row.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The fields of a row that the chain protects, in a fixed order.
#[derive(Clone, Copy)]
pub struct ChainFields<'a> {
    /// Chained only in the global chain (rows before V18): a per-user row's
    /// id is handed out by the database as it is inserted.
    pub id: i64,
    /// The row's place in its user's chain (1, 2, ...); `None` for a row of
    /// the global chain.
    pub seq: Option<i64>,
    pub user_id: i64,
    pub amount: i64,
    pub kind: &'a str,
    pub balance_after: i64,
    pub job_id: Option<i64>,
    pub hold_id: Option<i64>,
    pub description: &'a str,
    pub created_at: i64,
    /// A metered consume's exact cost and the user's carry after it, both in
    /// millionths of a credit (migration V7); `None` on every other row.
    pub micro: Option<(i64, i64)>,
    /// What a token-metered row was charged for, as JSON (migration V15):
    /// chained after the carry, so rows without it hash as before.
    pub components: Option<&'a str>,
}

/// A JSON array is the canonical form: unambiguous for any description text.
/// Rows with a carry append its two numbers, so rows written before V7 keep
/// the hashes they were written with.
///
/// The array is serialized straight from a tuple (serde writes a tuple as a
/// JSON array, `None` as `null`): the same bytes as building a JSON value
/// first, without its allocations, which the audit pays once per row.
pub fn row_hash(prev_hash: &str, f: &ChainFields<'_>) -> String {
    let head = (f.id, f.user_id, f.amount, f.kind, f.balance_after, f.job_id, f.hold_id, f.description, f.created_at);
    let mut canonical = Vec::with_capacity(128 + f.description.len());
    // Writing integers, strings and nulls into a Vec cannot fail.
    let written = match (f.seq, f.micro, f.components) {
        // A per-user row: one fixed shape, led by a string so that it can
        // never read as a global row (those lead with the id).
        (Some(seq), micro, parts) => serde_json::to_writer(
            &mut canonical,
            &(
                "u",
                f.user_id,
                seq,
                f.amount,
                f.kind,
                f.balance_after,
                f.job_id,
                f.hold_id,
                f.description,
                f.created_at,
                micro.map(|m| m.0),
                micro.map(|m| m.1),
                micro.and(parts),
            ),
        ),
        (None, micro, parts) => global_form(&mut canonical, &head, micro, parts),
    };
    debug_assert!(written.is_ok());
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(&canonical);
    crate::support::token::hex(&h.finalize())
}

type GlobalHead<'a> = (i64, i64, i64, &'a str, i64, Option<i64>, Option<i64>, &'a str, i64);

/// A global-chain row as it was written: rows with a carry append its two
/// numbers (V7), and then their components (V15).
fn global_form(
    canonical: &mut Vec<u8>,
    head: &GlobalHead<'_>,
    micro: Option<(i64, i64)>,
    parts: Option<&str>,
) -> serde_json::Result<()> {
    match (micro, parts) {
        (None, _) => serde_json::to_writer(canonical, head),
        (Some((cost, carry)), None) => serde_json::to_writer(
            canonical,
            &(head.0, head.1, head.2, head.3, head.4, head.5, head.6, head.7, head.8, cost, carry),
        ),
        (Some((cost, carry)), Some(parts)) => serde_json::to_writer(
            canonical,
            &(head.0, head.1, head.2, head.3, head.4, head.5, head.6, head.7, head.8, cost, carry, parts),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The canonical form as it was first written (a JSON value): every
    /// stored hash was made from these bytes, so the tuple form must match.
    fn row_hash_from_value(prev_hash: &str, f: &ChainFields<'_>) -> String {
        let mut canonical = serde_json::json!([
            f.id,
            f.user_id,
            f.amount,
            f.kind,
            f.balance_after,
            f.job_id,
            f.hold_id,
            f.description,
            f.created_at
        ]);
        if let (Some((cost, carry)), Some(items)) = (f.micro, canonical.as_array_mut()) {
            items.push(cost.into());
            items.push(carry.into());
            if let Some(parts) = f.components {
                items.push(parts.into());
            }
        }
        let mut h = Sha256::new();
        h.update(prev_hash.as_bytes());
        h.update(canonical.to_string().as_bytes());
        crate::support::token::hex(&h.finalize())
    }

    proptest::proptest! {
        #[test]
        fn the_tuple_form_hashes_the_same_bytes_as_the_value_form(
            id in proptest::prelude::any::<i64>(),
            amount in proptest::prelude::any::<i64>(),
            job in proptest::option::of(proptest::prelude::any::<i64>()),
            description in "\\PC{0,40}|[\"\\\\\u{0}-\u{1f}\u{7f}\u{2028}é€😀]{0,12}",
            micro in proptest::option::of((proptest::prelude::any::<i64>(), proptest::prelude::any::<i64>())),
            components in proptest::option::of("\\PC{0,40}"),
        ) {
            let f = ChainFields {
                id,
                seq: None,
                user_id: 7,
                amount,
                kind: "consume",
                balance_after: -amount,
                job_id: job,
                hold_id: None,
                description: &description,
                created_at: 1_700_000_000_000,
                micro,
                components: components.as_deref(),
            };
            proptest::prop_assert_eq!(row_hash(GENESIS_HASH, &f), row_hash_from_value(GENESIS_HASH, &f));
        }
    }

    #[test]
    fn any_field_change_changes_the_hash() {
        let base = ChainFields {
            id: 1,
            seq: None,
            user_id: 2,
            amount: -7,
            kind: "consume",
            balance_after: 3,
            job_id: None,
            hold_id: Some(4),
            description: "x",
            created_at: 5,
            micro: None,
            components: None,
        };
        let h = row_hash(GENESIS_HASH, &base);
        assert_eq!(h.len(), 64);
        assert_ne!(h, row_hash(GENESIS_HASH, &ChainFields { amount: -8, ..base }));
        assert_ne!(h, row_hash(GENESIS_HASH, &ChainFields { description: "y", ..base }));
        assert_ne!(h, row_hash(&h, &base));
        let carried = row_hash(GENESIS_HASH, &ChainFields { micro: Some((45_000, 45_000)), ..base });
        assert_ne!(h, carried);
        assert_ne!(carried, row_hash(GENESIS_HASH, &ChainFields { micro: Some((45_000, 90_000)), ..base }));
        let with = |parts| ChainFields { micro: Some((45_000, 45_000)), components: Some(parts), ..base };
        let priced = row_hash(GENESIS_HASH, &with(r#"{"cost_micro":45000}"#));
        assert_ne!(carried, priced, "the components are chained");
        assert_ne!(priced, row_hash(GENESIS_HASH, &with(r#"{"cost_micro":45001}"#)));
    }

    #[test]
    fn a_per_user_row_chains_its_sequence_and_not_its_id() {
        let base = ChainFields {
            id: 1,
            seq: Some(1),
            user_id: 2,
            amount: -7,
            kind: "consume",
            balance_after: 3,
            job_id: None,
            hold_id: None,
            description: "x",
            created_at: 5,
            micro: None,
            components: None,
        };
        let h = row_hash(GENESIS_HASH, &base);
        assert_eq!(h, row_hash(GENESIS_HASH, &ChainFields { id: 99, ..base }), "the id is not chained");
        assert_ne!(h, row_hash(GENESIS_HASH, &ChainFields { seq: Some(2), ..base }));
        assert_ne!(h, row_hash(GENESIS_HASH, &ChainFields { user_id: 3, ..base }));
        assert_ne!(h, row_hash(GENESIS_HASH, &ChainFields { seq: None, ..base }));
        let metered = |parts| ChainFields { micro: Some((45_000, 45_000)), components: parts, ..base };
        assert_ne!(h, row_hash(GENESIS_HASH, &metered(None)));
        assert_ne!(row_hash(GENESIS_HASH, &metered(None)), row_hash(GENESIS_HASH, &metered(Some("{}"))));
    }
}
