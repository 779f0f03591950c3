//! WireGuard's time constants, in one place so a test setting can shorten them.

use std::time::Duration;

/// The protocol's timers (whitepaper §6). `Default` gives the standard values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Initiator starts a new handshake when its keypair is this old (120 s).
    pub rekey_after: Duration,
    /// No keypair is used after this age (180 s).
    pub reject_after: Duration,
    /// Handshake retry interval (5 s, plus jitter).
    pub rekey_timeout: Duration,
    /// Give up retrying a handshake after this long (90 s).
    pub rekey_attempt: Duration,
    /// Send a keepalive when data arrived and nothing was sent back for this long (10 s).
    pub keepalive_timeout: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            rekey_after: Duration::from_secs(120),
            reject_after: Duration::from_secs(180),
            rekey_timeout: Duration::from_secs(5),
            rekey_attempt: Duration::from_secs(90),
            keepalive_timeout: Duration::from_secs(10),
        }
    }
}

impl Timing {
    /// Timers with `rekey_after` set to `secs`, and the others scaled to keep the
    /// protocol's proportions (for tests that must cross several rekeys quickly).
    pub fn with_rekey_after(secs: u64) -> Self {
        let base = Self::default();
        let rekey_after = Duration::from_secs(secs.max(1));
        let scale = rekey_after.as_secs_f64() / base.rekey_after.as_secs_f64();
        let s = |d: Duration| Duration::from_secs_f64((d.as_secs_f64() * scale).max(0.05));
        Self {
            rekey_after,
            reject_after: s(base.reject_after),
            rekey_timeout: s(base.rekey_timeout),
            rekey_attempt: s(base.rekey_attempt),
            keepalive_timeout: s(base.keepalive_timeout),
        }
    }

    /// A receiving initiator rekeys this early so a keypair never expires under traffic
    /// (REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT, 165 s).
    pub fn rekey_on_receive_after(&self) -> Duration {
        self.reject_after
            .saturating_sub(self.keepalive_timeout + self.rekey_timeout)
    }
}
