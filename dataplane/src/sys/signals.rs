//! Shutdown and reload signals, read from a pollable fd instead of a handler.
//!
//! The runtime calls [`block_shutdown_signals`] on the main thread before it
//! spawns any other, so every thread inherits the mask and the kernel never
//! interrupts a pipeline thread mid-batch. The control thread then polls a
//! [`SignalFd`] next to its other fds and acts on what it reads.

use std::io;

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd as NixSignalFd};

/// A signal veil acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShutdownSignal {
    /// `SIGINT` (Ctrl-C): shut down.
    Interrupt,
    /// `SIGTERM` (systemd stop): shut down, draining sessions.
    Terminate,
    /// `SIGHUP`: reload the configuration.
    Hangup,
}

impl ShutdownSignal {
    fn from_raw(signo: i32) -> Option<ShutdownSignal> {
        match signo {
            libc::SIGINT => Some(ShutdownSignal::Interrupt),
            libc::SIGTERM => Some(ShutdownSignal::Terminate),
            libc::SIGHUP => Some(ShutdownSignal::Hangup),
            _ => None,
        }
    }
}

fn shutdown_set() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGHUP);
    set
}

/// Block `SIGINT`, `SIGTERM` and `SIGHUP` in the calling thread (threads
/// spawned afterwards inherit the mask). Blocked signals stay pending until
/// a [`SignalFd`] reads them.
pub fn block_shutdown_signals() -> io::Result<()> {
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&shutdown_set()), None)
        .map_err(io::Error::from)
}

/// A non-blocking signalfd for the three signals of [`block_shutdown_signals`].
///
/// It only sees signals that are blocked in the reading thread, and only
/// signals sent to the process or to the reading thread itself.
#[derive(Debug)]
pub struct SignalFd {
    inner: NixSignalFd,
}

impl SignalFd {
    /// A signalfd for `SIGINT`, `SIGTERM`, `SIGHUP`.
    pub fn new() -> io::Result<SignalFd> {
        let flags = SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC;
        let inner = NixSignalFd::with_flags(&shutdown_set(), flags).map_err(io::Error::from)?;
        Ok(SignalFd { inner })
    }

    /// The next pending signal, or `None` when none is pending.
    pub fn read(&self) -> io::Result<Option<ShutdownSignal>> {
        loop {
            match self.inner.read_signal() {
                // The fd's mask holds only our three, so from_raw is total in practice;
                // anything else is skipped rather than misreported.
                Ok(Some(info)) => match ShutdownSignal::from_raw(info.ssi_signo as i32) {
                    Some(sig) => return Ok(Some(sig)),
                    None => continue,
                },
                Ok(None) => return Ok(None),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Sends `SIGTERM` to this process, as `kill PID` or systemd's stop would: `veil down` takes
/// the same shutdown path as the signal. Process-directed, so whichever thread reads the
/// signalfd (the main thread; the others block the signal) gets it.
pub fn request_shutdown() -> io::Result<()> {
    nix::sys::signal::kill(nix::unistd::Pid::this(), Signal::SIGTERM).map_err(io::Error::from)
}

super::fd_wrapper!(SignalFd, inner);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::wait_readable;
    use std::os::fd::AsFd;
    use std::time::Duration;

    // Each test runs on its own thread and signals only that thread
    // (raise() is tgkill on the caller), so the test harness is untouched.

    #[test]
    fn blocks_the_three_signals_and_inherits() {
        std::thread::spawn(|| {
            block_shutdown_signals().expect("block");
            let mask = SigSet::thread_get_mask().expect("mask");
            for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
                assert!(mask.contains(s), "{s:?} blocked");
            }
            assert!(!mask.contains(Signal::SIGUSR1));
            let child = std::thread::spawn(|| SigSet::thread_get_mask().expect("mask"))
                .join()
                .expect("child");
            assert!(
                child.contains(Signal::SIGTERM),
                "spawned threads inherit the mask"
            );
        })
        .join()
        .expect("signal thread");
    }

    #[test]
    fn signalfd_reports_which_signal() {
        std::thread::spawn(|| {
            block_shutdown_signals().expect("block");
            let fd = SignalFd::new().expect("signalfd");
            assert_eq!(fd.read().expect("read"), None);
            nix::sys::signal::raise(Signal::SIGHUP).expect("raise");
            let ready = wait_readable(&[fd.as_fd()], Some(Duration::from_secs(5))).expect("poll");
            assert!(ready.is_readable(0));
            assert_eq!(fd.read().expect("read"), Some(ShutdownSignal::Hangup));
            nix::sys::signal::raise(Signal::SIGTERM).expect("raise");
            assert_eq!(fd.read().expect("read"), Some(ShutdownSignal::Terminate));
            assert_eq!(fd.read().expect("read"), None);
        })
        .join()
        .expect("signal thread");
    }
}
