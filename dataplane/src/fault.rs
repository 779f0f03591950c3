//! When I/O fails on a dataplane thread: which errors are transient (pause with a
//! growing backoff, count, go on) and which are fatal (record a [`Fault`], stop
//! every thread, let the runtime exit non-zero so the service manager restarts
//! veil). Also the test-only hooks that stall or crash one thread on purpose.
//!
//! Nothing here runs per packet: errors are looked at once per round, after the
//! batched read that failed.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

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

/// What an I/O error means for the thread that got it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Retry after a pause (ENOBUFS, ENOMEM, a queued ICMP error, …).
    Transient,
    /// The fd is unusable for good: stop veil (TUN device deleted, socket gone).
    Fatal,
}

/// Class of an error from `op`.
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
        ErrorClass::Fatal
    } else {
        ErrorClass::Transient
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
        if classify(op, &error) == ErrorClass::Fatal {
            return Some(Verdict::Fatal(Fault { thread, op, error }));
        }
        if self.streak == 0 {
            // Once per streak, not per error: the counters have the totals.
            log::warn!(
                class = "transient";
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

// ---------------------------------------------------------------------------------------------
// Test-only hooks

/// Heartbeat slots of a thread name, as a bit mask (bit = slot in
/// [`crate::pipeline::Shared::heartbeats`]). `veil-single` has all four.
pub fn slots_of_thread(name: &str) -> Option<u8> {
    use crate::pipeline::{HEARTBEAT_CONTROL, HEARTBEAT_CRYPTO, HEARTBEAT_RX, HEARTBEAT_TX};
    let slot = match name {
        "veil-rx" => HEARTBEAT_RX,
        "veil-crypto" => HEARTBEAT_CRYPTO,
        "veil-tx" => HEARTBEAT_TX,
        "veil-control" => HEARTBEAT_CONTROL,
        "veil-single" => return Some(0b1111),
        _ => return None,
    };
    Some(1 << slot)
}

/// Faults injected by tests (`VEIL_TEST_STALL_THREAD`, `VEIL_TEST_PANIC_THREAD`).
/// Disarmed, they cost one relaxed load per loop round.
#[derive(Debug, Default)]
pub struct TestHooks {
    armed: AtomicBool,
    stall: AtomicU8,
    panic: AtomicU8,
}

impl TestHooks {
    /// From now on, the threads of `stall` slots stop their loop and sleep until
    /// shutdown without beating; those of `panic` slots panic.
    pub fn arm(&self, stall: u8, panic: u8) {
        self.stall.store(stall, Ordering::Relaxed);
        self.panic.store(panic, Ordering::Relaxed);
        self.armed.store(stall | panic != 0, Ordering::Release);
    }

    /// Called by a thread at its heartbeat for the slots it beats.
    #[inline]
    pub fn at_beat(&self, slots: u8, stop: &AtomicBool) {
        if self.armed.load(Ordering::Relaxed) {
            self.fire(slots, stop);
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

    fn os(errno: i32) -> io::Error {
        io::Error::from_raw_os_error(errno)
    }

    #[test]
    fn deleted_tun_is_fatal_transient_udp_is_not() {
        assert_eq!(
            classify(IoOp::TunRead, &os(libc::EBADFD)),
            ErrorClass::Fatal
        );
        assert_eq!(classify(IoOp::TunRead, &os(libc::EIO)), ErrorClass::Fatal);
        assert_eq!(
            classify(IoOp::TunRead, &os(libc::ENOMEM)),
            ErrorClass::Transient
        );
        for errno in [
            libc::ENOBUFS,
            libc::ENOMEM,
            libc::ECONNREFUSED,
            libc::EHOSTUNREACH,
        ] {
            assert_eq!(
                classify(IoOp::UdpReceive, &os(errno)),
                ErrorClass::Transient
            );
        }
        assert_eq!(
            classify(IoOp::UdpReceive, &os(libc::EBADF)),
            ErrorClass::Fatal
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

    #[test]
    fn thread_names_map_to_slots() {
        assert_eq!(slots_of_thread("veil-rx"), Some(0b0001));
        assert_eq!(slots_of_thread("veil-tx"), Some(0b0100));
        assert_eq!(slots_of_thread("veil-single"), Some(0b1111));
        assert_eq!(slots_of_thread("veil-nope"), None);
    }

    #[test]
    fn stalled_hook_returns_at_shutdown_and_panic_hook_panics() {
        let hooks = std::sync::Arc::new(TestHooks::default());
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        hooks.at_beat(0b1111, &stop); // disarmed: returns at once
        hooks.arm(0b0100, 0b0010);
        hooks.at_beat(0b0001, &stop); // another slot: returns at once
        let (h, s) = (hooks.clone(), stop.clone());
        let stalled = std::thread::spawn(move || h.at_beat(0b0100, &s));
        std::thread::sleep(Duration::from_millis(50));
        assert!(!stalled.is_finished());
        stop.store(true, Ordering::Relaxed);
        stalled.join().unwrap();
        let h = hooks.clone();
        let s = stop.clone();
        assert!(std::thread::spawn(move || h.at_beat(0b0010, &s))
            .join()
            .is_err());
    }
}
