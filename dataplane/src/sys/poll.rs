//! Parking: an [`EventFd`] to wake a parked thread and a `ppoll(2)` wrapper.
//!
//! Pipeline threads spin briefly, then park in [`wait`] on their input fds
//! plus an `EventFd` that the producer upstream signals. `ppoll` (not
//! `poll`) so that timeouts below a millisecond are honoured rather than
//! rounded to a busy 0 or a sleepy 1 ms.
//!
//! `EINTR` is reported as "nothing ready" (an empty [`ReadyMask`]) rather
//! than retried: the caller's loop re-checks its state and parks again, which
//! is right whether the signal asked it to stop or not, and it keeps the
//! timeout an upper bound. veil blocks its signals in every thread
//! ([`super::block_shutdown_signals`]), so this is rare.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr;
use std::time::Duration;

use super::{cvt, cvt_size};

/// Most fds one [`wait`] call watches: one bit each in a [`ReadyMask`].
pub const MAX_WAIT_FDS: usize = 64;

/// A non-blocking eventfd: a counter that is readable while non-zero.
#[derive(Debug)]
pub struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    /// A new eventfd with counter 0.
    pub fn new() -> io::Result<EventFd> {
        // SAFETY: plain eventfd(2) call with constant arguments; no pointers.
        let raw = cvt(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
        // SAFETY: `raw` was just returned by eventfd(2), is open, and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(EventFd { fd })
    }

    /// Make the fd readable (add 1 to the counter). Never blocks: a counter
    /// at its maximum is already readable, so `WouldBlock` counts as success.
    pub fn wake(&self) -> io::Result<()> {
        let one: u64 = 1;
        loop {
            // SAFETY: writes the 8 bytes of `one` from our stack to an open eventfd.
            let ret = unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
            match cvt_size(ret) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    /// Reset the counter to 0 and return how many wakes it held (0 if none).
    pub fn drain(&self) -> io::Result<u64> {
        let mut count: u64 = 0;
        loop {
            // SAFETY: reads at most 8 bytes into `count` on our stack from an open eventfd.
            let ret =
                unsafe { libc::read(self.fd.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
            match cvt_size(ret) {
                Ok(_) => return Ok(count),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
                Err(e) => return Err(e),
            }
        }
    }
}

super::fd_wrapper!(EventFd, fd);

/// What to wait for on one fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    /// Data to read (`POLLIN`).
    Readable,
    /// Room to write (`POLLOUT`).
    Writable,
    /// Either.
    Both,
}

impl Interest {
    fn events(self) -> libc::c_short {
        match self {
            Interest::Readable => libc::POLLIN,
            Interest::Writable => libc::POLLOUT,
            Interest::Both => libc::POLLIN | libc::POLLOUT,
        }
    }
}

/// Which of the fds passed to [`wait`] are ready, by position.
///
/// An fd in error or hang-up state (`POLLERR`, `POLLHUP`) is reported ready
/// for what it was asked about, so the next read or write surfaces the error.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadyMask {
    readable: u64,
    writable: u64,
}

impl ReadyMask {
    /// Is fd number `i` (its position in the slice) readable?
    pub fn is_readable(&self, i: usize) -> bool {
        i < MAX_WAIT_FDS && self.readable & (1 << i) != 0
    }

    /// Is fd number `i` writable?
    pub fn is_writable(&self, i: usize) -> bool {
        i < MAX_WAIT_FDS && self.writable & (1 << i) != 0
    }

    /// Nothing ready: the timeout expired (or a signal interrupted the wait).
    pub fn is_empty(&self) -> bool {
        self.readable == 0 && self.writable == 0
    }
}

/// Wait until one of `fds` is ready as asked, or `timeout` passes (`None`:
/// no limit; `Some(ZERO)`: just check). At most [`MAX_WAIT_FDS`] fds.
pub fn wait(
    fds: &[(BorrowedFd<'_>, Interest)],
    timeout: Option<Duration>,
) -> io::Result<ReadyMask> {
    poll_fds(fds.iter().copied(), timeout)
}

/// [`wait`] for readability on every fd in `fds`.
pub fn wait_readable(fds: &[BorrowedFd<'_>], timeout: Option<Duration>) -> io::Result<ReadyMask> {
    poll_fds(fds.iter().map(|&fd| (fd, Interest::Readable)), timeout)
}

fn poll_fds<'fd>(
    fds: impl ExactSizeIterator<Item = (BorrowedFd<'fd>, Interest)>,
    timeout: Option<Duration>,
) -> io::Result<ReadyMask> {
    let n = fds.len();
    if n > MAX_WAIT_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "wait: more than 64 fds",
        ));
    }
    let mut pollfds = [libc::pollfd {
        fd: -1,
        events: 0,
        revents: 0,
    }; MAX_WAIT_FDS];
    for (p, (fd, interest)) in pollfds.iter_mut().zip(fds) {
        *p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: interest.events(),
            revents: 0,
        };
    }
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX),
        // Below 1e9, fits every c_long.
        tv_nsec: d.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(ptr::null(), |t| t as *const libc::timespec);

    // SAFETY: `pollfds` holds `n` initialised entries for fds borrowed for
    // this call (the kernel reads `events` and writes `revents` of those
    // only); `ts_ptr` is null or points at a timespec on our stack; a null
    // sigmask keeps the thread's mask.
    let ret = unsafe { libc::ppoll(pollfds.as_mut_ptr(), n as libc::nfds_t, ts_ptr, ptr::null()) };
    match cvt(ret) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(ReadyMask::default()),
        Err(e) => return Err(e),
    }

    let mut mask = ReadyMask::default();
    let broken = libc::POLLERR | libc::POLLHUP | libc::POLLNVAL;
    for (i, p) in pollfds.iter().take(n).enumerate() {
        let failed = p.revents & broken != 0;
        if p.revents & libc::POLLIN != 0 || (failed && p.events & libc::POLLIN != 0) {
            mask.readable |= 1 << i;
        }
        if p.revents & libc::POLLOUT != 0 || (failed && p.events & libc::POLLOUT != 0) {
            mask.writable |= 1 << i;
        }
    }
    Ok(mask)
}

/// Wait until `fd` can take a write (the TX thread after `sendmmsg` said
/// `WouldBlock`). Returns `false` on timeout or interruption.
pub fn wait_writable(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> io::Result<bool> {
    wait(&[(fd, Interest::Writable)], timeout).map(|m| m.is_writable(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::UdpSocket;
    use std::os::fd::AsFd;

    const NOW: Option<Duration> = Some(Duration::ZERO);

    #[test]
    fn eventfd_wakes_and_drains() {
        let ev = EventFd::new().expect("eventfd");
        assert!(wait_readable(&[ev.as_fd()], NOW).expect("poll").is_empty());
        ev.wake().expect("wake");
        ev.wake().expect("wake");
        let ready = wait_readable(&[ev.as_fd()], Some(Duration::from_secs(5))).expect("poll");
        assert!(ready.is_readable(0));
        assert_eq!(ev.drain().expect("drain"), 2);
        assert_eq!(ev.drain().expect("drain again"), 0);
        assert!(wait_readable(&[ev.as_fd()], NOW).expect("poll").is_empty());
    }

    #[test]
    fn wakes_a_parked_thread() {
        let ev = std::sync::Arc::new(EventFd::new().expect("eventfd"));
        let waker = std::sync::Arc::clone(&ev);
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            waker.wake().expect("wake");
        });
        let idle = EventFd::new().expect("eventfd");
        let ready = wait_readable(&[idle.as_fd(), ev.as_fd()], Some(Duration::from_secs(10)))
            .expect("poll");
        assert!(!ready.is_readable(0));
        assert!(ready.is_readable(1));
        t.join().expect("waker thread");
    }

    #[test]
    fn timeout_returns_empty() {
        let ev = EventFd::new().expect("eventfd");
        let start = std::time::Instant::now();
        let ready = wait_readable(&[ev.as_fd()], Some(Duration::from_millis(20))).expect("poll");
        assert!(ready.is_empty());
        assert!(start.elapsed() >= Duration::from_millis(20));
    }

    #[test]
    fn udp_socket_is_writable_and_mixes_interests() {
        let sock = UdpSocket::bind("127.0.0.1:0".parse().expect("addr"), false).expect("bind");
        assert!(wait_writable(sock.as_fd(), NOW).expect("poll"));
        let ev = EventFd::new().expect("eventfd");
        ev.wake().expect("wake");
        let ready = wait(
            &[
                (sock.as_fd(), Interest::Both),
                (ev.as_fd(), Interest::Writable),
            ],
            NOW,
        )
        .expect("poll");
        assert!(ready.is_writable(0) && !ready.is_readable(0));
        assert!(ready.is_writable(1) && !ready.is_readable(1));
        assert!(!ready.is_readable(64) && !ready.is_writable(1000));
    }

    #[test]
    fn too_many_fds_is_invalid_input() {
        let ev = EventFd::new().expect("eventfd");
        let fds = vec![ev.as_fd(); MAX_WAIT_FDS + 1];
        let err = wait_readable(&fds, NOW).expect_err("65 fds");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
