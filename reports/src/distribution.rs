//! The summaries of a distribution as report.json holds them: percentiles, spectrum points, bars.
//!
//! Below both `latency` (which computes them from histograms) and `model` (which holds them in a
//! report), so neither has to reach up into the other.

use serde::{Deserialize, Serialize};

/// A distribution summarized in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    #[serde(default)]
    pub count: u64,
    pub p50: f64,
    #[serde(default)]
    pub p90: f64,
    pub p99: f64,
    #[serde(default)]
    pub p999: f64,
    pub max: f64,
}

/// One point of a percentile spectrum: `percentile` in 0‥100 and the latency at it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SpectrumPoint {
    pub percentile: f64,
    pub ms: f64,
}

/// One bar of a distribution: how many values fell in `[from_ms, to_ms)`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    pub from_ms: f64,
    pub to_ms: f64,
    pub count: u64,
}
