//! The crypto stage: owner of every per-session mutable dataplane state.
//!
//! It opens transport messages from UDP batches and seals IP packets from TUN
//! batches in place, applies cryptokey routing both ways, stages packets while
//! a handshake is pending, and originates keepalives and control frames on
//! command. It talks to the control thread only through [`Command`]s in and
//! [`Event`]s out.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crate::batch::{ip_info, Action, Batch, LocalAddr, Source};
use crate::counters::{bump, CryptoCounters};
use crate::crypto::{Keypair, OpenError, SealError};
use crate::link::{Command, Epoch, Event, KeypairRole, PeerId, PeerStats};
use crate::priority::{Degradation, Priority, PriorityMap, Shedding};
use crate::ratelimit::{PeerLimits, TokenBucket};
use crate::route::AllowedIps;
use crate::timing::Timing;
use crate::wire::{is_control_frame, ControlFrame, Transport, TRANSPORT_HEADER_LEN};

mod originate;

/// Most packets staged per peer while its handshake is pending.
pub const MAX_STAGED: usize = 128;

/// What one held packet or frame costs a session's memory limit besides its bytes: its queue
/// entry and buffer bookkeeping.
pub const HELD_OVERHEAD: usize = 64;

/// Where events for the control thread go.
pub trait EventSink {
    /// Hand over an event; false if there was no room (the caller counts the drop).
    fn emit(&mut self, ev: Event) -> bool;
}

super::ring_and_vec_sinks!(EventSink, emit, Event);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Current,
    Previous,
    Next,
}

#[derive(Debug)]
enum Originate {
    Keepalive,
    Frame(ControlFrame),
    Data(Vec<u8>),
    /// Sealed already (a goodbye sealed before its keys were wiped), for this destination.
    Sealed(Vec<u8>, Dest),
}

/// Where a sealed datagram goes: the peer's endpoint, and our source address for it.
type Dest = (SocketAddr, Option<LocalAddr>);

impl Originate {
    /// What it costs its session's memory limit while it waits.
    fn cost(&self) -> usize {
        HELD_OVERHEAD
            + match self {
                Originate::Keepalive => 0,
                Originate::Frame(f) => f.encoded_len(),
                Originate::Data(b) | Originate::Sealed(b, _) => b.len(),
            }
    }
}

/// What a staged packet costs its session's memory limit.
fn staged_cost(pkt: &[u8]) -> usize {
    HELD_OVERHEAD + pkt.len()
}

struct Peer {
    stats: Arc<PeerStats>,
    endpoint: Option<SocketAddr>,
    /// Our address the endpoint's packets arrive on: what we send to it from (sticky source).
    local: Option<LocalAddr>,
    /// Keep `local`: not for a peer with a configured endpoint (we are its client), whose
    /// datagrams leave from the route's source, so that a change of it is a migration.
    sticky: bool,
    current: Option<Arc<Keypair>>,
    previous: Option<Arc<Keypair>>,
    next: Option<Arc<Keypair>>,
    staged: VecDeque<Vec<u8>>,
    /// When we last asked the control thread for a handshake.
    handshake_asked: Option<Instant>,
    /// Local index of the keypair for which a rekey was asked already.
    rekey_asked_for: Option<u32>,
    /// New source address reported to the control thread and not accepted (yet), and when.
    roam_reported: Option<(SocketAddr, Instant)>,
    /// Does a new source address wait for the control thread (`Command::SetRoaming`)?
    roaming_validated: bool,
    /// Control frames this peer may still hand to the control thread.
    frames: TokenBucket,
    /// Rate limits, shared by every pipeline; `None` when unlimited.
    limits: Option<Arc<PeerLimits>>,
    /// Bytes this session holds here: its staged packets and its entries in `pending`
    /// ([`Originate::cost`]).
    held: usize,
}

impl Peer {
    fn keypair(&self, slot: Slot) -> Option<&Keypair> {
        match slot {
            Slot::Current => self.current.as_deref(),
            Slot::Previous => self.previous.as_deref(),
            Slot::Next => self.next.as_deref(),
        }
    }
}

/// The crypto stage's state. See the module docs.
pub struct CryptoStage {
    peers: Vec<Option<Peer>>,
    by_index: HashMap<u32, (PeerId, Slot)>,
    routes: AllowedIps<PeerId>,
    pending: VecDeque<(PeerId, Originate)>,
    spare: Vec<Vec<u8>>,
    timing: Timing,
    epoch: Epoch,
    counters: Arc<CryptoCounters>,
    priorities: PriorityMap,
    high_water_pct: u32,
    level: Degradation,
    shedding: Shedding,
    /// Most bytes one session may hold here (`usize::MAX`: no limit).
    session_memory: usize,
}

impl std::fmt::Debug for CryptoStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CryptoStage")
            .field("peers", &self.peers.iter().flatten().count())
            .field("keypairs", &self.by_index.len())
            .finish_non_exhaustive()
    }
}

/// How the re-request of a handshake is paced while packets keep arriving.
const HANDSHAKE_ASK_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// Default RX → crypto ring occupancy (percent) above which Low traffic is shed.
pub const DEFAULT_HIGH_WATER_PCT: u32 = 75;

/// How often an unanswered or refused new source address is reported again.
const ROAM_REPORT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Control frames per second one peer may have handed to the control thread, and the burst.
/// A veil peer sends a few a minute; beyond this they are dropped before they are parsed, so
/// one peer cannot fill the event ring every peer shares.
pub const FRAMES_PER_SEC: f64 = 10.0;
const FRAME_BURST: f64 = 20.0;

impl CryptoStage {
    /// An empty stage.
    pub fn new(timing: Timing, epoch: Epoch, counters: Arc<CryptoCounters>) -> Self {
        Self {
            peers: Vec::new(),
            by_index: HashMap::new(),
            routes: AllowedIps::new(),
            pending: VecDeque::new(),
            spare: Vec::new(),
            timing,
            epoch,
            counters,
            priorities: PriorityMap::default(),
            high_water_pct: DEFAULT_HIGH_WATER_PCT,
            level: Degradation::Normal,
            shedding: Shedding::default(),
            session_memory: usize::MAX,
        }
    }

    /// Occupancy of the RX → crypto ring in percent, measured by the thread shell
    /// before each round; decides load shedding.
    pub fn set_ring_occupancy(&mut self, pct: u32) {
        self.shedding = Shedding::decide(pct, self.high_water_pct, self.level);
    }

    /// The stage's counters.
    pub fn counters(&self) -> &Arc<CryptoCounters> {
        &self.counters
    }

    fn peer_mut(&mut self, id: PeerId) -> Option<&mut Peer> {
        self.peers.get_mut(id.0 as usize).and_then(Option::as_mut)
    }

    /// `peer` no longer holds `kp`: its index leaves the lookup, unless the control thread
    /// gave the index to another peer's keypair since (it does so only once `kp` expired).
    fn forget_index(&mut self, peer: PeerId, kp: Option<Arc<Keypair>>) {
        if let Some(kp) = kp {
            if self
                .by_index
                .get(&kp.local_index)
                .is_some_and(|e| e.0 == peer)
            {
                self.by_index.remove(&kp.local_index);
            }
        }
    }

    /// Apply one command from the control thread.
    pub fn apply(&mut self, cmd: Command, now: Instant) {
        match cmd {
            Command::AddPeer {
                peer,
                allowed_ips,
                endpoint,
                stats,
            } => {
                let i = peer.0 as usize;
                if self.peers.len() <= i {
                    self.peers.resize_with(i + 1, || None);
                }
                self.remove_peer(peer);
                bump(&self.counters.peers_added, 1);
                self.peers[i] = Some(Peer {
                    stats,
                    endpoint,
                    local: None,
                    sticky: endpoint.is_none(),
                    current: None,
                    previous: None,
                    next: None,
                    staged: VecDeque::new(),
                    handshake_asked: None,
                    rekey_asked_for: None,
                    roam_reported: None,
                    roaming_validated: false,
                    frames: TokenBucket::full(FRAME_BURST),
                    limits: None,
                    held: 0,
                });
                for net in allowed_ips {
                    self.routes.insert(net, peer);
                }
            }
            Command::RemovePeer { peer } => {
                bump(&self.counters.peers_removed, 1);
                self.remove_peer(peer)
            }
            Command::SetAllowedIps { peer, allowed_ips } => {
                if self.peer_mut(peer).is_some() {
                    self.routes.remove_value(peer);
                    for net in allowed_ips {
                        self.routes.insert(net, peer);
                    }
                }
            }
            Command::SetEndpoint {
                peer,
                endpoint,
                local,
            } => {
                if let Some(p) = self.peer_mut(peer) {
                    p.endpoint = Some(endpoint);
                    p.local = local.filter(|_| p.sticky);
                    if p.roam_reported.is_some_and(|(a, _)| a == endpoint) {
                        p.roam_reported = None;
                    }
                }
            }
            Command::SetRoaming { peer, validated } => {
                if let Some(p) = self.peer_mut(peer) {
                    p.roaming_validated = validated;
                    if !validated {
                        p.roam_reported = None;
                    }
                }
            }
            Command::RefuseEndpoint { peer, addr } => {
                if let Some(p) = self.peer_mut(peer) {
                    // Asked again no sooner than ROAM_REPORT_INTERVAL from now.
                    p.roam_reported = Some((addr, now));
                }
            }
            Command::InstallKeypair {
                peer,
                keypair,
                role,
                announce,
            } => self.install(peer, keypair, role, announce),
            Command::ClearKeypairs { peer, goodbye } => {
                if let Some(reason) = goodbye {
                    self.seal_goodbye(peer, reason, now);
                }
                self.pending
                    .retain(|(id, o)| *id != peer || matches!(o, Originate::Sealed(..)));
                self.recount_held(peer);
                if let Some(p) = self.peer_mut(peer) {
                    let (a, b, c) = (p.current.take(), p.previous.take(), p.next.take());
                    self.forget_index(peer, a);
                    self.forget_index(peer, b);
                    self.forget_index(peer, c);
                }
            }
            Command::DropStaged { peer } => {
                if let Some(p) = self.peer_mut(peer) {
                    let dropped = std::mem::take(&mut p.staged);
                    bump(&self.counters.drop_staged_expired, dropped.len() as u64);
                    for b in dropped {
                        self.recycle(b);
                    }
                    self.recount_held(peer);
                }
            }
            Command::SetRateLimit { peer, limit } => {
                if let Some(p) = self.peer_mut(peer) {
                    p.limits = PeerLimits::new(limit);
                }
            }
            Command::ShareRateLimit { peer, limits } => {
                if let Some(p) = self.peer_mut(peer) {
                    p.limits = limits;
                }
            }
            Command::SetDegradation { level } => {
                self.level = level;
                self.set_ring_occupancy(0);
            }
            Command::SetPriorityPolicy {
                map,
                high_water_pct,
            } => {
                self.priorities = map;
                self.high_water_pct = high_water_pct.min(100);
            }
            Command::SetSessionMemory { bytes } => {
                self.session_memory = bytes.unwrap_or(usize::MAX);
            }
            Command::SendKeepalive { peer } => self.queue(peer, Originate::Keepalive),
            Command::SendFrame { peer, frame } => self.queue(peer, Originate::Frame(frame)),
        }
    }

    /// Seal a goodbye now, while the keys still exist; it is sent with the next originated batch.
    fn seal_goodbye(&mut self, peer_id: PeerId, reason: u8, now: Instant) {
        let frame = ControlFrame::Goodbye { reason };
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.resize(crate::wire::TRANSPORT_MIN_LEN + 16 + frame.encoded_len(), 0);
        let Some(body) = buf.get_mut(TRANSPORT_HEADER_LEN..) else {
            return;
        };
        let Ok(n) = frame.encode(body) else { return };
        if let Ok((len, dest, _)) = self.seal_for(peer_id, &mut buf, n, now, Sealing::Goodbye) {
            buf.truncate(len);
            bump(&self.counters.frames_sent, 1);
            // A goodbye is the session's last word: held over the limit rather than lost.
            let what = Originate::Sealed(buf, dest);
            if let Some(p) = self.peer_mut(peer_id) {
                p.held += what.cost();
            }
            self.pending.push_back((peer_id, what));
        }
    }

    /// Queue `what` to be sealed for `peer`, unless its session's memory limit is reached
    /// (a counted drop).
    fn queue(&mut self, peer: PeerId, what: Originate) {
        let limit = self.session_memory;
        let Some(p) = self.peer_mut(peer) else {
            return;
        };
        let cost = what.cost();
        if p.held.saturating_add(cost) > limit {
            bump(&self.counters.drop_session_memory, 1);
            if let Originate::Data(b) | Originate::Sealed(b, _) = what {
                self.recycle(b);
            }
            return;
        }
        p.held += cost;
        self.pending.push_back((peer, what));
    }

    /// Count again what `peer` holds, after its entries left `pending` or its staged packets
    /// went.
    fn recount_held(&mut self, peer: PeerId) {
        let queued: usize = (self.pending.iter())
            .filter(|(id, _)| *id == peer)
            .map(|(_, o)| o.cost())
            .sum();
        if let Some(p) = self.peer_mut(peer) {
            p.held = queued + p.staged.iter().map(|b| staged_cost(b)).sum::<usize>();
        }
    }

    /// Bytes `peer`'s session holds in this stage (for tests and `veil show`).
    pub fn held_bytes(&self, peer: PeerId) -> usize {
        self.peers
            .get(peer.0 as usize)
            .and_then(Option::as_ref)
            .map_or(0, |p| p.held)
    }

    fn recycle(&mut self, mut buf: Vec<u8>) {
        if self.spare.len() < MAX_STAGED {
            buf.clear();
            self.spare.push(buf);
        }
    }

    fn remove_peer(&mut self, peer: PeerId) {
        let Some(slot) = self.peers.get_mut(peer.0 as usize) else {
            return;
        };
        let Some(p) = slot.take() else { return };
        bump(&self.counters.drop_staged_expired, p.staged.len() as u64);
        self.forget_index(peer, p.current);
        self.forget_index(peer, p.previous);
        self.forget_index(peer, p.next);
        self.routes.remove_value(peer);
        self.pending.retain(|(id, _)| *id != peer);
    }

    fn install(&mut self, peer: PeerId, keypair: Arc<Keypair>, role: KeypairRole, announce: bool) {
        let index = keypair.local_index;
        let Some(p) = self.peers.get_mut(peer.0 as usize).and_then(Option::as_mut) else {
            return;
        };
        let mut retired = Vec::with_capacity(2);
        match role {
            KeypairRole::Initiator => {
                retired.push(p.next.take());
                retired.push(p.previous.take());
                p.previous = p.current.take();
                p.current = Some(keypair);
            }
            KeypairRole::Responder => {
                retired.push(p.next.replace(keypair));
            }
        }
        p.handshake_asked = None;
        let flush = role == KeypairRole::Initiator;
        if flush {
            // One pipeline (`announce`) confirms the session; every pipeline flushes its own.
            if p.staged.is_empty() && announce {
                // The responder may not send until it hears from us: confirm at once.
                self.pending.push_back((peer, Originate::Keepalive));
            } else {
                for pkt in p.staged.drain(..) {
                    self.pending.push_back((peer, Originate::Data(pkt)));
                }
            }
        }
        for kp in retired {
            self.forget_index(peer, kp);
        }
        // Re-point indices of the keypairs that moved slots.
        if let Some(p) = self.peers.get(peer.0 as usize).and_then(Option::as_ref) {
            for (kp, slot) in [
                (&p.current, Slot::Current),
                (&p.previous, Slot::Previous),
                (&p.next, Slot::Next),
            ] {
                if let Some(kp) = kp {
                    self.by_index.insert(kp.local_index, (peer, slot));
                }
            }
        }
        debug_assert!(self.by_index.contains_key(&index));
    }

    /// The responder's `next` keypair received its first packet: it becomes current.
    fn confirm_next(&mut self, peer: PeerId) {
        let Some(p) = self.peers.get_mut(peer.0 as usize).and_then(Option::as_mut) else {
            return;
        };
        let Some(next) = p.next.take() else { return };
        next.confirm();
        let old_prev = p.previous.take();
        p.previous = p.current.replace(next);
        let staged: Vec<Vec<u8>> = p.staged.drain(..).collect();
        let ids = [
            p.current.as_ref().map(|k| (k.local_index, Slot::Current)),
            p.previous.as_ref().map(|k| (k.local_index, Slot::Previous)),
        ];
        for pkt in staged {
            self.pending.push_back((peer, Originate::Data(pkt)));
        }
        self.forget_index(peer, old_prev);
        for (idx, slot) in ids.into_iter().flatten() {
            self.by_index.insert(idx, (peer, slot));
        }
    }

    fn ask_handshake(&mut self, peer: PeerId, now: Instant, events: &mut impl EventSink) {
        let Some(p) = self.peer_mut(peer) else { return };
        if p.handshake_asked
            .is_some_and(|t| now.saturating_duration_since(t) < HANDSHAKE_ASK_INTERVAL)
        {
            return;
        }
        p.handshake_asked = Some(now);
        if !events.emit(Event::HandshakeNeeded { peer }) {
            bump(&self.counters.drop_event_ring_full, 1);
        }
    }

    /// Process a batch read by RX: open UDP batches, seal TUN batches.
    pub fn process(&mut self, batch: &mut Batch, now: Instant, events: &mut impl EventSink) {
        match batch.source {
            Source::Udp => self.open_batch(batch, now, events),
            Source::Tun => self.seal_batch(batch, now, events),
            Source::Originated => {}
        }
    }

    fn open_batch(&mut self, batch: &mut Batch, now: Instant, events: &mut impl EventSink) {
        let stamp = self.epoch.nanos(now);
        let (bufs, metas) = batch.split_mut();
        for (buf, meta) in bufs.iter_mut().zip(metas.iter_mut()) {
            meta.action = Action::Drop;
            let Some(msg) = buf.get_mut(..meta.len) else {
                continue;
            };
            let Ok(view) = Transport::new_checked(&*msg) else {
                continue;
            };
            let Some(&(peer_id, slot)) = self.by_index.get(&view.receiver_index()) else {
                bump(&self.counters.drop_unknown_index, 1);
                continue;
            };
            let reject_after = self.timing.reject_after;
            let Some(peer) = self
                .peers
                .get_mut(peer_id.0 as usize)
                .and_then(Option::as_mut)
            else {
                bump(&self.counters.drop_unknown_index, 1);
                continue;
            };
            let rekey_asked_for = peer.rekey_asked_for;
            let Some(kp) = peer.keypair(slot) else {
                bump(&self.counters.drop_unknown_index, 1);
                continue;
            };
            // Cleared or removed by the control side; this pipeline has not applied it yet.
            if kp.revoked() {
                bump(&self.counters.drop_revoked_key, 1);
                continue;
            }
            if now.saturating_duration_since(kp.created) >= reject_after {
                bump(&self.counters.drop_expired_key, 1);
                continue;
            }
            let (plain_len, _counter) = match kp.open(msg) {
                Ok(v) => v,
                Err(OpenError::Replay) => {
                    bump(&self.counters.drop_replay, 1);
                    continue;
                }
                Err(OpenError::Authentication | OpenError::Malformed) => {
                    bump(&self.counters.drop_auth, 1);
                    continue;
                }
            };
            let wants_rekey = kp.initiator
                && rekey_asked_for != Some(kp.local_index)
                && now.saturating_duration_since(kp.created)
                    >= self.timing.rekey_on_receive_after();
            let kp_index = kp.local_index;
            bump(&self.counters.decrypted, 1);
            let stats = &peer.stats;
            stats.last_rx_any.store(stamp, Ordering::Relaxed);
            add_shared(&stats.rx_bytes, meta.len as u64);
            let from = meta.addr;
            let local = meta.local.filter(|_| peer.sticky);
            // A standard peer roams at once (WireGuard's semantics): the endpoint follows
            // every authenticated packet and the control thread is told. For a peer whose
            // roaming is validated, a packet from an address the control thread has not
            // approved is authenticated but not delivered; the control thread decides.
            let moved = peer.endpoint != Some(from);
            let (approved, roamed) = if !moved {
                // The kernel's WireGuard too takes the source from every authenticated packet.
                peer.local = local;
                (true, false)
            } else if !peer.roaming_validated {
                peer.endpoint = Some(from);
                peer.local = local;
                bump(&self.counters.roamed, 1);
                (true, true)
            } else {
                let report = !peer.roam_reported.is_some_and(|(a, t)| {
                    a == from && now.saturating_duration_since(t) < ROAM_REPORT_INTERVAL
                });
                if report {
                    peer.roam_reported = Some((from, now));
                }
                (false, report)
            };
            if wants_rekey {
                peer.rekey_asked_for = Some(kp_index);
            }
            let plain = &msg[TRANSPORT_HEADER_LEN..TRANSPORT_HEADER_LEN + plain_len];
            if plain_len == 0 {
                bump(&self.counters.keepalives_received, 1);
            } else if is_control_frame(plain) {
                bump(&self.counters.frames_received, 1);
                peer.frames.refill(now, FRAMES_PER_SEC, FRAME_BURST);
                if !peer.frames.try_take(1.0) {
                    bump(&self.counters.drop_frame_rate_limited, 1);
                } else {
                    match ControlFrame::parse(plain) {
                        Ok(frame) => {
                            if !events.emit(Event::Frame {
                                peer: peer_id,
                                frame,
                                from,
                            }) {
                                bump(&self.counters.drop_event_ring_full, 1);
                            }
                        }
                        Err(_) => bump(&self.counters.drop_invalid_inner, 1),
                    }
                }
            } else {
                match ip_info(plain) {
                    None => bump(&self.counters.drop_invalid_inner, 1),
                    Some(info) if self.routes.lookup(info.src) != Some(peer_id) => {
                        bump(&self.counters.drop_source_not_allowed, 1)
                    }
                    Some(_) if !approved => bump(&self.counters.drop_unapproved_source, 1),
                    Some(info) if self.shedding.drops(self.priorities.class(info.dscp)) => {
                        count_shed(&self.counters, self.priorities.class(info.dscp))
                    }
                    Some(info) if !admit(&peer.limits, true, info.len, now) => {
                        bump(&self.counters.rate_limit_violations, 1)
                    }
                    Some(info) => {
                        stats.last_rx_data.store(stamp, Ordering::Relaxed);
                        add_shared(&stats.rx_packets, 1);
                        meta.offset = TRANSPORT_HEADER_LEN;
                        meta.len = info.len;
                        meta.action = Action::Tun;
                    }
                }
            }
            if slot == Slot::Next {
                self.confirm_next(peer_id);
            }
            if roamed {
                if !approved {
                    bump(&self.counters.roam_requests, 1);
                }
                if !events.emit(Event::EndpointChanged {
                    peer: peer_id,
                    addr: from,
                    local,
                }) {
                    bump(&self.counters.drop_event_ring_full, 1);
                }
            }
            if wants_rekey {
                self.ask_handshake(peer_id, now, events);
            }
        }
    }

    fn seal_batch(&mut self, batch: &mut Batch, now: Instant, events: &mut impl EventSink) {
        let (bufs, metas) = batch.split_mut();
        for (buf, meta) in bufs.iter_mut().zip(metas.iter_mut()) {
            meta.action = Action::Drop;
            let Some(ip) = buf.get(meta.offset..meta.offset + meta.len) else {
                continue;
            };
            let Some(info) = ip_info(ip) else {
                bump(&self.counters.drop_invalid_inner, 1);
                continue;
            };
            let Some(peer_id) = self.routes.lookup(info.dst) else {
                bump(&self.counters.drop_no_route, 1);
                continue;
            };
            let class = self.priorities.class(info.dscp);
            if self.shedding.drops(class) {
                count_shed(&self.counters, class);
                continue;
            }
            let limits = self
                .peers
                .get(peer_id.0 as usize)
                .and_then(Option::as_ref)
                .map(|p| &p.limits);
            if limits.is_some_and(|l| !admit(l, false, info.len, now)) {
                bump(&self.counters.rate_limit_violations, 1);
                continue;
            }
            match self.seal_for(peer_id, buf, info.len, now, Sealing::Data) {
                Ok((len, (dest, local), wants_rekey)) => {
                    meta.offset = 0;
                    meta.len = len;
                    meta.addr = dest;
                    meta.local = local;
                    meta.action = Action::Udp;
                    if wants_rekey {
                        self.ask_handshake(peer_id, now, events);
                    }
                }
                Err(SealFail::NoKeypair) => {
                    self.stage(
                        peer_id,
                        &buf[TRANSPORT_HEADER_LEN..TRANSPORT_HEADER_LEN + info.len],
                    );
                    self.ask_handshake(peer_id, now, events);
                }
                Err(SealFail::NoEndpoint) => bump(&self.counters.drop_no_endpoint, 1),
                Err(SealFail::Buffer) => bump(&self.counters.drop_invalid_inner, 1),
                Err(SealFail::Revoked) => {}
            }
        }
    }

    /// Seal `buf[16..16 + len]` for `peer`. On success returns the message length,
    /// the destination and whether a rekey is due.
    fn seal_for(
        &mut self,
        peer_id: PeerId,
        buf: &mut [u8],
        len: usize,
        now: Instant,
        what: Sealing,
    ) -> Result<(usize, Dest, bool), SealFail> {
        let data = what == Sealing::Data;
        let stamp = self.epoch.nanos(now);
        let timing = self.timing;
        let reject_after = timing.reject_after;
        let Some(peer) = self
            .peers
            .get_mut(peer_id.0 as usize)
            .and_then(Option::as_mut)
        else {
            return Err(SealFail::NoKeypair);
        };
        let Some(dest) = peer.endpoint else {
            return Err(SealFail::NoEndpoint);
        };
        if peer.next.as_ref().is_some_and(|k| k.confirmed()) {
            // Another pipeline received the responder keypair's first packet.
            self.confirm_next(peer_id);
            return self.seal_for(peer_id, buf, len, now, what);
        }
        let Some(kp) = peer.current.as_deref() else {
            return Err(SealFail::NoKeypair);
        };
        // The control side's goodbye is the one message sealed after the revocation.
        if kp.revoked() && what != Sealing::Goodbye {
            bump(&self.counters.drop_revoked_key, 1);
            return Err(SealFail::Revoked);
        }
        if now.saturating_duration_since(kp.created) >= reject_after
            || kp.sent() >= crate::REJECT_AFTER_MESSAGES
        {
            return Err(SealFail::NoKeypair);
        }
        let n = match kp.seal(buf, len) {
            Ok(n) => n,
            Err(SealError::CounterExhausted) => return Err(SealFail::NoKeypair),
            Err(SealError::BufferTooSmall) => return Err(SealFail::Buffer),
        };
        let wants_rekey = kp.initiator
            && peer.rekey_asked_for != Some(kp.local_index)
            && (kp.wants_rekey()
                || now.saturating_duration_since(kp.created) >= timing.rekey_after);
        if wants_rekey {
            peer.rekey_asked_for = Some(kp.local_index);
        }
        let stats = &peer.stats;
        bump(&self.counters.encrypted, 1);
        add_shared(&stats.tx_bytes, n as u64);
        stats.last_tx_any.store(stamp, Ordering::Relaxed);
        if data {
            add_shared(&stats.tx_packets, 1);
            stats.last_tx_data.store(stamp, Ordering::Relaxed);
        }
        Ok((n, (dest, peer.local), wants_rekey))
    }
}

/// Add to a per-peer statistic: every pipeline's crypto stage adds to the same `PeerStats`, so
/// this is an atomic add (relaxed), not the single writer's load and store of [`bump`].
#[inline]
fn add_shared(c: &std::sync::atomic::AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// Count a packet shed by priority.
fn count_shed(counters: &CryptoCounters, class: Priority) {
    match class {
        Priority::Low => bump(&counters.drop_priority_low, 1),
        _ => bump(&counters.drop_priority_normal, 1),
    }
}

/// Rate-limit one data packet of `len` bytes from (`inbound`) or to the peer.
#[inline]
fn admit(limits: &Option<Arc<PeerLimits>>, inbound: bool, len: usize, now: Instant) -> bool {
    match limits {
        None => true,
        Some(l) => l.admit(inbound, len, now),
    }
}

/// What [`CryptoStage::seal_for`] seals.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sealing {
    /// An inner packet (counted as data).
    Data,
    /// A keepalive or a control frame.
    Control,
    /// The goodbye sealed while its session is cleared.
    Goodbye,
}

enum SealFail {
    NoKeypair,
    NoEndpoint,
    Buffer,
    /// The keypair was revoked (counted where it was found).
    Revoked,
}
