//! The recorder: one thread that streams every transmission to `sent.jsonl` and keeps the latency
//! and lag histograms, fed by a bounded channel so memory stays flat however long the run.
//!
//! Histograms (microseconds, 1 µs to 1 h, 3 significant digits):
//! - `service`: reply time after end-of-data (what the server took);
//! - `corrected`: reply time after the *intended* send time (coordinated-omission corrected, as
//!   wrk2 does: a late driver or a stalled connection counts against the latency);
//! - `lag`: the driver's own lateness, actual minus intended start of a request.
//!
//! They are written as HdrHistogram V2 files so `landrush merge` can add the shards' together.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use contract::histogram::micros_histogram;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use reports::records::{JsonlWriter, Outcome, SENT, SentRecord};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// File names of the histograms in a run folder.
pub const SERVICE_HDR: &str = "latency-service.hdr";
pub const CORRECTED_HDR: &str = "latency-corrected.hdr";
pub const LAG_HDR: &str = "driver-lag.hdr";

/// Records in flight between the clients and the recorder thread.
const CHANNEL: usize = 16 * 1024;

/// One finished transmission.
pub struct Event {
    pub record: SentRecord,
    /// Actual minus intended start (scheduled first attempts only).
    pub lag: Option<Duration>,
    /// Reply after end of data.
    pub service: Option<Duration>,
    /// Reply after the intended send time.
    pub corrected: Option<Duration>,
}

/// Counters shown live and summed at the end. Written by clients and the recorder, read by the
/// progress line.
#[derive(Default)]
pub struct Live {
    /// Requests finished (all their transmissions done).
    pub done: AtomicU64,
    /// Transmissions whose data was completely sent.
    pub sent: AtomicU64,
    pub accepted: AtomicU64,
    pub refused: AtomicU64,
    pub indeterminate: AtomicU64,
    /// Transmissions whose end of data was never sent.
    pub failed: AtomicU64,
    /// Transmissions begun and not finished.
    pub in_flight: AtomicU64,
    /// Idle connections currently held open.
    pub idle_held: AtomicU64,
    /// p99 of the corrected latency over the last second, µs.
    pub recent_p99_us: AtomicU64,
    /// Largest lag seen so far, µs.
    pub lag_max_us: AtomicU64,
}

/// The three histograms of a run.
pub struct Histograms {
    pub service: Histogram<u64>,
    pub corrected: Histogram<u64>,
    pub lag: Histogram<u64>,
}

impl Histograms {
    pub fn new() -> Histograms {
        Histograms {
            service: micros_histogram(),
            corrected: micros_histogram(),
            lag: micros_histogram(),
        }
    }

    /// Writes the three histograms into `dir`.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        for (name, h) in [
            (SERVICE_HDR, &self.service),
            (CORRECTED_HDR, &self.corrected),
            (LAG_HDR, &self.lag),
        ] {
            let mut bytes = Vec::new();
            V2Serializer::new()
                .serialize(h, &mut bytes)
                .map_err(|e| anyhow::anyhow!("cannot serialize histogram {name}: {e:?}"))?;
            let path = dir.join(name);
            std::fs::write(&path, bytes)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    }

    /// Reads the histograms of a run folder (a missing file reads as empty).
    pub fn load(dir: &Path) -> anyhow::Result<Histograms> {
        let read = |name: &str| -> anyhow::Result<Histogram<u64>> {
            let path = dir.join(name);
            match std::fs::read(&path) {
                Ok(bytes) => Deserializer::new()
                    .deserialize(&mut bytes.as_slice())
                    .map_err(|e| anyhow::anyhow!("{}: not a histogram: {e:?}", path.display())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(micros_histogram()),
                Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
            }
        };
        Ok(Histograms {
            service: read(SERVICE_HDR)?,
            corrected: read(CORRECTED_HDR)?,
            lag: read(LAG_HDR)?,
        })
    }

    /// Adds another run's histograms to these.
    pub fn add(&mut self, other: &Histograms) -> anyhow::Result<()> {
        self.service
            .add(&other.service)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        self.corrected
            .add(&other.corrected)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        self.lag
            .add(&other.lag)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        Ok(())
    }
}

impl Default for Histograms {
    fn default() -> Self {
        Histograms::new()
    }
}

/// A histogram's summary, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl Summary {
    pub fn of(h: &Histogram<u64>) -> Summary {
        if h.is_empty() {
            return Summary::default();
        }
        Summary {
            count: h.len(),
            mean_us: (h.mean() * 10.0).round() / 10.0,
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}

/// One client group's transmissions: outcomes and latencies (for `adversaries.json`, so the
/// honest groups' latency can be compared with and without adversaries).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupFigures {
    pub transmissions: u64,
    pub accepted: u64,
    pub refused: u64,
    /// Transmissions without a reply (indeterminate, or never sent).
    pub no_reply: u64,
    /// Reply after end of data, and after the intended send time (µs), over replied ones.
    pub latency_service: Summary,
    pub latency_corrected: Summary,
}

/// Per-group tallies kept by the recorder thread.
#[derive(Default)]
struct GroupTally {
    figures: GroupFigures,
    service: Option<Histogram<u64>>,
    corrected: Option<Histogram<u64>>,
}

impl GroupTally {
    fn add(&mut self, event: &Event) {
        let f = &mut self.figures;
        f.transmissions += 1;
        match event.record.outcome {
            Outcome::Accepted => f.accepted += 1,
            Outcome::Refused => f.refused += 1,
            // Indeterminate, or never sent.
            _ => f.no_reply += 1,
        }
        for (hist, d) in [
            (&mut self.service, event.service),
            (&mut self.corrected, event.corrected),
        ] {
            if let Some(d) = d {
                hist.get_or_insert_with(micros_histogram)
                    .saturating_record((d.as_micros() as u64).max(1));
            }
        }
    }

    fn figures(self) -> GroupFigures {
        let summary = |h: Option<Histogram<u64>>| h.as_ref().map(Summary::of).unwrap_or_default();
        GroupFigures {
            latency_service: summary(self.service),
            latency_corrected: summary(self.corrected),
            ..self.figures
        }
    }
}

/// What the recorder thread hands back: the histograms, and each group's figures.
pub struct Recorded {
    pub histograms: Histograms,
    pub groups: BTreeMap<String, GroupFigures>,
}

/// The handle the clients send through.
pub type Sink = mpsc::Sender<Event>;

/// Starts the recorder thread writing `dir/sent.jsonl`. Drop every [`Sink`] clone, then join the
/// handle to get the histograms.
pub fn start(
    dir: &Path,
    live: Arc<Live>,
) -> anyhow::Result<(Sink, std::thread::JoinHandle<anyhow::Result<Recorded>>)> {
    let mut writer = JsonlWriter::<SentRecord>::create(&dir.join(SENT))?;
    let (tx, mut rx) = mpsc::channel::<Event>(CHANNEL);
    let thread = std::thread::Builder::new()
        .name("landrush-recorder".into())
        .spawn(move || -> anyhow::Result<Recorded> {
            let mut h = Histograms::new();
            let mut groups: BTreeMap<String, GroupTally> = BTreeMap::new();
            let mut window = micros_histogram();
            let mut last_tick = std::time::Instant::now();
            while let Some(event) = rx.blocking_recv() {
                writer.write(&event.record)?;
                if let Some(group) = &event.record.group {
                    groups.entry(group.clone()).or_default().add(&event);
                }
                if let Some(lag) = event.lag {
                    let us = lag.as_micros() as u64;
                    h.lag.saturating_record(us.max(1));
                    live.lag_max_us.fetch_max(us, Ordering::Relaxed);
                }
                if let Some(d) = event.service {
                    h.service.saturating_record((d.as_micros() as u64).max(1));
                }
                if let Some(d) = event.corrected {
                    let us = (d.as_micros() as u64).max(1);
                    h.corrected.saturating_record(us);
                    window.saturating_record(us);
                }
                if last_tick.elapsed() >= Duration::from_secs(1) {
                    last_tick = std::time::Instant::now();
                    writer.flush()?;
                    if !window.is_empty() {
                        live.recent_p99_us
                            .store(window.value_at_quantile(0.99), Ordering::Relaxed);
                        window.reset();
                    }
                }
            }
            writer.flush()?;
            Ok(Recorded {
                histograms: h,
                groups: groups.into_iter().map(|(k, v)| (k, v.figures())).collect(),
            })
        })
        .context("cannot start the recorder thread")?;
    Ok((tx, thread))
}
