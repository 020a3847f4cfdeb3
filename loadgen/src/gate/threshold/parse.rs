//! Reading a threshold: `METRIC OP BOUND`, the bound a number with a unit, a ratio to a reference
//! run, or a word for `verdict`.

use std::fmt;

use super::metric::{Metric, Unit};

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
    pub(super) fn symbol(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }

    pub(super) fn holds(self, a: f64, b: f64) -> bool {
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
