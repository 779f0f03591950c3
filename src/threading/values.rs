//! The values the threading flags and config keys take: the mode, `pipelines = auto | N`
//! and CPU lists. A leaf: the CLI, the config parser and the layout all read these types, and
//! this module reads none of them.

use std::fmt;
use std::str::FromStr;

/// Threading mode of the dataplane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threading {
    /// RX, crypto and TX threads joined by rings.
    Pipeline,
    /// One thread runs every stage and the control work.
    Single,
}

/// A `--threading` value that is neither mode (as given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownThreadingMode(String);

impl fmt::Display for UnknownThreadingMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self(given) = self;
        write!(f, "'{given}' is not a threading mode: ")?;
        f.write_str("expected 'pipeline' or 'single'")
    }
}

impl std::error::Error for UnknownThreadingMode {}

// argh parses `--threading` through this (`FromArgValue` for every `FromStr`).
impl FromStr for Threading {
    type Err = UnknownThreadingMode;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "pipeline" => Ok(Threading::Pipeline),
            "single" => Ok(Threading::Single),
            other => Err(UnknownThreadingMode(other.to_string())),
        }
    }
}

/// Most pipelines one interface runs.
pub const MAX_PIPELINES: usize = 64;

/// `pipelines = auto | N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipelineCount {
    /// From the CPUs this process may use (see the module docs).
    Auto,
    /// Exactly this many (1..=[`MAX_PIPELINES`]).
    Fixed(usize),
}

impl PipelineCount {
    /// The number of pipelines in `mode` with `cpus` usable CPUs.
    pub fn resolve(self, mode: Threading, cpus: usize) -> usize {
        match (self, mode) {
            (Self::Fixed(n), _) => n,
            (Self::Auto, Threading::Single) => 1,
            (Self::Auto, Threading::Pipeline) => (cpus / 3).clamp(1, MAX_PIPELINES),
        }
    }
}

/// A `--pipelines` or `--cpus` value that is not one (as given, and what was expected).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadValue {
    given: String,
    expected: &'static str,
}

impl fmt::Display for BadValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "'{}' is not {}", self.given, self.expected)
    }
}

impl std::error::Error for BadValue {}

impl std::str::FromStr for PipelineCount {
    type Err = BadValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("auto") {
            return Ok(Self::Auto);
        }
        match s.parse::<usize>() {
            Ok(n) if (1..=MAX_PIPELINES).contains(&n) && s.bytes().all(|b| b.is_ascii_digit()) => {
                Ok(Self::Fixed(n))
            }
            _ => Err(BadValue {
                given: s.to_string(),
                expected: "a pipeline count: auto or 1 to 64",
            }),
        }
    }
}

/// A CPU list as the kernel writes them (`0-3,8,10-11`): in the order given, no repeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList(pub Vec<usize>);

/// Largest CPU number a list may name (`CONFIG_NR_CPUS` maximum).
const LIST_MAX_CPU: usize = 8191;

impl std::str::FromStr for CpuList {
    type Err = BadValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadValue {
            given: s.to_string(),
            expected: "a CPU list: e.g. 0-11 or 0,2,4-7, each CPU once, none above 8191",
        };
        let cpu = |t: &str| {
            t.parse::<usize>()
                .ok()
                .filter(|c| *c <= LIST_MAX_CPU && t.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(bad)
        };
        let mut out = Vec::new();
        for item in s.split(',') {
            let (lo, hi) = match item.trim().split_once('-') {
                Some((a, b)) => (cpu(a.trim())?, cpu(b.trim())?),
                None => (cpu(item.trim())?, cpu(item.trim())?),
            };
            if lo > hi {
                return Err(bad());
            }
            for c in lo..=hi {
                if out.contains(&c) {
                    return Err(bad());
                }
                out.push(c);
            }
        }
        Ok(Self(out))
    }
}
