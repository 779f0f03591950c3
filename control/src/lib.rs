//! veil-control: the control plane of veil.
//!
//! The Noise core ([`noise`]), WireGuard's handshake and cookies on top of it
//! ([`handshake`]), TAI64N timestamps ([`tai64n`]) and the control thread's state
//! machine ([`device`]): peer table, handshake dispatch and the WireGuard timers.
//! Everything here is sans-IO: it takes `now`, the wall clock and randomness as
//! arguments and returns bytes, keypairs and commands.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod breaker;
pub mod degradation;
pub mod device;
pub mod handoff;
pub mod handshake;
pub mod migration;
pub mod noise;
pub mod session;
pub mod tai64n;

pub use handshake::{
    consume_initiation, CookieChecker, HandshakeError, InitiationOutcome, PeerHandshake,
    StaticIdentity, ValidInitiation,
};
pub use tai64n::Tai64n;
