//! Checkpoints the WAL from a thread of its own, so the writer does not.
//!
//! A checkpoint copies WAL pages into the database file and fsyncs it. Run
//! by the writer (SQLite's autocheckpoint) it took a quarter of the writer's
//! time under the consume load, during which no write could run. Here a
//! background connection does that copying with `PASSIVE` checkpoints, which
//! never block the writer or readers.
//!
//! What it cannot do alone is restart the WAL: SQLite rewinds the WAL to its
//! start only when a write transaction begins with every frame copied, and
//! with the writer appending all the time that never lines up (tried: the
//! WAL grew to 2.1 GB in 18 s). So once the WAL is past
//! [`WAL_RESTART_FRAMES`] this thread raises [`CatchUp`], and the writer,
//! between two groups, copies the few frames still left; its next
//! transaction then starts the WAL over.
//!
//! This module never writes rows, and never waits on the writer.

use rusqlite::Connection;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

/// WAL length (frames, ~4 KiB each) past which the writer is asked to catch
/// up so the WAL can start over: bounds the WAL file at about 16 MiB plus
/// whatever arrives while it catches up.
pub const WAL_RESTART_FRAMES: i64 = 4_000;
/// WAL length past which the writer's catch-up waits for readers: with
/// readers always mid-transaction (a heavy read load) a non-blocking
/// checkpoint never finishes and the WAL would grow without bound (it did,
/// to 180 MB in the test below, with SQLite's own autocheckpoint too).
/// Waiting costs the writer a millisecond or so, only in that case.
pub const WAL_FRAMES_HARD_MAX: i64 = 4 * WAL_RESTART_FRAMES;
/// Frames left uncopied that are worth another pass right away; below
/// this the thread sleeps [`CHECKPOINT_IDLE_MS`].
pub const CHECKPOINT_BATCH_FRAMES: i64 = 256;
pub const CHECKPOINT_IDLE_MS: u64 = 20;

/// Set by the checkpointer when the writer should finish a checkpoint.
#[derive(Clone, Default)]
pub struct CatchUp(Arc<AtomicBool>);

impl CatchUp {
    /// Called by the writer before each group: when asked, copies what is
    /// left of the WAL (a few frames; the background thread did the rest).
    /// If a background pass holds the checkpoint lock, it tries next group.
    pub fn run_if_asked(&self, conn: &Connection) {
        if !self.0.load(Ordering::Relaxed) {
            return;
        }
        let pass = match checkpoint(conn, "PASSIVE") {
            Ok(p) if p.frames >= WAL_FRAMES_HARD_MAX && !p.complete() => {
                log::info!("WAL at {} frames: waiting for readers to let it restart", p.frames);
                checkpoint(conn, "RESTART")
            }
            other => other,
        };
        match pass {
            Ok(p) if p.complete() => self.0.store(false, Ordering::Relaxed),
            Ok(_) => {}
            Err(e) => log::warn!("writer checkpoint failed: {e}"),
        }
    }
}

struct Pass {
    busy: bool,
    frames: i64,
    copied: i64,
}

impl Pass {
    /// Every frame copied: the next write transaction may restart the WAL.
    fn complete(&self) -> bool {
        !self.busy && self.copied == self.frames
    }
}

fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<Pass> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        Ok(Pass { busy: r.get::<_, i64>(0)? != 0, frames: r.get(1)?, copied: r.get(2)? })
    })
}

pub struct Checkpointer {
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<()>>,
}

impl Checkpointer {
    pub fn start(conn: Connection, catch_up: CatchUp) -> std::io::Result<Checkpointer> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = thread::Builder::new().name("db-checkpoint".into()).spawn(move || run(&conn, &catch_up, &flag))?;
        Ok(Checkpointer { stop, handle: Some(handle) })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn run(conn: &Connection, catch_up: &CatchUp, stop: &AtomicBool) {
    let gauge = crate::metrics::global().wal_frames.clone();
    while !stop.load(Ordering::Relaxed) {
        let behind = match checkpoint(conn, "PASSIVE") {
            Ok(p) => {
                gauge.set(p.frames);
                if p.frames >= WAL_RESTART_FRAMES {
                    catch_up.0.store(true, Ordering::Relaxed);
                }
                // frames is -1 when the WAL is not open here yet.
                if p.frames < 0 { 0 } else { p.frames - p.copied }
            }
            Err(e) => {
                log::warn!("background checkpoint failed: {e}");
                0
            }
        };
        if behind < CHECKPOINT_BATCH_FRAMES {
            thread::sleep(Duration::from_millis(CHECKPOINT_IDLE_MS));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{WAL_FRAMES_HARD_MAX, WAL_RESTART_FRAMES};
    use crate::storage::{StorageError, Synchronous};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// The failure this design avoids: checkpoints off the writer's thread
    /// that never let the WAL start over, so it grows without bound.
    #[test]
    fn the_wal_stays_bounded_under_constant_writes_and_reads() {
        let (dir, db) = crate::storage::temp_db(Synchronous::Normal);
        let db = Arc::new(db);
        let wal = dir.path().join("test.db-wal");
        let stop = Arc::new(AtomicBool::new(false));
        // Readers always in the middle of something, as under load.
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (db, stop) = (Arc::clone(&db), Arc::clone(&stop));
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let _: Result<i64, StorageError> = db
                            .read(|c| Ok(c.sqlite()?.query_row("SELECT count(*) FROM settings", [], |r| r.get(0))?));
                    }
                })
            })
            .collect();
        let page = 4096 + 24;
        let bound = ((WAL_FRAMES_HARD_MAX + WAL_RESTART_FRAMES) as u64) * page;
        let mut largest = 0;
        // ~3.5 frames a write: well past WAL_FRAMES_HARD_MAX.
        let writes = 2 * WAL_RESTART_FRAMES;
        for i in 0..writes {
            db.write(move |c| {
                c.sqlite()?
                    .execute("INSERT INTO settings(key, value) VALUES (?1, ?2)", (format!("k{i}"), "x".repeat(4000)))?;
                Ok::<_, StorageError>(())
            })
            .unwrap();
            largest = largest.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
        }
        stop.store(true, Ordering::Relaxed);
        readers.into_iter().for_each(|r| r.join().unwrap());
        assert!(largest <= bound, "WAL reached {largest} bytes, bound {bound}");
        let rows: i64 = db
            .read(|c| {
                Ok::<_, StorageError>(c.sqlite()?.query_row(
                    "SELECT count(*) FROM settings WHERE key LIKE 'k%'",
                    [],
                    |r| r.get(0),
                )?)
            })
            .unwrap();
        assert_eq!(rows, writes);
    }
}
