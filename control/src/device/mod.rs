//! The control thread's state machine: handshakes, timers and the
//! authoritative peer table, sans-IO.
//!
//! [`Device`] is fed handshake messages, dataplane events and the clock, and
//! yields commands for the crypto stage and handshake messages to send. It
//! never reads the clock or touches a socket, so tests drive it on a virtual
//! clock.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use log::{debug, info, warn};
use rand_core::{CryptoRngCore, OsRng};
use veil_dataplane::batch::LocalAddr;
use veil_dataplane::counters::bump;
use veil_dataplane::link::{
    Command, Epoch, Event, HandshakeDatagram, KeypairRole, PeerId, PeerStats,
};
use veil_dataplane::pipeline::ControlDriver;
use veil_dataplane::route::IpNet;
use veil_dataplane::timing::Timing;
use veil_dataplane::wire::{
    message_type, CookieReply, Response, TYPE_COOKIE_REPLY, TYPE_INITIATION, TYPE_RESPONSE,
};

use crate::breaker::BreakerState;
use crate::handshake::{
    CookieChecker, HandshakeError, InitiationOutcome, PeerHandshake, StaticIdentity,
};
use crate::migration::{MigrationPolicy, TokenMinter};
use crate::session::{Session, SessionPolicy};

mod bounded;
mod handoff;
mod handshakes;
mod indices;
mod lifecycle;
mod protection;

use bounded::Bounded;

pub use lifecycle::{Reconnect, DRAIN_GRACE, DRAIN_QUIET_HOLD};
pub use protection::{ProtectionConfig, INITIATIONS_PER_SEC};

mod admin;
mod counters;
mod peers;
mod requests;
pub use admin::{admin_channel, AdminError, AdminHandle, AdminInbox, ADMIN_QUEUE};
pub use counters::ControlCounters;
pub use handoff::{RestoreError, Restored};
pub use peers::SLOT_QUARANTINE;
pub use requests::{
    AdminRequest, AdminResponse, ChangeOutcome, ConfigureError, DeviceChange, DeviceSnapshot,
    PeerChange, PeerSnapshot, SecretKey,
};

/// Handshake backlog above which the control thread considers itself under load.
pub const UNDER_LOAD_BACKLOG: usize = 128;

/// How long "under load" lasts after the backlog fell (as in the kernel).
pub const UNDER_LOAD_LINGER: Duration = Duration::from_secs(1);

/// Handshake work (the Diffie-Hellman of initiations and responses) the control thread may do
/// per second, and its burst: a quarter of a core. Beyond it the device is under load (an
/// initiation without a valid MAC2 gets a cookie reply, and one with a valid MAC2 waits for the
/// budget to refill), so a flood alone cannot take the CPU the dataplane needs.
pub const HANDSHAKE_BUDGET_PER_SEC: Duration = Duration::from_millis(250);
const HANDSHAKE_BUDGET_BURST: Duration = Duration::from_millis(50);

/// Commands for the dataplane that may wait in the device at most (the control loop takes
/// them as its rings have room); beyond, a command is dropped and counted in
/// `commands_dropped`. Reached only when the crypto stage stopped taking commands.
pub const MAX_QUEUED_COMMANDS: usize = 16_384;

/// Handshake messages to send that may wait in the device at most; beyond, one is dropped
/// (as a lost datagram would be) and counted in `transmits_dropped`.
pub const MAX_QUEUED_TRANSMITS: usize = 4096;

/// Most jitter added to a handshake retry.
pub const RETRY_JITTER_MS: u32 = 333;

/// A peer as configured.
#[derive(Clone)]
pub struct PeerSpec {
    /// The peer's static public key.
    pub public_key: [u8; 32],
    /// Optional pre-shared key.
    pub preshared_key: Option<zeroize::Zeroizing<[u8; 32]>>,
    /// Networks routed to and accepted from this peer.
    pub allowed_ips: Vec<IpNet>,
    /// Where to send, until the peer tells us otherwise.
    pub endpoint: Option<SocketAddr>,
    /// Send a keepalive when nothing was sent for this many seconds.
    pub persistent_keepalive: Option<u16>,
}

impl std::fmt::Debug for PeerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerSpec")
            .field("peer", &short_id(&self.public_key))
            .field("allowed_ips", &self.allowed_ips)
            .field("endpoint", &self.endpoint)
            .field("persistent_keepalive", &self.persistent_keepalive)
            .finish_non_exhaustive()
    }
}

/// Short printable id of a peer: the first 8 characters of its base64 public key
/// (public, so safe to log).
pub fn short_id(public_key: &[u8; 32]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(8);
    // 6 bytes are 8 base64 characters exactly.
    for chunk in public_key[..6].chunks(3) {
        let n = (u32::from(chunk[0]) << 16) | (u32::from(chunk[1]) << 8) | u32::from(chunk[2]);
        for shift in [18, 12, 6, 0] {
            out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
        }
    }
    out
}

struct Peer {
    id: PeerId,
    short: String,
    handshake: PeerHandshake,
    allowed_ips: Vec<IpNet>,
    endpoint: Option<SocketAddr>,
    /// Our address the endpoint talks to, as the last handshake or roam reported it (never
    /// for a peer we are the client of: see `Peer::sticky`).
    local: Option<LocalAddr>,
    persistent_keepalive: Option<Duration>,
    stats: Arc<PeerStats>,
    /// First attempt of the handshake round in progress.
    attempt_started: Option<Instant>,
    /// When to send the next retry of the round in progress.
    retry_at: Option<Instant>,
    /// Initiations sent since the last completed handshake (or the last round given up).
    initiations_sent: u32,
    last_initiation: Option<Instant>,
    last_handshake: Option<Instant>,
    /// Last time a keepalive was asked for by the keepalive timer.
    keepalive_asked: Option<Instant>,
    /// The data-sent timestamp for which a "no reply" handshake was started already.
    unanswered_for: Option<Instant>,
    keys_live: bool,
    /// The current or last session.
    session: Option<Session>,
    /// The peer sent us a veil control frame, so it understands them.
    veil_peer: bool,
    /// We have an endpoint for it from the config: we are its client.
    client_of: bool,
    /// Gateway side: nonces of migration tokens granted and not used.
    granted: Vec<[u8; 8]>,
    /// Client side: a migration token the gateway granted us.
    token: Option<[u8; veil_dataplane::wire::MIGRATION_TOKEN_LEN]>,
    /// Client side: reconnecting after the gateway's drain notice.
    reconnect: Option<Reconnect>,
    /// Last time a refused migration of this peer was logged.
    refusal_logged: Option<Instant>,
    /// New sessions of this peer in the last minute (reconnect limit).
    new_sessions: VecDeque<Instant>,
    /// Last time an initiation was resent at once because a cookie reply came.
    cookie_resent: Option<Instant>,
    /// The operator's per-peer migration switch: validated (true) or WireGuard's roaming
    /// at once (false); `None` follows `[migration]` and whether the peer speaks veil.
    validate_migration: Option<bool>,
    /// Backoff after handshake rounds that gave up.
    breaker: crate::breaker::Breaker,
    /// The last keypairs installed in the dataplane, oldest first (a live hand-off captures
    /// them); emptied whenever the dataplane is told to clear them.
    installed: VecDeque<(Arc<veil_dataplane::Keypair>, KeypairRole)>,
}

/// Completed handshakes kept for [`Device::poll_handshake_round`] (the oldest go first).
const MAX_ROUNDS_QUEUED: usize = 1024;

/// A handshake completed after initiations of ours: how many it took (the reliability
/// guide's `retransmit_count`), and the peer's class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeRound {
    /// The peer speaks veil's control frames (else: a standard WireGuard peer).
    pub veil_peer: bool,
    /// Initiations sent, the first one included.
    pub initiations: u32,
}

/// The sans-IO control plane. See the module docs.
pub struct Device<R: CryptoRngCore = OsRng> {
    identity: StaticIdentity,
    cookies: CookieChecker,
    peers: peers::PeerTable,
    by_key: HashMap<[u8; 32], usize>,
    /// Every receiver index handed out: initiations in flight and keypairs.
    indices: indices::IndexTable,
    timing: Timing,
    epoch: Epoch,
    rng: R,
    commands: Bounded<Command>,
    transmits: Bounded<HandshakeDatagram>,
    /// Our address the handshake message being handled arrived on: its reply leaves from
    /// it, and a completed handshake keeps it with the endpoint (sticky source).
    arrived_on: Option<LocalAddr>,
    under_load_until: Option<Instant>,
    /// When `on_timeout` must run next: the next timer, or the moment something changed the
    /// timers (they are recomputed then).
    next_tick: Instant,
    /// The latest `now` the control loop passed in.
    last_now: Instant,
    /// Completed handshakes not yet taken by [`Device::poll_handshake_round`].
    rounds: VecDeque<HandshakeRound>,
    counters: Arc<ControlCounters>,
    sessions: SessionPolicy,
    migration: MigrationPolicy,
    tokens: TokenMinter,
    next_session: u64,
    drain: Option<lifecycle::Drain>,
    /// The wall clock read once, with the monotonic instant it was read at: TAI64N
    /// timestamps follow the monotonic clock from there, so they never step back
    /// when the system clock does (peers would reject our initiations as replays).
    wall_anchor: (Instant, SystemTime),
    protection: protection::Protection,
    /// Last handshake backlog reported by the control loop.
    backlog: usize,
    /// The handshake work budget, in seconds of work ([`HANDSHAKE_BUDGET_PER_SEC`]).
    work_budget: veil_dataplane::ratelimit::TokenBucket,
    /// Handshake messages that went on to Diffie-Hellman work so far.
    work_done: u64,
}

impl<R: CryptoRngCore> std::fmt::Debug for Device<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("peers", &self.peers.len())
            .field("indices", &self.indices.len())
            .finish_non_exhaustive()
    }
}

/// Why a peer could not be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddPeerError {
    /// A peer with this public key exists already.
    Duplicate,
    /// The key is our own.
    OwnKey,
    /// The key is a low-order point: every key exchange with it would be all zeros.
    WeakKey,
}

impl std::fmt::Display for AddPeerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AddPeerError::Duplicate => "a peer with this public key exists already",
            AddPeerError::OwnKey => "the peer's public key is this interface's own",
            AddPeerError::WeakKey => {
                "the peer's public key is a low-order point and cannot be used"
            }
        })
    }
}

impl std::error::Error for AddPeerError {}

/// A snapshot of one peer, for `show` and metrics.
#[derive(Debug, Clone)]
pub struct PeerStatus {
    /// Slot.
    pub id: PeerId,
    /// Public key.
    pub public_key: [u8; 32],
    /// Current endpoint.
    pub endpoint: Option<SocketAddr>,
    /// AllowedIPs.
    pub allowed_ips: Vec<IpNet>,
    /// Last completed handshake.
    pub last_handshake: Option<Instant>,
    /// Shared traffic statistics.
    pub stats: Arc<PeerStats>,
    /// Persistent keepalive interval.
    pub persistent_keepalive: Option<u16>,
}

impl<R: CryptoRngCore> Device<R> {
    /// A device. `wall_anchor` is the wall clock read once with the monotonic instant it was
    /// read at (TAI64N timestamps follow the monotonic clock from there); `rng` is the
    /// randomness for keys, indices and jitter (the operating system's in the runtime, a
    /// seeded one in tests).
    pub fn new(
        private_key: &[u8; 32],
        timing: Timing,
        epoch: Epoch,
        wall_anchor: (Instant, SystemTime),
        mut rng: R,
    ) -> Self {
        let identity = StaticIdentity::from_secret(*private_key);
        let cookies = identity.cookie_checker();
        let mut token_secret = [0u8; 32];
        rng.fill_bytes(&mut token_secret);
        let tokens = TokenMinter::new(token_secret, epoch);
        zeroize::Zeroize::zeroize(&mut token_secret);
        let counters: Arc<ControlCounters> = Arc::default();
        Self {
            identity,
            cookies,
            peers: peers::PeerTable::default(),
            by_key: HashMap::new(),
            indices: indices::IndexTable::default(),
            timing,
            epoch,
            rng,
            commands: Bounded::new(MAX_QUEUED_COMMANDS, counters.clone(), |c| {
                &c.commands_dropped
            }),
            transmits: Bounded::new(MAX_QUEUED_TRANSMITS, counters.clone(), |c| {
                &c.transmits_dropped
            }),
            arrived_on: None,
            under_load_until: None,
            next_tick: wall_anchor.0,
            last_now: wall_anchor.0,
            rounds: VecDeque::new(),
            counters,
            sessions: SessionPolicy::default(),
            migration: MigrationPolicy::default(),
            tokens,
            next_session: 1,
            drain: None,
            wall_anchor,
            protection: protection::Protection::new(ProtectionConfig::default()),
            backlog: 0,
            work_budget: veil_dataplane::ratelimit::TokenBucket::full(
                HANDSHAKE_BUDGET_BURST.as_secs_f64(),
            ),
            work_done: 0,
        }
    }

    /// Something changed the timers: recompute them at the next round.
    fn reschedule(&mut self) {
        self.next_tick = self.next_tick.min(self.last_now);
    }

    /// The control loop passed `now` in.
    fn saw(&mut self, now: Instant) {
        self.last_now = self.last_now.max(now);
    }

    /// The wall clock read at `now` (the shell passes it in, about once a second). When it is
    /// ahead of the time the anchor gives (a gateway started before NTP set the clock), the
    /// anchor moves to it, so TAI64N timestamps are never behind the wall clock; a clock
    /// stepped back is not followed (timestamps must keep increasing for our peers).
    pub fn observe_wall_clock(&mut self, now: Instant, wall: SystemTime) {
        if wall > self.wall_time(now) {
            self.wall_anchor = (now, wall);
        }
    }

    /// Wall time at `now`, from the anchor (see [`Device::observe_wall_clock`]).
    fn wall_time(&self, now: Instant) -> SystemTime {
        let (at, wall) = self.wall_anchor;
        match now.checked_duration_since(at) {
            Some(d) => wall.checked_add(d).unwrap_or(wall),
            None => wall
                .checked_sub(at.saturating_duration_since(now))
                .unwrap_or(wall),
        }
    }

    /// Set the `[sessions]` and `[migration]` policies (defaults otherwise).
    pub fn set_policies(&mut self, sessions: SessionPolicy, migration: MigrationPolicy) {
        self.commands.push_back(Command::SetSessionMemory {
            bytes: sessions.max_memory_per_session,
        });
        self.sessions = sessions;
        self.migration = migration;
        for slot in 0..self.peers.len() {
            self.set_roaming(slot);
        }
        self.reschedule();
    }

    /// Our public key.
    pub fn public_key(&self) -> [u8; 32] {
        *self.identity.public_key()
    }

    /// The control thread's counters.
    pub fn counters(&self) -> &Arc<ControlCounters> {
        &self.counters
    }

    /// The next completed handshake that we had initiated, for the `retransmit_count`
    /// histogram.
    pub fn poll_handshake_round(&mut self) -> Option<HandshakeRound> {
        self.rounds.pop_front()
    }

    /// Add a peer and tell the dataplane about it.
    pub fn add_peer(&mut self, spec: PeerSpec) -> Result<PeerId, AddPeerError> {
        self.insert_peer(spec, None)
    }

    /// Add a peer in a new slot, or at `now` in a removed peer's slot out of quarantine.
    fn insert_peer(
        &mut self,
        spec: PeerSpec,
        now: Option<Instant>,
    ) -> Result<PeerId, AddPeerError> {
        if spec.public_key == *self.identity.public_key() {
            return Err(AddPeerError::OwnKey);
        }
        if self.by_key.contains_key(&spec.public_key) {
            return Err(AddPeerError::Duplicate);
        }
        let psk = spec.preshared_key.as_deref().copied();
        let handshake = PeerHandshake::new(&self.identity, spec.public_key, psk);
        if handshake.remote_key_is_low_order() {
            return Err(AddPeerError::WeakKey);
        }
        let slot = self.peers.free_slot(now);
        let id = PeerId(u32::try_from(slot).unwrap_or(u32::MAX));
        let peer = Peer::new(id, handshake, &spec);
        let stats = peer.stats.clone();
        self.peers.insert(slot, peer);
        self.by_key.insert(spec.public_key, slot);
        self.commands.push_back(Command::AddPeer {
            peer: id,
            allowed_ips: spec.allowed_ips,
            endpoint: spec.endpoint,
            stats,
        });
        let limit = self
            .protection
            .limit_for(&spec.public_key, spec.endpoint.is_some());
        if limit.is_limited() {
            self.commands
                .push_back(Command::SetRateLimit { peer: id, limit });
        }
        if self.migration.validate_all_peers {
            self.set_roaming(slot);
        }
        // Persistent keepalive starts the session at once, like wg-quick does.
        if let Some(p) = self.peers.get(slot) {
            if p.persistent_keepalive.is_some() && p.endpoint.is_some() {
                self.commands.push_back(Command::SendKeepalive { peer: id });
            }
        }
        self.reschedule();
        Ok(id)
    }

    /// Snapshot of every peer.
    pub fn peers(&self) -> Vec<PeerStatus> {
        self.peers
            .iter()
            .map(|p| PeerStatus {
                id: p.id,
                public_key: *p.handshake.remote_public(),
                endpoint: p.endpoint,
                allowed_ips: p.allowed_ips.clone(),
                last_handshake: p.last_handshake,
                stats: p.stats.clone(),
                persistent_keepalive: p.persistent_keepalive.map(|d| d.as_secs() as u16),
            })
            .collect()
    }

    /// Under load, handshakes must carry MAC2 and initiations are rate-limited per source:
    /// when the handshake ring backs up, or from degradation Severe up.
    fn under_load(&self, now: Instant) -> bool {
        self.under_load_until.is_some_and(|t| now < t)
            || self.protection.level() >= veil_dataplane::priority::Degradation::Severe
    }

    fn jitter(&mut self) -> Duration {
        Duration::from_millis(u64::from(self.rng.next_u32() % RETRY_JITTER_MS))
    }

    fn send_initiation(&mut self, slot: usize, now: Instant) {
        let Some((endpoint, local)) = self
            .peers
            .get(slot)
            .and_then(|p| Some((p.endpoint?, p.local)))
        else {
            debug!("peer has no endpoint; cannot initiate a handshake");
            return;
        };
        let index = self.indices.new_handshake(slot, &mut self.rng);
        let jitter = self.jitter();
        let wall = self.wall_time(now);
        let Some(p) = self.peers.get_mut(slot) else {
            return;
        };
        let msg =
            match p
                .handshake
                .create_initiation(&self.identity, index, now, wall, &mut self.rng)
            {
                Ok(m) => m,
                Err(e) => {
                    warn!("peer {}: cannot initiate a handshake: {e}", p.short);
                    return;
                }
            };
        p.last_initiation = Some(now);
        p.initiations_sent = p.initiations_sent.saturating_add(1);
        p.attempt_started.get_or_insert(now);
        p.retry_at = Some(now + self.timing.rekey_timeout + jitter);
        bump(&self.counters.handshake_initiations_sent, 1);
        debug!("peer {}: handshake initiation to {}", p.short, endpoint);
        if let Some(d) = HandshakeDatagram::new(&msg, endpoint, None) {
            self.transmits.push_back(d.with_local(local));
        }
        self.reschedule();
    }

    /// Begin a handshake round unless one is running or one was sent too recently.
    fn start_handshake(&mut self, slot: usize, now: Instant) {
        let Some(p) = self.peers.get(slot) else {
            return;
        };
        if p.retry_at.is_some() {
            return;
        }
        if !p.breaker.allows(now) {
            bump(&self.counters.handshakes_held_by_breaker, 1);
            return;
        }
        if p.last_initiation
            .is_some_and(|t| now.saturating_duration_since(t) < self.timing.rekey_timeout)
        {
            return;
        }
        self.send_initiation(slot, now);
    }

    /// Run every per-peer timer that is due.
    fn run_timers(&mut self, now: Instant) {
        for slot in 0..self.peers.len() {
            self.peer_timers(slot, now);
        }
    }

    fn peer_timers(&mut self, slot: usize, now: Instant) {
        let timing = self.timing;
        let epoch = self.epoch;
        let Some(p) = self.peers.get_mut(slot) else {
            return;
        };
        let id = p.id;
        let last_rx_any = PeerStats::at(&p.stats.last_rx_any, &epoch);
        let last_rx_data = PeerStats::at(&p.stats.last_rx_data, &epoch);
        let last_tx_any = PeerStats::at(&p.stats.last_tx_any, &epoch);
        let last_tx_data = PeerStats::at(&p.stats.last_tx_data, &epoch);

        if p.reconnect.is_some() {
            self.reconnect_timer(slot, now);
            return;
        }
        // Handshake retries, and giving up.
        if let (Some(retry), Some(started)) = (p.retry_at, p.attempt_started) {
            if now >= retry {
                p.retry_at = None;
                let trial = p.breaker.state(now) == BreakerState::HalfOpen;
                if trial || now.saturating_duration_since(started) >= timing.rekey_attempt {
                    // A round gave up, or the half-open trial went unanswered: the breaker
                    // opens for the next backoff.
                    p.attempt_started = None;
                    p.initiations_sent = 0;
                    let jitter = f64::from(self.rng.next_u32()) / f64::from(u32::MAX);
                    let wait = p.breaker.failed(now, jitter);
                    bump(&self.counters.breaker_opened, 1);
                    if trial {
                        warn!(
                            "peer {}: trial handshake unanswered; next attempt in {wait:?}",
                            p.short
                        );
                    } else {
                        bump(&self.counters.handshake_gave_up, 1);
                        warn!(
                            "peer {}: no handshake response after {:?}; giving up, next attempt in {wait:?}",
                            p.short, timing.rekey_attempt
                        );
                    }
                    self.commands.push_back(Command::DropStaged { peer: id });
                } else {
                    debug!("peer {}: handshake retry", p.short);
                    self.send_initiation(slot, now);
                }
                return;
            }
        }

        // Passive keepalive: data arrived and we sent nothing back for a while.
        if let Some(rx) = last_rx_data {
            let sent_since =
                last_tx_any.is_some_and(|t| t >= rx) || p.keepalive_asked.is_some_and(|t| t >= rx);
            if !sent_since && now.saturating_duration_since(rx) >= timing.keepalive_timeout {
                p.keepalive_asked = Some(now);
                bump(&self.counters.keepalives_requested, 1);
                self.commands.push_back(Command::SendKeepalive { peer: id });
            }
        }

        // Persistent keepalive.
        if let Some(every) = p.persistent_keepalive {
            let last = last_tx_any.max(p.keepalive_asked);
            if last.is_none_or(|t| now.saturating_duration_since(t) >= every) {
                p.keepalive_asked = Some(now);
                bump(&self.counters.keepalives_requested, 1);
                self.commands.push_back(Command::SendKeepalive { peer: id });
            }
        }

        // Data sent but nothing heard back: the peer may have lost its keys.
        if let Some(tx) = last_tx_data {
            let answered = last_rx_any.is_some_and(|r| r >= tx);
            let waited = timing.keepalive_timeout + timing.rekey_timeout;
            if !answered
                && p.unanswered_for != Some(tx)
                && now.saturating_duration_since(tx) >= waited
            {
                p.unanswered_for = Some(tx);
                debug!(
                    "peer {}: no reply to data for {:?}; new handshake",
                    p.short, waited
                );
                self.start_handshake(slot, now);
                return;
            }
        }

        // Keys unused for three reject periods are wiped.
        if p.keys_live
            && p.last_handshake
                .is_some_and(|t| now.saturating_duration_since(t) >= timing.reject_after * 3)
        {
            p.keys_live = false;
            p.installed.clear();
            info!("peer {}: session keys expired and zeroized", p.short);
            self.indices.clear_keypairs(slot);
            self.commands.push_back(Command::ClearKeypairs {
                peer: id,
                goodbye: None,
            });
        }
        self.session_timers(slot, now);
    }

    /// Earliest moment a timer may fire.
    fn compute_deadline(&self, now: Instant) -> Instant {
        // Timers read dataplane timestamps, so they are polled; the cadence is a
        // fraction of the shortest timer, bounded to keep idle wake-ups rare.
        let tick = (self.timing.rekey_timeout / 5)
            .clamp(Duration::from_millis(50), Duration::from_secs(1))
            * self.timer_stretch();
        let retry = self.peers.iter().filter_map(|p| p.retry_at);
        let reconnect = self
            .peers
            .iter()
            .filter_map(|p| p.reconnect.as_ref().map(|r| r.next_at));
        // While draining, the quiet report is looked at every hold period.
        let drain = self
            .drain
            .as_ref()
            .filter(|d| !d.done)
            .map(|d| d.ends_at().min(now + lifecycle::DRAIN_QUIET_HOLD));
        let next = now + tick;
        retry.chain(reconnect).chain(drain).fold(next, Instant::min)
    }
}

impl<R: CryptoRngCore> ControlDriver for Device<R> {
    fn on_handshake(&mut self, msg: HandshakeDatagram, now: Instant) {
        self.saw(now);
        let bytes = msg.as_bytes();
        self.arrived_on = msg.local;
        match message_type(bytes) {
            Some(TYPE_INITIATION) => self.on_initiation(bytes, msg.addr, now),
            Some(TYPE_RESPONSE) => self.on_response(bytes, msg.addr, now),
            Some(TYPE_COOKIE_REPLY) => self.on_cookie_reply(bytes, now),
            _ => bump(&self.counters.handshake_unexpected, 1),
        }
        self.arrived_on = None;
    }

    fn on_event(&mut self, ev: Event, now: Instant) {
        self.saw(now);
        if self.ignores_event(&ev) {
            return;
        }
        match ev {
            Event::HandshakeNeeded { peer } => self.start_handshake(peer.0 as usize, now),
            Event::EndpointChanged { peer, addr, local } => {
                self.on_roam(peer.0 as usize, addr, local, now)
            }
            Event::Frame { peer, frame, from } => self.on_frame(peer.0 as usize, frame, from, now),
        }
    }

    fn on_timeout(&mut self, now: Instant) {
        self.saw(now);
        self.indices.expire(now, self.timing.reject_after);
        self.run_timers(now);
        self.collect_handshake_limit(now);
        self.drain_timer(now);
        self.next_tick = self.compute_deadline(now);
    }

    fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    fn poll_transmit(&mut self) -> Option<HandshakeDatagram> {
        self.transmits.pop_front()
    }

    fn next_deadline(&self) -> Option<Instant> {
        Some(self.next_tick)
    }

    fn begin_drain(&mut self, now: Instant) {
        self.saw(now);
        self.start_drain(now);
    }

    fn drained(&self) -> bool {
        self.drain.as_ref().is_some_and(|d| d.done)
    }

    fn set_dataplane_quiet(&mut self, quiet: bool, now: Instant) {
        self.saw(now);
        Device::set_dataplane_quiet(self, quiet, now);
    }

    fn set_handshake_backlog(&mut self, queued: usize, now: Instant) {
        self.saw(now);
        self.backlog = queued;
        if queued >= UNDER_LOAD_BACKLOG {
            self.under_load_until = Some(now + UNDER_LOAD_LINGER);
        }
    }
}
