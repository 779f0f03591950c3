//! wg-quick's `DNS =`: the name servers and search domains go to `resolvconf` for the
//! interface (`resolvconf -a tun.IFACE -m 0 -x`, the `tun.` prefix only where
//! /etc/resolvconf/interface-order names one, as wg-quick decides it), and are taken back
//! with `resolvconf -d tun.IFACE -f` when veil stops. Without `resolvconf` on PATH, a warning
//! says the servers were not set; a `resolvconf` that fails stops start-up, as in wg-quick.

use std::fmt;
use std::io;

use log::{info, warn};

use crate::config::Dns;

/// Where resolvconf's Debian package lists interface name patterns in priority order.
const INTERFACE_ORDER: &str = "/etc/resolvconf/interface-order";

/// `resolvconf -a` failed.
#[derive(Debug)]
pub(crate) struct DnsError {
    record: String,
    cause: io::Error,
}

impl fmt::Display for DnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DNS: resolvconf -a {}: {}", self.record, self.cause)
    }
}

impl std::error::Error for DnsError {}

/// The interface's record in resolvconf while it is set; taken back on drop.
#[derive(Debug)]
pub(super) struct DnsRecord {
    record: Option<String>,
}

impl DnsRecord {
    /// The record, for the privileged helper to take back ([`take_back`]); not taken back
    /// here any more.
    pub(super) fn hand_over(&mut self) -> Option<String> {
        self.record.take()
    }

    /// A live hand-off: the running veil's record stays, and is not this process's to take
    /// back.
    pub(super) fn inherited() -> DnsRecord {
        DnsRecord { record: None }
    }
}

/// Give `dns` to resolvconf for interface `name` (nothing when `dns` is empty).
pub(super) fn set(name: &str, dns: &Dns) -> Result<DnsRecord, DnsError> {
    if dns.is_empty() {
        return Ok(DnsRecord { record: None });
    }
    if !on_path("resolvconf") {
        warn!(
            "{name}: DNS = {}: resolvconf is not installed, so these name servers were not set \
             (install openresolv or resolvconf, or set them yourself)",
            listed(dns)
        );
        return Ok(DnsRecord { record: None });
    }
    let record = format!("{}{name}", iface_prefix());
    let mut input = String::new();
    for s in &dns.servers {
        input.push_str(&format!("nameserver {s}\n"));
    }
    if !dns.search.is_empty() {
        input.push_str(&format!("search {}\n", dns.search.join(" ")));
    }
    resolvconf(&["-a", &record, "-m", "0", "-x"], &input).map_err(|cause| DnsError {
        record: record.clone(),
        cause,
    })?;
    info!("{name}: DNS {} set through resolvconf", listed(dns));
    Ok(DnsRecord {
        record: Some(record),
    })
}

impl Drop for DnsRecord {
    fn drop(&mut self) {
        if let Some(record) = self.record.take() {
            if let Err(e) = take_back(&record) {
                warn!("resolvconf -d {record}: {e}");
            }
        }
    }
}

/// wg-quick's `unset_dns`: `resolvconf -d RECORD -f`.
pub(super) fn take_back(record: &str) -> io::Result<()> {
    resolvconf(&["-d", record, "-f"], "")
}

fn listed(dns: &Dns) -> String {
    let all: Vec<String> = dns
        .servers
        .iter()
        .map(ToString::to_string)
        .chain(dns.search.iter().cloned())
        .collect();
    all.join(", ")
}

/// wg-quick's `resolvconf_iface_prefix`: the first `NAME*` pattern of interface-order that is
/// letters, digits and dashes, as `NAME.`; none without the file.
fn iface_prefix() -> String {
    std::fs::read_to_string(INTERFACE_ORDER)
        .map(|text| prefix_from(&text))
        .unwrap_or_default()
}

fn prefix_from(order: &str) -> String {
    order
        .lines()
        .filter_map(|l| l.strip_suffix('*'))
        .find(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        .map(|p| format!("{p}."))
        .unwrap_or_default()
}

fn on_path(command: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            let p = dir.join(command);
            p.is_file()
                && std::fs::metadata(&p)
                    .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0)
                    .unwrap_or(false)
        })
    })
}

/// `resolvconf ARGS` with `input` on stdin.
fn resolvconf(args: &[&str], input: &str) -> io::Result<()> {
    super::hooks::feed("resolvconf", args, input)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_is_wg_quicks() {
        // Debian's resolvconf: lo.inet*, then tun*, ... : `lo.inet` has a dot, so tun wins.
        let debian = "# interface-order(5)\nlo.inet6\nlo.inet\nlo.@(dnsmasq|pdnsd)\nlo.!(pdns|pdns-recursor)\nlo\ntun*\ntap*\nhso*\nem+([0-9])?(_+([0-9]))*\n";
        assert_eq!(prefix_from(debian), "tun.");
        assert_eq!(prefix_from("lo\neth*\n"), "eth.");
        assert_eq!(prefix_from("lo\n"), "");
    }
}
