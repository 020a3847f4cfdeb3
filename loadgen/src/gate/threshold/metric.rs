//! The metrics a threshold can name: the aliases ([`METRICS`]), latency percentiles, dotted paths
//! into report.json or rehearse.json, their units, and reading them from a run's documents.

use serde_json::Value;

/// What a metric measures, which decides how a bound's unit converts and how values print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Millis,
    Seconds,
    /// Per second.
    Rate,
    /// A fraction 0..=1, printed as a percentage.
    Share,
    Count,
    /// A plain number.
    Number,
    Text,
}

/// A metric alias: name, where it is in report.json, its unit.
pub struct MetricDef {
    pub name: &'static str,
    pub path: &'static str,
    pub unit: Unit,
    pub help: &'static str,
}

/// The aliases the gate knows; any other name is a dotted path into report.json.
pub const METRICS: &[MetricDef] = &[
    MetricDef {
        name: "verdict",
        path: "verdict",
        unit: Unit::Text,
        help: "\"pass\" or \"fail\": every check of the contract",
    },
    MetricDef {
        name: "lost",
        path: "checks.loss.lost",
        unit: Unit::Count,
        help: "accepted requests never handed over",
    },
    MetricDef {
        name: "gaps",
        path: "checks.loss.gaps",
        unit: Unit::Count,
        help: "gaps in the handed-over seqs",
    },
    MetricDef {
        name: "fifo_violations",
        path: "checks.fifo.violations",
        unit: Unit::Count,
        help: "FIFO and real-time precedence violations",
    },
    MetricDef {
        name: "duplicated",
        path: "checks.duplicates.duplicated",
        unit: Unit::Count,
        help: "requests stored under two seqs",
    },
    MetricDef {
        name: "redelivered",
        path: "checks.duplicates.redelivered",
        unit: Unit::Count,
        help: "seqs handed over more than once",
    },
    MetricDef {
        name: "acks_missing",
        path: "checks.acks.missing",
        unit: Unit::Count,
        help: "accepted requests without an ack",
    },
    MetricDef {
        name: "acks_extra",
        path: "checks.acks.extra",
        unit: Unit::Count,
        help: "second acks and acks for refused requests",
    },
    MetricDef {
        name: "sent",
        path: "counts.sent",
        unit: Unit::Count,
        help: "requests sent",
    },
    MetricDef {
        name: "accepted",
        path: "counts.accepted",
        unit: Unit::Count,
        help: "requests accepted (250)",
    },
    MetricDef {
        name: "refused",
        path: "counts.refused",
        unit: Unit::Count,
        help: "requests refused (4xx/5xx)",
    },
    MetricDef {
        name: "indeterminate",
        path: "counts.indeterminate",
        unit: Unit::Count,
        help: "requests without a reply",
    },
    MetricDef {
        name: "handed_over",
        path: "counts.handed_over",
        unit: Unit::Count,
        help: "requests handed over",
    },
    MetricDef {
        name: "acked",
        path: "counts.acked",
        unit: Unit::Count,
        help: "requests acked",
    },
    MetricDef {
        name: "accepted_share",
        path: "counts.accepted / counts.sent",
        unit: Unit::Share,
        help: "accepted / sent",
    },
    MetricDef {
        name: "indeterminate_share",
        path: "counts.indeterminate / counts.sent",
        unit: Unit::Share,
        help: "indeterminate / sent",
    },
    MetricDef {
        name: "throughput",
        path: "throughput.accepted_per_s",
        unit: Unit::Rate,
        help: "accepted requests per second over the run",
    },
    MetricDef {
        name: "peak_throughput",
        path: "throughput.peak_accepted_per_s",
        unit: Unit::Rate,
        help: "accepted requests in the busiest second",
    },
    MetricDef {
        name: "handover_throughput",
        path: "throughput.handed_over_per_s",
        unit: Unit::Rate,
        help: "requests handed over per second",
    },
    MetricDef {
        name: "drain_time",
        path: "rehearse.drain.handed_after_s",
        unit: Unit::Seconds,
        help: "seconds from the last send until everything accepted was handed over",
    },
    MetricDef {
        name: "ack_time",
        path: "rehearse.drain.acked_after_s",
        unit: Unit::Seconds,
        help: "seconds from the last send until everything accepted was acked",
    },
];

/// Latency aliases: `accept_latency.p50|p90|p99|p999|max`, `accept_latency_corrected.…`,
/// `driver_lag.…`, `ack_delay.…` (milliseconds).
const LATENCIES: &[(&str, &str)] = &[
    ("accept_latency", "latency_ms.accept"),
    ("accept_latency_corrected", "latency_ms.accept_corrected"),
    ("driver_lag", "driver_lag_ms"),
    ("ack_delay", "ack_delay_ms"),
];
const PERCENTILES: &[&str] = &["p50", "p90", "p99", "p999", "max", "count"];

/// A resolved metric: where to read it and its unit.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// As written in the threshold.
    pub name: String,
    /// Dotted path (or `a / b` for a share).
    pub path: String,
    pub unit: Unit,
}

impl Metric {
    /// Resolves an alias or a dotted path.
    pub fn resolve(name: &str) -> Result<Metric, String> {
        let name = name.trim();
        if name.is_empty() {
            return Err("no metric".into());
        }
        if let Some(def) = METRICS.iter().find(|m| m.name == name) {
            return Ok(Metric {
                name: name.into(),
                path: def.path.into(),
                unit: def.unit,
            });
        }
        if let Some((base, pct)) = name.split_once('.')
            && let Some((_, path)) = LATENCIES.iter().find(|(alias, _)| *alias == base)
        {
            if !PERCENTILES.contains(&pct) {
                return Err(format!("`{name}`: {base} has {}", PERCENTILES.join(", ")));
            }
            return Ok(Metric {
                name: name.into(),
                path: format!("{path}.{pct}"),
                unit: if pct == "count" {
                    Unit::Count
                } else {
                    Unit::Millis
                },
            });
        }
        if LATENCIES.iter().any(|(alias, _)| *alias == name) {
            return Err(format!(
                "`{name}` needs a percentile: {name}.p99, {name}.max, …"
            ));
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
            || !name.contains('.')
        {
            let known: Vec<&str> = METRICS.iter().map(|m| m.name).collect();
            return Err(format!(
                "unknown metric `{name}`: use one of {}, accept_latency.p99 (…), or a dotted \
                 path into report.json such as latency_ms.accept.p99",
                known.join(", ")
            ));
        }
        let last = name.rsplit('.').next().unwrap_or(name);
        let unit = if name.split('.').any(|s| s.ends_with("_per_s")) {
            Unit::Rate
        } else if name.split('.').any(|s| s.ends_with("_ms")) {
            Unit::Millis
        } else if last.ends_with("_s") {
            Unit::Seconds
        } else {
            Unit::Number
        };
        Ok(Metric {
            name: name.into(),
            path: name.into(),
            unit,
        })
    }

    /// Reads the metric from a run's documents: report.json and (for `rehearse.…`) rehearse.json.
    pub fn read(&self, run: &RunDocs) -> Result<Value, String> {
        if let Some((a, b)) = self.path.split_once(" / ") {
            let a = number(&lookup(run, a)?, a)?;
            let b = number(&lookup(run, b)?, b)?;
            if b == 0.0 {
                return Err(format!("{} is 0", self.path));
            }
            return Ok(Value::from(a / b));
        }
        lookup(run, &self.path)
    }
}

/// The JSON documents of one run folder that thresholds read.
#[derive(Debug, Clone, Default)]
pub struct RunDocs {
    pub report: Value,
    /// rehearse.json, when the run was a rehearsal.
    pub rehearse: Option<Value>,
}

fn lookup(run: &RunDocs, path: &str) -> Result<Value, String> {
    let (doc, rest, file) = match path.strip_prefix("rehearse.") {
        Some(rest) => match &run.rehearse {
            Some(doc) => (doc, rest, "rehearse.json"),
            None => return Err("the run has no rehearse.json".into()),
        },
        None => (&run.report, path, "report.json"),
    };
    let mut at = doc;
    for key in rest.split('.') {
        at = at
            .get(key)
            .ok_or_else(|| format!("{file} has no `{path}`"))?;
    }
    if at.is_null() {
        return Err(format!("`{path}` is null in {file}"));
    }
    Ok(at.clone())
}

pub(super) fn number(v: &Value, what: &str) -> Result<f64, String> {
    v.as_f64()
        .ok_or_else(|| format!("`{what}` is {v}, not a number"))
}
