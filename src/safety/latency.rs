//! Delivery latency between two readings of a cumulative histogram: the q-quantile of the
//! observations made in between, from the bucket deltas. Pure; the safety controller and the
//! dashboard each keep their own previous reading.

use prometheus::core::Collector;

/// One reading of a latency histogram.
#[derive(Debug, Clone, Default)]
pub struct Reading {
    /// (upper bound in seconds, cumulative count) per bucket.
    pub buckets: Vec<(f64, u64)>,
    /// Observations so far.
    pub count: u64,
}

impl Reading {
    /// Reads a histogram (one without labels) as it is now.
    pub fn of(h: &prometheus::Histogram) -> Reading {
        let mut out = Reading::default();
        for mf in h.collect() {
            for metric in mf.get_metric() {
                let h = metric.get_histogram();
                out.count = h.get_sample_count();
                out.buckets = h
                    .get_bucket()
                    .iter()
                    .map(|b| (b.upper_bound(), b.cumulative_count()))
                    .collect();
            }
        }
        out
    }
}

/// The q-quantile (in ms) of the observations between two readings, from bucket deltas
/// (`None`: nothing observed in between).
pub fn quantile_ms(prev: &Reading, now: &Reading, q: f64) -> Option<f64> {
    let total = now.count.saturating_sub(prev.count);
    if total == 0 {
        return None;
    }
    let want = (total as f64 * q).ceil() as u64;
    for (i, (bound, cum)) in now.buckets.iter().enumerate() {
        let before = prev.buckets.get(i).map(|p| p.1).unwrap_or(0);
        if cum.saturating_sub(before) >= want {
            return Some(bound * 1000.0);
        }
    }
    // Beyond the last bucket.
    now.buckets.last().map(|(b, _)| b * 1000.0)
}
