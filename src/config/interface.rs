//! `[Interface]`: our private key, listen port, addresses and MTU.

use super::error::{ConfigErrorKind, Echo, ValueProblem};
use super::parser::{Parts, Sink};
use super::section::{only, set, KeySpec, Section, SectionState};
use super::value::parse_u16;
use crate::keys::{self, Key32};
use veil_dataplane::route::IpNet;

/// Tunnel MTU when the file sets none.
pub const DEFAULT_MTU: u16 = 1420;
/// Smallest MTU accepted: every IPv4 host must accept 576-byte datagrams (RFC 791).
pub const MIN_MTU: u16 = 576;
/// Smallest MTU accepted when the interface has an IPv6 address (RFC 8200 minimum link MTU).
pub const MIN_MTU_IPV6: u16 = 1280;
/// Largest MTU accepted: a jumbo frame.
pub const MAX_MTU: u16 = 9000;

/// The `[Interface]` section.
#[derive(Debug, Clone)]
pub struct InterfaceConfig {
    /// Our static private key.
    pub private_key: Key32,
    /// UDP port to listen on; `None` lets the kernel pick one.
    pub listen_port: Option<u16>,
    /// Addresses for the tunnel interface, with host bits as written (e.g. 10.0.0.1/24).
    pub addresses: Vec<IpNet>,
    /// Tunnel MTU.
    pub mtu: u16,
}

#[derive(Default)]
pub(super) struct InterfaceDraft {
    private_key: Option<Key32>,
    listen_port: Option<u16>,
    addresses: Vec<IpNet>,
    mtu: Option<u16>,
}

impl Section for InterfaceDraft {
    const NAME: &'static str = "Interface";
    #[rustfmt::skip]
    const KEYS: &'static [KeySpec<Self>] = &[
        KeySpec::<Self>::once("PrivateKey", "key", "44 characters of base64, as printed by `wg genkey`", |d, v, _| set(&mut d.private_key, keys::parse_key(v).map(Some))).required().secret(),
        KeySpec::once("ListenPort", "port", "0..=65535; 0 or no ListenPort picks a free port", |d, v, _| {
            let port = parse_u16(v, 0, u16::MAX)?;
            d.listen_port = (port != 0).then_some(port);
            Ok(())
        }),
        KeySpec::<Self>::once("Address", "address", "ADDRESS or ADDRESS/PREFIX, e.g. 10.0.0.1/24 or fd00::1/64", |d, v, _| {
            let net: IpNet = v.parse()?;
            if !d.addresses.contains(&net) {
                d.addresses.push(net);
            }
            Ok(())
        }).list(),
        KeySpec::once("MTU", "MTU", "576..=9000, at least 1280 with an IPv6 Address; default 1420", |d, v, _| set(&mut d.mtu, parse_u16(v, MIN_MTU, MAX_MTU).map(Some))),
    ];
    const IGNORED: &'static [&'static str] = &[
        "DNS",
        "Table",
        "PreUp",
        "PostUp",
        "PreDown",
        "PostDown",
        "SaveConfig",
        "FwMark",
    ];

    fn finish(states: Vec<SectionState<Self>>, sink: &mut Sink<'_>, out: &mut Parts) {
        out.interface = finish_interface(only(states), sink);
    }
}

fn finish_interface(
    state: Option<SectionState<InterfaceDraft>>,
    sink: &mut Sink<'_>,
) -> Option<InterfaceConfig> {
    let Some(mut state) = state else {
        sink.error(
            None,
            ConfigErrorKind::MissingSection {
                section: InterfaceDraft::NAME,
                example_key: "PrivateKey",
            },
        );
        return None;
    };
    let complete = sink.check_required(&state);
    let draft = &mut state.draft;
    let has_v6 = draft.addresses.iter().any(|a| a.addr.is_ipv6());
    let mtu = draft.mtu.unwrap_or(DEFAULT_MTU);
    if has_v6 && mtu < MIN_MTU_IPV6 {
        sink.error(
            state.line_of("MTU"),
            ConfigErrorKind::InvalidValue {
                key: "MTU",
                value: Echo::Text(mtu.to_string()),
                what: "MTU",
                problem: ValueProblem::MtuTooSmallForIpv6,
                expected: "1280..=9000 when Address includes an IPv6 address",
            },
        );
        return None;
    }
    let private_key = draft.private_key.take()?;
    complete.then(|| InterfaceConfig {
        private_key,
        listen_port: draft.listen_port,
        addresses: std::mem::take(&mut draft.addresses),
        mtu,
    })
}
