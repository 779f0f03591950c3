//! The WireGuard anti-replay window (RFC 6479 style sliding bitmap).
//!
//! The window keeps `WINDOW_BITS` counters behind the highest one seen; a
//! counter older than that, or one already seen, is rejected. Only update the
//! window after the packet has authenticated: otherwise a forger could slide
//! it forward.

use crate::REJECT_AFTER_MESSAGES;

const WORD_BITS: u64 = u64::BITS as u64;
/// Words of the bitmap ([`ReplayWindow::to_parts`]).
pub const WORDS: usize = 128;
const TOTAL_BITS: u64 = WORDS as u64 * WORD_BITS;

/// How many counters behind the newest one are still accepted (8128).
pub const WINDOW_BITS: u64 = TOTAL_BITS - WORD_BITS;

/// Sliding bitmap of received counters for one receive key.
#[derive(Clone)]
pub struct ReplayWindow {
    /// One more than the highest counter accepted so far (0: nothing yet).
    next: u64,
    bitmap: [u64; WORDS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayWindow")
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl ReplayWindow {
    /// An empty window: every counter below the reject limit is acceptable.
    pub const fn new() -> Self {
        Self {
            next: 0,
            bitmap: [0; WORDS],
        }
    }

    /// The highest counter accepted so far, if any.
    pub fn highest(&self) -> Option<u64> {
        self.next.checked_sub(1)
    }

    /// Would `counter` be accepted? Does not change the window; use it to
    /// reject stale packets before spending an AEAD open on them.
    pub fn check(&self, counter: u64) -> bool {
        if counter >= REJECT_AFTER_MESSAGES {
            return false;
        }
        let c = counter + 1;
        if c > self.next {
            return true;
        }
        if self.next - c >= WINDOW_BITS {
            return false;
        }
        let (word, bit) = Self::slot(c);
        self.bitmap[word] & bit == 0
    }

    /// Accept `counter` if it is new and inside the window, marking it seen.
    /// Returns false (and changes nothing) for a replay or a too-old counter.
    pub fn check_and_update(&mut self, counter: u64) -> bool {
        if !self.check(counter) {
            return false;
        }
        let c = counter + 1;
        if c > self.next {
            let current = self.next / WORD_BITS;
            let target = c / WORD_BITS;
            let advance = (target - current).min(WORDS as u64);
            for i in 1..=advance {
                self.bitmap[((current + i) % WORDS as u64) as usize] = 0;
            }
            self.next = c;
        }
        let (word, bit) = Self::slot(c);
        self.bitmap[word] |= bit;
        true
    }

    /// The window's state, to carry it into another process (a live hand-off): one more than
    /// the highest counter accepted, and the bitmap.
    pub fn to_parts(&self) -> (u64, [u64; WORDS]) {
        (self.next, self.bitmap)
    }

    /// A window from [`ReplayWindow::to_parts`]. `next` past the reject limit is clamped there
    /// (every later counter is refused, as it would have been).
    pub fn from_parts(next: u64, bitmap: [u64; WORDS]) -> Self {
        Self {
            next: next.min(REJECT_AFTER_MESSAGES),
            bitmap,
        }
    }

    fn slot(c: u64) -> (usize, u64) {
        (
            ((c / WORD_BITS) % WORDS as u64) as usize,
            1u64 << (c % WORD_BITS),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_carry_the_window() {
        let mut w = ReplayWindow::new();
        for c in [0, 1, 5, 9000, 9002] {
            assert!(w.check_and_update(c));
        }
        let (next, bitmap) = w.to_parts();
        let mut back = ReplayWindow::from_parts(next, bitmap);
        for c in [5, 9000, 9002, 0] {
            assert!(
                !back.check_and_update(c),
                "replayed counter {c} accepted after restore"
            );
        }
        assert!(back.check_and_update(9001));
        assert!(back.check_and_update(9003));
    }

    #[test]
    fn in_order_accepted_once() {
        let mut w = ReplayWindow::new();
        for c in 0..10_000 {
            assert!(w.check_and_update(c), "counter {c}");
        }
        for c in 0..10_000 {
            assert!(!w.check_and_update(c), "replayed counter {c}");
        }
        assert_eq!(w.highest(), Some(9_999));
    }

    #[test]
    fn reordered_inside_window() {
        let mut w = ReplayWindow::new();
        assert!(w.check_and_update(100));
        assert!(w.check_and_update(50));
        assert!(w.check_and_update(99));
        assert!(w.check_and_update(0));
        assert!(!w.check_and_update(50));
        assert!(!w.check_and_update(100));
        assert!(w.check_and_update(101));
    }

    #[test]
    fn too_old_rejected_and_limits() {
        let mut w = ReplayWindow::new();
        let top = 20_000;
        assert!(w.check_and_update(top));
        // Exactly at the oldest position still inside the window.
        let oldest_ok = top + 1 - WINDOW_BITS;
        assert!(w.check(oldest_ok));
        assert!(!w.check(oldest_ok - 1), "one past the window");
        assert!(w.check_and_update(oldest_ok));
        assert!(!w.check_and_update(oldest_ok));
        assert!(!w.check_and_update(0));
    }

    #[test]
    fn big_jump_clears_bitmap() {
        let mut w = ReplayWindow::new();
        for c in 0..200 {
            assert!(w.check_and_update(c));
        }
        let far = 1_000_000;
        assert!(w.check_and_update(far));
        // Counters in the recycled words must not appear as seen.
        for c in (far - WINDOW_BITS + 1)..far {
            assert!(w.check(c), "counter {c} should be fresh");
        }
        assert!(!w.check(199));
    }

    #[test]
    fn reject_limit() {
        let mut w = ReplayWindow::new();
        assert!(!w.check_and_update(REJECT_AFTER_MESSAGES));
        assert!(!w.check_and_update(u64::MAX));
        assert!(w.check_and_update(REJECT_AFTER_MESSAGES - 1));
        assert!(!w.check_and_update(REJECT_AFTER_MESSAGES - 1));
        assert!(w.check_and_update(REJECT_AFTER_MESSAGES - 2));
    }

    #[test]
    fn window_is_at_least_2048() {
        const { assert!(WINDOW_BITS >= 2048) };
    }
}
