//! One request of a scenario, computed from its index, and the RFC 5322 mail that carries it.
//!
//! Every choice (domain, holder, size, misbehaviour) comes from [`mix`], a hash of the seed, the
//! index and what is being chosen, never from a running random generator: request `i` is the
//! same whichever shard or client computes it and whatever was computed before. The hash
//! (SplitMix64, in `crate::scenario::seeded`) is written out rather than taken from a crate so
//! that scenario outputs cannot change when a dependency does.

use std::io::Write;

use reports::records::Stamp;
use time::format_description::well_known::Rfc2822;

use super::Plan;
use crate::scenario::Scenario;
use crate::scenario::seeded::{mix, unit};

/// What a request is, in the scenario's words (the `kind` of its `sent.jsonl` lines).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// An ordinary request for a name from the pool.
    Normal,
    /// A request for a hot name: several clients ask for it within the same second.
    Hot,
    /// "Hitting Submit": the content of the client's previous request, new id and Message-ID.
    Resubmission,
    /// Sent, connection dropped after the final `.` without reading the reply, sent again
    /// identically (RFC 1047).
    Retransmission,
    /// The form has no domain or an invalid one.
    Malformed,
    /// Larger than the buffer accepts.
    Oversize,
    /// A key-collider's request: another request's envelope sender and Message-ID (its dedup
    /// key, contract: Retransmission) with different content, sent just before that request.
    Collider,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Normal => "normal",
            Kind::Hot => "hot",
            Kind::Resubmission => "resubmission",
            Kind::Retransmission => "retransmission",
            Kind::Malformed => "malformed",
            Kind::Oversize => "oversize",
            Kind::Collider => "collider",
        }
    }
}

/// One request, as the driver sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Position in the scenario (0-based); also fixes the due time and the client.
    pub index: u64,
    /// The `X-Landrush-Id`.
    pub id: String,
    pub client: u32,
    /// The client group (its index in the scenario's list) that sends it.
    pub group: usize,
    pub kind: Kind,
    /// The `domain:` value as written (empty if the line is missing, invalid if malformed).
    pub domain: String,
    /// Whether the form has a `domain:` line at all.
    pub has_domain_line: bool,
    pub holder: String,
    pub contact: String,
    /// Envelope sender and `From:`: the requester, where the ack goes.
    pub sender: String,
    pub recipient: String,
    pub message_id: String,
    /// Target size of the whole message in bytes (padding is added to reach it).
    pub size: u64,
    /// Whether this client sends slowly.
    pub slow: bool,
}

/// The request factory of one scenario.
#[derive(Debug, Clone)]
pub struct RequestMaker {
    scenario: Scenario,
    plan: Plan,
    /// Prepended to every id and Message-ID (see `RunOptions::tag`).
    tag: Option<String>,
    size_weights: u64,
}

// What a hash draw is for: each choice has its own stream so that changing one fraction does not
// reshuffle every other choice.
const KIND: u64 = 1;
const DOMAIN: u64 = 2;
const HOLDER: u64 = 3;
const SIZE: u64 = 4;
const MALFORM: u64 = 5;
const SLOW: u64 = 6;
const COLLIDE: u64 = 7;

impl RequestMaker {
    /// `tag`, if given, is prepended to every id and Message-ID so that reruns against the same
    /// buffer are not taken for retransmissions of each other.
    pub fn new(scenario: &Scenario, plan: &Plan, tag: Option<String>) -> RequestMaker {
        RequestMaker {
            scenario: scenario.clone(),
            plan: plan.clone(),
            tag,
            size_weights: scenario
                .requests
                .sizes
                .iter()
                .map(|s| s.weight as u64)
                .sum(),
        }
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The run tag prefixed to ids and Message-IDs, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn scenario(&self) -> &Scenario {
        &self.scenario
    }

    /// The id of request `index`.
    pub fn id(&self, index: u64) -> String {
        match &self.tag {
            Some(tag) => format!("{tag}-r{index:07}"),
            None => format!("r{index:07}"),
        }
    }

    /// Whether client `client` is one of the slow ones.
    pub fn is_slow(&self, client: u32) -> bool {
        unit(self.scenario.seed, client as u64, SLOW) < self.scenario.misbehaviour.slow_clients
    }

    /// The kind of request `index`, before hot slots.
    fn drawn_kind(&self, index: u64) -> Kind {
        if self.plan.hot_of(index).is_some() {
            return Kind::Hot;
        }
        let m = &self.scenario.misbehaviour;
        let u = unit(self.scenario.seed, index, KIND);
        let mut edge = m.retransmissions;
        if u < edge {
            return Kind::Retransmission;
        }
        edge += m.resubmissions;
        if u < edge {
            // Hitting Submit again needs a previous request from the same client.
            return if self.plan.assignment().previous_of(index).is_some() {
                Kind::Resubmission
            } else {
                Kind::Normal
            };
        }
        edge += m.malformed;
        if u < edge {
            return Kind::Malformed;
        }
        edge += m.oversize;
        if u < edge {
            return Kind::Oversize;
        }
        Kind::Normal
    }

    /// The request whose mail request `index` repeats: itself, or for a resubmission the
    /// client's earlier request (followed back through resubmissions at most 64 steps).
    fn content_index(&self, index: u64) -> u64 {
        let mut at = index;
        for _ in 0..64 {
            if self.drawn_kind(at) == Kind::Resubmission
                && let Some(previous) = self.plan.assignment().previous_of(at)
            {
                at = previous;
            } else {
                break;
            }
        }
        at
    }

    /// The domain name ordinary request `index` asks for.
    fn domain_for(&self, index: u64) -> String {
        let d = &self.scenario.domains;
        if let Some(hot) = self.plan.hot_of(index) {
            return match d.hot.get(hot as usize) {
                Some(name) => name.clone(),
                None => generated_name(d.pool + hot as u64, &d.tld),
            };
        }
        generated_name(mix(self.scenario.seed, index, DOMAIN) % d.pool, &d.tld)
    }

    /// Request `index` of the scenario.
    pub fn request(&self, index: u64) -> Request {
        if self.drawn_kind(index) != Kind::Resubmission {
            return self.fresh(index);
        }
        // Hitting Submit again: the very same mail as the client's earlier request (malformed
        // or oversize included), under a new id and a new Message-ID.
        let mut request = self.fresh(self.content_index(index));
        request.index = index;
        request.id = self.id(index);
        request.message_id = self.message_id(&request.id);
        request.kind = Kind::Resubmission;
        request
    }

    /// The key-collider's request against request `victim`, sent by `client` of group
    /// `group`: the victim's envelope sender and Message-ID, another domain and holder, an id of
    /// its own (`VICTIM-ID-k`).
    pub fn collider(&self, victim: u64, client: u32, group: usize) -> Request {
        let original = self.request(victim);
        let d = &self.scenario.domains;
        let seed = self.scenario.seed;
        let mut n = mix(seed, victim, COLLIDE) % d.pool.max(2);
        let mut domain = generated_name(n, &d.tld);
        if domain == original.domain {
            n = (n + 1) % d.pool.max(2);
            domain = generated_name(n, &d.tld);
        }
        let holder_no = mix(seed, victim, COLLIDE + 1) % 1_000_000;
        Request {
            id: format!("{}-k", original.id),
            client,
            group,
            kind: Kind::Collider,
            domain,
            has_domain_line: true,
            holder: format!("Collider {holder_no}"),
            contact: format!("collider-{holder_no}@holders.invalid"),
            slow: false,
            ..original
        }
    }

    fn message_id(&self, id: &str) -> String {
        format!("<{id}.{:x}@landrush.invalid>", self.scenario.seed)
    }

    /// Request `index` as if it were not a resubmission.
    fn fresh(&self, index: u64) -> Request {
        let s = &self.scenario;
        let seed = s.seed;
        let client = self.plan.client_of(index);
        let kind = match self.drawn_kind(index) {
            Kind::Resubmission => Kind::Normal,
            kind => kind,
        };
        let holder_no = mix(seed, index, HOLDER) % 1_000_000;
        let mut domain = self.domain_for(index);
        let mut has_domain_line = true;
        if kind == Kind::Malformed {
            let tld = &s.domains.tld;
            match mix(seed, index, MALFORM) % 5 {
                0 => {
                    has_domain_line = false;
                    domain = String::new();
                }
                1 => domain = String::new(),
                2 => domain = format!("-bad-.{tld}"),
                3 => domain = format!("two words.{tld}"),
                _ => domain = format!("a..b.{tld}"),
            }
        }
        let size = if kind == Kind::Oversize {
            s.misbehaviour.oversize_bytes
        } else {
            let mut pick = mix(seed, index, SIZE) % self.size_weights.max(1);
            let mut size = s.requests.sizes[0].bytes;
            for choice in &s.requests.sizes {
                if pick < choice.weight as u64 {
                    size = choice.bytes;
                    break;
                }
                pick -= choice.weight as u64;
            }
            size
        };
        let id = self.id(index);
        let message_id = self.message_id(&id);
        Request {
            index,
            id,
            client,
            group: self.plan.assignment().group_of_request(index),
            kind,
            domain,
            has_domain_line,
            holder: format!("Holder {holder_no}"),
            contact: format!("contact-{holder_no}@holders.invalid"),
            sender: format!(
                "registrar-{}@{}",
                client % s.requests.requesters,
                s.requests.requester_domain
            ),
            recipient: s.requests.recipient.clone(),
            message_id,
            size,
            slow: self.is_slow(client),
        }
    }
}

const CONSONANTS: &[u8] = b"bcdfghjklmnprstvz";
const VOWELS: &[u8] = b"aeiou";

/// The `n`-th generated domain name: pronounceable syllables, distinct for distinct `n`.
pub fn generated_name(n: u64, tld: &str) -> String {
    let base = (CONSONANTS.len() * VOWELS.len()) as u64;
    let mut label = String::with_capacity(16);
    let mut rest = n;
    let mut syllables = 0;
    while rest > 0 || syllables < 2 {
        let s = (rest % base) as usize;
        label.push(CONSONANTS[s / VOWELS.len()] as char);
        label.push(VOWELS[s % VOWELS.len()] as char);
        rest /= base;
        syllables += 1;
    }
    format!("{label}.{tld}")
}

/// Filler text for padding; some lines start with `.` so dot-stuffing is exercised.
const FILLER: &[u8] =
    b"Padding to reach the scenario's message size. Lorem ipsum dolor sit amet consectetur.";

impl Request {
    /// Writes the message as sent after DATA: CRLF line ends, dot-stuffed, ending with the
    /// `.` line. `date` is the `Date:` header (the request's due time).
    pub fn render(&self, date: Stamp, out: &mut Vec<u8>) {
        let start = out.len();
        let date = date.0.format(&Rfc2822).unwrap_or_default();
        let _ = write!(
            out,
            "From: <{sender}>\r\nTo: <{to}>\r\nDate: {date}\r\nSubject: Domain request {domain}\r\n\
             Message-ID: {mid}\r\nX-Landrush-Id: {id}\r\nMIME-Version: 1.0\r\n\
             Content-Type: text/plain; charset=us-ascii\r\n\r\n",
            sender = self.sender,
            to = self.recipient,
            domain = self.domain,
            mid = self.message_id,
            id = self.id,
        );
        if self.has_domain_line {
            let _ = write!(out, "domain: {}\r\n", self.domain);
        }
        let _ = write!(
            out,
            "holder: {}\r\ncontact: {}\r\n",
            self.holder, self.contact
        );
        // Padding: filler lines up to the target size (the final ".\r\n" included).
        let target = self.size as usize;
        let mut line = 0u64;
        while out.len() - start + 3 < target {
            out.extend_from_slice(b"\r\n");
            let room = target
                .saturating_sub(out.len() - start + 3)
                .saturating_sub(2);
            if line % 8 == 7 {
                out.extend_from_slice(b"..");
            }
            let take = room.clamp(1, FILLER.len());
            out.extend_from_slice(&FILLER[..take]);
            line += 1;
        }
        if out.len() - start > 0 && !out.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct_and_valid() {
        let mut seen = std::collections::HashSet::new();
        for n in 0..20_000 {
            let name = generated_name(n, "fr");
            assert!(crate::scenario::is_valid_domain(&name), "{name}");
            assert!(seen.insert(name));
        }
    }
}
