//! The pause of a live hand-off (issue 15) for 1, 1,000 and 10,000 sessions: what traffic waits
//! for between the old process stopping its reads and the new one holding every session. Each
//! step as the runtime does it: the control thread's capture, the byte form, sealing with
//! ChaCha20-Poly1305, the transfer over a Unix socket, opening, decoding and the new device's
//! restore (the new process built that device from its config before it connected). Not in
//! it: the fixed 20 ms the old process waits for in-flight packets
//! (`runtime::handoff::SETTLE`) and the new process's threads starting (a few ms; the
//! end-to-end test logs the whole pause, "took over from pid N (… from the connection to the
//! confirmation)").
//!
//! `cargo bench -p veil-control --bench handoff_pause [-- N...]`: the sessions are real (a
//! handshake each, sans-IO, on a virtual clock); the median of 5 runs per size.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant, SystemTime};

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::ChaCha20Poly1305;
use rand_core::OsRng;
use veil_control::device::{Device, PeerSpec};
use veil_control::handoff::{decode, encode};
use veil_control::{PeerHandshake, StaticIdentity};
use veil_dataplane::link::{Command, Epoch, HandshakeDatagram};
use veil_dataplane::pipeline::ControlDriver;
use veil_dataplane::timing::Timing;

const GW: [u8; 32] = [0x11; 32];

fn client_secret(i: usize) -> [u8; 32] {
    let mut s = [0x5a; 32];
    // Not in the first byte: clamping clears its low bits.
    s[8..16].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    s
}

fn device(n: usize, now: Instant, wall: SystemTime) -> Device {
    let mut dev = Device::new(&GW, Timing::default(), Epoch::new(now), (now, wall), OsRng);
    for i in 0..n {
        let ip = format!("10.{}.{}.{}/32", i >> 16, (i >> 8) & 255, i & 255);
        dev.add_peer(PeerSpec {
            public_key: *StaticIdentity::from_secret(client_secret(i)).public_key(),
            preshared_key: None,
            allowed_ips: vec![ip.parse().expect("address")],
            endpoint: None,
            persistent_keepalive: None,
        })
        .expect("peer");
    }
    while dev.poll_command().is_some() {}
    dev
}

/// A gateway with `n` live sessions, each keypair used (confirmed, some counters spent).
fn gateway(n: usize, t0: Instant, wall0: SystemTime) -> (Device, Instant) {
    let mut dev = device(n, t0, wall0);
    let gw_pub = *StaticIdentity::from_secret(GW).public_key();
    let mut now = t0;
    for i in 0..n {
        // Virtual time between initiations, so the handshake work budget never runs dry.
        now += Duration::from_millis(10);
        let client = StaticIdentity::from_secret(client_secret(i));
        let mut hs = PeerHandshake::new(&client, gw_pub, None);
        let wall = wall0 + now.saturating_duration_since(t0);
        let init = hs
            .create_initiation(&client, 7, now, wall, &mut OsRng)
            .expect("initiation");
        let src: SocketAddr = format!("198.18.{}.{}:40000", (i >> 8) & 255, i & 255)
            .parse()
            .expect("address");
        dev.on_handshake(
            HandshakeDatagram::new(&init, src, None).expect("datagram"),
            now,
        );
        while let Some(c) = dev.poll_command() {
            if let Command::InstallKeypair { keypair, .. } = c {
                keypair.confirm();
                let _ = keypair.reserve(1000);
            }
        }
        while dev.poll_transmit().is_some() {}
    }
    (dev, now)
}

/// One pause: every step, timed (in order: capture, encode, seal, transfer, open, decode,
/// restore); returns the steps and the state's bytes. The new process built its device from
/// its config before it connected (`runtime::start`), so that is not in the pause.
fn pause(old: &Device, now: Instant, wall: SystemTime, n: usize) -> ([Duration; 7], usize) {
    let mut new = device(n, now, wall);
    let mut steps = [Duration::ZERO; 7];
    let mut lap = Instant::now();
    let mut mark = |i: usize| {
        steps[i] = lap.elapsed();
        lap = Instant::now();
    };
    let state = old.capture(now);
    mark(0);
    let plain = encode(&state);
    drop(state);
    mark(1);
    let cipher = ChaCha20Poly1305::new(&[7u8; 32].into());
    let sealed = cipher.encrypt(&[0u8; 12].into(), &plain[..]).expect("seal");
    mark(2);
    let (mut a, mut b) = UnixStream::pair().expect("socket pair");
    let len = sealed.len();
    let writer = std::thread::spawn(move || a.write_all(&sealed).expect("write"));
    let mut got = vec![0u8; len];
    b.read_exact(&mut got).expect("read");
    writer.join().expect("writer");
    mark(3);
    let opened = cipher.decrypt(&[0u8; 12].into(), &got[..]).expect("open");
    mark(4);
    let back = decode(&opened).expect("decode");
    mark(5);
    let done = new.restore(&back, now).expect("restore");
    mark(6);
    assert_eq!(done.peers, n);
    (steps, plain.len())
}

const STEPS: [&str; 7] = [
    "capture", "encode", "seal", "transfer", "open", "decode", "restore",
];

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1, 1000, 10_000]
    } else {
        sizes
    };
    for n in sizes {
        let (t0, wall0) = (Instant::now(), SystemTime::now());
        let (old, now) = gateway(n, t0, wall0);
        let wall = wall0 + now.saturating_duration_since(t0);
        let mut runs: Vec<(Duration, [Duration; 7], usize)> = (0..5)
            .map(|_| {
                let (steps, bytes) = pause(&old, now, wall, n);
                (steps.iter().sum(), steps, bytes)
            })
            .collect();
        runs.sort();
        let (median, steps, bytes) = runs[2];
        let parts: Vec<String> = STEPS
            .iter()
            .zip(steps)
            .map(|(name, d)| format!("{name} {:.2}", d.as_secs_f64() * 1e3))
            .collect();
        println!(
            "handoff_pause sessions={n} state_bytes={bytes} pause_ms={:.2} (min {:.2}, max {:.2}; median run: {})",
            median.as_secs_f64() * 1e3,
            runs[0].0.as_secs_f64() * 1e3,
            runs[4].0.as_secs_f64() * 1e3,
            parts.join(", ")
        );
    }
}
