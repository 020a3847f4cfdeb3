//! The checkers' results as the reports show them: the `checks` object of `report.json`, and the
//! run's [`Verdict`] (contract: Verdicts).
//!
//! The checkers themselves live in `landrush` (they need its knowledge of scenarios); this crate only
//! owns the shape of their verdicts so that reports can be rendered from a stored `report.json` too.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The verdict of a run (contract: Verdicts), as report.json writes it: `"pass"`, `"fail"` or
/// `"incomplete"`.
///
/// `landrush check`, `report` and `rehearse` exit with [`Verdict::exit_code`]:
///
/// | verdict      | exit code | meaning                                                        |
/// |--------------|-----------|----------------------------------------------------------------|
/// | `pass`       | 0         | every check ran and none failed                                |
/// | `fail`       | 1         | at least one check failed: the buffer broke the contract       |
/// | `incomplete` | 3         | a check could not run (nothing observed, a shard missing, …)   |
///
/// Code 2 is left to errors: a bad command line (`clap` exits 2), unreadable records, a run that
/// could not be made.
///
/// The default is `incomplete`: a verdict nobody computed is not a pass (nor a proven failure).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
    #[default]
    Incomplete,
}

impl Verdict {
    /// The process exit code for this verdict; only [`Verdict::Pass`] exits 0.
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Pass => 0,
            Verdict::Fail => 1,
            Verdict::Incomplete => 3,
        }
    }

    /// The word report.json uses: `pass`, `fail`, `incomplete`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Incomplete => "incomplete",
        }
    }

    pub fn is_pass(self) -> bool {
        self == Verdict::Pass
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

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
    /// True when the check applies but could not run, or could not judge everything (nothing
    /// observed, a shard missing, …): with `ok` not false, the run is then `incomplete`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub incomplete: bool,
}

/// All checks of a run, by name (`fifo`, `loss`, `duplicates`, `acks`, `retransmissions`, …).
pub type Checks = BTreeMap<String, CheckResult>;

/// A run fails when a check failed; else it is incomplete when no check ran at all, or when one
/// could not run or judge everything; else it passes. A check skipped as not applicable (`ok`
/// null, not incomplete) neither fails nor passes the run.
pub fn verdict(checks: &Checks) -> Verdict {
    if checks.values().any(|c| c.ok == Some(false)) {
        Verdict::Fail
    } else if checks.is_empty() || checks.values().any(|c| c.incomplete) {
        Verdict::Incomplete
    } else {
        Verdict::Pass
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(ok: Option<bool>) -> CheckResult {
        CheckResult {
            ok,
            ..CheckResult::default()
        }
    }

    #[test]
    fn one_failed_check_fails_the_run_and_skipped_ones_do_not() {
        let mut checks = Checks::new();
        checks.insert("fifo".into(), check(Some(true)));
        checks.insert("acks".into(), check(None));
        assert_eq!(verdict(&checks), Verdict::Pass);
        checks.insert("loss".into(), check(Some(false)));
        assert_eq!(verdict(&checks), Verdict::Fail);
    }

    #[test]
    fn no_checks_or_a_check_that_could_not_run_is_incomplete_never_pass() {
        assert_eq!(verdict(&Checks::new()), Verdict::Incomplete);
        let mut checks = Checks::new();
        checks.insert("fifo".into(), check(Some(true)));
        let unobserved = CheckResult {
            incomplete: true,
            ..check(None)
        };
        checks.insert("content".into(), unobserved);
        assert_eq!(verdict(&checks), Verdict::Incomplete);
        // A failure outweighs what could not be checked.
        checks.insert("loss".into(), check(Some(false)));
        assert_eq!(verdict(&checks), Verdict::Fail);
    }

    #[test]
    fn verdicts_read_and_write_as_lowercase_words() {
        for (v, word, code) in [
            (Verdict::Pass, "pass", 0),
            (Verdict::Fail, "fail", 1),
            (Verdict::Incomplete, "incomplete", 3),
        ] {
            assert_eq!(serde_json::to_string(&v).unwrap(), format!("\"{word}\""));
            assert_eq!(
                serde_json::from_str::<Verdict>(&format!("\"{word}\"")).unwrap(),
                v
            );
            assert_eq!(v.to_string(), word);
            assert_eq!(v.exit_code(), code);
        }
        assert!(serde_json::from_str::<Verdict>("\"PASS\"").is_err());
    }
}
