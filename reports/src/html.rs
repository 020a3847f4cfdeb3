//! report.html: one self-contained page that opens offline. No scripts, no fonts, no links out:
//! inline CSS and inline SVG only, so it can be mailed to the registry's managers or attached to
//! a CI run and still open years later.
//!
//! Page order: verdict and checks (with links to each counterexample), headline figures, the
//! plots, faults, the counterexamples themselves, then the scenario and environment.
//!
//! The page is `templates/report.html`, rendered by minijinja with HTML auto-escaping: this module
//! only turns a [`Report`] into the template's plain-text context, and nothing here escapes by
//! hand. The plots' SVG is the one value marked safe (plotters writes it, escaping its texts).

use minijinja::{AutoEscape, Environment, context};
use serde::Serialize;

use crate::checks::CheckResult;
use crate::model::{Percentiles, Report};
use crate::plots;
use crate::records::Stamp;
use crate::tables;
use crate::text::{RunFacts, check_counts, format_figure, status};

const TEMPLATE: &str = include_str!("../templates/report.html");

/// report.html's text.
pub fn render(r: &Report) -> String {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|_| AutoEscape::Html);
    env.set_trim_blocks(true);
    env.set_keep_trailing_newline(true);
    env.add_template("report.html", TEMPLATE)
        .expect("the built-in template parses");
    let checks: Vec<CheckView> = r.checks.iter().map(|(n, c)| CheckView::of(n, c)).collect();
    let page = context! {
        verdict => r.verdict.as_str(),
        warnings => &r.warnings,
        run => RunFacts::of(r),
        checks,
        counts => &r.counts,
        latency => latency_rows(r),
        timeouts => tables::timeouts_note(r),
        burst => tables::burst_line(r),
        fairness => context! {
            header => tables::FAIRNESS_HEADER,
            rows => tables::fairness_rows(r),
            jain => tables::jain_line(r),
        },
        kinds => context! {
            header => tables::KIND_HEADER,
            rows => tables::kind_rows(r),
        },
        clocks => context! {
            header => tables::CLOCK_HEADER,
            rows => tables::clock_rows(r),
            notes => tables::clock_notes(r),
        },
        throughput => context! {
            accepted => format_figure(r.throughput.accepted_per_s),
            peak => format_figure(r.throughput.peak_accepted_per_s),
            handed_over => format_figure(r.throughput.handed_over_per_s),
        },
        plots => plots::all(r).into_iter().map(PlotView::from).collect::<Vec<_>>(),
        faults => fault_rows(r),
        environment => environment(r),
    };
    env.get_template("report.html")
        .and_then(|template| template.render(page))
        .expect("the built-in template renders every report")
}

/// One check: its row in the table and its section of counterexamples.
#[derive(Serialize)]
struct CheckView {
    name: String,
    anchor: String,
    /// The CSS class of the result cell: `pass`, `fail` or `skipped`.
    class: &'static str,
    status: &'static str,
    counts: String,
    note: Option<String>,
    examples: Vec<ExampleView>,
}

#[derive(Serialize)]
struct ExampleView {
    anchor: String,
    text: String,
}

impl CheckView {
    fn of(name: &str, check: &CheckResult) -> Self {
        let class = match check.ok {
            Some(true) => "pass",
            Some(false) => "fail",
            None if check.incomplete => "incomplete",
            None => "skipped",
        };
        let examples = check
            .examples
            .iter()
            .enumerate()
            .map(|(i, example)| ExampleView {
                anchor: example_anchor(name, i + 1),
                text: serde_json::to_string_pretty(example).unwrap_or_default(),
            })
            .collect();
        CheckView {
            name: name.to_string(),
            anchor: check_anchor(name),
            class,
            status: status(check),
            counts: check_counts(check),
            note: check.note.clone(),
            examples,
        }
    }
}

#[derive(Serialize)]
struct LatencyRow {
    name: &'static str,
    count: u64,
    /// p50, p90, p99, p99.9 and max, formatted.
    cells: Vec<String>,
}

fn latency_rows(r: &Report) -> Vec<LatencyRow> {
    let row = |name, p: &Percentiles| LatencyRow {
        name,
        count: p.count,
        cells: [p.p50, p.p90, p.p99, p.p999, p.max]
            .into_iter()
            .map(format_figure)
            .collect(),
    };
    let mut rows = vec![
        row("accept (reply − sent)", &r.latency_ms.accept),
        row(
            "accept, corrected (reply − intended)",
            &r.latency_ms.accept_corrected,
        ),
        row(
            "reply after end of data, timeouts included",
            &r.latency_ms.reply.percentiles,
        ),
        row(
            "handover delay (handed − accepted-at)",
            &r.handover_delay_ms,
        ),
        row("driver lag (start − schedule)", &r.driver_lag_ms),
        row("ack delay (first ack − accept)", &r.ack_delay_ms),
    ];
    if r.tls_handshake_ms.percentiles.count > 0 {
        rows.push(row(
            "STARTTLS handshake (one per connection)",
            &r.tls_handshake_ms.percentiles,
        ));
    }
    rows
}

/// A plot as the page shows it: its SVG, or why there is none.
#[derive(Serialize)]
struct PlotView {
    id: &'static str,
    title: &'static str,
    svg: Option<String>,
    why: Option<String>,
}

impl From<plots::Plot> for PlotView {
    fn from(plot: plots::Plot) -> Self {
        let (svg, why) = match plot.svg {
            Ok(svg) => (Some(svg.trim().to_string()), None),
            Err(why) => (None, Some(why)),
        };
        PlotView {
            id: plot.id,
            title: plot.title,
            svg,
            why,
        }
    }
}

#[derive(Serialize)]
struct FaultRow {
    kind: String,
    at: String,
    until: String,
    detail: String,
}

fn fault_rows(r: &Report) -> Vec<FaultRow> {
    let offset = |at: Stamp| match r.t0 {
        Some(t0) => format!(
            "{} (+{} s)",
            at,
            format_figure((at.micros() - t0.micros()) as f64 / 1e6)
        ),
        None => at.to_string(),
    };
    r.faults
        .iter()
        .map(|fault| FaultRow {
            kind: fault.kind.clone(),
            at: offset(fault.at),
            until: fault.until.map(offset).unwrap_or_default(),
            detail: if fault.detail.is_null() {
                String::new()
            } else {
                fault.detail.to_string()
            },
        })
        .collect()
}

#[derive(Serialize)]
struct Section {
    name: &'static str,
    text: String,
}

fn environment(r: &Report) -> Vec<Section> {
    [("Scenario", &r.scenario), ("Environment", &r.environment)]
        .into_iter()
        .map(|(name, value)| Section {
            name,
            text: if value.is_null() {
                "(not recorded: no run.json)".to_string()
            } else {
                serde_json::to_string_pretty(value).unwrap_or_default()
            },
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::{CheckResult, Verdict};

    #[test]
    fn page_is_self_contained_and_links_counterexamples() {
        let mut r = Report {
            verdict: Verdict::Fail,
            ..Report::default()
        };
        r.checks.insert(
            "fifo".into(),
            CheckResult {
                ok: Some(false),
                counts: [("violations".to_string(), 1)].into(),
                examples: vec![serde_json::json!({"id": "<script>"})],
                note: None,
                incomplete: false,
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

    #[test]
    fn every_recorded_text_is_escaped_and_the_verdict_named() {
        let mut r = Report {
            verdict: Verdict::Incomplete,
            scenario: serde_json::json!({"name": "<b onclick=x>\"rush\""}),
            ..Report::default()
        };
        r.checks.insert(
            "a<b".into(),
            CheckResult {
                ok: None,
                note: Some("no acks & no <handover>".into()),
                ..CheckResult::default()
            },
        );
        let page = render(&r);
        assert!(page.contains("<span class=\"verdict incomplete\">INCOMPLETE</span>"));
        assert!(page.contains("Scenario <b>&lt;b onclick=x&gt;&quot;rush&quot;</b>"));
        assert!(page.contains(">a&lt;b</a>"));
        assert!(page.contains("<p>no acks &amp; no &lt;handover&gt;</p>"));
        assert!(!page.contains("<b onclick") && !page.contains("a<b"));
    }
}
