//! One ack per request (contract: One ack). Acks are joined to requests by `In-Reply-To` = the
//! request's Message-ID, and told apart by their own Message-ID.
//!
//! - `missing` (failure): accepted requests, and indeterminate ones handed over, with no ack;
//! - `extra` (failure): every distinct ack beyond the first for one request, every ack for a refused
//!   request, and every ack whose `In-Reply-To` names no request the driver sent;
//! - `mismatched` (failure): acks naming no ticket, or a ticket other than the request's seq (the
//!   ticket of its success reply, else with buffer seqs the seq it was handed over under); acks
//!   naming no accepted-at, or another than the request's (as the handover says, else its success
//!   reply);
//! - `misaddressed` (failure): acks not sent to the request's sender;
//! - `resent` (counted, not a failure): ack records repeating an ack Message-ID already received,
//!   as the durable outbox does after a crash;
//! - `acked`: distinct acks received, for the reader;
//! - `pending`: requests without an ack while the buffer said, at the end, that it still had acks
//!   to send: not judged, and the check is incomplete rather than passed.
//!
//! With `acks_expected` false the check is skipped: `ok` is `None`, never a pass.

use reports::checks::CheckResult;
use serde_json::json;

use super::index::{CheckOptions, Index, Status, Tally};

pub(crate) fn check(index: &Index, options: &CheckOptions) -> CheckResult {
    let mut tally = Tally::new(
        options,
        &[
            "missing",
            "extra",
            "mismatched",
            "misaddressed",
            "resent",
            "acked",
            "pending",
        ],
    );
    if !options.acks_expected {
        return tally.skipped("the buffer sends no acks (--no-acks)");
    }
    if !options.acks_observed {
        return tally
            .could_not_run("no acks observed (acks.jsonl missing) while acks were expected");
    }

    for i in 0..index.acks.len() {
        check_ack(index, i, &mut tally);
    }
    for r in 0..index.requests.len() {
        check_request(index, r, options.acks_still_pending(), &mut tally);
    }
    tally.finish_unless_pending(
        &["missing", "extra", "mismatched", "misaddressed"],
        "pending",
        "the buffer still had acks to send when the ack sink stopped: missing acks were not judged",
    )
}

/// The checks of ack `i`: a first copy answers a request the driver sent, names its ticket and
/// goes to its sender.
fn check_ack(index: &Index, i: usize, tally: &mut Tally) {
    let ack = &index.acks[i];
    if !index.ack_first[i] {
        tally.count("resent");
        return;
    }
    tally.count("acked");
    if index.ack_req[i].is_none() {
        tally.count("extra");
        tally.example(|| {
            json!({
                "rule": "an ack answers a request: its In-Reply-To names none the driver sent",
                "ack": index.describe_ack(i),
            })
        });
        return;
    }
    let r = index.ack_req[i].expect("joined above");
    let request = &index.requests[r];
    names_the_request(index, i, r, tally);
    if !request.sender.trim().is_empty() {
        let sender = address(request.sender);
        if !ack.to.iter().any(|to| address(to) == sender) {
            tally.count("misaddressed");
            tally.example(|| {
                json!({
                    "rule": "an ack goes to the requester",
                    "sender": request.sender,
                    "request": index.describe(r),
                    "ack": index.describe_ack(i),
                })
            });
        }
    }
}

/// Ack `i` names request `r`'s ticket and accepted-at, both equal to the request's (contract: One
/// ack, rule 2): an ack that names neither, or another, is `mismatched`.
fn names_the_request(index: &Index, i: usize, r: usize, tally: &mut Tally) {
    let ack = &index.acks[i];
    let request = &index.requests[r];
    let ticket = request.tickets.first().copied().or_else(|| {
        (!index.seq_is_order)
            .then(|| request.handed_seqs.first().copied())
            .flatten()
    });
    let accepted_at = index.accepted_at_of(r);
    let problem = if wrong(ack.ticket, ticket) {
        "an ack names the request's ticket"
    } else if wrong(ack.accepted_at, accepted_at) {
        "an ack names the request's accepted-at"
    } else {
        return;
    };
    tally.count("mismatched");
    tally.example(|| {
        json!({
            "rule": problem,
            "expected_ticket": ticket,
            "expected_accepted_at": accepted_at.map(|s| s.to_string()),
            "request": index.describe(r),
            "ack": index.describe_ack(i),
        })
    });
}

/// An ack's value is wrong when it names none, or another than the one known.
fn wrong<T: PartialEq>(named: Option<T>, expected: Option<T>) -> bool {
    named.is_none() || (expected.is_some() && named != expected)
}

/// The checks of request `r`: as many acks as its fate asks for.
fn check_request(index: &Index, r: usize, acks_pending: bool, tally: &mut Tally) {
    let request = &index.requests[r];
    let n = request.acks.len() as u64;
    let wanted_at_most = match request.status {
        Status::Refused | Status::Failed => 0,
        _ => 1,
    };
    // Indeterminate requests may go unacked, unless they were handed over (then stored). A
    // refused one handed over is the `duplicates` check's failure; it still wants no ack.
    let needs_one = match request.status {
        Status::Accepted => true,
        Status::Indeterminate => !request.handed.is_empty(),
        Status::Refused | Status::Failed => false,
    };
    if n == 0 && needs_one && acks_pending {
        tally.count("pending");
    } else if n == 0 && needs_one {
        tally.count("missing");
        tally.example(|| {
            json!({
                "rule": "every accepted request gets exactly one ack",
                "request": index.describe(r),
            })
        });
    }
    if n > wanted_at_most {
        tally.add("extra", n - wanted_at_most);
        tally.example(|| {
            let rule = if request.status.never_stored() {
                "a refused request gets no ack"
            } else {
                "one request gets one ack, not two distinct ones"
            };
            json!({
                "rule": rule,
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

/// The bare address of `Name <a@b>` or `<a@b>` or `a@b`, lower-cased: the ack sink records envelope
/// recipients and the driver its sender, and the two may be spelled differently.
fn address(text: &str) -> String {
    let text = text.trim();
    let inner = match (text.rfind('<'), text.rfind('>')) {
        (Some(open), Some(close)) if open < close => &text[open + 1..close],
        _ => text,
    };
    inner.trim().to_ascii_lowercase()
}
