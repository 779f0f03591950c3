//! The segmentation offloads (`veil_dataplane::offload`) on arbitrary input: a virtio-net header
//! and a super-packet as the TUN device would hand them over, split into segments
//! (`SplitPlan`, `finish_checksum`), and the segments (or raw pieces of the input) planned for
//! coalescing again (`Coalescer::plan`, `super_headers`). Nothing may panic, and what comes out
//! must be consistent:
//! - every segment fits `max_segment`, carries the super-packet's headers and a slice of its
//!   payload, and the payload slices add up to the payload;
//! - every coalescing group has members in order, each packet is in at most one group, and a
//!   group's super-packet header says the summed length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use veil_dataplane::batch::BATCH_MAX;
use veil_dataplane::offload::{
    finish_checksum, Coalescer, GsoType, Role, SplitPlan, VnetHdr, MAX_HEADERS, MAX_SUPER_PACKET,
    VNET_HDR_LEN,
};

fuzz_target!(|data: &[u8]| {
    let [mode, seg, rest @ ..] = data else {
        return;
    };
    // 576 ..= 9000 + some: the MTUs a peer may have.
    let max_segment = 576 + usize::from(*seg) * 40;
    if mode & 1 == 0 {
        split_then_coalesce(rest, max_segment, mode & 2 != 0);
    } else {
        coalesce_pieces(rest, mode & 2 != 0);
    }
});

fn split_then_coalesce(data: &[u8], max_segment: usize, udp: bool) {
    let Some(hdr) = VnetHdr::decode(data) else {
        return;
    };
    let mut pkt = data[VNET_HDR_LEN..].to_vec();
    if hdr.gso_type == GsoType::None {
        let _ = finish_checksum(&mut pkt, &hdr);
        return;
    }
    let Ok(plan) = SplitPlan::new(&pkt, &hdr, max_segment) else {
        return;
    };
    let mut segments = Vec::new();
    let mut out = vec![0u8; MAX_SUPER_PACKET];
    for i in 0..plan.segments() {
        let n = plan
            .write_segment(&pkt, i, &mut out)
            .expect("every planned segment can be written");
        assert!(n <= max_segment, "segment {i}: {n} bytes > {max_segment}");
        segments.push(out[..n].to_vec());
    }
    assert!(plan
        .write_segment(&pkt, plan.segments(), &mut out)
        .is_none());
    // Same headers in every segment; payloads add up to the super-packet's.
    let header = headers_len(&pkt, &segments);
    let mut payload = Vec::new();
    for s in &segments {
        payload.extend_from_slice(&s[header..]);
    }
    assert_eq!(
        payload,
        pkt[header..],
        "segments' payloads are the super-packet's"
    );
    coalesce(segments.iter().map(Vec::as_slice), udp);
}

/// The header length all segments share: the longest prefix length `h` such that every
/// segment is at least `h` long and the payloads after `h` rebuild the super-packet.
fn headers_len(pkt: &[u8], segments: &[Vec<u8>]) -> usize {
    let n = segments.len();
    let total: usize = segments.iter().map(Vec::len).sum();
    // total = n * h + (pkt.len() - h)  =>  h = (total - pkt.len()) / (n - 1), for n > 1.
    if n > 1 {
        (total - pkt.len()) / (n - 1)
    } else {
        // One segment: the whole packet; any split point works, take the full length.
        pkt.len().min(segments[0].len())
    }
}

fn coalesce_pieces(data: &[u8], udp: bool) {
    // Pieces: a length byte pair, then that many bytes, up to BATCH_MAX pieces.
    let mut pieces = Vec::new();
    let mut rest = data;
    while let [a, b, tail @ ..] = rest {
        if pieces.len() == BATCH_MAX {
            break;
        }
        let n = (usize::from(*a) << 8 | usize::from(*b)).min(tail.len());
        pieces.push(&tail[..n]);
        rest = &tail[n..];
    }
    coalesce(pieces.into_iter(), udp);
}

fn coalesce<'a>(pkts: impl Iterator<Item = &'a [u8]>, udp: bool) {
    let pkts: Vec<&[u8]> = pkts.take(BATCH_MAX).collect();
    let mut c = Coalescer::default();
    c.plan(pkts.iter().map(|p| Some(*p)), udp);
    let mut seen = vec![false; pkts.len()];
    for (i, pkt) in pkts.iter().enumerate() {
        let Role::Head(g) = c.role(i) else {
            continue;
        };
        let members: Vec<usize> = c.members(g).collect();
        assert_eq!(members.first(), Some(&i), "a group starts at its head");
        assert_eq!(members.len(), c.count(g));
        assert!(members.windows(2).all(|w| w[0] < w[1]), "members in order");
        for &m in &members {
            assert!(!seen[m], "packet {m} in two groups");
            seen[m] = true;
            if m != i {
                assert_eq!(c.role(m), Role::Member);
            }
        }
        if members.len() < 2 {
            continue;
        }
        let last = pkts[*members.last().expect("non-empty")];
        let mut vnet = [0u8; VNET_HDR_LEN];
        let mut headers = [0u8; MAX_HEADERS];
        let hl = c
            .super_headers(g, pkt, last, &mut vnet, &mut headers)
            .expect("a planned group has headers");
        let total: usize = hl + members.iter().map(|&m| pkts[m].len() - hl).sum::<usize>();
        assert!(total <= MAX_SUPER_PACKET, "super-packet of {total} bytes");
        let v = VnetHdr::decode(&vnet).expect("written header decodes");
        assert_ne!(v.gso_type, GsoType::None);
        let ip_len = if headers[0] >> 4 == 6 {
            40 + usize::from(u16::from_be_bytes([headers[4], headers[5]]))
        } else {
            usize::from(u16::from_be_bytes([headers[2], headers[3]]))
        };
        assert_eq!(ip_len, total, "the super-packet's IP length is the sum");
    }
}
