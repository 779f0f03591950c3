//! Helpers for tests that drive a [`Device`] sans-IO on a virtual clock.

use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use rand_core::OsRng;
use veil_control::device::Device;
use veil_control::{PeerHandshake, StaticIdentity};
use veil_dataplane::link::{Command, Event, HandshakeDatagram};
use veil_dataplane::pipeline::ControlDriver;

/// The gateway's static secret in these tests.
pub const GW_SECRET: [u8; 32] = [0x11; 32];

pub fn addr(s: &str) -> SocketAddr {
    s.parse().expect("literal address")
}

/// A real initiation from the client with `client_secret` to the gateway, sent from `from` at
/// `now`. Wall time follows the virtual clock from `t0`, so TAI64N timestamps keep increasing.
pub fn send_initiation(
    dev: &mut Device,
    client_secret: [u8; 32],
    from: &str,
    t0: Instant,
    now: Instant,
) {
    let gw_pub = *StaticIdentity::from_secret(GW_SECRET).public_key();
    let client = StaticIdentity::from_secret(client_secret);
    let mut hs = PeerHandshake::new(&client, gw_pub, None);
    let wall = SystemTime::now() + now.saturating_duration_since(t0);
    let init = hs
        .create_initiation(&client, 7, now, wall, &mut OsRng)
        .expect("initiation");
    let msg = HandshakeDatagram::new(&init, addr(from), None).expect("datagram");
    dev.on_handshake(msg, now);
}

/// Every command the device has queued.
pub fn commands(dev: &mut Device) -> Vec<Command> {
    std::iter::from_fn(|| dev.poll_command()).collect()
}

/// Hand the device an event and return the commands it queued.
pub fn event(dev: &mut Device, ev: Event, now: Instant) -> Vec<Command> {
    dev.on_event(ev, now);
    commands(dev)
}

/// A control counter by name (0 if there is none).
pub fn counter(dev: &Device, name: &str) -> u64 {
    dev.counters()
        .snapshot()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map_or(0, |(_, v)| v)
}
