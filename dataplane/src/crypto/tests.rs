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
    let (i, r) = pair::<A>();
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
    let (i, r) = pair::<A>();
    let mut buf = [0u8; 64];
    let n = i.seal(&mut buf, 0).unwrap();
    assert_eq!(n, TRANSPORT_MIN_LEN);
    assert_eq!(r.open(&mut buf[..n]).unwrap(), (0, 0));
}

fn replay_and_tamper_rejected<A: TransportAead>() {
    let (i, r) = pair::<A>();
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
    *i.send_counter.get_mut() = REJECT_AFTER_MESSAGES;
    let mut buf = [0u8; 64];
    assert_eq!(i.reserve(1), None);
    assert_eq!(i.seal(&mut buf, 0), Err(SealError::CounterExhausted));
    *i.send_counter.get_mut() = REKEY_AFTER_MESSAGES;
    assert!(i.wants_rekey());
    assert!(i.seal(&mut buf, 0).is_ok());
}

fn buffer_too_small<A: TransportAead>() {
    let (i, _) = pair::<A>();
    let mut buf = [0u8; 40];
    assert_eq!(i.seal(&mut buf, 9), Err(SealError::BufferTooSmall));
    // Padding is capped by the room left, payload itself fits.
    assert_eq!(i.seal(&mut buf, 8).unwrap(), 40);
}

/// Every reserver thread's `(first, n)` ranges, sorted.
fn joined(threads: Vec<std::thread::JoinHandle<Vec<(u64, u64)>>>) -> Vec<(u64, u64)> {
    let mut ranges: Vec<(u64, u64)> = threads
        .into_iter()
        .flat_map(|h| h.join().expect("reserver"))
        .collect();
    ranges.sort_unstable();
    ranges
}

/// Pipelines share one keypair: counters reserved from several threads at once, of mixed
/// sizes, never overlap, and together they are exactly the counters handed out.
#[test]
fn concurrent_reservations_never_hand_out_a_counter_twice() {
    let (i, _) = pair::<Cipher>();
    let kp = std::sync::Arc::new(i);
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let kp = kp.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                for round in 0..20_000u64 {
                    let n = 1 + (round * 7 + t * 13) % 64;
                    let first = kp.reserve(n).expect("far from the limit");
                    got.push((first, n));
                }
                got
            })
        })
        .collect();
    let ranges = joined(threads);
    let mut next = 0;
    for (first, n) in ranges {
        assert_eq!(first, next, "a gap or an overlap at {first}");
        next = first + n;
    }
    assert_eq!(next, kp.sent());
}

/// Near the reject limit, concurrent reservations never cross it and never repeat a counter.
#[test]
fn reservations_stop_at_the_reject_limit() {
    let (mut i, _) = pair::<Cipher>();
    *i.send_counter.get_mut() = REJECT_AFTER_MESSAGES - 1000;
    let kp = std::sync::Arc::new(i);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let kp = kp.clone();
            std::thread::spawn(move || {
                (0..1000)
                    .filter_map(|_| kp.reserve(3).map(|c| (c, 3u64)))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let ranges = joined(threads);
    assert!(ranges.windows(2).all(|w| w[0].0 + w[0].1 <= w[1].0));
    assert!(ranges.iter().all(|(c, n)| c + n <= REJECT_AFTER_MESSAGES));
    assert_eq!(
        ranges.len(),
        333,
        "every counter below the limit that fits a whole range"
    );
    // One counter is left below the limit (999 of 1000 were reserved): one seal, then none.
    let mut buf = [0u8; 64];
    assert!(kp.seal(&mut buf, 0).is_ok());
    assert_eq!(kp.seal(&mut buf, 0), Err(SealError::CounterExhausted));
    assert_eq!(kp.sent(), REJECT_AFTER_MESSAGES);
}

/// Two pipelines seal for one peer and two pipelines open what the peer received: every
/// message has its own nonce, and the shared replay window accepts each exactly once, however
/// the two streams interleave.
#[test]
fn two_pipelines_seal_and_open_through_one_keypair() {
    let (i, r) = pair::<Cipher>();
    let (i, r) = (std::sync::Arc::new(i), std::sync::Arc::new(r));
    let per_thread = 3000;
    let seal = |i: std::sync::Arc<Keypair>| {
        std::thread::spawn(move || {
            (0..per_thread)
                .map(|n: u32| {
                    let mut buf = vec![0u8; TRANSPORT_MIN_LEN + 16];
                    buf[TRANSPORT_HEADER_LEN..TRANSPORT_HEADER_LEN + 4]
                        .copy_from_slice(&n.to_le_bytes());
                    let len = i.seal(&mut buf, 4).expect("seal");
                    buf.truncate(len);
                    buf
                })
                .collect::<Vec<_>>()
        })
    };
    let (a, b) = (seal(i.clone()), seal(i.clone()));
    let (a, b) = (a.join().expect("sealer"), b.join().expect("sealer"));
    let counter = |m: &Vec<u8>| Transport::new_checked(&m[..]).expect("transport").counter();
    let mut all: Vec<u64> = a.iter().chain(&b).map(counter).collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 2 * per_thread as usize, "a nonce was used twice");
    // Each opening pipeline gets messages from both sealers, in its own order.
    let (mut x, mut y): (Vec<Vec<u8>>, Vec<Vec<u8>>) = (Vec::new(), Vec::new());
    for (k, m) in a.into_iter().chain(b).enumerate() {
        if k % 3 == 0 {
            x.push(m)
        } else {
            y.push(m)
        }
    }
    let open = |r: std::sync::Arc<Keypair>, msgs: Vec<Vec<u8>>| {
        std::thread::spawn(move || {
            let copies = msgs.clone();
            let fresh = msgs
                .into_iter()
                .filter(|m| r.open(&mut m.clone()).is_ok())
                .count();
            let replays = copies
                .into_iter()
                .filter(|m| r.open(&mut m.clone()) == Err(OpenError::Replay))
                .count();
            (fresh, replays)
        })
    };
    let (p, q) = (open(r.clone(), x), open(r.clone(), y));
    let ((f1, r1), (f2, r2)) = (p.join().expect("opener"), q.join().expect("opener"));
    assert_eq!(
        f1 + f2,
        2 * per_thread as usize,
        "a message was falsely dropped"
    );
    assert_eq!(r1 + r2, 2 * per_thread as usize, "a replay was accepted");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// One peer's messages reach the shared window through two pipelines, each in its own
    /// order, interleaved arbitrarily: none is falsely dropped, no copy accepted twice.
    #[test]
    fn shared_window_under_interleaved_arrival(
        route in proptest::collection::vec(any::<bool>(), 1..600),
        pick in proptest::collection::vec(any::<bool>(), 1200),
        duplicate in proptest::collection::vec(any::<bool>(), 600),
    ) {
        let (i, r) = pair::<Cipher>();
        let sealed: Vec<Vec<u8>> = route.iter().map(|_| {
            let mut buf = vec![0u8; TRANSPORT_MIN_LEN];
            let len = i.seal(&mut buf, 0).expect("seal");
            buf.truncate(len);
            buf
        }).collect();
        let mut lanes: [std::collections::VecDeque<Vec<u8>>; 2] = Default::default();
        for (k, m) in sealed.iter().enumerate() {
            lanes[usize::from(route[k])].push_back(m.clone());
            if duplicate[k] {
                lanes[usize::from(!route[k])].push_back(m.clone());
            }
        }
        let (mut accepted, mut replays) = (0, 0);
        let mut turn = pick.iter().cycle();
        while !lanes[0].is_empty() || !lanes[1].is_empty() {
            let lane = if lanes[0].is_empty() { 1 } else if lanes[1].is_empty() { 0 }
                else { usize::from(*turn.next().unwrap_or(&false)) };
            let Some(mut m) = lanes[lane].pop_front() else { continue };
            match r.open(&mut m) {
                Ok(_) => accepted += 1,
                Err(OpenError::Replay) => replays += 1,
                Err(e) => prop_assert!(false, "unexpected {e}"),
            }
        }
        prop_assert_eq!(accepted, route.len());
        prop_assert_eq!(replays, duplicate[..route.len()].iter().filter(|d| **d).count());
    }
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
