//! The PostgreSQL engine: its connection pool, its migrations, and write
//! transactions that run again when the server asks for it.
//!
//! Writes are serialized across every connection of every instance by one
//! transaction-scoped advisory lock, taken first in each write transaction.
//! That gives every write closure the guarantee SQLite's single writer gives
//! it (nothing else writes between its checks and its writes), so the code
//! written for SQLite is exact on PostgreSQL too, with several instances on
//! one database. It also keeps the ledger's hash chain one total order. The
//! cost is that write transactions do not overlap (see ARCHITECTURE.md).
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

struct Manager(PostgresConnectionManager<postgres::NoTls>);

impl r2d2::ManageConnection for Manager {
    type Connection = PgClient;
    type Error = postgres::Error;

    fn connect(&self) -> Result<PgClient, postgres::Error> {
        self.0.connect().map(PgClient::new)
    }

    fn is_valid(&self, c: &mut PgClient) -> Result<(), postgres::Error> {
        c.client().simple_query("").map(|_| ())
    }

    fn has_broken(&self, c: &mut PgClient) -> bool {
        c.client().is_closed()
    }
}

/// A PostgreSQL database shared by any number of tollgate instances.
pub struct PgDb {
    pool: r2d2::Pool<Manager>,
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
    /// Connects, migrates, and fills the pool.
    pub fn open(url: &str) -> Result<PgDb, StorageError> {
        let applied = migrate(url)?;
        if applied > 0 {
            log::info!("applied {applied} migration(s) to the PostgreSQL database");
        }
        let manager = Manager(PostgresConnectionManager::new(config(url)?, postgres::NoTls));
        let pool = r2d2::Pool::builder()
            .max_size(PG_POOL_SIZE_MAX)
            .min_idle(Some(2))
            .connection_timeout(Duration::from_secs(PG_POOL_WAIT_S))
            .build(manager)
            .map_err(|e| StorageError::Pool(e.to_string()))?;
        Ok(PgDb { pool })
    }

    fn get(&self) -> Result<r2d2::PooledConnection<Manager>, StorageError> {
        self.pool.get().map_err(|e| StorageError::Pool(e.to_string()))
    }

    /// Runs `f` on a pooled connection, each statement on its own.
    pub fn read<T, E: From<StorageError>>(&self, f: impl FnOnce(&Conn<'_>) -> Result<T, E>) -> Result<T, E> {
        let mut c = self.get()?;
        f(&Conn::pg(&mut c))
    }

    /// Runs `f` in a write transaction and commits it; `f` runs again (up
    /// to [`PG_WRITE_ATTEMPTS_MAX`] times) when the server gives up on the
    /// transaction for a conflict. On failure nothing of `f` stays.
    pub fn write<T, E: From<StorageError>>(&self, f: impl Fn(&Conn<'_>) -> Result<T, E>) -> Result<T, E> {
        let mut attempt = 1;
        loop {
            match self.write_once_attempt(&f) {
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
        let f = std::cell::Cell::new(Some(f));
        let once = |c: &Conn<'_>| match f.take() {
            Some(f) => f(c),
            None => Err(E::from(StorageError::WriterGone)),
        };
        match self.write_once_attempt(&once) {
            Ok(v) => Ok(v),
            Err(Attempt::Conflict(e)) => Err(E::from(e)),
            Err(Attempt::Failed(e)) => Err(e),
        }
    }

    fn write_once_attempt<T, E: From<StorageError>>(
        &self,
        f: &impl Fn(&Conn<'_>) -> Result<T, E>,
    ) -> Result<T, Attempt<E>> {
        let mut c = self.get().map_err(|e| Attempt::Failed(E::from(e)))?;
        let begun = c.client().batch_execute("BEGIN").map_err(StorageError::from).and_then(|()| {
            c.client().query_one("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK_KEY]).map_err(StorageError::from)
        });
        if let Err(e) = begun {
            let _ = c.client().batch_execute("ROLLBACK");
            return Err(Attempt::classify(e));
        }
        let out = f(&Conn::pg(&mut c));
        let conflict = c.take_conflict();
        match out {
            Ok(v) => match c.client().batch_execute("COMMIT") {
                Ok(()) => Ok(v),
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
