//! The initiator's side of the handshake: `consume_response` and `consume_cookie_reply` on a
//! peer with a pending initiation, with arbitrary bytes or a genuine response / cookie reply
//! XORed with the input.
//!
//! First input byte: bit 0 picks the cookie reply (set) or the response (clear); bit 1 set
//! XORs the genuine message with the rest, clear takes the rest as it is; bit 2 (responses)
//! writes the right type word and a valid MAC1 after the mutation. Only the genuine
//! authenticated bytes may be accepted.
#![no_main]

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use common::{FuzzRng, Peers};
use libfuzzer_sys::fuzz_target;
use veil_control::noise::{hash, mac16};
use veil_control::{consume_initiation, InitiationOutcome, PeerHandshake};

struct Fixture {
    peers: Peers,
    response: Vec<u8>,
    cookie_reply: Vec<u8>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let peers = Peers::new();
        let (server, start, init) = (&peers.server, peers.start, &peers.initiation);
        let mut cookies = server.cookie_checker();
        let src = "192.0.2.1:51820".parse().expect("literal");
        let mut rng = FuzzRng(5);
        let Ok(InitiationOutcome::Valid(valid)) =
            consume_initiation(server, &mut cookies, init, src, false, start, &mut rng)
        else {
            panic!("the genuine initiation is valid");
        };
        let mut at_server = PeerHandshake::new(server, *peers.client.public_key(), None);
        let (response, _) = at_server
            .respond(server, valid, 9, start, &mut FuzzRng(0x44))
            .expect("genuine response");
        let cookie_reply = cookies
            .create_reply(init, src, start, &mut rng)
            .expect("cookie reply");
        Fixture {
            response: response.to_vec(),
            cookie_reply: cookie_reply.to_vec(),
            peers,
        }
    })
}

thread_local! {
    /// The pending client between runs: a refused reply leaves it as it was (checked by the
    /// handshake tests), so it is made again only after one was accepted.
    static CLIENT: std::cell::RefCell<Option<PeerHandshake>> = const { std::cell::RefCell::new(None) };
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let f = fixture();
    let cookie = mode & 1 != 0;
    let genuine = if cookie { &f.cookie_reply } else { &f.response };
    let mut msg = if mode & 2 != 0 {
        let mut m = genuine.clone();
        for (b, x) in m.iter_mut().zip(rest) {
            *b ^= x;
        }
        m
    } else {
        rest.to_vec()
    };
    let mut client = CLIENT
        .with(|c| c.borrow_mut().take())
        .unwrap_or_else(|| f.peers.pending_client().0);
    let now = f.peers.start + Duration::from_millis(100);
    let mut accepted = false;
    if cookie {
        if client.consume_cookie_reply(&msg, now).is_ok() {
            accepted = true;
            // Type word aside, every byte is checked: the receiver index by lookup, the rest
            // by the AEAD.
            assert_eq!(msg.get(4..), genuine.get(4..));
        }
    } else {
        if mode & 4 != 0 && msg.len() == genuine.len() {
            msg[..4].copy_from_slice(&[2, 0, 0, 0]);
            let mac = mac16(
                &hash(&[b"mac1----", f.peers.client.public_key()]),
                &[&msg[..60]],
            );
            msg[60..76].copy_from_slice(&mac);
        }
        if client.consume_response(&f.peers.client, &msg, now).is_ok() {
            accepted = true;
            // The sender index is covered by MAC1 only, which anyone can recompute.
            assert_eq!(msg.get(8..60), genuine.get(8..60));
        }
    }
    if !accepted {
        CLIENT.with(|c| *c.borrow_mut() = Some(client));
    }
});
