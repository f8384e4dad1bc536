//! Delivery latency: an HDR histogram in microseconds, and its percentiles for reports.

use std::sync::Mutex;

use hdrhistogram::Histogram;
use serde::Serialize;

/// The longest latency recorded exactly, in microseconds (one hour); longer ones are clamped.
const MAX_LATENCY_MICROS: u64 = 3_600_000_000;

/// Latencies of one run (or one transport), shared by every receiving task. A mutex rather than
/// per-task histograms: one histogram is ~200 KiB, too much for each of 19,000 viewers, and
/// tasks record a whole frame's items per lock.
pub struct LatencyRecorder {
    histogram: Mutex<Histogram<u64>>,
}

impl Default for LatencyRecorder {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyRecorder {
    /// An empty recorder with three significant digits from 1 µs to an hour.
    pub fn new() -> Self {
        // Holds: the bounds are constants that hdrhistogram accepts (low >= 1, high >= 2 * low,
        // sigfig <= 5).
        let histogram = Histogram::new_with_bounds(1, MAX_LATENCY_MICROS, 3)
            .expect("constant histogram bounds are valid");
        Self {
            histogram: Mutex::new(histogram),
        }
    }

    /// Records latencies (microseconds).
    pub fn record_all(&self, micros: &[u64]) {
        if micros.is_empty() {
            return;
        }
        let mut histogram = self.lock();
        for &value in micros {
            histogram.saturating_record(value.clamp(1, MAX_LATENCY_MICROS));
        }
    }

    /// The percentiles so far.
    pub fn percentiles(&self) -> Percentiles {
        Percentiles::of(&self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Histogram<u64>> {
        // A panic while recording cannot leave a histogram half-updated in a way that matters
        // for a report, so a poisoned lock is still read.
        self.histogram
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// How many deliveries were measured.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// The slowest.
    pub max_ms: f64,
    /// The mean.
    pub mean_ms: f64,
}

impl Percentiles {
    /// Reads them from a histogram in microseconds.
    pub fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        Self {
            count: histogram.len(),
            p50_ms: ms(histogram.value_at_quantile(0.50)),
            p90_ms: ms(histogram.value_at_quantile(0.90)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            p999_ms: ms(histogram.value_at_quantile(0.999)),
            max_ms: ms(histogram.max()),
            mean_ms: histogram.mean() / 1000.0,
        }
    }
}

/// A duration in milliseconds for a table: `0.84`, `12.3`, `4210`.
pub fn format_ms(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.2}")
    } else if ms < 100.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_out_in_milliseconds_in_order() {
        let recorder = LatencyRecorder::new();
        let values: Vec<u64> = (1..=1000).map(|i| i * 1000).collect();
        recorder.record_all(&values);
        let p = recorder.percentiles();
        assert_eq!(p.count, 1000);
        assert!((p.p50_ms - 500.0).abs() < 1.0, "{p:?}");
        assert!((p.p99_ms - 990.0).abs() < 1.0, "{p:?}");
        assert!(p.p50_ms <= p.p90_ms && p.p90_ms <= p.p99_ms && p.p99_ms <= p.p999_ms);
        assert!((p.max_ms - 1000.0).abs() < 1.0, "{p:?}");
    }

    #[test]
    fn empty_recorder_reports_zeros() {
        assert_eq!(LatencyRecorder::new().percentiles(), Percentiles::default());
    }

    #[test]
    fn milliseconds_format_to_three_significant_digits() {
        assert_eq!(format_ms(0.843), "0.84");
        assert_eq!(format_ms(12.34), "12.3");
        assert_eq!(format_ms(4210.4), "4210");
    }
}
