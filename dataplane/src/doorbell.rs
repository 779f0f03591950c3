//! Bounded spin, then park: how an idle consumer waits without burning a core.
//!
//! A consumer that found its rings empty may spin briefly on the ring state (a batch usually
//! follows soon under load), then announces it is parked, re-checks, and parks with a timeout.
//! The spin is bounded in time, makes no syscall, and is zero where there are no more cores
//! than busy dataplane threads (spinning there only delays the thread it waits for).
//! A producer rings the doorbell after each push; the doorbell costs one atomic load unless
//! the consumer is parked.

use std::time::{Duration, Instant};

use crate::sync::{fence, park_for, AtomicBool, Ordering, ThreadSlot};

/// How a parked consumer is woken.
enum Wake {
    /// It sleeps in `std::thread::park`.
    Thread(ThreadSlot),
    /// It sleeps in poll(2); this writes its eventfd.
    Custom(Box<dyn Fn() + Send + Sync>),
}

/// One consumer's doorbell.
pub struct Doorbell {
    parked: AtomicBool,
    wake: Wake,
}

impl std::fmt::Debug for Doorbell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Doorbell")
            .field("parked", &self.parked.load(Ordering::Relaxed))
            .finish()
    }
}

/// How long an idle consumer spins on its rings before parking, where there are spare cores.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(50);

/// The spin budget for `busy_threads` dataplane threads on `cores` cores: [`DEFAULT_SPIN`] only
/// if every busy thread can have a core and one is left over, else none (park at once).
pub fn spin_budget(cores: usize, busy_threads: usize) -> Duration {
    if cores > busy_threads {
        DEFAULT_SPIN
    } else {
        Duration::ZERO
    }
}

impl Doorbell {
    /// A doorbell for a thread that parks with `std::thread::park_timeout`.
    /// The thread calls [`Doorbell::register_current`] when it starts.
    pub fn for_thread() -> Self {
        Self {
            parked: AtomicBool::new(false),
            wake: Wake::Thread(ThreadSlot::new()),
        }
    }

    /// A doorbell that calls `wake` (e.g. writes an eventfd) to wake the consumer.
    pub fn custom(wake: impl Fn() + Send + Sync + 'static) -> Self {
        Self {
            parked: AtomicBool::new(false),
            wake: Wake::Custom(Box::new(wake)),
        }
    }

    /// Record the calling thread as the one to unpark.
    pub fn register_current(&self) {
        if let Wake::Thread(t) = &self.wake {
            t.set_current();
        }
    }

    /// Producer side: wake the consumer if it is parked (or about to park).
    #[inline]
    pub fn ring(&self) {
        fence(Ordering::SeqCst);
        if self.parked.load(Ordering::Relaxed) {
            self.wake_now();
        }
    }

    /// Wake the consumer unconditionally (shutdown, commands).
    pub fn wake_now(&self) {
        match &self.wake {
            Wake::Thread(t) => t.unpark(),
            Wake::Custom(f) => f(),
        }
    }

    /// Is the consumer parked (or about to park)?
    #[inline]
    pub fn is_parked(&self) -> bool {
        self.parked.load(Ordering::Relaxed)
    }

    /// Consumer side: announce that it will wait. Then re-check the rings and
    /// either call [`Doorbell::cancel`] (work arrived) or wait and call `cancel`.
    pub fn prepare_park(&self) {
        self.parked.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    /// Consumer side: no longer waiting.
    pub fn cancel(&self) {
        self.parked.store(false, Ordering::Relaxed);
    }

    /// Consumer side for thread doorbells: park unless `has_work` says otherwise,
    /// for at most `timeout`.
    pub fn park(&self, timeout: Duration, has_work: impl Fn() -> bool) {
        self.prepare_park();
        if !has_work() {
            park_for(timeout);
        }
        self.cancel();
    }
}

/// Decides when an idle loop stops spinning on its rings and parks: after `budget` of idle
/// rounds in a row (measured from the first), at once when `budget` is zero.
#[derive(Debug)]
pub struct Backoff {
    budget: Duration,
    idle_since: Option<Instant>,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(DEFAULT_SPIN)
    }
}

impl Backoff {
    /// Spin for at most `budget` before parking.
    pub fn new(budget: Duration) -> Self {
        Self {
            budget,
            idle_since: None,
        }
    }

    /// Work was done: start counting again.
    #[inline]
    pub fn reset(&mut self) {
        self.idle_since = None;
    }

    /// Nothing to do this round. Returns true when it is time to park.
    #[inline]
    pub fn idle(&mut self) -> bool {
        if self.budget.is_zero() {
            return true;
        }
        self.idle_at(Instant::now())
    }

    /// [`Backoff::idle`] at `now` (a virtual clock in tests).
    pub fn idle_at(&mut self, now: Instant) -> bool {
        let since = *self.idle_since.get_or_insert(now);
        if now.saturating_duration_since(since) >= self.budget {
            self.idle_since = None;
            true
        } else {
            std::hint::spin_loop();
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn backoff_spins_for_its_budget_then_parks() {
        let t0 = Instant::now();
        let mut b = Backoff::new(Duration::from_micros(50));
        assert!(!b.idle_at(t0));
        assert!(!b.idle_at(t0 + Duration::from_micros(49)));
        assert!(b.idle_at(t0 + Duration::from_micros(50)));
        // After parking (or work) the budget starts again.
        assert!(!b.idle_at(t0 + Duration::from_micros(60)));
        b.reset();
        assert!(!b.idle_at(t0 + Duration::from_millis(5)));
        assert!(b.idle_at(t0 + Duration::from_millis(6)));
    }

    #[test]
    fn no_spin_without_a_spare_core() {
        assert_eq!(spin_budget(2, 3), Duration::ZERO);
        assert_eq!(spin_budget(3, 3), Duration::ZERO);
        assert_eq!(spin_budget(4, 3), DEFAULT_SPIN);
        assert_eq!(spin_budget(2, 1), DEFAULT_SPIN);
        let mut b = Backoff::new(spin_budget(2, 3));
        assert!(b.idle(), "a zero budget parks on the first idle round");
    }

    #[test]
    fn parked_thread_is_woken() {
        let bell = Arc::new(Doorbell::for_thread());
        let flag = Arc::new(AtomicUsize::new(0));
        let (b2, f2) = (bell.clone(), flag.clone());
        let h = std::thread::spawn(move || {
            b2.register_current();
            let start = Instant::now();
            while f2.load(Ordering::SeqCst) == 0 {
                b2.park(Duration::from_secs(30), || f2.load(Ordering::SeqCst) != 0);
            }
            start.elapsed()
        });
        std::thread::sleep(Duration::from_millis(50));
        flag.store(1, Ordering::SeqCst);
        bell.ring();
        let waited = h.join().unwrap();
        assert!(
            waited < Duration::from_secs(30),
            "woken by the bell, not the timeout"
        );
    }
}
