//! The dashboard's data: once a second, a JSON snapshot of the status plus rates computed
//! from the metrics' deltas (events/s by family, deliveries/s, pass-through/s, handshakes/s,
//! delivery latency p50/p99 over the last interval), published to every open
//! `/admin/stream`; and the phase gates (`/admin/gates`), judged over the metric samples it
//! keeps (one a minute). The dashboard only reads: the safety controller (`control`) acts.

use crate::safety::latency::{quantile_ms, Reading};
use crate::state::State;
use prometheus::core::Collector;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

#[derive(Default, Clone)]
pub struct Sample {
    published: BTreeMap<String, u64>,
    delivered: u64,
    passthrough: u64,
    handshakes: u64,
    store_errors: u64,
    /// The delivery latency histogram.
    latency: Reading,
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
            store_errors: m.store_errors_total.get(),
            latency: Reading::of(&m.delivery_latency_seconds),
            resets: counter_by_label(&m.resets_total, "reason"),
            upstream_errors: counter_by_label(&m.upstream_errors_total, "kind")
                .values()
                .sum(),
        }
    }
}

/// The dashboard's state: the latest snapshot and the samples the gates are judged over.
pub struct Dashboard {
    /// The latest snapshot (JSON), refreshed every second by `run`.
    snapshot: watch::Sender<Arc<String>>,
    /// Metric samples (one a minute) for the phase gates' window.
    history: Mutex<VecDeque<(Instant, Sample)>>,
}

impl Default for Dashboard {
    fn default() -> Self {
        Dashboard {
            snapshot: watch::channel(Arc::new(String::from("{}"))).0,
            history: Mutex::new(VecDeque::new()),
        }
    }
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
                    "p50": quantile_ms(&prev.latency, &now.latency, 0.50),
                    "p99": quantile_ms(&prev.latency, &now.latency, 0.99),
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

/// What every family's gates are judged on: the window's deltas and the state now.
struct Window {
    since: Duration,
    p99: Option<f64>,
    delivered: u64,
    target: f64,
    resets: BTreeMap<&'static str, u64>,
    store_errors: u64,
    upstream_errors: u64,
    breaker_events: Vec<String>,
    open_now: Vec<String>,
    kill_ms: u64,
    coverage: Vec<crate::polling::RouteCoverage>,
}

fn check(name: &str, ok: bool, detail: String) -> Value {
    json!({ "name": name, "ok": ok, "detail": detail })
}

impl Dashboard {
    /// The phase gates, per family, from live data over the coverage window: whether the
    /// family may move to its next stage (off → shadow → live → polling retired) and, if
    /// not, why.
    pub fn gates(&self, state: &State) -> Value {
        let cfg = state.config();
        let window = cfg.polling.coverage_window;
        let w = self.window(state, window);
        let families: Map<String, Value> = cfg
            .families
            .values()
            .map(|f| (f.name.clone(), family_gates(&cfg, &w, &f.name)))
            .collect();
        json!({
            "window_seconds": w.since.as_secs(),
            "window_configured_seconds": window.as_secs(),
            "families": families,
        })
    }

    /// The deltas since the oldest sample inside `window` (none yet: since now).
    fn window(&self, state: &State, window: Duration) -> Window {
        let now = Sample::take(state);
        let (since, base) = {
            let h = self.history.lock().unwrap_or_else(|e| e.into_inner());
            match h.iter().find(|(t, _)| t.elapsed() <= window) {
                Some((t, s)) => (t.elapsed(), s.clone()),
                None => (Duration::ZERO, now.clone()),
            }
        };
        let resets = UNEXPLAINED_RESETS
            .iter()
            .map(|r| {
                let at = |s: &Sample| s.resets.get(*r).copied().unwrap_or(0);
                (*r, at(&now).saturating_sub(at(&base)))
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        let window_start_ms =
            crate::events::types::now_ms().saturating_sub(since.as_millis() as u64);
        let breaker_events = state
            .transitions()
            .into_iter()
            .filter(|t| t.kind == "breaker" && t.at_ms >= window_start_ms)
            .map(|t| t.detail)
            .collect();
        let open_now = state
            .controller
            .breaker_states()
            .into_iter()
            .filter(|(_, st)| *st != crate::safety::breaker::BreakerState::Closed)
            .map(|(name, _)| name.to_string())
            .collect();
        Window {
            since,
            p99: quantile_ms(&base.latency, &now.latency, 0.99),
            delivered: now.latency.count.saturating_sub(base.latency.count),
            target: state.config().safety.latency_target_ms,
            resets,
            store_errors: now.store_errors.saturating_sub(base.store_errors),
            upstream_errors: now.upstream_errors.saturating_sub(base.upstream_errors),
            breaker_events,
            open_now,
            kill_ms: state.controller.kill_switch_exercised_ms(),
            coverage: state.polling.coverage(window),
        }
    }
}

/// One family's gates: its stage, the next one, and the checks that stand between.
fn family_gates(cfg: &crate::config::Config, w: &Window, family: &str) -> Value {
    let stage = cfg.delivery(family);
    let next = match stage {
        crate::config::Delivery::Off => "shadow",
        crate::config::Delivery::Shadow => "live",
        crate::config::Delivery::Live => "polling retired",
    };
    let routes: Vec<&crate::polling::RouteCoverage> =
        w.coverage.iter().filter(|c| c.family == family).collect();
    let configured = cfg.polling.routes.iter().any(|r| r.family == family);
    let checks = vec![
        coverage_check(configured, &routes),
        latency_check(w),
        resets_check(w),
        errors_check(w),
        breakers_check(w),
        kill_switch_check(w),
    ];
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
    json!({
        "stage": stage.as_str(),
        "next": next,
        "ready": ready,
        "why_not": why,
        "checks": checks,
        "routes": routes,
    })
}

/// Every change of the family's polled routes explained by an event.
fn coverage_check(configured: bool, routes: &[&crate::polling::RouteCoverage]) -> Value {
    let changes: u64 = routes.iter().map(|r| r.changes).sum();
    let covered: u64 = routes.iter().map(|r| r.covered).sum();
    if !configured {
        return check(
            "coverage",
            false,
            "no polled route of this family is configured: add it under polling.routes".into(),
        );
    }
    if changes == 0 {
        return check(
            "coverage",
            false,
            "no change of its polled routes observed in the window yet".into(),
        );
    }
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
}

fn latency_check(w: &Window) -> Value {
    let (target, delivered) = (w.target, w.delivered);
    match w.p99 {
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
    }
}

fn resets_check(w: &Window) -> Value {
    let resets = &w.resets;
    check(
        "resets",
        resets.is_empty(),
        if resets.is_empty() {
            "no unexplained reset".into()
        } else {
            format!("unexplained resets: {resets:?}")
        },
    )
}

fn errors_check(w: &Window) -> Value {
    let (store_errors, upstream_errors) = (w.store_errors, w.upstream_errors);
    check(
        "errors",
        store_errors == 0,
        format!("{store_errors} store errors, {upstream_errors} pass-through upstream errors"),
    )
}

fn breakers_check(w: &Window) -> Value {
    let (breaker_events, open_now) = (&w.breaker_events, &w.open_now);
    let quiet = breaker_events.is_empty() && open_now.is_empty();
    check(
        "breakers",
        quiet,
        if quiet {
            "every breaker closed, no transition in the window".into()
        } else {
            format!("transitions {breaker_events:?}, not closed now {open_now:?}")
        },
    )
}

fn kill_switch_check(w: &Window) -> Value {
    let kill_ms = w.kill_ms;
    if kill_ms == 0 {
        check("kill_switch", false, "not exercised since start: switch SSE off and on once (POST /admin/kill-switch) to prove the fallback".into())
    } else {
        check(
            "kill_switch",
            true,
            format!("last exercised at {kill_ms} (ms since the Unix epoch)"),
        )
    }
}

impl Dashboard {
    /// A feed of the latest snapshot (JSON).
    pub fn subscribe(&self) -> watch::Receiver<Arc<String>> {
        self.snapshot.subscribe()
    }

    /// Keeps one sample a minute, forgetting those older than the coverage window (and a
    /// minute).
    fn keep(&self, state: &State, now: &Sample) {
        let mut h = self.history.lock().unwrap_or_else(|e| e.into_inner());
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

    /// Refreshes the snapshot every second, forever (the lifecycle ends it).
    pub async fn run(self: Arc<Self>, state: Arc<State>) {
        let mut prev = Sample::take(&state);
        let mut at = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = Sample::take(&state);
            let dt = at.elapsed().as_secs_f64().max(0.001);
            self.keep(&state, &now);
            let snap = build(&state, &prev, &now, dt);
            self.snapshot.send_replace(Arc::new(snap.to_string()));
            prev = now;
            at = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_bucket_deltas() {
        let prev = Reading {
            buckets: vec![(0.001, 10), (0.01, 10), (0.1, 10)],
            count: 10,
        };
        let now = Reading {
            buckets: vec![(0.001, 10), (0.01, 105), (0.1, 110)],
            count: 110,
        };
        assert_eq!(quantile_ms(&prev, &now, 0.5), Some(10.0));
        assert_eq!(quantile_ms(&prev, &now, 0.99), Some(100.0));
        assert_eq!(quantile_ms(&now, &now, 0.5), None);
    }
}
