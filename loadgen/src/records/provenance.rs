//! Where a shard's records come from, recorded in its `run.json` beside the driver's summary
//! (contract: Run records): the machine (`host`), its clock offset (`clock`) and a digest of the
//! parsed scenario (`scenario_sha256`), so that `merge` can refuse shards that do not belong
//! together and the checkers know the machine and clock of every request.
//!
//! The keys are added to `run.json` after the driver wrote it ([`stamp`]) rather than by the
//! driver itself: they are measured from the run's own records, once the run is over.

use std::path::Path;

use anyhow::Context;
use reports::records::{ClockEstimate, RUN, SENT, SentRecord, read_all};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The provenance keys of one shard's `run.json` (absent in older folders).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// The machine's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Its clock against the reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock: Option<ClockEstimate>,
    /// SHA-256 (lowercase hex) of the canonical JSON of `scenario_spec`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scenario_sha256: Option<String>,
}

/// This machine's name (`/proc/sys/kernel/hostname`, else `$HOSTNAME`), or `unknown`.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// The scenario digest: SHA-256 of `spec` written with sorted keys and no whitespace, so the same
/// parsed scenario gives the same digest whatever the file's layout, comments or defaults written.
pub fn scenario_sha256(spec: &Value) -> String {
    let text = serde_json::to_string(&canonical(spec)).expect("a JSON value serializes");
    contract::chain::raw_sha256(text.as_bytes())
}

fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let sorted: Map<String, Value> = keys
                .into_iter()
                .map(|k| (k.clone(), canonical(&map[k])))
                .collect();
            Value::Object(sorted)
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

/// Reads `run.json` of `dir` as a JSON object.
pub fn read_object(dir: &Path) -> anyhow::Result<Map<String, Value>> {
    let path = dir.join(RUN);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    match serde_json::from_str(&text) {
        Ok(Value::Object(map)) => Ok(map),
        _ => anyhow::bail!("{}: not a landrush run.json", path.display()),
    }
}

/// Adds `keys` to `run.json` of `dir` (replacing keys of the same name).
pub fn add_keys(dir: &Path, keys: Map<String, Value>) -> anyhow::Result<()> {
    let mut object = read_object(dir)?;
    object.extend(keys);
    let path = dir.join(RUN);
    let text = serde_json::to_string_pretty(&Value::Object(object))?;
    std::fs::write(&path, text + "\n").with_context(|| format!("cannot write {}", path.display()))
}

/// Adds the provenance keys to `run.json` of `dir`.
pub fn stamp(dir: &Path, provenance: &Provenance) -> anyhow::Result<()> {
    match serde_json::to_value(provenance)? {
        Value::Object(keys) => add_keys(dir, keys),
        _ => unreachable!("a struct serializes to an object"),
    }
}

/// Adds this machine's provenance to `run.json` of `dir` once its run is over: the host, `clock`
/// (when `None`, measured from the buffer's replies in the folder's `sent.jsonl`, the buffer at
/// `reference` being the reference clock) and the digest of `spec`, the scenario as played.
/// `landrush run` and `landrush rehearse` both end with it, so their folders merge and check alike.
pub fn stamp_after_run(
    dir: &Path,
    spec: &Value,
    clock: Option<ClockEstimate>,
    reference: &str,
) -> anyhow::Result<ClockEstimate> {
    let clock = match clock {
        Some(clock) => clock,
        None => {
            let records: Vec<SentRecord> = read_all(&dir.join(SENT))?;
            crate::clock::from_replies(&records, reference)
        }
    };
    let provenance = Provenance {
        host: Some(host_name()),
        clock: Some(clock.clone()),
        scenario_sha256: Some(scenario_sha256(spec)),
    };
    stamp(dir, &provenance)?;
    Ok(clock)
}

/// Reads the provenance keys of `run.json` of `dir`; the digest is computed from `scenario_spec`
/// when a folder predates it.
pub fn read(dir: &Path) -> anyhow::Result<Provenance> {
    let object = read_object(dir)?;
    let mut provenance: Provenance = serde_json::from_value(Value::Object(object.clone()))
        .with_context(|| format!("{}: bad host, clock or scenario_sha256", dir.display()))?;
    if provenance.scenario_sha256.is_none()
        && let Some(spec) = object.get("scenario_spec")
    {
        provenance.scenario_sha256 = Some(scenario_sha256(spec));
    }
    Ok(provenance)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_digest_ignores_key_order_and_sees_every_value() {
        let a = json!({"name": "x", "clients": {"count": 3, "idle": 0}});
        let b = json!({"clients": {"idle": 0, "count": 3}, "name": "x"});
        assert_eq!(scenario_sha256(&a), scenario_sha256(&b));
        let c = json!({"clients": {"idle": 0, "count": 4}, "name": "x"});
        assert_ne!(scenario_sha256(&a), scenario_sha256(&c));
        assert_eq!(scenario_sha256(&a).len(), 64);
    }

    #[test]
    fn keys_are_added_to_run_json_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(RUN),
            r#"{"scenario": "x", "scenario_spec": {"a": 1}}"#,
        )
        .unwrap();
        let read_before = read(dir.path()).unwrap();
        assert_eq!(read_before.host, None);
        assert!(read_before.scenario_sha256.is_some());
        let provenance = Provenance {
            host: Some("volunteer-7".into()),
            clock: Some(crate::clock::unknown("test")),
            scenario_sha256: Some("ab".into()),
        };
        stamp(dir.path(), &provenance).unwrap();
        assert_eq!(read(dir.path()).unwrap(), provenance);
        assert_eq!(read_object(dir.path()).unwrap()["scenario"], "x");
    }
}
