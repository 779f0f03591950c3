//! Bounded spin, then park: how an idle consumer waits without burning a core.
//!
//! A consumer that found its rings empty spins briefly (a batch usually follows
//! soon under load), then announces it is parked, re-checks, and parks with a
//! timeout. A producer rings the doorbell after each push; the doorbell costs one
//! atomic load unless the consumer is parked.

use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::OnceLock;
use std::thread::Thread;
use std::time::Duration;

/// How a parked consumer is woken.
enum Wake {
    /// It sleeps in `std::thread::park`.
    Thread(OnceLock<Thread>),
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

/// Spins before parking.
pub const SPIN_ROUNDS: u32 = 200;

impl Doorbell {
    /// A doorbell for a thread that parks with `std::thread::park_timeout`.
    /// The thread calls [`Doorbell::register_current`] when it starts.
    pub fn for_thread() -> Self {
        Self {
            parked: AtomicBool::new(false),
            wake: Wake::Thread(OnceLock::new()),
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
            let _ = t.set(std::thread::current());
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
            Wake::Thread(t) => {
                if let Some(t) = t.get() {
                    t.unpark();
                }
            }
            Wake::Custom(f) => f(),
        }
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
            std::thread::park_timeout(timeout);
        }
        self.cancel();
    }
}

/// Counts idle rounds so a loop spins a little before parking.
#[derive(Debug, Default)]
pub struct Backoff {
    idle: u32,
}

impl Backoff {
    /// Work was done: start counting again.
    #[inline]
    pub fn reset(&mut self) {
        self.idle = 0;
    }

    /// Nothing to do this round. Returns true when it is time to park.
    #[inline]
    pub fn idle(&mut self) -> bool {
        self.idle += 1;
        if self.idle < SPIN_ROUNDS {
            std::hint::spin_loop();
            if self.idle % 32 == 0 {
                std::thread::yield_now();
            }
            false
        } else {
            self.idle = 0;
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::time::Instant;

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
