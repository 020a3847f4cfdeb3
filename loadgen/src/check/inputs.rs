//! What the checks need beyond the record files, saved in the run folder as `checks.json`
//! ([`CheckInputs`]) by `landrush rehearse` and read back by `landrush check DIR`, so that both
//! reach the same verdict: the run's first seq, the buffer's own highest stored seq, whether acks
//! were expected, whether the drain completed; and, from run.json, the shards missing.

use std::path::Path;

use anyhow::Context;
use reports::records::{self, CheckInputs, StatsSample};

use super::CheckOptions;

/// Writes `checks.json` into `run_dir`.
pub fn save_check_inputs(run_dir: &Path, inputs: &CheckInputs) -> anyhow::Result<()> {
    let path = run_dir.join(records::CHECK_INPUTS);
    std::fs::write(&path, serde_json::to_string_pretty(inputs)? + "\n")
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The options `landrush check` starts from for `run_dir`: `checks.json` when the rehearsal left
/// one (else the highest seq of stats.jsonl), and the missing shards from run.json.
pub fn load_check_inputs(run_dir: &Path) -> anyhow::Result<CheckOptions> {
    let mut options = CheckOptions::default();
    let path = run_dir.join(records::CHECK_INPUTS);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let inputs: CheckInputs = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a checks.json", path.display()))?;
            options.first_seq = inputs.first_seq;
            options.highest_seq = inputs.highest_seq;
            options.acks_expected = inputs.acks_expected;
            options.drain_complete = inputs.drain_complete;
            options.final_cursor = inputs.final_cursor;
            options.final_queue_depth = inputs.final_queue_depth;
            options.final_acks_pending = inputs.final_acks_pending;
            options.clock_tolerance_us = inputs.clock_tolerance_us;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let stats: Vec<StatsSample> = records::read_all(&run_dir.join(records::STATS))?;
            options.highest_seq = stats.iter().map(|s| s.accepted).max();
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    options.missing_shards = missing_shards(run_dir)?;
    Ok(options)
}

/// Shards of the scenario not in the folder, as run.json tells (`shard.count` against the shards
/// merged, or the one shard played).
fn missing_shards(run_dir: &Path) -> anyhow::Result<u64> {
    let path = run_dir.join(records::RUN);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let run: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    // A merge names the shards it did not get.
    if let Some(missing) = run["shards_missing"].as_array() {
        return Ok(missing.len() as u64);
    }
    let count = run["shard"]["count"].as_u64().unwrap_or(1);
    let present = match run["merged_from"].as_array() {
        Some(shards) if !shards.is_empty() => {
            let mut indices: Vec<String> = shards.iter().map(|s| s.to_string()).collect();
            indices.sort();
            indices.dedup();
            indices.len() as u64
        }
        _ => 1,
    };
    Ok(count.saturating_sub(present))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_missing_from_a_folder_are_counted_from_run_json() {
        let dir = tempfile::tempdir().unwrap();
        let write = |run: serde_json::Value| {
            std::fs::write(dir.path().join(records::RUN), run.to_string()).unwrap();
            missing_shards(dir.path()).unwrap()
        };
        let shard = |i| serde_json::json!({"index": i, "count": 3});
        assert_eq!(write(serde_json::json!({"shard": shard(1)})), 2);
        let merged = serde_json::json!({"shard": shard(1), "merged_from": [shard(1), shard(3)]});
        assert_eq!(write(merged), 1);
        let all =
            serde_json::json!({"shard": shard(1), "merged_from": [shard(1), shard(2), shard(3)]});
        assert_eq!(write(all), 0);
        assert_eq!(
            write(serde_json::json!({"shard": {"index": 1, "count": 1}})),
            0
        );
        let named = serde_json::json!({"shard": shard(1), "shards_missing": ["2/3", "3/3"]});
        assert_eq!(write(named), 2);
        std::fs::remove_file(dir.path().join(records::RUN)).unwrap();
        assert_eq!(missing_shards(dir.path()).unwrap(), 0);
        // The options a folder without checks.json starts from: its stats' highest seq.
        std::fs::write(
            dir.path().join(records::STATS),
            "{\"at\":\"2026-12-01T09:00:00.000000Z\",\"accepted\":7,\"cursor\":7,\"queue_depth\":0}\n",
        )
        .unwrap();
        let options = load_check_inputs(dir.path()).unwrap();
        assert_eq!((options.highest_seq, options.first_seq), (Some(7), None));
    }
}
