//! Two runs side by side (`landrush compare A B`): the same scenario against two buffers, or before
//! and after a change. Every figure is shown for both runs with the ratio B / A printed like
//! `1.00x`, as a Markdown table whose columns also line up in a terminal.

use crate::markdown::table;
use crate::model::{Percentiles, Report};
use crate::text::format_figure;

/// A side-by-side table of `a` and `b` with the ratio of each figure.
pub fn compare(a: &Report, b: &Report) -> String {
    let mut rows: Vec<[String; 4]> = Vec::new();
    for (name, value_a, value_b) in figures(a)
        .into_iter()
        .zip(figures(b))
        .map(|(fa, fb)| (fa.0, fa.1, fb.1))
    {
        rows.push([
            name,
            format_figure(value_a),
            format_figure(value_b),
            ratio(value_a, value_b),
        ]);
    }
    let mut text = format!("A: {}\nB: {}\n\n", describe(a), describe(b));
    text.push_str(&table(&["figure", "A", "B", "B/A"], &rows));
    text
}

/// The ratio `b / a` like `1.00x`; `-` when `a` is zero, where no ratio means anything.
pub fn ratio(a: f64, b: f64) -> String {
    if a == 0.0 {
        "-".into()
    } else {
        format!("{:.2}x", b / a)
    }
}

/// Every compared figure of a report, named like its path in report.json.
fn figures(r: &Report) -> Vec<(String, f64)> {
    let c = &r.counts;
    let mut figures: Vec<(String, f64)> = [
        ("counts.sent", c.sent),
        ("counts.accepted", c.accepted),
        ("counts.refused", c.refused),
        ("counts.indeterminate", c.indeterminate),
        ("counts.handed_over", c.handed_over),
        ("counts.acked", c.acked),
    ]
    .into_iter()
    .map(|(name, count)| (name.to_string(), count as f64))
    .collect();
    let mut add_percentiles = |prefix: &str, p: &Percentiles| {
        for (name, value) in [("p50", p.p50), ("p99", p.p99), ("max", p.max)] {
            figures.push((format!("{prefix}.{name}"), value));
        }
    };
    add_percentiles("latency_ms.accept", &r.latency_ms.accept);
    add_percentiles(
        "latency_ms.accept_corrected",
        &r.latency_ms.accept_corrected,
    );
    add_percentiles("driver_lag_ms", &r.driver_lag_ms);
    add_percentiles("ack_delay_ms", &r.ack_delay_ms);
    figures.push((
        "throughput.accepted_per_s".into(),
        r.throughput.accepted_per_s,
    ));
    figures.push((
        "throughput.peak_accepted_per_s".into(),
        r.throughput.peak_accepted_per_s,
    ));
    figures.push((
        "throughput.handed_over_per_s".into(),
        r.throughput.handed_over_per_s,
    ));
    figures
}

/// One line naming a run: its scenario and start.
fn describe(r: &Report) -> String {
    let scenario = r
        .scenario
        .get("name")
        .and_then(|n| n.as_str())
        .or_else(|| r.scenario.as_str())
        .unwrap_or("(scenario unknown)");
    let started = r
        .started_at
        .map_or_else(|| "start unknown".to_string(), |s| format!("started {s}"));
    format!("{scenario}, {started}, verdict {}", r.verdict)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::Verdict;

    #[test]
    fn ratios_read_like_one_point_zero_zero_x() {
        assert_eq!(ratio(100.0, 100.0), "1.00x");
        assert_eq!(ratio(4.0, 1.0), "0.25x");
        assert_eq!(ratio(0.0, 5.0), "-");
    }

    #[test]
    fn compare_shows_both_runs_and_the_ratio() {
        let mut a = Report {
            verdict: Verdict::Pass,
            ..Report::default()
        };
        a.counts.accepted = 1000;
        a.latency_ms.accept.p99 = 2.5;
        a.throughput.accepted_per_s = 1400.0;
        let mut b = a.clone();
        b.verdict = Verdict::Fail;
        b.latency_ms.accept.p99 = 1.25;
        b.throughput.accepted_per_s = 14000.0;
        let text = compare(&a, &b);
        let row = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(&format!("| {name} ")))
                .unwrap_or_else(|| panic!("no row {name} in\n{text}"))
                .split('|')
                .map(|c| c.trim().to_string())
                .filter(|c| !c.is_empty())
                .collect::<Vec<_>>()
        };
        assert!(text.starts_with("A: (scenario unknown), start unknown, verdict pass\nB: "));
        assert_eq!(
            row("counts.accepted"),
            ["counts.accepted", "1000", "1000", "1.00x"]
        );
        assert_eq!(
            row("latency_ms.accept.p99"),
            ["latency_ms.accept.p99", "2.5", "1.25", "0.50x"]
        );
        assert_eq!(
            row("throughput.accepted_per_s"),
            ["throughput.accepted_per_s", "1400", "14000", "10.00x"]
        );
        assert_eq!(row("counts.refused")[3], "-");
    }
}
