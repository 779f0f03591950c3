//! Full tunnel through a NAT gateway, as wg-quick users run it (issue 17), with three
//! namespaces: client (b), gateway (a) and an "internet" host (c) on TEST-NET-3 that only
//! the gateway can reach. The gateway's file carries the usual `PostUp` MASQUERADE and its
//! `PostDown`; clients have `AllowedIPs = 0.0.0.0/0`, so only policy routing keeps their own
//! UDP out of the tunnel.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The internet host's address (TEST-NET-3), and the gateway's on that link.
const INET_HOST: &str = "203.0.113.2";
const INET_GW: &str = "203.0.113.1/24";

/// Namespace c joined to a by a veth pair; a forwards. And b, the client, reaches the
/// gateway only through its default route, as a client on a real network does (so a
/// full tunnel's default route would capture the tunnel's own UDP if it were not marked).
/// c is deleted on drop.
struct Internet {
    ns: String,
}

impl Internet {
    fn new(t: &Topology) -> Internet {
        let ns = format!("{}c", t.prefix);
        let net = Internet { ns };
        let a = t.a();
        let run = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("ip");
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&["netns", "add", &net.ns]);
        run(&[
            "-n", &a, "link", "add", "inet0", "type", "veth", "peer", "name", "inet0", "netns",
            &net.ns,
        ]);
        run(&["-n", &a, "addr", "add", INET_GW, "dev", "inet0"]);
        run(&["-n", &a, "link", "set", "inet0", "up"]);
        run(&[
            "-n",
            &net.ns,
            "addr",
            "add",
            &format!("{INET_HOST}/24"),
            "dev",
            "inet0",
        ]);
        run(&["-n", &net.ns, "link", "set", "inet0", "up"]);
        run(&["-n", &net.ns, "link", "set", "lo", "up"]);
        t.ok(&a, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        let b = t.b();
        t.ok(&b, &["ip", "-4", "addr", "flush", "dev", "veth0"]);
        t.ok(
            &b,
            &["ip", "addr", "add", &format!("{B_V4}/32"), "dev", "veth0"],
        );
        t.ok(&b, &["ip", "route", "add", "default", "dev", "veth0"]);
        net
    }
}

impl Drop for Internet {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "pids", &self.ns])
            .output()
            .map(|o| {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
            });
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// `nft` lines of a NAT gateway: masquerade what leaves for the internet.
fn nat_hooks(table: &str) -> String {
    format!(
        "PostUp = nft add table ip {table}; nft add chain ip {table} post '{{ type nat hook postrouting priority 100; }}'; nft add rule ip {table} post oifname inet0 masquerade\n\
         PostDown = nft delete table ip {table}\n"
    )
}

fn gateway_conf(gw_priv: &str, clients: &[(&str, &str)], table: &str) -> String {
    let mut text = format!(
        "[Interface]\nPrivateKey = {gw_priv}\nListenPort = {GW_PORT}\nAddress = 10.9.0.1/24\n{}",
        nat_hooks(table)
    );
    for (public, addr) in clients {
        text.push_str(&format!(
            "\n[Peer]\nPublicKey = {public}\nAllowedIPs = {addr}/32\n"
        ));
    }
    text
}

fn full_tunnel_client(cl_priv: &str, addr: &str, gw_pub: &str) -> String {
    format!(
        "[Interface]\nPrivateKey = {cl_priv}\nAddress = {addr}/24\n\n\
         [Peer]\nPublicKey = {gw_pub}\nEndpoint = {}\nAllowedIPs = 0.0.0.0/0\n",
        endpoint(A_V4, GW_PORT)
    )
}

/// The client in `ns` reaches the internet host through `iface`: the route to it is the
/// tunnel, the endpoint's is not (with the socket's `mark`), and ping, iperf3 and a hashed copy
/// get through.
fn reaches_the_internet(t: &Topology, ns: &str, iface: &str, mark: u32) {
    let via = t.ok(ns, &["ip", "route", "get", INET_HOST]);
    assert!(via.contains(&format!("dev {iface}")), "{via}");
    // The endpoint is behind the main table's default route: unmarked packets to it go into
    // the tunnel, the socket's marked ones do not.
    let unmarked = t.ok(ns, &["ip", "route", "get", A_V4]);
    assert!(unmarked.contains(&format!("dev {iface}")), "{unmarked}");
    let m = mark.to_string();
    let own = t.ok(ns, &["ip", "route", "get", A_V4, "mark", &m]);
    assert!(own.contains("dev veth0"), "the tunnel's own UDP: {own}");
    t.wait_ping(ns, INET_HOST);
    assert_eq!(t.ping(ns, INET_HOST, 5), 5);
    let c = format!("{}c", t.prefix);
    let r = t.iperf(&c, ns, INET_HOST, 2, false);
    assert!(r.bits_per_second > 0.0, "iperf3 moved nothing");
    t.sha256_copy(ns, &c, INET_HOST, 8);
}

/// What policy routing left in `ns`: rules naming a table other than the standard ones,
/// suppress rules, routes in table `table`, and nft tables; empty when all is gone.
fn policy_left(t: &Topology, ns: &str, table: u32) -> String {
    let mut left = String::new();
    for family in ["-4", "-6"] {
        let rules = t.ok(ns, &["ip", family, "rule", "show"]);
        for l in rules.lines() {
            if l.contains("fwmark") || l.contains("suppress_prefixlength") {
                left.push_str(&format!("rule {l}\n"));
            }
        }
        let tab = table.to_string();
        let routes = t.exec(ns, &["ip", family, "route", "show", "table", &tab]);
        for l in String::from_utf8_lossy(&routes.stdout).lines() {
            left.push_str(&format!("route {l}\n"));
        }
    }
    for l in t.ok(ns, &["nft", "list", "tables"]).lines() {
        left.push_str(&format!("nft {l}\n"));
    }
    left
}

fn wait_gone(t: &Topology, ns: &str, iface: &str) {
    let start = Instant::now();
    while t.has_link(ns, iface) && start.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!t.has_link(ns, iface), "{iface} left behind in {ns}");
}

/// Runs `wg-quick ARGS` in `ns` with `implementation` as its userspace WireGuard; the
/// output goes to `log` (a daemon started by wg-quick keeps it: a file, not a pipe).
fn wg_quick(ns: &str, args: &[&str], implementation: &str, log: &Path) -> (bool, String) {
    let wg_quick = require("wg-quick");
    let file = fs::File::create(log).expect("log file");
    let status = Command::new("ip")
        .args(["netns", "exec", ns, &wg_quick])
        .args(args)
        .env("WG_QUICK_USERSPACE_IMPLEMENTATION", implementation)
        .env("WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD", "1")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log file"))
        .stderr(file)
        .status()
        .expect("run wg-quick");
    (
        status.success(),
        fs::read_to_string(log).unwrap_or_default(),
    )
}

/// Removes a UAPI socket (which stops a userspace WireGuard daemon) when dropped.
struct StopDaemon(PathBuf);

impl Drop for StopDaemon {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

fn stop_daemon(iface: &str) -> StopDaemon {
    StopDaemon(format!("/var/run/wireguard/{iface}.sock").into())
}

fn skip_with_kernel_wireguard() -> bool {
    let has = Path::new("/sys/module/wireguard").exists();
    if has {
        eprintln!("skipped: the kernel has WireGuard, so wg-quick would not use a userspace one");
    }
    has
}

/// The three namespaces, unless the kernel's WireGuard would keep wg-quick from a userspace one:
/// (topology, the internet host, a, b, a per-process number for names).
fn three_namespaces(tag: &str) -> Option<(Topology, Internet, String, String, u32)> {
    if skip_with_kernel_wireguard() {
        return None;
    }
    require("nft");
    let t = Topology::new(tag);
    let inet = Internet::new(&t);
    let (a, b) = (t.a(), t.b());
    Some((t, inet, a, b, std::process::id() % 100_000))
}

e2e_test!(
    full_tunnel_clients_reach_the_internet_through_a_nat_gateway,
    {
        require("wireguard-go");
        let Some((t, _inet, a, b, id)) = three_namespaces("ft") else {
            return;
        };
        let (gw_iface, veil_iface, go_iface) =
            (format!("ftg{id}"), format!("ftv{id}"), format!("ftw{id}"));
        let nat = format!("nat{id}");
        let (gw_priv, gw_pub) = keypair();
        let (v_priv, v_pub) = keypair();
        let (w_priv, w_pub) = keypair();
        let gw_conf = t.write(
            &format!("{gw_iface}.conf"),
            &gateway_conf(
                &gw_priv,
                &[(&v_pub, "10.9.0.2"), (&w_pub, "10.9.0.3")],
                &nat,
            ),
        );
        let mut gw = veil_up(&t, &a, &gw_conf, &[], &[]);
        assert!(
            wait_log(&gw, "up, listening", Duration::from_secs(10)).is_some(),
            "{}",
            gw.log_text()
        );
        assert!(t.ok(&a, &["nft", "list", "tables"]).contains(&nat));

        // veil's own client, `veil up`.
        let v_conf = t.write(
            &format!("{veil_iface}.conf"),
            &full_tunnel_client(&v_priv, "10.9.0.2", &gw_pub),
        );
        let mut cl = veil_up(&t, &b, &v_conf, &[], &[]);
        reaches_the_internet(&t, &b, &veil_iface, 51820);
        assert!(
            cl.log_text().contains("full tunnel (IPv4)"),
            "{}",
            cl.log_text()
        );
        assert_eq!(cl.stop(), Some(0), "{}", cl.log_text());
        wait_gone(&t, &b, &veil_iface);
        assert_eq!(policy_left(&t, &b, 51820), "", "after veil stopped");

        // wireguard-go, brought up by wg-quick from an ordinary file.
        let w_conf = t.write(
            &format!("{go_iface}.conf"),
            &full_tunnel_client(&w_priv, "10.9.0.3", &gw_pub),
        );
        let w_s = w_conf.display().to_string();
        let _w_stop = stop_daemon(&go_iface);
        let (ok, log) = wg_quick(
            &b,
            &["up", &w_s],
            &require("wireguard-go"),
            &t.dir.join("wgq-go-up.log"),
        );
        assert!(ok, "wg-quick up (wireguard-go):\n{log}");
        reaches_the_internet(&t, &b, &go_iface, 51820);
        let (ok, log) = wg_quick(
            &b,
            &["down", &w_s],
            "wireguard-go",
            &t.dir.join("wgq-go-down.log"),
        );
        assert!(ok, "wg-quick down (wireguard-go):\n{log}");
        wait_gone(&t, &b, &go_iface);
        assert_eq!(policy_left(&t, &b, 51820), "", "after wg-quick down");

        // Gateway down: its PostDown removes the NAT table.
        assert_eq!(gw.stop(), Some(0), "{}", gw.log_text());
        wait_gone(&t, &a, &gw_iface);
        let tables = t.ok(&a, &["nft", "list", "tables"]);
        assert!(!tables.contains(&nat), "NAT table left: {tables}");
    }
);

e2e_test!(wg_quick_runs_veil_as_gateway_and_full_tunnel_client, {
    let Some((t, _inet, a, b, id)) = three_namespaces("fq") else {
        return;
    };
    let (gw_iface, cl_iface) = (format!("fqg{id}"), format!("fqc{id}"));
    let nat = format!("nat{id}");
    let link = t.dir.join("veil-wg");
    std::os::unix::fs::symlink(veil_bin(), &link).expect("symlink veil-wg");
    let link_s = link.display().to_string();
    let (gw_priv, gw_pub) = keypair();
    let (cl_priv, cl_pub) = keypair();
    let gw_conf = t.write(
        &format!("{gw_iface}.conf"),
        &gateway_conf(&gw_priv, &[(&cl_pub, "10.9.0.2")], &nat),
    );
    let cl_conf = t.write(
        &format!("{cl_iface}.conf"),
        &full_tunnel_client(&cl_priv, "10.9.0.2", &gw_pub),
    );
    let (gw_s, cl_s) = (gw_conf.display().to_string(), cl_conf.display().to_string());
    let _gw_stop = stop_daemon(&gw_iface);
    let _cl_stop = stop_daemon(&cl_iface);
    let (ok, log) = wg_quick(&a, &["up", &gw_s], &link_s, &t.dir.join("gw-up.log"));
    assert!(ok, "wg-quick up (gateway):\n{log}");
    assert!(t.ok(&a, &["nft", "list", "tables"]).contains(&nat), "{log}");
    let (ok, log) = wg_quick(&b, &["up", &cl_s], &link_s, &t.dir.join("cl-up.log"));
    assert!(ok, "wg-quick up (client):\n{log}");
    // wg-quick chose the table and set it as veil's fwmark over UAPI.
    let mark = t.ok(&b, &["wg", "show", &cl_iface, "fwmark"]);
    assert_eq!(mark.trim(), "0xca6c", "{log}");
    reaches_the_internet(&t, &b, &cl_iface, 51820);

    let (ok, log) = wg_quick(&b, &["down", &cl_s], &link_s, &t.dir.join("cl-down.log"));
    assert!(ok, "wg-quick down (client):\n{log}");
    wait_gone(&t, &b, &cl_iface);
    assert_eq!(policy_left(&t, &b, 51820), "", "client after wg-quick down");
    let (ok, log) = wg_quick(&a, &["down", &gw_s], &link_s, &t.dir.join("gw-down.log"));
    assert!(ok, "wg-quick down (gateway):\n{log}");
    wait_gone(&t, &a, &gw_iface);
    let tables = t.ok(&a, &["nft", "list", "tables"]);
    assert!(!tables.contains(&nat), "NAT table left: {tables}");
});
