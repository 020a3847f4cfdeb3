//! The report model: what `report.json` holds, and what report.md / report.html are rendered from.
//!
//! The keys `verdict`, `checks`, `counts`, `latency_ms`, `throughput` and `faults` (contract: Run
//! records) and their inner fields are a public format read by other tools: add fields, never rename. Every
//! field added later must carry `#[serde(default)]` so older report.json files still load.
//!
//! Durations are milliseconds as floats rounded to the microsecond; times on plots are seconds since
//! [`Report::t0`], the earliest intended send time of the run.

use serde::{Deserialize, Serialize};

use crate::checks::{Checks, Verdict};
use crate::latency::RunHistograms;
use crate::records::{FaultRecord, Stamp};

pub use crate::distribution::{Bucket, Percentiles, SpectrumPoint};
pub use crate::figures::clocks::{FireError, MachineClock};
pub use crate::figures::fairness::{Fairness, Share};
pub use crate::figures::kinds::{ByKind, ReplyLatency};
pub use crate::figures::{Burst, Handshakes, Outcomes};

/// Everything known about one run, ready to be rendered or compared.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The run's verdict (see [`crate::checks::verdict`]).
    pub verdict: Verdict,
    /// What a reader must know before trusting the figures: run.json's `warnings` (driver behind
    /// schedule, unsent requests, shards missing), the rehearsal's notes (stalled drain, …) and
    /// why the verdict is incomplete. Shown at the top of every report.
    #[serde(default)]
    pub warnings: Vec<String>,
    #[serde(default)]
    pub checks: Checks,
    #[serde(default)]
    pub counts: Counts,
    #[serde(default)]
    pub latency_ms: LatencyMs,
    #[serde(default)]
    pub throughput: Throughput,
    /// How late the driver started requests against its schedule: the load generator's own lag,
    /// as the driver measured it (run.json `driver_lag`; without it, `sent_at − intended_at`).
    /// A large lag means the driver, not the buffer, was the bottleneck.
    #[serde(default)]
    pub driver_lag_ms: Percentiles,
    /// `received_at` of the first ack of a request − the client-observed accept time (`replied_at`
    /// of its accepted transmission): both on the harness's clock.
    #[serde(default)]
    pub ack_delay_ms: Percentiles,
    /// The scenario as run.json describes it (loose JSON; null without run.json).
    #[serde(default)]
    pub scenario: serde_json::Value,
    /// Versions, machine, … as run.json describes them (loose JSON; null without run.json).
    #[serde(default)]
    pub environment: serde_json::Value,
    /// When the run started: run.json's start instant, else the earliest intended send time.
    #[serde(default)]
    pub started_at: Option<Stamp>,
    /// The zero of every time axis: the earliest intended send time (or earliest record).
    #[serde(default)]
    pub t0: Option<Stamp>,
    /// Seconds from `t0` to the last record of the run.
    #[serde(default)]
    pub duration_s: f64,
    /// Injected faults, from faults.jsonl.
    #[serde(default)]
    pub faults: Vec<FaultRecord>,
    /// One entry per second of the run, second 0 starting at `t0`.
    #[serde(default)]
    pub series: Vec<SecondStats>,
    /// Queue depth over time: the buffer's own stats samples when stats.jsonl exists, else derived
    /// from the records (accepted so far − handed over so far) once a second.
    #[serde(default)]
    pub queue: Vec<QueueSample>,
    /// `stats` or `derived`: where `queue` came from.
    #[serde(default)]
    pub queue_source: String,
    /// Latency percentile spectra, HdrHistogram style.
    #[serde(default)]
    pub spectrum: Spectra,
    /// The ack delay distribution as bars.
    #[serde(default)]
    pub ack_delay_buckets: Vec<Bucket>,
    /// Seconds from the start instant until the burst was stored, handed over and acked.
    #[serde(default)]
    pub burst: Burst,
    /// Percentiles of first handed over − accepted-at: how long requests waited in the buffer.
    #[serde(default)]
    pub handover_delay_ms: Percentiles,
    /// The SMTP driver's STARTTLS handshakes, one per connection that did one (count 0: no
    /// STARTTLS in the run).
    #[serde(default)]
    pub tls_handshake_ms: Handshakes,
    /// Per client group (and client, where few): outcomes, latency, displacement, Jain's index.
    #[serde(default)]
    pub fairness: Fairness,
    /// Outcomes and accept latency per request kind and per intake.
    #[serde(default)]
    pub by_kind: ByKind,
    /// Per machine (shard): its clock offset against the reference, with its uncertainty, and
    /// how late its clients fired in the reference clock. Empty when run.json names no clock.
    #[serde(default)]
    pub clocks: Vec<MachineClock>,
    /// The full histograms, for latency.hlog. Not part of report.json: a report loaded back from
    /// JSON has none, and then latency.hlog is left as it is.
    #[serde(skip)]
    pub histograms: Option<RunHistograms>,
}

/// Request counts. A request is one `id`; its retransmissions are not new requests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    /// Distinct requests sent.
    pub sent: u64,
    /// Requests with at least one accepted transmission.
    pub accepted: u64,
    /// Requests whose every transmission was refused.
    pub refused: u64,
    /// Requests with no accepted transmission and at least one without a reply: they may or may
    /// not be stored (contract: Indeterminate outcomes).
    pub indeterminate: u64,
    /// Requests whose every transmission failed before its end of data was sent.
    #[serde(default)]
    pub failed: u64,
    /// Distinct requests the registration side received.
    pub handed_over: u64,
    /// Distinct requests that got at least one ack.
    pub acked: u64,
    /// Lines of sent.jsonl: first transmissions plus retransmissions.
    #[serde(default)]
    pub transmissions: u64,
    /// Transmissions with `attempt` > 1.
    #[serde(default)]
    pub retransmissions: u64,
    /// Lines of handed.jsonl (redeliveries included).
    #[serde(default)]
    pub handed_records: u64,
    /// Lines of acks.jsonl (resends included).
    #[serde(default)]
    pub ack_mails: u64,
}

/// Accept latency.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyMs {
    /// `replied_at − sent_at` over accepted transmissions: what the client measured.
    pub accept: Percentiles,
    /// `replied_at − intended_at`: corrected for coordinated omission, so a stalled driver cannot
    /// hide a stalled buffer.
    pub accept_corrected: Percentiles,
    /// Reply after end of data over every reply (accepted or refused) and every timeout, counted
    /// at the reply timeout: the set run.json's `latency_service` counts.
    #[serde(default)]
    pub reply: ReplyLatency,
}

/// Throughput.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    /// Accepted requests / seconds from the first intended send to the last accepted reply.
    pub accepted_per_s: f64,
    /// The busiest second's accepted transmissions.
    #[serde(default)]
    pub peak_accepted_per_s: f64,
    /// Distinct requests handed over / seconds from the first to the last handover.
    #[serde(default)]
    pub handed_over_per_s: f64,
}

/// What happened during one second of the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SecondStats {
    /// Seconds since `t0` at the start of this second.
    pub second: u64,
    /// Transmissions finished sending in this second (by `sent_at`, else `intended_at`).
    pub sent: u64,
    /// Transmissions whose accepting reply arrived in this second.
    pub accepted: u64,
    /// Transmissions whose refusing reply arrived in this second.
    pub refused: u64,
    /// Transmissions sent in this second that never got a reply.
    pub indeterminate: u64,
    /// Transmissions due in this second whose end of data was never sent.
    #[serde(default)]
    pub failed: u64,
    /// Handover records received in this second.
    pub handed: u64,
    /// Ack mails received in this second.
    pub acked: u64,
    /// Accept latency of the replies that arrived in this second (null when none did).
    pub latency_ms: Option<Percentiles>,
    /// The largest driver lag among transmissions intended in this second.
    pub max_lag_ms: Option<f64>,
}

/// The buffer's queue at one instant.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QueueSample {
    /// Seconds since `t0`.
    pub t_s: f64,
    /// Accepted but not yet handed over.
    pub depth: u64,
    #[serde(default)]
    pub acks_pending: Option<u64>,
}

/// Percentile spectra of the accept latency.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Spectra {
    pub accept: Vec<SpectrumPoint>,
    pub accept_corrected: Vec<SpectrumPoint>,
}
