//! Cutting a TUN super-packet into MTU-sized IP packets (TSO / USO done in userspace).
//!
//! Each segment gets the super-packet's headers with its own lengths, IPv4 id and header
//! checksum, TCP sequence number (FIN and PSH only on the last, CWR only on the first) or UDP
//! length, and a full transport checksum. The header length is computed from the packet;
//! the kernel's `hdr_len`, `csum_start` and `csum_offset` are not used for slicing.

use super::{
    csum, set_ip_len, set_transport_checksum, GsoType, IpHeader, OffloadError, VnetHdr,
    F_NEEDS_CSUM, MAX_SUPER_PACKET, PROTO_TCP, PROTO_UDP,
};

const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// How one super-packet splits: validated once, then segments are written one by one (so a
/// caller can stop when its batch is full and go on with the next batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitPlan {
    ip: IpHeader,
    hdr_len: usize,
    gso_size: usize,
    segments: usize,
    len: usize,
}

impl SplitPlan {
    /// Check `pkt` (the IP packet after the virtio header) against `hdr` and plan segments of
    /// at most `max_segment` bytes each. `hdr.gso_type` must not be [`GsoType::None`].
    pub fn new(pkt: &[u8], hdr: &VnetHdr, max_segment: usize) -> Result<SplitPlan, OffloadError> {
        if pkt.len() > MAX_SUPER_PACKET {
            return Err(OffloadError::Truncated);
        }
        let ip = IpHeader::parse(pkt).ok_or(OffloadError::Mismatch)?;
        let expected = match hdr.gso_type {
            GsoType::TcpV4 => (false, PROTO_TCP),
            GsoType::TcpV6 => (true, PROTO_TCP),
            GsoType::UdpL4 => (ip.v6, PROTO_UDP),
            GsoType::None => return Err(OffloadError::Mismatch),
        };
        if (ip.v6, ip.proto) != expected {
            return Err(OffloadError::Mismatch);
        }
        let hdr_len = ip.len + ip.transport_len(pkt).ok_or(OffloadError::Truncated)?;
        let gso_size = usize::from(hdr.gso_size);
        if gso_size == 0 || hdr_len + gso_size > max_segment {
            return Err(OffloadError::BadSegmentSize);
        }
        let payload = pkt.len() - hdr_len;
        Ok(SplitPlan {
            ip,
            hdr_len,
            gso_size,
            segments: payload.div_ceil(gso_size).max(1),
            len: pkt.len(),
        })
    }

    /// Payload bytes per segment (the last may carry fewer).
    pub fn segment_size(&self) -> usize {
        self.gso_size.max(1)
    }

    /// How many segments the plan makes.
    pub fn segments(&self) -> usize {
        self.segments
    }

    /// Write segment `i` of `pkt` (the packet this plan was made for) into `out`; returns
    /// its length. `None` if `i` is past the end, `pkt` is not that packet's length, or `out`
    /// is too short.
    pub fn write_segment(&self, pkt: &[u8], i: usize, out: &mut [u8]) -> Option<usize> {
        if i >= self.segments || pkt.len() != self.len {
            return None;
        }
        let start = self.hdr_len + i * self.gso_size;
        let end = (start + self.gso_size).min(self.len);
        let total = self.hdr_len + (end - start);
        let out = out.get_mut(..total)?;
        out[..self.hdr_len].copy_from_slice(pkt.get(..self.hdr_len)?);
        out[self.hdr_len..].copy_from_slice(pkt.get(start..end)?);
        let last = i + 1 == self.segments;
        let th = self.ip.len;
        if !self.ip.v6 {
            let id = u16::from_be_bytes([out[4], out[5]]).wrapping_add(i as u16);
            out[4..6].copy_from_slice(&id.to_be_bytes());
        }
        set_ip_len(out, &self.ip, total);
        if self.ip.proto == PROTO_TCP {
            let seq = u32::from_be_bytes([out[th + 4], out[th + 5], out[th + 6], out[th + 7]])
                .wrapping_add((i * self.gso_size) as u32);
            out[th + 4..th + 8].copy_from_slice(&seq.to_be_bytes());
            if !last {
                out[th + 13] &= !(TCP_FIN | TCP_PSH);
            }
            if i > 0 {
                out[th + 13] &= !TCP_CWR;
            }
        } else {
            out[th + 4..th + 6].copy_from_slice(&((total - th) as u16).to_be_bytes());
        }
        set_transport_checksum(out, &self.ip);
        Some(total)
    }
}

/// Finish the partial checksum of a packet the kernel handed over whole with
/// `F_NEEDS_CSUM` (it left the pseudo-header sum in the checksum field). Packets without the
/// flag are left as they are.
pub fn finish_checksum(pkt: &mut [u8], hdr: &VnetHdr) -> Result<(), OffloadError> {
    if hdr.flags & F_NEEDS_CSUM == 0 {
        return Ok(());
    }
    let start = usize::from(hdr.csum_start);
    let at = start + usize::from(hdr.csum_offset);
    if at + 2 > pkt.len() || at < start {
        return Err(OffloadError::Truncated);
    }
    let c = !csum::fold(csum::add(0, &pkt[start..]));
    pkt[at..at + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::offload::VNET_HDR_LEN;
    use proptest::prelude::*;

    /// An independent RFC 1071 checksum: sum of 16-bit words as u32, with carries folded at
    /// each step (not the crate's routine).
    pub(crate) fn verify(data: &[u8]) -> bool {
        let mut acc: u32 = 0;
        let mut i = 0;
        while i < data.len() {
            let hi = u32::from(data[i]) << 8;
            let lo = data.get(i + 1).map_or(0, |&b| u32::from(b));
            acc += hi | lo;
            acc = (acc & 0xFFFF) + (acc >> 16);
            i += 2;
        }
        acc == 0xFFFF
    }

    /// Does the transport checksum of `pkt` (IPv4/IPv6, TCP/UDP) verify?
    pub(crate) fn transport_ok(pkt: &[u8]) -> bool {
        let (ihl, src, dst, proto) = if pkt[0] >> 4 == 4 {
            let ihl = usize::from(pkt[0] & 15) * 4;
            (ihl, &pkt[12..16], &pkt[16..20], pkt[9])
        } else {
            (40, &pkt[8..24], &pkt[24..40], pkt[6])
        };
        let seg = &pkt[ihl..];
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(src);
        pseudo.extend_from_slice(dst);
        if pkt[0] >> 4 == 4 {
            pseudo.extend_from_slice(&[0, proto]);
            pseudo.extend_from_slice(&(seg.len() as u16).to_be_bytes());
        } else {
            pseudo.extend_from_slice(&(seg.len() as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, proto]);
        }
        pseudo.extend_from_slice(seg);
        verify(&pseudo)
    }

    /// A super-packet: IPv4 or IPv6, TCP (with `opts` option bytes) or UDP, `payload` bytes.
    pub(crate) fn super_packet(
        v6: bool,
        tcp: bool,
        opts: usize,
        payload: &[u8],
        flags: u8,
    ) -> Vec<u8> {
        let ihl = if v6 { 40 } else { 20 };
        let thl = if tcp { 20 + opts } else { 8 };
        let total = ihl + thl + payload.len();
        let mut p = vec![0u8; total];
        if v6 {
            p[0] = 0x60;
            p[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
            p[6] = if tcp { 6 } else { 17 };
            p[7] = 64;
            p[8..24].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            p[24..40].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        } else {
            p[0] = 0x45;
            p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            p[4..6].copy_from_slice(&0xFFFEu16.to_be_bytes());
            p[6] = 0x40; // DF
            p[8] = 64;
            p[9] = if tcp { 6 } else { 17 };
            p[12..16].copy_from_slice(&[10, 0, 0, 1]);
            p[16..20].copy_from_slice(&[10, 0, 0, 2]);
        }
        let t = &mut p[ihl..];
        t[0..2].copy_from_slice(&40000u16.to_be_bytes());
        t[2..4].copy_from_slice(&5201u16.to_be_bytes());
        if tcp {
            t[4..8].copy_from_slice(&0xFFFF_F000u32.to_be_bytes());
            t[8..12].copy_from_slice(&77u32.to_be_bytes());
            t[12] = ((thl / 4) as u8) << 4;
            t[13] = flags;
            t[14..16].copy_from_slice(&512u16.to_be_bytes());
            for (k, b) in t[20..thl].iter_mut().enumerate() {
                *b = if k % 4 == 3 { 8 } else { 1 }; // NOPs and a timestamp-ish kind
            }
        } else {
            t[4..6].copy_from_slice(&((thl + payload.len()) as u16).to_be_bytes());
        }
        p[ihl + thl..].copy_from_slice(payload);
        p
    }

    pub(crate) fn gso_hdr(v6: bool, tcp: bool, gso_size: u16) -> VnetHdr {
        VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: match (tcp, v6) {
                (true, false) => GsoType::TcpV4,
                (true, true) => GsoType::TcpV6,
                (false, _) => GsoType::UdpL4,
            },
            // Lies, on purpose: the plan must not use them.
            hdr_len: 3,
            gso_size,
            csum_start: 9999,
            csum_offset: 9999,
        }
    }

    pub(crate) fn split_all(pkt: &[u8], hdr: &VnetHdr) -> Vec<Vec<u8>> {
        let plan = SplitPlan::new(pkt, hdr, 1500).expect("plan");
        (0..plan.segments())
            .map(|i| {
                let mut out = vec![0u8; 1500];
                let n = plan.write_segment(pkt, i, &mut out).expect("segment");
                out.truncate(n);
                out
            })
            .collect()
    }

    fn check_split(v6: bool, tcp: bool, opts: usize, payload_len: usize, gso: u16) {
        let payload: Vec<u8> = (0..payload_len).map(|i| (i * 31 + 7) as u8).collect();
        let flags = if tcp {
            0x10 | TCP_PSH | TCP_FIN | TCP_CWR
        } else {
            0
        };
        let pkt = super_packet(v6, tcp, opts, &payload, flags);
        let segs = split_all(&pkt, &gso_hdr(v6, tcp, gso));
        let ihl = if v6 { 40 } else { 20 };
        let thl = if tcp { 20 + opts } else { 8 };
        assert_eq!(segs.len(), payload_len.div_ceil(usize::from(gso)).max(1));
        let mut joined = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            let last = i + 1 == segs.len();
            let body = &s[ihl + thl..];
            assert!(
                body.len() == usize::from(gso) || last,
                "only the last is short"
            );
            joined.extend_from_slice(body);
            assert!(transport_ok(s), "segment {i} transport checksum");
            if v6 {
                assert_eq!(usize::from(u16::from_be_bytes([s[4], s[5]])), s.len() - 40);
            } else {
                assert!(verify(&s[..20]), "segment {i} IPv4 header checksum");
                assert_eq!(usize::from(u16::from_be_bytes([s[2], s[3]])), s.len());
                let id = u16::from_be_bytes([s[4], s[5]]);
                assert_eq!(
                    id,
                    0xFFFEu16.wrapping_add(i as u16),
                    "ids count up and wrap"
                );
            }
            let t = &s[ihl..];
            if tcp {
                let seq = u32::from_be_bytes([t[4], t[5], t[6], t[7]]);
                assert_eq!(
                    seq,
                    0xFFFF_F000u32.wrapping_add((i * usize::from(gso)) as u32)
                );
                assert_eq!(
                    t[13] & (TCP_FIN | TCP_PSH) != 0,
                    last,
                    "FIN/PSH only on the last"
                );
                assert_eq!(
                    t[13] & (TCP_FIN | TCP_PSH),
                    if last { TCP_FIN | TCP_PSH } else { 0 }
                );
                assert_eq!(t[13] & TCP_CWR != 0, i == 0, "CWR only on the first");
                assert_eq!(t[13] & 0x10, 0x10, "ACK on all");
                assert_eq!(&t[20..thl], &pkt[ihl + 20..ihl + thl], "options copied");
            } else {
                assert_eq!(usize::from(u16::from_be_bytes([t[4], t[5]])), s.len() - ihl);
            }
        }
        assert_eq!(joined, payload, "payload in order, nothing lost");
    }

    #[test]
    fn splits_tcp4_tcp6_udp4_udp6() {
        for (v6, tcp) in [(false, true), (true, true), (false, false), (true, false)] {
            check_split(v6, tcp, 12, 5000, 1388);
            check_split(v6, tcp, 0, 1388 * 3, 1388);
            check_split(v6, tcp, 0, 1, 1000);
        }
    }

    proptest! {
        #[test]
        fn split_property(v6: bool, tcp: bool, opts in 0usize..=10, len in 1usize..20_000, gso in 1u16..1400) {
            check_split(v6, tcp, opts * 4, len, gso);
        }
    }

    #[test]
    fn lying_or_broken_super_packets_are_refused() {
        let pkt = super_packet(false, true, 0, &[1u8; 3000], 0x10);
        // gso_size 0.
        assert_eq!(
            SplitPlan::new(&pkt, &gso_hdr(false, true, 0), 1500),
            Err(OffloadError::BadSegmentSize)
        );
        // Segments bigger than a slot.
        assert_eq!(
            SplitPlan::new(&pkt, &gso_hdr(false, true, 1490), 1500),
            Err(OffloadError::BadSegmentSize)
        );
        // The GSO type disagrees with the packet.
        for wrong in [gso_hdr(true, true, 1000), gso_hdr(false, false, 1000)] {
            assert_eq!(
                SplitPlan::new(&pkt, &wrong, 1500),
                Err(OffloadError::Mismatch)
            );
        }
        // Truncated headers, and a TCP data offset past the end.
        for cut in [0, 10, 19, 20, 30] {
            assert!(SplitPlan::new(&pkt[..cut], &gso_hdr(false, true, 1000), 1500).is_err());
        }
        let mut bad = pkt[..60].to_vec();
        bad[20 + 12] = 0xF0;
        assert_eq!(
            SplitPlan::new(&bad, &gso_hdr(false, true, 10), 1500),
            Err(OffloadError::Truncated)
        );
        bad[20 + 12] = 0x10; // data offset 4 bytes: shorter than a TCP header
        assert!(SplitPlan::new(&bad, &gso_hdr(false, true, 10), 1500).is_err());
        // An IPv4 fragment.
        let mut frag = pkt.clone();
        frag[6] = 0x20;
        assert_eq!(
            SplitPlan::new(&frag, &gso_hdr(false, true, 1000), 1500),
            Err(OffloadError::Mismatch)
        );
        // A plan refuses another packet and out-of-range segments.
        let plan = SplitPlan::new(&pkt, &gso_hdr(false, true, 1000), 1500).expect("plan");
        let mut out = [0u8; 1500];
        assert!(plan.write_segment(&pkt[..100], 0, &mut out).is_none());
        assert!(plan
            .write_segment(&pkt, plan.segments(), &mut out)
            .is_none());
        assert!(plan.write_segment(&pkt, 0, &mut out[..100]).is_none());
    }

    #[test]
    fn finishes_partial_checksums() {
        for (v6, tcp) in [(false, true), (true, true), (false, false), (true, false)] {
            let mut pkt = super_packet(v6, tcp, 0, b"hello, partial checksum", 0x18);
            let ihl = if v6 { 40 } else { 20 };
            let at = ihl + if tcp { 16 } else { 6 };
            // As the kernel leaves it: the folded pseudo-header sum in the field.
            let (src, dst) = if v6 {
                (8..24, 24..40)
            } else {
                (12..16, 16..20)
            };
            let seg = pkt.len() - ihl;
            let ps = csum::fold(csum::pseudo(
                &pkt[src],
                &pkt[dst],
                pkt[if v6 { 6 } else { 9 }],
                seg,
            ));
            pkt[at..at + 2].copy_from_slice(&ps.to_be_bytes());
            let hdr = VnetHdr {
                flags: F_NEEDS_CSUM,
                gso_type: GsoType::None,
                hdr_len: 0,
                gso_size: 0,
                csum_start: ihl as u16,
                csum_offset: if tcp { 16 } else { 6 },
            };
            finish_checksum(&mut pkt, &hdr).expect("finish");
            assert!(transport_ok(&pkt));
            let mut short = pkt[..ihl + 4].to_vec();
            assert_eq!(
                finish_checksum(&mut short, &hdr),
                Err(OffloadError::Truncated)
            );
        }
    }

    #[test]
    fn vnet_header_round_trips() {
        let h = gso_hdr(true, true, 1388);
        let mut b = [0u8; VNET_HDR_LEN];
        assert!(h.encode(&mut b));
        assert_eq!(VnetHdr::decode(&b), Some(h));
        assert!(VnetHdr::decode(&b[..9]).is_none());
        b[1] = 3; // GSO_UDP (UFO): not something we take
        assert!(VnetHdr::decode(&b).is_none());
        assert!(!h.encode(&mut [0u8; 9]));
    }
}
