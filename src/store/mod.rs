//! The event log: the ordered, replayable record of every delivered event. `EventLog` is the
//! interface the hub and the stream handler use; `memory` keeps a bounded ring in RAM.

pub mod memory;
pub mod redis;
pub mod sqlite;
pub mod tail;

use crate::events::Event;
use async_trait::async_trait;
use bytes::Bytes;
use std::sync::Arc;

/// An event with its position and its encoded SSE frame (encoded once, shared by every
/// subscriber and every replay from memory).
#[derive(Debug)]
pub struct StoredEvent {
    pub seq: u64,
    pub event: Event,
    pub frame: Bytes,
}

impl StoredEvent {
    pub fn new(seq: u64, event: Event) -> Arc<StoredEvent> {
        let frame = crate::wire::Frame::Event(&event).encode();
        Arc::new(StoredEvent { seq, event, frame })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("event store unavailable: {0}")]
    Unavailable(String),
    #[error("event store write failed: {0}")]
    Write(String),
}

/// What a replay read found.
#[derive(Debug)]
pub enum ReadAfter {
    /// Events with `seq > after`, in order (at most the limit asked for).
    Events(Vec<Arc<StoredEvent>>),
    /// Events after `after` were already removed by retention: replay cannot cover the gap.
    Evicted { oldest: u64 },
}

#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// The log's epoch: ids from another epoch cannot be resumed. Fixed for the process's
    /// life, except for a shared log that must adopt the epoch its peers use (it then sends
    /// `Feed::Gap`, so every stream gets a reset).
    fn epoch(&self) -> Arc<str>;
    /// The last assigned sequence number (0 when empty).
    fn head(&self) -> u64;
    /// Appends events in order, assigning ids; returns them stored.
    async fn append(&self, events: Vec<Event>) -> Result<Vec<Arc<StoredEvent>>, StoreError>;
    /// Reads up to `limit` events after `after`.
    async fn read_after(&self, after: u64, limit: usize) -> Result<ReadAfter, StoreError>;
    /// Whether the store can be written right now (for readiness).
    fn healthy(&self) -> bool {
        true
    }
    /// Entries that could not be decoded since start (a shared log's tailer, replay, trim).
    fn decode_errors(&self) -> u64 {
        0
    }
    /// The oldest sequence number still held (head + 1 when empty).
    fn oldest(&self) -> u64;
    /// Flushes what is queued and marks a clean shutdown. Called once, at exit.
    async fn close(&self) {}
    /// For a log shared by several instances: every event of the log in order (this
    /// instance's appends included), which the hub fans out instead of what `append`
    /// returns. `None` (the default): the hub fans out its own appends. Called once, inside
    /// the runtime.
    fn take_feed(&self) -> Option<tokio::sync::mpsc::Receiver<Feed>> {
        None
    }
    /// For a log shared by several instances: hands a mutation receipt (`payload`, the
    /// hub's JSON) to the other instances, without waiting (dropped when the way out is
    /// full or down: the client then settles on the HTTP answer). The default: nothing.
    fn share_receipt(&self, _payload: Bytes) {}
    /// The receipts the other instances shared (this instance's own included). `None` (the
    /// default) for a log of one instance. Called once, inside the runtime.
    fn take_receipt_feed(&self) -> Option<tokio::sync::mpsc::Receiver<Bytes>> {
        None
    }
}

/// What a shared log's feed carries.
#[derive(Debug)]
pub enum Feed {
    /// The next events of the log, in order.
    Events(Vec<Arc<StoredEvent>>),
    /// Continuity was lost (events missing after a failover, or a new epoch): every open
    /// stream gets a `reset`; `head` is the log's position now.
    Gap {
        head: u64,
        reason: crate::wire::ResetReason,
    },
}
