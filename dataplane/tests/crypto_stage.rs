#![allow(clippy::unwrap_used)]
//! The crypto stage between two peers, without threads or a kernel.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use veil_dataplane::batch::{buffer_size, Action, Batch, Home, LocalAddr, Source};
use veil_dataplane::link::{Command, Epoch, Event, KeypairRole, PeerId, PeerStats};
use veil_dataplane::stage::crypto::{HELD_OVERHEAD, MAX_STAGED};
use veil_dataplane::stage::CryptoStage;
use veil_dataplane::timing::Timing;
use veil_dataplane::Keypair;

const A_ADDR: &str = "192.0.2.1:51820";
const B_ADDR: &str = "192.0.2.2:51820";

fn ipv4(src: [u8; 4], dst: [u8; 4], payload: usize) -> Vec<u8> {
    let len = 20 + payload;
    let mut p = vec![0u8; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    for (i, b) in p[20..].iter_mut().enumerate() {
        *b = i as u8;
    }
    p
}

struct Side {
    stage: CryptoStage,
    events: Vec<Event>,
}

fn side(now: Instant, allowed: &str, endpoint: &str) -> Side {
    side_with(now, allowed, Some(endpoint.parse().unwrap()))
}

/// [`side`] with the peer's endpoint (none: a gateway's client, whose endpoint is learnt).
fn side_with(now: Instant, allowed: &str, endpoint: Option<SocketAddr>) -> Side {
    let mut stage = CryptoStage::new(Timing::default(), Epoch::new(now), Arc::default());
    stage.apply(
        Command::AddPeer {
            peer: PeerId(0),
            allowed_ips: vec![allowed.parse().unwrap()],
            endpoint,
            stats: Arc::new(PeerStats::default()),
        },
        now,
    );
    Side {
        stage,
        events: Vec::new(),
    }
}

fn install(a: &mut Side, b: &mut Side, now: Instant) {
    let k1 = [7u8; 32];
    let k2 = [9u8; 32];
    let ka = Keypair::new(&k1, &k2, 100, 200, now, true);
    let kb = Keypair::new(&k2, &k1, 200, 100, now, false);
    a.stage.apply(
        Command::InstallKeypair {
            peer: PeerId(0),
            keypair: Arc::new(ka),
            role: KeypairRole::Initiator,
            announce: true,
        },
        now,
    );
    b.stage.apply(
        Command::InstallKeypair {
            peer: PeerId(0),
            keypair: Arc::new(kb),
            role: KeypairRole::Responder,
            announce: true,
        },
        now,
    );
}

fn tun_batch(pkts: &[Vec<u8>]) -> Batch {
    let mut b = Batch::new(Home::Rx, buffer_size(1420));
    b.clear(Source::Tun);
    for (i, p) in pkts.iter().enumerate() {
        let (buf, meta) = b.packet_mut(i).unwrap();
        buf[16..16 + p.len()].copy_from_slice(p);
        meta.offset = 16;
        meta.len = p.len();
    }
    b.len = pkts.len();
    b
}

/// What TX would send over UDP, received by the other side as a UDP batch.
fn carry(out: &Batch, from: &str) -> Batch {
    let mut b = Batch::new(Home::Rx, buffer_size(1420));
    b.clear(Source::Udp);
    let mut n = 0;
    for i in 0..out.len {
        let (bytes, meta) = out.packet(i).unwrap();
        if meta.action != Action::Udp {
            continue;
        }
        let (buf, m) = b.packet_mut(n).unwrap();
        buf[..bytes.len()].copy_from_slice(bytes);
        m.offset = 0;
        m.len = bytes.len();
        m.addr = from.parse::<SocketAddr>().unwrap();
        n += 1;
    }
    b.len = n;
    b
}

/// The two ends: A allows `a_allows` behind B, B allows A's 10.0.0.1.
fn sides(now: Instant, a_allows: &str) -> (Side, Side) {
    (
        side(now, a_allows, B_ADDR),
        side(now, "10.0.0.1/32", A_ADDR),
    )
}

/// [`sides`] (A allows 10.0.0.2) with a keypair installed on both.
fn installed(now: Instant) -> (Side, Side) {
    let (mut a, mut b) = sides(now, "10.0.0.2/32");
    install(&mut a, &mut b, now);
    (a, b)
}

/// `pkts` read from `from`'s TUN, sealed, carried over UDP from `addr` and processed by `to`:
/// the batch as `to` left it.
fn cross(from: &mut Side, to: &mut Side, pkts: &[Vec<u8>], addr: &str, at: Instant) -> Batch {
    let mut batch = tun_batch(pkts);
    from.stage.process(&mut batch, at, &mut from.events);
    let mut wire = carry(&batch, addr);
    to.stage.process(&mut wire, at, &mut to.events);
    wire
}

fn delivered(b: &Batch) -> usize {
    (0..b.len)
        .filter(|&i| b.packet(i).unwrap().1.action == Action::Tun)
        .count()
}

#[test]
fn packets_cross_both_ways_and_replays_drop() {
    let now = Instant::now();
    let (mut a, mut b) = installed(now);
    // The initiator confirms the session with a keepalive right after installing.
    let mut orig = Batch::new(Home::Crypto, buffer_size(1420));
    assert!(a.stage.has_originated());
    a.stage.originate(&mut orig, now, &mut a.events);
    assert_eq!(orig.len, 1);
    let mut ka = carry(&orig, A_ADDR);
    b.stage.process(&mut ka, now, &mut b.events);
    assert_eq!(
        b.stage
            .counters()
            .keepalives_received
            .load(Ordering::Relaxed),
        1
    );

    let pkts: Vec<Vec<u8>> = (0..10)
        .map(|i| ipv4([10, 0, 0, 1], [10, 0, 0, 2], 100 + i))
        .collect();
    let mut batch = tun_batch(&pkts);
    a.stage.process(&mut batch, now, &mut a.events);
    let mut wire = carry(&batch, A_ADDR);
    assert_eq!(wire.len, 10);
    let mut replay = carry(&batch, A_ADDR);
    b.stage.process(&mut wire, now, &mut b.events);
    for (i, p) in pkts.iter().enumerate() {
        let (bytes, meta) = wire.packet(i).unwrap();
        assert_eq!(meta.action, Action::Tun);
        assert_eq!(bytes, &p[..]);
    }
    b.stage.process(&mut replay, now, &mut b.events);
    assert_eq!(delivered(&replay), 0);
    assert_eq!(b.stage.counters().drop_replay.load(Ordering::Relaxed), 10);

    // And back, now that the responder's keypair is confirmed.
    let back = vec![ipv4([10, 0, 0, 2], [10, 0, 0, 1], 50)];
    let wire = cross(&mut b, &mut a, &back, B_ADDR, now);
    assert_eq!(wire.packet(0).unwrap().0, &back[0][..]);
    assert!(
        a.events.is_empty(),
        "no roaming or handshake events: {:?}",
        a.events
    );
}

#[test]
fn inner_source_outside_allowed_ips_is_dropped() {
    let now = Instant::now();
    let (mut a, mut b) = sides(now, "10.0.0.0/24");
    install(&mut a, &mut b, now);
    let spoofed = vec![ipv4([10, 0, 0, 66], [10, 0, 0, 2], 10)];
    let wire = cross(&mut a, &mut b, &spoofed, A_ADDR, now);
    assert_eq!(delivered(&wire), 0);
    assert_eq!(
        b.stage
            .counters()
            .drop_source_not_allowed
            .load(Ordering::Relaxed),
        1
    );
}

/// Seal what `a` has to originate and open it at `b`: the data packets delivered.
fn flush(a: &mut Side, b: &mut Side, now: Instant) -> usize {
    let mut out = Batch::new(Home::Crypto, buffer_size(1420));
    let mut total = 0;
    while a.stage.has_originated() {
        a.stage.originate(&mut out, now, &mut a.events);
        let mut wire = carry(&out, A_ADDR);
        b.stage.process(&mut wire, now, &mut b.events);
        total += delivered(&wire);
    }
    total
}

#[test]
fn staged_until_handshake_then_flushed() {
    let now = Instant::now();
    let (mut a, mut b) = sides(now, "10.0.0.2/32");
    let pkts: Vec<Vec<u8>> = (0..200)
        .map(|i| ipv4([10, 0, 0, 1], [10, 0, 0, 2], i % 60))
        .collect();
    for chunk in pkts.chunks(50) {
        let mut batch = tun_batch(chunk);
        a.stage.process(&mut batch, now, &mut a.events);
    }
    assert_eq!(a.stage.staged_len(PeerId(0)), MAX_STAGED);
    assert_eq!(
        a.stage
            .counters()
            .drop_staged_overflow
            .load(Ordering::Relaxed),
        200 - MAX_STAGED as u64
    );
    assert!(
        matches!(a.events[..], [Event::HandshakeNeeded { .. }]),
        "asked once: {:?}",
        a.events
    );
    install(&mut a, &mut b, now + Duration::from_millis(10));
    let total = flush(&mut a, &mut b, now);
    assert_eq!(total, MAX_STAGED, "the newest staged packets arrive");
}

#[test]
fn a_session_holds_no_more_than_its_memory_limit() {
    let now = Instant::now();
    let (mut a, mut b) = sides(now, "10.0.0.2/32");
    // 8 KiB: seven staged 1,000-byte packets (each costs its bytes and HELD_OVERHEAD).
    let limit = 8 * 1024;
    a.stage
        .apply(Command::SetSessionMemory { bytes: Some(limit) }, now);
    let pkts: Vec<Vec<u8>> = (0..20)
        .map(|_| ipv4([10, 0, 0, 1], [10, 0, 0, 2], 980))
        .collect();
    let mut batch = tun_batch(&pkts);
    a.stage.process(&mut batch, now, &mut a.events);
    let fit = limit / (1000 + HELD_OVERHEAD);
    let dropped = |s: &CryptoStage| s.counters().drop_session_memory.load(Ordering::Relaxed);
    assert_eq!(a.stage.staged_len(PeerId(0)), fit);
    assert_eq!(a.stage.held_bytes(PeerId(0)), fit * (1000 + HELD_OVERHEAD));
    assert_eq!(
        dropped(&a.stage),
        (20 - fit) as u64,
        "every packet over the limit counted"
    );
    // Control work queued for the full session is refused too, and counted.
    let frame = veil_dataplane::wire::ControlFrame::MigrationTokenRequest;
    for _ in 0..200 {
        a.stage.apply(
            Command::SendFrame {
                peer: PeerId(0),
                frame,
            },
            now,
        );
    }
    assert!(a.stage.held_bytes(PeerId(0)) <= limit);
    assert!(
        dropped(&a.stage) > (20 - fit) as u64,
        "frames over the limit not counted"
    );
    // The handshake completes: what was held goes out and the session holds nothing.
    install(&mut a, &mut b, now + Duration::from_millis(10));
    let total = flush(&mut a, &mut b, now);
    assert_eq!(total, fit, "the newest staged packets arrive");
    assert_eq!(a.stage.held_bytes(PeerId(0)), 0);
}

#[test]
fn clearing_a_peer_leaves_an_index_given_to_another_peer_since() {
    // The control thread hands out an index again only once its keypair expired; the old
    // holder's slot may still hold that keypair. Clearing it must not unhook the new one.
    let now = Instant::now();
    let (mut a, mut b) = installed(now);
    let second = Command::AddPeer {
        peer: PeerId(1),
        allowed_ips: vec!["10.0.0.1/32".parse().unwrap()],
        endpoint: Some(A_ADDR.parse().unwrap()),
        stats: Arc::new(PeerStats::default()),
    };
    b.stage.apply(second, now);
    // Peer 1 gets index 200 (peer 0's) with the keys A seals with.
    let again = Keypair::new(&[9u8; 32], &[7u8; 32], 200, 100, now, true);
    b.stage.apply(
        Command::InstallKeypair {
            peer: PeerId(1),
            keypair: Arc::new(again),
            role: KeypairRole::Initiator,
            announce: false,
        },
        now,
    );
    b.stage.apply(
        Command::ClearKeypairs {
            peer: PeerId(0),
            goodbye: None,
        },
        now,
    );
    let wire = cross(
        &mut a,
        &mut b,
        &[ipv4([10, 0, 0, 1], [10, 0, 0, 2], 10)],
        A_ADDR,
        now,
    );
    let c = b.stage.counters();
    assert_eq!(
        c.drop_unknown_index.load(Ordering::Relaxed),
        0,
        "peer 1's index was lost"
    );
    assert_eq!(c.decrypted.load(Ordering::Relaxed), 1);
    assert_eq!(delivered(&wire), 1);
}

#[test]
fn standard_peer_roams_at_once() {
    let now = Instant::now();
    let (mut a, mut b) = installed(now);
    for (i, new_addr) in ["198.51.100.9:4000", "198.51.100.10:4000", B_ADDR]
        .into_iter()
        .enumerate()
    {
        let mut batch = tun_batch(&[ipv4([10, 0, 0, 1], [10, 0, 0, 2], 10)]);
        a.stage.process(&mut batch, now, &mut a.events);
        let mut wire = carry(&batch, new_addr);
        b.stage.process(&mut wire, now, &mut b.events);
        assert_eq!(
            delivered(&wire),
            1,
            "move {i}: the first packet is delivered"
        );
        let told = b.events.iter().any(
            |e| matches!(e, Event::EndpointChanged { addr, .. } if addr.to_string() == new_addr),
        );
        assert!(told, "move {i}: the control thread is told");
        // Our next packet goes to the new address.
        let mut out = tun_batch(&[ipv4([10, 0, 0, 2], [10, 0, 0, 1], 10)]);
        b.stage.process(&mut out, now, &mut b.events);
        let sent_to: Vec<String> = (0..out.len)
            .filter_map(|i| out.packet(i))
            .filter(|(_, m)| m.action == Action::Udp)
            .map(|(_, m)| m.addr.to_string())
            .collect();
        assert_eq!(sent_to, vec![new_addr.to_string()], "move {i}");
    }
    let counters = b.stage.counters();
    assert_eq!(counters.drop_unapproved_source.load(Ordering::Relaxed), 0);
    assert_eq!(counters.roamed.load(Ordering::Relaxed), 3);
}

/// The control thread's verdict on peer 0's move to `addr`: take it as the endpoint, or refuse it.
fn answer_roam(side: &mut Side, accept: bool, addr: SocketAddr, now: Instant) {
    let peer = PeerId(0);
    let verdict = if accept {
        Command::SetEndpoint {
            peer,
            endpoint: addr,
            local: None,
        }
    } else {
        Command::RefuseEndpoint { peer, addr }
    };
    side.stage.apply(verdict, now);
}

#[test]
fn validated_roaming_waits_for_approval() {
    let now = Instant::now();
    let (mut a, mut b) = installed(now);
    b.stage.apply(
        Command::SetRoaming {
            peer: PeerId(0),
            validated: true,
        },
        now,
    );
    let new_addr = "198.51.100.9:4000";
    let send = |a: &mut Side, b: &mut Side, at: Instant| {
        let pkt = ipv4([10, 0, 0, 1], [10, 0, 0, 2], 10);
        delivered(&cross(a, b, &[pkt], new_addr, at))
    };
    assert_eq!(
        send(&mut a, &mut b, now),
        0,
        "not delivered before approval"
    );
    let reports = |b: &Side| {
        b.events
            .iter()
            .filter(|e| matches!(e, Event::EndpointChanged { addr, .. } if addr.to_string() == new_addr))
            .count()
    };
    assert_eq!(reports(&b), 1);
    // Refused: still dropped, not reported again within a second.
    answer_roam(&mut b, false, new_addr.parse().unwrap(), now);
    assert_eq!(send(&mut a, &mut b, now + Duration::from_millis(10)), 0);
    assert_eq!(reports(&b), 1);
    assert_eq!(send(&mut a, &mut b, now + Duration::from_secs(2)), 0);
    assert_eq!(reports(&b), 2, "asked again after a second");
    assert_eq!(
        b.stage
            .counters()
            .drop_unapproved_source
            .load(Ordering::Relaxed),
        3
    );
    // Accepted: delivered from then on.
    answer_roam(&mut b, true, new_addr.parse().unwrap(), now);
    assert_eq!(send(&mut a, &mut b, now + Duration::from_secs(2)), 1);
}

#[test]
fn goodbye_is_sealed_before_keys_are_wiped() {
    let now = Instant::now();
    let (mut a, mut b) = installed(now);
    let mut out = Batch::new(Home::Crypto, buffer_size(1420));
    a.stage.originate(&mut out, now, &mut a.events); // the confirming keepalive
    let mut wire = carry(&out, A_ADDR);
    b.stage.process(&mut wire, now, &mut b.events);
    b.stage.apply(
        Command::ClearKeypairs {
            peer: PeerId(0),
            goodbye: Some(1),
        },
        now,
    );
    b.stage.originate(&mut out, now, &mut b.events);
    assert_eq!(out.len, 1);
    let mut wire = carry(&out, B_ADDR);
    a.stage.process(&mut wire, now, &mut a.events);
    assert!(a.events.iter().any(|e| matches!(
        e,
        Event::Frame {
            frame: veil_dataplane::wire::ControlFrame::Goodbye { reason: 1 },
            ..
        }
    )));
    // B has no keys left: data to A is staged, not sent.
    let mut batch = tun_batch(&[ipv4([10, 0, 0, 2], [10, 0, 0, 1], 10)]);
    b.stage.process(&mut batch, now, &mut b.events);
    assert_eq!(b.stage.staged_len(PeerId(0)), 1);
}

#[test]
fn expired_keypair_is_not_used() {
    let now = Instant::now();
    let (mut a, _b) = installed(now);
    let later = now + Timing::default().reject_after;
    let mut batch = tun_batch(&[ipv4([10, 0, 0, 1], [10, 0, 0, 2], 10)]);
    a.stage.process(&mut batch, later, &mut a.events);
    assert_eq!(
        a.stage.staged_len(PeerId(0)),
        1,
        "staged, not sent with an expired key"
    );
    assert!(a
        .events
        .iter()
        .any(|e| matches!(e, Event::HandshakeNeeded { .. })));
}

#[test]
fn control_frames_are_rate_limited_per_peer_before_parsing() {
    let now = Instant::now();
    let (mut a, mut b) = installed(now);
    let frames_seen = |b: &Side| {
        b.events
            .iter()
            .filter(|e| matches!(e, Event::Frame { .. }))
            .count()
    };
    // 40 frames at once (plus the confirming keepalive): the burst of 20 passes.
    let flood = |a: &mut Side, b: &mut Side, n: usize, at: Instant| {
        for _ in 0..n {
            a.stage.apply(
                Command::SendFrame {
                    peer: PeerId(0),
                    frame: veil_dataplane::wire::ControlFrame::Probe,
                },
                at,
            );
        }
        while a.stage.has_originated() {
            let mut out = Batch::new(Home::Crypto, buffer_size(1420));
            a.stage.originate(&mut out, at, &mut a.events);
            let mut wire = carry(&out, A_ADDR);
            b.stage.process(&mut wire, at, &mut b.events);
        }
    };
    flood(&mut a, &mut b, 40, now);
    assert_eq!(frames_seen(&b), 20);
    let limited = |b: &Side| {
        b.stage
            .counters()
            .drop_frame_rate_limited
            .load(Ordering::Relaxed)
    };
    assert_eq!(limited(&b), 20);
    // A second later, ten more fit.
    flood(&mut a, &mut b, 10, now + Duration::from_secs(1));
    assert_eq!(frames_seen(&b), 30);
    assert_eq!(limited(&b), 20);
}

/// The local addresses B sends its next packet to A from, after A's packets arrived on `local`.
fn sends_from(a: &mut Side, b: &mut Side, local: &str, now: Instant) -> Vec<Option<LocalAddr>> {
    let mut batch = tun_batch(&[ipv4([10, 0, 0, 1], [10, 0, 0, 2], 10)]);
    a.stage.process(&mut batch, now, &mut a.events);
    let mut wire = carry(&batch, A_ADDR);
    for i in 0..wire.len {
        wire.packet_mut(i).unwrap().1.local = Some(LocalAddr {
            ip: local.parse().unwrap(),
            ifindex: 2,
        });
    }
    b.stage.process(&mut wire, now, &mut b.events);
    assert_eq!(delivered(&wire), 1);
    let mut out = tun_batch(&[ipv4([10, 0, 0, 2], [10, 0, 0, 1], 10)]);
    b.stage.process(&mut out, now, &mut b.events);
    (0..out.len)
        .filter_map(|i| out.packet(i))
        .filter(|(_, m)| m.action == Action::Udp)
        .map(|(_, m)| m.local)
        .collect()
}

#[test]
fn replies_name_the_local_address_the_peer_talks_to() {
    let now = Instant::now();
    // B is a gateway: its peer A has no configured endpoint, so B keeps our address A's
    // packets arrive on, following every authenticated packet.
    let mut a = side(now, "10.0.0.2/32", B_ADDR);
    let mut b = side_with(now, "10.0.0.1/32", None);
    install(&mut a, &mut b, now);
    let at = |ip: &str| LocalAddr {
        ip: ip.parse().unwrap(),
        ifindex: 2,
    };
    assert_eq!(
        sends_from(&mut a, &mut b, "192.0.2.11", now),
        vec![Some(at("192.0.2.11"))]
    );
    assert_eq!(
        sends_from(&mut a, &mut b, "192.0.2.12", now),
        vec![Some(at("192.0.2.12"))]
    );
    // A peer we are the client of (a configured endpoint) follows the route's source.
    let (mut a2, mut b2) = installed(now);
    assert_eq!(sends_from(&mut a2, &mut b2, "192.0.2.11", now), vec![None]);
}
