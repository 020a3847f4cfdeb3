//! What every checker reads: the options of a run's checks ([`CheckOptions`]) and the joined
//! index of its requests ([`Index`]: each request's transmissions, handover and acks), with the
//! small tallies the checkers count into.

use std::collections::HashMap;

use reports::checks::CheckResult;
use reports::records::{AckRecord, HandedRecord, Outcome, SentRecord, Stamp};
use serde_json::{Value, json};

use super::clocks::Machines;
use crate::observe::bare_id;

/// How the checkers read a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOptions {
    /// False when the buffer sends no acks (`--no-acks`): the `acks` check is then skipped
    /// (`ok: None` with a note), never reported as passed.
    pub acks_expected: bool,
    /// How many counterexamples each check keeps.
    pub max_examples: usize,
    /// What `HandedRecord.seq` means for this run.
    pub seqs: SeqSource,
    /// The first seq the buffer handed out in this run (1 for a fresh buffer). Gaps are counted from
    /// here; `None` counts them from the lowest seq observed, for a buffer that already held requests.
    pub first_seq: Option<u64>,
    /// How far apart two clients' clocks may be, in microseconds: A's reply orders B only if it was
    /// seen more than this before B was sent. 0 for one driver on one machine; set it to the clock
    /// skew bound when `sent.jsonl` merges shards from several machines, or precedence would fail
    /// on skew rather than on the buffer.
    pub clock_tolerance_us: u64,
    /// Which machine recorded each request, and their clock offsets (contract: FIFO, rule 8):
    /// `check_run` reads them from run.json.
    pub machines: Machines,
    /// The buffer's own highest stored seq (its `/v1/stats` `accepted` at the end): every seq up
    /// to it must be handed over, so lost seqs nobody got a reply for are found too.
    pub highest_seq: Option<u64>,
    /// Whether a handover observer ran (`handed.jsonl` exists). Without one the checks that
    /// need the handover cannot run: the run is `incomplete`, not failed nor passed.
    pub handover_observed: bool,
    /// Whether an ack sink ran (`acks.jsonl` exists).
    pub acks_observed: bool,
    /// Shards of the run whose records are missing from the folder.
    pub missing_shards: u64,
    /// False when the wait for the handover and the acks ended before everything arrived.
    pub drain_complete: Option<bool>,
    /// The buffer's stats at the end (see `records::CheckInputs`): when its queue was not empty,
    /// accepted requests above its cursor not handed over are `pending`, not lost; when acks were
    /// still pending, missing acks are `pending`, not missing. Either makes the check incomplete.
    pub final_cursor: Option<u64>,
    pub final_queue_depth: Option<u64>,
    pub final_acks_pending: Option<u64>,
}

impl CheckOptions {
    /// The cursor above which the buffer still held requests the observer never took, if it did.
    pub fn still_queued_above(&self) -> Option<u64> {
        match (self.final_queue_depth, self.final_cursor) {
            (Some(depth), Some(cursor)) if depth > 0 => Some(cursor),
            _ => None,
        }
    }

    /// Whether the buffer still had acks to send when the observers stopped.
    pub fn acks_still_pending(&self) -> bool {
        self.final_acks_pending.is_some_and(|n| n > 0)
    }
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            acks_expected: true,
            max_examples: 5,
            seqs: SeqSource::Auto,
            first_seq: None,
            clock_tolerance_us: 0,
            machines: Default::default(),
            highest_seq: None,
            handover_observed: true,
            acks_observed: true,
            missing_shards: 0,
            drain_complete: None,
            final_cursor: None,
            final_queue_depth: None,
            final_acks_pending: None,
        }
    }
}

/// Whether handover seqs are the buffer's own sequence numbers or only the order of delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SeqSource {
    /// Delivery order if any handed record says `seq_is_order`, else buffer seqs.
    #[default]
    Auto,
    /// The buffer's seqs (our handover API): tickets, gaps and handover order are checked.
    Buffer,
    /// 1-based delivery order (a foreign buffer observed via SMTP or Maildir): ticket, gap and
    /// handover-order checks do not apply, the rest is checked on delivery order.
    DeliveryOrder,
}

/// What became of a request, over all its transmissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// At least one transmission was answered with success.
    Accepted,
    /// Every transmission was answered with an error: it must not be stored.
    Refused,
    /// No success, and at least one transmission got no reply: allowed either way (contract: Indeterminate outcomes).
    Indeterminate,
    /// Every transmission failed before its end of data: it cannot be stored.
    Failed,
}

impl Status {
    fn name(self) -> &'static str {
        match self {
            Status::Accepted => "accepted",
            Status::Refused => "refused",
            Status::Indeterminate => "indeterminate",
            Status::Failed => "failed",
        }
    }

    /// Refused or failed: the buffer cannot have stored it.
    pub fn never_stored(self) -> bool {
        matches!(self, Status::Refused | Status::Failed)
    }
}

/// One request (one `SentRecord.id`), with everything the other files say about it.
#[derive(Debug)]
pub(crate) struct Request<'a> {
    pub id: &'a str,
    pub sender: &'a str,
    pub attempts: Vec<&'a SentRecord>,
    pub status: Status,
    /// Earliest end-of-data over all transmissions.
    pub first_sent: Option<Stamp>,
    /// Earliest end-of-data over the transmissions that were not refused: the first moment the
    /// buffer could have stored it (a refused try stored nothing; contract: FIFO, rule 5).
    pub first_storing_sent: Option<Stamp>,
    /// The accepted-at its first success reply named, if the reply names one.
    pub reply_accepted_at: Option<Stamp>,
    /// Earliest success reply: by then its seq was assigned.
    pub first_accept: Option<Stamp>,
    /// Distinct tickets named by success replies, in transmission order.
    pub tickets: Vec<u64>,
    /// Indices into `handed` of every handed record joined to it, in file order.
    pub handed: Vec<usize>,
    /// Distinct seqs it was handed over under, in order of first receipt.
    pub handed_seqs: Vec<u64>,
    /// Indices into `acks` of the distinct acks (first receipt of each ack Message-ID) joined to it.
    pub acks: Vec<usize>,
}

/// The three record files joined: requests by id, handed records and acks mapped to requests.
pub(crate) struct Index<'a> {
    pub requests: Vec<Request<'a>>,
    pub handed: &'a [HandedRecord],
    /// Per handed record: the request it names, if any.
    pub handed_req: Vec<Option<usize>>,
    /// Per handed record: true for the first receipt of its seq, false for a redelivery.
    pub handed_first: Vec<bool>,
    pub acks: &'a [AckRecord],
    /// Per ack record: the request its In-Reply-To names, if any.
    pub ack_req: Vec<Option<usize>>,
    /// Per ack record: true for the first receipt of its Message-ID, false for a resend.
    pub ack_first: Vec<bool>,
    /// Whether seqs are delivery order rather than the buffer's seqs.
    pub seq_is_order: bool,
    /// Which machine recorded each request, so counterexamples can name it.
    pub machines: Machines,
}

impl<'a> Index<'a> {
    pub fn build(
        sent: &'a [SentRecord],
        handed: &'a [HandedRecord],
        acks: &'a [AckRecord],
        options: &CheckOptions,
    ) -> Self {
        let seq_is_order = match options.seqs {
            SeqSource::Auto => handed.iter().any(|h| h.seq_is_order),
            SeqSource::Buffer => false,
            SeqSource::DeliveryOrder => true,
        };
        let (mut requests, keys) = requests_of(sent);
        let mut handed_req = Vec::with_capacity(handed.len());
        let mut handed_first = Vec::with_capacity(handed.len());
        let mut seen_seqs = std::collections::HashSet::new();
        for (i, h) in handed.iter().enumerate() {
            let req = keys.join(h.landrush_id.as_deref(), h.message_id.as_deref());
            handed_req.push(req);
            handed_first.push(seen_seqs.insert(h.seq));
            if let Some(r) = req {
                let request = &mut requests[r];
                request.handed.push(i);
                if !request.handed_seqs.contains(&h.seq) {
                    request.handed_seqs.push(h.seq);
                }
            }
        }
        let mut ack_req = Vec::with_capacity(acks.len());
        let mut ack_first = Vec::with_capacity(acks.len());
        let mut seen_acks = std::collections::HashSet::new();
        for (i, a) in acks.iter().enumerate() {
            let req = keys.join_ack(a.in_reply_to.as_deref(), a.ticket, &requests);
            ack_req.push(req);
            // An ack without a Message-ID cannot be told apart from a second ack: it counts as distinct.
            let first = match &a.message_id {
                Some(m) => seen_acks.insert(bare_id(m)),
                None => true,
            };
            ack_first.push(first);
            if let (Some(r), true) = (req, first) {
                requests[r].acks.push(i);
            }
        }
        Index {
            requests,
            handed,
            handed_req,
            handed_first,
            acks,
            ack_req,
            ack_first,
            seq_is_order,
            machines: options.machines.clone(),
        }
    }

    /// The seq a request holds: the first seq it was handed over under, else (buffer seqs only) the
    /// ticket its success reply named.
    pub fn seq_of(&self, r: usize) -> Option<u64> {
        let request = &self.requests[r];
        request.handed_seqs.iter().copied().min().or_else(|| {
            if self.seq_is_order {
                None
            } else {
                request.tickets.first().copied()
            }
        })
    }

    /// The accepted-at the buffer gave request `r`: as its success reply said, else (like its
    /// ticket) as the handover says.
    pub fn accepted_at_of(&self, r: usize) -> Option<Stamp> {
        let request = &self.requests[r];
        request.reply_accepted_at.or_else(|| {
            request
                .handed
                .iter()
                .find_map(|&i| self.handed[i].accepted_at)
        })
    }

    /// Whether the request was stored by the buffer, as far as the records prove: handed over, or
    /// acked (acks come from the durable outbox, written in the same transaction as the request).
    pub fn stored(&self, r: usize, options: &CheckOptions) -> bool {
        let request = &self.requests[r];
        !request.handed.is_empty() || (options.acks_expected && !request.acks.is_empty())
    }

    /// A short JSON description of a request for counterexamples.
    pub fn describe(&self, r: usize) -> Value {
        let request = &self.requests[r];
        let first = request.attempts[0];
        let mut v = json!({
            "id": request.id,
            "message_id": first.message_id,
            "status": request.status.name(),
            "sent_at": request.first_sent.map(|s| s.to_string()),
        });
        if let Some(at) = request.first_accept {
            v["replied_at"] = json!(at.to_string());
        }
        if !request.tickets.is_empty() {
            v["ticket"] = json!(request.tickets[0]);
        }
        if !request.handed_seqs.is_empty() {
            v["handed_seqs"] = json!(request.handed_seqs);
        }
        // The shard and host that recorded it, when the run says (contract: FIFO, rule 7).
        if self.machines != Machines::Unattributed {
            v["machine"] = self
                .machines
                .describe(self.machines.machine_of(first.client));
        }
        v
    }

    /// A short JSON description of a handed record for counterexamples.
    pub fn describe_handed(&self, i: usize) -> Value {
        let h = &self.handed[i];
        json!({
            "seq": h.seq,
            "id": h.landrush_id,
            "message_id": h.message_id,
            "accepted_at": h.accepted_at.map(|s| s.to_string()),
            "handed_at": h.handed_at.to_string(),
            "line": i + 1,
        })
    }

    /// A short JSON description of an ack record for counterexamples.
    pub fn describe_ack(&self, i: usize) -> Value {
        let a = &self.acks[i];
        json!({
            "ack_message_id": a.message_id,
            "in_reply_to": a.in_reply_to,
            "ticket": a.ticket,
            "accepted_at": a.accepted_at.map(|s| s.to_string()),
            "to": a.to,
            "received_at": a.received_at.to_string(),
            "line": i + 1,
        })
    }
}

/// The requests of `sent` (one per id, its transmissions in order) and the keys that join the
/// other records to them.
fn requests_of<'a>(sent: &'a [SentRecord]) -> (Vec<Request<'a>>, Keys<'a>) {
    let mut requests: Vec<Request<'a>> = Vec::new();
    let mut keys = Keys {
        by_id: HashMap::new(),
        by_mid: HashMap::new(),
    };
    for record in sent {
        let at = *keys.by_id.entry(record.id.as_str()).or_insert_with(|| {
            requests.push(Request {
                id: &record.id,
                sender: &record.sender,
                attempts: Vec::new(),
                status: Status::Failed,
                first_sent: None,
                first_storing_sent: None,
                reply_accepted_at: None,
                first_accept: None,
                tickets: Vec::new(),
                handed: Vec::new(),
                handed_seqs: Vec::new(),
                acks: Vec::new(),
            });
            requests.len() - 1
        });
        // A Message-ID under several ids is a key collider's doing (an adversary reusing its
        // victim's): every one is kept, and an ack picks among them by the ticket it names.
        let sharing = keys.by_mid.entry(bare_id(&record.message_id)).or_default();
        if !sharing.contains(&at) {
            sharing.push(at);
        }
        let request = &mut requests[at];
        request.attempts.push(record);
        request.first_sent = min_stamp(request.first_sent, record.sent_at);
        if record.outcome != Outcome::Refused {
            request.first_storing_sent = min_stamp(request.first_storing_sent, record.sent_at);
        }
        match record.outcome {
            Outcome::Accepted => {
                request.status = Status::Accepted;
                if request.reply_accepted_at.is_none() {
                    request.reply_accepted_at = record.reply.as_deref().and_then(reply_accepted_at);
                }
                request.first_accept = min_stamp(request.first_accept, record.replied_at);
                if let Some(t) = record.ticket
                    && !request.tickets.contains(&t)
                {
                    request.tickets.push(t);
                }
            }
            Outcome::Indeterminate if request.status.never_stored() => {
                request.status = Status::Indeterminate;
            }
            Outcome::Refused if request.status == Status::Failed => {
                request.status = Status::Refused;
            }
            _ => {}
        }
    }
    (requests, keys)
}

/// The accepted-at a success reply names: barrage's SMTP `250 2.0.0 queued as ticket N at TIME`,
/// or the `accepted_at` of its HTTP `202 {…}` body.
pub(crate) fn reply_accepted_at(reply: &str) -> Option<Stamp> {
    if let Some(at) = reply.find('{') {
        let body: Value = serde_json::from_str(&reply[at..]).ok()?;
        return Stamp::parse(body.get("accepted_at")?.as_str()?).ok();
    }
    let (_, after) = reply.rsplit_once(" at ")?;
    Stamp::parse(after.split_whitespace().next()?).ok()
}

/// A request's index by its `X-Landrush-Id` and by its Message-ID (the requests that sent it, in
/// the order they were first recorded).
struct Keys<'a> {
    by_id: HashMap<&'a str, usize>,
    by_mid: HashMap<&'a str, Vec<usize>>,
}

impl Keys<'_> {
    /// The request a record names, by id first, else by Message-ID (the first request that sent
    /// it).
    fn join(&self, landrush_id: Option<&str>, message_id: Option<&str>) -> Option<usize> {
        landrush_id
            .and_then(|id| self.by_id.get(id.trim()).copied())
            .or_else(|| message_id.and_then(|m| self.by_mid.get(bare_id(m))?.first().copied()))
    }

    /// The request an ack answers: by its `In-Reply-To`; where several requests sent that
    /// Message-ID, the one whose ticket the ack names (else the first, so a wrong ticket still
    /// shows as a mismatch of that request).
    fn join_ack(
        &self,
        in_reply_to: Option<&str>,
        ticket: Option<u64>,
        requests: &[Request<'_>],
    ) -> Option<usize> {
        let sharing = self.by_mid.get(bare_id(in_reply_to?))?;
        let named = |&&r: &&usize| ticket.is_some_and(|t| requests[r].tickets.contains(&t));
        sharing.iter().find(named).or(sharing.first()).copied()
    }
}

fn min_stamp(a: Option<Stamp>, b: Option<Stamp>) -> Option<Stamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Counts and the first few counterexamples of one check, turned into a [`CheckResult`].
pub(crate) struct Tally {
    result: CheckResult,
    max_examples: usize,
}

impl Tally {
    /// A tally with every named count present (at zero), so report.json always has them.
    pub fn new(options: &CheckOptions, names: &[&str]) -> Self {
        let mut result = CheckResult::default();
        for name in names {
            result.counts.insert((*name).to_string(), 0);
        }
        Tally {
            result,
            max_examples: options.max_examples,
        }
    }

    /// Counts one occurrence of `name`.
    pub fn count(&mut self, name: &str) {
        self.add(name, 1);
    }

    pub fn add(&mut self, name: &str, n: u64) {
        *self.result.counts.entry(name.to_string()).or_insert(0) += n;
    }

    pub fn get(&self, name: &str) -> u64 {
        self.result.counts.get(name).copied().unwrap_or(0)
    }

    /// Keeps a counterexample if there is room; `make` runs only then, so building examples for a
    /// million violations costs nothing.
    pub fn example(&mut self, make: impl FnOnce() -> Value) {
        if self.result.examples.len() < self.max_examples {
            self.result.examples.push(make());
        }
    }

    pub fn note(&mut self, note: impl Into<String>) {
        let note = note.into();
        self.result.note = Some(match self.result.note.take() {
            Some(old) => format!("{old}; {note}"),
            None => note,
        });
    }

    /// The result: failed if any of `failing` counts is non-zero.
    pub fn finish(mut self, failing: &[&str]) -> CheckResult {
        let failed = failing.iter().any(|name| self.get(name) > 0);
        self.result.ok = Some(!failed);
        self.result
    }

    /// Like [`Tally::finish`], but a check with nothing failed and `pending` counted could not
    /// judge everything: it is incomplete, with `why` as its note.
    pub fn finish_unless_pending(
        mut self,
        failing: &[&str],
        pending: &str,
        why: &str,
    ) -> CheckResult {
        let failed = failing.iter().any(|name| self.get(name) > 0);
        if failed || self.get(pending) == 0 {
            return self.finish(failing);
        }
        self.note(why);
        self.result.ok = None;
        self.result.incomplete = true;
        self.result
    }

    /// The result of a check that does not apply: `ok` is `None`, never a pass.
    pub fn skipped(mut self, why: &str) -> CheckResult {
        self.note(why);
        self.result.ok = None;
        self.result
    }

    /// The result of a check that applies but could not run: `ok` is `None` and the run is
    /// `incomplete`.
    pub fn could_not_run(self, why: &str) -> CheckResult {
        let mut result = self.skipped(why);
        result.incomplete = true;
        result
    }
}
