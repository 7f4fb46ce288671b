//! Password hashing with argon2id (the crate's recommended defaults), on a
//! bounded pool of hashing threads.
//!
//! One argon2 hash takes ~19 MiB and tens of milliseconds of a core. Run on
//! whatever thread asked, a login flood made every HTTP worker hash at once:
//! gigabytes, kept afterwards by the allocator's per-thread arenas. So every
//! hash and verify runs on [`HashPool`]'s few threads (as many as cores by
//! default); a caller whose turn does not come within the configured wait
//! gets `Error::Busy` (503 `server_busy`), and memory stays flat whatever
//! arrives. This module never decides who may try a password; `guard` does.

use crate::domain::Password;
use crate::error::{Error, Result};
use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Hash requests waiting for a hashing thread; past it, `Busy` at once.
pub const HASH_QUEUE_MAX: usize = 64;
/// How long a caller waits for its turn when nothing was configured.
pub const HASH_WAIT_MS_DEFAULT: u64 = 1_000;

const BUSY: &str = "The server is busy checking passwords. Retry in a moment.";

static POOL: OnceLock<HashPool> = OnceLock::new();

/// Sets the pool's size (0 = cores) and wait. The first call wins: the pool
/// is process-wide, and the CLI's commands use the defaults.
pub fn configure(threads: usize, wait_ms: u64) {
    large_buffers_from_the_os();
    let _ = POOL.get_or_init(|| HashPool::start(threads, Duration::from_millis(wait_ms)));
}

/// Allocations of at least this many bytes are mapped from the OS and
/// returned to it when freed.
const MMAP_THRESHOLD_BYTES: i32 = 1 << 20;

/// glibc raises its mmap threshold after the first large free, so from the
/// second hash on argon2's 19 MiB came from the hashing thread's arena and
/// stayed there (measured: ~58 MiB kept per hashing thread, 218 MiB peak
/// under a login flood). A fixed threshold keeps every large buffer (argon2
/// blocks, big request bodies) mapped and unmapped on free: memory returns
/// to the OS after a flood and the peak is the hashes in flight.
fn large_buffers_from_the_os() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator tuning; it is called before
        // the hashing threads start and takes plain integers.
        let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) };
        if ok != 1 {
            log::warn!("could not set the allocator's mmap threshold; memory after a login flood may stay high");
        }
    }
}

fn pool() -> &'static HashPool {
    POOL.get_or_init(|| {
        large_buffers_from_the_os();
        HashPool::start(0, Duration::from_millis(HASH_WAIT_MS_DEFAULT))
    })
}

struct Task {
    run: Box<dyn FnOnce() + Send>,
    /// A task still queued after this is dropped unrun: its caller has been
    /// waiting long enough and hears `Busy`.
    deadline: Instant,
}

pub struct HashPool {
    queue: SyncSender<Task>,
    wait: Duration,
}

impl HashPool {
    fn start(threads: usize, wait: Duration) -> HashPool {
        let threads = if threads == 0 { std::thread::available_parallelism().map_or(2, |n| n.get()) } else { threads };
        let (queue, rx) = sync_channel::<Task>(HASH_QUEUE_MAX);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = Arc::clone(&rx);
            let started = std::thread::Builder::new().name(format!("password-hash-{i}")).spawn(move || work(&rx));
            if let Err(e) = started {
                log::error!("cannot start a password hashing thread: {e}");
            }
        }
        HashPool { queue, wait }
    }

    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let (reply, answer) = sync_channel(1);
        let task = Task {
            run: Box::new(move || {
                let _ = reply.send(f());
            }),
            deadline: Instant::now() + self.wait,
        };
        self.queue.try_send(task).map_err(|_| Error::Busy(BUSY))?;
        // A dropped task drops `reply`: the caller hears Busy, never hangs.
        answer.recv().map_err(|_| Error::Busy(BUSY))
    }
}

fn work(rx: &Mutex<Receiver<Task>>) {
    loop {
        let task = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(task) = task else { return };
        if Instant::now() > task.deadline {
            continue;
        }
        (task.run)();
    }
}

pub fn hash(password: &Password) -> Result<String> {
    let plain = password.expose().to_owned();
    pool().run(move || hash_now(&plain))?
}

fn hash_now(plain: &str) -> Result<String> {
    let h: PasswordHash = Argon2::default()
        .hash_password(plain.as_bytes())
        .map_err(|e| Error::Internal(format!("password hashing failed: {e}")))?;
    Ok(h.to_string())
}

/// A new password as the policy allows it (length bounds, not a common
/// one), or 400 `weak_password` naming `param`.
pub fn policy(raw: &str, param: &'static str) -> Result<Password> {
    Password::parse(raw).map_err(|why| Error::Account(crate::error::account::Refusal::WeakPassword { param, why }))
}

/// A stored hash no password matches: accounts made through an identity
/// provider have no password until a reset sets one.
pub const NO_PASSWORD: &str = "!";

/// `Ok(true)` only when `stored` is a valid hash of `candidate`.
pub fn verify(candidate: &str, stored: &str) -> Result<bool> {
    let (candidate, stored) = (candidate.to_owned(), stored.to_owned());
    pool().run(move || verify_now(&candidate, &stored))
}

fn verify_now(candidate: &str, stored: &str) -> bool {
    let Ok(parsed) = stored.parse::<PasswordHash>() else {
        return false;
    };
    Argon2::default().verify_password(candidate.as_bytes(), &parsed).is_ok()
}

/// Spends the same time as a real check, so that a login for an unknown email
/// takes as long as one with a wrong password and does not reveal which.
pub fn burn_time(candidate: &str) -> Result<()> {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let dummy = match DUMMY.get() {
        Some(d) => d.clone(),
        None => {
            let made = hash(&Password::parse("not-a-real-password").map_err(Error::Internal)?)?;
            DUMMY.get_or_init(|| made).clone()
        }
    };
    verify(candidate, &dummy).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_only_the_right_password() {
        let h = hash(&Password::parse("correct horse").unwrap()).unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("correct horse", &h).unwrap());
        assert!(!verify("wrong horse!", &h).unwrap());
        assert!(!verify("correct horse", "not a hash").unwrap());
    }

    #[test]
    fn a_full_pool_answers_busy_instead_of_waiting_forever() {
        let pool = HashPool::start(1, Duration::from_millis(50));
        let (hold, release) = sync_channel::<()>(0);
        // Occupy the only thread, then queue past the wait.
        let first = std::thread::spawn({
            let q = pool.queue.clone();
            move || {
                let _ = q.send(Task {
                    run: Box::new(move || {
                        let _ = release.recv();
                    }),
                    deadline: Instant::now() + Duration::from_secs(60),
                });
            }
        });
        first.join().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let started = Instant::now();
        let waited = std::thread::spawn({
            let q = pool.queue.clone();
            move || {
                let (reply, answer) = sync_channel::<u8>(1);
                let _ = q.send(Task {
                    run: Box::new(move || {
                        let _ = reply.send(1);
                    }),
                    deadline: Instant::now() + Duration::from_millis(50),
                });
                answer.recv()
            }
        });
        std::thread::sleep(Duration::from_millis(100));
        let _ = hold.send(());
        assert!(waited.join().unwrap().is_err(), "a task past its wait is dropped, its caller answered");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
