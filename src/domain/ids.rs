//! Typed ids with a visible prefix (`usr_42`).
//!
//! The database stores the integer; the prefix exists only on the wire, so a
//! job id can never be passed where a user id is expected, in Rust or in JSON.

use rusqlite::ToSql;
use rusqlite::types::{FromSql, FromSqlResult, ToSqlOutput, ValueRef};
use serde::{Serialize, Serializer};
use std::fmt;

macro_rules! typed_id {
    ($name:ident, $prefix:literal) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub i64);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// Parses the wire form (`usr_42`). Anything else is `None`, which
            /// callers turn into `not_found`: a malformed id names nothing.
            pub fn parse(s: &str) -> Option<Self> {
                let digits = s.strip_prefix($prefix)?;
                if digits.is_empty() || digits.len() > 18 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                digits.parse::<i64>().ok().filter(|n| *n > 0).map($name)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}{}", $prefix, self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.0))
            }
        }

        impl FromSql for $name {
            fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
                i64::column_result(v).map($name)
            }
        }
    };
}

typed_id!(UserId, "usr_");
typed_id!(TxnId, "txn_");
typed_id!(JobId, "job_");
typed_id!(HoldId, "hold_");
typed_id!(ApiKeyId, "key_");
typed_id!(LogId, "log_");
typed_id!(GrantId, "grant_");
typed_id!(CodeId, "code_");
typed_id!(EndpointId, "wh_");
typed_id!(DeliveryId, "dlv_");
typed_id!(FileId, "file_");
typed_id!(PaymentId, "pay_");

/// Rows of everyone's totals per day (`usage_totals`, `daily_spend_global`)
/// are split this many ways by user, so charges of different users rarely
/// update the same row (on PostgreSQL each waits for the other's commit).
pub const TOTAL_SHARDS: i64 = 32;

/// The shard of everyone's totals a user's charges count in.
pub fn total_shard(user: UserId) -> i64 {
    user.0.rem_euclid(TOTAL_SHARDS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_reject_foreign_prefixes() {
        assert_eq!(UserId::parse("usr_42"), Some(UserId(42)));
        assert_eq!(UserId(42).to_string(), "usr_42");
        assert_eq!(UserId::parse("job_42"), None);
        assert_eq!(UserId::parse("usr_"), None);
        assert_eq!(UserId::parse("usr_0"), None);
        assert_eq!(UserId::parse("usr_-1"), None);
        assert_eq!(UserId::parse("usr_99999999999999999999"), None);
    }
}
