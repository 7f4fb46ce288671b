//! A circuit breaker per route: after `failures` consecutive failures a
//! route is skipped for its cool-down, then one call is let through to test
//! it (half-open). Keeps a dead provider from adding its timeout to every
//! request. Thresholds come from the provider's config.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Default)]
struct State {
    failures: u32,
    open_until: Option<Instant>,
}

#[derive(Default)]
pub struct Breakers {
    routes: Mutex<HashMap<String, State>>,
}

impl Breakers {
    /// `Ok` when the route may be called now; `Err(wait)` while its circuit
    /// is open.
    pub fn check(&self, route: &str, failures_to_open: u32) -> Result<(), Duration> {
        let mut map = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        let Some(s) = map.get_mut(route) else { return Ok(()) };
        match s.open_until {
            Some(t) => {
                let now = Instant::now();
                if now < t {
                    return Err(t - now);
                }
                // Half-open: one trial; a failure re-opens at once.
                s.open_until = None;
                s.failures = failures_to_open.saturating_sub(1);
                Ok(())
            }
            None => Ok(()),
        }
    }

    pub fn success(&self, route: &str) {
        self.routes.lock().unwrap_or_else(|p| p.into_inner()).remove(route);
    }

    /// Records a failure; true when it opened the circuit.
    pub fn failure(&self, route: &str, failures_to_open: u32, cool_down: Duration) -> bool {
        let mut map = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        let s = map.entry(route.to_owned()).or_default();
        s.failures += 1;
        if s.failures >= failures_to_open && s.open_until.is_none() {
            s.open_until = Some(Instant::now() + cool_down);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_failures_open_the_circuit_and_a_success_closes_it() {
        let b = Breakers::default();
        let cool = Duration::from_secs(30);
        assert!(b.check("r", 3).is_ok());
        assert!(!b.failure("r", 3, cool));
        assert!(!b.failure("r", 3, cool));
        assert!(b.failure("r", 3, cool));
        let wait = b.check("r", 3).unwrap_err();
        assert!(wait <= cool && wait > Duration::from_secs(29));
        assert!(b.check("other", 3).is_ok());
        b.success("r");
        assert!(b.check("r", 3).is_ok());
    }

    #[test]
    fn after_the_cool_down_one_trial_goes_through_and_a_failure_reopens() {
        let b = Breakers::default();
        let cool = Duration::from_millis(1);
        for _ in 0..3 {
            b.failure("r", 3, cool);
        }
        std::thread::sleep(Duration::from_millis(5));
        assert!(b.check("r", 3).is_ok(), "half-open");
        assert!(b.failure("r", 3, Duration::from_secs(30)), "one more failure re-opens");
        assert!(b.check("r", 3).is_err());
    }
}
