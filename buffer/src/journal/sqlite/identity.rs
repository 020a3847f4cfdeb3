//! The journal's high-water mark: a small file beside the database, `high-water-mark.json`
//! (`{"journal_id": ID, "seq": N, "cursor": C}`), rewritten (atomically: a temporary file renamed
//! over it) after commits that moved the last seq or the cursor, by a thread of its own
//! ([`MarkWriter`]) so that the journal writer never waits for it. It is written only after the
//! commit, so it may lag the journal but never lead it. At open, a journal found behind its
//! mark — fewer requests than were committed, a cursor the registry holds beyond the last seq, or
//! another journal id — lost committed requests (a deleted WAL, an old copy restored): barrage
//! refuses to start rather than hand the same tickets out again (contract: Durability).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// The file's name inside the data dir.
pub const FILE: &str = "high-water-mark.json";

/// What the journal had committed, as last written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HighWaterMark {
    pub journal_id: String,
    /// The last committed seq.
    pub seq: u64,
    /// The last committed cursor of the registration system.
    pub cursor: u64,
}

/// The mark thread writes at most once per this: under a flood a rewrite after every commit (a
/// file written and renamed) cost as much CPU as the commit's fsync.
const MARK_SPACING: Duration = Duration::from_millis(50);

/// Writes the marks the journal writer publishes, the latest one, at most once per
/// [`MARK_SPACING`], on a thread of its own; [`MarkWriter::flush`] writes the pending one at
/// once (at a clean stop). The thread ends when the last handle is dropped, after writing what is
/// pending.
pub struct MarkWriter {
    shared: Arc<Pending>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The mark waiting to be written, and whether the writer has gone. `writing` is held from
/// taking a mark to having renamed it into place, so an older mark never lands after a newer.
struct Pending {
    dir: PathBuf,
    state: Mutex<(Option<HighWaterMark>, bool)>,
    changed: Condvar,
    writing: Mutex<()>,
}

impl MarkWriter {
    pub fn start(dir: PathBuf) -> std::io::Result<MarkWriter> {
        let shared = Arc::new(Pending {
            dir,
            state: Mutex::new((None, false)),
            changed: Condvar::new(),
            writing: Mutex::new(()),
        });
        let pending = shared.clone();
        let thread = std::thread::Builder::new()
            .name("journal-mark".into())
            .spawn(move || write_marks(&pending))?;
        Ok(MarkWriter {
            shared,
            thread: Some(thread),
        })
    }

    /// Replaces the mark waiting to be written (a newer one makes the older one moot).
    pub fn publish(&self, mark: HighWaterMark) {
        self.shared.state.lock().unwrap().0 = Some(mark);
        self.shared.changed.notify_one();
    }

    /// Writes the pending mark now, on the caller's thread.
    pub fn flush(&self) {
        self.shared.write_pending();
    }
}

impl Drop for MarkWriter {
    fn drop(&mut self) {
        self.shared.state.lock().unwrap().1 = true;
        self.shared.changed.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Pending {
    /// Writes the pending mark, if any. A failed write only lets the mark lag, which is
    /// allowed; the next commit publishes another.
    fn write_pending(&self) {
        let _writing = self.writing.lock().unwrap();
        let Some(mark) = self.state.lock().unwrap().0.take() else {
            return;
        };
        if let Err(e) = mark.write(&self.dir) {
            tracing::warn!("cannot write the journal's high-water mark: {e}");
        }
    }
}

/// The mark thread: waits for a mark, writes it, pauses, until its handle is dropped with nothing
/// pending.
fn write_marks(pending: &Pending) {
    loop {
        {
            let mut state = pending.state.lock().unwrap();
            while state.0.is_none() && !state.1 {
                state = pending.changed.wait(state).unwrap();
            }
            if state.0.is_none() {
                return;
            }
        }
        pending.write_pending();
        std::thread::sleep(MARK_SPACING);
    }
}

pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

impl HighWaterMark {
    /// The mark of `dir`; `None` when there is none yet, or when it cannot be read as one (a
    /// power loss may leave it empty: a lagging mark is allowed, so it counts as unknown).
    pub fn read(dir: &Path) -> anyhow::Result<Option<Self>> {
        let path = path(dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        match serde_json::from_str(&text) {
            Ok(mark) => Ok(Some(mark)),
            Err(e) => {
                tracing::warn!(
                    "{} is not a high-water mark ({e}); it is rewritten after the next commit",
                    path.display()
                );
                Ok(None)
            }
        }
    }

    /// Replaces the mark of `dir` atomically (no fsync: the mark may lag).
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let temporary = dir.join(format!("{FILE}.tmp"));
        std::fs::write(
            &temporary,
            serde_json::to_vec(self).expect("a mark serializes"),
        )?;
        std::fs::rename(&temporary, path(dir))
    }

    /// What to say when the journal of `dir` cannot even be read while this mark says what it
    /// held.
    pub fn unreadable(&self, dir: &Path) -> String {
        format!(
            "the journal {} cannot be read, and {} says journal {} had committed through seq {}: \
             committed requests are missing or damaged (a deleted or truncated barrage.db-wal?). \
             barrage refuses to start rather than give the same tickets to other requests. Keep \
             the data dir for the audit and Restore the journal (barrage.db with its \
             barrage.db-wal) from a backup or the standby",
            dir.join("barrage.db").display(),
            path(dir).display(),
            self.journal_id,
            self.seq
        )
    }

    /// Refuses a journal (`found`: its id, last seq and cursor) that is behind this mark.
    pub fn check(&self, found: &HighWaterMark, dir: &Path) -> anyhow::Result<()> {
        let (mark, db) = (path(dir).display().to_string(), dir.join("barrage.db"));
        let db = db.display();
        let refuse = "barrage refuses to start rather than give the same tickets to other requests";
        anyhow::ensure!(
            self.journal_id == found.journal_id,
            "the journal {db} is journal {} (last seq {}), but {mark} says this data dir held \
             journal {}, committed through seq {}: the journal was replaced or recreated \
             (barrage.db deleted, or another copy put in its place). {refuse}. Restore journal {} \
             (barrage.db with its barrage.db-wal) from a backup or the standby; if the \
             replacement is intended, move {mark} away and start again",
            found.journal_id,
            found.seq,
            self.journal_id,
            self.seq,
            self.journal_id
        );
        let cursor = self.cursor.max(found.cursor);
        anyhow::ensure!(
            cursor <= found.seq,
            "the journal {db} ends at seq {}, but the registration system has already taken \
             everything through seq {cursor} (its cursor): requests it holds are missing from \
             the journal (a deleted or truncated barrage.db-wal, or an older copy of barrage.db \
             restored). {refuse}. Restore the journal from a backup or the standby; to accept the \
             loss, tell the registration system that tickets after {} will be given again, then \
             move {mark} away and start again",
            found.seq,
            found.seq
        );
        anyhow::ensure!(
            self.seq <= found.seq,
            "the journal {db} ends at seq {}, but {mark} says seq {} was committed: {} committed \
             requests are missing (a deleted or truncated barrage.db-wal, or an older copy of \
             barrage.db restored). {refuse}. Restore the journal from a backup or the standby; \
             to accept the loss, tell the registration system that tickets after {} will be \
             given again, then move {mark} away and start again",
            found.seq,
            self.seq,
            self.seq - found.seq,
            found.seq
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(id: &str, seq: u64, cursor: u64) -> HighWaterMark {
        HighWaterMark {
            journal_id: id.into(),
            seq,
            cursor,
        }
    }

    #[test]
    fn a_journal_at_or_beyond_its_mark_opens() {
        let dir = Path::new("/data");
        mark("a", 5, 2).check(&mark("a", 5, 2), dir).unwrap();
        mark("a", 5, 2).check(&mark("a", 9, 3), dir).unwrap();
    }

    #[test]
    fn a_journal_behind_its_mark_or_cursor_or_replaced_is_refused() {
        let dir = Path::new("/data");
        let behind = mark("a", 5, 0).check(&mark("a", 3, 0), dir).unwrap_err();
        assert!(
            behind
                .to_string()
                .contains("2 committed requests are missing")
        );
        let cursor = mark("a", 5, 4).check(&mark("a", 3, 0), dir).unwrap_err();
        assert!(cursor.to_string().contains("through seq 4 (its cursor)"));
        let own_cursor = mark("a", 3, 0).check(&mark("a", 3, 7), dir).unwrap_err();
        assert!(own_cursor.to_string().contains("through seq 7"));
        let other = mark("a", 5, 0).check(&mark("b", 0, 0), dir).unwrap_err();
        assert!(other.to_string().contains("replaced or recreated"));
    }

    #[test]
    fn a_mark_reads_back_and_garbage_counts_as_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(HighWaterMark::read(dir.path()).unwrap(), None);
        mark("a", 5, 2).write(dir.path()).unwrap();
        assert_eq!(
            HighWaterMark::read(dir.path()).unwrap(),
            Some(mark("a", 5, 2))
        );
        std::fs::write(path(dir.path()), b"").unwrap();
        assert_eq!(HighWaterMark::read(dir.path()).unwrap(), None);
    }
}
