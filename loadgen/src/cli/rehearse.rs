//! The `landrush rehearse` subcommand: its arguments and help, the one mapping from rehearsal
//! flags to [`RehearseOptions`] (also used by the gate's `[[run]]`s, so both get the same checks,
//! loopback-only targets included), and the terminal summary. The work itself is
//! [`crate::rehearse`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use reports::checks::verdict;

use super::target::resolve_target;
use super::{default_out, duration_arg};
use crate::check::{CheckOptions, render_verdict};
use crate::records::folder::Existing;
use crate::rehearse::buffer::BufferProgram;
use crate::rehearse::options::{Handover, RehearseOptions, Target};
use crate::rehearse::tls::RehearsalTls;
use crate::rehearse::{Rehearsal, rehearse};
use crate::scenario::Start;
use crate::scenario::buffer::{BufferSection, JournalKind};
use crate::schedule::ValidScenario;

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

    /// Prefix for ids and Message-IDs [default: a unique run tag, so that nothing from another
    /// run can be taken for this one's]; recorded in run.json.
    #[arg(long, value_name = "TAG")]
    pub tag: Option<String>,

    /// Replace the records of a run already in the run folder (refused without it).
    #[arg(long)]
    pub overwrite: bool,

    /// How far apart the clocks of the machines in sent.jsonl may be (e.g. 5ms).
    #[arg(long, value_name = "DURATION", value_parser = duration_arg, default_value = "0s")]
    pub clock_tolerance: Duration,

    /// Keep the built-in buffer's journal in the run folder (buffer-data/) for inspection with
    /// sqlite3.
    #[arg(long)]
    pub keep_data: bool,

    /// Start this many intake nodes sharing one journal (needs --journal postgres), the
    /// clients spread over them as over equal-preference MX records [default: the scenario's
    /// [buffer] nodes, or 1].
    #[arg(long, value_name = "N", conflicts_with = "target")]
    pub nodes: Option<u32>,

    /// The journal of the buffer landrush starts: `sqlite` (one file, one node) or `postgres`
    /// (a throwaway PostgreSQL cluster in OUT/postgres) [default: the scenario's [buffer]
    /// journal, or sqlite].
    #[arg(long, value_name = "KIND", conflicts_with = "target")]
    pub journal: Option<JournalKind>,

    /// Give the PostgreSQL primary a synchronous standby (needs --journal postgres), which a
    /// `postgres` fault with action = "failover" promotes.
    #[arg(long, conflicts_with = "target")]
    pub standby: bool,
    /// Rehearse STARTTLS: the buffer gets a throwaway certificate (OUT/tls/) with smtp.tls =
    /// MODE, and every client group upgrades with STARTTLS, trusting that certificate only.
    /// Without it, a scenario whose client groups say `starttls = true` gets the same with `may`.
    /// The mode needs `=` (`--tls=required`), so `--tls SCENARIO` reads SCENARIO as the scenario.
    #[arg(
        long,
        value_name = "MODE",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "may",
        conflicts_with = "target"
    )]
    pub tls: Option<RehearsalTls>,

    /// No live progress line and no driver summary.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

const REHEARSE_HELP: &str = "\
What happens:
  1. an ack sink (SMTP) starts on a free loopback port;
  2. barrage starts as a child process (landrush's own executable, `landrush buffer serve`) on
     free loopback ports in a temporary data dir, its [ack] relay pointed at the sink
     (OUT/barrage.toml, its log in OUT/buffer.log); with --tls, over a throwaway certificate
     authority and certificate made for the run (OUT/tls/), which the clients trust.
     With --journal postgres (or a [buffer] section) a throwaway PostgreSQL cluster starts
     first in OUT/postgres (and a synchronous standby with --standby), and --nodes N nodes start
     on it, each with OUT/barrage-K.toml and OUT/buffer-K.log; the clients are spread over the
     nodes from the seed, and a client whose node is down connects to the next one;
  3. the fake registration system pulls the handover API into OUT/handed.jsonl, and /v1/stats is
     sampled every 250 ms into OUT/stats.jsonl;
  4. the scenario is played (OUT/sent.jsonl, run.json, histograms);
  5. landrush waits until every accepted request is handed over and acked, or until nothing moved
     for --quiet-period, and says what is missing;
  6. the buffer gets SIGTERM; the checkers run; OUT/report.json, report.md and report.html are
     written and a summary is printed.
The run folder is locked while the rehearsal uses it (another landrush aimed at it is refused),
and a folder that already holds a run's records is refused unless --overwrite is given. Every id
and Message-ID carries the run's tag (--tag, or a unique one), recorded in run.json.
Besides the records it writes OUT/checks.json (first seq, the buffer's highest stored seq, acks
expected, drain complete), so that `landrush check OUT` reaches the same verdict.
Exit status: 0 on pass (every check that applies ran and none failed; a check skipped as not
applicable, such as acks with --no-acks, does not fail); 1 on fail; 2 when the rehearsal could
not be run (or a bad command line); 3 on incomplete (no check failed, but one could not run: no handover
or no acks observed, a shard missing, the wait for the handover ended early).

Examples:
  landrush rehearse scenarios/landrush-2004.toml
  landrush rehearse scenarios/ci-smoke.toml --out runs/smoke --registry-rate 200
  landrush rehearse scenarios/ci-smoke.toml --barrage target/release/barrage
  landrush rehearse scenarios/ci-smoke.toml --nodes 2 --journal postgres --standby
  landrush rehearse scenarios/ha-failover.toml
  # every client over STARTTLS, barrage serving a certificate made for the run:
  landrush rehearse scenarios/ci-smoke.toml --tls=required
  # a buffer already running (its ack relay pointed at 127.0.0.1:2526):
  landrush rehearse scenarios/ci-smoke.toml -t 127.0.0.1:2525 \\
      --handover http://127.0.0.1:8025 --ack-sink 127.0.0.1:2526
  # a plain Postfix delivering to a Maildir, without acks:
  landrush rehearse scenarios/ci-smoke.toml -t 127.0.0.1:25 \\
      --handover-maildir /var/mail/requests/Maildir --no-acks";

/// How a rehearsal is set up: from `landrush rehearse`'s flags, or from a gate file's `[[run]]`.
/// [`RehearsalFlags::options`] is the one place they become [`RehearseOptions`].
#[derive(Debug, Clone)]
pub struct RehearsalFlags {
    /// Another barrage executable instead of landrush's built-in one.
    pub barrage: Option<PathBuf>,
    /// A running buffer's SMTP intake, HOST:PORT (loopback only).
    pub target: Option<String>,
    pub handover: Option<String>,
    pub handover_smtp: Option<SocketAddr>,
    pub handover_maildir: Option<PathBuf>,
    pub ack_sink: Option<SocketAddr>,
    pub acks: bool,
    pub registry_rate: f64,
    pub registry_batch: usize,
    pub registry_delay: Duration,
    pub api_token: Option<String>,
    pub quiet_period: Option<Duration>,
    pub start: Option<Start>,
    pub tag: Option<String>,
    pub clock_tolerance: Duration,
    pub keep_data: bool,
    pub progress: bool,
    pub existing: Existing,
    /// `--nodes`, `--journal`, `--standby`: over the scenario's [buffer], key by key.
    pub buffer: BufferSection,
    /// STARTTLS over a throwaway certificate (`--tls`).
    pub tls: Option<RehearsalTls>,
}

impl RehearsalFlags {
    /// The options of the rehearsal; relative paths (`barrage`, `handover_maildir`) are taken
    /// from `base`. Refuses a target outside loopback, and a running buffer without a word on
    /// where its acks go.
    pub async fn options(
        &self,
        base: &Path,
        scenario_file: &Path,
    ) -> anyhow::Result<RehearseOptions> {
        let target = match &self.target {
            Some(t) => Target::Running(resolve_target(t, &[]).await?),
            None => Target::Spawn(match &self.barrage {
                Some(path) => BufferProgram::barrage_at(base.join(path)),
                None => BufferProgram::landrush_itself()?,
            }),
        };
        let handover = match (&self.handover_smtp, &self.handover_maildir) {
            (Some(addr), _) => Handover::Smtp(*addr),
            (None, Some(dir)) => Handover::Maildir(base.join(dir)),
            (None, None) => Handover::Api(self.handover.clone()),
        };
        if matches!(target, Target::Running(_)) && self.acks && self.ack_sink.is_none() {
            anyhow::bail!(
                "against a running buffer, say where its acks go (--ack-sink ADDR, where its ack \
                 relay points) or that it sends none (--no-acks)"
            );
        }
        let defaults = RehearseOptions::default();
        Ok(RehearseOptions {
            target,
            handover,
            ack_sink: self.ack_sink,
            acks: self.acks,
            registry_rate: self.registry_rate,
            registry_batch: self.registry_batch,
            registry_delay: self.registry_delay,
            api_token: self.api_token.clone(),
            quiet_period: self.quiet_period.unwrap_or(defaults.quiet_period),
            start: self.start,
            tag: self.tag.clone(),
            existing: self.existing,
            scenario_file: Some(scenario_file.to_path_buf()),
            progress: self.progress,
            keep_data: self.keep_data,
            buffer: self.buffer,
            tls: self.tls,
            check: CheckOptions {
                clock_tolerance_us: self.clock_tolerance.as_micros() as u64,
                ..CheckOptions::default()
            },
            ..defaults
        })
    }
}

impl RehearseArgs {
    fn flags(&self) -> RehearsalFlags {
        RehearsalFlags {
            barrage: self.barrage.clone(),
            target: self.target.clone(),
            handover: self.handover.clone(),
            handover_smtp: self.handover_smtp,
            handover_maildir: self.handover_maildir.clone(),
            ack_sink: self.ack_sink,
            acks: !self.no_acks,
            registry_rate: self.registry_rate,
            registry_batch: self.registry_batch,
            registry_delay: self.registry_delay,
            api_token: self.api_token.clone(),
            quiet_period: Some(self.quiet_period),
            start: self.start,
            tag: self.tag.clone(),
            clock_tolerance: self.clock_tolerance,
            keep_data: self.keep_data,
            progress: !self.quiet,
            existing: Existing::overwrite_if(self.overwrite),
            buffer: BufferSection {
                nodes: self.nodes,
                journal: self.journal,
                standby: self.standby.then_some(true),
            },
            tls: self.tls,
        }
    }
}

/// Runs `landrush rehearse`.
pub async fn rehearse_command(args: RehearseArgs) -> anyhow::Result<ExitCode> {
    let scenario = ValidScenario::load(&args.scenario)?;
    let options = args.flags().options(Path::new(""), &args.scenario).await?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| default_out(&scenario.name));
    eprintln!(
        "landrush: rehearsing `{}` ({}); run folder {}",
        scenario.name,
        args.scenario.display(),
        out.display()
    );
    let rehearsal = rehearse(&scenario, &out, options).await?;
    println!("{}", summary(&rehearsal));
    Ok(ExitCode::from(verdict(&rehearsal.checks).exit_code()))
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
        "requests   sent {}  accepted {}  refused {}  indeterminate {}  failed {}  handed over {}  \
         acked {}",
        c.sent, c.accepted, c.refused, c.indeterminate, c.failed, c.handed_over, c.acked
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
    let commits: u64 = r.commits.iter().map(|n| n.commits).sum();
    if let Some(mean) = crate::rehearse::rig::mean_batch(&r.commits) {
        let _ = writeln!(
            out,
            "journal    {}: {commits} commits, mean batch {mean:.1} requests per commit that wrote any",
            r.layout.describe(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(target: &str) -> RehearsalFlags {
        RehearsalFlags {
            barrage: None,
            target: Some(target.into()),
            handover: Some("http://127.0.0.1:1".into()),
            handover_smtp: None,
            handover_maildir: None,
            ack_sink: None,
            acks: false,
            registry_rate: 0.0,
            registry_batch: 500,
            registry_delay: Duration::ZERO,
            api_token: None,
            quiet_period: None,
            start: None,
            tag: None,
            clock_tolerance: Duration::ZERO,
            keep_data: false,
            progress: false,
            existing: Existing::Refuse,
            buffer: BufferSection::default(),
            tls: None,
        }
    }

    #[tokio::test]
    async fn rehearsal_flags_refuse_a_target_outside_loopback() {
        let file = Path::new("x.toml");
        let err = flags("192.0.2.1:25")
            .options(Path::new(""), file)
            .await
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("not a loopback address"),
            "{err:#}"
        );
        let ok = flags("127.0.0.1:25").options(Path::new(""), file).await;
        assert!(ok.is_ok(), "{ok:?}");
        let mut acks = flags("127.0.0.1:25");
        acks.acks = true;
        let err = acks.options(Path::new(""), file).await.unwrap_err();
        assert!(format!("{err:#}").contains("--ack-sink"), "{err:#}");
    }
}
