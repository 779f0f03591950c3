//! What crosses the admin channel: the requests to the control thread and its answers, and the
//! snapshot and change types they carry.

use std::net::SocketAddr;
use std::time::SystemTime;

use veil_dataplane::link::PeerId;
use veil_dataplane::route::IpNet;
use zeroize::Zeroizing;

/// A private or pre-shared key crossing the admin channel: wiped on drop, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey(Zeroizing<[u8; 32]>);

impl SecretKey {
    /// Wrap key bytes (the caller should wipe its own copy).
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Wrap key bytes that are wiped already.
    pub(super) fn from_zeroizing(bytes: Zeroizing<[u8; 32]>) -> Self {
        Self(bytes)
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
    /// Its migrations are validated (tokens, limits); false: it roams at once.
    pub migration_validated: bool,
    /// The client side's circuit breaker for handshakes to it.
    pub breaker: crate::breaker::BreakerState,
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
    /// A live hand-off: capture every session's state (the dataplane is paused).
    Capture,
    /// A live hand-off failed after the capture, and this process serves on: skip the send
    /// counters the other process may have used.
    ResumeAfterHandoff,
}

/// The control thread's answer.
#[derive(Debug)]
pub enum AdminResponse {
    /// Answer to [`AdminRequest::Snapshot`].
    Snapshot(Box<DeviceSnapshot>),
    /// Answer to [`AdminRequest::Configure`].
    Configured(Result<ChangeOutcome, ConfigureError>),
    /// Answer to [`AdminRequest::Capture`].
    Captured(Box<crate::handoff::HandoffState>),
    /// Answer to [`AdminRequest::ResumeAfterHandoff`].
    Resumed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let k = SecretKey::new([0xAB; 32]);
        let text = format!("{k:?}");
        assert!(!text.contains("171") && !text.to_lowercase().contains("ab,"));
    }
}
