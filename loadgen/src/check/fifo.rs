//! FIFO (contract: FIFO): handover in seq order, real-time precedence, accepted-at never
//! decreasing along seq, and the ticket in each success reply equal to the seq handed over.
//!
//! `violations` is the sum of the four sub-counts:
//! - `handover_order`: a seq received for the first time after a higher seq (redeliveries aside);
//! - `precedence`: a stored request B for which some accepted request A had its success reply seen
//!   strictly before B's first end-of-data was sent (over B's tries that were not refused), yet
//!   seq(A) >= seq(B). Counted once per B;
//! - `accepted_at`: a seq whose accepted-at is earlier than the previous seq's (adjacent pairs);
//! - `ticket_mismatch`: an accepted, handed-over request whose 250 named no ticket or a ticket that
//!   is not a seq it was handed over under.
//!
//! `unjudged` (informational) counts stored requests B with an accepted request A of another
//! machine, seq(A) >= seq(B), where one of the two machines' offsets is unknown: whatever the raw
//! stamps say, A's reply may have come before B was sent. Non-zero, with nothing failed, it makes
//! the check incomplete.
//!
//! With delivery order for seqs (foreign buffers) only precedence and accepted-at apply: the order
//! of delivery is then exactly what is being judged.

use std::collections::{BTreeMap, BTreeSet};

use reports::checks::CheckResult;
use reports::records::Stamp;
use serde_json::{Value, json};

use super::clocks::{self, Machines, Stamped};
use super::index::{CheckOptions, Index, Status, Tally};

const COUNTS: [&str; 5] = [
    "violations",
    "handover_order",
    "precedence",
    "accepted_at",
    "ticket_mismatch",
];

pub(crate) fn check(index: &Index, options: &CheckOptions) -> CheckResult {
    let mut tally = Tally::new(options, &COUNTS);
    if index.seq_is_order {
        tally.note("seqs are delivery order: handover-order and ticket checks do not apply");
    } else {
        handover_order(index, &mut tally);
    }
    precedence(index, options, &mut tally);
    accepted_at(index, &mut tally);
    if !index.seq_is_order {
        tickets(index, &mut tally);
    }
    let total = COUNTS[1..].iter().map(|c| tally.get(c)).sum();
    tally.add("violations", total);
    // A pair across machines whose offsets are unknown was not judged: never a pass for it
    // (contract: FIFO, rule 8; Verdicts). The count's own note says which pairs.
    tally.finish_unless_pending(
        &["violations"],
        "unjudged",
        "incomplete: the check cannot pass for pairs it could not judge",
    )
}

/// First receipts of seqs, in file order, must have increasing seqs.
fn handover_order(index: &Index, tally: &mut Tally) {
    let mut highest: Option<usize> = None;
    for (i, h) in index.handed.iter().enumerate() {
        if !index.handed_first[i] {
            continue;
        }
        match highest {
            Some(prev) if index.handed[prev].seq > h.seq => {
                tally.count("handover_order");
                tally.example(|| {
                    json!({
                        "rule": "handover in seq order",
                        "handed": index.describe_handed(i),
                        "after": index.describe_handed(prev),
                    })
                });
            }
            _ => highest = Some(i),
        }
    }
}

/// One side of a real-time precedence pair: a time, the request's seq, and the request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Event {
    pub at: i64,
    pub seq: u64,
    pub req: usize,
}

/// For each successor B, the predecessor A (A != B) with the highest seq among those whose reply
/// came strictly before B was sent, if that seq is >= seq(B). Returns (successor, predecessor)
/// pairs, one per violating successor, in successor time order.
///
/// O(n log n): sort both sides by time, sweep the successors in time order while admitting every
/// predecessor whose reply is strictly earlier, and keep the two highest seqs admitted so far. Each
/// request is at most one predecessor, so the runner-up is a different request when the leader is B
/// itself. Only the maximum matters: if any admitted A has seq(A) >= seq(B), the maximum does.
pub(crate) fn precedence_violations(
    mut preds: Vec<Event>,
    mut succs: Vec<Event>,
) -> Vec<(Event, Event)> {
    preds.sort_by_key(|e| e.at);
    succs.sort_by_key(|e| e.at);
    let mut found = Vec::new();
    let mut best: Option<Event> = None;
    let mut second: Option<Event> = None;
    let mut next = 0;
    for b in succs {
        while next < preds.len() && preds[next].at < b.at {
            let a = preds[next];
            next += 1;
            if best.is_none_or(|x| a.seq > x.seq) {
                second = best;
                best = Some(a);
            } else if second.is_none_or(|x| a.seq > x.seq) {
                second = Some(a);
            }
        }
        let a = match best {
            Some(a) if a.req != b.req => Some(a),
            _ => second,
        };
        if let Some(a) = a
            && a.seq >= b.seq
        {
            found.push((b, a));
        }
    }
    found
}

/// Both sides of the precedence rule, each event with the machine that stamped it.
#[derive(Default)]
struct Sides {
    preds: Vec<Event>,
    succs: Vec<Event>,
    pred_at: Vec<Stamped>,
    succ_at: Vec<Stamped>,
}

fn sides(index: &Index, machines: &Machines) -> Sides {
    let mut sides = Sides::default();
    for (r, request) in index.requests.iter().enumerate() {
        let Some(seq) = index.seq_of(r) else { continue };
        let machine = machines.machine_of(request.attempts[0].client);
        let event = |at: Stamp| Event {
            at: at.micros(),
            seq,
            req: r,
        };
        let stamped = |at: Stamp| Stamped {
            at: at.micros(),
            machine,
        };
        // Only a seen success reply orders what comes after; every stored request (accepted, or
        // indeterminate but handed over) must come after the replies seen before it was sent.
        if request.status == Status::Accepted
            && let Some(at) = request.first_accept
        {
            sides.preds.push(event(at));
            sides.pred_at.push(stamped(at));
        }
        let stored = request.status == Status::Accepted || !request.handed.is_empty();
        // B's earliest end of data among the tries not refused: a refused try stored nothing,
        // so it cannot have placed B in the queue (contract: FIFO, rule 5).
        if stored && let Some(at) = request.first_storing_sent {
            sides.succs.push(event(at));
            sides.succ_at.push(stamped(at));
        }
    }
    sides
}

fn precedence(index: &Index, options: &CheckOptions, tally: &mut Tally) {
    let machines = &options.machines;
    let Sides {
        preds,
        succs,
        pred_at,
        succ_at,
    } = sides(index, machines);
    // Each comparison is one time axis (contract: FIFO, rules 7 and 8; see check::clocks).
    let (mut found, mut unjudged) = (BTreeMap::new(), BTreeSet::new());
    let tolerance = options.clock_tolerance_us;
    for c in clocks::comparisons(&pred_at, &succ_at, machines, tolerance) {
        let p = c
            .preds
            .iter()
            .map(|&(i, at)| Event { at, ..preds[i] })
            .collect();
        let s = c
            .succs
            .iter()
            .map(|&(i, at)| Event { at, ..succs[i] })
            .collect();
        for (b, a) in precedence_violations(p, s) {
            // The witness with the highest seq, as the sweep itself names within one axis.
            if c.judged
                && found
                    .get(&b.req)
                    .is_none_or(|w: &(Event, Event)| a.seq > w.1.seq)
            {
                found.insert(b.req, (b, a));
            } else if !c.judged {
                unjudged.insert(b.req);
            }
        }
    }
    let unjudged = unjudged.iter().filter(|r| !found.contains_key(r)).count() as u64;
    tally.add("unjudged", unjudged);
    if let Some(note) = clocks::note(machines, tolerance, unjudged) {
        tally.note(note);
    }
    for (b, a) in found.into_values() {
        tally.count("precedence");
        tally.example(|| precedence_example(index, machines, a, b));
    }
}

fn precedence_example(index: &Index, machines: &Machines, a: Event, b: Event) -> Value {
    let (ra, rb) = (&index.requests[a.req], &index.requests[b.req]);
    json!({
        "rule": "real-time precedence: A's success reply was seen before B was sent, yet seq(A) >= seq(B)",
        "earlier": {
            "id": ra.id,
            "seq": a.seq,
            "replied_at": ra.first_accept.map(|s| s.to_string()),
            "sent_at": ra.first_sent.map(|s| s.to_string()),
            "machine": machines.describe(machines.machine_of(ra.attempts[0].client)),
        },
        "later": {
            "id": rb.id,
            "seq": b.seq,
            "sent_at": rb.first_storing_sent.map(|s| s.to_string()),
            "replied_at": rb.first_accept.map(|s| s.to_string()),
            "machine": machines.describe(machines.machine_of(rb.attempts[0].client)),
        },
    })
}

/// Along increasing seq (first receipt of each), accepted-at never decreases.
fn accepted_at(index: &Index, tally: &mut Tally) {
    let mut by_seq: Vec<(u64, Stamp, usize)> = index
        .handed
        .iter()
        .enumerate()
        .filter(|(i, _)| index.handed_first[*i])
        .filter_map(|(i, h)| h.accepted_at.map(|at| (h.seq, at, i)))
        .collect();
    by_seq.sort_by_key(|&(seq, _, _)| seq);
    for pair in by_seq.windows(2) {
        let (_, before_at, before) = pair[0];
        let (_, at, i) = pair[1];
        if at < before_at {
            tally.count("accepted_at");
            tally.example(|| {
                json!({
                    "rule": "accepted-at never decreases along seq",
                    "handed": index.describe_handed(i),
                    "previous_seq": index.describe_handed(before),
                })
            });
        }
    }
}

/// The ticket a success reply named is a seq the request was handed over under.
fn tickets(index: &Index, tally: &mut Tally) {
    for (r, request) in index.requests.iter().enumerate() {
        if request.status != Status::Accepted || request.handed_seqs.is_empty() {
            continue;
        }
        let ticket = request.tickets.first().copied();
        if ticket.is_none_or(|t| !request.handed_seqs.contains(&t)) {
            tally.count("ticket_mismatch");
            tally.example(|| {
                json!({
                    "rule": "the ticket in the success reply is the seq handed over",
                    "request": index.describe(r),
                    "handed": index.describe_handed(request.handed[0]),
                })
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The definition, checked pair by pair: O(n²), for comparing with the sweep.
    fn brute_force(preds: &[Event], succs: &[Event]) -> Vec<usize> {
        let mut violating: Vec<usize> = succs
            .iter()
            .filter(|b| {
                preds
                    .iter()
                    .any(|a| a.req != b.req && a.at < b.at && a.seq >= b.seq)
            })
            .map(|b| b.req)
            .collect();
        violating.sort();
        violating
    }

    fn events() -> impl Strategy<Value = (Vec<Event>, Vec<Event>)> {
        // Small time and seq ranges so ties and equal seqs happen often.
        prop::collection::vec((0i64..20, 0i64..20, 0u64..15, any::<bool>()), 0..25).prop_map(
            |rows| {
                let mut preds = Vec::new();
                let mut succs = Vec::new();
                for (req, (sent, reply, seq, accepted)) in rows.into_iter().enumerate() {
                    succs.push(Event { at: sent, seq, req });
                    if accepted {
                        preds.push(Event {
                            at: reply,
                            seq,
                            req,
                        });
                    }
                }
                (preds, succs)
            },
        )
    }

    proptest! {
        #[test]
        fn sweep_finds_exactly_the_violations_of_the_definition((preds, succs) in events()) {
            let mut swept: Vec<usize> = precedence_violations(preds.clone(), succs.clone())
                .into_iter()
                .map(|(b, a)| {
                    // The named predecessor really is a witness.
                    assert!(a.req != b.req && a.at < b.at && a.seq >= b.seq);
                    b.req
                })
                .collect();
            swept.sort();
            prop_assert_eq!(swept, brute_force(&preds, &succs));
        }
    }

    #[test]
    fn ties_in_time_impose_no_order() {
        let preds = vec![Event {
            at: 10,
            seq: 2,
            req: 0,
        }];
        let succs = vec![Event {
            at: 10,
            seq: 1,
            req: 1,
        }];
        assert!(precedence_violations(preds.clone(), succs).is_empty());
        let succs = vec![Event {
            at: 11,
            seq: 1,
            req: 1,
        }];
        assert_eq!(precedence_violations(preds, succs).len(), 1);
    }

    #[test]
    fn a_request_is_not_its_own_predecessor() {
        // Its reply "before" its own send (clock skew in a record) must not count against it.
        let preds = vec![Event {
            at: 5,
            seq: 7,
            req: 0,
        }];
        let succs = vec![Event {
            at: 9,
            seq: 7,
            req: 0,
        }];
        assert!(precedence_violations(preds, succs).is_empty());
    }
}
