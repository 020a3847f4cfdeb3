//! `landrush gate GATE.toml`: the CI performance gate. Rehearses the runs the gate file lists (or
//! reads run folders made before, `--runs`), judges each run's thresholds over its report.json,
//! writes `OUT/junit.xml` (one test case per threshold) and `OUT/summary.md`, prints a table and
//! fails when any threshold failed.
//!
//! ```toml
//! [[run]]
//! name = "smoke"                         # how thresholds and --runs name it
//! scenario = "../scenarios/ci-smoke.toml"  # relative to the gate file
//! thresholds = ["verdict == pass", "lost == 0", 'accept_latency.p99 < "250ms"',
//!               "throughput >= 0.5x reference"]
//!
//! [[run]]
//! name = "reference"                     # a reference measured in the same gate
//! scenario = "../scenarios/ci-smoke.toml"
//! barrage = "/usr/local/bin/barrage-previous"   # or target = "127.0.0.1:2593" + handover_maildir
//! optional = true                        # cannot be run here: its ratios are skipped, not failed
//! ```
//!
//! Thresholds are parsed and judged by the pure [`threshold`] library; the output formats are in
//! [`output`].

pub mod output;
pub mod threshold;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use serde::Deserialize;
use serde_json::Value;

use crate::rehearse::{BufferProgram, Handover, RehearseOptions, Target, rehearse};
use crate::scenario::Scenario;
use crate::scenario::duration::Dur;
pub use threshold::{Outcome, RunDocs, Threshold};

/// The gate file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateFile {
    #[serde(default)]
    pub description: String,
    #[serde(rename = "run")]
    pub runs: Vec<RunSpec>,
}

/// One run of the gate: a scenario rehearsed against a target, and its thresholds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    pub name: String,
    /// The scenario file, relative to the gate file.
    pub scenario: PathBuf,
    #[serde(default)]
    pub thresholds: Vec<String>,
    /// Another barrage executable (`PATH serve …`) instead of landrush's built-in buffer.
    #[serde(default)]
    pub barrage: Option<PathBuf>,
    /// A buffer that is already running: its SMTP intake (then `handover`, `handover_maildir`
    /// or `handover_smtp`, and `acks = false` or `ack_sink`).
    #[serde(default)]
    pub target: Option<SocketAddr>,
    #[serde(default)]
    pub handover: Option<String>,
    #[serde(default)]
    pub handover_maildir: Option<PathBuf>,
    #[serde(default)]
    pub handover_smtp: Option<SocketAddr>,
    #[serde(default)]
    pub ack_sink: Option<SocketAddr>,
    #[serde(default = "yes")]
    pub acks: bool,
    #[serde(default)]
    pub registry_rate: f64,
    #[serde(default)]
    pub quiet_period: Option<Dur>,
    /// A command run (from the gate file's folder) before the run, e.g. one that starts Postfix;
    /// if it fails, the run is not made.
    #[serde(default)]
    pub before: Vec<String>,
    /// A command run after the run, whatever happened.
    #[serde(default)]
    pub after: Vec<String>,
    /// A run that cannot be made here (its `before` failed) skips its thresholds and the ratios
    /// against it instead of failing them: for references such as Postfix that need root.
    #[serde(default)]
    pub optional: bool,
}

fn yes() -> bool {
    true
}

impl GateFile {
    pub fn load(path: &Path) -> anyhow::Result<GateFile> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let gate: GateFile = toml::from_str(&text)
            .with_context(|| format!("{} is not a gate file", path.display()))?;
        gate.validate()
            .with_context(|| format!("in {}", path.display()))?;
        Ok(gate)
    }

    /// Every threshold parses, names are unique, ratios name a run of the gate.
    pub fn validate(&self) -> anyhow::Result<()> {
        let mut names = std::collections::HashSet::new();
        for run in &self.runs {
            if run.name.is_empty()
                || !run
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                bail!("run name `{}`: letters, digits, - and _ only", run.name);
            }
            if !names.insert(run.name.as_str()) {
                bail!("two runs are named `{}`", run.name);
            }
        }
        for run in &self.runs {
            for text in &run.thresholds {
                let t = Threshold::parse(text)
                    .map_err(anyhow::Error::msg)
                    .with_context(|| format!("run `{}`", run.name))?;
                if let Some(r) = t.reference()
                    && !names.contains(r)
                {
                    bail!("run `{}`: `{text}` names no run of this gate", run.name);
                }
            }
        }
        Ok(())
    }
}

/// What became of one run.
#[derive(Debug, Clone)]
pub enum RunState {
    /// Its folder, with the report read.
    Done { dir: PathBuf, docs: RunDocs },
    /// It could not be made or read (a failure of every threshold on it).
    Failed(String),
    /// An optional run that could not be made.
    Skipped(String),
}

/// One judged threshold.
#[derive(Debug, Clone)]
pub struct Judged {
    pub run: String,
    pub threshold: String,
    /// `None`: skipped (with the reason in `outcome.miss`).
    pub passed: Option<bool>,
    pub outcome: Outcome,
}

/// Judges every threshold of the gate given what became of each run. Pure.
pub fn judge(gate: &GateFile, states: &HashMap<String, RunState>) -> Vec<Judged> {
    let mut out = Vec::new();
    for run in &gate.runs {
        let state = states.get(&run.name);
        let mut thresholds = run.thresholds.clone();
        if thresholds.is_empty() {
            continue;
        }
        thresholds.dedup();
        for text in thresholds {
            let t = match Threshold::parse(&text) {
                Ok(t) => t,
                Err(e) => {
                    out.push(judged(&run.name, &text, Some(false), Outcome::error(e)));
                    continue;
                }
            };
            let (passed, outcome) = match state {
                None => (
                    Some(false),
                    Outcome::error(format!("run `{}` was not made", run.name)),
                ),
                Some(RunState::Failed(e)) => (Some(false), Outcome::error(e.clone())),
                Some(RunState::Skipped(why)) => (None, Outcome::error(why.clone())),
                Some(RunState::Done { docs, .. }) => match t.reference() {
                    None => {
                        let o = t.evaluate(docs, None);
                        (Some(o.passed), o)
                    }
                    Some(r) => match states.get(r) {
                        Some(RunState::Done { docs: rdocs, .. }) => {
                            let o = t.evaluate(docs, Some(rdocs));
                            (Some(o.passed), o)
                        }
                        Some(RunState::Skipped(why)) => (
                            None,
                            Outcome::error(format!("reference `{r}` skipped: {why}")),
                        ),
                        Some(RunState::Failed(e)) => (
                            Some(false),
                            Outcome::error(format!("reference `{r}` failed: {e}")),
                        ),
                        None => (
                            Some(false),
                            Outcome::error(format!("reference run `{r}` was not made")),
                        ),
                    },
                },
            };
            out.push(judged(&run.name, &text, passed, outcome));
        }
    }
    out
}

fn judged(run: &str, text: &str, passed: Option<bool>, outcome: Outcome) -> Judged {
    Judged {
        run: run.to_string(),
        threshold: text.to_string(),
        passed,
        outcome,
    }
}

/// Reads report.json (and rehearse.json when there is one) of a run folder.
pub fn read_run(dir: &Path) -> anyhow::Result<RunDocs> {
    let path = dir.join(reports::REPORT_JSON);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let report: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let rehearse = std::fs::read_to_string(dir.join(crate::rehearse::REHEARSE_JSON))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    Ok(RunDocs { report, rehearse })
}

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
    let gate = GateFile::load(&args.gate)?;
    let base = args
        .gate
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let out = args.out.clone().unwrap_or_else(|| {
        let now = time::OffsetDateTime::now_utc();
        PathBuf::from("runs").join(format!(
            "gate-{:04}{:02}{:02}T{:02}{:02}{:02}Z",
            now.year(),
            now.month() as u8,
            now.day(),
            now.hour(),
            now.minute(),
            now.second()
        ))
    });
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut gate = gate;
    if !args.only.is_empty() {
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
    let status = tokio::process::Command::new(&program)
        .args(&argv[1..])
        .current_dir(if base.as_os_str().is_empty() {
            Path::new(".")
        } else {
            base
        })
        .stdin(std::process::Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .kill_on_drop(true)
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
    let scenario = Scenario::load(&scenario_path)?;
    let target = match (run.target, &run.barrage) {
        (Some(addr), _) => Target::Running(addr),
        (None, Some(path)) => Target::Spawn(BufferProgram::barrage_at(base.join(path))),
        (None, None) => Target::Spawn(BufferProgram::landrush_itself()?),
    };
    let handover = match (&run.handover_smtp, &run.handover_maildir) {
        (Some(addr), _) => Handover::Smtp(*addr),
        (None, Some(d)) => Handover::Maildir(base.join(d)),
        (None, None) => Handover::Api(run.handover.clone()),
    };
    // A gate's run folder holds only this run.
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot empty {}", dir.display()))?;
    }
    let mut options = RehearseOptions {
        target,
        handover,
        ack_sink: run.ack_sink,
        acks: run.acks,
        registry_rate: run.registry_rate,
        scenario_file: Some(scenario_path),
        progress: false,
        tag: Some(run.name.clone()),
        ..RehearseOptions::default()
    };
    if let Some(q) = run.quiet_period {
        options.quiet_period = q.0;
    }
    let rehearsal = rehearse(&scenario, dir, options).await?;
    for note in &rehearsal.notes {
        eprintln!("landrush gate: run `{}`: note: {note}", run.name);
    }
    Ok(())
}
