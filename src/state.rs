//! The runtime handle the edges (proxy, streams, admin) are given: `Arc` handles to the
//! components (reload handle, hub, metrics, authorizer, polling tracker, safety controller,
//! presence engine, learn mode),
//! plus the process-wide drain signal, the stream connection count, the handshake limiter
//! and the idempotency de-duplicator. Built only by the composition root (`app`). The
//! mode, kill switch, breakers, degradation and transitions belong to the safety
//! controller (`control`); the methods here that name them delegate to it.

use crate::config::Config;
use crate::control::Controller;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::reload::{ReloadHandle, ReloadOutcome};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

pub use crate::control::{SseMode, Transition, MAX_COALESCE_MS};

pub struct State {
    pub reload: Arc<ReloadHandle>,
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
    /// Topic authorization: decision cache and backend checks.
    pub auth: Arc<crate::auth::Authorizer>,
    /// Topic clock, coverage of polled routes, poll shielding.
    pub polling: Arc<crate::polling::Tracker>,
    /// SSE mode and kill switch, breakers, degradation, coalescing, transitions.
    pub controller: Arc<Controller>,
    /// Who is on each presence topic.
    pub presence: Arc<crate::presence::Presence>,
    /// Learn mode: the shapes of the forwarded traffic, and the rules they suggest.
    pub learn: Arc<crate::learn::Learner>,
    /// Turns true when the server starts draining (SIGTERM).
    draining: watch::Sender<bool>,
    connections: AtomicUsize,
    started: Instant,
    handshakes: Mutex<crate::safety::HandshakeLimiter>,
    dedup: Mutex<crate::safety::Dedup>,
}

/// The components a `State` hands out (built by `app`).
pub struct Components {
    pub reload: Arc<ReloadHandle>,
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
    pub auth: Arc<crate::auth::Authorizer>,
    pub polling: Arc<crate::polling::Tracker>,
    pub controller: Arc<Controller>,
    pub presence: Arc<crate::presence::Presence>,
    pub learn: Arc<crate::learn::Learner>,
}

impl State {
    pub fn new(c: Components) -> Arc<State> {
        Arc::new(State {
            reload: c.reload,
            hub: c.hub,
            metrics: c.metrics,
            auth: c.auth,
            polling: c.polling,
            controller: c.controller,
            presence: c.presence,
            learn: c.learn,
            draining: watch::channel(false).0,
            connections: AtomicUsize::new(0),
            started: Instant::now(),
            handshakes: Mutex::new(Default::default()),
            dedup: Mutex::new(Default::default()),
        })
    }

    /// The components wired as the composition root wires them, for unit tests of the
    /// edges and the pipeline (no feed hooks: a test hub has no shared log).
    #[cfg(test)]
    pub fn for_tests(reload: ReloadHandle, hub: Arc<Hub>, metrics: Arc<Metrics>) -> Arc<State> {
        let reload = Arc::new(reload);
        let polling = Arc::new(crate::polling::Tracker::new(1000, metrics.clone()));
        let controller = Controller::new(crate::control::Parts {
            reload: reload.clone(),
            hub: hub.clone(),
            metrics: metrics.clone(),
            polling: polling.clone(),
            env_disabled: false,
        });
        State::new(Components {
            auth: crate::auth::Authorizer::new(8, metrics.clone()),
            presence: crate::presence::Presence::new(metrics.clone()),
            learn: crate::learn::Learner::new(metrics.clone()),
            reload,
            hub,
            metrics,
            polling,
            controller,
        })
    }

    pub fn config(&self) -> Arc<Config> {
        self.reload.current()
    }

    /// How long since the process started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn mode(&self) -> SseMode {
        self.controller.mode()
    }

    pub fn watch_mode(&self) -> watch::Receiver<SseMode> {
        self.controller.watch_mode()
    }

    /// How many times SSE has been switched off since start (see `watch_mode`).
    pub fn off_generation(&self) -> u64 {
        self.controller.off_generation()
    }

    pub fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    /// Recomputes the effective mode (see `Controller::refresh_mode`).
    pub fn refresh_mode(&self) {
        self.controller.refresh_mode();
    }

    /// Families whose clients should poll right now (see `Controller::polling_families`).
    pub fn polling_families(&self) -> Vec<String> {
        self.controller.polling_families()
    }

    /// Feeds the breakers one sample each, now (see `Controller::sample_breakers`).
    pub fn sample_breakers(&self, store_bad: bool, p99_ms: Option<f64>, health_bad: bool) {
        self.controller
            .sample_breakers(tokio::time::Instant::now(), store_bad, p99_ms, health_bad);
    }

    /// Whether new streams are refused because queued memory is near its bound.
    pub fn memory_refuses(&self) -> bool {
        self.controller.memory_refuses()
    }

    /// 0 full service, 1 batched (coalescing window open), 2 low priorities shed, 3 SSE off.
    pub fn degradation_level(&self, mode: &SseMode) -> i64 {
        self.controller.degradation_level(mode)
    }

    /// Adapts the coalescing window (see `Controller::adapt_coalescing`).
    pub fn adapt_coalescing(&self, p99_ms: Option<f64>) -> u64 {
        self.controller.adapt_coalescing(p99_ms)
    }

    pub fn record_transition(&self, kind: &'static str, detail: String) {
        self.controller.record_transition(kind, detail);
    }

    pub fn transitions(&self) -> Vec<Transition> {
        self.controller.transitions()
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

    /// Reloads the config file and applies the result; the file read and the schema
    /// compile run on tokio's blocking pool, never on the caller's worker thread.
    pub async fn reload(&self, trigger: &str) -> ReloadOutcome {
        let outcome = self.reload.reload_async(trigger).await;
        self.after_reload(trigger, &outcome);
        outcome
    }

    /// [`reload`](Self::reload) on the caller's thread, for callers off the proxy's
    /// workers (tests on paused time, where a blocking-pool wait would let time jump).
    #[cfg(test)]
    pub fn reload_now(&self, trigger: &str) -> ReloadOutcome {
        let outcome = self.reload.reload(trigger);
        self.after_reload(trigger, &outcome);
        outcome
    }

    /// Records, counts and acts on a reload's outcome.
    fn after_reload(&self, trigger: &str, outcome: &ReloadOutcome) {
        let label = match outcome {
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
        self.controller.resume_floor()
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
