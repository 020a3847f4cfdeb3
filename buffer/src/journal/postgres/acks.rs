//! The ack outbox on PostgreSQL, shared by every node: a node claims due acks with
//! `FOR UPDATE SKIP LOCKED` and a lease (`lease_owner`, `lease_until` on the database's clock),
//! so each ack is sent by one node; when that node dies mid-send, its leases run out and another
//! node sends the same ack, with the same Message-ID (it derives from the journal id and seq).
//! A delivery outcome releases the lease.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use super::{PostgresJournal, unavailable};
use crate::journal::JournalError;
use crate::journal::outbox::{AckCounts, AckMark, AckOutbox, PendingAck};

/// The database's clock in microseconds: leases are judged on one clock whatever the nodes' say.
const DB_NOW: &str = "(extract(epoch FROM clock_timestamp()) * 1000000)::bigint";

impl AckOutbox for PostgresJournal {
    async fn pending_acks(
        &self,
        after: u64,
        now: i64,
        limit: usize,
    ) -> Result<Vec<PendingAck>, JournalError> {
        let client = self.client().await?;
        let sql = format!(
            "WITH due AS (
                 SELECT seq FROM acks
                 WHERE state = 'pending' AND seq > $1 AND next_attempt <= $2
                   AND (lease_until IS NULL OR lease_until <= {DB_NOW})
                 ORDER BY seq LIMIT $3 FOR UPDATE SKIP LOCKED),
             claimed AS (
                 UPDATE acks a SET lease_owner = $4, lease_until = {DB_NOW} + $5
                 FROM due WHERE a.seq = due.seq RETURNING a.seq, a.attempts)
             SELECT c.seq, r.accepted_at, r.position, r.message_id, r.ack_to, r.domain, r.fields,
                    c.attempts, r.chain
             FROM claimed c JOIN requests r ON r.seq = c.seq ORDER BY c.seq"
        );
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] = [
            &(after.min(i64::MAX as u64) as i64),
            &now,
            &(limit as i64),
            &self.settings.node,
            &self.settings.ack_lease_us,
        ];
        let rows = client.query(&sql, &params).await.map_err(unavailable)?;
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

    /// Only pending rows change: a mark for an ack another node already sent changes nothing.
    async fn mark_acks(&self, marks: Vec<AckMark>) -> Result<(), JournalError> {
        if marks.is_empty() {
            return Ok(());
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        for mark in &marks {
            let result = match mark {
                AckMark::Sent { seq, at } => {
                    let sql =
                        "UPDATE acks SET state = 'sent', done_at = $2, attempts = attempts + 1,
                                      lease_owner = NULL, lease_until = NULL
                               WHERE seq = $1 AND state = 'pending'";
                    tx.execute(sql, &[&(*seq as i64), at]).await
                }
                AckMark::Retry {
                    seq,
                    not_before,
                    error,
                } => {
                    let sql = "UPDATE acks SET attempts = attempts + 1, next_attempt = $2,
                                      last_error = $3, lease_owner = NULL, lease_until = NULL
                               WHERE seq = $1 AND state = 'pending'";
                    tx.execute(sql, &[&(*seq as i64), not_before, error]).await
                }
                AckMark::Failed { seq, at, error } => {
                    let sql = "UPDATE acks SET state = 'failed', done_at = $2, last_error = $3,
                                      attempts = attempts + 1, lease_owner = NULL,
                                      lease_until = NULL
                               WHERE seq = $1 AND state = 'pending'";
                    tx.execute(sql, &[&(*seq as i64), at, error]).await
                }
            };
            result.map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)
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
