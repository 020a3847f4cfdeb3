//! The drivers: what plays a scenario against a buffer and records every transmission. This
//! module holds what both drivers share — how a run is played ([`RunOptions`]), the clock that
//! stamps records ([`Clock`]), what a run did (`run.json`, [`RunInfo`]) — and the parts below
//! them: [`recorder`] (records and histograms) and [`progress`] (the live line and the summary).
//!
//! The drivers themselves: [`smtp`] (the load, one task per client; `smtp::run_scenario` is the
//! entry point of `landrush run` and `landrush rehearse`) and [`http`] (the web-form part, with
//! goose).

pub mod http;
pub mod progress;
pub mod recorder;
pub mod smtp;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use reports::records::{RUN, Stamp};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::scenario::Start;
use crate::schedule::shard::Shard;
use recorder::Summary;

/// A driver lag (actual minus intended send) above this at p99 means the driver could not keep
/// the schedule: the run is flagged and the summary says so loudly.
pub const LAG_WARN_P99: Duration = Duration::from_millis(10);
/// A single lag above this is also flagged.
pub const LAG_WARN_MAX: Duration = Duration::from_millis(250);

/// How a run is played, beyond what the scenario says.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The slice to play (default: all of it).
    pub shard: Shard,
    /// Prepended to ids and Message-IDs (`TAG-r0000042`), so that reruns against the same buffer
    /// are not taken for RFC 1047 retransmissions of the previous run.
    pub tag: Option<String>,
    /// Overrides the scenario's `start`.
    pub start: Option<Start>,
    /// Show the live progress line (only ever drawn when stderr is a terminal).
    pub progress: bool,
    /// Print the end-of-run summary to stderr.
    pub print_summary: bool,
    /// The scenario's file, for `run.json`.
    pub scenario_file: Option<PathBuf>,
    /// The target as the user named it (host:port), for `run.json`.
    pub target_label: Option<String>,
    /// Cancel to stop early: no new request is started, replies awaited are still read.
    pub stop: CancellationToken,
    /// Connections being opened at once (keeps a pre-connect of thousands from overflowing the
    /// server's listen backlog).
    pub connect_concurrency: usize,
    /// The web intake, for a key-collider whose victims are the `[http]` part's users.
    pub web_target: Option<std::net::SocketAddr>,
    /// STARTTLS for the client groups with `starttls = true`.
    pub tls: Option<std::sync::Arc<smtp::tls::ClientTls>>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            shard: Shard::WHOLE,
            tag: None,
            start: None,
            progress: true,
            print_summary: true,
            scenario_file: None,
            target_label: None,
            stop: CancellationToken::new(),
            connect_concurrency: 256,
            web_target: None,
            tls: None,
        }
    }
}

/// The driver's lag: how late it started requests compared with the schedule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LagReport {
    #[serde(flatten)]
    pub summary: Summary,
    /// p99 above [`LAG_WARN_P99`] or max above [`LAG_WARN_MAX`]: measurements of the target are
    /// mixed with the driver's own slowness.
    pub behind_schedule: bool,
}

impl LagReport {
    /// The lag of a run, flagged when it passes [`LAG_WARN_P99`] or [`LAG_WARN_MAX`].
    pub fn of(summary: Summary) -> LagReport {
        let behind_schedule = summary.count > 0
            && (summary.p99_us > LAG_WARN_P99.as_micros() as u64
                || summary.max_us > LAG_WARN_MAX.as_micros() as u64);
        LagReport {
            summary,
            behind_schedule,
        }
    }
}

/// What a run did: counts, latencies, lag and warnings. Also the body of `run.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// The scenario's name.
    pub scenario: String,
    #[serde(default)]
    pub scenario_file: Option<String>,
    /// The scenario as played (parsed, defaults filled in), so a run folder says exactly what
    /// was sent even if the file changes later.
    #[serde(default)]
    pub scenario_spec: serde_json::Value,
    pub seed: u64,
    #[serde(default)]
    pub tag: Option<String>,
    /// Target as named by the user, and the address it resolved to.
    pub target: String,
    pub target_addr: String,
    pub shard: Shard,
    /// For a merged folder: the shards it was merged from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged_from: Vec<Shard>,
    /// When the driver was launched.
    pub launched_at: Stamp,
    /// The scenario's time zero (request 0 due).
    pub started_at: Stamp,
    pub finished_at: Stamp,
    /// Requests of the scenario (after bounds) and of this shard.
    pub requests_planned: u64,
    pub shard_requests_planned: u64,
    /// Requests started (first transmissions), and transmissions including retransmissions.
    pub requests_started: u64,
    pub transmissions: u64,
    pub accepted: u64,
    pub refused: u64,
    pub indeterminate: u64,
    /// Transmissions whose end of data was never sent (no connection, broken before DATA).
    #[serde(default)]
    pub failed: u64,
    /// Requests of this shard never started (max_duration or a stop).
    pub unsent: u64,
    /// Transmissions per kind (`normal`, `hot`, `retransmission`…).
    pub kinds: BTreeMap<String, u64>,
    /// Failures without a reply, by cause.
    pub errors: BTreeMap<String, u64>,
    /// Idle connections opened, and still held when the senders finished.
    pub idle_opened: u64,
    pub idle_held_at_end: u64,
    /// Pre-connections that failed (retried at the instant), and those not ready by the start.
    #[serde(default)]
    pub pre_connect_failed: u64,
    #[serde(default)]
    pub pre_connect_late: u64,
    /// Reply after end of data (µs).
    pub latency_service: Summary,
    /// Reply after intended send time, coordinated-omission corrected (µs).
    pub latency_corrected: Summary,
    pub driver_lag: LagReport,
    pub warnings: Vec<String>,
    pub landrush_version: String,
}

/// What `smtp::run_scenario` returns: `run.json`'s content and where the records are.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub info: RunInfo,
    pub out_dir: PathBuf,
}

/// Maps tokio instants to UTC stamps: one anchor taken at launch, so records are consistent with
/// each other even if the wall clock is stepped during the run.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    instant: Instant,
    wall_us: i64,
}

impl Clock {
    pub fn now() -> Clock {
        Clock {
            instant: Instant::now(),
            wall_us: Stamp::now().micros(),
        }
    }

    pub fn stamp(&self, at: Instant) -> Stamp {
        let delta = if at >= self.instant {
            (at - self.instant).as_micros() as i64
        } else {
            -((self.instant - at).as_micros() as i64)
        };
        Stamp::from_micros(self.wall_us + delta)
    }

    pub fn instant(&self, at: Stamp) -> Instant {
        let delta = at.micros() - self.wall_us;
        if delta >= 0 {
            self.instant + Duration::from_micros(delta as u64)
        } else {
            self.instant
                .checked_sub(Duration::from_micros((-delta) as u64))
                .unwrap_or(self.instant)
        }
    }
}

/// Writes `run.json`.
pub fn write_run_info(dir: &Path, info: &RunInfo) -> anyhow::Result<()> {
    let path = dir.join(RUN);
    let text = serde_json::to_string_pretty(info)?;
    std::fs::write(&path, text + "\n").with_context(|| format!("cannot write {}", path.display()))
}

/// Reads `run.json`.
pub fn read_run_info(dir: &Path) -> anyhow::Result<RunInfo> {
    let path = dir.join(RUN);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{}: not a landrush run.json", path.display()))
}
