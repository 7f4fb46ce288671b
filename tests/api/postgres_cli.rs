//! The command line on PostgreSQL: `migrate-to-postgres` copies a SQLite
//! database and proves the copy, refuses what it cannot prove, and `audit`,
//! `migrate` and the backup hint work on PostgreSQL. Runs in the PostgreSQL
//! pass of the suite.

use crate::helpers::*;
use std::path::Path;
use std::process::Output;

fn tollgate(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = bin();
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run tollgate")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn chain_head(o: &Output) -> String {
    let out = text(o);
    out.lines()
        .find_map(|l| l.strip_prefix("chain head: "))
        .map(|h| h.split(' ').next().unwrap_or(h).to_owned())
        .expect(&out)
}

/// A SQLite database with a user who was granted credits and spent some,
/// written by a real server that is then stopped; the user's token.
fn sqlite_with_spending(db: &Path) -> String {
    let server = serve_process(db, &[]);
    let admin = server.client.token(ADMIN_EMAIL, ADMIN_PASSWORD);
    let token = server.client.funded_user(&admin, "moved@example.com", 1_000);
    for _ in 0..5 {
        assert_eq!(server.client.consume(&token, 7).status, 201);
    }
    // The server seals every second: wait for a seal over every head.
    let conn = rusqlite::Connection::open(db).unwrap();
    eventually("every chain head sealed", std::time::Duration::from_secs(10), || {
        conn.query_row("SELECT count(*) FROM users WHERE chain_seq > sealed_seq", [], |r| r.get::<_, i64>(0))
            .is_ok_and(|n| n == 0)
    });
    drop(server);
    token
}

fn seal(o: &Output) -> String {
    let out = text(o);
    out.lines().find_map(|l| l.strip_prefix("seal: ")).map(|h| h.split(' ').next().unwrap_or(h).to_owned()).expect(&out)
}

#[test]
fn migrate_to_postgres_copies_everything_proves_it_and_refuses_what_it_cannot_prove() {
    crate::postgres_only!();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("moving.db");
    let token = sqlite_with_spending(&db);
    let url = tollgate::storage::pg::test_database().expect("a test database");
    let db_arg = db.to_str().unwrap();

    let o = tollgate(&["migrate-to-postgres", "--from", db_arg, "--to", &url], &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("audit passed on both"), "{}", text(&o));
    let copied_head = chain_head(&o);
    // The same chain head from each engine's own audit.
    let sqlite_audit = tollgate(&["audit", "--db", db_arg], &[]);
    assert!(sqlite_audit.status.success(), "{}", text(&sqlite_audit));
    let pg_audit = tollgate(&["audit"], &[("TOLLGATE_DATABASE_URL", &url)]);
    assert!(pg_audit.status.success(), "{}", text(&pg_audit));
    assert_eq!(chain_head(&sqlite_audit), copied_head);
    assert_eq!(chain_head(&pg_audit), copied_head);
    // The seals came along: the one pinned on SQLite holds on PostgreSQL.
    let pinned = seal(&sqlite_audit);
    assert!(pinned.starts_with("seal_"), "{pinned}");
    assert_eq!(seal(&o), pinned);
    let o = tollgate(&["audit", "--expect", &pinned], &[("TOLLGATE_DATABASE_URL", &url)]);
    assert!(o.status.success(), "{}", text(&o));

    // A server on the copy: the same signing key, so the old token works,
    // and the same balance.
    let server = serve_process(&dir.path().join("unused.db"), &[("TOLLGATE_DATABASE_URL", &url)]);
    let b = server.client.balance(&token).json();
    assert_eq!(b["balance"], 1_000 - 35, "{b}");
    drop(server);

    // A second copy into the same database is refused: it is not empty.
    let o = tollgate(&["migrate-to-postgres", "--from", db_arg, "--to", &url], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("empty database"), "{}", text(&o));

    // A source that fails its own audit is not moved, and the target stays empty.
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(
            "DROP TRIGGER credit_transactions_no_update;
             UPDATE credit_transactions SET description = 'edited' WHERE id = 2;",
        )
        .unwrap();
    }
    let other = tollgate::storage::pg::test_database().expect("a test database");
    let o = tollgate(&["migrate-to-postgres", "--from", db_arg, "--to", &other], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("fails its own audit"), "{}", text(&o));
    let target = tollgate::storage::Db::open_postgres(&other).unwrap();
    let users: i64 = target.read(|c| c.query_one("SELECT count(*) FROM users", &[], |r| r.get(0))).unwrap();
    assert_eq!(users, 0);

    // Backups of PostgreSQL are pg_dump's; `migrate` works on both.
    let o = tollgate(&["backup", "/tmp/never-written.db"], &[("TOLLGATE_DATABASE_URL", &url)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("pg_dump"), "{}", text(&o));
    let o = tollgate(&["migrate"], &[("TOLLGATE_DATABASE_URL", &url)]);
    assert!(o.status.success() && text(&o).contains("0 migration(s) applied"), "{}", text(&o));
}
