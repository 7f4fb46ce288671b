//! The database: opening it, migrating it, and the two ways in. The
//! default engine is one SQLite file; PostgreSQL (`pg.rs`) is the second,
//! for several instances on one database, behind the same `Db` and the same
//! `Conn` (`sql.rs`): every storage module runs on both.
//!
//! Reads use an r2d2 pool of `query_only` connections. Every write goes
//! through the single [`Writer`] thread, which owns the only connection that may
//! write and commits in groups (see `writer.rs`). Copying the WAL back into
//! the database file (checkpoints) runs on a thread of its own
//! (`checkpoint.rs`). Only `storage` and the
//! `storage.rs` files of each module hold SQL; nothing here knows about
//! HTTP or business rules.
//!
//! # Durability
//! `synchronous=FULL` by default: a write acknowledged to a client has been
//! fsynced and survives power loss (the writer's syncer thread does the
//! fsync, see `writer.rs`). `NORMAL` (configurable) may lose the last groups
//! on power loss but never corrupts the file.

pub mod backup;
mod checkpoint;
pub mod copy;
pub mod pg;
pub mod sql;
mod writer;

pub use crate::config::Synchronous;
pub use crate::error::{NotCommitted, StorageError};
pub use sql::{Conn, Engine, Row, Sql, Write};

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use writer::Writer;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// How long a connection waits on a lock held by another process (the CLI,
/// a backup) before giving up with `SQLITE_BUSY`.
pub const BUSY_TIMEOUT_MS: u64 = 5_000;
/// Readers in the pool; reads are short, so a few cover many HTTP workers.
pub const READ_POOL_SIZE_MAX: u32 = 16;
/// Prepared statements kept per connection; the writer's connection runs
/// every write statement of every module.
const STATEMENT_CACHE_MAX: usize = 128;

/// The database handle every module gets: either engine. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Sqlite(SqliteDb),
    Postgres(Arc<pg::PgDb>),
}

#[derive(Clone)]
struct SqliteDb {
    readers: r2d2::Pool<SqliteConnectionManager>,
    writer: Arc<Writer>,
    _checkpointer: Arc<checkpoint::Checkpointer>,
}

fn apply_pragmas(conn: &Connection, sync: Synchronous) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS))?;
    // temp_store=MEMORY keeps the writer's savepoint sub-journals off disk.
    conn.execute_batch(&format!(
        "PRAGMA journal_mode=WAL; PRAGMA foreign_keys=ON; PRAGMA synchronous={}; PRAGMA temp_store=MEMORY;",
        sync.pragma()
    ))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_MAX);
    Ok(())
}

/// Opens a plain read-write connection with our pragmas, for the CLI tools
/// (migrate, backup, restore) that must not start a writer thread.
pub fn open_connection(path: &Path, sync: Synchronous) -> Result<Connection, StorageError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StorageError::open(path, e))?;
    apply_pragmas(&conn, sync).map_err(|e| StorageError::open(path, e))?;
    Ok(conn)
}

/// Brings the schema to the newest version. Safe to run on every start.
pub fn migrate(conn: &mut Connection) -> Result<usize, StorageError> {
    run_migrations(conn, embedded::migrations::runner())
}

/// Brings the schema to exactly `version` (for upgrade tests, which build a
/// database as an older release left it).
pub fn migrate_to(conn: &mut Connection, version: i32) -> Result<usize, StorageError> {
    run_migrations(conn, embedded::migrations::runner().set_target(refinery::Target::Version(version)))
}

/// Migrations run with foreign keys off, as SQLite requires for rebuilding
/// a referenced table (V7), and every reference is checked after: a
/// migration that left one dangling fails the start.
fn run_migrations(conn: &mut Connection, runner: refinery::Runner) -> Result<usize, StorageError> {
    conn.execute_batch("PRAGMA foreign_keys=OFF")?;
    let report = runner.run(conn);
    conn.execute_batch("PRAGMA foreign_keys=ON")?;
    let report = report.map_err(|e| StorageError::Migration(e.to_string()))?;
    let dangling: Option<String> =
        conn.query_row("PRAGMA foreign_key_check", [], |r| r.get::<_, String>(0)).optional()?;
    if let Some(table) = dangling {
        return Err(StorageError::Migration(format!("a migration left a dangling reference in {table}")));
    }
    Ok(report.applied_migrations().len())
}

/// A small real write (a row in `settings`), for the readiness check: a
/// transaction with no change would commit even on a full disk.
pub fn probe_write(conn: &Conn<'_>, now_ms: i64) -> Result<(), StorageError> {
    conn.execute(
        "INSERT INTO settings(key, value) VALUES ('ready_probe', ?1)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        rusqlite::params![now_ms.to_string()],
    )
    .map(|_| ())
}

/// Bytes an unprivileged writer may still use on the file system that holds
/// `path` (the database file or its folder).
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    let dir = match path.parent() {
        Some(p) if path.is_file() && !p.as_os_str().is_empty() => p,
        Some(_) if path.is_file() => Path::new("."),
        _ => path,
    };
    let s = rustix::fs::statvfs(dir)?;
    Ok(s.f_bavail.saturating_mul(s.f_frsize))
}

/// The newest schema version this binary knows.
pub fn schema_version_max() -> i64 {
    embedded::migrations::runner().get_migrations().iter().map(|m| i64::from(m.version())).max().unwrap_or(0)
}

/// The schema version a database file is at (0 for a new file).
pub fn schema_version(conn: &Connection) -> Result<i64, StorageError> {
    let exists: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type='table' AND name='refinery_schema_history'",
        [],
        |r| r.get(0),
    )?;
    if !exists {
        return Ok(0);
    }
    Ok(conn.query_row("SELECT COALESCE(MAX(version), 0) FROM refinery_schema_history", [], |r| r.get(0))?)
}

/// A fresh database in a temporary directory (`test.db`), for unit tests.
#[cfg(test)]
pub(crate) fn temp_db(sync: Synchronous) -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(&dir.path().join("test.db"), sync).expect("open a test database");
    (dir, db)
}

/// A fresh database on each engine the tests can reach: SQLite always,
/// PostgreSQL when `TOLLGATE_TEST_PG_URL` names a server (see
/// [`pg::test_database`]). The guard keeps SQLite's temp dir alive.
#[cfg(test)]
pub(crate) fn test_engines() -> Vec<(Option<tempfile::TempDir>, Db)> {
    let (dir, sqlite) = temp_db(Synchronous::Normal);
    let mut out = vec![(Some(dir), sqlite)];
    if let Some(url) = pg::test_database() {
        out.push((None, Db::open_postgres(&url).expect("open a PostgreSQL test database")));
    }
    out
}

impl Db {
    /// Opens (creating if needed) and migrates the file, then starts the writer.
    pub fn open(path: &Path, sync: Synchronous) -> Result<Db, StorageError> {
        let mut conn = open_connection(path, sync)?;
        let applied = migrate(&mut conn)?;
        if applied > 0 {
            log::info!("applied {applied} migration(s) to {}", path.display());
        }
        let manager = SqliteConnectionManager::file(path)
            .with_flags(OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .with_init(move |c| {
                apply_pragmas(c, sync)?;
                // Readers must never write: every write goes through the
                // writer, which is what makes the ledger's order total.
                c.execute_batch("PRAGMA query_only=1;")
            });
        let readers = r2d2::Pool::builder()
            .max_size(READ_POOL_SIZE_MAX)
            .min_idle(Some(2))
            .connection_timeout(Duration::from_secs(10))
            // A SQLite connection does not go stale; checking costs a prepare.
            .test_on_check_out(false)
            .build(manager)
            .map_err(|e| StorageError::Pool(e.to_string()))?;
        // Checkpoints run on their own thread (see `checkpoint.rs`).
        conn.execute_batch("PRAGMA wal_autocheckpoint=0;").map_err(|e| StorageError::open(path, e))?;
        let catch_up = checkpoint::CatchUp::default();
        let checkpointer = checkpoint::Checkpointer::start(open_connection(path, sync)?, catch_up.clone())
            .map_err(|e| StorageError::Pool(format!("cannot start the checkpoint thread: {e}")))?;
        // At FULL the writer commits at NORMAL and its syncer fsyncs the WAL
        // before answering: the same guarantee, without stopping the writer.
        let sync_wal = match sync {
            Synchronous::Full => {
                conn.execute_batch("PRAGMA synchronous=NORMAL;").map_err(|e| StorageError::open(path, e))?;
                let mut wal = path.as_os_str().to_owned();
                wal.push("-wal");
                Some(std::path::PathBuf::from(wal))
            }
            Synchronous::Normal => None,
        };
        let writer = Writer::start(conn, sync_wal, catch_up)?;
        let sqlite = SqliteDb { readers, writer: Arc::new(writer), _checkpointer: Arc::new(checkpointer) };
        Ok(Db { backend: Backend::Sqlite(sqlite) })
    }

    /// Connects to a PostgreSQL database (`postgres://...`) and migrates it;
    /// statements are not bounded (the CLI, the copy, tests).
    pub fn open_postgres(url: &str) -> Result<Db, StorageError> {
        Ok(Db { backend: Backend::Postgres(Arc::new(pg::PgDb::open(url, None)?)) })
    }

    /// [`Db::open_postgres`] for serving requests: every statement bounded.
    pub fn open_postgres_bounded(url: &str, bounds: pg::Bounds) -> Result<Db, StorageError> {
        Ok(Db { backend: Backend::Postgres(Arc::new(pg::PgDb::open(url, Some(bounds))?)) })
    }

    /// [`Db::read`] with no statement timeout (the audit on PostgreSQL).
    pub fn read_unbounded<T, E: From<StorageError>>(&self, f: impl FnOnce(&Conn<'_>) -> Result<T, E>) -> Result<T, E> {
        match &self.backend {
            Backend::Postgres(p) => p.read_unbounded(f),
            Backend::Sqlite(_) => self.read(f),
        }
    }

    pub fn engine(&self) -> Engine {
        match &self.backend {
            Backend::Sqlite(_) => Engine::Sqlite,
            Backend::Postgres(_) => Engine::Postgres,
        }
    }

    /// Whether other tollgate processes may be serving from this database
    /// (PostgreSQL), so that work found in flight may be theirs, and a
    /// change they make reaches this process only by reading. A SQLite file
    /// has one server (its lock file).
    pub fn is_shared(&self) -> bool {
        self.engine() == Engine::Postgres
    }

    /// WAL fsyncs the writer's syncer has done (0 at `synchronous=NORMAL`,
    /// and on PostgreSQL, whose server does its own).
    pub fn fsyncs(&self) -> u64 {
        match &self.backend {
            Backend::Sqlite(s) => s.writer.fsyncs(),
            Backend::Postgres(_) => 0,
        }
    }

    /// Runs `f` on a pooled read connection.
    pub fn read<T, E: From<StorageError>>(&self, f: impl FnOnce(&Conn<'_>) -> Result<T, E>) -> Result<T, E> {
        match &self.backend {
            Backend::Sqlite(s) => {
                let conn = s.readers.get().map_err(|e| StorageError::Pool(e.to_string()))?;
                f(&Conn::Sqlite(&conn))
            }
            Backend::Postgres(p) => p.read(f),
        }
    }

    /// Runs `f` inside the writer's transaction and returns once it is durably
    /// committed. If `f` fails, its changes are undone and its neighbours'
    /// stay. `f` may run more than once (an `Fn`): when a closure grouped
    /// with it fails after writing, the writer rolls the group back and runs
    /// the others again, instead of paying a savepoint per closure. So `f`
    /// must do nothing outside the database that cannot happen twice.
    pub fn write<T, E>(&self, f: impl Fn(&Conn<'_>) -> Result<T, E> + Send + 'static) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StorageError> + Send + 'static,
    {
        self.write_as(pg::WriteMode::Exclusive, true, f)
    }

    /// [`Db::write`] for a write of `user`'s rows alone (a charge:
    /// consume, hold, settle, release; a grant, an admin adjustment, a
    /// void, a redemption; a login, a refresh; a job's creation, claim and
    /// run; an idempotency key's claim) that reads or writes no other
    /// user's money: on
    /// PostgreSQL it runs beside the writes of other users, with the
    /// user's row locked first (see `pg::WriteMode::User`). `None` is
    /// [`Db::write`]. SQLite has one writer either way.
    pub fn write_for_user<T, E>(
        &self,
        user: Option<crate::domain::UserId>,
        f: impl Fn(&Conn<'_>) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StorageError> + Send + 'static,
    {
        self.write_as(pg::WriteMode::for_user(user), true, f)
    }

    /// [`Db::write`] for a closure that waits for no row lock on
    /// PostgreSQL (the sealer: it reads from its snapshot and skips locked
    /// rows), so it runs beside charges instead of draining them (see
    /// `pg::WriteMode::Rows`). SQLite has one writer either way.
    pub fn write_rows<T, E>(&self, f: impl Fn(&Conn<'_>) -> Result<T, E> + Send + 'static) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StorageError> + Send + 'static,
    {
        self.write_as(pg::WriteMode::Rows, true, f)
    }

    /// [`Db::write_lazy`] for a charge of `user` alone (a hold), as
    /// [`Db::write_for_user`].
    pub fn write_lazy_for_user<T, E>(
        &self,
        user: Option<crate::domain::UserId>,
        f: impl Fn(&Conn<'_>) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StorageError> + Send + 'static,
    {
        self.write_as(pg::WriteMode::for_user(user), false, f)
    }

    /// Every replayable write: SQLite's writer, durable or lazy; on
    /// PostgreSQL, whose commit is durable or not by the server's
    /// `synchronous_commit` (there is no cheaper path to take), a
    /// transaction alone or beside other users' charges.
    fn write_as<T, E>(
        &self,
        mode: pg::WriteMode,
        durable: bool,
        f: impl Fn(&Conn<'_>) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StorageError> + Send + 'static,
    {
        match &self.backend {
            Backend::Sqlite(s) => s.writer.submit_replayable(durable, f),
            Backend::Postgres(p) => p.write(mode, f),
        }
    }

    /// [`Db::write`] for a closure that can run only once (it consumes what
    /// it captured, or acts outside the database): it runs in a savepoint of
    /// its own, so its failure never makes the group replay.
    pub fn write_once<T, E>(&self, f: impl FnOnce(&Conn<'_>) -> Result<T, E> + Send + 'static) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StorageError> + Send + 'static,
    {
        match &self.backend {
            Backend::Sqlite(s) => s.writer.submit_once(true, f),
            Backend::Postgres(p) => p.write_once(f),
        }
    }

    /// Runs `f(conn, batch)` in write transactions of its own until it
    /// reports fewer than `batch` rows; returns the total. For deletes of
    /// unbounded size (retention) that must never hold the writer for long.
    pub fn write_in_batches<E, F>(&self, batch: usize, f: F) -> Result<usize, E>
    where
        E: From<StorageError> + Send + 'static,
        F: Fn(&Conn<'_>, usize) -> Result<usize, E> + Clone + Send + 'static,
    {
        let mut total = 0;
        loop {
            let step = f.clone();
            let n = self.write(move |c| step(c, batch))?;
            total += n;
            if n < batch {
                return Ok(total);
            }
        }
    }

    /// Like [`Db::write`], but the caller may be answered before the commit
    /// is fsynced: for writes whose loss in a power cut is harmless because
    /// anything that depends on them is written durably later (a hold
    /// settled afterwards, an idempotency claim cleared at startup). WAL
    /// order makes every later durable commit carry these with it.
    pub fn write_lazy<T, E>(&self, f: impl Fn(&Conn<'_>) -> Result<T, E> + Send + 'static) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StorageError> + Send + 'static,
    {
        self.write_as(pg::WriteMode::Exclusive, false, f)
    }
}
