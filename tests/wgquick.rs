//! wg-quick users' files (issue 17): hooks at wg-quick's moments, `veil down`, and a failing
//! `PostUp`, end to end in namespaces.

mod common;

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use common::*;

/// A gateway config whose hooks write to `trace`: the moment, and
/// whether the interface exists at that moment.
fn traced_gateway(trace: &str, post_up: &str) -> String {
    let (private, _) = keypair();
    let (_, peer) = keypair();
    let probe = |moment: &str| {
        format!("if ip link show %i >/dev/null 2>&1; then echo {moment} %i present >> {trace}; else echo {moment} %i absent >> {trace}; fi")
    };
    format!(
        "[Interface]\nPrivateKey = {private}\nListenPort = {GW_PORT}\nAddress = 10.9.0.1/24\n\
         PreUp = {}\nPostUp = {}\nPostUp = {post_up}\nPreDown = {}\nPostDown = {}\n\n\
         [Peer]\nPublicKey = {peer}\nAllowedIPs = 10.9.0.2/32\n",
        probe("PreUp"),
        probe("PostUp"),
        probe("PreDown"),
        probe("PostDown"),
    )
}

/// A topology and a traced gateway config for interface `{tag}PID` (unique per test process:
/// the control socket lives in /run/veil, outside the namespace): (topology, interface,
/// trace file, config file).
fn traced(tag: &str, post_up: &str) -> (Topology, String, PathBuf, PathBuf) {
    let t = Topology::new(tag);
    let iface = format!("{tag}{}", std::process::id() % 100_000);
    let trace = t.dir.join("trace");
    let conf = t.write(
        &format!("{iface}.conf"),
        &traced_gateway(&trace.display().to_string(), post_up),
    );
    (t, iface, trace, conf)
}

e2e_test!(hooks_run_at_wg_quick_moments_and_veil_down_stops, {
    let (t, iface, trace, conf) = traced("wq", "echo second-postup-output");
    let a = t.a();
    let mut gw = veil_up(&t, &a, &conf, &[], &[]);
    // PostUp runs after the link appears: wait for its line.
    assert!(
        wait_log(&gw, "second-postup-output", Duration::from_secs(10)).is_some(),
        "PostUp output not in the log:\n{}",
        gw.log_text()
    );
    let down = t.exec(&a, &[veil_bin(), "down", &iface]);
    assert!(
        down.status.success(),
        "veil down failed: {}{}",
        String::from_utf8_lossy(&down.stdout),
        String::from_utf8_lossy(&down.stderr)
    );
    assert_eq!(
        wait_exit(&mut gw, Duration::from_secs(10)),
        Some(Some(0)),
        "{}",
        gw.log_text()
    );
    assert!(!t.has_link(&a, &iface), "interface left behind");
    let got = fs::read_to_string(&trace).unwrap_or_default();
    assert_eq!(
        got,
        format!(
            "PreUp {iface} absent\nPostUp {iface} present\nPreDown {iface} present\n\
             PostDown {iface} absent\n"
        ),
        "log:\n{}",
        gw.log_text()
    );
    assert!(
        gw.log_text()
            .contains("shutdown requested through the control socket"),
        "{}",
        gw.log_text()
    );
});

e2e_test!(
    failing_post_up_leaves_no_interface_and_exits_non_zero_with_its_output,
    {
        let (t, iface, trace, conf) = traced("wf", "echo nat-rule-refused >&2; exit 7");
        let a = t.a();
        let conf_s = conf.display().to_string();
        let mut gw = t.spawn(
            &a,
            "veil-failing",
            &[veil_bin(), "up", &conf_s],
            &[("RUST_LOG", "info")],
        );
        let code = wait_exit(&mut gw, Duration::from_secs(15));
        let log = gw.log_text();
        assert_eq!(code, Some(Some(1)), "{log}");
        assert!(
            log.contains("nat-rule-refused"),
            "hook output missing:\n{log}"
        );
        assert!(log.contains("exit status: 7"), "{log}");
        assert!(!t.has_link(&a, &iface), "interface left behind:\n{log}");
        // wg-quick's undo is del_if: no PreDown, no PostDown.
        let got = fs::read_to_string(&trace).unwrap_or_default();
        assert_eq!(
            got,
            format!("PreUp {iface} absent\nPostUp {iface} present\n"),
            "{log}"
        );
    }
);

/// Removes a file when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

e2e_test!(wg_quick_runs_veil_as_its_userspace_implementation, {
    if std::path::Path::new("/sys/module/wireguard").exists() {
        eprintln!("skipped: the kernel has WireGuard, so wg-quick would not use a userspace one");
        return;
    }
    let wg_quick = require("wg-quick");
    let t = Topology::new("wu");
    let (a, b) = (t.a(), t.b());
    let iface = format!("wu{}", std::process::id() % 100_000);
    // wg-quick starts the implementation by name: veil answers to veil-wg.
    let link = t.dir.join("veil-wg");
    std::os::unix::fs::symlink(veil_bin(), &link).expect("symlink veil-wg");
    let (gw_priv, gw_pub) = keypair();
    let (cl_priv, cl_pub) = keypair();
    let marker = t.dir.join("postup");
    let gw_conf = t.write(
        &format!("{iface}.conf"),
        &format!(
            "[Interface]\nPrivateKey = {gw_priv}\nListenPort = {GW_PORT}\nAddress = 10.9.0.1/24\n\
             PostUp = echo %i > {}\n\n[Peer]\nPublicKey = {cl_pub}\nAllowedIPs = 10.9.0.2/32\n",
            marker.display()
        ),
    );
    let cl_conf = t.write("veilcl.conf", &one_gateway_client(&cl_priv, &gw_pub));
    let gw_s = gw_conf.display().to_string();
    let link_s = link.display().to_string();
    // Also on failure: removing the socket file stops the daemon (it removes the interface).
    let _cleanup = RemoveOnDrop(format!("/var/run/wireguard/{iface}.sock").into());
    // The daemon keeps wg-quick's stderr (its log, as wireguard-go's): a file, not a pipe.
    let up_log = t.dir.join("wg-quick-up.log");
    let log_file = fs::File::create(&up_log).expect("log file");
    let up = std::process::Command::new("ip")
        .args(["netns", "exec", &a, &wg_quick, "up", &gw_s])
        .env("WG_QUICK_USERSPACE_IMPLEMENTATION", &link_s)
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(log_file.try_clone().expect("log file"))
        .stderr(log_file)
        .status()
        .expect("run wg-quick up");
    let up_err = fs::read_to_string(&up_log).unwrap_or_default();
    assert!(up.success(), "wg-quick up failed:\n{up_err}");
    assert_eq!(
        fs::read_to_string(&marker).unwrap_or_default().trim(),
        iface,
        "{up_err}"
    );
    let _cl = veil_up(&t, &b, &cl_conf, &[], &[]);
    t.wait_ping(&b, "10.9.0.1");
    assert_eq!(t.ping(&b, "10.9.0.1", 5), 5, "{up_err}");
    let show = t.ok(&a, &["wg", "show", &iface, "latest-handshakes"]);
    assert!(show.contains(&cl_pub), "{show}");
    let down = t.exec(&a, &[&wg_quick, "down", &gw_s]);
    assert!(
        down.status.success(),
        "wg-quick down failed:\n{}",
        String::from_utf8_lossy(&down.stderr)
    );
    let start = std::time::Instant::now();
    while t.has_link(&a, &iface) && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!t.has_link(&a, &iface), "interface left behind");
    let sock = format!("/var/run/wireguard/{iface}.sock");
    let start = std::time::Instant::now();
    while std::path::Path::new(&sock).exists() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!std::path::Path::new(&sock).exists(), "{sock} left behind");
});
