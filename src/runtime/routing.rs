//! wg-quick's routes for the peers' AllowedIPs, by `Table`, and its policy routing for a full
//! tunnel, undone when veil stops.
//!
//! - `Table = off`: no routes. `Table = N` (or `main`): every AllowedIPs network, `/0`
//!   included, routed into table N.
//! - `Table = auto` (the default): routes in the main table, and for a `/0` wg-quick's
//!   `add_default`, per address family that has one: the outer socket gets a mark (`FwMark`,
//!   or the first of 51820, 51821, ... whose table is empty in both families), the default
//!   route goes into the table of that number, and two rules send everything without the
//!   mark there (`not fwmark M table M`) while keeping the main table's more specific routes
//!   (`table main suppress_prefixlength 0`). The tunnel's own UDP carries the mark, so it
//!   follows the main table and does not loop. Then, as wg-quick does with nft: a table
//!   `veil-IFACE` per family that drops packets to the interface's addresses arriving
//!   elsewhere (unless from a local address), and copies the mark into conntrack and back so
//!   replies from the endpoint pass the reverse-path filter (`src_valid_mark=1` for IPv4).
//!
//! Rules and nft tables are removed when [`Routing`] is dropped; routes go with the interface.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use log::{info, warn};
use veil_dataplane::route::IpNet;
use veil_dataplane::sys::{Netlink, Rule, RuleKind};

use super::error::InterfaceError;
use crate::config::{Config, Table};

/// The first table (and mark) wg-quick tries for a full tunnel.
const FIRST_TABLE: u32 = 51820;
/// How many tables past [`FIRST_TABLE`] are tried before giving up.
const TABLES_TRIED: u32 = 1024;

/// What [`install`] set up beyond plain routes; undone on drop.
#[derive(Debug)]
pub(super) struct Routing {
    name: String,
    /// The rules we added (not ones that were there already).
    rules: Vec<Rule>,
    /// The nft families (`ip`, `ip6`) whose `veil-IFACE` table we made.
    nft: Vec<&'static str>,
    /// The mark the outer socket must carry (0: none).
    pub(super) mark: u32,
}

impl Routing {
    /// The nft families whose table the privileged helper is to delete at exit
    /// ([`delete_nft_table`]); not deleted here any more.
    pub(super) fn hand_over_nft(&mut self) -> Vec<&'static str> {
        std::mem::take(&mut self.nft)
    }

    /// A live hand-off: the running veil set the interface up, and its routes stay as they are
    /// (they belong to the interface). Policy rules and nft tables of a full-tunnel config are
    /// not taken over: this process leaves them in place at exit.
    pub(super) fn inherited(name: &str) -> Routing {
        Routing {
            name: name.to_string(),
            rules: Vec::new(),
            nft: Vec::new(),
            mark: 0,
        }
    }
}

/// Route the peers' AllowedIPs out of `ifindex` as wg-quick would for `config`.
pub(super) fn install(
    nl: &Netlink,
    ifindex: u32,
    name: &str,
    config: &Config,
) -> Result<Routing, InterfaceError> {
    let table = config.interface.table;
    let mut routing = Routing {
        name: name.to_string(),
        rules: Vec::new(),
        nft: Vec::new(),
        mark: config.interface.fwmark,
    };
    let mut networks: Vec<IpNet> = config
        .peers
        .iter()
        .flat_map(|p| p.allowed_ips.iter().map(IpNet::network))
        .collect();
    // As wg-quick: longest prefix first, each once.
    networks.sort_by_key(|n| std::cmp::Reverse(n.prefix));
    networks.dedup();
    let mut defaults = Vec::new();
    for n in networks {
        match table {
            Table::Off => {}
            Table::Id(t) => nl
                .add_route_in(t, ifindex, n.addr, n.prefix)
                .map_err(|e| InterfaceError::Route(n, e))?,
            Table::Auto if n.prefix == 0 => defaults.push(n.addr.is_ipv6()),
            Table::Auto => nl
                .add_route(ifindex, n.addr, n.prefix)
                .map_err(|e| InterfaceError::Route(n, e))?,
        }
    }
    defaults.dedup();
    for v6 in defaults {
        routing.add_default(nl, ifindex, v6, config)?;
    }
    Ok(routing)
}

impl Routing {
    /// wg-quick's `add_default` for one family.
    fn add_default(
        &mut self,
        nl: &Netlink,
        ifindex: u32,
        v6: bool,
        config: &Config,
    ) -> Result<(), InterfaceError> {
        if self.mark == 0 {
            self.mark = free_table(nl)?;
        }
        let table = self.mark;
        let rule_error = |what: String| move |e| InterfaceError::Rule(what, e);
        for kind in [
            RuleKind::NotMarkTable { mark: table, table },
            RuleKind::MainSuppressDefault,
        ] {
            let rule = Rule { v6, kind };
            match nl.add_rule(&rule) {
                Ok(()) => self.rules.push(rule),
                // The same rule is there already (another tunnel's): it does what we need,
                // and it is not ours to remove.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(rule_error(describe(&rule))(e)),
            }
        }
        let any = if v6 {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        };
        nl.add_route_in(table, ifindex, any, 0).map_err(|e| {
            InterfaceError::Route(
                IpNet {
                    addr: any,
                    prefix: 0,
                },
                e,
            )
        })?;
        info!(
            "{}: full tunnel ({}): default route in table {table}, the tunnel's own packets marked {table}",
            self.name,
            if v6 { "IPv6" } else { "IPv4" }
        );
        if !v6 {
            if let Err(e) = std::fs::write("/proc/sys/net/ipv4/conf/all/src_valid_mark", "1") {
                warn!("{}: cannot set net.ipv4.conf.all.src_valid_mark=1: {e}; with rp_filter on, replies may be dropped", self.name);
            }
        }
        self.add_nft(v6, table, config);
        Ok(())
    }

    /// wg-quick's nft table for one family; a warning if nft is missing or refuses.
    fn add_nft(&mut self, v6: bool, mark: u32, config: &Config) {
        let family = if v6 { "ip6" } else { "ip" };
        let table = format!("veil-{}", self.name);
        let mut script = format!(
            "add table {family} {table}\n\
             add chain {family} {table} preraw {{ type filter hook prerouting priority -300; }}\n\
             add chain {family} {table} premangle {{ type filter hook prerouting priority -150; }}\n\
             add chain {family} {table} postmangle {{ type filter hook postrouting priority -150; }}\n"
        );
        for a in config
            .interface
            .addresses
            .iter()
            .filter(|a| a.addr.is_ipv6() == v6)
        {
            script.push_str(&format!(
                "add rule {family} {table} preraw iifname != \"{}\" {family} daddr {} fib saddr type != local drop\n",
                self.name, a.addr
            ));
        }
        script.push_str(&format!(
            "add rule {family} {table} postmangle meta l4proto udp mark {mark} ct mark set mark\n\
             add rule {family} {table} premangle meta l4proto udp meta mark set ct mark\n"
        ));
        match nft(&script) {
            Ok(()) => self.nft.push(family),
            Err(e) => warn!(
                "{}: nft ({e}): no conntrack mark for the tunnel's UDP and no spoofing filter; \
                 with rp_filter on, replies from the endpoint may be dropped",
                self.name
            ),
        }
    }
}

impl Drop for Routing {
    fn drop(&mut self) {
        let nl = match (self.rules.is_empty(), Netlink::new()) {
            (true, _) => None,
            (false, Ok(nl)) => Some(nl),
            (false, Err(e)) => {
                warn!("{}: netlink: {e}; policy rules left in place", self.name);
                None
            }
        };
        for rule in self.rules.drain(..) {
            if let Some(nl) = &nl {
                if let Err(e) = nl.delete_rule(&rule) {
                    warn!("{}: remove rule {}: {e}", self.name, describe(&rule));
                }
            }
        }
        for family in self.nft.drain(..) {
            if let Err(e) = delete_nft_table(family, &self.name) {
                warn!(
                    "{}: remove nft table {family} veil-{}: {e}",
                    self.name, self.name
                );
            }
        }
    }
}

/// The first table from [`FIRST_TABLE`] with no route in either family (wg-quick's choice).
fn free_table(nl: &Netlink) -> Result<u32, InterfaceError> {
    let probe = |e| InterfaceError::Rule("look for a free routing table".into(), e);
    for t in FIRST_TABLE..FIRST_TABLE + TABLES_TRIED {
        if !nl.table_has_routes(t, false).map_err(probe)?
            && !nl.table_has_routes(t, true).map_err(probe)?
        {
            return Ok(t);
        }
    }
    Err(probe(io::Error::other(format!(
        "tables {FIRST_TABLE}..{} all hold routes; set FwMark",
        FIRST_TABLE + TABLES_TRIED
    ))))
}

/// A rule as `ip rule` writes it.
fn describe(rule: &Rule) -> String {
    let family = if rule.v6 { "-6" } else { "-4" };
    match rule.kind {
        RuleKind::NotMarkTable { mark, table } => {
            format!("{family} not fwmark {mark} table {table}")
        }
        RuleKind::MainSuppressDefault => format!("{family} table main suppress_prefixlength 0"),
    }
}

/// Delete interface `name`'s table `veil-NAME` of nft family `family` (`ip`, `ip6`).
pub(super) fn delete_nft_table(family: &str, name: &str) -> io::Result<()> {
    nft(&format!("delete table {family} veil-{name}\n"))
}

/// `nft -f -` with `script` on stdin.
fn nft(script: &str) -> io::Result<()> {
    super::hooks::feed("nft", &["-f", "-"], script)
}
