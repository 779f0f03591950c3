//! The client side's circuit breaker per peer, sans-IO: after a handshake round gives up
//! (no response for REKEY_ATTEMPT_TIME), the peer's breaker opens and no handshake is sent to
//! it for a backoff that doubles with each failure, with jitter, up to a cap. When the
//! backoff ends the breaker is half-open: one initiation may go; its response closes the
//! breaker, its REKEY_TIMEOUT without one opens it again for the next backoff.

use std::time::{Duration, Instant};

/// The first backoff after a round gave up.
pub const BACKOFF_BASE: Duration = Duration::from_secs(5);
/// The longest backoff.
pub const BACKOFF_CAP: Duration = Duration::from_secs(300);
/// Jitter takes up to this part off a backoff (so peers that failed together do not retry
/// together).
pub const JITTER_FRACTION: f64 = 0.25;

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Handshakes go as usual.
    Closed,
    /// No handshake until the backoff ends.
    Open,
    /// One trial initiation may go (or is out).
    HalfOpen,
}

impl BreakerState {
    /// "closed", "open" or "half-open".
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
        }
    }

    /// 0 closed, 1 half-open, 2 open: a gauge.
    pub fn as_gauge(self) -> u8 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        }
    }
}

/// One peer's breaker.
#[derive(Debug, Clone, Default)]
pub struct Breaker {
    /// Failures in a row (rounds given up, trials unanswered).
    failures: u32,
    /// Open until then; `None` when closed.
    open_until: Option<Instant>,
}

/// The backoff after `failures` failures in a row (at least one), before jitter:
/// BASE, 2 BASE, 4 BASE, ... up to the cap.
pub fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    BACKOFF_BASE
        .saturating_mul(1u32 << doublings)
        .min(BACKOFF_CAP)
}

impl Breaker {
    /// The state at `now`.
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.open_until {
            None => BreakerState::Closed,
            Some(t) if now < t => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }

    /// Failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// When the current backoff ends (open or half-open).
    pub fn open_until(&self) -> Option<Instant> {
        self.open_until
    }

    /// May a handshake go to the peer at `now`? Closed: yes; half-open: the trial; open: no.
    pub fn allows(&self, now: Instant) -> bool {
        self.state(now) != BreakerState::Open
    }

    /// A handshake round gave up, or the half-open trial got no response: open for the next
    /// backoff. `jitter` in [0, 1) takes up to [`JITTER_FRACTION`] off it. Returns the backoff.
    pub fn failed(&mut self, now: Instant, jitter: f64) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let full = backoff(self.failures);
        let off = full.mul_f64(JITTER_FRACTION * jitter.clamp(0.0, 1.0));
        let wait = full.saturating_sub(off);
        self.open_until = Some(now + wait);
        wait
    }

    /// A handshake completed: closed, the failures forgotten.
    pub fn succeeded(&mut self) {
        self.failures = 0;
        self.open_until = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_up_to_the_cap() {
        let secs: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(backoff(u32::MAX), BACKOFF_CAP);
    }

    #[test]
    fn jitter_takes_at_most_a_quarter_off() {
        let t0 = Instant::now();
        let mut b = Breaker::default();
        assert_eq!(b.failed(t0, 0.0), Duration::from_secs(5));
        let mut b = Breaker::default();
        assert_eq!(b.failed(t0, 0.5), Duration::from_millis(4375));
        let mut b = Breaker::default();
        let w = b.failed(t0, 0.999_999);
        assert!(w > Duration::from_millis(3750) && w <= Duration::from_secs(5));
        // Out-of-range jitter is clamped, never a longer wait than the schedule.
        let mut b = Breaker::default();
        assert_eq!(b.failed(t0, 7.0), Duration::from_millis(3750));
    }

    #[test]
    fn closed_open_half_open_and_back() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut b = Breaker::default();
        assert_eq!(b.state(t0), BreakerState::Closed);
        assert!(b.allows(t0));
        // Closed -> Open: a round gave up.
        b.failed(t0, 0.0);
        assert_eq!(b.state(at(4)), BreakerState::Open);
        assert!(!b.allows(at(4)));
        // Open -> HalfOpen: the backoff ended.
        assert_eq!(b.state(at(5)), BreakerState::HalfOpen);
        assert!(b.allows(at(5)));
        // HalfOpen -> Open: the trial got no response; the next backoff is twice as long.
        b.failed(at(10), 0.0);
        assert_eq!(b.failures(), 2);
        assert_eq!(b.state(at(19)), BreakerState::Open);
        assert_eq!(b.state(at(20)), BreakerState::HalfOpen);
        // HalfOpen -> Closed: the trial was answered; the schedule starts over.
        b.succeeded();
        assert_eq!(b.state(at(20)), BreakerState::Closed);
        assert_eq!(b.failures(), 0);
        assert_eq!(b.failed(at(30), 0.0), BACKOFF_BASE);
    }

    #[test]
    fn failures_in_a_row_reach_the_cap_and_stay_there() {
        let mut now = Instant::now();
        let mut b = Breaker::default();
        let mut waits = Vec::new();
        for _ in 0..10 {
            let w = b.failed(now, 0.0);
            waits.push(w.as_secs());
            now += w;
            assert_eq!(b.state(now), BreakerState::HalfOpen);
        }
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 300, 300, 300, 300]);
    }
}
