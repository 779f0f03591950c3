//! `veil check PATH`: everything `veil up` checks before it creates anything
//! (the whole file, the interface name from the file name, the CPUs named in
//! `[threading]`), without creating anything.

use std::process::ExitCode;

use crate::cli::{CheckArgs, Threading};
use crate::config::{interface_name_from_path, Config, LogFormat};
use crate::threading::{self, ThreadFlags};

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

fn summary(args: &CheckArgs) -> Result<(String, Vec<String>), String> {
    let file = args.config.display().to_string();
    let config = Config::load(&args.config).map_err(|e| e.to_string())?;
    let name = interface_name_from_path(&args.config).map_err(|e| e.to_string())?;
    let cpus = veil_dataplane::sys::available_cpus();
    let (mode, _) = threading::resolve(&ThreadFlags::default(), &config.threading, &cpus, &file)?;
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
