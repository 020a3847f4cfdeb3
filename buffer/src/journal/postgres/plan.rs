//! What a batch comes to, decided under the counter-row lock from the head it read (contract:
//! FIFO, Retransmission, Provable order): each new request gets the next seq, an accepted-at
//! that never goes below the head's (whatever this node's clock says), and its chain link from
//! the previous row's; a retransmission gets its original's ticket, found among the stored rows
//! or earlier in the same batch. Pure: the writer does the SQL.

use std::collections::{HashMap, HashSet};

use crate::journal::{Digests, NewRequest, Ticket, format_micros};

/// The counter row (and the cursor) as the batch found them, then as it leaves them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub last_seq: u64,
    pub last_at: i64,
    pub last_chain: [u8; 32],
    pub cursor: u64,
}

/// The stored requests inside the dedup window that the batch's keys name: the first ticket of
/// each (key, content digest), and which keys are in use at all.
#[derive(Debug, Default)]
pub struct Originals {
    tickets: HashMap<(String, [u8; 32]), Ticket>,
    used: HashSet<String>,
}

impl Originals {
    /// The first (lowest seq) request stored under `key` with this content.
    pub fn found(&mut self, key: &str, digest: [u8; 32], ticket: Ticket) {
        self.used.insert(key.to_string());
        self.tickets
            .entry((key.to_string(), digest))
            .or_insert(ticket);
    }

    /// Some request is stored under `key`, with other content.
    pub fn in_use(&mut self, key: &str) {
        self.used.insert(key.to_string());
    }

    fn original(&self, key: &str, digest: &[u8; 32]) -> Option<Ticket> {
        self.tickets.get(&(key.to_string(), *digest)).copied()
    }
}

/// The answer a request of the batch gets once the batch commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    Ticket(Ticket),
    /// A web request reusing its requester's key with other content.
    Conflict,
}

/// One new row, in the journal's own types.
pub struct NewRow<'a> {
    pub ticket: Ticket,
    pub chain: [u8; 32],
    pub request: &'a NewRequest,
    pub digests: &'a Digests,
}

/// Plans the batch `requests` after `head` at time `now`, with `originals` holding every stored
/// request inside the dedup window whose key one of them carries. Returns each request's plan,
/// the new rows in seq order and the head after them.
pub fn plan<'a>(
    requests: impl Iterator<Item = (&'a NewRequest, &'a Digests)>,
    mut head: Head,
    now: i64,
    mut originals: Originals,
) -> (Vec<Plan>, Vec<NewRow<'a>>, Head) {
    let (mut plans, mut rows) = (Vec::new(), Vec::new());
    for (request, digests) in requests {
        if let Some(key) = &request.dedup_key {
            if let Some(ticket) = originals.original(key, &digests.content) {
                let ticket = Ticket {
                    retransmission: true,
                    ..ticket
                };
                plans.push(Plan::Ticket(ticket));
                continue;
            }
            // By mail the key is spoofable: other content is a request of its own. On the web
            // the key is the requester's own (contract: Retransmission).
            if request.intake == "http" && originals.used.contains(key) {
                plans.push(Plan::Conflict);
                continue;
            }
        }
        let seq = head.last_seq + 1;
        let accepted_at = now.max(head.last_at);
        let ticket = Ticket {
            seq,
            accepted_at,
            position: seq.saturating_sub(head.cursor),
            retransmission: false,
        };
        let canonical = digests.middle.canonical(seq, &format_micros(accepted_at));
        let chain = contract::chain::link(&head.last_chain, &canonical);
        if let Some(key) = &request.dedup_key {
            originals.found(key, digests.content, ticket);
        }
        rows.push(NewRow {
            ticket,
            chain,
            request,
            digests,
        });
        plans.push(Plan::Ticket(ticket));
        head = Head {
            last_seq: seq,
            last_at: accepted_at,
            last_chain: chain,
            cursor: head.cursor,
        };
    }
    (plans, rows, head)
}

/// The batch's invariants, checked before COMMIT (contract: FIFO): its rows carry the seqs
/// after `before` one by one, accepted-at never decreases, each chain links to the one before.
/// A violation panics, and the writer aborts the process: the batch is never committed.
pub fn check(rows: &[NewRow], before: &Head, after: &Head) {
    let (mut seq, mut at, mut chain) = (before.last_seq, before.last_at, before.last_chain);
    for row in rows {
        assert_eq!(
            row.ticket.seq,
            seq + 1,
            "journal writer: seqs not contiguous"
        );
        assert!(
            row.ticket.accepted_at >= at,
            "journal writer: accepted_at decreased at seq {}",
            row.ticket.seq
        );
        let canonical = row
            .digests
            .middle
            .canonical(row.ticket.seq, &format_micros(row.ticket.accepted_at));
        assert_eq!(
            contract::chain::link(&chain, &canonical),
            row.chain,
            "journal writer: chain broken at seq {}",
            row.ticket.seq
        );
        (seq, at, chain) = (row.ticket.seq, row.ticket.accepted_at, row.chain);
    }
    assert_eq!(
        (seq, at, chain),
        (after.last_seq, after.last_at, after.last_chain)
    );
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn request(key: Option<&str>, intake: &'static str, raw: &str) -> NewRequest {
        NewRequest {
            intake,
            message_id: format!("<{raw}@plan.test>"),
            dedup_key: key.map(str::to_string),
            sender: "a@b.example".into(),
            ack_to: None,
            domain: "plan.fr".into(),
            fields: BTreeMap::from([("domain".into(), raw.into())]),
            raw: raw.as_bytes().to_vec(),
        }
    }

    fn head(last_seq: u64, last_at: i64) -> Head {
        Head {
            last_seq,
            last_at,
            last_chain: contract::chain::genesis("j"),
            cursor: 2,
        }
    }

    fn run(requests: &[NewRequest], head: Head, now: i64, originals: Originals) -> Vec<Plan> {
        let digests: Vec<Digests> = requests.iter().map(Digests::of).collect();
        let (plans, rows, after) = plan(requests.iter().zip(&digests), head, now, originals);
        check(&rows, &head, &after);
        plans
    }

    fn seq(plan: &Plan) -> (u64, bool) {
        match plan {
            Plan::Ticket(t) => (t.seq, t.retransmission),
            Plan::Conflict => (0, false),
        }
    }

    #[test]
    fn seqs_follow_the_head_and_time_never_goes_back_on_a_slow_clock() {
        let requests = [request(None, "smtp", "a"), request(None, "smtp", "b")];
        let plans = run(&requests, head(7, 1_000), 500, Originals::default());
        for (plan, want) in plans.iter().zip([8, 9]) {
            let Plan::Ticket(ticket) = plan else {
                panic!("{plan:?}")
            };
            assert_eq!(ticket.seq, want);
            assert_eq!(
                ticket.accepted_at, 1_000,
                "the head's time, not the node's slower clock"
            );
            assert_eq!(ticket.position, want - 2);
        }
    }

    #[test]
    fn a_retransmission_in_the_same_batch_or_stored_gets_the_original() {
        let stored = Ticket {
            seq: 3,
            accepted_at: 10,
            position: 1,
            retransmission: false,
        };
        let old = request(Some("k1"), "smtp", "old");
        let mut originals = Originals::default();
        originals.found("k1", Digests::of(&old).content, stored);
        let requests = [
            request(Some("k2"), "smtp", "x"),
            request(Some("k2"), "smtp", "x"),
            request(Some("k1"), "smtp", "old"),
            request(Some("k1"), "smtp", "other content"),
        ];
        let plans = run(&requests, head(7, 0), 20, originals);
        let got: Vec<_> = plans.iter().map(seq).collect();
        assert_eq!(got, [(8, false), (8, true), (3, true), (9, false)]);
    }

    #[test]
    fn a_web_key_reused_with_other_content_is_a_conflict() {
        let requests = [
            request(Some("w"), "http", "x"),
            request(Some("w"), "http", "y"),
        ];
        let plans = run(&requests, head(0, 0), 1, Originals::default());
        assert_eq!(plans[1], Plan::Conflict);
    }

    #[test]
    #[should_panic(expected = "seqs not contiguous")]
    fn the_check_catches_a_gap() {
        let requests = [request(None, "smtp", "a")];
        let digests: Vec<Digests> = requests.iter().map(Digests::of).collect();
        let (_, rows, after) = plan(
            requests.iter().zip(&digests),
            head(7, 0),
            1,
            Originals::default(),
        );
        check(&rows, &head(6, 0), &after);
    }
}
