//! The running parts of a rehearsal, started and stopped together: the buffer (when the
//! rehearsal spawns it), the ack sink, the handover observer (fake registry, SMTP sink or Maildir)
//! and the stats sampler. Faults steer them through [`Rig`]'s public fields.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use reports::records::{self, JsonlWriter};

use super::buffer::{BUFFER_CONFIG, BUFFER_LOG, Buffer, BufferProgram, BufferSpec, buffer_config};
use super::options::{Handover, RehearseOptions, Target};
use super::sampler::{Sampler, get_stats};
use super::tls;
use crate::driver::smtp::tls::ClientTls;
use crate::observe::maildir::{self, MaildirWatcher};
use crate::observe::registry::{Registry, RegistryConfig, RegistryHandle, RegistryReport};
use crate::observe::{Seen, acksink, smtp_handover};

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
        let mut config = buffer_config(&data_dir, self.ack_sink.as_ref().map(|s| s.addr()));
        let certificate = match self.options.tls {
            Some(mode) => {
                let certificate = tls::throwaway_certificate(&self.out_dir.join(tls::TLS_DIR))?;
                config.push_str(&tls::smtp_section(mode, &certificate));
                Some(certificate)
            }
            None => None,
        };
        std::fs::write(&config_path, config)?;
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
        if let Some(certificate) = &certificate {
            let host = endpoints.smtp.ip().to_string();
            self.client_tls = Some(tls::client(certificate, &host)?);
        }
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
        if let Some(url) = &self.api_url {
            match get_stats(url, self.options.api_token.as_deref()).await {
                Ok(stats) => final_stats = Some(stats),
                Err(e) => self.notes.push(format!(
                    "cannot read the buffer's stats at the end ({e:#}): trailing gaps are not checked"
                )),
            }
        }
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
        let stat = |key: &str| final_stats.as_ref().and_then(|s| s.pointer(key)?.as_u64());
        Ok(TornDown {
            first_seq: self.first_seq,
            highest_seq: stat("/accepted"),
            final_cursor: stat("/cursor"),
            final_queue_depth: stat("/queue_depth"),
            final_acks_pending: stat("/acks/pending"),
            options: self.options.clone(),
            notes: std::mem::take(&mut self.notes),
        })
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
    pub notes: Vec<String>,
}
