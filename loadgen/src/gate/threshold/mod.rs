//! Gate thresholds in the style of k6: `accept_latency.p99 < "5ms"`, `throughput >= 5000`,
//! `lost == 0`, `verdict == "pass"`, `accepted_share >= 99.5%`, and ratios against a reference run
//! measured in the same gate: `throughput >= 0.75x postfix` (at least 0.75 times the same metric of
//! the run named `postfix`), `accept_latency.p99 <= 2x previous`.
//!
//! A pure library: [`Threshold::parse`] reads one threshold, [`Threshold::evaluate`] judges it over
//! the report.json of a run (and of its reference), returning an [`Evaluation`] that says the measured
//! value, the bound and by how much it missed.
//!
//! Metrics are named by the aliases in [`METRICS`] or by a dotted path into report.json
//! (`latency_ms.accept.p99`); a path starting with `rehearse.` reads the run's rehearse.json
//! (`rehearse.drain.handed_after_s`). The unit of a path follows its names: `…_ms` milliseconds,
//! `…_s` seconds, `…_per_s` a rate, otherwise a plain number. A time bound (`"5ms"`, `2s`, `250us`)
//! is converted to the metric's unit; `%` is a share (99.5% = 0.995) for share metrics.

use std::fmt;

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

fn number(v: &Value, what: &str) -> Result<f64, String> {
    v.as_f64()
        .ok_or_else(|| format!("`{what}` is {v}, not a number"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl Op {
    fn symbol(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }

    fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Op::Lt => a < b,
            Op::Le => a <= b,
            Op::Gt => a > b,
            Op::Ge => a >= b,
            Op::Eq => a == b,
            Op::Ne => a != b,
        }
    }
}

/// The right-hand side of a threshold.
#[derive(Debug, Clone, PartialEq)]
pub enum Bound {
    /// An absolute number, in the metric's unit.
    Absolute(f64),
    /// `FACTOR x RUN`: factor times the same metric measured in the run named RUN.
    Ratio {
        factor: f64,
        reference: String,
    },
    Text(String),
}

/// One parsed threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    /// As written.
    pub text: String,
    pub metric: Metric,
    pub op: Op,
    pub bound: Bound,
}

/// How a threshold came out.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub passed: bool,
    /// The measured value, readable (`7.20 ms`, `0.41x postfix (1234/s vs 3010/s)`).
    pub measured: String,
    /// What was needed (`< 5 ms`).
    pub needed: String,
    /// By how much it missed, readable (`over by 2.20 ms (+44%)`); empty when it passed.
    pub miss: String,
    /// The raw measured value (the ratio for a ratio threshold), for machines.
    pub value: Option<f64>,
}

impl Evaluation {
    /// A threshold that could not be evaluated (missing metric or run): a failure, never a pass.
    pub fn error(message: impl Into<String>) -> Evaluation {
        let message = message.into();
        Evaluation {
            passed: false,
            measured: "n/a".into(),
            needed: String::new(),
            miss: message,
            value: None,
        }
    }
}

impl Threshold {
    /// Parses `METRIC OP BOUND`; BOUND is a number with an optional unit (`5ms`, `2s`, `250us`,
    /// `99.5%`, `1.2k`), optionally in quotes, a ratio `0.75x RUN` (or `75% of RUN`), or a
    /// quoted or bare word for `verdict`.
    pub fn parse(text: &str) -> Result<Threshold, String> {
        let original = text.trim();
        let (op, at, len) = find_op(original)
            .ok_or_else(|| format!("`{original}`: no comparison (<, <=, >, >=, ==, !=)"))?;
        let metric = Metric::resolve(&original[..at]).map_err(|e| format!("`{original}`: {e}"))?;
        let rhs = original[at + len..].trim();
        let unquoted = rhs
            .strip_prefix('"')
            .and_then(|r| r.strip_suffix('"'))
            .or_else(|| rhs.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')))
            .unwrap_or(rhs)
            .trim();
        if unquoted.is_empty() {
            return Err(format!("`{original}`: nothing to compare with"));
        }
        let bound = if metric.unit == Unit::Text {
            if !matches!(op, Op::Eq | Op::Ne) {
                return Err(format!(
                    "`{original}`: {} is text: use == or !=",
                    metric.name
                ));
            }
            Bound::Text(unquoted.to_string())
        } else if let Some((factor, reference)) = parse_ratio(unquoted)? {
            Bound::Ratio { factor, reference }
        } else {
            Bound::Absolute(
                parse_quantity(unquoted, metric.unit).map_err(|e| format!("`{original}`: {e}"))?,
            )
        };
        Ok(Threshold {
            text: original.to_string(),
            metric,
            op,
            bound,
        })
    }

    /// The run this threshold compares with, for a ratio.
    pub fn reference(&self) -> Option<&str> {
        match &self.bound {
            Bound::Ratio { reference, .. } => Some(reference),
            _ => None,
        }
    }

    /// Judges the threshold over `run`, with `reference` the documents of the run a ratio names
    /// (ignored otherwise; `None` when that run is missing, which fails the threshold).
    pub fn evaluate(&self, run: &RunDocs, reference: Option<&RunDocs>) -> Evaluation {
        let value = match self.metric.read(run) {
            Ok(v) => v,
            Err(e) => return Evaluation::error(e),
        };
        match &self.bound {
            Bound::Text(want) => {
                let got = value
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| value.to_string());
                let passed = (got == *want) == (self.op == Op::Eq);
                Evaluation {
                    passed,
                    measured: got.clone(),
                    needed: format!("{} {want}", self.op.symbol()),
                    miss: if passed {
                        String::new()
                    } else {
                        format!("{} is {got}", self.metric.name)
                    },
                    value: None,
                }
            }
            Bound::Absolute(bound) => {
                let got = match number(&value, &self.metric.path) {
                    Ok(v) => v,
                    Err(e) => return Evaluation::error(e),
                };
                let passed = self.op.holds(got, *bound);
                let unit = self.metric.unit;
                Evaluation {
                    passed,
                    measured: show(got, unit),
                    needed: format!("{} {}", self.op.symbol(), show(*bound, unit)),
                    miss: if passed {
                        String::new()
                    } else {
                        miss(got, *bound, self.op, |d| show(d, unit))
                    },
                    value: Some(got),
                }
            }
            Bound::Ratio {
                factor,
                reference: name,
            } => {
                let got = match number(&value, &self.metric.path) {
                    Ok(v) => v,
                    Err(e) => return Evaluation::error(e),
                };
                let Some(reference) = reference else {
                    return Evaluation::error(format!("no reference run `{name}`"));
                };
                let base = match self
                    .metric
                    .read(reference)
                    .and_then(|v| number(&v, &self.metric.path))
                {
                    Ok(v) => v,
                    Err(e) => return Evaluation::error(format!("reference `{name}`: {e}")),
                };
                if base == 0.0 {
                    return Evaluation::error(format!(
                        "reference `{name}` measured {} = 0: no ratio",
                        self.metric.name
                    ));
                }
                let ratio = got / base;
                let passed = self.op.holds(ratio, *factor);
                let unit = self.metric.unit;
                Evaluation {
                    passed,
                    measured: format!(
                        "{ratio:.2}x {name} ({} vs {})",
                        show(got, unit),
                        show(base, unit)
                    ),
                    needed: format!("{} {factor}x {name}", self.op.symbol()),
                    miss: if passed {
                        String::new()
                    } else {
                        miss(ratio, *factor, self.op, |d| format!("{d:.2}x"))
                    },
                    value: Some(ratio),
                }
            }
        }
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The operator and its position; two-character operators first.
fn find_op(text: &str) -> Option<(Op, usize, usize)> {
    let bytes = text.as_bytes();
    let mut quote = None;
    for i in 0..bytes.len() {
        let c = bytes[i];
        if let Some(q) = quote {
            if c == q {
                quote = None;
            }
            continue;
        }
        if c == b'"' || c == b'\'' {
            quote = Some(c);
            continue;
        }
        let next = bytes.get(i + 1).copied();
        let op = match (c, next) {
            (b'<', Some(b'=')) => Some((Op::Le, 2)),
            (b'>', Some(b'=')) => Some((Op::Ge, 2)),
            (b'=', Some(b'=')) => Some((Op::Eq, 2)),
            (b'!', Some(b'=')) => Some((Op::Ne, 2)),
            (b'<', _) => Some((Op::Lt, 1)),
            (b'>', _) => Some((Op::Gt, 1)),
            _ => None,
        };
        if let Some((op, len)) = op {
            return Some((op, i, len));
        }
    }
    None
}

/// `0.75x NAME`, `0.75 x NAME`, `75% of NAME`: Some((0.75, NAME)).
fn parse_ratio(text: &str) -> Result<Option<(f64, String)>, String> {
    let split = |sep: &str| -> Option<(String, String)> {
        let (a, b) = text.split_once(sep)?;
        let b = b.trim();
        if b.is_empty() || !b.chars().next()?.is_ascii_alphabetic() {
            return None;
        }
        Some((a.trim().to_string(), b.to_string()))
    };
    let (factor, name) = if let Some((a, b)) = split("% of ") {
        (format!("{a}%"), b)
    } else if let Some((a, b)) = split("x ") {
        (a, b)
    } else {
        return Ok(None);
    };
    let factor = if let Some(p) = factor.strip_suffix('%') {
        p.trim()
            .parse::<f64>()
            .map(|p| p / 100.0)
            .map_err(|_| format!("`{text}`: bad percentage"))?
    } else {
        factor
            .parse::<f64>()
            .map_err(|_| format!("`{text}`: a ratio is FACTORx RUN, e.g. 0.75x postfix"))?
    };
    if !(factor.is_finite() && factor > 0.0) {
        return Err(format!("`{text}`: the factor must be positive"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!("`{text}`: `{name}` is not a run name"));
    }
    Ok(Some((factor, name)))
}

/// A number with an optional unit, converted to `unit`.
pub fn parse_quantity(text: &str, unit: Unit) -> Result<f64, String> {
    let text = text.trim().replace('_', "");
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+' || c == 'e'))
        .unwrap_or(text.len());
    // `1e3` is a number, but a trailing `e` alone is not a unit we know either way.
    let (num, suffix) = text.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a number"))?;
    let suffix = suffix.trim();
    let to_ms = |ms: f64| -> Result<f64, String> {
        match unit {
            Unit::Millis => Ok(ms),
            Unit::Seconds => Ok(ms / 1000.0),
            _ => Err(format!(
                "`{text}` is a duration, but the metric is not a time"
            )),
        }
    };
    let v = match suffix {
        "" => value,
        "us" | "µs" => to_ms(value / 1000.0)?,
        "ms" => to_ms(value)?,
        "s" => to_ms(value * 1000.0)?,
        "m" | "min" => to_ms(value * 60_000.0)?,
        "%" => match unit {
            Unit::Share => value / 100.0,
            _ => {
                return Err(format!(
                    "`{text}`: a percentage needs a share metric (accepted_share, …) or a \
                     reference run (`75% of postfix`)"
                ));
            }
        },
        "/s" if unit == Unit::Rate => value,
        "k" => value * 1000.0,
        other => {
            return Err(format!(
                "`{text}`: unknown unit `{other}` (ms, s, us, %, k)"
            ));
        }
    };
    if !v.is_finite() {
        return Err(format!("`{text}` is not finite"));
    }
    Ok(v)
}

/// A value with its unit, for people.
pub fn show(v: f64, unit: Unit) -> String {
    let n = trim_float(v);
    match unit {
        Unit::Millis => format!("{n} ms"),
        Unit::Seconds => format!("{n} s"),
        Unit::Rate => format!("{n}/s"),
        Unit::Share => format!("{}%", trim_float(v * 100.0)),
        Unit::Count | Unit::Number | Unit::Text => n,
    }
}

fn trim_float(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e15 {
        format!("{v:.0}")
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// `over by 2.2 ms (+44%)` / `under by 120/s (-12%)` / `is 3, must be 0`.
fn miss(got: f64, bound: f64, op: Op, show: impl Fn(f64) -> String) -> String {
    match op {
        Op::Eq => format!("off by {}", show((got - bound).abs())),
        Op::Ne => format!("equals {}", show(bound)),
        _ => {
            let d = got - bound;
            let word = if d >= 0.0 { "over" } else { "under" };
            let pct = if bound != 0.0 {
                format!(" ({:+.0}%)", d / bound.abs() * 100.0)
            } else {
                String::new()
            };
            format!("{word} by {}{pct}", show(d.abs()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(report: Value) -> RunDocs {
        RunDocs {
            report,
            rehearse: None,
        }
    }

    fn sample() -> RunDocs {
        RunDocs {
            report: json!({
                "verdict": "pass",
                "checks": {"loss": {"ok": true, "lost": 0, "gaps": 0},
                           "fifo": {"ok": true, "violations": 0},
                           "acks": {"ok": null, "missing": 0, "extra": 0}},
                "counts": {"sent": 1000, "accepted": 990, "refused": 10, "indeterminate": 0},
                "latency_ms": {"accept": {"p50": 1.5, "p99": 7.2, "max": 20.0}},
                "throughput": {"accepted_per_s": 4500.0},
            }),
            rehearse: Some(json!({"drain": {"handed_after_s": 1.25, "acked_after_s": null}})),
        }
    }

    fn eval(text: &str) -> Evaluation {
        Threshold::parse(text).unwrap().evaluate(&sample(), None)
    }

    #[test]
    fn parses_the_k6_forms() {
        let t = Threshold::parse(r#"accept_latency.p99 < "5ms""#).unwrap();
        assert_eq!(t.metric.path, "latency_ms.accept.p99");
        assert_eq!(t.op, Op::Lt);
        assert_eq!(t.bound, Bound::Absolute(5.0));
        let t = Threshold::parse("throughput >= 5000").unwrap();
        assert_eq!(t.metric.path, "throughput.accepted_per_s");
        assert_eq!(t.bound, Bound::Absolute(5000.0));
        let t = Threshold::parse("lost==0").unwrap();
        assert_eq!((t.op, t.bound), (Op::Eq, Bound::Absolute(0.0)));
        let t = Threshold::parse("verdict == 'pass'").unwrap();
        assert_eq!(t.bound, Bound::Text("pass".into()));
        let t = Threshold::parse("latency_ms.accept.p99 <= 1s").unwrap();
        assert_eq!(
            (t.metric.unit, t.bound),
            (Unit::Millis, Bound::Absolute(1000.0))
        );
    }

    #[test]
    fn units_convert_to_the_metric() {
        assert_eq!(parse_quantity("5ms", Unit::Millis), Ok(5.0));
        assert_eq!(parse_quantity("2s", Unit::Millis), Ok(2000.0));
        assert_eq!(parse_quantity("250us", Unit::Millis), Ok(0.25));
        assert_eq!(parse_quantity("1500ms", Unit::Seconds), Ok(1.5));
        assert_eq!(parse_quantity("99.5%", Unit::Share), Ok(0.995));
        assert_eq!(parse_quantity("1.2k", Unit::Rate), Ok(1200.0));
        assert_eq!(parse_quantity("10_000", Unit::Count), Ok(10000.0));
        assert!(
            parse_quantity("5ms", Unit::Rate).is_err(),
            "a duration is not a rate"
        );
        assert!(parse_quantity("50%", Unit::Millis).is_err());
        assert!(parse_quantity("5 parsecs", Unit::Millis).is_err());
        assert!(parse_quantity("fast", Unit::Rate).is_err());
    }

    #[test]
    fn bad_thresholds_are_refused() {
        for bad in [
            "throughput 5000",
            "throughput >=",
            "speed >= 5",
            "accept_latency < 5ms",
            "accept_latency.p42 < 5ms",
            "verdict < pass",
            "throughput >= 5ms",
            "throughput >= -1x postfix",
            "lost == 0 and more",
        ] {
            assert!(Threshold::parse(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn passing_thresholds_pass() {
        for ok in [
            "verdict == pass",
            "lost == 0",
            "accept_latency.p99 < 10ms",
            "accept_latency.p50 <= 0.0015s",
            "throughput >= 4000",
            "accepted_share >= 99%",
            "drain_time < 2s",
            "rehearse.drain.handed_after_s < 1500ms",
        ] {
            let o = eval(ok);
            assert!(o.passed, "{ok}: {o:?}");
            assert!(o.miss.is_empty());
        }
    }

    #[test]
    fn a_failing_threshold_fails_and_says_by_how_much() {
        let o = eval(r#"accept_latency.p99 < "5ms""#);
        assert!(!o.passed);
        assert_eq!(o.measured, "7.2 ms");
        assert_eq!(o.needed, "< 5 ms");
        assert_eq!(o.miss, "over by 2.2 ms (+44%)");

        let o = eval("throughput >= 5000");
        assert!(!o.passed);
        assert_eq!(o.miss, "under by 500/s (-10%)");

        let o = eval("accepted_share >= 99.5%");
        assert!(!o.passed, "990/1000 is 99%");
        assert_eq!(o.measured, "99%");

        let o = eval("verdict != pass");
        assert!(!o.passed);

        let failed = RunDocs {
            report: json!({"verdict": "fail", "checks": {"loss": {"lost": 3}}}),
            rehearse: None,
        };
        let o = Threshold::parse("lost == 0")
            .unwrap()
            .evaluate(&failed, None);
        assert!(!o.passed);
        assert_eq!((o.measured.as_str(), o.miss.as_str()), ("3", "off by 3"));
        let o = Threshold::parse("verdict == pass")
            .unwrap()
            .evaluate(&failed, None);
        assert!(!o.passed);
    }

    #[test]
    fn a_missing_metric_fails_rather_than_passes() {
        let o = eval("ack_time < 10s");
        assert!(!o.passed, "acked_after_s is null: {o:?}");
        let o = eval("checks.acks.ok == 1");
        assert!(!o.passed);
        let o = Threshold::parse("lost == 0")
            .unwrap()
            .evaluate(&run(json!({})), None);
        assert!(!o.passed);
        assert!(o.miss.contains("checks.loss.lost"), "{o:?}");
    }

    #[test]
    fn ratios_compare_with_the_reference_run() {
        let reference = run(json!({
            "throughput": {"accepted_per_s": 400.0},
            "latency_ms": {"accept": {"p99": 3.6}}
        }));
        let t = Threshold::parse("throughput >= 10x postfix").unwrap();
        assert_eq!(t.reference(), Some("postfix"));
        let o = t.evaluate(&sample(), Some(&reference));
        assert!(o.passed, "4500/400 = 11.25: {o:?}");
        assert_eq!(o.value, Some(11.25));
        assert_eq!(o.measured, "11.25x postfix (4500/s vs 400/s)");

        let o = Threshold::parse("throughput >= 12x postfix")
            .unwrap()
            .evaluate(&sample(), Some(&reference));
        assert!(!o.passed);
        assert_eq!(o.miss, "under by 0.75x (-6%)");

        let o = Threshold::parse("accept_latency.p99 <= 150% of postfix")
            .unwrap()
            .evaluate(&sample(), Some(&reference));
        assert!(!o.passed, "7.2 / 3.6 = 2: {o:?}");
        assert_eq!(o.needed, "<= 1.5x postfix");

        let o = Threshold::parse("throughput >= 0.5x gone")
            .unwrap()
            .evaluate(&sample(), None);
        assert!(!o.passed, "a missing reference fails");
        assert!(o.miss.contains("no reference run `gone`"));

        let zero = run(json!({"throughput": {"accepted_per_s": 0.0}}));
        let o = Threshold::parse("throughput >= 0.5x zero")
            .unwrap()
            .evaluate(&sample(), Some(&zero));
        assert!(!o.passed, "a reference of 0 gives no ratio");
    }
}
