//! Step 3: the rate limit on log lines, and the summary of what it refused.

use std::time::{Duration, Instant};

use log::Level;
use veil_dataplane::ratelimit::TokenBucket;

/// How often a suppression summary may be written.
pub(super) const SUMMARY_EVERY: Duration = Duration::from_secs(1);

/// A token bucket over log lines, on an explicit clock.
#[derive(Debug)]
pub(super) struct RateLimiter {
    /// Lines per second; 0: unlimited.
    rate: u32,
    /// Capacity `rate`: a burst of one second's worth.
    bucket: TokenBucket,
    /// Refused since the last summary, by level (error, warn, info, debug, trace).
    suppressed: [u64; 5],
    /// When the lines not yet summarized began to be refused.
    since: Option<Instant>,
}

impl RateLimiter {
    pub(super) fn new(rate: u32, now: Instant) -> Self {
        let burst = f64::from(rate);
        let mut bucket = TokenBucket::full(burst);
        bucket.refill(now, burst, burst);
        Self {
            rate,
            bucket,
            suppressed: [0; 5],
            since: None,
        }
    }

    pub(super) fn admit(&mut self, level: Level, now: Instant) -> bool {
        if self.rate == 0 {
            return true;
        }
        let burst = f64::from(self.rate);
        self.bucket.refill(now, burst, burst);
        if self.bucket.try_take(1.0) {
            return true;
        }
        if let Some(n) = self.suppressed.get_mut(level as usize - 1) {
            *n += 1;
        }
        self.since.get_or_insert(now);
        false
    }

    /// The summary line, once lines were refused for a second (so one line
    /// covers a whole burst).
    pub(super) fn summary(&mut self, now: Instant) -> Option<String> {
        let since = self.since?;
        if now.saturating_duration_since(since) < SUMMARY_EVERY {
            return None;
        }
        self.since = None;
        let total: u64 = self.suppressed.iter().sum();
        let by_level: Vec<String> = ["error", "warn", "info", "debug", "trace"]
            .iter()
            .zip(self.suppressed)
            .filter(|(_, n)| *n > 0)
            .map(|(l, n)| format!("{n} {l}"))
            .collect();
        self.suppressed = [0; 5];
        Some(format!(
            "{total} log messages suppressed in the last {:.1} s ({}; rate_limit_logs_per_sec = {})",
            now.saturating_duration_since(since).as_secs_f64(),
            by_level.join(", "),
            self.rate
        ))
    }
}
