//! Unit tests of the handshake state machine and the cookie checker.

use super::*;
use rand_core::OsRng;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn macs_cover_the_documented_bytes() {
    let client = StaticIdentity::from_secret([1; 32]);
    let server = StaticIdentity::from_secret([2; 32]);
    let mut peer = PeerHandshake::new(&client, server.public, None);
    let now = Instant::now();
    let msg = peer
        .create_initiation(&client, 0x0403_0201, now, SystemTime::now(), &mut OsRng)
        .unwrap();
    assert_eq!(&msg[..8], &[1, 0, 0, 0, 1, 2, 3, 4]);
    let key = hash(&[b"mac1----", &server.public]);
    assert_eq!(&msg[116..132], &mac16(&key, &[&msg[..116]]));
    assert_eq!(&msg[132..], &[0; 16]);
    assert_eq!(server.cookie_checker().verify_mac1(&msg), Ok(()));
    assert_eq!(
        client.cookie_checker().verify_mac1(&msg),
        Err(HandshakeError::Mac1)
    );
    let checker = CookieChecker::new(&server.public);
    assert_eq!(
        (checker.mac1_key, checker.cookie_key),
        (server.mac1_key, server.cookie_key)
    );
}

#[test]
fn low_order_peer_key_is_refused_when_used() {
    let local = StaticIdentity::from_secret([1; 32]);
    let mut peer = PeerHandshake::new(&local, [0; 32], None);
    let r = peer.create_initiation(&local, 1, Instant::now(), SystemTime::now(), &mut OsRng);
    assert_eq!(r.unwrap_err(), HandshakeError::WeakKey);
    assert_eq!(peer.pending_since(), None);
    assert!(peer.remote_key_is_low_order());
    assert!(!PeerHandshake::new(&local, local.public, None).remote_key_is_low_order());
}

#[test]
fn debug_never_prints_secrets() {
    let secret = [0x42; 32];
    let id = StaticIdentity::from_secret(secret);
    let peer = PeerHandshake::new(
        &id,
        *StaticIdentity::from_secret([7; 32]).public_key(),
        Some([0x42; 32]),
    );
    let mut checker = id.cookie_checker();
    let msg = {
        let mut p = PeerHandshake::new(&id, id.public, None);
        p.create_initiation(&id, 1, Instant::now(), SystemTime::now(), &mut OsRng)
            .unwrap()
    };
    checker
        .create_reply(
            &msg,
            "192.0.2.1:1".parse().unwrap(),
            Instant::now(),
            &mut OsRng,
        )
        .unwrap();
    let printed = format!("{id:?} {peer:?} {checker:?}");
    assert!(!printed.contains("4242"), "{printed}");
    assert!(!printed.contains(&hex(&*checker.secret)[..8]), "{printed}");
    assert!(
        !printed.contains(&hex(&*peer.static_static)[..8]),
        "{printed}"
    );
}

#[test]
fn errors_say_what_happened() {
    assert!(HandshakeError::Mac2Required.needs_cookie_reply());
    assert!(!HandshakeError::Mac1.needs_cookie_reply());
    assert_eq!(
        HandshakeError::from(NoiseError::Decrypt),
        HandshakeError::Decrypt
    );
    assert!(HandshakeError::ReplayedTimestamp
        .to_string()
        .contains("replayed"));
}

#[test]
fn cookie_depends_on_address_and_port() {
    let id = StaticIdentity::from_secret([3; 32]);
    let mut checker = id.cookie_checker();
    checker.secret = Zeroizing::new([9; 32]);
    let a = checker.cookie("192.0.2.1:500".parse().unwrap());
    let b = checker.cookie("192.0.2.1:501".parse().unwrap());
    let c = checker.cookie("192.0.2.2:500".parse().unwrap());
    let d = checker.cookie("[2001:db8::1]:500".parse().unwrap());
    assert!(*a != *b && *a != *c && *a != *d);
    // IP bytes then the port in network order, keyed BLAKE2s-128.
    assert_eq!(*a, mac16(&[9; 32], &[&[192, 0, 2, 1, 0x01, 0xf4]]));
}
