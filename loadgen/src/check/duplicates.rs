//! Duplicates (contract: Zero loss) and RFC 1047 retransmissions (contract: Retransmission).
//!
//! `duplicates` counts:
//! - `duplicated` (failure): requests handed over under two or more distinct seqs;
//! - `redelivered` (counted, not a failure): handed records repeating a seq already received, as
//!   after a crash or a re-read of the queue;
//! - `shared_seq` (failure): seqs handed over for two different requests, or named as the ticket of
//!   two different accepted requests;
//! - `unexpected` (failure): handed-over records naming a request the driver never sent, or one that
//!   every transmission of was refused.
//!
//! `retransmissions` counts:
//! - `retransmitted`: requests transmitted more than once (same id and Message-ID);
//! - `new_seq` (failure): of those, the ones whose success replies named different tickets or that
//!   were handed over under different seqs — a retransmission must get the original ticket;
//! - `second_ack` (failure, when acks are expected): of those, the ones that got a second distinct ack.

use std::collections::{HashMap, HashSet};

use reports::checks::CheckResult;
use serde_json::json;

use super::index::{CheckOptions, Index, Status, Tally};

pub(crate) fn check(index: &Index, options: &CheckOptions) -> CheckResult {
    let mut tally = Tally::new(
        options,
        &["duplicated", "redelivered", "shared_seq", "unexpected"],
    );
    for (r, request) in index.requests.iter().enumerate() {
        if request.handed_seqs.len() > 1 {
            tally.count("duplicated");
            tally.example(|| {
                json!({
                    "rule": "one request is handed over under one seq",
                    "request": index.describe(r),
                    "handed": request
                        .handed
                        .iter()
                        .map(|&i| index.describe_handed(i))
                        .collect::<Vec<_>>(),
                })
            });
        }
    }
    // The request each seq belongs to, once from the handover and once from the tickets of
    // success replies. The two are kept apart on purpose: a seq handed over for one request but
    // named in another's reply is a misordering (`fifo`'s ticket check), not a shared seq.
    let mut owners = SeqOwners {
        index,
        conflicted: HashSet::new(),
    };
    let mut handed_owner: HashMap<u64, usize> = HashMap::new();
    for i in 0..index.handed.len() {
        check_handed(&mut owners, &mut handed_owner, i, &mut tally);
    }
    if !index.seq_is_order {
        let mut ticket_owner: HashMap<u64, usize> = HashMap::new();
        for (r, request) in index.requests.iter().enumerate() {
            if request.status == Status::Accepted {
                for &t in &request.tickets {
                    let seen_in = json!("success reply");
                    owners.claim(&mut tally, &mut ticket_owner, t, r, seen_in);
                }
            }
        }
    }
    tally.finish(&["duplicated", "shared_seq", "unexpected"])
}

/// Which request each seq was first seen for, and the seqs already reported as shared.
struct SeqOwners<'a> {
    index: &'a Index<'a>,
    conflicted: HashSet<u64>,
}

impl SeqOwners<'_> {
    /// Request `r` was seen with `seq` (in `seen_in`): a shared seq if another request had it.
    fn claim(
        &mut self,
        tally: &mut Tally,
        owners: &mut HashMap<u64, usize>,
        seq: u64,
        r: usize,
        seen_in: serde_json::Value,
    ) {
        let index = self.index;
        let first = *owners.entry(seq).or_insert(r);
        if first != r && self.conflicted.insert(seq) {
            tally.count("shared_seq");
            tally.example(|| {
                json!({
                    "rule": "one seq belongs to one request",
                    "seq": seq,
                    "first": index.describe(first),
                    "second": index.describe(r),
                    "seen_in": seen_in,
                })
            });
        }
    }
}

/// The checks of handed record `i`: redelivered, shared seq, a refused or unknown request stored.
fn check_handed(
    owners: &mut SeqOwners<'_>,
    handed_owner: &mut HashMap<u64, usize>,
    i: usize,
    tally: &mut Tally,
) {
    let index = owners.index;
    let h = &index.handed[i];
    if !index.handed_first[i] {
        tally.count("redelivered");
    }
    match index.handed_req[i] {
        Some(r) => {
            owners.claim(tally, handed_owner, h.seq, r, index.describe_handed(i));
            if index.handed_first[i] && index.requests[r].status.never_stored() {
                tally.count("unexpected");
                tally.example(|| {
                    json!({
                        "rule": "a refused (or never sent) request is never stored",
                        "request": index.describe(r),
                        "handed": index.describe_handed(i),
                    })
                });
            }
        }
        None if index.handed_first[i] => {
            tally.count("unexpected");
            tally.example(|| {
                json!({
                    "rule": "only requests the driver sent are handed over",
                    "handed": index.describe_handed(i),
                })
            });
        }
        None => {}
    }
}

pub(crate) fn check_retransmissions(index: &Index, options: &CheckOptions) -> CheckResult {
    let mut tally = Tally::new(options, &["retransmitted", "new_seq", "second_ack"]);
    if index.seq_is_order {
        tally.note("seqs are delivery order: a second delivery counts as a new seq");
    }
    for (r, request) in index.requests.iter().enumerate() {
        if request.attempts.len() < 2 {
            continue;
        }
        tally.count("retransmitted");
        if request.tickets.len() > 1 || request.handed_seqs.len() > 1 {
            tally.count("new_seq");
            tally.example(|| {
                json!({
                    "rule": "a retransmission gets the original ticket, not a new seq",
                    "request": index.describe(r),
                    "tickets": request.tickets,
                    "attempts": attempts(index, r),
                })
            });
        }
        if options.acks_expected && request.acks.len() > 1 {
            tally.count("second_ack");
            tally.example(|| {
                json!({
                    "rule": "a retransmission gets no second ack",
                    "request": index.describe(r),
                    "acks": request
                        .acks
                        .iter()
                        .map(|&i| index.describe_ack(i))
                        .collect::<Vec<_>>(),
                })
            });
        }
    }
    tally.finish(&["new_seq", "second_ack"])
}

/// Each transmission of a request, for finding it in the driver's log.
fn attempts(index: &Index, r: usize) -> Vec<serde_json::Value> {
    index.requests[r]
        .attempts
        .iter()
        .map(|a| {
            json!({
                "attempt": a.attempt,
                "sent_at": a.sent_at.map(|s| s.to_string()),
                "replied_at": a.replied_at.map(|s| s.to_string()),
                "code": a.code,
                "ticket": a.ticket,
                "outcome": a.outcome,
            })
        })
        .collect()
}
