//! The keypair suite and the RFC 8439 vector, run against every backend; the differential test
//! of all backends against each other.

use proptest::prelude::*;

use super::*;

/// RFC 8439 section 2.8.2 (the AEAD construction with associated data and a non-WireGuard nonce,
/// through `seal_with` / `open_with`).
mod rfc8439 {
    pub const KEY: &str = "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f";
    pub const NONCE: &str = "070000004041424344454647";
    pub const AAD: &str = "50515253c0c1c2c3c4c5c6c7";
    pub const PLAINTEXT: &[u8] = b"Ladies and Gentlemen of the class of '99: If I could offer \
        you only one tip for the future, sunscreen would be it.";
    pub const CIPHERTEXT: &str = "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d6\
        3dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b3692ddbd7f2d778b8c9803aee3\
        28091b58fab324e4fad675945585808b4831d7bc3ff4def08e4b7a9de576d26586cec64b6116";
    pub const TAG: &str = "1ae10b594f09e26a7e902ecbd0600691";
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn rfc8439_vector<A: TransportAead>() {
    use rfc8439::*;
    let key: [u8; 32] = hex(KEY).try_into().expect("key");
    let nonce: [u8; 12] = hex(NONCE).try_into().expect("nonce");
    let (aad, expected, tag) = (hex(AAD), hex(CIPHERTEXT), hex(TAG));
    let aead = A::new(&key);
    let mut data = PLAINTEXT.to_vec();
    let got = aead.seal_with(&nonce, &aad, &mut data);
    assert_eq!(data, expected);
    assert_eq!(got.as_slice(), tag.as_slice());
    aead.open_with(&nonce, &aad, &mut data, &got)
        .expect("vector opens");
    assert_eq!(data, PLAINTEXT);
    // The associated data is authenticated.
    let mut again = expected.clone();
    assert_eq!(
        aead.open_with(&nonce, &aad[1..], &mut again, &got),
        Err(OpenError::Authentication)
    );
}

fn pair<A: TransportAead>() -> (Keypair<A>, Keypair<A>) {
    let now = Instant::now();
    let a = [1u8; 32];
    let b = [2u8; 32];
    (
        Keypair::new(&a, &b, 10, 20, now, true),
        Keypair::new(&b, &a, 20, 10, now, false),
    )
}

fn seal_open_round_trip_with_padding<A: TransportAead>() {
    let (mut i, mut r) = pair::<A>();
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

fn keepalive_is_32_bytes<A: TransportAead>() {
    let (mut i, mut r) = pair::<A>();
    let mut buf = [0u8; 64];
    let n = i.seal(&mut buf, 0).unwrap();
    assert_eq!(n, TRANSPORT_MIN_LEN);
    assert_eq!(r.open(&mut buf[..n]).unwrap(), (0, 0));
}

fn replay_and_tamper_rejected<A: TransportAead>() {
    let (mut i, mut r) = pair::<A>();
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

fn counter_limit<A: TransportAead>() {
    let (mut i, _) = pair::<A>();
    i.send_counter = REJECT_AFTER_MESSAGES;
    let mut buf = [0u8; 64];
    assert_eq!(i.seal(&mut buf, 0), Err(SealError::CounterExhausted));
    i.send_counter = REKEY_AFTER_MESSAGES;
    assert!(i.wants_rekey());
    assert!(i.seal(&mut buf, 0).is_ok());
}

fn buffer_too_small<A: TransportAead>() {
    let (mut i, _) = pair::<A>();
    let mut buf = [0u8; 40];
    assert_eq!(i.seal(&mut buf, 9), Err(SealError::BufferTooSmall));
    // Padding is capped by the room left, payload itself fits.
    assert_eq!(i.seal(&mut buf, 8).unwrap(), 40);
}

/// The same suite, once per backend (and once through the run-time [`Cipher`]).
macro_rules! suite {
    ($($module:ident => $aead:ty),* $(,)?) => {$(
        mod $module {
            use super::*;
            #[test]
            fn rfc8439_vector() { super::rfc8439_vector::<$aead>() }
            #[test]
            fn seal_open_round_trip_with_padding() {
                super::seal_open_round_trip_with_padding::<$aead>()
            }
            #[test]
            fn keepalive_is_32_bytes() { super::keepalive_is_32_bytes::<$aead>() }
            #[test]
            fn replay_and_tamper_rejected() { super::replay_and_tamper_rejected::<$aead>() }
            #[test]
            fn counter_limit() { super::counter_limit::<$aead>() }
            #[test]
            fn buffer_too_small() { super::buffer_too_small::<$aead>() }
        }
    )*};
}

suite! {
    rustcrypto => ChaChaPoly,
    ring => RingChaChaPoly,
    aws_lc => AwsLcChaChaPoly,
    cipher => Cipher,
}

#[test]
fn cipher_uses_the_backend_it_was_built_with() {
    for b in BACKENDS {
        assert_eq!(Cipher::with_backend(b, &[3; 32]).backend(), b);
    }
}

#[test]
fn backend_names_round_trip() {
    for b in BACKENDS {
        assert_eq!(b.name().parse::<Backend>(), Ok(b));
        assert_eq!(
            b.name().parse::<BackendChoice>(),
            Ok(BackendChoice::Fixed(b))
        );
    }
    assert_eq!("auto".parse::<BackendChoice>(), Ok(BackendChoice::Auto));
    assert_eq!(
        "chacha".parse::<BackendChoice>(),
        Err(UnknownBackend("chacha".into()))
    );
    assert!(BACKENDS.contains(&Backend::fastest()));
}

/// Short messages: every bit of ciphertext and tag, at every length up to four blocks.
#[test]
fn backends_agree_and_reject_every_bit_flip_of_short_messages() {
    for len in 0..=64usize {
        let plain: Vec<u8> = (0..len).map(|i| (i * 37 % 256) as u8).collect();
        let flips: Vec<usize> = (0..(len + TAG_LEN) * 8).collect();
        let key = [len as u8; 32];
        compare_backends(&key, len as u64 * 0x0101_0101, &plain, &flips)
            .unwrap_or_else(|e| panic!("len {len}: {e}"));
    }
}

#[test]
fn backends_agree_at_the_length_limits() {
    for len in [0usize, 1, 15, 16, 17, 63, 64, 65, 1400, 1420, 8192, 65535] {
        let plain = vec![0xa5; len];
        let flips = [0, 7, len * 8, len * 8 + 127, (len + TAG_LEN) * 8 - 1];
        compare_backends(&[9; 32], u64::MAX - len as u64, &plain, &flips)
            .unwrap_or_else(|e| panic!("len {len}: {e}"));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random keys, counters, lengths 0..=65535 and flipped bits (fuzz/fuzz_targets/
    /// aead_backends.rs drives the same check from libFuzzer).
    #[test]
    fn backends_agree_on_random_messages(
        key in any::<[u8; 32]>(),
        counter in any::<u64>(),
        len in 0usize..=65535,
        seed in any::<u8>(),
        flips in proptest::collection::vec(any::<usize>(), 1..24),
    ) {
        let plain: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(seed)).collect();
        prop_assert_eq!(compare_backends(&key, counter, &plain, &flips), Ok(()));
    }
}
