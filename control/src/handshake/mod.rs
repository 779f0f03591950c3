//! WireGuard's handshake (message types 1–3) on top of the [`crate::noise`] core,
//! byte-exact with the Linux kernel and wireguard-go.
//!
//! Sans-IO: every call takes `now` (and the wall clock or randomness where the protocol needs
//! them) and returns bytes to send or the [`Keypair`] of a finished handshake.
//!
//! Initiator: [`PeerHandshake::create_initiation`], then [`PeerHandshake::consume_response`];
//! a cookie reply goes to [`PeerHandshake::consume_cookie_reply`] and the next initiation
//! carries MAC2.
//!
//! Responder, in two steps so the caller can find the peer by static key in its own table:
//!
//! ```
//! # use std::time::{Instant, SystemTime};
//! # use veil_control::handshake::*;
//! # use rand_core::OsRng;
//! # let server = StaticIdentity::from_secret([1; 32]);
//! # let client = StaticIdentity::from_secret([2; 32]);
//! # let mut at_client = PeerHandshake::new(&client, *server.public_key(), None);
//! # let mut at_server = PeerHandshake::new(&server, *client.public_key(), None);
//! # let (now, src) = (Instant::now(), "192.0.2.1:51820".parse().unwrap());
//! # let msg = at_client.create_initiation(&client, 7, now, SystemTime::now(), &mut OsRng).unwrap();
//! let mut cookies = server.cookie_checker();
//! match consume_initiation(&server, &mut cookies, &msg, src, false, now, &mut OsRng) {
//!     Ok(InitiationOutcome::Valid(init)) => {
//!         // Look up `init.remote_static()` in the peer table; here it is `at_server`.
//!         let (response, keypair) = at_server.respond(&server, init, 42, now, &mut OsRng)?;
//!         // Send `response` to `src`, hand `keypair` to the dataplane.
//! #       drop((response, keypair));
//!     }
//!     Ok(InitiationOutcome::CookieReply(reply)) => { /* send `reply` to `src` */ }
//!     Err(e) => { /* count `e`, drop the message */ }
//! }
//! # Ok::<(), HandshakeError>(())
//! ```
//!
//! Under load the caller passes `under_load = true`: initiations (and responses, through
//! [`CookieChecker::check`]) without a valid MAC2 are answered with a cookie reply before any
//! Diffie-Hellman work is spent on them.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::XChaCha20Poly1305;
use rand_core::CryptoRngCore;
use subtle::ConstantTimeEq;
use veil_dataplane::wire::{
    message_type, CookieReply, Initiation, Response, COOKIE_REPLY_LEN, INITIATION_LEN, MACS_LEN,
    RESPONSE_LEN, TYPE_INITIATION, TYPE_RESPONSE,
};
use veil_dataplane::Keypair;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::noise::{self, hash, mac16, Ikpsk2, InitiatorKeys, NoiseError};
use crate::tai64n::{Tai64n, TAI64N_LEN};

/// Noise protocol name WireGuard hashes into the chaining key.
pub const CONSTRUCTION: &[u8] = noise::PROTOCOL_NAME;
/// WireGuard's identifier, used as the Noise prologue.
pub const IDENTIFIER: &[u8] = b"WireGuard v1 zx2c4 Jason@zx2c4.com";
/// Label of the MAC1 key: `HASH(LABEL_MAC1 || receiver public key)`.
pub const LABEL_MAC1: &[u8] = b"mac1----";
/// Label of the cookie key: `HASH(LABEL_COOKIE || cookie sender's public key)`.
pub const LABEL_COOKIE: &[u8] = b"cookie--";
/// How long a responder's cookie secret is used (kernel `COOKIE_SECRET_MAX_AGE`).
pub const COOKIE_SECRET_LIFETIME: Duration = Duration::from_secs(120);
/// How long a received cookie is put in MAC2: the secret's lifetime less the kernel's
/// `COOKIE_SECRET_LATENCY` (5 s), so an initiator stops using a cookie before the responder's
/// secret it came from can have rotated.
pub const COOKIE_LIFETIME: Duration = Duration::from_secs(115);
/// Shortest accepted gap between two initiations from one peer (kernel `INITIATIONS_PER_SECOND` = 50).
pub const MIN_INITIATION_INTERVAL: Duration = Duration::from_millis(20);
/// Length of a cookie, of MAC1 and of MAC2.
pub const COOKIE_LEN: usize = 16;

// Byte ranges of the Noise messages inside the WireGuard messages (see docs/PROTOCOL.md).
const INITIATION_NOISE: std::ops::Range<usize> = 8..116;
const RESPONSE_NOISE: std::ops::Range<usize> = 12..60;
const SENDER_INDEX: std::ops::Range<usize> = 4..8;

/// Why a handshake message was not accepted. Every variant means "drop the message and count
/// it", except [`HandshakeError::Mac2Required`], which asks for a cookie reply (see
/// [`HandshakeError::needs_cookie_reply`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    /// Wrong length or type for the message it was handed as.
    Malformed,
    /// MAC1 does not match: not for us, or altered.
    Mac1,
    /// Under load and MAC2 is missing or stale: answer with a cookie reply.
    Mac2Required,
    /// An encrypted field (static key, timestamp, empty payload, cookie) failed authentication.
    Decrypt,
    /// A Diffie-Hellman result was all zeros: a low-order public key, in the message or
    /// configured for the peer.
    WeakKey,
    /// The initiation is from another static key, or was read with another local identity,
    /// than this peer state belongs to.
    UnknownPeer,
    /// The initiation's TAI64N timestamp is not newer than the last one accepted from this peer.
    ReplayedTimestamp,
    /// The peer's previous accepted initiation was less than [`MIN_INITIATION_INTERVAL`] ago.
    TooFast,
    /// A response that matches no pending initiation of ours.
    UnexpectedResponse,
    /// A cookie reply for a message we did not send (or already got a cookie for).
    UnexpectedCookieReply,
}

impl HandshakeError {
    /// True for [`HandshakeError::Mac2Required`]: send [`CookieChecker::create_reply`] back.
    pub fn needs_cookie_reply(&self) -> bool {
        matches!(self, HandshakeError::Mac2Required)
    }
}

veil_dataplane::fixed_messages!(HandshakeError {
    Malformed => "malformed handshake message",
    Mac1 => "handshake message has an invalid MAC1",
    Mac2Required => "under load and the handshake message lacks a valid MAC2",
    Decrypt => "handshake message failed authentication",
    WeakKey => "low-order public key in handshake",
    UnknownPeer => "handshake initiation is not from this peer",
    ReplayedTimestamp => "replayed handshake initiation (timestamp not newer)",
    TooFast => "handshake initiations from this peer arrive too fast",
    UnexpectedResponse => "handshake response matches no pending initiation",
    UnexpectedCookieReply => "cookie reply matches no message we sent",
});

impl From<NoiseError> for HandshakeError {
    fn from(e: NoiseError) -> Self {
        match e {
            NoiseError::Decrypt => HandshakeError::Decrypt,
            NoiseError::WeakKey => HandshakeError::WeakKey,
            // Sizes are fixed by the wire views; the nonce never passes 1 in a handshake.
            NoiseError::Length | NoiseError::NonceExhausted => HandshakeError::Malformed,
        }
    }
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    bool::from(a.ct_eq(b))
}

/// Short public-key fingerprint for `Debug` output (public keys are not secret).
struct KeyHint<'a>(&'a [u8; 32]);

impl fmt::Debug for KeyHint<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        f.write_str("…")
    }
}

/// This host's static key pair, with the keys derived from its public key that every
/// received handshake message needs. The secret is wiped on drop and never printed.
pub struct StaticIdentity {
    secret: StaticSecret,
    public: [u8; 32],
    /// `HASH(LABEL_MAC1 || our public)`: checks MAC1 of messages sent to us.
    mac1_key: [u8; 32],
    /// `HASH(LABEL_COOKIE || our public)`: encrypts the cookie replies we send.
    cookie_key: [u8; 32],
}

impl fmt::Debug for StaticIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticIdentity")
            .field("public", &KeyHint(&self.public))
            .finish_non_exhaustive()
    }
}

impl StaticIdentity {
    /// Take a 32-byte X25519 secret (clamped as X25519 requires). The caller should wipe its
    /// own copy.
    pub fn from_secret(secret: [u8; 32]) -> Self {
        let secret = StaticSecret::from(secret);
        let public = PublicKey::from(&secret).to_bytes();
        Self {
            secret,
            public,
            mac1_key: hash(&[LABEL_MAC1, &public]),
            cookie_key: hash(&[LABEL_COOKIE, &public]),
        }
    }

    /// Our public key.
    pub fn public_key(&self) -> &[u8; 32] {
        &self.public
    }

    /// A [`CookieChecker`] for this identity (same as `CookieChecker::new(self.public_key())`).
    pub fn cookie_checker(&self) -> CookieChecker {
        CookieChecker::from_keys(self.mac1_key, self.cookie_key)
    }

    /// A copy of the private key, for the operator's own configuration interface (UAPI `get`).
    /// Wiped when dropped; never log it.
    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.secret.to_bytes())
    }
}

/// Our half of an initiation in flight.
struct PendingInitiation {
    /// Chaining key and hash after the initiation; wiped on drop.
    state: Ikpsk2,
    ephemeral: StaticSecret,
    local_index: u32,
    created: Instant,
}

/// The MAC1 of the last handshake message we sent, which a cookie reply must be bound to.
struct SentMac1 {
    /// Our index in that message (the cookie reply's receiver index).
    index: u32,
    mac1: [u8; COOKIE_LEN],
}

struct ReceivedCookie {
    cookie: Zeroizing<[u8; COOKIE_LEN]>,
    received: Instant,
}

/// Handshake state for one peer: keys precomputed from both static keys, replay and flood
/// protection for its initiations, our pending initiation, and the cookie it gave us.
///
/// Built for one [`StaticIdentity`]; pass that same identity to every method (a new local key
/// means new `PeerHandshake`s). Secrets are wiped on drop and never printed.
pub struct PeerHandshake {
    remote_public: [u8; 32],
    psk: Zeroizing<[u8; 32]>,
    /// `DH(our static, their static)`; all zeros if their key is low-order (every handshake
    /// with them then fails with [`HandshakeError::WeakKey`]).
    static_static: Zeroizing<[u8; 32]>,
    /// `HASH(LABEL_MAC1 || their public)`: MAC1 of messages we send them.
    mac1_key: [u8; 32],
    /// `HASH(LABEL_COOKIE || their public)`: opens the cookie replies they send.
    cookie_key: [u8; 32],
    last_timestamp: Option<Tai64n>,
    last_initiation: Option<Instant>,
    pending: Option<PendingInitiation>,
    cookie: Option<ReceivedCookie>,
    last_sent_mac1: Option<SentMac1>,
}

impl fmt::Debug for PeerHandshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerHandshake")
            .field("remote", &KeyHint(&self.remote_public))
            .field(
                "pending_index",
                &self.pending.as_ref().map(|p| p.local_index),
            )
            .field("has_cookie", &self.cookie.is_some())
            .finish_non_exhaustive()
    }
}

impl PeerHandshake {
    /// State for the peer with static key `remote_public` as seen by `local`; `psk` is the
    /// optional preshared key (WireGuard uses 32 zero bytes when there is none).
    pub fn new(local: &StaticIdentity, remote_public: [u8; 32], psk: Option<[u8; 32]>) -> Self {
        // A low-order peer key makes this all zeros; it is refused when used, as in the kernel.
        let static_static = noise::dh(&local.secret, &remote_public).unwrap_or_default();
        Self {
            remote_public,
            psk: Zeroizing::new(psk.unwrap_or_default()),
            static_static,
            mac1_key: hash(&[LABEL_MAC1, &remote_public]),
            cookie_key: hash(&[LABEL_COOKIE, &remote_public]),
            last_timestamp: None,
            last_initiation: None,
            pending: None,
            cookie: None,
            last_sent_mac1: None,
        }
    }

    /// The peer's static public key.
    pub fn remote_public(&self) -> &[u8; 32] {
        &self.remote_public
    }

    /// True if the peer's configured key is a low-order point, with which no handshake can
    /// succeed (and which would let anyone on the path impersonate the peer). Configuration
    /// code should refuse such a peer; every handshake operation with it fails with
    /// [`HandshakeError::WeakKey`].
    pub fn remote_key_is_low_order(&self) -> bool {
        bool::from(self.static_static.ct_eq(&[0u8; 32]))
    }

    /// When our pending initiation was created, if one is waiting for its response.
    pub fn pending_since(&self) -> Option<Instant> {
        self.pending.as_ref().map(|p| p.created)
    }

    /// The newest TAI64N timestamp accepted from this peer: an initiation must carry a later one.
    pub fn last_timestamp(&self) -> Option<Tai64n> {
        self.last_timestamp
    }

    /// Carry the newest accepted timestamp over from another process (a live hand-off), so an
    /// initiation the old process accepted cannot be replayed into this one. Never moves back.
    pub fn restore_last_timestamp(&mut self, ts: Tai64n) {
        if self.last_timestamp.is_none_or(|t| ts > t) {
            self.last_timestamp = Some(ts);
        }
    }

    /// Forget our pending initiation (the timers gave up on it); its ephemeral is wiped.
    pub fn abandon_initiation(&mut self) {
        self.pending = None;
    }

    /// The pre-shared key, `None` when there is none (all zeros, as WireGuard treats it).
    pub fn preshared_key(&self) -> Option<Zeroizing<[u8; 32]>> {
        let zero: bool = self.psk.ct_eq(&[0u8; 32]).into();
        (!zero).then(|| Zeroizing::new(*self.psk))
    }

    /// Replace the pre-shared key (`None`: none). Like the kernel, this keeps the replay and
    /// flood state; handshakes from now on mix in the new key.
    pub fn set_preshared_key(&mut self, psk: Option<[u8; 32]>) {
        *self.psk = psk.unwrap_or_default();
    }

    /// The cookie to put in MAC2, if we hold one younger than [`COOKIE_LIFETIME`].
    fn fresh_cookie(&self, now: Instant) -> Option<&[u8; COOKIE_LEN]> {
        self.cookie
            .as_ref()
            .filter(|c| now.saturating_duration_since(c.received) < COOKIE_LIFETIME)
            .map(|c| &*c.cookie)
    }

    /// Write MAC1 (always) and MAC2 (when we hold a fresh cookie) at the end of `msg`, and
    /// remember MAC1 so a cookie reply to this message can be opened.
    fn seal_macs(&mut self, msg: &mut [u8], sender_index: u32, now: Instant) {
        let Some(mac1_at) = msg.len().checked_sub(MACS_LEN) else {
            return;
        };
        let mac2_at = mac1_at + COOKIE_LEN;
        let mac1 = mac16(&self.mac1_key, &[&msg[..mac1_at]]);
        msg[mac1_at..mac2_at].copy_from_slice(&mac1);
        let mac2 = match self.fresh_cookie(now) {
            Some(cookie) => mac16(cookie, &[&msg[..mac2_at]]),
            None => [0; COOKIE_LEN],
        };
        msg[mac2_at..].copy_from_slice(&mac2);
        self.last_sent_mac1 = Some(SentMac1 {
            index: sender_index,
            mac1,
        });
    }

    /// Create an initiation (type 1) with a fresh ephemeral from `rng`, timestamped with
    /// `wall`. `local_index` is the index the caller reserved for this handshake; the
    /// response will carry it. Replaces any pending initiation.
    ///
    /// Fails only with [`HandshakeError::WeakKey`] when the peer's configured key is low-order.
    pub fn create_initiation(
        &mut self,
        local: &StaticIdentity,
        local_index: u32,
        now: Instant,
        wall: SystemTime,
        rng: &mut impl CryptoRngCore,
    ) -> Result<[u8; INITIATION_LEN], HandshakeError> {
        let ephemeral = StaticSecret::random_from_rng(rng);
        let mut state = Ikpsk2::new(CONSTRUCTION, IDENTIFIER, &self.remote_public);
        let timestamp = Tai64n::from_system_time(wall).to_bytes();
        let mut msg = [0u8; INITIATION_LEN];
        state.write_initiation(
            &ephemeral,
            &local.public,
            &self.remote_public,
            &self.static_static,
            &timestamp,
            &mut msg[INITIATION_NOISE],
        )?;
        let mut view = Initiation::new_init(&mut msg[..]).map_err(|_| HandshakeError::Malformed)?;
        view.set_sender_index(local_index);
        self.seal_macs(&mut msg, local_index, now);
        self.pending = Some(PendingInitiation {
            state,
            ephemeral,
            local_index,
            created: now,
        });
        Ok(msg)
    }

    /// Consume a response (type 2) to our pending initiation and derive the session: the
    /// initiator sends with the first Split key and receives with the second.
    ///
    /// Checks, in order of cost: length and type, receiver index against the pending
    /// initiation, MAC1, then the Noise message. A failed response leaves the pending
    /// initiation in place for the genuine one. Under load, run [`CookieChecker::check`] first.
    pub fn consume_response(
        &mut self,
        local: &StaticIdentity,
        msg: &[u8],
        now: Instant,
    ) -> Result<Keypair, HandshakeError> {
        let view = Response::new_checked(msg).map_err(|_| HandshakeError::Malformed)?;
        let answered = |p: &&PendingInitiation| p.local_index == view.receiver_index();
        let pending = self.pending.as_ref().filter(answered);
        let pending = pending.ok_or(HandshakeError::UnexpectedResponse)?;
        verify_mac1(&local.mac1_key, msg)?;
        let noise_msg = msg.get(RESPONSE_NOISE).ok_or(HandshakeError::Malformed)?;
        let mut state = pending.state.clone();
        state.read_response(
            &pending.ephemeral,
            &local.secret,
            &self.psk,
            noise_msg,
            &mut [],
        )?;
        let keys = state.split();
        let keypair = Keypair::new(
            &keys.initiator_to_responder,
            &keys.responder_to_initiator,
            pending.local_index,
            view.sender_index(),
            now,
            true,
        );
        self.pending = None;
        Ok(keypair)
    }

    /// Consume a cookie reply (type 3) from this peer: decrypt the cookie (XChaCha20-Poly1305
    /// under `HASH(LABEL_COOKIE || their public)`, bound to the MAC1 we last sent) and use it
    /// for MAC2 for [`COOKIE_LIFETIME`]. The caller routes it here by receiver index.
    pub fn consume_cookie_reply(&mut self, msg: &[u8], now: Instant) -> Result<(), HandshakeError> {
        let view = CookieReply::new_checked(msg).map_err(|_| HandshakeError::Malformed)?;
        let answered = |s: &&SentMac1| s.index == view.receiver_index();
        let sent = self.last_sent_mac1.as_ref().filter(answered);
        let sent = sent.ok_or(HandshakeError::UnexpectedCookieReply)?;
        let (ciphertext, tag) = view.encrypted_cookie().split_at(COOKIE_LEN);
        let mut cookie = Zeroizing::new([0u8; COOKIE_LEN]);
        cookie.copy_from_slice(ciphertext);
        XChaCha20Poly1305::new((&self.cookie_key).into())
            .decrypt_in_place_detached(view.nonce().into(), &sent.mac1, &mut *cookie, tag.into())
            .map_err(|_| HandshakeError::Decrypt)?;
        self.cookie = Some(ReceivedCookie {
            cookie,
            received: now,
        });
        // One cookie per message sent, as in the kernel: a replayed reply finds nothing to open.
        self.last_sent_mac1 = None;
        Ok(())
    }

    /// Answer a [`ValidInitiation`] from this peer: check its timestamp and rate, then write
    /// the response (type 2) with a fresh ephemeral from `rng` and derive the session (the
    /// responder sends with the second Split key). `local_index` is the index the caller
    /// reserved for this session.
    ///
    /// Errors leave this state unchanged. Our own pending initiation, if any, is kept: when
    /// both sides initiate at once, the response to ours can still complete it, and the
    /// session layer picks which keypair to use.
    pub fn respond(
        &mut self,
        local: &StaticIdentity,
        init: ValidInitiation,
        local_index: u32,
        now: Instant,
        rng: &mut impl CryptoRngCore,
    ) -> Result<([u8; RESPONSE_LEN], Keypair), HandshakeError> {
        let ephemeral = StaticSecret::random_from_rng(rng);
        if !ct_eq(&init.local_public, &local.public)
            || !ct_eq(&init.initiator.static_public, &self.remote_public)
        {
            return Err(HandshakeError::UnknownPeer);
        }
        let ValidInitiation {
            mut state,
            initiator,
            sender_index,
            encrypted_timestamp,
            ..
        } = init;
        // Only now, with the static-static DH of this peer, is the initiator authenticated.
        let mut timestamp = [0u8; TAI64N_LEN];
        state.read_initiation_payload(&self.static_static, &encrypted_timestamp, &mut timestamp)?;
        let timestamp = Tai64n::from_bytes(timestamp);
        if self.last_timestamp.is_some_and(|last| timestamp <= last) {
            return Err(HandshakeError::ReplayedTimestamp);
        }
        if self
            .last_initiation
            .is_some_and(|last| now.saturating_duration_since(last) < MIN_INITIATION_INTERVAL)
        {
            return Err(HandshakeError::TooFast);
        }

        let mut msg = [0u8; RESPONSE_LEN];
        state.write_response(
            &ephemeral,
            &initiator,
            &self.psk,
            &[],
            &mut msg[RESPONSE_NOISE],
        )?;
        let mut view = Response::new_init(&mut msg[..]).map_err(|_| HandshakeError::Malformed)?;
        view.set_sender_index(local_index);
        view.set_receiver_index(sender_index);
        self.seal_macs(&mut msg, local_index, now);
        let keys = state.split();
        let keypair = Keypair::new(
            &keys.responder_to_initiator,
            &keys.initiator_to_responder,
            local_index,
            sender_index,
            now,
            false,
        );
        self.last_timestamp = Some(timestamp);
        self.last_initiation = Some(now);
        Ok((msg, keypair))
    }
}

/// An initiation whose MAC1 (and MAC2, when required) checked and whose static key decrypted.
///
/// The initiator is **not authenticated yet**: anyone who knows our public key can produce
/// this. Look the peer up by [`ValidInitiation::remote_static`] and pass this to that peer's
/// [`PeerHandshake::respond`], which authenticates it with the static-static DH. Holds the
/// chaining key and hash, wiped on drop.
pub struct ValidInitiation {
    state: Ikpsk2,
    initiator: InitiatorKeys,
    sender_index: u32,
    encrypted_timestamp: [u8; TAI64N_LEN + noise::AEAD_TAG_LEN],
    local_public: [u8; 32],
}

impl fmt::Debug for ValidInitiation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValidInitiation")
            .field("remote_static", &KeyHint(&self.initiator.static_public))
            .field("sender_index", &self.sender_index)
            .finish_non_exhaustive()
    }
}

impl ValidInitiation {
    /// The static public key the initiator claims; the key of the caller's peer table.
    pub fn remote_static(&self) -> &[u8; 32] {
        &self.initiator.static_public
    }

    /// The initiator's index for this handshake (the receiver index of our response).
    pub fn sender_index(&self) -> u32 {
        self.sender_index
    }
}

/// What [`consume_initiation`] decided.
pub enum InitiationOutcome {
    /// Under load without a valid MAC2: send this cookie reply to the source; nothing else.
    CookieReply([u8; COOKIE_REPLY_LEN]),
    /// Go on with the peer's [`PeerHandshake::respond`].
    Valid(ValidInitiation),
}

impl fmt::Debug for InitiationOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InitiationOutcome::CookieReply(_) => f.write_str("CookieReply"),
            InitiationOutcome::Valid(v) => f.debug_tuple("Valid").field(v).finish(),
        }
    }
}

/// Responder, first step: check an initiation (type 1) received from `src` and read the
/// initiator's static key.
///
/// MAC1 is checked first on every message (cheap, and proves the sender knows our public
/// key). When `under_load`, a missing or stale MAC2 gets a cookie reply and no
/// Diffie-Hellman work. `cookies` must belong to `local` (see [`StaticIdentity::cookie_checker`]).
pub fn consume_initiation(
    local: &StaticIdentity,
    cookies: &mut CookieChecker,
    msg: &[u8],
    src: SocketAddr,
    under_load: bool,
    now: Instant,
    rng: &mut impl CryptoRngCore,
) -> Result<InitiationOutcome, HandshakeError> {
    let view = Initiation::new_checked(msg).map_err(|_| HandshakeError::Malformed)?;
    verify_mac1(&local.mac1_key, msg)?;
    if under_load && !cookies.verify_mac2(msg, src, now) {
        return Ok(InitiationOutcome::CookieReply(
            cookies.create_reply(msg, src, now, rng)?,
        ));
    }
    let mut state = Ikpsk2::new(CONSTRUCTION, IDENTIFIER, &local.public);
    let noise_msg = msg.get(INITIATION_NOISE).ok_or(HandshakeError::Malformed)?;
    let initiator = state.read_initiation_static(&local.secret, noise_msg)?;
    Ok(InitiationOutcome::Valid(ValidInitiation {
        state,
        initiator,
        sender_index: view.sender_index(),
        encrypted_timestamp: *view.encrypted_timestamp(),
        local_public: local.public,
    }))
}

/// MAC1 and MAC2 of a handshake message (initiation or response), with its sender index.
struct HandshakeMacs<'a> {
    sender_index: u32,
    mac1_input: &'a [u8],
    mac1: &'a [u8],
    mac2_input: &'a [u8],
    mac2: &'a [u8],
}

fn split_macs(msg: &[u8]) -> Result<HandshakeMacs<'_>, HandshakeError> {
    let len_ok = match message_type(msg) {
        Some(TYPE_INITIATION) => msg.len() == INITIATION_LEN,
        Some(TYPE_RESPONSE) => msg.len() == RESPONSE_LEN,
        _ => false,
    };
    let mac1_at = msg
        .len()
        .checked_sub(MACS_LEN)
        .filter(|_| len_ok)
        .ok_or(HandshakeError::Malformed)?;
    let (mac1_input, macs) = msg.split_at(mac1_at);
    let (mac1, mac2) = macs.split_at(COOKIE_LEN);
    let mac2_input = msg
        .get(..mac1_at + COOKIE_LEN)
        .ok_or(HandshakeError::Malformed)?;
    let sender: [u8; 4] = msg
        .get(SENDER_INDEX)
        .and_then(|b| b.try_into().ok())
        .ok_or(HandshakeError::Malformed)?;
    Ok(HandshakeMacs {
        sender_index: u32::from_le_bytes(sender),
        mac1_input,
        mac1,
        mac2_input,
        mac2,
    })
}

fn verify_mac1(key: &[u8; 32], msg: &[u8]) -> Result<(), HandshakeError> {
    let m = split_macs(msg)?;
    if ct_eq(&mac16(key, &[m.mac1_input]), m.mac1) {
        Ok(())
    } else {
        Err(HandshakeError::Mac1)
    }
}

/// Responder-side cookie state: a random secret, replaced when it is older than
/// [`COOKIE_SECRET_LIFETIME`], from which the cookie of a source address is derived:
/// `cookie = MAC(secret, source IP bytes || source port big-endian)` (keyed BLAKE2s, 16 bytes).
///
/// Rotation is driven by the `now` passed in and uses the randomness passed to
/// [`CookieChecker::create_reply`]; until the first reply there is no secret and no MAC2 is
/// valid. The secret is wiped on drop and never printed.
pub struct CookieChecker {
    /// `HASH(LABEL_MAC1 || our public)`.
    mac1_key: [u8; 32],
    /// `HASH(LABEL_COOKIE || our public)`.
    cookie_key: [u8; 32],
    secret: Zeroizing<[u8; 32]>,
    secret_born: Option<Instant>,
}

impl fmt::Debug for CookieChecker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CookieChecker")
            .field("secret_born", &self.secret_born)
            .finish_non_exhaustive()
    }
}

impl CookieChecker {
    /// Cookie state for the identity with public key `local_public`.
    pub fn new(local_public: &[u8; 32]) -> Self {
        Self::from_keys(
            hash(&[LABEL_MAC1, local_public]),
            hash(&[LABEL_COOKIE, local_public]),
        )
    }

    fn from_keys(mac1_key: [u8; 32], cookie_key: [u8; 32]) -> Self {
        Self {
            mac1_key,
            cookie_key,
            secret: Zeroizing::new([0; 32]),
            secret_born: None,
        }
    }

    /// The cookie secret and its age at `now` (none before the first cookie reply), to carry
    /// it into another process: cookies handed out stay valid there.
    pub fn export_secret(&self, now: Instant) -> Option<(Zeroizing<[u8; 32]>, Duration)> {
        let born = self.secret_born?;
        Some((self.secret.clone(), now.saturating_duration_since(born)))
    }

    /// The secret [`CookieChecker::export_secret`] gave, `age` old at `now`.
    pub fn restore_secret(&mut self, secret: &[u8; 32], age: Duration, now: Instant) {
        *self.secret = *secret;
        self.secret_born = Some(now.checked_sub(age).unwrap_or(now));
    }

    fn secret_fresh(&self, now: Instant) -> bool {
        self.secret_born
            .is_some_and(|born| now.saturating_duration_since(born) < COOKIE_SECRET_LIFETIME)
    }

    fn cookie(&self, src: SocketAddr) -> Zeroizing<[u8; COOKIE_LEN]> {
        let port = src.port().to_be_bytes();
        Zeroizing::new(match src {
            SocketAddr::V4(a) => mac16(&*self.secret, &[&a.ip().octets(), &port]),
            SocketAddr::V6(a) => mac16(&*self.secret, &[&a.ip().octets(), &port]),
        })
    }

    /// Check MAC1 of a handshake message (initiation or response) addressed to us.
    pub fn verify_mac1(&self, msg: &[u8]) -> Result<(), HandshakeError> {
        verify_mac1(&self.mac1_key, msg)
    }

    /// Is MAC2 of this handshake message (initiation or response) the one our current cookie
    /// for `src` gives? False for malformed messages and when the secret is missing or stale.
    pub fn verify_mac2(&self, msg: &[u8], src: SocketAddr, now: Instant) -> bool {
        let Ok(m) = split_macs(msg) else {
            return false;
        };
        self.secret_fresh(now) && ct_eq(&mac16(&*self.cookie(src), &[m.mac2_input]), m.mac2)
    }

    /// The checks a handshake message gets before any Diffie-Hellman work: MAC1 always; MAC2
    /// when `under_load`. [`HandshakeError::Mac2Required`] asks the caller to send
    /// [`CookieChecker::create_reply`]. [`consume_initiation`] does this itself; responses
    /// received under load go through here before [`PeerHandshake::consume_response`].
    pub fn check(
        &self,
        msg: &[u8],
        src: SocketAddr,
        under_load: bool,
        now: Instant,
    ) -> Result<(), HandshakeError> {
        self.verify_mac1(msg)?;
        if under_load && !self.verify_mac2(msg, src, now) {
            return Err(HandshakeError::Mac2Required);
        }
        Ok(())
    }

    /// Build the cookie reply (type 3) to a handshake message from `src`: receiver index =
    /// the message's sender index, a random 24-byte nonce, and the cookie for `src` encrypted
    /// with XChaCha20-Poly1305 under `HASH(LABEL_COOKIE || our public)` with the message's
    /// MAC1 as associated data. Replaces the secret first if it is stale.
    pub fn create_reply(
        &mut self,
        msg: &[u8],
        src: SocketAddr,
        now: Instant,
        rng: &mut impl CryptoRngCore,
    ) -> Result<[u8; COOKIE_REPLY_LEN], HandshakeError> {
        let m = split_macs(msg)?;
        if !self.secret_fresh(now) {
            rng.fill_bytes(&mut *self.secret);
            self.secret_born = Some(now);
        }
        let cookie = self.cookie(src);
        let mut out = [0u8; COOKIE_REPLY_LEN];
        let mut view =
            CookieReply::new_init(&mut out[..]).map_err(|_| HandshakeError::Malformed)?;
        view.set_receiver_index(m.sender_index);
        rng.fill_bytes(view.nonce_mut());
        let nonce = *view.nonce();
        let sealed = view.encrypted_cookie_mut();
        let (ciphertext, tag_out) = sealed.split_at_mut(COOKIE_LEN);
        ciphertext.copy_from_slice(&*cookie);
        let tag = XChaCha20Poly1305::new((&self.cookie_key).into())
            .encrypt_in_place_detached((&nonce).into(), m.mac1, ciphertext)
            .map_err(|_| HandshakeError::Malformed)?;
        tag_out.copy_from_slice(&tag);
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests;
