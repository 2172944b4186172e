//! Check slots, shared fairly: `max_concurrent_checks` slots in all (a FIFO queue), and
//! before that queue a cap per credential fingerprint (an eighth of the slots) and per
//! client address (a quarter). One handshake asking for many slow topics, or many
//! handshakes with random cookies from one address, wait behind their own cap and leave
//! the others' checks free to run. Waiting is bounded by the caller (`acquire` is awaited
//! under a timeout); the per-key tables only hold keys somebody holds or waits for.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Fingerprint(u128),
    Address(IpAddr),
}

pub struct Slots {
    global: Arc<Semaphore>,
    /// Each key's semaphore and how many checks hold or wait for it.
    per_key: Mutex<HashMap<Key, (Arc<Semaphore>, usize)>>,
    per_fingerprint: usize,
    per_address: usize,
}

/// Held while a check runs; gives its slots back (and forgets idle keys) when dropped.
pub struct Slot<'a> {
    slots: &'a Slots,
    permits: Vec<OwnedSemaphorePermit>,
    keys: Vec<Key>,
}

impl Slots {
    pub fn new(total: usize) -> Slots {
        let total = total.max(1);
        Slots {
            global: Arc::new(Semaphore::new(total)),
            per_key: Mutex::new(HashMap::new()),
            per_fingerprint: (total / 8).max(1),
            per_address: (total / 4).max(1),
        }
    }

    /// Most checks one credential runs at once.
    pub fn per_fingerprint(&self) -> usize {
        self.per_fingerprint
    }

    fn key_semaphore(&self, key: Key) -> Arc<Semaphore> {
        let cap = match key {
            Key::Fingerprint(_) => self.per_fingerprint,
            Key::Address(_) => self.per_address,
        };
        let mut map = self.per_key.lock().unwrap_or_else(|e| e.into_inner());
        let (sem, users) = map
            .entry(key)
            .or_insert_with(|| (Arc::new(Semaphore::new(cap)), 0));
        *users += 1;
        sem.clone()
    }

    /// Waits for a slot under this address's and this credential's caps, then for one of
    /// the shared slots. `None` only if a semaphore was closed (never, in practice).
    pub async fn acquire(&self, fingerprint: u128, client: Option<IpAddr>) -> Option<Slot<'_>> {
        let mut slot = Slot {
            slots: self,
            permits: Vec::with_capacity(3),
            keys: Vec::with_capacity(2),
        };
        let keys = client
            .map(Key::Address)
            .into_iter()
            .chain(std::iter::once(Key::Fingerprint(fingerprint)));
        for key in keys {
            let sem = self.key_semaphore(key);
            // Registered before waiting, so that a dropped wait still forgets the key.
            slot.keys.push(key);
            slot.permits.push(sem.acquire_owned().await.ok()?);
        }
        slot.permits
            .push(self.global.clone().acquire_owned().await.ok()?);
        Some(slot)
    }

    /// Keys currently tracked (held or waited for).
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.per_key.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.permits.clear();
        let mut map = self.slots.per_key.lock().unwrap_or_else(|e| e.into_inner());
        for key in self.keys.drain(..) {
            if let Some((_, users)) = map.get_mut(&key) {
                *users = users.saturating_sub(1);
                if *users == 0 {
                    map.remove(&key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn one_credential_cannot_take_every_slot() {
        let slots = Slots::new(64);
        let mut held = Vec::new();
        for _ in 0..slots.per_fingerprint() {
            held.push(slots.acquire(1, None).await.expect("slot"));
        }
        let more = tokio::time::timeout(Duration::from_secs(1), slots.acquire(1, None)).await;
        assert!(more.is_err(), "the credential's cap holds");
        let other = tokio::time::timeout(Duration::from_millis(1), slots.acquire(2, None)).await;
        assert!(other.is_ok(), "another credential gets a slot at once");
        drop(other);
        drop(held);
        assert_eq!(slots.tracked(), 0, "idle keys are forgotten");
    }

    #[tokio::test(start_paused = true)]
    async fn one_address_cannot_take_every_slot() {
        let slots = Slots::new(64);
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        let mut held = Vec::new();
        // Random cookies: a new fingerprint per check, one address.
        for fp in 0..16u128 {
            held.push(slots.acquire(fp, Some(ip)).await.expect("slot"));
        }
        let more = tokio::time::timeout(Duration::from_secs(1), slots.acquire(99, Some(ip))).await;
        assert!(more.is_err(), "the address's cap holds");
        let victim: IpAddr = "10.0.0.2".parse().expect("ip");
        let v =
            tokio::time::timeout(Duration::from_millis(1), slots.acquire(99, Some(victim))).await;
        assert!(v.is_ok(), "another address gets a slot at once");
        drop(v);
        drop(held);
        assert_eq!(slots.tracked(), 0);
    }
}
