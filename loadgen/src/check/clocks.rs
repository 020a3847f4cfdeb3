//! Comparing times recorded on different machines (contract: FIFO, rules 7 and 8).
//!
//! Each shard of a merged run was played by one machine with its own clock; `run.json`'s `shards`
//! says each one's host and its offset interval `[lo, hi]` (`offset = local − reference`). A local
//! stamp `t` of machine `m` is a reference instant in `[t − hi_m, t − lo_m]`, so A's reply
//! (machine `a`) certainly came before B's end of data (machine `b ≠ a`) only when
//! `replied_at(A) − lo_a < sent_at(B) − hi_b`. Two stamps of one machine are compared exactly, on
//! its own clock, whatever the tolerance. `--clock-tolerance D` widens every interval by `D` on
//! both sides: it eases only comparisons across machines.
//!
//! [`comparisons`] turns that rule into sets of events on one time axis each, so that the plain
//! sweep of the fifo check ("a reply strictly before a send") is exact on every set:
//!
//! - one set per machine, on its local stamps;
//! - one set over every machine whose offset is known, on reference bounds: a reply at its latest
//!   possible reference instant (`t − lo + D`), a send at its earliest (`t − hi − D`). Pairs of one
//!   machine found there are true violations as well (the bounds only make them harder to find);
//! - for each machine whose offset is unknown, sets of its events against the other machines',
//!   every reply placed before every send (an unknown offset bounds nothing, so the raw stamps
//!   prove no order): what they find is not judged but counted, and the check cannot pass.
//!
//! Records without any machine ([`Machines::Unattributed`]: a record set checked without its
//! `run.json`) are one set on the raw stamps with the tolerance applied uniformly, as before shards
//! carried their machine.

use std::collections::BTreeMap;
use std::path::Path;

use reports::records::{ClockEstimate, RUN, shard_of_client};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::schedule::shard::Shard;

/// One machine of a run: the shard it played, its host, and its offset interval if known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineClock {
    pub shard: Shard,
    pub host: Option<String>,
    pub offset_us: Option<[i64; 2]>,
}

/// Which machine recorded each request, and their clocks.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Machines {
    /// No run.json says where the records come from: one uniform tolerance over every pair.
    #[default]
    Unattributed,
    /// The shards of `count`; a request's machine is the shard owning its client.
    Known {
        count: u32,
        clocks: BTreeMap<u32, MachineClock>,
    },
}

/// A merged run.json's `shards` entry, as far as the checks need it.
#[derive(Debug, Deserialize)]
struct ShardEntry {
    shard: Shard,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    clock: Option<ClockEstimate>,
}

impl Machines {
    /// The machines of the run folder `dir`, from its run.json: a merged run's `shards` (or, for a
    /// folder merged before shards carried their clocks, `merged_from` with unknown offsets), else
    /// one machine: the run's own `shard`, `host` and `clock`. Without run.json:
    /// [`Machines::Unattributed`].
    pub fn load(dir: &Path) -> anyhow::Result<Machines> {
        let path = dir.join(RUN);
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(Machines::Unattributed);
        };
        let run: Value = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: not JSON: {e}", path.display()))?;
        let entries: Vec<ShardEntry> = match (run.get("shards"), run.get("merged_from")) {
            (Some(shards), _) => serde_json::from_value(shards.clone())?,
            (None, Some(from)) => serde_json::from_value::<Vec<Shard>>(from.clone())?
                .into_iter()
                .map(|shard| ShardEntry {
                    shard,
                    host: None,
                    clock: None,
                })
                .collect(),
            // One machine: the run's own shard, host and clock.
            (None, None) => vec![ShardEntry {
                shard: serde_json::from_value(run["shard"].clone()).unwrap_or(Shard::WHOLE),
                host: serde_json::from_value(run["host"].clone()).unwrap_or_default(),
                clock: serde_json::from_value(run["clock"].clone()).unwrap_or_default(),
            }],
        };
        let count = entries.first().map_or(1, |e| e.shard.count);
        let clocks = entries
            .into_iter()
            .map(|e| {
                let clock = MachineClock {
                    shard: e.shard,
                    host: e.host,
                    offset_us: e.clock.and_then(|c| c.offset_us),
                };
                (e.shard.index, clock)
            })
            .collect();
        Ok(Machines::Known { count, clocks })
    }

    /// The machine (1-based shard index) of a request sent by `client`; 1 for one machine.
    pub fn machine_of(&self, client: u32) -> u32 {
        match self {
            Machines::Known { count, .. } => shard_of_client(client, *count),
            Machines::Unattributed => 1,
        }
    }

    /// `{"shard": "I/N", "host": …}` for counterexamples; null when records carry no machine.
    pub fn describe(&self, machine: u32) -> Value {
        match self {
            Machines::Unattributed => Value::Null,
            Machines::Known { clocks, count } => match clocks.get(&machine) {
                Some(c) => json!({"shard": c.shard.to_string(), "host": c.host}),
                None => json!({"shard": format!("{machine}/{count}"), "host": null}),
            },
        }
    }

    fn offset(&self, machine: u32) -> Option<[i64; 2]> {
        match self {
            Machines::Unattributed => None,
            Machines::Known { clocks, .. } => clocks.get(&machine).and_then(|c| c.offset_us),
        }
    }
}

/// One local stamp of a precedence pair's side, and the machine that took it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamped {
    pub at: i64,
    pub machine: u32,
}

/// A set of events on one time axis: indices into the caller's predecessors and successors with
/// their times on that axis. `judged` false: what the sweep finds is counted as not judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Comparison {
    pub judged: bool,
    pub preds: Vec<(usize, i64)>,
    pub succs: Vec<(usize, i64)>,
}

/// The comparisons that together apply rules 7 and 8 to `preds` (replies) and `succs` (sends).
pub(crate) fn comparisons(
    preds: &[Stamped],
    succs: &[Stamped],
    machines: &Machines,
    tolerance_us: u64,
) -> Vec<Comparison> {
    let tolerance = i64::try_from(tolerance_us).unwrap_or(i64::MAX / 4);
    if *machines == Machines::Unattributed {
        return vec![Comparison {
            judged: true,
            preds: preds.iter().enumerate().map(|(i, e)| (i, e.at)).collect(),
            succs: (succs.iter().enumerate())
                .map(|(i, e)| (i, e.at.saturating_sub(tolerance)))
                .collect(),
        }];
    }
    let mut present: Vec<u32> = preds.iter().chain(succs).map(|e| e.machine).collect();
    present.sort_unstable();
    present.dedup();
    let pick = |events: &[Stamped], keep: &dyn Fn(u32) -> bool, at: &dyn Fn(&Stamped) -> i64| {
        (events.iter().enumerate())
            .filter(|(_, e)| keep(e.machine))
            .map(|(i, e)| (i, at(e)))
            .collect::<Vec<_>>()
    };
    let raw = |e: &Stamped| e.at;
    let mut out = Vec::new();
    for &m in &present {
        let mine = move |x: u32| x == m;
        out.push(Comparison {
            judged: true,
            preds: pick(preds, &mine, &raw),
            succs: pick(succs, &mine, &raw),
        });
    }
    if present.len() < 2 {
        return out;
    }
    let known = |x: u32| machines.offset(x).is_some();
    let lo = |e: &Stamped| machines.offset(e.machine).map_or(0, |o| o[0]);
    let hi = |e: &Stamped| machines.offset(e.machine).map_or(0, |o| o[1]);
    out.push(Comparison {
        judged: true,
        preds: pick(preds, &known, &|e| e.at - lo(e) + tolerance),
        succs: pick(succs, &known, &|e| e.at - hi(e) - tolerance),
    });
    // With a machine's offset unknown, any of its replies may have come before any send of
    // another machine (and the other way round), whatever the raw stamps say: every such pair
    // with seq(A) >= seq(B) is one the check cannot judge.
    let any_time = |_: &Stamped| i64::MIN / 2;
    for &u in present.iter().filter(|&&m| !known(m)) {
        let mine = move |x: u32| x == u;
        let others = move |x: u32| x != u;
        out.push(Comparison {
            judged: false,
            preds: pick(preds, &mine, &any_time),
            succs: pick(succs, &others, &raw),
        });
        out.push(Comparison {
            judged: false,
            preds: pick(preds, &others, &any_time),
            succs: pick(succs, &mine, &raw),
        });
    }
    out
}

/// The note of a check that compared times across machines.
pub(crate) fn note(machines: &Machines, tolerance_us: u64, unjudged: u64) -> Option<String> {
    let mut parts = Vec::new();
    if tolerance_us > 0 {
        let scope = match machines {
            Machines::Unattributed => "every pair (the records name no machine)",
            Machines::Known { .. } => "pairs across machines only",
        };
        parts.push(format!(
            "--clock-tolerance {tolerance_us} us allowed on {scope}"
        ));
    }
    if unjudged > 0 {
        parts.push(format!(
            "{unjudged} requests could not be judged against requests of another machine: a \
             machine's clock offset is unknown (see clock in run.json's shards)"
        ));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

#[cfg(test)]
mod tests;
