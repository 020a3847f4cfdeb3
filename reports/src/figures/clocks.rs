//! report.json's `clocks`: each machine's clock against the reference, and how late its clients
//! really fired (contract: FIFO, rules 8 and 9; Verdicts).
//!
//! The machines come from run.json: a merged run's `shards` (each with its `host` and `clock`), or
//! a single run's `shard`, `host` and `clock`. A folder whose run.json names no clock has no rows.
//!
//! The offset interval `[lo, hi]` (µs, `offset = local − reference`) is shown as its midpoint
//! (`offset_ms`) and half-width (`uncertainty_ms`): the true offset is within `offset_ms ±
//! uncertainty_ms`.
//!
//! **Fire-time error** of a machine: for each of its clients, the first transmission's `sent_at`
//! taken to the reference clock (`sent_at − offset_ms`) minus that transmission's `intended_at`
//! (the agreed instant plus the schedule's offset, the same for every machine); `fire_ms` gives its
//! median and extremes over the machine's clients (exact, nearest rank). For a burst at one instant this is how late each client
//! fired after the agreed instant, as the reference clock saw it: the driver's own lag plus the
//! machine's clock error. `first_ms` is the machine's earliest `sent_at`, in the reference clock,
//! minus the run's start instant. Both are known only up to `uncertainty_ms`, and both are taken
//! at the end of data (the records stamp no earlier moment of a transmission), so they include the
//! transaction's round trips before it. They are null when the offset is unknown.

use std::collections::BTreeMap;

use contract::records::{ClockEstimate, ClockMethod, SentRecord, Stamp, shard_of_client};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One machine's line of report.json's `clocks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MachineClock {
    /// `I/N`.
    pub shard: String,
    pub host: Option<String>,
    /// What the offset is measured against (`buffer ADDR`, or the time endpoint).
    #[serde(default)]
    pub reference: String,
    pub method: ClockMethod,
    /// The offset interval's midpoint, ms (`local − reference`); null when unknown.
    pub offset_ms: Option<f64>,
    /// Its half-width, ms.
    pub uncertainty_ms: Option<f64>,
    pub samples: u64,
    /// Why the offset is unknown, or what a reader must know about it.
    #[serde(default)]
    pub note: Option<String>,
    /// Fire-time error over the machine's clients (see the module's doc); null when unknown.
    #[serde(default)]
    pub fire_ms: Option<FireError>,
    /// The machine's first end of data, in the reference clock, after the start instant, ms.
    #[serde(default)]
    pub first_ms: Option<f64>,
}

/// The fire-time errors of one machine's clients, ms (negative: fired before the instant, as far
/// as the offset's midpoint tells).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FireError {
    pub clients: u64,
    pub min: f64,
    pub p50: f64,
    pub max: f64,
}

impl FireError {
    /// Exact nearest-rank figures of `micros` (not empty).
    fn of(mut micros: Vec<i64>) -> FireError {
        assert!(!micros.is_empty(), "a fire-time error needs a client");
        micros.sort_unstable();
        let n = micros.len();
        FireError {
            clients: n as u64,
            min: ms(micros[0] as f64),
            p50: ms(micros[n.div_ceil(2) - 1] as f64),
            max: ms(micros[n - 1] as f64),
        }
    }
}

/// run.json's shard number, as the checks read it.
#[derive(Deserialize)]
struct ShardNumber {
    index: u32,
    count: u32,
}

/// A merged run.json's `shards` entry, or a single run's own keys.
#[derive(Deserialize)]
struct Entry {
    shard: ShardNumber,
    #[serde(default)]
    host: Option<String>,
    clock: Option<ClockEstimate>,
}

/// The clocks of run.json `run`, with the fire-time errors of `sent` against `started_at`.
pub fn clocks(
    run: Option<&Value>,
    sent: &[SentRecord],
    started_at: Option<Stamp>,
) -> Vec<MachineClock> {
    let Some(run) = run else {
        return Vec::new();
    };
    let entries: Vec<Entry> = match run.get("shards") {
        Some(shards) => serde_json::from_value(shards.clone()).unwrap_or_default(),
        None if run.get("clock").is_some() => {
            let mut own = run.clone();
            if own.get("shard").is_none() {
                own["shard"] = serde_json::json!({"index": 1, "count": 1});
            }
            serde_json::from_value(own)
                .map(|e| vec![e])
                .unwrap_or_default()
        }
        None => Vec::new(),
    };
    let count = entries.first().map_or(1, |e| e.shard.count);
    let mut first_sends = first_sends(sent, count);
    entries
        .into_iter()
        .filter_map(|e| {
            let clock = e.clock?;
            let sends = first_sends.remove(&e.shard.index).unwrap_or_default();
            Some(row(&e.shard, e.host, clock, &sends, started_at))
        })
        .collect()
}

/// Per shard, each client's first transmission with an end of data: `(sent_at, intended_at)`.
fn first_sends(sent: &[SentRecord], count: u32) -> BTreeMap<u32, Vec<(Stamp, Stamp)>> {
    let mut by_client: BTreeMap<u32, (Stamp, Stamp)> = BTreeMap::new();
    for record in sent {
        let Some(at) = record.sent_at else { continue };
        let first = by_client
            .entry(record.client)
            .or_insert((at, record.intended_at));
        if at < first.0 {
            *first = (at, record.intended_at);
        }
    }
    let mut by_shard: BTreeMap<u32, Vec<(Stamp, Stamp)>> = BTreeMap::new();
    for (client, first) in by_client {
        by_shard
            .entry(shard_of_client(client, count))
            .or_default()
            .push(first);
    }
    by_shard
}

fn row(
    shard: &ShardNumber,
    host: Option<String>,
    clock: ClockEstimate,
    sends: &[(Stamp, Stamp)],
    started_at: Option<Stamp>,
) -> MachineClock {
    let interval = clock.offset_us.map(|[lo, hi]| {
        let mid = (lo + hi) as f64 / 2.0;
        (mid, (hi - lo) as f64 / 2.0)
    });
    let to_reference = |t: Stamp, mid: f64| t.micros() as f64 - mid;
    let fire_ms = interval.filter(|_| !sends.is_empty()).map(|(mid, _)| {
        let errors: Vec<i64> = sends
            .iter()
            .map(|&(sent, intended)| (to_reference(sent, mid) - intended.micros() as f64) as i64)
            .collect();
        FireError::of(errors)
    });
    let first = sends.iter().map(|&(sent, _)| sent).min();
    let first_ms = match (interval, first, started_at) {
        (Some((mid, _)), Some(first), Some(start)) => {
            Some(ms(to_reference(first, mid) - start.micros() as f64))
        }
        _ => None,
    };
    MachineClock {
        shard: format!("{}/{}", shard.index, shard.count),
        host,
        reference: clock.reference,
        method: clock.method,
        offset_ms: interval.map(|(mid, _)| ms(mid)),
        uncertainty_ms: interval.map(|(_, half)| ms(half)),
        samples: clock.samples,
        note: clock.note,
        fire_ms,
        first_ms,
    }
}

/// µs as ms, rounded to the µs.
fn ms(micros: f64) -> f64 {
    (micros.round()) / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use contract::records::Outcome;
    use serde_json::json;

    const T: i64 = 1_796_115_600_000_000;

    fn sent(client: u32, intended: i64, sent: i64) -> SentRecord {
        SentRecord {
            id: format!("r{client}-{sent}"),
            client,
            message_id: String::new(),
            domain: "d.fr".into(),
            sender: String::new(),
            intake: "smtp".into(),
            kind: "normal".into(),
            attempt: 1,
            intended_at: Stamp::from_micros(T + intended),
            sent_at: Some(Stamp::from_micros(T + sent)),
            replied_at: None,
            code: None,
            reply: None,
            ticket: None,
            outcome: Outcome::Indeterminate,
            group: None,
            raw_sha256: None,
            tls_handshake_us: None,
            node: None,
        }
    }

    fn clock(offset_us: Option<[i64; 2]>) -> Value {
        json!({"reference": "buffer 127.0.0.1:25", "method": "buffer-replies",
               "offset_us": offset_us, "samples": 40})
    }

    #[test]
    fn a_merged_run_gives_each_shard_its_offset_and_fire_time_error() {
        // Shard 1 (clients 0, 2) is 0 ± 0.1 ms off; shard 2 (clients 1, 3) runs 50 ± 0.5 ms ahead,
        // so its local stamps read 50 ms late: its clients really fired 1 ms and 3 ms late.
        let run = json!({
            "shards": [
                {"shard": {"index": 1, "count": 2}, "host": "a", "clock": clock(Some([-100, 100]))},
                {"shard": {"index": 2, "count": 2}, "host": "b", "clock": clock(Some([49_500, 50_500]))},
            ],
        });
        let records = [
            sent(0, 0, 200),
            sent(2, 0, 400),
            sent(0, 10_000, 9_000),
            sent(1, 0, 51_000),
            sent(3, 0, 53_000),
            sent(3, 0, 80_000),
        ];
        let rows = clocks(Some(&run), &records, Some(Stamp::from_micros(T)));
        assert_eq!(rows.len(), 2);
        let (a, b) = (&rows[0], &rows[1]);
        assert_eq!((a.shard.as_str(), a.host.as_deref()), ("1/2", Some("a")));
        assert_eq!((a.offset_ms, a.uncertainty_ms), (Some(0.0), Some(0.1)));
        // Client 0's first send is at 200 µs (intended 0), client 2's at 400 µs.
        let fire = a.fire_ms.clone().unwrap();
        assert_eq!((fire.clients, fire.p50, fire.max), (2, 0.2, 0.4));
        assert_eq!(a.first_ms, Some(0.2));
        assert_eq!((b.offset_ms, b.uncertainty_ms), (Some(50.0), Some(0.5)));
        let fire = b.fire_ms.clone().unwrap();
        assert_eq!(
            (fire.clients, fire.min, fire.p50, fire.max),
            (2, 1.0, 1.0, 3.0)
        );
        assert_eq!(b.first_ms, Some(1.0));
        assert_eq!(b.samples, 40);
    }

    #[test]
    fn an_unknown_offset_gives_no_figures_and_keeps_its_note() {
        let mut unknown = clock(None);
        unknown["method"] = json!("none");
        unknown["note"] = json!("no reply carried the buffer's time");
        let run = json!({"host": "solo", "clock": unknown});
        let rows = clocks(Some(&run), &[sent(0, 0, 100)], None);
        assert_eq!(rows.len(), 1);
        let row = &rows[0];
        assert_eq!(row.shard, "1/1");
        assert_eq!(row.method, ClockMethod::None);
        assert_eq!(
            (row.offset_ms, row.fire_ms.clone(), row.first_ms),
            (None, None, None)
        );
        assert!(row.note.as_deref().unwrap().contains("no reply"));
    }

    #[test]
    fn a_run_without_a_clock_has_no_rows() {
        assert!(clocks(Some(&json!({"host": "x"})), &[sent(0, 0, 1)], None).is_empty());
        assert!(clocks(None, &[], None).is_empty());
    }
}
