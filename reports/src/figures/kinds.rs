//! Outcomes and accept latency per kind of request, per intake and per node ([`ByKind`]), and
//! the reply latency with timeouts counted in ([`ReplyLatency`]).

use std::collections::BTreeMap;

use contract::histogram::micros_histogram;
use serde::{Deserialize, Serialize};

use super::{OutcomeTally, Outcomes, Requests};
use crate::distribution::Percentiles;
use crate::latency;
use crate::records::SentRecord;

/// Outcomes per request kind, per intake and per buffer node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ByKind {
    /// By the scenario's kind of the request's first transmission: `normal`, `hot`,
    /// `resubmission`, `retransmission`, `malformed`, `oversize`; web requests as `web`
    /// (normal ones) or `web KIND`.
    pub kind: BTreeMap<String, Outcomes>,
    /// By intake: `smtp`, `http`.
    pub intake: BTreeMap<String, Outcomes>,
    /// By the buffer node the transmissions went to (sent.jsonl's `node`): a request sent to
    /// two nodes (after a failover) counts at each, with its transmissions there. Empty when
    /// the records name no node.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node: BTreeMap<String, Outcomes>,
}

/// The word a request's kind is reported under.
fn kind_of(first: &SentRecord) -> String {
    match (first.intake.as_str(), first.kind.as_str()) {
        ("http", "normal") => "web".into(),
        ("http", kind) => format!("web {kind}"),
        (_, kind) => kind.into(),
    }
}

pub fn by_kind(sent: &[SentRecord]) -> ByKind {
    let requests = Requests::of(sent);
    let mut kind: BTreeMap<String, OutcomeTally> = BTreeMap::new();
    let mut intake: BTreeMap<String, OutcomeTally> = BTreeMap::new();
    let mut node: BTreeMap<String, OutcomeTally> = BTreeMap::new();
    for id in &requests.order {
        let attempts = &requests.by_id[id];
        kind.entry(kind_of(attempts[0])).or_default().add(attempts);
        intake
            .entry(attempts[0].intake.clone())
            .or_default()
            .add(attempts);
        for (name, there) in by_node(attempts) {
            node.entry(name.to_string()).or_default().add(&there);
        }
    }
    let finish =
        |m: BTreeMap<String, OutcomeTally>| m.into_iter().map(|(k, t)| (k, t.finish())).collect();
    ByKind {
        kind: finish(kind),
        intake: finish(intake),
        node: finish(node),
    }
}

/// A request's transmissions grouped by the node they went to (those sent to none left out).
fn by_node<'a>(attempts: &[&'a SentRecord]) -> BTreeMap<&'a str, Vec<&'a SentRecord>> {
    let mut nodes: BTreeMap<&str, Vec<&SentRecord>> = BTreeMap::new();
    for s in attempts {
        if let Some(node) = &s.node {
            nodes.entry(node).or_default().push(s);
        }
    }
    nodes
}

/// Reply after the end of data, over every transmission whose end of data was sent and that got
/// a reply (accepted or refused), plus every SMTP timeout counted at the reply timeout: the same
/// set as run.json's `latency_service`, so a buffer that stops answering cannot look fast.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplyLatency {
    #[serde(flatten)]
    pub percentiles: Percentiles,
    /// Transmissions that timed out after the end of data (counted in the percentiles).
    pub timeouts: u64,
    /// The reply timeout they count at (the scenario's `clients.reply_timeout`); null when the
    /// run does not say.
    pub timeout_ms: Option<f64>,
    /// Of `count`, the SMTP intake's: what run.json's `latency_service.count` must equal.
    #[serde(default)]
    pub smtp_count: u64,
}

/// The reply text the SMTP driver writes for a reply that never came in time.
const TIMEOUT_REPLY: &str = "no reply: timeout";

pub fn reply_latency(sent: &[SentRecord], run: Option<&serde_json::Value>) -> ReplyLatency {
    let timeout_us =
        run.and_then(|r| reply_timeout_us(&r["scenario_spec"]["clients"]["reply_timeout"]));
    let mut histogram = micros_histogram();
    let (mut timeouts, mut smtp_count) = (0, 0);
    for s in sent {
        let Some(sent_at) = s.sent_at else { continue };
        let counted = match s.replied_at {
            Some(replied) => {
                latency::record(&mut histogram, replied.micros() - sent_at.micros());
                true
            }
            None if s.reply.as_deref() == Some(TIMEOUT_REPLY) => {
                timeouts += 1;
                if let Some(us) = timeout_us {
                    latency::record(&mut histogram, us);
                }
                timeout_us.is_some()
            }
            None => false,
        };
        smtp_count += u64::from(counted && s.intake == "smtp");
    }
    ReplyLatency {
        percentiles: latency::percentiles(&histogram),
        timeouts,
        timeout_ms: timeout_us.map(|us| latency::micros_to_ms(us as u64)),
        smtp_count,
    }
}

/// A scenario duration as run.json writes it: `30s`, `250ms`, `1500us`, or a number of seconds.
fn reply_timeout_us(value: &serde_json::Value) -> Option<i64> {
    if let Some(seconds) = value.as_f64() {
        return Some((seconds * 1e6) as i64);
    }
    let text = value.as_str()?.trim();
    let (number, scale) = [("us", 1.0), ("ms", 1e3), ("s", 1e6)]
        .iter()
        .find_map(|(unit, scale)| Some((text.strip_suffix(unit)?, *scale)))?;
    number.parse::<f64>().ok().map(|n| (n * scale) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_timeouts_read_as_run_json_writes_them() {
        let us = |v: serde_json::Value| reply_timeout_us(&v);
        assert_eq!(us(serde_json::json!("30s")), Some(30_000_000));
        assert_eq!(us(serde_json::json!("250ms")), Some(250_000));
        assert_eq!(us(serde_json::json!("1500us")), Some(1500));
        assert_eq!(us(serde_json::json!(2)), Some(2_000_000));
        assert_eq!(us(serde_json::json!("1m30s")), None);
    }
}
