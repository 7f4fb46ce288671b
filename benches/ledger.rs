//! Ledger throughput through the group-commit writer, on a real file:
//! `consume`, and `hold` + `settle`, with 1 and 16 concurrent callers, at
//! `synchronous=FULL` and `NORMAL`. Each iteration is one operation; with
//! 16 callers the iterations are spread over 16 threads, so criterion's
//! time per iteration is the inverse of throughput.
//!
//! Run: `cargo bench --bench ledger`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tollgate::domain::{Credits, Email, Role, UserId};
use tollgate::error::Error;
use tollgate::ledger::{self, SpendCaps};
use tollgate::storage::{Db, Synchronous};

const USERS: usize = 64;

fn setup(sync: Synchronous) -> (tempfile::TempDir, Arc<Db>, Vec<UserId>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(&dir.path().join("bench.db"), sync).expect("open");
    let users = (0..USERS)
        .map(|i| {
            let email = Email::parse(&format!("u{i}@example.com")).expect("email");
            db.write(move |c| {
                let u = tollgate::users::insert(c, &email, "x", Role::User)?;
                ledger::grant(c, u.id, Credits(1_000_000_000_000), "bench")?;
                Ok::<_, Error>(u.id)
            })
            .expect("user")
        })
        .collect();
    (dir, Arc::new(db), users)
}

fn consume_once(db: &Db, u: UserId) {
    db.write(move |c| ledger::consume(c, u, Credits(1), "", &SpendCaps::NONE)).expect("consume");
}

fn hold_settle_once(db: &Db, u: UserId) {
    let h = db.write(move |c| ledger::hold(c, u, Credits(10), None, 60_000, &SpendCaps::NONE)).expect("hold");
    db.write(move |c| ledger::settle(c, h, ledger::Cost::Credits(Credits(3)), "")).expect("settle");
}

/// Runs `iters` operations over `callers` threads; returns the wall time.
fn run(db: &Arc<Db>, users: &[UserId], callers: usize, iters: u64, op: fn(&Db, UserId)) -> Duration {
    let per = iters.div_ceil(callers as u64);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..callers {
            let db = Arc::clone(db);
            let u = users[t % users.len()];
            s.spawn(move || {
                for _ in 0..per {
                    op(&db, u);
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
