//! The project's own Prometheus registry and every series it exports. Names follow the
//! Prometheus conventions (`_total` counters, base units in the name). Labels never carry
//! request data beyond configured names (family, type, reason, status class). The process
//! series (`process_cpu_seconds_total`, `process_resident_memory_bytes`, open and max fds,
//! start time, threads) come from the prometheus crate's process collector, under their
//! conventional names (no `sse_sidecar_` prefix), in a registry of their own.
//!
//! Tokio runtime series (`sse_sidecar_tokio_*`, label `runtime`: proxy, admin, lifecycle —
//! Pingora runs each service on a runtime of its own) are read from tokio's stable
//! `Handle::metrics()` at scrape time, no background loop. A runtime is known once code
//! inside it has called [`Metrics::note_runtime`]; until then it has no series.

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    CounterVec, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::runtime::Handle;

pub struct Metrics {
    pub registry: Registry,
    /// The process collector's registry (unprefixed names), rendered with `registry`.
    process: Registry,
    pub sse_connections: IntGauge,
    /// Requests the proxy is answering (streams not included); a drain waits for 0.
    pub requests_in_flight: IntGauge,
    pub sse_handshakes_total: IntCounterVec,
    pub events_derived_total: IntCounterVec,
    pub events_shadow_total: IntCounterVec,
    pub events_rejected_total: IntCounterVec,
    pub events_delivered_total: IntCounterVec,
    pub events_published_total: IntCounterVec,
    /// Mutation receipts sent to their browser's stream, by outcome (`unrouted`: no stream
    /// of that browser was open here).
    pub receipts_total: IntCounterVec,
    /// Concurrent edits found before forwarding, by the rule's check (`detect`, `reject`).
    pub conflicts_total: IntCounterVec,
    /// Presence topics tracked (`presence.topics`), their members, and `presence` frames
    /// queued for streams.
    pub presence_topics: IntGauge,
    pub presence_members: IntGauge,
    pub presence_frames_total: IntCounter,
    /// Learn mode's samples by outcome: recorded, dropped (its queue full), unrecorded
    /// (past `learn.max_routes`), skipped (GETs past `learn.max_reads_per_second`).
    pub learn_samples_total: IntCounterVec,
    pub learn_routes: IntGauge,
    pub delivery_latency_seconds: Histogram,
    pub replay_events_total: IntCounter,
    /// Entries of a shared log that could not be decoded (each became a `log_gap` reset).
    pub store_decode_errors_total: IntCounter,
    pub resets_total: IntCounterVec,
    pub queued_bytes: IntGauge,
    pub stream_closes_total: IntCounterVec,
    pub config_reloads_total: IntCounterVec,
    pub kill_switch: IntGauge,
    pub breaker_state: IntGaugeVec,
    pub degradation_level: IntGauge,
    pub family_delivery: IntGaugeVec,
    pub passthrough_requests_total: IntCounterVec,
    pub passthrough_duration_seconds: HistogramVec,
    pub upstream_errors_total: IntCounterVec,
    pub store_appends_total: IntCounter,
    pub store_errors_total: IntCounter,
    pub store_commit_seconds: Histogram,
    pub auth_decisions_total: IntCounterVec,
    pub auth_checks_total: IntCounterVec,
    pub auth_cache_total: IntCounterVec,
    pub auth_cache_entries: IntGauge,
    pub auth_check_seconds: Histogram,
    pub auth_revoked_total: IntCounter,
    pub polls_total: IntCounterVec,
    pub poll_changes_total: IntCounterVec,
    /// Proxy hardening: what the proxy refused, left unshielded or forced.
    pub proxy_refusals_total: IntCounterVec,
    pub shield_skipped_total: IntCounterVec,
    pub mutations_unmatched_total: IntCounter,
    pub origin_ids_refused_total: IntCounterVec,
    /// The tokio runtimes whose series are exported (see [`Metrics::note_runtime`]).
    runtimes: RuntimeCollector,
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    register(r, c)
}

fn register<C: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: C) -> C {
    // Registration only fails on duplicate names, a programming error caught by the tests.
    if let Err(e) = r.register(Box::new(c.clone())) {
        panic!("metric registration: {e}");
    }
    c
}

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

impl Metrics {
    /// Builds the registry. Runs once at start, never on a request path.
    #[allow(
        clippy::too_many_lines,
        reason = "a declarative table: one registration (name, help, labels) per exported series, in the order of the struct's fields; no logic to split"
    )]
    pub fn new() -> Metrics {
        let r = Registry::new_custom(Some("sse_sidecar".into()), None)
            .unwrap_or_else(|e| panic!("registry: {e}"));
        let gauge = |name: &str, help: &str| {
            register(
                &r,
                IntGauge::new(name, help).unwrap_or_else(|e| panic!("{name}: {e}")),
            )
        };
        let hist = |name: &str, help: &str, buckets: &[f64]| {
            register(
                &r,
                Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
                    .unwrap_or_else(|e| panic!("{name}: {e}")),
            )
        };
        Metrics {
            sse_connections: gauge("sse_connections", "Open SSE streams."),
            requests_in_flight: gauge(
                "requests_in_flight",
                "Requests being proxied to the backend now (streams not included).",
            ),
            sse_handshakes_total: counter_vec(
                &r,
                "sse_handshakes_total",
                "Stream requests by outcome (accepted, disabled, bad_request, overloaded, ...).",
                &["outcome"],
            ),
            events_derived_total: counter_vec(
                &r,
                "events_derived_total",
                "Events derived from confirmed mutations or published, by family and type.",
                &["family", "type"],
            ),
            events_shadow_total: counter_vec(
                &r,
                "events_shadow_total",
                "Events derived and validated in shadow mode (never delivered).",
                &["family", "type"],
            ),
            events_rejected_total: counter_vec(
                &r,
                "events_rejected_total",
                "Events dropped before delivery, by family and reason.",
                &["family", "reason"],
            ),
            receipts_total: counter_vec(
                &r,
                "receipts_total",
                "Mutation receipts sent to the originating browser's stream, by outcome.",
                &["outcome"],
            ),
            conflicts_total: counter_vec(
                &r,
                "conflicts_total",
                "Mutations whose x-sse-base was older than their topics' version, by check.",
                &["mode"],
            ),
            events_delivered_total: counter_vec(
                &r,
                "events_delivered_total",
                "Event frames queued to subscribers, by family and type.",
                &["family", "type"],
            ),
            events_published_total: counter_vec(
                &r,
                "events_published_total",
                "Events appended to the log and fanned out, by family.",
                &["family"],
            ),
            delivery_latency_seconds: hist(
                "delivery_latency_seconds",
                "From the mutation's upstream answer to the frame written to a stream.",
                LATENCY_BUCKETS,
            ),
            replay_events_total: register(
                &r,
                IntCounter::new(
                    "replay_events_total",
                    "Events sent by Last-Event-ID replay.",
                )
                .unwrap_or_else(|e| panic!("{e}")),
            ),
            store_decode_errors_total: register(
                &r,
                IntCounter::new(
                    "store_decode_errors_total",
                    "Entries of a shared log that could not be decoded (each a log_gap reset).",
                )
                .unwrap_or_else(|e| panic!("{e}")),
            ),
            resets_total: counter_vec(
                &r,
                "resets_total",
                "Reset frames sent, by reason.",
                &["reason"],
            ),
            queued_bytes: gauge("queued_bytes", "Bytes queued for all streams."),
            presence_topics: gauge("presence_topics", "Presence topics tracked."),
            presence_members: gauge(
                "presence_members",
                "Members tracked over all presence topics (identified subscribers).",
            ),
            presence_frames_total: register(
                &r,
                IntCounter::new(
                    "presence_frames_total",
                    "Presence frames queued for streams.",
                )
                .unwrap_or_else(|e| panic!("{e}")),
            ),
            learn_samples_total: counter_vec(
                &r,
                "learn_samples_total",
                "Requests learn mode was handed, by outcome (recorded, dropped, unrecorded, skipped).",
                &["outcome"],
            ),
            learn_routes: gauge("learn_routes", "Route templates learn mode has recorded."),
            stream_closes_total: counter_vec(
                &r,
                "stream_closes_total",
                "Streams ended, by reason (client_gone, slow_consumer, kill_switch, ...).",
                &["reason"],
            ),
            config_reloads_total: counter_vec(
                &r,
                "config_reloads_total",
                "Config reloads by outcome (applied, rejected, unchanged).",
                &["outcome"],
            ),
            kill_switch: gauge("kill_switch", "1 while SSE is switched off (clients poll)."),
            breaker_state: register(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "breaker_state",
                        "Each circuit breaker's state: 0 closed, 1 half-open, 2 open.",
                    ),
                    &["breaker"],
                )
                .unwrap_or_else(|e| panic!("{e}")),
            ),
            degradation_level: gauge(
                "degradation_level",
                "0 full service, 1 batched, 2 low priorities shed, 3 SSE off.",
            ),
            family_delivery: register(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "family_delivery",
                        "Each family's delivery: 0 off, 1 shadow, 2 live.",
                    ),
                    &["family"],
                )
                .unwrap_or_else(|e| panic!("{e}")),
            ),
            passthrough_requests_total: counter_vec(
                &r,
                "passthrough_requests_total",
                "Forwarded requests by status class.",
                &["class"],
            ),
            passthrough_duration_seconds: register(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "passthrough_duration_seconds",
                        "Forwarded request duration by status class.",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                    &["class"],
                )
                .unwrap_or_else(|e| panic!("{e}")),
            ),
            upstream_errors_total: counter_vec(
                &r,
                "upstream_errors_total",
                "Requests that could not be forwarded, by kind.",
                &["kind"],
            ),
            store_appends_total: register(
                &r,
                IntCounter::new("store_appends_total", "Events appended to the log.")
                    .unwrap_or_else(|e| panic!("{e}")),
            ),
            store_errors_total: register(
                &r,
                IntCounter::new("store_errors_total", "Failed log appends or reads.")
                    .unwrap_or_else(|e| panic!("{e}")),
            ),
            store_commit_seconds: hist(
                "store_commit_seconds",
                "Time to append one batch to the log.",
                LATENCY_BUCKETS,
            ),
            auth_decisions_total: counter_vec(
                &r,
                "auth_decisions_total",
                "Topic authorization decisions by result and reason (granted, no_rule, forbidden, condition_failed, check_failed).",
                &["result", "reason"],
            ),
            auth_checks_total: counter_vec(
                &r,
                "auth_checks_total",
                "Authorization checks sent to the backend, by outcome.",
                &["outcome"],
            ),
            auth_cache_total: counter_vec(
                &r,
                "auth_cache_total",
                "Checked-topic decisions by source: hit (cache), coalesced (joined a running check), miss (new check).",
                &["result"],
            ),
            auth_cache_entries: gauge("auth_cache_entries", "Decisions held in the authorization cache."),
            auth_check_seconds: hist(
                "auth_check_seconds",
                "Duration of authorization checks sent to the backend.",
                LATENCY_BUCKETS,
            ),
            auth_revoked_total: register(
                &r,
                IntCounter::new(
                    "auth_revoked_total",
                    "Topics revoked from open streams when a re-check denied them.",
                )
                .unwrap_or_else(|e| panic!("{e}")),
            ),
            polls_total: counter_vec(
                &r,
                "polls_total",
                "GETs of polled routes, by route pattern and outcome (shielded: answered 304 by the sidecar; forwarded).",
                &["route", "outcome"],
            ),
            poll_changes_total: counter_vec(
                &r,
                "poll_changes_total",
                "Changes seen in polled answers, by family, route pattern and whether an event explained them.",
                &["family", "route", "covered"],
            ),
            proxy_refusals_total: counter_vec(
                &r,
                "proxy_refusals_total",
                "Requests the proxy refused itself, by reason (non_canonical_path: a mutation whose path is not in RFC 3986 normal form and would match a rule).",
                &["reason"],
            ),
            shield_skipped_total: counter_vec(
                &r,
                "shield_skipped_total",
                "Polls of shielded routes left unshielded, by reason (no_store: the backend said no-store; non_canonical_path).",
                &["reason"],
            ),
            mutations_unmatched_total: register(
                &r,
                IntCounter::new(
                    "mutations_unmatched_total",
                    "2xx mutations no rule matched; the shielded routes they could touch are forwarded next.",
                )
                .unwrap_or_else(|e| panic!("{e}")),
            ),
            origin_ids_refused_total: counter_vec(
                &r,
                "origin_ids_refused_total",
                "X-Client-Id / X-Mutation-Id values refused (origin left null), by header and reason (too_long, bad_char).",
                &["header", "reason"],
            ),
            runtimes: register(&r, RuntimeCollector::new()),
            registry: r,
            process: process_registry(),
        }
    }

    /// Makes the runtime this is called on known under `which` (the first call per runtime
    /// counts; later ones cost one atomic load). Outside a tokio runtime it does nothing.
    pub fn note_runtime(&self, which: Runtime) {
        let slot = &self.runtimes.slots[which as usize];
        if slot.get().is_none() {
            if let Ok(h) = Handle::try_current() {
                let _ = slot.set(h);
            }
        }
    }

    /// The registry in Prometheus text format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let mut families = self.registry.gather();
        families.extend(self.process.gather());
        if TextEncoder::new().encode(&families, &mut buf).is_err() {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// A registry holding the process collector (CPU, memory, fds, start time, threads from
/// /proc/self). Empty where the collector cannot register: the sidecar's own series stay.
fn process_registry() -> Registry {
    let r = Registry::new();
    let collector = prometheus::process_collector::ProcessCollector::for_self();
    if let Err(e) = r.register(Box::new(collector)) {
        tracing::warn!(error = %e, "process metrics unavailable");
    }
    r
}

/// The runtimes the sidecar has: one per Pingora service.
#[derive(Clone, Copy, Debug)]
pub enum Runtime {
    /// The proxy listener's (streams and pass-through), `threads` workers.
    Proxy = 0,
    /// The admin listener's (one worker).
    Admin = 1,
    /// The lifecycle background service's (sequencer, reloads, safety controller).
    Lifecycle = 2,
}

const RUNTIME_NAMES: [&str; 3] = ["proxy", "admin", "lifecycle"];

/// Reads the known runtimes' metrics when the registry is gathered. Busy time and park
/// counts are summed over a runtime's workers; tokio's totals only grow, so the exported
/// counters follow them by their increase.
#[derive(Clone)]
struct RuntimeCollector {
    slots: Arc<[OnceLock<Handle>; 3]>,
    series: Arc<Mutex<RuntimeSeries>>,
    descs: Vec<Desc>,
}

struct RuntimeSeries {
    workers: IntGaugeVec,
    alive_tasks: IntGaugeVec,
    global_queue_depth: IntGaugeVec,
    busy_seconds: CounterVec,
    parks: CounterVec,
}

impl RuntimeCollector {
    fn new() -> RuntimeCollector {
        let gauge = |name: &str, help: &str| {
            IntGaugeVec::new(Opts::new(name, help), &["runtime"])
                .unwrap_or_else(|e| panic!("{name}: {e}"))
        };
        let counter = |name: &str, help: &str| {
            CounterVec::new(Opts::new(name, help), &["runtime"])
                .unwrap_or_else(|e| panic!("{name}: {e}"))
        };
        let series = RuntimeSeries {
            workers: gauge("tokio_workers", "Worker threads of the tokio runtime."),
            alive_tasks: gauge(
                "tokio_alive_tasks",
                "Tasks alive on the tokio runtime (spawned, not yet finished).",
            ),
            global_queue_depth: gauge(
                "tokio_global_queue_depth",
                "Tasks waiting in the tokio runtime's global (injection) queue.",
            ),
            busy_seconds: counter(
                "tokio_worker_busy_seconds_total",
                "Time the runtime's workers spent polling tasks, summed over its workers.",
            ),
            parks: counter(
                "tokio_worker_park_total",
                "Times the runtime's workers parked (went idle), summed over its workers.",
            ),
        };
        let mut descs = Vec::new();
        descs.extend(series.workers.desc().into_iter().cloned());
        descs.extend(series.alive_tasks.desc().into_iter().cloned());
        descs.extend(series.global_queue_depth.desc().into_iter().cloned());
        descs.extend(series.busy_seconds.desc().into_iter().cloned());
        descs.extend(series.parks.desc().into_iter().cloned());
        RuntimeCollector {
            slots: Arc::new([OnceLock::new(), OnceLock::new(), OnceLock::new()]),
            series: Arc::new(Mutex::new(series)),
            descs,
        }
    }
}

/// Moves a counter up to `total` (never down: a total below it changes nothing).
fn follow(c: &prometheus::Counter, total: f64) {
    let delta = total - c.get();
    if delta > 0.0 {
        c.inc_by(delta);
    }
}

impl Collector for RuntimeCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let s = match self.series.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        for (slot, name) in self.slots.iter().zip(RUNTIME_NAMES) {
            let Some(h) = slot.get() else { continue };
            let m = h.metrics();
            let workers = m.num_workers();
            let busy: f64 = (0..workers)
                .map(|w| m.worker_total_busy_duration(w).as_secs_f64())
                .sum();
            let parks: u64 = (0..workers).map(|w| m.worker_park_count(w)).sum();
            let gauge = |g: &IntGaugeVec, v: usize| {
                g.with_label_values(&[name])
                    .set(i64::try_from(v).unwrap_or(i64::MAX));
            };
            gauge(&s.workers, workers);
            gauge(&s.alive_tasks, m.num_alive_tasks());
            gauge(&s.global_queue_depth, m.global_queue_depth());
            follow(&s.busy_seconds.with_label_values(&[name]), busy);
            follow(&s.parks.with_label_values(&[name]), parks as f64);
        }
        let mut families = s.workers.collect();
        families.extend(s.alive_tasks.collect());
        families.extend(s.global_queue_depth.collect());
        families.extend(s.busy_seconds.collect());
        families.extend(s.parks.collect());
        families
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Counts one request in `requests_in_flight` for as long as it lives (however the request
/// ends: answered, failed or cancelled).
pub struct InFlight(IntGauge);

impl InFlight {
    pub fn start(m: &Metrics) -> InFlight {
        m.requests_in_flight.inc();
        InFlight(m.requests_in_flight.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_prometheus_text() {
        let m = super::Metrics::new();
        m.sse_handshakes_total
            .with_label_values(&["accepted"])
            .inc();
        let text = m.render();
        assert!(text.contains("sse_sidecar_sse_handshakes_total{outcome=\"accepted\"} 1"));
    }

    #[test]
    fn a_noted_runtime_has_its_series_and_an_unknown_one_has_none() {
        let m = super::Metrics::new();
        assert!(!m.render().contains("sse_sidecar_tokio_workers"));
        m.note_runtime(super::Runtime::Admin); // outside a runtime: nothing
        assert!(!m.render().contains("sse_sidecar_tokio_workers"));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        rt.block_on(async {
            m.note_runtime(super::Runtime::Admin);
            tokio::spawn(async {}).await.unwrap();
        });
        let text = m.render();
        assert!(
            text.contains("sse_sidecar_tokio_workers{runtime=\"admin\"} 2"),
            "{text}"
        );
        assert!(text.contains("sse_sidecar_tokio_worker_busy_seconds_total{runtime=\"admin\"}"));
        assert!(text.contains("# TYPE sse_sidecar_tokio_worker_busy_seconds_total counter"));
        assert!(!text.contains("runtime=\"proxy\""), "{text}");
    }
}
