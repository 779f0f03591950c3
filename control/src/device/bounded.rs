//! A FIFO with a cap, for the device's queues of commands and transmits.

use std::collections::VecDeque;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use veil_dataplane::counters::bump;

use super::counters::ControlCounters;

/// A FIFO with a cap: what does not fit is dropped and counted.
pub(super) struct Bounded<T> {
    items: VecDeque<T>,
    cap: usize,
    counters: Arc<ControlCounters>,
    dropped: fn(&ControlCounters) -> &AtomicU64,
}

impl<T> Bounded<T> {
    pub(super) fn new(
        cap: usize,
        counters: Arc<ControlCounters>,
        dropped: fn(&ControlCounters) -> &AtomicU64,
    ) -> Self {
        Self {
            items: VecDeque::new(),
            cap,
            counters,
            dropped,
        }
    }

    pub(super) fn push_back(&mut self, item: T) {
        if self.items.len() >= self.cap {
            bump((self.dropped)(&self.counters), 1);
        } else {
            self.items.push_back(item);
        }
    }

    pub(super) fn pop_front(&mut self) -> Option<T> {
        self.items.pop_front()
    }

    /// Queue `item` whatever the cap: for a burst whose size the caller bounds (a restore
    /// queues a few commands per peer of its state before the control loop runs).
    pub(super) fn push_back_uncapped(&mut self, item: T) {
        self.items.push_back(item);
    }

    /// Keep only the items `keep` says yes to.
    pub(super) fn retain(&mut self, keep: impl FnMut(&T) -> bool) {
        self.items.retain(keep);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;

    #[test]
    fn a_full_queue_drops_and_counts() {
        let counters: Arc<ControlCounters> = Arc::default();
        let mut q = Bounded::new(2, counters.clone(), |c| &c.transmits_dropped);
        for i in 0..5 {
            q.push_back(i);
        }
        assert_eq!(counters.transmits_dropped.load(Ordering::Relaxed), 3);
        assert_eq!(counters.commands_dropped.load(Ordering::Relaxed), 0);
        assert_eq!(
            (q.pop_front(), q.pop_front(), q.pop_front()),
            (Some(0), Some(1), None)
        );
        q.push_back(9);
        assert_eq!(q.pop_front(), Some(9));
    }
}
