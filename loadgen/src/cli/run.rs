//! The `landrush run` subcommand: arguments, the loopback-only targets, the run folder claimed
//! for the run, `--dry-run`, the countdown to the instant, and Ctrl-C.

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;
use tokio_util::sync::CancellationToken;

use super::target::resolve_target;
use crate::driver::smtp::run_scenario;
use crate::driver::smtp::tls::{ClientTls, Trust};
use crate::driver::{RunOptions, http};
use crate::records::folder::{Existing, RunFolder};
use crate::scenario::Start;
use crate::schedule::ValidScenario;
use crate::schedule::request::RequestMaker;
use crate::schedule::shard::Shard;

/// `landrush run`: play a scenario against an SMTP address and record every request.
#[derive(Debug, Args)]
#[command(after_long_help = RUN_EXAMPLES)]
pub struct RunArgs {
    /// The scenario file (see scenarios/README.md for the schema).
    pub scenario: PathBuf,

    /// The SMTP address to send to, HOST:PORT. Only loopback addresses are allowed unless the
    /// host is also named with --allow-remote-target.
    #[arg(long, short = 't', value_name = "HOST:PORT")]
    pub target: String,

    /// The run folder for sent.jsonl, run.json and the histograms [default: runs/NAME-TIME].
    #[arg(long, short = 'o', value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// Play only slice I of N (1-based), so that N machines together play the whole scenario
    /// at the same instant; combine their folders with `landrush merge`.
    #[arg(long, value_name = "I/N", default_value = "1/1")]
    pub shard: Shard,

    /// The web intake to play the scenario's `[http]` part against, HOST:PORT (barrage's
    /// `--web`). Without it the `[http]` part is not played. Loopback only unless the host is
    /// named with --allow-remote-target.
    #[arg(long, value_name = "HOST:PORT")]
    pub web_target: Option<String>,

    /// Allow a target outside loopback; HOST must be the host of --target, written the same way.
    /// Repeatable.
    #[arg(long, value_name = "HOST")]
    pub allow_remote_target: Vec<String>,

    /// Prefix for ids and Message-IDs, so a rerun against the same buffer is not taken for a
    /// retransmission of the previous run's messages.
    #[arg(long, value_name = "TAG")]
    pub tag: Option<String>,

    /// Override the scenario's start: `+2s` or an RFC 3339 instant (`2026-12-01T09:00:00Z`).
    #[arg(long, value_name = "START")]
    pub start: Option<Start>,

    /// Print what the scenario would send (per second, per kind) and exit without connecting.
    #[arg(long)]
    pub dry_run: bool,

    /// No live progress line (it is never drawn when stderr is not a terminal anyway).
    #[arg(long, short = 'q')]
    pub quiet: bool,

    /// Replace the records of a run already in the run folder (refused without it).
    #[arg(long)]
    pub overwrite: bool,

    /// For client groups with `starttls = true`: trust the certificates in this PEM file (the
    /// buffer's self-signed certificate, or a private CA) instead of the web PKI's roots.
    #[arg(long, value_name = "FILE", conflicts_with = "tls_insecure")]
    pub tls_ca: Option<PathBuf>,

    /// For client groups with `starttls = true`: accept any certificate (encrypted, not
    /// authenticated). For rehearsals against a throwaway certificate only.
    #[arg(long)]
    pub tls_insecure: bool,

    #[command(flatten)]
    pub volunteer: super::volunteer::VolunteerArgs,
}

const RUN_EXAMPLES: &str = "\
Examples:
  landrush run scenarios/ci-smoke.toml --target 127.0.0.1:2525
  landrush run scenarios/landrush-2004.toml -t 127.0.0.1:2525 --out runs/day --tag rehearsal-3
  landrush run scenarios/instant-12k.toml -t 127.0.0.1:2525 --start +10s
  landrush run scenarios/landrush-2004.toml --dry-run -t 127.0.0.1:25

Volunteers (every machine starts at the scenario's absolute `start`):
  landrush run scenarios/landrush-2004.toml --shard 2/5 \\
      -t mx.registry.example:25 --allow-remote-target mx.registry.example --out runs/shard-2
  landrush merge runs/day runs/shard-1 runs/shard-2 runs/shard-3 runs/shard-4 runs/shard-5

Every transmission becomes a line of OUT/sent.jsonl (docs/contract.md \"Run records\"); OUT/run.json
sums the run up, including the driver's own lag (how late it was against its schedule).";

/// The STARTTLS client side, when a client group asks for STARTTLS.
fn tls_client(
    args: &RunArgs,
    scenario: &ValidScenario,
) -> anyhow::Result<Option<std::sync::Arc<ClientTls>>> {
    if !scenario.clients.iter().any(|group| group.starttls) {
        return Ok(None);
    }
    let trust = match (&args.tls_ca, args.tls_insecure) {
        (_, true) => Trust::Insecure,
        (Some(file), false) => Trust::CaFile(file),
        (None, false) => Trust::WebPki,
    };
    let host = args
        .target
        .rsplit_once(':')
        .map_or(&*args.target, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok(Some(std::sync::Arc::new(ClientTls::new(trust, host)?)))
}

/// Runs `landrush run`.
pub async fn run_command(args: RunArgs) -> anyhow::Result<()> {
    let scenario = ValidScenario::load(&args.scenario)?;
    if args.dry_run {
        print_dry_run(&scenario, args.shard);
        return Ok(());
    }
    let target = resolve_target(&args.target, &args.allow_remote_target).await?;
    if args.volunteer.preflight {
        return super::volunteer::preflight(&args.volunteer, &scenario, args.shard, target).await;
    }
    let web_target = web_target(&args, &scenario).await?;
    let tls = tls_client(&args, &scenario)?;
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from("runs").join(format!(
            "{}-{}",
            scenario.name,
            time::OffsetDateTime::now_utc().unix_timestamp()
        ))
    });
    let folder = RunFolder::claim(&out, Existing::overwrite_if(args.overwrite))?;
    let start = args.start.unwrap_or(scenario.start);
    announce(&args, &scenario, start, target, &out);
    let exchanges = super::volunteer::before(&args.volunteer, &scenario, args.shard).await?;
    let stop = stop_on_ctrl_c();
    // Both parts share one absolute start instant.
    let start_at = start.resolve(reports::records::Stamp::now());
    let _countdown = super::countdown::start(start_at, &stop);
    let options = RunOptions {
        shard: args.shard,
        tag: args.tag.clone(),
        start: Some(Start::At(start_at)),
        progress: !args.quiet,
        print_summary: true,
        scenario_file: Some(args.scenario.clone()),
        target_label: Some(args.target.clone()),
        stop,
        web_target,
        tls,
        ..RunOptions::default()
    };
    let out = folder.path();
    let Some(web) = web_target else {
        run_scenario(&scenario, target, out, options).await?;
        return super::volunteer::after(&args.volunteer, out, &scenario, target, exchanges).await;
    };
    let (smtp, web_run) = tokio::join!(
        run_scenario(&scenario, target, out, options),
        http::run_http(&scenario, web, out, start_at, args.tag.clone())
    );
    smtp?;
    let web_run = web_run?;
    http::append_to_sent(out)?;
    http::print_summary(&web_run);
    super::volunteer::after(&args.volunteer, out, &scenario, target, exchanges).await
}

/// Says what is about to be sent, and which parts of the scenario `run` does not play.
fn announce(
    args: &RunArgs,
    scenario: &ValidScenario,
    start: Start,
    target: std::net::SocketAddr,
    out: &std::path::Path,
) {
    let plan = scenario.plan();
    let clients = (0..plan.clients())
        .filter(|&c| args.shard.owns_client(c) && plan.request_count_of(c) > 0)
        .count();
    eprintln!(
        "landrush: about to send {} requests ({} of scenario `{}`, shard {}) from {clients} \
         clients to {} ({target}), starting {start}; records in {}",
        args.shard.request_count(plan),
        plan.total(),
        scenario.name,
        args.shard,
        args.target,
        out.display()
    );
    if !scenario.faults().is_empty() {
        eprintln!(
            "landrush: the scenario's [[faults]] are not played by `landrush run`: they need \
             `landrush rehearse`, which owns the buffer"
        );
    }
    if !scenario.buffer.is_empty() {
        eprintln!(
            "landrush: the scenario's [buffer] (how many nodes, which journal) is for the buffer \
             `landrush rehearse` starts; `landrush run` sends to --target only"
        );
    }
}

/// Cancelled at Ctrl-C: no new requests, the replies in flight are still read.
fn stop_on_ctrl_c() -> CancellationToken {
    let stop = CancellationToken::new();
    let on_ctrl_c = stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("landrush: Ctrl-C — no new requests; waiting for replies in flight");
            on_ctrl_c.cancel();
        }
    });
    stop
}

/// Where the scenario's `[http]` part is played, if anywhere.
async fn web_target(
    args: &RunArgs,
    scenario: &ValidScenario,
) -> anyhow::Result<Option<std::net::SocketAddr>> {
    Ok(match (&args.web_target, &scenario.http) {
        (Some(web), Some(_)) => Some(resolve_target(web, &args.allow_remote_target).await?),
        (Some(_), None) => bail!(
            "--web-target given, but scenario {} has no [http] part to play",
            args.scenario.display()
        ),
        (None, Some(_)) => {
            eprintln!("landrush: the scenario's [http] part is not played: give --web-target");
            None
        }
        (None, None) => None,
    })
}

fn print_dry_run(scenario: &ValidScenario, shard: Shard) {
    let plan = scenario.plan();
    println!("scenario `{}` (seed {})", scenario.name, scenario.seed);
    if !scenario.description.is_empty() {
        println!("  {}", scenario.description.trim());
    }
    println!(
        "  {} requests ({} scheduled before bounds), {} sending clients{}, {} idle, start {}",
        plan.total(),
        plan.scheduled(),
        scenario.clients.sending_clients(),
        if scenario.clients.any_pre_connect() {
            " (pre-connected)"
        } else {
            ""
        },
        scenario.clients.idle_total(),
        scenario.start
    );
    println!("  shard {shard}: {} requests", shard.request_count(plan));
    for (n, g) in scenario.clients.iter().enumerate() {
        println!(
            "  group `{}`: {} {} clients, {} requests",
            g.name,
            g.count,
            g.behaviour.as_str(),
            plan.assignment().group_requests(n, plan.total())
        );
    }
    if plan.is_closed() {
        println!("  closed model: each client sends as soon as its previous reply came");
    } else {
        let per = plan.per_second();
        let shown: Vec<String> = per.iter().take(15).map(|n| n.to_string()).collect();
        println!(
            "  per second: {}{}",
            shown.join(" "),
            if per.len() > 15 { " …" } else { "" }
        );
        println!("  last request due at +{:.3}s", plan.span().as_secs_f64());
    }
    let requests = RequestMaker::new(scenario, plan, None);
    let mut kinds = std::collections::BTreeMap::<&str, u64>::new();
    let walk = plan.total().min(1_000_000);
    for i in 0..walk {
        *kinds.entry(requests.request(i).kind.as_str()).or_default() += 1;
    }
    let kinds: Vec<String> = kinds.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!(
        "  kinds{}: {}",
        if walk < plan.total() {
            " (first million)"
        } else {
            ""
        },
        kinds.join(", ")
    );
    if let Some(&(first, _)) = plan.hot_slots().first() {
        let r = requests.request(first);
        println!(
            "  {} hot slots; first: `{}` asked by requests {}.. from clients {}..",
            plan.hot_slots().len(),
            r.domain,
            first,
            r.client
        );
    }
}
