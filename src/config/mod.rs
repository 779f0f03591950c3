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
//! keys may repeat. wg-quick's own keys (PreUp/PostUp/PreDown/PostDown, Table, FwMark, DNS,
//! SaveConfig) are acted on as wg-quick acts on them, so the same file works with both tools.
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
//! Layout: each section has its own file (its draft, its table of keys, and how it lands in
//! [`Config`]); `table.rs` lists the sections, `parser.rs` reads the lines, `error.rs` holds
//! the errors and warnings, `value.rs` the shared value parsers, `endpoint.rs` host-name
//! resolution and `ifname.rs` interface names. Adding a section: write its file, add its row
//! to `table::SECTIONS` and its field to [`Config`] (see `table.rs`).

#![deny(unsafe_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use zeroize::Zeroizing;

mod endpoint;
mod error;
mod ifname;
mod interface;
mod logging;
mod metrics;
mod output;
mod parser;
mod peer;
mod protection;
mod section;
mod sessions;
mod table;
mod threading;
mod value;

pub use endpoint::{Resolve, SystemResolver};
pub use error::{ConfigError, ConfigErrorKind, ConfigErrors, ConfigWarning, WarningKind};
pub use ifname::{
    find_system_config, interface_name_from_path, validate_interface_name, InterfaceNameError,
    InterfaceNameProblem,
};
pub use output::{
    Config, CpuSetting, Dns, Hooks, LogFormat, LoggingConfig, MetricsConfig, Table, ThreadingConfig,
};

use parser::Parser;

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

#[cfg(test)]
mod tests;
