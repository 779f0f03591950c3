//! veil-control: the control plane of veil.
//!
//! So far: the Noise core ([`noise`]), WireGuard's handshake and cookies on top of it
//! ([`handshake`]) and TAI64N timestamps ([`tai64n`]). Everything here is sans-IO: it takes
//! `now`, the wall clock and randomness as arguments and returns bytes and keypairs.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod handshake;
pub mod noise;
pub mod tai64n;

pub use handshake::{
    consume_initiation, CookieChecker, HandshakeError, InitiationOutcome, PeerHandshake,
    StaticIdentity, ValidInitiation,
};
pub use tai64n::Tai64n;
