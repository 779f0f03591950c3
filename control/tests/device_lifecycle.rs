//! The control thread's lifecycle and migration policy, sans-IO on a virtual
//! clock: a real handshake creates the session, then events and time drive it.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use rand_core::OsRng;
use veil_control::device::{Device, PeerSpec, DRAIN_GRACE, DRAIN_QUIET_HOLD};
use veil_control::migration::MigrationPolicy;
use veil_control::session::SessionPolicy;
use veil_control::StaticIdentity;
use veil_dataplane::link::{Command, Epoch, Event, PeerId};
use veil_dataplane::pipeline::ControlDriver;
use veil_dataplane::timing::Timing;
use veil_dataplane::wire::{ControlFrame, MIGRATION_TOKEN_LEN};

mod common;
use common::device::{addr, commands, counter, event, send_initiation, GW_SECRET};

const CL_SECRET: [u8; 32] = [0x22; 32];

struct Gateway {
    dev: Device,
    t0: Instant,
    epoch: Epoch,
    peer: PeerId,
}

fn gateway(sessions: SessionPolicy) -> Gateway {
    let t0 = Instant::now();
    let epoch = Epoch::new(t0);
    let mut dev = Device::new(
        &GW_SECRET,
        Timing::default(),
        epoch,
        (t0, SystemTime::now()),
        OsRng,
    );
    dev.set_policies(sessions, MigrationPolicy::default());
    let client = StaticIdentity::from_secret(CL_SECRET);
    let peer = dev
        .add_peer(PeerSpec {
            public_key: *client.public_key(),
            preshared_key: None,
            allowed_ips: vec!["10.0.0.2/32".parse().unwrap()],
            endpoint: None,
            persistent_keepalive: None,
        })
        .unwrap();
    let mut g = Gateway {
        dev,
        t0,
        epoch,
        peer,
    };
    g.handshake(t0, "192.0.2.2:5000");
    g
}

impl Gateway {
    fn handshake(&mut self, now: Instant, from: &str) {
        send_initiation(&mut self.dev, CL_SECRET, from, self.t0, now);
    }

    fn commands(&mut self) -> Vec<Command> {
        commands(&mut self.dev)
    }

    fn event(&mut self, ev: Event, now: Instant) -> Vec<Command> {
        event(&mut self.dev, ev, now)
    }

    fn frame(&mut self, frame: ControlFrame, from: &str, now: Instant) -> Vec<Command> {
        self.event(
            Event::Frame {
                peer: self.peer,
                frame,
                from: addr(from),
            },
            now,
        )
    }

    /// A migration frame carrying `token`, arriving from `from`.
    fn migrate(
        &mut self,
        token: [u8; MIGRATION_TOKEN_LEN],
        from: &str,
        now: Instant,
    ) -> Vec<Command> {
        self.frame(ControlFrame::Migrate { token }, from, now)
    }

    fn roam(&mut self, to: &str, now: Instant) -> Vec<Command> {
        self.event(
            Event::EndpointChanged {
                peer: self.peer,
                addr: addr(to),
                local: None,
            },
            now,
        )
    }

    fn tick(&mut self, now: Instant) -> Vec<Command> {
        self.dev.on_timeout(now);
        self.commands()
    }

    fn token(&mut self, now: Instant) -> [u8; MIGRATION_TOKEN_LEN] {
        let cmds = self.frame(ControlFrame::MigrationTokenRequest, "192.0.2.2:5000", now);
        cmds.iter()
            .find_map(|c| match c {
                Command::SendFrame {
                    frame: ControlFrame::MigrationTokenGrant { token, .. },
                    ..
                } => Some(*token),
                _ => None,
            })
            .expect("a token grant")
    }

    fn secs(&self, s: u64) -> Instant {
        self.t0 + Duration::from_secs(s)
    }

    fn counter(&self, name: &str) -> u64 {
        counter(&self.dev, name)
    }
}

fn accepted(cmds: &[Command], to: &str) -> bool {
    cmds.iter()
        .any(|c| matches!(c, Command::SetEndpoint { endpoint, .. } if *endpoint == addr(to)))
}

fn refused(cmds: &[Command], to: &str) -> bool {
    cmds.iter()
        .any(|c| matches!(c, Command::RefuseEndpoint { addr: a, .. } if *a == addr(to)))
}

#[test]
fn migration_policy_cooldown_token_replay_and_limit() {
    let mut g = gateway(SessionPolicy::default());
    g.commands();
    assert_eq!(g.counter("sessions_created"), 1);
    let token = g.token(g.secs(1));

    // First migration: no cooldown yet.
    let c = g.roam("198.51.100.1:6000", g.secs(2));
    assert!(accepted(&c, "198.51.100.1:6000"), "{c:?}");
    // Inside the cooldown without a token: refused.
    let c = g.roam("198.51.100.2:6000", g.secs(3));
    assert!(refused(&c, "198.51.100.2:6000"), "{c:?}");
    // With a token, inside the cooldown: accepted at once.
    let c = g.migrate(token, "198.51.100.2:6000", g.secs(3));
    assert!(accepted(&c, "198.51.100.2:6000"), "{c:?}");
    // The same token again: refused.
    let c = g.migrate(token, "198.51.100.3:6000", g.secs(4));
    assert!(
        refused(&c, "198.51.100.3:6000"),
        "replayed token accepted: {c:?}"
    );
    // A forged token: refused.
    let mut forged = g.token(g.secs(4));
    forged[30] ^= 1;
    let c = g.migrate(forged, "198.51.100.3:6000", g.secs(4));
    assert!(refused(&c, "198.51.100.3:6000"));
    // Migrations 3, 4, 5 after each cooldown, then the sixth is refused even with a token.
    for (i, s) in [(3u64, 20u64), (4, 40), (5, 60)] {
        let to = format!("198.51.100.{}:6000", 10 + i);
        let c = g.roam(&to, g.secs(s));
        assert!(accepted(&c, &to), "migration {i}: {c:?}");
    }
    let token = g.token(g.secs(80));
    let c = g.migrate(token, "198.51.100.99:6000", g.secs(80));
    assert!(
        refused(&c, "198.51.100.99:6000"),
        "sixth migration accepted: {c:?}"
    );
    assert_eq!(g.counter("migrations_accepted"), 5);
    assert!(g.counter("migrations_refused") >= 4);
}

#[test]
fn expired_token_is_refused() {
    let mut g = gateway(SessionPolicy::default());
    let token = g.token(g.secs(1));
    let ttl = MigrationPolicy::default().token_ttl.as_secs();
    // Keep the session alive: data flows all along.
    let stats = g.dev.peers()[0].stats.clone();
    stats
        .last_rx_data
        .store(g.epoch.nanos(g.secs(ttl + 1)), Ordering::Relaxed);
    stats
        .last_rx_any
        .store(g.epoch.nanos(g.secs(ttl + 1)), Ordering::Relaxed);
    let c = g.migrate(token, "198.51.100.5:6000", g.secs(ttl + 2));
    assert!(refused(&c, "198.51.100.5:6000"), "{c:?}");
}

#[test]
fn idle_session_warns_then_expires_and_a_new_handshake_starts_another() {
    let sessions = SessionPolicy {
        session_timeout: Duration::from_secs(30),
        idle_warning: Duration::from_secs(20),
        ..SessionPolicy::default()
    };
    let mut g = gateway(sessions);
    // The client is a veil peer: it asked for a token.
    g.token(g.secs(0));
    let stats = g.dev.peers()[0].stats.clone();
    let mut warned = None;
    let mut expired = None;
    for s in 1..=40 {
        // Keepalives keep arriving; no data.
        stats
            .last_rx_any
            .store(g.epoch.nanos(g.secs(s)), Ordering::Relaxed);
        for c in g.tick(g.secs(s)) {
            match c {
                Command::SendFrame {
                    frame: ControlFrame::IdleWarning { seconds_left },
                    ..
                } => warned = Some((s, seconds_left)),
                Command::ClearKeypairs { goodbye, .. } => expired = Some((s, goodbye)),
                _ => {}
            }
        }
    }
    assert_eq!(warned, Some((20, 10)));
    assert_eq!(
        expired,
        Some((30, Some(veil_dataplane::wire::GOODBYE_EXPIRED)))
    );
    assert_eq!(g.counter("sessions_expired"), 1);
    g.handshake(g.secs(41), "192.0.2.2:5000");
    assert_eq!(g.counter("sessions_created"), 2);
}

/// Ticks a gateway whose peer stays silent: (probes sent, when the session ended), in tenths
/// of a second. A veil peer (it sent a frame) is probed; a standard peer never is.
fn silent_peer(veil: bool) -> (Vec<u64>, Option<u64>) {
    let sessions = SessionPolicy {
        probe_after: Duration::from_secs(10),
        probe_interval: Duration::from_secs(5),
        probe_count: 2,
        ..SessionPolicy::default()
    };
    let mut g = gateway(sessions);
    if veil {
        g.frame(ControlFrame::Probe, "192.0.2.2:5000", g.t0);
    }
    g.commands();
    let mut probes = vec![];
    let mut ended = None;
    for tenth in 1..300u64 {
        let now = g.t0 + Duration::from_millis(tenth * 100);
        for c in g.tick(now) {
            match c {
                Command::SendFrame {
                    frame: ControlFrame::Probe,
                    ..
                } => probes.push(tenth),
                Command::ClearKeypairs { .. } => ended = Some(tenth),
                _ => {}
            }
        }
        if ended.is_some() {
            break;
        }
    }
    (probes, ended)
}

#[test]
fn silent_peer_is_probed_then_expired_within_bound() {
    let (probes, ended) = silent_peer(true);
    assert_eq!(probes, vec![100, 150]);
    assert_eq!(
        ended,
        Some(200),
        "bound: probe_after + count x interval = 20 s"
    );
}

#[test]
fn silent_standard_peer_is_not_probed_and_expires_within_the_same_bound() {
    let (probes, ended) = silent_peer(false);
    assert_eq!(probes, Vec::<u64>::new(), "a standard peer was probed");
    assert_eq!(ended, Some(200));
}

#[test]
fn drain_refuses_new_handshakes_and_expires_sessions() {
    let mut g = gateway(SessionPolicy::default());
    g.token(g.secs(0));
    let now = g.secs(1);
    g.dev.begin_drain(now);
    let c = g.commands();
    assert!(
        c.iter().any(|c| matches!(
            c,
            Command::SendFrame {
                frame: ControlFrame::DrainNotice { .. },
                ..
            }
        )),
        "{c:?}"
    );
    assert!(!g.dev.drained());
    g.handshake(g.secs(1), "192.0.2.2:5000");
    assert_eq!(g.counter("handshake_refused_draining"), 1);
    let ends = |c: &[Command]| c.iter().any(|c| matches!(c, Command::ClearKeypairs { .. }));
    // Packets still pending in the dataplane: the sessions stay.
    g.dev.set_dataplane_quiet(false, g.secs(2));
    let c = g.tick(g.secs(2));
    assert!(!ends(&c), "{c:?}");
    assert!(!g.dev.drained());
    // Quiet, but not for the hold yet; then quiet long enough: the sessions end.
    g.dev.set_dataplane_quiet(true, g.secs(2));
    assert!(!ends(&g.tick(g.secs(2) + DRAIN_QUIET_HOLD / 2)));
    let c = g.tick(g.secs(2) + DRAIN_QUIET_HOLD);
    assert!(ends(&c), "{c:?}");
    assert!(g.dev.drained());
    assert_eq!(g.counter("sessions_draining"), 1);
    assert_eq!(g.counter("sessions_expired"), 1);
}

#[test]
fn a_drain_that_never_goes_quiet_ends_at_its_timeout() {
    let mut g = gateway(SessionPolicy::default());
    g.token(g.secs(0));
    g.dev.begin_drain(g.secs(1));
    g.commands();
    // drain_timeout 5 s by default, less DRAIN_GRACE for the goodbyes.
    let end = g.secs(6) - DRAIN_GRACE;
    // Quiet for moments shorter than the hold, between packets.
    let (mut t, mut quiet) = (g.secs(1), true);
    while t < end {
        g.dev.set_dataplane_quiet(quiet, t);
        quiet = !quiet;
        let c = g.tick(t);
        assert!(
            !c.iter().any(|c| matches!(c, Command::ClearKeypairs { .. })),
            "{c:?}"
        );
        t += Duration::from_millis(40);
    }
    let c = g.tick(end);
    assert!(
        c.iter().any(|c| matches!(c, Command::ClearKeypairs { .. })),
        "{c:?}"
    );
    assert!(g.dev.drained());
}
