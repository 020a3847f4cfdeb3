//! Judging a trace: every reply with a ticket must follow an fsync of the journal that began
//! after the write holding its request and completed before the reply (contract: Durability).

use std::collections::{HashMap, HashSet};

use reports::records::{Outcome, SentRecord};
use serde::Serialize;

use super::trace::Call;
use crate::driver::smtp::wire::parse_ticket;

/// The audit's findings.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AuditReport {
    /// True when at least one reply was checked and none broke the rule.
    pub ok: bool,
    /// `250 … ticket N` replies found in the trace.
    pub replies: u64,
    /// Of those, checked against the journal (their request's Message-ID is known).
    pub checked: u64,
    /// Replies written before their request's data reached the journal file at all.
    pub before_write: u64,
    /// Replies written after the write but before an fsync of the journal completed.
    pub before_fsync: u64,
    /// Replies whose ticket is not in sent.jsonl (not judged).
    pub unknown_tickets: u64,
    /// Accepted requests of sent.jsonl whose reply is not in the trace.
    pub replies_missing: u64,
    /// Writes to and syncs of the journal file seen.
    pub journal_writes: u64,
    pub journal_syncs: u64,
    /// Replies per fsync of the journal: the group commit seen from outside.
    pub replies_per_sync: f64,
    pub examples: Vec<String>,
}

/// Checks `calls` against the tickets of `sent`: every 250 with a ticket must follow an fsync of
/// the journal (`path` ending with `journal_suffix`) that started after the first journal write
/// holding the ticket's Message-ID and completed before the reply was written.
pub fn audit(calls: &[Call], sent: &[SentRecord], journal_suffix: &str) -> AuditReport {
    let mut report = AuditReport::default();
    let mut ticket_ids: HashMap<u64, &str> = HashMap::new();
    let mut wanted: HashMap<&str, u64> = HashMap::new();
    for s in sent {
        if s.outcome == Outcome::Accepted
            && let Some(t) = s.ticket
        {
            ticket_ids.entry(t).or_insert(s.message_id.as_str());
            wanted.entry(s.message_id.as_str()).or_insert(t);
        }
    }
    let seen = Seen::collect(calls, &wanted, journal_suffix);
    report.journal_writes = seen.journal_writes;
    report.journal_syncs = seen.syncs.len() as u64;
    report.replies = seen.replies.len() as u64;
    let mut replied = HashSet::new();
    for &(ticket, at) in &seen.replies {
        replied.insert(ticket);
        let Some(id) = ticket_ids.get(&ticket) else {
            report.unknown_tickets += 1;
            continue;
        };
        report.checked += 1;
        seen.judge_reply(&mut report, ticket, id, at);
    }
    report.replies_missing = ticket_ids.keys().filter(|t| !replied.contains(t)).count() as u64;
    report.replies_per_sync = if seen.syncs.is_empty() {
        0.0
    } else {
        seen.replies.len() as f64 / seen.syncs.len() as f64
    };
    report.ok = report.checked > 0
        && report.before_write == 0
        && report.before_fsync == 0
        && report.replies_missing == 0;
    report
}

/// What the trace shows: when each wanted Message-ID first reached the journal, the journal's
/// syncs (start, end; sorted), and the replies with a ticket (ticket, when written).
struct Seen<'a> {
    written: HashMap<&'a str, i64>,
    syncs: Vec<(i64, i64)>,
    replies: Vec<(u64, i64)>,
    journal_writes: u64,
}

impl<'a> Seen<'a> {
    fn collect(calls: &[Call], wanted: &HashMap<&'a str, u64>, journal_suffix: &str) -> Seen<'a> {
        let mut seen = Seen {
            written: HashMap::new(),
            syncs: Vec::new(),
            replies: Vec::new(),
            journal_writes: 0,
        };
        for call in calls {
            let journal = call.path.ends_with(journal_suffix);
            match call.name.as_str() {
                "fsync" | "fdatasync" if journal && call.ret == 0 => {
                    seen.syncs.push((call.start_us, call.end_us));
                }
                _ if journal && call.ret > 0 => {
                    seen.journal_writes += 1;
                    for id in message_ids(&call.data) {
                        if let Some((key, _)) = wanted.get_key_value(id) {
                            seen.written.entry(key).or_insert(call.end_us);
                        }
                    }
                }
                "write" | "sendto" | "writev" if !journal && call.ret > 0 => {
                    for line in call.data.split(|&b| b == b'\n') {
                        let line = String::from_utf8_lossy(line);
                        if line.starts_with("250")
                            && let Some(t) = parse_ticket(&line)
                        {
                            seen.replies.push((t, call.start_us));
                        }
                    }
                }
                _ => {}
            }
        }
        seen.syncs.sort_unstable();
        seen
    }

    /// Judges the reply with `ticket` (request `id`) written at `at`.
    fn judge_reply(&self, report: &mut AuditReport, ticket: u64, id: &str, at: i64) {
        let Some(&w) = self.written.get(id) else {
            report.before_write += 1;
            example(
                &mut report.examples,
                format!(
                    "ticket {ticket} ({id}) replied at {}: its data never reached the journal",
                    clock(at)
                ),
            );
            return;
        };
        if w > at {
            report.before_write += 1;
            example(
                &mut report.examples,
                format!(
                    "ticket {ticket} ({id}) replied at {}, {} µs before its journal write ({})",
                    clock(at),
                    w - at,
                    clock(w)
                ),
            );
            return;
        }
        // A sync that began after the write and ended before the reply.
        let first = self.syncs.partition_point(|&(s, _)| s < w);
        let covered = self.syncs[first..]
            .iter()
            .take_while(|&&(s, _)| s <= at)
            .any(|&(_, e)| e <= at);
        if !covered {
            report.before_fsync += 1;
            let next = self.syncs[first..]
                .iter()
                .find(|&&(s, _)| s >= w)
                .map(|&(_, e)| format!("the next fsync of the journal completed at {}", clock(e)))
                .unwrap_or_else(|| "no fsync of the journal followed".into());
            example(
                &mut report.examples,
                format!(
                    "ticket {ticket} ({id}) replied at {} after its journal write at {} but \
                     before any fsync of it completed: {next}",
                    clock(at),
                    clock(w)
                ),
            );
        }
    }
}

fn example(examples: &mut Vec<String>, text: String) {
    if examples.len() < 5 {
        examples.push(text);
    }
}

fn clock(us: i64) -> String {
    let us = us.rem_euclid(86_400_000_000);
    format!(
        "{:02}:{:02}:{:02}.{:06}",
        us / 3_600_000_000,
        us / 60_000_000 % 60,
        us / 1_000_000 % 60,
        us % 1_000_000
    )
}

/// The `<…@…>` Message-IDs in a journal write.
fn message_ids(data: &[u8]) -> impl Iterator<Item = &str> {
    let mut at = 0;
    std::iter::from_fn(move || {
        while at < data.len() {
            let open = at + data[at..].iter().position(|&b| b == b'<')?;
            let end = (open + 256).min(data.len());
            let close = data[open + 1..end]
                .iter()
                .position(|&b| b == b'>' || b == b'<' || !(0x21..0x7f).contains(&b))
                .map(|p| open + 1 + p);
            match close {
                Some(c) if data[c] == b'>' => {
                    at = c + 1;
                    if let Ok(id) = std::str::from_utf8(&data[open..=c])
                        && id.contains('@')
                    {
                        return Some(id);
                    }
                }
                Some(c) => at = c,
                None => at = open + 1,
            }
        }
        None
    })
}

impl AuditReport {
    /// For people.
    pub fn render(&self) -> String {
        let mut s = format!(
            "fsync audit: {}\n  {} replies with a ticket in the trace, {} checked against {} \
             journal writes and {} journal syncs ({:.1} replies per sync)\n  replied before the \
             journal write: {}\n  replied after the write but before its fsync completed: {}\n  \
             accepted requests whose reply is not in the trace: {}\n  replies with a ticket not \
             in sent.jsonl: {}\n",
            if self.ok { "PASS" } else { "FAIL" },
            self.replies,
            self.checked,
            self.journal_writes,
            self.journal_syncs,
            self.replies_per_sync,
            self.before_write,
            self.before_fsync,
            self.replies_missing,
            self.unknown_tickets,
        );
        if self.checked == 0 {
            s.push_str("  nothing was checked: no reply to judge is not a pass\n");
        }
        for e in &self.examples {
            s.push_str(&format!("  - {e}\n"));
        }
        s
    }
}
