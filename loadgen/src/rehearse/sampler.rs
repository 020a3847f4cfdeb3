//! The buffer's `/v1/stats`, read once ([`get_stats`]) or sampled through the run into
//! `stats.jsonl` ([`Sampler`]).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use reports::records::{JsonlWriter, Stamp, StatsSample};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Reads the buffer's `/v1/stats` once.
pub async fn get_stats(base: &str, token: Option<&str>) -> anyhow::Result<Value> {
    get_stats_of_any(&[base.to_string()], token).await
}

/// Reads `/v1/stats` once from the first of `bases` (intake nodes sharing one journal) that
/// answers; the last one's error when none does.
pub async fn get_stats_of_any(bases: &[String], token: Option<&str>) -> anyhow::Result<Value> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()?;
    fetch_any(&client, bases, token).await
}

async fn fetch_any(
    client: &reqwest::Client,
    bases: &[String],
    token: Option<&str>,
) -> anyhow::Result<Value> {
    let mut last = anyhow::anyhow!("no handover API to read /v1/stats from");
    for base in bases {
        match fetch_stats(client, base, token).await {
            Ok(stats) => return Ok(stats),
            Err(e) => last = e.context(format!("{base}/v1/stats")),
        }
    }
    Err(last)
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
pub struct Sampler {
    stop: CancellationToken,
    last: Arc<Mutex<Option<StatsSample>>>,
    task: JoinHandle<anyhow::Result<()>>,
}

/// How often the stats are sampled.
pub const STATS_INTERVAL: Duration = Duration::from_millis(250);

impl Sampler {
    /// Samples the first of `bases` that answers (intake nodes sharing one journal, whose stats
    /// are the journal's).
    pub fn start(
        bases: Vec<String>,
        token: Option<String>,
        path: &Path,
    ) -> anyhow::Result<Sampler> {
        let mut out = JsonlWriter::<StatsSample>::create(path)?;
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()?;
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let last = Arc::new(Mutex::new(None));
        let shared = last.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(STATS_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.cancelled() => break,
                }
                // A buffer down for a moment (restart) has no stats: skip the sample.
                let Ok(stats) = fetch_any(&client, &bases, token.as_deref()).await else {
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
    pub fn idle(&self) -> bool {
        match &*self.last.lock().expect("sample poisoned") {
            Some(s) => s.queue_depth == 0 && s.acks_pending.unwrap_or(0) == 0,
            None => true,
        }
    }

    /// The buffer itself said, in a sample taken at or after `since`, that it has nothing left to
    /// hand over or ack: the buffer's own "done".
    pub fn said_idle_since(&self, since: Stamp) -> bool {
        match &*self.last.lock().expect("sample poisoned") {
            Some(s) => {
                s.at.micros() >= since.micros()
                    && s.queue_depth == 0
                    && s.acks_pending.unwrap_or(0) == 0
            }
            None => false,
        }
    }

    /// What changes while the buffer makes progress.
    pub fn progress_key(&self) -> Option<(u64, u64, Option<u64>)> {
        self.last
            .lock()
            .expect("sample poisoned")
            .as_ref()
            .map(|s| (s.accepted, s.cursor, s.acks_pending))
    }

    pub async fn finish(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.task.await.context("stats sampler")?
    }
}
