//! The peer table and its life cycle: one constructor and one restart for a [`Peer`], a table
//! whose slots are vacant or live, and the table operations the admin channel asks for
//! (snapshot, add, change, remove, a new private key).

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use log::info;
use rand_core::CryptoRngCore;
use veil_dataplane::batch::LocalAddr;
use veil_dataplane::link::{Command, Event, PeerId, PeerStats};
use veil_dataplane::route::IpNet;
use zeroize::Zeroizing;

use super::requests::{
    AdminRequest, AdminResponse, ChangeOutcome, ConfigureError, DeviceChange, DeviceSnapshot,
    PeerChange, PeerSnapshot, SecretKey,
};
use super::{short_id, AddPeerError, Device, Peer, PeerSpec};
use crate::handshake::{PeerHandshake, StaticIdentity};

/// A removed peer's slot is reused only after this long, so that events the dataplane raised
/// for the old peer before it saw the removal cannot be taken for the new one's.
pub const SLOT_QUARANTINE: Duration = Duration::from_secs(10);

impl Peer {
    /// A configured peer in `slot`, before any handshake.
    pub(super) fn new(id: PeerId, handshake: PeerHandshake, spec: &PeerSpec) -> Self {
        Peer {
            id,
            short: short_id(&spec.public_key),
            handshake,
            allowed_ips: spec.allowed_ips.clone(),
            endpoint: spec.endpoint,
            local: None,
            persistent_keepalive: spec
                .persistent_keepalive
                .filter(|s| *s > 0)
                .map(|s| Duration::from_secs(s.into())),
            stats: Arc::new(PeerStats::default()),
            attempt_started: None,
            retry_at: None,
            initiations_sent: 0,
            last_initiation: None,
            last_handshake: None,
            keepalive_asked: None,
            unanswered_for: None,
            keys_live: false,
            session: None,
            veil_peer: false,
            client_of: spec.endpoint.is_some(),
            granted: Vec::new(),
            token: None,
            reconnect: None,
            refusal_logged: None,
            new_sessions: VecDeque::new(),
            cookie_resent: None,
            validate_migration: None,
            breaker: crate::breaker::Breaker::default(),
            installed: VecDeque::new(),
        }
    }

    /// Start over under a new identity of ours: the handshake state is rebuilt (keeping the
    /// pre-shared key) and everything agreed under the old one is forgotten.
    pub(super) fn restart(&mut self, identity: &StaticIdentity) {
        let psk = self.handshake.preshared_key();
        let remote = *self.handshake.remote_public();
        self.handshake = PeerHandshake::new(identity, remote, psk.as_deref().copied());
        self.attempt_started = None;
        self.retry_at = None;
        self.last_initiation = None;
        self.unanswered_for = None;
        self.keys_live = false;
        self.installed.clear();
        self.session = None;
        self.token = None;
        self.granted.clear();
    }

    /// `local` (our address a message from this peer came to) as the source to keep for it:
    /// none for a peer we are the client of, whose datagrams follow the route's source (the
    /// crypto stage does the same), so a change of our address there is a migration.
    pub(super) fn sticky(&self, local: Option<LocalAddr>) -> Option<LocalAddr> {
        local.filter(|_| !self.client_of)
    }
}

/// One slot of the peer table.
enum Slot {
    Live(Box<Peer>),
    /// A removed peer's slot, and when it was removed.
    Vacant(Instant),
}

/// The peer table: a peer's slot is its [`PeerId`] in the dataplane.
#[derive(Default)]
pub(super) struct PeerTable {
    slots: Vec<Slot>,
}

impl PeerTable {
    /// Number of slots, vacant ones included.
    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    /// The live peer in `slot`.
    pub(super) fn get(&self, slot: usize) -> Option<&Peer> {
        match self.slots.get(slot)? {
            Slot::Live(p) => Some(p),
            Slot::Vacant(_) => None,
        }
    }

    /// The live peer in `slot`.
    pub(super) fn get_mut(&mut self, slot: usize) -> Option<&mut Peer> {
        match self.slots.get_mut(slot)? {
            Slot::Live(p) => Some(p),
            Slot::Vacant(_) => None,
        }
    }

    /// Every live peer.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Peer> {
        self.slots.iter().filter_map(|s| match s {
            Slot::Live(p) => Some(&**p),
            Slot::Vacant(_) => None,
        })
    }

    /// Every live peer.
    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Peer> {
        self.slots.iter_mut().filter_map(|s| match s {
            Slot::Live(p) => Some(&mut **p),
            Slot::Vacant(_) => None,
        })
    }

    /// The slot a new peer takes at `now`: the longest-vacant slot once it is out of
    /// quarantine, else a new one. Without a time, always a new one.
    pub(super) fn free_slot(&self, now: Option<Instant>) -> usize {
        let oldest = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s {
                Slot::Vacant(since) => Some((*since, i)),
                Slot::Live(_) => None,
            })
            .min();
        match (now, oldest) {
            (Some(now), Some((since, i)))
                if now.saturating_duration_since(since) >= SLOT_QUARANTINE =>
            {
                i
            }
            _ => self.slots.len(),
        }
    }

    /// Put `peer` in `slot` (from [`PeerTable::free_slot`]).
    pub(super) fn insert(&mut self, slot: usize, peer: Peer) {
        let live = Slot::Live(Box::new(peer));
        match self.slots.get_mut(slot) {
            Some(s) => *s = live,
            None => self.slots.push(live),
        }
    }

    /// Take the peer out of `slot`, which stays vacant from `now`.
    pub(super) fn vacate(&mut self, slot: usize, now: Instant) -> Option<Box<Peer>> {
        let s = self.slots.get_mut(slot)?;
        match std::mem::replace(s, Slot::Vacant(now)) {
            Slot::Live(p) => Some(p),
            vacant => {
                *s = vacant;
                None
            }
        }
    }
}

impl<'a> IntoIterator for &'a PeerTable {
    type Item = &'a Peer;
    type IntoIter = Box<dyn Iterator<Item = &'a Peer> + 'a>;
    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

impl<'a> IntoIterator for &'a mut PeerTable {
    type Item = &'a mut Peer;
    type IntoIter = Box<dyn Iterator<Item = &'a mut Peer> + 'a>;
    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter_mut())
    }
}

fn normalized(nets: &[IpNet]) -> Vec<IpNet> {
    let mut out: Vec<IpNet> = Vec::with_capacity(nets.len());
    for n in nets.iter().map(IpNet::network) {
        if !out.contains(&n) {
            out.push(n);
        }
    }
    out
}

impl<R: CryptoRngCore> Device<R> {
    /// Serve one request from the admin channel (what
    /// [`AdminHandle::call`](super::AdminHandle::call) ends up running on the control thread).
    pub fn handle_admin(&mut self, request: AdminRequest, now: Instant) -> AdminResponse {
        self.saw(now);
        match request {
            AdminRequest::Snapshot { secrets, wall_now } => {
                AdminResponse::Snapshot(Box::new(self.snapshot(secrets, now, wall_now)))
            }
            AdminRequest::Configure(change) => {
                AdminResponse::Configured(self.configure(change, now))
            }
            AdminRequest::Capture => AdminResponse::Captured(Box::new(self.capture(now))),
            AdminRequest::ResumeAfterHandoff => {
                self.resume_after_handoff();
                AdminResponse::Resumed
            }
        }
    }

    /// Is the peer in `slot` configured (not a removed peer's vacant slot)?
    pub(super) fn is_live(&self, slot: usize) -> bool {
        self.peers.get(slot).is_some()
    }

    /// Events about a removed peer, raised before the dataplane saw the removal, are ignored.
    pub(super) fn ignores_event(&self, ev: &Event) -> bool {
        let peer = match ev {
            Event::HandshakeNeeded { peer }
            | Event::EndpointChanged { peer, .. }
            | Event::Frame { peer, .. } => peer,
        };
        !self.is_live(peer.0 as usize)
    }

    /// The interface at `now`; `wall_now` is the wall clock at the same moment.
    pub fn snapshot(&self, secrets: bool, now: Instant, wall_now: SystemTime) -> DeviceSnapshot {
        let peers: Vec<PeerSnapshot> = self
            .peers
            .iter()
            .map(|p| {
                let psk = p.handshake.preshared_key();
                PeerSnapshot {
                    id: p.id,
                    public_key: *p.handshake.remote_public(),
                    has_preshared_key: psk.is_some(),
                    preshared_key: psk.filter(|_| secrets).map(|k| SecretKey::new(*k)),
                    endpoint: p.endpoint,
                    allowed_ips: p.allowed_ips.clone(),
                    last_handshake: p
                        .last_handshake
                        .and_then(|t| wall_now.checked_sub(now.saturating_duration_since(t))),
                    rx_bytes: p.stats.rx_bytes.load(Ordering::Relaxed),
                    tx_bytes: p.stats.tx_bytes.load(Ordering::Relaxed),
                    rx_packets: p.stats.rx_packets.load(Ordering::Relaxed),
                    tx_packets: p.stats.tx_packets.load(Ordering::Relaxed),
                    persistent_keepalive: p
                        .persistent_keepalive
                        .map(|d| u16::try_from(d.as_secs()).unwrap_or(u16::MAX)),
                    session_active: p.keys_live,
                    migration_validated: self.validated(p),
                    breaker: p.breaker.state(now),
                }
            })
            .collect();
        DeviceSnapshot {
            public_key: *self.identity.public_key(),
            private_key: secrets.then(|| SecretKey::from_zeroizing(self.identity.secret_bytes())),
            active_sessions: peers.iter().filter(|p| p.session_active).count(),
            peers,
            handshake_backlog: self.backlog,
            counters: self.counters.snapshot(),
        }
    }

    /// Every network some peer routes, host bits cleared.
    fn routed_networks(&self) -> BTreeSet<IpNet> {
        self.peers
            .iter()
            .flat_map(|p| p.allowed_ips.iter().map(IpNet::network))
            .collect()
    }

    fn check_change(&self, change: &DeviceChange) -> Result<(), ConfigureError> {
        let own = match &change.private_key {
            Some(k) if k.is_zero() => return Err(ConfigureError::ZeroPrivateKey),
            Some(k) => *StaticIdentity::from_secret(*k.as_bytes()).public_key(),
            None => *self.identity.public_key(),
        };
        for pc in change.peers.iter().filter(|pc| !pc.remove) {
            if pc.public_key == own {
                return Err(ConfigureError::OwnKey);
            }
            let exists = self.by_key.contains_key(&pc.public_key);
            if !exists
                && !pc.update_only
                && PeerHandshake::new(&self.identity, pc.public_key, None).remote_key_is_low_order()
            {
                return Err(ConfigureError::WeakKey);
            }
        }
        Ok(())
    }

    /// Apply a change (see [`DeviceChange`]). It is checked whole first: on an error nothing
    /// was changed.
    pub fn configure(
        &mut self,
        change: DeviceChange,
        now: Instant,
    ) -> Result<ChangeOutcome, ConfigureError> {
        self.check_change(&change)?;
        let before = self.routed_networks();
        let mut outcome = ChangeOutcome::default();
        if let Some(key) = &change.private_key {
            outcome.peers_removed += usize::from(self.set_private_key(key, now));
        }
        if change.replace_peers {
            let keys: Vec<[u8; 32]> = self.by_key.keys().copied().collect();
            for k in keys {
                outcome.peers_removed += usize::from(self.remove_peer(&k, now));
            }
        }
        for pc in change.peers {
            if pc.remove {
                outcome.peers_removed += usize::from(self.remove_peer(&pc.public_key, now));
                continue;
            }
            match self.by_key.get(&pc.public_key).copied() {
                Some(slot) => self.update_peer(slot, pc),
                None if pc.update_only => {}
                None => {
                    self.add_changed_peer(pc, now).map_err(|e| match e {
                        AddPeerError::WeakKey => ConfigureError::WeakKey,
                        AddPeerError::OwnKey | AddPeerError::Duplicate => ConfigureError::OwnKey,
                    })?;
                    outcome.peers_added += 1;
                }
            }
        }
        let after = self.routed_networks();
        outcome.routes_added = after.difference(&before).copied().collect();
        outcome.routes_removed = before.difference(&after).copied().collect();
        self.reschedule();
        Ok(outcome)
    }

    fn add_changed_peer(&mut self, pc: PeerChange, now: Instant) -> Result<PeerId, AddPeerError> {
        let nets = normalized(&pc.allowed_ips);
        self.release_networks(&nets, None);
        let spec = PeerSpec {
            public_key: pc.public_key,
            preshared_key: pc
                .preshared_key
                .filter(|k| !k.is_zero())
                .map(|k| Zeroizing::new(*k.as_bytes())),
            allowed_ips: nets,
            endpoint: pc.endpoint,
            persistent_keepalive: pc.persistent_keepalive.filter(|s| *s > 0),
        };
        let id = self.insert_peer(spec, Some(now))?;
        info!(
            "peer {}: added by the admin interface",
            short_id(&pc.public_key)
        );
        Ok(id)
    }

    fn update_peer(&mut self, slot: usize, pc: PeerChange) {
        let nets = normalized(&pc.allowed_ips);
        if !nets.is_empty() {
            self.release_networks(&nets, Some(slot));
        }
        let Some(p) = self.peers.get_mut(slot) else {
            return;
        };
        let id = p.id;
        if let Some(psk) = &pc.preshared_key {
            p.handshake
                .set_preshared_key((!psk.is_zero()).then(|| *psk.as_bytes()));
        }
        if let Some(ep) = pc.endpoint {
            // A new endpoint from the operator has no source of ours yet (nor in the kernel).
            p.endpoint = Some(ep);
            p.local = None;
            self.commands.push_back(Command::SetEndpoint {
                peer: id,
                endpoint: ep,
                local: None,
            });
        }
        if let Some(secs) = pc.persistent_keepalive {
            let was_on = p.persistent_keepalive.is_some();
            p.persistent_keepalive = (secs > 0).then(|| Duration::from_secs(secs.into()));
            // Like the kernel: turning it on sends one keepalive at once.
            if !was_on && secs > 0 && p.endpoint.is_some() {
                self.commands.push_back(Command::SendKeepalive { peer: id });
            }
        }
        if pc.replace_allowed_ips || !nets.is_empty() {
            if pc.replace_allowed_ips {
                p.allowed_ips = nets;
            } else {
                for n in nets {
                    if !p.allowed_ips.contains(&n) {
                        p.allowed_ips.push(n);
                    }
                }
            }
            self.commands.push_back(Command::SetAllowedIps {
                peer: id,
                allowed_ips: p.allowed_ips.clone(),
            });
        }
        info!("peer {}: changed by the admin interface", p.short);
    }

    /// A network belongs to one peer at a time: take `nets` away from every peer but `keep`.
    fn release_networks(&mut self, nets: &[IpNet], keep: Option<usize>) {
        for slot in 0..self.peers.len() {
            if Some(slot) == keep {
                continue;
            }
            let Some(p) = self.peers.get_mut(slot) else {
                continue;
            };
            let before = p.allowed_ips.len();
            p.allowed_ips.retain(|n| !nets.contains(&n.network()));
            if p.allowed_ips.len() != before {
                self.commands.push_back(Command::SetAllowedIps {
                    peer: p.id,
                    allowed_ips: p.allowed_ips.clone(),
                });
            }
        }
    }

    /// Remove the peer with this public key: the dataplane forgets it (keys zeroized, routes
    /// and staged packets dropped) and its slot is vacated. False if there is no such peer.
    pub fn remove_peer(&mut self, public_key: &[u8; 32], now: Instant) -> bool {
        let Some(&slot) = self.by_key.get(public_key) else {
            return false;
        };
        // The operator ends the session: counted, logged, a veil peer told goodbye.
        self.end_session(slot, crate::session::EndReason::Operator, now);
        self.by_key.remove(public_key);
        let Some(p) = self.peers.vacate(slot, now) else {
            return false;
        };
        self.indices.remove_peer(slot);
        let id = p.id;
        info!("peer {}: removed by the admin interface", p.short);
        self.commands.push_back(Command::RemovePeer { peer: id });
        self.reschedule();
        true
    }

    /// Use a new private key: a new identity, every peer's handshake state rebuilt for it and
    /// every session's keys cleared (they were agreed under the old identity). A peer whose key
    /// is the new public key is removed. The same key again changes nothing. Returns whether a
    /// peer was removed.
    pub fn set_private_key(&mut self, key: &SecretKey, now: Instant) -> bool {
        let identity = StaticIdentity::from_secret(*key.as_bytes());
        if identity.public_key() == self.identity.public_key() {
            return false;
        }
        let new_public = *identity.public_key();
        let removed = self.remove_peer(&new_public, now);
        self.identity = identity;
        self.cookies = self.identity.cookie_checker();
        for p in &mut self.peers {
            p.restart(&self.identity);
            self.indices.remove_peer(p.id.0 as usize);
            self.commands.push_back(Command::ClearKeypairs {
                peer: p.id,
                goodbye: None,
            });
        }
        info!(
            "private key changed: public key is now {}; every session starts over",
            short_id(&new_public)
        );
        self.reschedule();
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;
    use veil_dataplane::link::Epoch;
    use veil_dataplane::pipeline::ControlDriver;
    use veil_dataplane::timing::Timing;

    fn device() -> (Device, Instant) {
        let now = Instant::now();
        let wall = (now, SystemTime::now());
        (
            Device::new(&[7; 32], Timing::default(), Epoch::new(now), wall, OsRng),
            now,
        )
    }

    fn public(secret: u8) -> [u8; 32] {
        *StaticIdentity::from_secret([secret; 32]).public_key()
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn drain(d: &mut Device) -> Vec<Command> {
        std::iter::from_fn(|| d.poll_command()).collect()
    }

    /// Apply a change of `peers` alone.
    fn change(
        d: &mut Device,
        peers: Vec<PeerChange>,
        now: Instant,
    ) -> Result<ChangeOutcome, ConfigureError> {
        d.configure(
            DeviceChange {
                peers,
                ..Default::default()
            },
            now,
        )
    }

    fn add(d: &mut Device, key: [u8; 32], nets: &[&str], now: Instant) -> ChangeOutcome {
        let mut pc = PeerChange::new(key);
        pc.allowed_ips = nets.iter().map(|s| net(s)).collect();
        pc.endpoint = Some("192.0.2.1:51820".parse().unwrap());
        change(d, vec![pc], now).unwrap()
    }

    #[test]
    fn the_session_memory_limit_reaches_the_dataplane() {
        let (mut d, _) = device();
        let sessions = crate::session::SessionPolicy {
            max_memory_per_session: Some(4 << 20),
            ..Default::default()
        };
        d.set_policies(sessions, crate::migration::MigrationPolicy::default());
        assert!(drain(&mut d).iter().any(|c| matches!(
            c,
            Command::SetSessionMemory {
                bytes: Some(b)
            } if *b == 4 << 20
        )));
    }

    #[test]
    fn add_then_remove_reports_routes_and_commands() {
        let (mut d, now) = device();
        let out = add(&mut d, public(1), &["10.0.0.2/32", "10.1.0.5/16"], now);
        assert_eq!(out.peers_added, 1);
        assert_eq!(
            out.routes_added,
            vec![net("10.0.0.2/32"), net("10.1.0.0/16")]
        );
        assert!(matches!(
            drain(&mut d).first(),
            Some(Command::AddPeer { .. })
        ));
        let snap = d.snapshot(false, now, SystemTime::now());
        assert_eq!(snap.peers.len(), 1);
        assert!(snap.private_key.is_none());

        let mut rm = PeerChange::new(public(1));
        rm.remove = true;
        let out = change(&mut d, vec![rm], now).unwrap();
        assert_eq!(out.peers_removed, 1);
        assert_eq!(out.routes_removed.len(), 2);
        assert!(matches!(
            drain(&mut d).as_slice(),
            [Command::RemovePeer { .. }]
        ));
        assert!(d.snapshot(false, now, SystemTime::now()).peers.is_empty());
        assert!(d.peers().is_empty(), "peers() hides vacant slots");
        // Events about the removed peer are ignored.
        assert!(d.ignores_event(&Event::HandshakeNeeded { peer: PeerId(0) }));
    }

    #[test]
    fn removed_slot_is_reused_only_after_quarantine() {
        let (mut d, now) = device();
        add(&mut d, public(1), &["10.0.0.2/32"], now);
        assert!(d.remove_peer(&public(1), now));
        d.poll_admin(now);
        add(&mut d, public(2), &["10.0.0.3/32"], now);
        assert_eq!(
            d.snapshot(false, now, SystemTime::now()).peers[0].id,
            PeerId(1)
        );
        let later = now + SLOT_QUARANTINE;
        d.poll_admin(later);
        add(&mut d, public(3), &["10.0.0.4/32"], later);
        let ids: Vec<PeerId> = d
            .snapshot(false, later, SystemTime::now())
            .peers
            .iter()
            .map(|p| p.id)
            .collect();
        assert_eq!(ids, vec![PeerId(0), PeerId(1)]);
    }

    #[test]
    fn allowed_ips_move_between_peers() {
        let (mut d, now) = device();
        add(&mut d, public(1), &["10.0.0.2/32", "10.0.0.9/32"], now);
        let out = add(&mut d, public(2), &["10.0.0.2/32"], now);
        assert!(out.routes_added.is_empty(), "the route existed already");
        let snap = d.snapshot(false, now, SystemTime::now());
        assert_eq!(snap.peers[0].allowed_ips, vec![net("10.0.0.9/32")]);
        assert_eq!(snap.peers[1].allowed_ips, vec![net("10.0.0.2/32")]);
    }

    #[test]
    fn update_only_and_replace() {
        let (mut d, now) = device();
        let mut pc = PeerChange::new(public(1));
        pc.update_only = true;
        pc.allowed_ips = vec![net("10.0.0.2/32")];
        let out = change(&mut d, vec![pc], now).unwrap();
        assert_eq!(out, ChangeOutcome::default());
        add(&mut d, public(1), &["10.0.0.2/32"], now);
        add(&mut d, public(2), &["10.0.0.3/32"], now);
        let mut pc = PeerChange::new(public(1));
        pc.replace_allowed_ips = true;
        pc.allowed_ips = vec![net("10.0.1.0/24")];
        pc.persistent_keepalive = Some(25);
        pc.preshared_key = Some(SecretKey::new([9; 32]));
        let out = d
            .configure(
                DeviceChange {
                    replace_peers: false,
                    peers: vec![pc],
                    ..Default::default()
                },
                now,
            )
            .unwrap();
        assert_eq!(out.routes_added, vec![net("10.0.1.0/24")]);
        assert_eq!(out.routes_removed, vec![net("10.0.0.2/32")]);
        let snap = d.snapshot(true, now, SystemTime::now());
        assert!(snap.peers[0].has_preshared_key);
        assert_eq!(snap.peers[0].preshared_key, Some(SecretKey::new([9; 32])));
        assert_eq!(snap.peers[0].persistent_keepalive, Some(25));
        let out = d
            .configure(
                DeviceChange {
                    replace_peers: true,
                    ..Default::default()
                },
                now,
            )
            .unwrap();
        assert_eq!(out.peers_removed, 2);
        assert!(d.snapshot(false, now, SystemTime::now()).peers.is_empty());
    }

    #[test]
    fn bad_changes_are_refused_whole() {
        let (mut d, now) = device();
        let mut ok = PeerChange::new(public(1));
        ok.allowed_ips = vec![net("10.0.0.2/32")];
        let own = PeerChange::new(public(7));
        let err = change(&mut d, vec![ok.clone(), own], now).unwrap_err();
        assert_eq!(err, ConfigureError::OwnKey);
        assert!(d.snapshot(false, now, SystemTime::now()).peers.is_empty());
        let weak = PeerChange::new([0; 32]);
        assert_eq!(
            change(&mut d, vec![weak], now),
            Err(ConfigureError::WeakKey)
        );
        assert_eq!(
            d.configure(
                DeviceChange {
                    private_key: Some(SecretKey::new([0; 32])),
                    ..Default::default()
                },
                now
            ),
            Err(ConfigureError::ZeroPrivateKey)
        );
    }

    #[test]
    fn new_private_key_resets_sessions() {
        let (mut d, now) = device();
        add(&mut d, public(1), &["10.0.0.2/32"], now);
        add(&mut d, public(2), &["10.0.0.3/32"], now);
        drain(&mut d);
        // The same key again is no change.
        assert!(!d.set_private_key(&SecretKey::new([7; 32]), now));
        assert!(drain(&mut d).is_empty());
        // A key whose public half is peer 2's removes that peer.
        assert!(d.set_private_key(&SecretKey::new([2; 32]), now));
        assert_eq!(d.public_key(), public(2));
        let cmds = drain(&mut d);
        assert!(cmds
            .iter()
            .any(|c| matches!(c, Command::ClearKeypairs { peer, .. } if *peer == PeerId(0))));
        assert!(cmds
            .iter()
            .any(|c| matches!(c, Command::RemovePeer { peer } if *peer == PeerId(1))));
        let snap = d.snapshot(true, now, SystemTime::now());
        assert_eq!(snap.peers.len(), 1);
        assert_eq!(snap.private_key, Some(SecretKey::new([2; 32])));
    }
}
