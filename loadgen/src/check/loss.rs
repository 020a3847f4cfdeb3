//! Zero loss (contract: Zero loss): every accepted request is handed over, and every seq is.
//!
//! - `lost`: accepted requests never handed over, plus indeterminate ones that an ack proves were
//!   stored (the ack outbox is written in the request's own transaction) yet never handed over;
//! - `gaps`: seqs missing from the handover between the first seq (the option, else the lowest seen)
//!   and the highest seq known: handed over, named in a ticket, or the buffer's own highest stored
//!   seq (`highest_seq`, from its stats), so trailing lost seqs are found. Only with the buffer's
//!   own seqs;
//! - `indeterminate`, `indeterminate_stored`: requests that got no reply, and those of them the
//!   records prove stored. Allowed either way (contract: Indeterminate outcomes), so informational;
//! - `accepted`, `handed_over`: context for the reader;
//! - `pending`: accepted requests not handed over whose seq is above the cursor of a buffer that
//!   said, at the end, that it still held requests (its final stats): the observer stopped before
//!   the drain, so they are not judged, and the check is incomplete rather than passed.

use reports::checks::CheckResult;
use serde_json::json;

use super::index::{CheckOptions, Index, Status, Tally};

pub(crate) fn check(index: &Index, options: &CheckOptions) -> CheckResult {
    let mut tally = Tally::new(
        options,
        &[
            "lost",
            "gaps",
            "indeterminate",
            "indeterminate_stored",
            "accepted",
            "handed_over",
            "pending",
        ],
    );
    let queued_above = options.still_queued_above();
    for (r, request) in index.requests.iter().enumerate() {
        let stored = index.stored(r, options);
        match request.status {
            Status::Accepted => tally.count("accepted"),
            Status::Indeterminate => {
                tally.count("indeterminate");
                if stored {
                    tally.count("indeterminate_stored");
                }
            }
            Status::Refused | Status::Failed => {}
        }
        if !request.handed.is_empty() {
            tally.count("handed_over");
        }
        // A refused request that was acked anyway is the `acks` check's failure, not a loss.
        let must_be_handed = match request.status {
            Status::Accepted => true,
            Status::Indeterminate => stored,
            Status::Refused | Status::Failed => false,
        };
        // The buffer still held requests above its cursor when the observer stopped: one of
        // those not handed over is not yet proof of loss.
        let still_queued =
            queued_above.is_some_and(|cursor| index.seq_of(r).is_none_or(|seq| seq > cursor));
        if must_be_handed && request.handed.is_empty() && still_queued {
            tally.count("pending");
        } else if must_be_handed && request.handed.is_empty() {
            tally.count("lost");
            tally.example(|| {
                let mut v = json!({"rule": "every accepted request is handed over"});
                v["request"] = index.describe(r);
                if request.status == Status::Indeterminate {
                    v["why_stored"] = json!("no reply, but acked");
                    v["ack"] = index.describe_ack(request.acks[0]);
                }
                v
            });
        }
    }
    if index.seq_is_order {
        tally.note("seqs are delivery order: gaps do not apply");
    } else {
        gaps(index, options, &mut tally);
    }
    tally.finish_unless_pending(
        &["lost", "gaps"],
        "pending",
        "the buffer still held requests when the observer stopped: those above its cursor were not judged",
    )
}

/// Counts the seqs between the first and the highest known seq that were never handed over, as
/// ranges (a wild seq of 10^12 must not make us enumerate it).
fn gaps(index: &Index, options: &CheckOptions, tally: &mut Tally) {
    // Distinct handed seqs, each with the first record that carried it.
    let mut handed: Vec<(u64, usize)> = index
        .handed
        .iter()
        .enumerate()
        .filter(|(i, _)| index.handed_first[*i])
        .map(|(i, h)| (h.seq, i))
        .collect();
    handed.sort_unstable();
    let tickets = index
        .requests
        .iter()
        .filter(|r| r.status == Status::Accepted)
        .flat_map(|r| r.tickets.iter().copied());
    let known_low = handed
        .first()
        .map(|h| h.0)
        .into_iter()
        .chain(tickets.clone())
        .min()
        .or(options.first_seq);
    let Some(known_low) = known_low else { return };
    let high = handed
        .last()
        .map(|h| h.0)
        .into_iter()
        .chain(tickets)
        .chain(options.highest_seq)
        .max()
        .unwrap_or(known_low);
    // Seqs above the cursor of a buffer that still held requests were not taken yet.
    let high = options
        .still_queued_above()
        .map_or(high, |cursor| high.min(cursor));
    let low = options.first_seq.unwrap_or(known_low);
    if high < low {
        return;
    }
    // Walk the handed seqs in order; every hole between neighbours (and at both ends) is a gap.
    let mut expect = low;
    let mut previous: Option<usize> = None;
    for &(seq, i) in handed.iter().filter(|h| h.0 >= low && h.0 <= high) {
        if seq > expect {
            hole(index, tally, expect, seq - 1, previous, Some(i));
        }
        previous = Some(i);
        match seq.checked_add(1) {
            Some(next) => expect = next,
            None => return,
        }
    }
    if expect <= high {
        hole(index, tally, expect, high, previous, None);
    }
}

fn hole(
    index: &Index,
    tally: &mut Tally,
    from: u64,
    to: u64,
    after: Option<usize>,
    before: Option<usize>,
) {
    tally.add("gaps", to - from + 1);
    tally.example(|| {
        json!({
            "rule": "every seq is handed over at least once",
            "missing_seqs": {"from": from, "to": to, "count": to - from + 1},
            "after": after.map(|i| index.describe_handed(i)),
            "before": before.map(|i| index.describe_handed(i)),
        })
    });
}
