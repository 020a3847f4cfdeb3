//! The one latency histogram shape of the harness: microseconds from 1 µs to one hour, three
//! significant digits (every reported percentile within 0.1% of the true value).
//!
//! Drivers, shard merging and reports all build their histograms here, because HdrHistogram only
//! adds histograms of compatible bounds: one constructor keeps every `.hgrm`, `latency.hlog` and
//! merged shard addable.

use hdrhistogram::Histogram;

/// One hour: longer latencies are clamped rather than dropped, so they still show as the maximum.
pub const HIGHEST_MICROS: u64 = 3_600_000_000;

/// Significant digits kept: 3 keeps a percentile within 0.1% (exact below 2.048 ms).
pub const SIGNIFICANT_DIGITS: u8 = 3;

/// An empty histogram of microseconds with the harness's bounds.
pub fn micros_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_MICROS, SIGNIFICANT_DIGITS)
        .expect("constant bounds are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_keep_an_hour_and_three_digits() {
        let mut h = micros_histogram();
        h.saturating_record(HIGHEST_MICROS * 2);
        h.saturating_record(1_234);
        assert_eq!(h.len(), 2);
        assert!(h.max() >= HIGHEST_MICROS && h.max() <= HIGHEST_MICROS + HIGHEST_MICROS / 1000);
        assert_eq!(h.value_at_quantile(0.0), 1_234);
        // Two histograms from here add up: the property shard merging relies on.
        let mut other = micros_histogram();
        other.add(&h).unwrap();
        assert_eq!(other.len(), 2);
    }
}
