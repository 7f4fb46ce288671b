//! `Credits`: an integer amount of credits. Money is never a float.
//!
//! A `Credits` value may be negative (a `consume` row's amount is); functions
//! that need a positive amount take it through [`Credits::positive`].

use rusqlite::ToSql;
use rusqlite::types::{FromSql, FromSqlResult, ToSqlOutput, ValueRef};
use serde::Serialize;
use std::fmt;

/// The largest amount one request may name: far above any real bill, far
/// below `i64::MAX`, so that sums of many amounts can never overflow.
pub const CREDITS_AMOUNT_MAX: i64 = 1_000_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
#[serde(transparent)]
pub struct Credits(pub i64);

impl Credits {
    pub const ZERO: Credits = Credits(0);

    /// A strictly positive amount no larger than [`CREDITS_AMOUNT_MAX`].
    pub fn positive(n: i64) -> Option<Credits> {
        (n > 0 && n <= CREDITS_AMOUNT_MAX).then_some(Credits(n))
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl std::ops::Add for Credits {
    type Output = Credits;
    fn add(self, o: Credits) -> Credits {
        Credits(self.0 + o.0)
    }
}

impl std::ops::Sub for Credits {
    type Output = Credits;
    fn sub(self, o: Credits) -> Credits {
        Credits(self.0 - o.0)
    }
}

impl std::ops::Neg for Credits {
    type Output = Credits;
    fn neg(self) -> Credits {
        Credits(-self.0)
    }
}

impl fmt::Display for Credits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl ToSql for Credits {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.0))
    }
}

impl FromSql for Credits {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        i64::column_result(v).map(Credits)
    }
}

/// A price group's factor in millionths (1,000,000 = list price).
pub const MULTIPLIER_ONE_MICRO: i64 = 1_000_000;

/// `amount` times a factor in millionths, rounded up: a group's price is
/// never below its exact value (at most one unit of `amount` more).
pub fn scale_up(amount: i64, multiplier_micro: i64) -> i64 {
    if multiplier_micro == MULTIPLIER_ONE_MICRO {
        return amount;
    }
    let exact = i128::from(amount) * i128::from(multiplier_micro);
    let scaled = exact.div_euclid(i128::from(MULTIPLIER_ONE_MICRO))
        + i128::from(exact.rem_euclid(i128::from(MULTIPLIER_ONE_MICRO)) != 0);
    scaled.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}
