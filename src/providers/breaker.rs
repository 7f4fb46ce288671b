//! A circuit breaker per route: after `FAILURES_TO_OPEN` consecutive
//! failures a route is skipped for `COOL_DOWN`, then one call is let through
//! to test it (half-open). Keeps a dead provider from adding its timeout to
//! every request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const FAILURES_TO_OPEN: u32 = 3;
pub const COOL_DOWN: Duration = Duration::from_secs(30);

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
    /// May this route be called now?
    pub fn allows(&self, route: &str) -> bool {
        let mut map = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        let Some(s) = map.get_mut(route) else { return true };
        match s.open_until {
            Some(t) if Instant::now() < t => false,
            Some(_) => {
                // Half-open: one trial; a failure re-opens at once.
                s.open_until = None;
                s.failures = FAILURES_TO_OPEN - 1;
                true
            }
            None => true,
        }
    }

    pub fn success(&self, route: &str) {
        self.routes.lock().unwrap_or_else(|p| p.into_inner()).remove(route);
    }

    /// Records a failure; true when it opened the circuit.
    pub fn failure(&self, route: &str) -> bool {
        let mut map = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        let s = map.entry(route.to_owned()).or_default();
        s.failures += 1;
        if s.failures >= FAILURES_TO_OPEN && s.open_until.is_none() {
            s.open_until = Some(Instant::now() + COOL_DOWN);
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
        assert!(b.allows("r"));
        assert!(!b.failure("r"));
        assert!(!b.failure("r"));
        assert!(b.failure("r"));
        assert!(!b.allows("r"));
        assert!(b.allows("other"));
        b.success("r");
        assert!(b.allows("r"));
    }
}
