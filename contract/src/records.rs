//! The run-record files of a landrush run folder, and how they are read and written.
//!
//! These names are a public format (contract: Run records): other tools read them, so fields may
//! be added but never renamed. Every file is JSON Lines, one record per line, so a run of a million
//! requests streams to and from disk without being held in memory.
//!
//! | file             | one line per                                   | written by                     |
//! |------------------|------------------------------------------------|--------------------------------|
//! | `sent.jsonl`     | transmission of a request by a driver          | `landrush run` (SMTP/HTTP)     |
//! | `handed.jsonl`   | request the registration side received         | fake registry / SMTP / Maildir |
//! | `acks.jsonl`     | acknowledgement mail the ack sink received     | ack sink                       |
//! | `stats.jsonl`    | sample of the buffer's `/v1/stats`             | `landrush rehearse`            |
//! | `faults.jsonl`   | fault injected during the run                  | `landrush rehearse`            |
//! | `run.json`       | (one JSON object) what was run, where, when    | `landrush run` / `rehearse`    |
//! | `checks.json`    | (one JSON object) what the checks need besides | `landrush rehearse`            |
//!
//! Raw messages are compared by one digest, [`sha256_hex`] (and [`handed_sha256`] for a message
//! as a relay handed it over).
//!
//! Times are UTC RFC 3339 strings with microseconds (`2026-12-01T09:00:00.123456Z`), see [`Stamp`]
//! and [`crate::utc`].

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use anyhow::Context;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::utc;

pub const SENT: &str = "sent.jsonl";
pub const HANDED: &str = "handed.jsonl";
pub const ACKS: &str = "acks.jsonl";
pub const STATS: &str = "stats.jsonl";
pub const FAULTS: &str = "faults.jsonl";
pub const RUN: &str = "run.json";
pub const CHECK_INPUTS: &str = "checks.json";

/// What the checkers need to know about a run beyond its record files, saved by `landrush
/// rehearse` as `checks.json` so that `landrush check DIR` reproduces the rehearsal's verdict.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckInputs {
    /// The first seq of this run (1 for a fresh buffer; the buffer's `accepted` + 1 before the
    /// run for one that already held requests).
    #[serde(default)]
    pub first_seq: Option<u64>,
    /// The buffer's own highest stored seq at the end (`accepted` of `/v1/stats`): seqs up to it
    /// must all be handed over, so trailing gaps are found.
    #[serde(default)]
    pub highest_seq: Option<u64>,
    /// Whether the buffer was expected to send acks.
    #[serde(default = "yes")]
    pub acks_expected: bool,
    /// False when the wait for the handover and the acks ended before everything arrived.
    #[serde(default)]
    pub drain_complete: Option<bool>,
    /// The buffer's own `/v1/stats` at the end: its cursor, its queue depth and its pending acks.
    /// A queue or acks still pending mean the observers stopped before the buffer was done, so
    /// what they did not see is not yet proof of loss.
    #[serde(default)]
    pub final_cursor: Option<u64>,
    #[serde(default)]
    pub final_queue_depth: Option<u64>,
    #[serde(default)]
    pub final_acks_pending: Option<u64>,
    /// The clock tolerance the checks used, in microseconds.
    #[serde(default)]
    pub clock_tolerance_us: u64,
}

fn yes() -> bool {
    true
}

/// A UTC instant, serialized as RFC 3339 with exactly six fractional digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp(pub OffsetDateTime);

impl Stamp {
    pub fn now() -> Self {
        Stamp(OffsetDateTime::now_utc())
    }

    /// Microseconds since the Unix epoch: the unit every checker compares in.
    pub fn micros(&self) -> i64 {
        (self.0.unix_timestamp_nanos() / 1_000) as i64
    }

    pub fn from_micros(micros: i64) -> Self {
        Stamp(
            OffsetDateTime::from_unix_timestamp_nanos(micros as i128 * 1_000)
                .expect("micros within OffsetDateTime's range"),
        )
    }

    /// Reads any RFC 3339 instant, converted to UTC.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let parsed =
            utc::parse_utc(text).with_context(|| format!("`{text}` is not an RFC 3339 instant"))?;
        Ok(Stamp(parsed))
    }
}

impl std::fmt::Display for Stamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&utc::format_utc_micros(self.0))
    }
}

impl Serialize for Stamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Stamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Stamp::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// What became of one transmission, as the client saw it (contract: Indeterminate outcomes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The buffer answered success (SMTP 250 after DATA, HTTP 202).
    Accepted,
    /// The buffer answered an error (4xx/5xx, HTTP 4xx/5xx).
    Refused,
    /// No reply: connection cut, timeout, or dropped on purpose (RFC 1047 retransmission test).
    Indeterminate,
    /// The end of data was never sent (no connection, or it broke before the end of data): the
    /// buffer cannot have stored anything.
    Failed,
}

/// One transmission of a request by a driver: a line of `sent.jsonl`.
///
/// A request is identified by `id` (its `X-Landrush-Id`). An RFC 1047 retransmission sends the same
/// message again, so it shares `id` and `message_id` with the first attempt and has `attempt` 2, 3…
/// A resubmission ("hitting Submit") is a new request with a new `id` and a new Message-ID.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SentRecord {
    pub id: String,
    /// Which simulated client (connection slot or web user) sent it.
    pub client: u32,
    pub message_id: String,
    pub domain: String,
    /// Envelope sender / requester address (where the ack should go).
    #[serde(default)]
    pub sender: String,
    /// `smtp` or `http`.
    #[serde(default = "default_intake")]
    pub intake: String,
    /// `normal`, `resubmission`, `retransmission`, `malformed`, `oversize`, … (scenario's words).
    #[serde(default = "default_kind")]
    pub kind: String,
    /// 1 for the first transmission of this `id`, 2 for its first retransmission, …
    #[serde(default = "one")]
    pub attempt: u32,
    /// When the schedule wanted it sent.
    pub intended_at: Stamp,
    /// When the driver finished sending it (end of DATA / end of the HTTP body); null if never sent.
    pub sent_at: Option<Stamp>,
    /// When the final reply arrived; null if none did.
    pub replied_at: Option<Stamp>,
    /// SMTP reply code or HTTP status; null if none.
    pub code: Option<u16>,
    /// The reply text as received (first line for SMTP multi-line replies is enough).
    pub reply: Option<String>,
    /// The ticket (seq) named in a success reply, if any.
    pub ticket: Option<u64>,
    pub outcome: Outcome,
    /// The client group it belongs to (fairness figures); absent means the default group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// [`sha256_hex`] of the message as sent (SMTP: before dot-stuffing, without the end mark);
    /// absent where the driver does not know the bytes the buffer stores (web forms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_sha256: Option<String>,
    /// The STARTTLS handshake (µs, from the `220` to STARTTLS until the session is encrypted)
    /// of the connection this transmission opened; absent when it reused a connection or did no
    /// STARTTLS, so each handshake counts once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_handshake_us: Option<u64>,
    /// The buffer node the message went to (`ADDRESS:PORT` of its SMTP or web intake), when
    /// it was sent; several nodes show which one took what.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

fn default_intake() -> String {
    "smtp".into()
}
fn default_kind() -> String {
    "normal".into()
}
fn one() -> u32 {
    1
}

/// One request received by the registration side: a line of `handed.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HandedRecord {
    /// The buffer's sequence number. For sources without one (SMTP relay, Maildir) the 1-based
    /// order of delivery stands in for it, and `seq_is_order` is true.
    pub seq: u64,
    #[serde(default)]
    pub seq_is_order: bool,
    /// The buffer's accepted-at time, where the source tells it.
    pub accepted_at: Option<Stamp>,
    pub message_id: Option<String>,
    /// The request's `X-Landrush-Id`, where the source gives it.
    pub landrush_id: Option<String>,
    pub domain: Option<String>,
    #[serde(default)]
    pub sender: Option<String>,
    /// When the registration side received it.
    pub handed_at: Stamp,
    /// `api`, `smtp` or `maildir`.
    pub source: String,
    /// [`handed_sha256`] of the raw message as handed over, where the observer sees it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_sha256: Option<String>,
}

/// One acknowledgement mail received by the ack sink: a line of `acks.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AckRecord {
    /// The ack's own Message-ID (a resend after a crash carries the same one).
    pub message_id: Option<String>,
    /// The request's Message-ID, from `In-Reply-To`.
    pub in_reply_to: Option<String>,
    /// The ticket (seq) the ack names.
    pub ticket: Option<u64>,
    /// The accepted-at the ack names (`X-Barrage-Accepted-At`).
    #[serde(default)]
    pub accepted_at: Option<Stamp>,
    /// Envelope recipient(s) of the ack.
    pub to: Vec<String>,
    pub received_at: Stamp,
}

/// One sample of the buffer's `/v1/stats`: a line of `stats.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsSample {
    pub at: Stamp,
    pub accepted: u64,
    pub cursor: u64,
    pub queue_depth: u64,
    #[serde(default)]
    pub acks_pending: Option<u64>,
}

/// One injected fault: a line of `faults.jsonl` (and an entry of report.json's `faults`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRecord {
    /// `kill`, `registry`, `ack-relay`, `disk-full`, `power-loss`, `connections`.
    pub kind: String,
    pub at: Stamp,
    /// When the fault ended (restart, relay back, …), if it did.
    #[serde(default)]
    pub until: Option<Stamp>,
    #[serde(default)]
    pub detail: serde_json::Value,
}

/// The lowercase hex SHA-256 of `bytes`: the one digest of raw messages in the run records.
pub fn sha256_hex(bytes: &[u8]) -> String {
    crate::chain::raw_sha256(bytes)
}

/// Trace header fields a relay or a delivery agent prepends to a message (RFC 5321, 4.4).
const TRACE_FIELDS: [&str; 4] = ["received", "return-path", "delivered-to", "x-original-to"];

/// The digest of a message as handed over, comparable with the sent record's `raw_sha256`: the
/// trace fields a relay prepended (`Received`, `Return-Path`, `Delivered-To`, `X-Original-To`,
/// with their continuation lines) are skipped, and line ends are made CRLF again (a Maildir
/// stores LF; a buffer refuses bare LFs, so a sent message has none), the rest is hashed as it is.
pub fn handed_sha256(raw: &[u8]) -> String {
    let mut start = 0;
    let mut in_trace = false;
    while start < raw.len() {
        let end = raw[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(raw.len(), |n| start + n + 1);
        let line = &raw[start..end];
        let folded = line.first().is_some_and(|&b| b == b' ' || b == b'\t');
        let is_trace = TRACE_FIELDS.iter().any(|name| {
            line.len() > name.len()
                && line[..name.len()].eq_ignore_ascii_case(name.as_bytes())
                && line[name.len()] == b':'
        });
        if !(is_trace || (folded && in_trace)) {
            break;
        }
        in_trace = true;
        start = end;
    }
    let rest = &raw[start..];
    let mut crlf = Vec::with_capacity(rest.len() + rest.len() / 32);
    for (i, &b) in rest.iter().enumerate() {
        if b == b'\n' && (i == 0 || rest[i - 1] != b'\r') {
            crlf.push(b'\r');
        }
        crlf.push(b);
    }
    sha256_hex(&crlf)
}

/// The shard (1-based index among `count`) that plays sending client `client`: clients are dealt
/// to shards in turn, client `c` to shard `c mod count + 1` (contract: Run records). A record's
/// machine is its shard's.
pub fn shard_of_client(client: u32, count: u32) -> u32 {
    client % count.max(1) + 1
}

/// How a machine's clock offset was measured (contract: FIFO, rule 9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClockMethod {
    /// From the accepted-at the buffer's success replies carry: the buffer's clock is the reference.
    BufferReplies,
    /// A four-timestamp exchange with a time endpoint (`landrush observe`'s `GET /time`).
    TimeExchange,
    /// Not measured: the offset is unknown.
    None,
}

impl ClockMethod {
    /// The word run.json uses: `buffer-replies`, `time-exchange`, `none`.
    pub fn as_str(self) -> &'static str {
        match self {
            ClockMethod::BufferReplies => "buffer-replies",
            ClockMethod::TimeExchange => "time-exchange",
            ClockMethod::None => "none",
        }
    }
}

/// `run.json`'s `clock`: a machine's offset (`local − reference`) as an interval in microseconds
/// (contract: Run records, FIFO rule 8). `offset_us` is null when unknown, and then `note` says why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockEstimate {
    /// What the offset is measured against: `buffer ADDR` or the time endpoint's URL; empty when
    /// not measured.
    #[serde(default)]
    pub reference: String,
    pub method: ClockMethod,
    /// `[lo, hi]`: the true offset lay in this interval during the run.
    #[serde(default)]
    pub offset_us: Option<[i64; 2]>,
    /// How many measurements the interval was intersected from.
    #[serde(default)]
    pub samples: u64,
    /// Why the offset is unknown, or what a reader must know about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Appends records to a JSON Lines file, one line each.
pub struct JsonlWriter<T> {
    out: BufWriter<File>,
    _record: std::marker::PhantomData<fn(T)>,
}

impl<T: Serialize> JsonlWriter<T> {
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        let file =
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(JsonlWriter {
            out: BufWriter::new(file),
            _record: std::marker::PhantomData,
        })
    }

    pub fn write(&mut self, record: &T) -> anyhow::Result<()> {
        serde_json::to_writer(&mut self.out, record)?;
        self.out.write_all(b"\n")?;
        Ok(())
    }

    pub fn flush(&mut self) -> anyhow::Result<()> {
        self.out.flush()?;
        Ok(())
    }
}

/// Reads a JSON Lines file lazily. A missing file reads as empty (a run without acks has no
/// `acks.jsonl`); a malformed line is an error naming the file and line.
pub fn read_jsonl<T: DeserializeOwned>(
    path: &Path,
) -> anyhow::Result<impl Iterator<Item = anyhow::Result<T>>> {
    let lines = match File::open(path) {
        Ok(file) => Some(BufReader::new(file).lines()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
    };
    let name = path.display().to_string();
    Ok(lines
        .into_iter()
        .flatten()
        .enumerate()
        .filter(|(_, line)| !matches!(line, Ok(l) if l.trim().is_empty()))
        .map(move |(n, line)| {
            let line = line.with_context(|| format!("{name}: cannot read line {}", n + 1))?;
            serde_json::from_str(&line).with_context(|| format!("{name}:{}: bad record", n + 1))
        }))
}

/// Reads a whole JSON Lines file into memory (for files bounded by the run's request count).
pub fn read_all<T: DeserializeOwned>(path: &Path) -> anyhow::Result<Vec<T>> {
    read_jsonl(path)?.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_method_is_named_as_run_json_writes_it() {
        for method in [
            ClockMethod::BufferReplies,
            ClockMethod::TimeExchange,
            ClockMethod::None,
        ] {
            let written = serde_json::to_value(method).unwrap();
            assert_eq!(written, method.as_str());
        }
    }

    #[test]
    fn stamp_round_trips_with_microseconds() {
        let s = Stamp::parse("2026-12-01T09:00:00.123456Z").unwrap();
        assert_eq!(s.to_string(), "2026-12-01T09:00:00.123456Z");
        assert_eq!(Stamp::from_micros(s.micros()), s);
        let offset = Stamp::parse("2026-12-01T10:00:00.5+01:00").unwrap();
        assert_eq!(offset.to_string(), "2026-12-01T09:00:00.500000Z");
    }

    #[test]
    fn jsonl_round_trip_and_errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SENT);
        let record = SentRecord {
            id: "r1".into(),
            client: 3,
            message_id: "<r1@landrush>".into(),
            domain: "exemple.fr".into(),
            sender: "a@b.fr".into(),
            intake: "smtp".into(),
            kind: "normal".into(),
            attempt: 1,
            intended_at: Stamp::from_micros(1),
            sent_at: Some(Stamp::from_micros(2)),
            replied_at: None,
            code: None,
            reply: None,
            ticket: None,
            outcome: Outcome::Indeterminate,
            group: None,
            raw_sha256: None,
            tls_handshake_us: None,
            node: None,
        };
        let mut w = JsonlWriter::create(&path).unwrap();
        w.write(&record).unwrap();
        w.flush().unwrap();
        drop(w);
        let back: Vec<SentRecord> = read_all(&path).unwrap();
        assert_eq!(back, vec![record]);

        std::fs::write(&path, "{\"id\":1}\n").unwrap();
        let err = read_all::<SentRecord>(&path).unwrap_err();
        assert!(format!("{err:#}").contains("sent.jsonl:1"), "{err:#}");
        assert!(
            read_all::<AckRecord>(&dir.path().join(ACKS))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn handed_digests_skip_the_trace_fields_a_relay_prepends() {
        let sent = b"From: <a@b.fr>\r\nX-Landrush-Id: r1\r\n\r\ndomain: a.fr\r\n";
        let relayed = [
            b"Return-Path: <a@b.fr>\r\nReceived: from x\r\n\tby y; now\r\n".as_slice(),
            sent.as_slice(),
        ]
        .concat();
        assert_eq!(handed_sha256(&relayed), sha256_hex(sent));
        assert_eq!(handed_sha256(sent), sha256_hex(sent));
        // A Maildir stores LF line ends.
        let maildir = b"Delivered-To: x@y\nFrom: <a@b.fr>\nX-Landrush-Id: r1\n\ndomain: a.fr\n";
        assert_eq!(handed_sha256(maildir), sha256_hex(sent));
        assert_ne!(
            handed_sha256(b"From: <a@b.fr>\r\n\r\ndomain: b.fr\r\n"),
            sha256_hex(sent)
        );
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
