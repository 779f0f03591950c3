//! All system calls of veil, behind safe wrappers on `OwnedFd`.
//!
//! This is the only module of the workspace allowed to use `unsafe`; every
//! block carries a `// SAFETY:` comment. Everything here is Linux only and
//! returns [`std::io::Error`], so callers keep the errno (`raw_os_error`) and
//! the [`std::io::ErrorKind`] (notably `WouldBlock` on the non-blocking fds).
//!
//! - [`tun`]: TUN devices ([`Tun`]), single and multi-queue.
//!
//! Namespaces: a socket or TUN device belongs to the network namespace of the
//! *thread* that created it, so create them on the thread (or before the
//! `unshare`) that should own them.
#![cfg(target_os = "linux")]

pub mod tun;

pub use tun::Tun;

use std::io;

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
