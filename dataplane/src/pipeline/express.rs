//! The express lane: small packets that came alone overtake bulk batches at every stage.
//!
//! Under a bulk transfer each stage has batches of full-size packets queued in front of it;
//! a ping, a TCP ACK, a DNS query or a voice frame read after them would wait for all of
//! them (measured here: p50 1.3 ms through the tunnel while one TCP stream ran, against 0.1 ms
//! idle). Flow-queueing schedulers (fq_codel, CAKE) fix this by serving sparse flows first;
//! the express lane is the dataplane's cheap version of that rule, decided per packet when RX
//! hands a batch on:
//!
//! - a packet rides the express lane when it is small (at most [`EXPRESS_MAX_IP`] bytes of
//!   IP packet, or a transport datagram carrying at most that) and came alone: not one
//!   segment of a TUN super-packet, not one datagram of a UDP GRO group. Packets of a bulk
//!   flow are neither, except a flow's last short segment when it was sent alone, so a bulk
//!   flow is not reordered against itself by the lane;
//! - RX moves such packets out of the batch it read into a batch of their own (buffers are
//!   swapped, not copied), marked [`Batch::express`];
//! - the RX → crypto and crypto → TX rings are each a pair ([`LaneTx`], [`LaneRx`]): the
//!   consumer always takes an express batch first.
//!
//! What it costs: one pass over the metadata of each batch RX reads; one batch of RX's pool
//! that RX keeps in reserve for express packets. What it does not do: reorder within the
//! kernel's own queues (a packet waits in the UDP socket or the TUN device's ring until RX
//! reads it), so RX's pool and byte limits still decide how long that is.

use rtrb::{Consumer, Producer, RingBuffer};

use crate::batch::{Batch, PacketMeta, Source};
use crate::wire::{TAG_LEN, TRANSPORT_HEADER_LEN};

/// Largest IP packet that rides the express lane: an ICMP echo of the default size (84
/// bytes), TCP ACKs with SACK blocks, DNS queries, most voice and game frames.
pub const EXPRESS_MAX_IP: usize = 256;

/// Largest transport datagram that rides the express lane: one carrying at most
/// [`EXPRESS_MAX_IP`] bytes (padded to 16) of IP packet.
pub const EXPRESS_MAX_DATAGRAM: usize = TRANSPORT_HEADER_LEN + EXPRESS_MAX_IP + TAG_LEN;

/// Does the packet of `meta`, read from `source`, ride the express lane?
pub fn is_express(source: Source, meta: &PacketMeta) -> bool {
    let max = match source {
        Source::Tun => EXPRESS_MAX_IP,
        Source::Udp => EXPRESS_MAX_DATAGRAM,
        Source::Originated => return false,
    };
    meta.segment == 0 && meta.len > 0 && meta.len <= max
}

/// How a batch RX read splits between the lanes.
#[derive(Debug, PartialEq, Eq)]
pub enum Split {
    /// No packet is express: the batch goes on as bulk.
    Bulk,
    /// Every packet is express: the whole batch goes on the express lane.
    AllExpress,
    /// Some are: they were moved to the express batch.
    Moved(usize),
}

/// Move the express packets of `batch` into the empty `express` batch (same source), unless
/// every packet is express (then nothing moves: the caller marks `batch` itself).
pub fn split(batch: &mut Batch, express: &mut Batch) -> Split {
    let source = batch.source;
    let mut small = 0;
    for i in 0..batch.len {
        if batch.packet(i).is_some_and(|(_, m)| is_express(source, m)) {
            small += 1;
        }
    }
    match small {
        0 => Split::Bulk,
        n if n == batch.len => Split::AllExpress,
        _ => {
            express.clear(source);
            express.express = true;
            express.stamp = batch.stamp;
            Split::Moved(batch.move_where(express, |m| is_express(source, m)))
        }
    }
}

/// The producer end of a lane pair: [`LaneTx::push`] picks the ring by [`Batch::express`].
pub struct LaneTx {
    bulk: Producer<Batch>,
    express: Producer<Batch>,
}

/// The consumer end of a lane pair: [`LaneRx::pop`] takes express batches first.
pub struct LaneRx {
    bulk: Consumer<Batch>,
    express: Consumer<Batch>,
}

/// A lane pair whose rings each hold `capacity` batches (every batch there is, so a push
/// cannot fail).
pub fn lanes(capacity: usize) -> (LaneTx, LaneRx) {
    let (bp, bc) = RingBuffer::new(capacity);
    let (ep, ec) = RingBuffer::new(capacity);
    (
        LaneTx {
            bulk: bp,
            express: ep,
        },
        LaneRx {
            bulk: bc,
            express: ec,
        },
    )
}

impl std::fmt::Debug for LaneTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaneTx").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for LaneRx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaneRx")
            .field("express", &self.express.slots())
            .field("bulk", &self.bulk.slots())
            .finish()
    }
}

impl LaneTx {
    /// Queue `batch` on its lane; gives it back if that ring is full.
    pub fn push(&mut self, batch: Batch) -> Result<(), Batch> {
        let ring = if batch.express {
            &mut self.express
        } else {
            &mut self.bulk
        };
        ring.push(batch).map_err(|rtrb::PushError::Full(b)| b)
    }
}

impl LaneRx {
    /// The next batch: an express one if there is one.
    pub fn pop(&mut self) -> Option<Batch> {
        self.express.pop().or_else(|_| self.bulk.pop()).ok()
    }

    /// Nothing queued on either lane?
    pub fn is_empty(&self) -> bool {
        self.express.is_empty() && self.bulk.is_empty()
    }

    /// Batches queued on both lanes.
    pub fn slots(&self) -> usize {
        self.express.slots() + self.bulk.slots()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Home;

    fn batch(source: Source, packets: &[(usize, usize)]) -> Batch {
        let mut b = Batch::new(Home::Rx, 2048);
        b.clear(source);
        for (i, &(len, segment)) in packets.iter().enumerate() {
            let (buf, meta) = b.packet_mut(i).unwrap();
            buf[..len].fill(i as u8 + 1);
            *meta = PacketMeta {
                offset: 0,
                len,
                segment,
                ..PacketMeta::default()
            };
        }
        b.len = packets.len();
        b
    }

    fn tags(b: &Batch) -> Vec<u8> {
        (0..b.len).map(|i| b.packet(i).unwrap().0[0]).collect()
    }

    #[test]
    fn small_lone_packets_ride_express_and_segments_never_do() {
        let tun = |len, segment| {
            is_express(
                Source::Tun,
                &PacketMeta {
                    len,
                    segment,
                    ..PacketMeta::default()
                },
            )
        };
        assert!(tun(84, 0), "a ping");
        assert!(tun(EXPRESS_MAX_IP, 0));
        assert!(!tun(EXPRESS_MAX_IP + 1, 0));
        assert!(!tun(100, 1388), "the short last segment of a super-packet");
        assert!(!tun(0, 0), "an empty (dropped) slot");
        let udp = |len, segment| {
            is_express(
                Source::Udp,
                &PacketMeta {
                    len,
                    segment,
                    ..PacketMeta::default()
                },
            )
        };
        assert!(udp(32 + 96, 0), "a ping in a transport datagram");
        assert!(udp(EXPRESS_MAX_DATAGRAM, 0));
        assert!(!udp(EXPRESS_MAX_DATAGRAM + 1, 0));
        assert!(!udp(128, 1472), "one of a GRO group");
        let originated = PacketMeta {
            len: 32,
            ..PacketMeta::default()
        };
        assert!(!is_express(Source::Originated, &originated));
    }

    #[test]
    fn split_moves_only_the_express_packets_keeping_order() {
        let mut b = batch(
            Source::Tun,
            &[(1400, 1388), (84, 0), (1400, 1388), (60, 0), (900, 0)],
        );
        let mut e = batch(Source::Udp, &[(10, 0)]);
        assert_eq!(split(&mut b, &mut e), Split::Moved(2));
        assert_eq!(tags(&b), vec![1, 3, 5]);
        assert_eq!(tags(&e), vec![2, 4]);
        assert!(e.express && e.source == Source::Tun && !b.express);
    }

    #[test]
    fn split_leaves_all_bulk_and_all_express_batches_whole() {
        let mut e = batch(Source::Udp, &[]);
        let mut bulk = batch(Source::Udp, &[(1432, 1432), (1432, 1432)]);
        assert_eq!(split(&mut bulk, &mut e), Split::Bulk);
        assert_eq!(bulk.len, 2);
        let mut acks = batch(Source::Udp, &[(96, 0), (96, 0), (128, 0)]);
        assert_eq!(split(&mut acks, &mut e), Split::AllExpress);
        assert_eq!(acks.len, 3);
        assert_eq!(e.len, 0);
    }

    #[test]
    fn the_consumer_takes_express_first() {
        let (mut tx, mut rx) = lanes(4);
        let mut bulk = batch(Source::Tun, &[(1400, 0)]);
        bulk.stamp = None;
        tx.push(bulk).unwrap();
        let mut exp = batch(Source::Tun, &[(84, 0)]);
        exp.express = true;
        tx.push(exp).unwrap();
        assert_eq!(rx.slots(), 2);
        assert!(rx.pop().unwrap().express, "queued second, served first");
        assert!(!rx.pop().unwrap().express);
        assert!(rx.is_empty() && rx.pop().is_none());
    }
}
