//! `[Peer]`: one per peer, any number of them.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::endpoint::parse_endpoint;
use super::error::{ConfigErrorKind, ConfigWarning, WarningKind};
use super::output::{Parts, PeerConfig};
use super::section::Sink;
use super::section::{set, KeySpec, Section, SectionState};
use super::value::{parse_bool, parse_number, parse_u16};
use crate::keys::{self, Key32, KEY_LEN};
use veil_dataplane::route::IpNet;

#[derive(Default)]
pub(super) struct PeerDraft {
    public_key: Option<[u8; KEY_LEN]>,
    preshared_key: Option<Key32>,
    allowed_ips: Vec<IpNet>,
    endpoint: Option<SocketAddr>,
    persistent_keepalive: Option<u16>,
    bandwidth_mbps: Option<u32>,
    pps: Option<u32>,
    validate_migration: Option<bool>,
}

impl Section for PeerDraft {
    const NAME: &'static str = "Peer";
    const REPEATS: bool = true;
    #[rustfmt::skip]
    const KEYS: &'static [KeySpec<Self>] = &[
        KeySpec::<Self>::once("PublicKey", "key", "44 characters of base64, as printed by `wg pubkey`", |d, v, _| set(&mut d.public_key, keys::parse_key(v).map(|k| Some(*k.as_bytes())))).required(),
        KeySpec::<Self>::once("PresharedKey", "key", "44 characters of base64, as printed by `wg genpsk`", |d, v, _| set(&mut d.preshared_key, keys::parse_key(v).map(Some))).secret(),
        KeySpec::<Self>::once("AllowedIPs", "network", "ADDRESS/PREFIX, e.g. 10.0.0.0/24", |d, v, ctx| {
            let given: IpNet = v.parse()?;
            let network = given.network();
            if network != given {
                ctx.warn(WarningKind::HostBitsMasked { given, network });
            }
            if !d.allowed_ips.contains(&network) {
                d.allowed_ips.push(network);
            }
            Ok(())
        }).list(),
        KeySpec::once("Endpoint", "endpoint", "HOST:PORT, e.g. 192.0.2.1:51820, [fd00::1]:51820 or vpn.example.com:51820", |d, v, ctx| set(&mut d.endpoint, parse_endpoint(v, ctx.resolver).map(Some))),
        KeySpec::once("PersistentKeepalive", "keepalive interval", "seconds 0..=65535, or 'off'; 0 and off disable it", |d, v, _| {
            d.persistent_keepalive = if v.eq_ignore_ascii_case("off") {
                None
            } else {
                Some(parse_u16(v, 0, u16::MAX)?).filter(|&s| s != 0)
            };
            Ok(())
        }),
        KeySpec::once("per_client_bandwidth_mbps", "bandwidth", "Mb/s 0..=100000 for this peer (0: unlimited); overrides [rate_limiting]", |d, v, _| set(&mut d.bandwidth_mbps, parse_number(v, 0, 100_000).map(Some))),
        KeySpec::once("per_client_pps", "packet rate", "packets/s 0..=100000000 for this peer (0: unlimited); overrides [rate_limiting]", |d, v, _| set(&mut d.pps, parse_number(v, 0, 100_000_000).map(Some))),
        KeySpec::once("validate_migration", "boolean", "true (validate this peer's address changes) or false (it roams at once, as in WireGuard); default: [migration] validate_all_peers, and true for veil peers", |d, v, _| set(&mut d.validate_migration, parse_bool(v).map(Some))),
    ];

    fn finish(states: Vec<SectionState<Self>>, sink: &mut Sink<'_>, out: &mut Parts) {
        let own_public = out
            .interface
            .as_ref()
            .map(|i| keys::public_from_private(i.private_key.as_bytes()));
        let mut by_key: HashMap<[u8; KEY_LEN], usize> = HashMap::new();
        let mut by_network: HashMap<IpNet, usize> = HashMap::new();
        for state in states {
            if let Some(peer) = finish_peer(sink, state, own_public, &mut by_key, &mut by_network) {
                out.peers.push(peer);
            }
        }
    }
}

fn finish_peer(
    sink: &mut Sink<'_>,
    mut state: SectionState<PeerDraft>,
    own_public: Option<[u8; KEY_LEN]>,
    by_key: &mut HashMap<[u8; KEY_LEN], usize>,
    by_network: &mut HashMap<IpNet, usize>,
) -> Option<PeerConfig> {
    let complete = sink.check_required(&state);
    let header_line = state.header_line;
    let key_line = state.line_of("PublicKey");
    let allowed_ips_written = state.line_of("AllowedIPs").is_some();
    let draft = &mut state.draft;
    for &network in &draft.allowed_ips {
        if let Some(other_line) = by_network.insert(network, header_line) {
            sink.warnings.push(ConfigWarning {
                file: sink.file.to_string(),
                line: Some(header_line),
                kind: WarningKind::AllowedIpsOverlap {
                    network,
                    other_line,
                },
            });
        }
    }
    // Only when AllowedIPs is absent: invalid entries were already reported as errors.
    if complete && !allowed_ips_written {
        sink.warnings.push(ConfigWarning {
            file: sink.file.to_string(),
            line: Some(header_line),
            kind: WarningKind::NoAllowedIps,
        });
    }
    let public_key = draft.public_key?;
    if own_public == Some(public_key) {
        sink.error(key_line, ConfigErrorKind::PeerIsSelf);
    } else if let Some(&first_line) = by_key.get(&public_key) {
        sink.error(
            key_line,
            ConfigErrorKind::DuplicatePeer {
                public_key: keys::encode_key(&public_key),
                first_line,
            },
        );
    } else {
        by_key.insert(public_key, header_line);
    }
    complete.then(|| PeerConfig {
        public_key,
        preshared_key: draft.preshared_key.take(),
        allowed_ips: std::mem::take(&mut draft.allowed_ips),
        endpoint: draft.endpoint,
        persistent_keepalive: draft.persistent_keepalive,
        bandwidth_mbps: draft.bandwidth_mbps,
        pps: draft.pps,
        validate_migration: draft.validate_migration,
        line: header_line,
    })
}
