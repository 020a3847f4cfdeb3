//! Waiting for the handover and the acks after the driver's run: until every accepted request
//! was handed over and acked; or until the buffer itself says it has nothing left to hand over or
//! ack (its `/v1/stats`) while some are still missing; or, for a buffer without stats, until
//! nothing moved for the quiet period.

use std::collections::HashSet;
use std::time::Duration;

use reports::records::{self, Outcome, SentRecord, Stamp};
use tokio::time::Instant;

use super::rig::Rig;
use crate::driver::RunSummary;
use crate::observe::Seen;

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
    /// True if everything arrived; false if the wait ended without it (the buffer said it was
    /// done, or the quiet period ran out).
    pub complete: bool,
    /// Seconds from the end of the driver's run until everything was handed over, and acked.
    pub handed_after_s: Option<f64>,
    pub acked_after_s: Option<f64>,
    /// Seconds spent waiting in all.
    pub waited_s: f64,
}

/// What changes while something makes progress: records handed over and acks seen (by the
/// observers there are), and the buffer's own counts (accepted, cursor, acks pending).
type Progress = (Option<u64>, Option<u64>, Option<(u64, u64, Option<u64>)>);

/// What is still missing, as of one look at the observers.
struct Missing<'a> {
    handed: Vec<&'a AcceptedRequest>,
    acks: Vec<&'a AcceptedRequest>,
    state: Progress,
}

impl Drain {
    fn note(&mut self, missing: &Missing<'_>, elapsed: Duration) {
        if missing.handed.is_empty() && self.handed_after_s.is_none() {
            self.handed_after_s = Some(elapsed.as_secs_f64());
        }
        if missing.acks.is_empty() && self.acked_after_s.is_none() {
            self.acked_after_s = Some(elapsed.as_secs_f64());
        }
        self.missing_handed = missing.handed.len() as u64;
        self.missing_acks = missing.acks.len() as u64;
        self.missing_handed_ids = missing
            .handed
            .iter()
            .take(5)
            .map(|r| r.id.clone())
            .collect();
        self.missing_ack_ids = missing.acks.iter().take(5).map(|r| r.id.clone()).collect();
    }
}

impl Rig {
    /// Waits until every accepted request of the run was handed over and acked, or until the
    /// buffer says it is done, or until nothing moved for the quiet period.
    pub async fn drain(&mut self, run: &RunSummary) -> anyhow::Result<Drain> {
        let sent: Vec<SentRecord> = records::read_all(&run.out_dir.join(records::SENT))?;
        let accepted = accepted_requests(&sent);
        let mut drain = Drain {
            accepted: accepted.len() as u64,
            ..Drain::default()
        };
        let began = Instant::now();
        let began_at = Stamp::now();
        let mut last_progress = began;
        let mut last_state = None;
        let mut last_print = began;
        let mut settled_since: Option<Instant> = None;
        loop {
            let missing = self.missing(&accepted);
            let now = Instant::now();
            drain.note(&missing, now - began);
            let all_in = missing.handed.is_empty() && missing.acks.is_empty();
            let buffer_idle = self.sampler.as_ref().is_none_or(|s| s.idle());
            let buffer_done = self
                .sampler
                .as_ref()
                .is_some_and(|s| s.said_idle_since(began_at));
            let moved = last_state.as_ref() != Some(&missing.state);
            if moved {
                last_state = Some(missing.state);
                last_progress = now;
                settled_since = None;
            }
            // Settled: everything in (or the buffer says it has nothing left), and nothing moved
            // for `settle`, so late extras (a second ack…) are seen too.
            if (all_in && buffer_idle) || buffer_done {
                let since = *settled_since.get_or_insert(now);
                if now - since >= self.options.settle {
                    drain.complete = all_in;
                    break;
                }
            } else {
                settled_since = None;
            }
            if now - last_progress >= self.options.quiet_period {
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

    /// The accepted requests not yet handed over and not yet acked.
    fn missing<'a>(&mut self, accepted: &'a [AcceptedRequest]) -> Missing<'a> {
        let handed = self.handed_seen();
        let acks = self.ack_sink.as_ref().map(|s| s.handler().seen.clone());
        let missing_handed = match &handed {
            Some(seen) => accepted.iter().filter(|r| !r.in_set(seen)).collect(),
            None => Vec::new(),
        };
        let missing_acks = match &acks {
            Some(seen) => accepted
                .iter()
                .filter(|r| !seen.contains_any([r.message_id.as_str()]))
                .collect(),
            None => Vec::new(),
        };
        Missing {
            handed: missing_handed,
            acks: missing_acks,
            state: (
                handed.as_ref().map(|s| s.records()),
                acks.as_ref().map(|s| s.records()),
                self.sampler.as_ref().and_then(|s| s.progress_key()),
            ),
        }
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
