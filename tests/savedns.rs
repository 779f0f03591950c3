//! wg-quick's `SaveConfig = true` and `DNS =` with `veil up` (issue 17).

mod common;

use std::fs;
use std::time::Duration;

use common::*;

/// Two namespaces and a per-process interface name `{tag}PID`: (topology, namespace a, name).
fn topology(tag: &str) -> (Topology, String, String) {
    let t = Topology::new(tag);
    let a = t.a();
    (t, a, format!("{tag}{}", std::process::id() % 100_000))
}

e2e_test!(save_config_keeps_a_peer_added_with_wg_set, {
    let wg = require("wg");
    let (t, a, iface) = topology("sc");
    let (gw_priv, _) = keypair();
    let (_, first) = keypair();
    let (_, added) = keypair();
    let conf = t.write(
        &format!("{iface}.conf"),
        &format!(
            "[Interface]\nPrivateKey = {gw_priv}\nListenPort = {GW_PORT}\nAddress = 10.9.0.1/24\n\
             SaveConfig = true\n\n[Peer]\nPublicKey = {first}\nAllowedIPs = 10.9.0.2/32\n\n\
             [sessions]\ndrain_timeout_sec = 1\n"
        ),
    );
    let mut gw = veil_up(&t, &a, &conf, &[], &[]);
    t.ok(
        &a,
        &[
            &wg,
            "set",
            &iface,
            "peer",
            &added,
            "allowed-ips",
            "10.9.0.7/32",
            "persistent-keepalive",
            "15",
        ],
    );
    assert_success(&t.exec(&a, &[veil_bin(), "down", &iface]), "veil down: ");
    assert_eq!(
        wait_exit(&mut gw, Duration::from_secs(15)),
        Some(Some(0)),
        "{}",
        gw.log_text()
    );
    let text = fs::read_to_string(&conf).expect("read the saved file");
    assert!(
        text.contains(&format!(
            "[Peer]\nPublicKey = {added}\nAllowedIPs = 10.9.0.7/32\nPersistentKeepalive = 15\n"
        )),
        "{text}"
    );
    assert!(text.contains(&format!("PublicKey = {first}")), "{text}");
    assert!(text.contains("SaveConfig = true"), "{text}");
    assert!(text.contains("[sessions]\ndrain_timeout_sec = 1"), "{text}");
    // The written file is one veil (and wg-quick) loads.
    let conf_s = conf.display().to_string();
    assert_success(
        &t.exec(&a, &[veil_bin(), "check", &conf_s]),
        "veil check of the saved file: ",
    );
});

/// A `resolvconf` that writes its arguments and stdin to `log`.
fn fake_resolvconf(t: &Topology) -> (String, std::path::PathBuf) {
    let bin = t.dir.join("bin");
    fs::create_dir_all(&bin).expect("bin dir");
    let log = t.dir.join("resolvconf.log");
    let script = bin.join("resolvconf");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"args: $*\" >> {0}\nwhile read -r l; do echo \"in: $l\" >> {0}; done\n",
            log.display()
        ),
    )
    .expect("write fake resolvconf");
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    (path, log)
}

e2e_test!(dns_goes_through_resolvconf_and_is_taken_back, {
    let (t, a, iface) = topology("dn");
    let (gw_priv, _) = keypair();
    let (_, peer) = keypair();
    let conf = t.write(
        &format!("{iface}.conf"),
        &format!(
            "[Interface]\nPrivateKey = {gw_priv}\nAddress = 10.9.0.2/24\n\
             DNS = 10.9.0.53, fd09::53, corp.example\n\n\
             [Peer]\nPublicKey = {peer}\nAllowedIPs = 10.9.0.0/24\n"
        ),
    );
    let (path, log) = fake_resolvconf(&t);
    let mut cl = veil_up(&t, &a, &conf, &[], &[("PATH", &path)]);
    assert!(
        wait_log(&cl, "set through resolvconf", Duration::from_secs(10)).is_some(),
        "{}",
        cl.log_text()
    );
    // wg-quick's prefix comes from resolvconf's interface-order; none without it.
    let prefix = if std::path::Path::new("/etc/resolvconf/interface-order").exists() {
        "tun."
    } else {
        ""
    };
    let want_up = format!(
        "args: -a {prefix}{iface} -m 0 -x\nin: nameserver 10.9.0.53\nin: nameserver fd09::53\n\
         in: search corp.example\n"
    );
    assert_eq!(fs::read_to_string(&log).unwrap_or_default(), want_up);
    assert_eq!(cl.stop(), Some(0), "{}", cl.log_text());
    assert_eq!(
        fs::read_to_string(&log).unwrap_or_default(),
        format!("{want_up}args: -d {prefix}{iface} -f\n")
    );
});

e2e_test!(dns_without_resolvconf_is_a_clear_warning, {
    let (t, a, iface) = topology("dw");
    let (gw_priv, _) = keypair();
    let conf = t.write(
        &format!("{iface}.conf"),
        &format!("[Interface]\nPrivateKey = {gw_priv}\nAddress = 10.9.0.2/24\nDNS = 10.9.0.53\n"),
    );
    let path = "/usr/sbin:/usr/bin:/sbin:/bin";
    if std::env::split_paths(path).any(|d| d.join("resolvconf").exists()) {
        eprintln!("skipped: resolvconf is installed here");
        return;
    }
    let mut cl = veil_up(&t, &a, &conf, &[], &[("PATH", path)]);
    assert!(
        wait_log(&cl, "resolvconf is not installed", Duration::from_secs(10)).is_some(),
        "{}",
        cl.log_text()
    );
    assert_eq!(cl.stop(), Some(0), "{}", cl.log_text());
});
