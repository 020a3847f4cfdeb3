//! Run records → `report.json` / `report.md` / `report.html`.
//!
//! The run records and the checkers' verdicts belong to the `contract` crate (contract: Run records,
//! Verdicts); `records` and `checks` are re-exported here so `reports::records::…` paths keep
//! working. This crate turns a run folder into reports:
//!
//! - [`build_report`] reads the records and computes a [`Report`] around the checkers' verdicts;
//! - [`write_reports`] writes report.json, report.md, report.html and latency.hlog;
//! - [`load_report`] reads a report.json back, [`compare`] puts two side by side;
//! - [`regenerate`] rebuilds the files from the records, keeping the stored checks.

pub mod analysis;
pub mod compare;
pub mod distribution;
pub mod figures;
pub mod html;
pub mod latency;
pub mod markdown;
pub mod model;
pub mod plots;
pub mod share_plot;
pub mod tables;
pub mod text;
pub mod warnings;

pub use contract::{checks, records};

use std::path::Path;

use anyhow::Context;

pub use analysis::build_report;
pub use compare::compare;
pub use model::Report;

/// The report files in a run folder.
pub const REPORT_JSON: &str = "report.json";
pub const REPORT_MD: &str = "report.md";
pub const REPORT_HTML: &str = "report.html";

/// Writes report.json, report.md and report.html into `run_dir`, and latency.hlog when the report
/// was built from records (a report loaded from JSON carries no histograms; the log is then left
/// as it is).
pub fn write_reports(run_dir: &Path, report: &Report) -> anyhow::Result<()> {
    let write = |name: &str, text: String| {
        let path = run_dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
    };
    write(REPORT_JSON, to_json(report)?)?;
    write(REPORT_MD, markdown::render(report))?;
    write(REPORT_HTML, html::render(report))?;
    if let Some(histograms) = &report.histograms {
        histograms.write_hlog(&run_dir.join(latency::HLOG))?;
    }
    Ok(())
}

/// report.json's text: pretty JSON with a final newline.
pub fn to_json(report: &Report) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(report)? + "\n")
}

/// Reads `run_dir/report.json` back.
pub fn load_report(run_dir: &Path) -> anyhow::Result<Report> {
    let path = run_dir.join(REPORT_JSON);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a report", path.display()))
}

/// Rebuilds every report file of `run_dir` from its records, keeping the checks of an existing
/// report.json (the checkers need knowledge this crate lacks). Without a report.json the report
/// has no checks, and says so.
pub fn regenerate(run_dir: &Path) -> anyhow::Result<Report> {
    let checks = if run_dir.join(REPORT_JSON).exists() {
        load_report(run_dir)?.checks
    } else {
        checks::Checks::new()
    };
    let report = build_report(run_dir, checks)?;
    write_reports(run_dir, &report)?;
    Ok(report)
}
