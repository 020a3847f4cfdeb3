//! `landrush rehearse`: the whole rehearsal in one command. Starts a real barrage on free loopback
//! ports in a temporary data dir (or uses a buffer that is already running), the fake registration
//! system and the ack sink, samples the buffer's `/v1/stats`, plays the scenario, waits until
//! everything accepted is handed over and acked (giving up after a quiet period without progress),
//! stops the buffer, runs the checkers and writes the records and the reports.
//!
//! The parts are small and separately steerable, so that faults (issue 9) can be scheduled into a
//! run: [`Rig`] holds the [`Buffer`] (kill / restart), the registry's [`RegistryHandle`] (pause /
//! resume / set_rate) and the ack sink (stop / restart). [`rehearse`] is setup → [`Rig::play`] →
//! [`Rig::drain`] → [`Rig::teardown`] → [`judge`].

pub mod buffer;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use reports::Report;
use reports::checks::Checks;
use reports::records::{self, JsonlWriter, Outcome, SentRecord, Stamp, StatsSample};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::check::{CheckOptions, check_run};
use crate::driver::{RunOptions, RunSummary, run_scenario};
use crate::observe::maildir::MaildirWatcher;
use crate::observe::registry::{Registry, RegistryConfig, RegistryHandle, RegistryReport};
use crate::observe::{Seen, acksink, maildir, smtp_handover};
use crate::scenario::{Scenario, Start};
pub use buffer::{Buffer, BufferProgram, BufferSpec, Endpoints};

/// The buffer's logs and config within the run folder.
pub const BUFFER_LOG: &str = "buffer.log";
pub const BUFFER_CONFIG: &str = "barrage.toml";
/// What the rehearsal itself did (buffer, drain, observers): also merged into run.json.
pub const REHEARSE_JSON: &str = "rehearse.json";

/// Which buffer is rehearsed.
#[derive(Debug, Clone)]
pub enum Target {
    /// Start one as a child process in a temporary data dir.
    Spawn(BufferProgram),
    /// One already running, whose SMTP intake is here.
    Running(SocketAddr),
}

/// Where the handover is observed.
#[derive(Debug, Clone)]
pub enum Handover {
    /// Pull the handover API: the spawned buffer's (`None`), or one at this base URL.
    Api(Option<String>),
    /// Be the SMTP host the buffer relays requests to, listening here.
    Smtp(SocketAddr),
    /// Read the Maildir the buffer delivers to.
    Maildir(PathBuf),
}

/// Everything a rehearsal needs besides the scenario.
#[derive(Debug, Clone)]
pub struct RehearseOptions {
    pub target: Target,
    pub handover: Handover,
    /// Where the ack sink listens (`None` with a spawned buffer: a free port); no sink with
    /// `acks: false`.
    pub ack_sink: Option<SocketAddr>,
    /// False when the buffer sends no acks (`--no-acks`): the ack check is skipped, not passed.
    pub acks: bool,
    /// The fake registry's capacity (requests/s, 0 = unlimited), batch size and late start.
    pub registry_rate: f64,
    pub registry_batch: usize,
    pub registry_delay: Duration,
    /// Bearer token for the handover API.
    pub api_token: Option<String>,
    /// Give up waiting for the handover and acks after this long without progress.
    pub quiet_period: Duration,
    /// After everything arrived, keep listening this long for late extras (a second ack…).
    pub settle: Duration,
    pub start: Option<Start>,
    pub tag: Option<String>,
    pub scenario_file: Option<PathBuf>,
    /// Live progress line and the driver's summary on stderr.
    pub progress: bool,
    /// Keep the spawned buffer's data dir (its journal) in the run folder as `buffer-data/`.
    pub keep_data: bool,
    /// How the checkers read the run (clock tolerance, examples…); `acks_expected` and
    /// `first_seq` are set by the rehearsal.
    pub check: CheckOptions,
}

impl Default for RehearseOptions {
    fn default() -> Self {
        RehearseOptions {
            target: Target::Running(SocketAddr::from(([127, 0, 0, 1], 25))),
            handover: Handover::Api(None),
            ack_sink: None,
            acks: true,
            registry_rate: 0.0,
            registry_batch: 500,
            registry_delay: Duration::ZERO,
            api_token: None,
            quiet_period: Duration::from_secs(5),
            settle: Duration::from_millis(300),
            start: None,
            tag: None,
            scenario_file: None,
            progress: true,
            keep_data: false,
            check: CheckOptions::default(),
        }
    }
}

/// How waiting for the handover and the acks ended.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Drain {
    /// Requests accepted by the buffer, as the driver saw it.
    pub accepted: u64,
    /// Of those, not handed over / not acked when the wait ended.
    pub missing_handed: u64,
    pub missing_acks: u64,
    /// The first few missing ids.
    pub missing_handed_ids: Vec<String>,
    pub missing_ack_ids: Vec<String>,
    /// True if everything arrived; false if the quiet period ran out.
    pub complete: bool,
    /// Seconds from the end of the driver's run until everything was handed over, and acked.
    pub handed_after_s: Option<f64>,
    pub acked_after_s: Option<f64>,
    /// Seconds spent waiting in all.
    pub waited_s: f64,
}

/// What a rehearsal produced.
pub struct Rehearsal {
    pub out_dir: PathBuf,
    pub run: RunSummary,
    pub drain: Drain,
    pub checks: Checks,
    pub report: Report,
    /// Notes for the reader (buffer exit status, registry errors, faults not played…).
    pub notes: Vec<String>,
}

/// The running parts of a rehearsal. Faults steer them through the public fields.
pub struct Rig {
    pub out_dir: PathBuf,
    /// The spawned buffer (none against a running one).
    pub buffer: Option<Buffer>,
    /// The buffer's SMTP intake.
    pub target: SocketAddr,
    /// The handover API base, when there is one.
    pub api_url: Option<String>,
    pub registry: Option<Registry>,
    pub handover_sink: Option<smtp_handover::HandoverSink>,
    pub maildir: Option<(PathBuf, MaildirWatcher)>,
    pub ack_sink: Option<acksink::AckSink>,
    sampler: Option<Sampler>,
    /// The temporary data dir of a spawned buffer (removed at the end unless kept).
    data_dir: Option<tempfile::TempDir>,
    /// The first seq of this run (checks count gaps from it).
    first_seq: Option<u64>,
    options: RehearseOptions,
    notes: Vec<String>,
}

/// Runs a whole rehearsal of `scenario`, writing into `out_dir`.
pub async fn rehearse(
    scenario: &Scenario,
    out_dir: &Path,
    options: RehearseOptions,
) -> anyhow::Result<Rehearsal> {
    scenario.validate()?;
    let mut rig = Rig::setup(out_dir, options).await?;
    let run = match rig.play(scenario).await {
        Ok(run) => run,
        Err(e) => {
            rig.teardown().await.ok();
            return Err(e);
        }
    };
    let drain = rig.drain(&run).await;
    let drain = match drain {
        Ok(d) => d,
        Err(e) => {
            rig.teardown().await.ok();
            return Err(e);
        }
    };
    let (first_seq, options, mut notes) = rig.teardown().await?;
    write_rehearse_info(out_dir, &options, &drain, &notes)?;
    let mut check = options.check.clone();
    check.acks_expected = options.acks;
    check.first_seq = first_seq;
    let (checks, report) = judge(out_dir, &check)?;
    if !drain.complete {
        notes.push(format!(
            "gave up waiting after {:.1} s without progress: {} accepted requests not handed over, \
             {} not acked",
            options.quiet_period.as_secs_f64(),
            drain.missing_handed,
            drain.missing_acks
        ));
    }
    Ok(Rehearsal {
        out_dir: out_dir.to_path_buf(),
        run,
        drain,
        checks,
        report,
        notes,
    })
}

/// Runs the checkers over a run folder and writes report.json / .md / .html.
pub fn judge(out_dir: &Path, options: &CheckOptions) -> anyhow::Result<(Checks, Report)> {
    let checks = check_run(out_dir, options)?;
    let report = reports::build_report(out_dir, checks.clone())?;
    reports::write_reports(out_dir, &report)?;
    Ok((checks, report))
}

impl Rig {
    /// Starts the ack sink, the buffer, the handover observer and the stats sampler.
    pub async fn setup(out_dir: &Path, options: RehearseOptions) -> anyhow::Result<Rig> {
        std::fs::create_dir_all(out_dir)
            .with_context(|| format!("cannot create {}", out_dir.display()))?;
        let mut rig = Rig {
            out_dir: out_dir.to_path_buf(),
            buffer: None,
            target: SocketAddr::from(([127, 0, 0, 1], 0)),
            api_url: None,
            registry: None,
            handover_sink: None,
            maildir: None,
            ack_sink: None,
            sampler: None,
            data_dir: None,
            first_seq: None,
            notes: Vec::new(),
            options,
        };
        if let Err(e) = rig.start_parts().await {
            rig.teardown().await.ok();
            return Err(e);
        }
        Ok(rig)
    }

    async fn start_parts(&mut self) -> anyhow::Result<()> {
        let out = self.out_dir.clone();
        if self.options.acks {
            let bind = self
                .options
                .ack_sink
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)));
            self.ack_sink = Some(acksink::start(bind, &out.join(records::ACKS)).await?);
        } else {
            // No acks expected: an empty acks.jsonl says so, rather than a stale one.
            JsonlWriter::<records::AckRecord>::create(&out.join(records::ACKS))?;
        }
        match self.options.target.clone() {
            Target::Spawn(program) => self.start_buffer(program).await?,
            Target::Running(addr) => self.target = addr,
        }
        match self.options.handover.clone() {
            Handover::Api(url) => {
                let url = url.or_else(|| self.api_url.clone()).context(
                    "no handover to observe: give --handover URL, --handover-smtp ADDR or \
                     --handover-maildir DIR for a buffer that is already running",
                )?;
                self.api_url = Some(url.trim_end_matches('/').to_string());
                self.start_registry().await?;
            }
            Handover::Smtp(addr) => {
                self.handover_sink =
                    Some(smtp_handover::start(addr, &out.join(records::HANDED)).await?);
            }
            Handover::Maildir(dir) => {
                let mut watcher = MaildirWatcher::new(&dir);
                // What the Maildir held before the run is not this run's handover.
                let before = watcher.poll().unwrap_or(0);
                if before > 0 {
                    self.notes.push(format!(
                        "the Maildir {} held {before} messages before the run; they are part of \
                         handed.jsonl (empty it between runs)",
                        dir.display()
                    ));
                }
                self.maildir = Some((dir, watcher));
            }
        }
        if let Some(url) = &self.api_url {
            self.sampler = Some(Sampler::start(
                url.clone(),
                self.options.api_token.clone(),
                &out.join(records::STATS),
            )?);
        }
        Ok(())
    }

    async fn start_buffer(&mut self, program: BufferProgram) -> anyhow::Result<()> {
        let data = tempfile::Builder::new()
            .prefix("landrush-buffer-")
            .tempdir()
            .context("cannot create the buffer's data dir")?;
        let config_path = self.out_dir.join(BUFFER_CONFIG);
        let data_dir = if self.options.keep_data {
            self.out_dir.join("buffer-data")
        } else {
            data.path().to_path_buf()
        };
        std::fs::write(
            &config_path,
            buffer_config(&data_dir, self.ack_sink.as_ref().map(|s| s.addr())),
        )?;
        let _ = std::fs::remove_file(self.out_dir.join(BUFFER_LOG));
        let extra_args = program.extra_serve_args();
        let spec = BufferSpec {
            program,
            extra_args,
            data_dir,
            config: config_path,
            log: self.out_dir.join(BUFFER_LOG),
            smtp: SocketAddr::from(([127, 0, 0, 1], 0)),
            http: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let buffer = Buffer::start(spec).await?;
        let endpoints = buffer.endpoints();
        self.target = endpoints.smtp;
        self.api_url = Some(endpoints.http_url());
        self.first_seq = Some(1);
        self.buffer = Some(buffer);
        self.data_dir = Some(data);
        Ok(())
    }

    async fn start_registry(&mut self) -> anyhow::Result<()> {
        let url = self.api_url.clone().expect("api url set");
        let mut config = RegistryConfig::new(url.clone());
        config.token = self.options.api_token.clone();
        config.rate = self.options.registry_rate;
        config.batch = self.options.registry_batch;
        config.start_delay = self.options.registry_delay;
        if self.buffer.is_none() {
            // A buffer that already held requests: this run's are the ones after its last seq.
            let stats = get_stats(&url, self.options.api_token.as_deref())
                .await
                .with_context(|| format!("cannot read {url}/v1/stats"))?;
            let accepted = stats["accepted"].as_u64().unwrap_or(0);
            config.after = accepted;
            self.first_seq = Some(accepted + 1);
        }
        self.registry = Some(Registry::start(
            config,
            &self.out_dir.join(records::HANDED),
        )?);
        Ok(())
    }

    /// The registry's handle, for faults (pause, resume, set_rate).
    pub fn registry(&self) -> Option<RegistryHandle> {
        self.registry.as_ref().map(Registry::handle)
    }

    /// Plays the scenario against the buffer.
    pub async fn play(&mut self, scenario: &Scenario) -> anyhow::Result<RunSummary> {
        let faults = crate::faults::parse(&scenario.faults, scenario.seed)?;
        let mut options = RunOptions {
            tag: self.options.tag.clone(),
            start: self.options.start,
            progress: self.options.progress,
            print_summary: self.options.progress,
            scenario_file: self.options.scenario_file.clone(),
            target_label: Some(match &self.buffer {
                Some(b) => format!(
                    "{} (barrage, {})",
                    b.endpoints().smtp,
                    b.spec().program.describe()
                ),
                None => self.target.to_string(),
            }),
            ..RunOptions::default()
        };
        // The web part plays against the spawned buffer's web intake, when it has one.
        let web = match (&scenario.http, &self.buffer) {
            (Some(_), Some(buffer)) => buffer.endpoints().web,
            _ => None,
        };
        if scenario.http.is_some() && web.is_none() {
            self.notes.push(
                "the scenario's [http] part was not played: no web intake to play it against"
                    .into(),
            );
        }
        if faults.is_empty() && web.is_none() {
            return run_scenario(scenario, self.target, &self.out_dir, options).await;
        }
        // Faults and the web part are timed from the scenario's time zero: fix it here and give
        // it to the drivers.
        let t0 = self
            .options
            .start
            .unwrap_or(scenario.start)
            .resolve(Stamp::now());
        options.start = Some(Start::At(t0));
        let Some(web) = web else {
            return self.play_with_faults(scenario, faults, t0, options).await;
        };
        let (out_dir, tag) = (self.out_dir.clone(), self.options.tag.clone());
        let progress = self.options.progress;
        let http = crate::http_driver::run_http(scenario, web, &out_dir, t0, tag);
        let (run, http) = tokio::join!(self.play_with_faults(scenario, faults, t0, options), http);
        let run = run?;
        let http = http?;
        crate::http_driver::append_to_sent(&out_dir)?;
        if progress {
            crate::http_driver::print_summary(&http);
        }
        Ok(run)
    }

    /// Plays the SMTP part with its faults (none is fine) from the fixed time zero `t0`.
    async fn play_with_faults(
        &mut self,
        scenario: &Scenario,
        faults: Vec<crate::faults::Fault>,
        t0: Stamp,
        options: RunOptions,
    ) -> anyhow::Result<RunSummary> {
        if faults.is_empty() {
            return run_scenario(scenario, self.target, &self.out_dir, options).await;
        }
        let (target, out_dir) = (self.target, self.out_dir.clone());
        let (sent_all, sent_all_rx) = watch::channel(false);
        // The driver plays the requests; the faults are played here.
        let mut requests_only = scenario.clone();
        requests_only.faults.clear();
        let driver = async {
            let run = run_scenario(&requests_only, target, &out_dir, options).await;
            sent_all.send_replace(true);
            run
        };
        let rate = self.options.registry_rate;
        let (run, played) = tokio::join!(
            driver,
            crate::faults::play(self, &faults, t0, rate, sent_all_rx)
        );
        self.notes.extend(played?);
        run
    }

    /// What the handover observer has seen.
    fn handed_seen(&mut self) -> Option<Arc<Seen>> {
        if let Some(registry) = &self.registry {
            return Some(registry.handle().seen().clone());
        }
        if let Some(sink) = &self.handover_sink {
            return Some(sink.handler().seen.clone());
        }
        if let Some((_, watcher)) = &mut self.maildir {
            if let Err(e) = watcher.poll() {
                tracing::warn!("cannot read the Maildir: {e:#}");
            }
            return Some(watcher.seen.clone());
        }
        None
    }

    /// Waits until every accepted request of the run was handed over and acked, or until nothing
    /// moved for the quiet period.
    pub async fn drain(&mut self, run: &RunSummary) -> anyhow::Result<Drain> {
        let sent: Vec<SentRecord> = records::read_all(&run.out_dir.join(records::SENT))?;
        let accepted = accepted_requests(&sent);
        let mut drain = Drain {
            accepted: accepted.len() as u64,
            ..Drain::default()
        };
        let began = Instant::now();
        let mut last_progress = began;
        let mut last_state = None;
        let mut last_print = began;
        let mut complete_since: Option<Instant> = None;
        loop {
            let handed = self.handed_seen();
            let acks = self.ack_sink.as_ref().map(|s| s.handler().seen.clone());
            let missing_handed: Vec<&AcceptedRequest> = match &handed {
                Some(seen) => accepted.iter().filter(|r| !r.in_set(seen)).collect(),
                None => Vec::new(),
            };
            let missing_acks: Vec<&AcceptedRequest> = match &acks {
                Some(seen) => accepted
                    .iter()
                    .filter(|r| !seen.contains_any([r.message_id.as_str()]))
                    .collect(),
                None => Vec::new(),
            };
            let now = Instant::now();
            if missing_handed.is_empty() && drain.handed_after_s.is_none() {
                drain.handed_after_s = Some((now - began).as_secs_f64());
            }
            if missing_acks.is_empty() && drain.acked_after_s.is_none() {
                drain.acked_after_s = Some((now - began).as_secs_f64());
            }
            drain.missing_handed = missing_handed.len() as u64;
            drain.missing_acks = missing_acks.len() as u64;
            drain.missing_handed_ids = missing_handed
                .iter()
                .take(5)
                .map(|r| r.id.clone())
                .collect();
            drain.missing_ack_ids = missing_acks.iter().take(5).map(|r| r.id.clone()).collect();
            let buffer_idle = self.sampler.as_ref().is_none_or(|s| s.idle());
            if missing_handed.is_empty() && missing_acks.is_empty() && buffer_idle {
                let since = *complete_since.get_or_insert(now);
                if now - since >= self.options.settle {
                    drain.complete = true;
                    break;
                }
            } else {
                complete_since = None;
            }
            let state = (
                handed.as_ref().map(|s| s.records()),
                acks.as_ref().map(|s| s.records()),
                self.sampler.as_ref().map(|s| s.progress_key()),
            );
            if last_state.as_ref() != Some(&state) {
                last_state = Some(state);
                last_progress = now;
            } else if now - last_progress >= self.options.quiet_period {
                break;
            }
            if self.options.progress && now - last_print >= Duration::from_secs(2) {
                last_print = now;
                eprintln!(
                    "landrush: waiting for the handover and the acks: {} accepted, {} not handed \
                     over yet, {} not acked yet",
                    drain.accepted, drain.missing_handed, drain.missing_acks
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drain.waited_s = began.elapsed().as_secs_f64();
        Ok(drain)
    }

    /// Stops the buffer (SIGTERM) and every observer, flushing their records. Returns what the
    /// checks need and the notes.
    pub async fn teardown(
        &mut self,
    ) -> anyhow::Result<(Option<u64>, RehearseOptions, Vec<String>)> {
        if let Some(sampler) = self.sampler.take() {
            sampler.finish().await?;
        }
        if let Some(registry) = self.registry.take() {
            let report: RegistryReport = registry.finish().await?;
            if report.errors > 0 {
                self.notes.push(format!(
                    "the registry's calls failed {} times (retried)",
                    report.errors
                ));
            }
        }
        if let Some(mut buffer) = self.buffer.take() {
            match buffer.terminate(Duration::from_secs(20)).await? {
                Some(status) if !status.success() => self.notes.push(format!(
                    "the buffer exited with {status} after SIGTERM (see {})",
                    buffer.spec().log.display()
                )),
                _ => {}
            }
        }
        if let Some(mut sink) = self.handover_sink.take() {
            sink.stop().await;
            sink.handler().flush()?;
        }
        if let Some((dir, _)) = self.maildir.take() {
            maildir::write_handed(&dir, &self.out_dir.join(records::HANDED))?;
        }
        if let Some(mut sink) = self.ack_sink.take() {
            sink.stop().await;
            sink.handler().flush()?;
        }
        self.data_dir.take();
        Ok((
            self.first_seq,
            self.options.clone(),
            std::mem::take(&mut self.notes),
        ))
    }
}

/// A request the buffer accepted, with its join keys.
struct AcceptedRequest {
    id: String,
    message_id: String,
}

impl AcceptedRequest {
    fn in_set(&self, seen: &Seen) -> bool {
        seen.contains_any([self.id.as_str(), self.message_id.as_str()])
    }
}

/// The distinct requests with at least one accepted transmission.
fn accepted_requests(sent: &[SentRecord]) -> Vec<AcceptedRequest> {
    let mut ids = HashSet::new();
    sent.iter()
        .filter(|s| s.outcome == Outcome::Accepted && ids.insert(s.id.as_str()))
        .map(|s| AcceptedRequest {
            id: s.id.clone(),
            message_id: s.message_id.clone(),
        })
        .collect()
}

/// The config a spawned barrage runs with: its data dir, and acks relayed to our sink with short
/// backoffs (a relay outage in a rehearsal lasts seconds, not hours).
pub fn buffer_config(data_dir: &Path, ack_relay: Option<SocketAddr>) -> String {
    let mut config = toml::Table::new();
    config.insert(
        "data_dir".into(),
        toml::Value::String(data_dir.display().to_string()),
    );
    config.insert(
        "hostname".into(),
        toml::Value::String("barrage.rehearsal.localhost".into()),
    );
    if let Some(relay) = ack_relay {
        let mut ack = toml::Table::new();
        ack.insert("relay".into(), toml::Value::String(relay.to_string()));
        ack.insert(
            "from".into(),
            toml::Value::String("registry@registry.invalid".into()),
        );
        ack.insert("concurrency".into(), toml::Value::Integer(8));
        ack.insert("backoff_initial_ms".into(), toml::Value::Integer(100));
        ack.insert("backoff_max_ms".into(), toml::Value::Integer(1000));
        ack.insert("timeout_secs".into(), toml::Value::Integer(10));
        config.insert("ack".into(), toml::Value::Table(ack));
    }
    format!(
        "# Written by `landrush rehearse` for the buffer it started.\n{}",
        toml::to_string(&config).expect("a TOML table serializes")
    )
}

/// Writes rehearse.json and merges it into run.json under `"rehearse"`, so the report shows it.
fn write_rehearse_info(
    out_dir: &Path,
    options: &RehearseOptions,
    drain: &Drain,
    notes: &[String],
) -> anyhow::Result<()> {
    let target = match &options.target {
        Target::Spawn(program) => json!({"spawned": program.describe()}),
        Target::Running(addr) => json!({"running": addr.to_string()}),
    };
    let handover = match &options.handover {
        Handover::Api(url) => json!({"api": url}),
        Handover::Smtp(addr) => json!({"smtp": addr.to_string()}),
        Handover::Maildir(dir) => json!({"maildir": dir.display().to_string()}),
    };
    let info = json!({
        "buffer": target,
        "handover": handover,
        "acks": options.acks,
        "registry": {
            "rate": options.registry_rate,
            "batch": options.registry_batch,
            "delay_s": options.registry_delay.as_secs_f64(),
        },
        "quiet_period_s": options.quiet_period.as_secs_f64(),
        "drain": drain,
        "notes": notes,
    });
    std::fs::write(
        out_dir.join(REHEARSE_JSON),
        serde_json::to_string_pretty(&info)? + "\n",
    )?;
    let run_path = out_dir.join(records::RUN);
    if let Ok(text) = std::fs::read_to_string(&run_path)
        && let Ok(Value::Object(mut run)) = serde_json::from_str::<Value>(&text)
    {
        run.insert("rehearse".into(), info);
        std::fs::write(&run_path, serde_json::to_string_pretty(&run)? + "\n")?;
    }
    Ok(())
}

async fn get_stats(base: &str, token: Option<&str>) -> anyhow::Result<Value> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()?;
    fetch_stats(&client, base, token).await
}

async fn fetch_stats(
    client: &reqwest::Client,
    base: &str,
    token: Option<&str>,
) -> anyhow::Result<Value> {
    let mut request = client.get(format!("{base}/v1/stats"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    anyhow::ensure!(response.status().is_success(), "HTTP {}", response.status());
    Ok(response.json().await?)
}

/// Samples `/v1/stats` every 250 ms into stats.jsonl.
struct Sampler {
    stop: watch::Sender<bool>,
    last: Arc<Mutex<Option<StatsSample>>>,
    task: JoinHandle<anyhow::Result<()>>,
}

/// How often the stats are sampled.
pub const STATS_INTERVAL: Duration = Duration::from_millis(250);

impl Sampler {
    fn start(base: String, token: Option<String>, path: &Path) -> anyhow::Result<Sampler> {
        let mut out = JsonlWriter::<StatsSample>::create(path)?;
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()?;
        let (stop, mut stopped) = watch::channel(false);
        let last = Arc::new(Mutex::new(None));
        let shared = last.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(STATS_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.wait_for(|s| *s) => break,
                }
                // A buffer down for a moment (restart) has no stats: skip the sample.
                let Ok(stats) = fetch_stats(&client, &base, token.as_deref()).await else {
                    continue;
                };
                let sample = StatsSample {
                    at: Stamp::now(),
                    accepted: stats["accepted"].as_u64().unwrap_or(0),
                    cursor: stats["cursor"].as_u64().unwrap_or(0),
                    queue_depth: stats["queue_depth"].as_u64().unwrap_or(0),
                    acks_pending: stats["acks"]["pending"].as_u64(),
                };
                out.write(&sample)?;
                out.flush()?;
                *shared.lock().expect("sample poisoned") = Some(sample);
            }
            out.flush()
        });
        Ok(Sampler { stop, last, task })
    }

    /// The buffer has nothing left to hand over or ack (as of the last sample; true without one).
    fn idle(&self) -> bool {
        match &*self.last.lock().expect("sample poisoned") {
            Some(s) => s.queue_depth == 0 && s.acks_pending.unwrap_or(0) == 0,
            None => true,
        }
    }

    /// What changes while the buffer makes progress.
    fn progress_key(&self) -> Option<(u64, u64, Option<u64>)> {
        self.last
            .lock()
            .expect("sample poisoned")
            .as_ref()
            .map(|s| (s.accepted, s.cursor, s.acks_pending))
    }

    async fn finish(self) -> anyhow::Result<()> {
        self.stop.send_replace(true);
        self.task.await.context("stats sampler")?
    }
}
