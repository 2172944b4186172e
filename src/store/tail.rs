//! The in-memory tail of a log: assigns ids in order and keeps the most recent events (by
//! count, optionally by age) for replays that need no disk. The memory log is a tail alone;
//! the SQLite log keeps one in front of its table (it also covers events not yet committed).

use super::StoredEvent;
use crate::events::types::{now_ms, EventId};
use crate::events::Event;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Tail {
    head: AtomicU64,
    ring: Mutex<VecDeque<Arc<StoredEvent>>>,
    max_events: usize,
    max_age: Option<Duration>,
}

impl Tail {
    /// A tail whose next event gets sequence `head + 1`.
    pub fn new(head: u64, max_events: usize, max_age: Option<Duration>) -> Tail {
        Tail {
            head: AtomicU64::new(head),
            ring: Mutex::new(VecDeque::new()),
            max_events: max_events.max(1),
            max_age,
        }
    }

    /// The last assigned sequence number.
    pub fn head(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }

    /// Assigns the next ids (`<epoch>-<seq>`) in order, keeps the events, returns them.
    pub fn append(&self, epoch: &str, events: Vec<Event>) -> Vec<Arc<StoredEvent>> {
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let mut seq = self.head.load(Ordering::Acquire);
        let mut out = Vec::with_capacity(events.len());
        for mut ev in events {
            seq += 1;
            ev.id = EventId::new(epoch, seq).to_string();
            let stored = StoredEvent::new(seq, ev);
            ring.push_back(stored.clone());
            out.push(stored);
        }
        while ring.len() > self.max_events {
            ring.pop_front();
        }
        if let Some(age) = self.max_age {
            let cutoff = now_ms().saturating_sub(age.as_millis() as u64);
            while ring.front().is_some_and(|e| e.event.ts < cutoff) {
                ring.pop_front();
            }
        }
        self.head.store(seq, Ordering::Release);
        out
    }

    /// The oldest sequence number held (head + 1 when empty).
    pub fn oldest(&self) -> u64 {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.front()
            .map(|e| e.seq)
            .unwrap_or_else(|| self.head() + 1)
    }

    /// Up to `limit` events after `after`, or `None` when the tail no longer reaches back
    /// that far.
    pub fn read_after(&self, after: u64, limit: usize) -> Option<Vec<Arc<StoredEvent>>> {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        if after >= self.head() {
            return Some(Vec::new());
        }
        let front = ring.front()?.seq;
        if after + 1 < front {
            return None;
        }
        let start = (after + 1 - front) as usize;
        Some(ring.iter().skip(start).take(limit).cloned().collect())
    }
}
