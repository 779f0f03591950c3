//! A Noise core for `Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s`.
//!
//! Two layers:
//! - [`SymmetricState`]: the Noise symmetric state with BLAKE2s-256 as `HASH`, HMAC-BLAKE2s
//!   HKDF, and ChaCha20-Poly1305 with the 4-zero-byte + 64-bit little-endian counter nonce.
//! - [`Ikpsk2`]: the IKpsk2 message pattern on top of it, cut into the steps an
//!   implementation needs to stop between (a responder must learn the initiator's static key
//!   before it can pick the peer state holding the static-static DH and the psk):
//!
//! ```text
//!   <- s
//!   ...
//!   -> e, es, s, ss      write_initiation / read_initiation_static + read_initiation_payload
//!   <- e, ee, se, psk    write_response / read_response
//! ```
//!
//! Keys and ephemerals are always passed in, never generated here, so the published test
//! vector can drive it and the WireGuard layer can feed precomputed static-static DH results.
//! Nothing in this module panics on message bytes: every length is checked and reported as
//! [`NoiseError`].

use std::fmt;

use blake2::digest::{FixedOutput, Mac, Update};
use blake2::{Blake2s256, Digest};
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::ChaCha20Poly1305;
use hmac::SimpleHmac;
use subtle::ConstantTimeEq;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Length of `HASH` output, chaining key and cipher key.
pub const HASH_LEN: usize = 32;
/// Length of an X25519 public key.
pub const DH_LEN: usize = 32;
/// Length of a ChaCha20-Poly1305 tag.
pub const AEAD_TAG_LEN: usize = 16;
/// Protocol name of the pattern this module implements.
pub const PROTOCOL_NAME: &[u8] = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";

/// Why a Noise operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoiseError {
    /// A message or output buffer has the wrong size for this step.
    Length,
    /// The AEAD tag did not authenticate the ciphertext under the current key and hash.
    Decrypt,
    /// A Diffie-Hellman result was all zeros: the peer sent a low-order point.
    WeakKey,
    /// The cipher nonce reached its reserved maximum.
    NonceExhausted,
}

veil_dataplane::fixed_messages!(NoiseError {
    Length => "noise message or buffer has the wrong length",
    Decrypt => "noise message failed authentication",
    WeakKey => "diffie-hellman produced a low-order (all-zero) result",
    NonceExhausted => "noise cipher nonce exhausted",
});

/// `HASH(a || b || ...)` with BLAKE2s-256.
pub fn hash(parts: &[&[u8]]) -> [u8; HASH_LEN] {
    let mut h = Blake2s256::new();
    for p in parts {
        Digest::update(&mut h, p);
    }
    h.finalize().into()
}

type HmacBlake2s = SimpleHmac<Blake2s256>;

fn hmac(key: &[u8], parts: &[&[u8]]) -> Zeroizing<[u8; HASH_LEN]> {
    // SimpleHmac accepts keys of any length; ours are always 32 bytes.
    let mut out = Zeroizing::new([0u8; HASH_LEN]);
    if let Ok(mut m) = <HmacBlake2s as KeyInit>::new_from_slice(key) {
        for p in parts {
            Update::update(&mut m, p);
        }
        out.copy_from_slice(&m.finalize_fixed());
    }
    out
}

/// The Noise HKDF with two outputs: `(out1, out2)`.
pub fn hkdf2(
    ck: &[u8; HASH_LEN],
    ikm: &[u8],
) -> (Zeroizing<[u8; HASH_LEN]>, Zeroizing<[u8; HASH_LEN]>) {
    let temp = hmac(ck, &[ikm]);
    let o1 = hmac(&*temp, &[&[1]]);
    let o2 = hmac(&*temp, &[&*o1, &[2]]);
    (o1, o2)
}

/// The Noise HKDF with three outputs.
#[allow(clippy::type_complexity)]
pub fn hkdf3(
    ck: &[u8; HASH_LEN],
    ikm: &[u8],
) -> (
    Zeroizing<[u8; HASH_LEN]>,
    Zeroizing<[u8; HASH_LEN]>,
    Zeroizing<[u8; HASH_LEN]>,
) {
    let temp = hmac(ck, &[ikm]);
    let o1 = hmac(&*temp, &[&[1]]);
    let o2 = hmac(&*temp, &[&*o1, &[2]]);
    let o3 = hmac(&*temp, &[&*o2, &[3]]);
    (o1, o2, o3)
}

/// The Noise HKDF with one output (WireGuard's `KDF1`).
pub fn hkdf1(ck: &[u8; HASH_LEN], ikm: &[u8]) -> Zeroizing<[u8; HASH_LEN]> {
    let temp = hmac(ck, &[ikm]);
    hmac(&*temp, &[&[1]])
}

/// Keyed BLAKE2s with a 16-byte output (WireGuard's `MAC`), keyed with up to 32 bytes.
pub fn mac16(key: &[u8], parts: &[&[u8]]) -> [u8; 16] {
    type Blake2sMac16 = blake2::Blake2sMac<blake2::digest::consts::U16>;
    let mut out = [0u8; 16];
    // Only keys above 32 bytes are refused, and every caller passes 16 or 32.
    if let Ok(mut m) = <Blake2sMac16 as KeyInit>::new_from_slice(key) {
        for p in parts {
            Mac::update(&mut m, p);
        }
        out.copy_from_slice(&m.finalize_fixed());
    }
    out
}

/// The ChaCha20-Poly1305 nonce Noise uses: 4 zero bytes and the little-endian counter.
fn nonce(n: u64) -> [u8; 12] {
    let mut out = [0u8; 12];
    out[4..].copy_from_slice(&n.to_le_bytes());
    out
}

/// Seal `out[..len - 16]` in place and write the tag into the last 16 bytes.
fn seal(key: &[u8; 32], n: u64, ad: &[u8], out: &mut [u8]) -> Result<(), NoiseError> {
    let split = out
        .len()
        .checked_sub(AEAD_TAG_LEN)
        .ok_or(NoiseError::Length)?;
    let (data, tag_out) = out.split_at_mut(split);
    let cipher = ChaCha20Poly1305::new(key.into());
    let tag = cipher
        .encrypt_in_place_detached(&nonce(n).into(), ad, data)
        .map_err(|_| NoiseError::Length)?;
    tag_out.copy_from_slice(&tag);
    Ok(())
}

/// Open `ciphertext` (data || tag) into `out`, which must be exactly 16 bytes shorter.
fn open(
    key: &[u8; 32],
    n: u64,
    ad: &[u8],
    ciphertext: &[u8],
    out: &mut [u8],
) -> Result<(), NoiseError> {
    let split = ciphertext
        .len()
        .checked_sub(AEAD_TAG_LEN)
        .ok_or(NoiseError::Length)?;
    if out.len() != split {
        return Err(NoiseError::Length);
    }
    let (data, tag) = ciphertext.split_at(split);
    out.copy_from_slice(data);
    let cipher = ChaCha20Poly1305::new(key.into());
    if cipher
        .decrypt_in_place_detached(&nonce(n).into(), ad, out, tag.into())
        .is_err()
    {
        // Do not leave unauthenticated plaintext behind for a caller that ignores the error.
        out.zeroize();
        return Err(NoiseError::Decrypt);
    }
    Ok(())
}

/// X25519, refusing the all-zero result of a low-order point (as the kernel and
/// wireguard-go do), so a forged key cannot force a known shared secret.
pub fn dh(
    secret: &StaticSecret,
    public: &[u8; DH_LEN],
) -> Result<Zeroizing<[u8; DH_LEN]>, NoiseError> {
    let shared = secret.diffie_hellman(&PublicKey::from(*public));
    if !shared.was_contributory() {
        return Err(NoiseError::WeakKey);
    }
    Ok(Zeroizing::new(shared.to_bytes()))
}

fn is_zero(b: &[u8; 32]) -> bool {
    bool::from(b.ct_eq(&[0u8; 32]))
}

/// The Noise symmetric state: chaining key `ck`, handshake hash `h` and the cipher state
/// (`k`, `n`). Wiped on drop; `Debug` shows only whether a key is set.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SymmetricState {
    ck: [u8; HASH_LEN],
    h: [u8; HASH_LEN],
    k: Option<[u8; 32]>,
    n: u64,
}

impl fmt::Debug for SymmetricState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SymmetricState")
            .field("has_key", &self.k.is_some())
            .field("n", &self.n)
            .finish_non_exhaustive()
    }
}

impl SymmetricState {
    /// `InitializeSymmetric(protocol_name)`: names up to 32 bytes are zero-padded, longer ones
    /// hashed; `ck = h`; no cipher key yet.
    pub fn new(protocol_name: &[u8]) -> Self {
        let mut h = [0u8; HASH_LEN];
        match protocol_name.len() {
            0..=HASH_LEN => {
                if let Some(dst) = h.get_mut(..protocol_name.len()) {
                    dst.copy_from_slice(protocol_name);
                }
            }
            _ => h = hash(&[protocol_name]),
        }
        Self {
            ck: h,
            h,
            k: None,
            n: 0,
        }
    }

    /// `MixHash(data)`: `h = HASH(h || data)`.
    pub fn mix_hash(&mut self, data: &[u8]) {
        self.h = hash(&[&self.h, data]);
    }

    /// `MixKey(ikm)`: `ck, k = HKDF(ck, ikm, 2)`, nonce reset.
    pub fn mix_key(&mut self, ikm: &[u8]) {
        let (ck, k) = hkdf2(&self.ck, ikm);
        self.ck = *ck;
        self.k = Some(*k);
        self.n = 0;
    }

    /// `MixKeyAndHash(ikm)`: `ck, t, k = HKDF(ck, ikm, 3)`, `MixHash(t)`, nonce reset.
    pub fn mix_key_and_hash(&mut self, ikm: &[u8]) {
        let (ck, t, k) = hkdf3(&self.ck, ikm);
        self.ck = *ck;
        self.mix_hash(&*t);
        self.k = Some(*k);
        self.n = 0;
    }

    /// `EncryptAndHash(plaintext)` into `out`, which must be `plaintext.len() + 16` bytes once a
    /// key is set (exactly `plaintext.len()` before). The ciphertext is mixed into `h`.
    pub fn encrypt_and_hash(&mut self, plaintext: &[u8], out: &mut [u8]) -> Result<(), NoiseError> {
        match self.k {
            None => {
                if out.len() != plaintext.len() {
                    return Err(NoiseError::Length);
                }
                out.copy_from_slice(plaintext);
            }
            Some(_) => {
                if out.len() != plaintext.len().saturating_add(AEAD_TAG_LEN) {
                    return Err(NoiseError::Length);
                }
                let n = self.next_nonce()?;
                let (data, _) = out.split_at_mut(plaintext.len());
                data.copy_from_slice(plaintext);
                // Borrow the key rather than copy it: copies on the stack are not wiped.
                if let Some(k) = &self.k {
                    seal(k, n, &self.h, out)?;
                }
            }
        }
        self.mix_hash(out);
        Ok(())
    }

    /// `DecryptAndHash(ciphertext)` into `out`, which must be `ciphertext.len() - 16` bytes once
    /// a key is set. On failure the state is unchanged and `out` is zeroed.
    pub fn decrypt_and_hash(
        &mut self,
        ciphertext: &[u8],
        out: &mut [u8],
    ) -> Result<(), NoiseError> {
        match &self.k {
            None => {
                if out.len() != ciphertext.len() {
                    return Err(NoiseError::Length);
                }
                out.copy_from_slice(ciphertext);
            }
            Some(k) => {
                // Check the nonce before decrypting but advance it only after success.
                let n = self.n;
                if n == u64::MAX {
                    return Err(NoiseError::NonceExhausted);
                }
                open(k, n, &self.h, ciphertext, out)?;
                self.n = n.wrapping_add(1);
            }
        }
        self.mix_hash(ciphertext);
        Ok(())
    }

    fn next_nonce(&mut self) -> Result<u64, NoiseError> {
        // 2^64 - 1 is reserved by the Noise spec.
        let n = self.n;
        if n == u64::MAX {
            return Err(NoiseError::NonceExhausted);
        }
        self.n = n.wrapping_add(1);
        Ok(n)
    }

    /// The handshake hash `h`, for channel binding and for the vector tests.
    pub fn handshake_hash(&self) -> &[u8; HASH_LEN] {
        &self.h
    }

    /// `Split()`: the two transport keys, initiator-to-responder first.
    pub fn split(&self) -> TransportKeys {
        let (i2r, r2i) = hkdf2(&self.ck, &[]);
        TransportKeys {
            initiator_to_responder: i2r,
            responder_to_initiator: r2i,
        }
    }
}

/// The two transport keys a completed handshake yields. Wiped on drop.
pub struct TransportKeys {
    /// Key of the initiator's sending direction (WireGuard's `T_send` of the initiator).
    pub initiator_to_responder: Zeroizing<[u8; 32]>,
    /// Key of the responder's sending direction.
    pub responder_to_initiator: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for TransportKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TransportKeys(<secret>)")
    }
}

/// Size of the first IKpsk2 message for a payload of `payload_len` bytes.
pub const fn initiation_len(payload_len: usize) -> usize {
    DH_LEN + DH_LEN + AEAD_TAG_LEN + payload_len + AEAD_TAG_LEN
}

/// Size of the second IKpsk2 message for a payload of `payload_len` bytes.
pub const fn response_len(payload_len: usize) -> usize {
    DH_LEN + payload_len + AEAD_TAG_LEN
}

/// Bytes of the first message up to the end of the encrypted static key.
pub const INITIATION_STATIC_END: usize = DH_LEN + DH_LEN + AEAD_TAG_LEN;

/// What reading the first half of an initiation learned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitiatorKeys {
    /// The initiator's ephemeral public key (`re` for the responder).
    pub ephemeral: [u8; DH_LEN],
    /// The initiator's static public key, authenticated only once the payload decrypts.
    pub static_public: [u8; DH_LEN],
}

/// Handshake state of one side of `IKpsk2`: a [`SymmetricState`] plus the steps of the pattern.
///
/// The role is implied by the steps called; callers keep the order
/// (`write_initiation` then `read_response` on the initiator; `read_initiation_static`,
/// `read_initiation_payload`, `write_response` on the responder). The WireGuard layer enforces
/// that order with its own types.
#[derive(Clone, Debug)]
pub struct Ikpsk2 {
    sym: SymmetricState,
}

impl Ikpsk2 {
    /// Start either side: `InitializeSymmetric(protocol_name)`, `MixHash(prologue)`, then the
    /// pre-message `<- s`: `MixHash(responder_static)`.
    pub fn new(protocol_name: &[u8], prologue: &[u8], responder_static: &[u8; DH_LEN]) -> Self {
        let mut sym = SymmetricState::new(protocol_name);
        sym.mix_hash(prologue);
        sym.mix_hash(responder_static);
        Self { sym }
    }

    /// The symmetric state (for the handshake hash, and for splitting after the last message).
    pub fn symmetric(&self) -> &SymmetricState {
        &self.sym
    }

    /// Token `e` in a psk handshake: `MixHash(e.pub)` and also `MixKey(e.pub)`.
    fn mix_ephemeral(&mut self, e_pub: &[u8; DH_LEN]) {
        self.sym.mix_hash(e_pub);
        self.sym.mix_key(e_pub);
    }

    /// Initiator, `-> e, es, s, ss` with `payload`, written to `out`
    /// (exactly [`initiation_len`]`(payload.len())` bytes).
    ///
    /// `ss` is `DH(s, rs)`, which callers may precompute; it must not be all zeros.
    pub fn write_initiation(
        &mut self,
        e: &StaticSecret,
        s_public: &[u8; DH_LEN],
        rs: &[u8; DH_LEN],
        ss: &[u8; DH_LEN],
        payload: &[u8],
        out: &mut [u8],
    ) -> Result<(), NoiseError> {
        if out.len() != initiation_len(payload.len()) {
            return Err(NoiseError::Length);
        }
        if is_zero(ss) {
            return Err(NoiseError::WeakKey);
        }
        let (e_out, rest) = out.split_at_mut(DH_LEN);
        let (s_out, p_out) = rest.split_at_mut(DH_LEN + AEAD_TAG_LEN);
        let e_pub = PublicKey::from(e).to_bytes();
        e_out.copy_from_slice(&e_pub);
        self.mix_ephemeral(&e_pub);
        self.sym.mix_key(&*dh(e, rs)?);
        self.sym.encrypt_and_hash(s_public, s_out)?;
        self.sym.mix_key(ss);
        self.sym.encrypt_and_hash(payload, p_out)
    }

    /// Responder, first half of `-> e, es, s, ss`: reads `e`, `es`, `s` from the first
    /// [`INITIATION_STATIC_END`] bytes of `msg` and returns the initiator's keys. The static key
    /// is not authenticated until [`Ikpsk2::read_initiation_payload`] succeeds.
    pub fn read_initiation_static(
        &mut self,
        s: &StaticSecret,
        msg: &[u8],
    ) -> Result<InitiatorKeys, NoiseError> {
        let head: &[u8; INITIATION_STATIC_END] = msg
            .get(..INITIATION_STATIC_END)
            .and_then(|b| b.try_into().ok())
            .ok_or(NoiseError::Length)?;
        let (e_in, s_in) = head.split_at(DH_LEN);
        let mut re = [0u8; DH_LEN];
        re.copy_from_slice(e_in);
        self.mix_ephemeral(&re);
        self.sym.mix_key(&*dh(s, &re)?);
        let mut rs = [0u8; DH_LEN];
        self.sym.decrypt_and_hash(s_in, &mut rs)?;
        Ok(InitiatorKeys {
            ephemeral: re,
            static_public: rs,
        })
    }

    /// Responder, second half: `ss` (pass `DH(s, rs)`) and the payload, the bytes of the
    /// message after [`INITIATION_STATIC_END`]. The payload goes to `out`
    /// (`ciphertext.len() - 16` bytes).
    pub fn read_initiation_payload(
        &mut self,
        ss: &[u8; DH_LEN],
        ciphertext: &[u8],
        out: &mut [u8],
    ) -> Result<(), NoiseError> {
        if is_zero(ss) {
            return Err(NoiseError::WeakKey);
        }
        self.sym.mix_key(ss);
        self.sym.decrypt_and_hash(ciphertext, out)
    }

    /// Responder, `<- e, ee, se, psk` with `payload`, written to `out`
    /// (exactly [`response_len`]`(payload.len())` bytes).
    pub fn write_response(
        &mut self,
        e: &StaticSecret,
        initiator: &InitiatorKeys,
        psk: &[u8; 32],
        payload: &[u8],
        out: &mut [u8],
    ) -> Result<(), NoiseError> {
        if out.len() != response_len(payload.len()) {
            return Err(NoiseError::Length);
        }
        let (e_out, p_out) = out.split_at_mut(DH_LEN);
        let e_pub = PublicKey::from(e).to_bytes();
        e_out.copy_from_slice(&e_pub);
        self.mix_ephemeral(&e_pub);
        self.sym.mix_key(&*dh(e, &initiator.ephemeral)?);
        self.sym.mix_key(&*dh(e, &initiator.static_public)?);
        self.sym.mix_key_and_hash(psk);
        self.sym.encrypt_and_hash(payload, p_out)
    }

    /// Initiator, reads `<- e, ee, se, psk`; the payload goes to `out`
    /// (`msg.len() - 48` bytes). On error `self` may be partly advanced: callers work on a
    /// copy so a forged response does not spoil the pending handshake.
    pub fn read_response(
        &mut self,
        e: &StaticSecret,
        s: &StaticSecret,
        psk: &[u8; 32],
        msg: &[u8],
        out: &mut [u8],
    ) -> Result<(), NoiseError> {
        if msg.len() < response_len(0) {
            return Err(NoiseError::Length);
        }
        let (e_in, p_in) = msg.split_at(DH_LEN);
        let mut re = [0u8; DH_LEN];
        re.copy_from_slice(e_in);
        self.mix_ephemeral(&re);
        self.sym.mix_key(&*dh(e, &re)?);
        self.sym.mix_key(&*dh(s, &re)?);
        self.sym.mix_key_and_hash(psk);
        self.sym.decrypt_and_hash(p_in, out)
    }

    /// The handshake hash so far.
    pub fn handshake_hash(&self) -> &[u8; HASH_LEN] {
        self.sym.handshake_hash()
    }

    /// `Split()` after the last message.
    pub fn split(&self) -> TransportKeys {
        self.sym.split()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn short_names_are_padded_long_ones_hashed() {
        let s = SymmetricState::new(b"Noise_NN");
        assert_eq!(&s.handshake_hash()[..8], b"Noise_NN");
        assert_eq!(&s.handshake_hash()[8..], &[0; 24]);
        let s = SymmetricState::new(PROTOCOL_NAME);
        assert_eq!(s.handshake_hash(), &hash(&[PROTOCOL_NAME]));
    }

    #[test]
    fn no_key_means_plaintext() {
        let mut a = SymmetricState::new(b"x");
        let mut out = [0u8; 3];
        a.encrypt_and_hash(b"abc", &mut out).unwrap();
        assert_eq!(&out, b"abc");
        let mut wrong = [0u8; 19];
        assert_eq!(
            a.encrypt_and_hash(b"abc", &mut wrong),
            Err(NoiseError::Length)
        );
    }

    #[test]
    fn decrypt_failure_leaves_state_and_wipes_output() {
        let mut a = SymmetricState::new(b"x");
        a.mix_key(b"key material");
        let mut b = a.clone();
        let mut ct = [0u8; 21];
        a.encrypt_and_hash(b"hello", &mut ct).unwrap();
        let mut bad = ct;
        bad[0] ^= 1;
        let mut out = [0xAAu8; 5];
        assert_eq!(b.decrypt_and_hash(&bad, &mut out), Err(NoiseError::Decrypt));
        assert_eq!(out, [0; 5]);
        b.decrypt_and_hash(&ct, &mut out).unwrap();
        assert_eq!(&out, b"hello");
        assert_eq!(a.handshake_hash(), b.handshake_hash());
        assert_eq!(
            b.decrypt_and_hash(&ct[..10], &mut out),
            Err(NoiseError::Length)
        );
        assert_eq!(
            b.decrypt_and_hash(&ct[..3], &mut out),
            Err(NoiseError::Length)
        );
    }

    #[test]
    fn low_order_points_are_refused() {
        let s = StaticSecret::from([7u8; 32]);
        assert_eq!(dh(&s, &[0u8; 32]).unwrap_err(), NoiseError::WeakKey);
        let mut one = [0u8; 32];
        one[0] = 1;
        assert_eq!(dh(&s, &one).unwrap_err(), NoiseError::WeakKey);
        // A point of order 8.
        let p8: [u8; 32] = [
            0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f,
            0xc4, 0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16,
            0x5f, 0x49, 0xb8, 0x00,
        ];
        assert_eq!(dh(&s, &p8).unwrap_err(), NoiseError::WeakKey);
        assert!(dh(
            &s,
            &PublicKey::from(&StaticSecret::from([9u8; 32])).to_bytes()
        )
        .is_ok());
    }

    #[test]
    fn hkdf_outputs_chain() {
        let ck = [3u8; 32];
        let (a1, a2) = hkdf2(&ck, b"ikm");
        let (b1, b2, _b3) = hkdf3(&ck, b"ikm");
        assert_eq!(*a1, *b1);
        assert_eq!(*a2, *b2);
        assert_eq!(*hkdf1(&ck, b"ikm"), *a1);
        assert_ne!(*a1, *a2);
    }
}
