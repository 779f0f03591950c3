//! WireGuard-faithful defaults of the control thread, sans-IO on a virtual clock: standard
//! peers roam at once and are not limited unless configured; the reconnect limit counts per
//! peer key; degradation leaves a configured PersistentKeepalive alone.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant, SystemTime};

use rand_core::OsRng;
use veil_control::degradation::{DegradationPolicy, LoadSample};
use veil_control::device::{Device, PeerSpec, ProtectionConfig};
use veil_control::migration::MigrationPolicy;
use veil_control::session::SessionPolicy;
use veil_control::{PeerHandshake, StaticIdentity};
use veil_dataplane::link::{Command, Epoch, Event, HandshakeDatagram, PeerId};
use veil_dataplane::pipeline::ControlDriver;
use veil_dataplane::priority::Degradation;
use veil_dataplane::timing::Timing;
use veil_dataplane::wire::ControlFrame;

mod common;
use common::device::{addr, commands, counter, event, send_initiation, GW_SECRET};

struct Gateway {
    dev: Device,
    t0: Instant,
}

impl Gateway {
    fn new() -> Self {
        let t0 = Instant::now();
        let dev = Device::new(
            &GW_SECRET,
            Timing::default(),
            Epoch::new(t0),
            (t0, SystemTime::now()),
            OsRng,
        );
        Self { dev, t0 }
    }

    /// A gateway with the standard client 0x22 (10.0.0.2/32), whose handshake from
    /// 192.0.2.2:5000 completed at `t0`; its commands are not read yet.
    fn with_client() -> (Self, PeerId) {
        let mut g = Self::new();
        let peer = g.add(0x22, "10.0.0.2/32", None, None);
        g.handshake(0x22, "192.0.2.2:5000", g.t0);
        (g, peer)
    }

    fn add(
        &mut self,
        client_secret: u8,
        ip: &str,
        endpoint: Option<&str>,
        ka: Option<u16>,
    ) -> PeerId {
        let client = StaticIdentity::from_secret([client_secret; 32]);
        self.dev
            .add_peer(PeerSpec {
                public_key: *client.public_key(),
                preshared_key: None,
                allowed_ips: vec![ip.parse().unwrap()],
                endpoint: endpoint.map(addr),
                persistent_keepalive: ka,
            })
            .unwrap()
    }

    /// A real initiation from the client with this secret, sent from `from` at `now`.
    fn handshake(&mut self, client_secret: u8, from: &str, now: Instant) {
        send_initiation(&mut self.dev, [client_secret; 32], from, self.t0, now);
    }

    fn roam(&mut self, peer: PeerId, to: &str, now: Instant) -> Vec<Command> {
        event(
            &mut self.dev,
            Event::EndpointChanged {
                peer,
                addr: addr(to),
                local: None,
            },
            now,
        )
    }

    fn counter(&self, name: &str) -> u64 {
        counter(&self.dev, name)
    }

    /// `client` (with its handshake state `hs`) initiates from `from` at `now`: what the
    /// gateway sends back.
    fn initiation_from(
        &mut self,
        client: &StaticIdentity,
        hs: &mut PeerHandshake,
        from: &str,
        now: Instant,
    ) -> Vec<HandshakeDatagram> {
        let wall = SystemTime::now() + now.saturating_duration_since(self.t0);
        let init = hs
            .create_initiation(client, 7, now, wall, &mut OsRng)
            .unwrap();
        self.dev.on_handshake(
            HandshakeDatagram::new(&init, addr(from), None).unwrap(),
            now,
        );
        commands(&mut self.dev);
        std::iter::from_fn(|| self.dev.poll_transmit()).collect()
    }
}

fn secs(t0: Instant, s: u64) -> Instant {
    t0 + Duration::from_secs(s)
}

fn decided(cmds: &[Command]) -> bool {
    cmds.iter().any(|c| {
        matches!(
            c,
            Command::SetEndpoint { .. } | Command::RefuseEndpoint { .. }
        )
    })
}

fn roaming(cmds: &[Command]) -> Option<bool> {
    cmds.iter().find_map(|c| match c {
        Command::SetRoaming { validated, .. } => Some(*validated),
        _ => None,
    })
}

#[test]
fn standard_peer_roams_without_a_decision_until_it_speaks_veil() {
    let (mut g, peer) = Gateway::with_client();
    let c = commands(&mut g.dev);
    assert_eq!(roaming(&c), None, "a standard peer is not validated");
    assert_eq!(g.counter("sessions_created"), 1);
    // Six moves, two within a second each: no decision, the endpoint follows.
    for (i, ms) in [1000u64, 1500, 4000, 4200, 8000, 8100]
        .into_iter()
        .enumerate()
    {
        let to = format!("198.51.100.{}:6000", i + 1);
        let c = g.roam(peer, &to, g.t0 + Duration::from_millis(ms));
        assert!(!decided(&c), "move {i}: {c:?}");
        assert_eq!(g.dev.peers()[0].endpoint, Some(addr(&to)), "move {i}");
    }
    assert_eq!(g.counter("migrations_refused"), 0);
    // A veil control frame makes it a veil peer: its roaming is validated from then on.
    let c = event(
        &mut g.dev,
        Event::Frame {
            peer,
            frame: ControlFrame::MigrationTokenRequest,
            from: addr("198.51.100.6:6000"),
        },
        secs(g.t0, 9),
    );
    assert_eq!(roaming(&c), Some(true), "{c:?}");
    let c = g.roam(peer, "198.51.100.7:6000", secs(g.t0, 10));
    assert!(decided(&c), "{c:?}");
}

#[test]
fn operator_can_validate_every_peer() {
    let (mut g, peer) = Gateway::with_client();
    commands(&mut g.dev);
    g.dev.set_policies(
        SessionPolicy::default(),
        MigrationPolicy {
            validate_all_peers: true,
            ..MigrationPolicy::default()
        },
    );
    assert_eq!(roaming(&commands(&mut g.dev)), Some(true));
    let c = g.roam(peer, "198.51.100.1:6000", secs(g.t0, 1));
    assert!(
        c.iter().any(|c| matches!(c, Command::SetEndpoint { .. })),
        "{c:?}"
    );
    // Inside the cooldown: refused.
    let c = g.roam(peer, "198.51.100.2:6000", secs(g.t0, 2));
    assert!(
        c.iter()
            .any(|c| matches!(c, Command::RefuseEndpoint { .. })),
        "{c:?}"
    );
    // A peer added later is validated as well.
    g.add(0x33, "10.0.0.3/32", None, None);
    assert_eq!(roaming(&commands(&mut g.dev)), Some(true));
}

#[test]
fn clients_are_not_rate_limited_unless_configured() {
    let mut g = Gateway::new();
    g.dev.set_protection(ProtectionConfig::default());
    commands(&mut g.dev);
    g.add(0x22, "10.0.0.2/32", None, None);
    let c = commands(&mut g.dev);
    assert!(
        !c.iter().any(|c| matches!(c, Command::SetRateLimit { .. })),
        "{c:?}"
    );
    assert_eq!(ProtectionConfig::default().reconnect_limit_per_minute, 0);
}

#[test]
fn reconnect_limit_counts_per_peer_key_not_per_source() {
    let mut g = Gateway::new();
    g.dev.set_protection(ProtectionConfig {
        reconnect_limit_per_minute: 1,
        ..ProtectionConfig::default()
    });
    // Five clients behind one NAT address: each is one new session of its own key.
    for i in 0..5u8 {
        g.add(0x40 + i, &format!("10.0.1.{}/32", i + 1), None, None);
    }
    for i in 0..5u8 {
        g.handshake(
            0x40 + i,
            &format!("203.0.113.7:{}", 40_000 + u16::from(i)),
            secs(g.t0, 1),
        );
    }
    commands(&mut g.dev);
    assert_eq!(g.counter("sessions_created"), 5);
    assert_eq!(g.counter("reconnects_refused"), 0);
}

#[test]
fn degradation_never_stretches_a_configured_persistent_keepalive() {
    let mut g = Gateway::new();
    g.dev.set_protection(ProtectionConfig {
        degradation: DegradationPolicy {
            escalation_delay: Duration::ZERO,
            ..DegradationPolicy::default()
        },
        ..ProtectionConfig::default()
    });
    g.add(0x22, "10.0.0.2/32", Some("192.0.2.1:51820"), Some(25));
    let hot = LoadSample {
        cpu_pct: 95.0,
        memory_pct: 0.0,
    };
    g.dev.on_load_sample(g.t0, hot);
    assert!(g.dev.degradation() >= Degradation::Light);
    commands(&mut g.dev);
    let mut keepalives = vec![];
    for s in 1..=60u64 {
        let now = secs(g.t0, s);
        g.dev.on_load_sample(now, hot);
        g.dev.on_timeout(now);
        for c in commands(&mut g.dev) {
            if matches!(c, Command::SendKeepalive { .. }) {
                keepalives.push(s);
            }
        }
    }
    assert!(g.dev.degradation() >= Degradation::Light);
    // The first at the first tick (nothing was sent yet), then every 25 s, under load too.
    assert_eq!(keepalives, vec![1, 26, 51]);
}

#[test]
fn spoofed_junk_under_load_does_not_lock_out_the_real_client() {
    let mut g = Gateway::new();
    g.add(0x22, "10.0.0.2/32", None, None);
    let victim = "192.0.2.2:5000";
    let gw_pub = *StaticIdentity::from_secret(GW_SECRET).public_key();
    let client = StaticIdentity::from_secret([0x22; 32]);
    let mut hs = PeerHandshake::new(&client, gw_pub, None);
    let wall = |g: &Gateway, now: Instant| SystemTime::now() + now.saturating_duration_since(g.t0);
    let initiation = |g: &mut Gateway, hs: &mut PeerHandshake, now: Instant| {
        g.initiation_from(&client, hs, victim, now)
    };
    // Under load from the start.
    g.dev.set_handshake_backlog(1000, g.t0);
    // The client's first initiation carries no MAC2: a cookie reply comes back.
    let t0 = g.t0;
    let replies = initiation(&mut g, &mut hs, t0);
    assert_eq!(replies.len(), 1);
    hs.consume_cookie_reply(replies[0].as_bytes(), g.t0)
        .unwrap();
    // 200 junk initiations a second with the victim's source address, valid MAC1 (it only
    // needs the gateway's public key) and no valid MAC2, for a second.
    let junk_id = StaticIdentity::from_secret([0x99; 32]);
    for i in 0..200u64 {
        let now = g.t0 + Duration::from_millis(i * 5);
        g.dev.set_handshake_backlog(1000, now);
        let mut junk = PeerHandshake::new(&junk_id, gw_pub, None);
        let msg = junk
            .create_initiation(&junk_id, 9, now, wall(&g, now), &mut OsRng)
            .unwrap();
        g.dev.on_handshake(
            HandshakeDatagram::new(&msg, addr(victim), None).unwrap(),
            now,
        );
    }
    commands(&mut g.dev);
    assert_eq!(
        g.counter("handshake_rate_limited"),
        0,
        "junk spent the budget"
    );
    // The real client, with its cookie, still gets in at once.
    let now = g.t0 + Duration::from_millis(1001);
    g.dev.set_handshake_backlog(1000, now);
    let sent = initiation(&mut g, &mut hs, now);
    commands(&mut g.dev);
    assert_eq!(g.counter("sessions_created"), 1, "{sent:?}");
}

#[test]
fn frames_of_the_wrong_role_are_ignored() {
    // We are the gateway of this peer: it may not send us a drain notice or a token grant.
    let (mut g, peer) = Gateway::with_client();
    commands(&mut g.dev);
    for frame in [
        ControlFrame::DrainNotice { retry_after_ms: 0 },
        ControlFrame::IdleWarning { seconds_left: 1 },
    ] {
        event(
            &mut g.dev,
            Event::Frame {
                peer,
                frame,
                from: addr("192.0.2.2:5000"),
            },
            secs(g.t0, 1),
        );
    }
    assert_eq!(g.counter("frames_wrong_role"), 2);
    assert_eq!(g.counter("sessions_terminated"), 0);
    // We are the client of this one (it has an Endpoint): it may not ask us for tokens.
    let gw = g.add(0x33, "10.0.1.0/24", Some("198.51.100.1:51820"), None);
    commands(&mut g.dev);
    let c = event(
        &mut g.dev,
        Event::Frame {
            peer: gw,
            frame: ControlFrame::MigrationTokenRequest,
            from: addr("198.51.100.1:51820"),
        },
        secs(g.t0, 2),
    );
    assert!(
        !c.iter().any(|c| matches!(c, Command::SendFrame { .. })),
        "{c:?}"
    );
    assert_eq!(g.counter("frames_wrong_role"), 3);
    assert_eq!(g.counter("migration_tokens_granted"), 0);
}

#[test]
fn a_drain_notice_cannot_park_a_client_past_five_minutes() {
    let mut g = Gateway::new();
    let gw = g.add(0x33, "10.0.1.0/24", Some("198.51.100.1:51820"), None);
    commands(&mut g.dev);
    std::iter::from_fn(|| g.dev.poll_transmit()).for_each(drop);
    event(
        &mut g.dev,
        Event::Frame {
            peer: gw,
            frame: ControlFrame::DrainNotice {
                retry_after_ms: u32::MAX,
            },
            from: addr("198.51.100.1:51820"),
        },
        secs(g.t0, 1),
    );
    let mut first_retry = None;
    for s in 2..=400u64 {
        g.dev.on_timeout(secs(g.t0, s));
        commands(&mut g.dev);
        if std::iter::from_fn(|| g.dev.poll_transmit()).count() > 0 {
            first_retry = Some(s);
            break;
        }
    }
    assert!(
        first_retry.is_some_and(|s| (300..=302).contains(&s)),
        "reconnected at {first_retry:?} s (clamp: 5 minutes after the notice)"
    );
}

#[test]
fn initiations_follow_a_wall_clock_set_after_start() {
    // A gateway that already saw this client's timestamps of the real time.
    let (mut g, _) = Gateway::with_client();
    commands(&mut g.dev);
    assert_eq!(g.counter("sessions_created"), 1);
    // The client was started before NTP: its wall clock read 2001.
    let t0 = g.t0;
    let stale = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    let mut client = Device::new(
        &[0x22; 32],
        Timing::default(),
        Epoch::new(t0),
        (t0, stale),
        OsRng,
    );
    let gw_peer = client
        .add_peer(PeerSpec {
            public_key: *StaticIdentity::from_secret(GW_SECRET).public_key(),
            preshared_key: None,
            allowed_ips: vec!["10.0.0.1/32".parse().unwrap()],
            endpoint: Some(addr("198.51.100.1:51820")),
            persistent_keepalive: None,
        })
        .unwrap();
    let forward = |client: &mut Device, g: &mut Gateway, now: Instant| {
        for d in std::iter::from_fn(|| client.poll_transmit()) {
            g.dev.on_handshake(
                HandshakeDatagram::new(d.as_bytes(), addr("192.0.2.2:5000"), None).unwrap(),
                now,
            );
        }
        commands(&mut g.dev);
    };
    let at = secs(g.t0, 1);
    client.on_event(Event::HandshakeNeeded { peer: gw_peer }, at);
    forward(&mut client, &mut g, at);
    assert_eq!(
        g.counter("handshake_replayed"),
        1,
        "a stale timestamp is refused"
    );
    // NTP sets the clock; the next tick passes it in and the retry's timestamp is current.
    let at = secs(g.t0, 7);
    client.observe_wall_clock(at, SystemTime::now() + Duration::from_secs(7));
    client.on_timeout(at);
    forward(&mut client, &mut g, at);
    assert_eq!(g.counter("handshake_replayed"), 1);
    assert_eq!(
        g.counter("handshakes_completed_responder"),
        2,
        "the retry is accepted"
    );
}

#[test]
fn handshake_work_beyond_the_budget_waits_for_a_cookie_and_the_budget() {
    let mut g = Gateway::new();
    let t0 = g.t0;
    g.add(0x22, "10.0.0.2/32", None, None);
    let client = StaticIdentity::from_secret([0x22; 32]);
    let mut hs = PeerHandshake::new(&client, g.dev.public_key(), None);
    let initiation = |g: &mut Gateway, hs: &mut PeerHandshake, now: Instant| {
        g.initiation_from(&client, hs, "192.0.2.2:5000", now)
    };
    // Not under load, but 100 ms of handshake work were just done (the burst is 50 ms).
    assert_eq!(g.dev.handshake_work_done(), 0);
    g.dev.on_timeout(t0);
    g.dev.charge_handshake_work(Duration::from_millis(100));
    // An initiation without MAC2 costs no Diffie-Hellman now: a cookie reply comes back.
    let replies = initiation(&mut g, &mut hs, t0);
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].as_bytes()[0], 3, "a cookie reply");
    assert_eq!(g.counter("handshake_budget_exhausted"), 1);
    assert_eq!(g.dev.handshake_work_done(), 0);
    hs.consume_cookie_reply(replies[0].as_bytes(), t0).unwrap();
    // 100 ms later the budget (250 ms a second) is still in debt: even with a valid MAC2 the
    // initiation is dropped, counted.
    let later = t0 + Duration::from_millis(100);
    assert!(initiation(&mut g, &mut hs, later).is_empty());
    assert_eq!(g.counter("handshake_over_budget"), 1);
    assert_eq!(g.counter("sessions_created"), 0);
    // At 400 ms the debt is paid: the initiation with its cookie gets in.
    let later = t0 + Duration::from_millis(400);
    let sent = initiation(&mut g, &mut hs, later);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].as_bytes()[0], 2, "a response");
    assert_eq!(g.counter("sessions_created"), 1);
    assert_eq!(g.dev.handshake_work_done(), 1);
}

#[test]
fn the_migration_switch_is_per_peer() {
    let mut g = Gateway::new();
    let standard = g.add(0x22, "10.0.0.2/32", None, None);
    let veil = g.add(0x33, "10.0.0.3/32", None, None);
    g.handshake(0x22, "192.0.2.2:5000", g.t0);
    g.handshake(0x33, "192.0.2.3:5000", g.t0);
    commands(&mut g.dev);
    // The operator validates one standard peer's migrations.
    g.dev.set_peer_migration(standard, Some(true));
    assert_eq!(roaming(&commands(&mut g.dev)), Some(true));
    assert!(g.dev.snapshot(false, g.t0, SystemTime::now()).peers[0].migration_validated);
    let c = g.roam(standard, "198.51.100.1:6000", secs(g.t0, 1));
    assert!(decided(&c), "{c:?}");
    // And lets a veil peer roam at once: its frames do not turn validation on.
    g.dev.set_peer_migration(veil, Some(false));
    assert_eq!(roaming(&commands(&mut g.dev)), Some(false));
    let c = event(
        &mut g.dev,
        Event::Frame {
            peer: veil,
            frame: ControlFrame::MigrationTokenRequest,
            from: addr("192.0.2.3:5000"),
        },
        secs(g.t0, 2),
    );
    assert_eq!(roaming(&c), Some(false), "{c:?}");
    let c = g.roam(veil, "198.51.100.9:6000", secs(g.t0, 3));
    assert!(!decided(&c), "{c:?}");
    assert_eq!(g.dev.peers()[1].endpoint, Some(addr("198.51.100.9:6000")));
    let snap = g.dev.snapshot(false, g.t0, SystemTime::now());
    assert!(!snap.peers[1].migration_validated);
    // None: back to the defaults (a veil peer is validated).
    g.dev.set_peer_migration(veil, None);
    assert_eq!(roaming(&commands(&mut g.dev)), Some(true));
}

/// The client side's circuit breaker on a virtual clock: a round that gives up opens it;
/// while open no handshake goes; half-open one trial goes; an unanswered trial opens it for
/// twice as long; an answered one closes it.
#[test]
fn a_client_backs_off_and_its_breaker_opens_half_opens_and_closes() {
    use veil_control::breaker::BreakerState;
    let mut g = Gateway::new();
    let server_secret = [0x44; 32];
    let server_id = StaticIdentity::from_secret(server_secret);
    let peer = g
        .dev
        .add_peer(PeerSpec {
            public_key: *server_id.public_key(),
            preshared_key: None,
            allowed_ips: vec!["10.0.0.0/24".parse().unwrap()],
            endpoint: Some(addr("192.0.2.44:51820")),
            persistent_keepalive: None,
        })
        .unwrap();
    let t0 = g.t0;
    let sent = |g: &mut Gateway| std::iter::from_fn(|| g.dev.poll_transmit()).collect::<Vec<_>>();
    let state =
        |g: &Gateway, now: Instant| g.dev.snapshot(false, now, SystemTime::now()).peers[0].breaker;
    // Drive the timers from `from` to `to` in 100 ms steps; the initiations sent.
    let run = |g: &mut Gateway, from: Instant, to: Instant| {
        let mut n = 0;
        let mut now = from;
        while now < to {
            now += Duration::from_millis(100);
            g.dev.on_timeout(now);
            commands(&mut g.dev);
            n += sent(g).len();
        }
        n
    };
    // Traffic wants a handshake; nobody answers for REKEY_ATTEMPT_TIME (90 s).
    event(&mut g.dev, Event::HandshakeNeeded { peer }, t0);
    assert_eq!(sent(&mut g).len(), 1);
    let retries = run(&mut g, t0, secs(t0, 96));
    assert!((15..=18).contains(&retries), "{retries} retries in 90 s");
    assert_eq!(g.counter("handshake_gave_up"), 1);
    assert_eq!(g.counter("breaker_opened"), 1);
    let opened = secs(t0, 96);
    assert_eq!(state(&g, opened), BreakerState::Open);
    // Open: traffic starts no handshake (the first backoff is 3.75..5 s).
    event(&mut g.dev, Event::HandshakeNeeded { peer }, opened);
    assert!(sent(&mut g).is_empty());
    assert_eq!(g.counter("handshakes_held_by_breaker"), 1);
    // Half-open after the backoff: one trial goes.
    let half = opened + Duration::from_secs(5);
    assert_eq!(state(&g, half), BreakerState::HalfOpen);
    event(&mut g.dev, Event::HandshakeNeeded { peer }, half);
    assert_eq!(sent(&mut g).len(), 1, "the trial");
    // The trial goes unanswered for REKEY_TIMEOUT: open again, for 7.5..10 s, no retries.
    let after = half + Duration::from_millis(5400);
    assert_eq!(run(&mut g, half, after), 0);
    assert_eq!(g.counter("breaker_opened"), 2);
    assert_eq!(g.counter("handshake_gave_up"), 1, "a trial is not a round");
    assert_eq!(state(&g, after), BreakerState::Open);
    event(
        &mut g.dev,
        Event::HandshakeNeeded { peer },
        after + Duration::from_secs(7),
    );
    assert!(
        sent(&mut g).is_empty(),
        "still open 7 s into a backoff of 7.5 s or more"
    );
    // Half-open again; this trial is answered: closed.
    let half = after + Duration::from_secs(10);
    assert_eq!(state(&g, half), BreakerState::HalfOpen);
    event(&mut g.dev, Event::HandshakeNeeded { peer }, half);
    let trial = sent(&mut g);
    assert_eq!(trial.len(), 1);
    let mut server = Device::new(
        &server_secret,
        Timing::default(),
        Epoch::new(t0),
        (t0, SystemTime::now()),
        OsRng,
    );
    server
        .add_peer(PeerSpec {
            public_key: *StaticIdentity::from_secret(GW_SECRET).public_key(),
            preshared_key: None,
            allowed_ips: vec!["10.0.1.2/32".parse().unwrap()],
            endpoint: None,
            persistent_keepalive: None,
        })
        .unwrap();
    server.on_handshake(
        HandshakeDatagram::new(trial[0].as_bytes(), addr("192.0.2.2:5000"), None).unwrap(),
        half,
    );
    let response = server.poll_transmit().expect("a response");
    g.dev.on_handshake(
        HandshakeDatagram::new(response.as_bytes(), addr("192.0.2.44:51820"), None).unwrap(),
        half,
    );
    assert_eq!(state(&g, half), BreakerState::Closed);
    assert_eq!(g.counter("handshakes_completed_initiator"), 1);
}
