//! The ChaCha20-Poly1305 libraries behind the [`TransportAead`] seam, and the run-time choice
//! between them.
//!
//! Three libraries are built into every binary: RustCrypto `chacha20poly1305` (portable Rust),
//! `ring` and `aws-lc-rs` (both with assembly). Which one seals new keypairs is a process-wide
//! choice made once at start-up ([`install`]); `auto` picks the fastest by timing each on this
//! CPU ([`Backend::fastest`]). A keypair keeps the backend it was built with.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use chacha20poly1305::aead::{AeadInPlace, KeyInit};

use super::{OpenError, TransportAead};
use crate::wire::TAG_LEN;

/// A ChaCha20-Poly1305 library veil can seal transport data with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// RustCrypto `chacha20poly1305` (portable Rust, SIMD where the CPU has it).
    RustCrypto,
    /// `ring` (BoringSSL's assembly).
    Ring,
    /// `aws-lc-rs` (AWS-LC's assembly).
    AwsLc,
}

/// Every backend, in the order they are listed and measured.
pub const BACKENDS: [Backend; 3] = [Backend::RustCrypto, Backend::Ring, Backend::AwsLc];

/// What the operator asked for: one backend, or the fastest here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// Time every backend at start-up and use the fastest.
    #[default]
    Auto,
    /// Use this backend.
    Fixed(Backend),
}

/// The name is not one of `auto`, `ring`, `aws-lc`, `rustcrypto`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownBackend(pub String);

impl fmt::Display for UnknownBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "'{}' is not an AEAD backend: expected auto, ring, aws-lc or rustcrypto",
            self.0
        )
    }
}

impl std::error::Error for UnknownBackend {}

impl Backend {
    /// The name used in config, flags, logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Backend::RustCrypto => "rustcrypto",
            Backend::Ring => "ring",
            Backend::AwsLc => "aws-lc",
        }
    }

    /// The backend that seals keypairs built from now on.
    pub fn current() -> Backend {
        from_code(CURRENT.load(Ordering::Relaxed))
    }

    /// The backend that seals and opens 1400-byte datagrams fastest on this CPU.
    ///
    /// Each backend seals and opens a batch of 1400-byte buffers, interleaved over a few rounds
    /// so a burst of load elsewhere hits all of them; the best round of each is compared. Costs
    /// a few milliseconds, once at start-up.
    pub fn fastest() -> Backend {
        let mut best = [Duration::MAX; BACKENDS.len()];
        let mut buf = vec![0x5au8; 1400];
        for _round in 0..ROUNDS {
            for (slot, &backend) in best.iter_mut().zip(BACKENDS.iter()) {
                let cipher = Cipher::with_backend(backend, &[0x42; 32]);
                let start = Instant::now();
                for counter in 0..BATCH {
                    let tag = cipher.seal(counter, &mut buf);
                    // The result only feeds the timing; a failure would show as a slow backend.
                    let _ = cipher.open(counter, &mut buf, &tag);
                }
                *slot = (*slot).min(start.elapsed());
            }
        }
        let mut winner = 0;
        for (i, t) in best.iter().enumerate() {
            if *t < best[winner] {
                winner = i;
            }
        }
        BACKENDS[winner]
    }
}

const ROUNDS: usize = 5;
const BATCH: u64 = 32;

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Backend {
    type Err = UnknownBackend;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BACKENDS
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| UnknownBackend(s.to_owned()))
    }
}

impl BackendChoice {
    /// The backend this choice means on this machine (`auto` measures).
    pub fn resolve(self) -> Backend {
        match self {
            BackendChoice::Auto => Backend::fastest(),
            BackendChoice::Fixed(b) => b,
        }
    }
}

impl fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendChoice::Auto => f.write_str("auto"),
            BackendChoice::Fixed(b) => b.fmt(f),
        }
    }
}

impl FromStr for BackendChoice {
    type Err = UnknownBackend;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "auto" {
            Ok(BackendChoice::Auto)
        } else {
            s.parse().map(BackendChoice::Fixed)
        }
    }
}

/// The backend before [`install`] runs (library users, tests): the fastest in perf/README.md's
/// AEAD table. `veil up` installs what `[threading] aead` says (`auto`: measured at start-up).
const DEFAULT: Backend = Backend::AwsLc;

static CURRENT: AtomicU8 = AtomicU8::new(code(DEFAULT));

const fn code(b: Backend) -> u8 {
    match b {
        Backend::RustCrypto => 0,
        Backend::Ring => 1,
        Backend::AwsLc => 2,
    }
}

fn from_code(c: u8) -> Backend {
    match c {
        0 => Backend::RustCrypto,
        2 => Backend::AwsLc,
        _ => Backend::Ring,
    }
}

/// Make `backend` seal every keypair built from now on. Called once at start-up, before the
/// first handshake; keypairs that exist already keep theirs.
pub fn install(backend: Backend) {
    CURRENT.store(code(backend), Ordering::Relaxed);
}

/// `impl TransportAead for $ty` from the bodies of its three methods: the trait's signatures are
/// spelled here once for every backend and for [`Cipher`]. Each body names its receiver
/// (`|aead, …|`) because a macro's caller cannot write `self`.
macro_rules! impl_transport_aead {
    (
        $ty:ty,
        new: |$key:ident| $new:expr,
        seal: |$s:ident, $nonce:ident, $aad:ident, $data:ident| $seal:expr,
        open: |$o:ident, $o_nonce:ident, $o_aad:ident, $o_data:ident, $o_tag:ident| $open:expr $(,)?
    ) => {
        impl TransportAead for $ty {
            fn new($key: &[u8; 32]) -> Self {
                $new
            }

            fn seal_with(&self, $nonce: &[u8; 12], $aad: &[u8], $data: &mut [u8]) -> [u8; TAG_LEN] {
                let $s = self;
                $seal
            }

            fn open_with(
                &self,
                $o_nonce: &[u8; 12],
                $o_aad: &[u8],
                $o_data: &mut [u8],
                $o_tag: &[u8; TAG_LEN],
            ) -> Result<(), OpenError> {
                let $o = self;
                $open
            }
        }
    };
}

/// RustCrypto `chacha20poly1305`. The crate wipes its key copy on drop.
pub struct ChaChaPoly(chacha20poly1305::ChaCha20Poly1305);

impl fmt::Debug for ChaChaPoly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChaChaPoly(<key>)")
    }
}

impl_transport_aead!(
    ChaChaPoly,
    new: |key| Self(chacha20poly1305::ChaCha20Poly1305::new(key.into())),
    // Only fails for payloads above 2^38 bytes, which a datagram cannot be.
    seal: |aead, nonce, aad, data| match aead.0.encrypt_in_place_detached(nonce.into(), aad, data) {
        Ok(tag) => tag.into(),
        Err(_) => [0; TAG_LEN],
    },
    open: |aead, nonce, aad, data, tag| {
        let opened = aead.0.decrypt_in_place_detached(nonce.into(), aad, data, tag.into());
        opened.map_err(|_| OpenError::Authentication)
    },
);

/// A backend over a library with ring's `aead` API (ring itself, and aws-lc-rs which mirrors
/// it): `LessSafeKey`, `seal_in_place_separate_tag`, and the library's own
/// `open_in_place_separate_tag` call (the one place their signatures differ).
macro_rules! ring_api_backend {
    (
        $(#[$doc:meta])*
        $name:ident, $lib:ident,
        open: |$key:ident, $nonce:ident, $aad:ident, $tag:ident, $data:ident| $open:expr
    ) => {
        $(#[$doc])*
        pub struct $name($lib::aead::LessSafeKey);

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "(<key>)"))
            }
        }

        impl_transport_aead!(
            $name,
            new: |key| {
                use $lib::aead::{LessSafeKey, UnboundKey, CHACHA20_POLY1305};
                // Refused only for keys of the wrong length, which the type rules out.
                #[allow(clippy::expect_used)]
                let key = UnboundKey::new(&CHACHA20_POLY1305, key).expect("32-byte ChaCha20 key");
                Self(LessSafeKey::new(key))
            },
            seal: |aead, nonce, aad, data| {
                use $lib::aead::{Aad, Nonce};
                let nonce = Nonce::assume_unique_for_key(*nonce);
                // Only fails for payloads above the library's limit (hundreds of GiB), which a
                // datagram cannot be.
                match aead.0.seal_in_place_separate_tag(nonce, Aad::from(aad), data) {
                    Ok(tag) => <[u8; TAG_LEN]>::try_from(tag.as_ref()).unwrap_or([0; TAG_LEN]),
                    Err(_) => [0; TAG_LEN],
                }
            },
            open: |aead, nonce, aad, data, tag| {
                use $lib::aead::{Aad, Nonce};
                let ($key, $nonce, $aad, $tag, $data) =
                    (&aead.0, Nonce::assume_unique_for_key(*nonce), Aad::from(aad), tag, data);
                $open.map(|_| ()).map_err(|_| OpenError::Authentication)
            },
        );
    };
}

ring_api_backend!(
    /// `ring`'s ChaCha20-Poly1305. ring keeps the key inside `LessSafeKey` and does not wipe it
    /// on drop, and offers no way to (docs/OPERATIONS.md).
    RingChaChaPoly, ring,
    open: |key, nonce, aad, tag, data| {
        key.open_in_place_separate_tag(nonce, aad, ring::aead::Tag::from(*tag), data, 0..)
    }
);

ring_api_backend!(
    /// `aws-lc-rs`'s ChaCha20-Poly1305. The key lives in an AWS-LC `EVP_AEAD_CTX`, which
    /// AWS-LC cleanses when it is freed (on drop).
    AwsLcChaChaPoly, aws_lc_rs,
    open: |key, nonce, aad, tag, data| key.open_in_place_separate_tag(nonce, aad, tag, data)
);

/// The AEAD a [`Keypair`](super::Keypair) uses by default: whichever backend was installed when
/// it was built, dispatched per call (one predictable branch per datagram).
// ring's key is the largest; keypairs are few and long-lived, and boxing it would add a pointer
// chase to every datagram.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Cipher {
    /// RustCrypto `chacha20poly1305`.
    RustCrypto(ChaChaPoly),
    /// `ring`.
    Ring(RingChaChaPoly),
    /// `aws-lc-rs`.
    AwsLc(AwsLcChaChaPoly),
}

impl Cipher {
    /// Expand `key` for `backend`, whatever is installed.
    pub fn with_backend(backend: Backend, key: &[u8; 32]) -> Self {
        match backend {
            Backend::RustCrypto => Cipher::RustCrypto(ChaChaPoly::new(key)),
            Backend::Ring => Cipher::Ring(RingChaChaPoly::new(key)),
            Backend::AwsLc => Cipher::AwsLc(AwsLcChaChaPoly::new(key)),
        }
    }

    /// The library behind this cipher.
    pub fn backend(&self) -> Backend {
        match self {
            Cipher::RustCrypto(_) => Backend::RustCrypto,
            Cipher::Ring(_) => Backend::Ring,
            Cipher::AwsLc(_) => Backend::AwsLc,
        }
    }
}

impl_transport_aead!(
    Cipher,
    new: |key| Cipher::with_backend(Backend::current(), key),
    seal: |cipher, nonce, aad, data| match cipher {
        Cipher::RustCrypto(c) => c.seal_with(nonce, aad, data),
        Cipher::Ring(c) => c.seal_with(nonce, aad, data),
        Cipher::AwsLc(c) => c.seal_with(nonce, aad, data),
    },
    open: |cipher, nonce, aad, data, tag| match cipher {
        Cipher::RustCrypto(c) => c.open_with(nonce, aad, data, tag),
        Cipher::Ring(c) => c.open_with(nonce, aad, data, tag),
        Cipher::AwsLc(c) => c.open_with(nonce, aad, data, tag),
    },
);
