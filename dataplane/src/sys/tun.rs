//! TUN devices: the tunnel's inner side, one IP packet per `read` / `write`.
//!
//! Devices are opened with `IFF_TUN | IFF_NO_PI` (bare IP packets, no 4-byte
//! packet-info header) and are *not* persistent: the interface disappears
//! when the last queue's fd is closed, so a crashed veil leaves nothing behind.
//! The fds are non-blocking; wait for readiness with [`super::poll`].
//!
//! [`Tun::create_offloaded`] adds `IFF_VNET_HDR` and asks for checksum offload and TSO (and
//! USO where the kernel has it): every read and write then starts with a `virtio_net_hdr`
//! (see [`crate::offload`]), and a read may return a 64 KiB super-packet.

use std::ffi::CStr;
use std::fs::OpenOptions;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use crate::offload::TunOffloads;

/// One queue of a TUN interface.
///
/// `read`/`write` take `&self`: the kernel serialises access per fd, so one
/// thread may read while another writes.
#[derive(Debug)]
pub struct Tun {
    fd: OwnedFd,
    name: String,
    ifindex: u32,
    offloads: TunOffloads,
}

impl Tun {
    /// Create the TUN interface `name` (e.g. `"veil0"`, or `"veil%d"` to let
    /// the kernel pick the number; an empty name means `"tun%d"`).
    ///
    /// Needs `CAP_NET_ADMIN`. The interface is created down, without
    /// addresses; configure it with [`super::Netlink`].
    pub fn create(name: &str) -> io::Result<Tun> {
        open_queue(name, TUN_FLAGS)
    }

    /// Create the TUN interface `name` with a virtio-net header and segmentation offloads:
    /// checksum offload and TSO for IPv4 and IPv6, plus USO where the kernel accepts it.
    /// A kernel that takes none of them gets a plain device ([`Tun::create`]); see
    /// [`Tun::offloads`] for what is on. Only on little-endian hosts (the header is in the
    /// host's order there); elsewhere this is [`Tun::create`].
    pub fn create_offloaded(name: &str) -> io::Result<Tun> {
        if cfg!(target_endian = "big") {
            return Tun::create(name);
        }
        let mut tun = open_queue(name, TUN_FLAGS | libc::IFF_VNET_HDR)?;
        if tun.offer_offloads() {
            Ok(tun)
        } else {
            // Closing the only queue removes the interface, so the name is free again.
            let actual = tun.name.clone();
            drop(tun);
            Tun::create(&actual)
        }
    }

    /// Turn on checksum offload and TSO (and USO where the kernel takes it) on a queue opened
    /// with `IFF_VNET_HDR`; false if the kernel takes none of them.
    fn offer_offloads(&mut self) -> bool {
        let base = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;
        let uso = libc::TUN_F_USO4 | libc::TUN_F_USO6;
        let uso = if set_offload(&self.fd, base | uso).is_ok() {
            true
        } else if set_offload(&self.fd, base).is_ok() {
            false
        } else {
            return false;
        };
        self.offloads = TunOffloads { vnet: true, uso };
        true
    }

    /// [`Tun::create_multiqueue`] with the offloads of [`Tun::create_offloaded`] on every
    /// queue; a kernel that takes none gets plain queues.
    pub fn create_multiqueue_offloaded(name: &str, queues: usize) -> io::Result<Vec<Tun>> {
        if cfg!(target_endian = "big") {
            return Tun::create_multiqueue(name, queues);
        }
        let mut all = multiqueue(name, queues, libc::IFF_VNET_HDR)?;
        if all.iter_mut().all(Tun::offer_offloads) {
            return Ok(all);
        }
        let actual = all.first().map(|t| t.name.clone()).unwrap_or_default();
        drop(all);
        Tun::create_multiqueue(&actual, queues)
    }

    /// A queue of interface `name` that another veil process opened and passed over (a live
    /// hand-off), with the offloads it turned on.
    pub fn adopt(fd: OwnedFd, name: &str, offloads: TunOffloads) -> io::Result<Tun> {
        let ifindex = nix::net::if_::if_nametoindex(name).map_err(io::Error::from)?;
        Ok(Tun {
            fd,
            name: name.to_string(),
            ifindex,
            offloads,
        })
    }

    /// The offloads in force (all off for [`Tun::create`]).
    pub fn offloads(&self) -> TunOffloads {
        self.offloads
    }

    /// Read one packet into `bufs` in order (a virtio header and head, then the spill of a
    /// super-packet). Returns the total length, or `WouldBlock`.
    pub fn read_vectored(&self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        let n = libc::c_int::try_from(bufs.len()).unwrap_or(libc::c_int::MAX);
        // SAFETY: IoSliceMut is ABI-compatible with iovec; each points at a live, exclusively
        // borrowed buffer for the call, and `n` does not exceed the slice's length.
        super::retry_size(|| unsafe { libc::readv(self.fd.as_raw_fd(), bufs.as_ptr().cast(), n) })
    }

    /// Write one packet gathered from `bufs` (a virtio header, the first packet, the payloads
    /// coalesced after it), so a super-packet is never copied together in userspace.
    pub fn write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let n = libc::c_int::try_from(bufs.len()).unwrap_or(libc::c_int::MAX);
        // SAFETY: IoSlice is ABI-compatible with iovec; each points at a live buffer that the
        // kernel only reads, and `n` does not exceed the slice's length.
        super::retry_size(|| unsafe { libc::writev(self.fd.as_raw_fd(), bufs.as_ptr().cast(), n) })
    }

    /// Create a multi-queue TUN interface with `queues` queues
    /// (`IFF_MULTI_QUEUE`), one per pipeline. The kernel spreads flows across
    /// queues, so each pipeline sees a stable subset of the flows.
    pub fn create_multiqueue(name: &str, queues: usize) -> io::Result<Vec<Tun>> {
        multiqueue(name, queues, 0)
    }

    /// The interface name the kernel assigned.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The interface index, for [`super::Netlink`] calls.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Read one IP packet into `buf`. A packet longer than `buf` is truncated
    /// by the kernel, so size `buf` for the MTU. Returns `WouldBlock` when no
    /// packet is queued.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `fd` is owned by self and open; `buf` is valid for
        // `buf.len()` bytes of writes for the duration of the call.
        super::retry_size(|| unsafe {
            libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len())
        })
    }

    /// Write one IP packet. Returns `WouldBlock` when the interface's queue is
    /// full.
    pub fn write(&self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: `fd` is owned by self and open; `buf` is valid for
        // `buf.len()` bytes of reads for the duration of the call.
        super::retry_size(|| unsafe {
            libc::write(self.fd.as_raw_fd(), buf.as_ptr().cast(), buf.len())
        })
    }
}

super::fd_wrapper!(Tun, fd);

const TUN_FLAGS: libc::c_int = libc::IFF_TUN | libc::IFF_NO_PI;

/// `TUNSETOFFLOAD` with `flags` (`TUN_F_*`).
/// Open `queues` queues of the multi-queue TUN interface `name`, each with `extra` flags.
fn multiqueue(name: &str, queues: usize, extra: libc::c_int) -> io::Result<Vec<Tun>> {
    if queues == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a TUN device needs at least one queue",
        ));
    }
    let flags = TUN_FLAGS | libc::IFF_MULTI_QUEUE | extra;
    let first = open_queue(name, flags)?;
    // Attach the other queues by the name the kernel actually chose, so a
    // "%d" pattern does not create a second interface.
    let actual = first.name.clone();
    let mut all = Vec::with_capacity(queues);
    all.push(first);
    for _ in 1..queues {
        all.push(open_queue(&actual, flags)?);
    }
    Ok(all)
}

fn set_offload(fd: &OwnedFd, flags: libc::c_uint) -> io::Result<()> {
    // SAFETY: TUNSETOFFLOAD takes its argument by value (an unsigned long of flags); no
    // memory is passed.
    let ret = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TUNSETOFFLOAD,
            libc::c_ulong::from(flags),
        )
    };
    super::cvt(ret).map(drop)
}

/// Open /dev/net/tun and attach it to interface `name` with `flags`.
fn open_queue(name: &str, flags: libc::c_int) -> io::Result<Tun> {
    let mut req = ifreq_named(name)?;
    req.ifr_ifru.ifru_flags = flags as libc::c_short;

    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")?;
    let fd = OwnedFd::from(file);

    // SAFETY: `fd` is an open /dev/net/tun descriptor and TUNSETIFF takes a
    // pointer to a `struct ifreq`, which `req` is; the kernel writes the
    // chosen name back into it and keeps no pointer after returning.
    let ret = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TUNSETIFF,
            &mut req as *mut libc::ifreq,
        )
    };
    super::cvt(ret)?;

    // The kernel NUL-terminates the name it chose (IFNAMSIZ includes the NUL).
    let name = ifr_name_str(&req)?;
    let ifindex = nix::net::if_::if_nametoindex(name.as_str()).map_err(io::Error::from)?;
    Ok(Tun {
        fd,
        name,
        ifindex,
        offloads: TunOffloads::default(),
    })
}

/// A zeroed `ifreq` carrying `name`, checked to fit `IFNAMSIZ` with its NUL.
fn ifreq_named(name: &str) -> io::Result<libc::ifreq> {
    let bytes = name.as_bytes();
    if bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) || bytes.contains(&b'/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name must be under 16 bytes, without NUL or '/'",
        ));
    }
    // SAFETY: `ifreq` is a plain C struct (a name array and a union of
    // integers / pointers) for which all-zero bytes are a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

fn ifr_name_str(req: &libc::ifreq) -> io::Result<String> {
    let raw: [u8; libc::IFNAMSIZ] = req.ifr_name.map(|c| c as u8);
    let name = CStr::from_bytes_until_nul(&raw).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "kernel returned an unterminated interface name",
        )
    })?;
    name.to_str().map(str::to_owned).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "kernel returned a non-UTF-8 interface name",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_names_before_any_syscall() {
        for bad in ["0123456789abcdef", "a/b", "a\0b"] {
            let err = Tun::create(bad).expect_err(bad);
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
        let err = Tun::create_multiqueue("veilq", 0).expect_err("zero queues");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn name_round_trips_through_ifreq() {
        let req = ifreq_named("veil%d").expect("valid name");
        assert_eq!(ifr_name_str(&req).expect("terminated"), "veil%d");
        let req = ifreq_named("fifteen_chars__").expect("15 bytes fit");
        assert_eq!(ifr_name_str(&req).expect("terminated"), "fifteen_chars__");
    }
}
