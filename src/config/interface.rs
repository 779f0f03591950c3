//! `[Interface]`: our private key, listen port, addresses, MTU, and wg-quick's hooks, `Table`,
//! `FwMark`, `DNS` and `SaveConfig`.

use super::error::{ConfigErrorKind, Echo, ValueProblem};
use super::output::{Dns, Hooks, InterfaceConfig, Parts, Table};
use super::section::Sink;
use super::section::{only, set, KeySpec, Section, SectionState};
use super::value::{parse_bool, parse_u16};
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

#[derive(Default)]
pub(super) struct InterfaceDraft {
    private_key: Option<Key32>,
    listen_port: Option<u16>,
    addresses: Vec<IpNet>,
    mtu: Option<u16>,
    hooks: Hooks,
    table: Option<Table>,
    fwmark: Option<u32>,
    dns: Dns,
    save_config: Option<bool>,
}

/// wg-quick's `Table`: `auto`, `off` or a table number (1..=2^32-1, not 253..=255's
/// `default`/`main`/`local` by name).
fn parse_table(v: &str) -> Result<Table, ValueProblem> {
    match v.to_ascii_lowercase().as_str() {
        "auto" => Ok(Table::Auto),
        "off" => Ok(Table::Off),
        "main" => Ok(Table::Id(254)),
        _ => super::value::parse_number(v, 1, u32::MAX).map(Table::Id),
    }
}

/// `FwMark` as `wg` reads it: `off`, or a number in decimal or `0x` hex.
fn parse_fwmark(v: &str) -> Result<u32, ValueProblem> {
    if v.eq_ignore_ascii_case("off") {
        return Ok(0);
    }
    match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(hex) if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            u32::from_str_radix(hex, 16).map_err(|_| ValueProblem::OutOfRange {
                min: 0,
                max: u32::MAX,
            })
        }
        Some(_) => Err(ValueProblem::NotANumber),
        None => super::value::parse_number(v, 0, u32::MAX),
    }
}

/// One item of `DNS`: an address is a name server, anything else a search domain.
fn dns_item(dns: &mut Dns, v: &str) -> Result<(), ValueProblem> {
    match v.parse::<std::net::IpAddr>() {
        Ok(ip) => dns.servers.push(ip),
        Err(_)
            if v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)) =>
        {
            dns.search.push(v.to_string());
        }
        Err(_) => return Err(ValueProblem::NotAChoice),
    }
    Ok(())
}

fn hook(list: &mut Vec<String>, command: &str) -> Result<(), ValueProblem> {
    list.push(command.to_string());
    Ok(())
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
        KeySpec::<Self>::once("PreUp", "command", "a bash command line; %i is the interface name", |d, v, _| hook(&mut d.hooks.pre_up, v)).lines(),
        KeySpec::<Self>::once("PostUp", "command", "a bash command line; %i is the interface name", |d, v, _| hook(&mut d.hooks.post_up, v)).lines(),
        KeySpec::<Self>::once("PreDown", "command", "a bash command line; %i is the interface name", |d, v, _| hook(&mut d.hooks.pre_down, v)).lines(),
        KeySpec::<Self>::once("PostDown", "command", "a bash command line; %i is the interface name", |d, v, _| hook(&mut d.hooks.post_down, v)).lines(),
        KeySpec::once("Table", "routing table", "auto, off, main or a table number", |d, v, _| set(&mut d.table, parse_table(v).map(Some))),
        KeySpec::once("FwMark", "firewall mark", "off, or a number (decimal or 0x hex)", |d, v, _| set(&mut d.fwmark, parse_fwmark(v).map(Some))),
        KeySpec::<Self>::once("DNS", "DNS server or search domain", "IP addresses and search domains, comma-separated", |d, v, _| dns_item(&mut d.dns, v)).list(),
        KeySpec::once("SaveConfig", "boolean", "true or false", |d, v, _| set(&mut d.save_config, parse_bool(v).map(Some))),
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
                problem: ValueProblem::MtuTooSmallForIpv6 { min: MIN_MTU_IPV6 },
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
        hooks: std::mem::take(&mut draft.hooks),
        table: draft.table.unwrap_or_default(),
        fwmark: draft.fwmark.unwrap_or(0),
        dns: std::mem::take(&mut draft.dns),
        save_config: draft.save_config.unwrap_or(false),
    })
}
