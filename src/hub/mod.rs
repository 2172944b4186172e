//! The hub: one sequencer task takes published events from a bounded queue, appends them to
//! the log in batches (which assigns ids in order), then fans each stored frame out to the
//! subscribers of its topics (of its tenant, under `upstream.tenancy: host`: the registry is
//! keyed by `scoped_topic(tenant, topic)`). A frame is encoded once and shared (`Bytes`) by every
//! subscriber. Each subscriber has its own queue bounded in bytes; overflowing it marks the
//! subscriber as a slow consumer, whose stream then closes so the client resumes from its
//! last id: nothing is dropped silently.
//!
//! Replay-then-live without gaps or duplicates: `subscribe` registers under the registry's
//! write lock and returns the sequence number fanned out last; fan-out takes an event's
//! subscribers and advances that number under the read lock, so every event after it reaches
//! the new queue and every event up to it is in the log for replay.
//!
//! Direct writes: a stream whose queue is empty and whose task is only waiting lends its
//! socket to the fan-out (`Subscriber::enable_direct`), which then writes the event's chunk
//! itself with one non-blocking `send` (`crate::sys`, behind `DirectWrite`) — no task wake-up, no queue, no second copy. Anything
//! short of a whole write (a full socket buffer, a write inside the coalescing window) hands
//! the stream back to its task through the queue; the task takes direct mode back before it
//! writes anything itself, so the two never interleave on the socket.
//!
//! Heartbeats of idle streams are the hub's too: every quarter interval (at most every
//! `HEARTBEAT_SWEEP`) it writes one heartbeat chunk, encoded once, to each lent socket that
//! would otherwise go a heartbeat interval without a write before the next sweep
//! (`sweep_heartbeats`), so an idle stream's task is not woken between events at all.
//! A socket that cannot take it now gets it through the task (as a side frame), which writes
//! it with its write timeout.

pub mod receipts;
pub mod versions;

use crate::events::types::scoped_topic;
use crate::events::Event;
use crate::metrics::Metrics;
use crate::store::{EventLog, StoredEvent};
use crate::sys::{DirectWrite, LentSocket};
use crate::wire::{Frame, Receipt, ResetReason};
use bytes::Bytes;
use receipts::Ticket;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch, Notify};

/// A callback for every event a shared log's feed brings.
pub type FeedHook = Box<dyn Fn(&StoredEvent) + Send + Sync>;

/// Called when continuity is lost (a gap in a shared log, events that could not be stored):
/// whatever vouches for "nothing changed" (the poll shield) must stop vouching.
pub type GapHook = Box<dyn Fn() + Send + Sync>;

/// Most events the sequencer appends in one batch.
const MAX_BATCH: usize = 512;

/// Most events one fan-out takes: what the coalescing window holds back, or what a shared
/// log's feed has piled up, is bounded by this.
const MAX_FAN_OUT: usize = MAX_BATCH * 8;

/// From this many subscribers of one event on, its fan-out runs on two threads.
const PARALLEL_FAN_OUT: usize = 2048;

/// How often the hub writes the heartbeats that are due to lent sockets, at most: for a
/// heartbeat interval under 4 s it sweeps four times per interval.
const HEARTBEAT_SWEEP: Duration = Duration::from_secs(1);

/// Most receipts one stream holds unwritten; past it the stream is a slow consumer.
const MAX_QUEUED_RECEIPTS: usize = 256;

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
    gap: Option<ResetReason>,
    /// Direct mode: the stream's socket, lent to the fan-out while nothing is queued.
    direct: Option<LentSocket>,
    /// The unwritten rest of a direct write cut short; the stream writes it before anything.
    rest: Option<Bytes>,
    /// Receipt and presence frames for the stream's task to write (never written
    /// directly).
    receipts: Vec<Bytes>,
    /// A direct write found the client gone (reset): the stream ends on its next drain
    /// instead of lending the socket again.
    gone: bool,
}

/// What one non-blocking write to a lent socket did (`SubQueue::send_lent`).
enum Sent {
    /// All of it: the socket stays lent.
    Whole,
    /// Part of it: the rest is the task's to write first (`rest`).
    Part,
    /// Nothing (a full socket buffer): the task takes over.
    Nothing,
    /// The client is gone (`gone`): its task ends the stream at its next drain.
    Gone,
}

impl SubQueue {
    /// Writes `chunk` to the lent socket `fd` without waiting, and records the outcome: the
    /// socket lent again, the unwritten rest, or the client gone.
    fn send_lent(&mut self, fd: LentSocket, chunk: &Bytes) -> Sent {
        match fd.send_now(chunk) {
            Ok(n) if n == chunk.len() => {
                self.direct = Some(fd);
                Sent::Whole
            }
            Ok(n) if n > 0 => {
                self.rest = Some(chunk.slice(n..));
                Sent::Part
            }
            Ok(_) => Sent::Nothing,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Sent::Nothing,
            Err(_) => {
                self.gone = true;
                Sent::Gone
            }
        }
    }
}

/// What became of one event for one subscriber.
#[derive(Debug, PartialEq, Eq)]
enum Delivery {
    /// Written to the socket by the fan-out, at this time (ms since the Unix epoch).
    Direct(u64),
    /// Queued for the stream's task.
    Queued,
    /// Not delivered: the queue overflowed (the stream closes) or the socket failed.
    Dropped,
}

/// One open stream's mailbox.
pub struct Subscriber {
    pub id: u64,
    /// The topics it is registered under (fewer after a revocation).
    topics: Mutex<Vec<String>>,
    /// Its tenant (`upstream.tenancy: host`): it gets only events of this tenant.
    tenant: Option<String>,
    max_bytes: usize,
    queue: Mutex<SubQueue>,
    pub notify: Notify,
    /// Set (under the queue lock) when the stream ends: nothing is queued after that.
    closed: AtomicBool,
    /// Set when topics were dropped (a revocation): deliveries then check the current topics,
    /// since a fan-out may have listed this subscriber before the drop.
    narrowed: AtomicBool,
    /// Its receipt routing key (`receipts::stream_key`), once registered.
    client_key: std::sync::OnceLock<String>,
    /// When bytes last went to this stream (ms since the Unix epoch), for coalescing and
    /// heartbeats; read without the queue's lock by the heartbeat sweep.
    last_write_ms: AtomicU64,
}

/// What a stream takes from its queue.
pub enum Drained {
    Frames(Vec<QueuedFrame>),
    Overflowed,
    /// A direct write found the client gone: the stream ends (`client_reset`).
    Gone,
    /// Continuity was lost: send a `reset` with this reason, then these (later) frames.
    Reset(ResetReason, Vec<QueuedFrame>),
}

impl Subscriber {
    /// Delivers a run of events (`chunk` holds their frames): written straight to the socket
    /// in direct mode (unless this stream wrote within the coalescing window `window_ms`),
    /// otherwise queued for the task.
    fn deliver(
        &self,
        group: &[Arc<StoredEvent>],
        chunk: &Bytes,
        global_bytes: &AtomicUsize,
        fair_share: Option<usize>,
        window_ms: u64,
    ) -> Delivery {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if q.overflowed || self.closed.load(Ordering::Relaxed) || !self.still_wants(group) {
            return Delivery::Dropped;
        }
        if let Some(fd) = q.direct.take() {
            let now = crate::events::types::now_ms();
            if window_ms == 0
                || now.saturating_sub(self.last_write_ms.load(Ordering::Relaxed)) >= window_ms
            {
                match q.send_lent(fd, chunk) {
                    Sent::Whole => {
                        self.last_write_ms.store(now, Ordering::Relaxed);
                        return Delivery::Direct(now);
                    }
                    Sent::Part => {
                        self.last_write_ms.store(now, Ordering::Relaxed);
                        drop(q);
                        self.notify.notify_one();
                        return Delivery::Direct(now);
                    }
                    // A full socket buffer: the task takes over (with its write timeout).
                    Sent::Nothing => {}
                    Sent::Gone => {
                        drop(q);
                        self.notify.notify_one();
                        return Delivery::Dropped;
                    }
                }
            }
        }
        let len: usize = group.iter().map(|s| s.frame.len()).sum();
        let over_share = fair_share.is_some_and(|share| q.bytes + len > share);
        if q.bytes + len > self.max_bytes || over_share {
            q.overflowed = true;
            global_bytes.fetch_sub(q.bytes, Ordering::Relaxed);
            q.bytes = 0;
            q.frames = VecDeque::new();
            drop(q);
            self.notify.notify_one();
            return Delivery::Dropped;
        }
        q.bytes += len;
        global_bytes.fetch_add(len, Ordering::Relaxed);
        q.frames
            .extend(group.iter().map(|s| QueuedFrame { stored: s.clone() }));
        drop(q);
        self.notify.notify_one();
        Delivery::Queued
    }

    /// A heartbeat, if this stream's socket is lent and nothing went to it for `due_after_ms`:
    /// written directly (`chunk`), or handed to its task (`frame`, as a side frame) when the
    /// socket cannot take it now. True when the stream was due.
    fn beat(&self, frame: &Bytes, chunk: &Bytes, now: u64, due_after_ms: u64) -> bool {
        // Most streams are not due: told without taking the lock.
        let last = self.last_write_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) < due_after_ms || self.closed.load(Ordering::Relaxed) {
            return false;
        }
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let Some(fd) = q.direct.take() else {
            return false;
        };
        self.last_write_ms.store(now, Ordering::Relaxed);
        match q.send_lent(fd, chunk) {
            Sent::Whole => return true,
            Sent::Nothing => q.receipts.push(frame.clone()),
            Sent::Part | Sent::Gone => {}
        }
        drop(q);
        self.notify.notify_one();
        true
    }

    /// Whether a run of events (all on the same topics) is still for this subscriber: false
    /// when its topics were revoked after the fan-out listed it.
    fn still_wants(&self, group: &[Arc<StoredEvent>]) -> bool {
        if !self.narrowed.load(Ordering::Acquire) {
            return true;
        }
        let mine = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        group
            .first()
            .is_some_and(|s| s.event.topics.iter().any(|t| mine.contains(t)))
    }

    /// Ends the subscriber: what is queued is released, and nothing is queued after this
    /// (a fan-out that listed it before it left delivers nothing).
    fn close(&self, global_bytes: &AtomicUsize) {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        self.closed.store(true, Ordering::Relaxed);
        global_bytes.fetch_sub(q.bytes, Ordering::Relaxed);
        q.bytes = 0;
        q.frames = VecDeque::new();
        q.direct = None;
    }

    /// Lends the stream's socket to the fan-out (direct mode). Refused (false) while anything
    /// is queued or owed: frames, the rest of a cut-short write, a reset, an overflow.
    pub fn enable_direct(&self, fd: LentSocket) -> bool {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if q.overflowed
            || q.gone
            || q.gap.is_some()
            || q.rest.is_some()
            || !q.frames.is_empty()
            || !q.receipts.is_empty()
            || self.closed.load(Ordering::Relaxed)
        {
            return false;
        }
        q.direct = Some(fd);
        true
    }

    /// Takes the socket back from the fan-out (before the stream writes or closes it);
    /// returns the rest of a cut-short direct write, which must be written first.
    pub fn disable_direct(&self) -> Option<Bytes> {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.direct = None;
        q.rest.take()
    }

    /// When bytes last went to this stream (ms since the Unix epoch).
    pub fn last_write_ms(&self) -> u64 {
        self.last_write_ms.load(Ordering::Relaxed)
    }

    /// Whether this subscriber's queue overflowed (a slow consumer).
    pub fn overflowed(&self) -> bool {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .overflowed
    }

    /// Takes everything queued (the stream is about to write it: its write time for
    /// coalescing is now).
    pub fn drain(&self, global_bytes: &AtomicUsize) -> Drained {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        self.last_write_ms
            .store(crate::events::types::now_ms(), Ordering::Relaxed);
        if q.overflowed {
            return Drained::Overflowed;
        }
        if q.gone {
            return Drained::Gone;
        }
        global_bytes.fetch_sub(q.bytes, Ordering::Relaxed);
        q.bytes = 0;
        let frames = std::mem::take(&mut q.frames).into();
        match q.gap.take() {
            Some(reason) => Drained::Reset(reason, frames),
            None => Drained::Frames(frames),
        }
    }

    /// Queues a receipt for the stream's task (taking the socket back from the fan-out, so
    /// the task writes it); false when the stream is closed or overflowed.
    fn push_receipt(&self, frame: &Bytes) -> bool {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if q.overflowed || self.closed.load(Ordering::Relaxed) {
            return false;
        }
        if q.receipts.len() >= MAX_QUEUED_RECEIPTS {
            q.overflowed = true;
        } else {
            q.receipts.push(frame.clone());
        }
        q.direct = None;
        drop(q);
        self.notify.notify_one();
        true
    }

    /// Queues another frame that is not an event (a `presence` frame) beside the receipts,
    /// bounded as they are; false when the stream is closed or overflowed.
    pub fn push_side(&self, frame: &Bytes) -> bool {
        self.push_receipt(frame)
    }

    /// The receipts (and other side frames, see `push_side`) waiting to be written.
    pub fn take_receipts(&self) -> Vec<Bytes> {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut q.receipts)
    }

    /// Marks a gap: what is queued is dropped (the client refetches anyway) and the next
    /// drain returns `Reset`.
    fn mark_gap(&self, reason: ResetReason, global_bytes: &AtomicUsize) {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        global_bytes.fetch_sub(q.bytes, Ordering::Relaxed);
        q.bytes = 0;
        q.frames.clear();
        q.gap = Some(reason);
        // The reset goes first: no more direct writes until the task has sent it.
        q.direct = None;
        drop(q);
        self.notify.notify_one();
    }
}

#[derive(Default)]
struct Registry {
    /// By `scoped_topic(tenant, topic)`: the topic alone without tenancy.
    by_topic: HashMap<String, Vec<Arc<Subscriber>>>,
    /// By receipt routing key (`receipts::stream_key`).
    by_client: HashMap<String, Vec<Arc<Subscriber>>>,
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
    /// The receipt this event's fate completes, if its mutation wants one.
    ticket: Option<Arc<Ticket>>,
    /// The publisher's trace context (its mutation span) when spans are exported: the
    /// append and fan-out spans go under it.
    trace: Option<opentelemetry::Context>,
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
    gap_hook: std::sync::OnceLock<GapHook>,
    next_sub: AtomicU64,
    /// Bytes queued across all subscribers.
    queued_bytes: AtomicUsize,
    /// Bound on `queued_bytes`: past it, queues holding more than their fair share are shed
    /// (slowest first), their clients resume from their last id.
    queued_limit: AtomicUsize,
    /// Highest `queued_bytes` seen since the memory breaker last sampled it.
    peak_queued: AtomicUsize,
    metrics: Arc<Metrics>,
    /// Head sequence, published for streams and status (changes after each batch).
    head_tx: watch::Sender<u64>,
    /// The coalescing window in ms: 0 normally; widened while delivery latency climbs so each
    /// stream's frames go out in fewer, larger writes (degradation level 1). A stream that
    /// wrote within the window gets its frames through its queue, after the window.
    coalesce_ms: AtomicU64,
    /// Each topic's version (the last stored event that touched it).
    versions: versions::Versions,
    /// This instance's id among those sharing a log (a receipt it shared comes back).
    instance: String,
    /// `sse.heartbeat` in ms, for the heartbeats the hub writes to lent sockets (0: none).
    heartbeat_ms: AtomicU64,
}

/// Removes its subscriber from the hub when the stream ends, however it ends.
pub struct Subscription {
    hub: Arc<Hub>,
    pub sub: Arc<Subscriber>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.unsubscribe(&self.sub);
        self.sub.close(&self.hub.queued_bytes);
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
            gap_hook: std::sync::OnceLock::new(),
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
            coalesce_ms: AtomicU64::new(0),
            versions: versions::Versions::new(versions::DEFAULT_MAX_TOPICS),
            instance: format!("{:032x}", rand::random::<u128>()),
            heartbeat_ms: AtomicU64::new(0),
        })
    }

    pub fn log(&self) -> &Arc<dyn EventLog> {
        &self.log
    }

    /// Bytes queued across all subscribers right now.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.load(Ordering::Relaxed)
    }

    /// Sets the bound on queued bytes (`sse.queued_bytes_total`).
    pub fn set_queued_limit(&self, limit: usize) {
        self.queued_limit.store(limit, Ordering::Relaxed);
    }

    /// The highest queued bytes since the last call (bursts between two calls count), and
    /// starts the next interval from the current value.
    pub fn take_peak_queued(&self) -> usize {
        let current = self.queued_bytes();
        self.peak_queued
            .swap(current, Ordering::Relaxed)
            .max(current)
    }

    /// The coalescing window in ms (0: off).
    pub fn coalesce_ms(&self) -> u64 {
        self.coalesce_ms.load(Ordering::Relaxed)
    }

    /// Sets the coalescing window (the safety controller adapts it to delivery latency).
    pub fn set_coalesce_ms(&self, ms: u64) {
        self.coalesce_ms.store(ms, Ordering::Relaxed);
    }

    /// Sets the heartbeat interval of the streams whose sockets the hub holds (`sse.heartbeat`).
    pub fn set_heartbeat(&self, every: Duration) {
        self.heartbeat_ms
            .store(every.as_millis() as u64, Ordering::Relaxed);
    }

    /// The time between two heartbeat sweeps: a quarter of the heartbeat interval, at most
    /// `HEARTBEAT_SWEEP`.
    fn sweep_period(&self) -> Duration {
        let quarter = Duration::from_millis(self.heartbeat_ms.load(Ordering::Relaxed) / 4);
        quarter.clamp(Duration::from_millis(10), HEARTBEAT_SWEEP)
    }

    /// Writes a heartbeat to every lent socket that would otherwise go a whole heartbeat
    /// interval without a write before the next sweep (one chunk, encoded once, for all), so
    /// no lent socket is ever silent for longer than the interval; returns how many streams
    /// were due.
    pub fn sweep_heartbeats(&self) -> usize {
        let interval = self.heartbeat_ms.load(Ordering::Relaxed);
        if interval == 0 {
            return 0;
        }
        // Due now if it is due before the next sweep (a quarter interval: 0 under 4 ms).
        let due_after = interval - (interval / 4).min(HEARTBEAT_SWEEP.as_millis() as u64);
        let head = crate::events::types::EventId::new(&self.epoch(), self.head()).to_string();
        let frame = Frame::Heartbeat { head: &head }.encode();
        let chunk = crate::wire::encode::chunk(&[&frame[..]]);
        let now = crate::events::types::now_ms();
        let reg = self.registry.read().unwrap_or_else(|e| e.into_inner());
        // A stream on several topics is met once per topic; after its beat it is not due.
        reg.by_topic
            .values()
            .flatten()
            .filter(|sub| sub.beat(&frame, &chunk, now, due_after))
            .count()
    }

    /// Takes what is queued for `sub`, keeping the hub's count of queued bytes.
    pub fn drain(&self, sub: &Subscriber) -> Drained {
        sub.drain(&self.queued_bytes)
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
        self.try_publish_for(event, done, None)
    }

    /// `try_publish` for a mutation that wants a receipt: the event's fate settles `ticket`.
    pub fn try_publish_for(
        &self,
        event: Event,
        done: Option<oneshot::Sender<Result<String, HubError>>>,
        ticket: Option<Arc<Ticket>>,
    ) -> Result<(), HubError> {
        if let Some(t) = &ticket {
            t.handed();
        }
        let trace = crate::telemetry::enabled()
            .then(opentelemetry::Context::current)
            .filter(opentelemetry::trace::TraceContextExt::has_active_span);
        let publish = Publish {
            event,
            done,
            ticket,
            trace,
        };
        self.tx.try_send(publish).map_err(|e| {
            let (p, err, reason) = match e {
                mpsc::error::TrySendError::Full(p) => {
                    // Dropped: its subscribers must not stay silently stale.
                    self.lost(&Self::route_keys(std::slice::from_ref(&p.event)));
                    (p, HubError::Full, "hub_queue_full")
                }
                mpsc::error::TrySendError::Closed(p) => (p, HubError::Closed, "hub_closed"),
            };
            self.settle_ticket(p.ticket.as_deref(), |t| t.lost(reason));
            err
        })
    }

    /// Routes a ticket's receipt when this settlement completed it.
    fn settle_ticket(&self, ticket: Option<&Ticket>, f: impl FnOnce(&Ticket) -> Option<Receipt>) {
        if let Some(t) = ticket {
            if let Some(r) = f(t) {
                self.route_receipt(&t.keys, &r);
            }
        }
    }

    /// Publishes and waits until the event is stored (and fanned out, unless the coalescing
    /// window holds the fan-out back); returns its id.
    pub async fn publish(&self, event: Event) -> Result<String, HubError> {
        let (tx, rx) = oneshot::channel();
        self.try_publish(event, Some(tx))?;
        rx.await.map_err(|_| HubError::Closed)?
    }

    /// Registers a subscriber for `topics` (no tenant); see `subscribe_in`.
    pub fn subscribe(
        self: &Arc<Self>,
        topics: Vec<String>,
        max_queue_bytes: usize,
    ) -> (Subscription, u64) {
        self.subscribe_in(None, topics, max_queue_bytes)
    }

    /// Registers a subscriber for `topics` of `tenant` (events of other tenants never reach
    /// it); returns it with the last sequence already fanned out (replay covers up to it,
    /// the queue everything after).
    pub fn subscribe_in(
        self: &Arc<Self>,
        tenant: Option<String>,
        topics: Vec<String>,
        max_queue_bytes: usize,
    ) -> (Subscription, u64) {
        let sub = Arc::new(Subscriber {
            id: self.next_sub.fetch_add(1, Ordering::Relaxed),
            topics: Mutex::new(topics.clone()),
            tenant,
            max_bytes: max_queue_bytes,
            queue: Mutex::new(SubQueue::default()),
            // Its first heartbeat is due one interval from now.
            last_write_ms: AtomicU64::new(crate::events::types::now_ms()),
            notify: Notify::new(),
            closed: AtomicBool::new(false),
            narrowed: AtomicBool::new(false),
            client_key: std::sync::OnceLock::new(),
        });
        let mut reg = self.registry.write().unwrap_or_else(|e| e.into_inner());
        for t in &topics {
            let key = scoped_topic(sub.tenant.as_deref(), t).into_owned();
            reg.by_topic.entry(key).or_default().push(sub.clone());
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
        if let Some(key) = sub.client_key.get() {
            if let Some(list) = reg.by_client.get_mut(key) {
                list.retain(|s| s.id != sub.id);
                if list.is_empty() {
                    reg.by_client.remove(key);
                }
            }
        }
        reg.count = reg.count.saturating_sub(1);
    }

    /// Registers a subscriber for the receipts routed to `key` (`receipts::stream_key`);
    /// once per subscriber.
    pub fn register_client(&self, sub: &Arc<Subscriber>, key: String) {
        let mut reg = self.registry.write().unwrap_or_else(|e| e.into_inner());
        if sub.closed.load(Ordering::Relaxed) || sub.client_key.set(key.clone()).is_err() {
            return;
        }
        reg.by_client.entry(key).or_default().push(sub.clone());
    }

    /// Sends a receipt to the streams registered under any of `keys` here and, on a shared
    /// log, hands it to the other instances (the browser's stream may be on any of them);
    /// returns how many streams here got it. Counted by outcome (`receipts_total`), or as
    /// `shared` / `unrouted` when no stream here got it.
    pub fn route_receipt(&self, keys: &[String], receipt: &Receipt) -> usize {
        if keys.is_empty() {
            // A silent ticket (no receipt wanted).
            return 0;
        }
        let sent = self.deliver_receipt(keys, receipt);
        let shared = self.shared.load(Ordering::Acquire);
        if shared {
            let msg =
                serde_json::json!({ "from": self.instance, "keys": keys, "receipt": receipt });
            self.log.share_receipt(Bytes::from(msg.to_string()));
        }
        let label = match (sent > 0, shared) {
            (true, _) => receipt.outcome.as_str(),
            (false, true) => "shared",
            (false, false) => "unrouted",
        };
        self.metrics
            .receipts_total
            .with_label_values(&[label])
            .inc();
        sent
    }

    /// Receipts other instances shared: each to this instance's streams of its browser.
    async fn follow_receipts(
        self: Arc<Self>,
        mut rx: mpsc::Receiver<Bytes>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        #[derive(serde::Deserialize)]
        struct Shared {
            from: String,
            keys: Vec<String>,
            receipt: Receipt,
        }
        loop {
            let payload = tokio::select! {
                p = rx.recv() => p,
                _ = shutdown.changed() => None,
            };
            let Some(payload) = payload else { return };
            match serde_json::from_slice::<Shared>(&payload) {
                Ok(m) if m.from == self.instance => {}
                Ok(m) => {
                    if self.deliver_receipt(&m.keys, &m.receipt) > 0 {
                        let label = m.receipt.outcome.as_str();
                        self.metrics
                            .receipts_total
                            .with_label_values(&[label])
                            .inc();
                    }
                }
                Err(e) => tracing::debug!(error = %e, "a shared receipt that does not decode"),
            }
        }
    }

    /// Queues a receipt to this instance's streams registered under any of `keys`.
    fn deliver_receipt(&self, keys: &[String], receipt: &Receipt) -> usize {
        let frame = Frame::Receipt(receipt).encode();
        let targets: Vec<Arc<Subscriber>> = {
            let reg = self.registry.read().unwrap_or_else(|e| e.into_inner());
            let mut out: Vec<Arc<Subscriber>> = Vec::new();
            for list in keys.iter().filter_map(|k| reg.by_client.get(k)) {
                for s in list {
                    if !out.iter().any(|o| o.id == s.id) {
                        out.push(s.clone());
                    }
                }
            }
            out
        };
        targets.iter().filter(|s| s.push_receipt(&frame)).count()
    }

    /// Stops routing `topics` to this subscriber (a revocation); events already queued are
    /// filtered by the stream itself.
    pub fn drop_topics(&self, sub: &Arc<Subscriber>, topics: &[String]) {
        let mut reg = self.registry.write().unwrap_or_else(|e| e.into_inner());
        sub.topics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|t| !topics.contains(t));
        sub.narrowed.store(true, Ordering::Release);
        Self::remove_from(&mut reg, sub, topics);
    }

    fn remove_from(reg: &mut Registry, sub: &Arc<Subscriber>, topics: &[String]) {
        for t in topics {
            let key = scoped_topic(sub.tenant.as_deref(), t);
            if let Some(list) = reg.by_topic.get_mut(key.as_ref()) {
                list.retain(|s| s.id != sub.id);
                if list.is_empty() {
                    reg.by_topic.remove(key.as_ref());
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
        if let Some(receipts) = self.log.take_receipt_feed() {
            tokio::spawn(self.clone().follow_receipts(receipts, shutdown.clone()));
        }
        let mut batch = Vec::with_capacity(MAX_BATCH);
        // Stored events whose fan-out waits for the coalescing window.
        let mut pending: Vec<Arc<StoredEvent>> = Vec::new();
        let mut last_fan_out = tokio::time::Instant::now();
        let mut next_sweep = tokio::time::Instant::now() + self.sweep_period();
        // Set once shutdown is asked (or its sender is gone): the queue is closed and
        // drained, and the shutdown branch is not polled again (it would be ready forever).
        let mut stopping = false;
        loop {
            // Under pressure (the coalescing window open), events stored within the window
            // after the last fan-out leave together: one write per subscriber for all of them.
            let due =
                last_fan_out + Duration::from_millis(self.coalesce_ms.load(Ordering::Relaxed));
            let first = tokio::select! {
                m = rx.recv() => m,
                _ = tokio::time::sleep_until(due), if !pending.is_empty() => {
                    self.fan_out(&pending);
                    pending.clear();
                    last_fan_out = tokio::time::Instant::now();
                    continue;
                }
                _ = tokio::time::sleep_until(next_sweep), if !stopping => {
                    self.sweep_heartbeats();
                    next_sweep = tokio::time::Instant::now() + self.sweep_period();
                    continue;
                }
                changed = shutdown.changed(), if !stopping => {
                    if changed.is_err() || *shutdown.borrow() {
                        stopping = true;
                        rx.close();
                    }
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
            let fan_out_now =
                tokio::time::Instant::now() >= due || pending.len() + batch.len() >= MAX_FAN_OUT;
            self.process(&mut batch, &mut pending, fan_out_now).await;
            if fan_out_now {
                last_fan_out = tokio::time::Instant::now();
            }
        }
        if !pending.is_empty() {
            self.fan_out(&pending);
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
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() { return; }
                    continue;
                }
            };
            match item {
                None => return,
                Some(crate::store::Feed::Events(mut events)) => {
                    // What else the feed already holds (the fan-out fell behind) leaves in the
                    // same fan-out: runs of same-topic events go out in one write per stream.
                    let mut gap = None;
                    while events.len() < MAX_FAN_OUT {
                        match feed.try_recv() {
                            Ok(crate::store::Feed::Events(more)) => events.extend(more),
                            Ok(crate::store::Feed::Gap { head, reason }) => {
                                gap = Some((head, reason));
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    if let Some(hook) = self.feed_hook.get() {
                        events.iter().for_each(|e| hook(e));
                    }
                    events.iter().for_each(|e| self.record_version(e));
                    self.fan_out(&events);
                    if let Some((head, reason)) = gap {
                        self.gap(head, reason);
                    }
                }
                Some(crate::store::Feed::Gap { head, reason }) => self.gap(head, reason),
            }
        }
    }

    /// A stored event is the new version of its topics.
    fn record_version(&self, e: &StoredEvent) {
        let tenant = e.event.tenant.as_deref();
        let topics = e.event.topics.iter().map(|t| scoped_topic(tenant, t));
        self.versions.record(e.seq, topics);
    }

    /// The version of these (scoped) topics: the sequence number of the last stored event
    /// that touched any of them (see `versions`).
    pub fn version_of<S: AsRef<str>>(&self, topics: &[S]) -> u64 {
        self.versions.of(topics)
    }

    /// Continuity lost: every subscriber owes its client a `reset`.
    fn gap(&self, head: u64, reason: ResetReason) {
        // The shield stops vouching before any client hears of the gap.
        self.gap_seen();
        self.versions.forget_all(head);
        let reg = self.registry.write().unwrap_or_else(|e| e.into_inner());
        self.fanned.store(head, Ordering::Release);
        let streams = self.mark_gaps(reg.by_topic.values(), reason);
        drop(reg);
        tracing::warn!(
            reason = reason.as_str(),
            streams,
            "every stream gets a reset"
        );
        self.head_tx.send_replace(head);
    }

    fn gap_seen(&self) {
        if let Some(hook) = self.gap_hook.get() {
            hook();
        }
    }

    /// The registry keys (tenant and topic) of these events' topics.
    fn route_keys(events: &[Event]) -> HashSet<String> {
        events
            .iter()
            .flat_map(|e| {
                e.topics
                    .iter()
                    .map(|t| scoped_topic(e.tenant.as_deref(), t).into_owned())
            })
            .collect()
    }

    /// Events on these registry keys could not be stored: their subscribers get a `reset`
    /// now, and ids issued before the loss can no longer be resumed (`events_lost`).
    fn lost(&self, topics: &HashSet<String>) {
        self.loss_floor
            .fetch_max(self.fanned.load(Ordering::Acquire) + 1, Ordering::AcqRel);
        self.gap_seen();
        let reg = self.registry.read().unwrap_or_else(|e| e.into_inner());
        self.mark_gaps(
            topics.iter().filter_map(|t| reg.by_topic.get(t)),
            ResetReason::EventsLost,
        );
    }

    /// Marks a gap once on every subscriber of these lists; returns how many.
    fn mark_gaps<'a>(
        &self,
        lists: impl Iterator<Item = &'a Vec<Arc<Subscriber>>>,
        reason: ResetReason,
    ) -> usize {
        let mut n = 0;
        Self::each_once(lists, |sub| {
            sub.mark_gap(reason, &self.queued_bytes);
            n += 1;
        });
        n
    }

    /// Calls `f` once for every subscriber of these lists (one that is in several, once).
    fn each_once<'a>(
        mut lists: impl Iterator<Item = &'a Vec<Arc<Subscriber>>>,
        mut f: impl FnMut(&'a Arc<Subscriber>),
    ) {
        let Some(first) = lists.next() else { return };
        let Some(second) = lists.next() else {
            // One list: nobody appears twice, no set needed (the common case, one topic).
            return first.iter().for_each(f);
        };
        let mut seen = HashSet::new();
        for sub in [first, second].into_iter().chain(lists).flatten() {
            if seen.insert(sub.id) {
                f(sub);
            }
        }
    }

    /// Called for every event of a shared log's feed before it fans out.
    pub fn set_feed_hook(&self, hook: FeedHook) {
        let _ = self.feed_hook.set(hook);
    }

    /// Called whenever continuity is lost (see `GapHook`).
    pub fn set_gap_hook(&self, hook: GapHook) {
        let _ = self.gap_hook.set(hook);
    }

    /// Whether the log is shared with other instances (fan-out follows its feed).
    pub fn is_shared(&self) -> bool {
        self.shared.load(Ordering::Acquire)
    }

    /// Ids with a lower sequence number were issued before events were lost.
    pub fn loss_floor(&self) -> u64 {
        self.loss_floor.load(Ordering::Acquire)
    }

    /// Appends a batch; its events join `pending`, which is fanned out now if `fan_out_now`.
    /// Publishers learn their ids once the events are stored and, unless the coalescing
    /// window holds the fan-out back, fanned out.
    async fn process(
        &self,
        batch: &mut Vec<Publish>,
        pending: &mut Vec<Arc<StoredEvent>>,
        fan_out_now: bool,
    ) {
        let traces: Vec<opentelemetry::Context> =
            batch.iter_mut().filter_map(|p| p.trace.take()).collect();
        let (events, settle): (Vec<Event>, Vec<_>) = batch
            .drain(..)
            .map(|p| (p.event, (p.done, p.ticket)))
            .unzip();
        let families: Vec<String> = events.iter().map(|e| e.family.clone()).collect();
        let topics = Self::route_keys(&events);
        let started = std::time::Instant::now();
        let wall = std::time::SystemTime::now();
        let result = self.log.append(events).await;
        self.metrics
            .store_commit_seconds
            .observe(started.elapsed().as_secs_f64());
        let batch_len = families.len() as i64;
        Self::trace_step("hub.append", &traces, wall, batch_len);
        match result {
            Ok(stored) => {
                self.metrics.store_appends_total.inc_by(stored.len() as u64);
                stored.iter().for_each(|e| self.record_version(e));
                // A shared log fans out from its feed, in the order all instances agree on.
                if !self.shared.load(Ordering::Acquire) {
                    pending.extend(stored.iter().cloned());
                    if fan_out_now {
                        let wall = std::time::SystemTime::now();
                        self.fan_out(pending);
                        Self::trace_step("hub.fan_out", &traces, wall, pending.len() as i64);
                        pending.clear();
                    }
                }
                for (s, (done, ticket)) in stored.iter().zip(settle) {
                    if let Some(done) = done {
                        let _ = done.send(Ok(s.event.id.clone()));
                    }
                    self.settle_ticket(ticket.as_deref(), |t| t.stored(&s.event.id));
                }
            }
            Err(e) => {
                self.metrics.store_errors_total.inc();
                tracing::error!(error = %e, events = families.len(), "event log append failed");
                self.lost(&topics);
                for (family, (done, ticket)) in families.iter().zip(settle) {
                    self.settle_ticket(ticket.as_deref(), |t| t.lost("store_error"));
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

    /// Records a finished hub step (`name`, from `start` to now, over `events` events) under
    /// each traced publisher's span. (A fan-out the coalescing window defers has no span.)
    fn trace_step(
        name: &'static str,
        traces: &[opentelemetry::Context],
        start: std::time::SystemTime,
        events: i64,
    ) {
        for cx in traces {
            let attrs = vec![opentelemetry::KeyValue::new("events", events)];
            crate::telemetry::record(name, cx, start, attrs);
        }
    }

    /// Fans out off the async worker when there are many subscribers: direct writes make it
    /// a run of system calls, and the runtime's other tasks should not wait behind it.
    fn fan_out(&self, stored: &[Arc<StoredEvent>]) {
        use tokio::runtime::{Handle, RuntimeFlavor};
        let many = self.subscriber_count() >= 256;
        match Handle::try_current() {
            Ok(h) if many && h.runtime_flavor() == RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| self.fan_out_now(stored))
            }
            _ => self.fan_out_now(stored),
        }
    }

    /// How many events from the start of `rest` form one run: the same topics of the same
    /// tenant, which leaves in one write to each subscriber (a batch holds several when
    /// publishing outpaces the fan-out).
    fn run_len(rest: &[Arc<StoredEvent>]) -> usize {
        let Some(first) = rest.first() else { return 0 };
        rest.iter()
            .take_while(|s| {
                s.event.topics == first.event.topics && s.event.tenant == first.event.tenant
            })
            .count()
    }

    /// Lists a run's subscribers into `targets` and advances the fanned-out mark, both under
    /// the read lock (see the module doc), so the writes after it never hold up subscribing.
    /// Returns the subscriber count.
    fn list_targets(
        &self,
        group: &[Arc<StoredEvent>],
        targets: &mut Vec<Arc<Subscriber>>,
    ) -> usize {
        targets.clear();
        let Some(first) = group.first() else { return 0 };
        let tenant = first.event.tenant.as_deref();
        let reg = self.registry.read().unwrap_or_else(|e| e.into_inner());
        // Without a tenant the key is the topic itself: no allocation per delivery.
        let lists = first
            .event
            .topics
            .iter()
            .filter_map(|t| reg.by_topic.get(scoped_topic(tenant, t).as_ref()));
        Self::each_once(lists, |sub| targets.push(sub.clone()));
        if let Some(last) = group.last() {
            self.fanned.store(last.seq, Ordering::Release);
        }
        reg.count
    }

    fn fan_out_now(&self, stored: &[Arc<StoredEvent>]) {
        let mut targets: Vec<Arc<Subscriber>> = Vec::new();
        let limit = self.queued_limit.load(Ordering::Relaxed);
        let window = self.coalesce_ms.load(Ordering::Relaxed);
        let mut rest = stored;
        while !rest.is_empty() {
            let (group, next) = rest.split_at(Self::run_len(rest));
            rest = next;
            let count = self.list_targets(group, &mut targets);
            let bytes: usize = group.iter().map(|s| s.frame.len()).sum();
            // Over the global bound, only queues within their fair share may grow.
            let fair_share = (self.queued_bytes.load(Ordering::Relaxed) + bytes > limit)
                .then(|| limit / count.max(1));
            let frames: Vec<&[u8]> = group.iter().map(|s| &s.frame[..]).collect();
            let chunk = crate::wire::encode::chunk(&frames);
            let deliver = |subs: &[Arc<Subscriber>]| {
                let latency = self.metrics.delivery_latency_seconds.local();
                let mut delivered = 0u64;
                for sub in subs {
                    match sub.deliver(group, &chunk, &self.queued_bytes, fair_share, window) {
                        Delivery::Direct(now) => {
                            delivered += 1;
                            for s in group {
                                latency.observe(now.saturating_sub(s.event.ts) as f64 / 1000.0);
                            }
                        }
                        Delivery::Queued => delivered += 1,
                        Delivery::Dropped => {}
                    }
                }
                latency.flush();
                delivered
            };
            // A large fan-out is split over two threads (each subscriber is in one half, so
            // its frames keep their order; the halves join before the next run).
            let delivered = if targets.len() >= PARALLEL_FAN_OUT {
                let (a, b) = targets.split_at(targets.len() / 2);
                std::thread::scope(|scope| {
                    let other = scope.spawn(|| deliver(b));
                    let mine = deliver(a);
                    mine + other.join().unwrap_or(0)
                })
            } else {
                deliver(&targets)
            };
            self.peak_queued
                .fetch_max(self.queued_bytes.load(Ordering::Relaxed), Ordering::Relaxed);
            for s in group {
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
        }
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
            tenant: None,
            conflict: None,
        }
    }

    /// A hub on a memory log (`max_events`), its sequencer running until the sender drops.
    fn running_hub(max_events: u64, queue: usize) -> (Arc<Hub>, watch::Sender<bool>) {
        let log = Arc::new(MemoryLog::new(max_events, Duration::from_secs(60)));
        let hub = Hub::new(log, queue, Arc::new(Metrics::new()));
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(hub.clone().run(stop_rx));
        (hub, stop_tx)
    }

    fn seqs(d: Drained) -> Vec<u64> {
        match d {
            Drained::Frames(f) => f.iter().map(|f| f.seq()).collect(),
            Drained::Overflowed => panic!("overflowed"),
            Drained::Gone => panic!("gone"),
            Drained::Reset(r, _) => panic!("reset {}", r.as_str()),
        }
    }

    #[tokio::test]
    async fn fans_out_by_topic_once_per_subscriber() {
        let (hub, _stop) = running_hub(100, 16);
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
    async fn events_reach_only_subscribers_of_their_tenant() {
        let (hub, _stop) = running_hub(100, 16);
        let (a, _) = hub.subscribe_in(Some("a.example".into()), vec!["x".into()], 1 << 20);
        let (b, _) = hub.subscribe_in(Some("b.example".into()), vec!["x".into()], 1 << 20);
        let (plain, _) = hub.subscribe(vec!["x".into()], 1 << 20);
        let mut e = ev(&["x"]);
        e.tenant = Some("a.example".into());
        hub.publish(e).await.expect("publish");
        let mut e = ev(&["x"]);
        e.tenant = Some("b.example".into());
        hub.publish(e).await.expect("publish");
        hub.publish(ev(&["x"])).await.expect("publish");
        assert_eq!(seqs(a.sub.drain(&hub.queued_bytes)), vec![1]);
        assert_eq!(seqs(b.sub.drain(&hub.queued_bytes)), vec![2]);
        assert_eq!(seqs(plain.sub.drain(&hub.queued_bytes)), vec![3]);
        drop((a, b, plain));
        assert_eq!(hub.subscriber_count(), 0);
        assert_eq!(hub.queued_bytes.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_full_queue_marks_a_slow_consumer() {
        let (hub, _stop) = running_hub(100, 16);
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

    /// One stored event on `topics`, taken from a subscriber's queue.
    async fn stored(hub: &Arc<Hub>, topics: &[&str]) -> Arc<StoredEvent> {
        let (probe, _) = hub.subscribe(topics.iter().map(|t| t.to_string()).collect(), 1 << 20);
        hub.publish(ev(topics)).await.expect("publish");
        match probe.sub.drain(&hub.queued_bytes) {
            Drained::Frames(mut f) => f.pop().expect("one frame").stored,
            _ => panic!("no frame"),
        }
    }

    #[tokio::test]
    async fn a_delivery_to_a_stream_that_left_meanwhile_queues_nothing() {
        let (hub, _stop) = running_hub(100, 16);
        let event = stored(&hub, &["x"]).await;
        let (gone, _) = hub.subscribe(vec!["x".into()], 1 << 20);
        // A fan-out listed it, then the stream ended before the delivery.
        let listed = gone.sub.clone();
        drop(gone);
        let chunk = crate::wire::encode::chunk(&[&event.frame[..]]);
        let d = listed.deliver(&[event], &chunk, &hub.queued_bytes, None, 0);
        assert_eq!(d, Delivery::Dropped);
        assert_eq!(hub.queued_bytes.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_delivery_listed_before_a_revocation_does_not_reach_the_stream() {
        let (hub, _stop) = running_hub(100, 16);
        let revoked = stored(&hub, &["x"]).await;
        let kept = stored(&hub, &["y"]).await;
        let (s, _) = hub.subscribe(vec!["x".into(), "y".into()], 1 << 20);
        let listed = s.sub.clone();
        hub.drop_topics(&s.sub, &["x".to_string()]);
        let chunk = crate::wire::encode::chunk(&[&revoked.frame[..]]);
        let d = listed.deliver(&[revoked], &chunk, &hub.queued_bytes, None, 0);
        assert_eq!(d, Delivery::Dropped, "a revoked topic is not delivered");
        let chunk = crate::wire::encode::chunk(&[&kept.frame[..]]);
        let d = listed.deliver(&[kept], &chunk, &hub.queued_bytes, None, 0);
        assert_eq!(d, Delivery::Queued, "the topics still granted are");
    }

    #[test]
    fn the_sequencer_ends_when_its_shutdown_sender_is_gone() {
        let log = Arc::new(MemoryLog::new(10, Duration::from_secs(60)));
        let hub = Hub::new(log, 4, Arc::new(Metrics::new()));
        let (stop_tx, stop_rx) = watch::channel(false);
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        // Its own thread: a sequencer that spins would never let a timeout run.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let run = tokio::spawn(hub.clone().run(stop_rx));
                drop(stop_tx);
                // The sequencer exits once nothing can publish any more either.
                drop(hub);
                let _ = run.await;
            });
            let _ = done_tx.send(());
        });
        assert!(
            done_rx.recv_timeout(Duration::from_secs(10)).is_ok(),
            "the sequencer kept running after its shutdown sender was dropped"
        );
    }

    /// Decodes a chunked body; returns the SSE ids in it (panics on a malformed chunk).
    fn ids_in_chunks(mut wire: &[u8]) -> Vec<u64> {
        let mut body = Vec::new();
        while !wire.is_empty() {
            let line_end = wire
                .windows(2)
                .position(|w| w == b"\r\n")
                .expect("size line");
            let size = std::str::from_utf8(&wire[..line_end]).expect("hex");
            let size = usize::from_str_radix(size, 16).expect("chunk size");
            let data = &wire[line_end + 2..];
            body.extend_from_slice(&data[..size]);
            assert_eq!(&data[size..size + 2], b"\r\n", "chunk ends with CRLF");
            wire = &data[size + 2..];
        }
        String::from_utf8(body)
            .expect("utf-8")
            .lines()
            .filter_map(|l| l.strip_prefix("id: "))
            .map(|id| {
                id.rsplit('-')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("id")
            })
            .collect()
    }

    /// A connected loopback pair: (the client's end, the server's end, non-blocking).
    fn socket_pair() -> (std::net::TcpStream, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let client =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        server.set_nonblocking(true).expect("nonblocking");
        (client, server)
    }

    #[tokio::test]
    async fn the_sweep_writes_heartbeats_to_idle_lent_sockets_only_when_due() {
        use std::io::Read;
        // Not running: its own sweep (every second) stays out of the counts.
        let log = Arc::new(MemoryLog::new(100, Duration::from_secs(60)));
        let hub = Hub::new(log, 64, Arc::new(Metrics::new()));
        let (mut client, server) = socket_pair();
        let (lent, _) = hub.subscribe(vec!["x".into()], 1 << 20);
        let (own, _) = hub.subscribe(vec!["x".into()], 1 << 20);
        assert!(lent.sub.enable_direct(LentSocket::of(&server)));
        hub.set_heartbeat(Duration::from_secs(60));
        assert_eq!(
            hub.sweep_heartbeats(),
            0,
            "written to a moment ago: not due"
        );
        // A 1 ms interval: due as soon as the wall clock has moved on.
        hub.set_heartbeat(Duration::from_millis(1));
        let start = crate::events::types::now_ms();
        while crate::events::types::now_ms() < start + 2 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            hub.sweep_heartbeats(),
            1,
            "the lent socket only: the other's task beats"
        );
        assert_eq!(hub.sweep_heartbeats(), 0, "just written: not due again");
        // A 1 s interval: a socket written 800 ms ago would be silent for longer than the
        // interval by the next sweep (250 ms on), so it is due now; one written 700 ms ago is not.
        hub.set_heartbeat(Duration::from_secs(1));
        assert_eq!(hub.sweep_period(), Duration::from_millis(250));
        let now = crate::events::types::now_ms();
        lent.sub.last_write_ms.store(now - 700, Ordering::Relaxed);
        assert_eq!(
            hub.sweep_heartbeats(),
            0,
            "700 ms ago: the next sweep is in time"
        );
        lent.sub.last_write_ms.store(now - 800, Ordering::Relaxed);
        assert_eq!(
            hub.sweep_heartbeats(),
            1,
            "800 ms ago: the next sweep would be late"
        );
        let mut buf = vec![0u8; 4096];
        let n = client.read(&mut buf).expect("read");
        let wire = String::from_utf8_lossy(&buf[..n]);
        assert!(
            wire.contains("event: heartbeat\ndata: {\"head\":\""),
            "{wire}"
        );
        assert!(
            lent.sub.enable_direct(LentSocket::of(&server)),
            "nothing owed to the task: the socket stays lent"
        );
        assert!(matches!(own.sub.drain(&hub.queued_bytes), Drained::Frames(f) if f.is_empty()));
    }

    #[tokio::test]
    async fn direct_writes_hand_over_to_the_queue_without_losing_or_reordering_a_byte() {
        use std::io::Read;
        let (hub, _stop) = running_hub(10_000, 64);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut client =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        server.set_nonblocking(true).expect("nonblocking");
        let (s, _) = hub.subscribe(vec!["x".into()], 64 << 20);
        assert!(s.sub.enable_direct(LentSocket::of(&server)));
        // 4 KiB events while the client reads nothing: direct until the socket buffers fill,
        // then (a cut-short write, or a full buffer) the queue.
        let n = 4000u64;
        let big = "y".repeat(4096);
        for _ in 0..n {
            let mut e = ev(&["x"]);
            e.data = serde_json::json!({ "pad": big });
            hub.publish(e).await.expect("publish");
        }
        assert!(
            !s.sub.enable_direct(LentSocket::of(&server)),
            "frames are queued: direct mode stays off"
        );
        let mut wire = Vec::new();
        client.set_nonblocking(true).expect("nonblocking");
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match client.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => wire.extend_from_slice(&buf[..k]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("read: {e}"),
            }
        }
        assert!(!wire.is_empty(), "the first events went out directly");
        if let Some(rest) = s.sub.disable_direct() {
            wire.extend_from_slice(&rest);
        }
        let Drained::Frames(frames) = s.sub.drain(&hub.queued_bytes) else {
            panic!("frames expected");
        };
        assert!(!frames.is_empty(), "the later events were queued");
        for f in &frames {
            wire.extend_from_slice(&crate::wire::encode::chunk(&[f.bytes()]));
        }
        assert_eq!(ids_in_chunks(&wire), (1..=n).collect::<Vec<_>>());
        drop(server);
    }
}
