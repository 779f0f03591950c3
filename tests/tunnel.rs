//! End-to-end: veil ↔ veil in real network namespaces (root, veth, TUN).
//!
//! Skipped, with the reason printed, only where the machine lacks root or
//! /dev/net/tun.

mod common;

use std::time::Duration;

use common::*;

struct Pair {
    t: Topology,
    gw: Proc,
    cl: Proc,
}

fn gateway_conf(gw_priv: &str, cl_pub: &str) -> String {
    format!(
        "[Interface]\nPrivateKey = {gw_priv}\nListenPort = {GW_PORT}\nAddress = 10.9.0.1/24, fd09::1/64\n\n\
         [Peer]\nPublicKey = {cl_pub}\nAllowedIPs = 10.9.0.2/32, fd09::2/128\n"
    )
}

fn client_conf(cl_priv: &str, gw_pub: &str, gw_endpoint: &str) -> String {
    format!(
        "[Interface]\nPrivateKey = {cl_priv}\nAddress = 10.9.0.2/24, fd09::2/64\n\n\
         [Peer]\nPublicKey = {gw_pub}\nEndpoint = {gw_endpoint}\nAllowedIPs = 10.9.0.0/24, fd09::/64\nPersistentKeepalive = 25\n"
    )
}

/// Gateway `veilgw` in namespace a, client `veilcl` in namespace b.
fn pair(tag: &str, args: &[&str], outer_v6: bool, env: &[(&str, &str)]) -> Pair {
    let t = Topology::new(tag);
    let (gw_priv, gw_pub) = keypair();
    let (cl_priv, cl_pub) = keypair();
    let gw_conf = t.write("veilgw.conf", &gateway_conf(&gw_priv, &cl_pub));
    let ep = endpoint(if outer_v6 { A_V6 } else { A_V4 }, GW_PORT);
    let cl_conf = t.write("veilcl.conf", &client_conf(&cl_priv, &gw_pub, &ep));
    let gw = veil_up(&t, &t.a(), &gw_conf, args, env);
    let cl = veil_up(&t, &t.b(), &cl_conf, args, env);
    Pair { t, gw, cl }
}

fn full_check(p: &Pair) {
    let (t, b, a) = (&p.t, p.t.b(), p.t.a());
    t.wait_ping(&b, "10.9.0.1");
    assert_eq!(
        t.ping(&b, "10.9.0.1", 20),
        20,
        "ping -c 20 over the tunnel lost packets"
    );
    assert_eq!(t.ping(&a, "10.9.0.2", 5), 5, "gateway → client ping");
    assert_eq!(t.ping(&b, "fd09::1", 5), 5, "IPv6 inside the tunnel");
    let up = t.iperf(&a, &b, "10.9.0.1", 10, false);
    assert!(
        up.bits_per_second > 1e6,
        "client → gateway iperf3: {} bit/s",
        up.bits_per_second
    );
    let down = t.iperf(&a, &b, "10.9.0.1", 10, true);
    assert!(
        down.bits_per_second > 1e6,
        "gateway → client iperf3: {} bit/s",
        down.bits_per_second
    );
    eprintln!(
        "iperf3 TCP: up {:.0} Mbit/s, down {:.0} Mbit/s",
        up.bits_per_second / 1e6,
        down.bits_per_second / 1e6
    );
    // UDP both ways at 40 Mb/s, paced: what a call or a game sends, well inside what the
    // tunnel carries, so loss beyond a few per cent is a fault.
    for reverse in [false, true] {
        let udp = t.iperf_with(
            [&a, &b, "10.9.0.1"],
            3,
            reverse,
            &["-u", "-b", "40M", "-l", "1300"],
        );
        assert!(
            udp.bits_per_second > 1e6 && udp.lost_percent < 10.0,
            "UDP iperf3 (reverse {reverse}): {} bit/s, {}% lost",
            udp.bits_per_second,
            udp.lost_percent
        );
    }
    // Data is hashed, not counted: 200 MB up (IPv4 inside), 20 MB down (IPv6 inside).
    t.sha256_copy(&b, &a, "10.9.0.1", 200);
    t.sha256_copy(&a, &b, "fd09::2", 20);
}

/// Both ends say at start whether TUN offloads are on.
fn assert_offloads(p: &Pair, on: bool) {
    for (who, log) in [("gateway", p.gw.log_text()), ("client", p.cl.log_text())] {
        let said = if on {
            "TUN offloads on"
        } else {
            "offloads off"
        };
        assert!(log.contains(said), "{who} log lacks {said:?}:\n{log}");
    }
}

/// veil ↔ veil with `--no-offload` in `mode`: the same checks, one packet per syscall.
fn no_offload(tag: &str, mode: &str) {
    let mut p = pair(tag, &["--threading", mode, "--no-offload"], false, &[]);
    full_check(&p);
    assert_offloads(&p, false);
    assert_eq!(p.gw.stop(), Some(0), "gateway:\n{}", p.gw.log_text());
}

e2e_test!(veil_to_veil_pipeline_no_offload, {
    no_offload("po", "pipeline");
});

e2e_test!(veil_to_veil_single_no_offload, {
    no_offload("so", "single");
});

// A client with MTU 1280 and a gateway with MTU 1420: full-size pings (DF set) both ways,
// so each side receives datagrams larger than its own MTU would make.
e2e_test!(mtu_1280_client_and_1420_gateway, {
    let t = Topology::new("pm");
    let (gw_priv, gw_pub) = keypair();
    let (cl_priv, cl_pub) = keypair();
    let with_mtu = |conf: String, mtu: u16| {
        conf.replacen("\n\n[Peer]", &format!("\nMTU = {mtu}\n\n[Peer]"), 1)
    };
    let gw_conf = t.write(
        "veilgw.conf",
        &with_mtu(gateway_conf(&gw_priv, &cl_pub), 1420),
    );
    let ep = endpoint(A_V4, GW_PORT);
    let cl_conf = t.write(
        "veilcl.conf",
        &with_mtu(client_conf(&cl_priv, &gw_pub, &ep), 1280),
    );
    let _gw = veil_up(&t, &t.a(), &gw_conf, &[], &[]);
    let _cl = veil_up(&t, &t.b(), &cl_conf, &[], &[]);
    t.wait_ping(&t.b(), "10.9.0.1");
    let full = |ns: &str, addr: &str, mtu: u32| {
        let size = (mtu - 28).to_string();
        let out = t.exec(
            ns,
            &[
                "ping", "-c", "5", "-W", "2", "-M", "do", "-s", &size, "-q", addr,
            ],
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            text.contains(" 5 received"),
            "{ns} -> {addr}, {mtu}-byte packets:\n{text}"
        );
    };
    full(&t.b(), "10.9.0.1", 1280);
    full(&t.a(), "10.9.0.2", 1420);
});

e2e_test!(veil_to_veil_pipeline, {
    let mut p = pair("pp", &["--threading", "pipeline"], false, &[]);
    full_check(&p);
    assert_offloads(&p, true);
    assert_eq!(
        p.cl.stop(),
        Some(0),
        "client exit status:\n{}",
        p.cl.log_text()
    );
    assert_eq!(
        p.gw.stop(),
        Some(0),
        "gateway exit status:\n{}",
        p.gw.log_text()
    );
    assert!(
        !p.t.has_link(&p.t.a(), "veilgw"),
        "interface left behind after SIGTERM"
    );
    assert!(
        !p.t.has_link(&p.t.b(), "veilcl"),
        "interface left behind after SIGTERM"
    );
});

e2e_test!(veil_to_veil_single, {
    let mut p = pair("ps", &["--threading", "single"], false, &[]);
    full_check(&p);
    assert_eq!(p.gw.stop(), Some(0));
    assert!(!p.t.has_link(&p.t.a(), "veilgw"));
});

e2e_test!(outer_transport_ipv6, {
    let p = pair("p6", &[], true, &[]);
    p.t.wait_ping(&p.t.b(), "10.9.0.1");
    assert_eq!(p.t.ping(&p.t.b(), "10.9.0.1", 10), 10);
    assert_eq!(p.t.ping(&p.t.b(), "fd09::1", 5), 5);
    // Bulk data over the IPv6 outer transport (GSO/GRO on an AF_INET6 socket).
    p.t.sha256_copy(&p.t.b(), &p.t.a(), "10.9.0.1", 50);
    p.t.sha256_copy(&p.t.a(), &p.t.b(), "fd09::2", 20);
    assert!(
        p.gw.log_text().contains("fd41::2"),
        "gateway should see the client at its IPv6 address:\n{}",
        p.gw.log_text()
    );
});

e2e_test!(unknown_peer_cannot_handshake, {
    let t = Topology::new("uk");
    let (gw_priv, gw_pub) = keypair();
    let (_, known_pub) = keypair();
    let (stranger_priv, _) = keypair();
    let gw_conf = t.write("veilgw.conf", &gateway_conf(&gw_priv, &known_pub));
    let cl_conf = t.write(
        "veilcl.conf",
        &client_conf(&stranger_priv, &gw_pub, &endpoint(A_V4, GW_PORT)),
    );
    let mut gw = veil_up(&t, &t.a(), &gw_conf, &[], &[]);
    let _cl = veil_up(&t, &t.b(), &cl_conf, &[], &[]);
    assert_eq!(
        t.ping(&t.b(), "10.9.0.1", 3),
        0,
        "a stranger reached the gateway"
    );
    gw.stop();
    let log = gw.log_text();
    assert!(
        !log.contains("handshake completed"),
        "gateway completed a handshake with an unknown key:\n{log}"
    );
    assert!(
        counter(&log, "handshake_unknown_peer") >= 1,
        "unknown-peer handshakes not counted:\n{log}"
    );
});

e2e_test!(inner_source_outside_allowed_ips_dropped, {
    let mut p = pair("sp", &[], false, &[]);
    let (t, b) = (&p.t, p.t.b());
    t.wait_ping(&b, "10.9.0.1");
    // An address the gateway did not allow for this client.
    t.ok(&b, &["ip", "addr", "add", "10.9.0.99/32", "dev", "veilcl"]);
    let out = t.exec(
        &b,
        &[
            "ping",
            "-c",
            "3",
            "-i",
            "0.2",
            "-W",
            "1",
            "-I",
            "10.9.0.99",
            "10.9.0.1",
        ],
    );
    assert!(!out.status.success(), "spoofed-source ping got replies");
    p.gw.stop();
    let log = p.gw.log_text();
    assert!(
        counter(&log, "drop_source_not_allowed") >= 3,
        "drops not counted:\n{log}"
    );
});

e2e_test!(rekey_under_traffic_without_stall, {
    let env = [("VEIL_TEST_REKEY_AFTER_SECS", "3")];
    let mut p = pair("rk", &[], false, &env);
    let (t, a, b) = (&p.t, p.t.a(), p.t.b());
    t.wait_ping(&b, "10.9.0.1");
    let before = p.cl.log_text().matches("handshake completed").count()
        + p.gw.log_text().matches("handshake completed").count();
    let run = t.iperf(&a, &b, "10.9.0.1", 10, false);
    let after = p.cl.log_text().matches("handshake completed").count()
        + p.gw.log_text().matches("handshake completed").count();
    // Each handshake is logged once by each side.
    let rekeys = (after - before) / 2;
    assert!(rekeys >= 2, "only {rekeys} rekeys during the run");
    // 0.5 s intervals: a stall over 1 s leaves at least one whole interval empty
    // between two others, or two in a row at an edge.
    let zero_run = run.interval_bytes.iter().fold((0, 0), |(cur, max), b| {
        let cur = if *b == 0.0 { cur + 1 } else { 0 };
        (cur, max.max(cur))
    });
    assert!(
        zero_run.1 < 2,
        "traffic stalled during rekey: {:?}",
        run.interval_bytes
    );
    assert!(
        run.interval_bytes.iter().skip(1).all(|b| *b > 0.0),
        "an empty interval: {:?}",
        run.interval_bytes
    );
    p.cl.stop();
    p.gw.stop();
});

e2e_test!(threads_are_named_and_pinned, {
    let cpus: Vec<usize> =
        (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
    let last = cpus.len() - 1;
    let (rx, crypto, tx, control) = (0, last, 0, last);
    let flags = [
        "--rx-cpu".to_string(),
        rx.to_string(),
        "--crypto-cpu".into(),
        crypto.to_string(),
        "--tx-cpu".into(),
        tx.to_string(),
        "--control-cpu".into(),
        control.to_string(),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let p = pair("th", &flags, false, &[]);
    let pid = p.gw.pid().to_string();
    let ps = std::process::Command::new("ps")
        .args(["-L", "-o", "tid=,comm=", "-p", &pid])
        .output()
        .expect("ps");
    let ps = String::from_utf8_lossy(&ps.stdout).into_owned();
    for (name, cpu) in [
        ("veil-rx", rx),
        ("veil-crypto", crypto),
        ("veil-tx", tx),
        ("veil-control", control),
    ] {
        let tid = ps
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or_else(|| panic!("no thread {name} in:\n{ps}"));
        let ts = std::process::Command::new("taskset")
            .args(["-p", tid])
            .output()
            .expect("taskset");
        let mask = String::from_utf8_lossy(&ts.stdout);
        let hex = mask.trim().rsplit(' ').next().unwrap_or("");
        let bits = u64::from_str_radix(hex, 16).unwrap_or(0);
        assert_eq!(bits, 1 << cpu, "{name} affinity {mask}");
    }
});

e2e_test!(bad_configs_exit_2_and_leave_nothing, {
    let t = Topology::new("bc");
    let (k, pk) = keypair();
    let cases = [
        ("nokey", format!("[Interface]\nListenPort = 1\n\n[Peer]\nPublicKey = {pk}\nAllowedIPs = 10.0.0.0/24\n"), 1),
        ("badb64", "[Interface]\nPrivateKey = not*base64\n".to_string(), 2),
        ("prefix", format!("[Interface]\nPrivateKey = {k}\n[Peer]\nPublicKey = {pk}\nAllowedIPs = 10.0.0.0/33\n"), 4),
        ("unknown", format!("[Interface]\nPrivateKey = {k}\nColour = blue\n"), 3),
    ];
    for (name, text, line) in cases {
        let path = t.write(&format!("{name}.conf"), &text);
        let out = t.exec(&t.a(), &[veil_bin(), "up", &path.to_string_lossy()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{name}: exit status; stderr:\n{err}"
        );
        assert!(
            err.contains(&format!("{name}.conf:{line}")),
            "{name}: no file:line in:\n{err}"
        );
        assert!(!err.contains(&k), "{name}: the private key was printed");
        assert!(!t.has_link(&t.a(), name), "{name}: interface left behind");
    }
});

e2e_test!(idle_uses_under_one_percent_cpu, {
    let p = pair("id", &[], false, &[]);
    p.t.wait_ping(&p.t.b(), "10.9.0.1");
    std::thread::sleep(Duration::from_secs(1));
    let (g0, c0) = (cpu_ticks(p.gw.pid()), cpu_ticks(p.cl.pid()));
    std::thread::sleep(Duration::from_secs(10));
    let (g1, c1) = (cpu_ticks(p.gw.pid()), cpu_ticks(p.cl.pid()));
    // 1 % of 10 s is 0.1 s: 10 ticks at the usual 100 Hz USER_HZ.
    assert!(g1 - g0 < 10, "gateway used {} ticks in 10 s idle", g1 - g0);
    assert!(c1 - c0 < 10, "client used {} ticks in 10 s idle", c1 - c0);
});
