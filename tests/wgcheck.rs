//! `veil check` on ordinary wg-quick files (issue 17): nothing wg-quick would act on is
//! ignored, and the summary says what veil will do of wg-quick's keys.

#[allow(unused_macros, unused_imports)]
mod common;

use std::process::Command;

use common::*;

fn check(dir: &std::path::Path, name: &str, text: &str) -> (bool, String, String) {
    let path = dir.join(name);
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .expect("write config");
        f.write_all(text.as_bytes()).expect("write config");
    }
    let out = Command::new(veil_bin())
        .arg("check")
        .arg(&path)
        .output()
        .expect("veil check");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn typical_wg_quick_server_and_client_files_check_clean() {
    let dir = std::env::temp_dir().join(format!("veil-wgcheck-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (server_priv, server_pub) = keypair();
    let (client_priv, client_pub) = keypair();
    // As the usual guides write them (wg-quick(8), distribution wikis).
    let server = format!(
        "[Interface]\n\
         Address = 10.8.0.1/24, fd08::1/64\n\
         ListenPort = 51820\n\
         PrivateKey = {server_priv}\n\
         SaveConfig = true\n\
         PostUp = iptables -A FORWARD -i %i -j ACCEPT; iptables -t nat -A POSTROUTING -o eth0 -j MASQUERADE\n\
         PostUp = ip6tables -A FORWARD -i %i -j ACCEPT\n\
         PostDown = iptables -D FORWARD -i %i -j ACCEPT; iptables -t nat -D POSTROUTING -o eth0 -j MASQUERADE\n\
         PostDown = ip6tables -D FORWARD -i %i -j ACCEPT\n\
         \n\
         [Peer]\n\
         # laptop\n\
         PublicKey = {client_pub}\n\
         AllowedIPs = 10.8.0.2/32, fd08::2/128\n"
    );
    let (ok, out, err) = check(&dir, "wg0.conf", &server);
    assert!(ok, "{out}{err}");
    assert_eq!(err, "", "warnings on a wg-quick server file");
    assert!(
        out.trim_end()
            .ends_with("; wg-quick: 2 PostUp, 2 PostDown, SaveConfig"),
        "{out}"
    );
    let client = format!(
        "[Interface]\n\
         PrivateKey = {client_priv}\n\
         Address = 10.8.0.2/32, fd08::2/128\n\
         DNS = 10.8.0.1, 1.1.1.1\n\
         MTU = 1420\n\
         \n\
         [Peer]\n\
         PublicKey = {server_pub}\n\
         PresharedKey = {}\n\
         Endpoint = 192.0.2.10:51820\n\
         AllowedIPs = 0.0.0.0/0, ::/0\n\
         PersistentKeepalive = 25\n",
        keypair().0
    );
    let (ok, out, err) = check(&dir, "wg1.conf", &client);
    assert!(ok, "{out}{err}");
    assert_eq!(err, "", "warnings on a wg-quick client file");
    assert!(
        out.trim_end().ends_with(
            "; wg-quick: full tunnel (IPv4, IPv6) through policy routing, DNS through resolvconf"
        ),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn veil_version_prints_the_version() {
    let out = Command::new(veil_bin())
        .arg("--version")
        .output()
        .expect("veil --version");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("veil {}\n", env!("CARGO_PKG_VERSION"))
    );
}
