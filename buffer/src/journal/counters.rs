//! The counters every journal's group-committing writer keeps (the SQLite and the PostgreSQL
//! journals alike): what the writer records of each batch, and the part of the journal's stats
//! and readiness that comes from them. Each journal keeps its own extra counters beside these.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use super::{JournalStats, NotReady, now_micros};

/// A batch in the writer longer than this means the writer is stuck (a hung disk or database).
pub const STUCK_AFTER_US: i64 = 10_000_000;

/// Written by the writer, read by the operations API and the readiness check. Relaxed: each
/// counter stands on its own, and an answer a batch behind the writer is harmless.
#[derive(Default)]
pub struct WriterCounters {
    /// Highest seq accepted so far.
    pub accepted: AtomicU64,
    /// Highest seq the registration system has taken.
    pub cursor: AtomicU64,
    pub retransmissions: AtomicU64,
    pub commits: AtomicU64,
    /// Commits that wrote at least one new request: the group commits proper, without the
    /// transactions of ack marks and cursor moves alone.
    pub request_commits: AtomicU64,
    pub committed_requests: AtomicU64,
    pub largest_batch: AtomicU64,
    pub write_failures: AtomicU64,
    pub refused_queue_full: AtomicU64,
    /// When the writer began its current batch (microseconds), 0 while it waits for work.
    pub busy_since: AtomicI64,
    /// Whether the last batch failed to write.
    pub failing: AtomicBool,
}

impl WriterCounters {
    /// The writer took a batch and starts writing it.
    pub fn batch_began(&self) {
        self.busy_since.store(now_micros(), Ordering::Relaxed);
    }

    /// The writer answered its batch and waits for work.
    pub fn batch_ended(&self) {
        self.busy_since.store(0, Ordering::Relaxed);
    }

    /// Whether the writer is waiting for work.
    pub fn idle(&self) -> bool {
        self.busy_since.load(Ordering::Relaxed) == 0
    }

    /// A batch committed with `new_rows` new requests: the journal writes again.
    pub fn committed(&self, new_rows: u64) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        if new_rows > 0 {
            self.request_commits.fetch_add(1, Ordering::Relaxed);
        }
        self.committed_requests
            .fetch_add(new_rows, Ordering::Relaxed);
        self.largest_batch.fetch_max(new_rows, Ordering::Relaxed);
        self.failing.store(false, Ordering::Relaxed);
    }

    /// A batch failed to write: its requests were refused.
    pub fn failed(&self) {
        self.write_failures.fetch_add(1, Ordering::Relaxed);
        self.failing.store(true, Ordering::Relaxed);
    }

    /// The stats these counters make; a journal fills in what only it counts
    /// (`refused_disk_reserve` is 0 here).
    pub fn stats(&self) -> JournalStats {
        let accepted = self.accepted.load(Ordering::Relaxed);
        let cursor = self.cursor.load(Ordering::Relaxed);
        let commits = self.commits.load(Ordering::Relaxed);
        let request_commits = self.request_commits.load(Ordering::Relaxed);
        let committed_requests = self.committed_requests.load(Ordering::Relaxed);
        JournalStats {
            accepted,
            cursor,
            // The two loads are no snapshot: a cursor moved since `accepted` was read is ahead.
            queue_depth: accepted - cursor.min(accepted),
            retransmissions: self.retransmissions.load(Ordering::Relaxed),
            commits,
            request_commits,
            committed_requests,
            mean_batch: JournalStats::mean_batch_of(request_commits, committed_requests),
            largest_batch: self.largest_batch.load(Ordering::Relaxed),
            write_failures: self.write_failures.load(Ordering::Relaxed),
            refused_disk_reserve: 0,
            refused_queue_full: self.refused_queue_full.load(Ordering::Relaxed),
        }
    }

    /// Why the writer cannot take requests now, if it cannot: stuck inside one batch, or its
    /// last write failed. The journal checks its own limits after this.
    pub fn not_ready(&self) -> Option<NotReady> {
        let busy_since = self.busy_since.load(Ordering::Relaxed);
        if busy_since != 0 && now_micros() - busy_since > STUCK_AFTER_US {
            let secs = ((now_micros() - busy_since) / 1_000_000) as u64;
            return Some(NotReady::WriterStuck { secs });
        }
        if self.failing.load(Ordering::Relaxed) {
            return Some(NotReady::WriteFailing);
        }
        None
    }
}
