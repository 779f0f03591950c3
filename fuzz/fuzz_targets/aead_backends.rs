//! Every AEAD backend against the others on fuzzer-chosen keys, counters, plaintexts and
//! flipped bits: identical ciphertext and tag, each other's output opened, every flip rejected
//! (`veil_dataplane::crypto::compare_backends`, the check the differential unit test runs).
#![no_main]

use libfuzzer_sys::fuzz_target;
use veil_dataplane::crypto::compare_backends;

// Input: 32 bytes key, 8 bytes counter, 2 bytes flipped bit (little-endian, modulo the message
// length in bits), the rest the plaintext (libFuzzer's -max_len bounds it; 65535 is the limit
// the unit test uses too).
fuzz_target!(|data: &[u8]| {
    let Some((head, plain)) = data.split_first_chunk::<42>() else {
        return;
    };
    let plain = &plain[..plain.len().min(65535)];
    let mut key = [0u8; 32];
    key.copy_from_slice(&head[..32]);
    let mut counter = [0u8; 8];
    counter.copy_from_slice(&head[32..40]);
    let flip = usize::from(u16::from_le_bytes([head[40], head[41]]));
    if let Err(e) = compare_backends(&key, u64::from_le_bytes(counter), plain, &[flip]) {
        panic!("{e}");
    }
});
