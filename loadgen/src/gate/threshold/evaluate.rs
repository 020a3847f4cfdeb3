//! Judging a threshold over a run's documents (and its reference run's), saying the measured
//! value, what was needed and by how much it missed.

use serde_json::Value;

use super::metric::{RunDocs, Unit, number};
use super::parse::{Bound, Op, Threshold};

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
    /// Judges the threshold over `run`, with `reference` the documents of the run a ratio names
    /// (ignored otherwise; `None` when that run is missing, which fails the threshold).
    pub fn evaluate(&self, run: &RunDocs, reference: Option<&RunDocs>) -> Evaluation {
        let value = match self.metric.read(run) {
            Ok(v) => v,
            Err(e) => return Evaluation::error(e),
        };
        match &self.bound {
            Bound::Text(want) => self.evaluate_text(&value, want),
            Bound::Absolute(bound) => self.evaluate_absolute(&value, *bound),
            Bound::Ratio {
                factor,
                reference: name,
            } => self.evaluate_ratio(&value, *factor, name, reference),
        }
    }

    fn evaluate_text(&self, value: &Value, want: &str) -> Evaluation {
        let got = value
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| value.to_string());
        let passed = (got == want) == (self.op == Op::Eq);
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

    fn evaluate_absolute(&self, value: &Value, bound: f64) -> Evaluation {
        let got = match number(value, &self.metric.path) {
            Ok(v) => v,
            Err(e) => return Evaluation::error(e),
        };
        let passed = self.op.holds(got, bound);
        let unit = self.metric.unit;
        Evaluation {
            passed,
            measured: show(got, unit),
            needed: format!("{} {}", self.op.symbol(), show(bound, unit)),
            miss: if passed {
                String::new()
            } else {
                miss(got, bound, self.op, |d| show(d, unit))
            },
            value: Some(got),
        }
    }

    fn evaluate_ratio(
        &self,
        value: &Value,
        factor: f64,
        name: &str,
        reference: Option<&RunDocs>,
    ) -> Evaluation {
        let got = match number(value, &self.metric.path) {
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
        let passed = self.op.holds(ratio, factor);
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
                miss(ratio, factor, self.op, |d| format!("{d:.2}x"))
            },
            value: Some(ratio),
        }
    }
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
