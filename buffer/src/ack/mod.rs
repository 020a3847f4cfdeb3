//! Acknowledgement mails (contract: One ack): exactly one ack per accepted request, none for a
//! refused one or a retransmission, surviving crashes.
//!
//! - [`outbox`]: the durable outbox as the sender sees it. The journal queues an ack in the very
//!   transaction that stores its request, so no accepted request can lack one after a crash.
//! - [`sender`]: sends pending acks in seq order through the configured relay (lettre, pooled),
//!   marks each outcome in the journal, waits out relay outages.
//! - [`template`]: the mail itself; the body comes from an operator-replaceable template.
//!
//! Addressing rule (decided by the SMTP intake, [`AckRecipient`]): by default the ack goes to the
//! envelope sender (RFC 3834 §4); with `recipient = "header"` to the request's `Reply-To`, else
//! its `From`, else the envelope sender, the first that is a usable mailbox. The null sender and
//! a request with no usable address get no ack.

pub mod outbox;
pub mod relay;
pub mod sender;
pub mod template;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Deserialize;
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::ExtraStats;
pub use crate::intake::smtp::AckRecipient;
use crate::journal::now_micros;
use crate::prometheus::Kind::{Counter, Gauge};
use crate::prometheus::PrometheusText;
use outbox::{AckCounts, AckOutbox};
use template::Composer;

/// The `[ack]` section of the config file. Without it, no acks are queued or sent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckConfig {
    /// The SMTP relay acks are handed to, `host:port`.
    pub relay: String,
    /// The sender address of the acks (also the envelope sender).
    pub from: String,
    /// A display name for `from`.
    #[serde(default)]
    pub from_name: Option<String>,
    /// Where the ack of a mail request goes: `envelope` (the envelope sender) or `header`
    /// (`Reply-To`, else `From`, else the envelope sender).
    #[serde(default)]
    pub recipient: AckRecipient,
    /// Subject template (minijinja, same variables as the body).
    #[serde(default = "default_subject")]
    pub subject: String,
    /// Body template file (minijinja); the built-in bilingual text when absent.
    #[serde(default)]
    pub template: Option<PathBuf>,
    /// `none` (plain SMTP), `starttls` (required), or `tls` (implicit TLS, port 465).
    #[serde(default)]
    pub tls: AckTls,
    /// PEM file of the certificate authorities the relay's certificate must chain to, instead
    /// of the Mozilla roots (a private CA); only with `tls` = `starttls` or `tls`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// AUTH credentials; sent only inside TLS, never over a plain-text session.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// Acks in flight at once (and pooled relay connections).
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Most acks sent per second; 0 means no limit.
    #[serde(default)]
    pub rate_per_sec: f64,
    /// Temporary refusals (4xx) of one ack before it is marked failed.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// First wait after a failure; doubles each time up to `backoff_max_ms`.
    #[serde(default = "default_backoff_initial_ms")]
    pub backoff_initial_ms: u64,
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// Timeout of each SMTP command to the relay.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AckTls {
    #[default]
    None,
    Starttls,
    Tls,
}

fn default_subject() -> String {
    template::DEFAULT_SUBJECT.into()
}
fn default_concurrency() -> usize {
    4
}
fn default_max_attempts() -> u32 {
    10
}
fn default_backoff_initial_ms() -> u64 {
    1000
}
fn default_backoff_max_ms() -> u64 {
    60_000
}
fn default_timeout_secs() -> u64 {
    30
}

impl AckConfig {
    /// A config with every default, for tests and tools.
    pub fn new(relay: impl Into<String>, from: impl Into<String>) -> Self {
        AckConfig {
            relay: relay.into(),
            from: from.into(),
            from_name: None,
            recipient: AckRecipient::default(),
            subject: default_subject(),
            template: None,
            tls: AckTls::None,
            ca_file: None,
            username: None,
            password: None,
            concurrency: default_concurrency(),
            rate_per_sec: 0.0,
            max_attempts: default_max_attempts(),
            backoff_initial_ms: default_backoff_initial_ms(),
            backoff_max_ms: default_backoff_max_ms(),
            timeout_secs: default_timeout_secs(),
        }
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (1..=256).contains(&self.concurrency),
            "ack.concurrency must be between 1 and 256"
        );
        anyhow::ensure!(
            self.rate_per_sec >= 0.0 && self.rate_per_sec.is_finite(),
            "ack.rate_per_sec must be 0 (no limit) or positive"
        );
        anyhow::ensure!(
            self.max_attempts >= 1,
            "ack.max_attempts must be at least 1"
        );
        anyhow::ensure!(
            self.backoff_initial_ms >= 1 && self.backoff_max_ms >= self.backoff_initial_ms,
            "ack.backoff_initial_ms must be at least 1 and at most ack.backoff_max_ms"
        );
        anyhow::ensure!(
            self.timeout_secs >= 1,
            "ack.timeout_secs must be at least 1"
        );
        anyhow::ensure!(
            self.password.is_none() || self.username.is_some(),
            "ack.password needs ack.username"
        );
        anyhow::ensure!(
            self.ca_file.is_none() || self.tls != AckTls::None,
            "ack.ca_file is the CA of the relay's certificate: set ack.tls = \"starttls\" or \
             \"tls\" with it, or remove it"
        );
        Ok(())
    }
}

/// The ack part of `/v1/stats` (`"acks": {…}`) and `/metrics` (`barrage_acks_*`).
pub struct AckStats<O> {
    outbox: Arc<O>,
    enabled: bool,
    relay_up: Arc<AtomicBool>,
}

impl<O: AckOutbox> AckStats<O> {
    pub fn new(outbox: Arc<O>, enabled: bool, relay_up: Arc<AtomicBool>) -> Self {
        AckStats {
            outbox,
            enabled,
            relay_up,
        }
    }

    fn oldest_age_secs(counts: &AckCounts) -> f64 {
        counts
            .oldest_pending_at
            .map_or(0.0, |at| (now_micros() - at).max(0) as f64 / 1e6)
    }
}

impl<O: AckOutbox> ExtraStats for AckStats<O> {
    fn json(&self) -> serde_json::Map<String, serde_json::Value> {
        let c = self.outbox.ack_counts();
        let mut map = serde_json::Map::new();
        map.insert(
            "acks".into(),
            json!({
                "enabled": self.enabled,
                "relay_up": self.enabled && self.relay_up.load(Ordering::Relaxed),
                "pending": c.pending,
                "sent": c.sent,
                "failed": c.failed,
                "oldest_pending_age_secs": Self::oldest_age_secs(&c),
            }),
        );
        map
    }

    fn prometheus(&self) -> String {
        let c = self.outbox.ack_counts();
        let mut text = PrometheusText::new();
        text.metric(
            "acks_enabled",
            Gauge,
            "1 when an [ack] section is configured.",
            u8::from(self.enabled),
        );
        text.metric(
            "acks_pending",
            Gauge,
            "Acks queued, not yet sent.",
            c.pending,
        );
        text.metric(
            "acks_sent_total",
            Counter,
            "Acks the relay accepted.",
            c.sent,
        );
        text.metric(
            "acks_failed_total",
            Counter,
            "Acks given up for good.",
            c.failed,
        );
        text.metric(
            "acks_oldest_pending_age_seconds",
            Gauge,
            "Age of the oldest pending ack (0 when none).",
            Self::oldest_age_secs(&c),
        );
        text.into_string()
    }
}

/// What [`start`] returns to the server: the stats to expose and the sender to wait for.
pub struct Acks {
    pub stats: Arc<dyn ExtraStats>,
    pub sender: Option<JoinHandle<()>>,
}

/// Starts the ack sender when `config` is `Some` (checking the templates first); either way
/// returns the stats for the operations API.
pub fn start<O: AckOutbox>(
    config: Option<&AckConfig>,
    outbox: Arc<O>,
    instance_id: &str,
    hostname: &str,
    signer: Arc<crate::signing::Signer>,
    stop: CancellationToken,
) -> anyhow::Result<Acks> {
    let relay_up = Arc::new(AtomicBool::new(true));
    let stats = Arc::new(AckStats::new(
        outbox.clone(),
        config.is_some(),
        relay_up.clone(),
    ));
    let Some(config) = config else {
        return Ok(Acks {
            stats,
            sender: None,
        });
    };
    config.validate()?;
    let composer = Arc::new(Composer::new(config, instance_id, hostname)?.with_signer(signer));
    let sender = sender::AckSender::new(outbox, composer, config.clone(), relay_up, hostname)?;
    tracing::info!("acks go through {} from {}", config.relay, config.from);
    Ok(Acks {
        stats,
        sender: Some(tokio::spawn(sender.run(stop))),
    })
}

/// `barrage ack preview`: the ack of a sample request as the requester would see it.
pub fn preview(config: &AckConfig, hostname: &str) -> anyhow::Result<String> {
    config.validate()?;
    let composer = Composer::new(config, "0123456789abcdef", hostname)?;
    Ok(composer.preview()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_without_tls_is_refused() {
        let mut config = AckConfig::new("127.0.0.1:25", "registry@example.fr");
        config.ca_file = Some("/etc/barrage/relay-ca.pem".into());
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("ack.ca_file"), "{error}");
        config.tls = AckTls::Starttls;
        config.validate().expect("a CA file with STARTTLS");
    }
}
