//! The I/O the stages need, as traits: the kernel (UDP socket, TUN device)
//! implements them in `sys`, and tests implement them in memory.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use crate::batch::{PacketMeta, BATCH_MAX};

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

impl DatagramIo for crate::sys::UdpSocket {
    fn recv_batch(&self, bufs: &mut [Box<[u8]>], metas: &mut [PacketMeta]) -> io::Result<usize> {
        let n = bufs.len().min(metas.len()).min(BATCH_MAX);
        let mut lens = [0usize; BATCH_MAX];
        let mut addrs = [SocketAddr::from(([0, 0, 0, 0], 0)); BATCH_MAX];
        let got = crate::sys::UdpSocket::recv_batch(
            self,
            &mut bufs[..n],
            &mut lens[..n],
            &mut addrs[..n],
        )?;
        for ((meta, len), addr) in metas.iter_mut().zip(lens).zip(addrs).take(got) {
            meta.offset = 0;
            meta.len = len;
            meta.addr = addr;
        }
        Ok(got)
    }

    fn send_batch(
        &self,
        pkts: &[&[u8]],
        dests: &[SocketAddr],
        failed: &mut u64,
    ) -> io::Result<usize> {
        let outcome = self.send_batch_outcome(pkts, dests)?;
        *failed += outcome.failed as u64;
        Ok(outcome.consumed())
    }

    fn send_to(&self, pkt: &[u8], dest: SocketAddr) -> io::Result<usize> {
        crate::sys::UdpSocket::send_to(self, pkt, dest)
    }

    fn wait_writable(&self, timeout: Duration) -> io::Result<bool> {
        use std::os::fd::AsFd;
        crate::sys::wait_writable(self.as_fd(), Some(timeout))
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
