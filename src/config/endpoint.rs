//! `Endpoint = HOST:PORT`: parsing, and resolving host names through an injectable resolver.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};

use super::value::parse_number;

/// Turns a host name into socket addresses. The system resolver is used by [`Config::load`];
/// tests inject their own so they neither depend on DNS nor wait for it.
pub trait Resolve {
    /// All addresses for `host`, in preference order.
    fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>>;
}

/// `getaddrinfo` through [`ToSocketAddrs`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        Ok((host, port).to_socket_addrs()?.collect())
    }
}

/// Why an `Endpoint` value was rejected.
#[derive(Debug)]
#[non_exhaustive]
pub enum EndpointError {
    /// No `:PORT` at the end.
    MissingPort,
    /// The port is not 1..=65535.
    BadPort,
    /// An IPv6 address without brackets, so the port cannot be told apart.
    UnbracketedIpv6,
    /// `[` without `]:PORT`, or brackets around something other than an IPv6 address.
    BadBrackets,
    /// The host is neither an IP address nor a plausible host name.
    BadHost,
    /// The resolver failed.
    Unresolvable(io::Error),
    /// The resolver returned no addresses.
    NoAddresses,
}

impl fmt::Display for EndpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingPort => f.write_str("no ':PORT' at the end"),
            Self::BadPort => f.write_str("port must be 1..=65535"),
            Self::UnbracketedIpv6 => f.write_str("an IPv6 address needs brackets around it"),
            Self::BadBrackets => {
                f.write_str("brackets must hold an IPv6 address and be followed by ':PORT'")
            }
            Self::BadHost => f.write_str("not an IP address or host name"),
            Self::Unresolvable(e) => write!(f, "cannot resolve the host name: {e}"),
            Self::NoAddresses => f.write_str("the host name has no addresses"),
        }
    }
}

fn parse_port(text: &str) -> Result<u16, EndpointError> {
    if text.is_empty() {
        return Err(EndpointError::MissingPort);
    }
    match parse_number(text, 1, u32::from(u16::MAX)) {
        Ok(port) => u16::try_from(port).map_err(|_| EndpointError::BadPort),
        Err(_) => Err(EndpointError::BadPort),
    }
}

fn is_host_name(host: &str) -> bool {
    // RFC 1123 letters, digits, '-' and '.', plus '_' which some internal zones use.
    !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
}

/// Parses `HOST:PORT`, `1.2.3.4:PORT` or `[IPV6]:PORT`, resolving host names.
pub fn parse_endpoint(text: &str, resolver: &dyn Resolve) -> Result<SocketAddr, EndpointError> {
    if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest.split_once(']').ok_or(EndpointError::BadBrackets)?;
        let ip: Ipv6Addr = inside.parse().map_err(|_| EndpointError::BadBrackets)?;
        let port_text = after.strip_prefix(':').ok_or(if after.is_empty() {
            EndpointError::MissingPort
        } else {
            EndpointError::BadBrackets
        })?;
        return Ok(SocketAddr::new(IpAddr::V6(ip), parse_port(port_text)?));
    }
    let Some((host, port_text)) = text.rsplit_once(':') else {
        return Err(EndpointError::MissingPort);
    };
    if host.contains(':') {
        return Err(EndpointError::UnbracketedIpv6);
    }
    let port = parse_port(port_text)?;
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Ok(SocketAddr::new(IpAddr::V4(ip), port));
    }
    if !is_host_name(host) {
        return Err(EndpointError::BadHost);
    }
    let addrs = resolver
        .resolve(host, port)
        .map_err(EndpointError::Unresolvable)?;
    // The first answer, as wg does: getaddrinfo already sorts by RFC 6724 preference.
    addrs.into_iter().next().ok_or(EndpointError::NoAddresses)
}
