//! wg-quick's `SaveConfig = true`: when shutdown begins (after `PreDown`, as wg-quick's
//! `save_config` runs), the running configuration is written back to the file, so peers
//! added or changed with `wg set` survive a restart.
//!
//! What is written is wg-quick's: an `[Interface]` with the file's `Address`, `DNS`, `MTU`,
//! `Table`, `SaveConfig` and hook lines, then what `wg showconf` would print (the running
//! listen port, fwmark, private key, and every peer as it is now). veil's own keys and
//! sections, which wg-quick knows nothing of, are kept as the file had them: a peer's
//! extra keys (`per_client_*`) stay with that peer while it exists, and the other sections
//! (`[sessions]`, `[metrics]`, ...) follow, line for line. The file is replaced atomically
//! (a 0600 temporary file, synced, renamed over it).

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use log::{error, info};
use zeroize::Zeroizing;

use crate::admin::context::Context;
use crate::admin::uapi::{Backend, InterfaceState};
use crate::config::{Config, Dns, Table};
use crate::keys::encode_key;
use veil_dataplane::route::IpNet;

/// The `[Peer]` keys `wg showconf` writes; any other key of a peer is veil's own.
const PEER_KEYS: [&str; 5] = [
    "publickey",
    "presharedkey",
    "allowedips",
    "endpoint",
    "persistentkeepalive",
];

/// What the file had that the running device does not know, for [`render`].
#[derive(Debug, Clone)]
pub(super) struct FileParts {
    addresses: Vec<IpNet>,
    dns: Dns,
    mtu: u16,
    table: Table,
    hooks: crate::config::Hooks,
}

impl FileParts {
    pub(super) fn of(config: &Config) -> FileParts {
        let i = &config.interface;
        FileParts {
            addresses: i.addresses.clone(),
            dns: i.dns.clone(),
            mtu: i.mtu,
            table: i.table,
            hooks: i.hooks.clone(),
        }
    }
}

/// Set up at start when the file says `SaveConfig = true`.
pub(super) struct SaveConfig {
    pub(super) path: PathBuf,
    pub(super) parts: FileParts,
    pub(super) ctx: Arc<Context>,
}

impl SaveConfig {
    /// Write the running configuration to the file; a failure is logged (shutdown goes on).
    pub(super) fn save(&self, name: &str) {
        let result = self
            .ctx
            .get()
            .map_err(|e| io::Error::other(format!("cannot read the running configuration: {e}")))
            .and_then(|state| {
                let original = fs::read_to_string(&self.path).unwrap_or_default();
                write_atomically(&self.path, &render(&original, &state, &self.parts))
            });
        match result {
            Ok(()) => info!("{name}: SaveConfig: wrote {}", self.path.display()),
            Err(e) => error!("{name}: SaveConfig: {}: {e}", self.path.display()),
        }
    }
}

/// The section name of a `[Name]` line, lowercased.
fn section_of(line: &str) -> Option<String> {
    let t = line.split('#').next().unwrap_or_default().trim();
    t.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .map(|n| n.trim().to_ascii_lowercase())
}

/// `Key = Value` of a line, comments stripped; the key lowercased.
fn key_value(line: &str) -> Option<(String, &str)> {
    let line = line.split('#').next().unwrap_or_default();
    let (k, v) = line.split_once('=')?;
    Some((k.trim().to_ascii_lowercase(), v.trim()))
}

/// What of the original file [`render`] keeps: each peer's extra lines by public key, and the
/// text of every section that is neither `[Interface]` nor `[Peer]`.
fn kept_from(original: &str) -> (Vec<(String, Vec<String>)>, String) {
    let mut peers: Vec<(String, Vec<String>)> = Vec::new();
    let mut others = String::new();
    let mut section = String::new();
    let mut peer_key = String::new();
    let mut peer_extra = Vec::new();
    let mut flush = |key: &mut String, extra: &mut Vec<String>| {
        if !key.is_empty() && !extra.is_empty() {
            peers.push((std::mem::take(key), std::mem::take(extra)));
        }
        key.clear();
        extra.clear();
    };
    for line in original.lines() {
        if let Some(name) = section_of(line) {
            if section == "peer" {
                flush(&mut peer_key, &mut peer_extra);
            }
            section = name;
            if section != "interface" && section != "peer" {
                others.push_str(line.trim());
                others.push('\n');
            }
            continue;
        }
        match section.as_str() {
            "interface" | "" => {}
            "peer" => match key_value(line) {
                Some((k, v)) if k == "publickey" => peer_key = v.to_string(),
                Some((k, _)) if !PEER_KEYS.contains(&k.as_str()) => {
                    peer_extra.push(line.trim().to_string());
                }
                _ => {}
            },
            _ => {
                others.push_str(line);
                others.push('\n');
            }
        }
    }
    if section == "peer" {
        flush(&mut peer_key, &mut peer_extra);
    }
    (peers, others)
}

/// The file to write, from the `original` text, the running `state` and the file's `parts`.
fn render(original: &str, state: &InterfaceState, parts: &FileParts) -> Zeroizing<String> {
    let (peer_extras, others) = kept_from(original);
    let mut o = Zeroizing::new(String::from("[Interface]\n"));
    for a in &parts.addresses {
        let _ = writeln!(o, "Address = {a}");
    }
    let dns: Vec<String> = parts
        .dns
        .servers
        .iter()
        .map(ToString::to_string)
        .chain(parts.dns.search.iter().cloned())
        .collect();
    if !dns.is_empty() {
        let _ = writeln!(o, "DNS = {}", dns.join(", "));
    }
    let _ = writeln!(o, "MTU = {}", parts.mtu);
    match parts.table {
        Table::Auto => {}
        Table::Off => o.push_str("Table = off\n"),
        Table::Id(t) => {
            let _ = writeln!(o, "Table = {t}");
        }
    }
    o.push_str("SaveConfig = true\n");
    let h = &parts.hooks;
    for (key, lines) in [
        ("PreUp", &h.pre_up),
        ("PostUp", &h.post_up),
        ("PreDown", &h.pre_down),
        ("PostDown", &h.post_down),
    ] {
        for l in lines {
            let _ = writeln!(o, "{key} = {l}");
        }
    }
    let _ = writeln!(o, "ListenPort = {}", state.listen_port);
    if state.fwmark != 0 {
        let _ = writeln!(o, "FwMark = 0x{:x}", state.fwmark);
    }
    if let Some(k) = &state.device.private_key {
        let _ = writeln!(
            o,
            "PrivateKey = {}",
            Zeroizing::new(encode_key(k.as_bytes())).as_str()
        );
    }
    for p in &state.device.peers {
        let public = encode_key(&p.public_key);
        let _ = writeln!(o, "\n[Peer]\nPublicKey = {public}");
        if let Some(k) = &p.preshared_key {
            let _ = writeln!(
                o,
                "PresharedKey = {}",
                Zeroizing::new(encode_key(k.as_bytes())).as_str()
            );
        }
        if !p.allowed_ips.is_empty() {
            let nets: Vec<String> = p.allowed_ips.iter().map(ToString::to_string).collect();
            let _ = writeln!(o, "AllowedIPs = {}", nets.join(", "));
        }
        if let Some(ep) = p.endpoint {
            let _ = writeln!(o, "Endpoint = {ep}");
        }
        if let Some(k) = p.persistent_keepalive.filter(|k| *k > 0) {
            let _ = writeln!(o, "PersistentKeepalive = {k}");
        }
        for (_, extra) in peer_extras.iter().filter(|(k, _)| *k == public) {
            for l in extra {
                o.push_str(l);
                o.push('\n');
            }
        }
    }
    if !others.trim().is_empty() {
        o.push('\n');
        o.push_str(others.trim_end());
        o.push('\n');
    }
    o
}

/// Replace `path` with `text`: a 0600 temporary file beside it, synced, renamed over it.
fn write_atomically(path: &Path, text: &str) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let written = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(text.as_bytes())?;
            f.sync_all()
        })
        .and_then(|()| fs::rename(&tmp, path));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use veil_control::device::{DeviceSnapshot, PeerSnapshot, SecretKey};
    use veil_dataplane::link::PeerId;

    fn peer(key: u8, allowed: &str, endpoint: Option<&str>) -> PeerSnapshot {
        PeerSnapshot {
            id: PeerId(0),
            public_key: [key; 32],
            has_preshared_key: false,
            preshared_key: None,
            endpoint: endpoint.map(|e| e.parse().expect("endpoint")),
            allowed_ips: vec![allowed.parse().expect("net")],
            last_handshake: None,
            rx_bytes: 0,
            tx_bytes: 0,
            rx_packets: 0,
            tx_packets: 0,
            persistent_keepalive: Some(25),
            session_active: false,
            migration_validated: false,
            breaker: veil_control::breaker::BreakerState::Closed,
        }
    }

    #[test]
    fn running_peers_replace_the_files_and_veil_sections_stay() {
        let old_peer = encode_key(&[2; 32]);
        let original = format!(
            "[Interface]\nPrivateKey = {}\nListenPort = 51820\nAddress = 10.9.0.1/24\n\
             SaveConfig = true\nPostUp = echo up %i\n\n\
             [Peer] # the laptop\nPublicKey = {old_peer}\nAllowedIPs = 10.9.0.2/32\n\
             per_client_pps = 1000\n\n\
             [Peer]\nPublicKey = {}\nAllowedIPs = 10.9.0.9/32\n\n\
             [sessions]\n# half a minute\ndrain_timeout_sec = 30\n",
            encode_key(&[1; 32]),
            encode_key(&[9; 32]),
        );
        let config = Config::parse(&original, "wg0.conf").expect("valid");
        let state = InterfaceState {
            listen_port: 51820,
            fwmark: 0,
            device: DeviceSnapshot {
                public_key: [0; 32],
                private_key: Some(SecretKey::new([1; 32])),
                // The laptop stays; 10.9.0.9 was removed and a new one added with `wg set`.
                peers: vec![
                    peer(2, "10.9.0.2/32", Some("192.0.2.7:40000")),
                    peer(3, "10.9.0.3/32", None),
                ],
                active_sessions: 0,
                handshake_backlog: 0,
                counters: vec![],
            },
        };
        let text = render(&original, &state, &FileParts::of(&config));
        let again = Config::parse(&text, "wg0.conf").expect("the written file loads");
        assert_eq!(again.peers.len(), 2, "{}", text.as_str());
        assert_eq!(again.peers[0].public_key, [2; 32]);
        assert_eq!(again.peers[1].public_key, [3; 32]);
        assert_eq!(
            again.peers[0].endpoint,
            Some("192.0.2.7:40000".parse().expect("ep"))
        );
        assert!(text.contains("per_client_pps = 1000"), "{}", text.as_str());
        assert!(!text.contains(&encode_key(&[9; 32])), "{}", text.as_str());
        assert!(text.contains("[sessions]\n# half a minute\ndrain_timeout_sec = 30\n"));
        assert!(text.contains("PostUp = echo up %i\n"));
        assert!(again.interface.save_config);
        assert_eq!(again.interface.private_key.as_bytes(), &[1; 32]);
        assert_eq!(
            again.sessions.drain_timeout,
            std::time::Duration::from_secs(30)
        );
    }

    #[test]
    fn the_file_is_replaced_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("veil-saveconf-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("wg0.conf");
        fs::write(&path, "old").expect("write");
        write_atomically(&path, "new\n").expect("replace");
        assert_eq!(fs::read_to_string(&path).expect("read"), "new\n");
        let mode = fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let _ = fs::remove_dir_all(&dir);
    }
}
