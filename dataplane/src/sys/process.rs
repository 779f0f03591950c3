//! Process-wide hardening: keep key material out of core dumps.
//!
//! veil holds its private key, preshared keys and session keys in ordinary heap memory. A core
//! file (a crash, or the unit's watchdog killing with SIGABRT) would write them to disk, so
//! `veil up` calls [`forbid_core_dumps`] before it reads its configuration:
//!
//! - `RLIMIT_CORE` 0 (soft and hard): the kernel writes no core file, and an unprivileged
//!   process cannot raise the limit again;
//! - `/proc/self/coredump_filter` 0: should a core be written anyway (a core pattern that
//!   pipes to a helper ignores `RLIMIT_CORE`), it holds no memory mapping at all, so none of
//!   the anonymous pages where the keys live;
//! - `PR_SET_DUMPABLE` 0: no core for a pipe helper either, `/proc/PID/mem`, `environ` and
//!   friends owned by root, and no `ptrace` attach by a process of the same uid. It stays 0
//!   across a later change of uid.
//!
//! [`dump_state`] reads the three back (the tests check a running veil with it).

use std::fs;
use std::io;

use super::cvt;

/// What [`forbid_core_dumps`] sets and [`dump_state`] reads back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DumpState {
    /// `PR_GET_DUMPABLE`: 0 not dumpable, 1 dumpable, 2 dumpable readable by root only.
    pub dumpable: i32,
    /// The soft and hard `RLIMIT_CORE`, in bytes (`u64::MAX` for unlimited).
    pub core_limit: (u64, u64),
    /// `/proc/self/coredump_filter`.
    pub coredump_filter: u32,
}

/// The state [`forbid_core_dumps`] leaves.
pub const NO_DUMPS: DumpState = DumpState {
    dumpable: 0,
    core_limit: (0, 0),
    coredump_filter: 0,
};

const FILTER: &str = "/proc/self/coredump_filter";

/// Set `RLIMIT_CORE` to 0, the coredump filter to 0 and the process not dumpable. Every step
/// is tried; the first error is returned (the caller warns: the tunnel can run without them).
pub fn forbid_core_dumps() -> io::Result<()> {
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit only reads the rlimit struct on our stack for the call.
    let limit = cvt(unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) }).map(drop);
    // Before PR_SET_DUMPABLE 0, which hands /proc/self files to root.
    let filter = fs::write(FILTER, "0\n");
    // SAFETY: PR_SET_DUMPABLE takes an integer argument and touches no memory of ours.
    let dumpable = cvt(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0 as libc::c_ulong) }).map(drop);
    limit.and(filter).and(dumpable)
}

/// Read the dump settings of this process back.
pub fn dump_state() -> io::Result<DumpState> {
    // SAFETY: PR_GET_DUMPABLE takes no argument and returns the flag.
    let dumpable = cvt(unsafe { libc::prctl(libc::PR_GET_DUMPABLE) })?;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct into `lim`, which lives for the call.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_CORE, &mut lim) })?;
    let text = fs::read_to_string(FILTER)?;
    let coredump_filter = u32::from_str_radix(text.trim(), 16)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{FILTER}: {e}")))?;
    Ok(DumpState {
        dumpable,
        core_limit: (lim.rlim_cur, lim.rlim_max),
        coredump_filter,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run in a child process: the settings are process-wide and one-way, and must not leak
    /// into the test harness.
    #[test]
    fn forbid_core_dumps_sets_all_three() {
        if std::env::var_os("VEIL_DUMPS_CHILD").is_some() {
            let before = dump_state().unwrap();
            assert_ne!(before, NO_DUMPS, "a fresh process starts dumpable");
            forbid_core_dumps().unwrap();
            assert_eq!(dump_state().unwrap(), NO_DUMPS);
            return;
        }
        super::super::run_test_in_child(
            "sys::process::tests::forbid_core_dumps_sets_all_three",
            "VEIL_DUMPS_CHILD",
        );
    }
}
