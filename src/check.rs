//! `veil check PATH`: everything `veil up` checks before it creates anything
//! (the whole file, the interface name from the file name, the CPUs named in
//! `[threading]`), without creating anything.

use std::fmt;
use std::process::ExitCode;

use crate::cli::{CheckArgs, Threading};
use crate::config::{
    interface_name_from_path, Config, ConfigErrors, InterfaceNameError, LogFormat, Table,
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
    let line = match wg_quick_part(&config) {
        Some(extra) => format!("{line}; wg-quick: {extra}"),
        None => line,
    };
    let warnings = config.warnings.iter().map(ToString::to_string).collect();
    Ok((line, warnings))
}

/// What `veil up` will do of wg-quick's own keys (hooks, routing, DNS, SaveConfig), if any.
fn wg_quick_part(config: &Config) -> Option<String> {
    let i = &config.interface;
    let mut parts = Vec::new();
    for (key, lines) in [
        ("PreUp", &i.hooks.pre_up),
        ("PostUp", &i.hooks.post_up),
        ("PreDown", &i.hooks.pre_down),
        ("PostDown", &i.hooks.post_down),
    ] {
        if !lines.is_empty() {
            parts.push(format!("{} {key}", lines.len()));
        }
    }
    let nets = || config.peers.iter().flat_map(|p| &p.allowed_ips);
    match i.table {
        Table::Auto => {
            let families: Vec<&str> = [(false, "IPv4"), (true, "IPv6")]
                .into_iter()
                .filter(|(v6, _)| nets().any(|n| n.prefix == 0 && n.addr.is_ipv6() == *v6))
                .map(|(_, name)| name)
                .collect();
            if !families.is_empty() {
                parts.push(format!(
                    "full tunnel ({}) through policy routing",
                    families.join(", ")
                ));
            }
        }
        Table::Off => parts.push("Table off: no routes".to_string()),
        Table::Id(t) => parts.push(format!("routes in table {t}")),
    }
    if i.fwmark != 0 {
        parts.push(format!("FwMark 0x{:x}", i.fwmark));
    }
    if !i.dns.is_empty() {
        parts.push("DNS through resolvconf".to_string());
    }
    if i.save_config {
        parts.push("SaveConfig".to_string());
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}
