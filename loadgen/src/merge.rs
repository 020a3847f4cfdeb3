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
use crate::driver::{
    LAG_WARN_MAX, LAG_WARN_P99, LagReport, RunInfo, read_run_info, write_run_info,
};
use crate::shard::Shard;

/// Merges the run folders `inputs` into `out` (created). Returns the merged `run.json`.
pub fn merge(out: &Path, inputs: &[PathBuf]) -> anyhow::Result<RunInfo> {
    ensure!(!inputs.is_empty(), "merge: give at least one run folder");
    let mut infos = Vec::new();
    for dir in inputs {
        infos.push(read_run_info(dir)?);
    }
    let first = &infos[0];
    let mut seen = BTreeSet::new();
    for (dir, info) in inputs.iter().zip(&infos) {
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
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    for dir in inputs {
        ensure!(
            dir.canonicalize().ok() != out.canonicalize().ok(),
            "merge: the output folder {} is also an input",
            out.display()
        );
    }

    let mut writer = JsonlWriter::<SentRecord>::create(&out.join(SENT))?;
    let mut histograms = Histograms::new();
    for (dir, info) in inputs.iter().zip(&infos) {
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

    let mut merged = first.clone();
    merged.shard = Shard::WHOLE;
    merged.merged_from = infos.iter().map(|i| i.shard).collect();
    merged.merged_from.sort_by_key(|s| s.index);
    merged.scenario_file = first.scenario_file.clone();
    merged.target = join_unique(infos.iter().map(|i| i.target.clone()));
    merged.target_addr = join_unique(infos.iter().map(|i| i.target_addr.clone()));
    merged.launched_at = infos.iter().map(|i| i.launched_at).min().unwrap();
    merged.started_at = infos.iter().map(|i| i.started_at).min().unwrap();
    merged.finished_at = infos.iter().map(|i| i.finished_at).max().unwrap();
    merged.shard_requests_planned = 0;
    merged.requests_started = 0;
    merged.transmissions = 0;
    merged.accepted = 0;
    merged.refused = 0;
    merged.indeterminate = 0;
    merged.unsent = 0;
    merged.idle_opened = 0;
    merged.idle_held_at_end = 0;
    merged.pre_connect_failed = 0;
    merged.pre_connect_late = 0;
    merged.kinds.clear();
    merged.errors.clear();
    merged.warnings.clear();
    for info in &infos {
        merged.shard_requests_planned += info.shard_requests_planned;
        merged.requests_started += info.requests_started;
        merged.transmissions += info.transmissions;
        merged.accepted += info.accepted;
        merged.refused += info.refused;
        merged.indeterminate += info.indeterminate;
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
    let missing: Vec<String> = (1..=first.shard.count)
        .filter(|i| !seen.contains(i))
        .map(|i| format!("{i}/{}", first.shard.count))
        .collect();
    if !missing.is_empty() {
        merged.warnings.push(format!(
            "shards missing from the merge: {} (their requests were not played)",
            missing.join(", ")
        ));
    }
    merged.latency_service = Summary::of(&histograms.service);
    merged.latency_corrected = Summary::of(&histograms.corrected);
    let lag = Summary::of(&histograms.lag);
    merged.driver_lag = LagReport {
        behind_schedule: lag.count > 0
            && (lag.p99_us > LAG_WARN_P99.as_micros() as u64
                || lag.max_us > LAG_WARN_MAX.as_micros() as u64),
        summary: lag,
    };
    write_run_info(out, &merged)?;
    Ok(merged)
}

fn join_unique(items: impl Iterator<Item = String>) -> String {
    let set: BTreeSet<String> = items.collect();
    set.into_iter().collect::<Vec<_>>().join(", ")
}
