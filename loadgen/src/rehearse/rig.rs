//! The running parts of a rehearsal, started and stopped together: the buffer (when the
//! rehearsal spawns it: one node, or several intake nodes sharing a PostgreSQL database started
//! for them, see [`super::database`]), the ack sink, the handover observer (fake registry, SMTP
//! sink or Maildir) and the stats sampler. Faults steer them through [`Rig`]'s public fields.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use reports::records::{self, JsonlWriter};

use super::buffer::{Buffer, BufferProgram, BufferSpec, buffer_config, node_files};
use super::database::Database;
use super::options::{Handover, RehearseOptions, Target};
use super::sampler::{Sampler, get_stats_of_any};
use super::tls;
use crate::driver::smtp::targets::Targets;
use crate::driver::smtp::tls::ClientTls;
use crate::observe::maildir::{self, MaildirWatcher};
use crate::observe::registry::{Registry, RegistryConfig, RegistryHandle, RegistryReport};
use crate::observe::{Seen, acksink, smtp_handover};
use crate::scenario::buffer::BufferLayout;

/// The running parts of a rehearsal. Faults steer them through the public fields.
pub struct Rig {
    pub out_dir: PathBuf,
    /// The spawned buffer's intake nodes, node 1 first (none against a running buffer).
    pub nodes: Vec<Buffer>,
    /// The database the nodes share (a layout on PostgreSQL).
    pub database: Option<Database>,
    /// The SMTP intakes the clients are spread over (every node's).
    pub targets: Targets,
    /// The handover API base, when there is one (node 1's).
    pub api_url: Option<String>,
    /// Every node's API base, node 1 first: the registry and the sampler go on with the next
    /// one when one is down.
    pub api_urls: Vec<String>,
    /// How the spawned buffer is laid out.
    pub layout: BufferLayout,
    pub registry: Option<Registry>,
    pub handover_sink: Option<smtp_handover::HandoverSink>,
    pub maildir: Option<(PathBuf, MaildirWatcher)>,
    pub ack_sink: Option<acksink::AckSink>,
    pub(super) sampler: Option<Sampler>,
    /// The temporary data dir of a spawned buffer (removed at the end unless kept).
    pub(super) data_dir: Option<tempfile::TempDir>,
    /// The first seq of this run (checks count gaps from it).
    pub(super) first_seq: Option<u64>,
    /// The driver's STARTTLS client, trusting the spawned buffer's throwaway certificate.
    pub(super) client_tls: Option<Arc<ClientTls>>,
    pub(super) options: RehearseOptions,
    pub(super) notes: Vec<String>,
}

impl Rig {
    /// Starts the ack sink, the buffer (laid out as `layout` says), the handover observer and
    /// the stats sampler.
    pub async fn setup(
        out_dir: &Path,
        options: RehearseOptions,
        layout: BufferLayout,
    ) -> anyhow::Result<Rig> {
        std::fs::create_dir_all(out_dir)
            .with_context(|| format!("cannot create {}", out_dir.display()))?;
        anyhow::ensure!(
            layout == BufferLayout::default() || matches!(options.target, Target::Spawn(_)),
            "the buffer's layout ({}) is for a buffer the rehearsal starts, not one already \
             running: drop [buffer] from the scenario (or --nodes, --journal, --standby) or \
             --target",
            layout.describe()
        );
        let mut rig = Rig {
            out_dir: out_dir.to_path_buf(),
            nodes: Vec::new(),
            database: None,
            targets: Targets::from(SocketAddr::from(([127, 0, 0, 1], 0))),
            api_url: None,
            api_urls: Vec::new(),
            layout,
            registry: None,
            handover_sink: None,
            maildir: None,
            ack_sink: None,
            sampler: None,
            data_dir: None,
            first_seq: None,
            client_tls: None,
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
            Target::Running(addr) => self.targets = Targets::from(addr),
        }
        match self.options.handover.clone() {
            Handover::Api(url) => {
                let url = url.or_else(|| self.api_url.clone()).context(
                    "no handover to observe: give --handover URL, --handover-smtp ADDR or \
                     --handover-maildir DIR for a buffer that is already running",
                )?;
                self.api_url = Some(url.trim_end_matches('/').to_string());
                if self.api_urls.is_empty() {
                    self.api_urls = self.api_url.clone().into_iter().collect();
                }
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
        if self.api_url.is_some() {
            self.sampler = Some(Sampler::start(
                self.api_urls.clone(),
                self.options.api_token.clone(),
                &out.join(records::STATS),
            )?);
        }
        Ok(())
    }

    /// Starts the layout's database (if on PostgreSQL), then its nodes one after the other, each
    /// in its own data dir, on ports the OS chose.
    async fn start_buffer(&mut self, program: BufferProgram) -> anyhow::Result<()> {
        let data = tempfile::Builder::new()
            .prefix("landrush-buffer-")
            .tempdir()
            .context("cannot create the buffer's data dir")?;
        let data_root = if self.options.keep_data {
            self.out_dir.join("buffer-data")
        } else {
            data.path().to_path_buf()
        };
        self.data_dir = Some(data);
        let extra_args = program.extra_serve_args();
        if self.layout.uses_postgres() {
            self.database = Some(Database::start(&self.out_dir, self.layout.standby).await?);
        }
        let journal_url = self.database.as_ref().map(Database::url);
        // One certificate for every node: the clients trust it whichever node they reach.
        let certificate = match self.options.tls {
            Some(_) => Some(tls::throwaway_certificate(
                &self.out_dir.join(tls::TLS_DIR),
            )?),
            None => None,
        };
        for node in 1..=self.layout.nodes {
            let files = node_files(&self.out_dir, node, self.layout.nodes);
            let data_dir = match self.layout.nodes {
                1 => data_root.clone(),
                _ => data_root.join(format!("node-{node}")),
            };
            let mut config = buffer_config(
                &data_dir,
                self.ack_sink.as_ref().map(|s| s.addr()),
                journal_url.as_deref(),
            );
            if let (Some(mode), Some(certificate)) = (self.options.tls, &certificate) {
                config.push_str(&tls::smtp_section(mode, certificate));
            }
            std::fs::write(&files.config, config)?;
            let _ = std::fs::remove_file(&files.log);
            let spec = BufferSpec {
                program: program.clone(),
                extra_args: extra_args.clone(),
                data_dir,
                config: files.config,
                log: files.log,
                smtp: SocketAddr::from(([127, 0, 0, 1], 0)),
                http: SocketAddr::from(([127, 0, 0, 1], 0)),
            };
            self.nodes.push(Buffer::start(spec).await?);
        }
        let endpoints: Vec<_> = self.nodes.iter().map(Buffer::endpoints).collect();
        if let Some(certificate) = &certificate {
            let host = endpoints[0].smtp.ip().to_string();
            self.client_tls = Some(tls::client(certificate, &host)?);
        }
        self.targets = Targets::new(endpoints.iter().map(|e| e.smtp).collect())?;
        self.api_urls = endpoints.iter().map(|e| e.http_url()).collect();
        self.api_url = self.api_urls.first().cloned();
        self.first_seq = Some(1);
        Ok(())
    }

    /// Intake node `node` (1-based), as a `kill` fault names it.
    pub fn node(&mut self, node: u32) -> anyhow::Result<&mut Buffer> {
        let count = self.nodes.len();
        let index = (node as usize).checked_sub(1);
        index
            .and_then(|i| self.nodes.get_mut(i))
            .with_context(|| match count {
                0 => "the fault needs a buffer started by the rehearsal".to_string(),
                n => format!("there is no node {node}: the buffer has {n} node(s)"),
            })
    }

    async fn start_registry(&mut self) -> anyhow::Result<()> {
        let url = self.api_url.clone().expect("api url set");
        let mut config = RegistryConfig::new(url.clone());
        config.other_urls = self.api_urls.iter().skip(1).cloned().collect();
        config.token = self.options.api_token.clone();
        config.rate = self.options.registry_rate;
        config.batch = self.options.registry_batch;
        config.start_delay = self.options.registry_delay;
        if self.nodes.is_empty() {
            // A buffer that already held requests: this run's are the ones after its last seq.
            let stats = get_stats_of_any(&self.api_urls, self.options.api_token.as_deref())
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

    /// What the handover observer has seen.
    pub(super) fn handed_seen(&mut self) -> Option<Arc<Seen>> {
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

    /// Stops the buffer (SIGTERM) and every observer, flushing their records. Returns what the
    /// checks need and the notes.
    pub async fn teardown(&mut self) -> anyhow::Result<TornDown> {
        // The buffer's own highest stored seq, read before it stops: seqs up to it must all be
        // handed over (trailing gaps).
        let mut final_stats = None;
        if self.api_url.is_some() {
            match get_stats_of_any(&self.api_urls, self.options.api_token.as_deref()).await {
                Ok(stats) => final_stats = Some(stats),
                Err(e) => self.notes.push(format!(
                    "cannot read the buffer's stats at the end ({e:#}): trailing gaps are not checked"
                )),
            }
        }
        let commits = self.node_commits().await;
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
        for mut buffer in std::mem::take(&mut self.nodes) {
            match buffer.terminate(Duration::from_secs(20)).await? {
                Some(status) if !status.success() => self.notes.push(format!(
                    "the buffer exited with {status} after SIGTERM (see {})",
                    buffer.spec().log.display()
                )),
                _ => {}
            }
        }
        // After the nodes, which may still write to it as they stop.
        if let Some(database) = self.database.take() {
            let dir = database.dir().to_path_buf();
            database.shut_down().await;
            if !self.options.keep_data {
                let _ = std::fs::remove_dir_all(&dir);
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
        let stat = |key: &str| final_stats.as_ref().and_then(|s| s.pointer(key)?.as_u64());
        Ok(TornDown {
            first_seq: self.first_seq,
            highest_seq: stat("/accepted"),
            final_cursor: stat("/cursor"),
            final_queue_depth: stat("/queue_depth"),
            final_acks_pending: stat("/acks/pending"),
            options: self.options.clone(),
            layout: self.layout,
            commits,
            notes: std::mem::take(&mut self.notes),
        })
    }

    /// Each spawned node's group-commit counts since its last start (`commits`,
    /// `request_commits` and `committed_requests` of its `/v1/stats`), read before it stops.
    async fn node_commits(&self) -> Vec<NodeCommits> {
        let mut out = Vec::new();
        for (i, buffer) in self.nodes.iter().enumerate() {
            let url = buffer.endpoints().http_url();
            let Ok(stats) = get_stats_of_any(&[url], self.options.api_token.as_deref()).await
            else {
                continue;
            };
            out.push(NodeCommits {
                node: i as u32 + 1,
                starts: buffer.starts(),
                commits: stats["commits"].as_u64().unwrap_or(0),
                request_commits: stats["request_commits"].as_u64().unwrap_or(0),
                committed_requests: stats["committed_requests"].as_u64().unwrap_or(0),
            });
        }
        out
    }
}

/// What is left of a rehearsal's rig once stopped: what the checks need, and the notes.
pub struct TornDown {
    /// The first seq of this run.
    pub first_seq: Option<u64>,
    /// The buffer's highest stored seq at the end (`accepted` of `/v1/stats`).
    pub highest_seq: Option<u64>,
    /// Its cursor, queue depth and pending acks at the end.
    pub final_cursor: Option<u64>,
    pub final_queue_depth: Option<u64>,
    pub final_acks_pending: Option<u64>,
    pub options: RehearseOptions,
    /// How the spawned buffer was laid out.
    pub layout: BufferLayout,
    /// Each node's group-commit counts (rehearse.json's `commits`).
    pub commits: Vec<NodeCommits>,
    pub notes: Vec<String>,
}

/// One node's journal transactions and the requests they wrote, since its last start.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeCommits {
    /// 1-based.
    pub node: u32,
    /// How many times it was started (a kill and restart resets its counts).
    pub starts: u32,
    pub commits: u64,
    /// The commits that wrote at least one new request (not an ack mark or a cursor move alone).
    pub request_commits: u64,
    pub committed_requests: u64,
}

/// The nodes' group-commit factor: new requests per commit that wrote any, over all nodes;
/// `None` before the first such commit.
pub fn mean_batch(nodes: &[NodeCommits]) -> Option<f64> {
    let (commits, requests) = nodes.iter().fold((0, 0), |(c, r), node| {
        (c + node.request_commits, r + node.committed_requests)
    });
    (commits > 0).then(|| requests as f64 / commits as f64)
}
