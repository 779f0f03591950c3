//! End-to-end protection: per-client rate limits, traffic priority and graceful
//! degradation, in real namespaces.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;

/// A gateway (namespace a) with two clients (namespace b) on subnets 10.9.0.0/24 and
/// 10.9.1.0/24, `gw_extra` appended to the gateway's config. The gateway and client 1 are
/// started: (the namespaces, the gateway, client 1, client 2's config, the gateway's
/// public key).
fn two_clients(tag: &str, gw_extra: &str) -> (Topology, Proc, Proc, PathBuf, String) {
    let t = Topology::new(tag);
    let (gw_priv, gw_pub) = keypair();
    let (c1_priv, c1_pub) = keypair();
    let (c2_priv, c2_pub) = keypair();
    let gw_conf = t.write(
        "veilgw.conf",
        &format!(
            "[Interface]\nPrivateKey = {gw_priv}\nListenPort = {GW_PORT}\nAddress = 10.9.0.1/24, 10.9.1.1/24\n\n\
             [Peer]\nPublicKey = {c1_pub}\nAllowedIPs = 10.9.0.2/32\n\n\
             [Peer]\nPublicKey = {c2_pub}\nAllowedIPs = 10.9.1.2/32\n\n{gw_extra}"
        ),
    );
    let client = |name: &str, key: &str, addr: &str, net: &str| {
        t.write(
            &format!("{name}.conf"),
            &format!(
                "[Interface]\nPrivateKey = {key}\nAddress = {addr}/24\n\n[Peer]\nPublicKey = {gw_pub}\nEndpoint = {}\nAllowedIPs = {net}\n",
                endpoint(A_V4, GW_PORT)
            ),
        )
    };
    let c1 = client("veilc1", &c1_priv, "10.9.0.2", "10.9.0.0/24");
    let c2 = client("veilc2", &c2_priv, "10.9.1.2", "10.9.1.0/24");
    let gw = veil_up(&t, &t.a(), &gw_conf, &[], &[]);
    let c1 = veil_up(&t, &t.b(), &c1, &[], &[]);
    (t, gw, c1, c2, gw_pub)
}

/// UDP iperf3 from the client namespace to an iperf3 server at `server` in the gateway's
/// namespace: (received bit/s, received packets/s), measured by the receiver after the first
/// `skip` seconds.
fn udp_run(
    t: &Topology,
    server: &str,
    rate: &str,
    len: u32,
    secs: u32,
    skip: f64,
    tos: Option<&str>,
) -> (f64, f64) {
    let iperf3 = require("iperf3");
    let (a, b) = (t.a(), t.b());
    let mut srv = t.spawn(
        &a,
        &format!("iperf3-udp-server-{server}"),
        &[&iperf3, "-s", "-1", "-J", "-B", server],
        &[],
    );
    std::thread::sleep(Duration::from_millis(400));
    let (l, s) = (len.to_string(), secs.to_string());
    let mut args = vec![
        iperf3.as_str(),
        "-c",
        server,
        "-u",
        "-b",
        rate,
        "-l",
        &l,
        "-t",
        &s,
        "-J",
        "--get-server-output",
    ];
    if let Some(tos) = tos {
        args.extend(["--tos", tos]);
    }
    let out = t.exec(&b, &args);
    srv.stop();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let v: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("iperf3 JSON: {text}"));
    let intervals = v["server_output_json"]["intervals"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let (mut bytes, mut packets, mut span) = (0.0, 0.0, 0.0);
    for i in intervals {
        let sum = &i["sum"];
        if sum["start"].as_f64().unwrap_or(0.0) >= skip {
            bytes += sum["bytes"].as_f64().unwrap_or(0.0);
            // The receiver counts packets by sequence number; the lost ones never arrived.
            packets += sum["packets"].as_f64().unwrap_or(0.0)
                - sum["lost_packets"].as_f64().unwrap_or(0.0);
            span += sum["seconds"].as_f64().unwrap_or(0.0);
        }
    }
    assert!(span > 1.0, "no server intervals after {skip} s: {text}");
    (bytes * 8.0 / span, packets / span)
}

e2e_test!(bandwidth_limit_holds_udp_and_tcp, {
    let s = setup(
        "pb",
        "[rate_limiting]\nper_client_bandwidth_mbps = 50\nper_client_pps = 0\n",
    );
    s.t.wait_ping(&s.t.b(), "10.9.0.1");
    // 1372-byte payloads make 1400-byte IP packets: 50 Mb/s of packets is 49 Mb/s of payload.
    let (bps, _) = udp_run(&s.t, "10.9.0.1", "200M", 1372, 8, 3.0, None);
    let expected = 50e6 * 1372.0 / 1400.0;
    assert!(
        (bps - expected).abs() <= expected * 0.10,
        "UDP delivered {:.1} Mb/s, limit 50",
        bps / 1e6
    );
    let tcp = s.t.iperf(&s.t.a(), &s.t.b(), "10.9.0.1", 8, false);
    assert!(
        tcp.bits_per_second <= 55e6,
        "TCP got {:.1} Mb/s through a 50 Mb/s limit",
        tcp.bits_per_second / 1e6
    );
    assert!(
        tcp.bits_per_second >= 10e6,
        "TCP starved: {:.1} Mb/s",
        tcp.bits_per_second / 1e6
    );
});

e2e_test!(packet_rate_limit_holds_small_packets, {
    let mut s = setup(
        "pr",
        "[rate_limiting]\nper_client_bandwidth_mbps = 0\nper_client_pps = 2000\n",
    );
    s.t.wait_ping(&s.t.b(), "10.9.0.1");
    // ~9700 packets/s offered.
    let (_, pps) = udp_run(&s.t, "10.9.0.1", "5M", 64, 8, 3.0, None);
    assert!(
        (1800.0..=2200.0).contains(&pps),
        "{pps:.0} packets/s delivered, limit 2000"
    );
    s.gw.stop();
    assert!(counter(&s.gw.log_text(), "rate_limit_violations") > 1000);
});

/// Sends argv[3] small datagrams to (argv[1], argv[2]), CS1 (DSCP 8) and unmarked in turn,
/// `argv[4]` seconds apart (0: at once).
const MIXED_SENDER: &str = "import socket, sys, time
host, port, n, gap = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
low = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
low.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0x20)
normal = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(n):
    (low if i % 2 == 0 else normal).sendto(i.to_bytes(4, 'big') * 3, (host, port))
    if gap: time.sleep(gap)";

/// [`MIXED_SENDER`] from namespace `ns` to the gateway: `n` datagrams `gap` seconds apart.
fn send_mixed(t: &Topology, ns: &str, n: &str, gap: &str) {
    t.ok(
        ns,
        &["python3", "-c", MIXED_SENDER, "10.9.0.1", "6002", n, gap],
    );
}

/// The gateway's priority drops from /metrics in namespace `ns`: (Low, Normal).
fn priority_drops(t: &Topology, ns: &str) -> (u64, u64) {
    let text = t.ok(
        ns,
        &[
            &require("curl"),
            "-s",
            "--max-time",
            "10",
            "http://127.0.0.1:9586/metrics",
        ],
    );
    let sum = |reason: &str| -> u64 {
        text.lines()
            .filter(|l| l.starts_with("veil_drops_total") && l.contains(reason))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    (
        sum("reason=\"priority_low\""),
        sum("reason=\"priority_normal\""),
    )
}

e2e_test!(low_priority_is_shed_before_normal, {
    // The default high-water mark (75 %); real pressure comes from the gateway's crypto
    // thread, stalled for 1.5 s on request while datagrams pile up in its RX ring.
    let extra = "[rate_limiting]\nper_client_bandwidth_mbps = 0\nper_client_pps = 0\n\n\
                 [threading]\nmode = pipeline\npipelines = 1\n\n[metrics]\nenable = true\n";
    // A name of this test's own: the control socket's directory is not per namespace.
    let gw_name = format!("vgq{}", std::process::id() % 100_000);
    let s = setup_with(
        "pq",
        extra,
        &gw_name,
        &[("VEIL_TEST_STALL_ON_REQUEST", "veil-crypto:1500")],
    );
    let (t, a, b) = (&s.t, s.t.a(), s.t.b());
    t.wait_ping(&b, "10.9.0.1");
    // No pressure: the same mix, paced, is carried whole.
    send_mixed(t, &b, "400", "0.002");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(priority_drops(t, &a), (0, 0), "shed without ring pressure");
    // The ring fills behind the stalled crypto thread: Low is shed, and at least as often as
    // Normal (it is shed from the high-water mark, Normal only near full).
    test_stall(&gw_name);
    send_mixed(t, &b, "4000", "0");
    std::thread::sleep(Duration::from_millis(2500));
    let (low, normal) = priority_drops(t, &a);
    assert!(low > 0, "no CS1 traffic shed under ring pressure");
    assert!(
        low >= normal,
        "Normal shed ({normal}) more than Low ({low})"
    );
});

/// Seconds since midnight (UTC) of a text log line's timestamp (`2026-…T12:34:56.789Z …`).
fn log_time(line: &str) -> Option<f64> {
    let stamp = line.split_whitespace().next()?;
    let clock = stamp.split_once('T')?.1.strip_suffix('Z')?;
    let mut parts = clock.split(':');
    let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
    Some(h.parse::<f64>().ok()? * 3600.0 + m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?)
}

/// The degradation level changes in a gateway log: (seconds since midnight, rose?).
fn level_changes(log: &str) -> Vec<(f64, bool)> {
    const ORDER: [&str; 5] = ["normal", "light", "moderate", "severe", "critical"];
    let rank = |w: &str| ORDER.iter().position(|l| *l == w);
    log.lines()
        .filter_map(|l| {
            let rest = l.split_once("degradation ")?.1;
            let mut w = rest.split_whitespace();
            let (from, arrow, to) = (w.next()?, w.next()?, w.next()?);
            (arrow == "->").then_some(())?;
            Some((log_time(l)?, rank(to)? > rank(from)?))
        })
        .collect()
}

e2e_test!(degradation_rises_refuses_new_sessions_and_recovers, {
    // Escalation and recovery delays that differ, so a step taken on the wrong one shows.
    let (escalation, recovery) = (3.0, 2.0);
    let (t, mut gw, _c1, c2_conf, _) = two_clients(
        "pd",
        "[rate_limiting]\nper_client_bandwidth_mbps = 0\nper_client_pps = 0\n\n[degradation]\ncpu_threshold_percent = 1\nescalation_delay_sec = 3\nrecovery_delay_sec = 2\n",
    );
    t.wait_ping(&t.b(), "10.9.0.1");
    // Load: a TCP stream for up to 30 s in the background (stopped once Severe is checked).
    let (a, b) = (t.a(), t.b());
    let iperf3 = require("iperf3");
    let mut server = t.iperf_server(&a, "10.9.0.1");
    std::thread::sleep(Duration::from_millis(300));
    let mut load = t.spawn(
        &b,
        "iperf3-load",
        &[&iperf3, "-c", "10.9.0.1", "-t", "30"],
        &[],
    );
    // Three steps of at least 3 s each.
    assert!(
        wait_log(&gw, "-> severe", Duration::from_secs(20)).is_some(),
        "never reached Severe:\n{}",
        gw.log_text()
    );
    // At Severe a new session is refused while the existing stream flows.
    let _c2 = veil_up(&t, &b, &c2_conf, &[], &[]);
    assert_eq!(
        t.ping(&b, "10.9.1.1", 3),
        0,
        "a new session was accepted at Severe"
    );
    assert!(
        wait_log(&gw, "refused (degradation", Duration::from_secs(3)).is_some(),
        "{}",
        gw.log_text()
    );
    assert_eq!(
        t.ping(&b, "10.9.0.1", 3),
        3,
        "the existing session stopped carrying traffic"
    );
    // Taken before the load stops: no fall can start counting its delay earlier.
    let unloaded = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
        % 86_400.0;
    let _ = load.stop();
    server.stop();
    // Load gone: the level comes down, and the new peer gets in (it retries every 5 s).
    assert!(
        wait_log(&gw, "-> normal", Duration::from_secs(20)).is_some(),
        "never recovered:\n{}",
        gw.log_text()
    );
    t.wait_ping(&b, "10.9.1.1");
    gw.stop();
    let log = gw.log_text();
    assert!(counter(&log, "sessions_refused_degraded") >= 1, "{log}");
    // Each step waited for its delay: a rise the escalation delay after the one before, a
    // fall the recovery delay after the load went or the fall before. (The log's clock has
    // millisecond stamps; 0.1 s of slack for the sample taken just before a stamp.)
    let changes = level_changes(&log);
    let rises: Vec<f64> = changes.iter().filter(|c| c.1).map(|c| c.0).collect();
    let falls: Vec<f64> = changes
        .iter()
        .filter(|c| !c.1 && c.0 > unloaded)
        .map(|c| c.0)
        .collect();
    assert!(
        rises.len() >= 3 && !falls.is_empty(),
        "level changes: {changes:?}\n{log}"
    );
    for w in rises.windows(2) {
        assert!(
            w[1] - w[0] >= escalation - 0.1,
            "rose after {:.2} s: {changes:?}",
            w[1] - w[0]
        );
    }
    assert!(
        falls[0] - unloaded >= recovery - 0.1,
        "fell {:.2} s after the load went: {changes:?}",
        falls[0] - unloaded
    );
    for w in falls.windows(2) {
        assert!(
            w[1] - w[0] >= recovery - 0.1,
            "fell after {:.2} s: {changes:?}",
            w[1] - w[0]
        );
    }
});

e2e_test!(handshake_flood_spares_established_flow_and_new_peer, {
    let (t, mut gw, _c1, c2_conf, gw_pub) = two_clients(
        "pf",
        "[rate_limiting]\nper_client_bandwidth_mbps = 0\nper_client_pps = 0\n",
    );
    let (a, b) = (t.a(), t.b());
    t.wait_ping(&b, "10.9.0.1");
    // The flow is paced (TCP at 400 Mbit/s): with offloads an unpaced flow takes both cores of
    // a 2-core machine, and then any CPU the flood's packets cost the kernel and veil shows up
    // as lost throughput. Paced, the test measures what it is about: that the flood does not
    // starve an established flow of the gateway's attention.
    let paced = ["-b", "400M"];
    let baseline = t
        .iperf_with([&a, &b, "10.9.0.1"], 5, false, &paced)
        .bits_per_second;
    // The flood comes from its own address on the client's side of the wire.
    t.ok(
        &b,
        &["ip", "addr", "add", "192.168.241.5/24", "dev", "veth0"],
    );
    let flood_bin = env!("CARGO_BIN_EXE_veil-flood");
    let to = endpoint(A_V4, GW_PORT);
    // The generator runs at the lowest CPU priority: on a 2-core machine it would
    // otherwise take a core from the tunnel itself, and the test is about what the
    // flood costs veil, not about the generator's own CPU.
    let mut flood = t.spawn(
        &b,
        "veil-flood",
        &[
            "nice",
            "-n",
            "19",
            flood_bin,
            "--to",
            &to,
            "--key",
            &gw_pub,
            "--from",
            "192.168.241.5:0",
            "--seconds",
            "20",
        ],
        &[],
    );
    std::thread::sleep(Duration::from_secs(2));
    let during = t
        .iperf_with([&a, &b, "10.9.0.1"], 5, false, &paced)
        .bits_per_second;
    // A legitimate new peer connects while the flood goes on.
    let start = std::time::Instant::now();
    let _c2 = veil_up(&t, &b, &c2_conf, &[], &[]);
    let mut joined = None;
    while start.elapsed() < Duration::from_secs(8) {
        if t.ping(&b, "10.9.1.1", 1) == 1 {
            joined = Some(start.elapsed());
            break;
        }
    }
    flood.stop();
    gw.stop();
    let log = gw.log_text();
    eprintln!(
        "flood: baseline {:.0} Mb/s, during flood {:.0} Mb/s, new peer joined after {joined:?}\n{}",
        baseline / 1e6,
        during / 1e6,
        flood.log_text()
    );
    assert!(
        counter(&log, "cookie_replies_sent") > 0,
        "cookie replies never engaged:\n{log}"
    );
    assert!(
        during >= 0.8 * baseline,
        "flow fell to {:.0} % of its throughput",
        during / baseline * 100.0
    );
    let joined = joined.unwrap_or_else(|| panic!("new peer never connected:\n{log}"));
    assert!(
        joined <= Duration::from_secs(5),
        "new peer connected after {joined:?}"
    );
});

e2e_test!(each_client_gets_its_own_limit, {
    let (t, _gw, _c1, c2_conf, _) = two_clients(
        "p2",
        "[rate_limiting]\nper_client_bandwidth_mbps = 50\nper_client_pps = 0\n",
    );
    let b = t.b();
    let _c2 = veil_up(&t, &b, &c2_conf, &[], &[]);
    t.wait_ping(&b, "10.9.0.1");
    t.wait_ping(&b, "10.9.1.1");
    let (tr, tr2) = (&t, &t);
    let (first, second) = std::thread::scope(|s| {
        let one = s.spawn(move || udp_run(tr, "10.9.0.1", "200M", 1372, 8, 3.0, None).0);
        let two = s.spawn(move || udp_run(tr2, "10.9.1.1", "100M", 1372, 8, 3.0, None).0);
        (
            one.join().expect("first client"),
            two.join().expect("second client"),
        )
    });
    let expected = 50e6 * 1372.0 / 1400.0;
    for (who, bps) in [("first", first), ("second", second)] {
        assert!(
            (bps - expected).abs() <= expected * 0.10,
            "{who} client got {:.1} Mb/s, limit 50",
            bps / 1e6
        );
    }
});
