//! Test-only faults: a thread that stalls (stops its loop and beating until shutdown) or
//! panics on purpose, so the suite can watch health, the watchdog and the supervisor notice.
//! Compiled only with debug assertions, as the test builds are; release builds have no hooks.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::time::Duration;

use crate::role::Role;

/// Faults injected by tests: the binary arms them from `VEIL_TEST_STALL_THREAD`,
/// `VEIL_TEST_PANIC_THREAD` and the control socket's `test-stall` request.
/// Disarmed, they cost one relaxed load per loop round.
#[derive(Debug, Default)]
pub struct TestHooks {
    armed: AtomicBool,
    stall: AtomicU8,
    /// How long a stall lasts, in milliseconds; 0: until shutdown.
    stall_ms: AtomicU64,
    panic: AtomicU8,
}

impl TestHooks {
    /// From its next heartbeat on, the thread of `role` (and the single thread, which has
    /// every role's slot) stops its loop and sleeps until shutdown without beating.
    pub fn stall(&self, role: Role) {
        self.stall.fetch_or(role.slots(), Ordering::Relaxed);
        self.armed.store(true, Ordering::Release);
    }

    /// At its next heartbeat, the thread of `role` stops its loop and sleeps without beating
    /// for `time`, then goes on.
    pub fn stall_for(&self, role: Role, time: Duration) {
        let ms = u64::try_from(time.as_millis()).unwrap_or(u64::MAX).max(1);
        self.stall_ms.store(ms, Ordering::Relaxed);
        self.stall(role);
    }

    /// From its next heartbeat on, the thread of `role` panics.
    pub fn panic(&self, role: Role) {
        self.panic.fetch_or(role.slots(), Ordering::Relaxed);
        self.armed.store(true, Ordering::Release);
    }

    /// Called by a thread at its heartbeat.
    #[inline]
    pub fn at_beat(&self, role: Role, stop: &AtomicBool) {
        if self.armed.load(Ordering::Relaxed) {
            self.fire(role.slots(), stop);
        }
    }

    #[cold]
    fn fire(&self, slots: u8, stop: &AtomicBool) {
        if self.panic.load(Ordering::Acquire) & slots != 0 {
            panic!("VEIL_TEST_PANIC_THREAD: panicking on purpose");
        }
        if self.stall.load(Ordering::Acquire) & slots != 0 {
            let ms = self.stall_ms.load(Ordering::Relaxed);
            let until = (ms > 0).then(|| std::time::Instant::now() + Duration::from_millis(ms));
            while !stop.load(Ordering::Relaxed)
                && until.is_none_or(|t| std::time::Instant::now() < t)
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            if until.is_some() {
                self.stall.fetch_and(!slots, Ordering::AcqRel);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stalled_hook_returns_at_shutdown_and_panic_hook_panics() {
        let hooks = std::sync::Arc::new(TestHooks::default());
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        hooks.at_beat(Role::Single, &stop); // disarmed: returns at once
        hooks.stall(Role::Tx);
        hooks.panic(Role::Crypto);
        hooks.at_beat(Role::Rx, &stop); // another slot: returns at once
        let (h, s) = (hooks.clone(), stop.clone());
        let stalled = std::thread::spawn(move || h.at_beat(Role::Tx, &s));
        std::thread::sleep(Duration::from_millis(50));
        assert!(!stalled.is_finished());
        stop.store(true, Ordering::Relaxed);
        stalled.join().unwrap();
        // A timed stall ends by itself, once.
        let timed = TestHooks::default();
        let running = AtomicBool::new(false);
        timed.stall_for(Role::Rx, Duration::from_millis(30));
        let start = std::time::Instant::now();
        timed.at_beat(Role::Rx, &running);
        assert!(start.elapsed() >= Duration::from_millis(30));
        let again = std::time::Instant::now();
        timed.at_beat(Role::Rx, &running);
        assert!(again.elapsed() < Duration::from_millis(30));
        let h = hooks.clone();
        let s = stop.clone();
        assert!(std::thread::spawn(move || h.at_beat(Role::Crypto, &s))
            .join()
            .is_err());
    }
}
