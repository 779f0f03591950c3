//! The RX stage: batched reads from the UDP socket and the TUN device.
//!
//! Transport messages stay in the batch for the crypto stage; handshake
//! messages are copied out for the control thread, and dropped (counted) when
//! its ring is full, so handshake floods never hold up transport traffic.

use std::io;
use std::sync::Arc;
use std::time::Instant;

use crate::batch::{Batch, Source, BATCH_MAX};
use crate::counters::{bump, RxCounters};
use crate::io::{DatagramIo, PacketIo};
use crate::link::HandshakeDatagram;
use crate::wire::{
    message_type, COOKIE_REPLY_LEN, INITIATION_LEN, RESPONSE_LEN, TRANSPORT_HEADER_LEN,
    TRANSPORT_MIN_LEN, TYPE_COOKIE_REPLY, TYPE_INITIATION, TYPE_RESPONSE, TYPE_TRANSPORT,
};

/// Where handshake messages go.
pub trait HandshakeSink {
    /// Take a message; false if there is no room.
    fn offer(&mut self, msg: HandshakeDatagram) -> bool;
}

impl HandshakeSink for rtrb::Producer<HandshakeDatagram> {
    fn offer(&mut self, msg: HandshakeDatagram) -> bool {
        self.push(msg).is_ok()
    }
}

impl HandshakeSink for Vec<HandshakeDatagram> {
    fn offer(&mut self, msg: HandshakeDatagram) -> bool {
        self.push(msg);
        true
    }
}

/// RX stage state (its counters).
#[derive(Debug)]
pub struct RxStage {
    counters: Arc<RxCounters>,
}

impl RxStage {
    /// A stage reporting into `counters`.
    pub fn new(counters: Arc<RxCounters>) -> Self {
        Self { counters }
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
        let received = {
            let (bufs, metas) = batch.all_mut();
            for m in metas.iter_mut() {
                m.offset = 0;
                m.len = 0;
            }
            match udp.recv_batch(bufs, metas) {
                Ok(n) => n.min(BATCH_MAX),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) =>
                {
                    0
                }
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

    /// Read up to a batch of IP packets from the TUN device into `batch`
    /// (cleared first), each at offset 16 so it can be sealed in place.
    /// Returns how many were read.
    pub fn read_tun(&mut self, tun: &impl PacketIo, batch: &mut Batch) -> io::Result<usize> {
        batch.clear(Source::Tun);
        let mut n = 0;
        let mut bytes = 0u64;
        let mut result = Ok(());
        while n < BATCH_MAX {
            let Some((buf, meta)) = batch.packet_mut(n) else {
                break;
            };
            // Leave room for the tag (and padding) after the packet.
            let end = buf.len().saturating_sub(crate::wire::TAG_LEN);
            let Some(room) = buf.get_mut(TRANSPORT_HEADER_LEN..end) else {
                break;
            };
            match tun.read_packet(room) {
                Ok(0) => break,
                Ok(len) => {
                    meta.offset = TRANSPORT_HEADER_LEN;
                    meta.len = len;
                    bytes += len as u64;
                    n += 1;
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
        bump(&self.counters.tun_packets, n as u64);
        bump(&self.counters.tun_bytes, bytes);
        result.map(|()| n)
    }
}
