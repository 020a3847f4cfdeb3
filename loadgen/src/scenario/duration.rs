//! Durations as scenarios write them: `"90s"`, `"1m30s"`, `"250ms"`, `"2h"`, or a bare number of
//! seconds.

use std::time::Duration;

use anyhow::{bail, ensure};
use serde::{Deserialize, Serialize};

/// A scenario duration. Parses `500ms`, `2s`, `1.5s`, `1m30s`, `2h`, `1d`, or a number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Dur(pub Duration);

impl std::str::FromStr for Dur {
    type Err = anyhow::Error;
    fn from_str(text: &str) -> anyhow::Result<Dur> {
        let text = text.trim();
        ensure!(!text.is_empty(), "empty duration");
        let mut total = 0f64;
        let mut rest = text;
        while !rest.is_empty() {
            let number_end = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            let (number, tail) = rest.split_at(number_end);
            let Ok(value) = number.parse::<f64>() else {
                bail!("`{text}` is not a duration (examples: 250ms, 2s, 1m30s, 2h)");
            };
            let unit_end = tail
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(tail.len());
            let (unit, tail) = tail.split_at(unit_end);
            let seconds = match unit.trim() {
                "" if number_end == text.len() => 1.0,
                "ms" => 0.001,
                "us" | "µs" => 0.000_001,
                "s" => 1.0,
                "m" | "min" => 60.0,
                "h" => 3600.0,
                "d" => 86400.0,
                other => {
                    bail!("`{text}`: unknown unit `{other}` (use ms, s, m, h or d, e.g. 1m30s)")
                }
            };
            total += value * seconds;
            rest = tail;
        }
        ensure!(
            total.is_finite() && total < 1e9,
            "`{text}` is too long a duration"
        );
        Ok(Dur(Duration::from_secs_f64(total)))
    }
}

impl std::fmt::Display for Dur {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let micros = self.0.as_micros();
        if micros == 0 {
            write!(f, "0s")
        } else if micros.is_multiple_of(1_000_000) {
            write!(f, "{}s", micros / 1_000_000)
        } else if micros.is_multiple_of(1000) {
            write!(f, "{}ms", micros / 1000)
        } else {
            write!(f, "{}us", micros)
        }
    }
}

impl Serialize for Dur {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Dur;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                write!(
                    f,
                    "a duration such as \"250ms\", \"2s\", \"1m30s\", or seconds"
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Dur, E> {
                v.parse()
                    .map_err(|e: anyhow::Error| E::custom(format!("{e:#}")))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Dur, E> {
                if v < 0 {
                    return Err(E::custom("a duration cannot be negative"));
                }
                Ok(Dur(Duration::from_secs(v as u64)))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Dur, E> {
                Ok(Dur(Duration::from_secs(v)))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Dur, E> {
                if !(v.is_finite() && (0.0..1e9).contains(&v)) {
                    return Err(E::custom("a duration must be a positive number of seconds"));
                }
                Ok(Dur(Duration::from_secs_f64(v)))
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_scenarios_use() {
        let p = |s: &str| s.parse::<Dur>().unwrap().0;
        assert_eq!(p("250ms"), Duration::from_millis(250));
        assert_eq!(p("2s"), Duration::from_secs(2));
        assert_eq!(p("1.5s"), Duration::from_millis(1500));
        assert_eq!(p("1m30s"), Duration::from_secs(90));
        assert_eq!(p("2h"), Duration::from_secs(7200));
        assert_eq!(p("42"), Duration::from_secs(42));
        assert!("2 fortnights".parse::<Dur>().is_err());
        assert!("s".parse::<Dur>().is_err());
        assert_eq!(Dur(Duration::from_millis(1500)).to_string(), "1500ms");
    }
}
