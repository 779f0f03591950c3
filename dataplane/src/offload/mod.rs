//! Segmentation offloads as pure functions over byte slices.
//!
//! The TUN device is opened with a virtio-net header in front of every packet (see
//! [`crate::sys::Tun`]). With TSO/USO on, a read returns a *super-packet*: one IP/TCP (or UDP)
//! header and up to 64 KiB of payload, which [`split`] cuts into MTU-sized packets straight
//! into batch slots, so sealing stays in place. A read without GSO may still ask us to finish
//! its checksum ([`finish_checksum`]). On the way back, [`coalesce`] merges decrypted packets of
//! one flow into super-packets for one TUN write.
//!
//! Nothing the kernel writes into the header is trusted beyond what the packet itself
//! confirms: header lengths are computed from the packet, and anything that does not add up
//! is an [`OffloadError`] (a counted drop), never a panic.

pub mod coalesce;
pub mod split;

pub use coalesce::{Coalescer, Role, MAX_HEADERS};
pub use split::{finish_checksum, SplitPlan};

/// Size of `struct virtio_net_hdr` (no `num_buffers`: the TUN is not mergeable-rx).
pub const VNET_HDR_LEN: usize = 10;
/// Largest IP packet a TUN read or write carries with offloads on.
pub const MAX_SUPER_PACKET: usize = 65535;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum at `csum_start + csum_offset` is partial.
pub const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksum is known good (we set it on decrypted packets).
pub const F_DATA_VALID: u8 = 2;

/// `VIRTIO_NET_HDR_GSO_*`: how a super-packet is to be segmented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GsoType {
    /// A plain packet.
    None,
    /// TCP over IPv4.
    TcpV4,
    /// TCP over IPv6.
    TcpV6,
    /// UDP (either family), `VIRTIO_NET_HDR_GSO_UDP_L4`.
    UdpL4,
}

impl GsoType {
    fn from_wire(v: u8) -> Option<GsoType> {
        // The ECN bit (0x80) only says the sender used CWR; segmentation is the same.
        match v & 0x7F {
            0 => Some(GsoType::None),
            1 => Some(GsoType::TcpV4),
            4 => Some(GsoType::TcpV6),
            5 => Some(GsoType::UdpL4),
            _ => None,
        }
    }

    fn to_wire(self) -> u8 {
        match self {
            GsoType::None => 0,
            GsoType::TcpV4 => 1,
            GsoType::TcpV6 => 4,
            GsoType::UdpL4 => 5,
        }
    }
}

/// A decoded `virtio_net_hdr`. Its fields are in the host's order for a TUN device on a
/// little-endian host (the only hosts veil supports offloads on; see [`crate::sys::Tun`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VnetHdr {
    /// `F_NEEDS_CSUM` / `F_DATA_VALID`.
    pub flags: u8,
    /// How to segment.
    pub gso_type: GsoType,
    /// The kernel's idea of the header length; never used for slicing.
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where the checksummed part starts.
    pub csum_start: u16,
    /// Offset of the checksum field from `csum_start`.
    pub csum_offset: u16,
}

impl VnetHdr {
    /// A header for a plain packet: no GSO, no checksum work.
    pub const PLAIN: VnetHdr = VnetHdr {
        flags: 0,
        gso_type: GsoType::None,
        hdr_len: 0,
        gso_size: 0,
        csum_start: 0,
        csum_offset: 0,
    };

    /// Decode the first [`VNET_HDR_LEN`] bytes; `None` if short or of an unknown GSO type.
    pub fn decode(b: &[u8]) -> Option<VnetHdr> {
        let b = b.get(..VNET_HDR_LEN)?;
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Some(VnetHdr {
            flags: b[0],
            gso_type: GsoType::from_wire(b[1])?,
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        })
    }

    /// Encode into the first [`VNET_HDR_LEN`] bytes of `out`; false if `out` is shorter.
    pub fn encode(&self, out: &mut [u8]) -> bool {
        let Some(o) = out.get_mut(..VNET_HDR_LEN) else {
            return false;
        };
        o[0] = self.flags;
        o[1] = self.gso_type.to_wire();
        o[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        o[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        o[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        o[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        true
    }
}

/// Why a packet from the TUN could not be split or finished (each a counted drop).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffloadError {
    /// Shorter than its own headers, or a header field points outside it.
    Truncated,
    /// Not IPv4/IPv6 carrying the protocol its GSO type says, or an IPv4 fragment.
    Mismatch,
    /// `gso_size` is 0, or a segment would not fit a slot.
    BadSegmentSize,
}

/// Internet checksum arithmetic (RFC 1071): a running one's-complement sum.
pub mod csum {
    /// Add `bytes` (big-endian 16-bit words, an odd last byte padded with zero) to `sum`.
    ///
    /// The bulk is summed as native-order 64-bit words with end-around carry (RFC 1071 §2:
    /// the sum does not depend on byte order or on the word size, up to a final byte swap
    /// and fold), eight bytes per step instead of two: this runs once per segment over its
    /// whole payload when a super-packet is split.
    pub fn add(sum: u64, bytes: &[u8]) -> u64 {
        let mut wide: u64 = 0;
        let mut carries: u64 = 0;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let word = u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            let (s, carry) = wide.overflowing_add(word);
            wide = s;
            carries += u64::from(carry);
        }
        // wide + carries * 2^64, and 2^64 = 1 modulo 2^16 - 1: fold to 16 bits.
        let mut folded = u64::from(fold_wide(wide, carries));
        if cfg!(target_endian = "little") {
            folded = u64::from((folded as u16).swap_bytes());
        }
        let mut sum = sum + folded;
        let mut words = chunks.remainder().chunks_exact(2);
        for w in &mut words {
            sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
        }
        if let [last] = words.remainder() {
            sum += u64::from(*last) << 8;
        }
        sum
    }

    /// `wide + carries * 2^64` folded to 16 bits (not complemented).
    fn fold_wide(wide: u64, carries: u64) -> u16 {
        let mut s = (wide & 0xFFFF_FFFF) + (wide >> 32) + carries;
        while s > 0xFFFF {
            s = (s & 0xFFFF) + (s >> 16);
        }
        s as u16
    }

    /// Fold to 16 bits (not complemented).
    pub fn fold(mut sum: u64) -> u16 {
        while sum > 0xFFFF {
            sum = (sum & 0xFFFF) + (sum >> 16);
        }
        sum as u16
    }

    /// The pseudo-header sum for a transport segment of `len` bytes.
    pub fn pseudo(src: &[u8], dst: &[u8], proto: u8, len: usize) -> u64 {
        let sum = add(add(0, src), dst);
        sum + u64::from(proto) + len as u64
    }

    #[cfg(test)]
    mod tests {
        use proptest::prelude::*;

        /// RFC 1071 word by word: the reference `add` must agree with.
        fn reference(mut sum: u64, bytes: &[u8]) -> u64 {
            let mut words = bytes.chunks_exact(2);
            for w in &mut words {
                sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
            }
            if let [last] = words.remainder() {
                sum += u64::from(*last) << 8;
            }
            sum
        }

        #[test]
        fn known_sums() {
            // RFC 1071 §3's example bytes: 00 01 f2 03 f4 f5 f6 f7 sum to ddf2.
            let bytes = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
            assert_eq!(super::fold(super::add(0, &bytes)), 0xddf2);
            assert_eq!(super::fold(super::add(0, &[0xff; 64])), 0xffff);
            assert_eq!(super::fold(super::add(0, &[0; 64])), 0);
            assert_eq!(super::fold(super::add(0, &[])), 0);
        }

        proptest! {
            #[test]
            fn folds_like_the_word_by_word_sum(
                bytes in proptest::collection::vec(any::<u8>(), 0..3000),
                start in any::<u32>(),
            ) {
                let start = u64::from(start);
                prop_assert_eq!(
                    super::fold(super::add(start, &bytes)),
                    super::fold(reference(start, &bytes))
                );
            }

            #[test]
            fn all_ones_words_fold_alike(n in 0usize..400, tail in any::<u8>()) {
                // Sums whose fold is 0xffff (the one's-complement "negative zero") or near it.
                let mut bytes = vec![0xff; n];
                bytes.push(tail);
                prop_assert_eq!(
                    super::fold(super::add(0, &bytes)),
                    super::fold(reference(0, &bytes))
                );
            }
        }
    }
}

/// IP protocol numbers the offloads handle.
pub(crate) const PROTO_TCP: u8 = 6;
pub(crate) const PROTO_UDP: u8 = 17;

/// The parts of an IP header the offloads need, checked against the packet's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IpHeader {
    pub v6: bool,
    /// IP header length (IPv6: 40; extension headers are not handled and refuse).
    pub len: usize,
    /// The transport protocol.
    pub proto: u8,
}

impl IpHeader {
    /// Parse `pkt`'s IP header: IPv4 (not a fragment) or IPv6 without extension headers.
    pub(crate) fn parse(pkt: &[u8]) -> Option<IpHeader> {
        match pkt.first()? >> 4 {
            4 => {
                let h = pkt.get(..20)?;
                let len = usize::from(h[0] & 0x0F) * 4;
                let frag = u16::from_be_bytes([h[6], h[7]]);
                // MF set or a fragment offset: not a whole datagram.
                if len < 20 || pkt.len() < len || frag & 0x3FFF != 0 {
                    return None;
                }
                Some(IpHeader {
                    v6: false,
                    len,
                    proto: h[9],
                })
            }
            6 => {
                let h = pkt.get(..40)?;
                Some(IpHeader {
                    v6: true,
                    len: 40,
                    proto: h[6],
                })
            }
            _ => None,
        }
    }

    /// Source and destination address bytes.
    pub(crate) fn addrs<'a>(&self, pkt: &'a [u8]) -> Option<(&'a [u8], &'a [u8])> {
        if self.v6 {
            Some((pkt.get(8..24)?, pkt.get(24..40)?))
        } else {
            Some((pkt.get(12..16)?, pkt.get(16..20)?))
        }
    }

    /// The transport header length at `self.len`, checked to fit in `pkt`.
    pub(crate) fn transport_len(&self, pkt: &[u8]) -> Option<usize> {
        let th = pkt.get(self.len..)?;
        let len = match self.proto {
            PROTO_TCP => usize::from(th.get(12)? >> 4) * 4,
            PROTO_UDP => 8,
            _ => return None,
        };
        (len >= 8 && th.len() >= len && (self.proto != PROTO_TCP || len >= 20)).then_some(len)
    }
}

/// Set the IP length field(s) of `pkt` (whole packet of `total` bytes) and, for IPv4, its
/// header checksum.
pub(crate) fn set_ip_len(pkt: &mut [u8], ip: &IpHeader, total: usize) {
    if ip.v6 {
        let payload = (total - ip.len) as u16;
        pkt[4..6].copy_from_slice(&payload.to_be_bytes());
    } else {
        pkt[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        pkt[10..12].copy_from_slice(&[0, 0]);
        let c = !csum::fold(csum::add(0, &pkt[..ip.len]));
        pkt[10..12].copy_from_slice(&c.to_be_bytes());
    }
}

/// Write the full transport checksum of `pkt` (headers valid, lengths set).
pub(crate) fn set_transport_checksum(pkt: &mut [u8], ip: &IpHeader) {
    let at = ip.len + if ip.proto == PROTO_TCP { 16 } else { 6 };
    pkt[at..at + 2].copy_from_slice(&[0, 0]);
    let seg = pkt.len() - ip.len;
    let (src, dst) = match ip.addrs(pkt) {
        Some(a) => a,
        None => return,
    };
    let sum = csum::pseudo(src, dst, ip.proto, seg);
    let mut c = !csum::fold(csum::add(sum, &pkt[ip.len..]));
    if c == 0 && ip.proto == PROTO_UDP {
        // 0 means "no checksum" in UDP; the same value in one's complement is all ones.
        c = 0xFFFF;
    }
    pkt[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

/// Which offloads the TUN device accepted (what `TUNSETOFFLOAD` took).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TunOffloads {
    /// Packets carry a virtio-net header (`IFF_VNET_HDR`), with checksum offload and TSO.
    pub vnet: bool,
    /// UDP segmentation (`TUN_F_USO4 | TUN_F_USO6`) is on too.
    pub uso: bool,
}
