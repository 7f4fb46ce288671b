//! Token buckets: `rpm` per minute refill, `burst` capacity, one token per
//! request. A token is 60,000 units, so a bucket gains exactly `rpm` units
//! per millisecond: integer refill with no remainder to lose between checks,
//! reproducible under an injected clock.

use crate::support::bounded::Entry;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub rpm: u32,
    pub burst: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the bucket is full again.
    pub reset_s: u64,
    /// Seconds until one token is available (0 when allowed).
    pub retry_after_s: u64,
    /// The first refusal of this bucket since it last allowed a request:
    /// worth one log line, unlike the thousand that may follow.
    pub first_refusal: bool,
}

/// Units per token: with 60,000, refill is `rpm` units per millisecond.
pub const UNITS: u64 = 60_000;

impl Decision {
    /// What a bucket of `rate` holding `units` after the request answers.
    pub fn of(rate: Rate, units: u64, allowed: bool, first_refusal: bool) -> Decision {
        let capacity = u64::from(rate.burst) * UNITS;
        // Whole seconds for the bucket to gain `n` units.
        let secs_for = |n: u64| n.div_ceil(u64::from(rate.rpm).max(1)).div_ceil(1000);
        Decision {
            allowed,
            limit: rate.rpm,
            remaining: (units / UNITS) as u32,
            reset_s: secs_for(capacity.saturating_sub(units)),
            retry_after_s: if allowed { 0 } else { secs_for(UNITS.saturating_sub(units)).max(1) },
            first_refusal,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Bucket {
    units: u64,
    last_ms: u64,
    rate: Rate,
    refusing: bool,
}

impl Bucket {
    pub fn full(rate: Rate, now_ms: u64) -> Bucket {
        Bucket { units: u64::from(rate.burst) * UNITS, last_ms: now_ms, rate, refusing: false }
    }

    fn capacity(&self) -> u64 {
        u64::from(self.rate.burst) * UNITS
    }

    fn refilled(&self, now_ms: u64) -> u64 {
        let elapsed = now_ms.saturating_sub(self.last_ms);
        let added = elapsed.saturating_mul(u64::from(self.rate.rpm));
        self.units.saturating_add(added).min(self.capacity())
    }

    /// Returns a token taken for a request that another bucket refused, so
    /// a refusal costs nothing (never above capacity).
    pub fn give_back(&mut self) {
        self.units = self.units.saturating_add(UNITS).min(self.capacity());
    }

    pub fn take(&mut self, rate: Rate, now_ms: u64) -> Decision {
        if rate != self.rate {
            self.rate = rate;
        }
        self.units = self.refilled(now_ms);
        self.last_ms = now_ms;
        let allowed = self.units >= UNITS;
        let mut first_refusal = false;
        if allowed {
            self.units -= UNITS;
            self.refusing = false;
        } else {
            first_refusal = !self.refusing;
            self.refusing = true;
        }
        Decision::of(self.rate, self.units, allowed, first_refusal)
    }
}

impl Entry for Bucket {
    fn idle(&self, now_ms: u64) -> bool {
        self.refilled(now_ms) >= self.capacity()
    }

    fn last_seen_ms(&self) -> u64 {
        self.last_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_per_minute_burst_ten_refills_one_token_every_six_seconds() {
        let rate = Rate { rpm: 10, burst: 10 };
        let mut b = Bucket::full(rate, 0);
        for i in 0..10 {
            let d = b.take(rate, 0);
            assert!(d.allowed, "request {i}");
            assert_eq!(d.remaining, 9 - i);
        }
        let d = b.take(rate, 0);
        assert!(!d.allowed && d.first_refusal);
        assert_eq!(d.retry_after_s, 6);
        assert!(!b.take(rate, 5_999).allowed);
        assert!(!b.take(rate, 5_999).first_refusal, "only the first refusal is flagged");
        assert!(b.take(rate, 6_000).allowed);
        assert!(!b.take(rate, 6_000).allowed);
        assert!(b.idle(6_000 + 60_000));
    }
}
