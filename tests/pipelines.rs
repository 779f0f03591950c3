//! Issue 14: a gateway with several pipelines (on 2 cores: correctness, not speed). Four
//! clients at once (veil, wireguard-go, boringtun, gotatun), each on its own tunnel subnet
//! (10.9.K.0/24, the gateway at 10.9.K.1), all in namespace b; the gateway in namespace a.
//! Interface names carry the test's PID (other helpers' runs share /run/veil and
//! /var/run/wireguard).

mod common;

use std::time::{Duration, Instant};

use common::*;

/// The clients: a name stem and the implementation (`None`: veil).
const CLIENTS: [(&str, Option<Peer>); 4] = [
    ("pv", None),
    ("pw", Some(Peer::WireguardGo)),
    ("pb", Some(Peer::Boringtun)),
    ("pt", Some(Peer::Gotatun)),
];

fn iface(stem: &str) -> String {
    format!("{stem}{}", std::process::id() % 100_000)
}

/// `veil show` of the gateway: `(total, per pipeline)` values of `counter` (e.g.
/// `crypto.decrypted`); a counter not shown is zero.
fn shown(t: &Topology, gw: &str, counter: &str) -> (u64, Vec<u64>) {
    let text = t.ok(&t.a(), &[veil_bin(), "show", gw]);
    let value = |l: &str| {
        l.trim()
            .strip_prefix(counter)
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let mut total = 0;
    let mut per: Vec<u64> = Vec::new();
    let mut in_pipeline = false;
    for l in text.lines() {
        if l.starts_with("  pipeline ") && l.ends_with(':') {
            in_pipeline = true;
            per.push(0);
        } else if !l.starts_with("    ") {
            in_pipeline = false;
        }
        if let Some(v) = value(l) {
            match per.last_mut() {
                Some(p) if in_pipeline => *p = v,
                _ => total = v,
            }
        }
    }
    (total, per)
}

/// The gateway's config: one address per client subnet and, for each client key, its /32.
fn gateway_conf(gw_priv: &str, clients: &[(usize, &str)]) -> String {
    let mut s = format!(
        "[Interface]\nPrivateKey = {gw_priv}\nListenPort = {GW_PORT}\n\
         Address = 10.9.1.1/24, 10.9.2.1/24, 10.9.3.1/24, 10.9.4.1/24\n"
    );
    for (k, public) in clients {
        s.push_str(&format!(
            "\n[Peer]\nPublicKey = {public}\nAllowedIPs = 10.9.{k}.2/32\n"
        ));
    }
    s
}

/// A veil client in namespace b on subnet `k`.
fn veil_client(t: &Topology, k: usize, cl_priv: &str, gw_pub: &str, env: &[(&str, &str)]) -> Proc {
    let conf = t.write(
        &format!("{}.conf", iface(&format!("pv{k}x"))),
        &format!(
            "[Interface]\nPrivateKey = {cl_priv}\nAddress = 10.9.{k}.2/24\n\n\
             [Peer]\nPublicKey = {gw_pub}\nEndpoint = {}\nAllowedIPs = 10.9.{k}.0/24\n",
            endpoint(A_V4, GW_PORT)
        ),
    );
    veil_up(t, &t.b(), &conf, &[], env)
}

/// A standard client in namespace b on subnet `k`, configured with `wg`.
fn standard_client(t: &Topology, k: usize, peer: Peer, cl_priv: &str, gw_pub: &str) -> Proc {
    let key = t.write(&format!("client{k}.key"), &format!("{cl_priv}\n"));
    let args = vec![
        "private-key".to_string(),
        key.to_string_lossy().into_owned(),
        "peer".into(),
        gw_pub.to_string(),
        "endpoint".into(),
        endpoint(A_V4, GW_PORT),
        "allowed-ips".into(),
        format!("10.9.{k}.0/24"),
        "persistent-keepalive".into(),
        "25".into(),
    ];
    let name = iface(CLIENTS[k - 1].0);
    start_peer(t, &t.b(), peer, &name, &args, &format!("10.9.{k}.2/24"))
}

/// iperf3 `-P 4` for `secs` s from every subnet's client to the gateway at once; each run
/// must complete and move data. Returns each run's 0.5 s interval bytes.
fn iperf_all(t: &Topology, subnets: &[usize], secs: u32) -> Vec<Vec<f64>> {
    let iperf3 = require("iperf3");
    // One process per subnet `k` in `ns`, its arguments ending with the gateway's address.
    let each = |ns: &str, role: &str, args: &[&str]| -> Vec<Proc> {
        subnets
            .iter()
            .map(|k| {
                let addr = format!("10.9.{k}.1");
                let mut cmd = vec![iperf3.as_str()];
                cmd.extend_from_slice(args);
                cmd.push(&addr);
                t.spawn(ns, &format!("iperf3-{role}-{k}"), &cmd, &[])
            })
            .collect()
    };
    let mut servers = each(&t.a(), "server", &["-s", "-1", "-B"]);
    std::thread::sleep(Duration::from_millis(500));
    let secs_s = secs.to_string();
    let mut clients = each(
        &t.b(),
        "client",
        &[
            "-t",
            &secs_s,
            "-P",
            "4",
            "-i",
            "0.5",
            "-J",
            "--connect-timeout",
            "5000",
            "-c",
        ],
    );
    let limit = Duration::from_secs(u64::from(secs) + 30);
    let mut runs = Vec::new();
    for (c, k) in clients.iter_mut().zip(subnets) {
        let status = wait_exit(c, limit);
        let text = c.log_text();
        assert_eq!(
            status,
            Some(Some(0)),
            "iperf3 from client {k} did not complete:\n{text}"
        );
        let v: serde_json::Value = serde_json::from_str(&text).expect("iperf3 JSON");
        let bytes = v["end"]["sum_received"]["bytes"].as_f64().unwrap_or(0.0);
        assert!(bytes > 0.0, "client {k}: nothing arrived:\n{text}");
        let intervals = interval_bytes(&v);
        eprintln!(
            "client {k}: {:.0} Mbit/s",
            bytes * 8.0 / f64::from(secs) / 1e6
        );
        runs.push(intervals);
    }
    for s in &mut servers {
        s.stop();
    }
    runs
}

/// Four clients of four implementations, `n` pipelines at the gateway in `mode` (`pipeline`:
/// three threads each; `single`: one thread each, pipeline 0's also running the control work).
fn four_clients(tag: &str, n: &str, mode: &str) {
    let t = Topology::new(tag);
    let (gw_priv, gw_pub) = keypair();
    let keys: Vec<(String, String)> = (0..4).map(|_| keypair()).collect();
    let publics: Vec<(usize, &str)> = keys
        .iter()
        .enumerate()
        .map(|(i, (_, p))| (i + 1, p.as_str()))
        .collect();
    let gw_name = iface("pg");
    let gw_conf = t.write(
        &format!("{gw_name}.conf"),
        &gateway_conf(&gw_priv, &publics),
    );
    let mut gw = veil_up(
        &t,
        &t.a(),
        &gw_conf,
        &["--pipelines", n, "--threading", mode],
        &[],
    );
    let mut clients = Vec::new();
    for (i, ((_, peer), (cl_priv, _))) in CLIENTS.iter().zip(&keys).enumerate() {
        let k = i + 1;
        clients.push(match peer {
            None => veil_client(&t, k, cl_priv, &gw_pub, &[]),
            Some(p) => standard_client(&t, k, *p, cl_priv, &gw_pub),
        });
    }
    for k in 1..=4 {
        t.wait_ping(&t.b(), &format!("10.9.{k}.1"));
    }
    // Every pipeline runs its own threads.
    let ps = std::process::Command::new("ps")
        .args(["-L", "-o", "comm=", "-p", &gw.pid().to_string()])
        .output()
        .expect("ps");
    let ps = String::from_utf8_lossy(&ps.stdout).into_owned();
    let last = n.parse::<usize>().expect("count") - 1;
    let threads: &[&str] = match mode {
        "single" => &["veil-single"],
        _ => &["veil-rx", "veil-crypto", "veil-tx"],
    };
    for thread in threads {
        let name = format!("{thread}{last}");
        assert!(
            ps.lines().any(|l| l.trim() == name),
            "no thread {name}:\n{ps}"
        );
    }
    iperf_all(&t, &[1, 2, 3, 4], 10);
    for k in 1..=4 {
        t.sha256_copy(&t.b(), &t.a(), &format!("10.9.{k}.1"), 200);
    }
    let (_, per) = shown(&t, &gw_name, "crypto.decrypted");
    // Which pipeline a client lands on is the kernel's hash of its outer 4-tuple, so one
    // pipeline may carry none of the four (1 run in 8 with two): printed, not asserted.
    eprintln!("decrypted per pipeline: {per:?}");
    for c in &mut clients {
        c.stop();
    }
    assert_eq!(gw.stop(), Some(0), "veil exit status:\n{}", gw.log_text());
    let log = gw.log_text();
    assert!(
        log.contains(&format!("{n} pipeline(s)")),
        "not {n} pipelines:\n{log}"
    );
    assert!(counter(&log, "decrypted") > 0, "no traffic counted:\n{log}");
    assert_eq!(counter(&log, "drop_replay"), 0, "replay drops:\n{log}");
}

e2e_test!(two_pipelines_four_clients, {
    four_clients("p2", "2", "pipeline");
});

e2e_test!(three_pipelines_four_clients, {
    four_clients("p3", "3", "pipeline");
});

e2e_test!(two_single_threaded_pipelines_four_clients, {
    four_clients("p1s", "2", "single");
});

// Rekeys under traffic (shortened timers at both veil ends), a peer added with `wg set`
// during traffic reaching every pipeline, and a peer removed under traffic: nothing from
// or to it is accepted afterwards, and its packets are counted as drops.
e2e_test!(pipelines_rekey_add_and_remove_peers_under_traffic, {
    let t = Topology::new("pr");
    let env = [("VEIL_TEST_REKEY_AFTER_SECS", "3")];
    let (gw_priv, gw_pub) = keypair();
    let (c1_priv, c1_pub) = keypair();
    let (c2_priv, c2_pub) = keypair();
    let gw_name = iface("pg");
    let gw_conf = t.write(
        &format!("{gw_name}.conf"),
        &gateway_conf(&gw_priv, &[(1, c1_pub.as_str())]),
    );
    let mut gw = veil_up(&t, &t.a(), &gw_conf, &["--pipelines", "2"], &env);
    let mut c1 = veil_client(&t, 1, &c1_priv, &gw_pub, &env);
    t.wait_ping(&t.b(), "10.9.1.1");
    let (_, added_before) = shown(&t, &gw_name, "crypto.peers_added");
    assert_eq!(
        added_before,
        [1, 1],
        "the configured peer on every pipeline"
    );
    let handshakes = |p: &Proc| p.log_text().matches("handshake completed").count();
    let before = handshakes(&gw) + handshakes(&c1);

    // Client 1's traffic runs while client 2 is added with `wg set`.
    let wg = require("wg");
    let runs = std::thread::scope(|s| {
        let run = s.spawn(|| iperf_all(&t, &[1], 10));
        std::thread::sleep(Duration::from_secs(3));
        t.ok(
            &t.a(),
            &[
                &wg,
                "set",
                &gw_name,
                "peer",
                &c2_pub,
                "allowed-ips",
                "10.9.2.2/32",
            ],
        );
        run.join().expect("iperf thread")
    });
    let after = handshakes(&gw) + handshakes(&c1);
    let rekeys = (after - before) / 2;
    assert!(rekeys >= 2, "only {rekeys} rekeys during the run");
    let run = &runs[0];
    assert!(
        run.iter().skip(1).all(|b| *b > 0.0),
        "a stall over 0.5 s during rekeys: {run:?}"
    );
    let (_, added) = shown(&t, &gw_name, "crypto.peers_added");
    assert_eq!(added, [2, 2], "the added peer reached every pipeline");
    c1.stop();

    // Client 2 works, then is removed while it sends.
    let mut c2 = veil_client(&t, 2, &c2_priv, &gw_pub, &env);
    t.wait_ping(&t.b(), "10.9.2.1");
    let mut pinger = t.spawn(
        &t.b(),
        "flood",
        &["ping", "-q", "-i", "0.01", "-w", "8", "10.9.2.1"],
        &[],
    );
    std::thread::sleep(Duration::from_secs(1));
    t.ok(&t.a(), &[&wg, "set", &gw_name, "peer", &c2_pub, "remove"]);
    let removed_at = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    let (_, removed) = shown(&t, &gw_name, "crypto.peers_removed");
    assert_eq!(removed, [1, 1], "the removal reached every pipeline");
    let (decrypted, _) = shown(&t, &gw_name, "crypto.decrypted");
    let (encrypted, _) = shown(&t, &gw_name, "crypto.encrypted");
    let drops = |t: &Topology| {
        shown(t, &gw_name, "crypto.drop_unknown_index").0
            + shown(t, &gw_name, "crypto.drop_revoked_key").0
    };
    let dropped = drops(&t);
    // The gateway tries to reach the removed client too.
    let replies = t.ping(&t.a(), "10.9.2.2", 5);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(replies, 0, "the removed peer still answers");
    assert_eq!(
        shown(&t, &gw_name, "crypto.decrypted").0,
        decrypted,
        "a packet from the removed peer was accepted"
    );
    assert_eq!(
        shown(&t, &gw_name, "crypto.encrypted").0,
        encrypted,
        "a packet to the removed peer was sealed"
    );
    assert!(
        drops(&t) > dropped,
        "the removed peer's packets were not counted as drops"
    );
    assert!(
        removed_at.elapsed() < Duration::from_secs(8),
        "pinger outlived the check"
    );
    let _ = wait_exit(&mut pinger, Duration::from_secs(10));
    c2.stop();
    assert_eq!(gw.stop(), Some(0), "veil exit status:\n{}", gw.log_text());
    assert_eq!(counter(&gw.log_text(), "drop_replay"), 0, "replay drops");
});
