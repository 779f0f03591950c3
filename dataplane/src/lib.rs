//! veil-dataplane: the per-packet half of veil.
//!
//! Wire views ([`wire`]), transport crypto ([`crypto`]), the replay window
//! ([`replay`]), and the syscall layer ([`sys`], the only module allowed to use
//! `unsafe`). Nothing here reads the clock on its own initiative or logs on the
//! per-packet path; callers pass `now` and read counters.
#![deny(unsafe_code)]

pub mod batch;
pub mod baton;
pub mod bql;
pub mod counters;
pub mod crypto;
pub mod doorbell;
pub mod error_class;
pub mod fanout;
pub mod fault;
pub mod io;
pub mod link;
#[cfg(all(test, feature = "loom"))]
mod loom_models;
pub mod offload;
pub mod pipeline;
pub mod priority;
pub mod ratelimit;
pub mod replay;
pub mod role;
pub mod route;
pub mod sampler;
pub mod source_filter;
pub mod stage;
mod sync;
#[allow(unsafe_code)]
pub mod sys;
#[cfg(debug_assertions)]
pub mod test_hooks;
pub mod timing;
pub mod wire;

pub use crypto::{Backend, ChaChaPoly, Cipher, Keypair, OpenError, SealError, TransportAead};
pub use replay::ReplayWindow;

/// Send a message with this counter, then ask for a new handshake (WireGuard `REKEY_AFTER_MESSAGES`).
pub const REKEY_AFTER_MESSAGES: u64 = 1 << 60;
/// Never send or accept a counter at or above this (WireGuard `REJECT_AFTER_MESSAGES`).
pub const REJECT_AFTER_MESSAGES: u64 = u64::MAX - (1 << 13);
