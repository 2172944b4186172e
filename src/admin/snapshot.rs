//! The dashboard's data: once a second, a JSON snapshot of the status plus rates computed
//! from the metrics' deltas (events/s by family, deliveries/s, pass-through/s, handshakes/s,
//! delivery latency p50/p99 over the last interval). Published through `State::snapshot` to
//! every open `/admin/stream`.

use crate::state::State;
use prometheus::core::Collector;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Sample {
    published: BTreeMap<String, u64>,
    delivered: u64,
    passthrough: u64,
    handshakes: u64,
    write_errors: u64,
    store_errors: u64,
    /// (upper bound in seconds, cumulative count) of the delivery latency histogram.
    latency: Vec<(f64, u64)>,
    latency_count: u64,
}

fn counter_by_label(c: &prometheus::IntCounterVec, label: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for mf in c.collect() {
        for m in mf.get_metric() {
            let key = m
                .get_label()
                .iter()
                .find(|l| l.name() == label)
                .map(|l| l.value().to_owned())
                .unwrap_or_default();
            *out.entry(key).or_insert(0) += m.get_counter().get_value() as u64;
        }
    }
    out
}

impl Sample {
    fn take(state: &State) -> Sample {
        let m = &state.metrics;
        let mut latency = Vec::new();
        let mut latency_count = 0;
        for mf in m.delivery_latency_seconds.collect() {
            for metric in mf.get_metric() {
                let h = metric.get_histogram();
                latency_count = h.get_sample_count();
                latency = h
                    .get_bucket()
                    .iter()
                    .map(|b| (b.upper_bound(), b.cumulative_count()))
                    .collect();
            }
        }
        Sample {
            published: counter_by_label(&m.events_published_total, "family"),
            delivered: counter_by_label(&m.events_delivered_total, "family")
                .values()
                .sum(),
            passthrough: counter_by_label(&m.passthrough_requests_total, "class")
                .values()
                .sum(),
            handshakes: counter_by_label(&m.sse_handshakes_total, "outcome")
                .get("accepted")
                .copied()
                .unwrap_or(0),
            write_errors: {
                let closes = counter_by_label(&m.stream_closes_total, "reason");
                ["write_error", "client_reset"]
                    .iter()
                    .filter_map(|r| closes.get(*r))
                    .sum()
            },
            store_errors: m.store_errors_total.get(),
            latency,
            latency_count,
        }
    }
}

/// Most streams failing: at least 20 streams started or failed (write error or reset) in the
/// interval, and more than half of them failed.
fn stream_health_bad(prev: &Sample, now: &Sample) -> bool {
    let failed = now.write_errors.saturating_sub(prev.write_errors);
    let attempts = now.handshakes.saturating_sub(prev.handshakes) + failed;
    attempts >= 20 && failed * 2 > attempts
}

/// The q-quantile (in ms) of the observations between two samples, from bucket deltas.
fn quantile_ms(prev: &Sample, now: &Sample, q: f64) -> Option<f64> {
    let total = now.latency_count.saturating_sub(prev.latency_count);
    if total == 0 {
        return None;
    }
    let want = (total as f64 * q).ceil() as u64;
    for (i, (bound, cum)) in now.latency.iter().enumerate() {
        let before = prev.latency.get(i).map(|p| p.1).unwrap_or(0);
        if cum.saturating_sub(before) >= want {
            return Some(bound * 1000.0);
        }
    }
    // Beyond the last bucket.
    now.latency.last().map(|(b, _)| b * 1000.0)
}

/// Builds one snapshot.
fn build(state: &State, prev: &Sample, now: &Sample, dt: f64) -> Value {
    let mut v = super::status_json(state);
    let rate = |a: u64, b: u64| ((b.saturating_sub(a)) as f64 / dt * 10.0).round() / 10.0;
    let per_family: Map<String, Value> = now
        .published
        .iter()
        .filter(|(f, _)| !f.starts_with('_'))
        .map(|(f, n)| {
            (
                f.clone(),
                rate(prev.published.get(f).copied().unwrap_or(0), *n).into(),
            )
        })
        .collect();
    if let Value::Object(o) = &mut v {
        o.insert("at_ms".into(), crate::events::types::now_ms().into());
        o.insert(
            "rates".into(),
            json!({
                "events_per_second": per_family,
                "deliveries_per_second": rate(prev.delivered, now.delivered),
                "passthrough_per_second": rate(prev.passthrough, now.passthrough),
                "handshakes_per_second": rate(prev.handshakes, now.handshakes),
                "latency_ms": {
                    "p50": quantile_ms(prev, now, 0.50),
                    "p99": quantile_ms(prev, now, 0.99),
                },
            }),
        );
    }
    v
}

/// Refreshes the snapshot every second, forever (the runtime ends it).
pub async fn run(state: Arc<State>) {
    let mut prev = Sample::take(&state);
    let mut at = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = Sample::take(&state);
        let dt = at.elapsed().as_secs_f64().max(0.001);
        let p99 = quantile_ms(&prev, &now, 0.99);
        state.adapt_coalescing(p99);
        let store_bad = !state.hub.log().healthy() || now.store_errors > prev.store_errors;
        state.sample_breakers(store_bad, p99, stream_health_bad(&prev, &now));
        let snap = build(&state, &prev, &now, dt);
        state.snapshot.send_replace(Arc::new(snap.to_string()));
        prev = now;
        at = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_bucket_deltas() {
        let prev = Sample {
            latency: vec![(0.001, 10), (0.01, 10), (0.1, 10)],
            latency_count: 10,
            ..Default::default()
        };
        let now = Sample {
            latency: vec![(0.001, 10), (0.01, 105), (0.1, 110)],
            latency_count: 110,
            ..Default::default()
        };
        assert_eq!(quantile_ms(&prev, &now, 0.5), Some(10.0));
        assert_eq!(quantile_ms(&prev, &now, 0.99), Some(100.0));
        assert_eq!(quantile_ms(&now, &now, 0.5), None);
    }
}
