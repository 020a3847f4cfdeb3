//! The fake registration system: pulls requests from a buffer's handover API at its own pace, as
//! the real back office would, and records each one as a line of `handed.jsonl`.
//!
//! Each round takes one batch — `GET /v1/requests?after=LAST&limit=BATCH&raw=true` — records every
//! request in it (seq, accepted-at, Message-ID, the `X-Landrush-Id` read from the raw mail, domain,
//! sender, when it was received), commits `POST /v1/cursor {"through": MAX_SEQ}`, then waits as long
//! as its capacity (`rate` requests a second) says those requests take to process. With nothing
//! new it polls again after `idle_poll`; errors (buffer restarting, …) are counted and retried.
//!
//! A [`RegistryHandle`] steers it while it runs: [`pause`](RegistryHandle::pause) /
//! [`resume`](RegistryHandle::resume) (a back office that stops for a while),
//! [`set_rate`](RegistryHandle::set_rate) (one that slows down), [`set_base_url`](RegistryHandle::set_base_url)
//! (a buffer restarted elsewhere). It can also start late (`start_delay`).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use reports::records::{HandedRecord, JsonlWriter, Stamp, handed_sha256};
use serde::Deserialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Seen, parse_request_mail};

/// The largest page the handover API serves.
pub const MAX_BATCH: usize = 1000;

/// How the fake registration system behaves.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// The handover API's base, `http://HOST:PORT` (the `/v1/…` paths are appended).
    pub base_url: String,
    /// Other bases serving the same handover (intake nodes sharing one journal): after a failed
    /// call the registry goes on with the next one, in turn, as a back office would.
    pub other_urls: Vec<String>,
    /// Bearer token for `/v1` calls, if the buffer wants one.
    pub token: Option<String>,
    /// Capacity in requests per second; 0 = as fast as the API serves them.
    pub rate: f64,
    /// Requests asked for per call (1..=1000).
    pub batch: usize,
    /// Start after this seq (0 for a fresh buffer; a buffer's cursor to skip what it held before).
    pub after: u64,
    /// Start this long after [`Registry::start`] (a back office that opens late).
    pub start_delay: Duration,
    /// Wait before asking again when there was nothing new.
    pub idle_poll: Duration,
}

impl RegistryConfig {
    pub fn new(base_url: impl Into<String>) -> Self {
        RegistryConfig {
            base_url: base_url.into(),
            other_urls: Vec::new(),
            token: None,
            rate: 0.0,
            batch: 500,
            after: 0,
            start_delay: Duration::ZERO,
            idle_poll: Duration::from_millis(20),
        }
    }
}

/// One request as `GET /v1/requests` serves it (only the fields the registry records).
#[derive(Debug, Deserialize)]
struct ApiRequest {
    seq: u64,
    #[serde(default)]
    accepted_at: Option<String>,
    #[serde(default)]
    message_id: Option<String>,
    #[serde(default)]
    sender: Option<String>,
    #[serde(default)]
    domain: Option<String>,
    #[serde(default)]
    raw: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ApiPage {
    requests: Vec<ApiRequest>,
}

struct Shared {
    paused: watch::Sender<bool>,
    stop: CancellationToken,
    base_url: Mutex<String>,
    rate: Mutex<f64>,
    last_seq: AtomicU64,
    batches: AtomicU64,
    errors: AtomicU64,
    last_error: Mutex<Option<String>>,
    seen: Arc<Seen>,
}

/// Steers a running [`Registry`]; cheap to clone.
#[derive(Clone)]
pub struct RegistryHandle {
    shared: Arc<Shared>,
}

impl RegistryHandle {
    /// Stops taking requests after the batch in hand (nothing is lost: the cursor says where it was).
    pub fn pause(&self) {
        self.shared.paused.send_replace(true);
    }

    pub fn resume(&self) {
        self.shared.paused.send_replace(false);
    }

    pub fn is_paused(&self) -> bool {
        *self.shared.paused.borrow()
    }

    /// Changes the capacity (requests per second, 0 = unlimited).
    pub fn set_rate(&self, rate: f64) {
        *self.shared.rate.lock().expect("rate poisoned") = rate.max(0.0);
    }

    /// Points the registry at another API base (a buffer restarted on another port).
    pub fn set_base_url(&self, url: impl Into<String>) {
        *self.shared.base_url.lock().expect("url poisoned") = url.into();
    }

    /// After a failed call to `failed`: goes on with the next of the configured bases (none
    /// without `other_urls`), unless someone pointed the registry elsewhere meanwhile.
    fn next_node(&self, config: &RegistryConfig, failed: &str) {
        if config.other_urls.is_empty() {
            return;
        }
        let all: Vec<String> = std::iter::once(&config.base_url)
            .chain(&config.other_urls)
            .map(|u| u.trim_end_matches('/').to_string())
            .collect();
        let mut url = self.shared.base_url.lock().expect("url poisoned");
        if *url != failed {
            return;
        }
        let at = all.iter().position(|u| u == failed).unwrap_or(0);
        *url = all[(at + 1) % all.len()].clone();
    }

    /// The highest seq taken so far.
    pub fn last_seq(&self) -> u64 {
        self.shared.last_seq.load(Ordering::Relaxed)
    }

    /// Failed calls so far (connection refused while the buffer restarts, …).
    pub fn errors(&self) -> u64 {
        self.shared.errors.load(Ordering::Relaxed)
    }

    pub fn last_error(&self) -> Option<String> {
        self.shared
            .last_error
            .lock()
            .expect("error poisoned")
            .clone()
    }

    /// X-Landrush-Ids and Message-IDs of every request taken.
    pub fn seen(&self) -> &Arc<Seen> {
        &self.shared.seen
    }
}

/// What the registry did, once finished.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryReport {
    /// Requests recorded (repeats included).
    pub handed: u64,
    pub batches: u64,
    pub errors: u64,
    pub last_seq: u64,
}

/// The running fake registration system.
pub struct Registry {
    handle: RegistryHandle,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Registry {
    /// Starts pulling per `config`, recording into `handed_path` (created now).
    pub fn start(config: RegistryConfig, handed_path: &Path) -> anyhow::Result<Registry> {
        anyhow::ensure!(
            (1..=MAX_BATCH).contains(&config.batch),
            "registry batch must be between 1 and {MAX_BATCH}"
        );
        let out = JsonlWriter::create(handed_path)?;
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .context("cannot build the HTTP client")?;
        let shared = Arc::new(Shared {
            paused: watch::channel(false).0,
            stop: CancellationToken::new(),
            base_url: Mutex::new(config.base_url.trim_end_matches('/').to_string()),
            rate: Mutex::new(config.rate.max(0.0)),
            last_seq: AtomicU64::new(config.after),
            batches: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            last_error: Mutex::new(None),
            seen: Arc::new(Seen::default()),
        });
        let handle = RegistryHandle { shared };
        let task = tokio::spawn(pull(config, client, handle.clone(), out));
        Ok(Registry { handle, task })
    }

    pub fn handle(&self) -> RegistryHandle {
        self.handle.clone()
    }

    /// Stops after the batch in hand, flushes `handed.jsonl` and reports.
    pub async fn finish(self) -> anyhow::Result<RegistryReport> {
        self.handle.shared.stop.cancel();
        self.task.await.context("registry task")??;
        let shared = &self.handle.shared;
        Ok(RegistryReport {
            handed: shared.seen.records(),
            batches: shared.batches.load(Ordering::Relaxed),
            errors: shared.errors.load(Ordering::Relaxed),
            last_seq: shared.last_seq.load(Ordering::Relaxed),
        })
    }
}

/// Sleeps until `until`, or less if stop is asked; returns true if stop was asked.
async fn nap(stop: &CancellationToken, until: Instant) -> bool {
    let slept = tokio::select! {
        _ = tokio::time::sleep_until(until) => true,
        _ = stop.cancelled() => false,
    };
    !slept || stop.is_cancelled()
}

async fn pull(
    config: RegistryConfig,
    client: reqwest::Client,
    handle: RegistryHandle,
    mut out: JsonlWriter<HandedRecord>,
) -> anyhow::Result<()> {
    let shared = &handle.shared;
    let stop = shared.stop.clone();
    let mut paused = shared.paused.subscribe();
    let mut next_allowed = Instant::now() + config.start_delay;
    loop {
        if nap(&stop, next_allowed).await {
            break;
        }
        if *paused.borrow() {
            tokio::select! {
                _ = paused.wait_for(|p| !*p) => {}
                _ = stop.cancelled() => break,
            }
        }
        let base = shared.base_url.lock().expect("url poisoned").clone();
        let after = shared.last_seq.load(Ordering::Relaxed);
        let page = match fetch(&client, &base, config.token.as_deref(), after, config.batch).await {
            Ok(page) => page,
            Err(e) => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
                *shared.last_error.lock().expect("error poisoned") = Some(format!("{e:#}"));
                next_allowed = Instant::now() + Duration::from_millis(100);
                handle.next_node(&config, &base);
                continue;
            }
        };
        let handed_at = Stamp::now();
        if page.requests.is_empty() {
            next_allowed = Instant::now() + config.idle_poll;
            continue;
        }
        let mut through = after;
        for request in &page.requests {
            let record = handed_record(request, handed_at);
            shared
                .seen
                .note([record.landrush_id.as_deref(), record.message_id.as_deref()]);
            out.write(&record)?;
            through = through.max(request.seq);
        }
        out.flush()?;
        shared.batches.fetch_add(1, Ordering::Relaxed);
        shared.last_seq.store(through, Ordering::Relaxed);
        if let Err(e) = commit(&client, &base, config.token.as_deref(), through).await {
            // The next pull goes on from what was taken; a buffer that lost the cursor redelivers.
            shared.errors.fetch_add(1, Ordering::Relaxed);
            *shared.last_error.lock().expect("error poisoned") = Some(format!("{e:#}"));
            handle.next_node(&config, &base);
        }
        let rate = *shared.rate.lock().expect("rate poisoned");
        // Processing the batch takes as long as the capacity says; then the next one is taken.
        next_allowed = Instant::now();
        if rate > 0.0 {
            next_allowed += Duration::from_secs_f64(page.requests.len() as f64 / rate);
        }
    }
    out.flush()
}

/// The record of one request the registry took, its keys read from the raw mail where the API
/// does not give them.
fn handed_record(request: &ApiRequest, handed_at: Stamp) -> HandedRecord {
    let mail = request
        .raw
        .as_deref()
        .map(|raw| parse_request_mail(raw.as_bytes()))
        .unwrap_or_default();
    HandedRecord {
        seq: request.seq,
        seq_is_order: false,
        accepted_at: request
            .accepted_at
            .as_deref()
            .and_then(|t| Stamp::parse(t).ok()),
        message_id: request.message_id.clone().or(mail.message_id),
        landrush_id: mail.landrush_id,
        domain: request.domain.clone().or(mail.domain),
        sender: request.sender.clone(),
        handed_at,
        source: "api".into(),
        raw_sha256: request
            .raw
            .as_deref()
            .map(|raw| handed_sha256(raw.as_bytes())),
    }
}

async fn fetch(
    client: &reqwest::Client,
    base: &str,
    token: Option<&str>,
    after: u64,
    limit: usize,
) -> anyhow::Result<ApiPage> {
    let url = format!("{base}/v1/requests?after={after}&limit={limit}&raw=true");
    let mut request = client.get(&url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.with_context(|| format!("GET {url}"))?;
    let status = response.status();
    anyhow::ensure!(status.is_success(), "GET {url}: HTTP {status}");
    response
        .json()
        .await
        .with_context(|| format!("GET {url}: not a page of requests"))
}

async fn commit(
    client: &reqwest::Client,
    base: &str,
    token: Option<&str>,
    through: u64,
) -> anyhow::Result<()> {
    let url = format!("{base}/v1/cursor");
    let mut request = client
        .post(&url)
        .json(&serde_json::json!({ "through": through }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = response.status();
    anyhow::ensure!(status.is_success(), "POST {url}: HTTP {status}");
    Ok(())
}
