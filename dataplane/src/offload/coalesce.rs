//! GRO on TUN write: merge decrypted packets of one flow within a batch into super-packets.
//!
//! A packet joins the newest group of its flow only if the result is exactly what a TSO
//! sender would have produced: same addresses, ports and (TCP) acknowledgement, same header
//! lengths and options, same TOS/TTL/DF (IPv6: the first word and hop limit), the next
//! sequence number, nothing after a PSH or a short segment, at most 64 KiB. IPv4 with
//! options, fragments, and anything other than plain ACK (+PSH) segments or UDP (when USO is
//! on) is written as it is, and closes every open group so nothing overtakes it.
//!
//! The planner only records which packets go together; the super-packet is written with a
//! gather write (the head's rewritten headers, then each member's payload), so payloads are
//! never copied in userspace.

use super::{
    csum, set_ip_len, GsoType, IpHeader, VnetHdr, F_NEEDS_CSUM, MAX_SUPER_PACKET, PROTO_TCP,
    PROTO_UDP,
};
use crate::batch::BATCH_MAX;

const TCP_ACK: u8 = 0x10;
const TCP_PSH: u8 = 0x08;
/// Longest IP + TCP header (60 + 60).
pub const MAX_HEADERS: usize = 120;
const NONE: u8 = u8::MAX;

/// What one packet of the batch is in the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Not part of the plan (not a TUN packet).
    Skip,
    /// Written as it is.
    Single,
    /// The first packet of group `g`: write the group here.
    Head(u8),
    /// Appended to a group written earlier.
    Member,
}

/// The identity of a flow: addresses, ports, protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct FlowKey {
    src: [u8; 16],
    dst: [u8; 16],
    ports: [u8; 4],
    proto: u8,
    v6: bool,
}

/// One group of packets that become one super-packet.
#[derive(Debug, Clone, Copy)]
struct Group {
    key: FlowKey,
    head: u8,
    last: u8,
    count: u16,
    ip: IpHeader,
    hdr_len: u16,
    gso_size: u16,
    total: usize,
    next_seq: u32,
    /// Nothing may join any more (PSH, a short segment, a packet that did not fit).
    closed: bool,
}

/// Fields of a packet that decide whether it can join a group.
struct Candidate {
    key: FlowKey,
    ip: IpHeader,
    hdr_len: usize,
    payload: usize,
    seq: u32,
    push: bool,
}

/// The planner, with room for one batch; reused from batch to batch (no allocation).
#[derive(Debug)]
pub struct Coalescer {
    roles: [Role; BATCH_MAX],
    next: [u8; BATCH_MAX],
    groups: [Option<Group>; BATCH_MAX],
    ngroups: usize,
}

impl Default for Coalescer {
    fn default() -> Self {
        Self {
            roles: [Role::Skip; BATCH_MAX],
            next: [NONE; BATCH_MAX],
            groups: [None; BATCH_MAX],
            ngroups: 0,
        }
    }
}

impl Coalescer {
    /// Plan the batch: `pkts[i]` is packet `i` if it is to be written to the TUN device.
    /// `udp` allows UDP groups (the kernel takes USO writes).
    pub fn plan<'a>(&mut self, pkts: impl IntoIterator<Item = Option<&'a [u8]>>, udp: bool) {
        self.ngroups = 0;
        let mut heads: [&[u8]; BATCH_MAX] = [&[]; BATCH_MAX];
        let mut lasts: [&[u8]; BATCH_MAX] = [&[]; BATCH_MAX];
        for (i, pkt) in pkts.into_iter().enumerate().take(BATCH_MAX) {
            self.next[i] = NONE;
            let Some(pkt) = pkt else {
                self.roles[i] = Role::Skip;
                continue;
            };
            let Some(c) = candidate(pkt, udp) else {
                // Nothing of any flow may be written after this one from an earlier group.
                for g in self.groups[..self.ngroups].iter_mut().flatten() {
                    g.closed = true;
                }
                self.roles[i] = Role::Single;
                continue;
            };
            let newest = self.groups[..self.ngroups]
                .iter()
                .rposition(|g| g.is_some_and(|g| g.key == c.key));
            if let Some((gi, Some(g))) = newest.map(|gi| (gi, self.groups[gi].as_mut())) {
                if joins(g, &c, heads[gi], lasts[gi], pkt) {
                    self.next[usize::from(g.last)] = i as u8;
                    g.last = i as u8;
                    g.count += 1;
                    g.total += c.payload;
                    g.next_seq = c.seq.wrapping_add(c.payload as u32);
                    g.closed = c.push || c.payload < usize::from(g.gso_size);
                    lasts[gi] = pkt;
                    self.roles[i] = Role::Member;
                    continue;
                }
                g.closed = true;
            }
            let gi = self.ngroups;
            self.groups[gi] = Some(Group {
                key: c.key,
                head: i as u8,
                last: i as u8,
                count: 1,
                ip: c.ip,
                hdr_len: c.hdr_len as u16,
                gso_size: c.payload as u16,
                total: c.hdr_len + c.payload,
                next_seq: c.seq.wrapping_add(c.payload as u32),
                closed: c.push,
            });
            heads[gi] = pkt;
            lasts[gi] = pkt;
            self.ngroups += 1;
            self.roles[i] = Role::Head(gi as u8);
        }
    }

    /// Packet `i`'s role in the last plan.
    pub fn role(&self, i: usize) -> Role {
        self.roles.get(i).copied().unwrap_or(Role::Skip)
    }

    /// Packets in group `g`, head first.
    pub fn members(&self, g: u8) -> impl Iterator<Item = usize> + '_ {
        let mut at = self.group(g).map_or(NONE, |g| g.head);
        std::iter::from_fn(move || {
            let here = at;
            if here == NONE {
                return None;
            }
            at = self.next.get(usize::from(here)).copied().unwrap_or(NONE);
            Some(usize::from(here))
        })
    }

    /// How many packets group `g` merges.
    pub fn count(&self, g: u8) -> usize {
        self.group(g).map_or(0, |g| usize::from(g.count))
    }

    fn group(&self, g: u8) -> Option<&Group> {
        self.groups.get(usize::from(g))?.as_ref()
    }

    /// For a group of more than one packet: the virtio header and the super-packet's headers
    /// (from `head`, the group's first packet) with lengths, PSH and the partial checksum the
    /// kernel completes. Returns the header length written into `headers`; the payloads
    /// follow, in [`Coalescer::members`] order, each after its own `hdr_len` bytes.
    pub fn super_headers(
        &self,
        g: u8,
        head: &[u8],
        last: &[u8],
        vnet: &mut [u8],
        headers: &mut [u8; MAX_HEADERS],
    ) -> Option<usize> {
        let grp = self.group(g)?;
        let hl = usize::from(grp.hdr_len);
        let out = headers.get_mut(..hl)?;
        out.copy_from_slice(head.get(..hl)?);
        set_ip_len(out, &grp.ip, grp.total);
        let th = grp.ip.len;
        let (src, dst) = grp.ip.addrs(out)?;
        let partial = csum::fold(csum::pseudo(src, dst, grp.ip.proto, grp.total - th));
        let (gso_type, csum_offset) = if grp.ip.proto == PROTO_TCP {
            // The last segment's PSH belongs to the whole.
            out[th + 13] |= last.get(th + 13)? & TCP_PSH;
            let t = if grp.ip.v6 {
                GsoType::TcpV6
            } else {
                GsoType::TcpV4
            };
            (t, 16)
        } else {
            out[th + 4..th + 6].copy_from_slice(&((grp.total - th) as u16).to_be_bytes());
            (GsoType::UdpL4, 6)
        };
        out[th + csum_offset..th + csum_offset + 2].copy_from_slice(&partial.to_be_bytes());
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type,
            hdr_len: grp.hdr_len,
            gso_size: grp.gso_size,
            csum_start: th as u16,
            csum_offset: csum_offset as u16,
        };
        hdr.encode(vnet).then_some(hl)
    }
}

/// The packet's flow and coalescing fields, if it may be coalesced at all.
fn candidate(pkt: &[u8], udp: bool) -> Option<Candidate> {
    let ip = IpHeader::parse(pkt)?;
    // IPv4 with options is written as it is.
    if !ip.v6 && ip.len != 20 {
        return None;
    }
    let ip_total = if ip.v6 {
        40 + usize::from(u16::from_be_bytes([pkt[4], pkt[5]]))
    } else {
        usize::from(u16::from_be_bytes([pkt[2], pkt[3]]))
    };
    if ip_total != pkt.len() {
        return None;
    }
    let tl = ip.transport_len(pkt)?;
    let t = pkt.get(ip.len..ip.len + tl)?;
    let (seq, push) = match ip.proto {
        PROTO_TCP => {
            let flags = t[13];
            // Plain data segments only: ACK, maybe PSH; no SYN/FIN/RST/URG/ECE/CWR.
            if flags & !TCP_PSH != TCP_ACK {
                return None;
            }
            (
                u32::from_be_bytes([t[4], t[5], t[6], t[7]]),
                flags & TCP_PSH != 0,
            )
        }
        PROTO_UDP if udp => {
            if usize::from(u16::from_be_bytes([t[4], t[5]])) != pkt.len() - ip.len {
                return None;
            }
            (0, false)
        }
        _ => return None,
    };
    let hdr_len = ip.len + tl;
    let payload = pkt.len() - hdr_len;
    if payload == 0 {
        return None;
    }
    let (src, dst) = ip.addrs(pkt)?;
    let mut key = FlowKey {
        ports: [t[0], t[1], t[2], t[3]],
        proto: ip.proto,
        v6: ip.v6,
        ..FlowKey::default()
    };
    key.src[..src.len()].copy_from_slice(src);
    key.dst[..dst.len()].copy_from_slice(dst);
    Some(Candidate {
        key,
        ip,
        hdr_len,
        payload,
        seq,
        push,
    })
}

/// May `c` (the packet `pkt`) be appended to `g`, whose first packet is `head` and last `last`?
fn joins(g: &Group, c: &Candidate, head: &[u8], last: &[u8], pkt: &[u8]) -> bool {
    if g.closed
        || usize::from(g.count) >= BATCH_MAX
        || c.hdr_len != usize::from(g.hdr_len)
        || c.payload > usize::from(g.gso_size)
        || g.total + c.payload > MAX_SUPER_PACKET
    {
        return false;
    }
    // IP fields that must agree: IPv4 TOS, DF (and the reserved bit), TTL; IPv6 version,
    // class, flow label and hop limit.
    let same_ip = if c.ip.v6 {
        head.get(..4) == pkt.get(..4) && head.get(7) == pkt.get(7)
    } else {
        head.get(1) == pkt.get(1)
            && head.get(6).map(|b| b >> 5) == pkt.get(6).map(|b| b >> 5)
            && head.get(8) == pkt.get(8)
    };
    if !same_ip {
        return false;
    }
    if c.ip.proto == PROTO_UDP {
        return true;
    }
    let th = c.ip.len;
    // Same acknowledgement and window, same options; the next sequence number.
    c.seq == g.next_seq
        && last.get(th + 8..th + 12) == pkt.get(th + 8..th + 12)
        && last.get(th + 14..th + 16) == pkt.get(th + 14..th + 16)
        && head.get(th + 20..c.hdr_len) == pkt.get(th + 20..c.hdr_len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offload::split::tests::{gso_hdr, split_all, super_packet, transport_ok};
    use proptest::prelude::*;

    /// Run the plan and build every packet as the TUN would receive it: (vnet header or
    /// None, bytes).
    fn coalesce_all(pkts: &[Vec<u8>], udp: bool) -> Vec<(Option<VnetHdr>, Vec<u8>)> {
        let mut c = Coalescer::default();
        c.plan(pkts.iter().map(|p| Some(p.as_slice())), udp);
        let mut out = Vec::new();
        for i in 0..pkts.len() {
            match c.role(i) {
                Role::Skip | Role::Member => {}
                Role::Single => out.push((None, pkts[i].clone())),
                Role::Head(g) if c.count(g) == 1 => out.push((None, pkts[i].clone())),
                Role::Head(g) => {
                    let members: Vec<usize> = c.members(g).collect();
                    let last = &pkts[*members.last().expect("members")];
                    let mut vnet = [0u8; 10];
                    let mut hdrs = [0u8; MAX_HEADERS];
                    let hl = c
                        .super_headers(g, &pkts[i], last, &mut vnet, &mut hdrs)
                        .expect("headers");
                    let mut bytes = hdrs[..hl].to_vec();
                    for m in members {
                        bytes.extend_from_slice(&pkts[m][hl..]);
                    }
                    out.push((VnetHdr::decode(&vnet), bytes));
                }
            }
        }
        out
    }

    /// A super-packet as the kernel hands it over (pseudo-header sum in the checksum field).
    fn kernel_super(v6: bool, tcp: bool, opts: usize, payload: &[u8], flags: u8) -> Vec<u8> {
        let mut p = super_packet(v6, tcp, opts, payload, flags);
        let ip = IpHeader::parse(&p).expect("ip");
        let total = p.len();
        set_ip_len(&mut p, &ip, total);
        let (src, dst) = ip.addrs(&p).expect("addrs");
        let partial = csum::fold(csum::pseudo(src, dst, ip.proto, p.len() - ip.len));
        let at = ip.len + if tcp { 16 } else { 6 };
        p[at..at + 2].copy_from_slice(&partial.to_be_bytes());
        p
    }

    proptest! {
        #[test]
        fn split_then_coalesce_round_trips(
            v6: bool, tcp: bool, opts in 0usize..=3, len in 1usize..30_000, gso in 200u16..1400,
            push: bool,
        ) {
            // At most one batch of segments.
            let len = len.min(usize::from(gso) * BATCH_MAX);
            let payload: Vec<u8> = (0..len).map(|i| (i * 13 + 1) as u8).collect();
            let flags = if push { TCP_ACK | TCP_PSH } else { TCP_ACK };
            let original = kernel_super(v6, tcp, opts * 4, &payload, flags);
            let segs = split_all(&original, &gso_hdr(v6, tcp, gso));
            for s in &segs {
                prop_assert!(transport_ok(s));
            }
            let out = coalesce_all(&segs, true);
            prop_assert_eq!(out.len(), 1, "one flow, in order: one super-packet");
            let (hdr, bytes) = &out[0];
            if segs.len() == 1 {
                prop_assert!(hdr.is_none());
                prop_assert!(bytes == &segs[0], "a lone segment is written as it is");
            } else {
                prop_assert!(bytes == &original, "the super-packet comes back byte for byte");
                let hdr = hdr.expect("vnet header");
                prop_assert_eq!(hdr.gso_size, gso);
                prop_assert_eq!(hdr.flags, F_NEEDS_CSUM);
                prop_assert_eq!(hdr.gso_type, gso_hdr(v6, tcp, gso).gso_type);
            }
        }

        #[test]
        fn shuffled_or_duplicated_segments_never_merge_wrongly(
            v6: bool, len in 2000usize..20_000, gso in 300u16..1400,
            order in proptest::collection::vec(0usize..1000, 1..BATCH_MAX),
        ) {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let original = kernel_super(v6, true, 0, &payload, TCP_ACK | TCP_PSH);
            let segs = split_all(&original, &gso_hdr(v6, true, gso));
            let picked: Vec<Vec<u8>> = order.iter().map(|&k| segs[k % segs.len()].clone()).collect();
            let ihl = if v6 { 40 } else { 20 };
            let base = 0xFFFF_F000u32;
            let mut written = 0;
            for (hdr, bytes) in coalesce_all(&picked, true) {
                // Whatever was merged is one contiguous, in-order stretch of the stream.
                let seq = u32::from_be_bytes([bytes[ihl + 4], bytes[ihl + 5], bytes[ihl + 6], bytes[ihl + 7]]);
                let off = seq.wrapping_sub(base) as usize;
                let body = &bytes[ihl + 20..];
                prop_assert!(body == &payload[off..off + body.len()], "merged stretch at {off}");
                if let Some(h) = hdr {
                    prop_assert_eq!(usize::from(h.gso_size), usize::from(gso));
                    written += body.len().div_ceil(usize::from(gso));
                } else {
                    written += 1;
                }
            }
            prop_assert_eq!(written, picked.len(), "every packet written exactly once");
        }
    }

    fn tcp_segs(v6: bool, n: usize) -> Vec<Vec<u8>> {
        let original = kernel_super(v6, true, 0, &vec![5u8; 1000 * n], TCP_ACK);
        split_all(&original, &gso_hdr(v6, true, 1000))
    }

    fn groups(pkts: &[Vec<u8>], udp: bool) -> usize {
        coalesce_all(pkts, udp).len()
    }

    #[test]
    fn each_unsafe_case_is_refused() {
        let segs = tcp_segs(false, 3);
        assert_eq!(groups(&segs, false), 1, "the clean case merges");
        type Edit = fn(&mut Vec<u8>);
        let cases: &[(&str, Edit)] = &[
            ("other destination", |p| p[19] ^= 1),
            ("other port", |p| p[23] ^= 1),
            ("other ack", |p| p[20 + 11] ^= 1),
            ("other window", |p| p[20 + 15] ^= 1),
            ("other TOS", |p| p[1] ^= 4),
            ("other TTL", |p| p[8] ^= 1),
            ("other DF", |p| p[6] ^= 0x40),
            ("a gap in sequence", |p| p[20 + 7] ^= 1),
            ("SYN", |p| p[20 + 13] |= 0x02),
            ("FIN", |p| p[20 + 13] |= 0x01),
            ("RST", |p| p[20 + 13] |= 0x04),
            ("URG", |p| p[20 + 13] |= 0x20),
            ("ECE", |p| p[20 + 13] |= 0x40),
            ("IP length disagrees", |p| p[3] ^= 1),
            ("a fragment", |p| p[6] |= 0x20),
        ];
        for (what, edit) in cases {
            let mut s = segs.clone();
            edit(&mut s[1]);
            assert!(groups(&s, false) >= 2, "{what}: must not merge");
        }
        // IPv4 options: written as they are.
        let opt = super_packet(false, true, 0, &[1u8; 100], TCP_ACK);
        let mut with_opts = vec![0u8; opt.len() + 4];
        with_opts[0] = 0x46;
        with_opts[1..20].copy_from_slice(&opt[1..20]);
        with_opts[24..].copy_from_slice(&opt[20..]);
        let ip = IpHeader::parse(&with_opts).expect("ip");
        let total = with_opts.len();
        set_ip_len(&mut with_opts, &ip, total);
        assert_eq!(groups(&[with_opts.clone(), with_opts], false), 2);
        // After PSH or a short segment nothing joins.
        let mut s = segs.clone();
        s[0][20 + 13] |= TCP_PSH;
        assert_eq!(groups(&s, false), 2);
        // A short segment, then one with the next sequence number: only the short one joins.
        let short = split_all(
            &kernel_super(false, true, 0, &[5u8; 2500], TCP_ACK),
            &gso_hdr(false, true, 1000),
        );
        let set_seq = |p: &mut Vec<u8>, seq: u32| p[24..28].copy_from_slice(&seq.to_be_bytes());
        let (mut b, mut c) = (short[2].clone(), short[1].clone());
        set_seq(&mut b, 0xFFFF_F000u32.wrapping_add(1000));
        set_seq(&mut c, 0xFFFF_F000u32.wrapping_add(1500));
        assert_eq!(groups(&[short[0].clone(), b, c], false), 2);
        // Different option bytes.
        let o = split_all(
            &kernel_super(false, true, 12, &[5u8; 3000], TCP_ACK),
            &gso_hdr(false, true, 1000),
        );
        let mut s = o.clone();
        s[1][20 + 21] ^= 1;
        assert!(groups(&s, false) >= 2);
        // UDP only with USO; IPv6 class and hop limit.
        let u = split_all(
            &kernel_super(true, false, 0, &[5u8; 3000], 0),
            &gso_hdr(true, false, 1000),
        );
        assert_eq!(groups(&u, false), 3);
        assert_eq!(groups(&u, true), 1);
        let mut s = u.clone();
        s[1][1] ^= 0x10;
        assert!(groups(&s, true) >= 2);
        let mut s = u.clone();
        s[1][7] ^= 1;
        assert!(groups(&s, true) >= 2);
        // A non-candidate in between closes the group: the later segment does not overtake it.
        let mut s = segs.clone();
        s.insert(1, vec![0x45, 0, 0, 20]);
        assert_eq!(groups(&s, false), 3);
        let six = tcp_segs(true, 2);
        assert_eq!(groups(&six, false), 1);
    }

    #[test]
    fn at_most_64_kib() {
        // 60 full segments of one stream (two super-packets' worth): 46 fit in 64 KiB.
        let mut segs = Vec::new();
        for half in 0..2u32 {
            let mut p = kernel_super(false, true, 0, &vec![1u8; 1400 * 30], TCP_ACK);
            let seq = 0xFFFF_F000u32.wrapping_add(half * 1400 * 30);
            p[24..28].copy_from_slice(&seq.to_be_bytes());
            segs.extend(split_all(&p, &gso_hdr(false, true, 1400)));
        }
        let out = coalesce_all(&segs, false);
        let lens: Vec<usize> = out.iter().map(|(_, b)| b.len()).collect();
        assert_eq!(lens, vec![40 + 46 * 1400, 40 + 14 * 1400]);
    }
}
