//! `migrate-to-postgres` of a 1M-row ledger, audited on both sides
//! (BENCHMARKS.md, "PostgreSQL").
//!
//! Builds (or reuses) a SQLite database of 1,000 users x 1,000 ledger rows
//! (two grants and eight charges drawn on them per user and round, as the
//! audit bench), creates an empty PostgreSQL database on the server at
//! `--pg URL`, migrates, and prints the time of each step and both audits.
//!
//!   cargo run --release --example migrate_1m -- --pg postgres://tollgate@127.0.0.1:5432/postgres \
//!     [--sqlite /tmp/ledger-1m.db]

use std::time::Instant;
use tollgate::domain::{Credits, Email, Role, UserId};
use tollgate::ledger::SpendCaps;
use tollgate::storage::{Conn, Db, Synchronous};

fn build(path: &std::path::Path) {
    let db = Db::open(path, Synchronous::Normal).expect("open");
    let users: Vec<UserId> = (0..1000)
        .map(|i| {
            let email = Email::parse(&format!("m{i}@example.com")).expect("email");
            db.write(move |c| Ok::<_, tollgate::error::Error>(tollgate::users::insert(c, &email, "x", Role::User)?.id))
                .expect("user")
        })
        .collect();
    for _ in 0..100 {
        let users = users.clone();
        db.write(move |c| {
            for u in &users {
                for k in 0..2 {
                    tollgate::ledger::grant(c, *u, Credits(100 + k), "seed")?;
                }
                for k in 0..8 {
                    tollgate::ledger::consume(c, *u, Credits(1 + k % 5), "seed", &SpendCaps::NONE)?;
                }
            }
            Ok::<_, tollgate::error::Error>(())
        })
        .expect("seed");
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut pg, mut sqlite) = (None, None);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--pg" => pg = args.next(),
            "--sqlite" => sqlite = args.next().map(std::path::PathBuf::from),
            _ => panic!("usage: migrate_1m --pg URL [--sqlite FILE]"),
        }
    }
    let pg = pg.expect("--pg URL (a server where the user may create databases)");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = sqlite.unwrap_or_else(|| dir.path().join("ledger-1m.db"));
    if !path.exists() {
        let t = Instant::now();
        build(&path);
        println!("built {} in {:.1} s", path.display(), t.elapsed().as_secs_f64());
    }
    let conn = tollgate::storage::open_connection(&path, Synchronous::Normal).expect("open");
    let t = Instant::now();
    let source = tollgate::ledger::audit::audit(&Conn::Sqlite(&conn), None).expect("audit");
    println!(
        "SQLite audit: {:.2} s, {} rows, {} users, valid {}",
        t.elapsed().as_secs_f64(),
        source.rows_checked,
        source.users_checked,
        source.valid
    );
    drop(conn);
    let name = format!("m1m_{}", std::process::id());
    let url = tollgate::storage::pg::create_database(&pg, &name).expect("create the target database");
    let t = Instant::now();
    let report = tollgate::migrate_pg::migrate_to_postgres(&path, &url, |_, _| {}).expect("migrate");
    let rows: u64 = report.tables.iter().map(|(_, n)| n).sum();
    println!(
        "migrate-to-postgres: {:.1} s for {rows} rows (audits of both sides included), chain head {:?}",
        t.elapsed().as_secs_f64(),
        report.audit.head.as_ref().map(|h| h.id)
    );
    let target = Db::open_postgres(&url).expect("open PostgreSQL");
    let t = Instant::now();
    let copied = target.read(|c| tollgate::ledger::audit::audit(c, None)).expect("audit PostgreSQL");
    println!(
        "PostgreSQL audit: {:.2} s, {} rows, {} users, valid {}, same head {}",
        t.elapsed().as_secs_f64(),
        copied.rows_checked,
        copied.users_checked,
        copied.valid,
        copied.head.as_ref().map(|h| &h.hash) == source.head.as_ref().map(|h| &h.hash)
    );
}
