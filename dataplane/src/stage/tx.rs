//! The TX stage: performs each packet's [`Action`]: sendmmsg for datagrams,
//! writes for the TUN device.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::batch::{Action, Batch, LocalAddr, BATCH_MAX};
use crate::counters::{bump, TxCounters};
use crate::io::{DatagramIo, Outgoing, PacketIo, SendTally};
use crate::link::HandshakeDatagram;
use crate::offload::{Coalescer, Role, VnetHdr, MAX_HEADERS, VNET_HDR_LEN};

/// How long TX waits in total, per batch, for a full socket or for kernel buffers before it
/// drops the rest of the batch (counted in `udp_errors` and `drop_send_stall`): a few ms, so
/// a stuck socket never holds the thread (and every packet queued behind it) longer.
pub const SEND_STALL_LIMIT: Duration = Duration::from_millis(3);

/// First pause after the kernel ran short of buffers (ENOBUFS, ENOMEM).
const SHORTAGE_PAUSE_FIRST: Duration = Duration::from_micros(20);
/// Longest such pause.
const SHORTAGE_PAUSE_MAX: Duration = Duration::from_micros(250);
/// Longest single wait for a full socket to become writable.
const WRITABLE_WAIT_MAX: Duration = Duration::from_millis(1);

/// What is left of the batch's stall budget that began at `since`.
fn remaining(since: Instant) -> Duration {
    SEND_STALL_LIMIT.saturating_sub(since.elapsed())
}

fn is_shortage(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOBUFS | libc::ENOMEM))
}

/// Write one whole packet to the TUN device behind a plain virtio header.
fn write_plain(tun: &impl PacketIo, pkt: &[u8]) -> io::Result<usize> {
    let mut hdr = [0u8; VNET_HDR_LEN];
    VnetHdr::PLAIN.encode(&mut hdr);
    tun.write_gather(&[IoSlice::new(&hdr), IoSlice::new(pkt)])
}

/// TX stage state (its counters).
#[derive(Debug)]
pub struct TxStage {
    counters: Arc<TxCounters>,
    gro: Box<Coalescer>,
}

impl TxStage {
    /// A stage reporting into `counters`.
    pub fn new(counters: Arc<TxCounters>) -> Self {
        Self {
            counters,
            gro: Box::default(),
        }
    }

    /// The stage's counters.
    pub fn counters(&self) -> &Arc<TxCounters> {
        &self.counters
    }

    /// Carry out every packet's action in `batch`. With TUN offloads, packets of one flow
    /// are coalesced into super-packets first ([`Coalescer`]).
    pub fn flush(&mut self, batch: &Batch, udp: &impl DatagramIo, tun: &impl PacketIo) {
        let mut pkts: [&[u8]; BATCH_MAX] = [&[]; BATCH_MAX];
        let mut dests = [SocketAddr::from(([0, 0, 0, 0], 0)); BATCH_MAX];
        let mut srcs = [None; BATCH_MAX];
        let mut n = 0;
        let offloads = tun.offloads();
        let count = batch.len.min(BATCH_MAX);
        if offloads.vnet {
            let to_tun = (0..count).map(|i| {
                batch
                    .packet(i)
                    .filter(|(_, m)| m.action == Action::Tun)
                    .map(|(b, _)| b)
            });
            self.gro.plan(to_tun, offloads.uso);
        }
        for i in 0..count {
            let Some((bytes, meta)) = batch.packet(i) else {
                continue;
            };
            match meta.action {
                Action::Drop => {}
                Action::Udp => {
                    pkts[n] = bytes;
                    dests[n] = meta.addr;
                    srcs[n] = meta.local;
                    n += 1;
                }
                Action::Tun if !offloads.vnet => {
                    let written = tun.write_packet(bytes);
                    self.count_tun_write(written, 1, bytes.len());
                }
                Action::Tun => match self.gro.role(i) {
                    Role::Head(g) if self.gro.count(g) > 1 => self.write_group(batch, g, tun),
                    Role::Single | Role::Head(_) => {
                        let written = write_plain(tun, bytes);
                        self.count_tun_write(written, 1, bytes.len());
                    }
                    Role::Member | Role::Skip => {}
                },
            }
        }
        self.send_all(udp, &pkts[..n], &dests[..n], &srcs[..n]);
    }

    /// Write coalesced group `g` as one super-packet: its rewritten headers, then each
    /// member's payload, gathered by the kernel.
    fn write_group(&mut self, batch: &Batch, g: u8, tun: &impl PacketIo) {
        let packet = |i: usize| batch.packet(i).map_or(&[][..], |(b, _)| b);
        let head = self.gro.members(g).next().map_or(&[][..], packet);
        let last = self.gro.members(g).last().map_or(&[][..], packet);
        let mut vnet = [0u8; VNET_HDR_LEN];
        let mut headers = [0u8; MAX_HEADERS];
        let Some(hl) = self
            .gro
            .super_headers(g, head, last, &mut vnet, &mut headers)
        else {
            bump(&self.counters.tun_errors, self.gro.count(g) as u64);
            return;
        };
        let mut parts = [IoSlice::new(&[]); BATCH_MAX + 2];
        parts[0] = IoSlice::new(&vnet);
        parts[1] = IoSlice::new(&headers[..hl]);
        parts[2] = IoSlice::new(head.get(hl..).unwrap_or_default());
        let mut used = 3;
        let mut bytes = head.len();
        for m in self.gro.members(g).skip(1) {
            let Some(slot) = parts.get_mut(used) else {
                break;
            };
            let pkt = packet(m);
            *slot = IoSlice::new(pkt.get(hl..).unwrap_or_default());
            bytes += pkt.len();
            used += 1;
        }
        let count = used - 2;
        match tun.write_gather(&parts[..used]) {
            Ok(n) => {
                bump(&self.counters.tun_super_packets, 1);
                self.count_tun_write(Ok(n), count, bytes);
            }
            // The kernel refused the super-packet (not the packets): write them one by one.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                for m in self.gro.members(g) {
                    let pkt = packet(m);
                    self.count_tun_write(write_plain(tun, pkt), 1, pkt.len());
                }
            }
            Err(e) => self.count_tun_write(Err(e), count, bytes),
        }
    }

    fn count_tun_write(&self, written: io::Result<usize>, packets: usize, bytes: usize) {
        match written {
            Ok(_) => {
                bump(&self.counters.tun_writes, 1);
                bump(&self.counters.tun_packets, packets as u64);
                bump(&self.counters.tun_bytes, bytes as u64);
            }
            Err(_) => bump(&self.counters.tun_errors, packets as u64),
        }
    }

    fn send_all(
        &mut self,
        udp: &impl DatagramIo,
        pkts: &[&[u8]],
        dests: &[SocketAddr],
        srcs: &[Option<LocalAddr>],
    ) {
        let mut done = 0;
        let mut stalled_since: Option<Instant> = None;
        let mut pause = SHORTAGE_PAUSE_FIRST;
        while done < pkts.len() {
            let mut tally = SendTally::default();
            let out = Outgoing {
                pkts: &pkts[done..],
                dests: &dests[done..],
                srcs: &srcs[done..],
            };
            match udp.send_batch(out, &mut tally) {
                Ok(0) | Err(_)
                    if stalled_since.is_some_and(|t| t.elapsed() >= SEND_STALL_LIMIT) =>
                {
                    let dropped = (pkts.len() - done) as u64;
                    bump(&self.counters.udp_errors, dropped);
                    bump(&self.counters.drop_send_stall, dropped);
                    return;
                }
                Ok(k) if k > 0 => {
                    let failed = tally.failed;
                    bump(&self.counters.udp_gso_sends, tally.gso_messages);
                    bump(&self.counters.udp_gso_datagrams, tally.gso_datagrams);
                    bump(&self.counters.udp_gso_disabled, tally.gso_disabled);
                    let bytes: usize = pkts[done..done + k].iter().map(|p| p.len()).sum();
                    bump(
                        &self.counters.udp_datagrams,
                        k as u64 - failed.min(k as u64),
                    );
                    bump(&self.counters.udp_bytes, bytes as u64);
                    bump(&self.counters.udp_errors, failed);
                    done += k;
                }
                Ok(_) => self.stall(udp, &mut stalled_since),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.stall(udp, &mut stalled_since)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_shortage(&e) => {
                    // Not this datagram's fault: pause with a growing backoff
                    // and retry, within the same stall limit as a full socket.
                    bump(&self.counters.udp_retries, 1);
                    let since = *stalled_since.get_or_insert_with(Instant::now);
                    std::thread::sleep(pause.min(remaining(since)));
                    pause = pause.saturating_mul(2).min(SHORTAGE_PAUSE_MAX);
                }
                Err(_) => {
                    // The first datagram was refused outright: skip it and go on.
                    bump(&self.counters.udp_errors, 1);
                    done += 1;
                }
            }
        }
    }

    fn stall(&mut self, udp: &impl DatagramIo, since: &mut Option<Instant>) {
        bump(&self.counters.udp_would_block, 1);
        let since = *since.get_or_insert_with(Instant::now);
        let _ = udp.wait_writable(WRITABLE_WAIT_MAX.min(remaining(since)));
    }

    /// Send one handshake message for the control thread.
    pub fn send_handshake(&mut self, udp: &impl DatagramIo, msg: &HandshakeDatagram) {
        match udp.send_to(msg.as_bytes(), msg.addr, msg.local) {
            Ok(_) => bump(&self.counters.handshake_sent, 1),
            Err(_) => bump(&self.counters.udp_errors, 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Home;
    use crate::offload::split::tests::{gso_hdr, split_all, super_packet};
    use crate::offload::{GsoType, TunOffloads, F_NEEDS_CSUM};
    use std::cell::RefCell;

    /// A TUN with a virtio header that records every write, refusing super-packets if asked.
    #[derive(Default)]
    struct RecordingTun {
        writes: RefCell<Vec<Vec<u8>>>,
        refuse_gso: bool,
    }

    impl PacketIo for RecordingTun {
        fn read_packet(&self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::ErrorKind::WouldBlock.into())
        }
        fn write_packet(&self, buf: &[u8]) -> io::Result<usize> {
            self.writes.borrow_mut().push(buf.to_vec());
            Ok(buf.len())
        }
        fn offloads(&self) -> TunOffloads {
            TunOffloads {
                vnet: true,
                uso: true,
            }
        }
        fn write_gather(&self, parts: &[IoSlice<'_>]) -> io::Result<usize> {
            let bytes: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
            let gso = VnetHdr::decode(&bytes).is_some_and(|h| h.gso_type != GsoType::None);
            if gso && self.refuse_gso {
                return Err(io::Error::from_raw_os_error(libc::EINVAL));
            }
            self.write_packet(&bytes)
        }
    }

    /// A socket nothing is sent on (every packet goes to the TUN device).
    fn no_udp() -> crate::sys::UdpSocket {
        crate::sys::UdpSocket::bind("127.0.0.1:0".parse().expect("addr"), false).expect("bind")
    }

    /// A batch holding `pkts` at offset 16, each to be written to the TUN device.
    fn batch_of(pkts: &[Vec<u8>]) -> Batch {
        let mut b = Batch::new(Home::Rx, 2048);
        for (i, p) in pkts.iter().enumerate() {
            let (buf, meta) = b.packet_mut(i).expect("slot");
            buf[16..16 + p.len()].copy_from_slice(p);
            meta.offset = 16;
            meta.len = p.len();
            meta.action = Action::Tun;
        }
        b.len = pkts.len();
        b
    }

    #[test]
    fn a_flow_is_written_as_one_super_packet() {
        let original = super_packet(false, true, 0, &[7u8; 5000], 0x18);
        let segs = split_all(&original, &gso_hdr(false, true, 1000));
        let tun = RecordingTun::default();
        let mut tx = TxStage::new(Arc::default());
        tx.flush(&batch_of(&segs), &no_udp(), &tun);
        let writes = tun.writes.borrow();
        assert_eq!(writes.len(), 1, "five segments, one write");
        let hdr = VnetHdr::decode(&writes[0]).expect("vnet header");
        assert_eq!(
            (hdr.gso_type, hdr.gso_size, hdr.flags),
            (GsoType::TcpV4, 1000, F_NEEDS_CSUM)
        );
        assert_eq!(writes[0].len(), VNET_HDR_LEN + original.len());
        assert_eq!(
            &writes[0][VNET_HDR_LEN + 40..],
            &original[40..],
            "payload in order"
        );
        let c = tx.counters();
        assert_eq!(c.tun_packets.load(std::sync::atomic::Ordering::Relaxed), 5);
        assert_eq!(c.tun_writes.load(std::sync::atomic::Ordering::Relaxed), 1);
    }

    #[test]
    fn a_refused_super_packet_is_written_packet_by_packet() {
        let original = super_packet(true, true, 0, &[9u8; 3000], 0x10);
        let segs = split_all(&original, &gso_hdr(true, true, 1000));
        let tun = RecordingTun {
            refuse_gso: true,
            ..RecordingTun::default()
        };
        let mut tx = TxStage::new(Arc::default());
        tx.flush(&batch_of(&segs), &no_udp(), &tun);
        let writes = tun.writes.borrow();
        assert_eq!(writes.len(), 3);
        for (w, s) in writes.iter().zip(&segs) {
            assert_eq!(VnetHdr::decode(w), Some(VnetHdr::PLAIN));
            assert_eq!(&w[VNET_HDR_LEN..], &s[..]);
        }
        assert_eq!(
            tx.counters()
                .tun_errors
                .load(std::sync::atomic::Ordering::Relaxed),
            0
        );
    }
}
