//! `landrush merge OUT DIR...`: combines the record folders of the shards of one scenario (played
//! by several machines with `--shard I/N`) into one folder, as if one driver had played it all.
//!
//! It checks that the folders belong together (same scenario, seed and tag, distinct shards of the
//! same N, each record from a client of its own shard), concatenates `sent.jsonl` (streamed),
//! adds the histograms and sums `run.json`. Missing shards are a warning, not an error: a
//! volunteer who did not turn up is part of what happened.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail, ensure};
use reports::records::{JsonlWriter, SENT, SentRecord, read_jsonl};

use crate::driver::recorder::{Histograms, Summary};
use crate::driver::{LagReport, RunInfo, read_run_info, write_run_info};
use crate::schedule::shard::Shard;

/// Merges the run folders `inputs` into `out` (created). Returns the merged `run.json`.
pub fn merge(out: &Path, inputs: &[PathBuf]) -> anyhow::Result<RunInfo> {
    ensure!(!inputs.is_empty(), "merge: give at least one run folder");
    let mut infos = Vec::new();
    for dir in inputs {
        infos.push(read_run_info(dir)?);
    }
    let seen = check_belong_together(inputs, &infos)?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    for dir in inputs {
        ensure!(
            dir.canonicalize().ok() != out.canonicalize().ok(),
            "merge: the output folder {} is also an input",
            out.display()
        );
    }
    let histograms = copy_records(out, inputs, &infos)?;
    let mut merged = sum_infos(&infos);
    let count = infos[0].shard.count;
    let missing: Vec<String> = (1..=count)
        .filter(|i| !seen.contains(i))
        .map(|i| format!("{i}/{count}"))
        .collect();
    if !missing.is_empty() {
        merged.warnings.push(format!(
            "shards missing from the merge: {} (their requests were not played)",
            missing.join(", ")
        ));
    }
    merged.latency_service = Summary::of(&histograms.service);
    merged.latency_corrected = Summary::of(&histograms.corrected);
    merged.driver_lag = LagReport::of(Summary::of(&histograms.lag));
    write_run_info(out, &merged)?;
    Ok(merged)
}

/// Same scenario, seed and tag, distinct shards of the same N; returns the shard numbers.
fn check_belong_together(inputs: &[PathBuf], infos: &[RunInfo]) -> anyhow::Result<BTreeSet<u32>> {
    let first = &infos[0];
    let mut seen = BTreeSet::new();
    for (dir, info) in inputs.iter().zip(infos) {
        ensure!(
            info.scenario == first.scenario && info.seed == first.seed && info.tag == first.tag,
            "{}: scenario `{}` seed {} tag {:?} does not match {}: `{}` seed {} tag {:?}",
            dir.display(),
            info.scenario,
            info.seed,
            info.tag,
            inputs[0].display(),
            first.scenario,
            first.seed,
            first.tag
        );
        ensure!(
            info.shard.count == first.shard.count,
            "{}: shard {} is not one of {} shards like {}",
            dir.display(),
            info.shard,
            first.shard.count,
            inputs[0].display()
        );
        if !seen.insert(info.shard.index) {
            bail!("{}: shard {} is given twice", dir.display(), info.shard);
        }
    }
    Ok(seen)
}

/// Concatenates the shards' `sent.jsonl` (streamed; each record from a client of its own shard)
/// and adds their histograms.
fn copy_records(out: &Path, inputs: &[PathBuf], infos: &[RunInfo]) -> anyhow::Result<Histograms> {
    let mut writer = JsonlWriter::<SentRecord>::create(&out.join(SENT))?;
    let mut histograms = Histograms::new();
    for (dir, info) in inputs.iter().zip(infos) {
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
            writer.write(&record)?;
        }
        histograms.add(&Histograms::load(dir)?)?;
    }
    writer.flush()?;
    histograms.save(out)?;
    Ok(histograms)
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
    merged
}

fn join_unique(items: impl Iterator<Item = String>) -> String {
    let set: BTreeSet<String> = items.collect();
    set.into_iter().collect::<Vec<_>>().join(", ")
}
