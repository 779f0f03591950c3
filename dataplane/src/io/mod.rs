//! The I/O the stages need, as traits: the kernel (UDP socket, TUN device)
//! implements them in `sys`, and tests implement them in memory; and the outer
//! socket's [`UdpSlot`], replaceable while the dataplane runs.

mod slot;

pub use slot::{bind_listen, UdpHandle, UdpSlot, SOCKET_BUFFER};

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use crate::batch::PacketMeta;
use crate::sys::UdpSocket;

/// A datagram socket that moves batches.
pub trait DatagramIo {
    /// Receive up to `bufs.len()` datagrams without blocking. Fills `metas[i].len`
    /// (0 for a truncated datagram) and `metas[i].addr`; returns how many arrived
    /// (`Ok(0)` or `WouldBlock` when none).
    fn recv_batch(&self, bufs: &mut [Box<[u8]>], metas: &mut [PacketMeta]) -> io::Result<usize>;
    /// Send `pkts[i]` to `dests[i]` without blocking; returns how many were taken
    /// (a prefix). Per-datagram failures are skipped and counted in `failed`.
    fn send_batch(
        &self,
        pkts: &[&[u8]],
        dests: &[SocketAddr],
        failed: &mut u64,
    ) -> io::Result<usize>;
    /// Send one datagram.
    fn send_to(&self, pkt: &[u8], dest: SocketAddr) -> io::Result<usize>;
    /// Wait until the socket can take more (after `WouldBlock`), at most `timeout`.
    fn wait_writable(&self, timeout: Duration) -> io::Result<bool>;
}

/// A device that reads and writes whole IP packets (the TUN device).
pub trait PacketIo {
    /// Read one packet without blocking.
    fn read_packet(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// Write one packet.
    fn write_packet(&self, buf: &[u8]) -> io::Result<usize>;
}

/// Something that lends out the current UDP socket: the socket itself, or a thread's
/// [`UdpHandle`] on a replaceable [`UdpSlot`]. Both do their I/O through the one
/// [`DatagramIo`] implementation below.
pub trait WithSocket {
    /// Run `f` on the socket in use now.
    fn with_socket<T>(&self, f: impl FnOnce(&UdpSocket) -> T) -> T;
}

impl WithSocket for UdpSocket {
    #[inline]
    fn with_socket<T>(&self, f: impl FnOnce(&UdpSocket) -> T) -> T {
        f(self)
    }
}

impl<S: WithSocket> DatagramIo for S {
    fn recv_batch(&self, bufs: &mut [Box<[u8]>], metas: &mut [PacketMeta]) -> io::Result<usize> {
        self.with_socket(|s| s.recv_batch(bufs, metas))
    }

    fn send_batch(
        &self,
        pkts: &[&[u8]],
        dests: &[SocketAddr],
        failed: &mut u64,
    ) -> io::Result<usize> {
        self.with_socket(|s| {
            let outcome = s.send_batch_outcome(pkts, dests)?;
            *failed += outcome.failed as u64;
            Ok(outcome.consumed())
        })
    }

    fn send_to(&self, pkt: &[u8], dest: SocketAddr) -> io::Result<usize> {
        self.with_socket(|s| s.send_to(pkt, dest))
    }

    fn wait_writable(&self, timeout: Duration) -> io::Result<bool> {
        use std::os::fd::AsFd;
        self.with_socket(|s| crate::sys::wait_writable(s.as_fd(), Some(timeout)))
    }
}

impl PacketIo for crate::sys::Tun {
    fn read_packet(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.read(buf)
    }

    fn write_packet(&self, buf: &[u8]) -> io::Result<usize> {
        self.write(buf)
    }
}
