//! Transport crypto: the AEAD seam and the per-session [`Keypair`].
//!
//! WireGuard seals each transport payload with ChaCha20-Poly1305 under a
//! 96-bit nonce of four zero bytes followed by the 64-bit little-endian
//! counter, with empty associated data.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

mod backend;
mod conformance;
#[cfg(test)]
mod tests;

pub use backend::{
    install, AwsLcChaChaPoly, Backend, BackendChoice, ChaChaPoly, Cipher, RingChaChaPoly,
    UnknownBackend, BACKENDS,
};
pub use conformance::{compare_backends, Disagreement};

use crate::replay::{ReplayWindow, WORDS as REPLAY_WORDS};
use crate::wire::{Transport, TAG_LEN, TRANSPORT_HEADER_LEN, TRANSPORT_MIN_LEN};
use crate::{REJECT_AFTER_MESSAGES, REKEY_AFTER_MESSAGES};

/// The seam between veil and a ChaCha20-Poly1305 implementation.
///
/// Everything that seals or opens transport data goes through this trait: the libraries behind
/// it are in `backend.rs`, and [`Cipher`] picks one at run time.
pub trait TransportAead: Send + Sync + Sized + 'static {
    /// Expand a 32-byte key.
    fn new(key: &[u8; 32]) -> Self;
    /// Encrypt `data` in place under `nonce`, authenticating `aad` too; returns the tag.
    fn seal_with(&self, nonce: &[u8; 12], aad: &[u8], data: &mut [u8]) -> [u8; TAG_LEN];
    /// Decrypt `data` in place under `nonce` if `tag` authenticates it and `aad`.
    fn open_with(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        data: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), OpenError>;

    /// Encrypt `data` in place under the counter nonce (no associated data, as WireGuard's
    /// transport messages); returns the tag.
    fn seal(&self, counter: u64, data: &mut [u8]) -> [u8; TAG_LEN] {
        self.seal_with(&counter_nonce(counter), &[], data)
    }
    /// Decrypt `data` in place under the counter nonce if `tag` authenticates it.
    fn open(&self, counter: u64, data: &mut [u8], tag: &[u8; TAG_LEN]) -> Result<(), OpenError> {
        self.open_with(&counter_nonce(counter), &[], data, tag)
    }
}

/// The WireGuard nonce for `counter`.
pub fn counter_nonce(counter: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    n
}

/// Why a transport message could not be sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealError {
    /// The send counter reached `REJECT_AFTER_MESSAGES`: a new handshake is required.
    CounterExhausted,
    /// The buffer cannot hold header, payload and tag.
    BufferTooSmall,
}

crate::fixed_messages!(SealError {
    CounterExhausted => "send counter exhausted; new handshake required",
    BufferTooSmall => "buffer too small for transport message",
});

/// Why a transport message was dropped on receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// Not a well-formed transport message.
    Malformed,
    /// The counter was seen already, is too old, or is past the reject limit.
    Replay,
    /// The tag does not authenticate the message under this key.
    Authentication,
}

crate::fixed_messages!(OpenError {
    Malformed => "malformed transport message",
    Replay => "replayed or too old counter",
    Authentication => "authentication failed",
});

/// Send counters a restored keypair skips ([`Keypair::restore`]): more than the old process can
/// seal between the capture and its exit, and than the new one seals before it confirms.
pub const HANDOFF_SEND_GAP: u64 = 1 << 20;

/// A keypair as [`Keypair::export`] captured it (a live hand-off). The keys are wiped on drop
/// and never printed.
pub struct KeypairState {
    /// Send key, then receive key.
    pub keys: Zeroizing<[u8; 64]>,
    /// Index we chose.
    pub local_index: u32,
    /// Index the peer chose.
    pub remote_index: u32,
    /// Time since the handshake completed.
    pub age: Duration,
    /// This side sent the initiation.
    pub initiator: bool,
    /// Send counters handed out.
    pub sent: u64,
    /// The replay window ([`ReplayWindow::to_parts`]).
    pub replay_next: u64,
    /// The replay window's bitmap.
    pub replay_bitmap: [u64; REPLAY_WORDS],
    /// The responder's keypair received a packet.
    pub confirmed: bool,
}

impl fmt::Debug for KeypairState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeypairState")
            .field("local_index", &self.local_index)
            .field("remote_index", &self.remote_index)
            .field("sent", &self.sent)
            .finish_non_exhaustive()
    }
}

/// Session keys produced by a completed handshake, shared by the crypto stages of every
/// pipeline (behind an `Arc`).
///
/// Holds the send and receive keys (zeroized on drop with the raw copies),
/// both receiver indices, the creation time, the send counter and the replay
/// window of the receive direction. Pipelines share one keypair, so its mutable parts are
/// safe to use from several threads: the send counter is reserved with one compare-and-swap (no
/// counter is handed out twice, whichever pipelines seal), the replay window sits behind a
/// lock held for a few bitmap operations (uncontended unless one peer's packets arrive through
/// two pipelines at the same moment), and two flags are set once: `confirmed` (the responder's
/// keypair received its first packet, through any pipeline) and `revoked` (the control side
/// cleared or removed it: no pipeline seals or opens with it again).
pub struct Keypair<A: TransportAead = Cipher> {
    send: A,
    recv: A,
    /// Raw keys kept only so they can be wiped; the AEAD copies are wiped by their own drop
    /// where the library supports it.
    raw: Zeroizing<[u8; 64]>,
    /// Index we chose: peers put it in messages sent to us.
    pub local_index: u32,
    /// Index the peer chose: we put it in messages we send.
    pub remote_index: u32,
    /// When the handshake completed.
    pub created: Instant,
    /// True if this side sent the initiation.
    pub initiator: bool,
    send_counter: AtomicU64,
    replay: Mutex<ReplayWindow>,
    confirmed: AtomicBool,
    revoked: AtomicBool,
}

impl<A: TransportAead> fmt::Debug for Keypair<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keypair")
            .field("local_index", &self.local_index)
            .field("remote_index", &self.remote_index)
            .field("initiator", &self.initiator)
            .field("send_counter", &self.sent())
            .finish_non_exhaustive()
    }
}

impl<A: TransportAead> Drop for Keypair<A> {
    fn drop(&mut self) {
        self.send_counter.store(0, Ordering::Relaxed);
    }
}

impl<A: TransportAead> Keypair<A> {
    /// Build a keypair from the two derived keys. The caller's copies should be
    /// `Zeroizing` too.
    pub fn new(
        send_key: &[u8; 32],
        recv_key: &[u8; 32],
        local_index: u32,
        remote_index: u32,
        created: Instant,
        initiator: bool,
    ) -> Self {
        let mut raw = Zeroizing::new([0u8; 64]);
        raw[..32].copy_from_slice(send_key);
        raw[32..].copy_from_slice(recv_key);
        Self {
            send: A::new(send_key),
            recv: A::new(recv_key),
            raw,
            local_index,
            remote_index,
            created,
            initiator,
            send_counter: AtomicU64::new(0),
            replay: Mutex::new(ReplayWindow::new()),
            confirmed: AtomicBool::new(false),
            revoked: AtomicBool::new(false),
        }
    }

    /// The replay window, locked. A poisoned lock (a panic while it was held) still guards a
    /// consistent window: every update is a few plain stores that cannot panic halfway.
    fn window(&self) -> MutexGuard<'_, ReplayWindow> {
        self.replay.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Number of send counters handed out under this keypair so far (at most
    /// `REJECT_AFTER_MESSAGES`).
    pub fn sent(&self) -> u64 {
        self.send_counter.load(Ordering::Relaxed)
    }

    /// True once enough messages were sent that a new handshake should start.
    pub fn wants_rekey(&self) -> bool {
        self.sent() >= REKEY_AFTER_MESSAGES
    }

    /// Highest counter received so far.
    pub fn highest_received(&self) -> Option<u64> {
        self.window().highest()
    }

    /// Reserve `n` consecutive send counters: the first one, or `None` once the keypair is
    /// exhausted (a reservation crossing `REJECT_AFTER_MESSAGES` is refused whole). Concurrent
    /// callers, on any thread, never get overlapping ranges.
    pub fn reserve(&self, n: u64) -> Option<u64> {
        // A compare-and-swap rather than a fetch_add, so the counter never passes the limit
        // (nor wraps): as cheap uncontended, retried only when another pipeline reserved first.
        self.send_counter
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                c.checked_add(n).filter(|end| *end <= REJECT_AFTER_MESSAGES)
            })
            .ok()
    }

    /// The responder's keypair received its first packet (on any pipeline): every pipeline
    /// may send with it now.
    pub fn confirm(&self) {
        self.confirmed.store(true, Ordering::Release);
    }

    /// Has [`Keypair::confirm`] been called?
    pub fn confirmed(&self) -> bool {
        self.confirmed.load(Ordering::Acquire)
    }

    /// The control side cleared this keypair (the session ended or the peer was removed):
    /// from now on no pipeline seals or opens with it, even before its command reaches it.
    pub fn revoke(&self) {
        self.revoked.store(true, Ordering::Release);
    }

    /// Has [`Keypair::revoke`] been called?
    pub fn revoked(&self) -> bool {
        self.revoked.load(Ordering::Acquire)
    }

    /// Seal a transport message in place.
    ///
    /// `msg[TRANSPORT_HEADER_LEN..TRANSPORT_HEADER_LEN + payload_len]` holds the
    /// plaintext. It is zero-padded to a multiple of 16 (as far as `msg` allows),
    /// encrypted, the header is written before it and the tag after it. Returns
    /// the length of the finished message.
    pub fn seal(&self, msg: &mut [u8], payload_len: usize) -> Result<usize, SealError> {
        let room = msg
            .len()
            .checked_sub(TRANSPORT_MIN_LEN)
            .ok_or(SealError::BufferTooSmall)?;
        if payload_len > room {
            return Err(SealError::BufferTooSmall);
        }
        let padded = payload_len.next_multiple_of(16).min(room);
        let counter = self.reserve(1).ok_or(SealError::CounterExhausted)?;
        let end = TRANSPORT_HEADER_LEN + padded;
        msg[TRANSPORT_HEADER_LEN + payload_len..end].fill(0);
        let tag = self.send.seal(counter, &mut msg[TRANSPORT_HEADER_LEN..end]);
        msg[end..end + TAG_LEN].copy_from_slice(&tag);
        Transport::new_init(&mut msg[..end + TAG_LEN], self.remote_index, counter)
            .map_err(|_| SealError::BufferTooSmall)?;
        Ok(end + TAG_LEN)
    }

    /// Open a transport message in place. On success the plaintext (with any
    /// padding) is `msg[TRANSPORT_HEADER_LEN..TRANSPORT_HEADER_LEN + n]` and `n`
    /// plus the counter are returned. The replay window is updated only after the
    /// tag verified.
    pub fn open(&self, msg: &mut [u8]) -> Result<(usize, u64), OpenError> {
        let view = Transport::new_checked(&*msg).map_err(|_| OpenError::Malformed)?;
        // The receiver index selects the keypair; a mismatch means the caller routed it wrong
        // or the header was altered.
        if view.receiver_index() != self.local_index {
            return Err(OpenError::Malformed);
        }
        let counter = view.counter();
        if !self.window().check(counter) {
            return Err(OpenError::Replay);
        }
        let tag_at = msg.len() - TAG_LEN;
        let (body, tag) = msg.split_at_mut(tag_at);
        let tag: &[u8; TAG_LEN] = (&*tag).try_into().map_err(|_| OpenError::Malformed)?;
        self.recv
            .open(counter, &mut body[TRANSPORT_HEADER_LEN..], tag)?;
        // Checked again under the lock: another pipeline may have accepted it meanwhile.
        if !self.window().check_and_update(counter) {
            return Err(OpenError::Replay);
        }
        Ok((tag_at - TRANSPORT_HEADER_LEN, counter))
    }

    /// Everything this keypair is at `now`, to carry it into another process (a live
    /// hand-off). The copy of the keys is wiped when the state is dropped.
    pub fn export(&self, now: Instant) -> KeypairState {
        let (replay_next, replay_bitmap) = self.window().to_parts();
        KeypairState {
            keys: self.raw.clone(),
            local_index: self.local_index,
            remote_index: self.remote_index,
            age: now.saturating_duration_since(self.created),
            initiator: self.initiator,
            sent: self.sent(),
            replay_next,
            replay_bitmap,
            confirmed: self.confirmed(),
        }
    }

    /// The keypair [`Keypair::export`] captured, as of `now`. Its send counter starts
    /// [`HANDOFF_SEND_GAP`] after the captured one: whatever the old process still sealed
    /// after the capture (a keepalive a timer asked for) used counters below that, so no
    /// nonce is used twice.
    pub fn restore(state: &KeypairState, now: Instant) -> Self {
        let (send, recv) = state.keys.split_at(32);
        let mut send_key = Zeroizing::new([0u8; 32]);
        let mut recv_key = Zeroizing::new([0u8; 32]);
        send_key.copy_from_slice(send);
        recv_key.copy_from_slice(recv);
        let created = now.checked_sub(state.age).unwrap_or(now);
        let kp = Self::new(
            &send_key,
            &recv_key,
            state.local_index,
            state.remote_index,
            created,
            state.initiator,
        );
        let sent = state
            .sent
            .saturating_add(HANDOFF_SEND_GAP)
            .min(REJECT_AFTER_MESSAGES);
        kp.send_counter.store(sent, Ordering::Relaxed);
        *kp.window() = ReplayWindow::from_parts(state.replay_next, state.replay_bitmap);
        if state.confirmed {
            kp.confirm();
        }
        kp
    }

    /// Skip `n` send counters (never past the reject limit). A process that resumes after a
    /// hand-off it rolled back skips what the other process may have sealed with.
    pub fn skip_counters(&self, n: u64) {
        let _ = self
            .send_counter
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                Some(c.saturating_add(n).min(REJECT_AFTER_MESSAGES))
            });
    }

    /// The AEAD sealing and opening this keypair's messages.
    pub fn aead(&self) -> &A {
        &self.send
    }

    /// Key bytes for tests of the seam only.
    #[doc(hidden)]
    pub fn raw_keys_for_test(&self) -> &[u8; 64] {
        &self.raw
    }
}
