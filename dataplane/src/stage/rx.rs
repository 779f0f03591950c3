//! The RX stage: batched reads from the UDP socket and the TUN device.
//!
//! Transport messages stay in the batch for the crypto stage; handshake
//! messages are copied out for the control thread, and dropped (counted) when
//! its ring is full, so handshake floods never hold up transport traffic.

use std::io;
use std::sync::Arc;
use std::time::Instant;

use crate::batch::{Batch, PacketMeta, Source, BATCH_MAX};
use crate::counters::{bump, RxCounters};
use crate::io::{DatagramIo, PacketIo};
use crate::link::HandshakeDatagram;
use crate::offload::{
    finish_checksum, GsoType, SplitPlan, VnetHdr, MAX_SUPER_PACKET, VNET_HDR_LEN,
};
use crate::source_filter::SourceFilter;
use crate::wire::{
    message_type, COOKIE_REPLY_LEN, INITIATION_LEN, RESPONSE_LEN, TRANSPORT_HEADER_LEN,
    TRANSPORT_MIN_LEN, TYPE_COOKIE_REPLY, TYPE_INITIATION, TYPE_RESPONSE, TYPE_TRANSPORT,
};

/// Where handshake messages go.
pub trait HandshakeSink {
    /// Take a message; false if there is no room.
    fn offer(&mut self, msg: HandshakeDatagram) -> bool;
}

super::ring_and_vec_sinks!(HandshakeSink, offer, HandshakeDatagram);

/// RX stage state (its counters, and a super-packet being split).
#[derive(Debug)]
pub struct RxStage {
    counters: Arc<RxCounters>,
    /// Sources whose handshake messages are dropped here (written by the control thread).
    filter: Arc<SourceFilter>,
    split: SplitState,
    gro: GroState,
}

impl RxStage {
    /// A stage reporting into `counters`, dropping the handshake messages `filter` blocks.
    pub fn new(counters: Arc<RxCounters>, filter: Arc<SourceFilter>) -> Self {
        Self {
            counters,
            filter,
            split: SplitState::default(),
            gro: GroState::default(),
        }
    }

    /// The stage's counters.
    pub fn counters(&self) -> &Arc<RxCounters> {
        &self.counters
    }

    /// Receive one batch of datagrams into `batch` (cleared first). Transport
    /// messages stay; handshake messages go to `handshakes`; the rest is dropped
    /// (their length set to 0). Returns the number of transport messages kept.
    pub fn recv_udp(
        &mut self,
        udp: &impl DatagramIo,
        batch: &mut Batch,
        handshakes: &mut impl HandshakeSink,
        now: Instant,
    ) -> io::Result<usize> {
        batch.clear(Source::Udp);
        let received = if udp.gro() {
            self.recv_coalesced(udp, batch)?
        } else {
            let (bufs, metas) = batch.all_mut();
            for m in metas.iter_mut() {
                m.offset = 0;
                m.len = 0;
            }
            match udp.recv_batch(bufs, metas) {
                Ok(n) => n.min(BATCH_MAX),
                Err(e) if is_empty(&e) => 0,
                Err(e) => {
                    bump(&self.counters.io_errors, 1);
                    return Err(e);
                }
            }
        };
        batch.len = received;
        let mut kept = 0;
        let mut bytes = 0u64;
        let (bufs, metas) = batch.split_mut();
        for (buf, meta) in bufs.iter().zip(metas.iter_mut()) {
            bytes += meta.len as u64;
            let msg = match buf.get(..meta.len) {
                Some(m) if meta.len > 0 => m,
                _ => {
                    bump(&self.counters.drop_truncated, 1);
                    meta.len = 0;
                    continue;
                }
            };
            match (message_type(msg), msg.len()) {
                (Some(TYPE_TRANSPORT), l) if l >= TRANSPORT_MIN_LEN => kept += 1,
                (Some(TYPE_INITIATION), INITIATION_LEN)
                | (Some(TYPE_RESPONSE), RESPONSE_LEN)
                | (Some(TYPE_COOKIE_REPLY), COOKIE_REPLY_LEN) => {
                    if self.filter.blocks(meta.addr, now) {
                        bump(&self.counters.drop_handshake_filtered, 1);
                        meta.len = 0;
                        continue;
                    }
                    let queued = HandshakeDatagram::new(msg, meta.addr, Some(now))
                        .is_some_and(|d| handshakes.offer(d));
                    if queued {
                        bump(&self.counters.handshake_queued, 1);
                    } else {
                        bump(&self.counters.drop_handshake_ring_full, 1);
                    }
                    meta.len = 0;
                }
                _ => {
                    bump(&self.counters.drop_malformed, 1);
                    meta.len = 0;
                }
            }
        }
        bump(&self.counters.udp_datagrams, received as u64);
        bump(&self.counters.udp_bytes, bytes);
        Ok(kept)
    }

    /// Receive with UDP GRO: coalesced datagrams land in the stage's 64 KiB scratch buffers and
    /// their segments are copied into the batch's slots, one datagram each; what does not fit
    /// waits for the next batch. Returns how many slots are filled.
    fn recv_coalesced(&mut self, udp: &impl DatagramIo, batch: &mut Batch) -> io::Result<usize> {
        let mut n = self.gro.drain_into(batch, 0, &self.counters);
        if n < BATCH_MAX && self.gro.is_drained() {
            let (bufs, metas) = self.gro.scratch();
            match udp.recv_batch(bufs, metas) {
                Ok(k) => self.gro.received(k),
                Err(e) if is_empty(&e) => {}
                Err(e) => {
                    bump(&self.counters.io_errors, 1);
                    return Err(e);
                }
            }
            n = self.gro.drain_into(batch, n, &self.counters);
        }
        Ok(n)
    }

    /// Read up to a batch of IP packets from the TUN device into `batch`
    /// (cleared first), each at offset 16 so it can be sealed in place.
    /// Super-packets (TUN offloads on) are split into as many slots as they need; the
    /// segments that do not fit wait for the next batch. Returns how many were read.
    pub fn read_tun(&mut self, tun: &impl PacketIo, batch: &mut Batch) -> io::Result<usize> {
        batch.clear(Source::Tun);
        let vnet = tun.offloads().vnet;
        let mut n = self.resume_split(batch, 0);
        let mut bytes = 0u64;
        let mut reads = 0u64;
        let mut result = Ok(());
        while n < BATCH_MAX {
            let Some((buf, meta)) = batch.packet_mut(n) else {
                break;
            };
            // Leave room for the tag (and padding) after the packet; with a virtio header,
            // read it into the 10 bytes before the packet so the packet lands at offset 16.
            let end = buf.len().saturating_sub(crate::wire::TAG_LEN);
            let at = if vnet {
                TRANSPORT_HEADER_LEN - VNET_HDR_LEN
            } else {
                TRANSPORT_HEADER_LEN
            };
            let Some(room) = buf.get_mut(at..end) else {
                break;
            };
            let read = if vnet {
                let spill = self.split.scratch(room.len());
                tun.read_split(room, spill.get_mut(SPILL_AT..).unwrap_or_default())
            } else {
                tun.read_packet(room)
            };
            match read {
                Ok(0) => break,
                Ok(len) if !vnet => {
                    meta.offset = TRANSPORT_HEADER_LEN;
                    meta.len = len;
                    meta.segment = 0;
                    bytes += len as u64;
                    reads += 1;
                    n += 1;
                }
                Ok(len) => {
                    reads += 1;
                    bytes += len.saturating_sub(VNET_HDR_LEN) as u64;
                    match self.take_offloaded(batch, n, len) {
                        Some(k) => n = k,
                        None => bump(&self.counters.drop_offload, 1),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    bump(&self.counters.io_errors, 1);
                    result = Err(e);
                    break;
                }
            }
        }
        batch.len = n;
        bump(&self.counters.tun_reads, reads);
        bump(&self.counters.tun_packets, n as u64);
        bump(&self.counters.tun_bytes, bytes);
        result.map(|()| n)
    }

    /// A read of `len` bytes (virtio header included) landed in slot `n` (and past its room,
    /// in the scratch spill). Returns the next free slot, or `None` for a counted drop.
    fn take_offloaded(&mut self, batch: &mut Batch, n: usize, len: usize) -> Option<usize> {
        let (buf, meta) = batch.packet_mut(n)?;
        let room = buf
            .len()
            .saturating_sub(crate::wire::TAG_LEN + TRANSPORT_HEADER_LEN);
        let hdr = VnetHdr::decode(buf.get(TRANSPORT_HEADER_LEN - VNET_HDR_LEN..)?)?;
        let pkt_len = len.checked_sub(VNET_HDR_LEN)?;
        if hdr.gso_type == GsoType::None {
            // Whole packet, in place; one longer than the slot spilled and is dropped.
            let pkt = buf.get_mut(TRANSPORT_HEADER_LEN..TRANSPORT_HEADER_LEN + pkt_len)?;
            if pkt_len > room || finish_checksum(pkt, &hdr).is_err() {
                return None;
            }
            meta.offset = TRANSPORT_HEADER_LEN;
            meta.len = pkt_len;
            meta.segment = 0;
            return Some(n + 1);
        }
        // A super-packet: move its head out of the slot, in front of the spill, so it is
        // contiguous in the scratch buffer; then split it into slots from `n` on.
        let head = pkt_len.min(room);
        let start = SPILL_AT.checked_sub(head)?;
        let scratch = self.split.buf.as_deref_mut()?;
        scratch
            .get_mut(start..SPILL_AT)?
            .copy_from_slice(buf.get(TRANSPORT_HEADER_LEN..TRANSPORT_HEADER_LEN + head)?);
        let pkt = scratch.get(start..start + pkt_len)?;
        let plan = SplitPlan::new(pkt, &hdr, room).ok()?;
        bump(&self.counters.tun_super_packets, 1);
        self.split.pending = Some(Pending {
            start,
            len: pkt_len,
            plan,
            next: 0,
        });
        Some(self.resume_split(batch, n))
    }

    /// Write the pending super-packet's next segments into slots `n..`; returns the next free
    /// slot.
    fn resume_split(&mut self, batch: &mut Batch, mut n: usize) -> usize {
        let Some(mut p) = self.split.pending.take() else {
            return n;
        };
        let Some(pkt) = self
            .split
            .buf
            .as_deref()
            .and_then(|b| b.get(p.start..p.start + p.len))
        else {
            return n;
        };
        while p.next < p.plan.segments() && n < BATCH_MAX {
            let Some((buf, meta)) = batch.packet_mut(n) else {
                break;
            };
            let end = buf.len().saturating_sub(crate::wire::TAG_LEN);
            let out = buf.get_mut(TRANSPORT_HEADER_LEN..end).unwrap_or_default();
            match p.plan.write_segment(pkt, p.next, out) {
                Some(len) => {
                    meta.offset = TRANSPORT_HEADER_LEN;
                    meta.len = len;
                    meta.segment = p.plan.segment_size();
                    n += 1;
                }
                None => bump(&self.counters.drop_offload, 1),
            }
            p.next += 1;
        }
        if p.next < p.plan.segments() {
            self.split.pending = Some(p);
        }
        n
    }
}

fn is_empty(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// Messages one GRO receive takes: each may carry dozens of datagrams.
const GRO_MESSAGES: usize = 4;

/// Received coalesced datagrams not yet handed out in slots.
#[derive(Debug, Default)]
struct GroState {
    bufs: Vec<Box<[u8]>>,
    metas: [PacketMeta; GRO_MESSAGES],
    /// Messages received, the one being handed out, and the offset in it.
    count: usize,
    msg: usize,
    off: usize,
}

impl GroState {
    fn scratch(&mut self) -> (&mut [Box<[u8]>], &mut [PacketMeta]) {
        if self.bufs.is_empty() {
            self.bufs = (0..GRO_MESSAGES)
                .map(|_| vec![0u8; MAX_SUPER_PACKET].into_boxed_slice())
                .collect();
        }
        for m in &mut self.metas {
            *m = PacketMeta::default();
        }
        (&mut self.bufs, &mut self.metas)
    }

    fn received(&mut self, k: usize) {
        self.count = k.min(GRO_MESSAGES);
        self.msg = 0;
        self.off = 0;
    }

    fn is_drained(&self) -> bool {
        self.msg >= self.count
    }

    /// Hand out datagrams into slots `n..`; returns the next free slot.
    fn drain_into(&mut self, batch: &mut Batch, mut n: usize, counters: &RxCounters) -> usize {
        while self.msg < self.count && n < BATCH_MAX {
            let (Some(meta), Some(buf)) = (self.metas.get(self.msg), self.bufs.get(self.msg))
            else {
                break;
            };
            let Some((slot, slot_meta)) = batch.packet_mut(n) else {
                break;
            };
            let len = meta.len.min(buf.len());
            let seg = if meta.segment > 0 {
                meta.segment
            } else {
                len.max(1)
            };
            if self.off == 0 && meta.segment > 0 && len > meta.segment {
                bump(&counters.udp_gro_receives, 1);
                bump(
                    &counters.udp_gro_datagrams,
                    len.div_ceil(meta.segment) as u64,
                );
            }
            let end = (self.off + seg).min(len);
            let piece = buf.get(self.off..end).unwrap_or_default();
            *slot_meta = PacketMeta {
                addr: meta.addr,
                // One of a coalesced group keeps the group's size; a lone datagram has 0.
                segment: if meta.segment > 0 && len > meta.segment {
                    meta.segment
                } else {
                    0
                },
                ..PacketMeta::default()
            };
            // A datagram larger than a slot (or truncated) keeps length 0: a counted drop.
            if let Some(dst) = slot.get_mut(..piece.len()) {
                dst.copy_from_slice(piece);
                slot_meta.len = piece.len();
            }
            n += 1;
            self.off = end;
            if self.off >= len {
                self.msg += 1;
                self.off = 0;
            }
        }
        n
    }
}

/// Where the spill of a super-packet starts in the scratch buffer: room before it for the
/// head that landed in a slot.
const SPILL_AT: usize = 16 * 1024;

/// A super-packet being split across batches.
#[derive(Debug)]
struct Pending {
    start: usize,
    len: usize,
    plan: SplitPlan,
    next: usize,
}

/// The scratch buffer for super-packets (allocated at the first offloaded read) and the one
/// being split.
#[derive(Debug, Default)]
struct SplitState {
    buf: Option<Box<[u8]>>,
    pending: Option<Pending>,
}

impl SplitState {
    /// The scratch buffer, big enough for a slot's head plus the largest spill.
    fn scratch(&mut self, head: usize) -> &mut [u8] {
        debug_assert!(head <= SPILL_AT);
        self.buf
            .get_or_insert_with(|| vec![0u8; SPILL_AT + MAX_SUPER_PACKET].into_boxed_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Home;
    use crate::offload::split::tests::{gso_hdr, split_all, super_packet, transport_ok};
    use crate::offload::TunOffloads;
    use std::cell::RefCell;
    use std::collections::VecDeque;

    /// A TUN with a virtio header that hands out queued reads (header + packet).
    #[derive(Default)]
    struct QueuedTun {
        reads: RefCell<VecDeque<Vec<u8>>>,
    }

    impl QueuedTun {
        fn push(&self, hdr: &VnetHdr, pkt: &[u8]) {
            let mut r = vec![0u8; VNET_HDR_LEN];
            hdr.encode(&mut r);
            r.extend_from_slice(pkt);
            self.reads.borrow_mut().push_back(r);
        }
    }

    impl PacketIo for QueuedTun {
        fn read_packet(&self, _: &mut [u8]) -> io::Result<usize> {
            unreachable!("a vnet device is read with read_split")
        }
        fn write_packet(&self, buf: &[u8]) -> io::Result<usize> {
            Ok(buf.len())
        }
        fn offloads(&self) -> TunOffloads {
            TunOffloads {
                vnet: true,
                uso: true,
            }
        }
        fn read_split(&self, head: &mut [u8], spill: &mut [u8]) -> io::Result<usize> {
            let Some(r) = self.reads.borrow_mut().pop_front() else {
                return Err(io::ErrorKind::WouldBlock.into());
            };
            let h = r.len().min(head.len());
            head[..h].copy_from_slice(&r[..h]);
            spill[..r.len() - h].copy_from_slice(&r[h..]);
            Ok(r.len())
        }
    }

    fn packets(b: &Batch) -> Vec<Vec<u8>> {
        (0..b.len)
            .map(|i| b.packet(i).expect("packet").0.to_vec())
            .collect()
    }

    #[test]
    fn super_packets_split_across_batches_and_bad_ones_are_counted_drops() {
        let counters = Arc::new(RxCounters::default());
        let mut rx = RxStage::new(counters.clone(), Arc::default());
        let tun = QueuedTun::default();
        // 100 segments: more than a batch holds.
        let big = super_packet(false, true, 0, &[3u8; 100 * 600], 0x18);
        tun.push(&gso_hdr(false, true, 600), &big);
        // A lying header: gso_size 0; and one whose TCP header runs past the end.
        tun.push(&gso_hdr(false, true, 0), &big);
        let mut cut = big[..50].to_vec();
        cut[32] = 0xF0;
        tun.push(&gso_hdr(false, true, 600), &cut);
        let small = super_packet(true, false, 0, b"whole", 0);
        tun.push(&VnetHdr::PLAIN, &small);

        let want = split_all(&big, &gso_hdr(false, true, 600));
        let mut b = Batch::new(Home::Rx, crate::batch::buffer_size(1420));
        let mut got = Vec::new();
        let mut segment = Vec::new();
        for _ in 0..4 {
            rx.read_tun(&tun, &mut b).expect("read");
            got.extend(packets(&b));
            segment.extend((0..b.len).map(|i| b.packet(i).expect("packet").1.segment));
        }
        // Segments say they came from a super-packet (so none rides the express lane); the
        // packet that came whole says it came alone.
        assert!(segment[..100].iter().all(|&s| s == 600), "{segment:?}");
        assert_eq!(segment[100], 0);
        assert_eq!(got.len(), 101);
        assert_eq!(&got[..100], &want[..], "segments in order, across batches");
        assert!(got.iter().take(100).all(|p| transport_ok(p)));
        assert_eq!(got[100], small);
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(load(&counters.drop_offload), 2);
        assert_eq!(load(&counters.tun_super_packets), 1);
        assert_eq!(load(&counters.tun_packets), 101);
    }
}
