//! Safety controls that are pure state machines (time passed in, tested without sockets):
//! the per-client handshake limiter and the idempotency de-duplicator. Both are bounded.
//! `health` counts the server-side stream failures the `stream_health` breaker judges.

pub mod breaker;
pub mod health;

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The sidecar's breakers, fed once a second by the lifecycle's sampler.
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
    /// Server-side stream failures since the last sample, per client address.
    pub health: health::StreamHealth,
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
            health: Default::default(),
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

/// Token buckets of new-stream handshakes per client address.
#[derive(Default)]
pub struct HandshakeLimiter {
    buckets: HashMap<IpAddr, (f64, Instant)>,
}

impl HandshakeLimiter {
    /// Takes one token for `ip`; `Err(retry_after)` when its bucket is empty.
    pub fn admit(
        &mut self,
        ip: IpAddr,
        now: Instant,
        rate: f64,
        burst: u32,
    ) -> Result<(), Duration> {
        if self.buckets.len() >= MAX_CLIENTS && !self.buckets.contains_key(&ip) {
            // Forget clients whose bucket has refilled; under a flood of distinct addresses
            // fail open (the connection limit still holds).
            let full_after = Duration::from_secs_f64(burst as f64 / rate);
            self.buckets
                .retain(|_, (_, at)| now.saturating_duration_since(*at) < full_after);
            if self.buckets.len() >= MAX_CLIENTS {
                return Ok(());
            }
        }
        let (tokens, at) = self.buckets.entry(ip).or_insert((burst as f64, now));
        let refill = now.saturating_duration_since(*at).as_secs_f64() * rate;
        *tokens = (*tokens + refill).min(burst as f64);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / rate))
        }
    }
}

/// Remembers idempotency keys for a window, so a retried mutation publishes once.
#[derive(Default)]
pub struct Dedup {
    seen: HashMap<String, Instant>,
    order: VecDeque<(String, Instant)>,
}

impl Dedup {
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
}
