//! The SMTP load driver: plays a scenario against an SMTP address and records every transmission.
//!
//! [`run_scenario`] is the entry point (`landrush run` and `landrush rehearse` both call it). It
//! spawns one task per sending client (each walks its own requests lazily, see
//! [`crate::schedule`]) and one per idle connection, streams records to `sent.jsonl` through the
//! recorder, shows the progress line, and at the end writes `run.json` and the histograms.
//!
//! [`wire`] is one connection's SMTP; [`client`] one client's loop (schedule, pre-connect,
//! misbehaviour, records).

pub mod adversary;
pub mod client;
pub mod collider;
pub mod crowd;
pub mod firing;
pub mod targets;
pub mod tls;
pub mod wire;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail, ensure};
use reports::records::Stamp;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::recorder::{self, Histograms, Live, Summary};
use super::{Clock, LagReport, RunInfo, RunOptions, RunSummary, progress, write_run_info};
use crate::scenario::Behaviour;
use crate::schedule::ValidScenario;
use crate::schedule::request::RequestMaker;
use targets::Targets;

/// Plays `scenario` (or the `options.shard` slice of it) against `targets` (one address, or the
/// intake nodes the clients are spread over, see [`targets`]), writing `sent.jsonl`, the
/// histograms and `run.json` into `out_dir` (created if missing).
///
/// Usable from inside any tokio runtime (multi-threaded preferred: the recorder runs on its own
/// thread either way). Returns once every client is done, the deadline (`bounds.max_duration`
/// after the start) has passed, or `options.stop` was cancelled. Errors are setup errors (bad
/// folder, start instant passed); what happens on the wire is recorded, not returned as an error.
pub async fn run_scenario(
    scenario: &ValidScenario,
    targets: impl Into<Targets>,
    out_dir: &Path,
    options: RunOptions,
) -> anyhow::Result<RunSummary> {
    let targets: Targets = targets.into();
    let target = targets.first();
    let shard = options.shard;
    let groups = runnable_groups(scenario, target, &options)?;
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    let times = RunTimes::resolve(scenario, &options)?;
    let live = Arc::new(Live::default());
    let (sink, recorder) = recorder::start(out_dir, live.clone())?;
    let shard_planned = shard.request_count(scenario.plan());
    let progress = progress::Progress::start(
        options.progress,
        live.clone(),
        shard_planned,
        scenario.bounds.max_duration.0,
    );
    let ctx = Arc::new(client::Ctx {
        targets,
        next_node: std::sync::atomic::AtomicU64::new(0),
        web_target: options.web_target,
        requests: RequestMaker::new(scenario, scenario.plan(), options.tag.clone()),
        clock: times.clock,
        start: times.start,
        deadline: times.start + scenario.bounds.max_duration.0,
        live: live.clone(),
        connect_gate: Semaphore::new(options.connect_concurrency.max(1)),
        stats: Mutex::new(client::Stats::default()),
        progress: progress.handle(),
        lag_warned: std::sync::atomic::AtomicBool::new(false),
        adversaries: groups.iter().map(|_| Mutex::default()).collect(),
        groups,
        tls: options.tls.clone(),
        firing: firing::Firing::new(),
        crowd: crowd::Crowd::default(),
    });
    let idle_held_at_end = play_clients(scenario, &ctx, sink, &options).await;
    let finished_at = times.clock.stamp(Instant::now());
    progress.finish();

    let recorded = tokio::task::spawn_blocking(move || recorder.join())
        .await
        .context("recorder task")?
        .map_err(|_| anyhow::anyhow!("the recorder thread panicked"))??;
    let histograms = recorded.histograms;
    histograms.save(out_dir)?;
    adversary::write(out_dir, &ctx, &recorded.groups)?;
    let stats = final_stats(&ctx);
    let ended = Ended {
        times,
        finished_at,
        shard_planned,
        idle_held_at_end,
        live: &live,
        histograms: &histograms,
        stats,
    };
    let info = run_info(scenario, &ctx.targets, &options, ended);
    write_run_info(out_dir, &info)?;
    if options.print_summary {
        progress::print_summary(&info, out_dir);
    }
    Ok(RunSummary {
        info,
        out_dir: out_dir.to_path_buf(),
    })
}

/// The scenario's groups, refused when this run cannot play them: more shards than sending
/// clients, or STARTTLS groups without a TLS client.
fn runnable_groups(
    scenario: &ValidScenario,
    target: SocketAddr,
    options: &RunOptions,
) -> anyhow::Result<Vec<client::GroupRun>> {
    let shard = options.shard;
    ensure!(
        shard.count as u64 <= scenario.clients.sending_clients(),
        "shard {shard}: the scenario has only {} sending clients to share among {} shards",
        scenario.clients.sending_clients(),
        shard.count
    );
    let groups = group_runs(scenario, target)?;
    ensure!(
        options.tls.is_some() || !groups.iter().any(|g| g.spec.starttls),
        "a client group has starttls = true but the run has no TLS client: give --tls-ca FILE \
         (the certificate or CA the buffer serves) or --tls-insecure"
    );
    Ok(groups)
}

/// The clients' counters at the end, with the connections sent on to another node.
fn final_stats(ctx: &client::Ctx) -> client::Stats {
    let mut stats = std::mem::take(&mut *ctx.stats.lock().unwrap());
    let next_node = ctx.next_node.load(Ordering::Relaxed);
    if next_node > 0 {
        stats
            .errors
            .insert("node down: connected to the next one".into(), next_node);
    }
    stats
}

/// The scenario's groups with their source addresses, checked against the target: sources on
/// loopback for a loopback target; for a remote target (which the command line allowed by name),
/// no loopback source, which could not reach it.
pub fn group_runs(
    scenario: &ValidScenario,
    target: SocketAddr,
) -> anyhow::Result<Vec<client::GroupRun>> {
    let mut runs = Vec::new();
    for spec in scenario.clients.iter() {
        let sources = spec.source_addresses()?;
        for ip in &sources {
            ensure!(
                ip.is_ipv4() == target.is_ipv4(),
                "clients `{}`.sources: {ip} cannot reach {target} (another address family)",
                spec.name
            );
            if target.ip().is_loopback() {
                ensure!(
                    ip.is_loopback(),
                    "clients `{}`.sources: {ip} is outside loopback; landrush sends from \
                     127.0.0.0/8 or ::1 only, unless the target is a remote host named with \
                     --allow-remote-target",
                    spec.name
                );
            } else {
                ensure!(
                    !ip.is_loopback(),
                    "clients `{}`.sources: {ip} is a loopback address and cannot reach the \
                     remote target {target}",
                    spec.name
                );
            }
        }
        runs.push(client::GroupRun {
            spec: spec.clone(),
            sources,
        });
    }
    Ok(runs)
}

/// When the run was launched and when its time zero is, on one clock.
#[derive(Debug, Clone, Copy)]
struct RunTimes {
    clock: Clock,
    launched_at: Stamp,
    start_at: Stamp,
    start: Instant,
}

impl RunTimes {
    /// Fixes time zero; refuses a start that has passed or is absurdly far.
    fn resolve(scenario: &ValidScenario, options: &RunOptions) -> anyhow::Result<RunTimes> {
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
        Ok(RunTimes {
            clock,
            launched_at,
            start_at,
            start: clock.instant(start_at),
        })
    }
}

/// Runs the shard's sending clients to the end and its idle connections until then; returns how
/// many idle connections were still held when the senders finished.
async fn play_clients(
    scenario: &ValidScenario,
    ctx: &Arc<client::Ctx>,
    sink: recorder::Sink,
    options: &RunOptions,
) -> u64 {
    let senders_done = CancellationToken::new();
    let mut idle = JoinSet::new();
    spawn_idle(scenario, ctx, options, &senders_done, &mut idle);
    // Hogs and junk floods run beside the senders and stop when they are done.
    let adversaries_done = senders_done.child_token();
    let stop = options.stop.clone();
    let on_stop = adversaries_done.clone();
    idle.spawn(async move {
        tokio::select! {
            _ = stop.cancelled() => on_stop.cancel(),
            _ = on_stop.cancelled() => {}
        }
    });
    idle.spawn(adversary::sample_at_start(ctx.clone()));
    let firing = tokio::spawn(fire_at_start(ctx.clone(), options.stop.clone()));
    let mut senders = JoinSet::new();
    for c in (0..scenario.plan().clients()).filter(|&c| options.shard.owns_client(c)) {
        let (group, _) = ctx.group_of(c);
        let (ctx, stop, sink) = (ctx.clone(), options.stop.clone(), sink.clone());
        match group.spec.behaviour {
            Behaviour::Honest | Behaviour::Slowloris => {
                senders.spawn(client::run_client(ctx, c, sink, stop));
            }
            Behaviour::KeyCollider => {
                senders.spawn(collider::run_collider(ctx, c, sink, stop));
            }
            Behaviour::Hog => {
                idle.spawn(adversary::hog(ctx, c, adversaries_done.clone()));
            }
            Behaviour::Junk => {
                idle.spawn(adversary::junk(ctx, c, adversaries_done.clone()));
            }
        }
    }
    drop(sink);
    while let Some(joined) = senders.join_next().await {
        unless_panicked(joined);
    }
    unless_panicked(firing.await);
    let idle_held_at_end = ctx.live.idle_held.load(Ordering::Relaxed);
    senders_done.cancel();
    while idle.join_next().await.is_some() {}
    idle_held_at_end
}

/// Starts the shard's idle connections, held until `senders_done`.
fn spawn_idle(
    scenario: &ValidScenario,
    ctx: &Arc<client::Ctx>,
    options: &RunOptions,
    senders_done: &CancellationToken,
    idle: &mut JoinSet<()>,
) {
    let mut numbered = 0u32;
    for (g, group) in scenario.clients.iter().enumerate() {
        for n in 0..group.idle {
            if options.shard.owns_idle(numbered) {
                idle.spawn(client::hold_idle(
                    ctx.clone(),
                    g,
                    n,
                    senders_done.clone(),
                    options.stop.clone(),
                ));
            }
            numbered += 1;
        }
    }
}

/// A task's panic goes on in the run that awaited it; a cancelled task is no news.
fn unless_panicked(joined: Result<(), tokio::task::JoinError>) {
    if let Err(e) = joined
        && e.is_panic()
    {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// Fires the pre-connected clients' first writes at the start (see [`firing`]), or hands them
/// back if the run is stopped before it.
async fn fire_at_start(ctx: Arc<client::Ctx>, stop: CancellationToken) {
    // Woken a little early on the runtime; the firing threads sleep the rest precisely.
    let early = ctx
        .start
        .checked_sub(FIRING_WAKE_EARLY)
        .unwrap_or(ctx.start);
    if !client::sleep_until(early, &stop).await {
        ctx.firing.cancel();
        return;
    }
    let start = ctx.start;
    let fire = ctx.clone();
    unless_panicked(tokio::task::spawn_blocking(move || fire.firing.fire_at(start, &stop)).await);
}

/// How long before the start the firing thread is started (it then sleeps to the instant).
const FIRING_WAKE_EARLY: std::time::Duration = std::time::Duration::from_millis(50);

/// What a finished run hands to [`run_info`].
struct Ended<'a> {
    times: RunTimes,
    finished_at: Stamp,
    shard_planned: u64,
    idle_held_at_end: u64,
    live: &'a Live,
    histograms: &'a Histograms,
    stats: client::Stats,
}

/// `run.json` of a finished run.
fn run_info(
    scenario: &ValidScenario,
    targets: &Targets,
    options: &RunOptions,
    ended: Ended<'_>,
) -> RunInfo {
    let Ended {
        times,
        finished_at,
        shard_planned,
        idle_held_at_end,
        live,
        histograms,
        stats,
    } = ended;
    let driver_lag = LagReport::of(Summary::of(&histograms.lag));
    let unsent = shard_planned.saturating_sub(stats.requests_started);
    let warnings = warnings(scenario, &driver_lag, unsent, &stats);
    RunInfo {
        scenario: scenario.name.clone(),
        scenario_file: options
            .scenario_file
            .as_ref()
            .map(|p| p.display().to_string()),
        scenario_spec: serde_json::to_value(scenario.scenario()).unwrap_or_default(),
        seed: scenario.seed,
        tag: options.tag.clone(),
        target: options
            .target_label
            .clone()
            .unwrap_or_else(|| targets.label()),
        target_addr: targets.label(),
        shard: options.shard,
        merged_from: Vec::new(),
        launched_at: times.launched_at,
        started_at: times.start_at,
        finished_at,
        requests_planned: scenario.plan().total(),
        shard_requests_planned: shard_planned,
        requests_started: stats.requests_started,
        transmissions: stats.transmissions,
        accepted: live.accepted.load(Ordering::Relaxed),
        refused: live.refused.load(Ordering::Relaxed),
        indeterminate: live.indeterminate.load(Ordering::Relaxed),
        failed: live.failed.load(Ordering::Relaxed),
        unsent,
        kinds: stats.kinds,
        errors: stats.errors,
        idle_opened: stats.idle_opened,
        idle_held_at_end,
        pre_connect_failed: stats.pre_connect_failed,
        pre_connect_late: stats.pre_connect_late,
        latency_service: Summary::of(&histograms.service),
        latency_corrected: Summary::of(&histograms.corrected),
        driver_lag,
        warnings,
        landrush_version: env!("CARGO_PKG_VERSION").into(),
    }
}

/// The run's warnings: the driver behind its schedule, requests never started, pre-connects late.
fn warnings(
    scenario: &ValidScenario,
    lag: &LagReport,
    unsent: u64,
    stats: &client::Stats,
) -> Vec<String> {
    let mut warnings = Vec::new();
    if lag.behind_schedule {
        warnings.push(format!(
            "DRIVER BEHIND SCHEDULE: landrush started requests late (lag p99 {:.1} ms, max {:.1} \
             ms). Part of the measured latency is the driver's own; corrected latencies include \
             it. Use fewer clients per machine, a release build, or --shard over more machines.",
            lag.summary.p99_us as f64 / 1000.0,
            lag.summary.max_us as f64 / 1000.0
        ));
    }
    if unsent > 0 {
        warnings.push(format!(
            "{unsent} requests of this shard were never started (max_duration {} reached or \
             stopped)",
            scenario.bounds.max_duration
        ));
    }
    if stats.pre_connect_late > 0 || stats.pre_connect_failed > 0 {
        warnings.push(format!(
            "pre-connect: {} clients were not connected and staged by the start instant and {} \
             failed (retried at the instant); give `start` more time or use --shard",
            stats.pre_connect_late, stats.pre_connect_failed
        ));
    }
    warnings
}
