//! Safety controls that are pure state machines (time passed in, tested without sockets):
//! the per-client handshake limiter and the idempotency de-duplicator. Both are bounded.
//! `health` counts the server-side stream failures the `stream_health` breaker judges;
//! `latency` reads the delivery latency quantiles the coalescing window and the latency
//! breaker follow; `client_addr` finds the client's address behind trusted proxies.

pub mod breaker;
pub mod client_addr;
pub mod health;
pub mod latency;

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The sidecar's breakers, fed once a second by the safety controller (`control`).
#[derive(Debug, Clone)]
pub struct Breakers {
    /// Event log failing to commit → every family's clients poll.
    pub store: breaker::Breaker,
    /// Delivery p99 over the target → level 2: the lowest-priority families poll.
    pub latency: breaker::Breaker,
    /// Queued bytes near their bound → new streams refused (503).
    pub memory: breaker::Breaker,
    /// Most new streams failing → SSE off automatically (clients poll), probed back.
    pub stream_health: breaker::Breaker,
}

impl Default for Breakers {
    fn default() -> Self {
        use std::time::Duration as D;
        Breakers {
            store: breaker::Breaker::new("store", 2, D::from_secs(5)),
            latency: breaker::Breaker::new("latency", 5, D::from_secs(30)),
            // Memory pressure is acute: one bad second trips it.
            memory: breaker::Breaker::new("memory", 1, D::from_secs(10)),
            stream_health: breaker::Breaker::new("stream_health", 3, D::from_secs(15)),
        }
    }
}

impl Breakers {
    pub fn all(&self) -> [&breaker::Breaker; 4] {
        [
            &self.store,
            &self.latency,
            &self.memory,
            &self.stream_health,
        ]
    }
}

/// Priorities below this are shed first at degradation level 2.
pub const SHED_BELOW_PRIORITY: u8 = 5;

/// Most client addresses tracked by the handshake limiter.
const MAX_CLIENTS: usize = 100_000;
/// Most idempotency keys remembered.
const MAX_KEYS: usize = 100_000;

/// Token buckets of new-stream handshakes per client address, in two generations: the
/// current one takes new addresses; when it holds half of `MAX_CLIENTS`, it becomes the
/// previous one and the old previous one is forgotten (the least recently seen addresses).
/// An address seen again moves to the current generation. O(1) per handshake, bounded,
/// and never open: a forgotten address starts again from a full bucket, like a new one.
#[derive(Default)]
pub struct HandshakeLimiter {
    current: HashMap<IpAddr, (f64, Instant)>,
    previous: HashMap<IpAddr, (f64, Instant)>,
}

/// The longest wait a limiter answers (a tiny configured rate would otherwise overflow).
const MAX_WAIT: Duration = Duration::from_secs(3600);

impl HandshakeLimiter {
    /// Takes one token for `ip`; `Err(retry_after)` when its bucket is empty.
    pub fn admit(
        &mut self,
        ip: IpAddr,
        now: Instant,
        rate: f64,
        burst: u32,
    ) -> Result<(), Duration> {
        let burst = f64::from(burst.max(1));
        let entry = match self.current.remove(&ip) {
            Some(e) => Some(e),
            None => self.previous.remove(&ip),
        };
        if self.current.len() >= MAX_CLIENTS / 2 {
            self.previous = std::mem::take(&mut self.current);
        }
        let (mut tokens, at) = entry.unwrap_or((burst, now));
        let refill = now.saturating_duration_since(at).as_secs_f64() * rate;
        tokens = if refill.is_finite() {
            (tokens + refill).min(burst)
        } else {
            burst
        };
        let answer = if tokens >= 1.0 {
            tokens -= 1.0;
            Ok(())
        } else {
            let wait = Duration::try_from_secs_f64((1.0 - tokens) / rate).unwrap_or(MAX_WAIT);
            Err(wait.min(MAX_WAIT))
        };
        self.current.insert(ip, (tokens, now));
        answer
    }

    /// Addresses tracked.
    pub fn tracked(&self) -> usize {
        self.current.len() + self.previous.len()
    }
}

/// Remembers idempotency keys for a window, so a retried mutation publishes once.
#[derive(Default)]
pub struct Dedup {
    seen: HashMap<String, Instant>,
    order: VecDeque<(String, Instant)>,
}

impl Dedup {
    /// An idempotency key as it is remembered: scoped by the rule and the sender's
    /// credential fingerprint, so one user's key (or a key sent to another route) can never
    /// swallow another user's event.
    pub fn scoped(rule: &str, fingerprint: u128, key: &str) -> String {
        format!("{rule}|{fingerprint:032x}|{key}")
    }

    /// True the first time `key` is seen within `window`.
    pub fn first(&mut self, key: &str, now: Instant, window: Duration) -> bool {
        while let Some((k, at)) = self.order.front() {
            if now.saturating_duration_since(*at) < window && self.order.len() < MAX_KEYS {
                break;
            }
            if self.seen.get(k) == Some(at) {
                self.seen.remove(k);
            }
            self.order.pop_front();
        }
        match self.seen.get(key) {
            Some(at) if now.saturating_duration_since(*at) < window => false,
            _ => {
                self.seen.insert(key.to_owned(), now);
                self.order.push_back((key.to_owned(), now));
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_allow_a_burst_then_the_rate() {
        let mut l = HandshakeLimiter::default();
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(l.admit(ip, t0, 1.0, 5).is_ok());
        }
        let wait = l.admit(ip, t0, 1.0, 5).expect_err("empty");
        assert!(wait <= Duration::from_secs(1) && wait > Duration::ZERO);
        assert!(
            l.admit(ip, t0 + Duration::from_millis(1100), 1.0, 5)
                .is_ok(),
            "refilled"
        );
        let other: IpAddr = "10.0.0.2".parse().expect("ip");
        assert!(l.admit(other, t0, 1.0, 5).is_ok(), "per client");
    }

    #[test]
    fn a_flood_of_addresses_is_bounded_and_never_opens_the_limit() {
        let mut l = HandshakeLimiter::default();
        let t0 = Instant::now();
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        for _ in 0..5 {
            assert!(l.admit(ip, t0, 1.0, 5).is_ok());
        }
        for i in 0..(MAX_CLIENTS as u32 * 2) {
            let other = IpAddr::from((i + 1_000_000).to_be_bytes());
            let _ = l.admit(other, t0, 1.0, 5);
            if i % 1000 == 0 {
                // The limited address keeps being seen: it stays limited.
                assert!(l.admit(ip, t0, 1.0, 5).is_err(), "still limited at {i}");
            }
        }
        assert!(l.tracked() <= MAX_CLIENTS, "{}", l.tracked());
        let flooder = IpAddr::from(7_000_000u32.to_be_bytes());
        for _ in 0..5 {
            assert!(l.admit(flooder, t0, 1.0, 5).is_ok());
        }
        assert!(
            l.admit(flooder, t0, 1.0, 5).is_err(),
            "limits still apply when full"
        );
    }

    #[test]
    fn odd_rates_never_panic() {
        let mut l = HandshakeLimiter::default();
        let t0 = Instant::now();
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        for rate in [1e-300, f64::MIN_POSITIVE, 1e300, f64::INFINITY] {
            for _ in 0..3 {
                let _ = l.admit(ip, t0 + Duration::from_secs(1), rate, 1);
            }
            if let Err(wait) = l.admit(ip, t0 + Duration::from_secs(2), rate, 1) {
                assert!(wait <= MAX_WAIT);
            }
        }
    }

    #[test]
    fn keys_publish_once_per_window() {
        let mut d = Dedup::default();
        let t0 = Instant::now();
        let w = Duration::from_secs(60);
        assert!(d.first("k1", t0, w));
        assert!(!d.first("k1", t0 + Duration::from_secs(30), w));
        assert!(d.first("k2", t0 + Duration::from_secs(30), w));
        assert!(
            d.first("k1", t0 + Duration::from_secs(61), w),
            "window over"
        );
        assert!(d.seen.len() <= 2);
    }

    #[test]
    fn keys_are_scoped_by_rule_and_credentials() {
        let mut d = Dedup::default();
        let t0 = Instant::now();
        let w = Duration::from_secs(60);
        assert!(d.first(&Dedup::scoped("rules[0]", 1, "k"), t0, w));
        assert!(
            d.first(&Dedup::scoped("rules[0]", 2, "k"), t0, w),
            "other user"
        );
        assert!(
            d.first(&Dedup::scoped("rules[1]", 1, "k"), t0, w),
            "other rule"
        );
        assert!(
            !d.first(&Dedup::scoped("rules[0]", 1, "k"), t0, w),
            "a retry"
        );
    }
}
