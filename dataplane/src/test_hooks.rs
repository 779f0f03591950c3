//! Test-only faults: a thread that stalls (stops its loop and beating until shutdown) or
//! panics on purpose, so the suite can watch health, the watchdog and the supervisor notice.
//! Compiled only with debug assertions, as the test builds are; release builds have no hooks.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;

use crate::role::Role;

/// Faults injected by tests: the binary arms them from `VEIL_TEST_STALL_THREAD`,
/// `VEIL_TEST_PANIC_THREAD` and the control socket's `test-stall` request.
/// Disarmed, they cost one relaxed load per loop round.
#[derive(Debug, Default)]
pub struct TestHooks {
    armed: AtomicBool,
    stall: AtomicU8,
    panic: AtomicU8,
}

impl TestHooks {
    /// From its next heartbeat on, the thread of `role` (and the single thread, which has
    /// every role's slot) stops its loop and sleeps until shutdown without beating.
    pub fn stall(&self, role: Role) {
        self.stall.fetch_or(role.slots(), Ordering::Relaxed);
        self.armed.store(true, Ordering::Release);
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
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
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
        let h = hooks.clone();
        let s = stop.clone();
        assert!(std::thread::spawn(move || h.at_beat(Role::Crypto, &s))
            .join()
            .is_err());
    }
}
