//! Histograms recorded on a dataplane thread and read by another, without locks.
//!
//! The recording thread owns a [`Recorder`]: it records into a histogram of its own (no
//! allocation, no atomic, no lock) and, at most once per handover period, passes the filled
//! histogram to the reading side through an SPSC ring and takes an emptied one back through
//! another. The reader owns the [`Collector`], which adds what arrives to a running total.
//! Histograms are allocated once, when the pair is made.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use veil_dataplane::sampler::histogram_pair;
//!
//! let (mut rec, mut col) = histogram_pair(1, 1_000_000, Duration::ZERO).unwrap();
//! rec.record(250);
//! rec.flush_if_due(Instant::now());
//! assert_eq!(col.collect().len(), 1);
//! ```

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rtrb::{Consumer, Producer, RingBuffer};

/// Significant figures kept by every sampler histogram (1 % resolution).
pub const SIGFIG: u8 = 2;

/// Spare histograms in flight between the two sides.
const SPARES: usize = 2;

/// The recording thread's side.
pub struct Recorder {
    current: Histogram<u64>,
    full: Producer<Histogram<u64>>,
    empty: Consumer<Histogram<u64>>,
    every: Duration,
    last: Option<Instant>,
}

/// The reading side: a running total of everything recorded.
pub struct Collector {
    full: Consumer<Histogram<u64>>,
    empty: Producer<Histogram<u64>>,
    total: Histogram<u64>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("pending", &self.current.len())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field("total", &self.total.len())
            .finish_non_exhaustive()
    }
}

/// Why a histogram pair could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoundsError;

impl std::fmt::Display for BoundsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("histogram bounds must satisfy 1 <= low and 2 * low <= high")
    }
}

impl std::error::Error for BoundsError {}

/// A recorder and its collector for values in `low..=high` (larger ones are recorded as
/// `high`), handing over at most every `every`.
pub fn histogram_pair(
    low: u64,
    high: u64,
    every: Duration,
) -> Result<(Recorder, Collector), BoundsError> {
    let make = || Histogram::<u64>::new_with_bounds(low, high, SIGFIG).map_err(|_| BoundsError);
    let (full_p, full_c) = RingBuffer::new(SPARES);
    let (mut empty_p, empty_c) = RingBuffer::new(SPARES);
    for _ in 0..SPARES {
        let _ = empty_p.push(make()?);
    }
    Ok((
        Recorder {
            current: make()?,
            full: full_p,
            empty: empty_c,
            every,
            last: None,
        },
        Collector {
            full: full_c,
            empty: empty_p,
            total: make()?,
        },
    ))
}

impl Recorder {
    /// Record one value (clamped into the histogram's range).
    #[inline]
    pub fn record(&mut self, value: u64) {
        let v = value.clamp(self.current.low(), self.current.high());
        self.current.saturating_record(v);
    }

    /// Hand the values recorded so far to the collector if the period passed and the
    /// collector has given back an empty histogram; otherwise keep recording into this one.
    #[inline]
    pub fn flush_if_due(&mut self, now: Instant) {
        if self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < self.every)
            || self.current.is_empty()
        {
            return;
        }
        self.last = Some(now);
        if self.full.is_full() {
            return;
        }
        let Ok(spare) = self.empty.pop() else {
            return;
        };
        let filled = std::mem::replace(&mut self.current, spare);
        let _ = self.full.push(filled);
    }
}

impl Collector {
    /// Everything handed over so far, added up.
    pub fn collect(&mut self) -> &Histogram<u64> {
        while let Ok(mut h) = self.full.pop() {
            // Same bounds on both sides, so adding cannot fail; a failure would only lose samples.
            let _ = self.total.add(&h);
            h.reset();
            let _ = self.empty.push(h);
        }
        &self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_arrive_once_per_period_and_histograms_circulate() {
        let (mut rec, mut col) = histogram_pair(1, 1000, Duration::from_secs(1)).unwrap();
        let t0 = Instant::now();
        rec.record(5);
        rec.flush_if_due(t0);
        assert_eq!(col.collect().len(), 1);
        rec.record(7);
        rec.flush_if_due(t0 + Duration::from_millis(10));
        assert_eq!(col.collect().len(), 1, "not due yet");
        for i in 1..10u32 {
            rec.record(10_000); // clamped to the top
            rec.flush_if_due(t0 + Duration::from_secs(i.into()));
            col.collect();
        }
        let total = col.collect();
        assert_eq!(total.len(), 11);
        assert!(total.max() >= 990);
    }

    #[test]
    fn a_slow_collector_loses_nothing() {
        let (mut rec, mut col) = histogram_pair(1, 1000, Duration::ZERO).unwrap();
        let t0 = Instant::now();
        for i in 0..10u32 {
            rec.record(3);
            rec.flush_if_due(t0 + Duration::from_millis(i.into()));
        }
        // The rings were full part of the time: the rest stayed in the recorder.
        assert!(col.collect().len() <= 10);
        rec.flush_if_due(t0 + Duration::from_secs(1));
        assert_eq!(col.collect().len(), 10);
    }
}
