//! A machine's clock against a reference clock (contract: FIFO, rules 8 and 9): the offset
//! `local − reference` as an interval `[lo, hi]` in microseconds, recorded in `run.json`'s `clock`.
//!
//! Two ways to measure it, and a third answer when neither applies:
//!
//! - [`from_replies`]: from the run's own `sent.jsonl`, when the buffer's success replies carry its
//!   accepted-at (barrage's `250 … at TIME` and the web 202 body). The buffer stored the request
//!   between the moment its end of data left the client and the moment the reply came back, so
//!   `sent_at − accepted_at ≤ offset ≤ replied_at − accepted_at`. The interval is the intersection
//!   over the run.
//! - [`exchange`]: an NTP-style exchange with `landrush observe`'s `GET /time`, for a foreign buffer
//!   whose replies carry no time.
//! - Otherwise [`unknown`]: `method: "none"`, `offset_us: null`.
//!
//! Outliers cannot make the interval wrong, only wide: every bound is a certainty, not a sample
//! of a distribution, so nothing is discarded as an outlier. What could make a bound false is
//! said and handled where it arises: a retransmission's reply carries the original's accepted-at
//! (earlier than this transmission's end of data), so its lower bound is left out; its upper bound
//! still holds and is kept. An empty intersection means a bound was false after all — a clock
//! stepped during the run (landrush's own stamps follow the monotonic clock from one anchor, so
//! this is the buffer's clock, or a buffer lying about its time). The estimate is then
//! `offset_us: null` with a note naming the two disagreeing samples: cross-machine pairs of that
//! machine go unjudged rather than judged on a broken interval.

pub mod exchange;

use std::collections::HashSet;

use reports::records::{ClockEstimate, ClockMethod, Outcome, SentRecord, Stamp};

/// One bound from one reply: which request, and the bound in microseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Bound {
    id: String,
    us: i64,
}

/// An interval being intersected, remembering which samples set each side.
#[derive(Debug, Default)]
struct Intersection {
    lo: Option<Bound>,
    hi: Option<Bound>,
    samples: u64,
}

impl Intersection {
    fn lower(&mut self, id: &str, us: i64) {
        if self.lo.as_ref().is_none_or(|b| us > b.us) {
            self.lo = Some(Bound { id: id.into(), us });
        }
    }

    fn upper(&mut self, id: &str, us: i64) {
        if self.hi.as_ref().is_none_or(|b| us < b.us) {
            self.hi = Some(Bound { id: id.into(), us });
        }
    }

    fn estimate(self, reference: &str, method: ClockMethod) -> ClockEstimate {
        let (Some(lo), Some(hi)) = (self.lo, self.hi) else {
            return unknown("no sample gave both bounds of the offset");
        };
        if lo.us > hi.us {
            return ClockEstimate {
                reference: reference.into(),
                method,
                offset_us: None,
                samples: self.samples,
                note: Some(format!(
                    "the samples disagree (a clock stepped during the run?): `{}` says offset >= \
                     {} us, `{}` says offset <= {} us; the offset is left unknown",
                    lo.id, lo.us, hi.id, hi.us
                )),
            };
        }
        ClockEstimate {
            reference: reference.into(),
            method,
            offset_us: Some([lo.us, hi.us]),
            samples: self.samples,
            note: None,
        }
    }
}

/// The estimate when nothing was measured.
pub fn unknown(why: &str) -> ClockEstimate {
    ClockEstimate {
        reference: String::new(),
        method: ClockMethod::None,
        offset_us: None,
        samples: 0,
        note: Some(why.into()),
    }
}

/// The offset of the machine that wrote `records` against the buffer at `reference`, from the
/// accepted-at in its success replies. `method: "none"` when no reply carried a time.
pub fn from_replies(records: &[SentRecord], reference: &str) -> ClockEstimate {
    let mut order: Vec<&SentRecord> = records
        .iter()
        .filter(|r| r.outcome == Outcome::Accepted)
        .collect();
    order.sort_by_key(|r| r.sent_at);
    let mut tickets = HashSet::new();
    let mut cut = Intersection::default();
    for record in order {
        let (Some(sent), Some(replied)) = (record.sent_at, record.replied_at) else {
            continue;
        };
        let Some(reply) = record.reply.as_deref() else {
            continue;
        };
        let Some(accepted) = accepted_at(reply) else {
            continue;
        };
        let accepted = accepted.micros();
        // A ticket seen before, a later attempt or a reply saying so: the original's accepted-at.
        let first_store = record.attempt == 1
            && !reply.contains("\"retransmission\":true")
            && record.ticket.is_none_or(|t| tickets.insert(t));
        cut.samples += 1;
        cut.upper(&record.id, replied.micros() - accepted);
        if first_store {
            cut.lower(&record.id, sent.micros() - accepted);
        }
    }
    if cut.samples == 0 {
        return unknown("no success reply carried the buffer's accepted-at");
    }
    cut.estimate(&format!("buffer {reference}"), ClockMethod::BufferReplies)
}

/// The accepted-at a success reply names: the web 202 body's `accepted_at`, or the instant after
/// the last ` at ` of an SMTP reply (`250 2.0.0 queued as ticket N at TIME`).
pub fn accepted_at(reply: &str) -> Option<Stamp> {
    if let Some((_, rest)) = reply.split_once("\"accepted_at\"") {
        let value = rest.trim_start().strip_prefix(':')?.trim_start();
        let value = value.strip_prefix('"')?;
        let (text, _) = value.split_once('"')?;
        return Stamp::parse(text).ok();
    }
    let (_, rest) = reply.rsplit_once(" at ")?;
    Stamp::parse(rest.split_whitespace().next()?).ok()
}

#[cfg(test)]
mod tests;
