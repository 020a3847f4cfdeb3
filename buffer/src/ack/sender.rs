//! The ack sender: one task that sends pending acks in seq order through the relay and records
//! each outcome in the journal.
//!
//! - Acks are dispatched in seq order, up to `concurrency` at a time over pooled relay
//!   connections ([`Relay`]), paced by `rate_per_sec` when set.
//! - The relay unreachable (connection refused, timeout, TLS failure, 421): nothing is marked, the
//!   sender pauses with exponential backoff and starts again from the lowest pending seq. An
//!   outage never counts against an ack, so acks simply wait for the relay.
//! - The relay refuses one message temporarily (4xx): retried with backoff, up to `max_attempts`.
//!   Permanently (5xx) or an ack that cannot be composed (bad address): marked failed.
//! - An ack is marked sent only after the relay accepted it. A crash in between resends it after
//!   restart with the same Message-ID (never a second, different ack).

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::AckConfig;
use super::outbox::{AckMark, AckOutbox, PendingAck};
use super::relay::{Relay, SendError};
use super::template::Composer;
use crate::journal::now_micros;

/// Pending acks read from the journal at a time.
const PAGE: usize = 256;
/// How often the sender looks at the outbox when nothing wakes it (retries coming due).
const POLL: Duration = Duration::from_millis(500);

/// What one delivery attempt came to.
enum Outcome {
    Sent,
    /// This message refused for now.
    Retry(String),
    /// This message refused for good.
    Failed(String),
    /// The relay could not be used at all: nothing learned about this message.
    RelayDown(String),
}

pub struct AckSender<O> {
    outbox: Arc<O>,
    composer: Arc<Composer>,
    relay: Arc<Relay>,
    config: AckConfig,
    /// False while the sender waits for the relay to come back.
    relay_up: Arc<AtomicBool>,
}

impl<O: AckOutbox> AckSender<O> {
    pub fn new(
        outbox: Arc<O>,
        composer: Arc<Composer>,
        config: AckConfig,
        relay_up: Arc<AtomicBool>,
        hostname: &str,
    ) -> anyhow::Result<Self> {
        Ok(AckSender {
            relay: Arc::new(Relay::new(&config, hostname)?),
            outbox,
            composer,
            config,
            relay_up,
        })
    }

    fn backoff(&self, step: u32) -> Duration {
        let ms = self
            .config
            .backoff_initial_ms
            .saturating_mul(1u64 << step.min(30))
            .min(self.config.backoff_max_ms);
        Duration::from_millis(ms)
    }

    /// Sends acks until `stop` is cancelled; acks in flight then are left pending (sent again,
    /// with the same Message-ID, by the next run).
    pub async fn run(self, stop: CancellationToken) {
        let mut queue: VecDeque<PendingAck> = VecDeque::new();
        let mut in_flight: BTreeSet<u64> = BTreeSet::new();
        let mut tasks: JoinSet<(u64, u32, Outcome)> = JoinSet::new();
        let mut marks: Vec<AckMark> = Vec::new();
        let mut done: Vec<u64> = Vec::new();
        let mut after = 0u64;
        let mut outage_steps = 0u32;
        let mut paused_until: Option<Instant> = None;
        let mut next_slot = Instant::now();
        let interval = (self.config.rate_per_sec > 0.0)
            .then(|| Duration::from_secs_f64(1.0 / self.config.rate_per_sec));

        loop {
            if stop.is_cancelled() {
                break;
            }
            if paused_until.is_some_and(|t| t <= Instant::now()) {
                paused_until = None;
            }
            // Dispatch, in seq order, as many as the concurrency allows.
            let mut wrapped = false;
            while paused_until.is_none() && tasks.len() < self.config.concurrency {
                let Some(ack) = queue.pop_front() else {
                    match self.outbox.pending_acks(after, now_micros(), PAGE).await {
                        Ok(page) if page.is_empty() => {
                            // At the end: start again from the lowest pending seq (retries due).
                            if after == 0 || wrapped {
                                break;
                            }
                            after = 0;
                            wrapped = true;
                        }
                        Ok(page) => {
                            after = page.last().map_or(after, |a| a.seq);
                            queue.extend(page.into_iter().filter(|a| !in_flight.contains(&a.seq)));
                        }
                        Err(e) => {
                            tracing::warn!("cannot read the ack outbox: {e}");
                            break;
                        }
                    }
                    continue;
                };
                if let Some(interval) = interval {
                    let now = Instant::now();
                    if next_slot < now {
                        next_slot = now;
                    }
                    tokio::time::sleep_until(next_slot).await;
                    next_slot += interval;
                }
                in_flight.insert(ack.seq);
                let attempts = ack.attempts;
                let seq = ack.seq;
                match self.composer.compose(&ack) {
                    Ok(mail) => {
                        let relay = self.relay.clone();
                        tasks.spawn(async move {
                            let outcome = match relay.send(&mail).await {
                                Ok(()) => Outcome::Sent,
                                Err(SendError::Relay(e)) => Outcome::RelayDown(e),
                                Err(SendError::Smtp(e)) => classify(&e),
                            };
                            (seq, attempts, outcome)
                        });
                    }
                    Err(e) => {
                        tracing::warn!("ack of ticket {seq} cannot be composed: {e}");
                        tasks.spawn(async move { (seq, attempts, Outcome::Failed(e.to_string())) });
                    }
                }
            }

            // Wait for an outcome, new acks, a retry coming due, the end of a pause, or stop.
            let wake = match paused_until {
                Some(t) => t,
                None => Instant::now() + POLL,
            };
            let first = tokio::select! {
                joined = tasks.join_next(), if !tasks.is_empty() => joined,
                _ = self.outbox.acks_queued(), if tasks.is_empty() && paused_until.is_none() => None,
                _ = tokio::time::sleep_until(wake) => None,
                _ = stop.cancelled() => None,
            };
            let mut outcomes: Vec<_> = first.into_iter().collect();
            while let Some(joined) = tasks.try_join_next() {
                outcomes.push(joined);
            }
            for joined in outcomes {
                let Ok((seq, attempts, outcome)) = joined else {
                    continue;
                };
                let now = now_micros();
                match outcome {
                    Outcome::Sent => {
                        outage_steps = 0;
                        if !self.relay_up.swap(true, Ordering::Relaxed) {
                            tracing::info!("ack relay {} is back", self.config.relay);
                        }
                        marks.push(AckMark::Sent { seq, at: now });
                    }
                    Outcome::Failed(error) => {
                        tracing::warn!("ack of ticket {seq} failed for good: {error}");
                        marks.push(AckMark::Failed {
                            seq,
                            at: now,
                            error,
                        });
                    }
                    Outcome::Retry(error) if attempts + 1 >= self.config.max_attempts => {
                        tracing::warn!(
                            "ack of ticket {seq} refused {} times, giving up: {error}",
                            attempts + 1
                        );
                        marks.push(AckMark::Failed {
                            seq,
                            at: now,
                            error,
                        });
                    }
                    Outcome::Retry(error) => {
                        let wait = self.backoff(attempts);
                        tracing::info!("ack of ticket {seq} refused, retry in {wait:?}: {error}");
                        marks.push(AckMark::Retry {
                            seq,
                            not_before: now + wait.as_micros() as i64,
                            error,
                        });
                    }
                    Outcome::RelayDown(error) => {
                        // Nothing to record: the ack stays pending as it was.
                        done.push(seq);
                        if paused_until.is_none() {
                            let wait = self.backoff(outage_steps);
                            outage_steps = outage_steps.saturating_add(1);
                            let was_up = self.relay_up.swap(false, Ordering::Relaxed);
                            if was_up {
                                tracing::warn!(
                                    "ack relay {} unusable, acks wait for it: {error}",
                                    self.config.relay
                                );
                            } else {
                                tracing::debug!(
                                    "ack relay {} still unusable, next try in {wait:?}: {error}",
                                    self.config.relay
                                );
                            }
                            paused_until = Some(Instant::now() + wait);
                            // Start again from the lowest pending seq when the pause ends.
                            queue.clear();
                            after = 0;
                        }
                    }
                }
            }
            if !marks.is_empty() {
                let seqs: Vec<u64> = marks.iter().map(mark_seq).collect();
                match self.outbox.mark_acks(marks.clone()).await {
                    Ok(()) => {
                        marks.clear();
                        done.extend(seqs);
                    }
                    Err(e) => {
                        // Kept in flight (not sent again) until the journal can record them.
                        tracing::warn!("cannot record ack outcomes, will retry: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                }
            }
            for seq in done.drain(..) {
                in_flight.remove(&seq);
            }
        }
        // Outcomes already known are recorded; acks still in flight stay pending.
        if !marks.is_empty() {
            let _ = self.outbox.mark_acks(marks).await;
        }
    }
}

fn mark_seq(mark: &AckMark) -> u64 {
    match mark {
        AckMark::Sent { seq, .. } | AckMark::Retry { seq, .. } | AckMark::Failed { seq, .. } => {
            *seq
        }
    }
}

fn classify(error: &lettre::transport::smtp::Error) -> Outcome {
    let text = error.to_string();
    if error.is_permanent() || error.is_client() {
        Outcome::Failed(text)
    } else if error.is_transient() {
        // 421: the relay is closing the channel, not a judgement on this message.
        let code = error.status().map(|c| c.to_string());
        if code.as_deref() == Some("421") {
            Outcome::RelayDown(text)
        } else {
            Outcome::Retry(text)
        }
    } else {
        Outcome::RelayDown(text)
    }
}
