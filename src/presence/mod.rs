//! Presence: who is on a topic, from the streams themselves. This engine owns, per presence
//! topic, its members (an identified subscriber counts once, with its number of streams;
//! anonymous streams are only counted), the streams that watch it, and what changed since
//! they were last told; it sends `presence` frames (`crate::wire::PresenceUpdate`), at most
//! one per topic per `presence.debounce_ms`, and announces a member as left only after
//! `presence.leave_grace_ms` without any of its streams (a reload or a reconnect does not
//! flap). The state machine (`Topics`) takes `now`; `run` is its clock.
//!
//! Streams join through [`Presence::join`] (the edge calls it for each granted presence
//! topic, with the identity `crate::auth` found) and leave when the [`Membership`] drops.
//! Members on other instances (a shared store) come in through [`Presence::set_remote`] and
//! go with [`Presence::forget_instance`]; [`share`] carries them through Redis, woken by
//! [`Presence::local_changed`] when a stream of this instance joins or leaves.
//!
//! Bounded: members per topic (past it, streams count as anonymous), topics tracked (past
//! it, a stream joins none of the new ones), fields per member (bytes), listed members per
//! frame (`max_listed`).

pub mod share;
mod topics;

use crate::config::presence::Presence as Settings;
use crate::metrics::Metrics;
use crate::wire::{Frame, PresenceSnapshot};
use bytes::Bytes;
use std::sync::{Arc, Mutex};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
pub use topics::Contribution;
use topics::Topics;

/// Who a subscriber is, as the identity request said: the member id and its public fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub id: String,
    /// The public fields (bounded by `presence.max_field_bytes`).
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// Where a topic's frames go for one stream: queues the encoded frame for the stream's task
/// and says whether the stream is still there.
pub type Watcher = Arc<dyn Fn(&Bytes) -> bool + Send + Sync>;

/// The presence engine (see the module header).
pub struct Presence {
    topics: Mutex<Topics>,
    /// Woken when something changed, so `run` reconsiders its next deadline.
    wake: Notify,
    /// Woken when a stream of this instance joined or left (what `local` says changed).
    local_changed: Notify,
    metrics: Arc<Metrics>,
}

/// One stream's membership of one topic; leaving is dropping it.
pub struct Membership {
    engine: Arc<Presence>,
    key: String,
    member: Option<String>,
    watcher: u64,
    /// The debounce the join was made under (the leave's frame waits as long).
    debounce: std::time::Duration,
}

impl Drop for Membership {
    fn drop(&mut self) {
        let who = (self.member.as_deref(), self.watcher);
        self.engine.leave(self.debounce, &self.key, who);
    }
}

impl Membership {
    /// The member id this stream joined as (none: anonymous).
    pub fn member(&self) -> Option<&str> {
        self.member.as_deref()
    }
}

impl Presence {
    pub fn new(metrics: Arc<Metrics>) -> Arc<Presence> {
        Arc::new(Presence {
            topics: Mutex::new(Topics::default()),
            wake: Notify::new(),
            local_changed: Notify::new(),
            metrics,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Topics> {
        self.topics.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Joins a stream to `topic` (`key`: the topic scoped by tenant) as `who` (anonymous
    /// when none), watching it through `watcher`. Returns the membership and the topic's
    /// snapshot as the stream's `hello` shows it; none when `max_topics` topics are tracked
    /// already. Frames computed after this reach the watcher; none computed before.
    pub fn join(
        self: &Arc<Self>,
        settings: &Settings,
        (key, topic): (&str, &str),
        who: Option<&Identity>,
        watcher: Watcher,
    ) -> Option<(Membership, PresenceSnapshot)> {
        let now = Instant::now();
        let mut topics = self.lock();
        let joined = topics.join(settings, (key, topic), who, watcher, now)?;
        let snapshot = topics.snapshot(key, settings.max_listed);
        self.count(&topics);
        drop(topics);
        self.wake.notify_one();
        self.local_changed.notify_one();
        Some((
            Membership {
                engine: self.clone(),
                key: key.to_owned(),
                member: joined.member,
                watcher: joined.watcher,
                debounce: settings.debounce,
            },
            snapshot,
        ))
    }

    fn leave(&self, debounce: std::time::Duration, key: &str, who: (Option<&str>, u64)) {
        let mut topics = self.lock();
        topics.leave(debounce, key, who, Instant::now());
        drop(topics);
        self.wake.notify_one();
        self.local_changed.notify_one();
    }

    /// The topic's members now (the `GET /api/sse/presence` answer); an empty snapshot for a
    /// topic nobody is on.
    pub fn snapshot(&self, key: &str, max_listed: usize) -> PresenceSnapshot {
        self.lock().snapshot(key, max_listed)
    }

    /// Another instance's members of `topic` (replacing what it said before).
    pub fn set_remote(&self, settings: &Settings, instance: &str, remote: Contribution) {
        let mut topics = self.lock();
        topics.set_remote(settings, instance, remote, Instant::now());
        self.count(&topics);
        drop(topics);
        self.wake.notify_one();
    }

    /// Forgets every member another instance contributed (it is gone); their leaves are
    /// announced after the grace.
    pub fn forget_instance(&self, instance: &str) {
        let mut topics = self.lock();
        topics.forget_instance(instance, Instant::now());
        drop(topics);
        self.wake.notify_one();
    }

    /// What this instance contributes to every topic (what `share` publishes).
    pub fn local(&self) -> Vec<Contribution> {
        self.lock().local()
    }

    /// Resolves once a stream of this instance joined or left since the last call returned
    /// (changes while nobody waits are kept as one: nothing is missed, storms coalesce).
    pub async fn local_changed(&self) {
        self.local_changed.notified().await
    }

    fn count(&self, topics: &Topics) {
        let (t, m) = topics.sizes();
        self.metrics.presence_topics.set(t as i64);
        self.metrics.presence_members.set(m as i64);
    }

    /// Sends what is due at `now`; the next deadline, if any.
    fn flush(&self, settings: &Settings, now: Instant) -> Option<Instant> {
        let mut topics = self.lock();
        let due = topics.due(settings, now);
        self.count(&topics);
        let next = topics.next_deadline();
        drop(topics);
        for (update, watchers) in due {
            let frame = Frame::Presence(&update).encode();
            let sent = watchers.iter().filter(|w| w(&frame)).count();
            self.metrics.presence_frames_total.inc_by(sent as u64);
        }
        next
    }

    /// The clock: sends each topic's frame when it is due, until shutdown. `settings` gives
    /// the current `presence` section (it follows reloads).
    pub async fn run(
        self: Arc<Self>,
        settings: impl Fn() -> Arc<crate::config::Config> + Send,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let cfg = settings();
            let next = self.flush(&cfg.presence, Instant::now());
            drop(cfg);
            let wait = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = wait => {}
                r = shutdown.changed() => {
                    if r.is_err() || *shutdown.borrow() {
                        return;
                    }
                }
            }
        }
    }
}
