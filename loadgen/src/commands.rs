//! The `landrush rehearse`, `check`, `report` and `compare` subcommands: arguments, help texts and
//! the terminal summary. The work itself is in [`crate::rehearse`], [`crate::check`] and `reports`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use reports::checks::{Verdict, verdict};

use crate::check::{CheckOptions, check_run, render_verdict};
use crate::driver::cli::resolve_target;
use crate::rehearse::{BufferProgram, Handover, Rehearsal, RehearseOptions, Target, rehearse};
use crate::scenario::duration::Dur;
use crate::scenario::{Scenario, Start};

/// `landrush rehearse`: the whole rehearsal in one command.
#[derive(Debug, Args)]
#[command(after_long_help = REHEARSE_HELP)]
pub struct RehearseArgs {
    /// The scenario file (scenarios/*.toml).
    pub scenario: PathBuf,

    /// The run folder [default: runs/SCENARIO-UTCTIME].
    #[arg(long, short = 'o', value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// Run this barrage executable (`PATH serve …`) instead of landrush's built-in one.
    #[arg(long, value_name = "PATH", conflicts_with = "target")]
    pub barrage: Option<PathBuf>,

    /// Rehearse a buffer that is already running: its SMTP intake, HOST:PORT (loopback only).
    /// Then say where its handover is observed (--handover, --handover-smtp or
    /// --handover-maildir) and where its acks go (--ack-sink) or that it sends none (--no-acks).
    #[arg(long, short = 't', value_name = "HOST:PORT")]
    pub target: Option<String>,

    /// The running buffer's handover API base URL (same API as barrage's), e.g.
    /// http://127.0.0.1:8025. The fake registry pulls it; /v1/stats is sampled.
    #[arg(long, value_name = "URL", requires = "target")]
    pub handover: Option<String>,

    /// Observe the handover as an SMTP host the buffer relays each request to, listening on
    /// ADDR. Delivery order stands in for the seq.
    #[arg(long, value_name = "ADDR", conflicts_with_all = ["handover", "handover_maildir"])]
    pub handover_smtp: Option<SocketAddr>,

    /// Observe the handover as the Maildir the buffer delivers to (read new/ and cur/, ordered
    /// by delivery time). Delivery order stands in for the seq.
    #[arg(long, value_name = "DIR", conflicts_with = "handover")]
    pub handover_maildir: Option<PathBuf>,

    /// Where the ack sink listens, for the buffer's ack relay to point at [default with the
    /// built-in buffer: a free loopback port].
    #[arg(long, value_name = "ADDR")]
    pub ack_sink: Option<SocketAddr>,

    /// The buffer sends no acks: no ack sink, and the ack check is reported as skipped (never
    /// as passed).
    #[arg(long, conflicts_with = "ack_sink")]
    pub no_acks: bool,

    /// The fake registry's capacity in requests per second (0 = as fast as the API serves).
    #[arg(long, value_name = "N", default_value_t = 0.0)]
    pub registry_rate: f64,

    /// Requests the fake registry takes per call (1..=1000).
    #[arg(long, value_name = "N", default_value_t = 500)]
    pub registry_batch: usize,

    /// The fake registry opens this long after the buffer (e.g. 10s).
    #[arg(long, value_name = "DURATION", value_parser = duration_arg, default_value = "0s")]
    pub registry_delay: Duration,

    /// Bearer token for the handover API.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "BARRAGE_API_TOKEN",
        hide_env_values = true
    )]
    pub api_token: Option<String>,

    /// Stop waiting for the handover and acks after this long without progress, and report
    /// what is missing.
    #[arg(long, value_name = "DURATION", value_parser = duration_arg, default_value = "5s")]
    pub quiet_period: Duration,

    /// Override the scenario's start: `+2s` or an RFC 3339 instant.
    #[arg(long, value_name = "START")]
    pub start: Option<Start>,

    /// Prefix for ids and Message-IDs (reruns against the same running buffer need a new one,
    /// or they are taken for retransmissions of the previous run).
    #[arg(long, value_name = "TAG")]
    pub tag: Option<String>,

    /// How far apart the clocks of the machines in sent.jsonl may be (e.g. 5ms).
    #[arg(long, value_name = "DURATION", value_parser = duration_arg, default_value = "0s")]
    pub clock_tolerance: Duration,

    /// Keep the built-in buffer's journal in the run folder (buffer-data/) for inspection with
    /// sqlite3.
    #[arg(long)]
    pub keep_data: bool,

    /// No live progress line and no driver summary.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

const REHEARSE_HELP: &str = "\
What happens:
  1. an ack sink (SMTP) starts on a free loopback port;
  2. barrage starts as a child process (landrush's own executable, `landrush buffer serve`) on
     free loopback ports in a temporary data dir, its [ack] relay pointed at the sink
     (OUT/barrage.toml, its log in OUT/buffer.log);
  3. the fake registration system pulls the handover API into OUT/handed.jsonl, and /v1/stats is
     sampled every 250 ms into OUT/stats.jsonl;
  4. the scenario is played (OUT/sent.jsonl, run.json, histograms);
  5. landrush waits until every accepted request is handed over and acked, or until nothing moved
     for --quiet-period, and says what is missing;
  6. the buffer gets SIGTERM; the checkers run; OUT/report.json, report.md and report.html are
     written and a summary is printed.
Exit status: 0 when every check passed (skipped checks do not fail), 1 when one failed, 2 when
the rehearsal could not be run.

Examples:
  landrush rehearse scenarios/landrush-2004.toml
  landrush rehearse scenarios/ci-smoke.toml --out runs/smoke --registry-rate 200
  landrush rehearse scenarios/ci-smoke.toml --barrage target/release/barrage
  # a buffer already running (its ack relay pointed at 127.0.0.1:2526):
  landrush rehearse scenarios/ci-smoke.toml -t 127.0.0.1:2525 \\
      --handover http://127.0.0.1:8025 --ack-sink 127.0.0.1:2526 --tag second-try
  # a plain Postfix delivering to a Maildir, without acks:
  landrush rehearse scenarios/ci-smoke.toml -t 127.0.0.1:25 \\
      --handover-maildir /var/mail/requests/Maildir --no-acks";

fn duration_arg(text: &str) -> Result<Duration, String> {
    text.parse::<Dur>()
        .map(|d| d.0)
        .map_err(|e| format!("{e:#}"))
}

/// Runs `landrush rehearse`.
pub async fn rehearse_command(args: RehearseArgs) -> anyhow::Result<ExitCode> {
    let scenario = Scenario::load(&args.scenario)?;
    let target = match &args.target {
        Some(t) => Target::Running(resolve_target(t, &[]).await?),
        None => Target::Spawn(match &args.barrage {
            Some(path) => BufferProgram::barrage_at(path),
            None => BufferProgram::landrush_itself()?,
        }),
    };
    let handover = match (&args.handover_smtp, &args.handover_maildir) {
        (Some(addr), _) => Handover::Smtp(*addr),
        (None, Some(dir)) => Handover::Maildir(dir.clone()),
        (None, None) => Handover::Api(args.handover.clone()),
    };
    if matches!(target, Target::Running(_)) && !args.no_acks && args.ack_sink.is_none() {
        anyhow::bail!(
            "against a running buffer, say where its acks go (--ack-sink ADDR, where its ack \
             relay points) or that it sends none (--no-acks)"
        );
    }
    let out = args.out.clone().unwrap_or_else(|| {
        let now = time::OffsetDateTime::now_utc();
        PathBuf::from("runs").join(format!(
            "{}-{:04}{:02}{:02}T{:02}{:02}{:02}Z",
            scenario.name,
            now.year(),
            now.month() as u8,
            now.day(),
            now.hour(),
            now.minute(),
            now.second()
        ))
    });
    let options = RehearseOptions {
        target,
        handover,
        ack_sink: args.ack_sink,
        acks: !args.no_acks,
        registry_rate: args.registry_rate,
        registry_batch: args.registry_batch,
        registry_delay: args.registry_delay,
        api_token: args.api_token.clone(),
        quiet_period: args.quiet_period,
        start: args.start,
        tag: args.tag.clone(),
        scenario_file: Some(args.scenario.clone()),
        progress: !args.quiet,
        keep_data: args.keep_data,
        check: CheckOptions {
            clock_tolerance_us: args.clock_tolerance.as_micros() as u64,
            ..CheckOptions::default()
        },
        ..RehearseOptions::default()
    };
    eprintln!(
        "landrush: rehearsing `{}` ({}); run folder {}",
        scenario.name,
        args.scenario.display(),
        out.display()
    );
    let rehearsal = rehearse(&scenario, &out, options).await?;
    println!("{}", summary(&rehearsal));
    Ok(if verdict(&rehearsal.checks) == Verdict::Pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The terminal summary of a rehearsal: key figures, the checks, where the report is.
pub fn summary(r: &Rehearsal) -> String {
    use std::fmt::Write;
    let rep = &r.report;
    let c = &rep.counts;
    let mut out = String::new();
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "requests   sent {}  accepted {}  refused {}  indeterminate {}  handed over {}  acked {}",
        c.sent, c.accepted, c.refused, c.indeterminate, c.handed_over, c.acked
    );
    let _ = writeln!(
        out,
        "accept     {:.0} accepted/s (peak {:.0}/s)  latency p50 {:.2} ms  p99 {:.2} ms  max {:.2} \
         ms  (corrected p99 {:.2} ms)",
        rep.throughput.accepted_per_s,
        rep.throughput.peak_accepted_per_s,
        rep.latency_ms.accept.p50,
        rep.latency_ms.accept.p99,
        rep.latency_ms.accept.max,
        rep.latency_ms.accept_corrected.p99
    );
    let d = &r.drain;
    let after = |s: Option<f64>| s.map_or("not complete".to_string(), |s| format!("{s:.1} s"));
    let _ = writeln!(
        out,
        "drain      after the last send: everything handed over {}, acked {} ({})",
        after(d.handed_after_s),
        after(d.acked_after_s),
        if d.complete {
            "complete".to_string()
        } else {
            format!(
                "gave up: {} not handed over {:?}, {} not acked {:?}",
                d.missing_handed, d.missing_handed_ids, d.missing_acks, d.missing_ack_ids
            )
        }
    );
    if rep.driver_lag_ms.count > 0 {
        let _ = writeln!(
            out,
            "driver     lag p99 {:.2} ms, max {:.2} ms{}",
            rep.driver_lag_ms.p99,
            rep.driver_lag_ms.max,
            if r.run.info.driver_lag.behind_schedule {
                "  !! BEHIND SCHEDULE: latencies include the driver's own"
            } else {
                ""
            }
        );
    }
    for w in &r.run.info.warnings {
        let _ = writeln!(out, "  !! {w}");
    }
    for n in &r.notes {
        let _ = writeln!(out, "  note: {n}");
    }
    let _ = writeln!(out);
    out.push_str(&render_verdict(&r.checks));
    let _ = writeln!(
        out,
        "report: {}/report.html (also report.md, report.json)",
        r.out_dir.display()
    );
    out
}

/// `landrush check`: run the checkers over a run folder.
#[derive(Debug, Args)]
#[command(after_long_help = CHECK_HELP)]
pub struct CheckArgs {
    /// The run folder (sent.jsonl, handed.jsonl, acks.jsonl).
    pub dir: PathBuf,
    /// The buffer sends no acks: the ack check is skipped (not passed).
    #[arg(long)]
    pub no_acks: bool,
    /// How far apart the clocks of the machines in sent.jsonl may be (e.g. 5ms): a reply seen
    /// less than this before another request was sent does not order them.
    #[arg(long, value_name = "DURATION", value_parser = duration_arg, default_value = "0s")]
    pub clock_tolerance: Duration,
    /// Counterexamples kept per check.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub examples: usize,
    /// Also rebuild report.json/.md/.html with these checks.
    #[arg(long)]
    pub report: bool,
}

const CHECK_HELP: &str = "\
Checks (DESIGN.md's contract):
  fifo             handover in seq order; real-time precedence (A's 250 seen before B's end of
                   data was sent => seq(A) < seq(B)); accepted-at never decreasing along seq; the
                   ticket of each 250 is the seq handed over
  loss             every accepted request handed over; gaps in the seqs
  duplicates       one request under two seqs (fail); the same seq twice (redelivery, counted)
  retransmissions  an RFC 1047 retransmission got the original ticket and no second ack
  acks             exactly one distinct ack per accepted request, none for refused ones; resends
                   with the same Message-ID counted apart
Requests without a reply are indeterminate: allowed either way, but if stored they obey the rest.
Each failed check lists its first counterexamples with ids and timestamps.
Exit status: 0 pass, 1 fail, 2 the folder could not be read.

Example:
  landrush check runs/landrush-2004-20261201T090000Z";

/// Runs `landrush check`.
pub fn check_command(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let options = CheckOptions {
        acks_expected: !args.no_acks,
        max_examples: args.examples,
        clock_tolerance_us: args.clock_tolerance.as_micros() as u64,
        ..CheckOptions::default()
    };
    let checks = check_run(&args.dir, &options)?;
    print!("{}", render_verdict(&checks));
    if args.report {
        let report = reports::build_report(&args.dir, checks.clone())?;
        reports::write_reports(&args.dir, &report)?;
        println!("report: {}/report.html", args.dir.display());
    }
    Ok(if verdict(&checks) == Verdict::Pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `landrush report`: rebuild a run folder's reports from its records.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The run folder. The checks of an existing report.json are kept; run `landrush check DIR
    /// --report` to recompute them.
    pub dir: PathBuf,
}

/// Runs `landrush report`.
pub fn report_command(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let report = reports::regenerate(&args.dir)
        .with_context(|| format!("cannot rebuild the reports of {}", args.dir.display()))?;
    println!(
        "{}: verdict {}, {} requests, {} accepted; wrote report.json, report.md, report.html",
        args.dir.display(),
        report.verdict,
        report.counts.sent,
        report.counts.accepted
    );
    Ok(ExitCode::SUCCESS)
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
