//! The handshake entry points fed arbitrary bytes (of arbitrary length, and of the right
//! length and type with a valid MAC1 so the Noise paths run) return errors, never panic and
//! never accept.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::time::Instant;

use common::{client_addr, wall, Pair, TestRng};
use proptest::prelude::*;
use veil_control::noise::{hash, mac16};
use veil_control::{consume_initiation, InitiationOutcome};

/// Low-order X25519 points (and neighbours), to reach the all-zero DH checks.
const SPECIAL_POINTS: [[u8; 32]; 4] = [
    [0; 32],
    {
        let mut p = [0; 32];
        p[0] = 1;
        p
    },
    [0xff; 32],
    {
        // Order-8 point from the curve25519 small-subgroup list.
        let mut p = [0; 32];
        let head = [
            0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f,
            0xc4, 0x6a,
        ];
        let tail = [
            0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49,
            0xb8, 0x00,
        ];
        let mut i = 0;
        while i < 16 {
            p[i] = head[i];
            p[i + 16] = tail[i];
            i += 1;
        }
        p
    },
];

fn with_mac1(mut msg: Vec<u8>, ty: u8, receiver_public: &[u8; 32]) -> Vec<u8> {
    msg[..4].copy_from_slice(&[ty, 0, 0, 0]);
    let at = msg.len() - 32;
    let mac = mac16(&hash(&[b"mac1----", receiver_public]), &[&msg[..at]]);
    msg[at..at + 16].copy_from_slice(&mac);
    msg
}

fn maybe_special(mut msg: Vec<u8>, at: usize, special: Option<usize>) -> Vec<u8> {
    if let Some(i) = special {
        msg[at..at + 32].copy_from_slice(&SPECIAL_POINTS[i % SPECIAL_POINTS.len()]);
    }
    msg
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..300), under_load: bool) {
        let mut p = Pair::new(None);
        let mut cookies = p.server.cookie_checker();
        let now = Instant::now();
        let mut rng = TestRng(1);
        let src = client_addr();
        if let Ok(InitiationOutcome::Valid(v)) =
            consume_initiation(&p.server, &mut cookies, &b, src, under_load, now, &mut rng)
        {
            prop_assert!(p.at_server.respond(&p.server, v, 1, now, &mut rng).is_err());
        }
        let _ = cookies.check(&b, src, under_load, now);
        let _ = cookies.verify_mac2(&b, src, now);
        let _ = cookies.create_reply(&b, src, now, &mut rng);
        // The initiator side with and without a pending initiation.
        prop_assert!(p.at_client.consume_response(&p.client, &b, now).is_err());
        prop_assert!(p.at_client.consume_cookie_reply(&b, now).is_err());
        p.at_client.create_initiation(&p.client, 7, now, wall(0), &mut rng).unwrap();
        prop_assert!(p.at_client.consume_response(&p.client, &b, now).is_err());
        prop_assert!(p.at_client.consume_cookie_reply(&b, now).is_err());
    }

    #[test]
    fn initiations_with_valid_mac1_are_refused(
        b in proptest::collection::vec(any::<u8>(), 148),
        special in proptest::option::of(0usize..4),
    ) {
        let mut p = Pair::new(None);
        let mut cookies = p.server.cookie_checker();
        let now = Instant::now();
        let mut rng = TestRng(2);
        let msg = with_mac1(maybe_special(b, 8, special), 1, p.server.public_key());
        match consume_initiation(&p.server, &mut cookies, &msg, client_addr(), false, now, &mut rng) {
            Ok(InitiationOutcome::Valid(v)) => {
                prop_assert!(p.at_server.respond(&p.server, v, 1, now, &mut rng).is_err());
            }
            Ok(InitiationOutcome::CookieReply(_)) => prop_assert!(false, "cookie reply while not under load"),
            Err(_) => {}
        }
    }

    #[test]
    fn responses_with_valid_mac1_and_index_are_refused(
        b in proptest::collection::vec(any::<u8>(), 92),
        special in proptest::option::of(0usize..4),
    ) {
        let mut p = Pair::new(Some([3; 32]));
        let now = Instant::now();
        let mut rng = TestRng(3);
        p.at_client.create_initiation(&p.client, 0x0102_0304, now, wall(0), &mut rng).unwrap();
        let mut msg = maybe_special(b, 12, special);
        msg[8..12].copy_from_slice(&0x0102_0304u32.to_le_bytes());
        let msg = with_mac1(msg, 2, p.client.public_key());
        prop_assert!(p.at_client.consume_response(&p.client, &msg, now).is_err());
        prop_assert!(p.at_client.pending_since().is_some());
    }

    #[test]
    fn cookie_replies_with_matching_index_are_refused(b in proptest::collection::vec(any::<u8>(), 64)) {
        let mut p = Pair::new(None);
        let now = Instant::now();
        let mut rng = TestRng(4);
        p.at_client.create_initiation(&p.client, 0x0a0b_0c0d, now, wall(0), &mut rng).unwrap();
        let mut msg = b;
        msg[..8].copy_from_slice(&[3, 0, 0, 0, 0x0d, 0x0c, 0x0b, 0x0a]);
        prop_assert!(p.at_client.consume_cookie_reply(&msg, now).is_err());
    }
}
