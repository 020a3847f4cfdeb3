//! The intakes: where requests come in (SMTP, and the web form of [`web`]) and become journal rows.
//!
//! Each intake validates its request, hands it to the [`Journal`](crate::journal::Journal), and
//! answers success only once the journal says the request is durable.

pub mod smtp;
pub mod web;

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Counts of what the intakes answered, for `/v1/stats` and `/metrics`.
#[derive(Debug, Default)]
pub struct IntakeCounters {
    pub accepted: AtomicU64,
    pub retransmissions: AtomicU64,
    /// Permanent refusals: malformed requests.
    pub refused_malformed: AtomicU64,
    /// Temporary refusals: the journal could not write.
    pub refused_unavailable: AtomicU64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct IntakeSnapshot {
    pub accepted: u64,
    pub retransmissions: u64,
    pub refused_malformed: u64,
    pub refused_unavailable: u64,
}

impl IntakeCounters {
    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> IntakeSnapshot {
        IntakeSnapshot {
            accepted: self.accepted.load(Ordering::Relaxed),
            retransmissions: self.retransmissions.load(Ordering::Relaxed),
            refused_malformed: self.refused_malformed.load(Ordering::Relaxed),
            refused_unavailable: self.refused_unavailable.load(Ordering::Relaxed),
        }
    }
}
