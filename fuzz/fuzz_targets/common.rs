//! What several targets share: a reproducible random source, an in-memory client stream and the
//! handshake targets' two peers.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::time::{Duration, Instant, UNIX_EPOCH};

use veil_control::{PeerHandshake, StaticIdentity};

/// Fixed, reproducible "randomness": fuzzing wants determinism, not secrecy.
pub struct FuzzRng(pub u64);

impl rand_core::RngCore for FuzzRng {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for b in dest {
            *b = (self.next_u64() >> 56) as u8;
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl rand_core::CryptoRng for FuzzRng {}

/// A client that sends `input` in pieces of at most `piece` bytes and keeps what it is sent.
pub struct Client<'a> {
    pub input: &'a [u8],
    pub piece: usize,
    pub output: Vec<u8>,
}

impl<'a> Client<'a> {
    pub fn new(input: &'a [u8], piece: usize) -> Self {
        Self {
            input,
            piece: piece.max(1),
            output: Vec::new(),
        }
    }
}

impl Read for Client<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.input.len().min(buf.len()).min(self.piece);
        buf[..n].copy_from_slice(&self.input[..n]);
        self.input = &self.input[n..];
        Ok(n)
    }
}

impl Write for Client<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The handshake targets' peers: a fixed client and server, and the client's initiation to the
/// server, the same every run (fixed keys, time and randomness).
pub struct Peers {
    pub client: StaticIdentity,
    pub server: StaticIdentity,
    pub start: Instant,
    pub initiation: [u8; 148],
}

impl Peers {
    pub fn new() -> Self {
        let client = StaticIdentity::from_secret([0x11; 32]);
        let server = StaticIdentity::from_secret([0x22; 32]);
        let start = Instant::now();
        let mut peers = Self {
            client,
            server,
            start,
            initiation: [0; 148],
        };
        peers.initiation = peers.pending_client().1;
        peers
    }

    /// The client after sending its initiation; returns that initiation too.
    pub fn pending_client(&self) -> (PeerHandshake, [u8; 148]) {
        let wall = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut hs = PeerHandshake::new(&self.client, *self.server.public_key(), None);
        let init = hs
            .create_initiation(&self.client, 7, self.start, wall, &mut FuzzRng(0x33))
            .expect("fixed keys are not low-order");
        (hs, init)
    }
}
