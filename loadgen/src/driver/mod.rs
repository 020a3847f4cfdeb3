//! The SMTP load driver: plays a scenario against an SMTP address and records every transmission.
//!
//! [`run_scenario`] is the library entry point (`landrush run` and `landrush rehearse` both call
//! it). It spawns one task per sending client (each walks its own requests lazily, see
//! [`crate::schedule`]) and one per idle connection, streams records to `sent.jsonl` through the
//! [`recorder`], shows [`progress`], and at the end writes `run.json` ([`RunInfo`]) and the
//! histograms.
//!
//! Module map: [`smtp`] one connection's SMTP; [`client`] one client's loop (schedule, pre-connect,
//! misbehaviour, records); [`recorder`] records and histograms; [`progress`] the live line and the
//! summary; [`cli`] the `run` and `merge` subcommands.

pub mod cli;
pub mod client;
pub mod progress;
pub mod recorder;
pub mod smtp;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use reports::records::{RUN, Stamp};
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

use crate::scenario::request::Requests;
use crate::scenario::{Scenario, Start};
use crate::schedule::Plan;
use crate::shard::Shard;
use recorder::{Histograms, Live, Summary};

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
    /// Set to `true` to stop early: no new request is started, replies awaited are still read.
    pub stop: Option<watch::Receiver<bool>>,
    /// Connections being opened at once (keeps a pre-connect of thousands from overflowing the
    /// server's listen backlog).
    pub connect_concurrency: usize,
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
            stop: None,
            connect_concurrency: 256,
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

/// What [`run_scenario`] returns: `run.json`'s content and where the records are.
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

/// Plays `scenario` (or the `options.shard` slice of it) against `target`, writing `sent.jsonl`,
/// the histograms and `run.json` into `out_dir` (created if missing).
///
/// Usable from inside any tokio runtime (multi-threaded preferred: the recorder runs on its own
/// thread either way). Returns once every client is done, the deadline (`bounds.max_duration`
/// after the start) has passed, or `options.stop` turned true. Errors are setup errors (bad
/// folder, start instant passed); what happens on the wire is recorded, not returned as an error.
pub async fn run_scenario(
    scenario: &Scenario,
    target: SocketAddr,
    out_dir: &Path,
    options: RunOptions,
) -> anyhow::Result<RunSummary> {
    scenario.validate()?;
    let plan = Plan::new(scenario)?;
    let shard = options.shard;
    ensure!(
        shard.count <= scenario.clients.count,
        "shard {shard}: the scenario has only {} sending clients to share among {} shards",
        scenario.clients.count,
        shard.count
    );
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;

    let clock = Clock::now();
    let launched_at = clock.stamp(clock.instant);
    let start_at = options.start.unwrap_or(scenario.start).resolve(launched_at);
    if start_at.micros() < launched_at.micros() - 1_000_000 {
        bail!(
            "the start instant {start_at} has passed (it is now {launched_at}); give a later \
             `start` or override it with --start +2s"
        );
    }
    ensure!(
        start_at.micros() - launched_at.micros() <= 7 * 24 * 3600 * 1_000_000,
        "the start instant {start_at} is more than a week away; is the date right?"
    );
    let start = clock.instant(start_at);
    let deadline = start + scenario.bounds.max_duration.0;
    let requests = Requests::new(scenario, &plan, options.tag.clone());

    let live = Arc::new(Live::default());
    let (sink, recorder) = recorder::start(out_dir, live.clone())?;
    let shard_planned = shard.request_count(&plan);
    let progress = progress::Progress::start(
        options.progress,
        live.clone(),
        shard_planned,
        scenario.bounds.max_duration.0,
    );

    let (done_tx, done_rx) = watch::channel(false);
    let stop = options.stop.clone().unwrap_or_else(|| {
        // Never fires; the sender is leaked on purpose so the receiver never sees "closed".
        let (tx, rx) = watch::channel(false);
        std::mem::forget(tx);
        rx
    });
    let ctx = Arc::new(client::Ctx {
        target,
        requests,
        clock,
        start,
        deadline,
        live: live.clone(),
        connect_gate: Semaphore::new(options.connect_concurrency.max(1)),
        stats: Mutex::new(client::Stats::default()),
        progress: progress.handle(),
        lag_warned: std::sync::atomic::AtomicBool::new(false),
    });

    let mut idle = tokio::task::JoinSet::new();
    for n in 0..scenario.clients.idle {
        if shard.owns_idle(n) {
            idle.spawn(client::hold_idle(
                ctx.clone(),
                done_rx.clone(),
                stop.clone(),
            ));
        }
    }
    let mut senders = tokio::task::JoinSet::new();
    for c in 0..scenario.clients.count {
        if shard.owns_client(c) {
            senders.spawn(client::run_client(
                ctx.clone(),
                c,
                sink.clone(),
                stop.clone(),
            ));
        }
    }
    drop(sink);
    while let Some(joined) = senders.join_next().await {
        if let Err(e) = joined
            && e.is_panic()
        {
            std::panic::resume_unwind(e.into_panic());
        }
    }
    let idle_held_at_end = live.idle_held.load(Ordering::Relaxed);
    let _ = done_tx.send(true);
    while idle.join_next().await.is_some() {}
    let finished_at = clock.stamp(Instant::now());
    progress.finish();

    let histograms = tokio::task::spawn_blocking(move || recorder.join())
        .await
        .context("recorder task")?
        .map_err(|_| anyhow::anyhow!("the recorder thread panicked"))??;
    histograms.save(out_dir)?;

    let stats = std::mem::take(&mut *ctx.stats.lock().unwrap());
    let lag = Summary::of(&histograms.lag);
    let behind = lag.count > 0
        && (lag.p99_us > LAG_WARN_P99.as_micros() as u64
            || lag.max_us > LAG_WARN_MAX.as_micros() as u64);
    let mut warnings = Vec::new();
    if behind {
        warnings.push(format!(
            "DRIVER BEHIND SCHEDULE: landrush started requests late (lag p99 {:.1} ms, max {:.1} \
             ms). Part of the measured latency is the driver's own; corrected latencies include \
             it. Use fewer clients per machine, a release build, or --shard over more machines.",
            lag.p99_us as f64 / 1000.0,
            lag.max_us as f64 / 1000.0
        ));
    }
    let unsent = shard_planned.saturating_sub(stats.requests_started);
    if unsent > 0 {
        warnings.push(format!(
            "{unsent} requests of this shard were never started (max_duration {} reached or \
             stopped)",
            scenario.bounds.max_duration
        ));
    }
    if stats.pre_connect_late > 0 || stats.pre_connect_failed > 0 {
        warnings.push(format!(
            "pre-connect: {} clients were not connected and staged by the start instant and {}              failed (retried at the instant); give `start` more time or use --shard",
            stats.pre_connect_late, stats.pre_connect_failed
        ));
    }
    let info = RunInfo {
        scenario: scenario.name.clone(),
        scenario_file: options
            .scenario_file
            .as_ref()
            .map(|p| p.display().to_string()),
        scenario_spec: serde_json::to_value(scenario).unwrap_or_default(),
        seed: scenario.seed,
        tag: options.tag.clone(),
        target: options
            .target_label
            .clone()
            .unwrap_or_else(|| target.to_string()),
        target_addr: target.to_string(),
        shard,
        merged_from: Vec::new(),
        launched_at,
        started_at: start_at,
        finished_at,
        requests_planned: plan.total(),
        shard_requests_planned: shard_planned,
        requests_started: stats.requests_started,
        transmissions: stats.transmissions,
        accepted: live.accepted.load(Ordering::Relaxed),
        refused: live.refused.load(Ordering::Relaxed),
        indeterminate: live.indeterminate.load(Ordering::Relaxed),
        unsent,
        kinds: stats.kinds,
        errors: stats.errors,
        idle_opened: stats.idle_opened,
        idle_held_at_end,
        pre_connect_failed: stats.pre_connect_failed,
        pre_connect_late: stats.pre_connect_late,
        latency_service: Summary::of(&histograms.service),
        latency_corrected: Summary::of(&histograms.corrected),
        driver_lag: LagReport {
            summary: lag,
            behind_schedule: behind,
        },
        warnings,
        landrush_version: env!("CARGO_PKG_VERSION").into(),
    };
    write_run_info(out_dir, &info)?;
    if options.print_summary {
        progress::print_summary(&info, out_dir);
    }
    Ok(RunSummary {
        info,
        out_dir: out_dir.to_path_buf(),
    })
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

/// Loads a run folder's histograms (for reports and merge).
pub fn load_histograms(dir: &Path) -> anyhow::Result<Histograms> {
    Histograms::load(dir)
}
