//! The reliability guide's `retransmit_count`: initiations sent per completed handshake,
//! sans-IO on a virtual clock (a client device and a gateway device, a lossy wire between).
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant, SystemTime};

use rand_core::OsRng;
use veil_control::device::{Device, HandshakeRound, PeerSpec};
use veil_control::StaticIdentity;
use veil_dataplane::link::{Epoch, Event, HandshakeDatagram};
use veil_dataplane::pipeline::ControlDriver;
use veil_dataplane::timing::Timing;

mod common;
use common::device::{addr, commands, GW_SECRET};

const CL_SECRET: [u8; 32] = [0x22; 32];

fn device(secret: &[u8; 32], t0: Instant) -> Device {
    Device::new(
        secret,
        Timing::default(),
        Epoch::new(t0),
        (t0, SystemTime::now()),
        OsRng,
    )
}

fn spec(secret: [u8; 32], ip: &str, endpoint: Option<&str>) -> PeerSpec {
    PeerSpec {
        public_key: *StaticIdentity::from_secret(secret).public_key(),
        preshared_key: None,
        allowed_ips: vec![ip.parse().unwrap()],
        endpoint: endpoint.map(addr),
        persistent_keepalive: None,
    }
}

/// Carry every datagram `from` has queued to `to` (or drop them all when `lose`).
fn carry(from: &mut Device, to: &mut Device, src: &str, now: Instant, lose: bool) -> usize {
    let sent: Vec<_> = std::iter::from_fn(|| from.poll_transmit()).collect();
    for d in &sent {
        if !lose {
            to.on_handshake(
                HandshakeDatagram::new(d.as_bytes(), addr(src), None).unwrap(),
                now,
            );
        }
    }
    commands(to);
    commands(from);
    sent.len()
}

#[test]
fn a_handshake_after_two_lost_initiations_counts_three() {
    let t0 = Instant::now();
    let mut gw = device(&GW_SECRET, t0);
    gw.add_peer(spec(CL_SECRET, "10.0.0.2/32", None)).unwrap();
    let mut cl = device(&CL_SECRET, t0);
    let peer = cl
        .add_peer(spec(GW_SECRET, "10.0.0.1/32", Some("198.51.100.1:51820")))
        .unwrap();

    cl.on_event(Event::HandshakeNeeded { peer }, t0);
    assert_eq!(carry(&mut cl, &mut gw, "192.0.2.2:5000", t0, true), 1);
    assert_eq!(cl.poll_handshake_round(), None, "nothing completed yet");
    // REKEY_TIMEOUT (5 s) plus jitter later, the retries; the second one gets through.
    let mut now = t0;
    let mut sent = 1;
    for lose in [true, false] {
        let before = sent;
        while sent == before {
            now += Duration::from_millis(500);
            cl.on_timeout(now);
            sent += carry(&mut cl, &mut gw, "192.0.2.2:5000", now, lose);
            assert!(now < t0 + Duration::from_secs(30), "no retry");
        }
    }
    // The gateway's response completes the handshake on the client.
    carry(&mut gw, &mut cl, "198.51.100.1:51820", now, false);
    assert_eq!(
        cl.poll_handshake_round(),
        Some(HandshakeRound {
            veil_peer: false,
            initiations: 3
        })
    );
    assert_eq!(cl.poll_handshake_round(), None, "one per handshake");
    // The responder sent no initiation: nothing to count there.
    assert_eq!(gw.poll_handshake_round(), None);

    // The next handshake starts counting afresh.
    now += Duration::from_secs(130);
    cl.on_event(Event::HandshakeNeeded { peer }, now);
    carry(&mut cl, &mut gw, "192.0.2.2:5000", now, false);
    carry(&mut gw, &mut cl, "198.51.100.1:51820", now, false);
    assert_eq!(cl.poll_handshake_round().map(|r| r.initiations), Some(1));
}
