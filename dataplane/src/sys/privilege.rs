//! Least privilege: give up root once the interface is set up, keeping only the capabilities
//! the running tunnel still needs (`CAP_NET_ADMIN`: routes for `wg set` AllowedIPs, the
//! forced socket buffer sizes).
//!
//! [`drop_to`] changes every thread's user and groups (glibc applies `setresuid` and friends
//! to all threads of the process), but capabilities and `NO_NEW_PRIVS` belong to the thread
//! that sets them and are inherited only by threads it starts later. So the caller drops on
//! the main thread *before* it starts the threads that need `CAP_NET_ADMIN`; a thread that
//! already runs (the log writer) keeps no capability at all after the change of user.
//!
//! Done with `libc` directly rather than the `caps` crate: it is three calls (`prctl`,
//! `capset`, `capget`) next to the other system calls here, and the process needs no
//! capability *names* or set algebra, only "exactly these, nothing else".

use std::io;

use super::cvt;

/// `CAP_NET_ADMIN`, the one capability a running veil keeps.
pub const CAP_NET_ADMIN: u32 = 12;

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const CAP_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// A thread's capability sets, as bit masks (bit N = capability N).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// What the thread may use now.
    pub effective: u64,
    /// What it may make effective.
    pub permitted: u64,
    /// What a program it executes may keep.
    pub inheritable: u64,
}

/// A user account to run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Its name.
    pub name: String,
    /// Its user id.
    pub uid: u32,
    /// Its primary group.
    pub gid: u32,
}

/// The account called `name` (through NSS, as `getpwnam(3)`), or `None` if there is none.
pub fn lookup_user(name: &str) -> io::Result<Option<Account>> {
    match nix::unistd::User::from_name(name) {
        Ok(user) => Ok(user.map(|u| Account {
            name: u.name,
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
        })),
        Err(e) => Err(io::Error::from(e)),
    }
}

/// The effective user id of the process.
pub fn effective_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// The calling thread's capabilities.
pub fn capabilities() -> io::Result<Capabilities> {
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget writes two CapData structs (version 3) into `data` and may rewrite the
    // header's version; both live on our stack for the call.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut CapHeader,
            data.as_mut_ptr(),
        ) as libc::c_int
    })?;
    let join = |f: fn(&CapData) -> u32| u64::from(f(&data[0])) | (u64::from(f(&data[1])) << 32);
    Ok(Capabilities {
        effective: join(|d| d.effective),
        permitted: join(|d| d.permitted),
        inheritable: join(|d| d.inheritable),
    })
}

/// Set the calling thread's effective and permitted sets to exactly `keep`, its inheritable
/// and ambient sets empty.
fn set_capabilities(keep: u64) -> io::Result<()> {
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let word = |shift: u32| (keep >> shift) as u32;
    let data = [
        CapData {
            effective: word(0),
            permitted: word(0),
            inheritable: 0,
        },
        CapData {
            effective: word(32),
            permitted: word(32),
            inheritable: 0,
        },
    ];
    // SAFETY: capset reads the header and two CapData structs (version 3) from our stack.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        ) as libc::c_int
    })?;
    // SAFETY: PR_CAP_AMBIENT_CLEAR_ALL takes integer arguments only.
    cvt(unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    })?;
    Ok(())
}

/// `PR_SET_NO_NEW_PRIVS`: no program this thread (or a thread or child it starts later)
/// executes gains privileges through set-user-id bits or file capabilities.
fn set_no_new_privs() -> io::Result<()> {
    // SAFETY: PR_SET_NO_NEW_PRIVS takes integer arguments only.
    cvt(unsafe {
        libc::prctl(
            libc::PR_SET_NO_NEW_PRIVS,
            1 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    })
    .map(drop)
}

/// The mask of the capabilities in `caps`.
pub fn mask(caps: &[u32]) -> u64 {
    caps.iter()
        .filter(|&&c| c < 64)
        .fold(0, |m, &c| m | (1u64 << c))
}

/// Become `account` (user, primary group, no supplementary groups) keeping exactly the
/// capabilities in `keep` on the calling thread, and set `NO_NEW_PRIVS`. Needs root (or
/// `CAP_SETUID`, `CAP_SETGID` and the capabilities kept). One way: nothing gets root back.
pub fn drop_to(account: &Account, keep: &[u32]) -> io::Result<()> {
    use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};
    // SAFETY: PR_SET_KEEPCAPS takes integer arguments only.
    cvt(unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1 as libc::c_ulong) })?;
    let gid = Gid::from_raw(account.gid);
    let uid = Uid::from_raw(account.uid);
    setgroups(&[]).map_err(io::Error::from)?;
    setresgid(gid, gid, gid).map_err(io::Error::from)?;
    setresuid(uid, uid, uid).map_err(io::Error::from)?;
    // The change of uid cleared the effective set; permitted kept what it had (KEEPCAPS).
    set_capabilities(mask(keep))?;
    // SAFETY: as above; the flag only matters for a later change of uid, and there is none.
    cvt(unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0 as libc::c_ulong) })?;
    set_no_new_privs()
}

/// For a process that is not root: keep only `keep` of what it was given (e.g. ambient
/// capabilities from a service manager) and set `NO_NEW_PRIVS`.
pub fn restrict_to(keep: &[u32]) -> io::Result<()> {
    let have = capabilities()?;
    set_capabilities(mask(keep) & have.permitted)?;
    set_no_new_privs()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks() {
        assert_eq!(mask(&[CAP_NET_ADMIN]), 1 << 12);
        assert_eq!(mask(&[0, 33, 99]), 1 | (1 << 33));
    }

    /// In a child process (one way, process-wide), as root: drop to `nobody` keeping
    /// CAP_NET_ADMIN; a thread started afterwards has the same.
    #[test]
    fn drop_keeps_net_admin_only() {
        if effective_uid() != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        if std::env::var_os("VEIL_PRIV_CHILD").is_some() {
            let nobody = lookup_user("nobody").unwrap().expect("a nobody account");
            drop_to(&nobody, &[CAP_NET_ADMIN]).unwrap();
            let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
            let field = |k: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(k))
                    .map(str::trim)
                    .unwrap_or_default()
                    .to_string()
            };
            assert!(
                field("Uid:").starts_with(&nobody.uid.to_string()),
                "{status}"
            );
            assert_eq!(field("CapEff:"), "0000000000001000", "{status}");
            assert_eq!(field("CapPrm:"), "0000000000001000", "{status}");
            assert_eq!(field("CapInh:"), "0000000000000000", "{status}");
            assert_eq!(field("NoNewPrivs:"), "1", "{status}");
            let later = std::thread::spawn(capabilities).join().unwrap().unwrap();
            assert_eq!(later.effective, 1 << CAP_NET_ADMIN);
            // Root is gone for good.
            assert!(nix::unistd::setuid(nix::unistd::Uid::from_raw(0)).is_err());
            return;
        }
        super::super::run_test_in_child(
            "sys::privilege::tests::drop_keeps_net_admin_only",
            "VEIL_PRIV_CHILD",
        );
    }
}
