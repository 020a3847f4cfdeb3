//! How figures and check results read as text, the same in report.md, report.html and
//! `landrush compare`: below every renderer, so none of them reaches into another for it.

use crate::checks::CheckResult;
use crate::model::Report;

/// Integers without decimals, other figures with at most three.
pub fn format_figure(value: f64) -> String {
    if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        let text = format!("{value:.3}");
        text.trim_end_matches('0').to_string()
    }
}

/// What the run line says, as text: report.md sets it in Markdown, report.html in HTML.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunFacts {
    pub scenario: String,
    pub started: String,
    pub seconds: String,
}

impl RunFacts {
    pub fn of(r: &Report) -> Self {
        let scenario = r
            .scenario
            .get("name")
            .and_then(|n| n.as_str())
            .or_else(|| r.scenario.as_str())
            .unwrap_or("unknown scenario");
        RunFacts {
            scenario: scenario.to_string(),
            started: r
                .started_at
                .map_or_else(|| "unknown".to_string(), |s| s.to_string()),
            seconds: format_figure(r.duration_s),
        }
    }
}

/// A check's result as one word: `pass`, `FAIL` (capitals, to catch the eye), `INCOMPLETE`
/// (could not run) or `skipped` (not applicable).
pub fn status(check: &CheckResult) -> &'static str {
    match check.ok {
        Some(true) => "pass",
        Some(false) => "FAIL",
        None if check.incomplete => "INCOMPLETE",
        None => "skipped",
    }
}

/// `lost 3, redelivered 0`: the check's named counts.
pub fn check_counts(check: &CheckResult) -> String {
    let counts: Vec<String> = check
        .counts
        .iter()
        .map(|(name, n)| format!("{name} {n}"))
        .collect();
    match &check.note {
        Some(note) if counts.is_empty() => note.clone(),
        Some(note) => format!("{} ({note})", counts.join(", ")),
        None => counts.join(", "),
    }
}
