//! The tamper-evident hash chain over every ledger row, in id order:
//! `hash = SHA-256(prev_hash || canonical row)`. The single writer makes the
//! order total. Editing any stored field of any row changes its hash, and the
//! next row's hash names the old one, so an edit shows up at the edited row.

use sha2::{Digest, Sha256};

/// The `prev_hash` of the first row.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The fields of a row that the chain protects, in a fixed order.
#[derive(Clone, Copy)]
pub struct ChainFields<'a> {
    pub id: i64,
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
}

/// A JSON array is the canonical form: unambiguous for any description text.
/// Rows with a carry append its two numbers, so rows written before V7 keep
/// the hashes they were written with.
pub fn row_hash(prev_hash: &str, f: &ChainFields<'_>) -> String {
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
    }
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(canonical.to_string().as_bytes());
    crate::auth::api_key::hex(&h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_field_change_changes_the_hash() {
        let base = ChainFields {
            id: 1,
            user_id: 2,
            amount: -7,
            kind: "consume",
            balance_after: 3,
            job_id: None,
            hold_id: Some(4),
            description: "x",
            created_at: 5,
            micro: None,
        };
        let h = row_hash(GENESIS_HASH, &base);
        assert_eq!(h.len(), 64);
        assert_ne!(h, row_hash(GENESIS_HASH, &ChainFields { amount: -8, ..base }));
        assert_ne!(h, row_hash(GENESIS_HASH, &ChainFields { description: "y", ..base }));
        assert_ne!(h, row_hash(&h, &base));
        let carried = row_hash(GENESIS_HASH, &ChainFields { micro: Some((45_000, 45_000)), ..base });
        assert_ne!(h, carried);
        assert_ne!(carried, row_hash(GENESIS_HASH, &ChainFields { micro: Some((45_000, 90_000)), ..base }));
    }
}
