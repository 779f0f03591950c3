//! `veil check PATH`: everything `veil up` checks before it creates anything
//! (the whole file, the interface name from the file name, the CPUs named in
//! `[threading]`), without creating anything.

use std::fmt;
use std::process::ExitCode;

use crate::cli::{CheckArgs, Threading};
use crate::config::{
    interface_name_from_path, Config, ConfigErrors, InterfaceNameError, LogFormat,
};
use crate::threading::{self, ThreadFlags, ThreadingError};

/// Exit status for a rejected config, as `veil up`.
const EXIT_CONFIG: u8 = 2;

/// `veil check`: warnings and errors on stderr; the summary on stdout.
pub fn check(args: &CheckArgs) -> ExitCode {
    match summary(args) {
        Ok((line, warnings)) => {
            for w in warnings {
                eprintln!("warning: {w}");
            }
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// Why `veil check` rejects a file; shown as is, exit 2.
#[derive(Debug)]
enum CheckError {
    /// The file itself: every problem, each with its line.
    Config(ConfigErrors),
    /// The file name is no interface name.
    InterfaceName(InterfaceNameError),
    /// `[threading]` names CPUs this machine lacks.
    Threading(ThreadingError),
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(e) => e.fmt(f),
            Self::InterfaceName(e) => e.fmt(f),
            Self::Threading(e) => e.fmt(f),
        }
    }
}

fn summary(args: &CheckArgs) -> Result<(String, Vec<String>), CheckError> {
    let file = args.config.display().to_string();
    let config = Config::load(&args.config).map_err(CheckError::Config)?;
    let name = interface_name_from_path(&args.config).map_err(CheckError::InterfaceName)?;
    let cpus = veil_dataplane::sys::available_cpus();
    let (mode, _) = threading::resolve(&ThreadFlags::default(), &config.threading, &cpus, &file)
        .map_err(CheckError::Threading)?;
    let peers = config.peers.len();
    let port = config.interface.listen_port.map_or_else(
        || "any free UDP port".to_string(),
        |p| format!("UDP port {p}"),
    );
    let log = &config.logging;
    let line = format!(
        "{file}: OK: interface {name}, {peers} peer{}, {port}, {} mode, log level {} ({}), \
         metrics {}",
        if peers == 1 { "" } else { "s" },
        match mode {
            Threading::Pipeline => "pipeline",
            Threading::Single => "single-threaded",
        },
        log.level.as_str().to_ascii_lowercase(),
        match log.format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        },
        if config.metrics.enable {
            format!("on at {}", config.metrics.listen)
        } else {
            "off".to_string()
        }
    );
    let warnings = config.warnings.iter().map(ToString::to_string).collect();
    Ok((line, warnings))
}
