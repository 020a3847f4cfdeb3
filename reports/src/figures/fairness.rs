//! Fairness (contract: Fair intake): whether every client group, and every client where there are
//! few, was served alike. A buffer that favours one client shows here as a higher accepted share,
//! a lower latency, and requests moved ahead of what their send times warrant (negative
//! displacement), while the others' move back.
//!
//! - **Displacement**: every request with a seq (the ticket of its success reply, else its seq in
//!   the handover) has a rank in send order (its earliest end of data among the tries that were
//!   not refused) and a rank in seq order; its displacement is seq rank − send rank. A FIFO buffer
//!   under concurrent clients moves requests by about the number of requests in flight at once.
//! - **Jain's index** over the groups' accepted share (accepted / sent, for requests due from the
//!   first intended send to the last accepted reply: the burst, when clients contend):
//!   `(Σx)² / (n·Σx²)`, 1 when every group got the same share, 1/n when one got everything.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::{OutcomeTally, Outcomes, Requests};
use crate::analysis::RunRecords;
use crate::records::{Outcome, SentRecord, Stamp};

/// The group of records without one.
pub const DEFAULT_GROUP: &str = "default";

/// Clients are listed one by one up to this many.
pub const FEW_CLIENTS: usize = 16;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Fairness {
    /// Per client group (`group` of sent.jsonl; `default` without one).
    pub groups: BTreeMap<String, Share>,
    /// Per client, when there are at most [`FEW_CLIENTS`]; else empty.
    pub clients: BTreeMap<String, Share>,
    /// Jain's fairness index over the groups' accepted share; null without requests.
    pub jain_index: Option<f64>,
    /// How many groups the index is over (with one, it is 1 by definition).
    pub index_groups: u64,
}

/// What one group (or client) got.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Share {
    #[serde(flatten)]
    pub outcomes: Outcomes,
    /// accepted / requests, for the requests due during contention.
    pub accepted_share: f64,
    /// Mean of seq rank − send rank over its requests with a seq (negative: moved ahead).
    pub displacement_mean: f64,
    /// The most places one of its requests moved back (positive) or ahead (negative).
    pub displacement_max_back: i64,
    pub displacement_max_ahead: i64,
}

/// Per member (group or client): its tally, its displacements, its due and accepted counts.
#[derive(Default)]
struct Member {
    tally: OutcomeTally,
    displacements: Vec<i64>,
    due: u64,
    due_accepted: u64,
}

impl Member {
    fn finish(self) -> Share {
        let n = self.displacements.len().max(1) as f64;
        let share = |a: u64, b: u64| {
            if b == 0 {
                0.0
            } else {
                round4(a as f64 / b as f64)
            }
        };
        Share {
            outcomes: self.tally.finish(),
            accepted_share: share(self.due_accepted, self.due),
            displacement_mean: round4(self.displacements.iter().sum::<i64>() as f64 / n),
            displacement_max_back: self.displacements.iter().copied().max().unwrap_or(0).max(0),
            displacement_max_ahead: -self.displacements.iter().copied().min().unwrap_or(0).min(0),
        }
    }
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

pub fn fairness(records: &RunRecords) -> Fairness {
    let requests = Requests::of(&records.sent);
    let displacement = displacements(records, &requests);
    let window = contention(&requests);
    let mut groups: BTreeMap<String, Member> = BTreeMap::new();
    let mut clients: BTreeMap<u32, Member> = BTreeMap::new();
    for id in &requests.order {
        let attempts = &requests.by_id[id];
        let first = attempts[0];
        let group = first.group.as_deref().unwrap_or(DEFAULT_GROUP).to_string();
        let due =
            window.is_some_and(|(from, to)| first.intended_at >= from && first.intended_at <= to);
        let accepted = super::request_outcome(attempts) == Outcome::Accepted;
        for member in [
            groups.entry(group).or_default(),
            clients.entry(first.client).or_default(),
        ] {
            member.tally.add(attempts);
            if let Some(&d) = displacement.get(id) {
                member.displacements.push(d);
            }
            member.due += u64::from(due);
            member.due_accepted += u64::from(due && accepted);
        }
    }
    let groups: BTreeMap<String, Share> =
        groups.into_iter().map(|(g, m)| (g, m.finish())).collect();
    let shares: Vec<f64> = groups.values().map(|s| s.accepted_share).collect();
    Fairness {
        jain_index: jain(&shares),
        index_groups: shares.len() as u64,
        groups,
        clients: if clients.len() <= FEW_CLIENTS {
            clients
                .into_iter()
                .map(|(c, m)| (c.to_string(), m.finish()))
                .collect()
        } else {
            BTreeMap::new()
        },
    }
}

/// Jain's index of `shares`; null when there are none or all are zero.
pub fn jain(shares: &[f64]) -> Option<f64> {
    let sum: f64 = shares.iter().sum();
    let squares: f64 = shares.iter().map(|x| x * x).sum();
    (squares > 0.0).then(|| round4(sum * sum / (shares.len() as f64 * squares)))
}

/// From the first intended send to the last accepted reply.
fn contention(requests: &Requests) -> Option<(Stamp, Stamp)> {
    let all = || requests.by_id.values().flatten();
    let from = all().map(|s| s.intended_at).min()?;
    let to = all()
        .filter(|s| s.outcome == Outcome::Accepted)
        .filter_map(|s| s.replied_at)
        .max()?;
    Some((from, to))
}

/// Seq rank − send rank for every request with both a seq and an end of data that stored it.
fn displacements<'a>(records: &RunRecords, requests: &Requests<'a>) -> HashMap<&'a str, i64> {
    let mut handed_seq: HashMap<&str, u64> = HashMap::new();
    for h in &records.handed {
        if let Some(id) = requests.join(h.landrush_id.as_deref(), h.message_id.as_deref()) {
            let seq = handed_seq.entry(id).or_insert(h.seq);
            *seq = (*seq).min(h.seq);
        }
    }
    let mut placed: Vec<(&str, Stamp, u64)> = requests
        .order
        .iter()
        .filter_map(|&id| {
            let attempts = &requests.by_id[id];
            let seq = handed_seq.get(id).copied().or_else(|| ticket(attempts))?;
            let sent = attempts
                .iter()
                .filter(|s| s.outcome != Outcome::Refused)
                .filter_map(|s| s.sent_at)
                .min()?;
            Some((id, sent, seq))
        })
        .collect();
    placed.sort_by_key(|&(id, sent, _)| (sent, id));
    let send_rank: HashMap<&str, i64> = placed
        .iter()
        .enumerate()
        .map(|(rank, &(id, _, _))| (id, rank as i64))
        .collect();
    placed.sort_by_key(|&(id, _, seq)| (seq, id));
    placed
        .iter()
        .enumerate()
        .map(|(rank, &(id, _, _))| (id, rank as i64 - send_rank[id]))
        .collect()
}

fn ticket(attempts: &[&SentRecord]) -> Option<u64> {
    attempts
        .iter()
        .filter(|s| s.outcome == Outcome::Accepted)
        .find_map(|s| s.ticket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jain_is_one_when_equal_and_one_over_n_when_one_takes_all() {
        assert_eq!(jain(&[0.5, 0.5, 0.5]), Some(1.0));
        assert_eq!(jain(&[1.0, 0.0, 0.0, 0.0]), Some(0.25));
        assert_eq!(jain(&[]), None);
        assert_eq!(jain(&[0.0]), None);
    }
}
