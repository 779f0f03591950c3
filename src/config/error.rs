//! Errors and warnings of a config file: what is wrong (`ConfigErrorKind`, `ValueProblem`),
//! where (`ConfigError`: file and line), and how it is shown to people (`Display`: the
//! place, the offending value or `<redacted>`, and the fix).

use std::fmt;
use std::io;

use super::endpoint::EndpointError;
use super::interface::MIN_MTU_IPV6;
use super::table::{known_sections, section_with};
use super::IpNetError;
use crate::keys::KeyError;
use veil_dataplane::route::IpNet;

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

pub(super) fn echo_value(text: &str) -> Echo {
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

pub(super) fn echo_name(text: &str) -> Echo {
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
                    Echo::Text(k) => section_with(k),
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
