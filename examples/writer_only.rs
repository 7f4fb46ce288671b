//! The ledger's cost per consume with no HTTP and no fsync: `ledger::consume`
//! in groups on one connection, as the writer runs them (each in a
//! SAVEPOINT inside one transaction), at `synchronous=NORMAL`. Prints the
//! CPU-bound rate, i.e. the most one writer thread could do. Used to find
//! what a consume costs (BENCHMARKS.md, "What limits it").
//!
//! ```sh
//! cargo run --release --example writer_only -- [USERS] [GROUP] [sp|nosp] [INDEX_TO_DROP|none] [GRANTS]
//! cargo run --release --example writer_only -- 10000 16 sp
//! cargo run --release --example writer_only -- 10000 16 sp logs_by_user
//! ```

use std::time::Instant;
use tollgate::domain::{Credits, Email, Role};
use tollgate::ledger::{self, SpendCaps};
use tollgate::storage::{self, Synchronous};

const CONSUMES: usize = 200_000;

fn arg<T: std::str::FromStr>(i: usize, default: T) -> T {
    std::env::args().nth(i).and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn main() {
    let users_n: usize = arg(1, 10_000);
    let group: usize = arg(2, 16).max(1);
    let savepoints = arg(3, "sp".to_owned()) != "nosp";
    let drop_index: Option<String> = std::env::args().nth(4).filter(|s| s != "none");
    // Credit additions per user before the run (each a grant).
    let grants_n: usize = arg(5, 1).max(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut conn = storage::open_connection(&dir.path().join("w.db"), Synchronous::Normal).expect("open");
    storage::migrate(&mut conn).expect("migrate");
    if let Some(index) = &drop_index {
        conn.execute_batch(&format!("DROP INDEX {index};")).expect("drop index");
    }
    conn.execute_batch("BEGIN").expect("begin");
    let users: Vec<_> = (0..users_n)
        .map(|i| {
            let email = Email::parse(&format!("u{i}@example.com")).expect("email");
            let u = tollgate::users::insert(&storage::Conn::Sqlite(&conn), &email, "x", Role::User).expect("user");
            for _ in 0..grants_n {
                ledger::grant(&storage::Conn::Sqlite(&conn), u.id, Credits(1_000_000_000), "seed").expect("grant");
            }
            u.id
        })
        .collect();
    conn.execute_batch("COMMIT").expect("commit");
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let started = Instant::now();
    let mut done = 0;
    while done < CONSUMES {
        conn.execute_batch("BEGIN IMMEDIATE").expect("begin");
        for _ in 0..group {
            // xorshift: random users, as the HTTP load generator picks them.
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let user = users[(rng % users_n as u64) as usize];
            if savepoints {
                conn.prepare_cached("SAVEPOINT w").and_then(|mut s| s.execute([])).expect("savepoint");
            }
            ledger::consume(&storage::Conn::Sqlite(&conn), user, Credits(1), "", &SpendCaps::NONE).expect("consume");
            if savepoints {
                conn.prepare_cached("RELEASE w").and_then(|mut s| s.execute([])).expect("release");
            }
            done += 1;
        }
        conn.execute_batch("COMMIT").expect("commit");
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "users {users_n}, groups of {group}, savepoints {savepoints}, dropped index {}: {:.0} consumes/s, {:.1} us each",
        drop_index.as_deref().unwrap_or("none"),
        done as f64 / secs,
        secs * 1e6 / done as f64
    );
}
