//! Requests from outside the dataplane — the UAPI socket, the metrics endpoint, `veil show` —
//! served by the control thread.
//!
//! Other threads hold an [`AdminHandle`]; each [`AdminHandle::call`] puts a request in a bounded
//! queue, rings the control thread's doorbell and waits (with a timeout) for the answer on a
//! reply channel of its own. The control thread serves the queue in
//! [`ControlDriver::poll_admin`](veil_dataplane::pipeline::ControlDriver::poll_admin), so every
//! change to the peer table happens on the thread that owns it, between two rounds of handshake
//! and timer work, and reaches the dataplane as ordinary [`Command`]s. The device itself stays
//! sans-IO: it only moves values between channels.
//!
//! ```
//! # use std::time::{Duration, Instant};
//! # use veil_control::device::{admin_channel, Device};
//! # use veil_dataplane::link::Epoch;
//! # use veil_dataplane::pipeline::ControlDriver;
//! # use veil_dataplane::timing::Timing;
//! let now = Instant::now();
//! let mut device = Device::new(&[7; 32], Timing::default(), Epoch::new(now));
//! // The runtime passes a closure that wakes the control thread.
//! let (handle, inbox) = admin_channel(|| {});
//! device.attach_admin(inbox);
//! let asker = std::thread::spawn(move || handle.snapshot(false, Duration::from_secs(5)));
//! // The control thread's loop calls poll_admin every round.
//! while !asker.is_finished() {
//!     device.poll_admin(Instant::now());
//!     std::thread::sleep(Duration::from_millis(1));
//! }
//! let snapshot = asker.join().unwrap().unwrap();
//! assert!(snapshot.peers.is_empty());
//! ```

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use log::info;
use rand_core::CryptoRngCore;
use veil_dataplane::link::{Command, Event, PeerId};
use veil_dataplane::route::IpNet;
use zeroize::Zeroizing;

use super::{short_id, AddPeerError, Device, Peer, PeerSpec};
use crate::handshake::{PeerHandshake, StaticIdentity};

/// Requests that may wait in the queue; more are refused with [`AdminError::Busy`].
pub const ADMIN_QUEUE: usize = 16;

/// A removed peer's slot is reused only after this long, so that events the dataplane raised
/// for the old peer before it saw the removal cannot be taken for the new one's.
pub const SLOT_QUARANTINE: Duration = Duration::from_secs(10);

/// A private or pre-shared key crossing the admin channel: wiped on drop, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey(Zeroizing<[u8; 32]>);

impl SecretKey {
    /// Wrap key bytes (the caller should wipe its own copy).
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// True for the all-zero key, which WireGuard's interfaces use to mean "none".
    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|b| *b == 0)
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// The interface as the control thread sees it at one instant.
#[derive(Debug, Clone)]
pub struct DeviceSnapshot {
    /// Our public key.
    pub public_key: [u8; 32],
    /// Our private key; only when asked for (UAPI `get`).
    pub private_key: Option<SecretKey>,
    /// Every peer, in slot order.
    pub peers: Vec<PeerSnapshot>,
    /// Peers whose session keys are live (handshake done and not yet expired).
    pub active_sessions: usize,
    /// Handshake messages waiting in the ring from RX when the control thread last looked.
    pub handshake_backlog: usize,
    /// The control thread's counters.
    pub counters: Vec<(&'static str, u64)>,
}

/// One peer in a [`DeviceSnapshot`].
#[derive(Debug, Clone)]
pub struct PeerSnapshot {
    /// Slot.
    pub id: PeerId,
    /// The peer's public key.
    pub public_key: [u8; 32],
    /// Whether a pre-shared key is set.
    pub has_preshared_key: bool,
    /// The pre-shared key itself; only when secrets were asked for.
    pub preshared_key: Option<SecretKey>,
    /// Current endpoint.
    pub endpoint: Option<SocketAddr>,
    /// AllowedIPs.
    pub allowed_ips: Vec<IpNet>,
    /// Last completed handshake, on the wall clock.
    pub last_handshake: Option<SystemTime>,
    /// Transport bytes received.
    pub rx_bytes: u64,
    /// Transport bytes sent.
    pub tx_bytes: u64,
    /// Data packets received.
    pub rx_packets: u64,
    /// Data packets sent.
    pub tx_packets: u64,
    /// Persistent keepalive interval in seconds.
    pub persistent_keepalive: Option<u16>,
    /// Session keys are live.
    pub session_active: bool,
}

/// A change to the interface, as UAPI `set` describes one. Applied in order: private key,
/// `replace_peers`, then each peer.
#[derive(Debug, Clone, Default)]
pub struct DeviceChange {
    /// New private key.
    pub private_key: Option<SecretKey>,
    /// Remove every peer first.
    pub replace_peers: bool,
    /// Peers to add, change or remove.
    pub peers: Vec<PeerChange>,
}

/// A change to one peer.
#[derive(Debug, Clone)]
pub struct PeerChange {
    /// Which peer (added if absent, unless `update_only`).
    pub public_key: [u8; 32],
    /// Remove the peer; every other field is ignored.
    pub remove: bool,
    /// Change the peer only if it exists.
    pub update_only: bool,
    /// New pre-shared key; the all-zero key removes it.
    pub preshared_key: Option<SecretKey>,
    /// New endpoint.
    pub endpoint: Option<SocketAddr>,
    /// New persistent keepalive interval in seconds (0: off).
    pub persistent_keepalive: Option<u16>,
    /// Replace the AllowedIPs with `allowed_ips` instead of adding to them.
    pub replace_allowed_ips: bool,
    /// AllowedIPs to add (or to set, with `replace_allowed_ips`).
    pub allowed_ips: Vec<IpNet>,
}

impl PeerChange {
    /// A change that touches nothing yet.
    pub fn new(public_key: [u8; 32]) -> Self {
        Self {
            public_key,
            remove: false,
            update_only: false,
            preshared_key: None,
            endpoint: None,
            persistent_keepalive: None,
            replace_allowed_ips: false,
            allowed_ips: Vec::new(),
        }
    }
}

/// What a [`DeviceChange`] did, so the caller can fix the kernel's routes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeOutcome {
    /// Peers added.
    pub peers_added: usize,
    /// Peers removed.
    pub peers_removed: usize,
    /// Networks (host bits cleared) that no peer routed before and one does now.
    pub routes_added: Vec<IpNet>,
    /// Networks that a peer routed before and none does now.
    pub routes_removed: Vec<IpNet>,
}

/// Why a [`DeviceChange`] was refused. Nothing was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigureError {
    /// The all-zero private key: veil always needs an identity.
    ZeroPrivateKey,
    /// A peer's key is (or would be) this interface's own public key.
    OwnKey,
    /// A peer's key is a low-order point.
    WeakKey,
}

impl std::fmt::Display for ConfigureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConfigureError::ZeroPrivateKey => "the all-zero private key cannot be used",
            ConfigureError::OwnKey => "a peer's public key is this interface's own",
            ConfigureError::WeakKey => "a peer's public key is a low-order point",
        })
    }
}

impl std::error::Error for ConfigureError {}

/// A request to the control thread.
#[derive(Debug)]
pub enum AdminRequest {
    /// Read the interface.
    Snapshot {
        /// Include the private and pre-shared keys (UAPI `get` only).
        secrets: bool,
        /// The wall clock when the request was made, for handshake times.
        wall_now: SystemTime,
    },
    /// Change the interface.
    Configure(DeviceChange),
}

/// The control thread's answer.
#[derive(Debug)]
pub enum AdminResponse {
    /// Answer to [`AdminRequest::Snapshot`].
    Snapshot(Box<DeviceSnapshot>),
    /// Answer to [`AdminRequest::Configure`].
    Configured(Result<ChangeOutcome, ConfigureError>),
}

/// Why a request got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminError {
    /// The queue is full: too many requests at once. Retry later.
    Busy,
    /// No answer within the timeout (a change may still be applied later).
    Timeout,
    /// The control thread is gone (shutting down).
    Closed,
    /// An answer of the wrong kind (a bug).
    Mismatch,
}

impl std::fmt::Display for AdminError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AdminError::Busy => "the control thread has too many requests queued",
            AdminError::Timeout => "the control thread did not answer in time",
            AdminError::Closed => "the control thread has stopped",
            AdminError::Mismatch => "the control thread answered a different request",
        })
    }
}

impl std::error::Error for AdminError {}

struct Envelope {
    request: AdminRequest,
    reply: SyncSender<AdminResponse>,
}

/// The callers' end of the admin channel; cheap to clone, one per serving thread.
#[derive(Clone)]
pub struct AdminHandle {
    queue: SyncSender<Envelope>,
    wake: Arc<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for AdminHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminHandle")
    }
}

/// The control thread's end of the admin channel; give it to [`Device::attach_admin`].
#[derive(Default)]
pub struct AdminInbox {
    queue: Option<Receiver<Envelope>>,
}

impl std::fmt::Debug for AdminInbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminInbox")
            .field("attached", &self.queue.is_some())
            .finish()
    }
}

/// A new admin channel. `wake` must wake the control thread (ring its doorbell) so a parked
/// control thread serves the request at once rather than at its next timer.
pub fn admin_channel(wake: impl Fn() + Send + Sync + 'static) -> (AdminHandle, AdminInbox) {
    let (tx, rx) = mpsc::sync_channel(ADMIN_QUEUE);
    (
        AdminHandle {
            queue: tx,
            wake: Arc::new(wake),
        },
        AdminInbox { queue: Some(rx) },
    )
}

impl AdminHandle {
    /// Send `request` and wait at most `timeout` for the answer.
    pub fn call(
        &self,
        request: AdminRequest,
        timeout: Duration,
    ) -> Result<AdminResponse, AdminError> {
        let (reply, answer) = mpsc::sync_channel(1);
        match self.queue.try_send(Envelope { request, reply }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(AdminError::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(AdminError::Closed),
        }
        (self.wake)();
        match answer.recv_timeout(timeout) {
            Ok(r) => Ok(r),
            Err(RecvTimeoutError::Timeout) => Err(AdminError::Timeout),
            Err(RecvTimeoutError::Disconnected) => Err(AdminError::Closed),
        }
    }

    /// Read the interface; `secrets` adds the private and pre-shared keys.
    pub fn snapshot(&self, secrets: bool, timeout: Duration) -> Result<DeviceSnapshot, AdminError> {
        let request = AdminRequest::Snapshot {
            secrets,
            wall_now: SystemTime::now(),
        };
        match self.call(request, timeout)? {
            AdminResponse::Snapshot(s) => Ok(*s),
            AdminResponse::Configured(_) => Err(AdminError::Mismatch),
        }
    }

    /// Apply a change.
    pub fn configure(
        &self,
        change: DeviceChange,
        timeout: Duration,
    ) -> Result<Result<ChangeOutcome, ConfigureError>, AdminError> {
        match self.call(AdminRequest::Configure(change), timeout)? {
            AdminResponse::Configured(r) => Ok(r),
            AdminResponse::Snapshot(_) => Err(AdminError::Mismatch),
        }
    }
}

/// The device's admin bookkeeping.
#[derive(Debug, Default)]
pub(super) struct AdminState {
    inbox: AdminInbox,
    /// Slots of removed peers and when they were removed (oldest first).
    free_slots: VecDeque<(usize, Instant)>,
    /// The last `now` the control loop passed in.
    last_now: Option<Instant>,
    /// Last handshake backlog reported by the control loop.
    pub(super) backlog: usize,
}

impl AdminState {
    /// A removed peer's slot that is out of quarantine, if any.
    pub(super) fn reusable_slot(&mut self) -> Option<usize> {
        let now = self.last_now?;
        let (slot, freed) = *self.free_slots.front()?;
        if now.saturating_duration_since(freed) < SLOT_QUARANTINE {
            return None;
        }
        self.free_slots.pop_front();
        Some(slot)
    }

    fn next_request(&mut self) -> Option<Envelope> {
        self.inbox.queue.as_ref()?.try_recv().ok()
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
    /// Serve requests from `inbox` in [`ControlDriver::poll_admin`](veil_dataplane::pipeline::ControlDriver::poll_admin).
    pub fn attach_admin(&mut self, inbox: AdminInbox) {
        self.admin.inbox = inbox;
    }

    /// Serve what is queued (at most one queue's worth, so a flood cannot starve the loop).
    pub(super) fn serve_admin(&mut self, now: Instant) {
        self.admin.last_now = Some(now);
        for _ in 0..ADMIN_QUEUE {
            let Some(envelope) = self.admin.next_request() else {
                break;
            };
            let answer = self.handle_admin(envelope.request, now);
            // The caller may have timed out and gone; that is its business.
            let _ = envelope.reply.try_send(answer);
        }
    }

    /// Serve one request (what [`AdminHandle::call`] ends up running on the control thread).
    pub fn handle_admin(&mut self, request: AdminRequest, now: Instant) -> AdminResponse {
        match request {
            AdminRequest::Snapshot { secrets, wall_now } => {
                AdminResponse::Snapshot(Box::new(self.snapshot(secrets, now, wall_now)))
            }
            AdminRequest::Configure(change) => {
                AdminResponse::Configured(self.configure(change, now))
            }
        }
    }

    /// Is the peer in `slot` configured (not a removed peer's vacant slot)?
    pub(super) fn is_live(&self, slot: usize) -> bool {
        self.peers
            .get(slot)
            .is_some_and(|p| self.by_key.get(p.handshake.remote_public()) == Some(&slot))
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
        let peers: Vec<PeerSnapshot> = (0..self.peers.len())
            .filter(|slot| self.is_live(*slot))
            .filter_map(|slot| self.peers.get(slot))
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
                }
            })
            .collect();
        DeviceSnapshot {
            public_key: *self.identity.public_key(),
            private_key: secrets.then(|| SecretKey(self.identity.secret_bytes())),
            active_sessions: peers.iter().filter(|p| p.session_active).count(),
            peers,
            handshake_backlog: self.admin.backlog,
            counters: self.counters.snapshot(),
        }
    }

    /// Every network some peer routes, host bits cleared.
    fn routed_networks(&self) -> BTreeSet<IpNet> {
        (0..self.peers.len())
            .filter(|slot| self.is_live(*slot))
            .filter_map(|slot| self.peers.get(slot))
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
                    self.add_changed_peer(pc).map_err(|e| match e {
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
        self.next_tick = None;
        Ok(outcome)
    }

    fn add_changed_peer(&mut self, pc: PeerChange) -> Result<PeerId, AddPeerError> {
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
        let id = self.add_peer(spec)?;
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
            p.endpoint = Some(ep);
            self.commands.push_back(Command::SetEndpoint {
                peer: id,
                endpoint: ep,
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
            if Some(slot) == keep || !self.is_live(slot) {
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
        let Some(p) = self.peers.get_mut(slot) else {
            return false;
        };
        for index in p.indices.drain(..) {
            self.by_index.remove(&index);
        }
        let id = p.id;
        info!("peer {}: removed by the admin interface", p.short);
        // A fresh, inert peer takes the slot: no endpoint, no timers, no secrets.
        *p = vacant_peer(id, &self.identity, *public_key);
        self.commands.push_back(Command::RemovePeer { peer: id });
        self.admin.free_slots.push_back((slot, now));
        self.next_tick = None;
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
        for slot in 0..self.peers.len() {
            if !self.is_live(slot) {
                continue;
            }
            let Some(p) = self.peers.get_mut(slot) else {
                continue;
            };
            let psk = p.handshake.preshared_key();
            let remote = *p.handshake.remote_public();
            p.handshake = PeerHandshake::new(&self.identity, remote, psk.as_deref().copied());
            for index in p.indices.drain(..) {
                self.by_index.remove(&index);
            }
            p.attempt_started = None;
            p.retry_at = None;
            p.last_initiation = None;
            p.unanswered_for = None;
            p.keys_live = false;
            p.session = None;
            p.token = None;
            p.granted.clear();
            self.commands.push_back(Command::ClearKeypairs {
                peer: p.id,
                goodbye: None,
            });
        }
        info!(
            "private key changed: public key is now {}; every session starts over",
            short_id(&new_public)
        );
        self.next_tick = None;
        removed
    }
}

/// What stays in a removed peer's slot until it is reused.
fn vacant_peer(id: PeerId, identity: &StaticIdentity, public_key: [u8; 32]) -> Peer {
    Peer {
        id,
        short: short_id(&public_key),
        handshake: PeerHandshake::new(identity, public_key, None),
        allowed_ips: Vec::new(),
        endpoint: None,
        persistent_keepalive: None,
        stats: Arc::default(),
        attempt_started: None,
        retry_at: None,
        last_initiation: None,
        last_handshake: None,
        indices: VecDeque::new(),
        keepalive_asked: None,
        unanswered_for: None,
        keys_live: false,
        session: None,
        veil_peer: false,
        client_of: false,
        granted: Vec::new(),
        token: None,
        reconnect: None,
        refusal_logged: None,
        new_sessions: VecDeque::new(),
        cookie_resent: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use veil_dataplane::link::Epoch;
    use veil_dataplane::pipeline::ControlDriver;
    use veil_dataplane::timing::Timing;

    fn device() -> (Device, Instant) {
        let now = Instant::now();
        (
            Device::new(&[7; 32], Timing::default(), Epoch::new(now)),
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

    fn add(d: &mut Device, key: [u8; 32], nets: &[&str], now: Instant) -> ChangeOutcome {
        let mut pc = PeerChange::new(key);
        pc.allowed_ips = nets.iter().map(|s| net(s)).collect();
        pc.endpoint = Some("192.0.2.1:51820".parse().unwrap());
        d.configure(
            DeviceChange {
                peers: vec![pc],
                ..Default::default()
            },
            now,
        )
        .unwrap()
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
        let out = d
            .configure(
                DeviceChange {
                    peers: vec![rm],
                    ..Default::default()
                },
                now,
            )
            .unwrap();
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
        let out = d
            .configure(
                DeviceChange {
                    peers: vec![pc],
                    ..Default::default()
                },
                now,
            )
            .unwrap();
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
        let err = d
            .configure(
                DeviceChange {
                    peers: vec![ok.clone(), own],
                    ..Default::default()
                },
                now,
            )
            .unwrap_err();
        assert_eq!(err, ConfigureError::OwnKey);
        assert!(d.snapshot(false, now, SystemTime::now()).peers.is_empty());
        let weak = PeerChange::new([0; 32]);
        assert_eq!(
            d.configure(
                DeviceChange {
                    peers: vec![weak],
                    ..Default::default()
                },
                now
            ),
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

    #[test]
    fn secrets_never_print() {
        let k = SecretKey::new([0xAB; 32]);
        let text = format!("{k:?}");
        assert!(!text.contains("171") && !text.to_lowercase().contains("ab,"));
    }

    #[test]
    fn channel_round_trip_and_timeouts() {
        let (mut d, _) = device();
        let (handle, inbox) = admin_channel(|| {});
        // Nobody serving yet: the caller times out.
        assert_eq!(
            handle
                .snapshot(false, Duration::from_millis(20))
                .unwrap_err(),
            AdminError::Timeout
        );
        d.attach_admin(inbox);
        let h = handle.clone();
        let asker = std::thread::spawn(move || h.snapshot(false, Duration::from_secs(10)));
        while !asker.is_finished() {
            d.poll_admin(Instant::now());
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(asker.join().unwrap().is_ok());
        drop(d);
        assert_eq!(
            handle.snapshot(false, Duration::from_secs(1)).unwrap_err(),
            AdminError::Closed
        );
    }
}
