//! The rows of the figure tables that report.md and report.html both show (burst, fairness, by
//! kind), as text: below both renderers, so each sets them in its own markup.

use crate::model::{Outcomes, Report, Share};
use crate::text::format_figure;

/// `stored after 1.2 s, handed over after 3.4 s, acked after –`.
pub fn burst_line(r: &Report) -> String {
    let s = |v: Option<f64>| v.map_or("–".to_string(), |s| format!("{} s", format_figure(s)));
    format!(
        "from the start instant, the burst was stored after {}, handed over after {}, acked after {}",
        s(r.burst.accepted_s),
        s(r.burst.handed_s),
        s(r.burst.acked_s)
    )
}

/// Jain's index, as a sentence.
pub fn jain_line(r: &Report) -> String {
    let f = &r.fairness;
    match f.jain_index {
        Some(j) => format!(
            "Jain's fairness index over the accepted share of {} group(s): {} (1 = every group \
             got the same share)",
            f.index_groups,
            format_figure(j)
        ),
        None => "Jain's fairness index: no requests to judge".into(),
    }
}

pub const FAIRNESS_HEADER: [&str; 12] = [
    "group",
    "sent",
    "accepted",
    "refused",
    "no reply",
    "failed",
    "share",
    "p50 ms",
    "p99 ms",
    "displ. mean",
    "max back",
    "max ahead",
];

/// One row per group, then (where few) per client, as `client N`.
pub fn fairness_rows(r: &Report) -> Vec<[String; 12]> {
    let f = &r.fairness;
    let groups = f.groups.iter().map(|(g, s)| share_row(g.clone(), s));
    let clients = f
        .clients
        .iter()
        .map(|(c, s)| share_row(format!("client {c}"), s));
    groups.chain(clients).collect()
}

fn share_row(name: String, s: &Share) -> [String; 12] {
    let o = &s.outcomes;
    [
        name,
        o.requests.to_string(),
        o.accepted.to_string(),
        o.refused.to_string(),
        o.indeterminate.to_string(),
        o.failed.to_string(),
        format!(
            "{}%",
            format_figure((s.accepted_share * 1000.0).round() / 10.0)
        ),
        latency(o.accept_ms.count, o.accept_ms.p50),
        latency(o.accept_ms.count, o.accept_ms.p99),
        format_figure(s.displacement_mean),
        s.displacement_max_back.to_string(),
        s.displacement_max_ahead.to_string(),
    ]
}

pub const KIND_HEADER: [&str; 9] = [
    "kind",
    "sent",
    "transmissions",
    "accepted",
    "refused",
    "no reply",
    "failed",
    "p50 ms",
    "p99 ms",
];

/// One row per request kind, then one per intake (`intake smtp`), then one per node when the
/// requests went to several (`node 127.0.0.1:2525`).
pub fn kind_rows(r: &Report) -> Vec<[String; 9]> {
    let k = &r.by_kind;
    let kinds = k.kind.iter().map(|(name, o)| kind_row(name.clone(), o));
    let intakes = k
        .intake
        .iter()
        .map(|(name, o)| kind_row(format!("intake {name}"), o));
    let several = k.node.len() > 1;
    let nodes = k
        .node
        .iter()
        .filter(|_| several)
        .map(|(name, o)| kind_row(format!("node {name}"), o));
    kinds.chain(intakes).chain(nodes).collect()
}

fn kind_row(name: String, o: &Outcomes) -> [String; 9] {
    [
        name,
        o.requests.to_string(),
        o.transmissions.to_string(),
        o.accepted.to_string(),
        o.refused.to_string(),
        o.indeterminate.to_string(),
        o.failed.to_string(),
        latency(o.accept_ms.count, o.accept_ms.p50),
        latency(o.accept_ms.count, o.accept_ms.p99),
    ]
}

/// A latency figure, or `–` when nothing was timed (no request of the row was accepted).
fn latency(count: u64, ms: f64) -> String {
    if count == 0 {
        "–".into()
    } else {
        format_figure(ms)
    }
}

/// `12 timeouts counted at 30000 ms`, or nothing.
pub fn timeouts_note(r: &Report) -> Option<String> {
    let reply = &r.latency_ms.reply;
    (reply.timeouts > 0).then(|| match reply.timeout_ms {
        Some(ms) => format!(
            "{} timeouts counted at {} ms",
            reply.timeouts,
            format_figure(ms)
        ),
        None => format!(
            "{} timeouts (reply timeout unknown: not counted)",
            reply.timeouts
        ),
    })
}

pub const CLOCK_HEADER: [&str; 9] = [
    "shard",
    "host",
    "method",
    "offset ms",
    "± ms",
    "samples",
    "fire p50 ms",
    "fire max ms",
    "first send ms",
];

/// One row per machine: its offset (local − reference) and uncertainty, and how late its clients
/// fired in the reference clock; `–` where the offset is unknown.
pub fn clock_rows(r: &Report) -> Vec<[String; 9]> {
    let figure = |v: Option<f64>| v.map_or("–".to_string(), format_figure);
    r.clocks
        .iter()
        .map(|c| {
            [
                c.shard.clone(),
                c.host.clone().unwrap_or_else(|| "–".into()),
                c.method.as_str().to_string(),
                figure(c.offset_ms),
                figure(c.uncertainty_ms),
                c.samples.to_string(),
                figure(c.fire_ms.as_ref().map(|f| f.p50)),
                figure(c.fire_ms.as_ref().map(|f| f.max)),
                figure(c.first_ms),
            ]
        })
        .collect()
}

/// What the clocks table means, then each machine's note (why its offset is unknown, …).
pub fn clock_notes(r: &Report) -> Vec<String> {
    let mut notes = vec![
        "offset = local clock − reference clock, the true offset within ± ms; fire: each \
         client's first end of data in the reference clock minus its intended instant; first \
         send: the machine's first end of data after the start instant, in the reference clock"
            .to_string(),
    ];
    notes.extend(r.clocks.iter().filter_map(|c| {
        let note = c.note.as_ref()?;
        let reference = if c.reference.is_empty() {
            String::new()
        } else {
            format!(" (against {})", c.reference)
        };
        Some(format!("shard {}{reference}: {note}", c.shard))
    }));
    notes
}
