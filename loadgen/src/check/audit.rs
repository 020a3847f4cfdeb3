//! The `audit` check a rehearsal ran against its buffer before it stopped (contract: Provable
//! order), kept in the run folder as `audit.json`: the records alone cannot recompute the chain,
//! so `landrush check` reads the stored result and gives the rehearsal's verdict.

use std::path::Path;

use anyhow::Context;
use reports::checks::CheckResult;

/// The check's file in the run folder.
pub const AUDIT_JSON: &str = "audit.json";

/// Writes the check into the run folder.
pub fn save(run_dir: &Path, check: &CheckResult) -> anyhow::Result<()> {
    let path = run_dir.join(AUDIT_JSON);
    let text = serde_json::to_string_pretty(check)? + "\n";
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// Reads the check a rehearsal kept, if it ran one.
pub fn load(run_dir: &Path) -> anyhow::Result<Option<CheckResult>> {
    let path = run_dir.join(AUDIT_JSON);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .with_context(|| format!("{} is not an audit check", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}
