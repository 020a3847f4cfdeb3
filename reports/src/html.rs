//! report.html: one self-contained page that opens offline. No scripts, no fonts, no links out:
//! inline CSS and inline SVG only, so it can be mailed to the registry's managers or attached to
//! a CI run and still open years later.
//!
//! Page order: verdict and checks (with links to each counterexample), headline figures, the
//! plots, faults, the counterexamples themselves, then the scenario and environment.

use std::fmt::Write;

use crate::compare::format_figure;
use crate::markdown::{check_counts, run_line, status};
use crate::model::{Percentiles, Report};
use crate::plots;

const STYLE: &str = "
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0 auto;max-width:1140px;padding:16px;color:#222;background:#fafafa}
h1{font-size:1.6em;margin:.2em 0}h2{margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0;background:#fff}
th,td{border:1px solid #ddd;padding:4px 10px;text-align:right}th:first-child,td:first-child{text-align:left}
th{background:#f0f0f0}
.verdict{display:inline-block;padding:2px 12px;border-radius:4px;color:#fff;font-weight:bold}
.pass{background:#2c8a2c}.fail{background:#c62828}.skipped{background:#888}
td.pass,td.fail,td.skipped{color:#fff;text-align:center;font-weight:bold}
figure{margin:0 0 1em 0;background:#fff;border:1px solid #ddd;padding:6px}
svg{max-width:100%;height:auto;display:block}
.nodata{color:#777;font-style:italic}
pre{background:#fff;border:1px solid #ddd;padding:6px;white-space:pre-wrap;word-break:break-all;font-size:.85em}
:target{outline:3px solid #f9a825}
nav a{margin-right:1em}
";

pub fn render(r: &Report) -> String {
    let mut h = String::new();
    let verdict = escape(&r.verdict);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Landrush run: {}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        verdict.to_uppercase()
    );
    let _ = writeln!(
        h,
        "<h1><span class=\"verdict {verdict}\">{}</span> Landrush run</h1>\n<p>{}</p>",
        verdict.to_uppercase(),
        markdown_bold(&escape(&run_line(r)))
    );

    checks_table(&mut h, r);
    figures(&mut h, r);

    let plots = plots::all(r);
    h.push_str("<h2 id=\"plots\">Plots</h2>\n<nav>");
    for plot in &plots {
        let _ = write!(h, "<a href=\"#{}\">{}</a>", plot.id, escape(plot.title));
    }
    h.push_str("</nav>\n");
    for plot in &plots {
        let _ = writeln!(h, "<h3 id=\"{}\">{}</h3>", plot.id, escape(plot.title));
        match &plot.svg {
            Ok(svg) => {
                let _ = writeln!(h, "<figure>\n{}\n</figure>", svg.trim());
            }
            Err(why) => {
                let _ = writeln!(h, "<p class=\"nodata\">{}</p>", escape(why));
            }
        }
    }

    faults(&mut h, r);
    counterexamples(&mut h, r);

    h.push_str("<h2 id=\"environment\">Scenario and environment</h2>\n");
    for (name, value) in [("Scenario", &r.scenario), ("Environment", &r.environment)] {
        let text = if value.is_null() {
            "(not recorded: no run.json)".to_string()
        } else {
            serde_json::to_string_pretty(value).unwrap_or_default()
        };
        let _ = writeln!(h, "<h3>{name}</h3>\n<pre>{}</pre>", escape(&text));
    }
    h.push_str("</body>\n</html>\n");
    h
}

fn checks_table(h: &mut String, r: &Report) {
    h.push_str("<h2 id=\"checks\">Checks</h2>\n");
    if r.checks.is_empty() {
        h.push_str("<p class=\"nodata\">No checks were recorded for this run: the verdict only says none failed.</p>\n");
        return;
    }
    h.push_str(
        "<table>\n<tr><th>check</th><th>result</th><th>counts</th><th>counterexamples</th></tr>\n",
    );
    for (name, check) in &r.checks {
        let class = match check.ok {
            Some(true) => "pass",
            Some(false) => "fail",
            None => "skipped",
        };
        let links: Vec<String> = (1..=check.examples.len())
            .map(|i| format!("<a href=\"#{}\">#{i}</a>", example_anchor(name, i)))
            .collect();
        let _ = writeln!(
            h,
            "<tr><td><a href=\"#{}\">{}</a></td><td class=\"{class}\">{}</td><td>{}</td><td>{}</td></tr>",
            check_anchor(name),
            escape(name),
            status(check),
            escape(&check_counts(check)),
            if links.is_empty() {
                "–".to_string()
            } else {
                links.join(" ")
            }
        );
    }
    h.push_str("</table>\n");
}

fn figures(h: &mut String, r: &Report) {
    let c = &r.counts;
    h.push_str("<h2 id=\"figures\">Figures</h2>\n<table>\n<tr><th>requests</th><th>sent</th><th>accepted</th><th>refused</th><th>no reply (indeterminate)</th><th>handed over</th><th>acked</th></tr>\n");
    let _ = writeln!(
        h,
        "<tr><td>distinct requests</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        c.sent, c.accepted, c.refused, c.indeterminate, c.handed_over, c.acked
    );
    let _ = writeln!(
        h,
        "<tr><td>records</td><td>{} ({} retransmissions)</td><td></td><td></td><td></td><td>{}</td><td>{}</td></tr>\n</table>",
        c.transmissions, c.retransmissions, c.handed_records, c.ack_mails
    );

    h.push_str("<table>\n<tr><th>milliseconds</th><th>count</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th></tr>\n");
    let row = |h: &mut String, name: &str, p: &Percentiles| {
        let cells: Vec<String> = [p.p50, p.p90, p.p99, p.p999, p.max]
            .into_iter()
            .map(|v| format!("<td>{}</td>", format_figure(v)))
            .collect();
        let _ = writeln!(
            h,
            "<tr><td>{name}</td><td>{}</td>{}</tr>",
            p.count,
            cells.concat()
        );
    };
    row(h, "accept (reply − sent)", &r.latency_ms.accept);
    row(
        h,
        "accept, corrected (reply − intended)",
        &r.latency_ms.accept_corrected,
    );
    row(h, "driver lag (start − schedule)", &r.driver_lag_ms);
    row(h, "ack delay (first ack − accept)", &r.ack_delay_ms);
    h.push_str("</table>\n");
    let t = &r.throughput;
    let _ = writeln!(
        h,
        "<p>Throughput: <b>{} accepted requests/s</b> (busiest second: {}), handover {} requests/s.</p>",
        format_figure(t.accepted_per_s),
        format_figure(t.peak_accepted_per_s),
        format_figure(t.handed_over_per_s)
    );
}

fn faults(h: &mut String, r: &Report) {
    if r.faults.is_empty() {
        return;
    }
    h.push_str("<h2 id=\"faults\">Faults</h2>\n<table>\n<tr><th>fault</th><th>at</th><th>until</th><th>detail</th></tr>\n");
    for fault in &r.faults {
        let offset = |at: crate::records::Stamp| match r.t0 {
            Some(t0) => format!(
                "{} (+{} s)",
                at,
                format_figure((at.micros() - t0.micros()) as f64 / 1e6)
            ),
            None => at.to_string(),
        };
        let detail = if fault.detail.is_null() {
            String::new()
        } else {
            fault.detail.to_string()
        };
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&fault.kind),
            offset(fault.at),
            fault.until.map(offset).unwrap_or_default(),
            escape(&detail)
        );
    }
    h.push_str("</table>\n");
}

fn counterexamples(h: &mut String, r: &Report) {
    if r.checks.is_empty() {
        return;
    }
    h.push_str("<h2 id=\"counterexamples\">Counterexamples</h2>\n");
    for (name, check) in &r.checks {
        let _ = writeln!(
            h,
            "<h3 id=\"{}\">{} — {}</h3>",
            check_anchor(name),
            escape(name),
            status(check)
        );
        if let Some(note) = &check.note {
            let _ = writeln!(h, "<p>{}</p>", escape(note));
        }
        if check.examples.is_empty() {
            h.push_str("<p class=\"nodata\">none</p>\n");
            continue;
        }
        h.push_str("<ol>\n");
        for (i, example) in check.examples.iter().enumerate() {
            let text = serde_json::to_string_pretty(example).unwrap_or_default();
            let _ = writeln!(
                h,
                "<li id=\"{}\"><pre>{}</pre></li>",
                example_anchor(name, i + 1),
                escape(&text)
            );
        }
        h.push_str("</ol>\n");
    }
}

/// `check-fifo`: an id that stays valid whatever a check is called.
fn check_anchor(name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("check-{safe}")
}

fn example_anchor(name: &str, index: usize) -> String {
    format!("{}-{index}", check_anchor(name))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The run line is shared with report.md; turn its `**bold**` into HTML.
fn markdown_bold(text: &str) -> String {
    let mut out = String::new();
    for (i, part) in text.split("**").enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "<b>{part}</b>");
        } else {
            out.push_str(part);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::CheckResult;

    #[test]
    fn page_is_self_contained_and_links_counterexamples() {
        let mut r = Report {
            verdict: "fail".into(),
            ..Report::default()
        };
        r.checks.insert(
            "fifo".into(),
            CheckResult {
                ok: Some(false),
                counts: [("violations".to_string(), 1)].into(),
                examples: vec![serde_json::json!({"id": "<script>"})],
                note: None,
            },
        );
        let page = render(&r);
        assert!(page.contains("href=\"#check-fifo-1\""));
        assert!(page.contains("<li id=\"check-fifo-1\">"));
        assert!(page.contains("&lt;script&gt;"));
        assert!(!page.contains("<script"));
        assert!(
            !page.contains("http://") && !page.contains("https://") && !page.contains("@import")
        );
    }
}
