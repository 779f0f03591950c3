//! Interface names: taken from the config file's name, as wg-quick does, and checked against
//! the kernel's rules.

use std::fmt;
use std::path::Path;

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
