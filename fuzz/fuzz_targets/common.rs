//! What several targets share: a reproducible random source and an in-memory client stream.
#![allow(dead_code)]

use std::io::{self, Read, Write};

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
