//! What the crypto stage sends on its own: packets staged while a peer has no keys, and the
//! keepalives, control frames and data the control thread asks for, sealed into a batch.

use super::*;

impl CryptoStage {
    pub(super) fn stage(&mut self, peer_id: PeerId, pkt: &[u8]) {
        let mut copy = self.spare.pop().unwrap_or_default();
        copy.clear();
        copy.extend_from_slice(pkt);
        let Some(peer) = self
            .peers
            .get_mut(peer_id.0 as usize)
            .and_then(Option::as_mut)
        else {
            return;
        };
        let cost = staged_cost(&copy);
        // Within the session's memory limit: the oldest staged packets make room; a packet
        // that does not fit even then is dropped.
        let mut freed = Vec::new();
        while peer.held.saturating_add(cost) > self.session_memory {
            let Some(old) = peer.staged.pop_front() else {
                break;
            };
            peer.held = peer.held.saturating_sub(staged_cost(&old));
            bump(&self.counters.drop_session_memory, 1);
            freed.push(old);
        }
        if peer.held.saturating_add(cost) > self.session_memory {
            bump(&self.counters.drop_session_memory, 1);
            freed.push(copy);
        } else {
            bump(&self.counters.staged, 1);
            peer.held += cost;
            peer.staged.push_back(copy);
            if peer.staged.len() > MAX_STAGED {
                if let Some(old) = peer.staged.pop_front() {
                    bump(&self.counters.drop_staged_overflow, 1);
                    peer.held = peer.held.saturating_sub(staged_cost(&old));
                    freed.push(old);
                }
            }
        }
        for b in freed {
            self.recycle(b);
        }
    }

    /// Are there packets to originate (keepalives, frames, flushed staged data)?
    pub fn has_originated(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Seal pending originated packets into `batch` (cleared first), as many as fit.
    pub fn originate(&mut self, batch: &mut Batch, now: Instant, events: &mut impl EventSink) {
        batch.clear(Source::Originated);
        while !batch.is_full() {
            let Some((peer_id, what)) = self.pending.pop_front() else {
                break;
            };
            if let Some(p) = self.peer_mut(peer_id) {
                p.held = p.held.saturating_sub(what.cost());
            }
            let i = batch.len;
            let Some((buf, meta)) = batch.packet_mut(i) else {
                break;
            };
            if let Originate::Sealed(bytes, (dest, local)) = &what {
                if let Some(dst) = buf.get_mut(..bytes.len()) {
                    dst.copy_from_slice(bytes);
                    *meta = crate::batch::PacketMeta {
                        offset: 0,
                        len: bytes.len(),
                        addr: *dest,
                        local: *local,
                        action: Action::Udp,
                        segment: 0,
                    };
                    batch.len += 1;
                }
                if let Originate::Sealed(bytes, _) = what {
                    self.recycle(bytes);
                }
                continue;
            }
            let payload_len = match &what {
                Originate::Keepalive | Originate::Sealed(..) => 0,
                Originate::Frame(f) => {
                    match buf.get_mut(TRANSPORT_HEADER_LEN..).map(|b| f.encode(b)) {
                        Some(Ok(n)) => n,
                        _ => continue,
                    }
                }
                Originate::Data(pkt) => {
                    let Some(dst) =
                        buf.get_mut(TRANSPORT_HEADER_LEN..TRANSPORT_HEADER_LEN + pkt.len())
                    else {
                        continue;
                    };
                    dst.copy_from_slice(pkt);
                    pkt.len()
                }
            };
            let sealing = match what {
                Originate::Data(_) => Sealing::Data,
                _ => Sealing::Control,
            };
            match self.seal_for(peer_id, buf, payload_len, now, sealing) {
                Ok((len, (dest, local), wants_rekey)) => {
                    *meta = crate::batch::PacketMeta {
                        offset: 0,
                        len,
                        addr: dest,
                        local,
                        action: Action::Udp,
                        segment: 0,
                    };
                    batch.len += 1;
                    match &what {
                        Originate::Keepalive => bump(&self.counters.keepalives_sent, 1),
                        Originate::Frame(_) => bump(&self.counters.frames_sent, 1),
                        Originate::Data(_) | Originate::Sealed(..) => {}
                    }
                    if wants_rekey {
                        self.ask_handshake(peer_id, now, events);
                    }
                }
                Err(SealFail::NoKeypair) => match &what {
                    Originate::Data(pkt) => {
                        let pkt = pkt.clone();
                        self.stage(peer_id, &pkt);
                        self.ask_handshake(peer_id, now, events);
                    }
                    // A keepalive with no session starts one (persistent keepalive).
                    Originate::Keepalive => self.ask_handshake(peer_id, now, events),
                    // Frames belong to a session: without one there is nothing to say.
                    Originate::Frame(_) | Originate::Sealed(..) => {
                        bump(&self.counters.drop_frame_no_session, 1)
                    }
                },
                Err(SealFail::NoEndpoint) => bump(&self.counters.drop_no_endpoint, 1),
                Err(SealFail::Buffer) => bump(&self.counters.drop_invalid_inner, 1),
                Err(SealFail::Revoked) => {}
            }
            if let Originate::Data(pkt) = what {
                self.recycle(pkt);
            }
        }
    }

    /// Number of packets staged for `peer` (for tests and metrics).
    pub fn staged_len(&self, peer: PeerId) -> usize {
        self.peers
            .get(peer.0 as usize)
            .and_then(Option::as_ref)
            .map_or(0, |p| p.staged.len())
    }
}
