//! The `landrush run` and `landrush merge` subcommands: argument parsing, the loopback-only
//! safety check on targets, `--dry-run`, and Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;

use super::{RunOptions, run_scenario};
use crate::scenario::request::Requests;
use crate::scenario::{Scenario, Start};
use crate::schedule::Plan;
use crate::shard::Shard;

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

Every transmission becomes a line of OUT/sent.jsonl (DESIGN.md \"Run records\"); OUT/run.json
sums the run up, including the driver's own lag (how late it was against its schedule).";

/// `landrush merge`: combine the run folders of the shards of one scenario.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The merged folder to write.
    pub out: PathBuf,
    /// The shards' run folders.
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
}

/// Resolves `target` and refuses anything outside loopback unless its host is in `allow`.
pub async fn resolve_target(target: &str, allow: &[String]) -> anyhow::Result<SocketAddr> {
    let addr = tokio::net::lookup_host(target)
        .await
        .with_context(|| format!("--target `{target}`: expected HOST:PORT that resolves"))?
        .next()
        .with_context(|| format!("--target `{target}` resolves to no address"))?;
    if !addr.ip().is_loopback() {
        let host = target
            .rsplit_once(':')
            .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
            .unwrap_or(target);
        if !allow
            .iter()
            .any(|a| a == host || a == &addr.ip().to_string())
        {
            bail!(
                "--target {target} ({addr}) is not a loopback address. landrush floods whatever \
                 it is aimed at; to aim at another machine, name it: --allow-remote-target {host}"
            );
        }
    }
    Ok(addr)
}

/// Runs `landrush run`.
pub async fn run_command(args: RunArgs) -> anyhow::Result<()> {
    let scenario = Scenario::load(&args.scenario)?;
    let plan = Plan::new(&scenario)?;
    if args.dry_run {
        print_dry_run(&scenario, &plan, args.shard);
        return Ok(());
    }
    let target = resolve_target(&args.target, &args.allow_remote_target).await?;
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from("runs").join(format!(
            "{}-{}",
            scenario.name,
            time::OffsetDateTime::now_utc().unix_timestamp()
        ))
    });
    let start = args.start.unwrap_or(scenario.start);
    eprintln!(
        "landrush: about to send {} requests ({} of scenario `{}`, shard {}) from {} clients to \
         {} ({target}), starting {start}; records in {}",
        args.shard.request_count(&plan),
        plan.total(),
        scenario.name,
        args.shard,
        (0..scenario.clients.count)
            .filter(|&c| args.shard.owns_client(c))
            .count(),
        args.target,
        out.display()
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("landrush: Ctrl-C — no new requests; waiting for replies in flight");
            let _ = stop_tx.send(true);
        }
    });
    let web_target = match (&args.web_target, &scenario.http) {
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
    };
    if !scenario.faults.is_empty() {
        eprintln!(
            "landrush: the scenario's [[faults]] are not played by `landrush run`: they need \
             `landrush rehearse`, which owns the buffer"
        );
    }
    // Both parts share one absolute start instant.
    let start_at = start.resolve(reports::records::Stamp::now());
    let options = RunOptions {
        shard: args.shard,
        tag: args.tag.clone(),
        start: Some(Start::At(start_at)),
        progress: !args.quiet,
        print_summary: true,
        scenario_file: Some(args.scenario.clone()),
        target_label: Some(args.target.clone()),
        stop: Some(stop_rx),
        ..RunOptions::default()
    };
    let Some(web) = web_target else {
        run_scenario(&scenario, target, &out, options).await?;
        return Ok(());
    };
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let (smtp, http) = tokio::join!(
        run_scenario(&scenario, target, &out, options),
        crate::http_driver::run_http(&scenario, web, &out, start_at, args.tag.clone())
    );
    smtp?;
    let http = http?;
    crate::http_driver::append_to_sent(&out)?;
    crate::http_driver::print_summary(&http);
    Ok(())
}

/// Runs `landrush merge`.
pub fn merge_command(args: MergeArgs) -> anyhow::Result<()> {
    let info = crate::merge::merge(&args.out, &args.dirs)?;
    eprintln!(
        "landrush: merged {} folders into {}: {} transmissions, {} accepted, {} refused, {} \
         indeterminate",
        args.dirs.len(),
        args.out.display(),
        info.transmissions,
        info.accepted,
        info.refused,
        info.indeterminate
    );
    for w in &info.warnings {
        eprintln!("  !! {w}");
    }
    Ok(())
}

fn print_dry_run(scenario: &Scenario, plan: &Plan, shard: Shard) {
    println!("scenario `{}` (seed {})", scenario.name, scenario.seed);
    if !scenario.description.is_empty() {
        println!("  {}", scenario.description.trim());
    }
    println!(
        "  {} requests ({} scheduled before bounds), {} sending clients{}, {} idle, start {}",
        plan.total(),
        plan.scheduled(),
        plan.clients(),
        if scenario.clients.pre_connect {
            " (pre-connected)"
        } else {
            ""
        },
        scenario.clients.idle,
        scenario.start
    );
    println!("  shard {shard}: {} requests", shard.request_count(plan));
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
    let requests = Requests::new(scenario, plan, None);
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
