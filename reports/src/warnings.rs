//! What a reader must know before trusting a report, gathered in one list ([`warnings`]) that
//! report.md, report.html and the gate's summary show first: run.json's `warnings` (the driver
//! behind schedule, requests never sent, shards missing), the rehearsal's notes (a stalled drain,
//! a buffer that exited badly, …) and why the verdict is not a pass of everything.

use crate::checks::{Checks, Verdict, verdict};

/// The warnings of a run: run.json's, the rehearsal's notes, then the checks that could not run.
pub fn warnings(run: Option<&serde_json::Value>, checks: &Checks) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let strings = |value: Option<&serde_json::Value>| -> Vec<String> {
        value
            .and_then(|v| v.as_array())
            .map(|items| {
                items
                    .iter()
                    .filter_map(|w| w.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    if let Some(run) = run {
        out.extend(strings(run.get("warnings")));
        // run.json written by an older landrush may lack the warnings its figures call for.
        let said = |out: &[String], word: &str| out.iter().any(|w| w.to_lowercase().contains(word));
        let unsent = run.get("unsent").and_then(|u| u.as_u64()).unwrap_or(0);
        if unsent > 0 && !said(&out, "never") {
            out.push(format!("{unsent} requests of the scenario were never sent"));
        }
        if run["driver_lag"]["behind_schedule"].as_bool() == Some(true) && !said(&out, "behind") {
            out.push("the driver fell behind its schedule: latencies include its own lag".into());
        }
        out.extend(strings(run.get("rehearse").and_then(|r| r.get("notes"))));
    }
    if checks.is_empty() {
        out.push(
            "no checks were run on this folder: the verdict is incomplete (run `landrush check \
             DIR --report`)"
                .into(),
        );
    }
    for (name, check) in checks {
        if check.incomplete {
            let why = check.note.as_deref().unwrap_or("it could not run");
            out.push(format!("check `{name}` is incomplete: {why}"));
        }
    }
    if verdict(checks) == Verdict::Incomplete && out.is_empty() {
        out.push("the verdict is incomplete".into());
    }
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::CheckResult;

    #[test]
    fn run_warnings_notes_and_incomplete_checks_are_all_listed_once() {
        let run = serde_json::json!({
            "warnings": ["DRIVER BEHIND SCHEDULE: landrush started requests late"],
            "driver_lag": {"behind_schedule": true},
            "unsent": 12,
            "rehearse": {"notes": ["stopped waiting after 30.0 s: 3 accepted requests not handed over"]},
        });
        let mut checks = Checks::new();
        let unobserved = CheckResult {
            incomplete: true,
            note: Some("no acks observed".into()),
            ..CheckResult::default()
        };
        checks.insert("acks".into(), unobserved);
        let w = warnings(Some(&run), &checks);
        assert_eq!(w.len(), 4, "{w:?}");
        assert!(w[0].starts_with("DRIVER BEHIND SCHEDULE"));
        assert_eq!(w[1], "12 requests of the scenario were never sent");
        assert!(w[2].starts_with("stopped waiting"));
        assert_eq!(w[3], "check `acks` is incomplete: no acks observed");
        assert!(warnings(None, &Checks::new())[0].contains("no checks were run"));
    }
}
