//! `barrage backup`: a consistent copy of a journal taken while barrage serves, with SQLite's
//! online backup API (it copies pages from one read snapshot and restarts if the writer changes
//! them mid-way, so the copy holds exactly the requests committed at some instant). The copy is a
//! single file in rollback-journal mode: it opens on its own, without a WAL.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use rusqlite::backup::Backup;
use rusqlite::{Connection, OpenFlags};

/// Pages copied per step; between steps the writer may commit (the backup then restarts).
const PAGES_PER_STEP: std::ffi::c_int = 1024;

/// Copies the journal of `data_dir` into `out` (which must not exist) and returns the number of
/// requests in the copy.
pub fn backup(data_dir: &Path, out: &Path) -> anyhow::Result<u64> {
    let source_path = data_dir.join("barrage.db");
    anyhow::ensure!(
        source_path.exists(),
        "{} has no journal (no barrage.db): check --data-dir",
        data_dir.display()
    );
    anyhow::ensure!(
        !out.exists(),
        "{} already exists: give a new file name, barrage backup never overwrites",
        out.display()
    );
    // Read-only: the backup never writes the live journal, nor checkpoints its WAL.
    let source = Connection::open_with_flags(&source_path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("cannot open {}", source_path.display()))?;
    source.busy_timeout(Duration::from_secs(5))?;
    let mut copy =
        Connection::open(out).with_context(|| format!("cannot create {}", out.display()))?;
    Backup::new(&source, &mut copy)?
        .run_to_completion(PAGES_PER_STEP, Duration::from_millis(5), None)
        .with_context(|| format!("backup of {} failed", source_path.display()))?;
    drop(source);
    let mode: String = copy.query_row("PRAGMA journal_mode=DELETE", [], |r| r.get(0))?;
    anyhow::ensure!(
        mode.eq_ignore_ascii_case("delete"),
        "copy kept journal mode {mode}"
    );
    let rows: u64 = copy.query_row("SELECT COUNT(*) FROM requests", [], |r| r.get(0))?;
    Ok(rows)
}
