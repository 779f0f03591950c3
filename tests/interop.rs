//! Interop: veil against wireguard-go, boringtun-cli and gotatun, in both roles, in real
//! network namespaces, with veil's offloads on (the peers send no GSO). Peers are configured
//! with `wg`, as their users do.

mod common;

use common::*;

const PORT: u16 = GW_PORT;

/// The `wg set` arguments for the peer implementation: `private-key` (written to a file), then
/// `rest`.
fn wg_args(t: &Topology, private_key: &str, rest: &[&str]) -> Vec<String> {
    let key = t.write("peer.key", &format!("{private_key}\n"));
    let mut args = vec![
        "private-key".to_string(),
        key.to_string_lossy().into_owned(),
    ];
    args.extend(rest.iter().map(|a| a.to_string()));
    args
}

/// veil gateway in namespace a, `peer` as the client in namespace b.
fn veil_gateway_with(tag: &str, peer: Peer) {
    let t = Topology::new(tag);
    let (gw_priv, gw_pub) = keypair();
    let (cl_priv, cl_pub) = keypair();
    let gw_conf = t.write("veilgw.conf", &one_client_gateway(&gw_priv, &cl_pub));
    let mut gw = veil_up(&t, &t.a(), &gw_conf, &[], &[]);
    let iface = format!("wc{tag}");
    let gw_endpoint = endpoint(A_V4, PORT);
    let args = wg_args(
        &t,
        &cl_priv,
        &[
            "peer",
            &gw_pub,
            "endpoint",
            &gw_endpoint,
            "allowed-ips",
            "10.9.0.0/24",
            "persistent-keepalive",
            "25",
        ],
    );
    let mut client = start_peer(&t, &t.b(), peer, &iface, &args, "10.9.0.2/24");
    traffic(&t, &t.b(), "10.9.0.1", &t.a(), "10.9.0.2");
    client.stop();
    assert_eq!(gw.stop(), Some(0), "veil exit status:\n{}", gw.log_text());
}

/// `peer` as the gateway in namespace a, veil as the client in namespace b.
fn veil_client_of(tag: &str, peer: Peer) {
    let t = Topology::new(tag);
    let (gw_priv, gw_pub) = keypair();
    let (cl_priv, cl_pub) = keypair();
    let iface = format!("wg{tag}");
    let port = PORT.to_string();
    let args = wg_args(
        &t,
        &gw_priv,
        &[
            "listen-port",
            &port,
            "peer",
            &cl_pub,
            "allowed-ips",
            "10.9.0.2/32",
        ],
    );
    let mut gw = start_peer(&t, &t.a(), peer, &iface, &args, "10.9.0.1/24");
    let cl_conf = t.write(
        "veilcl.conf",
        &format!(
            "[Interface]\nPrivateKey = {cl_priv}\nAddress = 10.9.0.2/24\n\n\
             [Peer]\nPublicKey = {gw_pub}\nEndpoint = {}\nAllowedIPs = 10.9.0.0/24\nPersistentKeepalive = 25\n",
            endpoint(A_V4, PORT)
        ),
    );
    let mut cl = veil_up(&t, &t.b(), &cl_conf, &[], &[]);
    traffic(&t, &t.b(), "10.9.0.1", &t.a(), "10.9.0.2");
    assert_eq!(cl.stop(), Some(0), "veil exit status:\n{}", cl.log_text());
    gw.stop();
}

/// Ping both ways and a 10 s iperf3 run each way between the two tunnel ends.
fn traffic(t: &Topology, client_ns: &str, gw_addr: &str, gw_ns: &str, client_addr: &str) {
    t.wait_ping(client_ns, gw_addr);
    assert_eq!(
        t.ping(client_ns, gw_addr, 10),
        10,
        "client → gateway ping lost packets"
    );
    assert_eq!(
        t.ping(gw_ns, client_addr, 5),
        5,
        "gateway → client ping lost packets"
    );
    let up = t.iperf(gw_ns, client_ns, gw_addr, 10, false);
    assert!(
        up.bits_per_second > 1e6,
        "client → gateway: {} bit/s",
        up.bits_per_second
    );
    let down = t.iperf(gw_ns, client_ns, gw_addr, 10, true);
    assert!(
        down.bits_per_second > 1e6,
        "gateway → client: {} bit/s",
        down.bits_per_second
    );
    eprintln!(
        "iperf3: up {:.0} Mbit/s, down {:.0} Mbit/s",
        up.bits_per_second / 1e6,
        down.bits_per_second / 1e6
    );
    t.sha256_copy(client_ns, gw_ns, gw_addr, 20);
    t.sha256_copy(gw_ns, client_ns, client_addr, 20);
}

/// One end-to-end test per row: its name, then the role veil plays, with the tag that names the
/// namespaces and interfaces, and the peer.
macro_rules! interop {
    ($($name:ident: $role:ident($tag:literal, $peer:expr);)*) => {$(
        e2e_test!($name, {
            $role($tag, $peer);
        });
    )*};
}

interop! {
    veil_gateway_wireguard_go_client: veil_gateway_with("gg", Peer::WireguardGo);
    veil_gateway_boringtun_client: veil_gateway_with("gb", Peer::Boringtun);
    veil_client_wireguard_go_gateway: veil_client_of("cg", Peer::WireguardGo);
    veil_client_boringtun_gateway: veil_client_of("cb", Peer::Boringtun);
    veil_gateway_gotatun_client: veil_gateway_with("gt", Peer::Gotatun);
    veil_client_gotatun_gateway: veil_client_of("ct", Peer::Gotatun);
}
