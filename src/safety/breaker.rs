//! A circuit breaker as a pure state machine: it is fed one health sample per interval
//! (`record(bad, now)`), opens after `trip_after` consecutive bad samples, stays open for a
//! cool-down, then goes half-open; one good sample closes it, a bad one re-opens it. Time is
//! passed in, so tests drive it with paused tokio time.

use tokio::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    /// The gauge value: 0 closed, 1 half-open, 2 open.
    pub fn gauge(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Breaker {
    pub name: &'static str,
    state: BreakerState,
    bad_streak: u32,
    trip_after: u32,
    /// How long it stays open before probing (`safety.breaker_cooldown_seconds`).
    pub cool_down: Duration,
    opened_at: Option<Instant>,
}

impl Breaker {
    pub fn new(name: &'static str, trip_after: u32, cool_down: Duration) -> Breaker {
        Breaker {
            name,
            state: BreakerState::Closed,
            bad_streak: 0,
            trip_after: trip_after.max(1),
            cool_down,
            opened_at: None,
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Whether the protected thing may run (closed, or half-open probing).
    pub fn allows(&self) -> bool {
        self.state != BreakerState::Open
    }

    /// Feeds one sample; returns the new state when it changed.
    pub fn record(&mut self, bad: bool, now: Instant) -> Option<BreakerState> {
        let before = self.state;
        match self.state {
            BreakerState::Closed => {
                self.bad_streak = if bad { self.bad_streak + 1 } else { 0 };
                if self.bad_streak >= self.trip_after {
                    self.state = BreakerState::Open;
                    self.opened_at = Some(now);
                }
            }
            BreakerState::Open => {
                let cooled = self
                    .opened_at
                    .is_some_and(|at| now.saturating_duration_since(at) >= self.cool_down);
                if cooled {
                    self.state = BreakerState::HalfOpen;
                }
            }
            BreakerState::HalfOpen => {
                if bad {
                    self.state = BreakerState::Open;
                    self.opened_at = Some(now);
                } else {
                    self.state = BreakerState::Closed;
                    self.bad_streak = 0;
                }
            }
        }
        (self.state != before).then_some(self.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_cools_down_probes_and_closes() {
        let mut b = Breaker::new("store", 3, Duration::from_secs(10));
        let tick = Duration::from_secs(1);
        assert_eq!(b.record(true, Instant::now()), None);
        tokio::time::advance(tick).await;
        assert_eq!(
            b.record(false, Instant::now()),
            None,
            "a good sample resets the streak"
        );
        for _ in 0..2 {
            tokio::time::advance(tick).await;
            assert_eq!(b.record(true, Instant::now()), None);
        }
        tokio::time::advance(tick).await;
        assert_eq!(b.record(true, Instant::now()), Some(BreakerState::Open));
        assert!(!b.allows());
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(b.record(false, Instant::now()), None, "still cooling down");
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(
            b.record(false, Instant::now()),
            Some(BreakerState::HalfOpen)
        );
        assert!(b.allows());
        tokio::time::advance(tick).await;
        assert_eq!(
            b.record(true, Instant::now()),
            Some(BreakerState::Open),
            "a failed probe re-opens"
        );
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(b.record(true, Instant::now()), Some(BreakerState::HalfOpen));
        tokio::time::advance(tick).await;
        assert_eq!(b.record(false, Instant::now()), Some(BreakerState::Closed));
        assert_eq!(b.state().gauge(), 0);
    }
}
