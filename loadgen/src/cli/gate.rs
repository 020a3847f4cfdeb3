//! The `landrush gate GATE.toml` subcommand: rehearses the runs the gate file lists (or reads run
//! folders made before, `--runs`), has [`crate::gate`] judge each run's thresholds, writes
//! `OUT/junit.xml` and `OUT/summary.md`, prints a table and fails when any threshold failed.
//! Each run's rehearsal is set up by [`RehearsalFlags`], as `landrush rehearse`'s is.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;

use super::default_out;
use super::rehearse::RehearsalFlags;
use crate::gate::{GateFile, RunSpec, RunState, Threshold, judge, output, read_run};
use crate::records::folder::{Existing, RunFolder};
use crate::rehearse::options::unique_run_tag;
use crate::rehearse::rehearse;
use crate::schedule::ValidScenario;

/// `landrush gate`.
#[derive(Debug, Args)]
#[command(after_long_help = GATE_HELP)]
pub struct GateArgs {
    /// The gate file (ci/gate.toml).
    pub gate: PathBuf,
    /// Where junit.xml, summary.md and the run folders go [default: runs/gate-UTCTIME].
    #[arg(long, short = 'o', value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Judge run folders made before instead of rehearsing: `NAME=DIR`, or `DIR` whose folder
    /// name is a run's name. Runs of the gate not given fail (or are skipped when optional).
    #[arg(long, value_name = "DIR", num_args = 1..)]
    pub runs: Vec<String>,
    /// Make only these runs of the gate (and the references their thresholds name).
    #[arg(long, value_name = "NAME")]
    pub only: Vec<String>,
}

const GATE_HELP: &str = "\
Gate file: one [[run]] per rehearsal, each with thresholds over its report.json:
  verdict == pass              every check of the contract passed
  lost == 0                    also gaps, fifo_violations, duplicated, acks_missing, acks_extra
  accept_latency.p99 < \"5ms\"   also .p50 .p90 .p999 .max; accept_latency_corrected.*; units us ms s
  throughput >= 5000           accepted/s; also peak_throughput, handover_throughput
  accepted_share >= 99.5%      accepted / sent; also indeterminate_share
  drain_time < 10s             last send until everything was handed over (rehearse.json)
  throughput >= 0.75x postfix  a ratio to the same metric of the run `postfix` of this gate
  latency_ms.accept.p99 < 5    any dotted path into report.json (rehearse.… for rehearse.json)
Outputs: OUT/junit.xml (one test case per threshold, failures say the measured value and by how
much it missed), OUT/summary.md, OUT/RUN/ (each run's folder), a table on stdout.
Exit status: 0 when every threshold passed (skipped ones do not fail), 1 when one failed, 2 when
the gate file could not be read.

Examples:
  landrush gate ci/gate.toml --out target/gate
  landrush gate ci/gate.toml --runs smoke=runs/smoke-1 reference=runs/ref-1";

/// Runs `landrush gate`.
pub async fn gate_command(args: GateArgs) -> anyhow::Result<ExitCode> {
    let mut gate = GateFile::load(&args.gate)?;
    let base = args
        .gate
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let out = args.out.clone().unwrap_or_else(|| default_out("gate"));
    // A gate's folder holds one gate at a time; its runs' folders are its own to replace.
    let folder = RunFolder::claim(&out, Existing::Refuse)?;
    if !args.only.is_empty() {
        keep_only(&mut gate, &args)?;
    }
    let started = std::time::Instant::now();
    let states = if args.runs.is_empty() {
        let mut states = HashMap::new();
        for run in &gate.runs {
            eprintln!(
                "landrush gate: run `{}` ({})",
                run.name,
                run.scenario.display()
            );
            let state = make_run(run, &base, &out.join(&run.name)).await;
            if let RunState::Failed(e) | RunState::Skipped(e) = &state {
                eprintln!("landrush gate: run `{}`: {e}", run.name);
            }
            states.insert(run.name.clone(), state);
        }
        states
    } else {
        given_runs(&gate, &args.runs)?
    };
    let judged = judge(&gate, &states);
    let elapsed = started.elapsed();
    std::fs::write(
        out.join("junit.xml"),
        output::junit(&gate, &states, &judged, elapsed),
    )?;
    let table = output::table(&judged);
    std::fs::write(
        out.join("summary.md"),
        output::summary_md(&args.gate, &gate, &states, &judged),
    )?;
    drop(folder);
    println!("{table}");
    let failed = judged.iter().filter(|j| j.passed == Some(false)).count();
    let skipped = judged.iter().filter(|j| j.passed.is_none()).count();
    println!(
        "gate: {} thresholds, {} passed, {failed} failed, {skipped} skipped ({:.0} s); {}/junit.xml, \
         {}/summary.md",
        judged.len(),
        judged.len() - failed - skipped,
        elapsed.as_secs_f64(),
        out.display(),
        out.display()
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `--only`: the runs named, and the references their thresholds name.
fn keep_only(gate: &mut GateFile, args: &GateArgs) -> anyhow::Result<()> {
    let mut keep: Vec<String> = args.only.clone();
    for run in gate.runs.iter().filter(|r| args.only.contains(&r.name)) {
        for t in run
            .thresholds
            .iter()
            .filter_map(|t| Threshold::parse(t).ok())
        {
            keep.extend(t.reference().map(str::to_string));
        }
    }
    for name in &args.only {
        if !gate.runs.iter().any(|r| &r.name == name) {
            bail!("--only {name}: no such run in {}", args.gate.display());
        }
    }
    gate.runs.retain(|r| keep.contains(&r.name));
    Ok(())
}

/// `--runs` folders, by name.
fn given_runs(gate: &GateFile, given: &[String]) -> anyhow::Result<HashMap<String, RunState>> {
    let mut states = HashMap::new();
    for g in given {
        let (name, dir) = match g.split_once('=') {
            Some((n, d)) => (n.to_string(), PathBuf::from(d)),
            None => {
                let dir = PathBuf::from(g);
                let name = dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                (name, dir)
            }
        };
        if !gate.runs.iter().any(|r| r.name == name) {
            bail!(
                "--runs {g}: no run `{name}` in the gate file (runs: {}); write NAME=DIR",
                gate.runs
                    .iter()
                    .map(|r| r.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let state = match read_run(&dir) {
            Ok(docs) => RunState::Done { dir, docs },
            Err(e) => RunState::Failed(format!("{e:#}")),
        };
        states.insert(name, state);
    }
    for run in &gate.runs {
        if run.optional && !states.contains_key(&run.name) {
            states.insert(
                run.name.clone(),
                RunState::Skipped("optional run not given".into()),
            );
        }
    }
    Ok(states)
}

/// Makes one run: `before`, the rehearsal, `after`.
async fn make_run(run: &RunSpec, base: &Path, dir: &Path) -> RunState {
    if !run.before.is_empty()
        && let Err(e) = command(&run.before, base, dir, "before").await
    {
        return if run.optional {
            RunState::Skipped(format!("{e:#}"))
        } else {
            RunState::Failed(format!("{e:#}"))
        };
    }
    let result = rehearse_run(run, base, dir).await;
    if !run.after.is_empty()
        && let Err(e) = command(&run.after, base, dir, "after").await
    {
        eprintln!("landrush gate: run `{}`: {e:#}", run.name);
    }
    match result.and_then(|()| read_run(dir)) {
        Ok(docs) => RunState::Done {
            dir: dir.to_path_buf(),
            docs,
        },
        Err(e) => RunState::Failed(format!("{e:#}")),
    }
}

async fn command(argv: &[String], base: &Path, dir: &Path, what: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let log = dir.join(format!("{what}.log"));
    let file = std::fs::File::create(&log)?;
    // A program named by a relative path is found from the gate file's folder.
    let program = if argv[0].contains('/') {
        std::path::absolute(base.join(&argv[0]))?
    } else {
        PathBuf::from(&argv[0])
    };
    let mut child = tokio::process::Command::new(&program);
    crate::rehearse::child::dies_with_landrush(&mut child);
    let status = child
        .args(&argv[1..])
        .current_dir(if base.as_os_str().is_empty() {
            Path::new(".")
        } else {
            base
        })
        .stdin(std::process::Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .status()
        .await
        .with_context(|| format!("cannot run `{}`", argv.join(" ")))?;
    if !status.success() {
        bail!(
            "`{}` ({what}) failed with {status}; its output ({}):\n{}",
            argv.join(" "),
            log.display(),
            crate::rehearse::buffer::log_tail(&log)
        );
    }
    Ok(())
}

async fn rehearse_run(run: &RunSpec, base: &Path, dir: &Path) -> anyhow::Result<()> {
    let scenario_path = base.join(&run.scenario);
    let scenario = ValidScenario::load(&scenario_path)?;
    let options = run_flags(run).options(base, &scenario_path).await?;
    let rehearsal = rehearse(&scenario, dir, options).await?;
    for note in &rehearsal.notes {
        eprintln!("landrush gate: run `{}`: note: {note}", run.name);
    }
    Ok(())
}

/// A gate run's rehearsal, as `landrush rehearse` flags would say it.
fn run_flags(run: &RunSpec) -> RehearsalFlags {
    RehearsalFlags {
        barrage: run.barrage.clone(),
        target: run.target.map(|t| t.to_string()),
        handover: run.handover.clone(),
        handover_smtp: run.handover_smtp,
        handover_maildir: run.handover_maildir.clone(),
        ack_sink: run.ack_sink,
        acks: run.acks,
        registry_rate: run.registry_rate,
        registry_batch: 500,
        registry_delay: std::time::Duration::ZERO,
        api_token: None,
        quiet_period: run.quiet_period.map(|q| q.0),
        start: None,
        // Named after the run, and unique: two gates never share ids or Message-IDs.
        tag: Some(unique_run_tag(Some(&run.name))),
        clock_tolerance: std::time::Duration::ZERO,
        keep_data: false,
        progress: false,
        // A gate's run folder holds only this run.
        existing: Existing::Overwrite,
        // The scenario's own [buffer], if any.
        buffer: Default::default(),
        // STARTTLS comes from the scenario's client groups (`starttls = true`).
        tls: None,
    }
}
