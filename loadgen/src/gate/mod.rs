//! The CI performance gate: the gate file (runs and their thresholds), and judging each run's
//! thresholds over its report.json into the results `landrush gate` writes (`OUT/junit.xml`, one
//! test case per threshold, and `OUT/summary.md`).
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
//! [`output`]. Making the runs (rehearsing them, `before`/`after` commands) is the command
//! line's part: `crate::cli::gate`.

pub mod output;
pub mod threshold;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::Value;

use crate::scenario::duration::Dur;
pub use threshold::{Evaluation, RunDocs, Threshold};

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
    /// `None`: skipped (with the reason in `evaluation.miss`).
    pub passed: Option<bool>,
    pub evaluation: Evaluation,
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
                    out.push(judged(&run.name, &text, Some(false), Evaluation::error(e)));
                    continue;
                }
            };
            let (passed, evaluation) = match state {
                None => (
                    Some(false),
                    Evaluation::error(format!("run `{}` was not made", run.name)),
                ),
                Some(RunState::Failed(e)) => (Some(false), Evaluation::error(e.clone())),
                Some(RunState::Skipped(why)) => (None, Evaluation::error(why.clone())),
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
                            Evaluation::error(format!("reference `{r}` skipped: {why}")),
                        ),
                        Some(RunState::Failed(e)) => (
                            Some(false),
                            Evaluation::error(format!("reference `{r}` failed: {e}")),
                        ),
                        None => (
                            Some(false),
                            Evaluation::error(format!("reference run `{r}` was not made")),
                        ),
                    },
                },
            };
            out.push(judged(&run.name, &text, passed, evaluation));
        }
    }
    out
}

fn judged(run: &str, text: &str, passed: Option<bool>, evaluation: Evaluation) -> Judged {
    Judged {
        run: run.to_string(),
        threshold: text.to_string(),
        passed,
        evaluation,
    }
}

/// Reads report.json (and rehearse.json when there is one) of a run folder.
pub fn read_run(dir: &Path) -> anyhow::Result<RunDocs> {
    let path = dir.join(reports::REPORT_JSON);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let report: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let rehearse = std::fs::read_to_string(dir.join(crate::rehearse::info::REHEARSE_JSON))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    Ok(RunDocs { report, rehearse })
}
