//! From the run records to a [`Report`]: counting, latencies, lag, ack delays, per-second series.
//!
//! Counting rules (one request = one `id` of sent.jsonl; retransmissions share it):
//! - accepted: at least one transmission was accepted;
//! - indeterminate: none accepted and at least one got no reply. A refusal of a retransmission does
//!   not prove the first transmission was not stored, so "no reply" wins over "refused";
//! - refused: none accepted or unanswered, and at least one refused;
//! - failed: every transmission failed before its end of data (nothing can be stored).
//!
//! So `sent = accepted + refused + indeterminate + failed` always holds.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use anyhow::Context;

use crate::checks::{self, Checks};
use crate::figures;
use crate::latency::{self, RunHistograms};
use crate::model::{
    Counts, LatencyMs, Percentiles, QueueSample, Report, SecondStats, Spectra, Throughput,
};
use crate::records::{
    self, AckRecord, FaultRecord, HandedRecord, Outcome, SentRecord, Stamp, StatsSample,
};

/// Everything a run folder records, read into memory.
#[derive(Debug, Clone, Default)]
pub struct RunRecords {
    pub sent: Vec<SentRecord>,
    pub handed: Vec<HandedRecord>,
    pub acks: Vec<AckRecord>,
    pub stats: Vec<StatsSample>,
    pub faults: Vec<FaultRecord>,
    /// run.json as loose JSON: its shape belongs to `landrush` and may grow.
    pub run: Option<serde_json::Value>,
}

impl RunRecords {
    /// Reads every record file of `run_dir`; missing files read as empty.
    pub fn read(run_dir: &Path) -> anyhow::Result<Self> {
        let run_path = run_dir.join(records::RUN);
        let run = match std::fs::read_to_string(&run_path) {
            Ok(text) => Some(
                serde_json::from_str(&text)
                    .with_context(|| format!("{} is not JSON", run_path.display()))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", run_path.display())),
        };
        Ok(RunRecords {
            sent: records::read_all(&run_dir.join(records::SENT))?,
            handed: records::read_all(&run_dir.join(records::HANDED))?,
            acks: records::read_all(&run_dir.join(records::ACKS))?,
            stats: records::read_all(&run_dir.join(records::STATS))?,
            faults: records::read_all(&run_dir.join(records::FAULTS))?,
            run,
        })
    }
}

/// Reads the records of `run_dir` and builds its report around the checkers' verdicts.
pub fn build_report(run_dir: &Path, checks: Checks) -> anyhow::Result<Report> {
    Ok(analyze(&RunRecords::read(run_dir)?, checks))
}

/// How the transmissions of one request ended.
#[derive(Default)]
struct RequestFate {
    accepted: bool,
    unanswered: bool,
    refused: bool,
}

/// The per-second tallies of a run, each second created when first touched.
struct Seconds {
    t0: Stamp,
    by_second: BTreeMap<u64, SecondStats>,
}

impl Seconds {
    fn new(t0: Stamp) -> Self {
        Seconds {
            t0,
            by_second: BTreeMap::new(),
        }
    }

    /// The tally of the second `at` falls in; instants before `t0` count in second 0.
    fn at(&mut self, at: Stamp) -> &mut SecondStats {
        let second = ((at.micros() - self.t0.micros()).max(0) / 1_000_000) as u64;
        self.by_second.entry(second).or_insert_with(|| SecondStats {
            second,
            ..SecondStats::default()
        })
    }

    /// Every second from 0 to the last one touched, without holes so that plots read as time,
    /// each with the accept latency of the replies that arrived in it. Leaves the tallies empty.
    fn take_series(&mut self, histograms: &RunHistograms) -> Vec<SecondStats> {
        let mut by_second = std::mem::take(&mut self.by_second);
        let last_second = by_second.keys().next_back().copied().unwrap_or(0);
        let accept_by_second = histograms.by_tag.get(latency::TAG_ACCEPT);
        (0..=last_second)
            .map(|second| {
                let mut stats = by_second.remove(&second).unwrap_or(SecondStats {
                    second,
                    ..SecondStats::default()
                });
                stats.latency_ms = accept_by_second
                    .and_then(|by_second| by_second.get(&second))
                    .map(latency::percentiles);
                stats
            })
            .collect()
    }
}

/// What one pass over the records gathers before the report is assembled.
struct Tally<'a> {
    seconds: Seconds,
    histograms: RunHistograms,
    counts: Counts,
    /// Message-ID → earliest accepting reply: where an ack's delay is measured from.
    first_accept_of_message: HashMap<&'a str, Stamp>,
    /// Request id → earliest accepting reply: the accepted side of the derived queue.
    first_accept_of_request: HashMap<&'a str, Stamp>,
    last_accept: Option<Stamp>,
    /// Request → earliest handover: the handed side of the derived queue, and the handover rate.
    first_handover: HashMap<String, Stamp>,
    /// Each acked request's first ack delay, for the distribution's bars.
    ack_delays_ms: Vec<f64>,
}

impl<'a> Tally<'a> {
    fn new(t0: Stamp) -> Self {
        Tally {
            seconds: Seconds::new(t0),
            histograms: RunHistograms::new(t0),
            counts: Counts::default(),
            first_accept_of_message: HashMap::new(),
            first_accept_of_request: HashMap::new(),
            last_accept: None,
            first_handover: HashMap::new(),
            ack_delays_ms: Vec::new(),
        }
    }

    /// Counts transmissions and requests (see the module's counting rules) and times accepts.
    fn transmissions(&mut self, sent: &'a [SentRecord]) {
        let mut fates: HashMap<&str, RequestFate> = HashMap::new();
        for record in sent {
            self.counts.transmissions += 1;
            if record.attempt > 1 {
                self.counts.retransmissions += 1;
            }
            let fate = fates.entry(&record.id).or_default();
            self.transmission(record, fate);
        }
        self.counts.sent = fates.len() as u64;
        for fate in fates.values() {
            match (fate.accepted, fate.unanswered, fate.refused) {
                (true, _, _) => self.counts.accepted += 1,
                (false, true, _) => self.counts.indeterminate += 1,
                (false, false, true) => self.counts.refused += 1,
                (false, false, false) => self.counts.failed += 1,
            }
        }
    }

    fn transmission(&mut self, sent: &'a SentRecord, fate: &mut RequestFate) {
        let sent_or_intended = sent.sent_at.unwrap_or(sent.intended_at);
        self.seconds.at(sent_or_intended).sent += 1;
        if let Some(sent_at) = sent.sent_at {
            self.driver_lag(
                sent.intended_at,
                sent_at.micros() - sent.intended_at.micros(),
            );
        }
        match (sent.outcome, sent.replied_at) {
            (Outcome::Accepted, Some(replied_at)) => {
                fate.accepted = true;
                self.accept(sent, replied_at);
            }
            // An acceptance without a reply time cannot be timed, but it still counts.
            (Outcome::Accepted, None) => fate.accepted = true,
            (Outcome::Refused, replied_at) => {
                fate.refused = true;
                self.seconds
                    .at(replied_at.unwrap_or(sent_or_intended))
                    .refused += 1;
            }
            (Outcome::Indeterminate, _) => {
                fate.unanswered = true;
                self.seconds.at(sent_or_intended).indeterminate += 1;
            }
            (Outcome::Failed, _) => self.seconds.at(sent_or_intended).failed += 1,
        }
    }

    fn driver_lag(&mut self, intended_at: Stamp, lag: i64) {
        self.histograms
            .record(latency::TAG_DRIVER_LAG, intended_at, lag);
        let max_lag = &mut self.seconds.at(intended_at).max_lag_ms;
        let lag_ms = latency::micros_to_ms(lag.max(0) as u64);
        *max_lag = Some(max_lag.map_or(lag_ms, |m: f64| m.max(lag_ms)));
    }

    fn accept(&mut self, sent: &'a SentRecord, replied_at: Stamp) {
        self.seconds.at(replied_at).accepted += 1;
        let sent_at = sent.sent_at.unwrap_or(sent.intended_at);
        let h = &mut self.histograms;
        h.record(
            latency::TAG_ACCEPT,
            replied_at,
            replied_at.micros() - sent_at.micros(),
        );
        h.record(
            latency::TAG_ACCEPT_CORRECTED,
            replied_at,
            replied_at.micros() - sent.intended_at.micros(),
        );
        keep_earliest(
            &mut self.first_accept_of_message,
            &sent.message_id,
            replied_at,
        );
        keep_earliest(&mut self.first_accept_of_request, &sent.id, replied_at);
        self.last_accept = self.last_accept.max(Some(replied_at));
    }

    /// Counts handover records and the distinct requests they carry.
    fn handovers(&mut self, handed: &[HandedRecord]) {
        for record in handed {
            self.counts.handed_records += 1;
            self.seconds.at(record.handed_at).handed += 1;
            let key = record
                .landrush_id
                .clone()
                .or_else(|| record.message_id.clone())
                .unwrap_or_else(|| format!("seq:{}", record.seq));
            let first = self.first_handover.entry(key).or_insert(record.handed_at);
            *first = (*first).min(record.handed_at);
        }
        self.counts.handed_over = self.first_handover.len() as u64;
    }

    /// Counts ack mails and acked requests, in arrival order so a request's first ack is timed.
    fn acks(&mut self, acks: &[AckRecord]) {
        let mut acks: Vec<&AckRecord> = acks.iter().collect();
        acks.sort_by_key(|a| a.received_at);
        let mut acked: BTreeSet<String> = BTreeSet::new();
        for ack in acks {
            self.counts.ack_mails += 1;
            self.seconds.at(ack.received_at).acked += 1;
            // A request is its Message-ID and, where the ack names one, its ticket: a key
            // collider's request shares its victim's Message-ID but not its ticket.
            let key = match (&ack.in_reply_to, ack.ticket) {
                (Some(request), Some(ticket)) => format!("{request} ticket:{ticket}"),
                (Some(request), None) => request.clone(),
                (None, Some(ticket)) => format!("ticket:{ticket}"),
                (None, None) => format!("ack:{}", ack.message_id.as_deref().unwrap_or("?")),
            };
            let first_ack = acked.insert(key);
            let accepted_at = ack
                .in_reply_to
                .as_deref()
                .and_then(|request| self.first_accept_of_message.get(request));
            if let (true, Some(accepted_at)) = (first_ack, accepted_at) {
                let delay = ack.received_at.micros() - accepted_at.micros();
                self.histograms
                    .record(latency::TAG_ACK_DELAY, ack.received_at, delay);
                self.ack_delays_ms
                    .push(latency::micros_to_ms(delay.max(0) as u64));
            }
        }
        self.counts.acked = acked.len() as u64;
    }
}

/// Builds the report from records already in memory.
pub fn analyze(records: &RunRecords, checks: Checks) -> Report {
    let t0 = earliest_instant(records);
    let mut report = Report {
        verdict: checks::verdict(&checks),
        warnings: crate::warnings::warnings(records.run.as_ref(), &checks),
        checks,
        faults: records.faults.clone(),
        t0,
        started_at: records.run.as_ref().and_then(start_instant).or(t0),
        scenario: run_field(records, "scenario"),
        environment: environment(records),
        ..Report::default()
    };
    report.clocks = figures::clocks::clocks(records.run.as_ref(), &records.sent, report.started_at);
    let Some(t0) = t0 else {
        return report;
    };
    let mut tally = Tally::new(t0);
    tally.transmissions(&records.sent);
    tally.handovers(&records.handed);
    tally.acks(&records.acks);

    report.series = tally.seconds.take_series(&tally.histograms);
    latency_figures(&mut report, &tally, records);
    report.throughput = Throughput {
        accepted_per_s: tally.last_accept.map_or(0.0, |last| {
            per_second(tally.counts.accepted, last.micros() - t0.micros())
        }),
        peak_accepted_per_s: report.series.iter().map(|s| s.accepted).max().unwrap_or(0) as f64,
        handed_over_per_s: handover_rate(tally.first_handover.values().copied()),
    };
    report.duration_s =
        latest_instant(records).map_or(0.0, |last| seconds_since(t0, last).max(0.0));
    (report.queue, report.queue_source) = if records.stats.is_empty() {
        let derived = derived_queue(
            &tally.first_accept_of_request,
            &tally.first_handover,
            t0,
            report.series.len(),
        );
        (derived, "derived".to_string())
    } else {
        (stats_queue(&records.stats, t0), "stats".to_string())
    };
    report.counts = tally.counts;
    report.histograms = Some(tally.histograms);
    report.burst = figures::burst(records, report.started_at.unwrap_or(t0));
    report.handover_delay_ms = figures::handover_delay(records);
    report.tls_handshake_ms = figures::tls_handshakes(records);
    report.fairness = figures::fairness::fairness(records);
    report.by_kind = figures::kinds::by_kind(&records.sent);
    report.latency_ms.reply = figures::kinds::reply_latency(&records.sent, records.run.as_ref());
    if let Some(run_count) = records
        .run
        .as_ref()
        .and_then(|run| run["latency_service"]["count"].as_u64())
        && run_count != report.latency_ms.reply.smtp_count
    {
        report.warnings.push(format!(
            "run.json's latency_service counts {run_count} replies, the records {}: the \
             driver's latency figures and the report's are not over the same replies",
            report.latency_ms.reply.smtp_count
        ));
    }
    report
}

/// Latency percentiles, spectra, driver lag and ack delays of the tallied histograms.
fn latency_figures(report: &mut Report, tally: &Tally, records: &RunRecords) {
    let histograms = &tally.histograms;
    let accept = histograms.total(latency::TAG_ACCEPT);
    let accept_corrected = histograms.total(latency::TAG_ACCEPT_CORRECTED);
    report.latency_ms = LatencyMs {
        accept: latency::percentiles(&accept),
        accept_corrected: latency::percentiles(&accept_corrected),
        ..LatencyMs::default()
    };
    report.spectrum = Spectra {
        accept: latency::spectrum(&accept),
        accept_corrected: latency::spectrum(&accept_corrected),
    };
    // The driver measures its lag where it happens (when a request was started, against its
    // schedule); `sent_at − intended_at` also counts slow clients' deliberate trickle and
    // reconnects, so it is only the fallback for runs without the driver's own figure.
    report.driver_lag_ms = records
        .run
        .as_ref()
        .and_then(driver_lag_from_run)
        .unwrap_or_else(|| latency::percentiles(&histograms.total(latency::TAG_DRIVER_LAG)));
    report.ack_delay_ms = latency::percentiles(&histograms.total(latency::TAG_ACK_DELAY));
    report.ack_delay_buckets = latency::buckets(&tally.ack_delays_ms, 20);
}

fn keep_earliest<'a>(map: &mut HashMap<&'a str, Stamp>, key: &'a str, at: Stamp) {
    let entry = map.entry(key).or_insert(at);
    *entry = (*entry).min(at);
}

/// `count` events over `micros`; a span under a millisecond is taken as one millisecond so that a
/// single instant does not divide by zero.
fn per_second(count: u64, micros: i64) -> f64 {
    round_rate(count as f64 / (micros.max(1000) as f64 / 1e6))
}

/// Rates are shown to 0.01/s.
fn round_rate(rate: f64) -> f64 {
    (rate * 100.0).round() / 100.0
}

/// Requests handed over per second between the first and the last handover: n handovers span
/// n − 1 intervals, and the registry may start late, so the clock starts at its first pull.
fn handover_rate(first_handovers: impl Iterator<Item = Stamp>) -> f64 {
    let times: Vec<Stamp> = first_handovers.collect();
    let (Some(first), Some(last)) = (times.iter().min(), times.iter().max()) else {
        return 0.0;
    };
    if times.len() < 2 || last == first {
        return 0.0;
    }
    round_rate((times.len() - 1) as f64 / ((last.micros() - first.micros()) as f64 / 1e6))
}

fn seconds_since(t0: Stamp, at: Stamp) -> f64 {
    latency::round_ms((at.micros() - t0.micros()) as f64 / 1000.0) / 1000.0
}

fn stats_queue(stats: &[StatsSample], t0: Stamp) -> Vec<QueueSample> {
    stats
        .iter()
        .map(|s| QueueSample {
            t_s: seconds_since(t0, s.at),
            depth: s.queue_depth,
            acks_pending: s.acks_pending,
        })
        .collect()
}

/// Accepted-so-far minus handed-over-so-far at the end of each second. Requests stored after an
/// unanswered transmission are handed over without having been seen accepted, hence the floor.
fn derived_queue(
    accepted: &HashMap<&str, Stamp>,
    handed: &HashMap<String, Stamp>,
    t0: Stamp,
    seconds: usize,
) -> Vec<QueueSample> {
    let count_before = |times: &mut dyn Iterator<Item = &Stamp>, end: i64| {
        times.filter(|t| t.micros() < end).count() as u64
    };
    (1..=seconds)
        .map(|second| {
            let end = t0.micros() + second as i64 * 1_000_000;
            let accepted = count_before(&mut accepted.values(), end);
            let handed = count_before(&mut handed.values(), end);
            QueueSample {
                t_s: second as f64,
                depth: accepted.saturating_sub(handed),
                acks_pending: None,
            }
        })
        .collect()
}

/// The driver's own lag summary from run.json (`driver_lag`, in microseconds), if present.
fn driver_lag_from_run(run: &serde_json::Value) -> Option<Percentiles> {
    let lag = run.get("driver_lag")?;
    let ms = |key: &str| Some(latency::micros_to_ms(lag.get(key)?.as_u64()?));
    Some(Percentiles {
        count: lag.get("count")?.as_u64()?,
        p50: ms("p50_us")?,
        p90: ms("p90_us")?,
        p99: ms("p99_us")?,
        p999: ms("p999_us")?,
        max: ms("max_us")?,
    })
}

fn all_instants(records: &RunRecords) -> impl Iterator<Item = Stamp> + '_ {
    let sent = records.sent.iter().flat_map(|s| {
        [Some(s.intended_at), s.sent_at, s.replied_at]
            .into_iter()
            .flatten()
    });
    let handed = records.handed.iter().map(|h| h.handed_at);
    let acks = records.acks.iter().map(|a| a.received_at);
    let stats = records.stats.iter().map(|s| s.at);
    let faults = records
        .faults
        .iter()
        .flat_map(|f| [Some(f.at), f.until].into_iter().flatten());
    sent.chain(handed).chain(acks).chain(stats).chain(faults)
}

/// Time zero: the first intended send, which is the instant the scenario fires at.
fn earliest_instant(records: &RunRecords) -> Option<Stamp> {
    records
        .sent
        .iter()
        .map(|s| s.intended_at)
        .min()
        .or_else(|| all_instants(records).min())
}

fn latest_instant(records: &RunRecords) -> Option<Stamp> {
    all_instants(records).max()
}

fn run_field(records: &RunRecords, name: &str) -> serde_json::Value {
    records
        .run
        .as_ref()
        .and_then(|run| run.get(name))
        .cloned()
        .unwrap_or(serde_json::Value::Null)
}

/// run.json's start instant, under whichever name it was written.
fn start_instant(run: &serde_json::Value) -> Option<Stamp> {
    ["started_at", "start", "started", "start_instant", "fire_at"]
        .iter()
        .find_map(|name| run.get(name)?.as_str())
        .and_then(|text| Stamp::parse(text).ok())
}

/// run.json's `environment`, or, when it has none, everything in it but the scenario.
fn environment(records: &RunRecords) -> serde_json::Value {
    match &records.run {
        Some(run) if run.get("environment").is_some() => run["environment"].clone(),
        Some(serde_json::Value::Object(fields)) => serde_json::Value::Object(
            fields
                .iter()
                .filter(|(name, _)| name.as_str() != "scenario")
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect(),
        ),
        _ => serde_json::Value::Null,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn driver_lag_comes_from_the_drivers_own_measure() {
        let run = serde_json::json!({"driver_lag": {"count": 3, "mean_us": 1.0, "p50_us": 500,
            "p90_us": 900, "p99_us": 1500, "p999_us": 2000, "max_us": 25000, "behind_schedule": false}});
        let lag = driver_lag_from_run(&run).unwrap();
        assert_eq!((lag.count, lag.p50, lag.max), (3, 0.5, 25.0));
        assert!(driver_lag_from_run(&serde_json::json!({"scenario": "x"})).is_none());
    }

    use super::*;
    use crate::checks::Verdict;

    /// p50, p99 and max, to HdrHistogram's 0.1%: 10 ms may read 10.007 ms.
    fn headline(p: &Percentiles) -> (f64, f64, f64) {
        let three_digits = |ms: f64| {
            let scale = 10f64.powf(2.0 - ms.log10().floor());
            (ms * scale).floor() / scale
        };
        (
            three_digits(p.p50),
            three_digits(p.p99),
            three_digits(p.max),
        )
    }

    fn at(ms: i64) -> Stamp {
        Stamp::from_micros(1_796_115_600_000_000 + ms * 1000)
    }

    fn sent(id: &str, attempt: u32, intended: i64, outcome: Outcome, reply: i64) -> SentRecord {
        SentRecord {
            id: id.into(),
            client: 1,
            message_id: format!("<{id}@landrush>"),
            domain: "exemple.fr".into(),
            sender: "a@b.fr".into(),
            intake: "smtp".into(),
            kind: "normal".into(),
            attempt,
            intended_at: at(intended),
            sent_at: Some(at(intended + 1)),
            replied_at: (outcome != Outcome::Indeterminate).then(|| at(reply)),
            code: None,
            reply: None,
            ticket: None,
            outcome,
            group: None,
            raw_sha256: None,
            tls_handshake_us: None,
            node: None,
        }
    }

    #[test]
    fn retransmissions_are_one_request_and_any_acceptance_wins() {
        let records = RunRecords {
            sent: vec![
                sent("a", 1, 0, Outcome::Indeterminate, 0),
                sent("a", 2, 100, Outcome::Accepted, 105),
                sent("b", 1, 0, Outcome::Refused, 3),
                sent("c", 1, 0, Outcome::Indeterminate, 0),
                sent("d", 1, 0, Outcome::Indeterminate, 0),
                sent("d", 2, 50, Outcome::Refused, 60),
                sent("e", 1, 1500, Outcome::Accepted, 1511),
            ],
            ..RunRecords::default()
        };
        let report = analyze(&records, Checks::new());
        let c = &report.counts;
        assert_eq!(
            (c.sent, c.accepted, c.refused, c.indeterminate),
            (5, 2, 1, 2)
        );
        assert_eq!((c.transmissions, c.retransmissions), (7, 2));
        // Accept latency is reply − end of send; corrected is reply − intended.
        assert_eq!(headline(&report.latency_ms.accept), (4.0, 10.0, 10.0));
        assert_eq!(headline(&report.latency_ms.accept_corrected).2, 11.0);
        assert_eq!(report.latency_ms.accept.count, 2);
        assert_eq!(report.series.len(), 2);
        assert_eq!(report.series[1].accepted, 1);
        assert_eq!(report.series[0].indeterminate, 3);
        // 2 accepted requests, the last accepted 1.511 s after t0.
        assert_eq!(report.throughput.accepted_per_s, 1.32);
        assert_eq!(report.driver_lag_ms.max, 1.0);
        // No checks ran over these records: that is not a pass.
        assert_eq!(report.verdict, Verdict::Incomplete);
        assert!(
            report.warnings[0].contains("no checks"),
            "{:?}",
            report.warnings
        );
        // By kind: e is the only request with a second accepted… all five are `normal` here.
        let normal = &report.by_kind.kind["normal"];
        assert_eq!(
            (normal.requests, normal.accepted, normal.indeterminate),
            (5, 2, 2)
        );
        assert_eq!(report.by_kind.intake["smtp"].transmissions, 7);
        assert!(report.by_kind.node.is_empty(), "no record names a node");
        // Replies after data: two accepted and two refused; no timeouts.
        assert_eq!(report.latency_ms.reply.percentiles.count, 4);
        assert_eq!(report.latency_ms.reply.timeouts, 0);
    }

    #[test]
    fn a_request_sent_to_two_nodes_counts_at_each() {
        let on = |mut s: SentRecord, node: &str| {
            s.node = Some(node.into());
            s
        };
        let (one, two) = ("127.0.0.1:2525", "127.0.0.2:2525");
        let records = RunRecords {
            sent: vec![
                on(sent("a", 1, 0, Outcome::Indeterminate, 0), one),
                on(sent("a", 2, 100, Outcome::Accepted, 105), two),
                on(sent("b", 1, 0, Outcome::Accepted, 3), one),
                sent("c", 1, 0, Outcome::Failed, 0),
            ],
            ..RunRecords::default()
        };
        let nodes = analyze(&records, Checks::new()).by_kind.node;
        let at = |node: &str| {
            let o = &nodes[node];
            (o.requests, o.transmissions, o.accepted, o.indeterminate)
        };
        assert_eq!(at(one), (2, 2, 1, 1));
        assert_eq!(at(two), (1, 1, 1, 0));
        assert_eq!(
            nodes.len(),
            2,
            "a transmission sent to no node counts at none"
        );
    }

    #[test]
    fn a_folder_with_only_sent_jsonl_is_incomplete_never_pass() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = records::JsonlWriter::create(&dir.path().join(records::SENT)).unwrap();
        w.write(&sent("a", 1, 0, Outcome::Accepted, 10)).unwrap();
        w.flush().unwrap();
        drop(w);
        let report = crate::regenerate(dir.path()).unwrap();
        assert_eq!(report.verdict, Verdict::Incomplete);
        let md = std::fs::read_to_string(dir.path().join(crate::REPORT_MD)).unwrap();
        assert!(md.contains("INCOMPLETE") && !md.contains("PASS"), "{md}");
        let html = std::fs::read_to_string(dir.path().join(crate::REPORT_HTML)).unwrap();
        assert!(html.contains("Read this first") && !html.contains("PASS"));
    }

    #[test]
    fn timeouts_count_in_the_reply_latency_at_the_reply_timeout() {
        let mut timed_out = sent("t", 1, 0, Outcome::Indeterminate, 0);
        timed_out.reply = Some("no reply: timeout".into());
        let records = RunRecords {
            sent: vec![sent("a", 1, 0, Outcome::Accepted, 11), timed_out],
            run: Some(serde_json::json!({"scenario_spec": {"clients": {"reply_timeout": "2s"}}})),
            ..RunRecords::default()
        };
        let reply = analyze(&records, Checks::new()).latency_ms.reply;
        assert_eq!((reply.percentiles.count, reply.timeouts), (2, 1));
        assert_eq!(reply.timeout_ms, Some(2000.0));
        assert_eq!(headline(&reply.percentiles).2, 2000.0);
    }

    #[test]
    fn a_buffer_favouring_one_group_shows_in_the_fairness_figures() {
        // Groups a and b each send 10 requests, interleaved in time (a at even ms, b at odd).
        // The buffer serves every a first and refuses half of b.
        let mut sent_records = Vec::new();
        for i in 0..20i64 {
            let group = if i % 2 == 0 { "a" } else { "b" };
            let refused = group == "b" && i % 4 == 1;
            let outcome = if refused {
                Outcome::Refused
            } else {
                Outcome::Accepted
            };
            let mut s = sent(&format!("r{i}"), 1, i, outcome, i + 5);
            s.group = Some(group.into());
            s.client = (i % 2) as u32;
            let seq = if group == "a" {
                i / 2 + 1
            } else {
                10 + i / 2 + 1
            };
            s.ticket = (!refused).then_some(seq as u64);
            sent_records.push(s);
        }
        let records = RunRecords {
            sent: sent_records,
            ..RunRecords::default()
        };
        let f = analyze(&records, Checks::new()).fairness;
        let (a, b) = (&f.groups["a"], &f.groups["b"]);
        assert_eq!((a.outcomes.accepted, b.outcomes.accepted), (10, 5));
        assert_eq!((a.accepted_share, b.accepted_share), (1.0, 0.5));
        assert!(
            a.displacement_mean < 0.0 && b.displacement_mean > 0.0,
            "{f:?}"
        );
        assert!(a.displacement_max_ahead > 0 && b.displacement_max_back > 0);
        // (1 + 0.5)² / (2 · (1 + 0.25)) = 0.9
        assert_eq!(f.jain_index, Some(0.9));
        assert_eq!(f.clients.len(), 2);
    }

    #[test]
    fn handover_and_acks_count_distinct_requests() {
        let handed = |seq: u64, id: &str, ms: i64| HandedRecord {
            seq,
            seq_is_order: false,
            accepted_at: None,
            message_id: Some(format!("<{id}@landrush>")),
            landrush_id: Some(id.into()),
            domain: None,
            sender: None,
            handed_at: at(ms),
            source: "api".into(),
            raw_sha256: None,
        };
        let ack = |request: &str, ms: i64| AckRecord {
            message_id: Some(format!("<ack-{request}>")),
            in_reply_to: Some(format!("<{request}@landrush>")),
            ticket: Some(1),
            accepted_at: None,
            to: vec!["a@b.fr".into()],
            received_at: at(ms),
        };
        let records = RunRecords {
            sent: vec![
                sent("a", 1, 0, Outcome::Accepted, 10),
                sent("b", 1, 0, Outcome::Accepted, 20),
            ],
            handed: vec![
                handed(1, "a", 500),
                handed(1, "a", 700),
                handed(2, "b", 1500),
            ],
            acks: vec![ack("a", 60), ack("a", 900), ack("b", 30)],
            ..RunRecords::default()
        };
        let report = analyze(&records, Checks::new());
        let c = &report.counts;
        assert_eq!((c.handed_over, c.handed_records), (2, 3));
        assert_eq!((c.acked, c.ack_mails), (2, 3));
        // Only each request's first ack is timed: 60 − 10 and 30 − 20.
        assert_eq!(headline(&report.ack_delay_ms), (10.0, 50.0, 50.0));
        assert_eq!(report.throughput.handed_over_per_s, 1.0);
        assert_eq!(report.queue_source, "derived");
        let depths: Vec<u64> = report.queue.iter().map(|q| q.depth).collect();
        assert_eq!(depths, vec![1, 0]);
    }

    #[test]
    fn an_empty_run_folder_gives_an_empty_report() {
        let report = analyze(&RunRecords::default(), Checks::new());
        assert_eq!(report.counts, Counts::default());
        assert!(report.series.is_empty() && report.t0.is_none());
    }
}
