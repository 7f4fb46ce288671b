//! Ledger throughput through the group-commit writer, on a real file:
//! `consume`, and `hold` + `settle`, with 1 and 16 concurrent callers, at
//! `synchronous=FULL` and `NORMAL`. Each iteration is one operation; with
//! 16 callers the iterations are spread over 16 threads, so criterion's
//! time per iteration is the inverse of throughput. 10,000 users, each
//! operation on a random one (as the HTTP load generator does), so each
//! touches its own pages rather than a few hot ones.
//!
//! Run: `cargo bench --bench ledger`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tollgate::domain::{Credits, Email, Role, UserId};
use tollgate::error::Error;
use tollgate::ledger::{self, SpendCaps};
use tollgate::storage::{Db, Synchronous};

const USERS: usize = 10_000;

fn setup(sync: Synchronous) -> (tempfile::TempDir, Arc<Db>, Vec<UserId>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(&dir.path().join("bench.db"), sync).expect("open");
    let mut users = Vec::with_capacity(USERS);
    for chunk in 0..USERS / 1_000 {
        let made = db
            .write(move |c| {
                (0..1_000)
                    .map(|i| {
                        let email = Email::parse(&format!("u{chunk}-{i}@example.com")).expect("email");
                        let u = tollgate::users::insert(c, &email, "x", Role::User)?;
                        ledger::grant(c, u.id, Credits(1_000_000_000_000), "bench")?;
                        Ok(u.id)
                    })
                    .collect::<Result<Vec<_>, Error>>()
            })
            .expect("users");
        users.extend(made);
    }
    (dir, Arc::new(db), users)
}

fn consume_once(db: &Db, u: UserId) {
    db.write(move |c| ledger::consume(c, u, Credits(1), "", &SpendCaps::NONE)).expect("consume");
}

fn hold_settle_once(db: &Db, u: UserId) {
    let h = db.write(move |c| ledger::hold(c, u, Credits(10), None, 60_000, &SpendCaps::NONE)).expect("hold");
    db.write(move |c| ledger::settle(c, h, ledger::Cost::Credits(Credits(3)), "")).expect("settle");
}

/// Runs `iters` operations over `callers` threads, each on random users;
/// returns the wall time.
fn run(db: &Arc<Db>, users: &[UserId], callers: usize, iters: u64, op: fn(&Db, UserId)) -> Duration {
    let per = iters.div_ceil(callers as u64);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..callers {
            let db = Arc::clone(db);
            s.spawn(move || {
                let mut rng = 0x2545_f491_4f6c_dd1d_u64 ^ (t as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                for _ in 0..per {
                    // xorshift: a random user per operation.
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    op(&db, users[(rng % users.len() as u64) as usize]);
                }
            });
        }
    });
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    for (sync, label) in [(Synchronous::Full, "full"), (Synchronous::Normal, "normal")] {
        let (_dir, db, users) = setup(sync);
        let mut g = c.benchmark_group(format!("ledger_{label}"));
        g.throughput(Throughput::Elements(1));
        g.sample_size(10);
        g.measurement_time(Duration::from_secs(4));
        for callers in [1usize, 16] {
            g.bench_function(format!("consume/{callers}_callers"), |b| {
                b.iter_custom(|iters| run(&db, &users, callers, iters, consume_once))
            });
            g.bench_function(format!("hold_settle/{callers}_callers"), |b| {
                b.iter_custom(|iters| run(&db, &users, callers, iters, hold_settle_once))
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
