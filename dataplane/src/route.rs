//! Cryptokey routing: the AllowedIPs table, longest prefix match for IPv4 and IPv6.
//!
//! One hash map per prefix length in use; a lookup walks the lengths in use from
//! the longest down, so its cost grows with the number of *distinct* prefix
//! lengths (a handful in practice), not with the number of peers.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IP address with a prefix length, e.g. `10.0.0.1/24` or `fd00::/64`.
///
/// The address keeps its host bits (an interface address needs them); [`IpNet::network`] clears
/// them. Construct with [`IpNet::new`] or `parse` to have the prefix checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpNet {
    /// The address as written.
    pub addr: IpAddr,
    /// Prefix length: 0..=32 for IPv4, 0..=128 for IPv6.
    pub prefix: u8,
}

/// Why text is not an [`IpNet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IpNetError {
    /// The part before `/` is not an IP address.
    BadAddress,
    /// The part after `/` is not a number.
    BadPrefix,
    /// The prefix is longer than the address.
    PrefixTooLong {
        /// Whether the address is IPv6 (bound 128) rather than IPv4 (bound 32).
        ipv6: bool,
    },
}

impl fmt::Display for IpNetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadAddress => f.write_str("not an IPv4 or IPv6 address"),
            Self::BadPrefix => f.write_str("the prefix after '/' must be a number"),
            Self::PrefixTooLong { ipv6: false } => f.write_str("IPv4 prefix must be 0..=32"),
            Self::PrefixTooLong { ipv6: true } => f.write_str("IPv6 prefix must be 0..=128"),
        }
    }
}

impl std::error::Error for IpNetError {}

fn max_prefix(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

// Saturating so that an out-of-range prefix (the fields are public) cannot panic a shift.
fn netmask_v4(prefix: u8) -> u32 {
    u32::MAX
        .checked_shl(32u32.saturating_sub(u32::from(prefix)))
        .unwrap_or(0)
}

fn netmask_v6(prefix: u8) -> u128 {
    u128::MAX
        .checked_shl(128u32.saturating_sub(u32::from(prefix)))
        .unwrap_or(0)
}

impl IpNet {
    /// An address with a prefix, checked against the address family.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, IpNetError> {
        if prefix > max_prefix(addr) {
            return Err(IpNetError::PrefixTooLong {
                ipv6: addr.is_ipv6(),
            });
        }
        Ok(Self { addr, prefix })
    }

    /// A single address: /32 for IPv4, /128 for IPv6.
    pub fn host(addr: IpAddr) -> Self {
        Self {
            addr,
            prefix: max_prefix(addr),
        }
    }

    /// The same prefix with host bits cleared (10.0.0.5/24 → 10.0.0.0/24).
    pub fn network(&self) -> Self {
        let addr = match self.addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & netmask_v4(self.prefix))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & netmask_v6(self.prefix))),
        };
        Self {
            addr,
            prefix: self.prefix,
        }
    }

    /// Whether `ip` lies inside this network. Addresses of the other family never do.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = netmask_v4(self.prefix);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = netmask_v6(self.prefix);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for IpNet {
    type Err = IpNetError;

    /// `ADDRESS/PREFIX`, or a bare `ADDRESS` meaning a single host (/32 or /128), as wg accepts.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr_text, prefix_text) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr_text.parse().map_err(|_| IpNetError::BadAddress)?;
        let Some(prefix_text) = prefix_text else {
            return Ok(Self::host(addr));
        };
        // Digits only: `u32::from_str` would also take a leading '+'.
        if prefix_text.is_empty() || !prefix_text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(IpNetError::BadPrefix);
        }
        // All digits, so a parse failure can only be overflow, which is "too long" too.
        let prefix = prefix_text
            .parse::<u8>()
            .map_err(|_| IpNetError::PrefixTooLong {
                ipv6: addr.is_ipv6(),
            })?;
        Self::new(addr, prefix)
    }
}

fn mask_v4(a: u32, prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p if p >= 32 => a,
        p => a & (u32::MAX << (32 - p)),
    }
}

fn mask_v6(a: u128, prefix: u8) -> u128 {
    match prefix {
        0 => 0,
        p if p >= 128 => a,
        p => a & (u128::MAX << (128 - p)),
    }
}

/// Longest-prefix-match table from networks to a value (a peer slot).
#[derive(Debug, Clone, Default)]
pub struct AllowedIps<V> {
    v4: Family<u32, V>,
    v6: Family<u128, V>,
}

#[derive(Debug, Clone)]
struct Family<K, V> {
    /// Distinct prefix lengths in use, longest first, each with its table.
    levels: Vec<(u8, HashMap<K, V>)>,
}

impl<K, V> Default for Family<K, V> {
    fn default() -> Self {
        Self { levels: Vec::new() }
    }
}

impl<K: std::hash::Hash + Eq + Copy, V: Copy + PartialEq> Family<K, V> {
    fn insert(&mut self, key: K, prefix: u8, value: V) -> Option<V> {
        let pos = match self.levels.iter().position(|(p, _)| *p <= prefix) {
            Some(i) if self.levels[i].0 == prefix => i,
            Some(i) => {
                self.levels.insert(i, (prefix, HashMap::new()));
                i
            }
            None => {
                self.levels.push((prefix, HashMap::new()));
                self.levels.len() - 1
            }
        };
        self.levels[pos].1.insert(key, value)
    }

    fn lookup(&self, addr: impl Fn(u8) -> K) -> Option<V> {
        self.levels
            .iter()
            .find_map(|(p, map)| map.get(&addr(*p)).copied())
    }

    fn remove_value(&mut self, value: V) {
        for (_, map) in &mut self.levels {
            map.retain(|_, v| *v != value);
        }
        self.levels.retain(|(_, m)| !m.is_empty());
    }

    fn entries(&self) -> impl Iterator<Item = (u8, &K, &V)> {
        self.levels
            .iter()
            .flat_map(|(p, m)| m.iter().map(move |(k, v)| (*p, k, v)))
    }
}

impl<V: Copy + PartialEq> AllowedIps<V> {
    /// An empty table.
    pub fn new() -> Self {
        Self {
            v4: Family::default(),
            v6: Family::default(),
        }
    }

    /// Map `net` (host bits ignored) to `value`; returns the value it replaces.
    /// As in WireGuard, a network belongs to one peer: inserting it again moves it.
    pub fn insert(&mut self, net: IpNet, value: V) -> Option<V> {
        match net.network().addr {
            IpAddr::V4(a) => self.v4.insert(u32::from(a), net.prefix, value),
            IpAddr::V6(a) => self.v6.insert(u128::from(a), net.prefix, value),
        }
    }

    /// The value of the longest network containing `ip`.
    pub fn lookup(&self, ip: IpAddr) -> Option<V> {
        match ip {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                self.v4.lookup(|p| mask_v4(a, p))
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                self.v6.lookup(|p| mask_v6(a, p))
            }
        }
    }

    /// Remove every network mapped to `value`.
    pub fn remove_value(&mut self, value: V) {
        self.v4.remove_value(value);
        self.v6.remove_value(value);
    }

    /// All networks mapped to `value`, sorted.
    pub fn networks_of(&self, value: V) -> Vec<IpNet> {
        let mut out: Vec<IpNet> = self
            .v4
            .entries()
            .filter(|(_, _, v)| **v == value)
            .map(|(p, k, _)| IpNet {
                addr: IpAddr::V4(Ipv4Addr::from(*k)),
                prefix: p,
            })
            .chain(
                self.v6
                    .entries()
                    .filter(|(_, _, v)| **v == value)
                    .map(|(p, k, _)| IpNet {
                        addr: IpAddr::V6(Ipv6Addr::from(*k)),
                        prefix: p,
                    }),
            )
            .collect();
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn parse_and_display() {
        assert_eq!(net("10.0.0.5/24").network().to_string(), "10.0.0.0/24");
        assert_eq!(net("10.0.0.5").prefix, 32);
        assert_eq!(net("fd00::1").prefix, 128);
        let too_long = |ipv6| Err(IpNetError::PrefixTooLong { ipv6 });
        assert_eq!("10.0.0.0/33".parse::<IpNet>(), too_long(false));
        assert_eq!("fd00::/129".parse::<IpNet>(), too_long(true));
        assert_eq!("10.0.0.0/999".parse::<IpNet>(), too_long(false));
        assert_eq!("10.0.0.0/".parse::<IpNet>(), Err(IpNetError::BadPrefix));
        assert_eq!("10.0.0.0/+1".parse::<IpNet>(), Err(IpNetError::BadPrefix));
        assert_eq!("nope".parse::<IpNet>(), Err(IpNetError::BadAddress));
    }

    #[test]
    fn longest_prefix_wins_v4_and_v6() {
        let mut t = AllowedIps::new();
        t.insert(net("0.0.0.0/0"), 1);
        t.insert(net("10.0.0.0/8"), 2);
        t.insert(net("10.1.0.0/16"), 3);
        t.insert(net("10.1.2.3/32"), 4);
        t.insert(net("::/0"), 5);
        t.insert(net("fd00::/64"), 6);
        assert_eq!(t.lookup("10.1.2.3".parse().unwrap()), Some(4));
        assert_eq!(t.lookup("10.1.2.4".parse().unwrap()), Some(3));
        assert_eq!(t.lookup("10.2.0.1".parse().unwrap()), Some(2));
        assert_eq!(t.lookup("192.168.0.1".parse().unwrap()), Some(1));
        assert_eq!(t.lookup("fd00::9".parse().unwrap()), Some(6));
        assert_eq!(t.lookup("fd01::9".parse().unwrap()), Some(5));
        t.remove_value(1);
        t.remove_value(5);
        assert_eq!(t.lookup("192.168.0.1".parse().unwrap()), None);
        assert_eq!(t.lookup("fd01::9".parse().unwrap()), None);
        assert_eq!(t.networks_of(3), vec![net("10.1.0.0/16")]);
    }

    #[test]
    fn reinsert_moves_network() {
        let mut t = AllowedIps::new();
        assert_eq!(t.insert(net("10.0.0.0/24"), 1), None);
        assert_eq!(t.insert(net("10.0.0.7/24"), 2), Some(1));
        assert_eq!(t.lookup("10.0.0.1".parse().unwrap()), Some(2));
    }

    #[test]
    fn contains() {
        assert!(net("10.0.0.0/8").contains("10.9.9.9".parse().unwrap()));
        assert!(!net("10.0.0.0/8").contains("11.0.0.0".parse().unwrap()));
        assert!(!net("0.0.0.0/0").contains("::1".parse().unwrap()));
        assert!(net("::/0").contains("::1".parse().unwrap()));
    }
}
