//! The dashboard's data: once a second, a JSON snapshot of the status plus rates computed
//! from the metrics' deltas (events/s by family, deliveries/s, pass-through/s, handshakes/s,
//! delivery latency p50/p99 over the last interval). Published through `State::snapshot` to
//! every open `/admin/stream`.

use crate::safety::health::Failures;
use crate::state::State;
use prometheus::core::Collector;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Default, Clone)]
pub struct Sample {
    published: BTreeMap<String, u64>,
    delivered: u64,
    passthrough: u64,
    handshakes: u64,
    write_errors: u64,
    store_errors: u64,
    /// (upper bound in seconds, cumulative count) of the delivery latency histogram.
    latency: Vec<(f64, u64)>,
    latency_count: u64,
    resets: BTreeMap<String, u64>,
    upstream_errors: u64,
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
    pub fn take(state: &State) -> Sample {
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
            // Server-side failures only (write errors and write timeouts): a client's reset,
            // however many, says nothing about the server.
            write_errors: counter_by_label(&m.stream_closes_total, "reason")
                .get("write_error")
                .copied()
                .unwrap_or(0),
            store_errors: m.store_errors_total.get(),
            latency,
            latency_count,
            resets: counter_by_label(&m.resets_total, "reason"),
            upstream_errors: counter_by_label(&m.upstream_errors_total, "kind")
                .values()
                .sum(),
        }
    }
}

/// Most streams failing on the server's side (`safety::health::unhealthy`). Failures the
/// streams recorded with their client address (`Breakers::health`) count bounded per
/// address; write errors only the metrics know of count as they are.
fn stream_health_bad(prev: &Sample, now: &Sample, known: Failures) -> bool {
    let counted = now.write_errors.saturating_sub(prev.write_errors);
    let failed = counted.saturating_sub(known.recorded) + known.bounded;
    crate::safety::health::unhealthy(now.handshakes.saturating_sub(prev.handshakes), failed)
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

/// Resets that say the system lost something (as opposed to a client's own stale id).
const UNEXPLAINED_RESETS: &[&str] = &[
    "evicted",
    "too_far_behind",
    "store_unavailable",
    "store_timeout",
    "log_gap",
    "epoch_changed",
    "events_lost",
];

/// The phase gates, per family, from live data over the coverage window: whether the family
/// may move to its next stage (off → shadow → live → polling retired) and, if not, why.
pub fn gates(state: &State) -> Value {
    let cfg = state.config();
    let window = cfg.polling.coverage_window;
    let now = Sample::take(state);
    let (since, base) = {
        let h = state.gate_history.lock().unwrap_or_else(|e| e.into_inner());
        match h.iter().find(|(t, _)| t.elapsed() <= window) {
            Some((t, s)) => (t.elapsed(), s.clone()),
            None => (Duration::ZERO, now.clone()),
        }
    };
    let coverage = state.polling.coverage(window);
    let p99 = quantile_ms(&base, &now, 0.99);
    let delivered = now.latency_count.saturating_sub(base.latency_count);
    let resets: BTreeMap<&str, u64> = UNEXPLAINED_RESETS
        .iter()
        .map(|r| {
            let n = now.resets.get(*r).copied().unwrap_or(0)
                - base
                    .resets
                    .get(*r)
                    .copied()
                    .unwrap_or(0)
                    .min(now.resets.get(*r).copied().unwrap_or(0));
            (*r, n)
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    let store_errors = now.store_errors.saturating_sub(base.store_errors);
    let upstream_errors = now.upstream_errors.saturating_sub(base.upstream_errors);
    let window_start_ms = crate::events::types::now_ms().saturating_sub(since.as_millis() as u64);
    let breaker_events: Vec<String> = state
        .transitions()
        .into_iter()
        .filter(|t| t.kind == "breaker" && t.at_ms >= window_start_ms)
        .map(|t| t.detail)
        .collect();
    let open_now: Vec<String> = state
        .breakers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .all()
        .iter()
        .filter(|b| b.state() != crate::safety::breaker::BreakerState::Closed)
        .map(|b| b.name.to_string())
        .collect();
    let kill_ms = state
        .kill_switch_exercised_ms
        .load(std::sync::atomic::Ordering::Relaxed);
    let check =
        |name: &str, ok: bool, detail: String| json!({ "name": name, "ok": ok, "detail": detail });
    let mut families = Map::new();
    for f in cfg.families.values() {
        let stage = cfg.delivery(&f.name);
        let next = match stage {
            crate::config::Delivery::Off => "shadow",
            crate::config::Delivery::Shadow => "live",
            crate::config::Delivery::Live => "polling retired",
        };
        let routes: Vec<&crate::polling::RouteCoverage> =
            coverage.iter().filter(|c| c.family == f.name).collect();
        let configured = cfg.polling.routes.iter().any(|r| r.family == f.name);
        let changes: u64 = routes.iter().map(|r| r.changes).sum();
        let covered: u64 = routes.iter().map(|r| r.covered).sum();
        let cov_check = if !configured {
            check(
                "coverage",
                false,
                "no polled route of this family is configured: add it under polling.routes".into(),
            )
        } else if changes == 0 {
            check(
                "coverage",
                false,
                "no change of its polled routes observed in the window yet".into(),
            )
        } else {
            let last = routes
                .iter()
                .filter_map(|r| {
                    r.last_uncovered_url
                        .as_ref()
                        .map(|u| format!("{} ({u})", r.route))
                })
                .next_back();
            check(
                "coverage",
                covered == changes,
                format!(
                    "{:.1}% ({covered} of {changes} changes explained by an event){}",
                    covered as f64 * 100.0 / changes as f64,
                    last.map(|l| format!("; last uncovered: {l}"))
                        .unwrap_or_default()
                ),
            )
        };
        let target = cfg.safety.latency_target_ms;
        let latency = match p99 {
            Some(p) => check(
                "latency_p99",
                p <= target,
                format!("p99 ≤ {p:.0} ms over {delivered} deliveries (target {target:.0} ms)"),
            ),
            None => check(
                "latency_p99",
                true,
                "no deliveries measured in the window".into(),
            ),
        };
        let resets_check = check(
            "resets",
            resets.is_empty(),
            if resets.is_empty() {
                "no unexplained reset".into()
            } else {
                format!("unexplained resets: {resets:?}")
            },
        );
        let errors = check(
            "errors",
            store_errors == 0,
            format!("{store_errors} store errors, {upstream_errors} pass-through upstream errors"),
        );
        let breakers = check(
            "breakers",
            breaker_events.is_empty() && open_now.is_empty(),
            if breaker_events.is_empty() && open_now.is_empty() {
                "every breaker closed, no transition in the window".into()
            } else {
                format!("transitions {breaker_events:?}, not closed now {open_now:?}")
            },
        );
        let kill = if kill_ms == 0 {
            check("kill_switch", false, "not exercised since start: switch SSE off and on once (POST /admin/kill-switch) to prove the fallback".into())
        } else {
            check(
                "kill_switch",
                true,
                format!("last exercised at {kill_ms} (ms since the Unix epoch)"),
            )
        };
        let checks = vec![cov_check, latency, resets_check, errors, breakers, kill];
        let ready = checks.iter().all(|c| c["ok"] == true);
        let why: Vec<String> = checks
            .iter()
            .filter(|c| c["ok"] != true)
            .map(|c| {
                format!(
                    "{}: {}",
                    c["name"].as_str().unwrap_or(""),
                    c["detail"].as_str().unwrap_or("")
                )
            })
            .collect();
        families.insert(
            f.name.clone(),
            json!({
                "stage": stage.as_str(),
                "next": next,
                "ready": ready,
                "why_not": why,
                "checks": checks,
                "routes": routes,
            }),
        );
    }
    json!({
        "window_seconds": since.as_secs(),
        "window_configured_seconds": window.as_secs(),
        "families": families,
    })
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
        let known = state
            .breakers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .health
            .take();
        state.sample_breakers(store_bad, p99, stream_health_bad(&prev, &now, known));
        state.polling.settle();
        {
            let mut h = state.gate_history.lock().unwrap_or_else(|e| e.into_inner());
            if h.back()
                .is_none_or(|(t, _)| t.elapsed() >= Duration::from_secs(60))
            {
                h.push_back((Instant::now(), now.clone()));
                let window = state.config().polling.coverage_window;
                while h.len() > 1
                    && h.front()
                        .is_some_and(|(t, _)| t.elapsed() > window + Duration::from_secs(60))
                {
                    h.pop_front();
                }
            }
        }
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
