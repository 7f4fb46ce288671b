//! Brute-force defences for logins and signups, as per-key counters kept in
//! the guard's bounded maps.
//!
//! [`Attempts`] counts tries in a window and locks the key once a try would
//! pass the maximum. Tries are *reserved before* the password is checked,
//! under the map's lock, so any number of concurrent guesses checks at most
//! the maximum; a success gives its reservation back. [`Pace`] slows a key
//! down instead of locking it: past a number of free failures, each further
//! try waits a delay that doubles per failure, up to a maximum.

use crate::support::bounded::Entry;

/// Refused: `retry_after_s`, and whether this refusal started a lockout
/// (worth one log line, not one per refused try).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Locked {
    pub retry_after_s: u64,
    pub started: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Attempts {
    count: u32,
    window_start_ms: u64,
    locked_until_ms: u64,
    last_ms: u64,
    window_ms: u64,
}

impl Attempts {
    /// Reserves one try in the window, or refuses it.
    pub fn reserve(&mut self, now_ms: u64, max: u32, window_ms: u64) -> Result<(), Locked> {
        self.window_ms = window_ms;
        self.last_ms = now_ms;
        if now_ms < self.locked_until_ms {
            return Err(Locked { retry_after_s: seconds(self.locked_until_ms - now_ms), started: false });
        }
        if now_ms.saturating_sub(self.window_start_ms) >= window_ms {
            self.count = 0;
            self.window_start_ms = now_ms;
        }
        if self.count >= max {
            self.locked_until_ms = now_ms + window_ms;
            self.count = 0;
            self.window_start_ms = now_ms;
            return Err(Locked { retry_after_s: seconds(window_ms), started: true });
        }
        self.count += 1;
        Ok(())
    }

    /// Gives back a reservation whose try turned out fine.
    pub fn refund(&mut self) {
        self.count = self.count.saturating_sub(1);
    }

    /// Tries counted in the current window (including those in flight).
    pub fn count(&self) -> u32 {
        self.count
    }
}

impl Entry for Attempts {
    fn idle(&self, now_ms: u64) -> bool {
        now_ms >= self.locked_until_ms
            && (self.count == 0 || now_ms.saturating_sub(self.window_start_ms) >= self.window_ms)
    }

    fn last_seen_ms(&self) -> u64 {
        self.last_ms
    }
}

#[derive(Debug, Clone, Default)]
pub struct Pace {
    failures: u32,
    window_start_ms: u64,
    next_allowed_ms: u64,
    last_ms: u64,
    window_ms: u64,
}

/// The first paced delay; it doubles per further failure.
const PACE_DELAY_FIRST_MS: u64 = 1_000;

impl Pace {
    fn roll(&mut self, now_ms: u64, window_ms: u64) {
        self.window_ms = window_ms;
        self.last_ms = now_ms;
        if now_ms.saturating_sub(self.window_start_ms) >= window_ms {
            self.failures = 0;
            self.window_start_ms = now_ms;
            self.next_allowed_ms = 0;
        }
    }

    /// Lets a try through, or says how long to wait. A try let through
    /// moves the next allowed time on, so concurrent tries are spaced too.
    pub fn pass(&mut self, now_ms: u64, free: u32, delay_max_ms: u64, window_ms: u64) -> Result<(), u64> {
        self.roll(now_ms, window_ms);
        if self.failures < free {
            return Ok(());
        }
        if now_ms < self.next_allowed_ms {
            return Err(seconds(self.next_allowed_ms - now_ms));
        }
        let doublings = (self.failures - free).min(20);
        let delay = PACE_DELAY_FIRST_MS.saturating_mul(1 << doublings).min(delay_max_ms);
        self.next_allowed_ms = now_ms + delay;
        Ok(())
    }

    pub fn fail(&mut self, now_ms: u64, window_ms: u64) {
        self.roll(now_ms, window_ms);
        self.failures += 1;
    }
}

impl Entry for Pace {
    fn idle(&self, now_ms: u64) -> bool {
        self.failures == 0 || now_ms.saturating_sub(self.window_start_ms) >= self.window_ms
    }

    fn last_seen_ms(&self) -> u64 {
        self.last_ms
    }
}

fn seconds(ms: u64) -> u64 {
    ms.div_ceil(1000).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_lock_on_the_try_past_the_maximum_and_refunds_give_tries_back() {
        let mut a = Attempts::default();
        for _ in 0..3 {
            assert!(a.reserve(0, 3, 60_000).is_ok());
        }
        a.refund();
        assert!(a.reserve(0, 3, 60_000).is_ok(), "a refunded try is available again");
        assert_eq!(a.reserve(0, 3, 60_000), Err(Locked { retry_after_s: 60, started: true }));
        assert_eq!(a.reserve(1_000, 3, 60_000), Err(Locked { retry_after_s: 59, started: false }));
        assert!(a.reserve(60_000, 3, 60_000).is_ok(), "the lock ends with its window");
    }

    #[test]
    fn pace_doubles_the_delay_after_the_free_failures() {
        let mut p = Pace::default();
        for _ in 0..2 {
            assert!(p.pass(0, 2, 8_000, 900_000).is_ok());
            p.fail(0, 900_000);
        }
        assert!(p.pass(0, 2, 8_000, 900_000).is_ok(), "the first paced try goes through");
        p.fail(0, 900_000);
        assert_eq!(p.pass(500, 2, 8_000, 900_000), Err(1));
        assert!(p.pass(1_000, 2, 8_000, 900_000).is_ok());
        p.fail(1_000, 900_000);
        assert_eq!(p.pass(1_000, 2, 8_000, 900_000), Err(2), "the delay doubled");
        assert!(p.pass(900_000, 2, 8_000, 900_000).is_ok(), "a new window starts free");
    }
}
