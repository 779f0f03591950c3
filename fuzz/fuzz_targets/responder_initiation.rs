//! The responder path: `consume_initiation` then `respond`, with a fixed server identity and
//! one known client.
//!
//! The first input byte picks how the rest becomes a 148-byte initiation, so the fuzzer gets
//! past the cheap checks instead of dying at MAC1:
//! - bit 0 clear: the rest is the message as is (any length);
//! - bit 0 set: a genuine initiation from the known client, XORed with the rest;
//! - bit 1: write the right type word and a valid MAC1 after the mutation;
//! - bit 2: under load (MAC2 checked, cookie replies produced).
#![no_main]

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use common::{FuzzRng, Peers};
use libfuzzer_sys::fuzz_target;
use veil_control::noise::{hash, mac16};
use veil_control::{consume_initiation, InitiationOutcome, PeerHandshake};

fn peers() -> &'static Peers {
    static F: OnceLock<Peers> = OnceLock::new();
    F.get_or_init(Peers::new)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let f = peers();
    let mut msg: Vec<u8> = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        let mut m = f.initiation.to_vec();
        for (b, x) in m.iter_mut().zip(rest) {
            *b ^= x;
        }
        m
    };
    if mode & 2 != 0 && msg.len() == 148 {
        msg[..4].copy_from_slice(&[1, 0, 0, 0]);
        let mac = mac16(&hash(&[b"mac1----", f.server.public_key()]), &[&msg[..116]]);
        msg[116..132].copy_from_slice(&mac);
    }
    let under_load = mode & 4 != 0;

    let mut cookies = f.server.cookie_checker();
    let mut at_server = PeerHandshake::new(&f.server, *f.client.public_key(), None);
    let mut rng = FuzzRng(u64::from(mode));
    let src = "192.0.2.1:51820".parse().expect("literal address");
    let now = f.start + Duration::from_secs(1);
    match consume_initiation(
        &f.server,
        &mut cookies,
        &msg,
        src,
        under_load,
        now,
        &mut rng,
    ) {
        Ok(InitiationOutcome::Valid(init)) => {
            let result = at_server.respond(&f.server, init, 9, now, &mut rng);
            // Only the genuine Noise message may complete. The sender index is covered by MAC1
            // alone, which anyone who knows our public key can recompute, so it may differ.
            if result.is_ok() {
                assert_eq!(&msg[8..116], &f.initiation[8..116]);
            }
        }
        Ok(InitiationOutcome::CookieReply(_)) => assert!(under_load),
        Err(_) => {}
    }
});
