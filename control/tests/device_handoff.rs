//! A live hand-off on the device's side (issue 15), sans-IO: a gateway's session is captured,
//! carried through its byte form and restored into a new device built from the config, which
//! goes on with the same keys and counters and refuses the old initiation replayed.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant, SystemTime};

use rand_core::OsRng;
use veil_control::device::{Device, PeerSpec, RestoreError};
use veil_control::handoff::{decode, encode};
use veil_control::{PeerHandshake, StaticIdentity};
use veil_dataplane::crypto::HANDOFF_SEND_GAP;
use veil_dataplane::link::{Command, Epoch, HandshakeDatagram, KeypairRole};
use veil_dataplane::pipeline::ControlDriver;
use veil_dataplane::timing::Timing;
use veil_dataplane::Keypair;

mod common;
use common::device::{addr, commands, counter, GW_SECRET};

const CL_SECRET: [u8; 32] = [0x22; 32];
const OTHER_SECRET: [u8; 32] = [0x33; 32];

/// A device started at `now`, its wall clock `wall` then (the same host's clock for every
/// device of a test: [`wall_at`]).
fn device_at(secret: [u8; 32], peers: &[[u8; 32]], now: Instant, wall: SystemTime) -> Device {
    let mut dev = Device::new(
        &secret,
        Timing::default(),
        Epoch::new(now),
        (now, wall),
        OsRng,
    );
    for (i, p) in peers.iter().enumerate() {
        dev.add_peer(PeerSpec {
            public_key: *StaticIdentity::from_secret(*p).public_key(),
            preshared_key: None,
            allowed_ips: vec![format!("10.0.0.{}/32", i + 2).parse().unwrap()],
            endpoint: None,
            persistent_keepalive: None,
        })
        .unwrap();
    }
    commands(&mut dev);
    dev
}

fn device(secret: [u8; 32], peers: &[[u8; 32]], now: Instant) -> Device {
    device_at(secret, peers, now, SystemTime::now())
}

/// The wall clock at `t`, for a host whose clock read `wall0` at `t0`.
fn wall_at(t0: Instant, wall0: SystemTime, t: Instant) -> SystemTime {
    wall0 + t.saturating_duration_since(t0)
}

/// A real initiation from the client to the gateway, as bytes.
fn initiation(now: Instant) -> Vec<u8> {
    let gw_pub = *StaticIdentity::from_secret(GW_SECRET).public_key();
    let client = StaticIdentity::from_secret(CL_SECRET);
    let mut hs = PeerHandshake::new(&client, gw_pub, None);
    hs.create_initiation(&client, 7, now, SystemTime::now(), &mut OsRng)
        .unwrap()
        .to_vec()
}

fn deliver(dev: &mut Device, msg: &[u8], now: Instant) {
    let d = HandshakeDatagram::new(msg, addr("192.0.2.2:5000"), None).unwrap();
    dev.on_handshake(d, now);
}

fn installed(cmds: &[Command]) -> Vec<(std::sync::Arc<Keypair>, KeypairRole)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::InstallKeypair { keypair, role, .. } => Some((keypair.clone(), *role)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_restored_device_goes_on_with_the_same_session() {
    let (t0, wall0) = (Instant::now(), SystemTime::now());
    let mut old = device_at(GW_SECRET, &[CL_SECRET], t0, wall0);
    let init = initiation(t0);
    deliver(&mut old, &init, t0);
    let cmds = commands(&mut old);
    let [(kp, KeypairRole::Responder)] = &installed(&cmds)[..] else {
        panic!("one responder keypair: {cmds:?}");
    };
    // The client used it (confirmed), and we sent 5 messages with it.
    kp.confirm();
    assert_eq!(kp.reserve(5), Some(0));

    let later = t0 + Duration::from_secs(3);
    let bytes = encode(&old.capture(later));
    let state = decode(&bytes).unwrap();

    // The new process's device: the same config, restored.
    let t1 = later + Duration::from_millis(50);
    let mut new = device_at(GW_SECRET, &[CL_SECRET], t1, wall_at(t0, wall0, t1));
    let done = new.restore(&state, t1).unwrap();
    assert_eq!((done.peers, done.keypairs, done.gone), (1, 1, 0));
    let cmds = commands(&mut new);
    assert!(cmds
        .iter()
        .any(|c| matches!(c, Command::SetEndpoint { endpoint, .. } if *endpoint == addr("192.0.2.2:5000"))));
    // A confirmed keypair is current at once, with the same keys and indices, its counter
    // past what the old process could still have used.
    let [(back, KeypairRole::Initiator)] = &installed(&cmds)[..] else {
        panic!("the keypair restored as current: {cmds:?}");
    };
    assert_eq!(back.raw_keys_for_test(), kp.raw_keys_for_test());
    assert_eq!(
        (back.local_index, back.remote_index),
        (kp.local_index, kp.remote_index)
    );
    assert_eq!(back.sent(), 5 + HANDOFF_SEND_GAP);
    assert!(back.confirmed());
    // The handshake time is the old one (wg show latest-handshakes does not move).
    let hs = new.peers()[0].last_handshake.unwrap();
    let age = t1.saturating_duration_since(hs);
    assert!(
        age >= Duration::from_millis(3040) && age <= Duration::from_millis(3060),
        "{age:?}"
    );

    // The initiation the old process accepted, replayed into the new one, is refused.
    let before = counter(&new, "handshakes_completed_responder");
    deliver(&mut new, &init, t1);
    assert!(installed(&commands(&mut new)).is_empty());
    assert_eq!(counter(&new, "handshakes_completed_responder"), before);
    // Nothing on the timers asks for a new handshake either.
    new.on_timeout(t1 + Duration::from_secs(1));
    assert!(new.poll_transmit().is_none());
}

#[test]
fn a_state_goes_only_where_the_key_and_the_peers_fit() {
    let t0 = Instant::now();
    let mut old = device(GW_SECRET, &[CL_SECRET], t0);
    deliver(&mut old, &initiation(t0), t0);
    commands(&mut old);
    let state = old.capture(t0);
    let mut other_key = device(OTHER_SECRET, &[CL_SECRET], t0);
    assert_eq!(other_key.restore(&state, t0), Err(RestoreError::OtherKey));
    // A config without that peer, with another one: nothing is carried, the new one starts
    // fresh.
    let mut changed = device(GW_SECRET, &[OTHER_SECRET], t0);
    let done = changed.restore(&state, t0).unwrap();
    assert_eq!((done.peers, done.keypairs, done.gone), (0, 0, 1));
    assert!(installed(&commands(&mut changed)).is_empty());
}

#[test]
fn resuming_after_a_failed_hand_off_skips_the_new_process_counters() {
    let t0 = Instant::now();
    let mut old = device(GW_SECRET, &[CL_SECRET], t0);
    deliver(&mut old, &initiation(t0), t0);
    let [(kp, _)] = &installed(&commands(&mut old))[..] else {
        panic!("one keypair");
    };
    assert_eq!(kp.reserve(3), Some(0));
    let _ = old.capture(t0);
    old.resume_after_handoff();
    assert_eq!(kp.reserve(1), Some(3 + 2 * HANDOFF_SEND_GAP));
}
