//! End-to-end session lifecycle, migration and drain, in real namespaces, on
//! shortened settings.

mod common;

use std::time::{Duration, Instant};

use common::*;

e2e_test!(idle_session_is_warned_expired_and_renewed, {
    let mut s = setup(
        "li",
        "[sessions]\nsession_timeout = 10\nidle_warning_sec = 5\n",
    );
    let (t, b) = (&s.t, s.t.b());
    t.wait_ping(&b, "10.9.0.1");
    let warned = wait_log(&s.cl, "session expires in", Duration::from_secs(9));
    assert!(
        warned.is_some(),
        "no idle warning reached the client:\n{}",
        s.cl.log_text()
    );
    let expired = wait_log(&s.gw, "expired (idle)", Duration::from_secs(9));
    assert!(
        expired.is_some(),
        "session did not expire:\n{}",
        s.gw.log_text()
    );
    // The next packet handshakes again and traffic resumes.
    t.wait_ping(&b, "10.9.0.1");
    assert_eq!(t.ping(&b, "10.9.0.1", 5), 5);
    assert!(
        s.gw.log_text().contains("session 2 established"),
        "{}",
        s.gw.log_text()
    );
    s.gw.stop();
    assert!(
        counter(&s.gw.log_text(), "sessions_expired") >= 1,
        "{}",
        s.gw.log_text()
    );
});

e2e_test!(stopped_peer_is_probed_and_expired_within_bound, {
    // Bound: probe after 2 s of silence, then 2 probes 1 s apart: 4 s, plus a tick.
    let extra = "[sessions]\nkeepalive_probe_after_sec = 2\nkeepalive_probe_interval_sec = 1\nkeepalive_probe_count = 2\n";
    let mut s = setup("lp", extra);
    s.t.wait_ping(&s.t.b(), "10.9.0.1");
    let pid = s.cl.pid().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status();
    let dead = wait_log(&s.gw, "expired (dead)", Duration::from_secs(8));
    let _ = std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status();
    let took = dead.unwrap_or_else(|| panic!("silent peer not expired:\n{}", s.gw.log_text()));
    assert!(
        took <= Duration::from_secs(6),
        "expired after {took:?}, bound is 4 s + 1 s tick"
    );
    s.gw.stop();
    let log = s.gw.log_text();
    assert!(counter(&log, "probes_sent") >= 2, "{log}");
    assert!(counter(&log, "sessions_expired") >= 1, "{log}");
});

/// The client in `ns` takes a second address `ip` on its link and sends from it from now on.
fn move_client(t: &Topology, ns: &str, ip: &str) {
    t.ok(
        ns,
        &["ip", "addr", "add", &format!("{ip}/24"), "dev", "veth0"],
    );
    t.ok(
        ns,
        &[
            "ip",
            "route",
            "change",
            "192.168.241.0/24",
            "dev",
            "veth0",
            "src",
            ip,
        ],
    );
}

e2e_test!(client_address_change_migrates_without_handshake, {
    let mut s = setup("lm", "");
    let (t, a, b) = (&s.t, s.t.a(), s.t.b());
    t.wait_ping(&b, "10.9.0.1");
    // The client's token request has been answered by now (a ping round trip later).
    std::thread::sleep(Duration::from_millis(500));
    let handshakes_before = s.gw.log_text().matches("handshake completed").count();
    let mut server = t.iperf_server(&a, "10.9.0.1");
    std::thread::sleep(Duration::from_millis(400));
    let (ns, iperf3) = (b.clone(), require("iperf3"));
    let iperf = std::thread::spawn(move || {
        std::process::Command::new("ip")
            .args([
                "netns", "exec", &ns, &iperf3, "-c", "10.9.0.1", "-t", "20", "-J",
            ])
            .output()
    });
    std::thread::sleep(Duration::from_secs(5));
    move_client(t, &b, "192.168.241.3");
    let out = iperf.join().expect("iperf thread").expect("iperf3");
    server.stop();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "iperf3 failed across the migration: {text}"
    );
    let v: serde_json::Value = serde_json::from_str(&text).expect("iperf3 JSON");
    assert!(v["error"].is_null(), "iperf3 error: {}", v["error"]);
    let log = s.gw.log_text();
    assert_eq!(
        log.matches("migrated").count(),
        1,
        "one accepted migration expected:\n{log}"
    );
    assert!(
        log.contains("-> 192.168.241.3:"),
        "new endpoint not shown:\n{log}"
    );
    assert_eq!(
        log.matches("handshake completed").count(),
        handshakes_before,
        "a handshake happened:\n{log}"
    );
    s.gw.stop();
    assert_eq!(counter(&s.gw.log_text(), "migrations_accepted"), 1);
});

e2e_test!(sigterm_drains_and_client_reconnects, {
    let mut s = setup("ld", "[sessions]\ndrain_timeout_sec = 2\n");
    let (t, a, b) = (&s.t, s.t.a(), s.t.b());
    t.wait_ping(&b, "10.9.0.1");
    let mut server = t.iperf_server(&a, "10.9.0.1");
    std::thread::sleep(Duration::from_millis(400));
    let mut iperf = t.spawn(
        &b,
        "iperf3-client",
        &[&require("iperf3"), "-c", "10.9.0.1", "-t", "30"],
        &[],
    );
    std::thread::sleep(Duration::from_secs(3));
    let start = Instant::now();
    let code = s.gw.stop();
    let took = start.elapsed();
    assert_eq!(code, Some(0), "gateway exit status:\n{}", s.gw.log_text());
    assert!(
        took <= Duration::from_secs(3),
        "drain took {took:?} (drain_timeout_sec 2 + 1 s)"
    );
    assert!(!t.has_link(&a, "veilgw"), "interface left behind");
    assert!(s.gw.log_text().contains("draining"), "{}", s.gw.log_text());
    iperf.stop();
    server.stop();
    assert!(
        wait_log(&s.cl, "is draining", Duration::from_secs(3)).is_some(),
        "client did not log the drain notice:\n{}",
        s.cl.log_text()
    );
    // Start the gateway again; the client comes back on its own.
    s.gw = veil_up(t, &a, &s.gw_conf, &[], &[]);
    assert!(
        wait_log(&s.cl, "reconnected", Duration::from_secs(20)).is_some(),
        "client did not reconnect:\n{}",
        s.cl.log_text()
    );
    assert_eq!(t.ping(&b, "10.9.0.1", 5), 5);
});

/// Receives numbered UDP datagrams on (argv[1], argv[2]) until argv[3] of them arrived or
/// argv[4] seconds passed, and writes "<sha256 of the payloads in order> <count>" to argv[5].
const UDP_RECEIVER: &str = "import hashlib, socket, sys, time
host, port, want, secs, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
s.bind((host, port)); s.settimeout(0.1)
got = {}; end = time.time() + secs
open(out + '.ready', 'w').write('')
while len(got) < want and time.time() < end:
    try: b = s.recv(2048)
    except socket.timeout: continue
    got[int.from_bytes(b[:4], 'big')] = b
h = hashlib.sha256()
for k in sorted(got): h.update(got[k])
open(out, 'w').write('%s %d' % (h.hexdigest(), len(got)))";

/// Sends argv[3] numbered datagrams of pseudo-random bytes to (argv[1], argv[2]) and prints
/// the sha256 of them all, in order. They are marked EF (High priority): the full ring behind
/// a stalled crypto thread is real pressure, under which Normal traffic may be shed.
const UDP_SENDER: &str = "import hashlib, random, socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0xb8)
r = random.Random(7); h = hashlib.sha256()
for i in range(n):
    b = i.to_bytes(4, 'big') + bytes(r.getrandbits(8) for _ in range(1000))
    h.update(b); s.sendto(b, (host, port))
    if i % 20 == 19: time.sleep(0.002)
print(h.hexdigest())";

e2e_test!(drain_delivers_the_packets_in_flight, {
    // The gateway's crypto thread stalls for 1.5 s on request: the datagrams sent meanwhile
    // wait in its rings and socket when the drain starts, longer than any fixed grace would
    // wait. The drain must process them (drain_timeout_sec 5) before the sessions end.
    // A name of this test's own: the control socket's directory is not per namespace.
    let gw_name = format!("vgf{}", std::process::id() % 100_000);
    let mut s = setup_with(
        "lf",
        "[sessions]\ndrain_timeout_sec = 5\n[threading]\nmode = pipeline\npipelines = 1\n",
        &gw_name,
        &[("VEIL_TEST_STALL_ON_REQUEST", "veil-crypto:1500")],
    );
    let (t, a, b) = (&s.t, s.t.a(), s.t.b());
    t.wait_ping(&b, "10.9.0.1");
    const N: &str = "300";
    let out = t.dir.join("drain-received.txt");
    let out_s = out.to_string_lossy().into_owned();
    let mut rx = t.spawn(
        &a,
        "udp-receiver",
        &[
            "python3",
            "-c",
            UDP_RECEIVER,
            "10.9.0.1",
            "6001",
            N,
            "8",
            &out_s,
        ],
        &[],
    );
    let ready = std::path::PathBuf::from(format!("{out_s}.ready"));
    for _ in 0..100 {
        if ready.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(ready.exists(), "the receiver did not start");
    test_stall(&gw_name);
    let sent = t.ok(&b, &["python3", "-c", UDP_SENDER, "10.9.0.1", "6001", N]);
    // The datagrams reach the gateway, whose crypto thread is stalled: the drain starts
    // with all of them pending.
    std::thread::sleep(Duration::from_millis(200));
    let code = s.gw.stop();
    assert_eq!(code, Some(0), "gateway exit status:\n{}", s.gw.log_text());
    let start = Instant::now();
    while rx.exited().is_none() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let got = std::fs::read_to_string(&out).unwrap_or_default();
    let log = s.gw.log_text();
    assert_eq!(
        got,
        format!("{} {N}", sent.trim()),
        "the datagrams in flight at the drain did not all arrive (sha256, count):\n{log}"
    );
    assert!(log.contains("drained"), "{log}");
    assert!(!log.contains("drain timeout reached"), "{log}");
});

e2e_test!(absolute_timeout_renews_session_and_traffic_continues, {
    let mut s = setup("la", "[sessions]\nabsolute_timeout_sec = 10\n");
    let (t, b) = (&s.t, s.t.b());
    t.wait_ping(&b, "10.9.0.1");
    // 16 s of pings across the 10 s mark.
    let replies = t.ping_spaced(&b, "10.9.0.1", 80, "0.2");
    let log = s.gw.log_text();
    assert!(log.contains("expired (absolute)"), "{log}");
    assert!(
        log.contains("session 2 established"),
        "session not renewed:\n{log}"
    );
    assert!(
        replies >= 76,
        "traffic stalled across the renewal: {replies}/80 replies"
    );
    s.gw.stop();
});

e2e_test!(migration_inside_cooldown_needs_a_token, {
    let mut s = setup("lc", "[migration]\nmigration_cooldown_sec = 30\n");
    let (t, b) = (&s.t, s.t.b());
    t.wait_ping(&b, "10.9.0.1");
    std::thread::sleep(Duration::from_millis(300));
    let move_to = |ip: &str| move_client(t, &b, ip);
    // First move: plain roaming, accepted (no cooldown running yet).
    move_to("192.168.241.3");
    t.wait_ping(&b, "10.9.0.1");
    assert!(
        wait_log(&s.gw, "-> 192.168.241.3", Duration::from_secs(3)).is_some(),
        "{}",
        s.gw.log_text()
    );
    // The client fetches a fresh token after migrating.
    std::thread::sleep(Duration::from_millis(1500));
    // Second move inside the cooldown: the data alone is refused...
    move_to("192.168.241.4");
    t.ping(&b, "10.9.0.1", 1);
    assert!(
        wait_log(&s.gw, "refused (cooldown)", Duration::from_secs(3)).is_some(),
        "{}",
        s.gw.log_text()
    );
    // ...until the client's MIGRATE with its token arrives, which is accepted at once.
    assert!(
        wait_log(&s.gw, "-> 192.168.241.4", Duration::from_secs(5)).is_some(),
        "{}",
        s.gw.log_text()
    );
    assert!(s.gw.log_text().contains("(token)"), "{}", s.gw.log_text());
    assert_eq!(t.ping(&b, "10.9.0.1", 3), 3);
    s.gw.stop();
    let log = s.gw.log_text();
    assert_eq!(counter(&log, "migrations_accepted"), 2, "{log}");
    assert!(counter(&log, "migrations_refused") >= 1, "{log}");
});

e2e_test!(session_memory_limit_drops_what_a_session_cannot_hold, {
    // A peer that never answers (nothing listens at its endpoint): what the gateway sends it
    // is staged while the handshake is pending.
    // 200 packets of 8,928 bytes against 1 MiB (each costs its bytes and 64): 116 fit, fewer
    // than the 128 staged packets the count bound allows, so the byte limit drops first.
    let t = Topology::new("lm");
    let (k, _) = keypair();
    let (_, silent) = keypair();
    let conf = t.write(
        "veilmm.conf",
        &format!(
            "[Interface]\nPrivateKey = {k}\nListenPort = {GW_PORT}\nAddress = 10.9.0.1/24\nMTU = 9000\n\n\
             [Peer]\nPublicKey = {silent}\nAllowedIPs = 10.9.0.9/32\nEndpoint = {}\n\n\
             [sessions]\nmax_memory_per_session_mb = 1\n",
            endpoint(B_V4, GW_PORT)
        ),
    );
    let a = t.a();
    let mut gw = veil_up(&t, &a, &conf, &[], &[]);
    // No replies come: the exit status is ping's business.
    let _ = t.exec(
        &a,
        &[
            "ping", "-c", "200", "-i", "0.01", "-s", "8900", "-W", "1", "10.9.0.9",
        ],
    );
    gw.stop();
    let log = gw.log_text();
    let dropped = counter(&log, "drop_session_memory");
    assert!(
        dropped >= 1,
        "nothing dropped for the session's memory:\n{log}"
    );
    assert!(
        dropped <= 200 - 116,
        "more dropped ({dropped}) than beyond 1 MiB:\n{log}"
    );
    assert_eq!(counter(&log, "drop_staged_overflow"), 0, "{log}");
});
