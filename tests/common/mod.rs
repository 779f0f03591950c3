//! Harness for end-to-end tests: namespaces, processes, keys, traffic.
//!
//! Everything started is torn down by `Drop`, also when a test fails. Tests run
//! one at a time (a global lock) so two iperf3 runs never share the 2 cores.

#![allow(dead_code)]

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

/// The veil binary under test.
pub fn veil_bin() -> &'static str {
    env!("CARGO_BIN_EXE_veil")
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Why this machine cannot run namespace tests, if it cannot.
pub fn cannot_run() -> Option<String> {
    // SAFETY-free check of the effective uid via /proc.
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or("1");
    if euid != "0" {
        return Some("not running as root (namespaces, veth and TUN need it)".into());
    }
    if fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .is_err()
    {
        return Some("/dev/net/tun cannot be opened".into());
    }
    None
}

/// Take the serial lock, or print why the test is skipped and return None.
pub fn begin(test: &str) -> Option<MutexGuard<'static, ()>> {
    if let Some(why) = cannot_run() {
        eprintln!("skipped {test}: {why}");
        return None;
    }
    Some(SERIAL.lock().unwrap_or_else(|e| e.into_inner()))
}

/// `let _g = begin_or_skip!("test_name");` at the top of an end-to-end test (what
/// [`e2e_test!`] writes for you): holds the serial lock for the rest of the test, or prints why
/// the test is skipped and returns.
macro_rules! begin_or_skip {
    ($test:expr) => {
        match $crate::common::begin($test) {
            Some(guard) => guard,
            None => return,
        }
    };
}
pub(crate) use begin_or_skip;

/// `e2e_test!(name, { … });` declares the end-to-end test `#[test] fn name()`: its body runs
/// holding the serial lock taken under the test's own name, or the test prints why it is
/// skipped and returns. (Not every test file uses it, as with the helpers below.)
#[allow(unused_macros)]
macro_rules! e2e_test {
    ($name:ident, $body:block) => {
        #[test]
        fn $name() {
            let _serial = $crate::common::begin_or_skip!(stringify!($name));
            $body
        }
    };
}
#[allow(unused_imports)]
pub(crate) use e2e_test;

/// Fail the test unless the command `out` came from succeeded: `what`, then what it printed.
pub fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Require an external tool; the project's install script provides it, so a
/// missing tool is a failure, not a skip.
pub fn require(tool: &str) -> String {
    let extra = repo().join(".tools/bin").join(tool);
    if extra.exists() {
        return extra.to_string_lossy().into_owned();
    }
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output();
    match found {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        _ => panic!("{tool} is not installed: run scripts/install-deps.sh"),
    }
}

/// Two namespaces `<prefix>a` and `<prefix>b` joined by veth (scripts/netns.sh):
/// 192.168.241.1 / fd41::1 in a, .2 / fd41::2 in b.
pub struct Topology {
    pub prefix: String,
    pub dir: PathBuf,
}

pub const A_V4: &str = "192.168.241.1";
pub const B_V4: &str = "192.168.241.2";
pub const A_V6: &str = "fd41::1";
pub const B_V6: &str = "fd41::2";

impl Topology {
    pub fn new(tag: &str) -> Topology {
        let prefix = format!("vt{}{}", tag, std::process::id() % 10000);
        let dir = std::env::temp_dir().join(format!("veil-test-{prefix}"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("temp dir");
        let t = Topology { prefix, dir };
        let out = t.script(&["up", &t.prefix]);
        assert!(
            out.status.success(),
            "netns.sh up failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        t
    }

    fn script(&self, args: &[&str]) -> Output {
        Command::new("bash")
            .arg(repo().join("scripts/netns.sh"))
            .args(args)
            .output()
            .expect("run netns.sh")
    }

    pub fn a(&self) -> String {
        format!("{}a", self.prefix)
    }

    pub fn b(&self) -> String {
        format!("{}b", self.prefix)
    }

    /// Run a command inside a namespace and wait for it.
    pub fn exec(&self, ns: &str, cmd: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", ns])
            .args(cmd)
            .output()
            .expect("ip netns exec")
    }

    /// Run a command that must succeed; returns its stdout.
    pub fn ok(&self, ns: &str, cmd: &[&str]) -> String {
        let out = self.exec(ns, cmd);
        assert_success(&out, &format!("{cmd:?} in {ns} failed: "));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A one-shot iperf3 server (`-s -1`) in `ns`, bound to `addr`.
    pub fn iperf_server(&self, ns: &str, addr: &str) -> Proc {
        let iperf3 = require("iperf3");
        self.spawn(ns, "iperf3-server", &[&iperf3, "-s", "-1", "-B", addr], &[])
    }

    /// Start a long-running command inside a namespace, logging to a file.
    pub fn spawn(&self, ns: &str, name: &str, cmd: &[&str], env: &[(&str, &str)]) -> Proc {
        let log = self.dir.join(format!("{name}.log"));
        let file = fs::File::create(&log).expect("log file");
        let err = file.try_clone().expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(cmd)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .expect("spawn");
        Proc {
            child: Some(child),
            name: name.to_string(),
            log,
        }
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.join(name);
        // Configs hold private keys: owner-only, as veil asks of operators.
        let mut f = {
            use std::os::unix::fs::OpenOptionsExt;
            fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&p)
        }
        .expect("write file");
        f.write_all(text.as_bytes()).expect("write file");
        p
    }

    /// Does `iface` exist in `ns`?
    pub fn has_link(&self, ns: &str, iface: &str) -> bool {
        self.exec(ns, &["ip", "link", "show", "dev", iface])
            .status
            .success()
    }

    /// Wait until `iface` exists and is up in `ns`.
    pub fn wait_link(&self, ns: &str, iface: &str, p: &mut Proc) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if self.has_link(ns, iface) {
                // Addresses and routes follow the link within milliseconds.
                std::thread::sleep(Duration::from_millis(200));
                return;
            }
            if let Some(code) = p.exited() {
                panic!(
                    "{} exited with {code:?} before {iface} appeared:\n{}",
                    p.name,
                    p.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{iface} did not appear in {ns}:\n{}", p.log_text());
    }

    /// ping `count` times (0.1 s apart); returns how many replies came back.
    pub fn ping(&self, ns: &str, addr: &str, count: u32) -> u32 {
        self.ping_spaced(ns, addr, count, "0.1")
    }

    /// ping `count` times, `interval` seconds apart; returns how many replies came back.
    pub fn ping_spaced(&self, ns: &str, addr: &str, count: u32, interval: &str) -> u32 {
        let c = count.to_string();
        let out = self.exec(
            ns,
            &["ping", "-c", &c, "-i", interval, "-W", "1", "-q", addr],
        );
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find(|l| l.contains("received"))
            .and_then(|l| l.split(',').nth(1))
            .and_then(|s| s.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// Ping until one reply comes back (the first packets wait for the handshake).
    pub fn wait_ping(&self, ns: &str, addr: &str) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(15) {
            if self.ping(ns, addr, 1) == 1 {
                return;
            }
        }
        panic!("no ping reply from {addr} in {ns} within 15 s");
    }

    /// Run iperf3 TCP for `secs` from `client_ns` to a server in `server_ns` at
    /// `server_addr`; returns (received bits/s, per-interval bytes).
    pub fn iperf(
        &self,
        server_ns: &str,
        client_ns: &str,
        server_addr: &str,
        secs: u32,
        reverse: bool,
    ) -> Iperf {
        self.iperf_with([server_ns, client_ns, server_addr], secs, reverse, &[])
    }

    /// [`Topology::iperf`] with more client arguments (e.g. `-u -b 50M` for UDP); `ends` is
    /// (server namespace, client namespace, server address).
    pub fn iperf_with(&self, ends: [&str; 3], secs: u32, reverse: bool, extra: &[&str]) -> Iperf {
        let [server_ns, client_ns, server_addr] = ends;
        let iperf3 = require("iperf3");
        let mut server = self.spawn(
            server_ns,
            "iperf3-server",
            &[&iperf3, "-s", "-1", "-B", server_addr],
            &[],
        );
        std::thread::sleep(Duration::from_millis(400));
        let t = secs.to_string();
        let mut args = vec![
            iperf3.as_str(),
            "-c",
            server_addr,
            "-t",
            &t,
            "-i",
            "0.5",
            "-J",
            "--connect-timeout",
            "5000",
        ];
        if reverse {
            args.push("-R");
        }
        args.extend_from_slice(extra);
        let out = self.exec(client_ns, &args);
        server.stop();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "iperf3 failed: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_str(&text).expect("iperf3 JSON");
        // TCP reports what arrived in sum_received; UDP in sum, with the loss.
        let end = &v["end"];
        let bps = end["sum_received"]["bits_per_second"]
            .as_f64()
            .or_else(|| end["sum"]["bits_per_second"].as_f64())
            .unwrap_or(0.0);
        let lost_percent = end["sum"]["lost_percent"].as_f64().unwrap_or(0.0);
        let intervals = interval_bytes(&v);
        Iperf {
            bits_per_second: bps,
            interval_bytes: intervals,
            lost_percent,
        }
    }
}

/// Bytes moved in each interval of an iperf3 `-J` report.
pub fn interval_bytes(v: &serde_json::Value) -> Vec<f64> {
    v["intervals"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| i["sum"]["bytes"].as_f64().unwrap_or(0.0))
                .collect()
        })
        .unwrap_or_default()
}

pub struct Iperf {
    pub bits_per_second: f64,
    /// Bytes moved in each 0.5 s interval.
    pub interval_bytes: Vec<f64>,
    /// UDP: datagrams lost, in percent (0 for TCP).
    pub lost_percent: f64,
}

/// Receives one TCP connection on (argv[1], argv[2]) and writes "<sha256> <bytes>" of what
/// arrived to argv[3].
const SHA_RECEIVER: &str = "import hashlib, socket, sys
host, port, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
fam = socket.AF_INET6 if ':' in host else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((host, port)); s.listen(1)
c, _ = s.accept(); h = hashlib.sha256(); n = 0
while True:
    b = c.recv(1 << 20)
    if not b: break
    h.update(b); n += len(b)
open(out, 'w').write('%s %d' % (h.hexdigest(), n))";

/// Connects to (argv[1], argv[2]), retrying for 10 s, and sends the file argv[3].
const SHA_SENDER: &str = "import socket, sys, time
host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
fam = socket.AF_INET6 if ':' in host else socket.AF_INET
end = time.time() + 10
while True:
    s = socket.socket(fam, socket.SOCK_STREAM)
    try:
        s.connect((host, port)); break
    except OSError:
        s.close()
        if time.time() > end: raise
        time.sleep(0.1)
with open(path, 'rb') as f: s.sendfile(f)
s.close()";

impl Topology {
    /// Copy `mib` MiB of pseudo-random bytes over TCP from `from_ns` to `to_addr` (an address
    /// of `to_ns`, e.g. its tunnel address) and assert that what arrived has the SHA-256 of
    /// what was sent. Returns the hex digest.
    pub fn sha256_copy(&self, from_ns: &str, to_ns: &str, to_addr: &str, mib: usize) -> String {
        let src = self.dir.join(format!("copy-{mib}.bin"));
        if !src.exists() {
            let mut data = vec![0u8; mib << 20];
            let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ mib as u64;
            for chunk in data.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
            }
            fs::write(&src, &data).expect("write copy source");
        }
        let sum = Command::new("sha256sum")
            .arg(&src)
            .output()
            .expect("sha256sum");
        let want = String::from_utf8_lossy(&sum.stdout)
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        let out = self.dir.join("copy-received.txt");
        let _ = fs::remove_file(&out);
        let (src_s, out_s) = (src.to_string_lossy(), out.to_string_lossy());
        let mut rx = self.spawn(
            to_ns,
            "sha-receiver",
            &["python3", "-c", SHA_RECEIVER, to_addr, "5999", &out_s],
            &[],
        );
        self.ok(
            from_ns,
            &["python3", "-c", SHA_SENDER, to_addr, "5999", &src_s],
        );
        let start = Instant::now();
        while rx.exited().is_none() && start.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let got = fs::read_to_string(&out).unwrap_or_default();
        assert_eq!(
            got,
            format!("{want} {}", mib << 20),
            "{from_ns} -> {to_addr}: the copy arrived different (sha256, bytes)"
        );
        want
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let out = self.script(&["down", &self.prefix]);
        if !out.status.success() {
            eprintln!(
                "netns.sh down {}: {}",
                self.prefix,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // A failing test keeps its logs and configs for the reader; a passing one leaves
        // nothing behind (some tests write hundreds of MB of copy data here).
        if std::thread::panicking() {
            eprintln!("test files kept in {}", self.dir.display());
        } else if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!("removing {}: {e}", self.dir.display());
        }
    }
}

/// A child process, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Proc {
    child: Option<Child>,
    pub name: String,
    pub log: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    pub fn exited(&mut self) -> Option<Option<i32>> {
        let c = self.child.as_mut()?;
        match c.try_wait() {
            Ok(Some(st)) => Some(st.code()),
            _ => None,
        }
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM and wait up to 5 s; returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(st)) = c.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A fresh (private, public) key pair in base64, made by the binary under test.
pub fn keypair() -> (String, String) {
    let private = Command::new(veil_bin())
        .arg("genkey")
        .output()
        .expect("veil genkey");
    assert!(private.status.success());
    let private = String::from_utf8_lossy(&private.stdout).trim().to_string();
    let mut child = Command::new(veil_bin())
        .arg("pubkey")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("veil pubkey");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(private.as_bytes())
        .expect("write key");
    let out = child.wait_with_output().expect("veil pubkey");
    assert!(out.status.success());
    (
        private,
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    )
}

/// Format an endpoint (brackets for IPv6).
pub fn endpoint(addr: &str, port: u16) -> String {
    match addr.parse::<IpAddr>() {
        Ok(IpAddr::V6(_)) => format!("[{addr}]:{port}"),
        _ => format!("{addr}:{port}"),
    }
}

/// Start `veil up` in `ns` with `conf` (interface named after the file).
pub fn veil_up(t: &Topology, ns: &str, conf: &Path, args: &[&str], env: &[(&str, &str)]) -> Proc {
    let iface = conf
        .file_stem()
        .and_then(|s| s.to_str())
        .expect("config stem")
        .to_string();
    let conf_s = conf.to_string_lossy().into_owned();
    let mut cmd = vec![veil_bin(), "up", conf_s.as_str()];
    cmd.extend_from_slice(args);
    let mut env_all: Vec<(&str, &str)> = vec![("RUST_LOG", "info")];
    env_all.extend_from_slice(env);
    let mut p = t.spawn(ns, &format!("veil-{iface}"), &cmd, &env_all);
    t.wait_link(ns, &iface, &mut p);
    p
}

/// CPU time (user + system, in clock ticks) a process has used so far.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11).and_then(|s| s.parse().ok()).unwrap_or(0);
    let stime: u64 = f.get(12).and_then(|s| s.parse().ok()).unwrap_or(0);
    utime + stime
}

/// The pid of the process that `ip netns exec` turned into (exec keeps the pid).
pub fn veil_pid(p: &Proc) -> u32 {
    p.pid()
}

/// A userspace WireGuard implementation other than veil.
#[derive(Clone, Copy, Debug)]
pub enum Peer {
    WireguardGo,
    Boringtun,
    /// Mullvad's gotatun-cli (binary `gotatun`), a boringtun fork with its command line.
    Gotatun,
}

/// Start `peer` as interface `iface` in `ns` and configure it with `wg` and `ip`.
pub fn start_peer(
    t: &Topology,
    ns: &str,
    peer: Peer,
    iface: &str,
    wg_args: &[String],
    addr: &str,
) -> Proc {
    let proc = match peer {
        Peer::WireguardGo => {
            let bin = require("wireguard-go");
            // The kernel here has WireGuard, and wireguard-go refuses to run unless told.
            t.spawn(
                ns,
                iface,
                &[&bin, "-f", iface],
                &[("WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD", "1")],
            )
        }
        Peer::Boringtun | Peer::Gotatun => {
            let bin = require(if matches!(peer, Peer::Gotatun) {
                "gotatun"
            } else {
                "boringtun-cli"
            });
            t.spawn(
                ns,
                iface,
                &[&bin, iface, "--foreground", "--disable-drop-privileges"],
                &[],
            )
        }
    };
    let mut proc = proc;
    t.wait_link(ns, iface, &mut proc);
    // The UAPI socket appears right after the interface.
    let sock = format!("/var/run/wireguard/{iface}.sock");
    let start = Instant::now();
    while !std::path::Path::new(&sock).exists() && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let wg = require("wg");
    let mut cmd: Vec<&str> = vec![&wg, "set", iface];
    cmd.extend(wg_args.iter().map(String::as_str));
    t.ok(ns, &cmd);
    t.ok(ns, &["ip", "addr", "add", addr, "dev", iface]);
    t.ok(ns, &["ip", "link", "set", iface, "mtu", "1420", "up"]);
    proc
}

// ---------------------------------------------------------------------------------------------
// A veil gateway and a veil client

pub const GW_PORT: u16 = 51820;

pub struct Setup {
    pub t: Topology,
    pub gw: Proc,
    pub cl: Proc,
    pub gw_conf: std::path::PathBuf,
}

/// The usual gateway config: port [`GW_PORT`], 10.9.0.1/24, one client at 10.9.0.2.
pub fn one_client_gateway(gw_priv: &str, cl_pub: &str) -> String {
    format!(
        "[Interface]\nPrivateKey = {gw_priv}\nListenPort = {GW_PORT}\nAddress = 10.9.0.1/24\n\n\
         [Peer]\nPublicKey = {cl_pub}\nAllowedIPs = 10.9.0.2/32\n"
    )
}

/// The usual client config: 10.9.0.2/24, the gateway at [`A_V4`]:[`GW_PORT`] for 10.9.0.0/24.
pub fn one_gateway_client(cl_priv: &str, gw_pub: &str) -> String {
    format!(
        "[Interface]\nPrivateKey = {cl_priv}\nAddress = 10.9.0.2/24\n\n\
         [Peer]\nPublicKey = {gw_pub}\nEndpoint = {}\nAllowedIPs = 10.9.0.0/24\n",
        endpoint(A_V4, GW_PORT)
    )
}

/// veil gateway `veilgw` in namespace a with `gw_extra` appended to its config,
/// veil client `veilcl` in namespace b (no persistent keepalive: idle means idle).
pub fn setup(tag: &str, gw_extra: &str) -> Setup {
    let t = Topology::new(tag);
    let (gw_priv, gw_pub) = keypair();
    let (cl_priv, cl_pub) = keypair();
    let gw_conf = t.write(
        "veilgw.conf",
        &format!("{}\n{gw_extra}\n", one_client_gateway(&gw_priv, &cl_pub)),
    );
    let cl_conf = t.write("veilcl.conf", &one_gateway_client(&cl_priv, &gw_pub));
    let gw = veil_up(&t, &t.a(), &gw_conf, &[], &[]);
    let cl = veil_up(&t, &t.b(), &cl_conf, &[], &[]);
    Setup { t, gw, cl, gw_conf }
}

/// Wait for the process to exit; its status code, or None after `limit`.
pub fn wait_exit(p: &mut Proc, limit: Duration) -> Option<Option<i32>> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(code) = p.exited() {
            return Some(code);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Wait until `log()` contains `needle`, at most `limit`; returns the time it took.
pub fn wait_log(p: &Proc, needle: &str, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if p.log_text().contains(needle) {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

pub fn counter(log: &str, name: &str) -> u64 {
    log.lines()
        .filter(|l| l.contains("counters:"))
        .flat_map(|l| l.split_whitespace())
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| k.rsplit('.').next() == Some(name))
        .filter_map(|(_, v)| v.parse::<u64>().ok())
        .sum()
}
