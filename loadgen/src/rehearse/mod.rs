//! `landrush rehearse`: the whole rehearsal in one command. Starts a real barrage on free loopback
//! ports in a temporary data dir (or uses a buffer that is already running), the fake registration
//! system and the ack sink, samples the buffer's `/v1/stats`, plays the scenario, waits until
//! everything accepted is handed over and acked, stops the buffer, runs the checkers and writes
//! the records and the reports.
//!
//! The parts are small and separately steerable, so that faults can be scheduled into a run:
//! [`rig::Rig`] holds the [`buffer::Buffer`] (kill / restart), the registry's handle (pause /
//! resume / set_rate) and the ack sink (stop / restart). [`rehearse`] is claim the run folder →
//! setup → play ([`play`]) → drain ([`drain`]) → teardown → [`judge`].
//!
//! Modules, lowest first: [`child`] (child processes that die with landrush), [`buffer`] (the
//! buffer child process), [`database`] (the PostgreSQL cluster several nodes share), [`sampler`]
//! (`/v1/stats`), [`options`], [`rig`], [`faults`] (playing `[[faults]]`), [`play`], [`drain`],
//! [`info`] (rehearse.json), [`tls`] (STARTTLS over a throwaway certificate).

pub mod audit;
pub mod buffer;
pub mod child;
pub mod database;
pub mod drain;
pub mod faults;
pub mod info;
pub mod options;
pub mod play;
pub mod rig;
pub mod sampler;
pub mod tls;

use std::path::{Path, PathBuf};

use reports::Report;
use reports::checks::Checks;

use reports::records::CheckInputs;

use crate::check::{CheckOptions, check_run, load_check_inputs, save_check_inputs};
use crate::driver::RunSummary;
use crate::records::folder::RunFolder;
use crate::records::provenance;
use crate::scenario;
use crate::schedule::ValidScenario;
use drain::Drain;
use options::{RehearseOptions, unique_run_tag};
use rig::{Rig, TornDown};

/// What a rehearsal produced.
pub struct Rehearsal {
    pub out_dir: PathBuf,
    pub run: RunSummary,
    pub drain: Drain,
    pub checks: Checks,
    pub report: Report,
    /// Notes for the reader (buffer exit status, registry errors, faults not played…).
    pub notes: Vec<String>,
    /// How the spawned buffer was laid out, and each node's group-commit counts.
    pub layout: scenario::buffer::BufferLayout,
    pub commits: Vec<rig::NodeCommits>,
}

/// Runs a whole rehearsal of `scenario`, writing into `out_dir`, which it holds locked meanwhile
/// (refused if another landrush holds it, or if it holds records and `options.existing` says so).
/// Without `options.tag` the run gets a unique tag.
pub async fn rehearse(
    scenario: &ValidScenario,
    out_dir: &Path,
    options: RehearseOptions,
) -> anyhow::Result<Rehearsal> {
    rehearse_with(scenario, out_dir, options, |_| {}).await
}

/// [`rehearse`], calling `ready` once every part listens and before the scenario is played: to
/// point a buffer started by the caller at the ack sink's address (port 0 picked it), say.
pub async fn rehearse_with(
    scenario: &ValidScenario,
    out_dir: &Path,
    mut options: RehearseOptions,
    ready: impl FnOnce(&Rig),
) -> anyhow::Result<Rehearsal> {
    // The command line over the scenario's [buffer], and the faults against what results.
    let layout = scenario.buffer.overridden_by(options.buffer).layout()?;
    layout.check_faults(scenario.faults())?;
    let folder = RunFolder::claim(out_dir, options.existing)?;
    options.tag.get_or_insert_with(|| unique_run_tag(None));
    let scenario = &with_tls(scenario, &mut options);
    let mut rig = Rig::setup(folder.path(), options, layout).await?;
    ready(&rig);
    let played = match rig.play(scenario).await {
        Ok(run) => rig.drain(&run).await.map(|drain| (run, drain)),
        Err(e) => Err(e),
    };
    let (run, drain) = match played {
        Ok(done) => done,
        Err(e) => {
            rig.teardown().await.ok();
            return Err(e);
        }
    };
    let target = rig.targets.label();
    if let Some(url) = rig.api_url.clone() {
        let check = audit::audit_check(&url, rig.options.api_token.as_deref()).await;
        crate::check::audit::save(out_dir, &check)?;
    } else {
        // A result left by an earlier run into this folder is not this run's.
        let _ = std::fs::remove_file(out_dir.join(crate::check::audit::AUDIT_JSON));
    }
    let torn = rig.teardown().await?;
    let (checks, report, notes) = record_and_judge(out_dir, scenario, &target, &torn, &drain)?;
    drop(folder);
    Ok(Rehearsal {
        out_dir: out_dir.to_path_buf(),
        run,
        drain,
        checks,
        report,
        notes,
        layout: torn.layout,
        commits: torn.commits,
    })
}

/// Completes the run folder of a torn-down rehearsal (provenance, rehearse.json, the checkers'
/// inputs) and judges it; returns the checks, the report and the notes.
fn record_and_judge(
    out_dir: &Path,
    scenario: &ValidScenario,
    target: &str,
    torn: &TornDown,
    drain: &Drain,
) -> anyhow::Result<(Checks, Report, Vec<String>)> {
    let (options, mut notes) = (&torn.options, torn.notes.clone());
    // Host, clock (from the buffer's replies) and scenario digest, as `landrush run` records them
    // (contract: Run records), so a rehearsal's folder merges and is checked like a shard's.
    let spec = serde_json::to_value(scenario.scenario())?;
    provenance::stamp_after_run(out_dir, &spec, None, target)?;
    if !drain.complete {
        notes.push(format!(
            "stopped waiting after {:.1} s: {} accepted requests not handed over, {} not acked",
            drain.waited_s, drain.missing_handed, drain.missing_acks
        ));
    }
    info::write_rehearse_info(out_dir, options, torn.layout, &torn.commits, drain, &notes)?;
    let inputs = CheckInputs {
        first_seq: torn.first_seq,
        highest_seq: torn.highest_seq,
        acks_expected: options.acks,
        drain_complete: Some(drain.complete),
        final_cursor: torn.final_cursor,
        final_queue_depth: torn.final_queue_depth,
        final_acks_pending: torn.final_acks_pending,
        clock_tolerance_us: options.check.clock_tolerance_us,
    };
    save_check_inputs(out_dir, &inputs)?;
    let mut check = load_check_inputs(out_dir)?;
    check.max_examples = options.check.max_examples;
    check.seqs = options.check.seqs;
    let (checks, report) = judge(out_dir, &check)?;
    Ok((checks, report, notes))
}

/// The scenario as a rehearsal plays it: with `options.tls`, every client group does STARTTLS;
/// without it, a spawned buffer still serves STARTTLS (`may`) when a client group asks for it.
fn with_tls(scenario: &ValidScenario, options: &mut RehearseOptions) -> ValidScenario {
    let spawned = matches!(options.target, options::Target::Spawn(_));
    if options.tls.is_none() && spawned && scenario.clients.iter().any(|g| g.starttls) {
        options.tls = Some(tls::RehearsalTls::May);
    }
    match options.tls {
        Some(_) => scenario.with_starttls(),
        None => scenario.clone(),
    }
}

/// Runs the checkers over a run folder and writes report.json / .md / .html.
pub fn judge(out_dir: &Path, options: &CheckOptions) -> anyhow::Result<(Checks, Report)> {
    let checks = check_run(out_dir, options)?;
    let report = reports::build_report(out_dir, checks.clone())?;
    reports::write_reports(out_dir, &report)?;
    Ok((checks, report))
}
