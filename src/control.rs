//! The safety controller: owns the effective SSE mode (the environment switch, the admin kill
//! switch, the config), the breakers, the degradation level, the coalescing window and the
//! transitions log. Its control loop (`run`) samples once a second, in its own background
//! task, until shutdown: it adapts the coalescing window to the delivery latency, feeds the
//! breakers and settles the polling tracker.
//!
//! Its inputs are counters, not metric labels: the streams report accepted handshakes and
//! server-side write failures here (`note_handshake`, `note_write_failure`); the hub's own
//! observations (delivery latency, store errors) are read from its unlabelled metric handles.
//! The Prometheus metrics keep being bumped where things happen, under the same names.

use crate::config::{Config, Delivery};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::polling::Tracker;
use crate::reload::ReloadHandle;
use crate::safety::breaker::BreakerState;
use crate::safety::health::StreamHealth;
use crate::safety::latency::{quantile_ms, Reading};
use crate::safety::Breakers;
use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;
use tokio::time::{Duration, Instant};

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

/// How often the control loop samples.
pub const TICK: Duration = Duration::from_secs(1);

/// What the streams report as it happens; taken once a tick.
#[derive(Default)]
struct Counters {
    /// Streams accepted since the last tick.
    handshakes: AtomicU64,
    /// Server-side stream failures since the last tick, per client address.
    failures: Mutex<StreamHealth>,
}

/// What the loop keeps from one tick to the next.
struct Sampler {
    latency: Reading,
    store_errors: u64,
}

/// The components the controller reads and steers.
pub struct Parts {
    pub reload: Arc<ReloadHandle>,
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
    pub polling: Arc<Tracker>,
    /// `DISABLE_SSE_SYSTEM=true` at start: pure pass-through whatever the file says.
    pub env_disabled: bool,
}

pub struct Controller {
    reload: Arc<ReloadHandle>,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    polling: Arc<Tracker>,
    env_disabled: bool,
    /// Kill switch thrown from the admin API, with its reason; survives reloads.
    admin_kill: Mutex<Option<String>>,
    mode_tx: watch::Sender<SseMode>,
    /// How many times SSE has been switched off since start: a stream compares the value it
    /// captured at admission, so an off→on flap it was too busy to see still reaches it.
    off_generation: AtomicU64,
    /// Ids before this sequence number were issued before SSE was last switched back on;
    /// resuming from them gets a reset (changes made while off were never recorded).
    resume_floor: AtomicU64,
    /// When SSE last came back on after being switched off (0: never since start).
    kill_switch_exercised_ms: AtomicU64,
    breakers: Mutex<Breakers>,
    /// Recent automatic and operator actions (reloads, kill switch, drain), newest last.
    transitions: Mutex<VecDeque<Transition>>,
    counters: Counters,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Controller {
    /// Builds the controller and applies the mode the config and environment ask for.
    pub fn new(parts: Parts) -> Arc<Controller> {
        let c = Arc::new(Controller {
            reload: parts.reload,
            hub: parts.hub,
            metrics: parts.metrics,
            polling: parts.polling,
            env_disabled: parts.env_disabled,
            admin_kill: Mutex::new(None),
            mode_tx: watch::channel(SseMode::Enabled).0,
            off_generation: AtomicU64::new(0),
            resume_floor: AtomicU64::new(0),
            kill_switch_exercised_ms: AtomicU64::new(0),
            breakers: Mutex::new(Breakers::default()),
            transitions: Mutex::new(VecDeque::new()),
            counters: Counters::default(),
        });
        c.refresh_mode();
        c
    }

    fn config(&self) -> Arc<Config> {
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

    /// Ids before this sequence number were issued before SSE last came back on.
    pub fn resume_floor(&self) -> u64 {
        self.resume_floor.load(Ordering::Acquire)
    }

    /// Whether `DISABLE_SSE_SYSTEM` switched SSE off at start.
    pub fn env_disabled(&self) -> bool {
        self.env_disabled
    }

    /// When SSE last came back on after being off (ms since the epoch; 0: never).
    pub fn kill_switch_exercised_ms(&self) -> u64 {
        self.kill_switch_exercised_ms.load(Ordering::Relaxed)
    }

    /// Throws (`Some(reason)`) or releases (`None`) the admin kill switch, and applies it.
    pub fn set_kill_switch(&self, reason: Option<String>) {
        *lock(&self.admin_kill) = reason;
        self.refresh_mode();
    }

    /// Each breaker's name and state.
    pub fn breaker_states(&self) -> Vec<(&'static str, BreakerState)> {
        lock(&self.breakers)
            .all()
            .iter()
            .map(|b| (b.name, b.state()))
            .collect()
    }

    /// One stream accepted (an input of the `stream_health` breaker).
    pub fn note_handshake(&self) {
        self.counters.handshakes.fetch_add(1, Ordering::Relaxed);
    }

    /// One stream ended by a server-side write failure, from `addr` when known.
    pub fn note_write_failure(&self, addr: Option<IpAddr>) {
        lock(&self.counters.failures).record_failure(addr);
    }

    /// The mode the environment, the admin kill switch, the `stream_health` breaker and the
    /// config ask for, in that order.
    fn wanted_mode(&self, cfg: &Config) -> SseMode {
        let admin = lock(&self.admin_kill).clone();
        let health_open = !lock(&self.breakers).stream_health.allows();
        let off = |reason: &str| SseMode::Disabled {
            reason: reason.into(),
        };
        if self.env_disabled {
            off("DISABLE_SSE_SYSTEM")
        } else if let Some(reason) = admin {
            SseMode::Disabled { reason }
        } else if health_open {
            off("breaker: stream_health")
        } else if !cfg.sse.enabled {
            off("config")
        } else {
            SseMode::Enabled
        }
    }

    /// Recomputes the effective mode from the environment, the admin kill switch and the
    /// config; open streams see the change through `watch_mode`.
    pub fn refresh_mode(&self) {
        let cfg = self.config();
        self.hub.set_queued_limit(cfg.sse.queued_bytes_total);
        self.hub.set_heartbeat(cfg.sse.heartbeat);
        let mode = self.wanted_mode(&cfg);
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
            self.switched(m.is_enabled(), &mode);
            *m = mode.clone();
            true
        });
    }

    /// Records a change of mode (before receivers wake, so every stream that sees the change
    /// also sees the new generation and floor).
    fn switched(&self, was_enabled: bool, mode: &SseMode) {
        match mode {
            SseMode::Enabled => {
                tracing::info!("SSE switched on: clients may stream");
                self.record_transition("kill_switch", "SSE switched on".into());
                // Off then on again: the fallback was exercised (a phase gate).
                self.kill_switch_exercised_ms
                    .store(crate::events::types::now_ms(), Ordering::Relaxed);
                self.mark_resumed();
            }
            SseMode::Disabled { reason } => {
                if was_enabled {
                    self.off_generation.fetch_add(1, Ordering::AcqRel);
                }
                tracing::warn!(%reason, "SSE switched off: every client goes back to polling");
                self.record_transition("kill_switch", format!("SSE switched off ({reason})"));
            }
        }
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
            conflict: None,
        };
        if self.hub.try_publish(marker, None).is_err() {
            tracing::warn!("could not queue the resume marker; clients resuming get a reset");
        }
    }

    /// Families whose clients should poll right now: not live in the config, or forced by an
    /// open breaker (store: all; latency: the lowest priorities).
    pub fn polling_families(&self) -> Vec<String> {
        let cfg = self.config();
        let b = lock(&self.breakers).clone();
        cfg.families
            .values()
            .filter(|f| {
                cfg.delivery(&f.name) != Delivery::Live
                    // The store's probe is its own health sample, not traffic: clients
                    // keep polling until it closes, instead of flapping at every probe.
                    || b.store.state() != BreakerState::Closed
                    || (!b.latency.allows() && f.priority < crate::safety::SHED_BELOW_PRIORITY)
            })
            .map(|f| f.name.clone())
            .collect()
    }

    /// Whether new streams are refused because queued memory is near its bound.
    pub fn memory_refuses(&self) -> bool {
        !lock(&self.breakers).memory.allows()
    }

    /// 0 full service, 1 batched (coalescing window open), 2 low priorities shed, 3 SSE off.
    pub fn degradation_level(&self, mode: &SseMode) -> i64 {
        let latency_open = !lock(&self.breakers).latency.allows();
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

    /// Feeds the breakers one sample each (once a second, at `now`); applies and records
    /// changes.
    pub fn sample_breakers(
        &self,
        now: Instant,
        store_bad: bool,
        p99_ms: Option<f64>,
        health_bad: bool,
    ) {
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
            let mut guard = lock(&self.breakers);
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

    pub fn record_transition(&self, kind: &'static str, detail: String) {
        let mut t = lock(&self.transitions);
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
        lock(&self.transitions).iter().cloned().collect()
    }

    /// Most streams failing on the server's side in the last interval
    /// (`safety::health::unhealthy`, failures bounded per client address). Takes the
    /// interval's counts.
    fn streams_unhealthy(&self) -> bool {
        let handshakes = self.counters.handshakes.swap(0, Ordering::Relaxed);
        let failures = lock(&self.counters.failures).take();
        crate::safety::health::unhealthy(handshakes, failures.bounded)
    }

    fn sampler(&self) -> Sampler {
        Sampler {
            latency: Reading::of(&self.metrics.delivery_latency_seconds),
            store_errors: self.metrics.store_errors_total.get(),
        }
    }

    /// One tick of the control loop, at `now`.
    fn step(&self, prev: &mut Sampler, now: Instant) {
        let next = self.sampler();
        let p99 = quantile_ms(&prev.latency, &next.latency, 0.99);
        self.adapt_coalescing(p99);
        let store_bad = !self.hub.log().healthy() || next.store_errors > prev.store_errors;
        let health_bad = self.streams_unhealthy();
        self.sample_breakers(now, store_bad, p99, health_bad);
        self.polling.settle();
        *prev = next;
    }

    /// The control loop: one step a second until `shutdown` turns true or its sender is
    /// dropped.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut prev = self.sampler();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.step(&mut prev, Instant::now()),
                r = shutdown.changed() => {
                    if r.is_err() || *shutdown.borrow() {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryLog;

    fn controller() -> (Arc<Controller>, Arc<Metrics>, Arc<Hub>) {
        let cfg = crate::config::parse_str("upstream: {address: \"127.0.0.1:1\"}").expect("valid");
        let metrics = Arc::new(Metrics::new());
        let log = Arc::new(MemoryLog::new(10, std::time::Duration::from_secs(60)));
        let hub = Hub::new(log, 16, metrics.clone());
        let c = Controller::new(Parts {
            reload: Arc::new(ReloadHandle::new("unused.yaml".into(), cfg)),
            hub: hub.clone(),
            metrics: metrics.clone(),
            polling: Arc::new(Tracker::new(100, metrics.clone())),
            env_disabled: false,
        });
        (c, metrics, hub)
    }

    fn latency(c: &Controller) -> BreakerState {
        c.breaker_states()
            .into_iter()
            .find(|(n, _)| *n == "latency")
            .map(|(_, s)| s)
            .expect("latency breaker")
    }

    #[test]
    fn the_coalescing_window_widens_with_latency_and_closes_again() {
        let (s, metrics, hub) = controller();
        assert_eq!(s.adapt_coalescing(Some(10.0)), 0);
        assert_eq!(
            s.adapt_coalescing(Some(80.0)),
            2,
            "over half the target: open"
        );
        assert_eq!(metrics.degradation_level.get(), 1);
        assert_eq!(s.adapt_coalescing(Some(80.0)), 4);
        for _ in 0..10 {
            s.adapt_coalescing(Some(500.0));
        }
        assert_eq!(hub.coalesce_ms(), MAX_COALESCE_MS);
        assert_eq!(
            s.adapt_coalescing(Some(40.0)),
            MAX_COALESCE_MS,
            "between thresholds: hold"
        );
        let mut w = MAX_COALESCE_MS;
        while w > 0 {
            w = s.adapt_coalescing(Some(5.0));
        }
        assert_eq!(metrics.degradation_level.get(), 0);
        let kinds: Vec<_> = s.transitions().iter().map(|t| t.kind).collect();
        assert_eq!(kinds, vec!["degradation", "degradation"]);
    }

    #[tokio::test(start_paused = true)]
    async fn slow_deliveries_open_the_latency_breaker_and_recovery_closes_it() {
        let (c, metrics, _hub) = controller();
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(c.clone().run(rx));
        // Every second, deliveries at 500 ms (target 100 ms): 5 bad samples trip it.
        let mut ticks = 0;
        while latency(&c) == BreakerState::Closed {
            assert!(ticks < 8, "still closed after {ticks} slow seconds");
            for _ in 0..10 {
                metrics.delivery_latency_seconds.observe(0.5);
            }
            tokio::time::sleep(TICK).await;
            ticks += 1;
        }
        assert_eq!(latency(&c), BreakerState::Open);
        assert_eq!(metrics.degradation_level.get(), 2);
        // No slow delivery any more: after the cool-down (15 s) it probes and closes.
        let mut ticks = 0;
        while latency(&c) != BreakerState::Closed {
            assert!(ticks < 20, "still not closed after {ticks} quiet seconds");
            tokio::time::sleep(TICK).await;
            ticks += 1;
        }
        assert!(c
            .transitions()
            .iter()
            .any(|t| t.kind == "breaker" && t.detail == "latency open"));
        stop.send(true).expect("loop listening");
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the loop exits on shutdown")
            .expect("no panic");
    }

    #[tokio::test(start_paused = true)]
    async fn the_loop_exits_when_its_shutdown_sender_is_dropped() {
        let (c, _, _) = controller();
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(c.run(rx));
        tokio::time::sleep(TICK * 3).await;
        assert!(!task.is_finished(), "runs until told");
        drop(stop);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the loop exits")
            .expect("no panic");
    }

    #[tokio::test(start_paused = true)]
    async fn most_streams_failing_switches_sse_off() {
        let (c, _, _) = controller();
        for round in 0..3 {
            for i in 0..30u8 {
                c.note_write_failure(Some(IpAddr::from([10, 0, round, i])));
            }
            c.note_handshake();
            assert!(c.streams_unhealthy(), "round {round}");
            c.sample_breakers(Instant::now(), false, None, true);
            tokio::time::advance(TICK).await;
        }
        assert_eq!(
            c.mode(),
            SseMode::Disabled {
                reason: "breaker: stream_health".into()
            }
        );
        assert!(!c.streams_unhealthy(), "the interval's counts were taken");
    }
}
