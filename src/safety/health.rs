//! The input of the `stream_health` breaker: server-side stream failures (write errors,
//! write timeouts), counted per client address and bounded, so that one address (or a few)
//! cannot switch SSE off for everyone. Client resets and clean closes are not failures of
//! the server and are never recorded here.
//!
//! The stream reports a failure where it ends (`control::Controller::note_write_failure`,
//! which records it here with `record_failure(addr)`); the safety controller takes the
//! interval's counts once a second (`take`) and decides with `unhealthy`.

use std::collections::HashMap;
use std::net::IpAddr;

/// Most failures one client address contributes to one sample.
pub const PER_ADDRESS_CAP: u64 = 2;
/// Most addresses tracked in one interval; past that, failures of new addresses share one
/// bucket (bounded like a single address).
const MAX_ADDRESSES: usize = 4096;
/// A sample with fewer attempts than this is never bad (too little to judge).
const MIN_ATTEMPTS: u64 = 20;

/// Failures recorded since the last sample.
#[derive(Debug, Clone, Default)]
pub struct StreamHealth {
    by_addr: HashMap<Option<IpAddr>, u64>,
    raw: u64,
}

/// One interval's failures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Failures {
    /// Every failure recorded.
    pub recorded: u64,
    /// The same, each address counting at most `PER_ADDRESS_CAP`.
    pub bounded: u64,
}

impl StreamHealth {
    /// Records one server-side failure of a stream from `addr` (`None`: address unknown).
    pub fn record_failure(&mut self, addr: Option<IpAddr>) {
        self.raw = self.raw.saturating_add(1);
        let key = if self.by_addr.len() >= MAX_ADDRESSES && !self.by_addr.contains_key(&addr) {
            None
        } else {
            addr
        };
        let n = self.by_addr.entry(key).or_insert(0);
        *n = n.saturating_add(1);
    }

    /// Takes (and forgets) the failures recorded since the last call.
    pub fn take(&mut self) -> Failures {
        let bounded = self
            .by_addr
            .values()
            .map(|n| (*n).min(PER_ADDRESS_CAP))
            .sum();
        let out = Failures {
            recorded: self.raw,
            bounded,
        };
        self.by_addr = HashMap::new();
        self.raw = 0;
        out
    }
}

/// Most streams failing: at least 20 streams started or failed in the interval, and more
/// than half of them failed (server-side failures only, bounded per address).
pub fn unhealthy(handshakes: u64, failed: u64) -> bool {
    let attempts = handshakes.saturating_add(failed);
    attempts >= MIN_ATTEMPTS && failed.saturating_mul(2) > attempts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        s.parse().ok()
    }

    #[test]
    fn a_few_addresses_cannot_trip_it() {
        let mut h = StreamHealth::default();
        for i in 0..100 {
            h.record_failure(ip(&format!("127.0.0.{}", 2 + i % 4)));
        }
        let f = h.take();
        assert_eq!(f.recorded, 100);
        assert_eq!(f.bounded, 4 * PER_ADDRESS_CAP);
        assert!(!unhealthy(0, f.bounded), "4 addresses stay below the floor");
        assert_eq!(h.take(), Failures::default(), "taken once");
    }

    #[test]
    fn many_failing_addresses_trip_it() {
        let mut h = StreamHealth::default();
        for i in 0..30 {
            h.record_failure(ip(&format!("10.0.0.{i}")));
        }
        let f = h.take();
        assert_eq!(f.bounded, 30);
        assert!(unhealthy(5, f.bounded));
        assert!(!unhealthy(40, f.bounded), "most streams still start");
    }

    #[test]
    fn the_address_map_is_bounded() {
        let mut h = StreamHealth::default();
        for i in 0..(MAX_ADDRESSES as u32 + 500) {
            h.record_failure(Some(IpAddr::from(i.to_be_bytes())));
        }
        assert!(h.by_addr.len() <= MAX_ADDRESSES + 1);
        let f = h.take();
        assert_eq!(f.recorded, MAX_ADDRESSES as u64 + 500);
        assert!(f.bounded <= MAX_ADDRESSES as u64 + PER_ADDRESS_CAP);
    }
}
