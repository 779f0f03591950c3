//! The I/O the stages need, as traits: the kernel (UDP socket, TUN device)
//! implements them in `sys`, and tests implement them in memory.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use crate::batch::PacketMeta;

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
