//! Local addresses that went away from the host (sticky sources): the kernel refuses them as a
//! source, so the socket remembers them (at most [`GONE_MAX`]) and sends without them until a
//! datagram arrives on one again.

use std::io;
use std::net::{IpAddr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::atomic::Ordering;

use super::{UdpSocket, GONE_MAX};
use crate::batch::LocalAddr;

impl UdpSocket {
    /// The gone sources, copied out (one relaxed load when there are none).
    pub(super) fn gone_sources(&self) -> [Option<IpAddr>; GONE_MAX] {
        let mut out = [None; GONE_MAX];
        if self.gone_any.load(Ordering::Relaxed) {
            let gone = self.gone.lock().unwrap_or_else(|e| e.into_inner());
            for (o, ip) in out.iter_mut().zip(gone.iter()) {
                *o = Some(*ip);
            }
        }
        out
    }

    /// Did sending from `src` fail because `src` is no longer an address of this host? The
    /// kernel says so with `EINVAL` (IPv6) or `ENETUNREACH` (IPv4: the route lookup with that
    /// source fails), which other causes give too, so the address is checked as the kernel's
    /// WireGuard checks it (can a socket still bind it?). If it is gone it is remembered.
    pub(super) fn refused(&self, err: &io::Error, src: LocalAddr) -> bool {
        if !matches!(
            err.raw_os_error(),
            Some(libc::EINVAL | libc::ENETUNREACH | libc::EADDRNOTAVAIL)
        ) {
            return false;
        }
        let probe = match src.ip {
            IpAddr::V4(ip) => SocketAddr::V4(SocketAddrV4::new(ip, 0)),
            IpAddr::V6(ip) => SocketAddr::V6(SocketAddrV6::new(ip, 0, 0, src.ifindex)),
        };
        match UdpSocket::bind(probe, false) {
            Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => {
                self.mark_gone(src.ip);
                true
            }
            _ => false,
        }
    }

    /// `ip` is gone from the host: send from it no more until a datagram arrives on it.
    pub(super) fn mark_gone(&self, ip: IpAddr) {
        let mut gone = self.gone.lock().unwrap_or_else(|e| e.into_inner());
        if !gone.contains(&ip) {
            if gone.len() >= GONE_MAX {
                gone.remove(0);
            }
            gone.push(ip);
        }
        self.gone_any.store(true, Ordering::Relaxed);
    }

    /// A datagram arrived on `ip`: it is ours again.
    pub(super) fn forget_gone(&self, ip: IpAddr) {
        let mut gone = self.gone.lock().unwrap_or_else(|e| e.into_inner());
        gone.retain(|g| *g != ip);
        self.gone_any.store(!gone.is_empty(), Ordering::Relaxed);
    }
}
