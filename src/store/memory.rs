//! In-memory event log: a ring of the last `max_events` events (and no older than
//! `max_age`), a fresh epoch at every start. For tests and for users who accept that a
//! restart resets every client.

use super::{EventLog, ReadAfter, StoreError, StoredEvent};
use crate::events::types::{new_epoch, now_ms, EventId};
use crate::events::Event;
use async_trait::async_trait;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct MemoryLog {
    epoch: String,
    max_events: usize,
    max_age: Duration,
    head: AtomicU64,
    ring: Mutex<VecDeque<Arc<StoredEvent>>>,
}

impl MemoryLog {
    pub fn new(max_events: u64, max_age: Duration) -> Self {
        MemoryLog {
            epoch: new_epoch(),
            max_events: max_events.clamp(1, 10_000_000) as usize,
            max_age,
            head: AtomicU64::new(0),
            ring: Mutex::new(VecDeque::new()),
        }
    }

    fn trim(&self, ring: &mut VecDeque<Arc<StoredEvent>>) {
        while ring.len() > self.max_events {
            ring.pop_front();
        }
        let cutoff = now_ms().saturating_sub(self.max_age.as_millis() as u64);
        while ring.front().is_some_and(|e| e.event.ts < cutoff) {
            ring.pop_front();
        }
    }
}

#[async_trait]
impl EventLog for MemoryLog {
    fn epoch(&self) -> &str {
        &self.epoch
    }

    fn head(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }

    async fn append(&self, events: Vec<Event>) -> Result<Vec<Arc<StoredEvent>>, StoreError> {
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let mut seq = self.head.load(Ordering::Acquire);
        let mut out = Vec::with_capacity(events.len());
        for mut ev in events {
            seq += 1;
            ev.id = EventId::new(&self.epoch, seq).to_string();
            let stored = StoredEvent::new(seq, ev);
            ring.push_back(stored.clone());
            out.push(stored);
        }
        self.trim(&mut ring);
        self.head.store(seq, Ordering::Release);
        Ok(out)
    }

    fn oldest(&self) -> u64 {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.front()
            .map(|e| e.seq)
            .unwrap_or_else(|| self.head.load(Ordering::Acquire) + 1)
    }

    async fn read_after(&self, after: u64, limit: usize) -> Result<ReadAfter, StoreError> {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let head = self.head.load(Ordering::Acquire);
        if after >= head {
            return Ok(ReadAfter::Events(Vec::new()));
        }
        let oldest = ring.front().map(|e| e.seq).unwrap_or(head + 1);
        if after + 1 < oldest {
            return Ok(ReadAfter::Evicted { oldest });
        }
        let start = (after + 1 - oldest) as usize;
        Ok(ReadAfter::Events(
            ring.iter().skip(start).take(limit).cloned().collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(n: u64) -> Event {
        Event {
            id: String::new(),
            event_type: "t".into(),
            family: "f".into(),
            topics: vec![format!("t{n}")],
            ts: now_ms(),
            origin: Default::default(),
            data: serde_json::json!({ "n": n }),
            invalidate: vec![],
        }
    }

    #[tokio::test]
    async fn appends_reads_and_evicts() {
        let log = MemoryLog::new(3, Duration::from_secs(60));
        let stored = log.append((1..=5).map(ev).collect()).await.expect("append");
        assert_eq!(stored.last().map(|s| s.seq), Some(5));
        assert_eq!(log.head(), 5);
        assert!(stored[0].event.id.ends_with("-1"));
        match log.read_after(2, 10).await.expect("read") {
            ReadAfter::Events(v) => {
                assert_eq!(v.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3, 4, 5])
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            log.read_after(1, 10).await,
            Ok(ReadAfter::Evicted { oldest: 3 })
        ));
        assert!(matches!(log.read_after(5, 10).await, Ok(ReadAfter::Events(v)) if v.is_empty()));
        match log.read_after(3, 1).await.expect("read") {
            ReadAfter::Events(v) => {
                assert_eq!(v.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![4])
            }
            other => panic!("{other:?}"),
        }
    }
}
