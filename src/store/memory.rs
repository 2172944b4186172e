//! In-memory event log: a ring of the last `max_events` events (and no older than
//! `max_age`), a fresh epoch at every start. For tests and for users who accept that a
//! restart resets every client.

use super::tail::Tail;
use super::{EventLog, ReadAfter, StoreError, StoredEvent};
use crate::events::types::new_epoch;
use crate::events::Event;
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

pub struct MemoryLog {
    epoch: Arc<str>,
    tail: Tail,
}

impl MemoryLog {
    pub fn new(max_events: u64, max_age: Duration) -> Self {
        MemoryLog {
            epoch: new_epoch().into(),
            tail: Tail::new(0, max_events.clamp(1, 10_000_000) as usize, Some(max_age)),
        }
    }
}

#[async_trait]
impl EventLog for MemoryLog {
    fn epoch(&self) -> Arc<str> {
        self.epoch.clone()
    }

    fn head(&self) -> u64 {
        self.tail.head()
    }

    async fn append(&self, events: Vec<Event>) -> Result<Vec<Arc<StoredEvent>>, StoreError> {
        Ok(self.tail.append(&self.epoch, events))
    }

    fn oldest(&self) -> u64 {
        self.tail.oldest()
    }

    async fn read_after(&self, after: u64, limit: usize) -> Result<ReadAfter, StoreError> {
        Ok(match self.tail.read_after(after, limit) {
            Some(events) => ReadAfter::Events(events),
            None => ReadAfter::Evicted {
                oldest: self.tail.oldest(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::types::now_ms;

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
            tenant: None,
            conflict: None,
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
