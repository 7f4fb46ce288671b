//! Timestamps: milliseconds since the Unix epoch, stored as integers and
//! written on the wire as RFC 3339 UTC strings.

use rusqlite::ToSql;
use rusqlite::types::{FromSql, FromSqlResult, ToSqlOutput, ValueRef};
use serde::{Serialize, Serializer};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

const MS_PER_DAY: i64 = 86_400_000;

impl Timestamp {
    pub fn now() -> Timestamp {
        let ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
        Timestamp(ms)
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    pub fn plus_ms(self, ms: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(ms))
    }

    /// Parses an RFC 3339 date-time (`2026-12-31T23:59:59Z`, any offset,
    /// any fraction) to the millisecond; `None` if it is not one or lies
    /// outside years 1970..=9999.
    pub fn parse_rfc3339(s: &str) -> Option<Timestamp> {
        let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
        let ms = i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()?;
        (ms >= 0).then_some(Timestamp(ms))
    }

    pub fn rfc3339(self) -> String {
        let nanos = i128::from(self.0) * 1_000_000;
        match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
            Ok(t) => {
                let fmt = time::macros::format_description!(
                    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
                );
                t.format(&fmt).unwrap_or_default()
            }
            Err(_) => String::new(),
        }
    }
}

/// The spend "day" a moment falls in, for an operator-chosen UTC offset.
/// Day numbers count from the epoch, so consecutive days differ by one.
pub fn day_number(at: Timestamp, utc_offset_minutes: i32) -> i64 {
    (at.0 + i64::from(utc_offset_minutes) * 60_000).div_euclid(MS_PER_DAY)
}

/// The moment `day` begins, as a UTC timestamp.
pub fn day_start(day: i64, utc_offset_minutes: i32) -> Timestamp {
    Timestamp(day * MS_PER_DAY - i64::from(utc_offset_minutes) * 60_000)
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.rfc3339())
    }
}

impl ToSql for Timestamp {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.0))
    }
}

impl FromSql for Timestamp {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        i64::column_result(v).map(Timestamp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc3339_with_offsets() {
        assert_eq!(Timestamp::parse_rfc3339("2023-11-14T22:13:20.123Z"), Some(Timestamp(1_700_000_000_123)));
        assert_eq!(Timestamp::parse_rfc3339("2023-11-14T23:13:20.123+01:00"), Some(Timestamp(1_700_000_000_123)));
        assert_eq!(Timestamp::parse_rfc3339("2023-11-14"), None);
        assert_eq!(Timestamp::parse_rfc3339("1960-01-01T00:00:00Z"), None);
    }

    #[test]
    fn formats_rfc3339_utc() {
        assert_eq!(Timestamp(0).rfc3339(), "1970-01-01T00:00:00.000Z");
        assert_eq!(Timestamp(1_700_000_000_123).rfc3339(), "2023-11-14T22:13:20.123Z");
    }

    #[test]
    fn day_boundaries_follow_the_offset() {
        let just_before_midnight_utc = Timestamp(MS_PER_DAY - 1);
        assert_eq!(day_number(just_before_midnight_utc, 0), 0);
        assert_eq!(day_number(just_before_midnight_utc, 60), 1);
        assert_eq!(day_number(Timestamp(MS_PER_DAY), 0), 1);
        assert_eq!(day_start(1, 0), Timestamp(MS_PER_DAY));
        assert_eq!(day_start(1, 60), Timestamp(MS_PER_DAY - 3_600_000));
    }
}
