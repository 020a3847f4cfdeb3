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
        let unsent = run.get("unsent").and_then(|u| u.as_u64()).unwrap_or(0);
        if unsent > 0
            && !out
                .iter()
                .any(|w| w.contains("unsent") || w.contains("never"))
        {
            out.push(format!("{unsent} requests of the scenario were never sent"));
        }
        if run["driver_lag"]["behind_schedule"].as_bool() == Some(true)
            && !out.iter().any(|w| w.contains("behind"))
        {
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
