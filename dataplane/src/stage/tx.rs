//! The TX stage: performs each packet's [`Action`]: sendmmsg for datagrams,
//! writes for the TUN device.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::batch::{Action, Batch, BATCH_MAX};
use crate::counters::{bump, TxCounters};
use crate::io::{DatagramIo, PacketIo, SendTally};
use crate::link::HandshakeDatagram;
use crate::offload::{VnetHdr, VNET_HDR_LEN};

/// How long TX waits in total for a full socket before dropping the rest of a batch.
pub const SEND_STALL_LIMIT: Duration = Duration::from_millis(200);

/// First pause after the kernel ran short of buffers (ENOBUFS, ENOMEM).
const SHORTAGE_PAUSE_FIRST: Duration = Duration::from_micros(250);
/// Longest such pause.
const SHORTAGE_PAUSE_MAX: Duration = Duration::from_millis(20);

fn is_shortage(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOBUFS | libc::ENOMEM))
}

/// Write one whole packet to the TUN device, behind a plain virtio header if it has them.
fn write_tun(tun: &impl PacketIo, vnet: bool, pkt: &[u8]) -> io::Result<usize> {
    if !vnet {
        return tun.write_packet(pkt);
    }
    let mut hdr = [0u8; VNET_HDR_LEN];
    VnetHdr::PLAIN.encode(&mut hdr);
    tun.write_gather(&[IoSlice::new(&hdr), IoSlice::new(pkt)])
}

/// TX stage state (its counters).
#[derive(Debug)]
pub struct TxStage {
    counters: Arc<TxCounters>,
}

impl TxStage {
    /// A stage reporting into `counters`.
    pub fn new(counters: Arc<TxCounters>) -> Self {
        Self { counters }
    }

    /// The stage's counters.
    pub fn counters(&self) -> &Arc<TxCounters> {
        &self.counters
    }

    /// Carry out every packet's action in `batch`.
    pub fn flush(&mut self, batch: &Batch, udp: &impl DatagramIo, tun: &impl PacketIo) {
        let mut pkts: [&[u8]; BATCH_MAX] = [&[]; BATCH_MAX];
        let mut dests = [SocketAddr::from(([0, 0, 0, 0], 0)); BATCH_MAX];
        let mut n = 0;
        let vnet = tun.offloads().vnet;
        for i in 0..batch.len.min(BATCH_MAX) {
            let Some((bytes, meta)) = batch.packet(i) else {
                continue;
            };
            match meta.action {
                Action::Drop => {}
                Action::Udp => {
                    pkts[n] = bytes;
                    dests[n] = meta.addr;
                    n += 1;
                }
                Action::Tun => match write_tun(tun, vnet, bytes) {
                    Ok(_) => {
                        bump(&self.counters.tun_packets, 1);
                        bump(&self.counters.tun_bytes, bytes.len() as u64);
                    }
                    Err(_) => bump(&self.counters.tun_errors, 1),
                },
            }
        }
        self.send_all(udp, &pkts[..n], &dests[..n]);
    }

    fn send_all(&mut self, udp: &impl DatagramIo, pkts: &[&[u8]], dests: &[SocketAddr]) {
        let mut done = 0;
        let mut stalled_since: Option<Instant> = None;
        let mut pause = SHORTAGE_PAUSE_FIRST;
        while done < pkts.len() {
            let mut tally = SendTally::default();
            match udp.send_batch(&pkts[done..], &dests[done..], &mut tally) {
                Ok(0) | Err(_)
                    if stalled_since.is_some_and(|t| t.elapsed() >= SEND_STALL_LIMIT) =>
                {
                    bump(&self.counters.udp_errors, (pkts.len() - done) as u64);
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
                    stalled_since = None;
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
                    stalled_since.get_or_insert_with(Instant::now);
                    std::thread::sleep(pause);
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
        since.get_or_insert_with(Instant::now);
        let _ = udp.wait_writable(Duration::from_millis(20));
    }

    /// Send one handshake message for the control thread.
    pub fn send_handshake(&mut self, udp: &impl DatagramIo, msg: &HandshakeDatagram) {
        match udp.send_to(msg.as_bytes(), msg.addr) {
            Ok(_) => bump(&self.counters.handshake_sent, 1),
            Err(_) => bump(&self.counters.udp_errors, 1),
        }
    }
}
