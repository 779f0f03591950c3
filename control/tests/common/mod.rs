//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test binary uses a different subset

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand_core::{CryptoRng, RngCore};

pub mod device;
use veil_control::{PeerHandshake, StaticIdentity};

/// Deterministic SplitMix64 stream. Marked `CryptoRng` only so the API accepts it: tests
/// need reproducible "randomness", not secrecy.
#[derive(Debug, Clone)]
pub struct TestRng(pub u64);

impl RngCore for TestRng {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for TestRng {}

/// A client (initiator) and a server (responder) that know each other.
pub struct Pair {
    pub client: StaticIdentity,
    pub server: StaticIdentity,
    /// The client's state for the server.
    pub at_client: PeerHandshake,
    /// The server's state for the client.
    pub at_server: PeerHandshake,
}

impl Pair {
    pub fn new(psk: Option<[u8; 32]>) -> Self {
        let client = StaticIdentity::from_secret([0x11; 32]);
        let server = StaticIdentity::from_secret([0x22; 32]);
        let at_client = PeerHandshake::new(&client, *server.public_key(), psk);
        let at_server = PeerHandshake::new(&server, *client.public_key(), psk);
        Self {
            client,
            server,
            at_client,
            at_server,
        }
    }
}

/// A fixed wall clock, `secs` after a date in 2024.
pub fn wall(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

pub fn client_addr() -> SocketAddr {
    "198.51.100.7:40000".parse().expect("literal address")
}

pub fn later(t: Instant, secs: u64) -> Instant {
    t + Duration::from_secs(secs)
}
