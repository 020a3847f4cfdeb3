//! The checkers of the contract (docs/contract.md), as a pure library over a run folder's record
//! files.
//!
//! [`check_run`] loads `sent.jsonl`, `handed.jsonl` and `acks.jsonl` and calls [`check_records`],
//! which joins the three files into one [`Index`] of requests and runs every checker over it:
//!
//! | check             | contract | fails on                                                              |
//! |-------------------|----------|-----------------------------------------------------------------------|
//! | `fifo`            | FIFO     | handover out of seq order, real-time precedence broken, accepted-at going backwards along seq, a 250's ticket that is not the seq handed over |
//! | `loss`            | Zero loss | an accepted (or provably stored) request never handed over, a gap in the handed seqs |
//! | `duplicates`      | Zero loss | one request under two seqs, one seq for two requests, a handed request never sent or refused |
//! | `retransmissions` | Retransmission | an RFC 1047 retransmission given a new seq or a second ack             |
//! | `content`         | Zero loss | a handed request whose domain, sender, Message-ID or raw digest differs from what its client sent |
//! | `acks`            | One ack  | an accepted request without exactly one distinct ack, an ack for a refused or unknown request, a missing or wrong ticket or accepted-at, a wrong recipient |
//! | `completeness`    | Verdicts | never fails; `incomplete` when a shard is missing or the wait for the handover ended early |
//!
//! Without a handover observer (no handed.jsonl) the handover checks cannot run, and without
//! acks.jsonl (acks expected) neither can `acks`: they are then `incomplete`, never passed.
//!
//! Indeterminate requests (contract: Indeterminate outcomes) are allowed either way; if they were stored (handed over, or acked)
//! they obey every rule above. The checkers never compare more than the contract says: requests that
//! overlap in time may be ordered either way, redeliveries and ack resends are counted, not failed.

mod acks;
pub mod audit;
pub mod clocks;
mod completeness;
mod content;
mod duplicates;
mod fifo;
mod index;
mod loss;

use std::path::Path;

use anyhow::Context;
use reports::checks::{Checks, verdict};
use reports::records::{self, AckRecord, HandedRecord, SentRecord};

pub use index::{CheckOptions, SeqSource};
use index::{Index, Tally};
pub use inputs::{load_check_inputs, save_check_inputs};

mod inputs;

/// Loads a run folder's record files and checks them. A missing `handed.jsonl` means no handover
/// was observed, and a missing `acks.jsonl` no acks: the checks that need them are then
/// incomplete (an empty file is an observer that saw nothing: everything accepted is then lost or
/// missing). A missing `sent.jsonl` or a malformed line is an error.
pub fn check_run(run_dir: &Path, options: &CheckOptions) -> anyhow::Result<Checks> {
    // Without sent.jsonl every check would pass vacuously: that is a wrong folder, not a good run.
    let sent_path = run_dir.join(records::SENT);
    anyhow::ensure!(
        sent_path.is_file(),
        "{} has no {}: not a landrush run folder",
        run_dir.display(),
        records::SENT
    );
    let sent: Vec<SentRecord> = records::read_all(&sent_path)
        .with_context(|| format!("reading the run records in {}", run_dir.display()))?;
    let mut options = options.clone();
    options.handover_observed &= run_dir.join(records::HANDED).is_file();
    options.acks_observed &= run_dir.join(records::ACKS).is_file();
    let options = &options;
    let handed: Vec<HandedRecord> = records::read_all(&run_dir.join(records::HANDED))?;
    let acks: Vec<AckRecord> = records::read_all(&run_dir.join(records::ACKS))?;
    let machines = clocks::Machines::load(run_dir)?;
    let options = &CheckOptions {
        machines,
        ..options.clone()
    };
    let mut checks = check_records(&sent, &handed, &acks, options);
    if let Some(audit) = audit::load(run_dir)? {
        checks.insert("audit".into(), audit);
    }
    Ok(checks)
}

/// Runs every checker over the records of one run. Pure: same records, same verdicts.
pub fn check_records(
    sent: &[SentRecord],
    handed: &[HandedRecord],
    acks: &[AckRecord],
    options: &CheckOptions,
) -> Checks {
    let index = Index::build(sent, handed, acks, options);
    let mut checks = Checks::new();
    if options.handover_observed {
        checks.insert("fifo".into(), fifo::check(&index, options));
        checks.insert("loss".into(), loss::check(&index, options));
        checks.insert("duplicates".into(), duplicates::check(&index, options));
        checks.insert(
            "retransmissions".into(),
            duplicates::check_retransmissions(&index, options),
        );
        checks.insert("content".into(), content::check(&index, options));
    } else {
        // Every accepted request would read as lost: that is an observer missing, not a buffer
        // failing, and not a pass either.
        for name in HANDOVER_CHECKS {
            let why = "no handover observed (handed.jsonl missing): this check could not run";
            checks.insert(name.into(), Tally::new(options, &[]).could_not_run(why));
        }
    }
    checks.insert("acks".into(), acks::check(&index, options));
    checks.insert("completeness".into(), completeness::check(options));
    checks
}

/// The checks that judge the handover.
const HANDOVER_CHECKS: [&str; 5] = ["fifo", "loss", "duplicates", "retransmissions", "content"];

/// A readable terminal summary: one line per check (pass / FAIL / skipped, counts), then its first
/// counterexamples, and the overall verdict last.
pub fn render_verdict(checks: &Checks) -> String {
    use std::fmt::Write;
    const ORDER: [&str; 7] = [
        "fifo",
        "loss",
        "duplicates",
        "retransmissions",
        "content",
        "acks",
        "completeness",
    ];
    let mut names: Vec<&String> = checks.keys().collect();
    names.sort_by_key(|n| (ORDER.iter().position(|o| o == n).unwrap_or(ORDER.len()), *n));
    let mut out = String::new();
    for name in names {
        let check = &checks[name];
        let state = match check.ok {
            Some(true) => "pass",
            Some(false) => "FAIL",
            None if check.incomplete => "INCOMPLETE",
            None => "skipped",
        };
        let counts: Vec<String> = check
            .counts
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(out, "{name:<16} {state:<10} {}", counts.join(" "));
        if let Some(note) = &check.note {
            let _ = writeln!(out, "{:<27}note: {note}", "");
        }
        for example in &check.examples {
            let _ = writeln!(out, "{:<27}- {example}", "");
        }
    }
    let _ = writeln!(out, "verdict: {}", verdict(checks).as_str().to_uppercase());
    out
}
