//! All system calls of veil, behind safe wrappers on `OwnedFd`.
//!
//! This is the only module of the workspace allowed to use `unsafe`; every
//! block carries a `// SAFETY:` comment. Everything here is Linux only and
//! returns [`std::io::Error`], so callers keep the errno (`raw_os_error`) and
//! the [`std::io::ErrorKind`] (notably `WouldBlock` on the non-blocking fds).
//!
//! - [`tun`]: TUN devices ([`Tun`]), single and multi-queue.
//! - [`netlink`]: rtnetlink link / address / route setup ([`Netlink`]).
//! - [`udp`]: the tunnel's UDP socket with `recvmmsg` / `sendmmsg` batches ([`UdpSocket`]).
//! - [`poll`]: [`EventFd`] wake-ups and a small `ppoll(2)` wrapper ([`wait`]).
//! - [`thread`]: CPU sets, pinning and thread ids.
//! - [`process`]: keeping key material out of core dumps ([`forbid_core_dumps`]).
//! - [`privilege`]: giving up root, keeping `CAP_NET_ADMIN` ([`privilege::drop_to`]).
//! - [`signals`]: blocking the shutdown signals and reading them from a [`SignalFd`].
//!
//! Namespaces: a socket or TUN device belongs to the network namespace of the
//! *thread* that created it, so create them on the thread (or before the
//! `unshare`) that should own them.
#![cfg(target_os = "linux")]

pub mod handoff;
pub mod netlink;
pub mod poll;
pub mod privilege;
pub mod process;
pub mod signals;
pub mod thread;
pub mod tun;
pub mod udp;

pub use netlink::{LinkInfo, Netlink, Rule, RuleKind};
pub use poll::{wait, wait_readable, wait_writable, EventFd, Interest, ReadyMask, MAX_WAIT_FDS};
pub use process::{dump_state, forbid_core_dumps, DumpState, NO_DUMPS};
pub use signals::{block_shutdown_signals, request_shutdown, ShutdownSignal, SignalFd};
pub use thread::{available_cpus, current_tid, pin_current_thread, CpuNotAllowed};
pub use tun::Tun;
pub use udp::{SendOutcome, UdpSocket};

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `AsFd` and `AsRawFd` for a wrapper type, through its fd-owning `field`.
macro_rules! fd_wrapper {
    ($ty:ty, $field:ident) => {
        impl std::os::fd::AsFd for $ty {
            fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
                std::os::fd::AsFd::as_fd(&self.$field)
            }
        }

        impl std::os::fd::AsRawFd for $ty {
            fn as_raw_fd(&self) -> std::os::fd::RawFd {
                std::os::fd::AsRawFd::as_raw_fd(&self.$field)
            }
        }
    };
}
use fd_wrapper;

/// Run an `ssize_t`-returning call until it is not interrupted (EINTR).
fn retry_size(mut call: impl FnMut() -> libc::ssize_t) -> io::Result<usize> {
    loop {
        match cvt_size(call()) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Turn a libc return value (`-1` + errno on failure) into an `io::Result`.
fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// [`cvt`] for the `ssize_t` returning calls (read, write, send, recv).
fn cvt_size(ret: libc::ssize_t) -> io::Result<usize> {
    // A non-negative ssize_t always fits usize; -1 (or any negative) is an error.
    usize::try_from(ret).map_err(|_| io::Error::last_os_error())
}

/// Set an `int`-valued socket option.
fn setsockopt_int(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `fd` is a live descriptor for the borrow; we pass a pointer to a
    // c_int on our stack together with its exact size, which the kernel only reads.
    let ret = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            socklen_of::<libc::c_int>(),
        )
    };
    cvt(ret).map(drop)
}

/// Read an `int`-valued socket option.
fn getsockopt_int(fd: BorrowedFd<'_>, level: libc::c_int, name: libc::c_int) -> io::Result<i32> {
    let mut value: libc::c_int = 0;
    let mut len = socklen_of::<libc::c_int>();
    // SAFETY: `fd` is live; `value`/`len` are valid for writes and `len` holds
    // the size of `value`, so the kernel writes at most that many bytes.
    let ret = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    cvt(ret).map(|_| value)
}

/// `size_of::<T>()` as a `socklen_t`; only used for small fixed C structs.
const fn socklen_of<T>() -> libc::socklen_t {
    // The structs passed here are at most a few hundred bytes, so this never truncates.
    std::mem::size_of::<T>() as libc::socklen_t
}

/// Test-only: run the unit test `test` (its full path) again in a child process with `var`
/// set, for settings that are process-wide and one-way; the child's output is the failure.
#[cfg(test)]
pub(crate) fn run_test_in_child(test: &str, var: &str) {
    let exe = std::env::current_exe().expect("test binary");
    let out = std::process::Command::new(exe)
        .args(["--exact", test, "--nocapture"])
        .env(var, "1")
        .output()
        .expect("run the child");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && text.contains("1 passed"), "{text}");
}
