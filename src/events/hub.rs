//! The hub: one sequencer task takes published events from a bounded queue, appends them to
//! the log in batches (which assigns ids in order), then fans each stored frame out to the
//! subscribers of its topics. A frame is encoded once and shared (`Bytes`) by every
//! subscriber. Each subscriber has its own queue bounded in bytes; overflowing it marks the
//! subscriber as a slow consumer, whose stream then closes so the client resumes from its
//! last id: nothing is dropped silently.
//!
//! Replay-then-live without gaps or duplicates: `subscribe` registers under the registry's
//! write lock and returns the sequence number fanned out last; fan-out holds the read lock
//! for a whole batch, so every event after that number reaches the new queue and every event
//! up to it is in the log for replay.

use crate::events::Event;
use crate::metrics::Metrics;
use crate::store::{EventLog, StoredEvent};
use bytes::Bytes;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::{mpsc, oneshot, watch, Notify};

/// A callback for every event a shared log's feed brings.
pub type FeedHook = Box<dyn Fn(&StoredEvent) + Send + Sync>;

/// Most events the sequencer appends in one batch.
const MAX_BATCH: usize = 512;

/// A frame waiting in a subscriber's queue.
/// (The stored event itself, shared: its frame, its topics for filtering after a
/// revocation, and its derivation time for the latency histogram.)
pub struct QueuedFrame {
    pub stored: Arc<StoredEvent>,
}

impl QueuedFrame {
    pub fn bytes(&self) -> &Bytes {
        &self.stored.frame
    }
    /// When the event was derived (ms since the Unix epoch).
    pub fn ts_ms(&self) -> u64 {
        self.stored.event.ts
    }
    pub fn seq(&self) -> u64 {
        self.stored.seq
    }
}

#[derive(Default)]
struct SubQueue {
    frames: VecDeque<QueuedFrame>,
    bytes: usize,
    overflowed: bool,
    /// The shared log lost continuity since the last drain: the stream owes a `reset`.
    gap: Option<&'static str>,
}

/// One open stream's mailbox.
pub struct Subscriber {
    pub id: u64,
    /// The topics it is registered under (fewer after a revocation).
    topics: Mutex<Vec<String>>,
    max_bytes: usize,
    queue: Mutex<SubQueue>,
    pub notify: Notify,
    closed: AtomicBool,
}

/// What a stream takes from its queue.
pub enum Drained {
    Frames(Vec<QueuedFrame>),
    Overflowed,
    /// Continuity was lost: send a `reset` with this reason, then these (later) frames.
    Reset(&'static str, Vec<QueuedFrame>),
}

impl Subscriber {
    fn push(
        &self,
        stored: &Arc<StoredEvent>,
        global_bytes: &AtomicUsize,
        fair_share: Option<usize>,
    ) -> bool {
        let len = stored.frame.len();
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if q.overflowed {
            return false;
        }
        let over_share = fair_share.is_some_and(|share| q.bytes + len > share);
        if q.bytes + len > self.max_bytes || over_share {
            q.overflowed = true;
            global_bytes.fetch_sub(q.bytes, Ordering::Relaxed);
            q.bytes = 0;
            q.frames = VecDeque::new();
        } else {
            q.bytes += len;
            global_bytes.fetch_add(len, Ordering::Relaxed);
            q.frames.push_back(QueuedFrame {
                stored: stored.clone(),
            });
        }
        drop(q);
        self.notify.notify_one();
        true
    }

    /// Whether this subscriber's queue overflowed (a slow consumer).
    pub fn overflowed(&self) -> bool {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .overflowed
    }

    /// Takes everything queued.
    pub fn drain(&self, global_bytes: &AtomicUsize) -> Drained {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if q.overflowed {
            return Drained::Overflowed;
        }
        global_bytes.fetch_sub(q.bytes, Ordering::Relaxed);
        q.bytes = 0;
        let frames = std::mem::take(&mut q.frames).into();
        match q.gap.take() {
            Some(reason) => Drained::Reset(reason, frames),
            None => Drained::Frames(frames),
        }
    }

    /// Marks a gap: what is queued is dropped (the client refetches anyway) and the next
    /// drain returns `Reset`.
    fn mark_gap(&self, reason: &'static str, global_bytes: &AtomicUsize) {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        global_bytes.fetch_sub(q.bytes, Ordering::Relaxed);
        q.bytes = 0;
        q.frames.clear();
        q.gap = Some(reason);
        drop(q);
        self.notify.notify_one();
    }
}

#[derive(Default)]
struct Registry {
    by_topic: HashMap<String, Vec<Arc<Subscriber>>>,
    count: usize,
}

/// Why a publish failed.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("the hub's queue is full")]
    Full,
    #[error("the hub is shut down")]
    Closed,
    #[error("{0}")]
    Store(String),
}

struct Publish {
    event: Event,
    done: Option<oneshot::Sender<Result<String, HubError>>>,
}

pub struct Hub {
    log: Arc<dyn EventLog>,
    tx: mpsc::Sender<Publish>,
    rx: Mutex<Option<mpsc::Receiver<Publish>>>,
    registry: RwLock<Registry>,
    fanned: AtomicU64,
    /// The log is shared with other instances: fan-out follows its feed.
    shared: AtomicBool,
    /// See `loss_floor()`.
    loss_floor: AtomicU64,
    feed_hook: std::sync::OnceLock<FeedHook>,
    next_sub: AtomicU64,
    /// Bytes queued across all subscribers.
    pub queued_bytes: AtomicUsize,
    /// Bound on `queued_bytes`: past it, queues holding more than their fair share are shed
    /// (slowest first), their clients resume from their last id.
    pub queued_limit: AtomicUsize,
    /// Highest `queued_bytes` seen since the memory breaker last sampled it.
    pub peak_queued: AtomicUsize,
    metrics: Arc<Metrics>,
    /// Head sequence, published for streams and status (changes after each batch).
    head_tx: watch::Sender<u64>,
}

/// Removes its subscriber from the hub when the stream ends, however it ends.
pub struct Subscription {
    hub: Arc<Hub>,
    pub sub: Arc<Subscriber>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.sub.closed.store(true, Ordering::Relaxed);
        self.hub.unsubscribe(&self.sub);
        let _ = self.sub.drain(&self.hub.queued_bytes);
    }
}

impl Hub {
    pub fn new(log: Arc<dyn EventLog>, queue_capacity: usize, metrics: Arc<Metrics>) -> Arc<Hub> {
        let (tx, rx) = mpsc::channel(queue_capacity.max(1));
        let head = log.head();
        Arc::new(Hub {
            fanned: AtomicU64::new(head),
            shared: AtomicBool::new(false),
            loss_floor: AtomicU64::new(0),
            feed_hook: std::sync::OnceLock::new(),
            log,
            tx,
            rx: Mutex::new(Some(rx)),
            registry: RwLock::new(Registry::default()),
            next_sub: AtomicU64::new(1),
            queued_bytes: AtomicUsize::new(0),
            queued_limit: AtomicUsize::new(usize::MAX),
            peak_queued: AtomicUsize::new(0),
            metrics,
            head_tx: watch::channel(head).0,
        })
    }

    pub fn log(&self) -> &Arc<dyn EventLog> {
        &self.log
    }

    pub fn epoch(&self) -> Arc<str> {
        self.log.epoch()
    }

    /// The last sequence number fanned out.
    pub fn head(&self) -> u64 {
        self.fanned.load(Ordering::Acquire)
    }

    pub fn subscriber_count(&self) -> usize {
        self.registry
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .count
    }

    /// Queues an event without waiting. `done` receives its id once stored.
    pub fn try_publish(
        &self,
        event: Event,
        done: Option<oneshot::Sender<Result<String, HubError>>>,
    ) -> Result<(), HubError> {
        self.tx
            .try_send(Publish { event, done })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(p) => {
                    // Dropped: its subscribers must not stay silently stale.
                    self.lost(&p.event.topics.iter().cloned().collect());
                    HubError::Full
                }
                mpsc::error::TrySendError::Closed(_) => HubError::Closed,
            })
    }

    /// Publishes and waits until the event is stored and fanned out; returns its id.
    pub async fn publish(&self, event: Event) -> Result<String, HubError> {
        let (tx, rx) = oneshot::channel();
        self.try_publish(event, Some(tx))?;
        rx.await.map_err(|_| HubError::Closed)?
    }

    /// Registers a subscriber for `topics`; returns it with the last sequence already fanned
    /// out (replay covers up to it, the queue everything after).
    pub fn subscribe(
        self: &Arc<Self>,
        topics: Vec<String>,
        max_queue_bytes: usize,
    ) -> (Subscription, u64) {
        let sub = Arc::new(Subscriber {
            id: self.next_sub.fetch_add(1, Ordering::Relaxed),
            topics: Mutex::new(topics.clone()),
            max_bytes: max_queue_bytes,
            queue: Mutex::new(SubQueue::default()),
            notify: Notify::new(),
            closed: AtomicBool::new(false),
        });
        let mut reg = self.registry.write().unwrap_or_else(|e| e.into_inner());
        for t in &topics {
            reg.by_topic.entry(t.clone()).or_default().push(sub.clone());
        }
        reg.count += 1;
        let fanned = self.fanned.load(Ordering::Acquire);
        drop(reg);
        (
            Subscription {
                hub: self.clone(),
                sub,
            },
            fanned,
        )
    }

    fn unsubscribe(&self, sub: &Arc<Subscriber>) {
        let mut reg = self.registry.write().unwrap_or_else(|e| e.into_inner());
        let topics = std::mem::take(&mut *sub.topics.lock().unwrap_or_else(|e| e.into_inner()));
        Self::remove_from(&mut reg, sub, &topics);
        reg.count = reg.count.saturating_sub(1);
    }

    /// Stops routing `topics` to this subscriber (a revocation); events already queued are
    /// filtered by the stream itself.
    pub fn drop_topics(&self, sub: &Arc<Subscriber>, topics: &[String]) {
        let mut reg = self.registry.write().unwrap_or_else(|e| e.into_inner());
        sub.topics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|t| !topics.contains(t));
        Self::remove_from(&mut reg, sub, topics);
    }

    fn remove_from(reg: &mut Registry, sub: &Arc<Subscriber>, topics: &[String]) {
        for t in topics {
            if let Some(list) = reg.by_topic.get_mut(t) {
                list.retain(|s| s.id != sub.id);
                if list.is_empty() {
                    reg.by_topic.remove(t);
                }
            }
        }
    }

    /// A receiver that changes whenever the head moves.
    pub fn watch_head(&self) -> watch::Receiver<u64> {
        self.head_tx.subscribe()
    }

    /// The sequencer: runs until `shutdown` turns true and the queue is drained.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let rx = self.rx.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(mut rx) = rx else {
            tracing::error!("hub sequencer started twice");
            return;
        };
        if let Some(feed) = self.log.take_feed() {
            self.shared.store(true, Ordering::Release);
            tokio::spawn(self.clone().follow(feed, shutdown.clone()));
        }
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            let first = tokio::select! {
                m = rx.recv() => m,
                _ = shutdown.changed() => {
                    if *shutdown.borrow() { rx.close(); }
                    continue;
                }
            };
            let Some(first) = first else { break };
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
            self.process(&mut batch).await;
        }
    }

    /// Fans out a shared log's feed (every instance's events, in log order).
    async fn follow(
        self: Arc<Self>,
        mut feed: mpsc::Receiver<crate::store::Feed>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let item = tokio::select! {
                f = feed.recv() => f,
                _ = shutdown.changed() => {
                    if *shutdown.borrow() { return; }
                    continue;
                }
            };
            match item {
                None => return,
                Some(crate::store::Feed::Events(events)) => {
                    if let Some(hook) = self.feed_hook.get() {
                        events.iter().for_each(|e| hook(e));
                    }
                    self.fan_out(&events)
                }
                Some(crate::store::Feed::Gap { head, reason }) => self.gap(head, reason),
            }
        }
    }

    /// Continuity lost: every subscriber owes its client a `reset`.
    fn gap(&self, head: u64, reason: &'static str) {
        let reg = self.registry.write().unwrap_or_else(|e| e.into_inner());
        self.fanned.store(head, Ordering::Release);
        let streams = self.mark_gaps(reg.by_topic.values(), reason);
        drop(reg);
        tracing::warn!(reason, streams, "every stream gets a reset");
        self.head_tx.send_replace(head);
    }

    /// Events on `topics` could not be stored: their subscribers get a `reset` now, and
    /// ids issued before the loss can no longer be resumed (`events_lost`).
    fn lost(&self, topics: &HashSet<String>) {
        self.loss_floor
            .fetch_max(self.fanned.load(Ordering::Acquire) + 1, Ordering::AcqRel);
        let reg = self.registry.read().unwrap_or_else(|e| e.into_inner());
        self.mark_gaps(
            topics.iter().filter_map(|t| reg.by_topic.get(t)),
            "events_lost",
        );
    }

    /// Marks a gap once on every subscriber of these lists; returns how many.
    fn mark_gaps<'a>(
        &self,
        lists: impl Iterator<Item = &'a Vec<Arc<Subscriber>>>,
        reason: &'static str,
    ) -> usize {
        let mut seen = HashSet::new();
        for sub in lists.flatten() {
            if seen.insert(sub.id) {
                sub.mark_gap(reason, &self.queued_bytes);
            }
        }
        seen.len()
    }

    /// Called for every event of a shared log's feed before it fans out.
    pub fn set_feed_hook(&self, hook: FeedHook) {
        let _ = self.feed_hook.set(hook);
    }

    /// Whether the log is shared with other instances (fan-out follows its feed).
    pub fn is_shared(&self) -> bool {
        self.shared.load(Ordering::Acquire)
    }

    /// Ids with a lower sequence number were issued before events were lost.
    pub fn loss_floor(&self) -> u64 {
        self.loss_floor.load(Ordering::Acquire)
    }

    async fn process(&self, batch: &mut Vec<Publish>) {
        let (events, dones): (Vec<Event>, Vec<_>) =
            batch.drain(..).map(|p| (p.event, p.done)).unzip();
        let families: Vec<String> = events.iter().map(|e| e.family.clone()).collect();
        let topics: HashSet<String> = events
            .iter()
            .flat_map(|e| e.topics.iter().cloned())
            .collect();
        let started = std::time::Instant::now();
        let result = self.log.append(events).await;
        self.metrics
            .store_commit_seconds
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(stored) => {
                self.metrics.store_appends_total.inc_by(stored.len() as u64);
                // A shared log fans out from its feed, in the order all instances agree on.
                if !self.shared.load(Ordering::Acquire) {
                    self.fan_out(&stored);
                }
                for (s, done) in stored.iter().zip(dones) {
                    if let Some(done) = done {
                        let _ = done.send(Ok(s.event.id.clone()));
                    }
                }
            }
            Err(e) => {
                self.metrics.store_errors_total.inc();
                tracing::error!(error = %e, events = families.len(), "event log append failed");
                self.lost(&topics);
                for (family, done) in families.iter().zip(dones) {
                    self.metrics
                        .events_rejected_total
                        .with_label_values(&[family.as_str(), "store_error"])
                        .inc();
                    if let Some(done) = done {
                        let _ = done.send(Err(HubError::Store(e.to_string())));
                    }
                }
            }
        }
    }

    fn fan_out(&self, stored: &[Arc<StoredEvent>]) {
        let reg = self.registry.read().unwrap_or_else(|e| e.into_inner());
        let mut seen = HashSet::new();
        let limit = self.queued_limit.load(Ordering::Relaxed);
        for s in stored {
            // Over the global bound, only queues within their fair share may grow.
            let fair_share = (self.queued_bytes.load(Ordering::Relaxed) + s.frame.len() > limit)
                .then(|| limit / reg.count.max(1));
            let mut delivered = 0u64;
            if s.event.topics.len() == 1 {
                if let Some(subs) = reg.by_topic.get(&s.event.topics[0]) {
                    for sub in subs {
                        delivered += sub.push(s, &self.queued_bytes, fair_share) as u64;
                    }
                }
            } else {
                seen.clear();
                for t in &s.event.topics {
                    if let Some(subs) = reg.by_topic.get(t) {
                        for sub in subs {
                            if seen.insert(sub.id) {
                                delivered += sub.push(s, &self.queued_bytes, fair_share) as u64;
                            }
                        }
                    }
                }
            }
            self.fanned.store(s.seq, Ordering::Release);
            self.peak_queued
                .fetch_max(self.queued_bytes.load(Ordering::Relaxed), Ordering::Relaxed);
            self.metrics
                .events_published_total
                .with_label_values(&[s.event.family.as_str()])
                .inc();
            if delivered > 0 {
                self.metrics
                    .events_delivered_total
                    .with_label_values(&[s.event.family.as_str(), s.event.event_type.as_str()])
                    .inc_by(delivered);
            }
        }
        drop(reg);
        self.metrics
            .queued_bytes
            .set(self.queued_bytes.load(Ordering::Relaxed) as i64);
        if let Some(last) = stored.last() {
            self.head_tx.send_replace(last.seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryLog;
    use std::time::Duration;

    fn ev(topics: &[&str]) -> Event {
        Event {
            id: String::new(),
            event_type: "t".into(),
            family: "f".into(),
            topics: topics.iter().map(|s| s.to_string()).collect(),
            ts: crate::events::types::now_ms(),
            origin: Default::default(),
            data: serde_json::json!({}),
            invalidate: vec![],
        }
    }

    fn seqs(d: Drained) -> Vec<u64> {
        match d {
            Drained::Frames(f) => f.iter().map(|f| f.seq()).collect(),
            Drained::Overflowed => panic!("overflowed"),
            Drained::Reset(r, _) => panic!("reset {r}"),
        }
    }

    #[tokio::test]
    async fn fans_out_by_topic_once_per_subscriber() {
        let log = Arc::new(MemoryLog::new(100, Duration::from_secs(60)));
        let hub = Hub::new(log, 16, Arc::new(Metrics::new()));
        let (_stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(hub.clone().run(stop_rx));
        let (a, at) = hub.subscribe(vec!["x".into(), "y".into()], 1 << 20);
        let (b, _) = hub.subscribe(vec!["y".into()], 1 << 20);
        assert_eq!(at, 0);
        hub.publish(ev(&["x", "y"])).await.expect("publish");
        hub.publish(ev(&["z"])).await.expect("publish");
        let id = hub.publish(ev(&["y"])).await.expect("publish");
        assert!(id.ends_with("-3"));
        assert_eq!(seqs(a.sub.drain(&hub.queued_bytes)), vec![1, 3]);
        assert_eq!(seqs(b.sub.drain(&hub.queued_bytes)), vec![1, 3]);
        assert_eq!(hub.subscriber_count(), 2);
        drop(a);
        assert_eq!(hub.subscriber_count(), 1);
        assert_eq!(hub.queued_bytes.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_full_queue_marks_a_slow_consumer() {
        let log = Arc::new(MemoryLog::new(100, Duration::from_secs(60)));
        let hub = Hub::new(log, 16, Arc::new(Metrics::new()));
        let (_stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(hub.clone().run(stop_rx));
        let (slow, _) = hub.subscribe(vec!["x".into()], 200);
        for _ in 0..5 {
            hub.publish(ev(&["x"])).await.expect("publish");
        }
        assert!(matches!(
            slow.sub.drain(&hub.queued_bytes),
            Drained::Overflowed
        ));
        assert_eq!(hub.queued_bytes.load(Ordering::Relaxed), 0);
    }
}
