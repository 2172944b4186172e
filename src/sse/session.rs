//! One admitted stream from its first byte to its close, as a `Session`: what the stream keeps
//! between wake-ups (the signals it reacts to, the config version and event types it told the
//! client, its granted topics, its subscriber, its presence memberships, the client's resume
//! point, its heartbeat and re-check timers), and one short handler per step of its life: `start` (head, `retry:`,
//! `hello`), `resume` (replay or `reset`), then, for each `Wake` of the wait, live frames,
//! heartbeat, mode change, config change (revocations, `types_changed`, polling families),
//! authorization re-check, drain or client gone. Each handler returns a `Step`: continue, or
//! close with a `Close` reason, which is also the `stream_closes_total` label. Topics are
//! taken away in one place, `revoke`. Every frame written comes from `crate::wire::Frame`.
//!
//! Admission, the `Sink` trait and the resume decision (`plan_resume`) are in `stream`.

use super::stream::{jittered_retry, plan_resume, Admitted, ConnGuard, Resume, Sink};
use crate::auth::{Credentials, DenyReason, Grants};
use crate::config::Config;
use crate::events::types::{now_ms, EventId};
use crate::hub::{Drained, QueuedFrame, Subscriber, Subscription};
use crate::state::{SseMode, State};
use crate::store::ReadAfter;
use crate::wire::{Control, Frame, Hello, PresenceSnapshot, ResetReason};
use bytes::{Bytes, BytesMut};
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Most bytes written in one replay chunk.
const REPLAY_CHUNK_BYTES: usize = 64 * 1024;

/// What a stream reacts to, observed from admission on. The receivers are made before the
/// first state admission reads, so a reload, kill switch or drain that lands during the
/// handshake, authorization or replay still reaches the stream (a `watch` subscription only
/// reports changes after it was made).
pub(super) struct Signals {
    mode_rx: watch::Receiver<SseMode>,
    cfg_rx: watch::Receiver<u64>,
    drain_rx: watch::Receiver<bool>,
    /// How often SSE had been switched off when the stream was admitted: an off→on flap
    /// that completes while the stream is busy still shows as a new generation.
    off_generation: u64,
    /// The config version admission decided under (then the one the stream last acted on).
    config_version: String,
    /// The event types announced in `hello` (then in the last `control {types}`).
    types: Vec<String>,
}

impl Signals {
    pub(super) fn observe(state: &State) -> Signals {
        let mode_rx = state.watch_mode();
        let cfg_rx = state.reload.watch();
        let drain_rx = state.watch_drain();
        let off_generation = state.off_generation();
        let cfg = state.config();
        Signals {
            mode_rx,
            cfg_rx,
            drain_rx,
            off_generation,
            config_version: cfg.version.clone(),
            types: cfg.type_names().iter().map(|t| t.to_string()).collect(),
        }
    }
}

/// Counts a stream against its credentials' fingerprint while it lives.
struct StreamHolder<'a>(&'a State, u128);

impl<'a> StreamHolder<'a> {
    fn new(state: &'a State, fp: u128) -> Self {
        state.polling.stream_opened(fp);
        StreamHolder(state, fp)
    }
}

impl Drop for StreamHolder<'_> {
    fn drop(&mut self) {
        self.0.polling.stream_closed(self.1);
    }
}

/// Why a stream ended; `as_str` is its `stream_closes_total` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// The client went away cleanly.
    ClientGone,
    /// The client's connection was reset (not against stream health: the client's doing).
    ClientReset,
    /// A write to the client failed (counts against stream health).
    WriteError,
    /// The queue overflowed behind the client (a write that timed out meanwhile included).
    SlowConsumer,
    /// SSE was switched off: the client was told to poll.
    KillSwitch,
    /// Every topic of the stream was revoked.
    Revoked,
    /// The sidecar drains: the client was told to reconnect.
    Draining,
}

impl Close {
    pub fn as_str(self) -> &'static str {
        match self {
            Close::ClientGone => "client_gone",
            Close::ClientReset => "client_reset",
            Close::WriteError => "write_error",
            Close::SlowConsumer => "slow_consumer",
            Close::KillSwitch => "kill_switch",
            Close::Revoked => "revoked",
            Close::Draining => "draining",
        }
    }
}

/// What a handler tells the stream's loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Continue,
    Close(Close),
}

impl From<Result<(), Close>> for Step {
    fn from(r: Result<(), Close>) -> Step {
        match r {
            Ok(()) => Step::Continue,
            Err(c) => Step::Close(c),
        }
    }
}

/// What woke a waiting stream (in the order the wait prefers them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wake {
    Drain,
    ModeChanged,
    Frames,
    ConfigChanged,
    Heartbeat,
    Recheck,
    /// The client went away: true for a clean close.
    ClientGone(bool),
}

/// An admitted stream while it runs (see the module header).
pub(super) struct Session<'a, S: Sink> {
    state: &'a Arc<State>,
    sink: &'a mut S,
    signals: Signals,
    /// The granted topics, sorted (fewer after a revocation).
    topics: Vec<String>,
    /// Set once a topic was revoked: queued frames are then filtered by the granted topics.
    filter: bool,
    /// The credentials re-checks are asked with.
    creds: Credentials,
    /// The client's address (the stream-health breaker bounds each address's share).
    client: Option<std::net::IpAddr>,
    /// Its tenant under `upstream.tenancy: host`.
    tenant: Option<String>,
    /// The log's epoch, as the client was last told it.
    epoch: String,
    /// The sequence fanned out when the stream subscribed: replay covers up to it.
    fanned: u64,
    /// The client's last event id (until `resume` used it).
    last_id: Option<String>,
    /// Frames up to this sequence arrive live but were already seen (shared log, see
    /// `catch_up`); 0 when none.
    skip_through: u64,
    /// The polling families the client was last told.
    last_polling: Vec<String>,
    /// Its own heartbeat timer, polled only while its socket is its own: while the socket is
    /// lent, the hub writes the heartbeats (`Hub::sweep_heartbeats`) without waking it.
    heartbeat: tokio::time::Interval,
    /// The socket was lent during the last wait (the hub wrote the heartbeats meanwhile).
    beats_by_hub: bool,
    /// When the earliest checked decision expires; `recheck` fires then.
    recheck_at: Option<std::time::Instant>,
    recheck: Pin<Box<tokio::time::Sleep>>,
    /// Its presence memberships (topic, membership): it leaves a topic when one drops.
    presence: Vec<(String, crate::presence::Membership)>,
    // Dropped in this order: unsubscribed, then no longer held, then the slot is free.
    subscription: Subscription,
    _holder: StreamHolder<'a>,
    _conn: ConnGuard,
}

impl<'a, S: Sink> Session<'a, S> {
    /// Writes the response head, `retry:` and `hello`, subscribed first so that nothing
    /// falls between the replay and the live frames. None when the client cannot be written
    /// to: the stream ends before it began (no close is counted).
    pub(super) async fn start(
        state: &'a Arc<State>,
        cfg: &Config,
        mut admitted: Admitted,
        sink: &'a mut S,
    ) -> Option<Session<'a, S>> {
        if !sink.start(admitted.cors.as_deref()).await {
            return None;
        }
        state
            .metrics
            .sse_handshakes_total
            .with_label_values(&["accepted"])
            .inc();
        state.controller.note_handshake();
        let grants = std::mem::take(&mut admitted.grants);
        // These credentials hold a stream (the slow-down hint for their polls).
        let holder = StreamHolder::new(state, admitted.creds.fingerprint);
        let (subscription, fanned) = state.hub.subscribe_in(
            admitted.tenant.clone(),
            grants.granted.clone(),
            cfg.sse.queue_max_bytes,
        );
        if let Some(id) = &admitted.client_id {
            let key = crate::hub::receipts::stream_key(
                admitted.receipt_scope,
                admitted.tenant.as_deref(),
                id,
            );
            state.hub.register_client(&subscription.sub, key);
        }
        let client_id = admitted.client_id.take();
        let scope = (&grants.granted[..], admitted.tenant.as_deref());
        let who = admitted.identity.take();
        let (presence, snapshots) =
            super::presence::join(state, cfg, scope, who.as_ref(), &subscription.sub);
        let heartbeat = cfg.sse.heartbeat;
        let mut ticker =
            tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let session = Session {
            state,
            sink,
            signals: admitted.signals,
            topics: grants.granted.clone(),
            filter: false,
            creds: admitted.creds,
            client: admitted.client,
            tenant: admitted.tenant,
            epoch: state.hub.epoch().to_string(),
            fanned,
            last_id: admitted.last_id,
            skip_through: 0,
            last_polling: Vec::new(),
            heartbeat: ticker,
            beats_by_hub: false,
            recheck_at: admitted.recheck_at,
            recheck: Box::pin(tokio::time::sleep_until(recheck_deadline(
                admitted.recheck_at,
            ))),
            presence,
            subscription,
            _holder: holder,
            _conn: admitted._conn,
        };
        session.preamble(cfg, grants, (client_id, snapshots)).await
    }

    /// Sends `retry:` (jittered) and `hello` in one write.
    async fn preamble(
        self,
        cfg: &Config,
        grants: Grants,
        (client, presence): (Option<String>, BTreeMap<String, PresenceSnapshot>),
    ) -> Option<Session<'a, S>> {
        let hello = Hello {
            epoch: self.epoch.clone(),
            head: EventId::new(&self.epoch, self.fanned).to_string(),
            topics: self.topics.clone(),
            denied: grants
                .denied_topics()
                .into_iter()
                .map(str::to_owned)
                .collect(),
            denied_reasons: grants.denied_reasons(),
            heartbeat_ms: cfg.sse.heartbeat.as_millis() as u64,
            types: self.signals.types.clone(),
            polling_families: self.state.polling_families(),
            client,
            presence,
        };
        drop(grants);
        let mut preamble = BytesMut::new();
        let retry = jittered_retry(cfg.sse.retry_min_ms, cfg.sse.retry_max_ms);
        preamble.extend_from_slice(&Frame::Retry(retry).encode());
        preamble.extend_from_slice(&Frame::Hello(&hello).encode());
        drop(hello);
        self.sink.send(preamble.freeze()).await.then_some(self)
    }

    /// Replays what the client missed, or tells it to refetch (`reset`); false when the
    /// client cannot be written to (the stream ends, no close is counted). The first
    /// heartbeat is due one interval after this.
    pub(super) async fn resume(&mut self, cfg: &Config) -> bool {
        let floor = self.state.resume_floor();
        self.skip_through = self.catch_up(floor).await;
        let resumed = self.skip_through > 0 || self.replay_or_reset(cfg, floor).await;
        self.last_id = None;
        self.last_polling = self.state.polling_families();
        self.heartbeat.reset();
        resumed
    }

    /// With a shared log, an id issued through another instance can be a moment ahead of
    /// this instance's tailer: waits (bounded) for it instead of calling it a future id.
    /// Frames up to it then arrive live and are skipped; nothing is replayed. Returns the
    /// id's sequence once caught up, else 0.
    async fn catch_up(&self, floor: u64) -> u64 {
        let Some(id) = self.last_id.as_deref().and_then(|s| EventId::parse(s).ok()) else {
            return 0;
        };
        let hub = &self.state.hub;
        if !(hub.is_shared() && id.epoch == self.epoch && id.seq > self.fanned && id.seq >= floor) {
            return 0;
        }
        let mut head_rx = hub.watch_head();
        let caught_up =
            tokio::time::timeout(Duration::from_secs(2), head_rx.wait_for(|h| *h >= id.seq)).await;
        if matches!(caught_up, Ok(Ok(_))) {
            id.seq
        } else {
            0
        }
    }

    /// Acts on `plan_resume`: nothing, a `reset`, or the replay.
    async fn replay_or_reset(&mut self, cfg: &Config, floor: u64) -> bool {
        let head = EventId::new(&self.epoch, self.fanned).to_string();
        let plan = plan_resume(
            self.last_id.as_deref(),
            &self.epoch,
            self.fanned,
            cfg.sse.replay_max_events,
            floor,
        );
        match plan {
            Resume::Fresh => true,
            Resume::Reset(reason) => self.send_reset(reason, &head).await,
            // Events that could not be stored after this id: replay cannot vouch for it.
            Resume::After(after) if after < self.state.hub.loss_floor() => {
                self.send_reset(ResetReason::EventsLost, &head).await
            }
            // Boxed, as the other one-off phases: their states would otherwise stay part of
            // every stream's long-lived future.
            Resume::After(after) => {
                let scope = Scope {
                    topics: &self.topics,
                    tenant: self.tenant.as_deref(),
                };
                let sink = &mut *self.sink;
                Box::pin(replay(self.state, sink, scope, after, self.fanned, &head)).await
            }
        }
    }

    /// Before each wait: a drain that began meanwhile ends the stream; otherwise, with
    /// nothing queued and nothing to do, the fan-out may write to the client itself.
    pub(super) async fn ready(&mut self) -> Step {
        if *self.signals.drain_rx.borrow() {
            return self.drain().await;
        }
        let sub = &self.subscription.sub;
        if self.skip_through == 0 && !self.sink.resume_direct(sub).await {
            return Step::Close(write_failure(sub));
        }
        Step::Continue
    }

    /// Waits for the next thing to react to; the socket is the stream's again after it.
    pub(super) async fn wait(&mut self) -> Wake {
        let lent = self.sink.lent();
        if self.beats_by_hub && !lent {
            // The hub wrote them until now: the next is due an interval from here.
            self.heartbeat.reset();
        }
        self.beats_by_hub = lent;
        let signals = &mut self.signals;
        let sub = &self.subscription.sub;
        let wake = tokio::select! {
            biased;
            _ = signals.drain_rx.changed() => Wake::Drain,
            _ = signals.mode_rx.changed() => Wake::ModeChanged,
            _ = sub.notify.notified() => Wake::Frames,
            _ = signals.cfg_rx.changed() => Wake::ConfigChanged,
            _ = self.heartbeat.tick(), if !lent => Wake::Heartbeat,
            _ = self.recheck.as_mut() => Wake::Recheck,
            clean = self.sink.closed() => Wake::ClientGone(clean),
        };
        self.sink.pause_direct();
        wake
    }

    /// Reacts to what woke the stream.
    pub(super) async fn handle(&mut self, wake: Wake) -> Step {
        match wake {
            Wake::Drain => self.drain().await,
            Wake::ModeChanged => self.mode_changed().await,
            Wake::Frames => self.frames().await,
            Wake::ConfigChanged => self.config_changed().await.into(),
            Wake::Heartbeat => self.heartbeat().await.into(),
            Wake::Recheck => self.recheck().await.into(),
            // Two labels, neither against stream health (a client's reset says nothing about
            // the server; only write errors count, see `close`).
            Wake::ClientGone(true) => Step::Close(Close::ClientGone),
            Wake::ClientGone(false) => Step::Close(Close::ClientReset),
        }
    }

    /// Live frames: what the queue holds, in one write.
    async fn frames(&mut self) -> Step {
        self.coalesce().await;
        let step = match self.state.hub.drain(&self.subscription.sub) {
            Drained::Overflowed => {
                tracing::debug!(
                    subscriber = self.subscription.sub.id,
                    "slow consumer: queue overflowed, closing"
                );
                Step::Close(Close::SlowConsumer)
            }
            // A direct write found the connection reset: the client's doing.
            Drained::Gone => Step::Close(Close::ClientReset),
            Drained::Reset(reason, frames) => self.gap(reason, frames).await.into(),
            Drained::Frames(frames) => self.deliver(frames).await,
        };
        match step {
            Step::Continue => self.receipts().await,
            close => close,
        }
    }

    /// This browser's mutation receipts, in one write after the frames.
    async fn receipts(&mut self) -> Step {
        let receipts = self.subscription.sub.take_receipts();
        if receipts.is_empty() {
            return Step::Continue;
        }
        self.write(receipts.concat().into()).await.into()
    }

    /// Under pressure, frames arriving soon after a write wait for the window so that they
    /// leave together.
    async fn coalesce(&self) {
        let window = self.state.hub.coalesce_ms();
        if window > 0 {
            let since = now_ms().saturating_sub(self.subscription.sub.last_write_ms());
            if since < window {
                tokio::time::sleep(Duration::from_millis(window - since)).await;
            }
        }
    }

    /// Continuity was lost: `reset`, then the (later) frames queued behind the gap.
    async fn gap(
        &mut self,
        reason: ResetReason,
        mut frames: Vec<QueuedFrame>,
    ) -> Result<(), Close> {
        // The epoch may have changed with the gap (shared log).
        self.epoch = self.state.hub.epoch().to_string();
        let head = EventId::new(&self.epoch, self.state.hub.head()).to_string();
        if !self.send_reset(reason, &head).await {
            return Err(Close::WriteError);
        }
        if self.filter {
            frames.retain(|f| granted(f, &self.topics));
        }
        if frames.is_empty() {
            return Ok(());
        }
        self.write(concat(&frames)).await
    }

    /// Queued frames, less those already seen (`skip_through`) or revoked.
    async fn deliver(&mut self, mut frames: Vec<QueuedFrame>) -> Step {
        if self.skip_through > 0 {
            frames.retain(|f| f.seq() > self.skip_through);
            if frames.last().is_some() {
                self.skip_through = 0;
            }
        }
        if self.filter {
            frames.retain(|f| granted(f, &self.topics));
        }
        if frames.is_empty() {
            return Step::Continue;
        }
        let now = now_ms();
        for f in &frames {
            self.state
                .metrics
                .delivery_latency_seconds
                .observe(now.saturating_sub(f.ts_ms()) as f64 / 1000.0);
        }
        if !self.sink.send(concat(&frames)).await {
            return Step::Close(write_failure(&self.subscription.sub));
        }
        Step::Continue
    }

    /// A visible sign of life carrying the head.
    async fn heartbeat(&mut self) -> Result<(), Close> {
        let head = EventId::new(&self.epoch, self.state.hub.head()).to_string();
        self.write(Frame::Heartbeat { head: &head }.encode()).await
    }

    /// SSE switched off: `control {mode: "polling"}` and close. Off and on again while this
    /// stream was busy: what changed meanwhile was never recorded, so the client must
    /// refetch.
    async fn mode_changed(&mut self) -> Step {
        if let SseMode::Disabled { reason } = self.state.mode() {
            let frame = Frame::Control(Control::Polling { reason }).encode();
            let _ = self.sink.send(frame).await;
            return Step::Close(Close::KillSwitch);
        }
        let generation = self.state.off_generation();
        if generation == self.signals.off_generation {
            return Step::Continue;
        }
        self.signals.off_generation = generation;
        let head = EventId::new(&self.epoch, self.state.hub.head()).to_string();
        if !self.send_reset(ResetReason::SseWasOff, &head).await {
            return Step::Close(Close::WriteError);
        }
        Step::Continue
    }

    /// A reload: new rules, new event types, new polling families, each told to the client.
    async fn config_changed(&mut self) -> Result<(), Close> {
        let now = self.state.config();
        if now.version != self.signals.config_version {
            self.signals.config_version = now.version.clone();
            self.rules_changed(&now).await?;
        }
        self.types_changed(&now).await?;
        self.polling_changed().await
    }

    /// Topics no rule matches any more go at once; checked topics are asked again soon
    /// (the decision cache was emptied by the new version); presence topics the new
    /// `presence.topics` leaves out are left.
    async fn rules_changed(&mut self, now: &Config) -> Result<(), Close> {
        let gone: Vec<(String, DenyReason)> = self
            .topics
            .iter()
            .filter(|t| now.authorization.rule_for(t).is_none())
            .map(|t| (t.clone(), DenyReason::NoRule))
            .collect();
        self.revoke(gone).await?;
        // A topic no longer in `presence.topics` is left (new ones are joined on reconnect).
        self.presence.retain(|(t, _)| now.presence.tracks(t));
        if !crate::auth::checked_topics(&self.topics, &now.authorization).is_empty() {
            let soon =
                std::time::Instant::now() + Duration::from_millis(rand::random_range(0..=1000));
            self.recheck_at = Some(self.recheck_at.map_or(soon, |r| r.min(soon)));
            self.arm_recheck();
        }
        Ok(())
    }

    /// Browsers drop frames of event names they did not register: tell the client the new
    /// list (no reconnect storm for a config change).
    async fn types_changed(&mut self, now: &Config) -> Result<(), Close> {
        if now.type_names() == self.signals.types {
            return Ok(());
        }
        self.signals.types = now.type_names().iter().map(|t| t.to_string()).collect();
        let types = self.signals.types.clone();
        self.write(Frame::Control(Control::Types { types }).encode())
            .await
    }

    /// Families whose clients poll right now changed (rollout, breakers).
    async fn polling_changed(&mut self) -> Result<(), Close> {
        let now_polling = self.state.polling_families();
        if now_polling == self.last_polling {
            return Ok(());
        }
        let frame = Frame::Control(Control::PollingFamilies {
            families: now_polling.clone(),
        })
        .encode();
        self.last_polling = now_polling;
        self.write(frame).await
    }

    /// Asks again about the checked topics once their earliest decision expired.
    async fn recheck(&mut self) -> Result<(), Close> {
        let cfg = self.state.config();
        let checked = crate::auth::checked_topics(&self.topics, &cfg.authorization);
        let decisions = Box::pin(self.state.auth.decide_all(&cfg, &self.creds, &checked)).await;
        let (again, next) = Grants::from_decisions(&checked, decisions);
        self.recheck_at = next;
        self.arm_recheck();
        self.revoke(again.denied).await
    }

    /// Points the re-check timer at `recheck_at` (far away when nothing needs one).
    fn arm_recheck(&mut self) {
        self.recheck
            .as_mut()
            .reset(recheck_deadline(self.recheck_at));
    }

    /// Stops delivering revoked topics and tells the client with `control {revoked}`; the
    /// stream ends when nothing is left granted, or when the client cannot be written to.
    /// Nothing revoked: nothing happens.
    async fn revoke(&mut self, revoked: Vec<(String, DenyReason)>) -> Result<(), Close> {
        if revoked.is_empty() {
            return Ok(());
        }
        self.filter = true;
        // Boxed: a one-off phase (see `replay_or_reset`).
        let sent = Box::pin(self.withdraw(revoked)).await;
        match (self.topics.is_empty(), sent) {
            (true, _) => Err(Close::Revoked),
            (false, false) => Err(Close::WriteError),
            (false, true) => Ok(()),
        }
    }

    /// Takes the topics away from the subscriber and the stream, and sends
    /// `control {revoked}`; false when the client cannot be written to.
    async fn withdraw(&mut self, revoked: Vec<(String, DenyReason)>) -> bool {
        let names: Vec<String> = revoked.iter().map(|(t, _)| t.clone()).collect();
        self.state.hub.drop_topics(&self.subscription.sub, &names);
        self.topics.retain(|t| !names.contains(t));
        self.presence.retain(|(t, _)| !names.contains(t));
        self.state
            .metrics
            .auth_revoked_total
            .inc_by(names.len() as u64);
        let frame = Frame::Control(Control::Revoked {
            revoked: revoked
                .iter()
                .map(|(t, r)| (t.clone(), r.as_str()))
                .collect(),
            topics: self.topics.clone(),
        })
        .encode();
        self.sink.send(frame).await
    }

    /// The sidecar drains: a jittered `retry:` within the drain window and
    /// `control {mode: "reconnect"}`, then close.
    async fn drain(&mut self) -> Step {
        let cfg = self.state.config();
        let window = cfg.shutdown.drain_window.as_millis() as u64;
        let retry_ms = jittered_retry(cfg.sse.retry_min_ms, cfg.sse.retry_min_ms + window);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&Frame::Retry(retry_ms).encode());
        let reconnect = Control::Reconnect {
            reason: "draining",
            retry_ms,
        };
        buf.extend_from_slice(&Frame::Control(reconnect).encode());
        let _ = self.sink.send(buf.freeze()).await;
        Step::Close(Close::Draining)
    }

    /// Sends `reset`; false when the client cannot be written to.
    async fn send_reset(&mut self, reason: ResetReason, head: &str) -> bool {
        send_reset(self.state, &mut *self.sink, reason, head).await
    }

    /// One write; closes with `write_error` when the client cannot be written to.
    async fn write(&mut self, bytes: Bytes) -> Result<(), Close> {
        if self.sink.send(bytes).await {
            Ok(())
        } else {
            Err(Close::WriteError)
        }
    }

    /// Ends the stream: counts the close under its reason (a write error also against the
    /// client's stream health), unsubscribes, and ends the chunked body cleanly, unless
    /// writing is what failed: a client that cannot take a write is released at once, not
    /// after another write timeout.
    pub(super) async fn close(self, close: Close) {
        if close == Close::WriteError {
            self.state.controller.note_write_failure(self.client);
        }
        self.state
            .metrics
            .stream_closes_total
            .with_label_values(&[close.as_str()])
            .inc();
        let Session {
            subscription, sink, ..
        } = self;
        drop(subscription);
        if !matches!(close, Close::WriteError | Close::SlowConsumer) {
            sink.finish().await;
        }
    }
}

/// The re-check timer's deadline for `at`; far away when nothing needs one.
fn recheck_deadline(at: Option<std::time::Instant>) -> tokio::time::Instant {
    at.map(Into::into)
        .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86_400 * 365))
}

/// Frames as one write.
fn concat(frames: &[QueuedFrame]) -> Bytes {
    if let [one] = frames {
        return one.bytes().clone();
    }
    let mut buf = BytesMut::with_capacity(frames.iter().map(|f| f.bytes().len()).sum());
    for f in frames {
        buf.extend_from_slice(f.bytes());
    }
    buf.freeze()
}

/// Whether a queued frame carries one of the stream's (sorted) granted topics.
fn granted(f: &QueuedFrame, topics: &[String]) -> bool {
    f.stored
        .event
        .topics
        .iter()
        .any(|t| topics.binary_search(t).is_ok())
}

/// Why a stream whose write failed ends: a write that timed out while the queue overflowed
/// behind it is a slow consumer, not a network error.
fn write_failure(sub: &Subscriber) -> Close {
    if sub.overflowed() {
        Close::SlowConsumer
    } else {
        Close::WriteError
    }
}

/// Sends `reset`; false when the client cannot be written to.
async fn send_reset<S: Sink>(state: &State, sink: &mut S, reason: ResetReason, head: &str) -> bool {
    state
        .metrics
        .resets_total
        .with_label_values(&[reason.as_str()])
        .inc();
    sink.send(Frame::Reset { reason, head }.encode()).await
}

/// Sends the events of `scope` with `after < seq <= fanned`, or a reset when the log no
/// longer holds them; false when the client cannot be written to.
async fn replay<S: Sink>(
    state: &State,
    sink: &mut S,
    scope: Scope<'_>,
    after: u64,
    fanned: u64,
    head: &str,
) -> bool {
    let mut cursor = after;
    let mut buf = BytesMut::new();
    let mut sent = 0u64;
    while cursor < fanned {
        let want = (fanned - cursor).min(1024) as usize;
        let read = tokio::time::timeout(
            Duration::from_secs(5),
            state.hub.log().read_after(cursor, want),
        )
        .await;
        let events = match read {
            Ok(Ok(ReadAfter::Events(v))) => v,
            Ok(Ok(ReadAfter::Evicted { .. })) => {
                return send_reset(state, sink, ResetReason::Evicted, head).await;
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "replay read failed; sending reset");
                return send_reset(state, sink, ResetReason::StoreUnavailable, head).await;
            }
            Err(_) => return send_reset(state, sink, ResetReason::StoreTimeout, head).await,
        };
        if events.is_empty() {
            break;
        }
        for e in events {
            if e.seq > fanned {
                cursor = fanned;
                break;
            }
            cursor = e.seq;
            if scope.wants(&e.event) {
                buf.extend_from_slice(&e.frame);
                sent += 1;
                if buf.len() >= REPLAY_CHUNK_BYTES && !sink.send(buf.split().freeze()).await {
                    return false;
                }
            }
        }
    }
    state.metrics.replay_events_total.inc_by(sent);
    buf.is_empty() || sink.send(buf.freeze()).await
}

/// What a stream replays: events on its (sorted) topics of its tenant.
#[derive(Clone, Copy)]
struct Scope<'a> {
    topics: &'a [String],
    tenant: Option<&'a str>,
}

impl Scope<'_> {
    fn wants(&self, e: &crate::events::Event) -> bool {
        e.tenant.as_deref() == self.tenant
            && e.topics
                .iter()
                .any(|t| self.topics.binary_search(t).is_ok())
    }
}

#[cfg(test)]
#[allow(
    clippy::disallowed_methods,
    reason = "tests write their config files and fixtures"
)]
mod tests {
    use super::super::stream::{admit, authorize, run, StreamRequest};
    use super::*;
    use crate::hub::Hub;
    use crate::metrics::Metrics;
    use crate::reload::ReloadHandle;
    use crate::store::memory::MemoryLog;
    use tokio::time::{sleep, Instant};

    /// Two public topics and a 5 s heartbeat.
    const CONFIG: &str = "upstream: {address: \"127.0.0.1:1\"}
sse: {heartbeat_seconds: 5}
authorization:
  rules:
    - {topic: news, public: true}
    - {topic: sport, public: true}
";

    /// A state built the way `state`'s own tests build one (memory log), with its config in
    /// a file so that a test can reload another.
    struct Fixture {
        state: Arc<State>,
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new(config: &str) -> Fixture {
            let dir = tempfile::tempdir().expect("temp dir");
            std::fs::write(dir.path().join("sidecar.yaml"), config).expect("write config");
            let cfg = crate::config::parse_str(config).expect("valid");
            let metrics = Arc::new(Metrics::new());
            let log = Arc::new(MemoryLog::new(10, Duration::from_secs(60)));
            let hub = Hub::new(log, 16, metrics.clone());
            let reload = ReloadHandle::new(dir.path().join("sidecar.yaml"), cfg);
            let state = State::for_tests(reload, hub, metrics);
            Fixture { state, dir }
        }

        /// A stream request for `topics`, admitted and authorized.
        async fn admitted(&self, topics: &str) -> Admitted {
            let req = StreamRequest {
                query: format!("topics={topics}"),
                ..Default::default()
            };
            let admitted = admit(&self.state, None, &req).expect("admitted");
            authorize(&self.state, admitted, &req)
                .await
                .expect("authorized")
        }

        fn reload(&self, config: &str) {
            std::fs::write(self.dir.path().join("sidecar.yaml"), config).expect("write config");
            let outcome = self.state.reload_now("test");
            assert!(matches!(
                outcome,
                crate::reload::ReloadOutcome::Applied { .. }
            ));
        }

        fn closes(&self, reason: Close) -> u64 {
            let closes = &self.state.metrics.stream_closes_total;
            closes.with_label_values(&[reason.as_str()]).get()
        }

        fn head(&self) -> String {
            EventId::new(&self.state.hub.epoch(), self.state.hub.head()).to_string()
        }
    }

    /// A sink that records every write with its time since the response head.
    #[derive(Default)]
    struct Recorder {
        head_at: Option<Instant>,
        writes: Vec<(Duration, Bytes)>,
        finished: bool,
        /// Writes after this many fail (the client cannot be written to).
        fail_after: Option<usize>,
    }

    impl Recorder {
        fn text(&self, i: usize) -> String {
            String::from_utf8_lossy(&self.writes[i].1).into_owned()
        }
    }

    impl Sink for Recorder {
        async fn start(&mut self, _cors: Option<&str>) -> bool {
            self.head_at = Some(Instant::now());
            true
        }
        async fn send(&mut self, bytes: Bytes) -> bool {
            if self.fail_after.is_some_and(|n| self.writes.len() >= n) {
                return false;
            }
            let since = self.head_at.expect("the head comes first").elapsed();
            self.writes.push((since, bytes));
            true
        }
        async fn closed(&mut self) -> bool {
            std::future::pending().await
        }
        async fn finish(&mut self) {
            self.finished = true;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeats_come_at_the_configured_interval_when_no_event_does() {
        let f = Fixture::new(CONFIG);
        let mut sink = Recorder::default();
        let admitted = f.admitted("news").await;
        let stream = run(&f.state, Box::new(admitted), &mut sink);
        let open = tokio::time::timeout(Duration::from_millis(10_500), stream).await;
        assert!(open.is_err(), "nothing ends the stream");
        let preamble = sink.text(0);
        assert!(preamble.starts_with("retry: "), "{preamble}");
        assert!(preamble.contains("event: hello\n"), "{preamble}");
        let beat = format!("event: heartbeat\ndata: {{\"head\":\"{}\"}}\n\n", f.head());
        let beats: Vec<(Duration, String)> = (1..sink.writes.len())
            .map(|i| (sink.writes[i].0, sink.text(i)))
            .collect();
        assert_eq!(
            beats,
            vec![
                (Duration::from_secs(5), beat.clone()),
                (Duration::from_secs(10), beat)
            ]
        );
        assert!(!sink.finished);
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_gives_the_reconnect_control_then_closes_with_the_drain_reason() {
        let f = Fixture::new(CONFIG);
        let mut sink = Recorder::default();
        let admitted = f.admitted("news").await;
        let drain = async {
            sleep(Duration::from_secs(1)).await;
            f.state.start_drain();
        };
        tokio::join!(run(&f.state, Box::new(admitted), &mut sink), drain);
        assert_eq!(sink.writes.len(), 2, "the preamble, then the advice");
        assert_eq!(sink.writes[1].0, Duration::from_secs(1));
        let advice = sink.text(1);
        let (retry, control) = advice
            .strip_prefix("retry: ")
            .and_then(|a| a.split_once("\n\n"))
            .expect("a retry first");
        let retry_ms: u64 = retry.parse().expect("a number");
        let cfg = f.state.config();
        let window = cfg.shutdown.drain_window.as_millis() as u64;
        assert!((cfg.sse.retry_min_ms..=cfg.sse.retry_min_ms + window).contains(&retry_ms));
        assert_eq!(
            control,
            format!(
                "event: control\ndata: {{\"mode\":\"reconnect\",\"reason\":\"draining\",\
                 \"retry_ms\":{retry_ms}}}\n\n"
            )
        );
        assert!(sink.finished, "the body ends cleanly");
        assert_eq!(f.closes(Close::Draining), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn switching_sse_off_sends_the_client_to_polling_and_closes() {
        let f = Fixture::new(CONFIG);
        let mut sink = Recorder::default();
        let admitted = f.admitted("news").await;
        let off = async {
            sleep(Duration::from_secs(2)).await;
            f.state
                .controller
                .set_kill_switch(Some("admin: drill".into()));
        };
        tokio::join!(run(&f.state, Box::new(admitted), &mut sink), off);
        assert_eq!(sink.writes.len(), 2, "the preamble, then the control");
        assert_eq!(sink.writes[1].0, Duration::from_secs(2));
        assert_eq!(
            sink.text(1),
            "event: control\ndata: {\"mode\":\"polling\",\"reason\":\"admin: drill\"}\n\n"
        );
        assert!(sink.finished, "the body ends cleanly");
        assert_eq!(f.closes(Close::KillSwitch), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reload_revokes_topics_no_rule_matches_and_closes_once_none_is_left() {
        let f = Fixture::new(CONFIG);
        let mut sink = Recorder::default();
        let admitted = f.admitted("news,sport").await;
        let reloads = async {
            sleep(Duration::from_secs(1)).await;
            f.reload(&CONFIG.replace("sport", "weather"));
            sleep(Duration::from_secs(1)).await;
            f.reload(&CONFIG.replace("sport", "weather").replace("news", "tv"));
        };
        tokio::join!(run(&f.state, Box::new(admitted), &mut sink), reloads);
        let revoked = |topic: &str, left: &str| {
            format!(
                "event: control\ndata: {{\"reasons\":{{\"{topic}\":\"no_rule\"}},\
                 \"revoked\":[\"{topic}\"],\"topics\":[{left}]}}\n\n"
            )
        };
        assert_eq!(sink.writes.len(), 3, "the preamble, then two revocations");
        assert_eq!(sink.text(1), revoked("sport", "\"news\""));
        assert_eq!(sink.text(2), revoked("news", ""));
        assert_eq!(sink.writes[2].0, Duration::from_secs(2));
        assert!(sink.finished, "the body ends cleanly");
        assert_eq!(f.closes(Close::Revoked), 1);
        assert_eq!(f.state.metrics.auth_revoked_total.get(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn live_frames_of_granted_topics_reach_the_client_as_stored() {
        let f = Fixture::new(CONFIG);
        let (_stop, stopped) = watch::channel(false);
        tokio::spawn(f.state.hub.clone().run(stopped));
        let mut sink = Recorder::default();
        let admitted = f.admitted("news").await;
        let event = |topic: &str| crate::events::Event {
            id: String::new(),
            event_type: "story.published".into(),
            family: "stories".into(),
            topics: vec![topic.into()],
            ts: now_ms(),
            origin: Default::default(),
            data: serde_json::json!({ "id": 1 }),
            invalidate: vec![],
            tenant: None,
            conflict: None,
        };
        let publish = async {
            sleep(Duration::from_secs(1)).await;
            f.state.hub.publish(event("sport")).await.expect("stored");
            f.state.hub.publish(event("news")).await.expect("stored")
        };
        let stream = tokio::time::timeout(
            Duration::from_secs(2),
            run(&f.state, Box::new(admitted), &mut sink),
        );
        let (open, id) = tokio::join!(stream, publish);
        assert!(open.is_err(), "nothing ends the stream");
        let stored = f.state.hub.log().read_after(1, 1).await.expect("read");
        let ReadAfter::Events(stored) = stored else {
            panic!("evicted")
        };
        assert_eq!(stored[0].event.id, id);
        assert_eq!(
            sink.writes.len(),
            2,
            "the preamble, then the news event only"
        );
        assert_eq!(sink.writes[1].1, stored[0].frame);
        assert!(sink.text(1).contains(&format!("id: {id}\n")));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_write_closes_at_once_without_ending_the_body() {
        let f = Fixture::new(CONFIG);
        let mut sink = Recorder {
            fail_after: Some(1),
            ..Default::default()
        };
        let admitted = f.admitted("news").await;
        let closed = tokio::time::timeout(
            Duration::from_secs(6),
            run(&f.state, Box::new(admitted), &mut sink),
        )
        .await;
        assert!(
            closed.is_ok(),
            "the first heartbeat's failure ends the stream"
        );
        assert_eq!(sink.writes.len(), 1, "the preamble only");
        assert!(
            !sink.finished,
            "no last chunk for a client that takes no write"
        );
        assert_eq!(f.closes(Close::WriteError), 1);
    }

    #[test]
    fn close_reasons_are_the_metric_labels() {
        let all = [
            (Close::ClientGone, "client_gone"),
            (Close::ClientReset, "client_reset"),
            (Close::WriteError, "write_error"),
            (Close::SlowConsumer, "slow_consumer"),
            (Close::KillSwitch, "kill_switch"),
            (Close::Revoked, "revoked"),
            (Close::Draining, "draining"),
        ];
        for (close, label) in all {
            assert_eq!(close.as_str(), label);
        }
    }
}
