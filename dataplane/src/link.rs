//! What crosses between the control thread and the dataplane: commands,
//! events, handshake messages, and the per-peer statistics the control
//! thread reads for its timers.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::batch::LocalAddr;
use crate::crypto::Keypair;
use crate::route::IpNet;
use crate::wire::ControlFrame;

/// A peer's slot number, chosen by the control thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u32);

/// Monotonic nanoseconds since the process's epoch; 0 means "never".
#[derive(Debug, Clone, Copy)]
pub struct Epoch(Instant);

impl Epoch {
    /// An epoch starting a little before `now`, so no real time maps to 0.
    pub fn new(now: Instant) -> Self {
        Self(now.checked_sub(Duration::from_secs(1)).unwrap_or(now))
    }

    /// `t` as nanoseconds since the epoch (saturating).
    pub fn nanos(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.0).as_nanos()).unwrap_or(u64::MAX)
    }

    /// The instant a stored timestamp stands for, `None` for "never".
    pub fn instant(&self, nanos: u64) -> Option<Instant> {
        (nanos != 0).then(|| self.0 + Duration::from_nanos(nanos))
    }
}

/// Per-peer traffic statistics: written by the crypto stages (of every pipeline: the counts
/// are atomic adds, the times the last writer's), read by anyone.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct PeerStats {
    /// Transport bytes received (whole datagrams).
    pub rx_bytes: AtomicU64,
    /// Transport bytes sent (whole datagrams).
    pub tx_bytes: AtomicU64,
    /// Data packets received.
    pub rx_packets: AtomicU64,
    /// Data packets sent.
    pub tx_packets: AtomicU64,
    /// Last authenticated packet of any kind received (epoch nanos).
    pub last_rx_any: AtomicU64,
    /// Last data packet (not a keepalive) received.
    pub last_rx_data: AtomicU64,
    /// Last packet of any kind sent.
    pub last_tx_any: AtomicU64,
    /// Last data packet sent.
    pub last_tx_data: AtomicU64,
}

impl PeerStats {
    /// Read a timestamp field.
    pub fn at(field: &AtomicU64, epoch: &Epoch) -> Option<Instant> {
        epoch.instant(field.load(Ordering::Relaxed))
    }
}

/// Which keypair slot an installed keypair goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeypairRole {
    /// We initiated: use it at once (current), the old current becomes previous.
    Initiator,
    /// We responded: hold it as `next` until the initiator's first packet confirms it.
    Responder,
}

/// Control thread → crypto stage (cloned for every pipeline, see [`crate::fanout`]).
#[derive(Debug, Clone)]
pub enum Command {
    /// Start routing for a peer.
    AddPeer {
        /// Slot.
        peer: PeerId,
        /// Its AllowedIPs.
        allowed_ips: Vec<IpNet>,
        /// Its endpoint, if configured.
        endpoint: Option<SocketAddr>,
        /// Shared statistics.
        stats: Arc<PeerStats>,
    },
    /// Forget a peer: keys zeroized, routes and staged packets dropped.
    RemovePeer {
        /// Slot.
        peer: PeerId,
    },
    /// Replace a peer's AllowedIPs.
    SetAllowedIps {
        /// Slot.
        peer: PeerId,
        /// New networks.
        allowed_ips: Vec<IpNet>,
    },
    /// Send to this endpoint from now on (configuration, handshake or accepted roam).
    SetEndpoint {
        /// Slot.
        peer: PeerId,
        /// New endpoint.
        endpoint: SocketAddr,
        /// Our address its packets arrived on, to send from (`None`: the kernel picks).
        local: Option<LocalAddr>,
    },
    /// A handshake completed.
    InstallKeypair {
        /// Slot.
        peer: PeerId,
        /// The keys, shared by every pipeline.
        keypair: Arc<Keypair>,
        /// Where it goes.
        role: KeypairRole,
        /// An initiator's pipeline with nothing staged confirms the session with a keepalive
        /// (set on one pipeline only: the peer needs one).
        announce: bool,
    },
    /// How the peer roams. Not validated (the default: WireGuard's semantics): an
    /// authenticated packet from a new address moves the endpoint at once. Validated (veil
    /// peers, or every peer when the operator asks): data from a new address waits for the
    /// control thread's `SetEndpoint` or `RefuseEndpoint`.
    SetRoaming {
        /// Slot.
        peer: PeerId,
        /// Does a new source address wait for the control thread's decision?
        validated: bool,
    },
    /// The peer's new source address is refused: keep dropping its packets from there.
    RefuseEndpoint {
        /// Slot.
        peer: PeerId,
        /// The refused address.
        addr: SocketAddr,
    },
    /// Drop (and zeroize) every keypair of the peer, after sealing a last goodbye frame
    /// with the current keypair if one is given.
    ClearKeypairs {
        /// Slot.
        peer: PeerId,
        /// `Some(reason)`: send `ControlFrame::Goodbye { reason }` first.
        goodbye: Option<u8>,
    },
    /// Drop the packets staged for this peer (its handshake gave up).
    DropStaged {
        /// Slot.
        peer: PeerId,
    },
    /// Send an (encrypted, empty) keepalive.
    SendKeepalive {
        /// Slot.
        peer: PeerId,
    },
    /// Limit the peer's data traffic, each direction on its own.
    SetRateLimit {
        /// Slot.
        peer: PeerId,
        /// The limit (`RateLimit::UNLIMITED` lifts it).
        limit: crate::ratelimit::RateLimit,
    },
    /// [`Command::SetRateLimit`] as the pipelines receive it: one set of buckets for all.
    ShareRateLimit {
        /// Slot.
        peer: PeerId,
        /// The buckets (`None`: unlimited).
        limits: Option<Arc<crate::ratelimit::PeerLimits>>,
    },
    /// The degradation controller's level (drives load shedding).
    SetDegradation {
        /// Current level.
        level: crate::priority::Degradation,
    },
    /// How inner packets are classed and when to shed them.
    SetPriorityPolicy {
        /// DSCP → class.
        map: crate::priority::PriorityMap,
        /// RX → crypto ring occupancy (percent) above which Low is shed.
        high_water_pct: u32,
    },
    /// Most bytes one session may hold (`None`: no byte limit): see
    /// [`crate::stage::crypto::CryptoStage`]. Split over the pipelines by [`crate::fanout`].
    SetSessionMemory {
        /// The limit for one session, in bytes.
        bytes: Option<usize>,
    },
    /// Send a veil control frame.
    SendFrame {
        /// Slot.
        peer: PeerId,
        /// Frame.
        frame: ControlFrame,
    },
}

/// Crypto stage → control thread.
#[derive(Debug)]
pub enum Event {
    /// Data waits for a peer without a usable keypair, or its keypair is due for a rekey.
    HandshakeNeeded {
        /// Slot.
        peer: PeerId,
    },
    /// An authenticated packet came from a new address. For a peer whose roaming is
    /// validated, data from there is not delivered until the control thread answers with
    /// `SetEndpoint` (accepted) or `RefuseEndpoint`, and the event repeats at most once a
    /// second while unanswered; for any other peer the endpoint has moved already and the
    /// event only tells the control thread.
    EndpointChanged {
        /// Slot.
        peer: PeerId,
        /// The new source address.
        addr: SocketAddr,
        /// Our address it arrived on.
        local: Option<LocalAddr>,
    },
    /// A control frame arrived from a peer.
    Frame {
        /// Slot.
        peer: PeerId,
        /// Frame.
        frame: ControlFrame,
        /// Source address of the datagram.
        from: SocketAddr,
    },
}

/// Largest handshake message (an initiation).
pub const HANDSHAKE_MAX: usize = crate::wire::INITIATION_LEN;

/// A handshake message copied out of a batch, RX → control or control → TX.
#[derive(Clone, Copy)]
pub struct HandshakeDatagram {
    /// The address it came from or goes to.
    pub addr: SocketAddr,
    /// Our address it arrived on, or the source to send it from (`None`: the kernel picks).
    pub local: Option<LocalAddr>,
    /// Length used in `bytes`.
    pub len: usize,
    /// The message.
    pub bytes: [u8; HANDSHAKE_MAX],
    /// When RX received it (for the handshake latency histogram).
    pub received: Option<Instant>,
}

impl std::fmt::Debug for HandshakeDatagram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandshakeDatagram")
            .field("addr", &self.addr)
            .field("len", &self.len)
            .finish()
    }
}

impl HandshakeDatagram {
    /// Copy `msg` (at most [`HANDSHAKE_MAX`] bytes, else `None`).
    pub fn new(msg: &[u8], addr: SocketAddr, received: Option<Instant>) -> Option<Self> {
        let mut bytes = [0u8; HANDSHAKE_MAX];
        bytes.get_mut(..msg.len())?.copy_from_slice(msg);
        Some(Self {
            addr,
            local: None,
            len: msg.len(),
            bytes,
            received,
        })
    }

    /// The same, with our address `local` (it arrived on it, or is to leave from it).
    pub fn with_local(self, local: Option<LocalAddr>) -> Self {
        Self { local, ..self }
    }

    /// The message bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len.min(HANDSHAKE_MAX)]
    }
}
