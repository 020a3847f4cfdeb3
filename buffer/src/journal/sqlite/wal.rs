//! The upkeep of the journal's WAL file, off the commit path: checkpoints on a thread of their
//! own, and a WAL file that keeps its size.
//!
//! Why the size: on ext4 (this project's disks) an fdatasync of a file that grew since the last
//! one must also write its inode, a second synchronous write in every commit. A WAL that grows
//! at each commit, as a freshly emptied one does all through a burst, paid it at every group
//! commit. So the WAL file is filled with zeros when the journal opens (up to `wal_size_limit`,
//! and at most a quarter of the space beyond the disk reserve), and an idle checkpoint only
//! restarts it (the next commit writes from its start again, over blocks already there) rather
//! than emptying it; only a WAL that outgrew `wal_size_limit` is emptied. Zeros past the last
//! frame are like the old frames SQLite itself leaves there after a restart: its recovery stops
//! at the first frame whose checksum fails.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use rusqlite::Connection;

use super::{Counters, open_connection};

/// How often the checkpointer copies the WAL into the database file.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(250);

/// The WAL file beside the database file `db`.
fn wal_path(db: &Path) -> PathBuf {
    let mut path = db.as_os_str().to_owned();
    path.push("-wal");
    PathBuf::from(path)
}

/// Fills the WAL of the journal being opened up to `wal_size_limit`, and at most a quarter of
/// `spare` (the bytes free beyond the disk reserve). A WAL it cannot fill only costs speed.
pub(super) fn fill_at_open(conn: &Connection, db: &Path, wal_size_limit: u64, spare: u64) {
    let size = wal_size_limit.min(spare / 4);
    if let Err(e) = preallocate(conn, db, size) {
        tracing::warn!(
            "the WAL is not filled to {size} bytes ({e:#}): while it grows, commits also sync \
             its size"
        );
    }
}

/// Fills the WAL file of `conn`'s database with zeros up to `size` bytes and syncs it, holding
/// the write lock meanwhile so that no commit writes the WAL at the same time (`conn`'s busy
/// timeout decides how long it waits for it). A fill that fails is undone.
fn preallocate(conn: &Connection, db: &Path, size: u64) -> anyhow::Result<()> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let filled = fill_with_zeros(&wal_path(db), size);
    conn.execute_batch("ROLLBACK")?;
    filled
}

fn fill_with_zeros(wal: &Path, size: u64) -> anyhow::Result<()> {
    const CHUNK: usize = 1024 * 1024;
    let mut file = OpenOptions::new()
        .append(true)
        .open(wal)
        .with_context(|| format!("cannot open the journal's WAL {}", wal.display()))?;
    let before = file.metadata()?.len();
    let zeros = vec![0u8; CHUNK];
    let mut fill = || -> std::io::Result<()> {
        let mut len = before;
        while len < size {
            let n = CHUNK.min((size - len) as usize);
            file.write_all(&zeros[..n])?;
            len += n as u64;
        }
        file.sync_data()
    };
    if let Err(e) = fill() {
        file.set_len(before)?;
        return Err(e.into());
    }
    Ok(())
}

/// Starts the thread that checkpoints the WAL off the commit path; it stops when the returned
/// sender is dropped. While commits go on it checkpoints PASSIVE (never blocking the writer).
/// Once the writer has been idle for a whole interval it checkpoints RESTART, so that the next
/// commit writes the WAL from its start; a WAL that outgrew `wal_size_limit` meanwhile (while
/// commits never pause, checkpoints cannot catch up) is emptied instead (TRUNCATE). It gives up
/// at once if a reader holds the WAL, rather than stall the writer.
pub(super) fn start_checkpointer(
    db: &Path,
    wal_size_limit: u64,
    counters: Arc<Counters>,
) -> anyhow::Result<std::sync::mpsc::Sender<()>> {
    let conn = open_connection(db)?;
    conn.busy_timeout(Duration::ZERO)?;
    let db = db.to_path_buf();
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("journal-checkpointer".into())
        .spawn(move || {
            let (mut seen, mut rested) = (u64::MAX, false);
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(CHECKPOINT_INTERVAL)
            {
                let commits = counters.writer.commits.load(Ordering::Relaxed);
                let idle = commits == seen && counters.writer.idle();
                seen = commits;
                let done = if idle && !rested {
                    rest(&conn, &db, wal_size_limit)
                } else {
                    checkpoint(&conn, "PASSIVE").map(|_| false)
                };
                match done {
                    Ok(done) => rested = idle && done,
                    Err(e) if idle => tracing::debug!("idle WAL checkpoint deferred: {e}"),
                    Err(e) => tracing::warn!(
                        "WAL checkpoint failed (the WAL grows until one succeeds): {e}"
                    ),
                }
            }
        })?;
    Ok(stop)
}

/// The idle checkpoint; `true` once the WAL is all in the database file and the next commit
/// writes it from its start.
fn rest(conn: &Connection, db: &Path, wal_size_limit: u64) -> rusqlite::Result<bool> {
    let len = std::fs::metadata(wal_path(db)).map_or(0, |m| m.len());
    let outgrown = len > wal_size_limit;
    let mode = if outgrown { "TRUNCATE" } else { "RESTART" };
    let done = checkpoint(conn, mode)? == 0;
    if done && outgrown {
        tracing::debug!("idle WAL checkpoint: {len} bytes, beyond wal_size_limit: emptied");
    } else if done {
        tracing::debug!("idle WAL checkpoint: {len} bytes kept for the next burst to overwrite");
    }
    Ok(done)
}

/// Runs one checkpoint; returns SQLite's busy flag (1: a reader or writer kept it from
/// finishing).
fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<i64> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| r.get(0))
}
