//! The intakes: where requests come in (SMTP, and the web form of [`web`]) and become journal rows.
//!
//! Each intake validates its request, hands it to the [`Journal`](crate::journal::Journal), and
//! answers success only once the journal says the request is durable.

pub mod message_id;
pub mod smtp;
pub mod web;

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use serde::ser::SerializeMap;

use crate::anvil::Refusal;
use crate::prometheus::{Kind, PrometheusText};

/// Counts of what the intakes answered, for `/v1/stats` and `/metrics`.
#[derive(Debug, Default)]
pub struct IntakeCounters {
    pub accepted: AtomicU64,
    pub retransmissions: AtomicU64,
    /// Accepted SMTP requests that came over STARTTLS (a part of `accepted`).
    pub accepted_tls: AtomicU64,
    /// Permanent refusals: malformed requests.
    pub refused_malformed: AtomicU64,
    /// Temporary refusals: the journal could not write.
    pub refused_unavailable: AtomicU64,
    /// Accepted mails whose Message-ID was unusable, stored under a generated one.
    pub unusable_message_ids: AtomicU64,
    /// Accepted mails with no usable ack address (the null reverse-path aside): no ack.
    pub unusable_ack_addresses: AtomicU64,
    /// Fair-intake refusals, one counter per [`Refusal`], in `Refusal::ALL` order.
    fair: [AtomicU64; Refusal::ALL.len()],
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct IntakeSnapshot {
    pub accepted: u64,
    pub retransmissions: u64,
    pub accepted_tls: u64,
    pub refused_malformed: u64,
    pub refused_unavailable: u64,
    pub unusable_message_ids: u64,
    pub unusable_ack_addresses: u64,
    #[serde(flatten)]
    pub fair: FairSnapshot,
}

/// The fair-intake refusal counts, serialized as `refused_NAME` fields.
#[derive(Debug, Clone, Copy)]
pub struct FairSnapshot(pub [u64; Refusal::ALL.len()]);

impl FairSnapshot {
    pub fn get(&self, why: Refusal) -> u64 {
        self.0[why.index()]
    }

    /// Appends one `barrage_refused_NAME_total` counter per refusal.
    pub fn write_metrics(&self, text: &mut PrometheusText) {
        for why in Refusal::ALL {
            let name = format!("refused_{}_total", why.name());
            text.metric(&name, Kind::Counter, why.help(), self.get(why));
        }
    }
}

impl Serialize for FairSnapshot {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(Refusal::ALL.len()))?;
        for why in Refusal::ALL {
            map.serialize_entry(&format!("refused_{}", why.name()), &self.get(why))?;
        }
        map.end()
    }
}

impl IntakeCounters {
    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one fair-intake refusal.
    pub fn refused(&self, why: Refusal) {
        Self::count(&self.fair[why.index()]);
    }

    pub fn snapshot(&self) -> IntakeSnapshot {
        IntakeSnapshot {
            accepted: self.accepted.load(Ordering::Relaxed),
            retransmissions: self.retransmissions.load(Ordering::Relaxed),
            accepted_tls: self.accepted_tls.load(Ordering::Relaxed),
            refused_malformed: self.refused_malformed.load(Ordering::Relaxed),
            refused_unavailable: self.refused_unavailable.load(Ordering::Relaxed),
            unusable_message_ids: self.unusable_message_ids.load(Ordering::Relaxed),
            unusable_ack_addresses: self.unusable_ack_addresses.load(Ordering::Relaxed),
            fair: FairSnapshot(self.fair.each_ref().map(|c| c.load(Ordering::Relaxed))),
        }
    }
}
