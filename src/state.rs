//! Runtime handles shared by every request and background task: the reload handle, the hub,
//! metrics, the effective SSE mode (kill switch), the drain signal and connection counters.
//! The only place with atomics and locks besides the hub; the proxy holds `Arc<State>`.

use crate::config::{Config, Delivery};
use crate::events::hub::Hub;
use crate::metrics::Metrics;
use crate::reload::{ReloadHandle, ReloadOutcome};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::watch;

/// Whether streams may run, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseMode {
    Enabled,
    Disabled { reason: String },
}

impl SseMode {
    pub fn is_enabled(&self) -> bool {
        matches!(self, SseMode::Enabled)
    }
}

pub struct State {
    pub reload: ReloadHandle,
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
    /// `DISABLE_SSE_SYSTEM=true` at start: pure pass-through whatever the file says.
    pub env_disabled: bool,
    /// Kill switch thrown from the admin API, with its reason; survives reloads.
    pub admin_kill: Mutex<Option<String>>,
    mode_tx: watch::Sender<SseMode>,
    /// How many times SSE has been switched off since start: a stream compares the value it
    /// captured at admission, so an off→on flap it was too busy to see still reaches it.
    off_generation: AtomicU64,
    /// Turns true when the server starts draining (SIGTERM).
    draining: watch::Sender<bool>,
    connections: AtomicUsize,
    /// Ids before this sequence number were issued before SSE was last switched back on;
    /// resuming from them gets a reset (changes made while off were never recorded).
    resume_floor: AtomicU64,
    pub started: Instant,
    /// Recent automatic and operator actions (reloads, kill switch, drain), newest last.
    transitions: Mutex<VecDeque<Transition>>,
    handshakes: Mutex<crate::safety::HandshakeLimiter>,
    pub breakers: Mutex<crate::safety::Breakers>,
    dedup: Mutex<crate::safety::Dedup>,
    /// The latest dashboard snapshot (JSON), refreshed every second by the lifecycle task.
    pub snapshot: watch::Sender<Arc<String>>,
    /// Topic authorization: decision cache and backend checks.
    pub auth: Arc<crate::auth::Authorizer>,
    /// Topic clock, coverage of polled routes, poll shielding.
    pub polling: Arc<crate::polling::Tracker>,
    /// When SSE last came back on after being switched off (0: never since start).
    pub kill_switch_exercised_ms: AtomicU64,
    /// Metric samples (one a minute) for the phase gates' window.
    pub gate_history: Mutex<VecDeque<(Instant, crate::admin::snapshot::Sample)>>,
}

/// One entry of the transitions log shown on the dashboard and in status.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Transition {
    pub at_ms: u64,
    pub kind: &'static str,
    pub detail: String,
}

/// Widest coalescing window.
pub const MAX_COALESCE_MS: u64 = 32;

/// How many transitions are kept.
const TRANSITIONS: usize = 50;

impl State {
    pub fn new(
        reload: ReloadHandle,
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
        env_disabled: bool,
    ) -> Arc<State> {
        let auth = crate::auth::Authorizer::new(
            reload.current().authorization.max_concurrent_checks,
            metrics.clone(),
        );
        // Events other instances derived reach this one through the shared log's feed: they
        // tick the topic clock here too, so shielding never vouches for a change they made.
        let polling = Arc::new(crate::polling::Tracker::new(100_000, metrics.clone()));
        let clock = polling.clone();
        hub.set_feed_hook(Box::new(move |e| clock.touch_event(&e.event)));
        // A gap (events lost here or on another instance) may hide changes from every clock.
        let shield = polling.clone();
        hub.set_gap_hook(Box::new(move || shield.force_all()));
        let state = Arc::new(State {
            auth,
            polling: polling.clone(),
            kill_switch_exercised_ms: AtomicU64::new(0),
            gate_history: Mutex::new(VecDeque::new()),
            reload,
            hub,
            metrics,
            env_disabled,
            admin_kill: Mutex::new(None),
            mode_tx: watch::channel(SseMode::Enabled).0,
            off_generation: AtomicU64::new(0),
            draining: watch::channel(false).0,
            connections: AtomicUsize::new(0),
            resume_floor: AtomicU64::new(0),
            handshakes: Mutex::new(Default::default()),
            breakers: Mutex::new(Default::default()),
            dedup: Mutex::new(Default::default()),
            started: Instant::now(),
            transitions: Mutex::new(VecDeque::new()),
            snapshot: watch::channel(Arc::new(String::from("{}"))).0,
        });
        state.refresh_mode();
        state
    }

    pub fn config(&self) -> Arc<Config> {
        self.reload.current()
    }

    pub fn mode(&self) -> SseMode {
        self.mode_tx.borrow().clone()
    }

    pub fn watch_mode(&self) -> watch::Receiver<SseMode> {
        self.mode_tx.subscribe()
    }

    /// How many times SSE has been switched off since start (see `watch_mode`).
    pub fn off_generation(&self) -> u64 {
        self.off_generation.load(Ordering::Acquire)
    }

    pub fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    /// Recomputes the effective mode from the environment, the admin kill switch and the
    /// config; open streams see the change through `watch_mode`.
    pub fn refresh_mode(&self) {
        let cfg = self.config();
        self.hub.set_queued_limit(cfg.sse.queued_bytes_total);
        let admin = self
            .admin_kill
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let health_open = !self
            .breakers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stream_health
            .allows();
        let mode = if self.env_disabled {
            SseMode::Disabled {
                reason: "DISABLE_SSE_SYSTEM".into(),
            }
        } else if let Some(reason) = admin {
            SseMode::Disabled { reason }
        } else if health_open {
            SseMode::Disabled {
                reason: "breaker: stream_health".into(),
            }
        } else if !cfg.sse.enabled {
            SseMode::Disabled {
                reason: "config".into(),
            }
        } else {
            SseMode::Enabled
        };
        self.metrics.kill_switch.set(i64::from(!mode.is_enabled()));
        self.metrics
            .degradation_level
            .set(self.degradation_level(&mode));
        for name in cfg.families.keys() {
            let v = match cfg.delivery(name) {
                Delivery::Off => 0,
                Delivery::Shadow => 1,
                Delivery::Live => 2,
            };
            self.metrics
                .family_delivery
                .with_label_values(&[name.as_str()])
                .set(v);
        }
        self.mode_tx.send_if_modified(|m| {
            if *m == mode {
                return false;
            }
            match &mode {
                SseMode::Enabled => {
                    tracing::info!("SSE switched on: clients may stream");
                    self.record_transition("kill_switch", "SSE switched on".into());
                    // Off then on again: the fallback was exercised (a phase gate).
                    self.kill_switch_exercised_ms
                        .store(crate::events::types::now_ms(), Ordering::Relaxed);
                    self.mark_resumed();
                }
                SseMode::Disabled { reason } => {
                    // Counted before receivers wake, so every stream that sees the change
                    // also sees the new generation.
                    if m.is_enabled() {
                        self.off_generation.fetch_add(1, Ordering::AcqRel);
                    }
                    tracing::warn!(%reason, "SSE switched off: every client goes back to polling");
                    self.record_transition("kill_switch", format!("SSE switched off ({reason})"));
                }
            }
            *m = mode.clone();
            true
        });
    }

    /// Families whose clients should poll right now: not live in the config, or forced by an
    /// open breaker (store: all; latency: the lowest priorities).
    pub fn polling_families(&self) -> Vec<String> {
        let cfg = self.config();
        let b = self
            .breakers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        cfg.families
            .values()
            .filter(|f| {
                cfg.delivery(&f.name) != Delivery::Live
                    // The store's probe is its own health sample, not traffic: clients
                    // keep polling until it closes, instead of flapping at every probe.
                    || b.store.state() != crate::safety::breaker::BreakerState::Closed
                    || (!b.latency.allows() && f.priority < crate::safety::SHED_BELOW_PRIORITY)
            })
            .map(|f| f.name.clone())
            .collect()
    }

    /// Feeds the breakers one sample each (once a second); applies and records changes.
    pub fn sample_breakers(&self, store_bad: bool, p99_ms: Option<f64>, health_bad: bool) {
        let now = tokio::time::Instant::now();
        let cfg = self.config();
        // The peak over the last second, so that bursts between samples count.
        let queued = self.hub.take_peak_queued();
        let limit = cfg.sse.queued_bytes_total;
        let memory_bad = queued.saturating_mul(10) > limit.saturating_mul(8);
        let latency_bad = p99_ms.is_some_and(|p| p > cfg.safety.latency_target_ms);
        let cool_down = cfg.safety.breaker_cooldown;
        drop(cfg);
        let mut changed = Vec::new();
        {
            let mut guard = self.breakers.lock().unwrap_or_else(|e| e.into_inner());
            let b = &mut *guard;
            for (br, bad) in [
                (&mut b.store, store_bad),
                (&mut b.latency, latency_bad),
                (&mut b.memory, memory_bad),
                (&mut b.stream_health, health_bad),
            ] {
                br.cool_down = cool_down;
                if let Some(st) = br.record(bad, now) {
                    changed.push((br.name, st));
                }
                self.metrics
                    .breaker_state
                    .with_label_values(&[br.name])
                    .set(br.state().gauge());
            }
        }
        for (name, st) in &changed {
            tracing::warn!(breaker = name, state = st.as_str(), "breaker transition");
            self.record_transition("breaker", format!("{name} {}", st.as_str()));
        }
        if !changed.is_empty() {
            self.refresh_mode();
            self.reload.touch();
        }
    }

    /// Whether new streams are refused because queued memory is near its bound.
    pub fn memory_refuses(&self) -> bool {
        !self
            .breakers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .memory
            .allows()
    }

    /// 0 full service, 1 batched (coalescing window open), 2 low priorities shed, 3 SSE off.
    pub fn degradation_level(&self, mode: &SseMode) -> i64 {
        let latency_open = !self
            .breakers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .latency
            .allows();
        if !mode.is_enabled() {
            3
        } else if latency_open {
            2
        } else if self.hub.coalesce_ms() > 0 {
            1
        } else {
            0
        }
    }

    /// Adapts the coalescing window to the delivery latency p99 of the last interval: widen
    /// (double, up to `MAX_COALESCE_MS`) above half the target (`safety.latency_target_ms`,
    /// 100 ms by default), narrow (halve, to 0) below a quarter of it. Returns the new window.
    pub fn adapt_coalescing(&self, p99_ms: Option<f64>) -> u64 {
        let cur = self.hub.coalesce_ms();
        let target = self.config().safety.latency_target_ms;
        let next = match p99_ms {
            Some(p) if p > target / 2.0 => (cur * 2).clamp(2, MAX_COALESCE_MS),
            Some(p) if p < target / 4.0 => cur / 2,
            None => cur / 2,
            _ => cur,
        };
        if next != cur {
            self.hub.set_coalesce_ms(next);
            let mode = self.mode();
            self.metrics
                .degradation_level
                .set(self.degradation_level(&mode));
            if (cur == 0) != (next == 0) {
                let detail = if next > 0 {
                    format!(
                        "level 1: latency p99 {:.0} ms, writes coalesced over {next} ms",
                        p99_ms.unwrap_or(0.0)
                    )
                } else {
                    "level 0: latency back under target, coalescing off".to_string()
                };
                tracing::info!(window_ms = next, "{detail}");
                self.record_transition("degradation", detail);
            }
        }
        next
    }

    /// SSE came back on: ids issued before now cannot vouch for the time SSE was off. A
    /// marker with no topics moves the head so that new ids start after the floor.
    fn mark_resumed(&self) {
        let head = self.hub.head();
        self.resume_floor.store(head + 1, Ordering::Release);
        let marker = crate::events::Event {
            id: String::new(),
            event_type: "sse.resumed".into(),
            family: "_system".into(),
            topics: vec![],
            ts: crate::events::types::now_ms(),
            origin: Default::default(),
            data: serde_json::json!({}),
            invalidate: vec![],
            tenant: None,
        };
        if self.hub.try_publish(marker, None).is_err() {
            tracing::warn!("could not queue the resume marker; clients resuming get a reset");
        }
    }

    pub fn record_transition(&self, kind: &'static str, detail: String) {
        let mut t = self.transitions.lock().unwrap_or_else(|e| e.into_inner());
        if t.len() >= TRANSITIONS {
            t.pop_front();
        }
        t.push_back(Transition {
            at_ms: crate::events::types::now_ms(),
            kind,
            detail,
        });
    }

    pub fn transitions(&self) -> Vec<Transition> {
        self.transitions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Starts the drain (SIGTERM): streams get reconnect advice, readiness goes false.
    pub fn start_drain(&self) {
        if !self.draining.send_replace(true) {
            tracing::info!(
                streams = self.open_connections(),
                "draining: streams get reconnect advice"
            );
            self.record_transition(
                "drain",
                format!("draining {} streams", self.open_connections()),
            );
        }
    }

    /// Reloads the config file and applies the result.
    pub fn reload(&self, trigger: &str) -> ReloadOutcome {
        let outcome = self.reload.reload(trigger);
        let label = match &outcome {
            ReloadOutcome::Applied { version, .. } => {
                self.record_transition("reload", format!("{trigger}: applied version {version}"));
                "applied"
            }
            ReloadOutcome::Unchanged => "unchanged",
            ReloadOutcome::Rejected(p) => {
                self.record_transition(
                    "reload",
                    format!("{trigger}: rejected ({} problems)", p.len()),
                );
                "rejected"
            }
        };
        self.metrics
            .config_reloads_total
            .with_label_values(&[label])
            .inc();
        self.refresh_mode();
        outcome
    }

    pub fn open_connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Takes one of `max` stream connection slots (`false`: all are taken). Each `true` is
    /// matched by one [`release_connection`](Self::release_connection).
    pub fn claim_connection(&self, max: usize) -> bool {
        if self.connections.fetch_add(1, Ordering::Relaxed) >= max {
            self.connections.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    pub fn release_connection(&self) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// Turns true when the server starts draining.
    pub fn watch_drain(&self) -> watch::Receiver<bool> {
        self.draining.subscribe()
    }

    /// Ids before this sequence number were issued before SSE last came back on.
    pub fn resume_floor(&self) -> u64 {
        self.resume_floor.load(Ordering::Acquire)
    }

    /// One handshake of `ip` against its token bucket (`Err`: retry after this long).
    pub fn admit_handshake(
        &self,
        ip: std::net::IpAddr,
        rate: f64,
        burst: u32,
    ) -> Result<(), std::time::Duration> {
        self.handshakes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(ip, Instant::now(), rate, burst)
    }

    /// Whether this is the first mutation with this scoped idempotency key within `window`.
    pub fn dedup_first(&self, key: &str, window: std::time::Duration) -> bool {
        self.dedup
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .first(key, Instant::now(), window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryLog;

    fn state() -> Arc<State> {
        let cfg = crate::config::parse_str("upstream: {address: \"127.0.0.1:1\"}").expect("valid");
        let metrics = Arc::new(Metrics::new());
        let log = Arc::new(MemoryLog::new(10, std::time::Duration::from_secs(60)));
        let hub = Hub::new(log, 16, metrics.clone());
        State::new(
            ReloadHandle::new("unused.yaml".into(), cfg),
            hub,
            metrics,
            false,
        )
    }

    #[test]
    fn the_coalescing_window_widens_with_latency_and_closes_again() {
        let s = state();
        assert_eq!(s.adapt_coalescing(Some(10.0)), 0);
        assert_eq!(
            s.adapt_coalescing(Some(80.0)),
            2,
            "over half the target: open"
        );
        assert_eq!(s.metrics.degradation_level.get(), 1);
        assert_eq!(s.adapt_coalescing(Some(80.0)), 4);
        for _ in 0..10 {
            s.adapt_coalescing(Some(500.0));
        }
        assert_eq!(s.hub.coalesce_ms(), MAX_COALESCE_MS);
        assert_eq!(
            s.adapt_coalescing(Some(40.0)),
            MAX_COALESCE_MS,
            "between thresholds: hold"
        );
        let mut w = MAX_COALESCE_MS;
        while w > 0 {
            w = s.adapt_coalescing(Some(5.0));
        }
        assert_eq!(s.metrics.degradation_level.get(), 0);
        let kinds: Vec<_> = s.transitions().iter().map(|t| t.kind).collect();
        assert_eq!(kinds, vec!["degradation", "degradation"]);
    }
}
