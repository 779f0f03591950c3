//! The I/O the stages need, as traits: the kernel (UDP socket, TUN device)
//! implements them in `sys`, and tests implement them in memory; and the outer
//! socket's [`UdpSlot`], replaceable while the dataplane runs.

mod slot;

pub use slot::{
    adopt_socket, bind_listen, bind_pipelines, rebind_pipelines, UdpHandle, UdpSlot, SOCKET_BUFFER,
};

use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::time::Duration;

use crate::batch::{LocalAddr, PacketMeta};
use crate::offload::TunOffloads;
use crate::sys::UdpSocket;

/// What one batched send did besides sending, for the TX counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendTally {
    /// Datagrams the kernel refused one by one (skipped).
    pub failed: u64,
    /// Messages that carried several datagrams (UDP GSO).
    pub gso_messages: u64,
    /// Datagrams in those messages.
    pub gso_datagrams: u64,
    /// Times the kernel refused GSO and it was turned off.
    pub gso_disabled: u64,
}

/// Datagrams to send: `pkts[i]` to `dests[i]` from source `srcs[i]` (`None`, or `srcs`
/// empty: the kernel picks the source).
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// The datagrams.
    pub pkts: &'a [&'a [u8]],
    /// Their destinations.
    pub dests: &'a [SocketAddr],
    /// Their sources.
    pub srcs: &'a [Option<LocalAddr>],
}

/// A datagram socket that moves batches.
pub trait DatagramIo {
    /// Receive up to `bufs.len()` datagrams without blocking. Fills `metas[i].len`
    /// (0 for a truncated datagram), `metas[i].addr` and `metas[i].local` (our address it
    /// arrived on, where the socket says); returns how many arrived
    /// (`Ok(0)` or `WouldBlock` when none).
    fn recv_batch(&self, bufs: &mut [Box<[u8]>], metas: &mut [PacketMeta]) -> io::Result<usize>;
    /// Send `out` without blocking; returns how many were taken (a prefix). Per-datagram
    /// failures are skipped and counted in `tally`, as are GSO messages.
    fn send_batch(&self, out: Outgoing<'_>, tally: &mut SendTally) -> io::Result<usize>;
    /// Send one datagram, from `src` if given.
    fn send_to(&self, pkt: &[u8], dest: SocketAddr, src: Option<LocalAddr>) -> io::Result<usize>;
    /// Does [`DatagramIo::recv_batch`] return datagrams coalesced by UDP GRO (see
    /// [`PacketMeta::segment`])? Their buffers must then hold up to 64 KiB.
    fn gro(&self) -> bool {
        false
    }
    /// Wait until the socket can take more (after `WouldBlock`), at most `timeout`.
    fn wait_writable(&self, timeout: Duration) -> io::Result<bool>;
}

/// A device that reads and writes whole IP packets (the TUN device).
///
/// With [`PacketIo::offloads`]`.vnet`, every packet read or written starts with a virtio-net
/// header ([`crate::offload::VnetHdr`]) and reads may return super-packets.
pub trait PacketIo {
    /// Read one packet without blocking.
    fn read_packet(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// Write one packet.
    fn write_packet(&self, buf: &[u8]) -> io::Result<usize>;
    /// The offloads in force; none unless the device says so.
    fn offloads(&self) -> TunOffloads {
        TunOffloads::default()
    }
    /// Read one packet into `head`, the rest of a longer one into `spill`; returns the total.
    fn read_split(&self, head: &mut [u8], spill: &mut [u8]) -> io::Result<usize> {
        let _ = spill;
        self.read_packet(head)
    }
    /// Write one packet gathered from `parts`, in order.
    fn write_gather(&self, parts: &[IoSlice<'_>]) -> io::Result<usize> {
        match parts {
            [one] => self.write_packet(one),
            _ => Err(io::ErrorKind::Unsupported.into()),
        }
    }
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

    fn send_batch(&self, out: Outgoing<'_>, tally: &mut SendTally) -> io::Result<usize> {
        self.with_socket(|s| {
            let outcome = s.send_batch_from(out.pkts, out.dests, out.srcs)?;
            tally.failed += outcome.failed as u64;
            tally.gso_messages += outcome.gso_messages as u64;
            tally.gso_datagrams += outcome.gso_datagrams as u64;
            tally.gso_disabled += u64::from(outcome.gso_disabled);
            Ok(outcome.consumed())
        })
    }

    fn send_to(&self, pkt: &[u8], dest: SocketAddr, src: Option<LocalAddr>) -> io::Result<usize> {
        self.with_socket(|s| s.send_to_from(pkt, dest, src))
    }

    fn gro(&self) -> bool {
        self.with_socket(|s| s.gro())
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

    fn offloads(&self) -> TunOffloads {
        crate::sys::Tun::offloads(self)
    }

    fn read_split(&self, head: &mut [u8], spill: &mut [u8]) -> io::Result<usize> {
        self.read_vectored(&mut [IoSliceMut::new(head), IoSliceMut::new(spill)])
    }

    fn write_gather(&self, parts: &[IoSlice<'_>]) -> io::Result<usize> {
        self.write_vectored(parts)
    }
}
