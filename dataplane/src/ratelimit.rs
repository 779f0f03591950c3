//! Per-client rate limits: token buckets for bytes and packets, each direction
//! on its own, with a penalty for clients that exhaust their burst.
//!
//! Owned by the crypto stage (which owns all per-session state), so no locks.
//! Buckets refill continuously at the configured rate up to `rate × burst
//! factor`. A packet that finds either bucket short is dropped and counted as
//! a violation, and the client enters a **penalty** for `penalty` (default
//! 5 s, restarted by every violation): during it the bucket's capacity is the
//! plain rate (burst factor 1), so a client that abuses its burst loses it
//! until it has behaved for the whole penalty period. Sustained traffic at or
//! below the rate is never affected. Nothing is limited unless configured.

use std::time::{Duration, Instant};

/// Limits of one client (both directions get these).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Bytes per second; 0 = unlimited.
    pub bytes_per_sec: u64,
    /// Packets per second; 0 = unlimited.
    pub packets_per_sec: u64,
    /// Burst capacity as a multiple of one second's worth (≥ 1.0).
    pub burst_factor: f64,
    /// Penalty period after a violation.
    pub penalty: Duration,
}

impl RateLimit {
    /// The reliability guide's production values (100 Mb/s, 10 000 packets/s, burst 1.5,
    /// penalty 5 s): an example, as in `examples/veil-server.conf`. No limit applies unless
    /// configured; the burst factor and penalty of a configured limit default to these.
    pub const GUIDE: RateLimit = RateLimit {
        bytes_per_sec: 100 * 125_000,
        packets_per_sec: 10_000,
        burst_factor: 1.5,
        penalty: Duration::from_secs(5),
    };

    /// No limit at all.
    pub const UNLIMITED: RateLimit = RateLimit {
        bytes_per_sec: 0,
        packets_per_sec: 0,
        burst_factor: 1.0,
        penalty: Duration::ZERO,
    };

    /// Does this limit anything?
    pub fn is_limited(&self) -> bool {
        self.bytes_per_sec > 0 || self.packets_per_sec > 0
    }
}

/// A token bucket on an explicit clock. The rate and the capacity are given at each refill,
/// so one type serves buckets whose limits change while they run (a penalty that removes the
/// burst, a degradation level that halves a rate). veil's one token bucket: rate limits here,
/// initiations per source in the control crate, and log lines in the binary.
///
/// ```
/// use std::time::{Duration, Instant};
/// use veil_dataplane::ratelimit::TokenBucket;
///
/// let t0 = Instant::now();
/// let mut b = TokenBucket::full(2.0); // capacity 2, refilled at 1 token/s below
/// b.refill(t0, 1.0, 2.0);
/// assert!(b.try_take(1.0) && b.try_take(1.0) && !b.try_take(1.0));
/// b.refill(t0 + Duration::from_secs(1), 1.0, 2.0);
/// assert!(b.try_take(1.0));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenBucket {
    tokens: f64,
    /// Last refill; `None` before the first.
    last: Option<Instant>,
}

impl TokenBucket {
    /// A bucket holding `tokens`; its clock starts at the first refill.
    pub const fn full(tokens: f64) -> Self {
        Self { tokens, last: None }
    }

    /// Adds `rate` tokens per second since the last refill, up to `capacity`.
    pub fn refill(&mut self, now: Instant, rate: f64, capacity: f64) {
        let secs = self.idle_for(now).as_secs_f64();
        self.tokens = (self.tokens + secs * rate).min(capacity);
        self.last = Some(now);
    }

    /// Are there `n` tokens?
    pub fn has(&self, n: f64) -> bool {
        self.tokens >= n
    }

    /// Removes `n` tokens (after [`TokenBucket::has`]: the caller may check several buckets
    /// before taking from any).
    pub fn take(&mut self, n: f64) {
        self.tokens -= n;
    }

    /// Takes `n` tokens if there are as many.
    pub fn try_take(&mut self, n: f64) -> bool {
        let ok = self.has(n);
        if ok {
            self.take(n);
        }
        ok
    }

    /// Tokens now held (as of the last refill).
    pub fn tokens(&self) -> f64 {
        self.tokens
    }

    /// Time since the last refill at `now` (zero before the first).
    pub fn idle_for(&self, now: Instant) -> Duration {
        self.last
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t))
    }
}

/// One of a client's two buckets: `rate == 0` means unlimited.
#[derive(Debug, Clone, Copy)]
struct Budget {
    rate: f64,
    bucket: TokenBucket,
}

impl Budget {
    fn new(rate: u64, factor: f64) -> Self {
        let rate = rate as f64;
        Self {
            rate,
            bucket: TokenBucket::full(rate * factor),
        }
    }

    fn refill(&mut self, now: Instant, capacity_factor: f64) {
        if self.rate > 0.0 {
            self.bucket
                .refill(now, self.rate, self.rate * capacity_factor);
        }
    }

    fn has(&self, n: f64) -> bool {
        self.rate == 0.0 || self.bucket.has(n)
    }

    fn take(&mut self, n: f64) {
        if self.rate > 0.0 {
            self.bucket.take(n);
        }
    }
}

/// One direction of one client.
#[derive(Debug, Clone, Copy)]
pub struct DirectionLimiter {
    limit: RateLimit,
    bytes: Budget,
    packets: Budget,
    penalty_until: Option<Instant>,
}

impl DirectionLimiter {
    /// Full buckets under `limit`.
    pub fn new(limit: RateLimit) -> Self {
        let factor = limit.burst_factor.max(1.0);
        Self {
            limit,
            bytes: Budget::new(limit.bytes_per_sec, factor),
            packets: Budget::new(limit.packets_per_sec, factor),
            penalty_until: None,
        }
    }

    /// The limit in force.
    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Is the client serving a penalty at `now`?
    pub fn in_penalty(&self, now: Instant) -> bool {
        self.penalty_until.is_some_and(|t| now < t)
    }

    /// May a packet of `len` bytes pass at `now`? Takes its tokens if so; a refusal
    /// is a violation and (re)starts the penalty.
    pub fn admit(&mut self, len: usize, now: Instant) -> bool {
        if !self.limit.is_limited() {
            return true;
        }
        let factor = if self.in_penalty(now) {
            1.0
        } else {
            self.limit.burst_factor.max(1.0)
        };
        self.bytes.refill(now, factor);
        self.packets.refill(now, factor);
        let n = len as f64;
        if self.bytes.has(n) && self.packets.has(1.0) {
            self.bytes.take(n);
            self.packets.take(1.0);
            true
        } else {
            self.penalty_until = Some(now + self.limit.penalty);
            false
        }
    }
}

/// One peer's limits in both directions, shared by the crypto stages of every pipeline, so a
/// peer gets its limit once, not once per pipeline. Only limited peers have one; the lock is
/// taken per data packet of such a peer (uncontended unless the peer's traffic crosses two
/// pipelines at the same moment).
#[derive(Debug)]
pub struct PeerLimits {
    /// (from the peer, to the peer).
    directions: std::sync::Mutex<(DirectionLimiter, DirectionLimiter)>,
}

impl PeerLimits {
    /// Full buckets under `limit`, or `None` when `limit` does not limit.
    pub fn new(limit: RateLimit) -> Option<std::sync::Arc<Self>> {
        limit.is_limited().then(|| {
            std::sync::Arc::new(Self {
                directions: std::sync::Mutex::new((
                    DirectionLimiter::new(limit),
                    DirectionLimiter::new(limit),
                )),
            })
        })
    }

    /// May a packet of `len` bytes from (`inbound`) or to the peer pass at `now`?
    pub fn admit(&self, inbound: bool, len: usize, now: Instant) -> bool {
        // A poisoned lock still holds consistent buckets (admit cannot panic halfway).
        let mut d = self.directions.lock().unwrap_or_else(|e| e.into_inner());
        if inbound {
            d.0.admit(len, now)
        } else {
            d.1.admit(len, now)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(bytes: u64, packets: u64) -> RateLimit {
        RateLimit {
            bytes_per_sec: bytes,
            packets_per_sec: packets,
            burst_factor: 1.5,
            penalty: Duration::from_secs(5),
        }
    }

    /// Offer `pps` packets of `len` bytes per second for `secs`; count what passes.
    fn offer(l: &mut DirectionLimiter, t0: Instant, secs: u64, pps: u64, len: usize) -> u64 {
        let gap = Duration::from_nanos(1_000_000_000 / pps);
        (0..secs * pps)
            .filter(|i| l.admit(len, t0 + gap * (*i as u32)))
            .count() as u64
    }

    #[test]
    fn burst_then_rate() {
        let t0 = Instant::now();
        let mut l = DirectionLimiter::new(limit(1_000_000, 0));
        // 4 MB/s offered for 10 s against 1 MB/s with 1.5 MB of burst.
        let passed = offer(&mut l, t0, 10, 4000, 1000);
        let bytes = passed * 1000;
        assert!((11_000_000..=11_600_000).contains(&bytes), "{bytes}");
    }

    #[test]
    fn packets_per_second() {
        let t0 = Instant::now();
        let mut l = DirectionLimiter::new(limit(0, 2000));
        let passed = offer(&mut l, t0, 10, 10_000, 64);
        // 2000 pps for 10 s plus the 3000-packet burst, which the penalty then withholds.
        assert!((20_000..=23_100).contains(&passed), "{passed}");
    }

    #[test]
    fn under_the_rate_nothing_is_dropped() {
        let t0 = Instant::now();
        let mut l = DirectionLimiter::new(limit(1_000_000, 1000));
        assert_eq!(offer(&mut l, t0, 10, 900, 1000), 9000);
        assert!(!l.in_penalty(t0 + Duration::from_secs(10)));
    }

    #[test]
    fn penalty_removes_burst_until_it_expires() {
        let t0 = Instant::now();
        let mut l = DirectionLimiter::new(limit(0, 100));
        // Exhaust the burst: 150 pass, the 151st is a violation.
        assert_eq!((0..151).filter(|_| l.admit(1, t0)).count(), 150);
        assert!(l.in_penalty(t0));
        // Two seconds idle: in penalty the bucket only refills to 100.
        let t1 = t0 + Duration::from_secs(2);
        assert_eq!((0..150).filter(|_| l.admit(1, t1)).count(), 100);
        // Behaved for longer than the penalty: the burst is back.
        let t2 = t1 + Duration::from_secs(10);
        assert!(!l.in_penalty(t2));
        assert_eq!((0..200).filter(|_| l.admit(1, t2)).count(), 150);
    }

    #[test]
    fn unlimited_passes_everything() {
        let mut l = DirectionLimiter::new(RateLimit::UNLIMITED);
        let t0 = Instant::now();
        assert!((0..100_000).all(|_| l.admit(9000, t0)));
    }
}
