//! `landrush merge OUT SHARD...`: combines the record folders (or bundles) of the shards of one
//! scenario, played by several machines with `--shard I/N`, into one folder, as if one driver had
//! played it all.
//!
//! It refuses shards that do not belong together, naming the shard and the field: another parsed
//! scenario (`scenario_sha256`), name, seed, tag, start instant, shard count, target or clock
//! reference, a shard given twice, a record from a client of another shard. `force` merges field
//! mismatches anyway and records each in the merged `run.json` (`mismatches`); a shard given twice
//! is refused even then, since its records would count twice. A missing shard is not an error (a
//! volunteer who did not turn up is part of what happened) but is recorded (`shards_missing`), so
//! the verdict cannot be `pass`. Each shard's provenance (shard, host, clock, where it came from)
//! is kept in `shards`, and each line of the merged `sent.jsonl` carries its `shard` (the index),
//! so the checkers know the machine of every request (contract: Run records).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail, ensure};
use reports::records::{ACKS, FAULTS, HANDED, JsonlWriter, SENT, STATS, SentRecord, read_jsonl};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::provenance::{self, Provenance};
use crate::driver::recorder::{Histograms, Summary};
use crate::driver::{LagReport, RunInfo, read_run_info, write_run_info};
use crate::schedule::shard::Shard;

/// What to merge and how.
#[derive(Debug, Clone, Default)]
pub struct MergeRequest {
    /// Run folders or bundles (`*.tar.gz`), one per shard.
    pub inputs: Vec<PathBuf>,
    /// The observer's folder (`landrush observe --out`): its handed, acks and stats are copied.
    pub observed: Option<PathBuf>,
    /// Merge shards whose fields disagree, recording each mismatch.
    pub force: bool,
}

/// One field on which a shard disagrees with the first: a line of `mismatches`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mismatch {
    pub shard: String,
    pub source: String,
    pub field: String,
    pub value: String,
    pub expected: String,
}

/// One merged shard's provenance: a line of the merged `run.json`'s `shards`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardProvenance {
    pub shard: Shard,
    pub source: String,
    #[serde(flatten)]
    pub provenance: Provenance,
}

/// The inputs read: each one's folder (bundles unpacked), run.json and provenance.
struct Inputs {
    dirs: Vec<PathBuf>,
    infos: Vec<RunInfo>,
    provenances: Vec<Provenance>,
    _unpacked: Option<tempfile::TempDir>,
}

/// Merges the run folders or bundles `inputs` into `out`, refusing mismatches.
pub fn merge(out: &Path, inputs: &[PathBuf]) -> anyhow::Result<RunInfo> {
    let request = MergeRequest {
        inputs: inputs.to_vec(),
        ..MergeRequest::default()
    };
    merge_with(out, &request)
}

/// Merges per `request` into `out` (created). Returns the merged `run.json`'s summary.
pub fn merge_with(out: &Path, request: &MergeRequest) -> anyhow::Result<RunInfo> {
    ensure!(
        !request.inputs.is_empty(),
        "merge: give at least one run folder"
    );
    let inputs = read_inputs(&request.inputs)?;
    let (seen, mismatches) = check_belong_together(&request.inputs, &inputs)?;
    if !mismatches.is_empty() && !request.force {
        let lines: Vec<String> = mismatches.iter().map(describe).collect();
        bail!(
            "merge: these shards do not belong together:\n  {}\n(--force merges them anyway and \
             records every mismatch in run.json)",
            lines.join("\n  ")
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    for dir in request.inputs.iter().chain(&request.observed) {
        ensure!(
            dir.canonicalize().ok() != out.canonicalize().ok(),
            "merge: the output folder {} is also an input",
            out.display()
        );
    }
    let histograms = copy_records(out, &inputs)?;
    if let Some(observed) = &request.observed {
        copy_observed(observed, out)?;
    }
    let mut merged = sum_infos(&inputs.infos);
    let count = inputs.infos[0].shard.count;
    let missing: Vec<String> = (1..=count)
        .filter(|i| !seen.contains(i))
        .map(|i| format!("{i}/{count}"))
        .collect();
    if !missing.is_empty() {
        merged.warnings.push(format!(
            "shards missing from the merge: {} (their requests were not played); the verdict \
             cannot be pass",
            missing.join(", ")
        ));
    }
    merged.latency_service = Summary::of(&histograms.service);
    merged.latency_corrected = Summary::of(&histograms.corrected);
    merged.driver_lag = LagReport::of(Summary::of(&histograms.lag));
    write_run_info(out, &merged)?;
    provenance::add_keys(out, merged_keys(request, &inputs, &missing, &mismatches)?)?;
    Ok(merged)
}

fn describe(m: &Mismatch) -> String {
    format!(
        "{} (shard {}): {} is {}, but {} in the first shard",
        m.source, m.shard, m.field, m.value, m.expected
    )
}

/// `shards`, `shards_missing`, `mismatches` and the shared `scenario_sha256` of the merged run.json.
fn merged_keys(
    request: &MergeRequest,
    inputs: &Inputs,
    missing: &[String],
    mismatches: &[Mismatch],
) -> anyhow::Result<Map<String, Value>> {
    let mut shards: Vec<ShardProvenance> = request
        .inputs
        .iter()
        .zip(&inputs.infos)
        .zip(&inputs.provenances)
        .map(|((source, info), p)| ShardProvenance {
            shard: info.shard,
            source: source.display().to_string(),
            provenance: p.clone(),
        })
        .collect();
    shards.sort_by_key(|s| s.shard.index);
    let mut keys = Map::new();
    keys.insert("shards".into(), serde_json::to_value(shards)?);
    keys.insert("shards_missing".into(), json!(missing));
    keys.insert("mismatches".into(), serde_json::to_value(mismatches)?);
    if let Some(sha) = &inputs.provenances[0].scenario_sha256 {
        keys.insert("scenario_sha256".into(), json!(sha));
    }
    Ok(keys)
}

/// Reads every input, unpacking bundles (checked against their manifests) into one temporary
/// folder.
fn read_inputs(sources: &[PathBuf]) -> anyhow::Result<Inputs> {
    let mut unpacked = None;
    let mut dirs = Vec::new();
    for (n, source) in sources.iter().enumerate() {
        if super::bundle::is_bundle(source) {
            if unpacked.is_none() {
                unpacked = Some(tempfile::tempdir()?);
            }
            let into = unpacked
                .as_ref()
                .expect("just made")
                .path()
                .join(n.to_string());
            dirs.push(super::bundle::unpack(source, &into)?);
        } else {
            dirs.push(source.clone());
        }
    }
    let mut infos = Vec::new();
    let mut provenances = Vec::new();
    for dir in &dirs {
        infos.push(read_run_info(dir)?);
        provenances.push(provenance::read(dir)?);
    }
    Ok(Inputs {
        dirs,
        infos,
        provenances,
        _unpacked: unpacked,
    })
}

/// Every field that must agree, as text: (name, value).
fn fields(info: &RunInfo, p: &Provenance) -> Vec<(&'static str, String)> {
    let reference = p
        .clock
        .as_ref()
        .map(|c| c.reference.clone())
        .filter(|r| !r.is_empty());
    vec![
        ("scenario", info.scenario.clone()),
        ("scenario_sha256", format!("{:?}", p.scenario_sha256)),
        ("seed", info.seed.to_string()),
        ("tag", format!("{:?}", info.tag)),
        ("started_at", info.started_at.to_string()),
        ("shard count", info.shard.count.to_string()),
        ("target", info.target.clone()),
        ("clock reference", reference.unwrap_or_else(|| "-".into())),
    ]
}

/// The mismatches against the first shard, and the shard numbers seen; a shard given twice is
/// an error.
fn check_belong_together(
    sources: &[PathBuf],
    inputs: &Inputs,
) -> anyhow::Result<(BTreeSet<u32>, Vec<Mismatch>)> {
    let expected = fields(&inputs.infos[0], &inputs.provenances[0]);
    let mut seen = BTreeSet::new();
    let mut mismatches = Vec::new();
    for ((source, info), p) in sources.iter().zip(&inputs.infos).zip(&inputs.provenances) {
        for ((field, value), (_, want)) in fields(info, p).into_iter().zip(&expected) {
            // A shard without a measured clock has no reference to disagree with.
            if value != *want && !(field == "clock reference" && (value == "-" || want == "-")) {
                mismatches.push(Mismatch {
                    shard: info.shard.to_string(),
                    source: source.display().to_string(),
                    field: field.into(),
                    value,
                    expected: want.clone(),
                });
            }
        }
        if !seen.insert(info.shard.index) {
            bail!(
                "{}: shard {} is given twice (even --force will not count its records twice)",
                source.display(),
                info.shard
            );
        }
    }
    Ok((seen, mismatches))
}

/// Concatenates the shards' `sent.jsonl` (streamed; each record from a client of its own shard,
/// given its `shard`) and adds their histograms.
fn copy_records(out: &Path, inputs: &Inputs) -> anyhow::Result<Histograms> {
    let mut writer = JsonlWriter::<Value>::create(&out.join(SENT))?;
    let mut histograms = Histograms::new();
    for (dir, info) in inputs.dirs.iter().zip(&inputs.infos) {
        for record in read_jsonl::<SentRecord>(&dir.join(SENT))? {
            let record = record?;
            ensure!(
                info.shard.owns_client(record.client),
                "{}: record `{}` is from client {}, which is not in shard {}",
                dir.display(),
                record.id,
                record.client,
                info.shard
            );
            let mut line = serde_json::to_value(&record)?;
            line["shard"] = json!(info.shard.index);
            writer.write(&line)?;
        }
        histograms.add(&Histograms::load(dir)?)?;
    }
    writer.flush()?;
    histograms.save(out)?;
    Ok(histograms)
}

/// The observer's records, copied as they are.
fn copy_observed(observed: &Path, out: &Path) -> anyhow::Result<()> {
    ensure!(
        observed.is_dir(),
        "--observed {}: not a folder (give the folder of `landrush observe --out`)",
        observed.display()
    );
    for name in [HANDED, ACKS, STATS, FAULTS] {
        let from = observed.join(name);
        if from.is_file() {
            std::fs::copy(&from, out.join(name))
                .with_context(|| format!("cannot copy {}", from.display()))?;
        }
    }
    Ok(())
}

/// The shards' `run.json`s summed (latencies are set from the merged histograms by the caller).
fn sum_infos(infos: &[RunInfo]) -> RunInfo {
    let first = &infos[0];
    let mut merged = RunInfo {
        shard: Shard::WHOLE,
        merged_from: infos.iter().map(|i| i.shard).collect(),
        target: join_unique(infos.iter().map(|i| i.target.clone())),
        target_addr: join_unique(infos.iter().map(|i| i.target_addr.clone())),
        launched_at: infos.iter().map(|i| i.launched_at).min().unwrap(),
        started_at: infos.iter().map(|i| i.started_at).min().unwrap(),
        finished_at: infos.iter().map(|i| i.finished_at).max().unwrap(),
        shard_requests_planned: 0,
        requests_started: 0,
        transmissions: 0,
        accepted: 0,
        refused: 0,
        indeterminate: 0,
        failed: 0,
        unsent: 0,
        idle_opened: 0,
        idle_held_at_end: 0,
        pre_connect_failed: 0,
        pre_connect_late: 0,
        kinds: Default::default(),
        errors: Default::default(),
        warnings: Vec::new(),
        ..first.clone()
    };
    merged.merged_from.sort_by_key(|s| s.index);
    for info in infos {
        add_counts(&mut merged, info);
    }
    merged
}

fn add_counts(merged: &mut RunInfo, info: &RunInfo) {
    merged.shard_requests_planned += info.shard_requests_planned;
    merged.requests_started += info.requests_started;
    merged.transmissions += info.transmissions;
    merged.accepted += info.accepted;
    merged.refused += info.refused;
    merged.indeterminate += info.indeterminate;
    merged.failed += info.failed;
    merged.unsent += info.unsent;
    merged.idle_opened += info.idle_opened;
    merged.idle_held_at_end += info.idle_held_at_end;
    merged.pre_connect_failed += info.pre_connect_failed;
    merged.pre_connect_late += info.pre_connect_late;
    for (k, v) in &info.kinds {
        *merged.kinds.entry(k.clone()).or_default() += v;
    }
    for (k, v) in &info.errors {
        *merged.errors.entry(k.clone()).or_default() += v;
    }
    for w in &info.warnings {
        merged.warnings.push(format!("shard {}: {w}", info.shard));
    }
}

fn join_unique(items: impl Iterator<Item = String>) -> String {
    let set: BTreeSet<String> = items.collect();
    set.into_iter().collect::<Vec<_>>().join(", ")
}
