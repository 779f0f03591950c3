//! Operations end to end: `veil check`, the `[logging]` and `[threading]`
//! sections, systemd notifications and the watchdog, and how failures end
//! veil (a panicking thread, a deleted TUN interface).
//!
//! The `veil check` tests need nothing special; the others run real `veil up`
//! processes in network namespaces and are skipped, with the reason printed,
//! only where the machine lacks root or /dev/net/tun.

#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/veil-server.conf");

fn check(path: &Path) -> (Option<i32>, String, String) {
    let out = Command::new(veil_bin())
        .arg("check")
        .arg(path)
        .output()
        .expect("veil check");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("veil-ops-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn write_conf(dir: &Path, name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write config");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    p
}

#[test]
fn check_accepts_the_example() {
    let (code, out, err) = check(Path::new(EXAMPLE));
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert_eq!(
        out.trim(),
        format!(
            "{EXAMPLE}: OK: interface veil-server, 1 peer, UDP port 51820, pipeline mode, \
             log level info (text), metrics off"
        )
    );
    // Only the repository's permissive file mode is worth a warning.
    for line in err.lines() {
        assert!(
            line.starts_with("warning: ") && line.contains("lets every user read"),
            "{err}"
        );
    }
}

#[test]
fn check_reports_every_problem_with_file_and_line_and_exits_2() {
    let dir = scratch("check");
    let (key, _) = keypair();
    let head = format!("[Interface]\nPrivateKey = {key}\n");
    // (file, contents, the exact stderr)
    let cases: Vec<(&str, String, String)> = vec![
        (
            "level.conf",
            format!("{head}[logging]\nlevel = loud\n"),
            "level.conf:4: level: 'loud' is not a valid log level: not one of the allowed \
             values (expected error, warn, info, debug, trace or off; default info; RUST_LOG, \
             when set, wins)"
                .into(),
        ),
        (
            "many.conf",
            format!(
                "{head}[logging]\nformat = yaml\nsampling_rate = 2\n[metrics]\nlisten = \
                 nowhere\n[threading]\npin = no\nrx_cpu = 1\n"
            ),
            "many.conf:4: format: 'yaml' is not a valid log format: not one of the allowed \
             values (expected text or json; default text)\n\
             many.conf:5: sampling_rate: '2' is not a valid sampling rate: must be 0.0..=1.0 \
             (expected a share of debug/trace messages to keep, 0.0..=1.0, e.g. 0.01; default \
             1.0)\n\
             many.conf:7: listen: 'nowhere' is not a valid listen address: not an IP address \
             and port (host names are not accepted here) (expected IP:PORT or [IPv6]:PORT, port \
             1..=65535; default 127.0.0.1:9586)\n\
             many.conf:10: rx_cpu: contradicts 'pin = false' on line 9; remove one of them"
                .into(),
        ),
        (
            "cpu.conf",
            format!("{head}[threading]\ntx_cpu = 4095\n"),
            format!(
                "cpu.conf:4: tx_cpu: CPU 4095 does not exist here; this process may use CPUs \
                 {} (fix the file, or override it with --tx-cpu or --no-pin)",
                allowed_cpus()
            ),
        ),
        (
            "nokey.conf",
            "[Interface]\nListenPort = 51820\n".into(),
            "nokey.conf:1: [Interface] has no PrivateKey; add 'PrivateKey = ...' (44 characters \
             of base64, as printed by `wg genkey`)"
                .into(),
        ),
    ];
    for (name, text, expected) in cases {
        let path = write_conf(&dir, name, &text);
        let (code, out, err) = check(&path);
        assert_eq!(code, Some(2), "{name}: exit status; stderr:\n{err}");
        assert!(out.is_empty(), "{name}: stdout {out:?}");
        let expected = expected.replace(name, &path.display().to_string());
        assert_eq!(err.trim_end(), expected, "{name}");
        assert!(!err.contains(&key), "{name}: the private key was printed");
    }
    let (code, _, err) = check(&dir.join("absent.conf"));
    assert_eq!(code, Some(2));
    assert!(err.contains("absent.conf: cannot read the file"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// CPUs this process may use, as veil lists them ("0, 1").
fn allowed_cpus() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap_or("")
        .trim();
    let mut cpus = Vec::new();
    for part in list.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().unwrap(), b.parse().unwrap());
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse::<usize>().unwrap()),
        }
    }
    let cpus: Vec<String> = cpus.iter().map(ToString::to_string).collect();
    cpus.join(", ")
}

// ---------------------------------------------------------------------------------------------
// Processes in namespaces

/// A NOTIFY_SOCKET of our own: every datagram veil sends, with its arrival time.
struct NotifySocket {
    path: PathBuf,
    got: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl NotifySocket {
    fn new(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let sock = UnixDatagram::bind(&path).expect("bind notify socket");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            // Ends when the test process does; the socket file goes with the topology's dir.
            loop {
                if let Ok(n) = sock.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    g.lock().unwrap().push((Instant::now(), text));
                }
            }
        });
        NotifySocket { path, got }
    }

    fn path(&self) -> &str {
        self.path.to_str().expect("utf-8 path")
    }

    fn all(&self) -> Vec<(Instant, String)> {
        self.got.lock().unwrap().clone()
    }

    /// When the first message containing `what` arrived, waiting up to `limit`.
    fn wait_for(&self, what: &str, limit: Duration) -> Option<Instant> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some((t, _)) = self.all().into_iter().find(|(_, m)| m.contains(what)) {
                return Some(t);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn pings_between(&self, from: Instant, to: Instant) -> usize {
        self.all()
            .iter()
            .filter(|(t, m)| *t >= from && *t < to && m == "WATCHDOG=1")
            .count()
    }
}

fn lone_gateway(key: &str, extra: &str) -> String {
    format!("[Interface]\nPrivateKey = {key}\nListenPort = 51820\nAddress = 10.9.0.1/24\n{extra}")
}

/// `veil up` in namespace a of `t` with a notify socket and a 1 s watchdog.
fn up_with_notify(
    t: &Topology,
    conf: &Path,
    args: &[&str],
    notify: &NotifySocket,
    extra_env: &[(&str, &str)],
) -> Proc {
    let conf_s = conf.to_string_lossy().into_owned();
    let mut cmd = vec![veil_bin(), "up", conf_s.as_str()];
    cmd.extend_from_slice(args);
    let mut env = vec![
        ("RUST_LOG", "info"),
        ("NOTIFY_SOCKET", notify.path()),
        ("WATCHDOG_USEC", "1000000"),
    ];
    env.extend_from_slice(extra_env);
    t.spawn(&t.a(), "veil", &cmd, &env)
}

e2e_test!(systemd_ready_watchdog_and_stopping, {
    let t = Topology::new("sd");
    let (key, _) = keypair();
    let notify = NotifySocket::new(&t.dir);
    let conf = t.write("veilgw.conf", &lone_gateway(&key, ""));
    let mut p = up_with_notify(&t, &conf, &[], &notify, &[]);
    let ready = notify
        .wait_for("READY=1", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no READY=1:\n{}", p.log_text()));
    assert!(
        t.has_link(&t.a(), "veilgw"),
        "READY=1 before the interface is up"
    );
    let first = &notify.all()[0].1;
    assert!(first.starts_with("READY=1\nSTATUS=veilgw: up"), "{first:?}");
    std::thread::sleep(Duration::from_secs(3));
    // WATCHDOG_USEC = 1 s: a ping every 0.5 s.
    let pings = notify.pings_between(ready, ready + Duration::from_secs(3));
    assert!((4..=8).contains(&pings), "{pings} pings in 3 s");
    assert_eq!(p.stop(), Some(0), "exit status:\n{}", p.log_text());
    let stopping = notify
        .wait_for("STOPPING=1", Duration::from_secs(1))
        .expect("STOPPING=1 on SIGTERM");
    let last_ping = notify
        .all()
        .iter()
        .filter(|(_, m)| m == "WATCHDOG=1")
        .map(|(t, _)| *t)
        .max()
        .expect("pings");
    assert!(last_ping <= stopping, "a ping after STOPPING=1");
    assert!(!t.has_link(&t.a(), "veilgw"));
});

/// A lone gateway in `mode` with a test hook (`VEIL_TEST_*_THREAD`, thread) set, reporting
/// to a notify socket.
fn hooked_gateway(tag: &str, mode: &str, hook: (&str, &str)) -> (Topology, NotifySocket, Proc) {
    let t = Topology::new(tag);
    let (key, _) = keypair();
    let notify = NotifySocket::new(&t.dir);
    let conf = t.write("veilgw.conf", &lone_gateway(&key, ""));
    let p = up_with_notify(&t, &conf, &["--threading", mode], &notify, &[hook]);
    (t, notify, p)
}

e2e_test!(a_stalled_thread_silences_the_watchdog, {
    for (thread, mode) in [("veil-tx", "pipeline"), ("veil-single", "single")] {
        let (_t, notify, mut p) = hooked_gateway("st", mode, ("VEIL_TEST_STALL_THREAD", thread));
        let ready = notify
            .wait_for("READY=1", Duration::from_secs(10))
            .unwrap_or_else(|| panic!("{thread}: no READY=1:\n{}", p.log_text()));
        // The thread stops at its next beat (within 0.5 s); its heartbeat is
        // stale 2 s later, and the ticker looks every 0.5 s.
        std::thread::sleep(Duration::from_secs(6));
        let late = notify.pings_between(ready + Duration::from_millis(3200), Instant::now());
        assert_eq!(late, 0, "{thread}: pinged with a stalled thread");
        assert!(
            p.exited().is_none(),
            "{thread}: a stall alone must not exit"
        );
        let log = p.log_text();
        assert!(
            log.contains(&format!("{thread} stopped making progress")),
            "{thread}:\n{log}"
        );
        // The stalled thread still honours shutdown.
        assert_eq!(p.stop(), Some(0), "{thread}:\n{}", p.log_text());
    }
});

e2e_test!(a_panicking_thread_ends_veil_with_a_failure, {
    for (thread, mode) in [
        ("veil-crypto", "pipeline"),
        ("veil-control", "pipeline"),
        ("veil-single", "single"),
    ] {
        let (t, notify, mut p) = hooked_gateway("pn", mode, ("VEIL_TEST_PANIC_THREAD", thread));
        notify
            .wait_for("READY=1", Duration::from_secs(10))
            .unwrap_or_else(|| panic!("{thread}: no READY=1:\n{}", p.log_text()));
        let code = wait_exit(&mut p, Duration::from_secs(3))
            .unwrap_or_else(|| panic!("{thread}: still running 3 s after the panic"));
        let log = p.log_text();
        assert_eq!(code, Some(1), "{thread}: exit status:\n{log}");
        assert!(
            log.contains(&format!("thread {thread} panicked")),
            "{thread}: panic not logged:\n{log}"
        );
        assert!(log.contains("interface removed"), "{thread}:\n{log}");
        assert!(!t.has_link(&t.a(), "veilgw"), "{thread}: interface left");
        let stopping = notify
            .all()
            .into_iter()
            .find(|(_, m)| m.starts_with("STOPPING=1"))
            .map(|(_, m)| m)
            .unwrap_or_default();
        assert!(
            stopping.contains("failed: thread") && stopping.contains("panicked"),
            "{thread}: {stopping:?}"
        );
    }
});

e2e_test!(deleting_the_tun_interface_is_fatal, {
    for mode in ["pipeline", "single"] {
        let t = Topology::new("tg");
        let (key, _) = keypair();
        let conf = t.write("veilgw.conf", &lone_gateway(&key, ""));
        let mut p = veil_up(&t, &t.a(), &conf, &["--threading", mode], &[]);
        t.ok(&t.a(), &["ip", "link", "del", "veilgw"]);
        let code = wait_exit(&mut p, Duration::from_secs(3))
            .unwrap_or_else(|| panic!("{mode}: still running after the TUN was deleted"));
        let log = p.log_text();
        assert_eq!(code, Some(1), "{mode}:\n{log}");
        assert!(
            log.contains("reading the TUN device failed")
                && log.contains("the TUN interface was deleted"),
            "{mode}:\n{log}"
        );
    }
});

e2e_test!(json_logs_async_with_peer_and_component, {
    let t = Topology::new("js");
    let (gw_priv, gw_pub) = keypair();
    let (cl_priv, cl_pub) = keypair();
    let gw = format!(
        "[Interface]\nPrivateKey = {gw_priv}\nListenPort = 51820\nAddress = 10.9.0.1/24\n\
         [Peer]\nPublicKey = {cl_pub}\nAllowedIPs = 10.9.0.2/32\n\
         [logging]\nformat = json\nasync_logging = true\nasync_queue_size = 64\n"
    );
    let cl = format!(
        "[Interface]\nPrivateKey = {cl_priv}\nAddress = 10.9.0.2/24\n\
         [Peer]\nPublicKey = {gw_pub}\nEndpoint = {A_V4}:51820\nAllowedIPs = 10.9.0.0/24\n"
    );
    let gw_conf = t.write("veilgw.conf", &gw);
    let cl_conf = t.write("veilcl.conf", &cl);
    // RUST_LOG unset: the file's level applies.
    let gw_conf = gw_conf.to_string_lossy().into_owned();
    let mut gwp = t.spawn(&t.a(), "veil-gw", &[veil_bin(), "up", &gw_conf], &[]);
    t.wait_link(&t.a(), "veilgw", &mut gwp);
    let _clp = veil_up(&t, &t.b(), &cl_conf, &[], &[]);
    t.wait_ping(&t.b(), "10.9.0.1");
    assert_eq!(gwp.stop(), Some(0), "{}", gwp.log_text());
    let log = gwp.log_text();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for v in &lines {
        let time = v["time"].as_str().expect("time");
        assert!(time.ends_with('Z') && time.len() == 24, "{v}");
        assert!(v["level"].is_string() && v["component"].is_string() && v["message"].is_string());
    }
    let handshake = lines
        .iter()
        .find(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.contains("handshake completed"))
        })
        .unwrap_or_else(|| panic!("no handshake line:\n{log}"));
    assert_eq!(handshake["peer"], cl_pub[..8], "{handshake}");
    assert!(handshake["component"]
        .as_str()
        .is_some_and(|c| c.starts_with("veil_control")));
    // The last lines before exit made it out of the async queue.
    let last = lines.last().expect("lines");
    assert!(
        last["message"]
            .as_str()
            .is_some_and(|m| m.ends_with("stopped; interface removed")),
        "{last}"
    );
});

/// The name and CPU mask of each thread of `pid`.
fn threads_of(pid: u32) -> Vec<(String, u64)> {
    let ps = Command::new("ps")
        .args(["-L", "-o", "tid=,comm=", "-p", &pid.to_string()])
        .output()
        .expect("ps");
    String::from_utf8_lossy(&ps.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (tid, name) = (f.next()?, f.next()?);
            let ts = Command::new("taskset").args(["-p", tid]).output().ok()?;
            let mask = String::from_utf8_lossy(&ts.stdout);
            let hex = mask.trim().rsplit(' ').next().unwrap_or("");
            Some((name.to_string(), u64::from_str_radix(hex, 16).unwrap_or(0)))
        })
        .collect()
}

e2e_test!(threading_section_and_flags_that_override_it, {
    let t = Topology::new("ts");
    let (key, _) = keypair();
    let last = std::thread::available_parallelism().map_or(1, |n| n.get()) - 1;
    let conf = t.write(
        "veilgw.conf",
        &lone_gateway(
            &key,
            &format!("[threading]\nmode = single\nrx_cpu = {last}\n"),
        ),
    );
    let mut p = veil_up(&t, &t.a(), &conf, &[], &[]);
    let threads = threads_of(p.pid());
    let single = threads
        .iter()
        .find(|(n, _)| n == "veil-single")
        .unwrap_or_else(|| panic!("mode = single ignored: {threads:?}"));
    assert_eq!(single.1, 1 << last, "rx_cpu = {last} ignored");
    assert!(!threads.iter().any(|(n, _)| n == "veil-rx"));
    assert_eq!(p.stop(), Some(0));

    let mut p = veil_up(
        &t,
        &t.a(),
        &conf,
        &["--threading", "pipeline", "--no-pin"],
        &[],
    );
    let threads = threads_of(p.pid());
    let rx = threads
        .iter()
        .find(|(n, _)| n == "veil-rx")
        .unwrap_or_else(|| panic!("--threading pipeline ignored: {threads:?}"));
    let all = threads.iter().map(|(_, m)| *m).max().expect("threads");
    assert_eq!(rx.1, all, "--no-pin ignored: {threads:?}");
    assert_eq!(p.stop(), Some(0));

    // A CPU the file names but the machine lacks: exit 2, nothing created.
    let bad = t.write(
        "veilbad.conf",
        &lone_gateway(&key, "[threading]\ncrypto_cpu = 4095\n"),
    );
    let out = t.exec(&t.a(), &[veil_bin(), "up", &bad.to_string_lossy()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("veilbad.conf:6: crypto_cpu: CPU 4095 does not exist"),
        "{err}"
    );
    assert!(!t.has_link(&t.a(), "veilbad"));
});

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let analyze = require("systemd-analyze");
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/veil@.service"
    ))
    .expect("unit file");
    assert!(
        unit.lines()
            .any(|l| l == "ExecStart=/usr/local/bin/veil up /etc/veil/%i.conf"),
        "ExecStart changed"
    );
    // verify checks that ExecStart's binary exists: point it at the one under test.
    let dir = scratch("unit");
    let path = dir.join("veil@test.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/veil", veil_bin())).expect("write unit");
    let out = Command::new(&analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{err}"
    );
    // RestartSteps and RestartMaxDelaySec arrived in systemd 254; older versions
    // warn that they do not know them, and nothing else may be reported.
    let version = Command::new(&analyze)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let major: u32 = version
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    for line in err.lines() {
        let tolerated = major < 254
            && (line.contains("Unknown key 'RestartSteps'")
                || line.contains("Unknown key 'RestartMaxDelaySec'"));
        assert!(tolerated, "systemd {major}: {line}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

// JSON logs parse line by line, and a flood of junk datagrams cannot push more than the
// configured lines a second: junk without a message type is a counted drop (no line), junk
// handshake messages are logged at debug level (as the kernel does), and the log limiter
// suppresses all but its budget of those lines, saying so.
e2e_test!(json_logs_stay_parseable_and_bounded_under_junk, {
    let t = Topology::new("oj");
    let (k, _) = keypair();
    let conf = t.write(
        "veiljs.conf",
        &format!(
            "[Interface]\nPrivateKey = {k}\nListenPort = {GW_PORT}\nAddress = 10.9.0.1/24\n\n\
             [logging]\nformat = json\nlevel = debug\nrate_limit_logs_per_sec = 5\n"
        ),
    );
    let mut gw = veil_up(&t, &t.a(), &conf, &[], &[("RUST_LOG", "debug")]);
    let start = std::time::Instant::now();
    // 20 000 junk datagrams of every shape: bad types, truncated handshakes, garbage; every
    // fourth an initiation of the right length with garbage inside (an invalid MAC1).
    let script = format!(
        "import socket,os\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         for i in range(20000):\n    \
         b = b'\\x01\\x00\\x00\\x00' + os.urandom(144) if i % 4 == 0 else os.urandom(1+i%200)\n    \
         s.sendto(b, ('{A_V4}', {GW_PORT}))\n"
    );
    t.ok(&t.b(), &["python3", "-c", &script]);
    let secs = start.elapsed().as_secs_f64().max(1.0);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    gw.stop();
    let log = gw.log_text();
    let lines: Vec<&str> = log.lines().filter(|l| l.starts_with('{')).collect();
    for l in &lines {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(
            v["time"].is_string() && v["level"].is_string() && v["message"].is_string(),
            "{l}"
        );
    }
    let summaries = lines.iter().filter(|l| l.contains("suppressed")).count();
    // The junk was logged (within the budget) and the rest of its lines suppressed.
    assert!(
        lines.iter().any(|l| l.contains("invalid MAC1")),
        "no junk handshake logged:\n{log}"
    );
    assert!(summaries >= 1, "no suppression summary:\n{log}");
    // Startup and shutdown lines included: 5 a second over the whole run, plus summaries.
    let budget = ((secs + 4.0) * 5.0) as usize + summaries + 10;
    assert!(
        lines.len() <= budget,
        "{} lines in {secs:.1} s (budget {budget}):\n{log}",
        lines.len()
    );
    assert!(
        log.contains("rx.drop_malformed=") || log.contains("drop_malformed"),
        "junk not counted:\n{log}"
    );
});
