//! The figures a registry's operations team asks for, computed from the run records: how long
//! the burst took to be stored, handed over and acked ([`Burst`]), how long requests waited in
//! the buffer ([`handover_delay`]), whether every client group was served alike
//! ([`fairness::Fairness`]), outcomes and latency per kind of request and per intake
//! ([`kinds::ByKind`]), reply latency with timeouts counted ([`kinds::ReplyLatency`]), and each
//! machine's clock and fire-time error ([`clocks::MachineClock`]).
//!
//! Every figure is over requests (one `id` of sent.jsonl) joined to the other files by
//! `X-Landrush-Id`, else Message-ID, as the checkers join them.

pub mod clocks;
pub mod fairness;
pub mod kinds;

use std::collections::HashMap;

use contract::histogram::micros_histogram;
use serde::{Deserialize, Serialize};

use crate::analysis::RunRecords;
use crate::distribution::Percentiles;
use crate::latency;
use crate::records::{Outcome, SentRecord, Stamp};

/// Seconds from the start instant until the burst was stored, handed over and acked.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Burst {
    /// Until the last accepted request's success reply (durably accepted, as its client saw).
    pub accepted_s: Option<f64>,
    /// Until the last accepted request was first handed over; null if one never was.
    pub handed_s: Option<f64>,
    /// Until the last accepted request got its first ack; null if one never did (or no acks).
    pub acked_s: Option<f64>,
}

/// The requests of a run, each with its transmissions in file order.
pub(crate) struct Requests<'a> {
    pub order: Vec<&'a str>,
    pub by_id: HashMap<&'a str, Vec<&'a SentRecord>>,
    /// Bare Message-ID → request id.
    by_mid: HashMap<&'a str, &'a str>,
}

impl<'a> Requests<'a> {
    pub fn of(sent: &'a [SentRecord]) -> Self {
        let mut requests = Requests {
            order: Vec::new(),
            by_id: HashMap::new(),
            by_mid: HashMap::new(),
        };
        for record in sent {
            let attempts = requests.by_id.entry(&record.id).or_insert_with(|| {
                requests.order.push(&record.id);
                Vec::new()
            });
            attempts.push(record);
            if !record.message_id.is_empty() {
                requests
                    .by_mid
                    .entry(bare(&record.message_id))
                    .or_insert(&record.id);
            }
        }
        requests
    }

    /// The request a handed record or an ack names.
    pub fn join(&self, landrush_id: Option<&str>, message_id: Option<&str>) -> Option<&'a str> {
        landrush_id
            .and_then(|id| self.by_id.get_key_value(id.trim()).map(|(k, _)| *k))
            .or_else(|| message_id.and_then(|m| self.by_mid.get(bare(m)).copied()))
    }

    /// Its earliest success reply, if it was accepted.
    pub fn accepted_at(&self, id: &str) -> Option<Stamp> {
        self.by_id[id]
            .iter()
            .filter(|s| s.outcome == Outcome::Accepted)
            .filter_map(|s| s.replied_at)
            .min()
    }
}

fn bare(id: &str) -> &str {
    let id = id.trim();
    id.strip_prefix('<')
        .and_then(|s| s.strip_suffix('>'))
        .unwrap_or(id)
}

/// Each request's first handover and first ack, by request id.
pub(crate) struct Arrivals<'a> {
    pub handed: HashMap<&'a str, Stamp>,
    pub acked: HashMap<&'a str, Stamp>,
}

impl<'a> Arrivals<'a> {
    pub fn of(records: &'a RunRecords, requests: &Requests<'a>) -> Self {
        let mut arrivals = Arrivals {
            handed: HashMap::new(),
            acked: HashMap::new(),
        };
        for h in &records.handed {
            if let Some(id) = requests.join(h.landrush_id.as_deref(), h.message_id.as_deref()) {
                keep_earliest(&mut arrivals.handed, id, h.handed_at);
            }
        }
        for a in &records.acks {
            if let Some(id) = requests.join(None, a.in_reply_to.as_deref()) {
                keep_earliest(&mut arrivals.acked, id, a.received_at);
            }
        }
        arrivals
    }
}

fn keep_earliest<'a>(map: &mut HashMap<&'a str, Stamp>, key: &'a str, at: Stamp) {
    let entry = map.entry(key).or_insert(at);
    *entry = (*entry).min(at);
}

/// The burst's three durations from `start`.
pub fn burst(records: &RunRecords, start: Stamp) -> Burst {
    let requests = Requests::of(&records.sent);
    let arrivals = Arrivals::of(records, &requests);
    let accepted: Vec<&str> = requests
        .order
        .iter()
        .copied()
        .filter(|id| requests.accepted_at(id).is_some())
        .collect();
    // One division of whole microseconds: the closest double, printed without float noise.
    let since = |at: Stamp| (at.micros() - start.micros()) as f64 / 1e6;
    // The last of `times` over every accepted request, or None if one has none.
    let last_of = |times: &HashMap<&str, Stamp>| -> Option<f64> {
        let all: Option<Vec<Stamp>> = accepted.iter().map(|id| times.get(id).copied()).collect();
        all?.into_iter().max().map(since)
    };
    Burst {
        accepted_s: accepted
            .iter()
            .filter_map(|id| requests.accepted_at(id))
            .max()
            .map(since),
        handed_s: last_of(&arrivals.handed),
        acked_s: if records.acks.is_empty() {
            None
        } else {
            last_of(&arrivals.acked)
        },
    }
}

/// Percentiles of (first handed over − accepted-at) over the seqs handed over with an
/// accepted-at: how long requests waited in the buffer.
pub fn handover_delay(records: &RunRecords) -> Percentiles {
    let mut first: HashMap<u64, (Stamp, Stamp)> = HashMap::new();
    for h in &records.handed {
        if let Some(accepted_at) = h.accepted_at {
            let entry = first.entry(h.seq).or_insert((h.handed_at, accepted_at));
            entry.0 = entry.0.min(h.handed_at);
        }
    }
    let mut histogram = micros_histogram();
    for (handed_at, accepted_at) in first.values() {
        latency::record(&mut histogram, handed_at.micros() - accepted_at.micros());
    }
    latency::percentiles(&histogram)
}

/// The STARTTLS handshakes the SMTP driver timed (`tls_handshake_us` of sent.jsonl): one per
/// connection that did one, so reused connections do not dilute the figure.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Handshakes {
    #[serde(flatten)]
    pub percentiles: Percentiles,
    /// The mean handshake, ms.
    #[serde(default)]
    pub mean: f64,
}

/// The distribution of the STARTTLS handshakes recorded in sent.jsonl.
pub fn tls_handshakes(records: &RunRecords) -> Handshakes {
    let mut histogram = micros_histogram();
    for us in records.sent.iter().filter_map(|s| s.tls_handshake_us) {
        latency::record(&mut histogram, i64::try_from(us).unwrap_or(i64::MAX));
    }
    let mean = if histogram.is_empty() {
        0.0
    } else {
        latency::round_ms(histogram.mean() / 1000.0)
    };
    Handshakes {
        percentiles: latency::percentiles(&histogram),
        mean,
    }
}

/// A request's outcome over all its transmissions (contract: Indeterminate outcomes): accepted
/// if any was, else indeterminate if any was, else refused if any was, else failed.
pub(crate) fn request_outcome(attempts: &[&SentRecord]) -> Outcome {
    let any = |o: Outcome| attempts.iter().any(|s| s.outcome == o);
    [Outcome::Accepted, Outcome::Indeterminate, Outcome::Refused]
        .into_iter()
        .find(|&o| any(o))
        .unwrap_or(Outcome::Failed)
}

/// Requests sent, and how they ended, with the accept latency of their accepted transmissions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Outcomes {
    pub requests: u64,
    pub transmissions: u64,
    pub accepted: u64,
    pub refused: u64,
    pub indeterminate: u64,
    pub failed: u64,
    /// `replied_at − sent_at` over accepted transmissions.
    pub accept_ms: Percentiles,
}

/// Tallies [`Outcomes`] request by request.
#[derive(Default)]
pub(crate) struct OutcomeTally {
    outcomes: Outcomes,
    latency: Option<hdrhistogram::Histogram<u64>>,
}

impl OutcomeTally {
    pub fn add(&mut self, attempts: &[&SentRecord]) {
        let o = &mut self.outcomes;
        o.requests += 1;
        o.transmissions += attempts.len() as u64;
        match request_outcome(attempts) {
            Outcome::Accepted => o.accepted += 1,
            Outcome::Refused => o.refused += 1,
            Outcome::Indeterminate => o.indeterminate += 1,
            Outcome::Failed => o.failed += 1,
        }
        let histogram = self.latency.get_or_insert_with(micros_histogram);
        for s in attempts.iter().filter(|s| s.outcome == Outcome::Accepted) {
            if let (Some(sent), Some(replied)) = (s.sent_at, s.replied_at) {
                latency::record(histogram, replied.micros() - sent.micros());
            }
        }
    }

    pub fn finish(mut self) -> Outcomes {
        if let Some(histogram) = &self.latency {
            self.outcomes.accept_ms = latency::percentiles(histogram);
        }
        self.outcomes
    }
}
