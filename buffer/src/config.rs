//! barrage's settings: the TOML config file (`buffer/barrage.example.toml` documents every key)
//! and the command-line flags that override it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

use crate::ack::AckConfig;
use crate::anvil::ClientLimits;
use crate::api::ApiLimits;
use crate::intake::web::WebLimits;
use crate::journal::postgres::PostgresOptions;
use crate::journal::sqlite::SqliteOptions;
use crate::journal::sqlite::storage::StorageOptions;
use crate::smtp::{Recipients, SmtpLimits, SmtpTls};
use crate::tls::{Certificates, TlsMode};

/// `smtp.max_message_size` unless configured.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 * 1024;

/// The longest `journal.commit_delay_us`: beyond a few milliseconds the wait costs more latency
/// than any batch saves.
const MAX_COMMIT_DELAY_US: u64 = 10_000;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the journal lives; locked by one barrage at a time.
    pub data_dir: PathBuf,
    /// The name barrage gives itself in SMTP greetings and generated Message-IDs.
    pub hostname: String,
    /// Threads serving connections (SMTP, web, API, acks); 0 = one per core but one, which is
    /// left to the journal writer thread.
    pub workers: usize,
    pub smtp: SmtpConfig,
    pub http: HttpConfig,
    /// The public web intake (`GET /` form, `POST /requests`).
    pub web: WebConfig,
    pub journal: JournalConfig,
    /// Disk reserve, queue bound, WAL and page sizes.
    pub storage: StorageConfig,
    /// Acknowledgement mails; `None` (no `[ack]` section): no acks are queued or sent.
    pub ack: Option<AckConfig>,
    /// Per-client limits and deadlines of both intakes (contract: Fair intake).
    pub fair: FairConfig,
    /// The key that signs checkpoints and receipts (contract: Provable order).
    pub signing: SigningConfig,
}

/// `[signing]`: where the signing key comes from.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SigningConfig {
    /// An Ed25519 private key in PKCS#8 (DER or PEM), mode 0600 or stricter; `None`: the data
    /// dir's `signing-key.pk8`, made at first start.
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    pub listen: SocketAddr,
    pub max_message_size: usize,
    pub max_line_length: usize,
    pub max_recipients: usize,
    /// The recipient addresses taken, compared case-insensitively; others get `550 5.1.1`.
    /// Empty: any recipient.
    pub recipients: Vec<String>,
    pub max_connections: usize,
    pub command_timeout_secs: u64,
    pub data_timeout_secs: u64,
    pub max_commands: usize,
    /// STARTTLS: `off`, `may` (offered) or `required` (530 to MAIL before it).
    pub tls: TlsMode,
    /// PEM certificate chain (server certificate first) and PEM private key; reread on SIGHUP.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    pub api_token: Option<String>,
    /// A file holding the token (its first line), instead of `api_token`.
    pub api_token_file: Option<PathBuf>,
    /// Most open connections to the handover API; more get 503 and are closed.
    pub max_connections: usize,
    /// Seconds a client may take to send its request headers.
    pub header_timeout_secs: u64,
    /// Seconds a client may take to send its body (then 408).
    pub request_timeout_secs: u64,
    /// With a token configured, `/metrics` needs it too.
    pub metrics_require_token: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub min_free_bytes: u64,
    pub min_free_percent: f64,
    pub max_queue_depth: u64,
    pub wal_size_limit_bytes: u64,
    pub max_page_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// False: no web intake at all (SMTP only).
    pub enabled: bool,
    pub listen: SocketAddr,
    pub max_body_size: usize,
    pub max_connections: usize,
    pub max_concurrent_requests: usize,
    pub header_timeout_secs: u64,
    pub request_timeout_secs: u64,
    pub retry_after_secs: u64,
    /// HTTPS on `listen` with this PEM certificate chain and PEM key (both or neither); reread
    /// on SIGHUP.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalConfig {
    /// A PostgreSQL journal shared by several nodes (`postgres://USER@HOST:PORT/DB`); `None`:
    /// the SQLite journal in the data dir.
    pub url: Option<String>,
    pub max_batch: usize,
    /// SQLite: microseconds the writer waits for more before committing a small batch while
    /// requests arrive together; 0: never.
    pub commit_delay_us: u64,
    pub queue_capacity: usize,
    pub dedup_window_secs: u64,
    /// PostgreSQL: connections this node keeps to the database.
    pub pool_size: usize,
    /// PostgreSQL: how long a node owns the acks it claimed before another node may send them.
    pub ack_lease_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./barrage-data"),
            hostname: SmtpLimits::default().hostname,
            workers: 0,
            smtp: SmtpConfig::default(),
            http: HttpConfig::default(),
            web: WebConfig::default(),
            journal: JournalConfig::default(),
            storage: StorageConfig::default(),
            ack: None,
            fair: FairConfig::default(),
            signing: SigningConfig::default(),
        }
    }
}

impl Default for SmtpConfig {
    fn default() -> Self {
        let limits = SmtpLimits::default();
        SmtpConfig {
            listen: "127.0.0.1:2525".parse().expect("valid address"),
            // A request form is a few hundred bytes: 64 KiB leaves room for a signature and
            // attachments of prose, and bounds what every stored request may cost.
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_line_length: limits.max_line_length,
            max_recipients: limits.max_recipients,
            recipients: Vec::new(),
            max_connections: limits.max_connections,
            command_timeout_secs: limits.command_timeout.as_secs(),
            data_timeout_secs: limits.data_timeout.as_secs(),
            max_commands: limits.max_commands,
            tls: TlsMode::Off,
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:8025".parse().expect("valid address"),
            api_token: None,
            api_token_file: None,
            max_connections: 256,
            header_timeout_secs: 10,
            request_timeout_secs: 30,
            metrics_require_token: true,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        let options = StorageOptions::default();
        StorageConfig {
            min_free_bytes: options.min_free_bytes,
            min_free_percent: options.min_free_percent,
            max_queue_depth: options.max_queue_depth,
            wal_size_limit_bytes: options.wal_size_limit,
            max_page_bytes: options.page_bytes,
        }
    }
}

impl Default for WebConfig {
    fn default() -> Self {
        let limits = WebLimits::default();
        WebConfig {
            enabled: true,
            listen: "127.0.0.1:8080".parse().expect("valid address"),
            max_body_size: limits.max_body_size,
            max_connections: limits.max_connections,
            max_concurrent_requests: limits.max_concurrent_requests,
            header_timeout_secs: limits.header_timeout.as_secs(),
            request_timeout_secs: limits.request_timeout.as_secs(),
            retry_after_secs: limits.retry_after_secs,
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl Default for JournalConfig {
    fn default() -> Self {
        let options = SqliteOptions::default();
        JournalConfig {
            url: None,
            max_batch: options.max_batch,
            commit_delay_us: options.commit_delay.as_micros() as u64,
            queue_capacity: options.queue_capacity,
            dedup_window_secs: (options.dedup_window_us / 1_000_000) as u64,
            pool_size: 8,
            ack_lease_secs: 60,
        }
    }
}

impl Config {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("config file {} is invalid", path.display()))
    }

    /// Refuses settings that cannot work, with a message saying what to change.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.smtp.validate()?;
        self.web.validate()?;
        self.journal.validate()?;
        if let Some(ack) = &self.ack {
            ack.validate()?;
        }
        self.storage.validate()?;
        self.http.validate()?;
        self.fair
            .validate(self.smtp.max_connections, self.web.max_connections)?;
        if !self.http.listen.ip().is_loopback() && self.http.api_token.is_none() {
            anyhow::bail!(
                "the handover API would listen on {} without a token: anyone on the network could \
                 take requests. Set --api-token (or http.api_token), or listen on 127.0.0.1",
                self.http.listen
            );
        }
        Ok(())
    }

    /// The number of connection-serving threads `workers` stands for.
    pub fn worker_threads(&self) -> usize {
        if self.workers > 0 {
            return self.workers;
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        cores.saturating_sub(1).max(1)
    }

    pub fn smtp_limits(&self) -> SmtpLimits {
        let s = &self.smtp;
        SmtpLimits {
            hostname: self.hostname.clone(),
            max_message_size: s.max_message_size,
            max_line_length: s.max_line_length,
            max_recipients: s.max_recipients,
            recipients: Recipients::new(&s.recipients)
                .expect("smtp.recipients is checked by Config::validate"),
            max_connections: s.max_connections,
            command_timeout: Duration::from_secs(s.command_timeout_secs),
            data_timeout: Duration::from_secs(s.data_timeout_secs),
            max_commands: s.max_commands,
            ..self.fair.apply_to_smtp()
        }
    }

    /// The SMTP intake's STARTTLS, its certificate loaded; `None` with `smtp.tls = "off"`.
    pub fn smtp_tls(&self) -> anyhow::Result<Option<SmtpTls>> {
        let s = &self.smtp;
        let (Some(cert), Some(key)) = (&s.tls_cert, &s.tls_key) else {
            return Ok(None);
        };
        if s.tls == TlsMode::Off {
            return Ok(None);
        }
        let certificates = Certificates::load(cert, key, &[])
            .context("smtp.tls_cert / smtp.tls_key cannot be used")?;
        Ok(Some(SmtpTls {
            mode: s.tls,
            certificates,
        }))
    }

    pub fn api_limits(&self) -> ApiLimits {
        let h = &self.http;
        ApiLimits {
            max_connections: h.max_connections,
            header_timeout: Duration::from_secs(h.header_timeout_secs),
            request_timeout: Duration::from_secs(h.request_timeout_secs),
            metrics_require_token: h.metrics_require_token,
        }
    }

    pub fn web_limits(&self) -> WebLimits {
        let w = &self.web;
        WebLimits {
            max_body_size: w.max_body_size,
            max_connections: w.max_connections,
            max_concurrent_requests: w.max_concurrent_requests,
            header_timeout: Duration::from_secs(w.header_timeout_secs),
            request_timeout: Duration::from_secs(w.request_timeout_secs),
            retry_after_secs: w.retry_after_secs,
            clients: self.fair.web_clients(),
            tls: None,
        }
    }

    /// The web intake's certificate, loaded; `None` without `web.tls_cert`.
    pub fn web_tls(&self) -> anyhow::Result<Option<Arc<Certificates>>> {
        let (Some(cert), Some(key)) = (&self.web.tls_cert, &self.web.tls_key) else {
            return Ok(None);
        };
        // hyper serves HTTP/1.1 only here.
        let certificates = Certificates::load(cert, key, &[b"http/1.1"])
            .context("web.tls_cert / web.tls_key cannot be used")?;
        Ok(Some(certificates))
    }

    /// The PostgreSQL journal's options, when `journal.url` names one.
    pub fn postgres_options(&self) -> Option<PostgresOptions> {
        let j = &self.journal;
        Some(PostgresOptions {
            url: j.url.clone()?,
            max_batch: j.max_batch,
            queue_capacity: j.queue_capacity,
            dedup_window_us: j.dedup_window_secs as i64 * 1_000_000,
            acks: self.ack.is_some(),
            pool_size: j.pool_size,
            ack_lease_us: j.ack_lease_secs as i64 * 1_000_000,
            max_queue_depth: self.storage.max_queue_depth,
            page_bytes: self.storage.max_page_bytes,
        })
    }

    pub fn journal_options(&self) -> SqliteOptions {
        SqliteOptions {
            max_batch: self.journal.max_batch,
            commit_delay: std::time::Duration::from_micros(self.journal.commit_delay_us),
            queue_capacity: self.journal.queue_capacity,
            dedup_window_us: self.journal.dedup_window_secs as i64 * 1_000_000,
            acks: self.ack.is_some(),
            storage: StorageOptions {
                min_free_bytes: self.storage.min_free_bytes,
                min_free_percent: self.storage.min_free_percent,
                max_queue_depth: self.storage.max_queue_depth,
                wal_size_limit: self.storage.wal_size_limit_bytes,
                page_bytes: self.storage.max_page_bytes,
            },
        }
    }
}

/// `[fair]`: per-client limits and deadlines (contract: Fair intake). The reasoning behind the
/// defaults is in `buffer/barrage.example.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FairConfig {
    /// Networks no per-client limit applies to.
    pub exempt: Vec<ipnet::IpNet>,
    /// Clients each intake tracks at once (bounds the tables' memory).
    pub max_tracked_clients: usize,
    /// SMTP connections one client holds at once (0: no limit).
    pub smtp_connections_per_client: usize,
    /// New SMTP connections per client per minute (0: no limit).
    pub smtp_connection_rate: u32,
    /// Messages (MAIL FROM) per client per minute (0: no limit).
    pub smtp_message_rate: u32,
    /// Web POSTs one client has in flight at once (0: no limit).
    pub web_requests_per_client: usize,
    /// Web POSTs per client per minute (0: no limit).
    pub web_post_rate: u32,
    /// Bytes per second that earn a DATA phase one more second past `smtp.data_timeout_secs`.
    pub min_data_rate: usize,
    /// Absolute deadline of a DATA phase, seconds.
    pub max_data_secs: u64,
    /// Junk commands (NOOP, RSET, VRFY, HELP, unknown) between two accepted messages.
    pub max_junk_commands: usize,
    /// Percent of `smtp.max_connections` in use above which idle sessions of the busiest client
    /// are closed (0: never).
    pub stress_high_water_percent: u8,
}

impl Default for FairConfig {
    fn default() -> Self {
        let smtp = SmtpLimits::default();
        let web = WebLimits::default();
        FairConfig {
            exempt: smtp.clients.exempt.clone(),
            max_tracked_clients: smtp.clients.max_clients,
            smtp_connections_per_client: smtp.clients.max_connections,
            smtp_connection_rate: smtp.clients.connection_rate,
            smtp_message_rate: smtp.clients.message_rate,
            web_requests_per_client: web.clients.max_connections,
            web_post_rate: web.clients.connection_rate,
            min_data_rate: smtp.min_data_rate,
            max_data_secs: smtp.max_data_time.as_secs(),
            max_junk_commands: smtp.max_junk_commands,
            stress_high_water_percent: smtp.stress_high_water_percent,
        }
    }
}

impl FairConfig {
    fn validate(&self, smtp_connections: usize, web_connections: usize) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.max_tracked_clients >= smtp_connections.max(web_connections),
            "fair.max_tracked_clients must be at least smtp.max_connections and \
             web.max_connections, so that every connected client can be tracked"
        );
        anyhow::ensure!(
            self.stress_high_water_percent <= 100,
            "fair.stress_high_water_percent must be between 0 and 100"
        );
        anyhow::ensure!(
            self.max_data_secs >= 1,
            "fair.max_data_secs must be at least 1"
        );
        Ok(())
    }

    /// The SMTP server's fair-intake limits (the rest of `SmtpLimits` comes from `[smtp]`).
    fn apply_to_smtp(&self) -> SmtpLimits {
        SmtpLimits {
            min_data_rate: self.min_data_rate,
            max_data_time: Duration::from_secs(self.max_data_secs),
            max_junk_commands: self.max_junk_commands,
            stress_high_water_percent: self.stress_high_water_percent,
            clients: ClientLimits {
                max_connections: self.smtp_connections_per_client,
                connection_rate: self.smtp_connection_rate,
                message_rate: self.smtp_message_rate,
                max_clients: self.max_tracked_clients,
                exempt: self.exempt.clone(),
            },
            ..SmtpLimits::default()
        }
    }

    fn web_clients(&self) -> ClientLimits {
        ClientLimits {
            max_connections: self.web_requests_per_client,
            connection_rate: self.web_post_rate,
            message_rate: 0,
            max_clients: self.max_tracked_clients,
            exempt: self.exempt.clone(),
        }
    }
}

impl SmtpConfig {
    /// Refuses this section's settings that cannot work, naming the key to change.
    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.max_message_size >= 1024,
            "smtp.max_message_size must be at least 1024"
        );
        anyhow::ensure!(
            (80..=1_000_000).contains(&self.max_line_length),
            "smtp.max_line_length must be between 80 and 1000000"
        );
        anyhow::ensure!(
            self.max_recipients >= 1,
            "smtp.max_recipients must be at least 1"
        );
        anyhow::ensure!(
            self.max_connections >= 1,
            "smtp.max_connections must be at least 1"
        );
        if let Err(bad) = Recipients::new(&self.recipients) {
            anyhow::bail!(
                "smtp.recipients: {bad:?} is not an address: write each as local@domain, \
                 without <> or spaces"
            );
        }
        anyhow::ensure!(
            self.tls == TlsMode::Off || (self.tls_cert.is_some() && self.tls_key.is_some()),
            "smtp.tls = \"may\" or \"required\" needs smtp.tls_cert and smtp.tls_key (PEM files)"
        );
        Ok(())
    }
}

impl WebConfig {
    /// Refuses this section's settings that cannot work, naming the key to change.
    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.tls_cert.is_some() == self.tls_key.is_some(),
            "give both web.tls_cert and web.tls_key (PEM files), or neither for plain HTTP"
        );
        anyhow::ensure!(
            (256..=64 * 1024 * 1024).contains(&self.max_body_size),
            "web.max_body_size must be between 256 and 67108864"
        );
        anyhow::ensure!(
            self.max_connections >= 1 && self.max_concurrent_requests >= 1,
            "web.max_connections and web.max_concurrent_requests must be at least 1"
        );
        anyhow::ensure!(
            self.header_timeout_secs >= 1 && self.request_timeout_secs >= 1,
            "web.header_timeout_secs and web.request_timeout_secs must be at least 1"
        );
        Ok(())
    }
}

impl JournalConfig {
    /// Refuses this section's settings that cannot work, naming the key to change.
    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.max_batch >= 1, "journal.max_batch must be at least 1");
        anyhow::ensure!(
            self.commit_delay_us <= MAX_COMMIT_DELAY_US,
            "journal.commit_delay_us is {}: at most {MAX_COMMIT_DELAY_US} (every request of a busy \
             moment waits that long for its reply); 300 is the default, 0 turns it off",
            self.commit_delay_us
        );
        anyhow::ensure!(
            self.queue_capacity >= self.max_batch,
            "journal.queue_capacity must be at least journal.max_batch"
        );
        if let Some(url) = &self.url {
            anyhow::ensure!(
                url.starts_with("postgres://") || url.starts_with("postgresql://"),
                "journal.url (--journal) must be a PostgreSQL URL, postgres://USER@HOST:PORT/DB"
            );
        }
        anyhow::ensure!(
            (1..=64).contains(&self.pool_size),
            "journal.pool_size must be between 1 and 64"
        );
        anyhow::ensure!(
            self.ack_lease_secs >= 1,
            "journal.ack_lease_secs must be at least 1"
        );
        Ok(())
    }
}

impl StorageConfig {
    /// Refuses this section's settings that cannot work, naming the key to change.
    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (0.0..=50.0).contains(&self.min_free_percent),
            "storage.min_free_percent must be between 0 and 50"
        );
        anyhow::ensure!(
            self.max_page_bytes >= 4096,
            "storage.max_page_bytes must be at least 4096"
        );
        Ok(())
    }
}

impl HttpConfig {
    /// Refuses this section's settings that cannot work, naming the key to change.
    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.max_connections >= 1
                && self.header_timeout_secs >= 1
                && self.request_timeout_secs >= 1,
            "http.max_connections, http.header_timeout_secs and http.request_timeout_secs must \
             be at least 1"
        );
        if self
            .api_token
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            anyhow::bail!(
                "the API token is empty: every client would pass. Give a real token (at least \
                 one character; a long random one, e.g. `openssl rand -hex 32`), or none"
            );
        }
        Ok(())
    }
}
