//! Byte queue limits: how many bytes may be in flight from RX to TX in one direction.
//!
//! After Linux's dynamic queue limits (`lib/dynamic_queue_limits.c`, used by NIC drivers as
//! BQL): the producer (RX) stops reading a source while the bytes it handed on and TX has not
//! finished reach the limit, so packets wait in the kernel's socket or TUN queue, where they are
//! dropped or push back on the sender, rather than in a standing queue of batches. The limit
//! adapts on the consumer side (TX): it grows when TX ran dry while RX was being held back (the
//! limit cost throughput), and shrinks by the room that went unused over a hold period (the
//! limit was larger than needed to keep TX busy).
//!
//! Thread roles: one producer calls [`ByteQueue::has_room`] and [`ByteQueue::queued`]; one
//! consumer calls [`ByteQueue::completed`] with its own [`LimitTuner`]. Only atomics are shared.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Smallest limit: one GSO-sized super-packet or ~45 full-size datagrams.
pub const MIN_LIMIT: u64 = 64 * 1024;
/// Largest limit (and the start): about 2 ms of traffic at 2 GB/s.
pub const MAX_LIMIT: u64 = 4 * 1024 * 1024;
/// How long unused room must persist before the limit shrinks by it.
pub const SLACK_HOLD: Duration = Duration::from_millis(100);

/// The bytes in flight in one direction and their limit.
#[derive(Debug)]
pub struct ByteQueue {
    queued: AtomicU64,
    completed: AtomicU64,
    limit: AtomicU64,
    /// Set by the producer when it held back for the limit; cleared by the consumer.
    held: AtomicBool,
}

impl Default for ByteQueue {
    fn default() -> Self {
        Self::new(MAX_LIMIT)
    }
}

impl ByteQueue {
    /// A queue whose limit starts at `limit` (clamped to [`MIN_LIMIT`]..=[`MAX_LIMIT`]).
    pub fn new(limit: u64) -> Self {
        Self {
            queued: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            limit: AtomicU64::new(limit.clamp(MIN_LIMIT, MAX_LIMIT)),
            held: AtomicBool::new(false),
        }
    }

    /// Bytes handed on and not yet completed.
    pub fn in_flight(&self) -> u64 {
        let done = self.completed.load(Ordering::Acquire);
        self.queued.load(Ordering::Relaxed).saturating_sub(done)
    }

    /// The current limit.
    pub fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    /// Producer: may it hand on another batch? If not, the consumer learns it held back.
    pub fn has_room(&self) -> bool {
        let room = self.in_flight() < self.limit();
        if !room {
            self.held.store(true, Ordering::Relaxed);
        }
        room
    }

    /// Producer: `bytes` were handed on.
    pub fn queued(&self, bytes: u64) {
        self.queued.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Consumer: `bytes` (as queued) are finished at `now`; adapt the limit.
    pub fn completed(&self, bytes: u64, tuner: &mut LimitTuner, now: Instant) {
        self.completed.fetch_add(bytes, Ordering::Release);
        let in_flight = self.in_flight();
        let limit = self.limit();
        let held = self.held.swap(false, Ordering::Relaxed);
        let new = tuner.adapt(limit, in_flight, held, now);
        if new != limit {
            self.limit.store(new, Ordering::Relaxed);
        }
    }
}

/// The consumer's side of the adaptation: the smallest unused room seen in this hold period.
#[derive(Debug, Default)]
pub struct LimitTuner {
    period_start: Option<Instant>,
    min_slack: u64,
}

impl LimitTuner {
    /// The next limit after a completion left `in_flight` bytes queued under `limit`;
    /// `held`: the producer held back since the last completion.
    fn adapt(&mut self, limit: u64, in_flight: u64, held: bool, now: Instant) -> u64 {
        if held && in_flight == 0 {
            // TX ran dry while RX had more to give: the limit cost throughput.
            self.period_start = None;
            return limit.saturating_mul(2).min(MAX_LIMIT);
        }
        let slack = limit.saturating_sub(in_flight);
        let start = *self.period_start.get_or_insert_with(|| {
            self.min_slack = u64::MAX;
            now
        });
        self.min_slack = self.min_slack.min(slack);
        if now.saturating_duration_since(start) < SLACK_HOLD {
            return limit;
        }
        // A whole period with at least `min_slack` unused: give it back.
        let shrunk = limit.saturating_sub(self.min_slack).max(MIN_LIMIT);
        self.period_start = None;
        shrunk
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn producer_is_held_at_the_limit_and_released_by_completion() {
        let q = ByteQueue::new(MIN_LIMIT);
        let mut t = LimitTuner::default();
        let t0 = Instant::now();
        assert!(q.has_room());
        q.queued(MIN_LIMIT);
        assert_eq!(q.in_flight(), MIN_LIMIT);
        assert!(!q.has_room(), "at the limit");
        q.completed(1000, &mut t, t0);
        assert!(q.has_room());
        assert_eq!(q.in_flight(), MIN_LIMIT - 1000);
    }

    #[test]
    fn limit_grows_when_the_consumer_starves_while_the_producer_is_held() {
        let q = ByteQueue::new(MIN_LIMIT);
        let mut t = LimitTuner::default();
        let t0 = Instant::now();
        q.queued(MIN_LIMIT);
        assert!(!q.has_room());
        q.completed(MIN_LIMIT, &mut t, t0);
        assert_eq!(q.limit(), 2 * MIN_LIMIT);
        // Starving without having held back is just light traffic: no growth.
        q.queued(1000);
        q.completed(1000, &mut t, t0 + MS);
        assert_eq!(q.limit(), 2 * MIN_LIMIT);
        // Never past the maximum.
        let big = ByteQueue::new(MAX_LIMIT);
        big.queued(MAX_LIMIT);
        assert!(!big.has_room());
        big.completed(MAX_LIMIT, &mut t, t0);
        assert_eq!(big.limit(), MAX_LIMIT);
    }

    #[test]
    fn unused_room_is_given_back_after_a_hold_period() {
        let q = ByteQueue::new(MAX_LIMIT);
        let mut t = LimitTuner::default();
        let t0 = Instant::now();
        // A steady 200 KB in flight, never near the 4 MB limit.
        q.queued(200_000);
        let mut now = t0;
        while now < t0 + SLACK_HOLD {
            q.queued(50_000);
            q.completed(50_000, &mut t, now);
            assert_eq!(q.limit(), MAX_LIMIT, "held for the whole period first");
            now += 10 * MS;
        }
        q.queued(50_000);
        q.completed(50_000, &mut t, now);
        assert_eq!(q.limit(), 200_000, "shrunk to what was in flight");
        // And not below the floor.
        let mut now2 = now;
        for _ in 0..100 {
            q.completed(q.in_flight(), &mut t, now2);
            now2 += 10 * MS;
        }
        assert!(q.limit() >= MIN_LIMIT);
    }
}
