//! The gate's outputs: JUnit XML (one test case per threshold, a test suite per run), a Markdown
//! summary and the terminal table. Pure functions of the judged thresholds.

use std::collections::HashMap;
use std::fmt::Write;
use std::path::Path;
use std::time::Duration;

use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};

use super::{GateFile, Judged, RunState};

/// `junit.xml`: a `<testsuite>` per run, a `<testcase>` per threshold; a failed threshold is a
/// `<failure>` whose message says the measured value, the bound and by how much it missed.
pub fn junit(
    gate: &GateFile,
    states: &HashMap<String, RunState>,
    judged: &[Judged],
    elapsed: Duration,
) -> String {
    let mut report = Report::new("landrush gate");
    report.set_time(elapsed);
    for run in &gate.runs {
        let mut suite = TestSuite::new(format!("gate.{}", run.name));
        suite.add_property(Property::new(
            "scenario",
            run.scenario.display().to_string(),
        ));
        if let Some(RunState::Done { dir, .. }) = states.get(&run.name) {
            suite.add_property(Property::new("run_dir", dir.display().to_string()));
        }
        suite.add_test_cases(judged.iter().filter(|j| j.run == run.name).map(junit_case));
        report.add_test_suite(suite);
    }
    report
        .to_string()
        .expect("a report of strings serializes to XML")
}

/// One `<testcase>`: passed (with what was measured), failed, or skipped.
fn junit_case(case: &Judged) -> TestCase {
    let o = &case.evaluation;
    let status = match case.passed {
        Some(true) => TestCaseStatus::success(),
        Some(false) => {
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
            status
                .set_message(failure_text(case))
                .set_type("threshold")
                .set_description(failure_text(case));
            status
        }
        None => {
            let mut status = TestCaseStatus::skipped();
            status.set_message(o.miss.clone());
            status
        }
    };
    let mut test_case = TestCase::new(case.threshold.clone(), status);
    test_case.set_classname(format!("gate.{}", case.run));
    if case.passed == Some(true) {
        test_case.set_system_out(format!("measured {} (needed {})", o.measured, o.needed));
    }
    test_case
}

fn failure_text(j: &Judged) -> String {
    let o = &j.evaluation;
    if o.needed.is_empty() {
        format!("{}: {}", j.threshold, o.miss)
    } else {
        format!(
            "{}: measured {}, needed {}: {}",
            j.threshold, o.measured, o.needed, o.miss
        )
    }
}

fn status(j: &Judged) -> &'static str {
    match j.passed {
        Some(true) => "pass",
        Some(false) => "FAIL",
        None => "skip",
    }
}

/// The terminal table: run, threshold, measured, result, by how much it missed.
pub fn table(judged: &[Judged]) -> String {
    let rows: Vec<[String; 5]> = judged
        .iter()
        .map(|j| {
            [
                j.run.clone(),
                j.threshold.clone(),
                j.evaluation.measured.clone(),
                status(j).to_string(),
                j.evaluation.miss.clone(),
            ]
        })
        .collect();
    let head = ["run", "threshold", "measured", "result", "missed by"];
    let mut widths = head.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    // The last column is free text: no padding.
    let line = |cells: [&str; 5]| -> String {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i == 4 {
                s.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                s.push_str(cell);
                s.push_str(&" ".repeat(pad + 2));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = String::new();
    out.push_str(&line(head));
    out.push('\n');
    out.push_str(&line(
        widths.map(|w| "-".repeat(w)).each_ref().map(|s| s.as_str()),
    ));
    out.push('\n');
    for row in &rows {
        out.push_str(&line(row.each_ref().map(|s| s.as_str())));
        out.push('\n');
    }
    out
}

/// `summary.md`: the verdict, the table, and per run its folder and key figures.
pub fn summary_md(
    gate_path: &Path,
    gate: &GateFile,
    states: &HashMap<String, RunState>,
    judged: &[Judged],
) -> String {
    let failed = judged.iter().filter(|j| j.passed == Some(false)).count();
    let skipped = judged.iter().filter(|j| j.passed.is_none()).count();
    let mut md = String::new();
    let _ = writeln!(md, "# Gate `{}`\n", gate_path.display());
    if !gate.description.is_empty() {
        let _ = writeln!(md, "{}\n", gate.description.trim());
    }
    let _ = writeln!(
        md,
        "**{}**: {} thresholds, {} passed, {failed} failed, {skipped} skipped.\n",
        if failed == 0 { "PASS" } else { "FAIL" },
        judged.len(),
        judged.len() - failed - skipped
    );
    warnings_md(&mut md, gate, states);
    let _ = writeln!(md, "| run | threshold | measured | result | missed by |");
    let _ = writeln!(md, "|---|---|---|---|---|");
    for j in judged {
        let _ = writeln!(
            md,
            "| {} | `{}` | {} | {} | {} |",
            j.run,
            j.threshold.replace('|', "\\|"),
            j.evaluation.measured.replace('|', "\\|"),
            status(j),
            j.evaluation.miss.replace('|', "\\|")
        );
    }
    let _ = writeln!(md, "\n## Runs\n");
    for run in &gate.runs {
        let _ = writeln!(md, "{}", run_line(run, states.get(&run.name)));
    }
    md
}

/// Every run's warnings (report.json `warnings`: run.json's, the rehearsal's notes, checks that
/// could not run), before the table, so nobody reads a figure without them.
fn warnings_md(md: &mut String, gate: &GateFile, states: &HashMap<String, RunState>) {
    let mut lines = Vec::new();
    for run in &gate.runs {
        if let Some(RunState::Done { docs, .. }) = states.get(&run.name) {
            let warnings = docs.report["warnings"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for w in warnings.iter().filter_map(|w| w.as_str()) {
                lines.push(format!("> ⚠️ **{}**: {w}", run.name));
            }
        }
    }
    if !lines.is_empty() {
        let _ = writeln!(md, "{}\n", lines.join("\n"));
    }
}

/// The summary's line for one run: its key figures, or why it was not made.
fn run_line(run: &super::RunSpec, state: Option<&RunState>) -> String {
    match state {
        Some(RunState::Done { dir, docs }) => {
            let r = &docs.report;
            let f = |p: &str| -> String {
                let mut at = r;
                for k in p.split('.') {
                    at = &at[k];
                }
                match at {
                    serde_json::Value::Null => "–".into(),
                    v => v.to_string().trim_matches('"').to_string(),
                }
            };
            format!(
                "- **{}** (`{}`, {}): verdict {}, {} sent, {} accepted, {} accepted/s, accept p50 \
                 {} ms, p99 {} ms; report `{}/report.md`",
                run.name,
                run.scenario.display(),
                target_label(run),
                f("verdict"),
                f("counts.sent"),
                f("counts.accepted"),
                f("throughput.accepted_per_s"),
                f("latency_ms.accept.p50"),
                f("latency_ms.accept.p99"),
                dir.display()
            )
        }
        Some(RunState::Failed(e)) => format!("- **{}**: not made: {e}", run.name),
        Some(RunState::Skipped(e)) => format!("- **{}**: skipped: {e}", run.name),
        None => format!("- **{}**: not made", run.name),
    }
}

fn target_label(run: &super::RunSpec) -> String {
    match (&run.target, &run.barrage) {
        (Some(t), _) => format!("running buffer at {t}"),
        (None, Some(b)) => format!("barrage {}", b.display()),
        (None, None) => "built-in barrage".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{RunDocs, judge};
    use super::*;
    use serde_json::json;

    fn gate() -> GateFile {
        toml::from_str(
            r#"
            [[run]]
            name = "smoke"
            scenario = "s.toml"
            thresholds = ["verdict == pass", "lost == 0", 'accept_latency.p99 < "5ms"',
                          "throughput >= 2x ref"]
            [[run]]
            name = "ref"
            scenario = "s.toml"
            optional = true
            "#,
        )
        .unwrap()
    }

    fn done(report: serde_json::Value) -> RunState {
        RunState::Done {
            dir: "runs/x".into(),
            docs: RunDocs {
                report,
                rehearse: None,
            },
        }
    }

    #[test]
    fn junit_has_one_case_per_threshold_and_failures_say_by_how_much() {
        let g = gate();
        g.validate().unwrap();
        let mut states = HashMap::new();
        states.insert(
            "smoke".into(),
            done(json!({"verdict": "pass", "checks": {"loss": {"lost": 0}},
                        "warnings": ["the driver fell behind its schedule"],
                        "latency_ms": {"accept": {"p99": 6.0}},
                        "throughput": {"accepted_per_s": 900.0}})),
        );
        states.insert(
            "ref".into(),
            done(json!({"throughput": {"accepted_per_s": 300.0}})),
        );
        let judged = judge(&g, &states);
        assert_eq!(judged.len(), 4);
        let passed: Vec<Option<bool>> = judged.iter().map(|j| j.passed).collect();
        assert_eq!(passed, [Some(true), Some(true), Some(false), Some(true)]);
        let xml = junit(&g, &states, &judged, Duration::from_secs(3));
        assert_eq!(xml.matches("<testcase ").count(), 4);
        assert!(
            xml.contains("tests=\"4\" skipped=\"0\" failures=\"1\""),
            "{xml}"
        );
        assert!(
            xml.contains(
                "<failure message=\"accept_latency.p99 &lt; &quot;5ms&quot;: measured 6 ms, \
                 needed &lt; 5 ms: over by 1 ms (+20%)\""
            ),
            "{xml}"
        );
        let t = table(&judged);
        assert!(t.contains("FAIL"), "{t}");
        assert!(t.contains("3.00x ref (900/s vs 300/s)"), "{t}");
        let md = summary_md(Path::new("ci/gate.toml"), &g, &states, &judged);
        assert!(
            md.contains("**FAIL**: 4 thresholds, 3 passed, 1 failed, 0 skipped."),
            "{md}"
        );
        // The run's warnings come before the table.
        let warning = md
            .find("> ⚠️ **smoke**: the driver fell behind its schedule")
            .expect(&md);
        assert!(warning < md.find("| run | threshold |").unwrap(), "{md}");
    }

    #[test]
    fn a_skipped_optional_reference_skips_its_ratios_and_a_missing_run_fails() {
        let g = gate();
        let mut states = HashMap::new();
        states.insert("ref".into(), RunState::Skipped("no postfix here".into()));
        let judged = judge(&g, &states);
        assert!(
            judged[..3].iter().all(|j| j.passed == Some(false)),
            "a run not made fails its thresholds"
        );
        states.insert(
            "smoke".into(),
            done(json!({"throughput": {"accepted_per_s": 900.0}})),
        );
        let judged = judge(&g, &states);
        assert_eq!(judged[3].passed, None, "{:?}", judged[3]);
        let xml = junit(&g, &states, &judged, Duration::ZERO);
        assert!(xml.contains("<skipped message=\"reference `ref` skipped: no postfix here\"/>"));
    }

    #[test]
    fn the_gate_file_is_checked() {
        let bad: GateFile = toml::from_str(
            r#"
            [[run]]
            name = "a"
            scenario = "s.toml"
            thresholds = ["throughput >= 2x nobody"]
            "#,
        )
        .unwrap();
        assert!(bad.validate().is_err());
        let bad: GateFile = toml::from_str(
            r#"
            [[run]]
            name = "a"
            scenario = "s.toml"
            thresholds = ["speed > 1"]
            "#,
        )
        .unwrap();
        assert!(bad.validate().is_err());
    }
}
