//! WireGuard handshakes between two in-memory parties: success, transport both ways,
//! replays, tampering, cookies under load and cookie secret rotation.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{client_addr, later, wall, Pair, TestRng};
use veil_control::handshake::COOKIE_SECRET_LIFETIME;
use veil_control::{
    consume_initiation, CookieChecker, HandshakeError, InitiationOutcome, ValidInitiation,
};
use veil_dataplane::wire::{
    COOKIE_REPLY_LEN, INITIATION_LEN, RESPONSE_LEN, TRANSPORT_HEADER_LEN, TYPE_INITIATION,
};
use veil_dataplane::{Keypair, OpenError};

/// A fresh pair without a pre-shared key, the server's cookie checker, the time and an RNG
/// seeded with `seed`.
fn setup(seed: u64) -> (Pair, CookieChecker, Instant, TestRng) {
    setup_psk(None, seed)
}

/// [`setup`] with the pre-shared key `psk`.
fn setup_psk(psk: Option<[u8; 32]>, seed: u64) -> (Pair, CookieChecker, Instant, TestRng) {
    let p = Pair::new(psk);
    let cookies = p.server.cookie_checker();
    (p, cookies, Instant::now(), TestRng(seed))
}

/// Where the client sees the server's messages come from.
fn server_addr() -> SocketAddr {
    "203.0.113.1:51820".parse().unwrap()
}

/// The server's response to a valid initiation, with receiver index `index`.
fn respond(
    p: &mut Pair,
    valid: ValidInitiation,
    index: u32,
    now: Instant,
    rng: &mut TestRng,
) -> Result<([u8; RESPONSE_LEN], Keypair), HandshakeError> {
    p.at_server.respond(&p.server, valid, index, now, rng)
}

/// The client refuses `response`: why.
fn client_refuses(p: &mut Pair, response: &[u8], now: Instant) -> HandshakeError {
    p.at_client
        .consume_response(&p.client, response, now)
        .unwrap_err()
}

/// The client's initiation with sender index `index` at `now` / `wall_secs`.
fn initiate(
    p: &mut Pair,
    index: u32,
    now: Instant,
    wall_secs: u64,
    rng: &mut TestRng,
) -> [u8; INITIATION_LEN] {
    p.at_client
        .create_initiation(&p.client, index, now, wall(wall_secs), rng)
        .unwrap()
}

/// The client's first initiation (index 1, wall clock 0 s) at `now`, which the server, under
/// load, answers from the client's address with a cookie reply.
fn first_cookie_reply(
    p: &mut Pair,
    cookies: &mut CookieChecker,
    now: Instant,
    rng: &mut TestRng,
) -> [u8; COOKIE_REPLY_LEN] {
    let init = initiate(p, 1, now, 0, rng);
    match consume_initiation(&p.server, cookies, &init, client_addr(), true, now, rng).unwrap() {
        InitiationOutcome::CookieReply(reply) => reply,
        InitiationOutcome::Valid(_) => panic!("expected a cookie reply"),
    }
}

/// The server's side of an initiation, expecting it to be valid (not under load).
fn server_accepts(
    p: &Pair,
    cookies: &mut CookieChecker,
    msg: &[u8],
    now: Instant,
) -> ValidInitiation {
    let mut rng = TestRng(1);
    match consume_initiation(&p.server, cookies, msg, client_addr(), false, now, &mut rng).unwrap()
    {
        InitiationOutcome::Valid(v) => v,
        InitiationOutcome::CookieReply(_) => panic!("cookie reply while not under load"),
    }
}

/// A complete handshake at `now`/`wall_secs`; returns (client keypair, server keypair).
fn handshake(
    p: &mut Pair,
    cookies: &mut CookieChecker,
    now: Instant,
    wall_secs: u64,
) -> (Keypair, Keypair) {
    let mut rng = TestRng(wall_secs);
    let init = initiate(p, 100, now, wall_secs, &mut rng);
    let valid = server_accepts(p, cookies, &init, now);
    assert_eq!(valid.remote_static(), p.client.public_key());
    assert_eq!(valid.sender_index(), 100);
    let (resp, server_kp) = respond(p, valid, 200, now, &mut rng).unwrap();
    let client_kp = p.at_client.consume_response(&p.client, &resp, now).unwrap();
    (client_kp, server_kp)
}

/// Seal `payload` with `from` and open it with `to`.
fn transfer(from: &mut Keypair, to: &mut Keypair, payload: &[u8]) -> Result<Vec<u8>, OpenError> {
    let mut buf = vec![0u8; TRANSPORT_HEADER_LEN + payload.len() + 32];
    buf[TRANSPORT_HEADER_LEN..TRANSPORT_HEADER_LEN + payload.len()].copy_from_slice(payload);
    let n = from.seal(&mut buf, payload.len()).unwrap();
    let (len, _) = to.open(&mut buf[..n])?;
    Ok(buf[TRANSPORT_HEADER_LEN..TRANSPORT_HEADER_LEN + len].to_vec())
}

#[test]
fn handshake_then_transport_both_ways() {
    for psk in [None, Some([0x5A; 32])] {
        let mut p = Pair::new(psk);
        let mut cookies = p.server.cookie_checker();
        let now = Instant::now();
        let (mut c, mut s) = handshake(&mut p, &mut cookies, now, 0);
        assert!(c.initiator && !s.initiator);
        assert_eq!((c.local_index, c.remote_index), (100, 200));
        assert_eq!((s.local_index, s.remote_index), (200, 100));
        assert_eq!(p.at_client.pending_since(), None);

        let got = transfer(&mut c, &mut s, b"ping from client").unwrap();
        assert_eq!(&got[..16], b"ping from client");
        let got = transfer(&mut s, &mut c, b"pong from server").unwrap();
        assert_eq!(&got[..16], b"pong from server");
        for i in 0..5u8 {
            let got = transfer(&mut c, &mut s, &[i; 40]).unwrap();
            assert_eq!(got.len(), 48, "padded to 16");
            assert_eq!(&got[..40], &[i; 40]);
            assert_eq!(&got[40..], &[0; 8]);
        }

        // A replayed transport packet is refused by the receiver's window.
        let mut buf = [0u8; 64];
        buf[16..20].copy_from_slice(b"once");
        let n = c.seal(&mut buf, 4).unwrap();
        let copy = buf;
        s.open(&mut buf[..n]).unwrap();
        let mut again = copy;
        assert_eq!(s.open(&mut again[..n]), Err(OpenError::Replay));
    }
}

#[test]
fn keys_differ_between_handshakes_and_directions() {
    let mut p = Pair::new(None);
    let mut cookies = p.server.cookie_checker();
    let now = Instant::now();
    let (c1, _) = handshake(&mut p, &mut cookies, now, 0);
    let (c2, _) = handshake(&mut p, &mut cookies, later(now, 1), 1);
    let k1 = c1.raw_keys_for_test();
    let k2 = c2.raw_keys_for_test();
    assert_ne!(k1, k2);
    assert_ne!(k1[..32], k1[32..]);
}

#[test]
fn psk_mismatch_fails_at_the_initiator() {
    let (mut p, mut cookies, now, mut rng) = setup_psk(Some([1; 32]), 3);
    p.at_client =
        veil_control::PeerHandshake::new(&p.client, *p.server.public_key(), Some([2; 32]));
    let init = initiate(&mut p, 1, now, 0, &mut rng);
    let valid = server_accepts(&p, &mut cookies, &init, now);
    let (resp, _) = respond(&mut p, valid, 2, now, &mut rng).unwrap();
    assert_eq!(client_refuses(&mut p, &resp, now), HandshakeError::Decrypt);
}

#[test]
fn replayed_initiation_is_rejected() {
    let (mut p, mut cookies, now, mut rng) = setup(4);
    let old = initiate(&mut p, 1, now, 10, &mut rng);
    let init = initiate(&mut p, 2, now, 20, &mut rng);
    let valid = server_accepts(&p, &mut cookies, &init, now);
    respond(&mut p, valid, 3, now, &mut rng).unwrap();

    // The same bytes again, well after the flood limit: the timestamp is not newer.
    let t = later(now, 5);
    let valid = server_accepts(&p, &mut cookies, &init, t);
    assert_eq!(
        respond(&mut p, valid, 4, t, &mut rng).unwrap_err(),
        HandshakeError::ReplayedTimestamp
    );
    // An older capture too.
    let valid = server_accepts(&p, &mut cookies, &old, t);
    assert_eq!(
        respond(&mut p, valid, 4, t, &mut rng).unwrap_err(),
        HandshakeError::ReplayedTimestamp
    );
    // A fresh initiation still works.
    let fresh = initiate(&mut p, 5, t, 21, &mut rng);
    let valid = server_accepts(&p, &mut cookies, &fresh, t);
    let (resp, _) = respond(&mut p, valid, 6, t, &mut rng).unwrap();
    p.at_client.consume_response(&p.client, &resp, t).unwrap();
}

#[test]
fn initiations_faster_than_every_20ms_are_rejected() {
    let (mut p, mut cookies, now, mut rng) = setup(5);
    let a = initiate(&mut p, 1, now, 1, &mut rng);
    let b = initiate(&mut p, 2, now, 2, &mut rng);
    let c = initiate(&mut p, 3, now, 3, &mut rng);
    let valid = server_accepts(&p, &mut cookies, &a, now);
    respond(&mut p, valid, 10, now, &mut rng).unwrap();
    let t = now + Duration::from_millis(19);
    let valid = server_accepts(&p, &mut cookies, &b, t);
    assert_eq!(
        respond(&mut p, valid, 11, t, &mut rng).unwrap_err(),
        HandshakeError::TooFast
    );
    // The refused one did not count: 20 ms after the accepted one is fine.
    let t = now + Duration::from_millis(20);
    let valid = server_accepts(&p, &mut cookies, &c, t);
    respond(&mut p, valid, 12, t, &mut rng).unwrap();
}

#[test]
fn initiation_for_another_peer_state_is_unknown_peer() {
    let mut p = Pair::new(None);
    let stranger = veil_control::StaticIdentity::from_secret([0x33; 32]);
    let mut at_server_for_stranger =
        veil_control::PeerHandshake::new(&p.server, *stranger.public_key(), None);
    let mut cookies = p.server.cookie_checker();
    let now = Instant::now();
    let mut rng = TestRng(6);
    let init = initiate(&mut p, 1, now, 0, &mut rng);
    let valid = server_accepts(&p, &mut cookies, &init, now);
    assert_eq!(
        at_server_for_stranger
            .respond(&p.server, valid, 2, now, &mut rng)
            .unwrap_err(),
        HandshakeError::UnknownPeer
    );
    // Read with one identity, answered with another.
    let valid = server_accepts(&p, &mut cookies, &init, now);
    assert_eq!(
        p.at_server
            .respond(&stranger, valid, 2, now, &mut rng)
            .unwrap_err(),
        HandshakeError::UnknownPeer
    );
}

#[test]
fn unexpected_response_and_wrong_receiver_index() {
    let (mut p, mut cookies, now, mut rng) = setup(7);
    let init = initiate(&mut p, 1, now, 0, &mut rng);
    let valid = server_accepts(&p, &mut cookies, &init, now);
    let (resp, _) = respond(&mut p, valid, 2, now, &mut rng).unwrap();
    // A newer initiation replaced the one this response answers.
    let _newer = initiate(&mut p, 9, now, 1, &mut rng);
    assert_eq!(
        client_refuses(&mut p, &resp, now),
        HandshakeError::UnexpectedResponse
    );
    p.at_client.abandon_initiation();
    assert_eq!(
        client_refuses(&mut p, &resp, now),
        HandshakeError::UnexpectedResponse
    );
}

#[test]
fn every_flipped_bit_in_initiation_is_rejected() {
    let (mut p, mut cookies, now, mut rng) = setup(8);
    let src = client_addr();
    // Hold a cookie first so MAC2 is present and, under load, checked.
    let reply = first_cookie_reply(&mut p, &mut cookies, now, &mut rng);
    p.at_client.consume_cookie_reply(&reply, now).unwrap();
    let init = initiate(&mut p, 2, now, 1, &mut rng);

    for bit in 0..init.len() * 8 {
        let mut m = init;
        m[bit / 8] ^= 1 << (bit % 8);
        for under_load in [true, false] {
            let outcome =
                consume_initiation(&p.server, &mut cookies, &m, src, under_load, now, &mut rng);
            let accepted = match outcome {
                Err(_) => false,
                Ok(InitiationOutcome::CookieReply(_)) => {
                    assert!(under_load);
                    false
                }
                Ok(InitiationOutcome::Valid(v)) => respond(&mut p, v, 3, now, &mut rng).is_ok(),
            };
            // Not under load, MAC2 is not looked at (as in WireGuard), so only its bits pass.
            let in_mac2 = bit >= 132 * 8;
            assert_eq!(
                accepted,
                in_mac2 && !under_load,
                "bit {bit} under_load={under_load}"
            );
            if accepted {
                // Accepting consumed the timestamp; make the next accept possible again.
                p.at_server =
                    veil_control::PeerHandshake::new(&p.server, *p.client.public_key(), None);
            }
        }
    }
    let valid = match consume_initiation(&p.server, &mut cookies, &init, src, true, now, &mut rng)
        .unwrap()
    {
        InitiationOutcome::Valid(v) => v,
        InitiationOutcome::CookieReply(_) => panic!("genuine initiation with cookie refused"),
    };
    respond(&mut p, valid, 3, now, &mut rng).unwrap();
}

#[test]
fn every_flipped_bit_in_response_is_rejected() {
    let (mut p, mut server_cookies, now, mut rng) = setup_psk(Some([9; 32]), 9);
    let mut client_cookies = p.client.cookie_checker();

    // The client is under load: the first response gets a cookie reply, which the server keeps.
    let init = initiate(&mut p, 1, now, 0, &mut rng);
    let valid = server_accepts(&p, &mut server_cookies, &init, now);
    let (resp, _) = respond(&mut p, valid, 2, now, &mut rng).unwrap();
    assert_eq!(
        client_cookies.check(&resp, server_addr(), true, now),
        Err(HandshakeError::Mac2Required)
    );
    let reply = client_cookies
        .create_reply(&resp, server_addr(), now, &mut rng)
        .unwrap();
    p.at_server.consume_cookie_reply(&reply, now).unwrap();

    // The retry's response carries MAC2.
    let t = later(now, 5);
    let init = initiate(&mut p, 3, t, 5, &mut rng);
    let valid = server_accepts(&p, &mut server_cookies, &init, t);
    let (resp, _) = respond(&mut p, valid, 4, t, &mut rng).unwrap();
    client_cookies.check(&resp, server_addr(), true, t).unwrap();

    for bit in 0..resp.len() * 8 {
        let mut m = resp;
        m[bit / 8] ^= 1 << (bit % 8);
        let accepted = client_cookies.check(&m, server_addr(), true, t).is_ok()
            && p.at_client.consume_response(&p.client, &m, t).is_ok();
        assert!(!accepted, "bit {bit} accepted");
    }
    // Failures left the pending initiation intact for the genuine response.
    let kp = p.at_client.consume_response(&p.client, &resp, t).unwrap();
    assert_eq!((kp.local_index, kp.remote_index), (3, 4));
}

#[test]
fn every_flipped_bit_in_cookie_reply_is_rejected() {
    let (mut p, mut cookies, now, mut rng) = setup(10);
    let reply = first_cookie_reply(&mut p, &mut cookies, now, &mut rng);
    for bit in 0..reply.len() * 8 {
        let mut m = reply;
        m[bit / 8] ^= 1 << (bit % 8);
        assert!(
            p.at_client.consume_cookie_reply(&m, now).is_err(),
            "bit {bit} accepted"
        );
    }
    p.at_client.consume_cookie_reply(&reply, now).unwrap();
    // Replaying it finds no MAC1 waiting for a cookie.
    assert_eq!(
        p.at_client.consume_cookie_reply(&reply, now),
        Err(HandshakeError::UnexpectedCookieReply)
    );
}

#[test]
fn under_load_cookie_then_retry_with_mac2_succeeds() {
    let (mut p, mut cookies, now, mut rng) = setup(11);
    let src = client_addr();

    let init = initiate(&mut p, 1, now, 0, &mut rng);
    assert_eq!(&init[132..], &[0; 16], "no cookie yet, no MAC2");
    let reply = match consume_initiation(&p.server, &mut cookies, &init, src, true, now, &mut rng)
        .unwrap()
    {
        InitiationOutcome::CookieReply(r) => r,
        InitiationOutcome::Valid(_) => panic!("accepted without MAC2 under load"),
    };
    assert_eq!(
        &reply[4..8],
        &1u32.to_le_bytes(),
        "cookie reply goes to the initiation's sender index"
    );
    p.at_client.consume_cookie_reply(&reply, now).unwrap();

    let t = later(now, 1);
    let retry = initiate(&mut p, 2, t, 1, &mut rng);
    assert_ne!(&retry[132..], &[0; 16]);
    assert!(cookies.verify_mac2(&retry, src, t));
    // The cookie is bound to the source address.
    let elsewhere: SocketAddr = "198.51.100.7:40001".parse().unwrap();
    assert!(!cookies.verify_mac2(&retry, elsewhere, t));
    assert!(matches!(
        consume_initiation(
            &p.server,
            &mut cookies,
            &retry,
            elsewhere,
            true,
            t,
            &mut rng
        )
        .unwrap(),
        InitiationOutcome::CookieReply(_)
    ));

    let valid = match consume_initiation(&p.server, &mut cookies, &retry, src, true, t, &mut rng)
        .unwrap()
    {
        InitiationOutcome::Valid(v) => v,
        InitiationOutcome::CookieReply(_) => panic!("MAC2 with a fresh cookie refused"),
    };
    let (resp, mut s) = respond(&mut p, valid, 3, t, &mut rng).unwrap();
    let mut c = p.at_client.consume_response(&p.client, &resp, t).unwrap();
    assert_eq!(
        &transfer(&mut c, &mut s, b"through").unwrap()[..7],
        b"through"
    );
}

#[test]
fn cookie_secret_rotation_invalidates_old_cookies() {
    let (mut p, mut cookies, t0, mut rng) = setup(12);
    let src = client_addr();

    let reply = first_cookie_reply(&mut p, &mut cookies, t0, &mut rng);
    // The client takes the reply late, so its own copy is still young when the server's
    // secret (born at t0) expires.
    let received = later(t0, 100);
    p.at_client.consume_cookie_reply(&reply, received).unwrap();

    let before = later(t0, 119);
    let m = initiate(&mut p, 2, before, 119, &mut rng);
    assert!(cookies.verify_mac2(&m, src, before));

    let after = t0 + COOKIE_SECRET_LIFETIME;
    let m = initiate(&mut p, 3, after, 120, &mut rng);
    assert_ne!(&m[132..], &[0; 16], "client still uses its cookie");
    assert!(
        !cookies.verify_mac2(&m, src, after),
        "cookie from the old secret accepted"
    );
    let InitiationOutcome::CookieReply(reply) =
        consume_initiation(&p.server, &mut cookies, &m, src, true, after, &mut rng).unwrap()
    else {
        panic!("stale cookie accepted under load");
    };
    // A new secret, hence a new cookie, which works again.
    p.at_client.consume_cookie_reply(&reply, after).unwrap();
    let t = later(after, 1);
    let m = initiate(&mut p, 4, t, 121, &mut rng);
    assert!(cookies.verify_mac2(&m, src, t));

    // The client stops sending MAC2 once its cookie is COOKIE_LIFETIME old: 115 s, as the
    // kernel's initiator, before the 120 s secret it came from may rotate.
    let m = initiate(&mut p, 5, later(after, 114), 235, &mut rng);
    assert_ne!(&m[132..], &[0; 16], "cookie dropped early");
    let m = initiate(&mut p, 6, later(after, 116), 237, &mut rng);
    assert_eq!(&m[132..], &[0; 16], "cookie used past 115 s");
}

#[test]
fn wrong_lengths_and_types_are_malformed() {
    let (mut p, mut cookies, now, mut rng) = setup(13);
    let init = initiate(&mut p, 1, now, 0, &mut rng);
    assert_eq!(init[0], TYPE_INITIATION);
    for bad in [&init[..147], &[], &init[..92]] {
        assert_eq!(
            consume_initiation(
                &p.server,
                &mut cookies,
                bad,
                client_addr(),
                false,
                now,
                &mut rng
            )
            .unwrap_err(),
            HandshakeError::Malformed
        );
    }
    assert_eq!(
        client_refuses(&mut p, &init, now),
        HandshakeError::Malformed
    );
    assert_eq!(
        p.at_client.consume_cookie_reply(&init[..64], now),
        Err(HandshakeError::Malformed)
    );
    assert_eq!(
        cookies.check(&init[..64], client_addr(), true, now),
        Err(HandshakeError::Malformed)
    );
    assert_eq!(
        cookies
            .create_reply(&init[..100], client_addr(), now, &mut rng)
            .unwrap_err(),
        HandshakeError::Malformed
    );
}

#[test]
fn simultaneous_initiations_both_complete() {
    let (mut p, mut server_cookies, now, mut rng) = setup(14);
    let mut client_cookies = p.client.cookie_checker();
    let from_client = initiate(&mut p, 1, now, 0, &mut rng);
    let from_server = p
        .at_server
        .create_initiation(&p.server, 2, now, wall(0), &mut rng)
        .unwrap();

    let valid = server_accepts(&p, &mut server_cookies, &from_client, now);
    let (resp_to_client, mut server_as_responder) =
        respond(&mut p, valid, 3, now, &mut rng).unwrap();
    let InitiationOutcome::Valid(valid) = consume_initiation(
        &p.client,
        &mut client_cookies,
        &from_server,
        server_addr(),
        false,
        now,
        &mut rng,
    )
    .unwrap() else {
        panic!("cookie reply while not under load");
    };
    let (resp_to_server, mut client_as_responder) = p
        .at_client
        .respond(&p.client, valid, 4, now, &mut rng)
        .unwrap();

    // Answering the other side did not throw away either pending initiation.
    let mut client_as_initiator = p
        .at_client
        .consume_response(&p.client, &resp_to_client, now)
        .unwrap();
    let mut server_as_initiator = p
        .at_server
        .consume_response(&p.server, &resp_to_server, now)
        .unwrap();
    assert_eq!(
        &transfer(&mut client_as_initiator, &mut server_as_responder, b"a").unwrap()[..1],
        b"a"
    );
    assert_eq!(
        &transfer(&mut server_as_initiator, &mut client_as_responder, b"b").unwrap()[..1],
        b"b"
    );
}
