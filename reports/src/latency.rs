//! Distributions: HdrHistogram recording, percentiles, spectra, bars, and `latency.hlog`.
//!
//! Every histogram is [`contract::histogram::micros_histogram`]: microseconds with 3 significant
//! digits, so a reported percentile is within 0.1% of the true value (exact below 2.048 ms). Like
//! every HdrHistogram tool, a percentile reads as the highest value of its 0.1%-wide bucket: 10 ms
//! may read 10.007 ms. `latency.hlog` is HdrHistogram's own interval-log format (V2 compressed histograms, one interval per second and tag), readable by
//! the Java `HistogramLogProcessor`, HdrHistogram's plotters and the `hdrhistogram` crate.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use contract::histogram::micros_histogram;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};

use crate::distribution::{Bucket, Percentiles, SpectrumPoint};
use crate::records::Stamp;

/// The file name of the interval log in a run folder.
pub const HLOG: &str = "latency.hlog";

/// Tags of the interval log: one histogram per second per tag.
pub const TAG_ACCEPT: &str = "accept";
pub const TAG_ACCEPT_CORRECTED: &str = "accept_corrected";
pub const TAG_DRIVER_LAG: &str = "driver_lag";
pub const TAG_ACK_DELAY: &str = "ack_delay";

/// Records a duration in microseconds; negative durations (clock steps) count as zero.
pub fn record(histogram: &mut Histogram<u64>, micros: i64) {
    histogram.saturating_record(micros.max(0) as u64);
}

/// Microseconds as milliseconds, keeping microsecond precision.
pub fn micros_to_ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

/// Rounds milliseconds to the microsecond, so report.json does not show float noise.
pub fn round_ms(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

/// Summarizes a histogram; an empty one summarizes as all zeros with `count` 0.
pub fn percentiles(histogram: &Histogram<u64>) -> Percentiles {
    if histogram.is_empty() {
        return Percentiles::default();
    }
    let at = |q: f64| micros_to_ms(histogram.value_at_quantile(q));
    Percentiles {
        count: histogram.len(),
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
        p999: at(0.999),
        max: micros_to_ms(histogram.max()),
    }
}

/// The percentile spectrum HdrHistogram plots: latency against percentile on a scale that
/// stretches the tail (1 − 1/10^(i/10)), stopped where fewer than one value lies beyond, then the
/// maximum at 100.
pub fn spectrum(histogram: &Histogram<u64>) -> Vec<SpectrumPoint> {
    if histogram.is_empty() {
        return Vec::new();
    }
    let count = histogram.len() as f64;
    let mut points = Vec::new();
    for step in 0..=60 {
        let beyond = 10f64.powf(-(step as f64) / 10.0);
        if step > 0 && beyond * count < 1.0 {
            break;
        }
        let quantile = 1.0 - beyond;
        points.push(SpectrumPoint {
            percentile: (quantile * 100.0 * 10_000.0).round() / 10_000.0,
            ms: micros_to_ms(histogram.value_at_quantile(quantile)),
        });
    }
    points.push(SpectrumPoint {
        percentile: 100.0,
        ms: micros_to_ms(histogram.max()),
    });
    points
}

/// Splits values (milliseconds) into about `bars` equal bars from 0 to a round upper bound.
pub fn buckets(values_ms: &[f64], bars: usize) -> Vec<Bucket> {
    let Some(max) = values_ms.iter().copied().reduce(f64::max) else {
        return Vec::new();
    };
    let width = nice_step(max.max(0.001) / bars as f64);
    let bars = ((max / width).floor() as usize + 1).max(1);
    let mut counts = vec![0u64; bars];
    for value in values_ms {
        let index = ((value.max(0.0) / width).floor() as usize).min(bars - 1);
        counts[index] += 1;
    }
    counts
        .into_iter()
        .enumerate()
        .map(|(i, count)| Bucket {
            from_ms: round_ms(i as f64 * width),
            to_ms: round_ms((i + 1) as f64 * width),
            count,
        })
        .collect()
}

/// The smallest 1, 2 or 5 × 10^n not below `raw`: bar widths a reader can add up in their head.
fn nice_step(raw: f64) -> f64 {
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|step| *step >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * magnitude)
}

/// Per-second histograms of a run, by tag, for `latency.hlog`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunHistograms {
    /// Second 0 of the intervals (the report's `t0`): the log's StartTime and BaseTime.
    pub base: Stamp,
    /// tag → second since `base` → histogram of that second.
    pub by_tag: BTreeMap<&'static str, BTreeMap<u64, Histogram<u64>>>,
}

impl RunHistograms {
    pub fn new(base: Stamp) -> Self {
        RunHistograms {
            base,
            by_tag: BTreeMap::new(),
        }
    }

    /// Records `micros` under `tag` in the interval of the instant `at`.
    pub fn record(&mut self, tag: &'static str, at: Stamp, micros: i64) {
        let second = ((at.micros() - self.base.micros()).max(0) / 1_000_000) as u64;
        let histogram = self
            .by_tag
            .entry(tag)
            .or_default()
            .entry(second)
            .or_insert_with(micros_histogram);
        record(histogram, micros);
    }

    /// All intervals of one tag added up.
    pub fn total(&self, tag: &str) -> Histogram<u64> {
        let mut total = micros_histogram();
        for histogram in self.by_tag.get(tag).into_iter().flat_map(|s| s.values()) {
            total.add(histogram).expect("same bounds");
        }
        total
    }

    /// Writes the interval log: Java's header lines, then the intervals in time order.
    pub fn write_hlog(&self, path: &Path) -> anyhow::Result<()> {
        let mut out = Vec::new();
        let mut serializer = V2DeflateSerializer::new();
        let base = SystemTime::UNIX_EPOCH + Duration::from_micros(self.base.micros().max(0) as u64);
        IntervalLogWriterBuilder::new()
            .add_comment("[Logged with landrush reports]")
            .add_comment("[Histogram log format version 1.3]")
            .add_comment(&format!(
                "Values in microseconds (Interval_Max in milliseconds); base {}; tags: {}",
                self.base,
                self.by_tag.keys().copied().collect::<Vec<_>>().join(", ")
            ))
            .with_start_time(base)
            .with_base_time(base)
            .begin_log_with(&mut out, &mut serializer)?;
        // The legend is not a comment, and the writer has no raw-line call: write it between two
        // writers on the same buffer (the second one writes only the divisor it applies).
        out.extend_from_slice(
            b"\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n",
        );
        let mut intervals: Vec<(u64, &'static str, &Histogram<u64>)> = self
            .by_tag
            .iter()
            .flat_map(|(tag, seconds)| seconds.iter().map(move |(s, h)| (*s, *tag, h)))
            .collect();
        intervals.sort_by_key(|(second, tag, _)| (*second, *tag));
        let mut writer = IntervalLogWriterBuilder::new()
            .with_max_value_divisor(1000.0)
            .begin_log_with(&mut out, &mut serializer)?;
        for (second, tag, histogram) in intervals {
            writer
                .write_histogram(
                    histogram,
                    Duration::from_secs(second),
                    Duration::from_secs(1),
                    Tag::new(tag),
                )
                .map_err(|e| anyhow::anyhow!("cannot write interval {tag}@{second}s: {e}"))?;
        }
        std::fs::write(path, out).with_context(|| format!("cannot write {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::Deserializer;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};

    fn histogram_of(micros: &[i64]) -> Histogram<u64> {
        let mut h = micros_histogram();
        for m in micros {
            record(&mut h, *m);
        }
        h
    }

    #[test]
    fn percentiles_of_one_to_a_hundred_ms() {
        let values: Vec<i64> = (1..=100).map(|ms| ms * 1000).collect();
        let p = percentiles(&histogram_of(&values));
        assert_eq!(p.count, 100);
        // 3 significant digits: 50 ms may read as up to 50.031 ms.
        assert!((p.p50 - 50.0).abs() < 0.05, "{p:?}");
        assert!((p.p99 - 99.0).abs() < 0.1, "{p:?}");
        assert!((p.max - 100.0).abs() < 0.1, "{p:?}");
    }

    #[test]
    fn small_values_are_exact_and_negative_ones_are_zero() {
        let p = percentiles(&histogram_of(&[-5, 1234, 1500, 2000]));
        assert_eq!((p.p50, p.max), (1.234, 2.0));
        assert_eq!(percentiles(&histogram_of(&[-5])).max, 0.0);
        assert_eq!(percentiles(&micros_histogram()), Percentiles::default());
    }

    #[test]
    fn spectrum_ends_at_the_maximum_and_stops_where_data_runs_out() {
        let values: Vec<i64> = (1..=100).collect();
        let points = spectrum(&histogram_of(&values));
        assert_eq!(points.first().unwrap().percentile, 0.0);
        assert_eq!(points.last().unwrap().percentile, 100.0);
        assert_eq!(points.last().unwrap().ms, 0.1);
        // 100 values: nothing to say beyond the 99th percentile but the maximum.
        assert_eq!(points[points.len() - 2].percentile, 99.0);
        assert!(points.windows(2).all(|w| w[0].ms <= w[1].ms));
    }

    #[test]
    fn buckets_have_round_widths_and_keep_every_value() {
        let bars = buckets(&[0.0, 1.0, 9.9, 10.0, 47.0], 10);
        assert_eq!(bars[0].to_ms, 5.0);
        assert_eq!(bars.iter().map(|b| b.count).sum::<u64>(), 5);
        assert_eq!(bars.last().unwrap().count, 1);
        assert!(buckets(&[], 10).is_empty());
    }

    #[test]
    fn hlog_reads_back_with_the_hdrhistogram_crate() {
        let base = Stamp::parse("2026-12-01T09:00:00Z").unwrap();
        let mut run = RunHistograms::new(base);
        let later = Stamp::from_micros(base.micros() + 1_500_000);
        run.record(TAG_ACCEPT, base, 1000);
        run.record(TAG_ACCEPT, later, 3000);
        run.record(TAG_ACCEPT_CORRECTED, later, 4000);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(HLOG);
        run.write_hlog(&path).unwrap();

        let bytes = std::fs::read(&path).unwrap();
        let mut seen = Vec::new();
        for entry in IntervalLogIterator::new(&bytes) {
            match entry.unwrap() {
                LogEntry::BaseTime(t) => assert_eq!(t.as_secs() as i64, base.micros() / 1_000_000),
                LogEntry::Interval(interval) => {
                    let decoded = base64_decode(interval.encoded_histogram());
                    let h: Histogram<u64> = Deserializer::new()
                        .deserialize(&mut decoded.as_slice())
                        .unwrap();
                    seen.push((
                        interval.tag().map(|t| t.as_str().to_string()),
                        interval.start_timestamp().as_secs(),
                        h.lowest_equivalent(h.max()),
                    ));
                }
                LogEntry::StartTime(_) => {}
            }
        }
        assert_eq!(
            seen,
            vec![
                (Some("accept".into()), 0, 1000),
                (Some("accept".into()), 1, 3000),
                (Some("accept_corrected".into()), 1, 4000),
            ]
        );
    }

    /// Standard base64, enough for the test (the crate does not re-export its decoder).
    fn base64_decode(text: &str) -> Vec<u8> {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = Vec::new();
        let (mut acc, mut bits) = (0u32, 0);
        for c in text.bytes().filter(|c| *c != b'=') {
            let v = ALPHABET.iter().position(|a| *a == c).unwrap() as u32;
            acc = (acc << 6) | v;
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
                acc &= (1 << bits) - 1;
            }
        }
        out
    }
}
