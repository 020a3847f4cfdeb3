//! The ack outbox: what is pending, and how deliveries are recorded. It sits in the journal layer
//! because the journal writes its rows; the ack sender (above) only reads and marks them through
//! [`AckOutbox`].
//!
//! The rows are written by the journal: the transaction that stores a new request also
//! queues its ack (so no accepted request can lack one after a crash), and every outcome the
//! sender reports goes through the journal's single writer like any other state change.

use std::collections::BTreeMap;
use std::future::Future;

use serde::Serialize;

use super::JournalError;

/// One ack waiting to be sent, with what the mail needs from its request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingAck {
    pub seq: u64,
    /// Microseconds since the epoch, UTC.
    pub accepted_at: i64,
    pub position: u64,
    pub message_id: String,
    pub ack_to: String,
    pub domain: String,
    pub fields: BTreeMap<String, String>,
    /// The request's `chain`, lowercase hex (contract: Provable order), for its receipt.
    pub chain: String,
    /// Deliveries tried so far that the relay refused for this message.
    pub attempts: u32,
}

/// The outcome of one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckMark {
    /// The relay took it.
    Sent { seq: u64, at: i64 },
    /// Refused for this message, try again not before `not_before` (microseconds).
    Retry {
        seq: u64,
        not_before: i64,
        error: String,
    },
    /// Given up for good (permanent refusal, bad address, too many attempts).
    Failed { seq: u64, at: i64, error: String },
}

/// Counts of the outbox for `/v1/stats` and `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AckCounts {
    pub pending: u64,
    pub sent: u64,
    pub failed: u64,
    /// Accepted-at (microseconds) of the oldest pending ack.
    pub oldest_pending_at: Option<i64>,
}

/// What the ack sender needs from a journal.
pub trait AckOutbox: Send + Sync + 'static {
    /// Pending acks with seq > `after` that are due at `now` (microseconds), in seq order.
    fn pending_acks(
        &self,
        after: u64,
        now: i64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<PendingAck>, JournalError>> + Send;

    /// Records delivery outcomes durably (one transaction of the journal's writer).
    fn mark_acks(
        &self,
        marks: Vec<AckMark>,
    ) -> impl Future<Output = Result<(), JournalError>> + Send;

    /// The outbox counters, cheap to call.
    fn ack_counts(&self) -> AckCounts;

    /// Resolves when new acks may have been queued since the last call.
    fn acks_queued(&self) -> impl Future<Output = ()> + Send;
}
