//! End-to-end: sticky source addresses. The gateway's uplink carries two addresses; the client
//! talks to the second (not the one the kernel would pick to reach it), and every datagram the
//! gateway sends it leaves from that second address, as a packet capture on the gateway's side
//! shows. Data crosses the tunnel both ways and is checked by hash.

mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::*;

/// The gateway's second address on its uplink, in both families.
const SECOND_V4: &str = "192.168.241.11";
const SECOND_V6: &str = "fd41::11";

/// The (source, destination) of every UDP datagram in capture `pcap`, as `tcpdump -r` prints
/// them (`addr.port`).
fn datagrams(t: &Topology, pcap: &str) -> Vec<(String, String)> {
    let tcpdump = require("tcpdump");
    let text = t.ok(&t.a(), &[&tcpdump, "-r", pcap, "-nn", "-q"]);
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let at = f.iter().position(|w| *w == "IP" || *w == "IP6")?;
            let src = f.get(at + 1)?;
            let dst = f.get(at + 3)?.trim_end_matches(':');
            Some((src.to_string(), dst.to_string()))
        })
        .collect()
}

/// `gw_args`: extra `veil up` flags of the gateway.
fn replies_leave_from_the_address_the_client_used(tag: &str, v6: bool, gw_args: &[&str]) {
    let t = Topology::new(tag);
    let (a, b) = (t.a(), t.b());
    let second = if v6 { SECOND_V6 } else { SECOND_V4 };
    let (primary, client_outer) = if v6 { (A_V6, B_V6) } else { (A_V4, B_V4) };
    if v6 {
        t.ok(
            &a,
            &[
                "ip",
                "-6",
                "addr",
                "add",
                "fd41::11/64",
                "dev",
                "veth0",
                "nodad",
            ],
        );
    } else {
        t.ok(
            &a,
            &["ip", "addr", "add", "192.168.241.11/24", "dev", "veth0"],
        );
    }
    // The kernel would answer the client from the primary address: the check below means
    // something only if it does.
    let route = t.ok(&a, &["ip", "route", "get", client_outer]);
    assert!(
        route.contains(&format!("src {primary}")),
        "the kernel's own choice of source is the primary address: {route}"
    );

    let tcpdump = require("tcpdump");
    let pcap = t.dir.join("uplink.pcap").to_string_lossy().into_owned();
    let port = GW_PORT.to_string();
    let mut capture = t.spawn(
        &a,
        "tcpdump",
        &[
            &tcpdump, "-i", "veth0", "-nn", "-U", "-w", &pcap, "udp", "port", &port,
        ],
        &[],
    );
    let listening = wait_log(&capture, "listening on", Duration::from_secs(10));
    assert!(listening.is_some(), "tcpdump: {}", capture.log_text());

    let (gw_priv, gw_pub) = keypair();
    let (cl_priv, cl_pub) = keypair();
    let gw_conf = t.write(
        "veilgw.conf",
        &format!(
            "[Interface]\nPrivateKey = {gw_priv}\nListenPort = {GW_PORT}\nAddress = 10.9.0.1/24\n\n\
             [Peer]\nPublicKey = {cl_pub}\nAllowedIPs = 10.9.0.2/32\n"
        ),
    );
    let cl_conf = t.write(
        "veilcl.conf",
        &format!(
            "[Interface]\nPrivateKey = {cl_priv}\nAddress = 10.9.0.2/24\n\n\
             [Peer]\nPublicKey = {gw_pub}\nEndpoint = {}\nAllowedIPs = 10.9.0.0/24\n\
             PersistentKeepalive = 1\n",
            endpoint(second, GW_PORT)
        ),
    );
    let mut gw = veil_up(&t, &a, &gw_conf, gw_args, &[]);
    let mut cl = veil_up(&t, &b, &cl_conf, &[], &[]);
    t.wait_ping(&b, "10.9.0.1");
    assert_eq!(t.ping(&b, "10.9.0.1", 5), 5, "client -> gateway ping");
    // Bulk both ways: the gateway sends ACKs one way and GSO runs of data the other.
    t.sha256_copy(&b, &a, "10.9.0.1", 4);
    t.sha256_copy(&a, &b, "10.9.0.2", 4);
    assert_eq!(t.ping(&a, "10.9.0.2", 5), 5, "gateway -> client ping");

    // Let tcpdump write out what it holds, then stop it (it flushes on SIGTERM).
    std::thread::sleep(Duration::from_millis(300));
    capture.stop();
    let start = Instant::now();
    while fs::metadata(&pcap).map_or(0, |m| m.len()) == 0
        && start.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let all = datagrams(&t, &pcap);
    let ours = format!("{second}.{GW_PORT}");
    let primary_ep = format!("{primary}.{GW_PORT}");
    let from_gw: Vec<&(String, String)> = all
        .iter()
        .filter(|(s, _)| s.ends_with(&format!(".{GW_PORT}")))
        .collect();
    let to_second = all.iter().filter(|(_, d)| *d == ours).count();
    let wrong: Vec<&&(String, String)> = from_gw.iter().filter(|(s, _)| *s != ours).collect();
    // A capture on veth sees a GSO run as one packet (segmented only at the far end), so
    // the client's bulk data is few captured packets; the gateway's ACKs and replies are many.
    assert!(
        to_second >= 10 && from_gw.len() >= 100,
        "the capture saw {to_second} datagrams to {ours} and {} from the gateway",
        from_gw.len()
    );
    assert!(
        wrong.is_empty(),
        "{} of {} datagrams from the gateway did not come from {ours} (e.g. {:?}; \
         {primary_ep} is the kernel's choice)",
        wrong.len(),
        from_gw.len(),
        wrong.first()
    );
    assert_eq!(gw.exited(), None, "gateway still runs:\n{}", gw.log_text());
    assert_eq!(cl.exited(), None, "client still runs:\n{}", cl.log_text());
    gw.stop();
    cl.stop();
}

e2e_test!(replies_leave_from_the_second_address_v4, {
    replies_leave_from_the_address_the_client_used("sk4", false, &[]);
});

e2e_test!(replies_leave_from_the_second_address_v6, {
    replies_leave_from_the_address_the_client_used("sk6", true, &[]);
});

// Two pipelines: the source learnt on one reaches the other (handshake and roam commands), and
// each keeps it from the packets it reads.
e2e_test!(replies_leave_from_the_second_address_two_pipelines, {
    replies_leave_from_the_address_the_client_used("sk2", false, &["--pipelines", "2"]);
});

e2e_test!(replies_leave_from_the_second_address_single_thread, {
    replies_leave_from_the_address_the_client_used("sks", false, &["--threading", "single"]);
});
