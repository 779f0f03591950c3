//! The config parser as a whole: valid files, every message, and properties.

use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use proptest::prelude::*;

use super::ifname::{find_config, InterfaceNameProblem};
use super::interface::DEFAULT_MTU;
use super::output::Hooks;
use super::*;
use crate::keys;
use veil_dataplane::route::{IpNet, IpNetError};

mod sections;

// Keys made with wireguard-tools (`wg genkey`, `wg pubkey`, `wg genpsk`).
const OUR_PRIVATE: &str = "eBiTrl6EfC2vnq98gbI9jxGR4xu+4tU4WO1bG/GKOlo=";
const OUR_PUBLIC: &str = "Qz9EQLnnc6KJvSE2WucQ+MsuCJHnSafCHmRsOjxlkSU=";
const PEER_A: &str = "3N1uA/wM25wP+eSagx8obZcwHm3w/+Jxpgg+W70DBTw=";
const PEER_B: &str = "vjQm1vn7oTGU81WX4lLW/H89kD3FVpWTLr+eJ0a+nlU=";
const PSK: &str = "DWHgRrLBj+cYELL7S/CVE6kkQR7Hz05KWQte+SD2AhM=";
// RFC 7748 §6.1 Alice: just another valid public key.
const ALICE_PUBLIC: &str = "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=";

/// Resolves `vpn.example.com` only, without touching DNS.
struct FakeResolver;

impl Resolve for FakeResolver {
    fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        match host {
            "vpn.example.com" => Ok(vec![
                SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)), port),
                SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port),
            ]),
            "empty.example.com" => Ok(Vec::new()),
            _ => Err(io::Error::new(
                io::ErrorKind::NotFound,
                "Name or service not known",
            )),
        }
    }
}

fn parse(text: &str) -> Result<Config, ConfigErrors> {
    Config::parse_with(text, "veil0.conf", &FakeResolver)
}

fn errors(text: &str) -> Vec<ConfigError> {
    match parse(text) {
        Ok(c) => panic!("expected errors, parsed {c:?}"),
        Err(ConfigErrors(errors)) => errors,
    }
}

fn messages(text: &str) -> Vec<String> {
    errors(text).iter().map(ToString::to_string).collect()
}

fn key(text: &str) -> [u8; 32] {
    *keys::parse_key(text).expect("test key").as_bytes()
}

fn net(text: &str) -> IpNet {
    text.parse().expect("test network")
}

fn minimal_interface() -> String {
    format!("[Interface]\nPrivateKey = {OUR_PRIVATE}\n")
}

#[test]
fn full_valid_file() {
    let text = format!(
        "# veil0: test gateway\n\
         \n\
         [Interface]\n\
         privatekey={OUR_PRIVATE}   # trailing comment\n\
         ListenPort = 51820\n\
         Address = 10.0.0.1/24, fd00::1/64\n\
         ADDRESS = 10.1.0.1\n\
         MTU = 1400\n\
         \n\
         [Peer]\n\
         \tPublicKey\t=\t{PEER_A}\n\
         PresharedKey = {PSK}\n\
         AllowedIPs = 10.0.0.2/32, fd00::2/128\n\
         AllowedIPs = 192.168.50.0/24\n\
         Endpoint = [fd41::2]:51820\n\
         PersistentKeepalive = 25\n\
         \n\
         [peer]\n\
         PublicKey = {PEER_B}\n\
         AllowedIPs = 0.0.0.0/0, ::/0\n\
         Endpoint = vpn.example.com:4500\n\
         PersistentKeepalive = off\n"
    );
    let config = parse(&text).expect("valid");
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);

    let i = &config.interface;
    assert_eq!(i.private_key.as_bytes(), &key(OUR_PRIVATE));
    assert_eq!(i.listen_port, Some(51820));
    assert_eq!(
        i.addresses,
        vec![net("10.0.0.1/24"), net("fd00::1/64"), net("10.1.0.1/32")]
    );
    assert_eq!(i.mtu, 1400);

    assert_eq!(config.peers.len(), 2);
    let a = &config.peers[0];
    assert_eq!(a.public_key, key(PEER_A));
    assert_eq!(
        a.preshared_key.as_ref().map(|k| *k.as_bytes()),
        Some(key(PSK))
    );
    assert_eq!(
        a.allowed_ips,
        vec![
            net("10.0.0.2/32"),
            net("fd00::2/128"),
            net("192.168.50.0/24")
        ]
    );
    assert_eq!(a.endpoint, Some("[fd41::2]:51820".parse().expect("addr")));
    assert_eq!(a.persistent_keepalive, Some(25));
    assert_eq!(a.line, 10);

    let b = &config.peers[1];
    assert_eq!(b.public_key, key(PEER_B));
    assert!(b.preshared_key.is_none());
    assert_eq!(b.allowed_ips, vec![net("0.0.0.0/0"), net("::/0")]);
    // The resolver's first answer.
    assert_eq!(b.endpoint, Some("192.0.2.7:4500".parse().expect("addr")));
    assert_eq!(b.persistent_keepalive, None);
    assert_eq!(b.line, 18);
}

#[test]
fn defaults() {
    let config = parse(&minimal_interface()).expect("valid");
    assert_eq!(config.interface.listen_port, None);
    assert_eq!(config.interface.mtu, DEFAULT_MTU);
    assert!(config.interface.addresses.is_empty());
    assert!(config.peers.is_empty());
}

#[test]
fn crlf_line_endings_and_byte_order_mark() {
    let text = format!("\u{feff}[Interface]\r\nPrivateKey = {OUR_PRIVATE}\r\nMTU = 1280\r\n");
    assert_eq!(parse(&text).expect("valid").interface.mtu, 1280);
}

#[test]
fn missing_private_key_points_at_the_section() {
    let msgs = messages("# comment\n[Interface]\nListenPort = 1\n");
    assert_eq!(
        msgs,
        vec![
            "veil0.conf:2: [Interface] has no PrivateKey; add 'PrivateKey = ...' \
             (44 characters of base64, as printed by `wg genkey`)"
        ]
    );
}

#[test]
fn missing_interface_section() {
    let msgs = messages(&format!(
        "[Peer]\nPublicKey = {PEER_A}\nAllowedIPs = 10.0.0.0/8\n"
    ));
    assert_eq!(
        msgs,
        vec!["veil0.conf: no [Interface] section; add one with at least 'PrivateKey = ...'"]
    );
}

#[test]
fn bad_base64_private_key_is_reported_redacted() {
    let secret = OUR_PRIVATE.replace('+', "*");
    let msgs = messages(&format!("[Interface]\n\nPrivateKey = {secret}\n"));
    assert_eq!(
        msgs,
        vec![
            "veil0.conf:3: PrivateKey: '<redacted>' is not a valid key: character 28 is not \
             base64 (allowed: A-Z a-z 0-9 + / and a final =) (expected 44 characters of \
             base64, as printed by `wg genkey`)"
        ]
    );
    let short = &OUR_PRIVATE[..20];
    let msgs = messages(&format!("[Interface]\nPrivateKey = {short}\n"));
    assert_eq!(msgs.len(), 1);
    assert!(msgs[0].contains("key is 20 characters long, a key has 44"));
    assert!(!msgs[0].contains(short));
}

#[test]
fn bad_preshared_key_is_redacted() {
    let secret = &PSK[..30];
    let text = format!(
        "{}[Peer]\nPublicKey = {PEER_A}\nPresharedKey = {secret}\n",
        minimal_interface()
    );
    let msgs = messages(&text);
    assert_eq!(msgs.len(), 1);
    assert!(msgs[0].starts_with("veil0.conf:5: PresharedKey: '<redacted>' is not a valid key"));
    assert!(!msgs[0].contains(secret));
    assert!(!format!("{:?}", errors(&text)).contains(secret));
}

#[test]
fn allowed_ips_prefix_too_long_has_the_documented_message() {
    let text = format!(
        "{}ListenPort = 51820\n\n[Peer]\nPublicKey = {PEER_A}\nAllowedIPs = 10.0.0.0/33\n",
        minimal_interface()
    );
    assert_eq!(
        messages(&text),
        vec![
            "veil0.conf:7: AllowedIPs: '10.0.0.0/33' is not a valid network: IPv4 prefix \
             must be 0..=32 (expected ADDRESS/PREFIX, e.g. 10.0.0.0/24)"
        ]
    );
}

#[test]
fn every_bad_item_of_a_list_is_reported() {
    let text = format!(
        "{}[Peer]\nPublicKey = {PEER_A}\nAllowedIPs = fd00::/129, 10.0.0.0/8, nonsense, 10.1.0.0/x,\n",
        minimal_interface()
    );
    let msgs = messages(&text);
    assert_eq!(msgs.len(), 4, "{msgs:#?}");
    assert!(msgs[0].contains("'fd00::/129' is not a valid network: IPv6 prefix must be 0..=128"));
    assert!(msgs[1].contains("'nonsense' is not a valid network: not an IPv4 or IPv6 address"));
    assert!(msgs[2]
        .contains("'10.1.0.0/x' is not a valid network: the prefix after '/' must be a number"));
    assert!(msgs[3].contains("'' is not a valid network: it is empty"));
    assert!(msgs
        .iter()
        .all(|m| m.starts_with("veil0.conf:5: AllowedIPs: ")));
}

#[test]
fn unknown_key_with_hints() {
    let text = format!(
        "{}Adress = 10.0.0.1/24\nFrobnicate = 1\nEndpoint = 1.2.3.4:5\n",
        minimal_interface()
    );
    assert_eq!(
        messages(&text),
        vec![
            "veil0.conf:3: Adress: unknown key in [Interface]; did you mean Address?",
            "veil0.conf:4: Frobnicate: unknown key in [Interface] \
             (known keys: PrivateKey, ListenPort, Address, MTU, PreUp, PostUp, PreDown, PostDown, \
             Table, FwMark, DNS, SaveConfig)",
            "veil0.conf:5: Endpoint: unknown key in [Interface]; it belongs in a [Peer] section",
        ]
    );
    let text = format!(
        "{}[Peer]\nPublicKey = {PEER_A}\nallowed_ips = 10.0.0.0/8\n",
        minimal_interface()
    );
    assert_eq!(
        messages(&text),
        vec!["veil0.conf:5: allowed_ips: unknown key in [Peer]; did you mean AllowedIPs?"]
    );
}

#[test]
fn unknown_section_and_its_keys_are_reported_once() {
    let text = format!(
        "{}[Frobnicate]\nidle_timeout = 5\nother = 1\n",
        minimal_interface()
    );
    assert_eq!(
        messages(&text),
        vec![
            "veil0.conf:3: unknown section [Frobnicate]; veil knows [Interface], [Peer], \
             [sessions], [migration], [rate_limiting], [degradation], [priority], \
             [logging], [metrics], [threading] (the keys below it are skipped)"
        ]
    );
}

#[test]
fn key_outside_a_section() {
    let text = format!("ListenPort = 1\n{}", minimal_interface());
    assert_eq!(
        messages(&text),
        vec!["veil0.conf:1: ListenPort: key before any section; put it under [Interface]"]
    );
}

#[test]
fn malformed_lines_are_not_echoed() {
    // A private key pasted on a line of its own: the part before '=' looks like a key name.
    let text = format!(
        "{}{PEER_A}\nno equals sign here\n[Peer\n",
        minimal_interface()
    );
    let msgs = messages(&text);
    assert_eq!(msgs.len(), 3, "{msgs:#?}");
    assert!(msgs[0].starts_with("veil0.conf:3: unknown key in [Interface] (not shown"));
    assert!(msgs[1].starts_with("veil0.conf:4: expected 'Key = Value'"));
    assert!(msgs[2].starts_with("veil0.conf:5: a section header must be '[Name]'"));
    let all = msgs.join("\n");
    assert!(!all.contains(&PEER_A[..20]));
    assert!(!all.contains("equals"));
}

#[test]
fn all_errors_are_collected_in_line_order() {
    let text = format!(
        "[Interface]\n\
         ListenPort = 70000\n\
         MTU = 100\n\
         Bogus = 1\n\
         [Peer]\n\
         AllowedIPs = 10.0.0.0/33\n\
         [Peer]\n\
         PublicKey = {PEER_B}\n\
         Endpoint = 1.2.3.4\n\
         PersistentKeepalive = soon\n"
    );
    let errs = errors(&text);
    let lines: Vec<Option<usize>> = errs.iter().map(|e| e.line).collect();
    assert_eq!(
        lines,
        vec![
            Some(1),
            Some(2),
            Some(3),
            Some(4),
            Some(5),
            Some(6),
            Some(9),
            Some(10)
        ],
        "{errs:#?}"
    );
    let msgs: Vec<String> = errs.iter().map(ToString::to_string).collect();
    assert!(msgs[0].contains("[Interface] has no PrivateKey"));
    assert!(msgs[1].contains("ListenPort: '70000' is not a valid port: must be 0..=65535"));
    assert!(msgs[2].contains("MTU: '100' is not a valid MTU: must be 576..=9000"));
    assert!(msgs[4].contains("[Peer] has no PublicKey"));
    assert!(msgs[6].contains("Endpoint: '1.2.3.4' is not a valid endpoint: no ':PORT' at the end"));
    assert!(msgs[7].contains(
        "PersistentKeepalive: 'soon' is not a valid keepalive interval: not a whole number"
    ));
    // One per line when printed together.
    assert_eq!(ConfigErrors(errs).to_string().lines().count(), 8);
}

#[test]
fn wg_quick_keys_are_acted_on() {
    // Issue 17: DNS, SaveConfig, Table and FwMark were warnings ("ignored"); now they are
    // configuration, and nothing of a wg-quick file is ignored.
    let text = format!(
        "{}DNS = 1.1.1.1, fd00::53, corp.example\npostup = iptables -A FORWARD -i %i -j ACCEPT\n\
         SaveConfig = true\nTable = off\nFwMark = 0x1\n",
        minimal_interface()
    );
    let config = parse(&text).expect("valid");
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    let i = &config.interface;
    assert_eq!(
        i.dns.servers,
        vec![
            "1.1.1.1".parse::<std::net::IpAddr>().expect("ip"),
            "fd00::53".parse().expect("ip")
        ]
    );
    assert_eq!(i.dns.search, vec!["corp.example".to_string()]);
    assert!(i.save_config);
    assert_eq!(i.table, crate::config::Table::Off);
    assert_eq!(i.fwmark, 1);
    assert_eq!(
        i.hooks.post_up,
        vec!["iptables -A FORWARD -i %i -j ACCEPT".to_string()]
    );
}

#[test]
fn table_and_fwmark_values() {
    use crate::config::Table;
    let cases = [
        ("Table = auto\nFwMark = off\n", Table::Auto, 0),
        ("Table = 1234\nFwMark = 51820\n", Table::Id(1234), 51820),
        ("Table = main\nFwMark = 0xCA6C\n", Table::Id(254), 0xca6c),
        ("", Table::Auto, 0),
    ];
    for (extra, table, mark) in cases {
        let config = parse(&format!("{}{extra}", minimal_interface())).expect(extra);
        assert_eq!(config.interface.table, table, "{extra}");
        assert_eq!(config.interface.fwmark, mark, "{extra}");
        assert!(!config.interface.save_config);
        assert!(config.interface.dns.is_empty());
    }
    for bad in [
        "Table = sometimes\n",
        "Table = 0\n",
        "FwMark = 0x\n",
        "FwMark = 0x1ffffffff\n",
        "DNS = not/a/domain\n",
    ] {
        assert!(
            parse(&format!("{}{bad}", minimal_interface())).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn hooks_keep_file_order_and_whole_lines() {
    let text = format!(
        "{}PostUp = nft add table ip nat; echo a, b = c\nPreUp = echo pre\n\
         POSTUP = echo second\nPreDown = echo down\nPostDown = echo gone %i\n",
        minimal_interface()
    );
    let config = parse(&text).expect("valid");
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    assert_eq!(
        config.interface.hooks,
        Hooks {
            pre_up: vec!["echo pre".into()],
            post_up: vec![
                "nft add table ip nat; echo a, b = c".into(),
                "echo second".into()
            ],
            pre_down: vec!["echo down".into()],
            post_down: vec!["echo gone %i".into()],
        }
    );
}

#[test]
fn allowed_ips_host_bits_are_masked_with_a_warning() {
    let text = format!(
        "{}[Peer]\nPublicKey = {PEER_A}\nAllowedIPs = 10.0.0.5/24, fd00::1:2/112, 10.0.0.0/24\n",
        minimal_interface()
    );
    let config = parse(&text).expect("valid");
    assert_eq!(
        config.peers[0].allowed_ips,
        vec![net("10.0.0.0/24"), net("fd00::1:0/112")]
    );
    let msgs: Vec<String> = config.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        msgs,
        vec![
            "veil0.conf:5: AllowedIPs: '10.0.0.5/24' has host bits set; using 10.0.0.0/24",
            "veil0.conf:5: AllowedIPs: 'fd00::1:2/112' has host bits set; using fd00::1:0/112",
        ]
    );
}

#[test]
fn peer_warnings_no_allowed_ips_and_overlap() {
    let text = format!(
        "{}[Peer]\nPublicKey = {PEER_A}\nAllowedIPs = 10.0.0.0/24\n\
         [Peer]\nPublicKey = {PEER_B}\nAllowedIPs = 10.0.0.0/24\n\
         [Peer]\nPublicKey = {ALICE_PUBLIC}\n",
        minimal_interface()
    );
    let config = parse(&text).expect("valid");
    let msgs: Vec<String> = config.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        msgs,
        vec![
            "veil0.conf:6: AllowedIPs: 10.0.0.0/24 is also listed for the peer on line 3; \
             this later peer gets it, as with wg",
            "veil0.conf:9: [Peer] has no AllowedIPs, so no traffic will go to it \
             (add 'AllowedIPs = ...')",
        ]
    );
}

#[test]
fn peer_with_our_own_public_key() {
    let text = format!(
        "{}[Peer]\nPublicKey = {OUR_PUBLIC}\nAllowedIPs = 10.0.0.0/24\n",
        minimal_interface()
    );
    assert_eq!(
        messages(&text),
        vec![
            "veil0.conf:4: PublicKey: this is our own public key (from PrivateKey); a peer's \
             PublicKey is the other side's `wg pubkey` output"
        ]
    );
}

#[test]
fn duplicate_peer_keys_and_settings() {
    let text = format!(
        "{}PrivateKey = {OUR_PRIVATE}\n[Peer]\nPublicKey = {PEER_A}\nAllowedIPs = 10.0.0.1\n\
         [Peer]\nPublicKey = {PEER_A}\nAllowedIPs = 10.0.0.2\n[Interface]\n",
        minimal_interface()
    );
    assert_eq!(
        messages(&text),
        vec![
            "veil0.conf:3: PrivateKey: set again, first set on line 2; keep one of them",
            format!(
                "veil0.conf:8: PublicKey: '{PEER_A}' is also the key of the peer on line 4; \
                 each peer needs its own key, so merge the two [Peer] sections"
            )
            .as_str(),
            "veil0.conf:10: second [Interface] section, the first is on line 1; merge them \
             (this one is skipped)",
        ]
    );
}

#[test]
fn endpoints() {
    let ep = |value: &str| -> Result<SocketAddr, String> {
        let text = format!(
            "{}[Peer]\nPublicKey = {PEER_A}\nAllowedIPs = 10.0.0.0/8\nEndpoint = {value}\n",
            minimal_interface()
        );
        match parse(&text) {
            Ok(c) => c.peers[0].endpoint.ok_or_else(|| "no endpoint".to_string()),
            Err(e) => Err(e.to_string()),
        }
    };
    assert_eq!(ep("1.2.3.4:51820"), Ok("1.2.3.4:51820".parse().expect("a")));
    assert_eq!(
        ep("[fd00::1]:51820"),
        Ok("[fd00::1]:51820".parse().expect("a"))
    );
    assert_eq!(
        ep("[::ffff:1.2.3.4]:1"),
        Ok("[::ffff:1.2.3.4]:1".parse().expect("a"))
    );
    assert_eq!(
        ep("vpn.example.com:1"),
        Ok("192.0.2.7:1".parse().expect("a"))
    );
    let err = |value: &str| ep(value).expect_err(value);
    assert_eq!(
        err("fd00::1:51820"),
        "veil0.conf:6: Endpoint: 'fd00::1:51820' is not a valid endpoint: an IPv6 address \
         needs brackets around it (expected HOST:PORT, e.g. 192.0.2.1:51820, \
         [fd00::1]:51820 or vpn.example.com:51820)"
    );
    assert!(err("[fd00::1]").contains("no ':PORT' at the end"));
    assert!(err("[fd00::1]51820").contains("brackets must hold an IPv6 address"));
    assert!(err("[10.0.0.1]:5").contains("brackets must hold an IPv6 address"));
    assert!(err("1.2.3.4:0").contains("port must be 1..=65535"));
    assert!(err("1.2.3.4:65536").contains("port must be 1..=65535"));
    assert!(err("1.2.3.4:").contains("no ':PORT' at the end"));
    assert!(err(":51820").contains("not an IP address or host name"));
    assert!(err("bad host:1").contains("not an IP address or host name"));
    assert!(err("nowhere.invalid:1").contains(
        "'nowhere.invalid:1' is not a valid endpoint: cannot resolve the host name: \
         Name or service not known"
    ));
    assert!(err("empty.example.com:1").contains("the host name has no addresses"));
}

#[test]
fn system_resolver_resolves_localhost() {
    let text = format!(
        "{}[Peer]\nPublicKey = {PEER_A}\nAllowedIPs = 10.0.0.0/8\nEndpoint = localhost:51820\n",
        minimal_interface()
    );
    let config = Config::parse(&text, "veil0.conf").expect("localhost resolves");
    let endpoint = config.peers[0].endpoint.expect("endpoint");
    assert!(endpoint.ip().is_loopback());
    assert_eq!(endpoint.port(), 51820);
}

#[test]
fn mtu_bounds() {
    let mtu = |mtu: &str, address: &str| {
        let text = format!("{}MTU = {mtu}\nAddress = {address}\n", minimal_interface());
        parse(&text)
            .map(|c| c.interface.mtu)
            .map_err(|e| e.to_string())
    };
    assert_eq!(mtu("576", "10.0.0.1/24"), Ok(576));
    assert_eq!(mtu("9000", "10.0.0.1/24, fd00::1/64"), Ok(9000));
    assert_eq!(mtu("1279", "10.0.0.1/24"), Ok(1279));
    assert_eq!(mtu("1280", "fd00::1/64"), Ok(1280));
    assert!(mtu("575", "10.0.0.1/24")
        .expect_err("low")
        .contains("must be 576..=9000"));
    assert!(mtu("9001", "10.0.0.1/24")
        .expect_err("high")
        .contains("must be 576..=9000"));
    assert!(mtu("99999999999", "10.0.0.1/24")
        .expect_err("huge")
        .contains("must be 576..=9000"));
    assert!(mtu("-1", "10.0.0.1/24")
        .expect_err("negative")
        .contains("not a whole number"));
    assert_eq!(
        mtu("1279", "10.0.0.1/24, fd00::1/64"),
        Err(
            "veil0.conf:3: MTU: '1279' is not a valid MTU: IPv6 needs at least 1280, and \
             Address has an IPv6 address (expected 1280..=9000 when Address includes an \
             IPv6 address)"
                .to_string()
        )
    );
}

#[test]
fn listen_port_and_keepalive_values() {
    let config = parse(&format!("{}ListenPort = 0\n", minimal_interface())).expect("valid");
    assert_eq!(config.interface.listen_port, None);
    let keepalive = |value: &str| {
        let text = format!(
            "{}[Peer]\nPublicKey = {PEER_A}\nAllowedIPs = ::/0\nPersistentKeepalive = {value}\n",
            minimal_interface()
        );
        parse(&text)
            .map(|c| c.peers[0].persistent_keepalive)
            .map_err(|e| e.to_string())
    };
    assert_eq!(keepalive("25"), Ok(Some(25)));
    assert_eq!(keepalive("65535"), Ok(Some(65535)));
    assert_eq!(keepalive("0"), Ok(None));
    assert_eq!(keepalive("OFF"), Ok(None));
    assert!(keepalive("65536")
        .expect_err("big")
        .contains("must be 0..=65535"));
    assert!(keepalive("+5")
        .expect_err("sign")
        .contains("not a whole number"));
}

#[test]
fn empty_value_is_an_error() {
    let msgs = messages(&format!("{}ListenPort =\n", minimal_interface()));
    assert_eq!(
        msgs,
        vec![
            "veil0.conf:3: ListenPort: '' is not a valid port: it is empty \
              (expected 0..=65535; 0 or no ListenPort picks a free port)"
        ]
    );
}

#[test]
fn debug_output_hides_secrets() {
    let text = format!(
        "{}[Peer]\nPublicKey = {PEER_A}\nPresharedKey = {PSK}\nAllowedIPs = ::/0\n",
        minimal_interface()
    );
    let config = parse(&text).expect("valid");
    let debug = format!("{config:?}");
    assert!(debug.contains("private_key: <redacted>"));
    assert!(debug.contains("preshared_key: Some(<redacted>)"));
    let private = key(OUR_PRIVATE);
    assert!(!debug.contains(&format!("{private:?}")[1..40]));
}

#[test]
fn ipnet_parse_display_contains() {
    assert_eq!(
        net("10.0.0.1"),
        IpNet {
            addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            prefix: 32
        }
    );
    assert_eq!(net("fd00::1").prefix, 128);
    assert_eq!(net("10.0.0.5/24").to_string(), "10.0.0.5/24");
    assert_eq!(net("10.0.0.5/24").network().to_string(), "10.0.0.0/24");
    assert_eq!(net("fd00:0:0:0::1/64").to_string(), "fd00::1/64");
    assert_eq!(net("fd00::1/64").network().to_string(), "fd00::/64");
    assert_eq!(net("1.2.3.4/0").network().to_string(), "0.0.0.0/0");

    let n = net("10.0.0.0/24");
    assert!(n.contains("10.0.0.0".parse().expect("ip")));
    assert!(n.contains("10.0.0.255".parse().expect("ip")));
    assert!(!n.contains("10.0.1.0".parse().expect("ip")));
    assert!(!n.contains("::ffff:10.0.0.1".parse().expect("ip")));
    assert!(net("0.0.0.0/0").contains("255.255.255.255".parse().expect("ip")));
    assert!(!net("0.0.0.0/0").contains("::1".parse().expect("ip")));
    assert!(net("::/0").contains("fd00::1".parse().expect("ip")));
    assert!(net("fd00::/8").contains("fdff::1".parse().expect("ip")));
    assert!(!net("fd00::/8").contains("fe00::1".parse().expect("ip")));
    assert!(net("10.0.0.7/32").contains("10.0.0.7".parse().expect("ip")));
    assert!(!net("10.0.0.7/32").contains("10.0.0.6".parse().expect("ip")));

    assert_eq!(
        "10.0.0.0/33".parse::<IpNet>(),
        Err(IpNetError::PrefixTooLong { ipv6: false })
    );
    assert_eq!(
        "::/129".parse::<IpNet>(),
        Err(IpNetError::PrefixTooLong { ipv6: true })
    );
    assert_eq!(
        "10.0.0.0/999999999999".parse::<IpNet>(),
        Err(IpNetError::PrefixTooLong { ipv6: false })
    );
    assert_eq!("10.0.0.0/".parse::<IpNet>(), Err(IpNetError::BadPrefix));
    assert_eq!("10.0.0.0/+8".parse::<IpNet>(), Err(IpNetError::BadPrefix));
    assert_eq!("10.0.0/8".parse::<IpNet>(), Err(IpNetError::BadAddress));
    assert_eq!("".parse::<IpNet>(), Err(IpNetError::BadAddress));

    // Public fields allow nonsense prefixes; nothing may panic on them.
    let odd = IpNet {
        addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        prefix: 200,
    };
    assert!(odd.contains("10.0.0.1".parse().expect("ip")));
    let _ = odd.network();
}

#[test]
fn interface_names() {
    let name = |p: &str| interface_name_from_path(Path::new(p));
    assert_eq!(name("veil0.conf"), Ok("veil0".to_string()));
    assert_eq!(
        name("/etc/veil/wg-office.conf"),
        Ok("wg-office".to_string())
    );
    assert_eq!(name("a.b.conf"), Ok("a.b".to_string()));
    assert_eq!(name("veil0"), Ok("veil0".to_string()));
    assert_eq!(
        name("fifteen-chars-x.conf"),
        Ok("fifteen-chars-x".to_string())
    );
    let problem = |p: &str| name(p).expect_err(p).problem;
    assert_eq!(
        problem("sixteen-chars-xx.conf"),
        InterfaceNameProblem::TooLong { len: 16 }
    );
    assert_eq!(
        problem("veil 0.conf"),
        InterfaceNameProblem::ForbiddenChar(' ')
    );
    assert_eq!(
        problem("veil:0.conf"),
        InterfaceNameProblem::ForbiddenChar(':')
    );
    assert_eq!(problem("..conf"), InterfaceNameProblem::DotName);
    assert_eq!(problem("/"), InterfaceNameProblem::NoFileName);
    assert_eq!(problem("/etc/.."), InterfaceNameProblem::NoFileName);
    assert_eq!(
        name("veil 0.conf").expect_err("space").to_string(),
        "veil 0.conf: cannot name the interface after this file: the name contains ' ', which \
         Linux forbids (rename the file to NAME.conf, NAME being 1..=15 characters without \
         '/', ':' or whitespace, e.g. veil0.conf)"
    );
}

/// A file in the temp directory, removed on drop.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(name: &str, contents: &[u8], mode: u32) -> Self {
        let dir = std::env::temp_dir().join(format!("veil-config-test-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(name);
        fs::write(&path, contents).expect("write temp file");
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
        Self(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

#[test]
fn load_reads_the_file_and_warns_when_world_readable() {
    let text = minimal_interface();
    let private = TempFile::new("private.conf", text.as_bytes(), 0o600);
    let config = Config::load(&private.0).expect("valid");
    assert!(config.warnings.is_empty());

    let open = TempFile::new("open.conf", text.as_bytes(), 0o644);
    let config = Config::load(&open.0).expect("valid");
    assert_eq!(config.warnings.len(), 1);
    let shown = config.warnings[0].to_string();
    assert_eq!(
        shown,
        format!(
            "{0}: mode 644 lets every user read the private key; run: chmod 600 {0}",
            open.0.display()
        )
    );
}

#[test]
fn load_reports_unreadable_and_non_utf8_files() {
    let missing = Path::new("/nonexistent/veil0.conf");
    let errs = Config::load(missing).expect_err("missing");
    assert_eq!(
        errs.to_string(),
        "/nonexistent/veil0.conf: cannot read the file: No such file or directory \
         (os error 2) (check the path and its permissions)"
    );
    let bad = TempFile::new(
        "latin1.conf",
        b"[Interface]\n# caf\xe9\nPrivateKey = x\n",
        0o600,
    );
    let errs = Config::load(&bad.0).expect_err("not utf-8");
    assert_eq!(errs.0.len(), 1);
    assert_eq!(errs.0[0].line, Some(2));
    assert!(matches!(errs.0[0].kind, ConfigErrorKind::NotUtf8));
}

// Lines an operator might plausibly write, good and bad, to drive the parser deep.
fn plausible_line() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "PrivateKey",
        "publickey",
        "PresharedKey",
        "ListenPort",
        "Address",
        "MTU",
        "AllowedIPs",
        "Endpoint",
        "PersistentKeepalive",
        "DNS",
        "PostUp",
        "Bogus",
        "",
    ]);
    let value = prop::sample::select(vec![
        OUR_PRIVATE.to_string(),
        OUR_PUBLIC.to_string(),
        PEER_A.to_string(),
        PSK.to_string(),
        "10.0.0.0/33".into(),
        "10.0.0.5/24, fd00::/64".into(),
        "[fd00::1]:51820".into(),
        "vpn.example.com:1".into(),
        "1420".into(),
        "off".into(),
        "0".into(),
        ",".into(),
        "".into(),
        "=".into(),
        "[".into(),
        "#".into(),
    ]);
    prop_oneof![
        (key, value).prop_map(|(k, v)| format!("{k} = {v}")),
        prop::sample::select(vec![
            "[Interface]",
            "[Peer]",
            "[peer]",
            "[Other]",
            "[",
            "]",
            ""
        ])
        .prop_map(String::from),
        ".{0,40}",
    ]
}

proptest! {
    #[test]
    fn parse_never_panics_on_arbitrary_text(text in "(?s).{0,400}") {
        let _ = Config::parse_with(&text, "fuzz.conf", &FakeResolver);
    }

    #[test]
    fn parse_never_panics_on_plausible_files(lines in prop::collection::vec(plausible_line(), 0..30)) {
        let _ = Config::parse_with(&lines.join("\n"), "fuzz.conf", &FakeResolver);
    }

    #[test]
    fn secrets_are_never_echoed(
        secret in "[A-Za-z0-9+/]{30,50}=?",
        key in prop::sample::select(vec!["PrivateKey", "PresharedKey", ""]),
        noise in prop::collection::vec(plausible_line(), 0..10),
    ) {
        let secret = format!("Zq{secret}");
        let mut lines = noise;
        lines.insert(0, "[Interface]".to_string());
        if key.is_empty() {
            // A bare secret on a line of its own.
            lines.push(secret.clone());
        } else {
            lines.push("[Peer]".to_string());
            lines.push(format!("{key} = {secret}"));
        }
        let shown = match Config::parse_with(&lines.join("\n"), "fuzz.conf", &FakeResolver) {
            Ok(config) => config.warnings.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"),
            Err(errors) => format!("{errors}\n{errors:?}"),
        };
        prop_assert!(!shown.contains(&secret), "{}", shown);
    }
}

#[test]
fn a_bare_interface_name_is_looked_up_in_order() {
    let root = std::env::temp_dir().join(format!("veil-find-config-{}", std::process::id()));
    let (first, second) = (root.join("veil"), root.join("wireguard"));
    fs::create_dir_all(&first).expect("mkdir");
    fs::create_dir_all(&second).expect("mkdir");
    fs::write(second.join("wg0.conf"), "").expect("write");
    let dirs = [first.as_path(), second.as_path()];
    assert_eq!(
        find_config(Path::new("wg0"), &dirs),
        Ok(second.join("wg0.conf"))
    );
    fs::write(first.join("wg0.conf"), "").expect("write");
    assert_eq!(
        find_config(Path::new("wg0"), &dirs),
        Ok(first.join("wg0.conf")),
        "the first directory wins"
    );
    // Paths stay paths, found or not.
    for path in ["wg0.conf", "./wg0", "/nowhere/wg1.conf"] {
        assert_eq!(find_config(Path::new(path), &dirs), Ok(path.into()));
    }
    let missing = find_config(Path::new("wg9"), &dirs).expect_err("nothing there");
    assert_eq!(
        missing.tried,
        vec![first.join("wg9.conf"), second.join("wg9.conf")]
    );
    let _ = fs::remove_dir_all(&root);
}
