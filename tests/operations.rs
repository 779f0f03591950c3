//! End-to-end: operating a running veil — `wg` over the UAPI socket, Prometheus metrics,
//! `veil show` and `veil health` — in real network namespaces.
//!
//! Skipped, with the reason printed, only where the machine lacks root or /dev/net/tun.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const GW_PORT: u16 = 51820;
const GW: &str = "opgw";
const CL: &str = "opcl";
const METRICS: &str = "127.0.0.1:9586";

struct Keys {
    gw_priv: String,
    gw_pub: String,
    cl_priv: String,
    cl_pub: String,
}

fn keys() -> Keys {
    let (gw_priv, gw_pub) = keypair();
    let (cl_priv, cl_pub) = keypair();
    Keys {
        gw_priv,
        gw_pub,
        cl_priv,
        cl_pub,
    }
}

/// A gateway that knows the client only if `with_client`; a placeholder peer otherwise.
fn gateway_conf(k: &Keys, with_client: bool) -> String {
    let peer = if with_client {
        k.cl_pub.clone()
    } else {
        keypair().1
    };
    let ips = if with_client {
        "10.9.0.2/32"
    } else {
        "10.9.0.200/32"
    };
    format!(
        "[Interface]\nPrivateKey = {}\nListenPort = {GW_PORT}\nAddress = 10.9.0.1/24\n\n\
         [Peer]\nPublicKey = {peer}\nAllowedIPs = {ips}\n",
        k.gw_priv
    )
}

/// What most tests start from: the namespaces, keys, and the gateway's config file
/// (knowing the client if `with_client`).
fn gateway_setup(tag: &str, with_client: bool) -> (Topology, Keys, PathBuf) {
    let t = Topology::new(tag);
    let k = keys();
    let gw_conf = t.write(&format!("{GW}.conf"), &gateway_conf(&k, with_client));
    (t, k, gw_conf)
}

/// `gateway_setup` with the client known, and the gateway running in namespace a.
fn running_gateway(tag: &str) -> (Topology, Keys, Proc) {
    let (t, k, gw_conf) = gateway_setup(tag, true);
    let gw = start(&t, &t.a(), &gw_conf, &[], &[]);
    (t, k, gw)
}

fn client_conf(k: &Keys, port: u16) -> String {
    format!(
        "[Interface]\nPrivateKey = {}\nAddress = 10.9.0.2/24\n\n\
         [Peer]\nPublicKey = {}\nEndpoint = {}\nAllowedIPs = 10.9.0.0/24\nPersistentKeepalive = 25\n",
        k.cl_priv,
        k.gw_pub,
        endpoint(A_V4, port)
    )
}

fn uapi_socket(iface: &str) -> String {
    format!("/var/run/wireguard/{iface}.sock")
}

/// Wait until veil's UAPI and control sockets exist (they follow the interface).
fn wait_sockets(iface: &str, p: &mut Proc) {
    let start = Instant::now();
    let ctl = format!("/run/veil/{iface}/ctl.sock");
    while start.elapsed() < Duration::from_secs(10) {
        if Path::new(&uapi_socket(iface)).exists() && Path::new(&ctl).exists() {
            return;
        }
        if let Some(code) = p.exited() {
            panic!("{} exited with {code:?}:\n{}", p.name, p.log_text());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("sockets of {iface} did not appear:\n{}", p.log_text());
}

fn start(t: &Topology, ns: &str, conf: &Path, args: &[&str], env: &[(&str, &str)]) -> Proc {
    let mut p = veil_up(t, ns, conf, args, env);
    let iface = conf
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    wait_sockets(iface, &mut p);
    p
}

/// Run `wg ARGS` in `ns`; must succeed.
fn wg(t: &Topology, ns: &str, args: &[&str]) -> String {
    let wg = require("wg");
    let mut cmd = vec![wg.as_str()];
    cmd.extend_from_slice(args);
    t.ok(ns, &cmd)
}

/// Run `wg set GW peer KEY ARGS` in `ns`; must succeed.
fn set_peer(t: &Topology, ns: &str, key: &str, args: &[&str]) -> String {
    let mut cmd = vec!["set", GW, "peer", key];
    cmd.extend_from_slice(args);
    wg(t, ns, &cmd)
}

/// `wg show IFACE dump` peer lines as fields: public key, psk, endpoint, allowed IPs,
/// latest handshake, rx, tx, keepalive.
fn dump_peers(t: &Topology, ns: &str, iface: &str) -> Vec<Vec<String>> {
    wg(t, ns, &["show", iface, "dump"])
        .lines()
        .skip(1)
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

fn routes(t: &Topology, ns: &str, iface: &str) -> String {
    t.ok(ns, &["ip", "route", "show", "dev", iface])
}

e2e_test!(wg_show_and_set_on_a_running_gateway, {
    let (t, k, gw_conf) = gateway_setup("ow", false);
    let (a, b) = (t.a(), t.b());
    let cl_conf = t.write(&format!("{CL}.conf"), &client_conf(&k, GW_PORT));
    let mut gw = start(&t, &a, &gw_conf, &[], &[]);
    let _cl = start(&t, &b, &cl_conf, &[], &[]);

    // The gateway does not know the client yet.
    assert_eq!(
        t.ping(&b, "10.9.0.1", 2),
        0,
        "an unknown client got through"
    );

    // Add it live; the client's next handshake retry gets through.
    set_peer(
        &t,
        &a,
        &k.cl_pub,
        &["allowed-ips", "10.9.0.2/32,10.77.0.0/16"],
    );
    let r = routes(&t, &a, GW);
    assert!(
        r.contains("10.9.0.2 ") && r.contains("10.77.0.0/16"),
        "routes for the new peer's AllowedIPs: {r}"
    );
    t.wait_ping(&b, "10.9.0.1");
    assert_eq!(t.ping(&b, "10.9.0.1", 5), 5);

    // wg show: endpoint, latest handshake, transfer.
    let show = wg(&t, &a, &["show", GW]);
    assert!(show.contains(&format!("peer: {}", k.cl_pub)), "{show}");
    assert!(show.contains(&format!("endpoint: {B_V4}:")), "{show}");
    assert!(show.contains("latest handshake:"), "{show}");
    assert!(show.contains("transfer:"), "{show}");
    assert!(
        show.contains(&format!("listening port: {GW_PORT}")),
        "{show}"
    );
    let peers = dump_peers(&t, &a, GW);
    let cl = peers
        .iter()
        .find(|p| p[0] == k.cl_pub)
        .expect("client in dump");
    assert!(
        cl[4].parse::<u64>().unwrap() > 0,
        "latest handshake in dump: {cl:?}"
    );
    assert!(
        cl[5].parse::<u64>().unwrap() > 0,
        "rx bytes in dump: {cl:?}"
    );
    assert!(
        cl[6].parse::<u64>().unwrap() > 0,
        "tx bytes in dump: {cl:?}"
    );
    assert_eq!(cl[3], "10.9.0.2/32,10.77.0.0/16");

    // Remove it: traffic stops and its routes go.
    set_peer(&t, &a, &k.cl_pub, &["remove"]);
    assert_eq!(
        t.ping(&b, "10.9.0.1", 3),
        0,
        "a removed peer still gets through"
    );
    assert!(dump_peers(&t, &a, GW).iter().all(|p| p[0] != k.cl_pub));
    let r = routes(&t, &a, GW);
    assert!(
        !r.contains("10.77.0.0/16") && !r.contains("10.9.0.2 "),
        "{r}"
    );

    // A malformed request gets an errno, and the daemon goes on answering.
    for junk in [
        &b"hello world\n\n"[..],
        b"set=1\nlisten_port=seventy\n\n",
        b"set=1\nprivate_key=00\n\n",
        b"\xff\xfe\x00garbage without newline",
    ] {
        let mut s = UnixStream::connect(uapi_socket(GW)).expect("connect UAPI");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(junk).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        assert!(
            reply.starts_with("errno=") && reply != "errno=0\n\n",
            "junk {junk:?} answered {reply:?}"
        );
    }
    let show = wg(&t, &a, &["show", GW]);
    assert!(show.contains(&format!("interface: {GW}")), "{show}");
    assert_eq!(gw.exited(), None, "the gateway died:\n{}", gw.log_text());

    // A new private key: a new identity that wg reports, and clients must use it.
    let (new_priv, new_pub) = keypair();
    let key_file = t.write("new.key", &new_priv);
    wg(
        &t,
        &a,
        &["set", GW, "private-key", &key_file.to_string_lossy()],
    );
    let show = wg(&t, &a, &["show", GW, "public-key"]);
    assert_eq!(show.trim(), new_pub);
    assert_eq!(gw.stop(), Some(0), "{}", gw.log_text());
    assert!(
        !Path::new(&uapi_socket(GW)).exists(),
        "UAPI socket left behind"
    );
});

e2e_test!(showconf_round_trips_through_setconf, {
    let (t, _, _gw) = running_gateway("oc");
    let (a, b) = (t.a(), t.b());
    let psk = Command::new(veil_bin()).arg("genpsk").output().unwrap();
    let psk_file = t.write("psk", String::from_utf8_lossy(&psk.stdout).trim());
    let (_, third) = keypair();
    set_peer(
        &t,
        &a,
        &third,
        &[
            "preshared-key",
            &psk_file.to_string_lossy(),
            "endpoint",
            "192.0.2.9:4500",
            "persistent-keepalive",
            "30",
            "allowed-ips",
            "10.9.0.3/32,fd09::3/128",
        ],
    );
    let conf = wg(&t, &a, &["showconf", GW]);
    assert!(conf.contains("PresharedKey = "), "{conf}");
    assert!(conf.contains("PersistentKeepalive = 30"), "{conf}");

    // A second veil, in the other namespace (the port is free there), takes the same config.
    let (x_priv, _) = keypair();
    let x_conf = t.write(
        "opgx.conf",
        &format!("[Interface]\nPrivateKey = {x_priv}\nAddress = 10.19.0.1/24\n"),
    );
    // In single-threaded mode, so the admin channel is tested with its other doorbell.
    let _x = start(&t, &b, &x_conf, &["--threading", "single"], &[]);
    let conf_file = t.write("showconf.conf", &conf);
    wg(&t, &b, &["setconf", "opgx", &conf_file.to_string_lossy()]);
    let again = wg(&t, &b, &["showconf", "opgx"]);
    let sorted = |s: &str| {
        let mut v: Vec<String> = s.lines().map(str::to_string).collect();
        v.sort();
        v
    };
    assert_eq!(
        sorted(&again),
        sorted(&conf),
        "showconf after setconf differs"
    );
    let ss = t.ok(&b, &["ss", "-uanp"]);
    assert!(
        ss.contains(&format!(":{GW_PORT} ")),
        "setconf's ListenPort not bound: {ss}"
    );
});

e2e_test!(listen_port_changes_live, {
    let (t, k, _gw) = running_gateway("op");
    let (a, b) = (t.a(), t.b());
    wg(&t, &a, &["set", GW, "listen-port", "51999"]);
    assert_eq!(wg(&t, &a, &["show", GW, "listen-port"]).trim(), "51999");
    // The client is pointed at the new port and connects.
    let cl_conf = t.write(&format!("{CL}.conf"), &client_conf(&k, 51999));
    let _cl = start(&t, &b, &cl_conf, &[], &[]);
    t.wait_ping(&b, "10.9.0.1");
    assert_eq!(t.ping(&b, "10.9.0.1", 5), 5);
    let ss = t.ok(&a, &["ss", "-uanp"]);
    assert!(ss.contains(":51999 "), "{ss}");
});

fn curl(t: &Topology, ns: &str, path: &str) -> String {
    let curl = require("curl");
    t.ok(
        ns,
        &[
            &curl,
            "-s",
            "--max-time",
            "10",
            &format!("http://{METRICS}{path}"),
        ],
    )
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

e2e_test!(metrics_pass_promtool_and_move_with_traffic, {
    let promtool = require("promtool");
    let (t, k, gw_conf) = gateway_setup("om", true);
    let (a, b) = (t.a(), t.b());
    let cl_conf = t.write(&format!("{CL}.conf"), &client_conf(&k, GW_PORT));
    let _gw = start(&t, &a, &gw_conf, &["--metrics-listen", METRICS], &[]);
    let _cl = start(&t, &b, &cl_conf, &[], &[]);
    t.wait_ping(&b, "10.9.0.1");

    let before = curl(&t, &a, "/metrics");
    let file = t.write("metrics.txt", &before);
    let check = Command::new("sh")
        .arg("-c")
        .arg(format!("{promtool} check metrics < {}", file.display()))
        .output()
        .unwrap();
    assert_success(
        &check,
        &format!("promtool check metrics failed on:\n{before}\n"),
    );
    assert_eq!(t.ping(&b, "10.9.0.1", 10), 10);
    let after = curl(&t, &a, "/metrics");
    for series in [
        "veil_packets_received_total",
        "veil_bytes_received_total",
        "veil_packets_sent_total",
        "veil_bytes_sent_total",
        "veil_tun_packets_written_total",
    ] {
        let (x, y) = (metric(&before, series), metric(&after, series));
        assert!(y >= x + 10.0, "{series}: {x} before, {y} after ten pings");
    }
    assert_eq!(metric(&after, "veil_active_sessions"), 1.0);
    assert!(metric(&after, "veil_sessions_created_total") >= 1.0);
    assert!(metric(&after, "veil_memory_usage_bytes") > 0.0);
    let peer = format!("veil_peer_received_bytes_total{{peer=\"{}\"}}", k.cl_pub);
    assert!(metric(&after, &peer) > metric(&before, &peer));

    let health = curl(&t, &a, "/healthz");
    let v: serde_json::Value = serde_json::from_str(&health).expect("healthz JSON");
    assert_eq!(v["status"], "ok", "{health}");
    let junk = t.exec(
        &a,
        &[
            &require("curl"),
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://{METRICS}/nope"),
        ],
    );
    assert_eq!(String::from_utf8_lossy(&junk.stdout), "404");

    // veil show: the same numbers, for people and as JSON.
    let show = Command::new(veil_bin())
        .args(["show", GW])
        .output()
        .unwrap();
    assert!(show.status.success());
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(
        text.contains(&k.cl_pub) && text.contains("ENDPOINT"),
        "{text}"
    );
    let json = Command::new(veil_bin())
        .args(["show", GW, "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("show --json");
    assert_eq!(v["peers"][0]["public_key"], k.cl_pub.as_str());
    assert!(v["peers"][0]["rx_bytes"].as_u64().unwrap() > 0);
    assert!(v["counters"]["rx"]["udp_datagrams"].as_u64().unwrap() >= 10);
});

e2e_test!(metrics_answer_past_a_hundred_idle_connections, {
    let bash = require("bash");
    let curl = require("curl");
    let (t, _k, gw_conf) = gateway_setup("oi", false);
    let a = t.a();
    let _gw = start(&t, &a, &gw_conf, &["--metrics-listen", METRICS], &[]);
    // One shell holds 100 idle TCP connections open (they send nothing) while curl asks for
    // /metrics with a 1 s limit; the shell's exit closes them.
    let (host, port) = METRICS.split_once(':').unwrap();
    let script = format!(
        "for i in $(seq 100); do exec {{fd}}<>/dev/tcp/{host}/{port} || exit 9; done; \
         sleep 0.5; {curl} -s -o /dev/null -w '%{{http_code}}' --max-time 1 http://{METRICS}/metrics"
    );
    let out = t.exec(&a, &[&bash, "-c", &script]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "200",
        "/metrics with 100 idle connections open: {}",
        String::from_utf8_lossy(&out.stderr)
    );
});

e2e_test!(running_veil_writes_no_core_dump, {
    let (_t, _k, gw) = running_gateway("od");
    let pid = veil_pid(&gw);
    let filter = std::fs::read_to_string(format!("/proc/{pid}/coredump_filter")).unwrap();
    assert_eq!(
        filter.trim(),
        "00000000",
        "no mapping goes into a core file"
    );
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap_or_else(|| panic!("no core limit in:\n{limits}"));
    let fields: Vec<&str> = core.split_whitespace().collect();
    assert_eq!(
        fields[4..6],
        ["0", "0"],
        "soft and hard RLIMIT_CORE: {core}"
    );
});

/// Check every thread of `pid` is not root and has nothing beyond CAP_NET_ADMIN; their names.
fn unprivileged_threads(pid: u32) -> Vec<String> {
    let mut names = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("list the threads") {
        let path = task.expect("a thread").path();
        let Ok(s) = std::fs::read_to_string(path.join("status")) else {
            continue; // ended meanwhile
        };
        let field = |key: &str| {
            s.lines()
                .find_map(|l| l.strip_prefix(key))
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|| panic!("no {key} in:\n{s}"))
        };
        let name = field("Name:");
        assert!(!field("Uid:").starts_with("0\t"), "thread {name} is root");
        let eff = u64::from_str_radix(&field("CapEff:"), 16).expect("CapEff in hex");
        assert_eq!(eff & !(1 << 12), 0, "thread {name} has CapEff {eff:x}");
        names.push(name);
    }
    names
}

/// The outer sockets on UDP `port` in `ns` and how many carry `fwmark` (`ss -e`).
fn marked_sockets(t: &Topology, ns: &str, port: u16, mark: u32) -> (usize, usize) {
    let out = t.ok(ns, &["ss", "-uaen", "sport", "=", &format!(":{port}")]);
    let sockets: Vec<&str> = out.lines().filter(|l| l.starts_with("UNCONN")).collect();
    let marked = sockets
        .iter()
        .filter(|l| l.contains(&format!("fwmark:{mark:#x}")))
        .count();
    (sockets.len(), marked)
}

// With three pipelines every pipeline's threads start after veil gave up root, and `fwmark=`
// marks every pipeline's socket, also the ones a `listen-port` change binds.
e2e_test!(pipelines_run_unprivileged_and_all_sockets_are_marked, {
    let (t, _k, gw_conf) = gateway_setup("opp", true);
    let gw = start(&t, &t.a(), &gw_conf, &["--pipelines", "3"], &[]);
    let names = unprivileged_threads(veil_pid(&gw));
    for name in [
        "veil-rx2",
        "veil-crypto2",
        "veil-tx2",
        "veil-rx1",
        "veil-rx",
    ] {
        assert!(names.iter().any(|n| n == name), "no {name} in {names:?}");
    }
    let port = |t: &Topology| -> u16 {
        let out = wg(t, &t.a(), &["show", GW, "listen-port"]);
        out.trim().parse().unwrap()
    };
    wg(&t, &t.a(), &["set", GW, "fwmark", "0x5a"]);
    assert_eq!(marked_sockets(&t, &t.a(), port(&t), 0x5a), (3, 3));
    wg(&t, &t.a(), &["set", GW, "listen-port", "0"]);
    let moved = port(&t);
    assert_eq!(marked_sockets(&t, &t.a(), moved, 0x5a), (3, 3));
});

// `veil up` as root gives up root once the interface exists: every thread runs as another
// user with CAP_NET_ADMIN at most and NO_NEW_PRIVS, the process is not dumpable, and a route
// for AllowedIPs added later with `wg set` is still installed.
e2e_test!(running_veil_runs_unprivileged_with_net_admin_only, {
    let (t, _k, gw) = running_gateway("op");
    let pid = veil_pid(&gw);
    let field = |status: &str, key: &str| -> String {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no {key} in:\n{status}"))
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uids: Vec<u32> = field(&status, "Uid:")
        .split_whitespace()
        .map(|u| u.parse().unwrap())
        .collect();
    assert!(uids.iter().all(|&u| u != 0), "still root: {uids:?}");
    assert_eq!(
        field(&status, "CapEff:"),
        "0000000000001000",
        "CAP_NET_ADMIN only"
    );
    assert_eq!(field(&status, "CapPrm:"), "0000000000001000");
    assert_eq!(field(&status, "CapInh:"), "0000000000000000");
    assert_eq!(field(&status, "CapAmb:"), "0000000000000000");
    assert_eq!(field(&status, "NoNewPrivs:"), "1");
    // Not dumpable: the kernel hands the process's /proc files to root.
    use std::os::unix::fs::MetadataExt;
    let mem = std::fs::metadata(format!("/proc/{pid}/mem")).unwrap();
    assert_eq!(
        mem.uid(),
        0,
        "/proc/{pid}/mem belongs to the process: dumpable"
    );
    unprivileged_threads(pid);
    // Routes for new AllowedIPs need CAP_NET_ADMIN, which veil kept.
    let peer = keypair().1;
    wg(
        &t,
        &t.a(),
        &["set", GW, "peer", &peer, "allowed-ips", "10.77.3.0/24"],
    );
    let routes = t.ok(&t.a(), &["ip", "route", "show", "dev", GW]);
    assert!(
        routes.contains("10.77.3.0/24"),
        "no route for wg set's AllowedIPs:\n{routes}"
    );
});

// The unit's filesystem view (`ProtectSystem=strict`: everything read-only except
// `RuntimeDirectory=veil/%i` and `ReadWritePaths=/run/wireguard`), reproduced in a mount
// namespace: veil makes its sockets there, and `veil show`, `veil health` and `wg show` work.
e2e_test!(sockets_work_in_the_units_read_only_view, {
    let unshare = require("unshare");
    let wg = require("wg");
    let (t, k, gw_conf) = gateway_setup("os", true);
    // The directories exist before the sandbox, as systemd (RuntimeDirectory) and the unit's
    // ExecStartPre make them. `mount --rbind` keeps the network namespaces under /run/netns.
    // veil's log goes to /dev/shm, a mount of its own that stays writable (as the journal
    // would take it under systemd).
    let script = format!(
        r#"set -u
log=/dev/shm/veil-sandbox-$$.log
exec 3>$log
trap 'rm -f $log' EXIT
mkdir -p /run/veil/{GW} /run/wireguard
mount --make-rprivate / && mount --rbind /run /run && mount -o remount,bind,ro /run \
  && mount -o remount,bind,ro / || exit 10
for d in /run/veil/{GW} /run/wireguard; do
  mount --bind $d $d && mount -o remount,bind,rw $d || exit 10
done
if touch /run/veil/probe 2>/dev/null; then echo "sandbox: /run/veil is writable"; exit 11; fi
ip netns exec {ns} {veil} up {conf} >&3 2>&3 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -f $log' EXIT
i=0
until [ -S /run/veil/{GW}/ctl.sock ] && [ -S /run/wireguard/{GW}.sock ]; do
  i=$((i+1)); if [ $i -gt 200 ] || ! kill -0 $pid 2>/dev/null; then echo "no sockets"; cat $log; exit 12; fi
  sleep 0.05
done
echo "== show"; {veil} show {GW}; echo "== show exit $?"
echo "== health"; {veil} health {GW}; echo "== health exit $?"
echo "== wg"; {wg} show {GW}; echo "== wg exit $?"
"#,
        ns = t.a(),
        veil = veil_bin(),
        conf = gw_conf.display(),
    );
    let out = Command::new(unshare)
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("unshare");
    let text = String::from_utf8_lossy(&out.stdout);
    let all = format!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "sandboxed run failed:\n{all}");
    assert!(
        text.contains("== show exit 0") && text.contains(&k.cl_pub),
        "{all}"
    );
    assert!(
        text.contains("control_thread"),
        "veil health answered:\n{all}"
    );
    assert!(
        !text.contains("== health exit 3"),
        "veil health unreachable:\n{all}"
    );
    assert!(text.contains("== wg exit 0"), "{all}");
    assert!(text.contains(&format!("interface: {GW}")), "{all}");
});

fn health(json: bool) -> (i32, String, String) {
    let mut cmd = Command::new(veil_bin());
    cmd.args(["health", GW]);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().expect("run veil health");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

e2e_test!(health_reports_a_stalled_thread, {
    let (t, _, gw_conf) = gateway_setup("oh", true);
    let a = t.a();
    let mut gw = start(
        &t,
        &a,
        &gw_conf,
        &[],
        &[("VEIL_TEST_STALL_ON_REQUEST", "veil-tx")],
    );
    let (code, out, _) = health(false);
    assert_eq!(code, 0, "healthy gateway:\n{out}");
    for c in [
        "udp_socket",
        "tun_device",
        "crypto_self_test",
        "control_thread",
        "veil-rx",
        "veil-crypto",
        "veil-tx",
    ] {
        assert!(out.contains(c), "{c} missing:\n{out}");
    }
    let (code, out, _) = health(true);
    let v: serde_json::Value = serde_json::from_str(&out).expect("health --json");
    assert_eq!((code, v["status"].as_str()), (0, Some("ok")));

    let mut s = UnixStream::connect(format!("/run/veil/{GW}/ctl.sock")).unwrap();
    s.write_all(b"test-stall\n").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("veil-ctl/1 exit=0"), "{reply}");

    let start = Instant::now();
    loop {
        let (code, out, err) = health(false);
        if code == 2 {
            assert!(
                out.contains("veil-tx") && err.contains("veil-tx failed"),
                "{out}{err}"
            );
            let line = out.lines().find(|l| l.contains("veil-tx")).unwrap();
            assert!(line.contains("failed"), "{out}");
            assert!(
                out.lines()
                    .skip(1)
                    .filter(|l| l.contains(" failed "))
                    .count()
                    == 1,
                "only the stalled thread fails:\n{out}"
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "health never noticed the stalled thread: {code}\n{out}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Unreachable interface: non-zero, and says so.
    gw.stop();
    let (code, _, err) = health(false);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("cannot reach"), "{err}");
});

#[test]
fn alert_rules_pass_promtool() {
    // Needs no namespaces, only promtool, which scripts/install-deps.sh installs as root.
    let found = Command::new("sh")
        .args(["-c", "command -v promtool"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        if let Some(why) = cannot_run() {
            eprintln!("skipped alert_rules_pass_promtool: promtool missing and {why}");
            return;
        }
    }
    let promtool = require("promtool");
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/veil-alerts.yml");
    let out = Command::new(promtool)
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("run promtool");
    assert_success(&out, "promtool check rules failed:\n");
}
