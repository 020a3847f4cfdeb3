//! The ack outbox in the SQLite journal: the `acks` table, written only by the writer thread
//! (queued in the same transaction as its request, marked by [`Command::AckMarks`]), read by the
//! ack sender through its own connection.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::Notify;

use super::{Command, SqliteJournal, WriterState, open_connection};
use crate::journal::JournalError;
use crate::journal::outbox::{AckCounts, AckMark, AckOutbox, PendingAck};

/// Outbox counters, loaded at open and kept current by the writer after each commit.
pub(super) struct AckCounters {
    pending: AtomicU64,
    sent: AtomicU64,
    failed: AtomicU64,
    /// Woken when a commit queued new acks.
    queued: Notify,
    /// The sender's and the stats' connection (WAL: never blocks the writer).
    reader: Arc<Mutex<Connection>>,
}

/// Outbox changes of one batch.
#[derive(Debug, Default)]
pub(super) struct AckDelta {
    queued: u64,
    sent: u64,
    failed: u64,
}

impl AckCounters {
    pub(super) fn load(writer: &Connection, path: &Path) -> anyhow::Result<Self> {
        let count = |state: &str| -> rusqlite::Result<u64> {
            writer.query_row(
                "SELECT COUNT(*) FROM acks WHERE state = ?1",
                params![state],
                |r| r.get(0),
            )
        };
        Ok(AckCounters {
            pending: AtomicU64::new(count("pending")?),
            sent: AtomicU64::new(count("sent")?),
            failed: AtomicU64::new(count("failed")?),
            queued: Notify::new(),
            reader: Arc::new(Mutex::new(open_connection(path)?)),
        })
    }

    pub(super) fn publish(&self, delta: &AckDelta) {
        let done = delta.sent + delta.failed;
        self.pending.fetch_add(delta.queued, Ordering::Relaxed);
        // Never below zero, even if a mark repeats one already counted.
        let _ = self
            .pending
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| {
                Some(p.saturating_sub(done))
            });
        self.sent.fetch_add(delta.sent, Ordering::Relaxed);
        self.failed.fetch_add(delta.failed, Ordering::Relaxed);
        if delta.queued > 0 {
            self.queued.notify_one();
        }
    }
}

impl WriterState {
    /// Queues the ack of a request being inserted, in the same transaction.
    pub(super) fn queue_ack(&mut self, seq: u64, accepted_at: i64) -> rusqlite::Result<()> {
        self.conn
            .prepare_cached("INSERT INTO acks (seq, state, queued_at) VALUES (?1, 'pending', ?2)")?
            .execute(params![seq, accepted_at])?;
        self.ack_delta.queued += 1;
        Ok(())
    }

    /// Applies delivery outcomes. Only pending rows change: a mark for an ack already sent or
    /// failed (a resend after a crash) changes nothing.
    pub(super) fn mark_acks(&mut self, marks: &[AckMark]) -> rusqlite::Result<()> {
        for mark in marks {
            match mark {
                AckMark::Sent { seq, at } => {
                    let changed = self
                        .conn
                        .prepare_cached(
                            "UPDATE acks SET state = 'sent', done_at = ?2, attempts = attempts + 1
                             WHERE seq = ?1 AND state = 'pending'",
                        )?
                        .execute(params![seq, at])?;
                    self.ack_delta.sent += changed as u64;
                }
                AckMark::Retry {
                    seq,
                    not_before,
                    error,
                } => {
                    self.conn
                        .prepare_cached(
                            "UPDATE acks SET attempts = attempts + 1, next_attempt = ?2,
                                             last_error = ?3
                             WHERE seq = ?1 AND state = 'pending'",
                        )?
                        .execute(params![seq, not_before, error])?;
                }
                AckMark::Failed { seq, at, error } => {
                    let changed = self
                        .conn
                        .prepare_cached(
                            "UPDATE acks SET state = 'failed', done_at = ?2, last_error = ?3,
                                             attempts = attempts + 1
                             WHERE seq = ?1 AND state = 'pending'",
                        )?
                        .execute(params![seq, at, error])?;
                    self.ack_delta.failed += changed as u64;
                }
            }
        }
        Ok(())
    }
}

impl AckOutbox for SqliteJournal {
    async fn pending_acks(
        &self,
        after: u64,
        now: i64,
        limit: usize,
    ) -> Result<Vec<PendingAck>, JournalError> {
        let reader = self.ack_counters.reader.clone();
        let read = move || -> rusqlite::Result<Vec<PendingAck>> {
            let conn = reader.lock().unwrap_or_else(|p| p.into_inner());
            let mut statement = conn.prepare_cached(
                "SELECT a.seq, r.accepted_at, r.position, r.message_id, r.ack_to, r.domain,
                        r.fields, a.attempts, r.chain
                 FROM acks a JOIN requests r ON r.seq = a.seq
                 WHERE a.state = 'pending' AND a.seq > ?1 AND a.next_attempt <= ?2
                 ORDER BY a.seq LIMIT ?3",
            )?;
            let rows = statement.query_map(params![after, now, limit as i64], |r| {
                let fields: String = r.get(6)?;
                Ok(PendingAck {
                    seq: r.get(0)?,
                    accepted_at: r.get(1)?,
                    position: r.get(2)?,
                    message_id: r.get(3)?,
                    ack_to: r.get::<_, Option<String>>(4)?.unwrap_or_default(),
                    domain: r.get(5)?,
                    fields: serde_json::from_str(&fields).unwrap_or_else(|_| BTreeMap::new()),
                    attempts: r.get(7)?,
                    chain: r
                        .get::<_, Option<Vec<u8>>>(8)?
                        .map_or_else(String::new, |c| contract::chain::hex(&c)),
                })
            })?;
            rows.collect()
        };
        tokio::task::spawn_blocking(read)
            .await
            .map_err(|e| JournalError::Unavailable(e.to_string()))?
            .map_err(|e| JournalError::Unavailable(e.to_string()))
    }

    async fn mark_acks(&self, marks: Vec<AckMark>) -> Result<(), JournalError> {
        if marks.is_empty() {
            return Ok(());
        }
        self.send(|tx| Command::AckMarks(marks, tx)).await
    }

    fn ack_counts(&self) -> AckCounts {
        let c = &self.ack_counters;
        let oldest_pending_at = {
            let conn = c.reader.lock().unwrap_or_else(|p| p.into_inner());
            conn.query_row(
                "SELECT queued_at FROM acks WHERE state = 'pending' ORDER BY seq LIMIT 1",
                [],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .unwrap_or(None)
        };
        AckCounts {
            pending: c.pending.load(Ordering::Relaxed),
            sent: c.sent.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            oldest_pending_at,
        }
    }

    async fn acks_queued(&self) {
        self.ack_counters.queued.notified().await
    }
}
