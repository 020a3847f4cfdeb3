//! The `landrush observe` subcommand: the organiser's side of a volunteers' run. Against a running
//! buffer it plays the registration system (pulls and commits the handover at its own pace, or
//! receives a foreign buffer's relay or reads its Maildir), receives the ack mails, samples the
//! buffer's stats and serves the time reference (`GET /time`) the volunteers' clocks are measured
//! against. It writes `handed.jsonl`, `acks.jsonl`, `stats.jsonl` and `observe.json` into its
//! folder, and stops on SIGINT/SIGTERM or after `--until-idle` with nothing new, always leaving
//! complete files (every writer is flushed on the way out).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use reports::records::{ACKS, HANDED, STATS, Stamp};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::clock::exchange;
use crate::observe::registry::{Registry, RegistryConfig};
use crate::observe::{acksink, maildir, smtp_handover};
use crate::records::folder::{Existing, RunFolder};
use crate::rehearse::sampler::Sampler;

/// `landrush observe`: the registration side and the time reference of a volunteers' run.
#[derive(Debug, Args)]
#[command(after_long_help = OBSERVE_EXAMPLES)]
pub struct ObserveArgs {
    /// The buffer's handover API, http://HOST:PORT: pulled and committed like a registry, and its
    /// /v1/stats sampled into stats.jsonl.
    #[arg(long, value_name = "URL")]
    pub handover: Option<String>,
    /// Bearer token of the handover API.
    #[arg(long, value_name = "T", env = "LANDRUSH_API_TOKEN")]
    pub api_token: Option<String>,
    /// Receive the buffer's ack mails by SMTP on ADDR (acks.jsonl).
    #[arg(long, value_name = "ADDR")]
    pub ack_sink: Option<SocketAddr>,
    /// A foreign buffer relays requests by SMTP to ADDR (handed.jsonl, delivery order).
    #[arg(long, value_name = "ADDR", conflicts_with_all = ["handover_maildir"])]
    pub handover_smtp: Option<SocketAddr>,
    /// A foreign buffer delivers requests into this Maildir (read at the end into handed.jsonl).
    #[arg(long, value_name = "DIR")]
    pub handover_maildir: Option<PathBuf>,
    /// The registry's capacity in requests per second (0: as fast as the API serves).
    #[arg(long, value_name = "N", default_value_t = 0.0)]
    pub registry_rate: f64,
    /// Where the time endpoint listens (give a reachable address to volunteers).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub time_bind: SocketAddr,
    /// The observer's folder.
    #[arg(long, short = 'o', value_name = "DIR")]
    pub out: PathBuf,
    /// Stop once nothing new arrived for this long after the first record (else: SIGINT/SIGTERM).
    #[arg(long, value_name = "DURATION", value_parser = super::duration_arg)]
    pub until_idle: Option<Duration>,
    /// Replace the records already in the folder.
    #[arg(long)]
    pub overwrite: bool,
}

const OBSERVE_EXAMPLES: &str = "\
Example (the organiser, beside the buffer; see scenarios/VOLUNTEERS.md):
  landrush observe --handover http://127.0.0.1:8025 --ack-sink 127.0.0.1:2526 \\
      --time-bind 0.0.0.0:8040 --out runs/day-observed
Each volunteer then runs with --time-reference http://ORGANISER:8040 when the buffer's replies
carry no time, and `landrush merge runs/day SHARD... --observed runs/day-observed` joins them.";

/// The observers running, and what they write.
struct Observers {
    registry: Option<Registry>,
    sampler: Option<Sampler>,
    acks: Option<acksink::AckSink>,
    relay: Option<smtp_handover::HandoverSink>,
    maildir: Option<maildir::MaildirWatcher>,
}

impl Observers {
    async fn start(args: &ObserveArgs, out: &std::path::Path) -> anyhow::Result<Observers> {
        let token = args.api_token.clone();
        let (registry, sampler) = match &args.handover {
            Some(url) => {
                let mut config = RegistryConfig::new(url.clone());
                config.token = token.clone();
                config.rate = args.registry_rate;
                let registry = Registry::start(config, &out.join(HANDED))?;
                let sampler = Sampler::start(vec![url.clone()], token, &out.join(STATS))?;
                (Some(registry), Some(sampler))
            }
            None => (None, None),
        };
        let acks = match args.ack_sink {
            Some(bind) => Some(acksink::start(bind, &out.join(ACKS)).await?),
            None => None,
        };
        let relay = match args.handover_smtp {
            Some(bind) => Some(smtp_handover::start(bind, &out.join(HANDED)).await?),
            None => None,
        };
        let maildir = args
            .handover_maildir
            .as_deref()
            .map(maildir::MaildirWatcher::new);
        Ok(Observers {
            registry,
            sampler,
            acks,
            relay,
            maildir,
        })
    }

    /// Records received so far, by every observer.
    fn progress(&mut self) -> u64 {
        let mut n = self
            .registry
            .as_ref()
            .map_or(0, |r| r.handle().seen().records());
        n += self.acks.as_ref().map_or(0, |a| a.handler().seen.records());
        n += self
            .relay
            .as_ref()
            .map_or(0, |r| r.handler().seen.records());
        if let Some(watcher) = &mut self.maildir {
            let _ = watcher.poll();
            n += watcher.seen.records();
        }
        n
    }

    /// Stops everything and flushes every file; returns what `observe.json` says of them.
    async fn finish(
        self,
        args: &ObserveArgs,
        out: &std::path::Path,
    ) -> anyhow::Result<serde_json::Value> {
        let mut summary = json!({});
        if let Some(registry) = self.registry {
            let report = registry.finish().await?;
            summary["handed"] = json!(report.handed);
            summary["registry_errors"] = json!(report.errors);
            summary["last_seq"] = json!(report.last_seq);
        }
        if let Some(sampler) = self.sampler {
            sampler.finish().await?;
        }
        if let Some(mut acks) = self.acks {
            acks.stop().await;
            acks.handler().flush()?;
            summary["ack_mails"] = json!(acks.handler().seen.records());
        }
        if let Some(mut relay) = self.relay {
            relay.stop().await;
            relay.handler().flush()?;
            summary["handed"] = json!(relay.handler().seen.records());
        }
        if let Some(dir) = &args.handover_maildir {
            summary["handed"] = json!(maildir::write_handed(dir, &out.join(HANDED))?);
        }
        Ok(summary)
    }
}

/// Runs `landrush observe`.
pub async fn observe_command(args: ObserveArgs) -> anyhow::Result<()> {
    let folder = RunFolder::claim(&args.out, Existing::overwrite_if(args.overwrite))?;
    let out = folder.path().to_path_buf();
    let started_at = Stamp::now();
    let mut observers = Observers::start(&args, &out).await?;
    let stop = CancellationToken::new();
    let (time_addr, time_task) = exchange::serve(args.time_bind, stop.clone()).await?;
    eprintln!(
        "landrush observe: time endpoint http://{time_addr}{}",
        exchange::TIME_PATH
    );
    if let Some(acks) = &observers.acks {
        eprintln!("landrush observe: ack sink {}", acks.addr());
    }
    if let Some(relay) = &observers.relay {
        eprintln!("landrush observe: handover relay sink {}", relay.addr());
    }
    eprintln!(
        "landrush observe: observing into {}; stop with Ctrl-C",
        out.display()
    );
    let why = wait_for_stop(&mut observers, args.until_idle).await?;
    let summary = observers.finish(&args, &out).await?;
    stop.cancel();
    time_task.await.context("time endpoint task")?;
    let info = json!({
        "started_at": started_at,
        "finished_at": Stamp::now(),
        "stopped_by": why,
        "time_endpoint": format!("http://{time_addr}{}", exchange::TIME_PATH),
        "host": crate::records::provenance::host_name(),
        "observed": summary,
    });
    let path = out.join("observe.json");
    std::fs::write(&path, serde_json::to_string_pretty(&info)? + "\n")
        .with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!(
        "landrush observe: stopped ({why}); records complete in {}",
        out.display()
    );
    Ok(())
}

/// Until SIGINT, SIGTERM, or `idle` without a new record after the first one.
async fn wait_for_stop(
    observers: &mut Observers,
    idle: Option<Duration>,
) -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let (mut last, mut since) = (0, tokio::time::Instant::now());
    loop {
        tokio::select! {
            _ = term.recv() => return Ok("SIGTERM"),
            _ = int.recv() => return Ok("SIGINT"),
            _ = tick.tick() => {}
        }
        let now = observers.progress();
        if now != last {
            (last, since) = (now, tokio::time::Instant::now());
        } else if let Some(idle) = idle
            && last > 0
            && since.elapsed() >= idle
        {
            return Ok("until-idle");
        }
    }
}
