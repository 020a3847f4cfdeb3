//! The reports of a fixed, hand-made run (tests/fixtures/small-run: 30 requests over 3 seconds,
//! a refusal, an RFC 1047 retransmission, an unanswered request during a kill, a redelivery, a
//! resent ack, an ack for a refused request and three timed STARTTLS handshakes), pinned with
//! insta. The fixture's times are fixed, so the snapshots need no redaction.

use std::path::{Path, PathBuf};

use reports::checks::{Checks, Verdict};
use reports::{Report, build_report, compare, load_report, plots, regenerate, write_reports};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/small-run")
}

/// A copy of the fixture in a temporary folder, so writing reports leaves the fixture untouched.
fn run_folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

fn fixture_checks() -> Checks {
    serde_json::from_str(&std::fs::read_to_string(fixture().join("checks.json")).unwrap()).unwrap()
}

fn written_report() -> (tempfile::TempDir, Report) {
    let dir = run_folder();
    let report = build_report(dir.path(), fixture_checks()).unwrap();
    write_reports(dir.path(), &report).unwrap();
    (dir, report)
}

#[test]
fn report_md_of_the_fixture() {
    let (dir, _) = written_report();
    insta::assert_snapshot!(std::fs::read_to_string(dir.path().join("report.md")).unwrap());
}

#[test]
fn report_json_of_the_fixture() {
    let (dir, _) = written_report();
    let text = std::fs::read_to_string(dir.path().join("report.json")).unwrap();
    // The keys report.json promises other tools (contract: Run records).
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    for path in [
        "/verdict",
        "/checks/fifo/violations",
        "/checks/loss/lost",
        "/checks/duplicates/redelivered",
        "/checks/acks/extra",
        "/counts/indeterminate",
        "/counts/handed_over",
        "/latency_ms/accept/p99",
        "/latency_ms/accept_corrected/max",
        "/throughput/accepted_per_s",
    ] {
        assert!(json.pointer(path).is_some(), "report.json lacks {path}");
    }
    insta::assert_snapshot!(text);
}

/// The structure of one plot: its elements in order (runs of the same element collapsed) and its
/// texts, without coordinates, so the snapshot pins what is drawn rather than where.
#[test]
fn svg_structure_of_the_requests_plot() {
    let (_, report) = written_report();
    let svg = plots::requests_per_second(&report).unwrap().unwrap();
    insta::assert_snapshot!(svg_outline(&svg));
}

fn svg_outline(svg: &str) -> String {
    let mut lines: Vec<(String, usize)> = Vec::new();
    let mut rest = svg;
    while let Some(start) = rest.find('<') {
        rest = &rest[start + 1..];
        if rest.starts_with('/') || rest.starts_with('?') || rest.starts_with('!') {
            continue;
        }
        let name_end = rest
            .find(|c: char| c.is_whitespace() || c == '>' || c == '/')
            .unwrap();
        let name = &rest[..name_end];
        let line = if name == "text" {
            let body_start = rest.find('>').unwrap() + 1;
            let body_end = rest.find("</text>").unwrap();
            format!("text {:?}", &rest[body_start..body_end])
        } else {
            name.to_string()
        };
        match lines.last_mut() {
            Some((last, count)) if *last == line => *count += 1,
            _ => lines.push((line, 1)),
        }
    }
    lines
        .into_iter()
        .map(|(line, count)| {
            if count > 1 {
                format!("{line} ×{count}")
            } else {
                line
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn html_is_one_offline_page_with_every_plot_and_linked_counterexamples() {
    let (dir, _) = written_report();
    let page = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert!(!page.contains("<script"), "no scripts");
    assert!(!page.contains("<link") && !page.contains("@import") && !page.contains("url("));
    // The only URL allowed is the SVG namespace, which is a name, never fetched.
    let without_namespace = page.replace("http://www.w3.org/2000/svg", "");
    assert!(!without_namespace.contains("http://") && !without_namespace.contains("https://"));
    for id in [
        "requests",
        "latency",
        "spectrum",
        "queue",
        "handover",
        "ack-delay",
        "lag",
        "shares",
    ] {
        let at = page
            .find(&format!("<h3 id=\"{id}\">"))
            .unwrap_or_else(|| panic!("no plot {id}"));
        assert!(
            page[at..]
                .trim_start_matches(|c| c != '\n')
                .trim_start()
                .starts_with("<figure>\n<svg"),
            "plot {id} has no SVG"
        );
    }
    assert_eq!(page.matches("<svg").count(), 8);
    // The figures a registry asks for are on the page.
    for section in [
        "id=\"fairness\"",
        "id=\"by-kind\"",
        "id=\"clocks\"",
        "Burst: from the start instant",
    ] {
        assert!(page.contains(section), "no {section}");
    }
    // The clocks table: run.json's offset [-150, 250] µs as 0.05 ± 0.2 ms, and r001 (the first
    // send, 187 µs after its intended instant) as 0.137 ms late in the buffer's clock.
    let clocks = &page[page.find("id=\"clocks\"").unwrap()..];
    let clocks = &clocks[..clocks.find("</table>").unwrap()];
    for cell in [
        "<td>fixture</td>",
        "<td>buffer-replies</td>",
        "<td>0.05</td>",
        "<td>0.2</td>",
        "<td>0.137</td>",
    ] {
        assert!(clocks.contains(cell), "no {cell} in {clocks}");
    }
    // The verdict table is above the plots and links to each counterexample.
    let table = page.find("<h2 id=\"checks\">").unwrap();
    assert!(table < page.find("<h2 id=\"plots\">").unwrap());
    assert!(page.contains("<a href=\"#check-acks-1\">#1</a>"));
    assert!(page.contains("<li id=\"check-acks-1\">"));
    // The kill is marked on the time plots.
    assert!(page.matches("⚡ kill").count() >= 5);
}

#[test]
fn json_loads_back_and_regenerating_keeps_the_checks() {
    let (dir, report) = written_report();
    let loaded = load_report(dir.path()).unwrap();
    assert_eq!(
        loaded,
        Report {
            histograms: None,
            ..report.clone()
        }
    );
    std::fs::remove_file(dir.path().join("report.md")).unwrap();
    let regenerated = regenerate(dir.path()).unwrap();
    assert_eq!(regenerated.checks, fixture_checks());
    assert_eq!(regenerated.verdict, Verdict::Fail);
    assert!(dir.path().join("report.md").exists());
}

#[test]
fn the_interval_log_holds_every_tag() {
    let (dir, report) = written_report();
    let log = std::fs::read_to_string(dir.path().join("latency.hlog")).unwrap();
    assert!(log.contains("#[BaseTime: 1796115600.000 (seconds since epoch)]"));
    assert_eq!(log.matches("#[MaxValueDivisor").count(), 1);
    for tag in ["accept", "accept_corrected", "driver_lag", "ack_delay"] {
        assert!(log.contains(&format!("\nTag={tag},")), "no {tag} interval");
    }
    let intervals = log.lines().filter(|l| l.starts_with("Tag=accept,")).count();
    assert_eq!(
        intervals,
        report
            .series
            .iter()
            .filter(|s| s.latency_ms.is_some())
            .count()
    );
}

#[test]
fn comparing_a_run_with_itself_gives_ones() {
    let (_, report) = written_report();
    let table = compare(&report, &report);
    for line in table
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| figure") && !l.starts_with("| -"))
    {
        let ratio = line
            .trim_end_matches('|')
            .trim()
            .rsplit('|')
            .next()
            .unwrap()
            .trim();
        assert!(ratio == "1.00x" || ratio == "-", "{line}");
    }
    insta::assert_snapshot!(table);
}
