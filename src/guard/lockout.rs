//! Brute-force lockout: after `failures_max` failed logins within the window,
//! the key (a client IP, or an email) is locked for the window.

use super::bounded::Entry;

#[derive(Debug, Clone, Default)]
pub struct Failures {
    count: u32,
    window_start_ms: u64,
    locked_until_ms: u64,
    last_ms: u64,
    window_ms: u64,
}

impl Failures {
    /// `Err(seconds)` while locked.
    pub fn check(&self, now_ms: u64) -> Result<(), u64> {
        if now_ms < self.locked_until_ms {
            return Err((self.locked_until_ms - now_ms).div_ceil(1000).max(1));
        }
        Ok(())
    }

    /// Counts a failure; true when this one started a lockout.
    pub fn record_failure(&mut self, now_ms: u64, failures_max: u32, window_ms: u64) -> bool {
        self.window_ms = window_ms;
        if now_ms.saturating_sub(self.window_start_ms) >= window_ms {
            self.count = 0;
            self.window_start_ms = now_ms;
        }
        self.count += 1;
        self.last_ms = now_ms;
        if self.count >= failures_max {
            self.locked_until_ms = now_ms + window_ms;
            self.count = 0;
            self.window_start_ms = now_ms;
            return true;
        }
        false
    }
}

impl Entry for Failures {
    fn idle(&self, now_ms: u64) -> bool {
        now_ms >= self.locked_until_ms
            && (self.count == 0 || now_ms.saturating_sub(self.window_start_ms) >= self.window_ms)
    }

    fn last_seen_ms(&self) -> u64 {
        self.last_ms
    }
}
