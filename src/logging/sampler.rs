//! Step 2: sampling of routine records.

use std::sync::atomic::{AtomicU64, Ordering};

use log::Level;

/// Keeps a fixed share of routine records, spread evenly (no randomness).
#[derive(Debug)]
pub(super) struct Sampler {
    /// Parts per million kept.
    ppm: u64,
    seen: AtomicU64,
}

impl Sampler {
    pub(super) fn new(rate: f64) -> Self {
        Self {
            ppm: (rate.clamp(0.0, 1.0) * 1e6).round() as u64,
            seen: AtomicU64::new(0),
        }
    }

    /// Keep the next routine record? True for `ppm` in every million, evenly.
    pub(super) fn keep(&self) -> bool {
        if self.ppm >= 1_000_000 {
            return true;
        }
        let n = u128::from(self.seen.fetch_add(1, Ordering::Relaxed));
        let ppm = u128::from(self.ppm);
        (n + 1) * ppm / 1_000_000 > n * ppm / 1_000_000
    }
}

/// Debug and trace records are routine: per-handshake, per-retry, per-frame events.
pub(super) fn is_routine(level: Level) -> bool {
    level >= Level::Debug
}
