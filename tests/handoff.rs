//! End-to-end acceptance of issue 15's same-host hand-off: `veil up --take-over` replaces a
//! running gateway under load without a re-handshake, and a take-over that fails after it
//! restored leaves the old gateway serving.
//!
//! Gateway `hoNNNN` in namespace a with 10.9.{0,1,2}.1/24; three clients in namespace b, each
//! on its own /24: a veil client (10.9.0.2), wireguard-go (10.9.1.2), boringtun (10.9.2.2).
//! Each runs a 20 s iperf3 TCP upload to its gateway address and a ping at 100/s; at 5 s a new
//! gateway process takes over.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;

const RUN_SECS: u32 = 20;
const TAKE_OVER_AT: Duration = Duration::from_secs(5);
/// Pings per client: 100/s for the length of the run.
const PINGS: u32 = RUN_SECS * 100;
/// Most pings one client may lose across the take-over.
const MAX_LOST: u32 = 5;
/// Each iperf3 run's rate. Unpaced, three TCP uploads keep the gateway's queues full on two
/// shared cores and every ping stream loses about 4 % of its packets all along the run, take-over
/// or not; paced, a lost ping is the take-over's.
const IPERF_RATE: &str = "100M";
/// The gateway's metrics endpoint, inside namespace a.
const METRICS: &str = "127.0.0.1:9587";

struct Client {
    kind: &'static str,
    /// The gateway's address on this client's network (what it pings and iperfs to).
    gw_addr: String,
    proc: Proc,
}

/// The gateway, the three clients, all pinging once through the tunnel.
struct Rig {
    t: Topology,
    gw: Proc,
    gw_conf: std::path::PathBuf,
    gw_iface: String,
    clients: Vec<Client>,
}

fn rig(tag: &str) -> Rig {
    let t = Topology::new(tag);
    let id = std::process::id() % 10000;
    let gw_iface = format!("ho{id}");
    let (gw_priv, gw_pub) = keypair();
    let kinds = ["veil", "wireguard-go", "boringtun"];
    let keys: Vec<(String, String)> = kinds.iter().map(|_| keypair()).collect();
    let mut conf = format!(
        "[Interface]\nPrivateKey = {gw_priv}\nListenPort = {GW_PORT}\nAddress = 10.9.0.1/24, 10.9.1.1/24, 10.9.2.1/24\n"
    );
    for (i, (_, public)) in keys.iter().enumerate() {
        conf += &format!("\n[Peer]\nPublicKey = {public}\nAllowedIPs = 10.9.{i}.2/32\n");
    }
    let gw_conf = t.write(&format!("{gw_iface}.conf"), &conf);
    let gw = veil_up(&t, &t.a(), &gw_conf, &["--metrics-listen", METRICS], &[]);
    let mut clients = Vec::new();
    for (i, kind) in kinds.into_iter().enumerate() {
        let iface = format!("hc{i}{id}");
        let (private, _) = &keys[i];
        let net = format!("10.9.{i}.0/24");
        let proc = if kind == "veil" {
            let c = t.write(
                &format!("{iface}.conf"),
                &format!(
                    "[Interface]\nPrivateKey = {private}\nAddress = 10.9.{i}.2/24\n\n[Peer]\nPublicKey = {gw_pub}\nEndpoint = {}\nAllowedIPs = {net}\n",
                    endpoint(A_V4, GW_PORT)
                ),
            );
            veil_up(&t, &t.b(), &c, &[], &[])
        } else {
            let key_file = t.write(&format!("{iface}.key"), private);
            let wg_args: Vec<String> = [
                "private-key",
                &key_file.to_string_lossy(),
                "peer",
                &gw_pub,
                "endpoint",
                &endpoint(A_V4, GW_PORT),
                "allowed-ips",
                &net,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            let peer = if kind == "wireguard-go" {
                Peer::WireguardGo
            } else {
                Peer::Boringtun
            };
            start_peer(
                &t,
                &t.b(),
                peer,
                &iface,
                &wg_args,
                &format!("10.9.{i}.2/24"),
            )
        };
        clients.push(Client {
            kind,
            gw_addr: format!("10.9.{i}.1"),
            proc,
        });
    }
    for c in &clients {
        t.wait_ping(&t.b(), &c.gw_addr);
    }
    Rig {
        t,
        gw,
        gw_conf,
        gw_iface,
        clients,
    }
}

/// `wg show IFACE DUMP` on the gateway, as (peer public key, value).
fn wg_show(r: &Rig, what: &str) -> BTreeMap<String, String> {
    let wg = require("wg");
    r.t.ok(&r.t.a(), &[&wg, "show", &r.gw_iface, what])
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?.to_string(), f.collect::<Vec<_>>().join(" ")))
        })
        .collect()
}

/// Bytes received from every peer (`wg show transfer`, the first number).
fn received(r: &Rig) -> u64 {
    wg_show(r, "transfer")
        .values()
        .filter_map(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Start the load: per client an iperf3 server on its gateway address, the iperf3 client and
/// a ping at 100/s. Returns (iperf clients, pings, servers), all running.
fn start_load(r: &Rig) -> (Vec<Proc>, Vec<Proc>, Vec<Proc>) {
    let iperf3 = require("iperf3");
    let (mut clients, mut pings, mut servers) = (Vec::new(), Vec::new(), Vec::new());
    for (i, c) in r.clients.iter().enumerate() {
        let port = (5301 + i).to_string();
        servers.push(r.t.spawn(
            &r.t.a(),
            &format!("iperf3-server-{i}"),
            &[&iperf3, "-s", "-1", "-B", &c.gw_addr, "-p", &port],
            &[],
        ));
    }
    std::thread::sleep(Duration::from_millis(400));
    let secs = RUN_SECS.to_string();
    let count = PINGS.to_string();
    for (i, c) in r.clients.iter().enumerate() {
        let port = (5301 + i).to_string();
        clients.push(r.t.spawn(
            &r.t.b(),
            &format!("iperf3-{}", c.kind),
            &[
                &iperf3,
                "-c",
                &c.gw_addr,
                "-p",
                &port,
                "-t",
                &secs,
                "-b",
                IPERF_RATE,
                "-J",
                "--connect-timeout",
                "5000",
            ],
            &[],
        ));
        pings.push(r.t.spawn(
            &r.t.b(),
            &format!("ping-{}", c.kind),
            &[
                "ping", "-c", &count, "-i", "0.01", "-W", "1", "-q", &c.gw_addr,
            ],
            &[],
        ));
    }
    (clients, pings, servers)
}

/// Wait for every load process to end (bounded), and check each: iperf3 completed without
/// error (its JSON has no "error" and moved data), ping lost at most [`MAX_LOST`].
fn check_load(r: &Rig, iperfs: &mut [Proc], pings: &mut [Proc]) {
    let limit = Duration::from_secs(u64::from(RUN_SECS) + 30);
    for (c, p) in r.clients.iter().zip(iperfs.iter_mut()) {
        let code = wait_exit(p, limit);
        let text = p.log_text();
        assert_eq!(
            code,
            Some(Some(0)),
            "{}: iperf3 did not complete: {text}",
            c.kind
        );
        let v: serde_json::Value = serde_json::from_str(&text).expect("iperf3 JSON");
        assert!(
            v.get("error").is_none(),
            "{}: iperf3: {}",
            c.kind,
            v["error"]
        );
        let got = v["end"]["sum_received"]["bytes"].as_f64().unwrap_or(0.0);
        assert!(got > 0.0, "{}: iperf3 moved nothing", c.kind);
        // Every second of the run moved data, the take-over's included.
        let quiet = interval_bytes(&v).iter().filter(|b| **b == 0.0).count();
        assert_eq!(quiet, 0, "{}: iperf3 stalled for {quiet} s", c.kind);
    }
    for (c, p) in r.clients.iter().zip(pings.iter_mut()) {
        let _ = wait_exit(p, limit);
        let text = p.log_text();
        let received: u32 = text
            .lines()
            .find(|l| l.contains("received"))
            .and_then(|l| l.split(',').nth(1))
            .and_then(|s| s.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        eprintln!("{}: ping {received} of {PINGS} answered", c.kind);
        assert!(
            PINGS - received <= MAX_LOST,
            "{}: ping lost {} of {PINGS} across the take-over: {text}",
            c.kind,
            PINGS - received
        );
    }
}

/// `veil up --take-over` in namespace a for the gateway's config.
fn take_over(r: &Rig, name: &str, env: &[(&str, &str)]) -> Proc {
    let conf = r.gw_conf.to_string_lossy().into_owned();
    let mut all = vec![("RUST_LOG", "info")];
    all.extend_from_slice(env);
    r.t.spawn(
        &r.t.a(),
        name,
        &[
            veil_bin(),
            "up",
            &conf,
            "--take-over",
            "--metrics-listen",
            METRICS,
        ],
        &all,
    )
}

/// [`take_over`], and wait until it says it took over.
fn taken_over(r: &Rig, name: &str) -> Proc {
    let new = take_over(r, name, &[]);
    assert!(
        wait_log(&new, "took over from pid", Duration::from_secs(10)).is_some(),
        "the take-over did not complete:\n{}\nold:\n{}",
        new.log_text(),
        r.gw.log_text()
    );
    new
}

e2e_test!(take_over_under_load_keeps_every_session, {
    let mut r = rig("ho");
    let before_rx = received(&r);
    let (mut iperfs, mut pings, _servers) = start_load(&r);
    let start = Instant::now();
    std::thread::sleep(TAKE_OVER_AT);
    let handshakes = wg_show(&r, "latest-handshakes");
    assert_eq!(handshakes.len(), 3, "{handshakes:?}");
    let old_pid = r.gw.pid();
    let mut new = taken_over(&r, "veil-new");
    assert_eq!(
        wait_exit(&mut r.gw, Duration::from_secs(10)),
        Some(Some(0)),
        "the old gateway (pid {old_pid}) did not exit 0:\n{}",
        r.gw.log_text()
    );
    check_load(&r, &mut iperfs, &mut pings);
    assert!(start.elapsed() < Duration::from_secs(60));
    // No re-handshake with any peer: the handshake times are those from before.
    assert_eq!(wg_show(&r, "latest-handshakes"), handshakes);
    // The new process answers wg, veil show and /metrics, and counters go on.
    assert!(received(&r) > before_rx);
    let show = r.t.ok(&r.t.a(), &[veil_bin(), "show", &r.gw_iface]);
    assert!(show.contains("3 with an active session"), "{show}");
    assert!(
        show.contains("hand-offs: 1 completed, 0 rolled back"),
        "{show}"
    );
    let metrics = r.t.ok(
        &r.t.a(),
        &[
            "python3",
            "-c",
            "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())",
            &format!("http://{METRICS}/metrics"),
        ],
    );
    assert!(
        metrics.contains("veil_handoffs_total{result=\"completed\"} 1"),
        "{metrics}"
    );
    assert!(
        new.exited().is_none(),
        "the new gateway died:\n{}",
        new.log_text()
    );
    let log = new.log_text();
    assert!(log.contains("restored 3 peer(s)"), "{log}");
    for c in &mut r.clients {
        c.proc.stop();
    }
    assert_eq!(new.stop(), Some(0), "{}", new.log_text());
});

e2e_test!(take_over_that_fails_after_restoring_rolls_back, {
    let mut r = rig("hr");
    let (mut iperfs, mut pings, _servers) = start_load(&r);
    std::thread::sleep(TAKE_OVER_AT);
    let handshakes = wg_show(&r, "latest-handshakes");
    let mut new = take_over(
        &r,
        "veil-failing",
        &[("VEIL_TEST_HANDOFF_FAIL", "after-restore")],
    );
    let code = wait_exit(&mut new, Duration::from_secs(15));
    assert_eq!(code, Some(Some(3)), "{}", new.log_text());
    assert!(
        wait_log(&r.gw, "hand-off rolled back", Duration::from_secs(5)).is_some(),
        "{}",
        r.gw.log_text()
    );
    check_load(&r, &mut iperfs, &mut pings);
    assert!(
        r.gw.exited().is_none(),
        "the old gateway stopped:\n{}",
        r.gw.log_text()
    );
    assert_eq!(wg_show(&r, "latest-handshakes"), handshakes);
    // A second take-over, now allowed to succeed, works (the token was renewed).
    let mut again = taken_over(&r, "veil-again");
    assert_eq!(wait_exit(&mut r.gw, Duration::from_secs(10)), Some(Some(0)));
    for c in &r.clients {
        r.t.wait_ping(&r.t.b(), &c.gw_addr);
    }
    assert_eq!(again.stop(), Some(0), "{}", again.log_text());
});

e2e_test!(take_over_with_two_pipelines_applies_a_changed_config, {
    let t = Topology::new("hp");
    let id = std::process::id() % 10000;
    let iface = format!("hp{id}");
    let (gw_priv, gw_pub) = keypair();
    let (cl_priv, cl_pub) = keypair();
    let (_, gone_pub) = keypair();
    let (_, added_pub) = keypair();
    let conf_with = |other: &str| {
        format!(
            "[Interface]\nPrivateKey = {gw_priv}\nListenPort = {GW_PORT}\nAddress = 10.9.0.1/24\n\n\
             [Peer]\nPublicKey = {cl_pub}\nAllowedIPs = 10.9.0.2/32\n\n\
             [Peer]\nPublicKey = {other}\nAllowedIPs = 10.9.0.7/32\n"
        )
    };
    let gw_conf = t.write(&format!("{iface}.conf"), &conf_with(&gone_pub));
    let mut gw = veil_up(&t, &t.a(), &gw_conf, &["--pipelines", "2"], &[]);
    let cl_conf = t.write(
        &format!("hq{id}.conf"),
        &one_gateway_client(&cl_priv, &gw_pub),
    );
    let _cl = veil_up(&t, &t.b(), &cl_conf, &[], &[]);
    t.wait_ping(&t.b(), "10.9.0.1");
    let wg = require("wg");
    let show = |what: &str| t.ok(&t.a(), &[&wg, "show", &iface, what]);
    let handshakes = show("latest-handshakes");
    let conf_s = gw_conf.to_string_lossy().into_owned();
    let up = |pipelines: &str, name: &str| {
        t.spawn(
            &t.a(),
            name,
            &[
                veil_bin(),
                "up",
                &conf_s,
                "--take-over",
                "--pipelines",
                pipelines,
            ],
            &[("RUST_LOG", "info")],
        )
    };
    // Another number of pipelines than the running veil's: refused, the old one serves on.
    let mut wrong = up("1", "veil-one-pipeline");
    assert_eq!(
        wait_exit(&mut wrong, Duration::from_secs(15)),
        Some(Some(3)),
        "{}",
        wrong.log_text()
    );
    assert!(wrong.log_text().contains("take over with --pipelines 2"));
    assert_eq!(t.ping(&t.b(), "10.9.0.1", 10), 10);
    // The config changed: one peer removed, one added; the client's session goes on.
    t.write(&format!("{iface}.conf"), &conf_with(&added_pub));
    let mut new = up("2", "veil-changed");
    assert!(
        wait_log(&new, "took over from pid", Duration::from_secs(10)).is_some(),
        "{}\nold:\n{}",
        new.log_text(),
        gw.log_text()
    );
    assert_eq!(wait_exit(&mut gw, Duration::from_secs(10)), Some(Some(0)));
    assert_eq!(t.ping(&t.b(), "10.9.0.1", 20), 20);
    t.sha256_copy(&t.b(), &t.a(), "10.9.0.1", 8);
    let peers = show("peers");
    assert!(
        peers.contains(&added_pub) && !peers.contains(&gone_pub),
        "{peers}"
    );
    let now = show("latest-handshakes");
    let line = |s: &str| {
        s.lines()
            .find(|l| l.starts_with(&cl_pub))
            .map(str::to_string)
    };
    assert_eq!(line(&now), line(&handshakes), "the client re-handshook");
    assert!(new.log_text().contains("1 peer(s) not in this config"));
    assert_eq!(new.stop(), Some(0), "{}", new.log_text());
});
