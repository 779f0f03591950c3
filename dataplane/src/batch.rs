//! Batches: the unit that travels through the rings.
//!
//! A batch owns `BATCH_MAX` packet buffers for its whole life, allocated once
//! at start. Stages fill and rewrite buffers in place and set each packet's
//! [`Action`]; the TX stage performs the actions and hands the batch back to
//! the stage it came from through a recycle ring. Nothing is allocated per packet.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Instant;

use crate::wire::{TAG_LEN, TRANSPORT_HEADER_LEN};

/// Most packets in one batch (also the recvmmsg/sendmmsg batch size).
pub const BATCH_MAX: usize = 64;

/// Where the packets of a batch were read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Datagrams from the UDP socket (to decrypt).
    Udp,
    /// IP packets from the TUN device (to encrypt).
    Tun,
    /// Packets the crypto stage originated itself (keepalives, control frames, staged data).
    Originated,
}

/// Which recycle ring a batch returns to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Home {
    /// The RX stage's pool.
    Rx,
    /// The crypto stage's pool (for packets it originates).
    Crypto,
}

/// What the TX stage does with one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing (dropped and counted by the stage that decided so, or consumed).
    Drop,
    /// Write `buf[offset..offset + len]` to the TUN device.
    Tun,
    /// Send `buf[offset..offset + len]` to `addr` over UDP.
    Udp,
}

/// The local address a datagram arrived on (from `IP_PKTINFO` / `IPV6_PKTINFO`), kept with a
/// peer's endpoint so that what veil sends back leaves from it: the "sticky" source address of
/// wireguard-go and the kernel, which matters on a host with several addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LocalAddr {
    /// Our address the datagram was sent to (plain IPv4 for an IPv4 peer, never v4-mapped).
    pub ip: IpAddr,
    /// The interface it arrived on; sent back only with an IPv6 link-local source, which
    /// means nothing without it (otherwise routing picks the interface, as in the kernel).
    pub ifindex: u32,
}

/// Per-packet bookkeeping beside the buffer.
#[derive(Debug, Clone, Copy)]
pub struct PacketMeta {
    /// Start of the packet in its buffer.
    pub offset: usize,
    /// Length of the packet.
    pub len: usize,
    /// Source (for received datagrams) or destination (for datagrams to send).
    pub addr: SocketAddr,
    /// Received datagrams: the local address they arrived on, if the socket reported it.
    /// Datagrams to send: the source address to send from (`None`: the kernel picks).
    pub local: Option<LocalAddr>,
    /// What TX does with it.
    pub action: Action,
    /// Set by RX. From the socket (UDP GRO): the size of each datagram the kernel coalesced
    /// into this message (the last may be shorter); after RX hands the datagrams out one per
    /// slot, each keeps its group's size. From the TUN device: the segment size of the
    /// super-packet it was split from. 0: the packet came alone.
    pub segment: usize,
}

impl Default for PacketMeta {
    fn default() -> Self {
        Self {
            offset: 0,
            len: 0,
            addr: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)),
            local: None,
            action: Action::Drop,
            segment: 0,
        }
    }
}

/// Up to [`BATCH_MAX`] packets with their buffers.
pub struct Batch {
    /// Where the packets came from.
    pub source: Source,
    /// Recycle ring this batch belongs to.
    pub home: Home,
    /// Number of packets in use.
    pub len: usize,
    /// When RX read the batch (set on sampled batches, for the RX→TX latency histogram).
    pub stamp: Option<Instant>,
    /// Bytes RX counted into its direction's [`ByteQueue`](crate::bql::ByteQueue); TX
    /// completes the same number.
    pub queued_bytes: u64,
    /// The batch travels the express lane: small packets that came alone, served before
    /// bulk batches by every stage (see `pipeline::express`).
    pub express: bool,
    bufs: Vec<Box<[u8]>>,
    meta: Vec<PacketMeta>,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("source", &self.source)
            .field("home", &self.home)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// Largest peer MTU whose datagrams every buffer holds whole (veil's own MTU limit; jumbo
/// frames), whatever our own MTU is.
pub const PEER_MTU_MAX: usize = 9000;

/// Buffer size for an interface MTU: header room, the packet padded to 16, the tag.
pub fn buffer_size(mtu: usize) -> usize {
    TRANSPORT_HEADER_LEN + mtu.next_multiple_of(16) + TAG_LEN
}

impl Batch {
    /// A batch of `BATCH_MAX` buffers of `buf_size` bytes each.
    pub fn new(home: Home, buf_size: usize) -> Self {
        Self {
            source: Source::Udp,
            home,
            len: 0,
            stamp: None,
            queued_bytes: 0,
            express: false,
            bufs: (0..BATCH_MAX)
                .map(|_| vec![0u8; buf_size].into_boxed_slice())
                .collect(),
            meta: vec![PacketMeta::default(); BATCH_MAX],
        }
    }

    /// Size of each buffer.
    pub fn buf_size(&self) -> usize {
        self.bufs.first().map_or(0, |b| b.len())
    }

    /// Empty the batch for reuse.
    pub fn clear(&mut self, source: Source) {
        self.source = source;
        self.len = 0;
        self.stamp = None;
        self.queued_bytes = 0;
        self.express = false;
    }

    /// Is there room for one more packet?
    pub fn is_full(&self) -> bool {
        self.len >= BATCH_MAX
    }

    /// Packet `i`'s buffer and metadata.
    pub fn packet_mut(&mut self, i: usize) -> Option<(&mut [u8], &mut PacketMeta)> {
        let buf = self.bufs.get_mut(i)?;
        let meta = self.meta.get_mut(i)?;
        Some((buf, meta))
    }

    /// Packet `i`'s bytes as its metadata describes them.
    pub fn packet(&self, i: usize) -> Option<(&[u8], &PacketMeta)> {
        let meta = self.meta.get(i)?;
        let bytes = self.bufs.get(i)?.get(meta.offset..meta.offset + meta.len)?;
        Some((bytes, meta))
    }

    /// Bytes of the packets in use.
    pub fn payload_bytes(&self) -> u64 {
        let n = self.len.min(self.meta.len());
        self.meta[..n].iter().map(|m| m.len as u64).sum()
    }

    /// Move the packets `take` picks, in order, to the end of `to` (as far as it has room);
    /// the others close up, in order. Buffers are swapped, not copied. Returns how many moved.
    pub fn move_where(
        &mut self,
        to: &mut Batch,
        mut take: impl FnMut(&PacketMeta) -> bool,
    ) -> usize {
        let n = self.len.min(self.meta.len());
        let mut kept = 0;
        let mut moved = 0;
        for i in 0..n {
            if take(&self.meta[i]) && to.len < to.bufs.len().min(to.meta.len()) {
                let j = to.len;
                std::mem::swap(&mut self.bufs[i], &mut to.bufs[j]);
                std::mem::swap(&mut self.meta[i], &mut to.meta[j]);
                to.len += 1;
                moved += 1;
            } else {
                self.bufs.swap(kept, i);
                self.meta.swap(kept, i);
                kept += 1;
            }
        }
        self.len = kept;
        moved
    }

    /// Every buffer and metadata slot, in use or not (for a batched receive).
    pub fn all_mut(&mut self) -> (&mut [Box<[u8]>], &mut [PacketMeta]) {
        (&mut self.bufs, &mut self.meta)
    }

    /// Buffers and metadata of the packets in use.
    pub fn split_mut(&mut self) -> (&mut [Box<[u8]>], &mut [PacketMeta]) {
        let n = self.len.min(BATCH_MAX);
        (&mut self.bufs[..n], &mut self.meta[..n])
    }
}

/// Fields of an inner IP packet the dataplane routes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpInfo {
    /// Source address.
    pub src: std::net::IpAddr,
    /// Destination address.
    pub dst: std::net::IpAddr,
    /// Length of the packet per its own header (padding after it is not part of it).
    pub len: usize,
    /// DSCP bits of the traffic class (for priority classes).
    pub dscp: u8,
}

/// Parse just enough of an IPv4/IPv6 header to route it; `None` if it is not a
/// well-formed IP packet that fits in `bytes`.
pub fn ip_info(bytes: &[u8]) -> Option<IpInfo> {
    let first = *bytes.first()?;
    match first >> 4 {
        4 => {
            let h = bytes.get(..20)?;
            let ihl = usize::from(h[0] & 0x0F) * 4;
            let len = usize::from(u16::from_be_bytes([h[2], h[3]]));
            if ihl < 20 || len < ihl || len > bytes.len() {
                return None;
            }
            let src = Ipv4Addr::new(h[12], h[13], h[14], h[15]);
            let dst = Ipv4Addr::new(h[16], h[17], h[18], h[19]);
            Some(IpInfo {
                src: src.into(),
                dst: dst.into(),
                len,
                dscp: h[1] >> 2,
            })
        }
        6 => {
            let h = bytes.get(..40)?;
            let len = 40 + usize::from(u16::from_be_bytes([h[4], h[5]]));
            if len > bytes.len() {
                return None;
            }
            let mut s = [0u8; 16];
            let mut d = [0u8; 16];
            s.copy_from_slice(&h[8..24]);
            d.copy_from_slice(&h[24..40]);
            let tc = ((h[0] & 0x0F) << 4) | (h[1] >> 4);
            Some(IpInfo {
                src: std::net::Ipv6Addr::from(s).into(),
                dst: std::net::Ipv6Addr::from(d).into(),
                len,
                dscp: tc >> 2,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch whose packet `i` is `len[i]` bytes of the value `i`.
    fn filled(lens: &[usize]) -> Batch {
        let mut b = Batch::new(Home::Rx, 64);
        for (i, &len) in lens.iter().enumerate() {
            let (buf, meta) = b.packet_mut(i).unwrap();
            buf[..len].fill(i as u8);
            meta.offset = 0;
            meta.len = len;
        }
        b.len = lens.len();
        b
    }

    fn contents(b: &Batch) -> Vec<(u8, usize)> {
        (0..b.len)
            .map(|i| {
                let (bytes, meta) = b.packet(i).unwrap();
                (bytes[0], meta.len)
            })
            .collect()
    }

    #[test]
    fn move_where_keeps_both_sides_in_order_and_swaps_buffers() {
        let mut from = filled(&[40, 8, 50, 9, 10, 60]);
        let mut to = filled(&[7]);
        let moved = from.move_where(&mut to, |m| m.len < 20);
        assert_eq!(moved, 3);
        assert_eq!(contents(&from), vec![(0, 40), (2, 50), (5, 60)]);
        assert_eq!(contents(&to), vec![(0, 7), (1, 8), (3, 9), (4, 10)]);
        // Every buffer is still owned by exactly one of the two.
        assert_eq!(from.bufs.len(), BATCH_MAX);
        assert_eq!(to.bufs.len(), BATCH_MAX);
    }

    #[test]
    fn move_where_stops_at_a_full_target() {
        let mut from = filled(&[1, 2, 3]);
        let mut to = filled(&vec![5; BATCH_MAX - 1]);
        assert_eq!(from.move_where(&mut to, |_| true), 1);
        assert_eq!(contents(&from), vec![(1, 2), (2, 3)]);
        assert!(to.is_full());
    }

    #[test]
    fn ipv4_header() {
        let mut p = [0u8; 28];
        p[0] = 0x45;
        p[1] = 46 << 2;
        p[2..4].copy_from_slice(&28u16.to_be_bytes());
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&[10, 0, 0, 2]);
        let i = ip_info(&p).unwrap();
        assert_eq!(i.src.to_string(), "10.0.0.1");
        assert_eq!(i.dst.to_string(), "10.0.0.2");
        assert_eq!(i.len, 28);
        assert_eq!(i.dscp, 46);
        assert!(ip_info(&p[..27]).is_none());
        p[0] = 0x44;
        assert!(ip_info(&p).is_none());
    }

    #[test]
    fn ipv6_header() {
        let mut p = [0u8; 48];
        p[0] = 0x60;
        p[5] = 8;
        p[23] = 1;
        p[39] = 2;
        let i = ip_info(&p).unwrap();
        assert_eq!(i.src.to_string(), "::1");
        assert_eq!(i.dst.to_string(), "::2");
        assert_eq!(i.len, 48);
        assert!(ip_info(&p[..47]).is_none());
        assert!(ip_info(&[]).is_none());
        assert!(ip_info(&[0xF1, 1, 0, 0]).is_none());
    }

    #[test]
    fn batch_buffers() {
        let mut b = Batch::new(Home::Rx, buffer_size(1420));
        assert_eq!(b.buf_size(), 16 + 1424 + 16);
        assert_eq!(b.all_mut().0.len(), BATCH_MAX);
        b.len = 2;
        let (bufs, meta) = b.split_mut();
        assert_eq!(bufs.len(), 2);
        assert_eq!(meta.len(), 2);
    }
}
