//! When I/O fails on a dataplane thread: which errors are transient (pause with a
//! growing backoff, count, go on) and which are fatal (record a [`Fault`], stop
//! every thread, let the runtime exit non-zero so the service manager restarts
//! veil).
//!
//! Nothing here runs per packet: errors are looked at once per round, after the
//! batched read that failed.

use std::fmt;
use std::io;
use std::sync::OnceLock;
use std::time::Duration;

use crate::error_class::ErrorClass;

/// What a thread was doing when the error came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoOp {
    /// recvmmsg on the UDP socket.
    UdpReceive,
    /// read(2) on the TUN device.
    TunRead,
}

impl IoOp {
    fn describe(self) -> &'static str {
        match self {
            IoOp::UdpReceive => "receiving from the UDP socket",
            IoOp::TunRead => "reading the TUN device",
        }
    }
}

/// Class of an error from `op`: [`ErrorClass::Restart`] when the fd is unusable for good
/// (TUN device deleted, socket gone), else [`ErrorClass::Retry`] (ENOBUFS, ENOMEM, a queued
/// ICMP error, …).
///
/// A deleted TUN interface makes every read fail with `EBADFD` (and poll report
/// `POLLERR`, so a loop that retried would spin); `EIO` is what a dead device
/// reports on older kernels. `EBADF`, `EFAULT`, `EINVAL`, `ENOTSOCK` can only
/// come from a bug and will repeat on every call.
pub fn classify(op: IoOp, e: &io::Error) -> ErrorClass {
    let errno = e.raw_os_error();
    let fatal = match op {
        IoOp::TunRead => matches!(
            errno,
            Some(
                libc::EBADFD
                    | libc::EIO
                    | libc::ENODEV
                    | libc::ENXIO
                    | libc::EBADF
                    | libc::EFAULT
                    | libc::EINVAL
            )
        ),
        IoOp::UdpReceive => matches!(
            errno,
            Some(libc::EBADF | libc::ENOTSOCK | libc::EFAULT | libc::EINVAL)
        ),
    };
    if fatal {
        ErrorClass::Restart
    } else {
        ErrorClass::Retry
    }
}

/// A fatal error on a dataplane thread: the reason veil is stopping.
#[derive(Debug)]
pub struct Fault {
    /// Thread name, e.g. `veil-rx`.
    pub thread: &'static str,
    /// What it was doing.
    pub op: IoOp,
    /// The error.
    pub error: io::Error,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} failed: {}",
            self.thread,
            self.op.describe(),
            self.error
        )?;
        if self.op == IoOp::TunRead && self.error.raw_os_error() == Some(libc::EBADFD) {
            f.write_str(" (the TUN interface was deleted)")?;
        }
        Ok(())
    }
}

/// The first fault of the process (later ones are consequences and are dropped).
#[derive(Debug, Default)]
pub struct FaultCell(OnceLock<Fault>);

impl FaultCell {
    /// Record `fault` unless one is already there. Returns whether it was recorded.
    pub fn set(&self, fault: Fault) -> bool {
        self.0.set(fault).is_ok()
    }

    /// The recorded fault.
    pub fn get(&self) -> Option<&Fault> {
        self.0.get()
    }
}

/// First pause after a transient error.
pub const BACKOFF_FIRST: Duration = Duration::from_millis(1);
/// Longest pause: keeps a thread that also serves the other fd responsive.
pub const BACKOFF_MAX: Duration = Duration::from_millis(64);

/// Errors seen by one thread in the current round, and its backoff.
#[derive(Debug, Default)]
pub struct IoTrouble {
    /// First error of this round.
    pending: Option<(IoOp, io::Error)>,
    /// Rounds in a row that had an error.
    streak: u32,
    /// Errors since the streak began.
    errors_in_streak: u64,
    /// What failed last in the streak.
    last_op: Option<IoOp>,
}

/// What the thread must do about the errors of a round.
#[derive(Debug)]
pub enum Verdict {
    /// Pause this long (the backoff), then go on.
    Pause(Duration),
    /// Stop: record this fault.
    Fatal(Fault),
}

impl IoTrouble {
    /// Remember an error of this round (the first of the round is kept).
    pub fn note(&mut self, op: IoOp, error: io::Error) {
        self.errors_in_streak += 1;
        if self.pending.is_none() {
            self.pending = Some((op, error));
        }
    }

    /// End of a round: `None` when the round had no error (a streak that ends is
    /// logged as recovered), otherwise what to do.
    pub fn settle(&mut self, thread: &'static str) -> Option<Verdict> {
        let Some((op, error)) = self.pending.take() else {
            if self.streak > 0 {
                log::info!(
                    "{thread}: {} works again after {} error(s)",
                    self.last_op.map_or("I/O", IoOp::describe),
                    self.errors_in_streak
                );
                self.streak = 0;
                self.errors_in_streak = 0;
            }
            return None;
        };
        self.last_op = Some(op);
        if classify(op, &error) == ErrorClass::Restart {
            return Some(Verdict::Fatal(Fault { thread, op, error }));
        }
        if self.streak == 0 {
            // Once per streak, not per error: the counters have the totals.
            log::warn!(
                class = ErrorClass::Retry.as_str();
                "{thread}: {} failed: {error}; retrying with backoff",
                op.describe()
            );
        }
        self.streak = self.streak.saturating_add(1);
        Some(Verdict::Pause(backoff(self.streak)))
    }
}

/// The pause after the `streak`-th failing round in a row: 1 ms, doubling, at most
/// [`BACKOFF_MAX`].
pub fn backoff(streak: u32) -> Duration {
    let shift = streak.saturating_sub(1).min(16);
    BACKOFF_FIRST.saturating_mul(1 << shift).min(BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(errno: i32) -> io::Error {
        io::Error::from_raw_os_error(errno)
    }

    #[test]
    fn deleted_tun_is_fatal_transient_udp_is_not() {
        assert_eq!(
            classify(IoOp::TunRead, &os(libc::EBADFD)),
            ErrorClass::Restart
        );
        assert_eq!(classify(IoOp::TunRead, &os(libc::EIO)), ErrorClass::Restart);
        assert_eq!(
            classify(IoOp::TunRead, &os(libc::ENOMEM)),
            ErrorClass::Retry
        );
        for errno in [
            libc::ENOBUFS,
            libc::ENOMEM,
            libc::ECONNREFUSED,
            libc::EHOSTUNREACH,
        ] {
            assert_eq!(classify(IoOp::UdpReceive, &os(errno)), ErrorClass::Retry);
        }
        assert_eq!(
            classify(IoOp::UdpReceive, &os(libc::EBADF)),
            ErrorClass::Restart
        );
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_millis(1));
        assert_eq!(backoff(2), Duration::from_millis(2));
        assert_eq!(backoff(4), Duration::from_millis(8));
        assert_eq!(backoff(7), BACKOFF_MAX);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }

    #[test]
    fn trouble_pauses_then_recovers_and_fatal_is_reported() {
        let mut t = IoTrouble::default();
        assert!(t.settle("veil-rx").is_none());
        t.note(IoOp::UdpReceive, os(libc::ENOBUFS));
        t.note(IoOp::UdpReceive, os(libc::ENOBUFS));
        assert!(matches!(t.settle("veil-rx"), Some(Verdict::Pause(d)) if d == BACKOFF_FIRST));
        t.note(IoOp::UdpReceive, os(libc::ENOBUFS));
        assert!(
            matches!(t.settle("veil-rx"), Some(Verdict::Pause(d)) if d == Duration::from_millis(2))
        );
        assert!(t.settle("veil-rx").is_none());
        t.note(IoOp::UdpReceive, os(libc::ENOBUFS));
        assert!(matches!(t.settle("veil-rx"), Some(Verdict::Pause(d)) if d == BACKOFF_FIRST));
        t.note(IoOp::TunRead, os(libc::EBADFD));
        match t.settle("veil-rx") {
            Some(Verdict::Fatal(f)) => {
                assert_eq!(f.op, IoOp::TunRead);
                let text = f.to_string();
                assert!(
                    text.starts_with("veil-rx: reading the TUN device failed"),
                    "{text}"
                );
                assert!(text.contains("deleted"), "{text}");
            }
            other => panic!("expected a fatal verdict, got {other:?}"),
        }
    }

    #[test]
    fn first_fault_wins() {
        let cell = FaultCell::default();
        let fault = |thread| Fault {
            thread,
            op: IoOp::TunRead,
            error: os(libc::EBADFD),
        };
        assert!(cell.set(fault("veil-rx")));
        assert!(!cell.set(fault("veil-single")));
        assert_eq!(cell.get().map(|f| f.thread), Some("veil-rx"));
    }
}
