//! The checkers' results as the reports show them: the `checks` object of `report.json`.
//!
//! The checkers themselves live in `landrush` (they need its knowledge of scenarios); this crate only
//! owns the shape of their verdicts so that reports can be rendered from a stored `report.json` too.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The verdict of one checker.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    /// `Some(true)` passed, `Some(false)` failed, `None` skipped (for example `--no-acks`).
    pub ok: Option<bool>,
    /// The check's named counts (`violations`, `lost`, `duplicated`, `redelivered`, `missing`, …),
    /// flattened into the check's object so report.json reads `{"ok": false, "lost": 3, …}`.
    #[serde(flatten)]
    pub counts: BTreeMap<String, u64>,
    /// The first few counterexamples, each an object naming ids, seqs and timestamps.
    #[serde(default)]
    pub examples: Vec<serde_json::Value>,
    /// Why a check was skipped, or anything a reader must know to interpret it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// All checks of a run, by name (`fifo`, `loss`, `duplicates`, `acks`, `retransmissions`, …).
pub type Checks = BTreeMap<String, CheckResult>;

/// A run passes when no check failed (skipped checks do not fail it).
pub fn verdict(checks: &Checks) -> &'static str {
    if checks.values().any(|c| c.ok == Some(false)) {
        "fail"
    } else {
        "pass"
    }
}
