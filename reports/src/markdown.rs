//! report.md: a short summary for a CI job summary or a pull-request comment. GitHub-flavoured
//! Markdown with no HTML, so it also reads as plain text.

use std::fmt::Write;

use crate::checks::Verdict;
use crate::model::{Percentiles, Report};
use crate::tables;
use crate::text::{RunFacts, check_counts, format_figure, status};

/// Counterexamples shown per failed check; report.html and report.json have them all.
const EXAMPLES_SHOWN: usize = 3;

pub fn render(r: &Report) -> String {
    let mut md = String::new();
    let mark = match r.verdict {
        Verdict::Pass => "✅",
        Verdict::Fail => "❌",
        Verdict::Incomplete => "⚠️",
    };
    let verdict = r.verdict.as_str().to_uppercase();
    let _ = writeln!(md, "## {mark} Landrush run: {verdict}\n");
    let _ = writeln!(md, "{}\n", run_line(r));
    for warning in &r.warnings {
        let _ = writeln!(md, "> ⚠️ {warning}");
    }
    if !r.warnings.is_empty() {
        md.push('\n');
    }
    checks_table(&mut md, r);
    counts_table(&mut md, r);
    latency_table(&mut md, r);
    let t = &r.throughput;
    let _ = writeln!(
        md,
        "Throughput: **{} accepted/s** (busiest second {}), handover {}/s.\n",
        format_figure(t.accepted_per_s),
        format_figure(t.peak_accepted_per_s),
        format_figure(t.handed_over_per_s)
    );
    figures(&mut md, r);
    faults_line(&mut md, r);
    counterexamples(&mut md, r);
    md
}

/// Burst, fairness, by-kind and clocks figures.
fn figures(md: &mut String, r: &Report) {
    let _ = writeln!(md, "Burst: {}.\n", tables::burst_line(r));
    let rows = tables::fairness_rows(r);
    if !rows.is_empty() {
        md.push_str("### Fairness\n\n");
        md.push_str(&table(&tables::FAIRNESS_HEADER, &rows));
        let _ = writeln!(md, "\n{}.\n", tables::jain_line(r));
    }
    let rows = tables::kind_rows(r);
    if !rows.is_empty() {
        md.push_str("### By kind\n\n");
        md.push_str(&table(&tables::KIND_HEADER, &rows));
        md.push('\n');
    }
    let rows = tables::clock_rows(r);
    if !rows.is_empty() {
        md.push_str("### Clocks\n\n");
        md.push_str(&table(&tables::CLOCK_HEADER, &rows));
        md.push('\n');
        for note in tables::clock_notes(r) {
            let _ = writeln!(md, "- {note}");
        }
        md.push('\n');
    }
}

fn checks_table(md: &mut String, r: &Report) {
    if r.checks.is_empty() {
        md.push_str("No checks were recorded for this run: nothing was judged, so the verdict is incomplete.\n\n");
        return;
    }
    let rows: Vec<[String; 3]> = r
        .checks
        .iter()
        .map(|(name, check)| [name.clone(), status(check).into(), check_counts(check)])
        .collect();
    md.push_str(&table(&["check", "result", "counts"], &rows));
    md.push('\n');
}

fn counts_table(md: &mut String, r: &Report) {
    let c = &r.counts;
    let counts = [
        c.sent,
        c.accepted,
        c.refused,
        c.indeterminate,
        c.failed,
        c.handed_over,
        c.acked,
    ]
    .map(|n| n.to_string());
    let [
        sent,
        accepted,
        refused,
        indeterminate,
        failed,
        handed_over,
        acked,
    ] = counts;
    md.push_str(&table(
        &[
            "",
            "sent",
            "accepted",
            "refused",
            "indeterminate",
            "failed",
            "handed over",
            "acked",
        ],
        &[[
            "requests".to_string(),
            sent,
            accepted,
            refused,
            indeterminate,
            failed,
            handed_over,
            acked,
        ]],
    ));
    md.push('\n');
}

fn latency_table(md: &mut String, r: &Report) {
    let latency_row = |name: &str, p: &Percentiles| {
        [name.to_string(), p.count.to_string()]
            .into_iter()
            .chain([p.p50, p.p99, p.p999, p.max].map(format_figure))
            .collect::<Vec<_>>()
            .try_into()
            .expect("six cells")
    };
    let rows: Vec<[String; 6]> = vec![
        latency_row("accept", &r.latency_ms.accept),
        latency_row("accept, corrected", &r.latency_ms.accept_corrected),
        latency_row("reply (timeouts included)", &r.latency_ms.reply.percentiles),
        latency_row("handover delay", &r.handover_delay_ms),
        latency_row("driver lag", &r.driver_lag_ms),
        latency_row("ack delay", &r.ack_delay_ms),
    ];
    md.push_str(&table(
        &["ms", "count", "p50", "p99", "p99.9", "max"],
        &rows,
    ));
    if let Some(note) = tables::timeouts_note(r) {
        let _ = writeln!(md, "\nReply latency: {note}.");
    }
    let tls = &r.tls_handshake_ms;
    if tls.percentiles.count > 0 {
        let p = &tls.percentiles;
        let _ = writeln!(
            md,
            "\nSTARTTLS handshakes: {} (one per connection), mean {} ms, p50 {} ms, p99 {} ms, \
             max {} ms.",
            p.count,
            format_figure(tls.mean),
            format_figure(p.p50),
            format_figure(p.p99),
            format_figure(p.max)
        );
    }
    md.push('\n');
}

fn faults_line(md: &mut String, r: &Report) {
    if r.faults.is_empty() {
        return;
    }
    let faults: Vec<String> = r
        .faults
        .iter()
        .map(|f| match r.t0 {
            Some(t0) => format!(
                "{} at +{} s",
                f.kind,
                format_figure((f.at.micros() - t0.micros()) as f64 / 1e6)
            ),
            None => format!("{} at {}", f.kind, f.at),
        })
        .collect();
    let _ = writeln!(md, "Faults: {}.\n", faults.join(", "));
}

/// The first few counterexamples of each failed check.
fn counterexamples(md: &mut String, r: &Report) {
    let failed: Vec<_> = r
        .checks
        .iter()
        .filter(|(_, c)| c.ok == Some(false) && !c.examples.is_empty())
        .collect();
    if failed.is_empty() {
        return;
    }
    md.push_str("### Counterexamples\n\n");
    for (name, check) in failed {
        let _ = writeln!(md, "**{name}**\n");
        for example in check.examples.iter().take(EXAMPLES_SHOWN) {
            let _ = writeln!(md, "- `{example}`");
        }
        if check.examples.len() > EXAMPLES_SHOWN {
            let _ = writeln!(
                md,
                "- … {} more in report.html",
                check.examples.len() - EXAMPLES_SHOWN
            );
        }
        md.push('\n');
    }
}

/// Scenario, start and duration in one line.
pub(crate) fn run_line(r: &Report) -> String {
    let facts = RunFacts::of(r);
    format!(
        "Scenario **{}**, started {}, {} s of records.",
        facts.scenario, facts.started, facts.seconds
    )
}

/// A Markdown table padded so it also reads in a terminal: columns of figures right-aligned, others
/// left-aligned.
pub(crate) fn table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> String {
    let mut widths: [usize; N] = header.map(|h| h.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let numeric: [bool; N] = std::array::from_fn(|i| rows.iter().all(|row| is_figure(&row[i])));
    let line = |cells: Vec<String>| format!("| {} |\n", cells.join(" | "));
    let pad = |i: usize, cell: &str| {
        if numeric[i] {
            format!("{cell:>width$}", width = widths[i])
        } else {
            format!("{cell:<width$}", width = widths[i])
        }
    };
    let mut text = line(header.iter().enumerate().map(|(i, h)| pad(i, h)).collect());
    text.push_str(&line(
        (0..N)
            .map(|i| {
                if numeric[i] {
                    format!("{}:", "-".repeat(widths[i] - 1))
                } else {
                    "-".repeat(widths[i])
                }
            })
            .collect(),
    ));
    for row in rows {
        text.push_str(&line(
            row.iter().enumerate().map(|(i, c)| pad(i, c)).collect(),
        ));
    }
    text
}

/// `12`, `1.5`, `0.50x`, `-`: a cell that holds a figure.
fn is_figure(cell: &str) -> bool {
    cell == "-" || cell.is_empty() || cell.trim_end_matches('x').parse::<f64>().is_ok()
}
