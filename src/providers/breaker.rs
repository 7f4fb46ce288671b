//! A circuit breaker per upstream key and model: it opens when, within a
//! window, failures reach a count, are at least half of the calls since the
//! first of them, and come from enough distinct callers; then the route is
//! skipped for its cool-down and one call is let through to test it
//! (half-open). Keeps a dead provider from adding its timeout to every
//! request, without letting one user's retries (three attempts of one SDK
//! call against a 500) cool a model down for everyone. A request the
//! provider refuses as invalid never reaches here. Thresholds come from
//! the channel's settings.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// When a route's circuit opens, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Failures within the window, at least.
    pub failures: u32,
    /// Distinct callers among them, at least.
    pub callers: u32,
    pub window: Duration,
    pub cool_down: Duration,
}

/// Distinct failing callers remembered per route (the threshold is far
/// below it).
const CALLERS_TRACKED_MAX: usize = 16;

struct State {
    since: Instant,
    calls: u32,
    failures: u32,
    callers: Vec<i64>,
    open_until: Option<Instant>,
    half_open: bool,
}

impl State {
    fn new(now: Instant) -> State {
        State { since: now, calls: 0, failures: 0, callers: Vec::new(), open_until: None, half_open: false }
    }
}

#[derive(Default)]
pub struct Breakers {
    routes: Mutex<HashMap<String, State>>,
}

thread_local! {
    /// Who the call on this thread is for (a user id; none for tollgate's
    /// own calls): distinct callers are what open a circuit.
    static CALLER: Cell<Option<i64>> = const { Cell::new(None) };
}

/// Runs `f` with provider calls on this thread counted as `caller`'s.
pub fn as_caller<T>(caller: Option<i64>, f: impl FnOnce() -> T) -> T {
    let before = CALLER.with(|c| c.replace(caller));
    let out = f();
    CALLER.with(|c| c.set(before));
    out
}

fn current_caller() -> i64 {
    // tollgate's own calls (probes) count as one caller, id 0.
    CALLER.with(Cell::get).unwrap_or(0)
}

impl Breakers {
    /// `Ok` when the route may be called now; `Err(wait)` while its circuit
    /// is open.
    pub fn check(&self, route: &str) -> Result<(), Duration> {
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
                s.half_open = true;
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// A call that answered: a half-open route closes; otherwise it counts
    /// toward the failure rate of a route that has failed lately (a healthy
    /// route is not tracked at all).
    pub fn success(&self, route: &str) {
        let mut map = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = map.get_mut(route) {
            if s.half_open {
                map.remove(route);
            } else {
                s.calls = s.calls.saturating_add(1);
            }
        }
    }

    /// Records a failure of the call on this thread; true when it opened
    /// the circuit.
    pub fn failure(&self, route: &str, p: &Policy) -> bool {
        let now = Instant::now();
        let caller = current_caller();
        let mut map = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        let s = match map.get_mut(route) {
            Some(s) => s,
            None => map.entry(route.to_owned()).or_insert_with(|| State::new(now)),
        };
        if s.open_until.is_some() {
            return false;
        }
        if s.half_open {
            s.half_open = false;
            s.open_until = Some(now + p.cool_down);
            return true;
        }
        if now.duration_since(s.since) > p.window {
            *s = State::new(now);
        }
        s.calls = s.calls.saturating_add(1);
        s.failures = s.failures.saturating_add(1);
        if !s.callers.contains(&caller) && s.callers.len() < CALLERS_TRACKED_MAX {
            s.callers.push(caller);
        }
        let rate_high = u64::from(s.failures) * 2 >= u64::from(s.calls);
        if s.failures >= p.failures.max(1) && rate_high && s.callers.len() as u32 >= p.callers.max(1) {
            *s = State { open_until: Some(now + p.cool_down), ..State::new(now) };
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(cool: Duration) -> Policy {
        Policy { failures: 3, callers: 2, window: Duration::from_secs(60), cool_down: cool }
    }

    #[test]
    fn one_callers_retries_never_open_the_circuit_two_callers_failing_do() {
        let b = Breakers::default();
        let p = policy(Duration::from_secs(30));
        as_caller(Some(1), || {
            for _ in 0..10 {
                assert!(!b.failure("r", &p), "one user's retries cool nothing down");
            }
        });
        assert!(b.check("r").is_ok());
        assert!(as_caller(Some(2), || b.failure("r", &p)), "a second caller failing too opens it");
        let wait = b.check("r").unwrap_err();
        assert!(wait <= p.cool_down && wait > Duration::from_secs(29));
        assert!(b.check("other").is_ok());
    }

    #[test]
    fn failures_below_half_of_the_calls_keep_it_closed() {
        let b = Breakers::default();
        let p = policy(Duration::from_secs(30));
        as_caller(Some(1), || b.failure("r", &p));
        for _ in 0..10 {
            b.success("r");
        }
        as_caller(Some(2), || assert!(!b.failure("r", &p)));
        as_caller(Some(3), || assert!(!b.failure("r", &p), "3 failures in 13 calls"));
        assert!(b.check("r").is_ok());
    }

    #[test]
    fn after_the_cool_down_one_trial_goes_through_and_a_failure_reopens_a_success_closes() {
        let b = Breakers::default();
        let p = Policy { callers: 1, ..policy(Duration::from_millis(1)) };
        for _ in 0..3 {
            b.failure("r", &p);
        }
        assert!(b.check("r").is_err());
        std::thread::sleep(Duration::from_millis(5));
        assert!(b.check("r").is_ok(), "half-open");
        assert!(b.failure("r", &p), "one more failure re-opens");
        std::thread::sleep(Duration::from_millis(5));
        assert!(b.check("r").is_ok(), "half-open again");
        b.success("r");
        assert!(b.check("r").is_ok());
        assert!(!b.failure("r", &Policy { failures: 2, ..p }), "closed: counting starts over");
    }
}
