//! A notifier: one thread's "something changed" wakes every waiter.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// Wakes threads waiting for work (a job queued, an event to deliver, a job
/// changed), instead of busy polling: a generation counter under a mutex and
/// a condition variable, so a notify between two waits is never lost.
#[derive(Default)]
pub struct Notifier {
    generation: Mutex<u64>,
    cv: Condvar,
}

impl Notifier {
    pub fn notify(&self) {
        if let Ok(mut g) = self.generation.lock() {
            *g += 1;
        }
        self.cv.notify_all();
    }

    /// Waits until notified or `timeout` passes.
    pub fn wait(&self, timeout: Duration) {
        let Ok(g) = self.generation.lock() else { return };
        let start = *g;
        let _ = self.cv.wait_timeout_while(g, timeout, |g| *g == start);
    }
}
