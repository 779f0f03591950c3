//! A stage's state that exactly one thread holds at a time, handed over without waiting.
//!
//! The crypto and TX stages normally run on their own threads. When traffic is light and such a
//! thread is parked, RX runs the stage itself for a small batch (run-to-completion) instead of
//! waking it: it takes the stage's [`Baton`], runs one round, and puts it back. Taking never
//! blocks: a thread that finds the baton taken does something else (RX hands off as usual; the
//! stage's own thread parks, and RX, after it puts the baton back, wakes that thread if the
//! stage has work left).
//! So the per-session state stays owned by exactly one thread at any moment, and every access
//! goes through a [`Held`] guard.

use crate::sync::{fence, AtomicBool, Mutex, MutexGuard, Ordering};

/// A value one thread at a time may hold.
#[derive(Debug)]
pub struct Baton<T> {
    value: Mutex<T>,
    /// The stage's own thread found the baton taken and is about to park: whoever puts it
    /// back must wake it ([`Baton::waited_for`]).
    waiting: AtomicBool,
}

/// The baton, held: gives the value until dropped.
pub type Held<'a, T> = MutexGuard<'a, T>;

impl<T> Baton<T> {
    /// Wrap `value`.
    pub fn new(value: T) -> Self {
        Self {
            value: Mutex::new(value),
            waiting: AtomicBool::new(false),
        }
    }

    /// Take the baton if nobody holds it. Never waits. `None` also if a holder panicked
    /// (the value may be half-updated; the dataplane is stopping then).
    pub fn try_take(&self) -> Option<Held<'_, T>> {
        // Err is WouldBlock (held) or Poisoned (a holder panicked): not taken either way.
        self.value.try_lock().ok()
    }

    /// For the stage's own thread deciding whether to park: [`Baton::try_take`], and when
    /// the baton is taken, a note that the holder must wake this thread after putting it back
    /// (then one more try, in case it was put back before the note was seen). Without the
    /// note, work that came (from another producer) while the holder was looking at the stage
    /// one last time would wait for the park's timeout.
    pub fn try_take_or_wait(&self) -> Option<Held<'_, T>> {
        if let Some(held) = self.try_take() {
            return Some(held);
        }
        self.waiting.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        let held = self.try_take();
        if held.is_some() {
            // Not parking after all; a note left behind costs one needless wake at most.
            self.waiting.store(false, Ordering::Relaxed);
        }
        held
    }

    /// For a holder that put the baton back: did the stage's thread park (or is it about to)
    /// because it found the baton taken? Then wake it. Clears the note.
    pub fn waited_for(&self) -> bool {
        fence(Ordering::SeqCst);
        self.waiting.load(Ordering::Relaxed) && self.waiting.swap(false, Ordering::Relaxed)
    }

    /// The value back, once no thread shares the baton any more.
    pub fn into_inner(self) -> Option<T> {
        self.value.into_inner().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;

    #[test]
    fn only_one_holder_at_a_time() {
        let b = Baton::new(5u32);
        let held = b.try_take().expect("free");
        assert!(b.try_take().is_none(), "taken while held");
        drop(held);
        let mut again = b.try_take().expect("free again");
        *again += 1;
        drop(again);
        assert_eq!(b.into_inner(), Some(6));
    }

    /// Two threads passing the value back and forth never see it shared: a counter updated
    /// non-atomically (load, store) under the baton loses no increment.
    #[test]
    fn handed_over_between_threads_without_sharing() {
        let b = Arc::new(Baton::new(0u64));
        let inside = Arc::new(AtomicBool::new(false));
        let taken = Arc::new(AtomicU64::new(0));
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let (b, inside, taken) = (b.clone(), inside.clone(), taken.clone());
                std::thread::spawn(move || {
                    let mut mine = 0;
                    while mine < 20_000 {
                        if let Some(mut v) = b.try_take() {
                            assert!(!inside.swap(true, Ordering::SeqCst), "two holders");
                            *v += 1;
                            inside.store(false, Ordering::SeqCst);
                            mine += 1;
                        } else {
                            std::hint::spin_loop();
                        }
                    }
                    taken.fetch_add(mine, Ordering::Relaxed);
                })
            })
            .collect();
        for w in workers {
            w.join().expect("worker");
        }
        let b = Arc::into_inner(b).expect("last owner");
        assert_eq!(b.into_inner(), Some(taken.load(Ordering::Relaxed)));
        assert_eq!(taken.load(Ordering::Relaxed), 40_000);
    }

    #[test]
    fn a_panicked_holder_leaves_it_untaken() {
        let b = Arc::new(Baton::new(1u8));
        let b2 = b.clone();
        let _ = std::thread::spawn(move || {
            let _held = b2.try_take();
            panic!("holder fails");
        })
        .join();
        assert!(b.try_take().is_none());
    }
}
