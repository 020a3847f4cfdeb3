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
        let mut run = Run::new(&self.config);
        while !stop.is_cancelled() {
            if run.paused_until.is_some_and(|t| t <= Instant::now()) {
                run.paused_until = None;
            }
            self.dispatch(&mut run).await;
            let outcomes = self.next_outcomes(&mut run, &stop).await;
            for (seq, attempts, outcome) in outcomes {
                self.record(&mut run, seq, attempts, outcome);
            }
            if !self.save_marks(&mut run).await {
                continue;
            }
            for seq in run.done.drain(..) {
                run.in_flight.remove(&seq);
            }
        }
        // Outcomes already known are recorded; acks still in flight stay pending.
        if !run.marks.is_empty() {
            let _ = self.outbox.mark_acks(run.marks).await;
        }
    }

    /// Starts, in seq order, as many deliveries as the concurrency allows (none while paused).
    async fn dispatch(&self, run: &mut Run) {
        let mut wrapped = false;
        while run.paused_until.is_none() && run.tasks.len() < self.config.concurrency {
            let Some(ack) = run.queue.pop_front() else {
                if !self.refill(run, &mut wrapped).await {
                    break;
                }
                continue;
            };
            if let Some(interval) = run.interval {
                let now = Instant::now();
                if run.next_slot < now {
                    run.next_slot = now;
                }
                tokio::time::sleep_until(run.next_slot).await;
                run.next_slot += interval;
            }
            run.in_flight.insert(ack.seq);
            self.spawn_delivery(run, &ack);
        }
    }

    /// Reads the next page of due acks into the queue; false when there is nothing more to send
    /// now. At the end of the outbox it starts once more from the lowest pending seq (retries
    /// that came due).
    async fn refill(&self, run: &mut Run, wrapped: &mut bool) -> bool {
        match self
            .outbox
            .pending_acks(run.after, now_micros(), PAGE)
            .await
        {
            Ok(page) if page.is_empty() => {
                if run.after == 0 || *wrapped {
                    return false;
                }
                run.after = 0;
                *wrapped = true;
                true
            }
            Ok(page) => {
                run.after = page.last().map_or(run.after, |a| a.seq);
                let fresh = page.into_iter().filter(|a| !run.in_flight.contains(&a.seq));
                run.queue.extend(fresh);
                true
            }
            Err(e) => {
                tracing::warn!("cannot read the ack outbox: {e}");
                false
            }
        }
    }

    fn spawn_delivery(&self, run: &mut Run, ack: &PendingAck) {
        let (seq, attempts) = (ack.seq, ack.attempts);
        match self.composer.compose(ack) {
            Ok(mail) => {
                let relay = self.relay.clone();
                run.tasks.spawn(async move {
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
                let failed = Outcome::Failed(e.to_string());
                run.tasks.spawn(async move { (seq, attempts, failed) });
            }
        }
    }

    /// Waits for an outcome, new acks, a retry coming due, the end of a pause, or stop; returns
    /// every outcome known by then.
    async fn next_outcomes(
        &self,
        run: &mut Run,
        stop: &CancellationToken,
    ) -> Vec<(u64, u32, Outcome)> {
        let wake = run.paused_until.unwrap_or_else(|| Instant::now() + POLL);
        let idle = run.tasks.is_empty() && run.paused_until.is_none();
        let first = tokio::select! {
            joined = run.tasks.join_next(), if !run.tasks.is_empty() => joined,
            _ = self.outbox.acks_queued(), if idle => None,
            _ = tokio::time::sleep_until(wake) => None,
            _ = stop.cancelled() => None,
        };
        let mut outcomes: Vec<_> = first.into_iter().collect();
        while let Some(joined) = run.tasks.try_join_next() {
            outcomes.push(joined);
        }
        // A delivery task that panicked has no outcome: its ack stays pending.
        outcomes.into_iter().filter_map(Result::ok).collect()
    }

    /// Turns one delivery outcome into the mark to record (or, for an outage, a pause).
    fn record(&self, run: &mut Run, seq: u64, attempts: u32, outcome: Outcome) {
        let now = now_micros();
        match outcome {
            Outcome::Sent => {
                run.outage_steps = 0;
                if !self.relay_up.swap(true, Ordering::Relaxed) {
                    tracing::info!("ack relay {} is back", self.config.relay);
                }
                run.marks.push(AckMark::Sent { seq, at: now });
            }
            Outcome::Failed(error) => {
                tracing::warn!("ack of ticket {seq} failed for good: {error}");
                run.marks.push(AckMark::Failed {
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
                run.marks.push(AckMark::Failed {
                    seq,
                    at: now,
                    error,
                });
            }
            Outcome::Retry(error) => {
                let wait = self.backoff(attempts);
                tracing::info!("ack of ticket {seq} refused, retry in {wait:?}: {error}");
                run.marks.push(AckMark::Retry {
                    seq,
                    not_before: now + wait.as_micros() as i64,
                    error,
                });
            }
            Outcome::RelayDown(error) => {
                // Nothing to record: the ack stays pending as it was.
                run.done.push(seq);
                self.pause(run, &error);
            }
        }
    }

    /// The relay is unusable: waits out a growing backoff, then starts again from the lowest
    /// pending seq.
    fn pause(&self, run: &mut Run, error: &str) {
        if run.paused_until.is_some() {
            return;
        }
        let wait = self.backoff(run.outage_steps);
        run.outage_steps = run.outage_steps.saturating_add(1);
        let relay = &self.config.relay;
        if self.relay_up.swap(false, Ordering::Relaxed) {
            tracing::warn!("ack relay {relay} unusable, acks wait for it: {error}");
        } else {
            tracing::debug!("ack relay {relay} still unusable, next try in {wait:?}: {error}");
        }
        run.paused_until = Some(Instant::now() + wait);
        run.queue.clear();
        run.after = 0;
    }

    /// Records the marks gathered so far; false when the journal could not (they are kept, and
    /// their acks stay in flight so none is sent again meanwhile).
    async fn save_marks(&self, run: &mut Run) -> bool {
        if run.marks.is_empty() {
            return true;
        }
        let seqs: Vec<u64> = run.marks.iter().map(mark_seq).collect();
        match self.outbox.mark_acks(run.marks.clone()).await {
            Ok(()) => {
                run.marks.clear();
                run.done.extend(seqs);
                true
            }
            Err(e) => {
                tracing::warn!("cannot record ack outcomes, will retry: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                false
            }
        }
    }
}

/// The state of one [`AckSender::run`].
struct Run {
    /// Acks read from the outbox, not yet dispatched, in seq order.
    queue: VecDeque<PendingAck>,
    /// Acks dispatched whose outcome is not yet recorded.
    in_flight: BTreeSet<u64>,
    tasks: JoinSet<(u64, u32, Outcome)>,
    /// Outcomes to record in the journal.
    marks: Vec<AckMark>,
    /// Acks whose outcome is recorded (or that need none): no longer in flight.
    done: Vec<u64>,
    /// The highest seq read from the outbox so far.
    after: u64,
    outage_steps: u32,
    paused_until: Option<Instant>,
    /// When the next ack may go out under `rate_per_sec`.
    next_slot: Instant,
    interval: Option<Duration>,
}

impl Run {
    fn new(config: &AckConfig) -> Self {
        Run {
            queue: VecDeque::new(),
            in_flight: BTreeSet::new(),
            tasks: JoinSet::new(),
            marks: Vec::new(),
            done: Vec::new(),
            after: 0,
            outage_steps: 0,
            paused_until: None,
            next_slot: Instant::now(),
            interval: (config.rate_per_sec > 0.0)
                .then(|| Duration::from_secs_f64(1.0 / config.rate_per_sec)),
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
