//! The `landrush check`, `report` and `compare` subcommands: the checkers over a run folder, its
//! reports rebuilt, two runs side by side. The work itself is [`crate::check`] and `reports`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use reports::checks::verdict;

use super::duration_arg;
use crate::check::{CheckOptions, check_run, load_check_inputs, render_verdict};

/// `landrush check`: run the checkers over a run folder.
#[derive(Debug, Args)]
#[command(after_long_help = CHECK_HELP)]
pub struct CheckArgs {
    /// The run folder (sent.jsonl, handed.jsonl, acks.jsonl).
    pub dir: PathBuf,
    /// The buffer sends no acks: the ack check is skipped (not passed).
    #[arg(long)]
    pub no_acks: bool,
    /// An extra allowance on the clocks of different machines (e.g. 5ms), beyond their measured
    /// offsets: it widens every machine's offset interval on both sides, and never applies to two
    /// requests of one machine. Printed in the fifo check's note when used.
    #[arg(long, value_name = "DURATION", value_parser = duration_arg, default_value = "0s")]
    pub clock_tolerance: Duration,
    /// Counterexamples kept per check.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub examples: usize,
    /// The run's first seq (gaps are counted from it). Default: checks.json's, else the lowest
    /// seq seen.
    #[arg(long, value_name = "SEQ")]
    pub first_seq: Option<u64>,
    /// The buffer's highest stored seq (its /v1/stats `accepted`): seqs up to it must be handed
    /// over. Default: checks.json's, else the highest `accepted` of stats.jsonl.
    #[arg(long, value_name = "SEQ")]
    pub highest_seq: Option<u64>,
    /// Also rebuild report.json/.md/.html with these checks.
    #[arg(long)]
    pub report: bool,
}

const CHECK_HELP: &str = "\
Checks (docs/contract.md):
  fifo             handover in seq order; real-time precedence (A's 250 seen before B's end of
                   data was sent => seq(A) < seq(B)); accepted-at never decreasing along seq; the
                   ticket of each 250 is the seq handed over
  loss             every accepted request handed over; gaps in the seqs
  duplicates       one request under two seqs (fail); the same seq twice (redelivery, counted)
  retransmissions  an RFC 1047 retransmission got the original ticket and no second ack
  content          every handed request has the domain, sender, Message-ID (and raw message
                   digest, where seen) its client sent
  acks             exactly one distinct ack per accepted request, none for refused ones, naming
                   the request's ticket and accepted-at; resends with the same Message-ID
                   counted apart
  completeness     never fails; incomplete when a shard is missing or the wait for the
                   handover and the acks ended early
Requests without a reply are indeterminate: allowed either way, but if stored they obey the rest.
Without handed.jsonl (no handover observed) the handover checks cannot run; without acks.jsonl
(acks expected) neither can acks: the verdict is then incomplete, never pass.
The folder's checks.json (written by `landrush rehearse`) gives the first seq, the buffer's
highest stored seq, whether acks were expected and whether the drain completed, so the verdict
is the rehearsal's; the flags override it.
Each failed check lists its first counterexamples with ids and timestamps.
Exit status: 0 pass, 1 fail, 2 the folder could not be read (or a bad command line),
3 incomplete.

Example:
  landrush check runs/landrush-2004-20261201T090000Z";

/// Runs `landrush check`.
pub fn check_command(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let mut options: CheckOptions = load_check_inputs(&args.dir)?;
    options.acks_expected &= !args.no_acks;
    options.max_examples = args.examples;
    if !args.clock_tolerance.is_zero() {
        options.clock_tolerance_us = args.clock_tolerance.as_micros() as u64;
    }
    options.first_seq = args.first_seq.or(options.first_seq);
    options.highest_seq = args.highest_seq.or(options.highest_seq);
    let checks = check_run(&args.dir, &options)?;
    print!("{}", render_verdict(&checks));
    if args.report {
        let report = reports::build_report(&args.dir, checks.clone())?;
        reports::write_reports(&args.dir, &report)?;
        println!("report: {}/report.html", args.dir.display());
    }
    Ok(ExitCode::from(verdict(&checks).exit_code()))
}

/// `landrush report`: rebuild a run folder's reports from its records.
#[derive(Debug, Args)]
#[command(after_long_help = "\
The verdict is the stored report.json's checks, recomputed over them: a folder without a
report.json has no checks, and its verdict is incomplete (run `landrush check DIR --report`).
Exit status: 0 pass, 1 fail, 2 the folder could not be read (or a bad command line),
3 incomplete.")]
pub struct ReportArgs {
    /// The run folder. The checks of an existing report.json are kept; run `landrush check DIR
    /// --report` to recompute them.
    pub dir: PathBuf,
}

/// Runs `landrush report`.
pub fn report_command(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let report = reports::regenerate(&args.dir)
        .with_context(|| format!("cannot rebuild the reports of {}", args.dir.display()))?;
    for warning in &report.warnings {
        println!("  !! {warning}");
    }
    println!(
        "{}: verdict {}, {} requests, {} accepted; wrote report.json, report.md, report.html",
        args.dir.display(),
        report.verdict.as_str().to_uppercase(),
        report.counts.sent,
        report.counts.accepted
    );
    Ok(ExitCode::from(report.verdict.exit_code()))
}

/// `landrush compare`: two runs side by side.
#[derive(Debug, Args)]
#[command(after_long_help = "Example:\n  landrush compare runs/barrage-2004 runs/postfix-2004")]
pub struct CompareArgs {
    /// The first run folder (with a report.json), the reference of the ratios.
    pub a: PathBuf,
    /// The second run folder.
    pub b: PathBuf,
}

/// Runs `landrush compare`.
pub fn compare_command(args: CompareArgs) -> anyhow::Result<ExitCode> {
    let a = reports::load_report(&args.a)?;
    let b = reports::load_report(&args.b)?;
    print!("{}", reports::compare(&a, &b));
    Ok(ExitCode::SUCCESS)
}
