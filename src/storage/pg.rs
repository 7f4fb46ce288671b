//! The PostgreSQL engine: its connection pool, its migrations, and write
//! transactions that run again when the server asks for it.
//!
//! Writes are serialized across every connection of every instance by one
//! transaction-scoped advisory lock, taken first in each write transaction.
//! That gives every write closure the guarantee SQLite's single writer gives
//! it (nothing else writes between its checks and its writes), so the code
//! written for SQLite is exact on PostgreSQL too, with several instances on
//! one database. The cost is that write transactions do not overlap.
//!
//! One kind of write is exempt (`WriteMode::User`): a write of one user's
//! rows (a charge: consume, hold, settle, release; a grant, an admin
//! adjustment, a void, a redemption; a login, a refresh; a job's creation,
//! claim and run; an idempotency key's claim) locks the user's row and
//! takes the lock *shared*, so such writes of different users run at
//! once, while still never overlapping any other write (which takes the
//! lock exclusively); one waiting for its user's row holds no part of the
//! lock.
//! ARCHITECTURE.md argues, per path, why that stays exact. The sealer
//! (`WriteMode::Rows`) takes the lock shared too and waits for no row (it
//! reads from its snapshot and skips rows locked elsewhere), so neither a
//! charge in flight nor a row an operator holds makes it wait, or anyone
//! wait behind it.
//!
//! This module owns connections and transactions; it never holds SQL of a
//! module (that lives in each module's storage layer).

use super::StorageError;
use super::sql::{Conn, PgClient};
use r2d2_postgres::PostgresConnectionManager;
use std::time::Duration;

mod embedded {
    refinery::embed_migrations!("migrations_pg");
}

/// Connections per instance. Several instances share the server's
/// `max_connections` (100 by default): three instances at 32 fit.
pub const PG_POOL_SIZE_MAX: u32 = 32;
/// How long a request waits for a pooled connection.
pub const PG_POOL_WAIT_S: u64 = 10;
/// Connecting to the server, per attempt.
pub const PG_CONNECT_TIMEOUT_S: u64 = 5;
/// Times one write transaction runs when the server reports a conflict
/// (serialization failure, deadlock); the last failure is returned.
pub const PG_WRITE_ATTEMPTS_MAX: u32 = 5;
/// The advisory lock every write transaction takes (and migrations, across
/// instances starting at once). An arbitrary constant: "tollgat" in ASCII.
const WRITE_LOCK_KEY: i64 = 0x0074_6f6c_6c67_6174;

/// Past a statement's own limit, how long more a request waits for the
/// server before it gives the connection up: the server normally cancels
/// the statement first (a clear error, the connection kept); this is for a
/// server that cannot (frozen, SIGSTOPped, its host gone silent).
pub const PG_IO_GRACE_MS: u64 = 250;

/// Opens pooled connections; with `io_timeout`, every wait for the server
/// on them is bounded (vendor/postgres/PATCHES.md).
struct Manager {
    inner: PostgresConnectionManager<postgres::NoTls>,
    io_timeout: Option<Duration>,
}

impl r2d2::ManageConnection for Manager {
    type Connection = PgClient;
    type Error = postgres::Error;

    fn connect(&self) -> Result<PgClient, postgres::Error> {
        let mut client = self.inner.connect()?;
        client.set_io_timeout(self.io_timeout);
        Ok(PgClient::new(client))
    }

    /// Checked on every checkout without a round trip (a query here cost
    /// every request one per checkout): reading what the server sent
    /// unasked, without waiting, finds a connection it closed (a restart,
    /// an administrator's terminate: its error and the socket's end), which
    /// is then replaced. A server gone silent is found by the bound on
    /// each wait instead.
    fn is_valid(&self, c: &mut PgClient) -> Result<(), postgres::Error> {
        use postgres::fallible_iterator::FallibleIterator;
        c.client().notifications().iter().next()?;
        if c.client().is_closed() {
            // Fails at once, with the client's own "connection closed".
            return c.client().simple_query("").map(|_| ());
        }
        Ok(())
    }

    fn has_broken(&self, c: &mut PgClient) -> bool {
        c.client().is_closed()
    }
}

/// How a write transaction keeps other writes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// No other write of any instance runs at the same time.
    Exclusive,
    /// A write of this user's rows (a charge, a grant, a login, a job's
    /// claim...): such writes of other users run at the same time; other
    /// writes and other writes of this user do not. Its row is locked
    /// before the write lock (see `begin_user_write`).
    User(i64),
    /// A write that never waits for a row lock (it reads from its snapshot
    /// and skips rows locked elsewhere, `FOR UPDATE SKIP LOCKED`): it runs
    /// beside charges, and no other write runs beside it.
    Rows,
}

impl WriteMode {
    /// A charge of `user`, or an exclusive write when there is none.
    pub fn for_user(user: Option<crate::domain::UserId>) -> WriteMode {
        user.map_or(WriteMode::Exclusive, |u| WriteMode::User(u.0))
    }

    /// BEGIN and the locks, sent as one batch: one round trip.
    fn begin(self) -> String {
        match self {
            WriteMode::Exclusive => format!("BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK_KEY})"),
            WriteMode::User(user) => format!(
                "BEGIN; SELECT pg_advisory_xact_lock_shared({WRITE_LOCK_KEY}); SELECT 1 FROM users WHERE id = {user} FOR UPDATE"
            ),
            WriteMode::Rows => format!("BEGIN; SELECT pg_advisory_xact_lock_shared({WRITE_LOCK_KEY})"),
        }
    }
}

/// Begins a write of `user`'s rows: its row locked first, waiting as long
/// as it must, then the write lock taken shared *without* waiting, in one
/// round trip. A write waiting for its user's row (held by another write
/// of that user, or by an operator's open transaction) so holds no part of
/// the write lock, and an exclusive write meanwhile neither waits for it
/// nor makes every later charge queue behind itself (PostgreSQL queues a
/// shared request behind a waiting exclusive one). When the write lock is
/// taken or wanted exclusively at that moment, the row is let go and both
/// are taken the other way round, waiting for the write lock first (as
/// every exclusive write takes it before any row, no two transactions
/// ever wait for each other in a circle).
fn begin_user_write(c: &mut postgres::Client, user: i64) -> Result<(), postgres::Error> {
    let answers = c.simple_query(&format!(
        "BEGIN; SELECT 1 FROM users WHERE id = {user} FOR UPDATE; SELECT pg_try_advisory_xact_lock_shared({WRITE_LOCK_KEY})"
    ))?;
    let shared = answers.iter().rev().find_map(|m| match m {
        postgres::SimpleQueryMessage::Row(r) => r.get(0),
        _ => None,
    });
    if shared == Some("t") {
        return Ok(());
    }
    c.batch_execute(&format!("ROLLBACK; {}", WriteMode::User(user).begin()))
}

/// A PostgreSQL database shared by any number of tollgate instances.
pub struct PgDb {
    pool: r2d2::Pool<Manager>,
    /// The pooled connections' bound on a wait for the server, if any.
    io_timeout: Option<Duration>,
}

/// What bounds a request connection's statements: the server cancels a
/// statement past `statement_timeout_ms` and a lock wait past
/// `lock_timeout_ms` (SQLSTATE 57014 / 55P03), so a hung statement or a
/// lock held elsewhere frees the worker with a clear 503; a server that
/// answers nothing at all is given up [`PG_IO_GRACE_MS`] later, and a
/// pooled connection is waited for no longer than a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub statement_timeout_ms: u64,
    pub lock_timeout_ms: u64,
}

fn config(url: &str) -> Result<postgres::Config, StorageError> {
    let mut config: postgres::Config = url.parse().map_err(|e| {
        StorageError::Pool(format!("invalid PostgreSQL URL ({e}); expected postgres://user@host:port/db"))
    })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(PG_CONNECT_TIMEOUT_S));
    }
    config.application_name("tollgate");
    Ok(config)
}

/// Brings a PostgreSQL database to the newest schema, under the write lock
/// so that instances starting together migrate once. The number applied.
pub fn migrate(url: &str) -> Result<usize, StorageError> {
    let mut client = config(url)?.connect(postgres::NoTls)?;
    client.query_one("SELECT pg_advisory_lock($1)", &[&WRITE_LOCK_KEY])?;
    let report = embedded::migrations::runner().run(&mut client);
    client.query_one("SELECT pg_advisory_unlock($1)", &[&WRITE_LOCK_KEY])?;
    let report = report.map_err(|e| StorageError::Migration(e.to_string()))?;
    Ok(report.applied_migrations().len())
}

impl PgDb {
    /// Connects, migrates, and fills the pool; with `bounds`, every pooled
    /// connection's statements are bounded by them.
    pub fn open(url: &str, bounds: Option<Bounds>) -> Result<PgDb, StorageError> {
        let applied = migrate(url)?;
        if applied > 0 {
            log::info!("applied {applied} migration(s) to the PostgreSQL database");
        }
        let mut pooled = config(url)?;
        let mut pool_wait = Duration::from_secs(PG_POOL_WAIT_S);
        if let Some(b) = bounds {
            let given = pooled.get_options().unwrap_or("").to_owned();
            pooled.options(&format!(
                "{given} -c statement_timeout={} -c lock_timeout={}",
                b.statement_timeout_ms, b.lock_timeout_ms
            ));
            pool_wait = pool_wait.min(Duration::from_millis(b.statement_timeout_ms));
        }
        let manager = Manager {
            inner: PostgresConnectionManager::new(pooled, postgres::NoTls),
            io_timeout: bounds.map(|b| Duration::from_millis(b.statement_timeout_ms + PG_IO_GRACE_MS)),
        };
        let io_timeout = manager.io_timeout;
        let pool = r2d2::Pool::builder()
            .max_size(PG_POOL_SIZE_MAX)
            .min_idle(Some(2))
            .connection_timeout(pool_wait)
            .build(manager)
            .map_err(|e| StorageError::Pool(e.to_string()))?;
        Ok(PgDb { pool, io_timeout })
    }

    fn get(&self) -> Result<r2d2::PooledConnection<Manager>, StorageError> {
        self.pool.get().map_err(|e| StorageError::Pool(e.to_string()))
    }

    /// Runs `f` on a pooled connection, each statement on its own.
    pub fn read<T, E: From<StorageError>>(&self, f: impl FnOnce(&Conn<'_>) -> Result<T, E>) -> Result<T, E> {
        let mut c = self.get()?;
        f(&Conn::pg(&mut c))
    }

    /// [`PgDb::read`] with no statement or lock timeout, for the long reads
    /// of an operator (the audit); the connection's bounds come back after.
    pub fn read_unbounded<T, E: From<StorageError>>(&self, f: impl FnOnce(&Conn<'_>) -> Result<T, E>) -> Result<T, E> {
        let mut c = self.get()?;
        c.client().batch_execute("SET statement_timeout = 0; SET lock_timeout = 0").map_err(StorageError::from)?;
        c.client().set_io_timeout(None);
        let out = f(&Conn::pg(&mut c));
        c.client().set_io_timeout(self.io_timeout);
        if let Err(e) = c.client().batch_execute("RESET statement_timeout; RESET lock_timeout") {
            log::warn!("could not restore a connection's timeouts: {e}");
        }
        out
    }

    /// Runs `f` in a write transaction and commits it; `f` runs again (up
    /// to [`PG_WRITE_ATTEMPTS_MAX`] times) when the server gives up on the
    /// transaction for a conflict. On failure nothing of `f` stays.
    pub fn write<T, E: From<StorageError>>(
        &self,
        mode: WriteMode,
        f: impl Fn(&Conn<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut attempt = 1;
        loop {
            match self.attempt(mode, &f) {
                Err(Attempt::Conflict(e)) if attempt < PG_WRITE_ATTEMPTS_MAX => {
                    log::debug!("write transaction conflicted ({e}); running it again");
                    attempt += 1;
                }
                Err(Attempt::Conflict(e)) => return Err(E::from(e)),
                Err(Attempt::Failed(e)) => return Err(e),
                Ok(v) => return Ok(v),
            }
        }
    }

    /// [`PgDb::write`] for a closure that can run only once: a conflict is
    /// returned, not retried.
    pub fn write_once<T, E: From<StorageError>>(&self, f: impl FnOnce(&Conn<'_>) -> Result<T, E>) -> Result<T, E> {
        match self.attempt(WriteMode::Exclusive, f) {
            Ok(v) => Ok(v),
            Err(Attempt::Conflict(e)) => Err(E::from(e)),
            Err(Attempt::Failed(e)) => Err(e),
        }
    }

    /// One write transaction running `f` once.
    fn attempt<T, E: From<StorageError>>(
        &self,
        mode: WriteMode,
        f: impl FnOnce(&Conn<'_>) -> Result<T, E>,
    ) -> Result<T, Attempt<E>> {
        let mut c = self.get().map_err(|e| Attempt::Failed(E::from(e)))?;
        // A conflict noted by an earlier read on this pooled connection is
        // not this transaction's.
        let _ = c.take_conflict();
        // BEGIN and the lock in one round trip: the lock is held from here
        // to the commit's answer, so every round trip inside it counts.
        let begun = match mode {
            WriteMode::User(user) => begin_user_write(c.client(), user),
            _ => c.client().batch_execute(&mode.begin()),
        };
        if let Err(e) = begun {
            let _ = c.client().batch_execute("ROLLBACK");
            return Err(Attempt::classify(StorageError::from(e)));
        }
        let (locked, sent) = (std::time::Instant::now(), c.round_trips());
        let out = f(&Conn::pg(&mut c));
        let conflict = c.take_conflict();
        match out {
            Ok(v) => match c.client().batch_execute("COMMIT") {
                Ok(()) => {
                    let m = crate::metrics::global();
                    // The statements, plus BEGIN-and-lock and COMMIT.
                    let trips = (c.round_trips() - sent + 2) as f64;
                    m.pg_write_round_trips.with_label_values::<&str>(&[]).observe(trips);
                    m.pg_write_lock_held_seconds.with_label_values::<&str>(&[]).observe(locked.elapsed().as_secs_f64());
                    Ok(v)
                }
                Err(e) => Err(Attempt::classify(StorageError::from(e))),
            },
            Err(e) => {
                if let Err(r) = c.client().batch_execute("ROLLBACK") {
                    log::warn!("rollback failed: {r}");
                }
                Err(match conflict {
                    Some(c) => Attempt::Conflict(c),
                    None => Attempt::Failed(e),
                })
            }
        }
    }
}

enum Attempt<E> {
    /// The server gave up on the transaction for a concurrent one; running
    /// it again is the answer.
    Conflict(StorageError),
    Failed(E),
}

impl<E: From<StorageError>> Attempt<E> {
    fn classify(e: StorageError) -> Attempt<E> {
        if e.is_retryable() { Attempt::Conflict(e) } else { Attempt::Failed(E::from(e)) }
    }
}

/// Creates a fresh, empty database on the server at `base` (a URL whose
/// user may create databases) and returns its URL: each test gets its own.
pub fn create_database(base: &str, name: &str) -> Result<String, StorageError> {
    let mut url = url::Url::parse(base).map_err(|e| StorageError::Pool(format!("invalid PostgreSQL URL ({e})")))?;
    let mut admin = config(base)?.connect(postgres::NoTls)?;
    admin.batch_execute(&format!("CREATE DATABASE {name}"))?;
    // The same server, user, password and options; another database.
    url.set_path(name);
    Ok(url.into())
}

/// A fresh database on the test server named by `TOLLGATE_TEST_PG_URL`
/// (which `scripts/test` starts), or `None` when no server is configured:
/// the PostgreSQL tests then say they were skipped, except under `CI`,
/// where a missing server fails them.
pub fn test_database() -> Option<String> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let Ok(base) = std::env::var("TOLLGATE_TEST_PG_URL") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs every suite: start PostgreSQL with scripts/test (or set TOLLGATE_TEST_PG_URL)"
        );
        eprintln!("skipped: PostgreSQL suite (TOLLGATE_TEST_PG_URL is not set; scripts/test starts a server)");
        return None;
    };
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let name = format!("t_{}_{}_{nanos}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    Some(create_database(&base, &name).expect("create a test database"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Db, Engine, Synchronous};
    use rusqlite::params;
    use std::collections::BTreeMap;

    type Columns = BTreeMap<String, Vec<String>>;

    fn columns(db: &Db) -> Columns {
        let sql = match db.engine() {
            Engine::Sqlite => {
                "SELECT m.name, p.name FROM sqlite_master m, pragma_table_info(m.name) p
                 WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND m.name <> 'refinery_schema_history'
                 ORDER BY m.name, p.cid"
            }
            Engine::Postgres => {
                "SELECT table_name::TEXT, column_name::TEXT FROM information_schema.columns
                 WHERE table_schema = 'public' AND table_name <> 'refinery_schema_history'
                 ORDER BY table_name, ordinal_position"
            }
        };
        let rows = db
            .read(|c| c.query_all(sql, &[], |r| Ok((r.get::<String>(0)?, r.get::<String>(1)?))))
            .expect("read the schema");
        let mut out = Columns::new();
        for (table, column) in rows {
            out.entry(table).or_default().push(column);
        }
        out
    }

    #[test]
    fn the_postgresql_schema_has_every_table_and_column_of_sqlites_in_order() {
        let Some(url) = test_database() else { return };
        let pg = Db::open_postgres(&url).expect("open PostgreSQL");
        let (_dir, sqlite) = crate::storage::temp_db(Synchronous::Normal);
        let (a, b) = (columns(&sqlite), columns(&pg));
        assert!(a.len() > 25, "{a:?}");
        assert_eq!(a, b);
        // migrate-to-postgres copies every table.
        let mut copied: Vec<&str> = crate::storage::copy::TABLES_IN_COPY_ORDER.to_vec();
        copied.sort_unstable();
        assert_eq!(copied, a.keys().map(String::as_str).collect::<Vec<_>>());
        // The rows migrations seed are the same too.
        let seeded = |db: &Db| -> Vec<(String, String)> {
            db.read(|c| {
                c.query_all("SELECT key, value FROM settings ORDER BY key", &[], |r| Ok((r.get(0)?, r.get(1)?)))
            })
            .expect("settings")
        };
        assert_eq!(seeded(&sqlite), seeded(&pg));
        // Opening again applies nothing: the history is shared by instances.
        assert_eq!(migrate(&url).expect("migrate again"), 0);
    }

    /// What the storage modules rely on: typed ids, options, booleans as
    /// 0/1, bytes, `?N` used twice, `?N IS NULL OR` filters, RETURNING.
    fn round_trip(db: &Db) {
        use crate::domain::{Timestamp, UserId};
        let id: UserId = db
            .write(|c| {
                c.query_one(
                    "INSERT INTO users (email, password_hash, role, created_at) VALUES (?1, 'h', ?2, ?3) RETURNING id",
                    params!["a@example.com", "user", Timestamp(7)],
                    |r| r.get(0),
                )
            })
            .expect("insert");
        db.write(move |c| {
            c.execute(
                "INSERT INTO logs (log_type, level, action, success, user_id, created_at) VALUES ('business', 'info', 'x', ?1, ?2, 1)",
                params![true, id],
            )?;
            c.execute(
                "INSERT INTO idempotency_keys (user_id, key, fingerprint, state, body, created_at) VALUES (?1, 'k', 'f', 'done', ?2, 1)",
                params![id, vec![0u8, 255, 1]],
            )
        })
        .expect("insert a log and a key");
        let found: Vec<(UserId, Option<Timestamp>, bool, Vec<u8>)> = db
            .read(|c| {
                c.query_all(
                    "SELECT u.id, u.deleted_at, l.success, k.body FROM users u
                     JOIN logs l ON l.user_id = u.id JOIN idempotency_keys k ON k.user_id = u.id
                     WHERE (CAST(?1 AS TEXT) IS NULL OR u.email = ?1) AND u.created_at = ?2",
                    params![Option::<String>::None, 7],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
            })
            .expect("read back");
        assert_eq!(found, vec![(id, None, true, vec![0, 255, 1])]);
        let none: Option<i64> = db
            .read(|c| c.query_opt("SELECT id FROM users WHERE email = ?1", params!["b@example.com"], |r| r.get(0)))
            .expect("read nothing");
        assert_eq!(none, None);
        let sum: i64 = db
            .read(|c| c.query_one("SELECT CAST(COALESCE(SUM(credits), 0) AS BIGINT) FROM users", &[], |r| r.get(0)))
            .expect("sum");
        assert_eq!(sum, 0);
    }

    #[test]
    fn values_round_trip_the_same_on_both_engines() {
        let (_dir, sqlite) = crate::storage::temp_db(Synchronous::Normal);
        round_trip(&sqlite);
        let Some(url) = test_database() else { return };
        round_trip(&Db::open_postgres(&url).expect("open PostgreSQL"));
    }

    /// Two pools on one database stand for two instances: a read-then-write
    /// closure on each, racing, loses no update, because write transactions
    /// never overlap.
    #[test]
    fn racing_read_then_write_closures_from_two_instances_lose_nothing() {
        let Some(url) = test_database() else { return };
        let instances = [Db::open_postgres(&url).expect("open"), Db::open_postgres(&url).expect("open again")];
        instances[0].write(|c| c.execute("INSERT INTO settings (key, value) VALUES ('n', '0')", &[])).expect("seed");
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let db = instances[t % 2].clone();
                std::thread::spawn(move || {
                    for _ in 0..25 {
                        db.write(|c| {
                            let n: String =
                                c.query_one("SELECT value FROM settings WHERE key = 'n'", &[], |r| r.get(0))?;
                            let n: i64 = n.parse().map_err(|_| StorageError::Column(n.clone()))?;
                            c.execute("UPDATE settings SET value = ?1 WHERE key = 'n'", params![(n + 1).to_string()])
                        })
                        .expect("increment");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("a racing thread");
        }
        let n: String = instances[1]
            .read(|c| c.query_one("SELECT value FROM settings WHERE key = 'n'", &[], |r| r.get(0)))
            .unwrap();
        assert_eq!(n, "200");
    }

    #[test]
    fn a_failed_write_leaves_nothing_and_sqlite_only_code_fails_cleanly() {
        let Some(url) = test_database() else { return };
        let db = Db::open_postgres(&url).expect("open");
        let r: Result<(), StorageError> = db.write(|c| {
            c.execute("INSERT INTO settings (key, value) VALUES ('gone', 'x')", &[])?;
            Err(StorageError::NoRow)
        });
        assert!(matches!(r, Err(StorageError::NoRow)));
        let n: i64 =
            db.read(|c| c.query_one("SELECT count(*) FROM settings WHERE key = 'gone'", &[], |r| r.get(0))).unwrap();
        assert_eq!(n, 0);
        let err = db.read(|c| c.sqlite().map(|_| ()).map_err(StorageError::from)).unwrap_err();
        assert!(err.to_string().contains("SQLite-only code called on a PostgreSQL connection"), "{err}");
    }

    /// Counts the sessions of this database waiting for a lock.
    fn lock_waiters(db: &Db) -> i64 {
        db.read(|c| {
            c.query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
                &[],
                |r| r.get(0),
            )
        })
        .expect("pg_stat_activity")
    }

    /// Waits (at most 10 s) until `n` sessions wait for a lock.
    fn until_waiting(db: &Db, n: i64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while lock_waiters(db) < n {
            assert!(std::time::Instant::now() < deadline, "no session waited for a lock");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// While a charge of user 1 is open: a charge of user 2 runs and
    /// commits beside it, while another charge of user 1 and any other
    /// write wait until it ends.
    #[test]
    fn a_charge_runs_beside_other_users_charges_and_apart_from_everything_else() {
        use crate::domain::UserId;
        use std::sync::mpsc::channel;
        let Some(url) = test_database() else { return };
        let db = Db::open_postgres(&url).expect("open");
        for email in ["a@example.com", "b@example.com"] {
            db.write(move |c| {
                c.execute(
                    "INSERT INTO users (email, password_hash, role, created_at) VALUES (?1, 'h', 'user', 1)",
                    params![email],
                )
            })
            .expect("a user");
        }
        let (inside_tx, inside) = channel();
        let (release_tx, release) = channel::<()>();
        let release = std::sync::Mutex::new(release);
        let first = {
            let db = db.clone();
            std::thread::spawn(move || {
                db.write_for_user(Some(UserId(1)), move |c| {
                    c.execute("UPDATE users SET credits = credits + 1 WHERE id = 1", &[])?;
                    let _ = inside_tx.send(());
                    let _ = release.lock().map(|r| r.recv());
                    Ok::<_, StorageError>(())
                })
            })
        };
        inside.recv().expect("the first charge began");
        // Another user's charge commits while the first is open.
        db.write_for_user(Some(UserId(2)), |c| c.execute("UPDATE users SET credits = credits + 1 WHERE id = 2", &[]))
            .expect("a charge beside it");
        // The same user's charge and an exclusive write wait.
        let same = {
            let db = db.clone();
            std::thread::spawn(move || {
                db.write_for_user(Some(UserId(1)), |c| {
                    c.execute("UPDATE users SET credits = credits + 1 WHERE id = 1", &[])
                })
            })
        };
        until_waiting(&db, 1);
        let other = {
            let db = db.clone();
            std::thread::spawn(move || {
                db.write(|c| c.execute("UPDATE users SET credits = credits + 10 WHERE id = 2", &[]))
            })
        };
        until_waiting(&db, 2);
        let credits = |id: i64| -> i64 {
            db.read(|c| c.query_one("SELECT credits FROM users WHERE id = ?1", params![id], |r| r.get(0))).unwrap()
        };
        assert_eq!((credits(1), credits(2)), (0, 1), "only the charge beside it has committed");
        release_tx.send(()).expect("release the first charge");
        first.join().expect("first").expect("first commits");
        same.join().expect("same").expect("same commits");
        other.join().expect("other").expect("other commits");
        assert_eq!((credits(1), credits(2)), (2, 11));
    }
}
