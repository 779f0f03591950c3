//! Transport crypto: the AEAD seam and the per-session [`Keypair`].
//!
//! WireGuard seals each transport payload with ChaCha20-Poly1305 under a
//! 96-bit nonce of four zero bytes followed by the 64-bit little-endian
//! counter, with empty associated data.

use std::fmt;
use std::time::Instant;

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use zeroize::{Zeroize, Zeroizing};

use crate::replay::ReplayWindow;
use crate::wire::{Transport, TAG_LEN, TRANSPORT_HEADER_LEN, TRANSPORT_MIN_LEN};
use crate::{REJECT_AFTER_MESSAGES, REKEY_AFTER_MESSAGES};

/// The seam between veil and a ChaCha20-Poly1305 implementation.
///
/// Everything that seals or opens transport data goes through this trait, so
/// another library can be dropped in and measured against the default.
pub trait TransportAead: Send + Sized + 'static {
    /// Expand a 32-byte key.
    fn new(key: &[u8; 32]) -> Self;
    /// Encrypt `data` in place under the counter nonce; returns the tag.
    fn seal(&self, counter: u64, data: &mut [u8]) -> [u8; TAG_LEN];
    /// Decrypt `data` in place under the counter nonce if `tag` authenticates it.
    fn open(&self, counter: u64, data: &mut [u8], tag: &[u8; TAG_LEN]) -> Result<(), OpenError>;
}

/// Default AEAD: the RustCrypto `chacha20poly1305` crate.
pub struct ChaChaPoly(chacha20poly1305::ChaCha20Poly1305);

impl fmt::Debug for ChaChaPoly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChaChaPoly(<key>)")
    }
}

/// The WireGuard nonce for `counter`.
pub fn counter_nonce(counter: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    n
}

impl TransportAead for ChaChaPoly {
    fn new(key: &[u8; 32]) -> Self {
        Self(chacha20poly1305::ChaCha20Poly1305::new(key.into()))
    }

    fn seal(&self, counter: u64, data: &mut [u8]) -> [u8; TAG_LEN] {
        let nonce = counter_nonce(counter);
        // Only fails for payloads above 2^38 bytes, which a datagram cannot be.
        match self.0.encrypt_in_place_detached(&nonce.into(), &[], data) {
            Ok(tag) => tag.into(),
            Err(_) => [0; TAG_LEN],
        }
    }

    fn open(&self, counter: u64, data: &mut [u8], tag: &[u8; TAG_LEN]) -> Result<(), OpenError> {
        let nonce = counter_nonce(counter);
        self.0
            .decrypt_in_place_detached(&nonce.into(), &[], data, tag.into())
            .map_err(|_| OpenError::Authentication)
    }
}

/// AEAD from `ring` (its assembly ChaCha20-Poly1305), behind the cargo feature `aead-ring`.
///
/// Here to be measured against [`ChaChaPoly`] (`cargo bench -p veil-dataplane --features
/// aead-ring --bench aead`); the default build does not contain it. ring does not wipe its
/// expanded key on drop.
#[cfg(feature = "aead-ring")]
pub struct RingChaChaPoly(ring::aead::LessSafeKey);

#[cfg(feature = "aead-ring")]
impl fmt::Debug for RingChaChaPoly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RingChaChaPoly(<key>)")
    }
}

#[cfg(feature = "aead-ring")]
impl TransportAead for RingChaChaPoly {
    fn new(key: &[u8; 32]) -> Self {
        use ring::aead::{LessSafeKey, UnboundKey, CHACHA20_POLY1305};
        // ring refuses only keys of the wrong length, which the type rules out.
        #[allow(clippy::expect_used)]
        let key = UnboundKey::new(&CHACHA20_POLY1305, key).expect("32-byte ChaCha20 key");
        Self(LessSafeKey::new(key))
    }

    fn seal(&self, counter: u64, data: &mut [u8]) -> [u8; TAG_LEN] {
        use ring::aead::{Aad, Nonce};
        let nonce = Nonce::assume_unique_for_key(counter_nonce(counter));
        // Only fails for payloads above ring's limit (~256 GiB), which a datagram cannot be.
        match self.0.seal_in_place_separate_tag(nonce, Aad::empty(), data) {
            Ok(tag) => <[u8; TAG_LEN]>::try_from(tag.as_ref()).unwrap_or([0; TAG_LEN]),
            Err(_) => [0; TAG_LEN],
        }
    }

    fn open(&self, counter: u64, data: &mut [u8], tag: &[u8; TAG_LEN]) -> Result<(), OpenError> {
        use ring::aead::{Aad, Nonce, Tag};
        let nonce = Nonce::assume_unique_for_key(counter_nonce(counter));
        self.0
            .open_in_place_separate_tag(nonce, Aad::empty(), Tag::from(*tag), data, 0..)
            .map(|_| ())
            .map_err(|_| OpenError::Authentication)
    }
}

/// Why a transport message could not be sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealError {
    /// The send counter reached `REJECT_AFTER_MESSAGES`: a new handshake is required.
    CounterExhausted,
    /// The buffer cannot hold header, payload and tag.
    BufferTooSmall,
}

impl fmt::Display for SealError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SealError::CounterExhausted => "send counter exhausted; new handshake required",
            SealError::BufferTooSmall => "buffer too small for transport message",
        })
    }
}

impl std::error::Error for SealError {}

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

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OpenError::Malformed => "malformed transport message",
            OpenError::Replay => "replayed or too old counter",
            OpenError::Authentication => "authentication failed",
        })
    }
}

impl std::error::Error for OpenError {}

/// Session keys produced by a completed handshake, owned by the crypto stage.
///
/// Holds the send and receive keys (zeroized on drop with the raw copies),
/// both receiver indices, the creation time, the send counter and the replay
/// window of the receive direction.
pub struct Keypair<A: TransportAead = ChaChaPoly> {
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
    send_counter: u64,
    replay: ReplayWindow,
}

impl<A: TransportAead> fmt::Debug for Keypair<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keypair")
            .field("local_index", &self.local_index)
            .field("remote_index", &self.remote_index)
            .field("initiator", &self.initiator)
            .field("send_counter", &self.send_counter)
            .finish_non_exhaustive()
    }
}

impl<A: TransportAead> Drop for Keypair<A> {
    fn drop(&mut self) {
        self.send_counter.zeroize();
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
            send_counter: 0,
            replay: ReplayWindow::new(),
        }
    }

    /// Number of messages sent under this keypair so far.
    pub fn sent(&self) -> u64 {
        self.send_counter
    }

    /// True once enough messages were sent that a new handshake should start.
    pub fn wants_rekey(&self) -> bool {
        self.send_counter >= REKEY_AFTER_MESSAGES
    }

    /// Highest counter received so far.
    pub fn highest_received(&self) -> Option<u64> {
        self.replay.highest()
    }

    /// Seal a transport message in place.
    ///
    /// `msg[TRANSPORT_HEADER_LEN..TRANSPORT_HEADER_LEN + payload_len]` holds the
    /// plaintext. It is zero-padded to a multiple of 16 (as far as `msg` allows),
    /// encrypted, the header is written before it and the tag after it. Returns
    /// the length of the finished message.
    pub fn seal(&mut self, msg: &mut [u8], payload_len: usize) -> Result<usize, SealError> {
        let room = msg
            .len()
            .checked_sub(TRANSPORT_MIN_LEN)
            .ok_or(SealError::BufferTooSmall)?;
        if payload_len > room {
            return Err(SealError::BufferTooSmall);
        }
        let padded = payload_len.next_multiple_of(16).min(room);
        let counter = self.send_counter;
        if counter >= REJECT_AFTER_MESSAGES {
            return Err(SealError::CounterExhausted);
        }
        self.send_counter += 1;
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
    pub fn open(&mut self, msg: &mut [u8]) -> Result<(usize, u64), OpenError> {
        let view = Transport::new_checked(&*msg).map_err(|_| OpenError::Malformed)?;
        // The receiver index selects the keypair; a mismatch means the caller routed it wrong
        // or the header was altered.
        if view.receiver_index() != self.local_index {
            return Err(OpenError::Malformed);
        }
        let counter = view.counter();
        if !self.replay.check(counter) {
            return Err(OpenError::Replay);
        }
        let tag_at = msg.len() - TAG_LEN;
        let (body, tag) = msg.split_at_mut(tag_at);
        let tag: &[u8; TAG_LEN] = (&*tag).try_into().map_err(|_| OpenError::Malformed)?;
        self.recv
            .open(counter, &mut body[TRANSPORT_HEADER_LEN..], tag)?;
        if !self.replay.check_and_update(counter) {
            return Err(OpenError::Replay);
        }
        Ok((tag_at - TRANSPORT_HEADER_LEN, counter))
    }

    /// Key bytes for tests of the seam only.
    #[doc(hidden)]
    pub fn raw_keys_for_test(&self) -> &[u8; 64] {
        &self.raw
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Keypair, Keypair) {
        let now = Instant::now();
        let a = [1u8; 32];
        let b = [2u8; 32];
        (
            Keypair::new(&a, &b, 10, 20, now, true),
            Keypair::new(&b, &a, 20, 10, now, false),
        )
    }

    #[test]
    fn seal_open_round_trip_with_padding() {
        let (mut i, mut r) = pair();
        let mut buf = [0u8; 256];
        buf[16..16 + 5].copy_from_slice(b"hello");
        let n = i.seal(&mut buf, 5).unwrap();
        assert_eq!(n, 16 + 16 + 16);
        assert_eq!(&buf[4..8], &20u32.to_le_bytes());
        let (len, ctr) = r.open(&mut buf[..n]).unwrap();
        assert_eq!(ctr, 0);
        assert_eq!(len, 16);
        assert_eq!(&buf[16..21], b"hello");
        assert_eq!(&buf[21..32], &[0; 11]);
    }

    #[test]
    fn keepalive_is_32_bytes() {
        let (mut i, mut r) = pair();
        let mut buf = [0u8; 64];
        let n = i.seal(&mut buf, 0).unwrap();
        assert_eq!(n, TRANSPORT_MIN_LEN);
        assert_eq!(r.open(&mut buf[..n]).unwrap(), (0, 0));
    }

    #[test]
    fn replay_and_tamper_rejected() {
        let (mut i, mut r) = pair();
        let mut buf = [0u8; 128];
        let n = i.seal(&mut buf, 40).unwrap();
        let copy = buf;
        r.open(&mut buf[..n]).unwrap();
        let mut again = copy;
        assert_eq!(r.open(&mut again[..n]), Err(OpenError::Replay));
        for bit in 0..(n * 8) {
            let mut m = [0u8; 128];
            let n2 = i.seal(&mut m, 40).unwrap();
            m[bit / 8] ^= 1 << (bit % 8);
            assert!(r.open(&mut m[..n2]).is_err(), "flipped bit {bit} accepted");
        }
    }

    #[test]
    fn counter_limit() {
        let (mut i, _) = pair();
        i.send_counter = REJECT_AFTER_MESSAGES;
        let mut buf = [0u8; 64];
        assert_eq!(i.seal(&mut buf, 0), Err(SealError::CounterExhausted));
        i.send_counter = REKEY_AFTER_MESSAGES;
        assert!(i.wants_rekey());
        assert!(i.seal(&mut buf, 0).is_ok());
    }

    /// Both AEADs behind the seam produce the same bytes and open each other's output.
    #[cfg(feature = "aead-ring")]
    #[test]
    fn ring_matches_default() {
        let key = [7u8; 32];
        let (rc, ri) = (ChaChaPoly::new(&key), RingChaChaPoly::new(&key));
        for len in [0usize, 1, 15, 16, 64, 1400, 65536] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let (mut a, mut b) = (plain.clone(), plain.clone());
            let ta = rc.seal(9, &mut a);
            let tb = ri.seal(9, &mut b);
            assert_eq!((&a, ta), (&b, tb), "len {len}");
            ri.open(9, &mut a, &ta).unwrap();
            rc.open(9, &mut b, &tb).unwrap();
            assert_eq!((&a, &b), (&plain, &plain));
            let mut bad = tb;
            bad[0] ^= 1;
            let mut c = plain.clone();
            ri.seal(10, &mut c);
            assert_eq!(ri.open(10, &mut c, &bad), Err(OpenError::Authentication));
        }
    }

    #[test]
    fn buffer_too_small() {
        let (mut i, _) = pair();
        let mut buf = [0u8; 40];
        assert_eq!(i.seal(&mut buf, 9), Err(SealError::BufferTooSmall));
        // Padding is capped by the room left, payload itself fits.
        assert_eq!(i.seal(&mut buf, 8).unwrap(), 40);
    }
}
