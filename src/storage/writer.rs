//! The single writer thread with group commit, and its syncer.
//!
//! Callers submit a closure and block until it is durable. The writer takes
//! every closure already queued (up to [`WRITER_GROUP_SIZE_MAX`]) and runs
//! them in one `BEGIN IMMEDIATE` transaction, committed once. A re-runnable
//! closure (`Db::write`, `Fn`) runs without a savepoint: when one fails
//! having written nothing (the usual refusal: checks come before writes),
//! nothing is undone; when it fails (or panics) after writing, the writer
//! rolls the group back and runs the closures before it again, without it,
//! so its neighbours still commit and each caller gets the answer of the
//! run that committed. A once-only closure (`Db::write_once`) and every
//! closure after it in its group keep a SAVEPOINT each, since it cannot be
//! run again.
//!
//! At `synchronous=FULL` the commit itself does not wait for the disk: the
//! connection runs at NORMAL and hands the group to the syncer thread, which
//! fdatasyncs the WAL file and only then answers the group's durable callers.
//! While the disk flushes one group the writer already runs the next, and one
//! fsync covers every group committed before it (WAL frames are appended in
//! order). Lazy writes (`Db::write_lazy`) and failed closures are answered at
//! once. Other connections may read a commit before its fsync ends; a power
//! cut in that window loses it with its caller unanswered, as it would under
//! any database's group commit.
//!
//! Because one thread runs every write in sequence, closures never race each
//! other: a check-then-write inside one closure is atomic with respect to all
//! other writes of this process, and `BEGIN IMMEDIATE` extends that to other
//! processes (the CLI) through SQLite's lock.
//!
//! This module must never run a closure outside a transaction, and never
//! answer a durable caller before an fsync that follows its commit.

use super::NotCommitted;
use super::StorageError;
use super::checkpoint::CatchUp;
use super::sql::Conn;
use rusqlite::Connection;
use std::fs::{File, OpenOptions};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::thread;
use std::time::Instant;

/// Most closures in one transaction. Bounds how long the first caller of a
/// group waits for the others, and how much work one failed commit undoes.
pub const WRITER_GROUP_SIZE_MAX: usize = 512;
/// Closures waiting for the writer. Past this, callers block in `submit`:
/// backpressure instead of unbounded memory.
pub const WRITER_QUEUE_MAX: usize = 8_192;
/// Committed groups waiting for the syncer. Past this the writer waits: it
/// never runs more than this far ahead of the disk.
pub const SYNC_QUEUE_MAX: usize = 64;

type Answer<'a> = Result<(), &'a NotCommitted>;

trait WriteJob: Send {
    /// Whether the caller waits for an fsync: a durable write that succeeded.
    fn needs_sync(&self) -> bool;
    /// Whether the closure may run again from the start (an `Fn`): it then
    /// needs no savepoint, because a late failure can be undone by rolling
    /// back the group and running the closures before it again.
    fn replayable(&self) -> bool;
    /// Runs the closure; true when it succeeded and its changes should stay.
    /// A replayable closure's earlier result is replaced.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller once the group's fate is known.
    fn finish(self: Box<Self>, commit: Answer<'_>);
}

/// A submitted closure: run once (in a savepoint when it shares its group),
/// or as many times as the group is replayed.
trait Body<T, E>: Send {
    const REPLAYABLE: bool;
    fn call(&mut self, conn: &Connection) -> Option<Result<T, E>>;
}

struct Once<F>(Option<F>);
struct Again<F>(F);

impl<T, E, F: FnOnce(&Conn<'_>) -> Result<T, E> + Send> Body<T, E> for Once<F> {
    const REPLAYABLE: bool = false;
    fn call(&mut self, conn: &Connection) -> Option<Result<T, E>> {
        self.0.take().map(|f| f(&Conn::Sqlite(conn)))
    }
}

impl<T, E, F: Fn(&Conn<'_>) -> Result<T, E> + Send> Body<T, E> for Again<F> {
    const REPLAYABLE: bool = true;
    fn call(&mut self, conn: &Connection) -> Option<Result<T, E>> {
        Some((self.0)(&Conn::Sqlite(conn)))
    }
}

struct Job<T, E, B> {
    durable: bool,
    body: B,
    result: Option<Result<T, E>>,
    reply: SyncSender<Result<T, E>>,
}

impl<T, E, B> WriteJob for Job<T, E, B>
where
    T: Send,
    E: From<StorageError> + Send,
    B: Body<T, E>,
{
    fn needs_sync(&self) -> bool {
        self.durable && matches!(self.result, Some(Ok(_)))
    }

    fn replayable(&self) -> bool {
        B::REPLAYABLE
    }

    fn run(&mut self, conn: &Connection) -> bool {
        let outcome = match catch_unwind(AssertUnwindSafe(|| self.body.call(conn))) {
            Ok(Some(r)) => r,
            // A once-only closure asked to run again: the writer never does.
            Ok(None) => return false,
            Err(_) => {
                log::error!("a write closure panicked; its changes were rolled back");
                Err(E::from(StorageError::WritePanicked))
            }
        };
        let ok = outcome.is_ok();
        self.result = Some(outcome);
        ok
    }

    fn finish(self: Box<Self>, commit: Answer<'_>) {
        let answer = match (self.result, commit) {
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(v)), Ok(())) => Ok(v),
            (_, Err(why)) => Err(E::from(StorageError::NotCommitted(why.clone()))),
            (None, Ok(())) => Err(E::from(StorageError::WriterGone)),
        };
        // The caller may have gone away (thread ended); nothing to do then.
        let _ = self.reply.send(answer);
    }
}

type Group = Vec<Box<dyn WriteJob>>;

pub(super) struct Writer {
    tx: Mutex<Option<SyncSender<Box<dyn WriteJob>>>>,
    handle: Mutex<Option<thread::JoinHandle<()>>>,
    fsyncs: Arc<AtomicU64>,
}

impl Writer {
    /// `sync_wal`: the WAL file the syncer must fdatasync before durable
    /// callers are answered (the connection then runs at NORMAL); `None`
    /// when the database runs at NORMAL and commits are answered at once.
    pub(super) fn start(
        conn: Connection,
        sync_wal: Option<PathBuf>,
        catch_up: CatchUp,
    ) -> Result<Writer, StorageError> {
        let (tx, rx) = sync_channel::<Box<dyn WriteJob>>(WRITER_QUEUE_MAX);
        let fsyncs = Arc::new(AtomicU64::new(0));
        let syncer = match sync_wal {
            Some(wal) => {
                let (queue, srx) = sync_channel::<Group>(SYNC_QUEUE_MAX);
                let count = Arc::clone(&fsyncs);
                let handle = spawn("db-syncer", move || sync_loop(&wal, &srx, &count))?;
                Some(Syncer { queue, handle })
            }
            None => None,
        };
        let handle = spawn("db-writer", move || run(&conn, &rx, syncer, &catch_up))?;
        Ok(Writer { tx: Mutex::new(Some(tx)), handle: Mutex::new(Some(handle)), fsyncs })
    }

    /// WAL fsyncs done by the syncer so far.
    pub(super) fn fsyncs(&self) -> u64 {
        self.fsyncs.load(Ordering::Relaxed)
    }

    /// Queues a closure that runs once, in a savepoint of its own when it
    /// shares its group, and waits for its answer.
    pub(super) fn submit_once<T, E, F>(&self, durable: bool, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StorageError> + Send + 'static,
        F: FnOnce(&Conn<'_>) -> Result<T, E> + Send + 'static,
    {
        self.submit(durable, Once(Some(f)))
    }

    /// Queues a closure the writer may run again (see [`run_group`]): no
    /// savepoint of its own.
    pub(super) fn submit_replayable<T, E, F>(&self, durable: bool, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StorageError> + Send + 'static,
        F: Fn(&Conn<'_>) -> Result<T, E> + Send + 'static,
    {
        self.submit(durable, Again(f))
    }

    fn submit<T, E, B>(&self, durable: bool, body: B) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StorageError> + Send + 'static,
        B: Body<T, E> + 'static,
    {
        let (reply, answer) = sync_channel(1);
        let job: Box<dyn WriteJob> = Box::new(Job { durable, body, result: None, reply });
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

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<thread::JoinHandle<()>, StorageError> {
    thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(|e| StorageError::Pool(format!("cannot start the {name} thread: {e}")))
}

impl Drop for Writer {
    /// Closing the queue lets the thread finish what is queued and exit; we
    /// wait for it (and it for the syncer) so the last group is committed and
    /// flushed before the process ends.
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

struct Syncer {
    queue: SyncSender<Group>,
    handle: thread::JoinHandle<()>,
}

fn run(conn: &Connection, rx: &Receiver<Box<dyn WriteJob>>, syncer: Option<Syncer>, catch_up: &CatchUp) {
    let mut group: Group = Vec::with_capacity(WRITER_GROUP_SIZE_MAX);
    while let Ok(first) = rx.recv() {
        catch_up.run_if_asked(conn);
        group.push(first);
        while group.len() < WRITER_GROUP_SIZE_MAX {
            match rx.try_recv() {
                Ok(job) => group.push(job),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        let committed = run_group(conn, &mut group);
        match (committed, &syncer) {
            (Ok(()), Some(s)) => {
                let (wait, done): (Group, Group) = group.drain(..).partition(|j| j.needs_sync());
                done.into_iter().for_each(|j| j.finish(Ok(())));
                // Even with nobody else queued the syncer does the fsync:
                // syncing inline here (to save a hand-off) stalled the
                // writer while requests arrived, 11.2k -> 7.7k req/s.
                if !wait.is_empty()
                    && let Err(back) = s.queue.send(wait)
                {
                    let gone = NotCommitted::other("the syncer thread is gone");
                    back.0.into_iter().for_each(|j| j.finish(Err(&gone)));
                }
            }
            (committed, _) => {
                let answer = committed.as_ref().map(|_| ());
                group.drain(..).for_each(|j| j.finish(answer));
            }
        }
    }
    if let Some(s) = syncer {
        drop(s.queue);
        let _ = s.handle.join();
    }
}

/// Runs one group in one transaction; `Err` says why nothing of it stayed.
///
/// A replayable closure runs without a savepoint while every closure before
/// it in the transaction is replayable too. If it fails having written
/// nothing (the common refusal: checks come before writes), nothing needs
/// undoing. If it fails after writing, the transaction is rolled back and
/// the closures before it run again from the start, without it: the same
/// closures on the same state, so the same effects (issue 19: a SAVEPOINT
/// and RELEASE per closure cost the writer more than these rare replays).
/// Each replay drops one closure for good, so a group replays at most once
/// per closure. Once-only closures, and every closure after one, run in a
/// savepoint of their own, as before.
fn run_group(conn: &Connection, group: &mut Group) -> Result<(), NotCommitted> {
    let started = Instant::now();
    begin(conn)?;
    let single = group.len() == 1;
    // Closures whose failure is final: skipped when the group replays.
    let mut dropped = vec![false; group.len()];
    let mut succeeded = 0usize;
    let mut i = 0;
    let mut once_ran = false;
    while i < group.len() {
        if dropped[i] {
            i += 1;
            continue;
        }
        let job = &mut group[i];
        if single || (job.replayable() && !once_ran) {
            let before = conn.total_changes();
            if job.run(conn) {
                succeeded += 1;
            } else {
                dropped[i] = true;
                if conn.total_changes() != before && !single {
                    replay(conn)?;
                    crate::metrics::global().writer_replays.inc();
                    succeeded = 0;
                    i = 0;
                    continue;
                }
            }
        } else {
            once_ran |= !job.replayable();
            if run_in_savepoint(conn, job.as_mut()) {
                succeeded += 1;
            } else {
                dropped[i] = true;
            }
        }
        i += 1;
    }
    // Nothing to keep (every closure failed): a rollback is the answer, and
    // it undoes a lone closure that failed after writing.
    let commit = if succeeded == 0 { exec(conn, "ROLLBACK") } else { exec(conn, "COMMIT") };
    let m = crate::metrics::global();
    m.writer_group_size.with_label_values::<&str>(&[]).observe(group.len() as f64);
    m.writer_commit_seconds.with_label_values::<&str>(&[]).observe(started.elapsed().as_secs_f64());
    commit.map_err(|e| {
        let _ = conn.execute_batch("ROLLBACK");
        log::error!("writer commit failed, group of {} rolled back: {e}", group.len());
        NotCommitted::from_sqlite(&e)
    })
}

fn begin(conn: &Connection) -> Result<(), NotCommitted> {
    exec(conn, "BEGIN IMMEDIATE").map_err(|e| {
        log::error!("writer cannot begin a transaction: {e}");
        NotCommitted::from_sqlite(&e)
    })
}

/// Undoes the transaction so far and opens a new one for the replay.
fn replay(conn: &Connection) -> Result<(), NotCommitted> {
    if let Err(e) = exec(conn, "ROLLBACK") {
        log::error!("writer cannot roll back a group to replay it: {e}");
        return Err(NotCommitted::from_sqlite(&e));
    }
    begin(conn)
}

/// Runs a once-only closure in a savepoint: a failure undoes its changes
/// alone. True when it succeeded.
fn run_in_savepoint(conn: &Connection, job: &mut dyn WriteJob) -> bool {
    if let Err(e) = exec(conn, "SAVEPOINT w") {
        log::error!("writer cannot open a savepoint: {e}");
        return false;
    }
    let ok = job.run(conn);
    let closed =
        if ok { exec(conn, "RELEASE w") } else { exec(conn, "ROLLBACK TO w").and_then(|()| exec(conn, "RELEASE w")) };
    if let Err(e) = closed {
        log::error!("writer cannot close a savepoint: {e}");
    }
    ok
}

/// Runs a fixed statement through the statement cache: the writer issues
/// these several times per write, and parsing them each time showed up.
fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// Answers committed groups once an fdatasync of the WAL has covered them,
/// taking every group queued meanwhile into the same fsync.
fn sync_loop(wal: &Path, rx: &Receiver<Group>, fsyncs: &AtomicU64) {
    let mut file: Option<File> = None;
    let mut batch: Group = Vec::new();
    while let Ok(first) = rx.recv() {
        batch.extend(first);
        while let Ok(more) = rx.try_recv() {
            batch.extend(more);
        }
        sync_and_answer(wal, &mut file, fsyncs, std::mem::take(&mut batch));
    }
}

/// One fdatasync of the WAL, then every caller of `batch` is answered.
fn sync_and_answer(wal: &Path, file: &mut Option<File>, fsyncs: &AtomicU64, batch: Group) {
    let started = Instant::now();
    let synced = sync_file(wal, file);
    fsyncs.fetch_add(1, Ordering::Relaxed);
    crate::metrics::global()
        .writer_fsync_seconds
        .with_label_values::<&str>(&[])
        .observe(started.elapsed().as_secs_f64());
    let failure = synced.err().map(|e| {
        // The rows are committed but may not survive a power cut; the
        // callers hear so (an idempotent retry replays, never repeats).
        *file = None;
        log::error!("fsync of {} failed; {} write(s) answered as failed: {e}", wal.display(), batch.len());
        NotCommitted {
            reason: format!("the commit could not be flushed to disk: {e}"),
            disk_full: e.kind() == std::io::ErrorKind::StorageFull,
        }
    });
    let answer = failure.as_ref().map_or(Ok(()), Err);
    batch.into_iter().for_each(|j| j.finish(answer));
}

/// The WAL exists by the time anything is committed, and SQLite keeps the
/// same file (truncating, never replacing it) while a connection is open.
fn sync_file(wal: &Path, file: &mut Option<File>) -> std::io::Result<()> {
    if file.is_none() {
        *file = Some(OpenOptions::new().write(true).open(wal)?);
    }
    match file {
        Some(f) => f.sync_data(),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use crate::storage::{Db, StorageError, Synchronous};
    use std::sync::Arc;

    fn db() -> (tempfile::TempDir, Db) {
        crate::storage::temp_db(Synchronous::Normal)
    }

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// A write as a test thread submits it.
    type Submit<T> = Box<dyn FnOnce(&Db) -> Result<T, StorageError> + Send>;

    /// Submits `writes` one after another while the writer is held busy,
    /// so they run as one group in submission order; returns their answers.
    fn as_one_group<T: Send + 'static>(db: &Arc<Db>, writes: Vec<Submit<T>>) -> Vec<Result<T, StorageError>> {
        let busy = {
            let db = Arc::clone(db);
            std::thread::spawn(move || {
                db.write(|_| {
                    std::thread::sleep(Duration::from_millis(300));
                    Ok::<_, StorageError>(())
                })
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        let handles: Vec<_> = writes
            .into_iter()
            .map(|w| {
                let db = Arc::clone(db);
                let h = std::thread::spawn(move || w(&db));
                std::thread::sleep(Duration::from_millis(20));
                h
            })
            .collect();
        busy.join().unwrap().unwrap();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    }

    fn keys(db: &Db) -> Vec<String> {
        db.read(|c| {
            let mut st = c.sqlite()?.prepare("SELECT key FROM settings WHERE key LIKE 'g-%' ORDER BY key")?;
            let rows = st.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<Vec<String>>>()?;
            Ok::<_, StorageError>(rows)
        })
        .unwrap()
    }

    /// A replayable closure that fails having written nothing costs its
    /// group nothing; one that fails after writing makes the writer roll the
    /// group back and run the closures before it again, without it. Every
    /// caller gets the answer of the run that committed.
    #[test]
    fn a_closure_failing_after_writing_replays_its_group_without_it() {
        let (_dir, db) = db();
        let db = Arc::new(db);
        let runs = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0)]);
        let write = |i: usize, writes_then_fails: bool| -> Submit<i64> {
            let runs = Arc::clone(&runs);
            Box::new(move |db: &Db| {
                db.write(move |c| {
                    runs[i].fetch_add(1, Ordering::SeqCst);
                    if writes_then_fails || i != 1 {
                        c.sqlite()?.execute("INSERT INTO settings(key, value) VALUES (?1, 'v')", [format!("g-{i}")])?;
                    }
                    if i == 1 {
                        return Err(StorageError::Pool("refused on purpose".into()));
                    }
                    // What a replay must recompute: this run's own row.
                    Ok(c.sqlite()?
                        .query_row("SELECT rowid FROM settings WHERE key = ?1", [format!("g-{i}")], |r| r.get(0))
                        .unwrap_or(-1))
                })
            })
        };
        let replays = || crate::metrics::global().writer_replays.get();

        // The refusal wrote nothing: no replay, each closure ran once.
        let answers = as_one_group(&db, vec![write(0, false), write(1, false), write(2, false)]);
        assert!(answers[0].is_ok() && answers[1].is_err() && answers[2].is_ok(), "{answers:?}");
        let counts: Vec<usize> = runs.iter().map(|r| r.load(Ordering::SeqCst)).collect();
        assert_eq!(counts, [1, 1, 1]);
        assert_eq!(keys(&db), ["g-0", "g-2"]);

        db.write(|c| Ok::<_, StorageError>(c.sqlite()?.execute("DELETE FROM settings WHERE key LIKE 'g-%'", [])?))
            .unwrap();
        runs.iter().for_each(|r| r.store(0, Ordering::SeqCst));
        let before = replays();
        let answers = as_one_group(&db, vec![write(0, true), write(1, true), write(2, true)]);
        assert!(answers[0].is_ok() && answers[1].is_err() && answers[2].is_ok(), "{answers:?}");
        // The first ran again after the rollback; the failed one never did.
        let counts: Vec<usize> = runs.iter().map(|r| r.load(Ordering::SeqCst)).collect();
        assert_eq!(counts, [2, 1, 1]);
        assert_eq!(keys(&db), ["g-0", "g-2"], "the failed closure's row is gone, the others' stay once");
        assert!(replays() > before);
    }

    /// A closure that panics after writing is undone like one that failed:
    /// its group replays without it and the writer goes on.
    #[test]
    fn a_closure_panicking_after_writing_is_undone_and_its_group_kept() {
        let (_dir, db) = db();
        let db = Arc::new(db);
        let insert = |i: usize, panics: bool| -> Submit<()> {
            Box::new(move |db: &Db| {
                db.write(move |c| {
                    c.sqlite()?.execute("INSERT INTO settings(key, value) VALUES (?1, 'v')", [format!("g-{i}")])?;
                    assert!(!panics, "a bug after the write");
                    Ok(())
                })
            })
        };
        let answers = as_one_group(&db, vec![insert(0, false), insert(1, true), insert(2, false)]);
        assert!(matches!(answers[1], Err(StorageError::WritePanicked)), "{answers:?}");
        assert!(answers[0].is_ok() && answers[2].is_ok());
        assert_eq!(keys(&db), ["g-0", "g-2"]);
    }

    /// Once-only closures run in a savepoint, never twice, and a replayable
    /// closure after one in the group does too.
    #[test]
    fn once_only_closures_keep_savepoints_and_never_run_twice() {
        let (_dir, db) = db();
        let db = Arc::new(db);
        let runs = Arc::new(AtomicUsize::new(0));
        let once = |i: usize| -> Submit<()> {
            let runs = Arc::clone(&runs);
            Box::new(move |db: &Db| {
                let owned = format!("g-{i}");
                db.write_once(move |c| {
                    runs.fetch_add(1, Ordering::SeqCst);
                    c.sqlite()?.execute("INSERT INTO settings(key, value) VALUES (?1, 'v')", [owned])?;
                    Ok(())
                })
            })
        };
        let failing = |i: usize| -> Submit<()> {
            Box::new(move |db: &Db| {
                db.write(move |c| {
                    c.sqlite()?.execute("INSERT INTO settings(key, value) VALUES (?1, 'v')", [format!("g-{i}")])?;
                    Err(StorageError::Pool("refused after writing".into()))
                })
            })
        };
        let answers = as_one_group(&db, vec![once(0), failing(1), once(2), failing(3)]);
        assert!(answers[0].is_ok() && answers[1].is_err() && answers[2].is_ok() && answers[3].is_err());
        assert_eq!(runs.load(Ordering::SeqCst), 2, "each once-only closure ran once");
        assert_eq!(keys(&db), ["g-0", "g-2"]);
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
                        c.sqlite()?.execute("INSERT INTO settings(key, value) VALUES (?1, 'v')", [format!("k{i}")])?;
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
                Ok::<_, StorageError>(c.sqlite()?.query_row(
                    "SELECT count(*) FROM settings WHERE key LIKE 'k%'",
                    [],
                    |r| r.get(0),
                )?)
            })
            .unwrap();
        assert_eq!(rows, 32);
    }

    #[test]
    fn durable_writes_wait_for_an_fsync_and_lazy_ones_do_not() {
        let (dir, db) = crate::storage::temp_db(Synchronous::Full);
        let db = Arc::new(db);
        let insert = |key: String| {
            move |c: &crate::storage::Conn<'_>| -> Result<usize, StorageError> {
                c.execute("INSERT INTO settings(key, value) VALUES (?1, 'v')", rusqlite::params![key])
            }
        };
        for i in 0..5 {
            assert_eq!(db.write_lazy(insert(format!("lazy{i}"))).unwrap(), 1);
        }
        assert_eq!(db.fsyncs(), 0, "lazy writes never wait for the disk");
        db.write(insert("durable".into())).unwrap();
        assert_eq!(db.fsyncs(), 1, "a durable write is answered after an fsync");
        // Many concurrent durable writes share fsyncs, and all commit.
        let handles: Vec<_> = (0..32)
            .map(|i| {
                let db = Arc::clone(&db);
                std::thread::spawn(move || {
                    if i % 2 == 0 { db.write_lazy(insert(format!("m{i}"))) } else { db.write(insert(format!("m{i}"))) }
                })
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap().unwrap(), 1);
        }
        assert!((2..=17).contains(&db.fsyncs()), "16 durable writes, at most one fsync each: {}", db.fsyncs());
        let rows: i64 = db
            .read(|c| {
                Ok::<_, StorageError>(c.sqlite()?.query_row(
                    "SELECT count(*) FROM settings WHERE key LIKE 'm%'",
                    [],
                    |r| r.get(0),
                )?)
            })
            .unwrap();
        assert_eq!(rows, 32);
        // A failed durable write is answered without waiting for the disk.
        let before = db.fsyncs();
        let r: Result<(), StorageError> = db.write(|_| Err(StorageError::Pool("refused".into())));
        assert!(r.is_err());
        assert_eq!(db.fsyncs(), before);
        // NORMAL never fsyncs from the syncer.
        let normal = Db::open(&dir.path().join("n.db"), Synchronous::Normal).unwrap();
        normal.write(insert("n".into())).unwrap();
        assert_eq!(normal.fsyncs(), 0);
    }

    #[test]
    fn a_panicking_closure_is_reported_and_the_writer_survives() {
        let (_dir, db) = db();
        let r: Result<(), StorageError> = db.write(|_| panic!("boom"));
        assert!(matches!(r, Err(StorageError::WritePanicked)));
        let r: Result<usize, StorageError> =
            db.write(|c| Ok(c.sqlite()?.execute("INSERT INTO settings(key, value) VALUES ('after', 'panic')", [])?));
        assert_eq!(r.unwrap(), 1);
    }
}
