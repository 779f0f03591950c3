//! Loading an interface configuration: a wg-quick style file, as given to `veil up PATH`.
//!
//! ```text
//! [Interface]
//! PrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=
//! ListenPort = 51820
//! Address = 10.0.0.1/24, fd00::1/64
//!
//! [Peer]
//! PublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=
//! AllowedIPs = 10.0.0.2/32
//! Endpoint = [fd41::2]:51820
//! PersistentKeepalive = 25
//! ```
//!
//! Syntax follows wg-quick: section names and keys are case-insensitive, `#` starts a comment
//! anywhere on a line, whitespace around `=` is ignored, list values are comma-separated and list
//! keys may repeat. wg-quick keys that veil does not act on (DNS, Table, Pre/PostUp/Down,
//! SaveConfig, FwMark) are accepted with a warning, so the same file works with both tools.
//!
//! Bounds that are veil's own choice:
//! - `MTU` defaults to 1420 (wg-quick's default for IPv6 underlay) and must be 576..=9000:
//!   576 is the smallest datagram every IPv4 host must accept, 9000 the usual jumbo frame. With an
//!   IPv6 `Address` it must be at least 1280, because Linux disables IPv6 on links below that.
//! - `ListenPort = 0` and no `ListenPort` both mean "any free port".
//! - `PersistentKeepalive = 0` and `off` both disable it, as in wg.
//!
//! Every problem in the file is reported in one pass ([`ConfigErrors`]), each naming file, line,
//! key, the offending value and what was expected. Values of secret keys are never echoed.
//!
//! Adding a section: write a draft struct with `Default`, implement `Section` for it with a
//! table of `KeySpec`s (one entry per key), add a variant to `Open`, a field to `Parser` and its
//! arm in `Parser::header`, and convert the draft in `Parser::finish`.

#![deny(unsafe_code)]

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

pub use veil_dataplane::route::{IpNet, IpNetError};

mod ops;
pub use ops::{CpuSetting, LogFormat, LoggingConfig, MetricsConfig, ThreadingConfig};

use zeroize::Zeroizing;

use crate::keys::{self, Key32, KeyError, KEY_LEN};
use veil_control::degradation::DegradationPolicy;
use veil_control::device::ProtectionConfig;
use veil_control::migration::MigrationPolicy;
use veil_control::session::SessionPolicy;
use veil_dataplane::priority::PriorityMap;
use veil_dataplane::ratelimit::RateLimit;

/// Tunnel MTU when the file sets none.
pub const DEFAULT_MTU: u16 = 1420;
/// Smallest MTU accepted: every IPv4 host must accept 576-byte datagrams (RFC 791).
pub const MIN_MTU: u16 = 576;
/// Smallest MTU accepted when the interface has an IPv6 address (RFC 8200 minimum link MTU).
pub const MIN_MTU_IPV6: u16 = 1280;
/// Largest MTU accepted: a jumbo frame.
pub const MAX_MTU: u16 = 9000;

// ---------------------------------------------------------------------------------------------
// Output types

/// A loaded and validated interface configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The `[Interface]` section.
    pub interface: InterfaceConfig,
    /// The `[Peer]` sections, in file order.
    pub peers: Vec<PeerConfig>,
    /// The `[sessions]` section (session lifecycle timeouts), defaults if absent.
    pub sessions: SessionPolicy,
    /// The `[migration]` section (client address changes), defaults if absent.
    pub migration: MigrationPolicy,
    /// `[rate_limiting]`, `[degradation]` and `[priority]`, with per-peer overrides.
    pub protection: ProtectionConfig,
    /// The `[logging]` section (defaults when absent).
    pub logging: LoggingConfig,
    /// The `[metrics]` section (defaults when absent).
    pub metrics: MetricsConfig,
    /// The `[threading]` section (defaults when absent); `veil up` flags override it.
    pub threading: ThreadingConfig,
    /// Things that were accepted but deserve the operator's attention; the caller prints them.
    pub warnings: Vec<ConfigWarning>,
}

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

/// One `[Peer]` section.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// The peer's static public key; unique among peers.
    pub public_key: [u8; KEY_LEN],
    /// Optional extra symmetric key mixed into the handshake.
    pub preshared_key: Option<Key32>,
    /// Networks routed to this peer and accepted from it; host bits cleared.
    pub allowed_ips: Vec<IpNet>,
    /// Where to send the first handshake; resolved when the file was loaded.
    pub endpoint: Option<SocketAddr>,
    /// Keepalive interval in seconds; `None` when off.
    pub persistent_keepalive: Option<u16>,
    /// `per_client_bandwidth_mbps` override for this peer.
    pub bandwidth_mbps: Option<u32>,
    /// `per_client_pps` override for this peer.
    pub pps: Option<u32>,
    /// Line of the `[Peer]` header, so later messages can point at the section.
    pub line: usize,
}

// ---------------------------------------------------------------------------------------------
// Endpoint resolution

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

// ---------------------------------------------------------------------------------------------
// Errors and warnings

/// Text from the file, shown in a message, or a marker where showing it could leak a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Echo {
    /// Safe to show (already shortened and escaped).
    Text(String),
    /// Not shown.
    Redacted,
}

impl fmt::Display for Echo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Text(t) => f.write_str(t),
            Self::Redacted => f.write_str("<redacted>"),
        }
    }
}

/// Longest value echoed in full; longer ones are cut so one bad line cannot flood the terminal.
const ECHO_MAX_CHARS: usize = 64;

fn echo_value(text: &str) -> Echo {
    let mut out: String = text
        .chars()
        .take(ECHO_MAX_CHARS)
        .flat_map(char::escape_debug)
        .collect();
    if text.chars().nth(ECHO_MAX_CHARS).is_some() {
        out.push('…');
    }
    Echo::Text(out)
}

/// Longest unknown key or section name we echo. Longer "names" are usually a pasted base64 key
/// (44 characters) on a line of its own, where the first '=' made part of it look like a key.
const ECHO_MAX_NAME: usize = 32;

fn echo_name(text: &str) -> Echo {
    let plausible = text.len() <= ECHO_MAX_NAME
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == ' ');
    if plausible {
        Echo::Text(text.to_string())
    } else {
        Echo::Redacted
    }
}

/// Why a value was rejected (the part after "is not a valid ...:").
#[derive(Debug)]
#[non_exhaustive]
pub enum ValueProblem {
    /// Nothing after `=`, or an empty item in a comma list.
    Empty,
    /// Not made of digits.
    NotANumber,
    /// A number outside the allowed range.
    OutOfRange {
        /// Smallest allowed.
        min: u32,
        /// Largest allowed.
        max: u32,
    },
    /// MTU below 1280 although the interface has an IPv6 address.
    MtuTooSmallForIpv6,
    /// A malformed key.
    Key(KeyError),
    /// A malformed address or network.
    Network(IpNetError),
    /// A malformed or unresolvable endpoint.
    Endpoint(EndpointError),
    /// Not `true` or `false`.
    NotABool,
    /// Must be smaller than another key's value.
    MustBeBelow {
        /// The other key.
        other: &'static str,
        /// Its value.
        value: u64,
    },
    /// Not one of the allowed words.
    NotAChoice,
    /// Not a plain decimal number.
    NotAFraction,
    /// A decimal number outside 0.0..=1.0.
    FractionOutOfRange,
    /// Not an IP:PORT socket address.
    NotAListenAddress,
}

impl From<KeyError> for ValueProblem {
    fn from(e: KeyError) -> Self {
        Self::Key(e)
    }
}

impl From<IpNetError> for ValueProblem {
    fn from(e: IpNetError) -> Self {
        Self::Network(e)
    }
}

impl From<EndpointError> for ValueProblem {
    fn from(e: EndpointError) -> Self {
        Self::Endpoint(e)
    }
}

impl fmt::Display for ValueProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("it is empty"),
            Self::NotANumber => f.write_str("not a whole number"),
            Self::OutOfRange { min, max } => write!(f, "must be {min}..={max}"),
            Self::MtuTooSmallForIpv6 => write!(
                f,
                "IPv6 needs at least {MIN_MTU_IPV6}, and Address has an IPv6 address"
            ),
            Self::Key(e) => e.fmt(f),
            Self::Network(e) => e.fmt(f),
            Self::Endpoint(e) => e.fmt(f),
            Self::NotABool => f.write_str("not true or false"),
            Self::MustBeBelow { other, value } => {
                write!(f, "must be less than {other} ({value})")
            }
            Self::NotAChoice => f.write_str("not one of the allowed values"),
            Self::NotAFraction => f.write_str("not a decimal number"),
            Self::FractionOutOfRange => f.write_str("must be 0.0..=1.0"),
            Self::NotAListenAddress => {
                f.write_str("not an IP address and port (host names are not accepted here)")
            }
        }
    }
}

/// A hint attached to an unknown key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyHint {
    /// A key of this section with a similar spelling.
    DidYouMean(&'static str),
    /// The key exists, but in another section.
    BelongsIn(&'static str),
}

/// What is wrong, without the file and line.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// The file could not be read.
    Read(io::Error),
    /// The file is not UTF-8; `line` is where the first bad byte is.
    NotUtf8,
    /// Neither `Key = Value`, `[Section]` nor a comment.
    MalformedLine,
    /// A line starting with `[` that is not exactly `[Name]`.
    MalformedSection,
    /// A section veil does not know; its keys are skipped.
    UnknownSection {
        /// The name between the brackets.
        name: Echo,
    },
    /// A `Key = Value` line before the first section header.
    KeyOutsideSection {
        /// The key as written.
        key: Echo,
    },
    /// A key the section does not have.
    UnknownKey {
        /// Section name.
        section: &'static str,
        /// The key as written.
        key: Echo,
        /// Spelling or placement hint.
        hint: Option<KeyHint>,
        /// The section's keys, to list when there is no better hint.
        known: Vec<&'static str>,
    },
    /// A single-valued key set twice in one section.
    DuplicateKey {
        /// Canonical key name.
        key: &'static str,
        /// Where it was first set.
        first_line: usize,
    },
    /// A section that may appear only once appeared again; the repeat is skipped.
    DuplicateSection {
        /// Section name.
        section: &'static str,
        /// Line of the first one.
        first_line: usize,
    },
    /// A required section is absent.
    MissingSection {
        /// Section name.
        section: &'static str,
        /// Its required key, for the example in the message.
        example_key: &'static str,
    },
    /// A required key is absent; `line` is the section header.
    MissingKey {
        /// Section name.
        section: &'static str,
        /// Canonical key name.
        key: &'static str,
        /// What the value should look like.
        expected: &'static str,
    },
    /// A value that does not parse or is out of range.
    InvalidValue {
        /// Canonical key name.
        key: &'static str,
        /// The offending value, or `<redacted>` for secrets.
        value: Echo,
        /// What the value should have been ("network", "key", ...).
        what: &'static str,
        /// What is wrong with it.
        problem: ValueProblem,
        /// What the value should look like.
        expected: &'static str,
    },
    /// Two peers with the same public key.
    DuplicatePeer {
        /// The key, in text form (public, so safe to show).
        public_key: String,
        /// Line of the first peer's `[Peer]` header.
        first_line: usize,
    },
    /// A peer whose public key is our own.
    PeerIsSelf,
    /// A key that contradicts another setting of the file.
    Contradiction {
        /// Canonical key name.
        key: &'static str,
        /// The other setting, as it would be written.
        other: &'static str,
        /// Where that is.
        other_line: usize,
    },
}

/// One problem in a configuration file.
#[derive(Debug)]
pub struct ConfigError {
    /// The file as named by the operator.
    pub file: String,
    /// 1-based line, when the problem has one.
    pub line: Option<usize>,
    /// What is wrong.
    pub kind: ConfigErrorKind,
}

fn write_location(f: &mut fmt::Formatter<'_>, file: &str, line: Option<usize>) -> fmt::Result {
    match line {
        Some(line) => write!(f, "{file}:{line}: "),
        None => write!(f, "{file}: "),
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ConfigErrorKind as K;
        write_location(f, &self.file, self.line)?;
        match &self.kind {
            K::Read(e) => write!(
                f,
                "cannot read the file: {e} (check the path and its permissions)"
            ),
            K::NotUtf8 => f.write_str(
                "the file is not UTF-8 text (save it as UTF-8; wg-quick files are plain ASCII)",
            ),
            K::MalformedLine => f.write_str(
                "expected 'Key = Value', a '[Section]' header or a '# comment' \
                 (the line is not shown: it may hold a secret)",
            ),
            K::MalformedSection => {
                f.write_str("a section header must be '[Name]' alone on its line, e.g. [Peer]")
            }
            K::UnknownSection { name } => write!(
                f,
                "unknown section [{name}]; veil knows {} (the keys below it are skipped)",
                known_sections()
            ),
            K::KeyOutsideSection { key } => {
                let home = match key {
                    Echo::Text(k) => other_section_with(k),
                    Echo::Redacted => None,
                };
                match home {
                    Some(section) => {
                        write!(f, "{key}: key before any section; put it under [{section}]")
                    }
                    None => write!(
                        f,
                        "{key}: key before any section; put it under [Interface] or [Peer]"
                    ),
                }
            }
            K::UnknownKey {
                section,
                key,
                hint,
                known,
            } => {
                match key {
                    Echo::Text(key) => write!(f, "{key}: unknown key in [{section}]")?,
                    Echo::Redacted => write!(
                        f,
                        "unknown key in [{section}] (not shown: it looks like it could be a secret)"
                    )?,
                }
                match hint {
                    Some(KeyHint::DidYouMean(name)) => write!(f, "; did you mean {name}?"),
                    Some(KeyHint::BelongsIn(other)) => {
                        write!(f, "; it belongs in a [{other}] section")
                    }
                    None => write!(f, " (known keys: {})", known.join(", ")),
                }
            }
            K::DuplicateKey { key, first_line } => write!(
                f,
                "{key}: set again, first set on line {first_line}; keep one of them"
            ),
            K::DuplicateSection {
                section,
                first_line,
            } => write!(
                f,
                "second [{section}] section, the first is on line {first_line}; \
                 merge them (this one is skipped)"
            ),
            K::MissingSection {
                section,
                example_key,
            } => write!(
                f,
                "no [{section}] section; add one with at least '{example_key} = ...'"
            ),
            K::MissingKey {
                section,
                key,
                expected,
            } => write!(
                f,
                "[{section}] has no {key}; add '{key} = ...' ({expected})"
            ),
            K::InvalidValue {
                key,
                value,
                what,
                problem,
                expected,
            } => write!(
                f,
                "{key}: '{value}' is not a valid {what}: {problem} (expected {expected})"
            ),
            K::DuplicatePeer {
                public_key,
                first_line,
            } => write!(
                f,
                "PublicKey: '{public_key}' is also the key of the peer on line {first_line}; \
                 each peer needs its own key, so merge the two [Peer] sections"
            ),
            K::Contradiction {
                key,
                other,
                other_line,
            } => write!(
                f,
                "{key}: contradicts '{other}' on line {other_line}; remove one of them"
            ),
            K::PeerIsSelf => f.write_str(
                "PublicKey: this is our own public key (from PrivateKey); a peer's PublicKey \
                 is the other side's `wg pubkey` output",
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

/// "[Interface], [Peer], [logging], …" for messages.
fn known_sections() -> String {
    let names: Vec<String> = [
        InterfaceDraft::NAME,
        PeerDraft::NAME,
        SessionPolicy::NAME,
        MigrationPolicy::NAME,
        RateLimitingDraft::NAME,
        DegradationPolicy::NAME,
        PriorityDraft::NAME,
    ]
    .iter()
    .chain(ops::NAMES.iter())
    .map(|n| format!("[{n}]"))
    .collect();
    names.join(", ")
}

/// Every problem found in one file, in line order. `Display` prints one per line.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            e.fmt(f)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Something accepted that the operator should know about.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WarningKind {
    /// A wg-quick key veil does not act on.
    IgnoredKey {
        /// Canonical key name.
        key: &'static str,
    },
    /// An AllowedIPs entry with host bits, used as its network.
    HostBitsMasked {
        /// As written.
        given: IpNet,
        /// As used.
        network: IpNet,
    },
    /// A peer with no AllowedIPs: no traffic can be sent to it. `line` is its header.
    NoAllowedIps,
    /// The same network in two peers' AllowedIPs; `line` is the later one's header.
    AllowedIpsOverlap {
        /// The network.
        network: IpNet,
        /// The earlier peer's header line.
        other_line: usize,
    },
    /// Other users may read the file, which holds the private key.
    ReadableByOthers {
        /// Permission bits.
        mode: u32,
    },
}

/// A warning with its place in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    /// The file as named by the operator.
    pub file: String,
    /// 1-based line, when the warning has one.
    pub line: Option<usize>,
    /// What is worth knowing.
    pub kind: WarningKind,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_location(f, &self.file, self.line)?;
        match &self.kind {
            WarningKind::IgnoredKey { key } => write!(
                f,
                "{key}: wg-quick setting that veil does not act on, ignored \
                 (do it outside veil, or remove the line)"
            ),
            WarningKind::HostBitsMasked { given, network } => write!(
                f,
                "AllowedIPs: '{given}' has host bits set; using {network}"
            ),
            WarningKind::NoAllowedIps => f.write_str(
                "[Peer] has no AllowedIPs, so no traffic will go to it (add 'AllowedIPs = ...')",
            ),
            WarningKind::AllowedIpsOverlap {
                network,
                other_line,
            } => write!(
                f,
                "AllowedIPs: {network} is also listed for the peer on line {other_line}; \
                 this later peer gets it, as with wg"
            ),
            WarningKind::ReadableByOthers { mode } => write!(
                f,
                "mode {mode:03o} lets every user read the private key; run: chmod 600 {}",
                self.file
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sections as tables of typed setters

/// What a setter sees besides the value: where it is, and where warnings go.
struct ValueCtx<'a> {
    file: &'a str,
    line: usize,
    warnings: &'a mut Vec<ConfigWarning>,
    resolver: &'a dyn Resolve,
}

impl ValueCtx<'_> {
    fn warn(&mut self, kind: WarningKind) {
        self.warnings.push(ConfigWarning {
            file: self.file.to_string(),
            line: Some(self.line),
            kind,
        });
    }
}

type Setter<D> = fn(&mut D, &str, &mut ValueCtx<'_>) -> Result<(), ValueProblem>;

/// How often a key may appear in one section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arity {
    /// At most once.
    Once,
    /// Any number of times, each a comma-separated list; the setter sees one item at a time.
    List,
}

/// One key of a section: its name, how to parse it, and what to say when that fails.
struct KeySpec<D> {
    name: &'static str,
    arity: Arity,
    required: bool,
    /// Never echo the value.
    secret: bool,
    /// "is not a valid {what}".
    what: &'static str,
    /// "(expected {expected})".
    expected: &'static str,
    set: Setter<D>,
}

impl<D> KeySpec<D> {
    const fn once(
        name: &'static str,
        what: &'static str,
        expected: &'static str,
        set: Setter<D>,
    ) -> Self {
        Self {
            name,
            arity: Arity::Once,
            required: false,
            secret: false,
            what,
            expected,
            set,
        }
    }

    const fn list(
        name: &'static str,
        what: &'static str,
        expected: &'static str,
        set: Setter<D>,
    ) -> Self {
        Self {
            arity: Arity::List,
            ..Self::once(name, what, expected, set)
        }
    }

    const fn required(self) -> Self {
        Self {
            required: true,
            ..self
        }
    }

    const fn secret(self) -> Self {
        Self {
            secret: true,
            ..self
        }
    }
}

/// A kind of `[Section]`: a draft that collects values, and the table of its keys.
trait Section: Default + Sized + 'static {
    /// Canonical name, matched case-insensitively.
    const NAME: &'static str;
    /// Its keys.
    const KEYS: &'static [KeySpec<Self>];
    /// wg-quick keys accepted with a warning because veil does not act on them.
    const IGNORED: &'static [&'static str] = &[];
}

/// A section being filled in: its draft, where it started, and which keys were seen where.
struct SectionState<D> {
    draft: D,
    header_line: usize,
    seen: Vec<(&'static str, usize)>,
}

impl<D: Section> SectionState<D> {
    fn new(header_line: usize) -> Self {
        Self {
            draft: D::default(),
            header_line,
            seen: Vec::new(),
        }
    }

    /// First line where `key` was set.
    fn line_of(&self, key: &str) -> Option<usize> {
        self.seen
            .iter()
            .find(|(name, _)| *name == key)
            .map(|&(_, line)| line)
    }
}

fn parse_number(text: &str, min: u32, max: u32) -> Result<u32, ValueProblem> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ValueProblem::NotANumber);
    }
    // All digits, so failure means overflow: out of range.
    let n = text
        .parse::<u32>()
        .map_err(|_| ValueProblem::OutOfRange { min, max })?;
    if n < min || n > max {
        return Err(ValueProblem::OutOfRange { min, max });
    }
    Ok(n)
}

fn parse_u16(text: &str, min: u16, max: u16) -> Result<u16, ValueProblem> {
    let n = parse_number(text, u32::from(min), u32::from(max))?;
    u16::try_from(n).map_err(|_| ValueProblem::OutOfRange {
        min: u32::from(min),
        max: u32::from(max),
    })
}

#[derive(Default)]
struct InterfaceDraft {
    private_key: Option<Key32>,
    listen_port: Option<u16>,
    addresses: Vec<IpNet>,
    mtu: Option<u16>,
}

impl Section for InterfaceDraft {
    const NAME: &'static str = "Interface";
    const KEYS: &'static [KeySpec<Self>] = &[
        KeySpec::<Self>::once(
            "PrivateKey",
            "key",
            "44 characters of base64, as printed by `wg genkey`",
            |d, v, _| {
                d.private_key = Some(keys::parse_key(v)?);
                Ok(())
            },
        )
        .required()
        .secret(),
        KeySpec::once(
            "ListenPort",
            "port",
            "0..=65535; 0 or no ListenPort picks a free port",
            |d, v, _| {
                let port = parse_u16(v, 0, u16::MAX)?;
                d.listen_port = (port != 0).then_some(port);
                Ok(())
            },
        ),
        KeySpec::list(
            "Address",
            "address",
            "ADDRESS or ADDRESS/PREFIX, e.g. 10.0.0.1/24 or fd00::1/64",
            |d, v, _| {
                let net: IpNet = v.parse()?;
                if !d.addresses.contains(&net) {
                    d.addresses.push(net);
                }
                Ok(())
            },
        ),
        KeySpec::once(
            "MTU",
            "MTU",
            "576..=9000, at least 1280 with an IPv6 Address; default 1420",
            |d, v, _| {
                d.mtu = Some(parse_u16(v, MIN_MTU, MAX_MTU)?);
                Ok(())
            },
        ),
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
}

#[derive(Default)]
struct PeerDraft {
    public_key: Option<[u8; KEY_LEN]>,
    preshared_key: Option<Key32>,
    allowed_ips: Vec<IpNet>,
    endpoint: Option<SocketAddr>,
    persistent_keepalive: Option<u16>,
    bandwidth_mbps: Option<u32>,
    pps: Option<u32>,
}

impl Section for PeerDraft {
    const NAME: &'static str = "Peer";
    const KEYS: &'static [KeySpec<Self>] = &[
        KeySpec::<Self>::once(
            "PublicKey",
            "key",
            "44 characters of base64, as printed by `wg pubkey`",
            |d, v, _| {
                d.public_key = Some(*keys::parse_key(v)?.as_bytes());
                Ok(())
            },
        )
        .required(),
        KeySpec::<Self>::once(
            "PresharedKey",
            "key",
            "44 characters of base64, as printed by `wg genpsk`",
            |d, v, _| {
                d.preshared_key = Some(keys::parse_key(v)?);
                Ok(())
            },
        )
        .secret(),
        KeySpec::list(
            "AllowedIPs",
            "network",
            "ADDRESS/PREFIX, e.g. 10.0.0.0/24",
            |d, v, ctx| {
                let given: IpNet = v.parse()?;
                let network = given.network();
                if network != given {
                    ctx.warn(WarningKind::HostBitsMasked { given, network });
                }
                if !d.allowed_ips.contains(&network) {
                    d.allowed_ips.push(network);
                }
                Ok(())
            },
        ),
        KeySpec::once(
            "Endpoint",
            "endpoint",
            "HOST:PORT, e.g. 192.0.2.1:51820, [fd00::1]:51820 or vpn.example.com:51820",
            |d, v, ctx| {
                d.endpoint = Some(parse_endpoint(v, ctx.resolver)?);
                Ok(())
            },
        ),
        KeySpec::once(
            "PersistentKeepalive",
            "keepalive interval",
            "seconds 0..=65535, or 'off'; 0 and off disable it",
            |d, v, _| {
                d.persistent_keepalive = if v.eq_ignore_ascii_case("off") {
                    None
                } else {
                    Some(parse_u16(v, 0, u16::MAX)?).filter(|&s| s != 0)
                };
                Ok(())
            },
        ),
        KeySpec::once(
            "per_client_bandwidth_mbps",
            "bandwidth",
            "Mb/s 0..=100000 for this peer (0: unlimited); overrides [rate_limiting]",
            |d, v, _| {
                d.bandwidth_mbps = Some(parse_number(v, 0, 100_000)?);
                Ok(())
            },
        ),
        KeySpec::once(
            "per_client_pps",
            "packet rate",
            "packets/s 0..=100000000 for this peer (0: unlimited); overrides [rate_limiting]",
            |d, v, _| {
                d.pps = Some(parse_number(v, 0, 100_000_000)?);
                Ok(())
            },
        ),
    ];
}

fn parse_bool(text: &str) -> Result<bool, ValueProblem> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err(ValueProblem::NotABool),
    }
}

fn parse_secs(text: &str, min: u32, max: u32) -> Result<Duration, ValueProblem> {
    Ok(Duration::from_secs(u64::from(parse_number(
        text, min, max,
    )?)))
}

/// A day, a week, a year: upper bounds that catch typos without limiting anyone.
const DAY: u32 = 86_400;
const YEAR: u32 = 365 * DAY;

impl Section for SessionPolicy {
    const NAME: &'static str = "sessions";
    const KEYS: &'static [KeySpec<Self>] = &[
        KeySpec::<Self>::once(
            "session_timeout",
            "timeout",
            "seconds 10..=604800; default 300",
            |d, v, _| {
                d.session_timeout = parse_secs(v, 10, 7 * DAY)?;
                Ok(())
            },
        ),
        KeySpec::once(
            "idle_warning_sec",
            "timeout",
            "seconds 1..=604800, below session_timeout; default 270",
            |d, v, _| {
                d.idle_warning = parse_secs(v, 1, 7 * DAY)?;
                Ok(())
            },
        ),
        KeySpec::once(
            "absolute_timeout_sec",
            "timeout",
            "seconds 10..=31536000; default 86400",
            |d, v, _| {
                d.absolute_timeout = parse_secs(v, 10, YEAR)?;
                Ok(())
            },
        ),
        KeySpec::once(
            "drain_timeout_sec",
            "timeout",
            "seconds 0..=300; default 5",
            |d, v, _| {
                d.drain_timeout = parse_secs(v, 0, 300)?;
                Ok(())
            },
        ),
        KeySpec::once(
            "keepalive_probe_after_sec",
            "timeout",
            "seconds 1..=86400; default 30",
            |d, v, _| {
                d.probe_after = parse_secs(v, 1, DAY)?;
                Ok(())
            },
        ),
        KeySpec::once(
            "keepalive_probe_interval_sec",
            "interval",
            "seconds 1..=3600; default 12 (a standard peer answers after 10)",
            |d, v, _| {
                d.probe_interval = parse_secs(v, 1, 3600)?;
                Ok(())
            },
        ),
        KeySpec::once(
            "keepalive_probe_count",
            "count",
            "1..=100; default 3",
            |d, v, _| {
                d.probe_count = parse_number(v, 1, 100)?;
                Ok(())
            },
        ),
    ];
}

impl Section for MigrationPolicy {
    const NAME: &'static str = "migration";
    const KEYS: &'static [KeySpec<Self>] = &[
        KeySpec::<Self>::once(
            "enable_session_migration",
            "boolean",
            "true or false; default true",
            |d, v, _| {
                d.enabled = parse_bool(v)?;
                Ok(())
            },
        ),
        KeySpec::once(
            "migration_token_ttl_sec",
            "TTL",
            "seconds 1..=86400; default 300",
            |d, v, _| {
                d.token_ttl = parse_secs(v, 1, DAY)?;
                Ok(())
            },
        ),
        KeySpec::once(
            "max_migrations_per_session",
            "count",
            "0..=1000000; default 5",
            |d, v, _| {
                d.max_per_session = parse_number(v, 0, 1_000_000)?;
                Ok(())
            },
        ),
        KeySpec::once(
            "migration_cooldown_sec",
            "cooldown",
            "seconds 0..=86400; default 10",
            |d, v, _| {
                d.cooldown = parse_secs(v, 0, DAY)?;
                Ok(())
            },
        ),
    ];
}

fn parse_factor(text: &str, min: u32, max: u32) -> Result<f64, ValueProblem> {
    let ok = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && text.bytes().filter(|b| *b == b'.').count() <= 1;
    let v: f64 = if ok {
        text.parse().map_err(|_| ValueProblem::NotANumber)?
    } else {
        return Err(ValueProblem::NotANumber);
    };
    if v < f64::from(min) || v > f64::from(max) {
        return Err(ValueProblem::OutOfRange { min, max });
    }
    Ok(v)
}

fn parse_dscp_list(text: &str) -> Result<u8, ValueProblem> {
    u8::try_from(parse_number(text, 0, 63)?)
        .map_err(|_| ValueProblem::OutOfRange { min: 0, max: 63 })
}

/// `[rate_limiting]` as written; missing keys take the reliability guide's defaults.
#[derive(Default)]
struct RateLimitingDraft {
    bandwidth_mbps: Option<u32>,
    pps: Option<u32>,
    burst: Option<f64>,
    reconnect: Option<u32>,
    penalty_sec: Option<u32>,
}

impl Section for RateLimitingDraft {
    const NAME: &'static str = "rate_limiting";
    const KEYS: &'static [KeySpec<Self>] = &[
        KeySpec::<Self>::once("per_client_bandwidth_mbps", "bandwidth", "Mb/s per client and direction 0..=100000 (0: unlimited); default 100", |d, v, _| {
            d.bandwidth_mbps = Some(parse_number(v, 0, 100_000)?);
            Ok(())
        }),
        KeySpec::once("per_client_pps", "packet rate", "packets/s per client and direction 0..=100000000 (0: unlimited); default 10000", |d, v, _| {
            d.pps = Some(parse_number(v, 0, 100_000_000)?);
            Ok(())
        }),
        KeySpec::once("burst_allowance_factor", "factor", "1..=100, e.g. 1.5 (burst capacity = rate x factor); default 1.5", |d, v, _| {
            d.burst = Some(parse_factor(v, 1, 100)?);
            Ok(())
        }),
        KeySpec::once("reconnect_limit_per_minute", "limit", "new sessions per minute per peer and per source address 0..=100000 (0: unlimited); default 5", |d, v, _| {
            d.reconnect = Some(parse_number(v, 0, 100_000)?);
            Ok(())
        }),
        KeySpec::once("rate_limit_penalty_sec", "penalty", "seconds 0..=3600 without burst after a violation; default 5", |d, v, _| {
            d.penalty_sec = Some(parse_number(v, 0, 3600)?);
            Ok(())
        }),
    ];
}

impl Section for DegradationPolicy {
    const NAME: &'static str = "degradation";
    const KEYS: &'static [KeySpec<Self>] = &[
        KeySpec::<Self>::once(
            "enable_graceful_degradation",
            "boolean",
            "true or false; default true",
            |d, v, _| {
                d.enabled = parse_bool(v)?;
                Ok(())
            },
        ),
        KeySpec::once(
            "cpu_threshold_percent",
            "threshold",
            "percent 1..=100; default 80",
            |d, v, _| {
                d.cpu_threshold_pct = parse_factor(v, 1, 100)?;
                Ok(())
            },
        ),
        KeySpec::once(
            "memory_threshold_percent",
            "threshold",
            "percent 1..=100; default 85",
            |d, v, _| {
                d.memory_threshold_pct = parse_factor(v, 1, 100)?;
                Ok(())
            },
        ),
        KeySpec::once(
            "escalation_delay_sec",
            "delay",
            "seconds 0..=3600; default 5",
            |d, v, _| {
                d.escalation_delay = parse_secs(v, 0, 3600)?;
                Ok(())
            },
        ),
        KeySpec::once(
            "recovery_delay_sec",
            "delay",
            "seconds 0..=3600; default 10",
            |d, v, _| {
                d.recovery_delay = parse_secs(v, 0, 3600)?;
                Ok(())
            },
        ),
        KeySpec::once(
            "hysteresis_percent",
            "margin",
            "percentage points 0..=50; default 5",
            |d, v, _| {
                d.hysteresis_pct = parse_factor(v, 0, 50)?;
                Ok(())
            },
        ),
    ];
}

/// `[priority]` as written.
#[derive(Default)]
struct PriorityDraft {
    high: Option<Vec<u8>>,
    low: Option<Vec<u8>>,
    high_water: Option<u32>,
}

impl Section for PriorityDraft {
    const NAME: &'static str = "priority";
    const KEYS: &'static [KeySpec<Self>] = &[
        KeySpec::<Self>::list(
            "high_dscp",
            "DSCP",
            "code points 0..=63, comma-separated; default 46, 40, 48, 56 (EF, CS5-CS7)",
            |d, v, _| {
                d.high
                    .get_or_insert_with(Vec::new)
                    .push(parse_dscp_list(v)?);
                Ok(())
            },
        ),
        KeySpec::list(
            "low_dscp",
            "DSCP",
            "code points 0..=63, comma-separated; default 8 (CS1)",
            |d, v, _| {
                d.low.get_or_insert_with(Vec::new).push(parse_dscp_list(v)?);
                Ok(())
            },
        ),
        KeySpec::once(
            "ring_high_water_percent",
            "high-water mark",
            "percent 0..=100 of the RX ring; default 75",
            |d, v, _| {
                d.high_water = Some(parse_number(v, 0, 100)?);
                Ok(())
            },
        ),
    ];
}

/// Section of a key that is not in `S`, if another section has it. One line per section.
fn other_section_with(key: &str) -> Option<&'static str> {
    fn has<S: Section>(key: &str) -> bool {
        S::KEYS.iter().any(|k| k.name.eq_ignore_ascii_case(key))
            || S::IGNORED.iter().any(|k| k.eq_ignore_ascii_case(key))
    }
    if has::<InterfaceDraft>(key) {
        return Some(InterfaceDraft::NAME);
    }
    if has::<PeerDraft>(key) {
        return Some(PeerDraft::NAME);
    }
    if has::<SessionPolicy>(key) {
        return Some(SessionPolicy::NAME);
    }
    if has::<MigrationPolicy>(key) {
        return Some(MigrationPolicy::NAME);
    }
    if has::<RateLimitingDraft>(key) {
        return Some(RateLimitingDraft::NAME);
    }
    if has::<DegradationPolicy>(key) {
        return Some(DegradationPolicy::NAME);
    }
    if has::<PriorityDraft>(key) {
        return Some(PriorityDraft::NAME);
    }
    ops::section_with(key)
}

/// Lower-case and drop separators, so `allowed_ips`, `Allowed-IPs` and `AllowedIPs` compare equal.
fn fold_key(key: &str) -> Vec<u8> {
    key.bytes()
        .filter(|b| !matches!(b, b'_' | b'-' | b' '))
        .map(|b| b.to_ascii_lowercase())
        .collect()
}

/// Edit distance, for "did you mean". Inputs are short (names of at most 32 bytes).
fn edit_distance(a: &[u8], b: &[u8]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, &ca) in a.iter().enumerate() {
        cur.fill(0);
        if let Some(first) = cur.first_mut() {
            *first = i + 1;
        }
        for (j, &cb) in b.iter().enumerate() {
            let substitute = prev.get(j).copied().unwrap_or(0) + usize::from(ca != cb);
            let delete = prev.get(j + 1).copied().unwrap_or(0) + 1;
            let insert = cur.get(j).copied().unwrap_or(0) + 1;
            if let Some(slot) = cur.get_mut(j + 1) {
                *slot = substitute.min(delete).min(insert);
            }
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev.last().copied().unwrap_or(0)
}

fn key_hint<S: Section>(key: &str) -> Option<KeyHint> {
    if let Some(other) = other_section_with(key) {
        return Some(KeyHint::BelongsIn(other));
    }
    let folded = fold_key(key);
    S::KEYS
        .iter()
        .map(|k| (k.name, edit_distance(&folded, &fold_key(k.name))))
        .filter(|&(_, d)| d <= 2)
        .min_by_key(|&(_, d)| d)
        .map(|(name, _)| KeyHint::DidYouMean(name))
}

// ---------------------------------------------------------------------------------------------
// The parser

/// Open a section that may appear once: a second header is an error and its keys are skipped.
fn open_once<S: Section>(
    sink: &mut Sink<'_>,
    slot: &mut Option<SectionState<S>>,
    line: usize,
    open: Open,
) -> Open {
    if let Some(first) = slot {
        sink.error(
            Some(line),
            ConfigErrorKind::DuplicateSection {
                section: S::NAME,
                first_line: first.header_line,
            },
        );
        return Open::Skipped;
    }
    *slot = Some(SectionState::new(line));
    open
}

/// Where errors and warnings go, kept apart from the sections so both can be borrowed at once.
struct Sink<'a> {
    file: &'a str,
    resolver: &'a dyn Resolve,
    errors: Vec<ConfigError>,
    warnings: Vec<ConfigWarning>,
}

impl Sink<'_> {
    fn error(&mut self, line: Option<usize>, kind: ConfigErrorKind) {
        self.errors.push(ConfigError {
            file: self.file.to_string(),
            line,
            kind,
        });
    }

    /// Applies `key = value` (already trimmed) to a section.
    fn apply<S: Section>(
        &mut self,
        state: &mut SectionState<S>,
        key: &str,
        value: &str,
        line: usize,
    ) {
        let Some(spec) = S::KEYS.iter().find(|k| k.name.eq_ignore_ascii_case(key)) else {
            if let Some(&ignored) = S::IGNORED.iter().find(|k| k.eq_ignore_ascii_case(key)) {
                self.warnings.push(ConfigWarning {
                    file: self.file.to_string(),
                    line: Some(line),
                    kind: WarningKind::IgnoredKey { key: ignored },
                });
                return;
            }
            let echoed = echo_name(key);
            let hint = match echoed {
                Echo::Text(_) => key_hint::<S>(key),
                Echo::Redacted => None,
            };
            self.error(
                Some(line),
                ConfigErrorKind::UnknownKey {
                    section: S::NAME,
                    key: echoed,
                    hint,
                    known: S::KEYS.iter().map(|k| k.name).collect(),
                },
            );
            return;
        };
        match (spec.arity, state.line_of(spec.name)) {
            (Arity::Once, Some(first_line)) => {
                self.error(
                    Some(line),
                    ConfigErrorKind::DuplicateKey {
                        key: spec.name,
                        first_line,
                    },
                );
                return;
            }
            (_, None) => state.seen.push((spec.name, line)),
            (Arity::List, Some(_)) => {}
        }
        let items: Vec<&str> = match spec.arity {
            Arity::Once => vec![value],
            Arity::List => value.split(',').map(str::trim).collect(),
        };
        for item in items {
            let result = if item.is_empty() {
                Err(ValueProblem::Empty)
            } else {
                let mut ctx = ValueCtx {
                    file: self.file,
                    line,
                    warnings: &mut self.warnings,
                    resolver: self.resolver,
                };
                (spec.set)(&mut state.draft, item, &mut ctx)
            };
            if let Err(problem) = result {
                self.error(
                    Some(line),
                    ConfigErrorKind::InvalidValue {
                        key: spec.name,
                        value: if spec.secret {
                            Echo::Redacted
                        } else {
                            echo_value(item)
                        },
                        what: spec.what,
                        problem,
                        expected: spec.expected,
                    },
                );
            }
        }
    }

    /// Reports required keys that never appeared. Returns whether all were there.
    fn check_required<S: Section>(&mut self, state: &SectionState<S>) -> bool {
        let mut complete = true;
        for spec in S::KEYS.iter().filter(|k| k.required) {
            if state.line_of(spec.name).is_none() {
                complete = false;
                self.error(
                    Some(state.header_line),
                    ConfigErrorKind::MissingKey {
                        section: S::NAME,
                        key: spec.name,
                        expected: spec.expected,
                    },
                );
            }
        }
        complete
    }
}

/// Which section the following `Key = Value` lines belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    /// Before the first header.
    Nothing,
    Interface,
    Peer,
    Sessions,
    Migration,
    RateLimiting,
    Degradation,
    Priority,
    /// `[logging]`, `[metrics]` or `[threading]`.
    Ops(ops::OpsSection),
    /// An unknown or repeated section, already reported: its keys are ignored.
    Skipped,
}

struct Parser<'a> {
    sink: Sink<'a>,
    open: Open,
    interface: Option<SectionState<InterfaceDraft>>,
    peers: Vec<SectionState<PeerDraft>>,
    sessions: Option<SectionState<SessionPolicy>>,
    migration: Option<SectionState<MigrationPolicy>>,
    rate_limiting: Option<SectionState<RateLimitingDraft>>,
    degradation: Option<SectionState<DegradationPolicy>>,
    priority: Option<SectionState<PriorityDraft>>,
    ops: ops::OpsDrafts,
}

impl<'a> Parser<'a> {
    fn new(file: &'a str, resolver: &'a dyn Resolve) -> Self {
        Self {
            sink: Sink {
                file,
                resolver,
                errors: Vec::new(),
                warnings: Vec::new(),
            },
            open: Open::Nothing,
            interface: None,
            peers: Vec::new(),
            sessions: None,
            migration: None,
            rate_limiting: None,
            degradation: None,
            priority: None,
            ops: ops::OpsDrafts::default(),
        }
    }

    fn line(&mut self, raw: &str, line: usize) {
        // Like wg-quick: everything from '#' on is a comment. Base64 has no '#', so keys are safe.
        let text = raw.split('#').next().unwrap_or("").trim();
        if text.is_empty() {
            return;
        }
        if let Some(rest) = text.strip_prefix('[') {
            match rest.strip_suffix(']') {
                Some(name) if !name.contains(['[', ']']) => self.header(name.trim(), line),
                _ => {
                    self.sink
                        .error(Some(line), ConfigErrorKind::MalformedSection);
                    self.open = Open::Skipped;
                }
            }
            return;
        }
        // Split at the first '=': base64 values end in '='.
        let Some((key, value)) = text.split_once('=') else {
            self.sink.error(Some(line), ConfigErrorKind::MalformedLine);
            return;
        };
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() {
            self.sink.error(Some(line), ConfigErrorKind::MalformedLine);
            return;
        }
        match self.open {
            Open::Nothing => self.sink.error(
                Some(line),
                ConfigErrorKind::KeyOutsideSection {
                    key: echo_name(key),
                },
            ),
            Open::Skipped => {}
            Open::Interface => {
                if let Some(state) = self.interface.as_mut() {
                    self.sink.apply(state, key, value, line);
                }
            }
            Open::Peer => {
                if let Some(state) = self.peers.last_mut() {
                    self.sink.apply(state, key, value, line);
                }
            }
            Open::Sessions => {
                if let Some(state) = self.sessions.as_mut() {
                    self.sink.apply(state, key, value, line);
                }
            }
            Open::Migration => {
                if let Some(state) = self.migration.as_mut() {
                    self.sink.apply(state, key, value, line);
                }
            }
            Open::RateLimiting => {
                if let Some(state) = self.rate_limiting.as_mut() {
                    self.sink.apply(state, key, value, line);
                }
            }
            Open::Degradation => {
                if let Some(state) = self.degradation.as_mut() {
                    self.sink.apply(state, key, value, line);
                }
            }
            Open::Priority => {
                if let Some(state) = self.priority.as_mut() {
                    self.sink.apply(state, key, value, line);
                }
            }
            Open::Ops(which) => self.ops.apply(which, &mut self.sink, key, value, line),
        }
    }

    fn header(&mut self, name: &str, line: usize) {
        if name.eq_ignore_ascii_case(InterfaceDraft::NAME) {
            if let Some(first) = &self.interface {
                self.sink.error(
                    Some(line),
                    ConfigErrorKind::DuplicateSection {
                        section: InterfaceDraft::NAME,
                        first_line: first.header_line,
                    },
                );
                self.open = Open::Skipped;
            } else {
                self.interface = Some(SectionState::new(line));
                self.open = Open::Interface;
            }
        } else if name.eq_ignore_ascii_case(PeerDraft::NAME) {
            self.peers.push(SectionState::new(line));
            self.open = Open::Peer;
        } else if name.eq_ignore_ascii_case(SessionPolicy::NAME) {
            self.open = open_once(&mut self.sink, &mut self.sessions, line, Open::Sessions);
        } else if name.eq_ignore_ascii_case(MigrationPolicy::NAME) {
            self.open = open_once(&mut self.sink, &mut self.migration, line, Open::Migration);
        } else if name.eq_ignore_ascii_case(RateLimitingDraft::NAME) {
            self.open = open_once(
                &mut self.sink,
                &mut self.rate_limiting,
                line,
                Open::RateLimiting,
            );
        } else if name.eq_ignore_ascii_case(DegradationPolicy::NAME) {
            self.open = open_once(
                &mut self.sink,
                &mut self.degradation,
                line,
                Open::Degradation,
            );
        } else if name.eq_ignore_ascii_case(PriorityDraft::NAME) {
            self.open = open_once(&mut self.sink, &mut self.priority, line, Open::Priority);
        } else if let Some(open) = self.ops.header(name, line, &mut self.sink) {
            self.open = open;
        } else {
            self.sink.error(
                Some(line),
                ConfigErrorKind::UnknownSection {
                    name: echo_name(name),
                },
            );
            self.open = Open::Skipped;
        }
    }

    fn finish(mut self) -> Result<Config, ConfigErrors> {
        let interface = self.finish_interface();
        let own_public = interface
            .as_ref()
            .map(|i| keys::public_from_private(i.private_key.as_bytes()));
        let peers = std::mem::take(&mut self.peers);
        let mut by_key: HashMap<[u8; KEY_LEN], usize> = HashMap::new();
        let mut by_network: HashMap<IpNet, usize> = HashMap::new();
        let mut done = Vec::with_capacity(peers.len());
        for state in peers {
            if let Some(peer) = self.finish_peer(state, own_public, &mut by_key, &mut by_network) {
                done.push(peer);
            }
        }
        let sessions = self.finish_sessions();
        let migration = self.migration.take().map(|s| s.draft).unwrap_or_default();
        let protection = self.finish_protection(&done);
        let mut sink = self.sink;
        let ops = self.ops.finish(&mut sink);
        match interface {
            Some(interface) if sink.errors.is_empty() => Ok(Config {
                interface,
                peers: done,
                sessions,
                migration,
                protection,
                logging: ops.logging,
                metrics: ops.metrics,
                threading: ops.threading,
                warnings: sink.warnings,
            }),
            _ => {
                // Stable, so errors of one line keep their left-to-right order.
                sink.errors.sort_by_key(|e| e.line);
                Err(ConfigErrors(sink.errors))
            }
        }
    }

    fn finish_protection(&mut self, peers: &[PeerConfig]) -> ProtectionConfig {
        let rl = self
            .rate_limiting
            .take()
            .map(|s| s.draft)
            .unwrap_or_default();
        let base = RateLimit::DEFAULT;
        let limit = |mbps: Option<u32>, pps: Option<u32>| RateLimit {
            bytes_per_sec: mbps.map_or(base.bytes_per_sec, |m| u64::from(m) * 125_000),
            packets_per_sec: pps.map_or(base.packets_per_sec, u64::from),
            burst_factor: rl.burst.unwrap_or(base.burst_factor),
            penalty: rl
                .penalty_sec
                .map_or(base.penalty, |s| Duration::from_secs(u64::from(s))),
        };
        let default_limit = limit(rl.bandwidth_mbps, rl.pps);
        let overrides = peers
            .iter()
            .filter(|p| p.bandwidth_mbps.is_some() || p.pps.is_some())
            .map(|p| {
                (
                    p.public_key,
                    limit(p.bandwidth_mbps.or(rl.bandwidth_mbps), p.pps.or(rl.pps)),
                )
            })
            .collect();
        let priority = self.priority.take().map(|s| s.draft).unwrap_or_default();
        let defaults = ProtectionConfig::default();
        let priorities = match (&priority.high, &priority.low) {
            (None, None) => defaults.priorities,
            (high, low) => PriorityMap::new(
                high.as_deref().unwrap_or(&[46, 40, 48, 56]),
                low.as_deref().unwrap_or(&[8]),
            ),
        };
        ProtectionConfig {
            default_limit,
            overrides,
            reconnect_limit_per_minute: rl.reconnect.unwrap_or(defaults.reconnect_limit_per_minute),
            degradation: self.degradation.take().map(|s| s.draft).unwrap_or_default(),
            priorities,
            ring_high_water_pct: priority.high_water.unwrap_or(defaults.ring_high_water_pct),
        }
    }

    fn finish_sessions(&mut self) -> SessionPolicy {
        let Some(state) = self.sessions.take() else {
            return SessionPolicy::default();
        };
        let policy = state.draft;
        if policy.idle_warning >= policy.session_timeout {
            self.sink.error(
                state
                    .line_of("idle_warning_sec")
                    .or(state.line_of("session_timeout")),
                ConfigErrorKind::InvalidValue {
                    key: "idle_warning_sec",
                    value: Echo::Text(policy.idle_warning.as_secs().to_string()),
                    what: "timeout",
                    problem: ValueProblem::MustBeBelow {
                        other: "session_timeout",
                        value: policy.session_timeout.as_secs(),
                    },
                    expected: "a warning before the session expires, e.g. session_timeout - 30",
                },
            );
        }
        policy
    }

    fn finish_interface(&mut self) -> Option<InterfaceConfig> {
        let Some(mut state) = self.interface.take() else {
            self.sink.error(
                None,
                ConfigErrorKind::MissingSection {
                    section: InterfaceDraft::NAME,
                    example_key: "PrivateKey",
                },
            );
            return None;
        };
        let complete = self.sink.check_required(&state);
        let draft = &mut state.draft;
        let has_v6 = draft.addresses.iter().any(|a| a.addr.is_ipv6());
        let mtu = draft.mtu.unwrap_or(DEFAULT_MTU);
        if has_v6 && mtu < MIN_MTU_IPV6 {
            self.sink.error(
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

    fn finish_peer(
        &mut self,
        mut state: SectionState<PeerDraft>,
        own_public: Option<[u8; KEY_LEN]>,
        by_key: &mut HashMap<[u8; KEY_LEN], usize>,
        by_network: &mut HashMap<IpNet, usize>,
    ) -> Option<PeerConfig> {
        let complete = self.sink.check_required(&state);
        let header_line = state.header_line;
        let key_line = state.line_of("PublicKey");
        let allowed_ips_written = state.line_of("AllowedIPs").is_some();
        let draft = &mut state.draft;
        for &network in &draft.allowed_ips {
            if let Some(other_line) = by_network.insert(network, header_line) {
                self.sink.warnings.push(ConfigWarning {
                    file: self.sink.file.to_string(),
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
            self.sink.warnings.push(ConfigWarning {
                file: self.sink.file.to_string(),
                line: Some(header_line),
                kind: WarningKind::NoAllowedIps,
            });
        }
        let public_key = draft.public_key?;
        if own_public == Some(public_key) {
            self.sink.error(key_line, ConfigErrorKind::PeerIsSelf);
        } else if let Some(&first_line) = by_key.get(&public_key) {
            self.sink.error(
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
            line: header_line,
        })
    }
}

impl Config {
    /// Reads and validates the file at `path`, resolving host names in `Endpoint`.
    ///
    /// Messages name the file as `path` was given. Also warns when other users can read the file.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let file = path.display().to_string();
        let fail = |line, kind| {
            ConfigErrors(vec![ConfigError {
                file: file.clone(),
                line,
                kind,
            }])
        };
        // Zeroizing: the buffer holds the private key.
        let bytes =
            Zeroizing::new(fs::read(path).map_err(|e| fail(None, ConfigErrorKind::Read(e)))?);
        let text = match std::str::from_utf8(&bytes) {
            Ok(text) => text,
            Err(e) => {
                let before = bytes.get(..e.valid_up_to()).unwrap_or(&[]);
                let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
                return Err(fail(Some(line), ConfigErrorKind::NotUtf8));
            }
        };
        let mut config = Self::parse(text, &file)?;
        if let Ok(meta) = fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            // Same test as wg-quick: only world access is flagged, a group may be deliberate.
            if mode & 0o007 != 0 {
                config.warnings.insert(
                    0,
                    ConfigWarning {
                        file,
                        line: None,
                        kind: WarningKind::ReadableByOthers { mode },
                    },
                );
            }
        }
        Ok(config)
    }

    /// Parses configuration text; `file_name` is used in messages. Resolves with the system
    /// resolver.
    pub fn parse(text: &str, file_name: &str) -> Result<Config, ConfigErrors> {
        Self::parse_with(text, file_name, &SystemResolver)
    }

    /// [`Config::parse`] with a chosen resolver for `Endpoint` host names.
    pub fn parse_with(
        text: &str,
        file_name: &str,
        resolver: &dyn Resolve,
    ) -> Result<Config, ConfigErrors> {
        // A byte-order mark from some Windows editors would otherwise make line 1 malformed.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut parser = Parser::new(file_name, resolver);
        for (i, raw) in text.lines().enumerate() {
            parser.line(raw, i + 1);
        }
        parser.finish()
    }
}

// ---------------------------------------------------------------------------------------------
// Interface name

/// Why a file name cannot be an interface name.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InterfaceNameProblem {
    /// The path has no file name (e.g. `/` or `..`).
    NoFileName,
    /// The file name is not UTF-8.
    NotUtf8,
    /// Longer than 15 bytes (IFNAMSIZ less the terminating NUL).
    TooLong {
        /// Bytes in the name.
        len: usize,
    },
    /// A character Linux refuses in interface names.
    ForbiddenChar(char),
    /// `.` or `..`.
    DotName,
}

/// A configuration path whose file stem is not a valid Linux interface name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceNameError {
    /// The path as given.
    pub path: String,
    /// What is wrong.
    pub problem: InterfaceNameProblem,
}

impl fmt::Display for InterfaceNameProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InterfaceNameProblem::NoFileName => f.write_str("it has no file name"),
            InterfaceNameProblem::NotUtf8 => f.write_str("the name is not UTF-8"),
            InterfaceNameProblem::TooLong { len } => write!(
                f,
                "the name is {len} bytes, Linux allows at most {MAX_IFNAME_LEN}"
            ),
            InterfaceNameProblem::ForbiddenChar(c) => {
                write!(f, "the name contains {c:?}, which Linux forbids")
            }
            InterfaceNameProblem::DotName => f.write_str("'.' and '..' are not interface names"),
        }
    }
}

impl fmt::Display for InterfaceNameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: cannot name the interface after this file: {}",
            self.path, self.problem
        )?;
        f.write_str(
            " (rename the file to NAME.conf, NAME being 1..=15 characters without '/', ':' \
             or whitespace, e.g. veil0.conf)",
        )
    }
}

impl std::error::Error for InterfaceNameError {}

/// Longest Linux interface name (IFNAMSIZ = 16, including the NUL).
pub const MAX_IFNAME_LEN: usize = 15;

/// The interface name for a configuration file: its stem (`/etc/veil/veil0.conf` → `veil0`),
/// checked against the kernel's rules (`dev_valid_name`).
pub fn interface_name_from_path(path: &Path) -> Result<String, InterfaceNameError> {
    let fail = |problem| InterfaceNameError {
        path: path.display().to_string(),
        problem,
    };
    let stem = path
        .file_stem()
        .ok_or_else(|| fail(InterfaceNameProblem::NoFileName))?;
    let name = stem
        .to_str()
        .ok_or_else(|| fail(InterfaceNameProblem::NotUtf8))?;
    validate_interface_name(name).map_err(fail)
}

/// Check `name` as a Linux interface name (1..=15 bytes, no '/', ':', whitespace or
/// control characters, not "." or "..").
pub fn validate_interface_name(name: &str) -> Result<String, InterfaceNameProblem> {
    if name.is_empty() {
        return Err(InterfaceNameProblem::NoFileName);
    }
    if name.len() > MAX_IFNAME_LEN {
        return Err(InterfaceNameProblem::TooLong { len: name.len() });
    }
    if name == "." || name == ".." {
        return Err(InterfaceNameProblem::DotName);
    }
    if let Some(c) = name
        .chars()
        .find(|&c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(InterfaceNameProblem::ForbiddenChar(c));
    }
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

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
        assert!(
            msgs[0].contains("'fd00::/129' is not a valid network: IPv6 prefix must be 0..=128")
        );
        assert!(msgs[1].contains("'nonsense' is not a valid network: not an IPv4 or IPv6 address"));
        assert!(msgs[2].contains(
            "'10.1.0.0/x' is not a valid network: the prefix after '/' must be a number"
        ));
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
                 (known keys: PrivateKey, ListenPort, Address, MTU)",
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
        assert!(
            msgs[6].contains("Endpoint: '1.2.3.4' is not a valid endpoint: no ':PORT' at the end")
        );
        assert!(msgs[7].contains(
            "PersistentKeepalive: 'soon' is not a valid keepalive interval: not a whole number"
        ));
        // One per line when printed together.
        assert_eq!(ConfigErrors(errs).to_string().lines().count(), 8);
    }

    #[test]
    fn wg_quick_only_keys_are_warnings() {
        let text = format!(
            "{}DNS = 1.1.1.1\npostup = iptables -A FORWARD -i %i -j ACCEPT\nSaveConfig = true\n\
             Table = off\nFwMark = 0x1\n",
            minimal_interface()
        );
        let config = parse(&text).expect("valid");
        let got: Vec<(Option<usize>, WarningKind)> = config
            .warnings
            .iter()
            .map(|w| (w.line, w.kind.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (Some(3), WarningKind::IgnoredKey { key: "DNS" }),
                (Some(4), WarningKind::IgnoredKey { key: "PostUp" }),
                (Some(5), WarningKind::IgnoredKey { key: "SaveConfig" }),
                (Some(6), WarningKind::IgnoredKey { key: "Table" }),
                (Some(7), WarningKind::IgnoredKey { key: "FwMark" }),
            ]
        );
        assert_eq!(
            config.warnings[0].to_string(),
            "veil0.conf:3: DNS: wg-quick setting that veil does not act on, ignored \
             (do it outside veil, or remove the line)"
        );
        // Not echoed: hook commands can hold anything.
        assert!(!config.warnings[1].to_string().contains("iptables"));
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
}
