//! The single writer thread with group commit.
//!
//! Callers submit a closure and block until it is durable. The thread takes
//! every closure already queued (up to [`WRITER_GROUP_SIZE_MAX`]), runs each in
//! its own SAVEPOINT inside one `BEGIN IMMEDIATE` transaction, commits once and
//! only then answers each caller. A closure that fails (or panics) is rolled
//! back to its savepoint alone; its neighbours still commit. One fsync per
//! group instead of one per write is what makes a durable ledger fast.
//!
//! Because one thread runs every write in sequence, closures never race each
//! other: a check-then-write inside one closure is atomic with respect to all
//! other writes of this process, and `BEGIN IMMEDIATE` extends that to other
//! processes (the CLI) through SQLite's lock.
//!
//! This module must never run a closure outside a transaction, and never
//! answer a caller before the commit that contains its changes.

use super::StorageError;
use rusqlite::Connection;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::thread;
use std::time::Instant;

/// Most closures in one transaction. Bounds how long the first caller of a
/// group waits for the others, and how much work one failed commit undoes.
pub const WRITER_GROUP_SIZE_MAX: usize = 512;
/// Closures waiting for the writer. Past this, callers block in `submit`:
/// backpressure instead of unbounded memory.
pub const WRITER_QUEUE_MAX: usize = 8_192;

trait WriteJob: Send {
    /// Whether the caller must not be answered before an fsync.
    fn durable(&self) -> bool;
    /// Runs the closure; true when it succeeded and its changes should stay.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller once the group's fate is known.
    fn finish(self: Box<Self>, commit: Result<(), &str>);
}

struct Job<T, E, F> {
    durable: bool,
    f: Option<F>,
    result: Option<Result<T, E>>,
    reply: SyncSender<Result<T, E>>,
}

impl<T, E, F> WriteJob for Job<T, E, F>
where
    T: Send,
    E: From<StorageError> + Send,
    F: FnOnce(&Connection) -> Result<T, E> + Send,
{
    fn durable(&self) -> bool {
        self.durable
    }

    fn run(&mut self, conn: &Connection) -> bool {
        let Some(f) = self.f.take() else { return false };
        let outcome = match catch_unwind(AssertUnwindSafe(|| f(conn))) {
            Ok(r) => r,
            Err(_) => {
                log::error!("a write closure panicked; its changes were rolled back");
                Err(E::from(StorageError::WritePanicked))
            }
        };
        let ok = outcome.is_ok();
        self.result = Some(outcome);
        ok
    }

    fn finish(self: Box<Self>, commit: Result<(), &str>) {
        let answer = match (self.result, commit) {
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(v)), Ok(())) => Ok(v),
            (_, Err(msg)) => Err(E::from(StorageError::NotCommitted(msg.to_owned()))),
            (None, Ok(())) => Err(E::from(StorageError::WriterGone)),
        };
        // The caller may have gone away (thread ended); nothing to do then.
        let _ = self.reply.send(answer);
    }
}

pub(super) struct Writer {
    tx: Mutex<Option<SyncSender<Box<dyn WriteJob>>>>,
    handle: Mutex<Option<thread::JoinHandle<()>>>,
}

impl Writer {
    /// `full_sync`: the connection runs at `synchronous=FULL`, so groups of
    /// only non-durable writes may drop to NORMAL.
    pub(super) fn start(conn: Connection, full_sync: bool) -> Result<Writer, StorageError> {
        let (tx, rx) = sync_channel::<Box<dyn WriteJob>>(WRITER_QUEUE_MAX);
        let handle = thread::Builder::new()
            .name("db-writer".into())
            .spawn(move || run(conn, rx, full_sync))
            .map_err(|e| StorageError::Pool(format!("cannot start writer thread: {e}")))?;
        Ok(Writer { tx: Mutex::new(Some(tx)), handle: Mutex::new(Some(handle)) })
    }

    pub(super) fn submit<T, E, F>(&self, durable: bool, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StorageError> + Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        let (reply, answer) = sync_channel(1);
        let job: Box<dyn WriteJob> = Box::new(Job { durable, f: Some(f), result: None, reply });
        let sender = match self.tx.lock() {
            Ok(guard) => guard.clone(),
            Err(_) => None,
        };
        let Some(sender) = sender else {
            return Err(E::from(StorageError::WriterGone));
        };
        if sender.send(job).is_err() {
            return Err(E::from(StorageError::WriterGone));
        }
        answer.recv().unwrap_or_else(|_| Err(E::from(StorageError::WriterGone)))
    }
}

impl Drop for Writer {
    /// Closing the queue lets the thread finish what is queued and exit; we
    /// wait for it so the last group is committed before the process ends.
    fn drop(&mut self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        if let Ok(mut h) = self.handle.lock()
            && let Some(h) = h.take()
        {
            let _ = h.join();
        }
    }
}

fn run(conn: Connection, rx: Receiver<Box<dyn WriteJob>>, full_sync: bool) {
    let mut group: Vec<Box<dyn WriteJob>> = Vec::with_capacity(WRITER_GROUP_SIZE_MAX);
    while let Ok(first) = rx.recv() {
        group.push(first);
        while group.len() < WRITER_GROUP_SIZE_MAX {
            match rx.try_recv() {
                Ok(job) => group.push(job),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        // A group of only non-durable writes commits without an fsync. WAL
        // frames are appended in order, so the next durable commit's fsync
        // makes these durable too: nothing committed after them can survive
        // a power loss without them.
        let lazy = full_sync && !group.iter().any(|j| j.durable());
        if lazy {
            let _ = conn.execute_batch("PRAGMA synchronous=NORMAL");
        }
        run_group(&conn, &mut group);
        if lazy && let Err(e) = conn.execute_batch("PRAGMA synchronous=FULL") {
            log::error!("writer cannot restore synchronous=FULL: {e}");
        }
    }
}

fn run_group(conn: &Connection, group: &mut Vec<Box<dyn WriteJob>>) {
    let started = Instant::now();
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        let msg = e.to_string();
        log::error!("writer cannot begin a transaction: {msg}");
        for job in group.drain(..) {
            job.finish(Err(&msg));
        }
        return;
    }
    let single = group.len() == 1;
    let mut failed = 0u64;
    for job in group.iter_mut() {
        // A lone closure needs no savepoint: if it fails, the whole
        // transaction is its own and is rolled back below.
        if single {
            if !job.run(conn) {
                failed += 1;
            }
            continue;
        }
        if let Err(e) = conn.execute_batch("SAVEPOINT w") {
            log::error!("writer cannot open a savepoint: {e}");
            failed += 1;
            continue;
        }
        let ok = job.run(conn);
        let undo = if ok { "RELEASE w" } else { "ROLLBACK TO w; RELEASE w" };
        if !ok {
            failed += 1;
        }
        if let Err(e) = conn.execute_batch(undo) {
            log::error!("writer cannot close a savepoint: {e}");
        }
    }
    let commit = if single && failed == 1 { conn.execute_batch("ROLLBACK") } else { conn.execute_batch("COMMIT") };
    let commit_err = commit.err().map(|e| {
        let _ = conn.execute_batch("ROLLBACK");
        log::error!("writer commit failed, group of {} rolled back: {e}", group.len());
        e.to_string()
    });
    let m = crate::metrics::global();
    m.writer_group_size.with_label_values::<&str>(&[]).observe(group.len() as f64);
    m.writer_commit_seconds.with_label_values::<&str>(&[]).observe(started.elapsed().as_secs_f64());
    for job in group.drain(..) {
        job.finish(commit_err.as_deref().map_or(Ok(()), Err));
    }
}

#[cfg(test)]
mod tests {
    use crate::storage::{Db, StorageError, Synchronous};
    use std::sync::Arc;

    fn db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db"), Synchronous::Normal).unwrap();
        (dir, db)
    }

    #[test]
    fn a_failing_closure_rolls_back_alone_while_its_group_commits() {
        let (_dir, db) = db();
        let db = Arc::new(db);
        let handles: Vec<_> = (0..64)
            .map(|i| {
                let db = Arc::clone(&db);
                std::thread::spawn(move || {
                    db.write(move |c| {
                        c.execute("INSERT INTO settings(key, value) VALUES (?1, 'v')", [format!("k{i}")])?;
                        if i % 2 == 1 {
                            return Err(StorageError::Pool("refused on purpose".into()));
                        }
                        Ok(())
                    })
                })
            })
            .collect();
        let ok = handles.into_iter().map(|h| h.join().unwrap()).filter(Result::is_ok).count();
        assert_eq!(ok, 32);
        let rows: i64 = db
            .read(|c| {
                Ok::<_, StorageError>(
                    c.query_row("SELECT count(*) FROM settings WHERE key LIKE 'k%'", [], |r| r.get(0))?,
                )
            })
            .unwrap();
        assert_eq!(rows, 32);
    }

    #[test]
    fn lazy_and_durable_writes_interleave_and_all_commit_at_full_sync() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(&dir.path().join("t.db"), Synchronous::Full).unwrap());
        let handles: Vec<_> = (0..32)
            .map(|i| {
                let db = Arc::clone(&db);
                std::thread::spawn(move || {
                    let sql = move |c: &rusqlite::Connection| -> Result<usize, StorageError> {
                        Ok(c.execute("INSERT INTO settings(key, value) VALUES (?1, 'v')", [format!("m{i}")])?)
                    };
                    if i % 2 == 0 { db.write_lazy(sql) } else { db.write(sql) }
                })
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap().unwrap(), 1);
        }
        let rows: i64 = db
            .read(|c| {
                Ok::<_, StorageError>(
                    c.query_row("SELECT count(*) FROM settings WHERE key LIKE 'm%'", [], |r| r.get(0))?,
                )
            })
            .unwrap();
        assert_eq!(rows, 32);
        // The writer is back at FULL after lazy groups: a durable write
        // issued now reads the setting from inside the writer.
        let level: i64 =
            db.write(|c| Ok::<_, StorageError>(c.query_row("PRAGMA synchronous", [], |r| r.get(0))?)).unwrap();
        assert_eq!(level, 2, "synchronous=FULL restored");
    }

    #[test]
    fn a_panicking_closure_is_reported_and_the_writer_survives() {
        let (_dir, db) = db();
        let r: Result<(), StorageError> = db.write(|_| panic!("boom"));
        assert!(matches!(r, Err(StorageError::WritePanicked)));
        let r: Result<usize, StorageError> =
            db.write(|c| Ok(c.execute("INSERT INTO settings(key, value) VALUES ('after', 'panic')", [])?));
        assert_eq!(r.unwrap(), 1);
    }
}
