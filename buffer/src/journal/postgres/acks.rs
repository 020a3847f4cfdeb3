//! The ack outbox on PostgreSQL, shared by every node: a node claims due acks with
//! `FOR UPDATE SKIP LOCKED` and a lease (`lease_owner`, `lease_until` on the database's clock),
//! so each ack is sent by one node; when that node dies mid-send, its leases run out and another
//! node sends the same ack, with the same Message-ID (it derives from the journal id and seq).
//! A delivery outcome releases the lease.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use tokio_postgres::types::ToSql;

use super::PostgresJournal;
use crate::journal::JournalError;
use crate::journal::outbox::{AckCounts, AckMark, AckOutbox, PendingAck};

/// Claims up to $3 due acks after seq $1 for node $4, for $5 µs on the database's clock (leases
/// are judged on one clock whatever the nodes' say).
const CLAIM: &str = "WITH now AS (
        SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint AS us),
    due AS (
        SELECT seq FROM acks, now
        WHERE state = 'pending' AND seq > $1 AND next_attempt <= $2
          AND (lease_until IS NULL OR lease_until <= now.us)
        ORDER BY seq LIMIT $3 FOR UPDATE OF acks SKIP LOCKED),
    claimed AS (
        UPDATE acks a
        SET lease_owner = $4, lease_until = now.us + $5
        FROM due, now WHERE a.seq = due.seq RETURNING a.seq, a.attempts)
    SELECT c.seq, r.accepted_at, r.position, r.message_id, r.ack_to, r.domain, r.fields,
           c.attempts, r.chain
    FROM claimed c JOIN requests r ON r.seq = c.seq ORDER BY c.seq";

/// Every mark of a run in one statement: row by row the new state, done_at, next attempt and
/// error (NULL: unchanged), each releasing its lease. Only pending rows change; their new states
/// come back.
const MARK: &str = "UPDATE acks a
    SET state = m.state, done_at = m.done_at,
        next_attempt = COALESCE(m.next_attempt, a.next_attempt),
        last_error = COALESCE(m.error, a.last_error),
        attempts = a.attempts + 1, lease_owner = NULL, lease_until = NULL
    FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::text[])
        AS m(seq, state, done_at, next_attempt, error)
    WHERE a.seq = m.seq AND a.state = 'pending'
    RETURNING a.state";

impl AckOutbox for PostgresJournal {
    async fn pending_acks(
        &self,
        after: u64,
        now: i64,
        limit: usize,
    ) -> Result<Vec<PendingAck>, JournalError> {
        let params: [&(dyn ToSql + Sync); 5] = [
            &(after.min(i64::MAX as u64) as i64),
            &now,
            &(limit as i64),
            &self.settings.node,
            &self.settings.ack_lease_us,
        ];
        let rows = self.query(CLAIM, &params).await?;
        Ok(rows
            .iter()
            .map(|r| PendingAck {
                seq: r.get::<_, i64>(0) as u64,
                accepted_at: r.get(1),
                position: r.get::<_, i64>(2) as u64,
                message_id: r.get(3),
                ack_to: r.get::<_, Option<String>>(4).unwrap_or_default(),
                domain: r.get(5),
                fields: serde_json::from_str(r.get(6)).unwrap_or_else(|_| BTreeMap::new()),
                attempts: r.get::<_, i32>(7) as u32,
                chain: contract::chain::hex(r.get::<_, &[u8]>(8)),
            })
            .collect())
    }

    /// A mark for an ack another node already sent changes nothing.
    async fn mark_acks(&self, marks: Vec<AckMark>) -> Result<(), JournalError> {
        if marks.is_empty() {
            return Ok(());
        }
        let c = Marks::of(&marks);
        let params: [&(dyn ToSql + Sync); 5] =
            [&c.seq, &c.state, &c.done_at, &c.next_attempt, &c.error];
        let changed = self.query(MARK, &params).await?;
        // Fresh on this node at once; the journal's refresh recounts all nodes' now and then.
        for row in changed {
            match row.get::<_, &str>(0) {
                "sent" => self.counters.acks_sent.fetch_add(1, Ordering::Relaxed),
                "failed" => self.counters.acks_failed.fetch_add(1, Ordering::Relaxed),
                _ => 0,
            };
        }
        Ok(())
    }

    fn ack_counts(&self) -> AckCounts {
        let c = &self.counters;
        let oldest = c.acks_oldest.load(Ordering::Relaxed);
        AckCounts {
            pending: c.acks_pending.load(Ordering::Relaxed),
            sent: c.acks_sent.load(Ordering::Relaxed),
            failed: c.acks_failed.load(Ordering::Relaxed),
            oldest_pending_at: (oldest != 0).then_some(oldest),
        }
    }

    async fn acks_queued(&self) {
        self.counters.acks_queued.notified().await
    }
}

/// The marks as the columns of `MARK`.
struct Marks<'a> {
    seq: Vec<i64>,
    state: Vec<&'static str>,
    done_at: Vec<Option<i64>>,
    next_attempt: Vec<Option<i64>>,
    error: Vec<Option<&'a str>>,
}

impl<'a> Marks<'a> {
    fn of(marks: &'a [AckMark]) -> Self {
        let mut columns = Marks {
            seq: Vec::with_capacity(marks.len()),
            state: Vec::with_capacity(marks.len()),
            done_at: Vec::with_capacity(marks.len()),
            next_attempt: Vec::with_capacity(marks.len()),
            error: Vec::with_capacity(marks.len()),
        };
        // The last mark of a seq is its outcome: UPDATE … FROM would apply any one of several.
        let mut seen = std::collections::HashSet::new();
        for mark in marks.iter().rev() {
            let (seq, state, done_at, next_attempt, error) = match mark {
                AckMark::Sent { seq, at } => (seq, "sent", Some(*at), None, None),
                AckMark::Retry {
                    seq,
                    not_before,
                    error,
                } => (
                    seq,
                    "pending",
                    None,
                    Some(*not_before),
                    Some(error.as_str()),
                ),
                AckMark::Failed { seq, at, error } => {
                    (seq, "failed", Some(*at), None, Some(error.as_str()))
                }
            };
            if !seen.insert(*seq) {
                continue;
            }
            columns.seq.push(*seq as i64);
            columns.state.push(state);
            columns.done_at.push(done_at);
            columns.next_attempt.push(next_attempt);
            columns.error.push(error);
        }
        columns
    }
}
