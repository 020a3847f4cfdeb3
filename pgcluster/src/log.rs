//! A postmaster's log: its stderr, copied line by line to a file and kept in memory so callers
//! can wait for an event ("ready to accept connections") instead of for a duration.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// The most lines kept in memory; the file keeps all of them.
const MAX_LINES: usize = 100_000;

#[derive(Default)]
struct Lines {
    lines: Vec<String>,
    /// The stream ended: the postmaster and all its children are gone.
    closed: bool,
}

/// The log of one postmaster run.
#[derive(Clone, Default)]
pub struct Log(Arc<(Mutex<Lines>, Condvar)>);

impl Log {
    /// Copies `stream` into `file` (appending) and into this log, on a thread of its own.
    pub fn follow(stream: impl Read + Send + 'static, file: &Path) -> Result<Log> {
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)?;
        let log = Log::default();
        let shared = log.clone();
        std::thread::Builder::new()
            .name("pgcluster-log".into())
            .spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    let _ = writeln!(out, "{line}");
                    shared.push(line);
                }
                let (lines, changed) = &*shared.0;
                lines.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
                changed.notify_all();
            })?;
        Ok(log)
    }

    fn push(&self, line: String) {
        let (lines, changed) = &*self.0;
        let mut lines = lines.lock().unwrap_or_else(|p| p.into_inner());
        if lines.lines.len() < MAX_LINES {
            lines.lines.push(line);
        }
        changed.notify_all();
    }

    /// Waits until a line contains `needle`; fails when the log ends first (the postmaster
    /// exited: its last lines say why) or after `timeout`.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let (lines, changed) = &*self.0;
        let mut guard = lines.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if guard.lines.iter().any(|line| line.contains(needle)) {
                return Ok(());
            }
            let tail = || guard.lines[guard.lines.len().saturating_sub(8)..].join("\n");
            if guard.closed {
                bail!(
                    "PostgreSQL exited before logging {needle:?}; its last lines:\n{}",
                    tail()
                );
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "PostgreSQL did not log {needle:?} in {timeout:?}; its last lines:\n{}",
                    tail()
                );
            }
            guard = changed
                .wait_timeout(guard, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Whether a line contains `needle` now.
    pub fn contains(&self, needle: &str) -> bool {
        let lines = self.0.0.lock().unwrap_or_else(|p| p.into_inner());
        lines.lines.iter().any(|line| line.contains(needle))
    }
}
