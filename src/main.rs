//! The `veil` binary: CLI, config loading and the runtime that wires the
//! control thread and the dataplane together.
#![deny(unsafe_code)]

mod admin;
mod check;
mod cli;
mod config;
mod failure;
mod keys;
mod logging;
mod notify;
mod procfs;
mod runtime;
#[cfg(debug_assertions)]
mod test_hooks;
mod text;
mod threading;

use std::io::{Read, Write};
use std::process::ExitCode;

use cli::{Cli, Command};

/// Exit status for a command line that could not be parsed.
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args
        .first()
        .is_some_and(|a| runtime::userspace::invoked_as(a))
    {
        return runtime::userspace::main(args.get(1..).unwrap_or_default());
    }
    if args.get(1).map(String::as_str) == Some(runtime::HELPER_ARG) {
        return runtime::privileged_helper_main();
    }
    let rest: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    // As `wg --version` and wireguard-go: the version, and nothing else.
    if rest == ["--version"] {
        println!("veil {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let cli = match <Cli as argh::FromArgs>::from_args(&["veil"], &rest) {
        Ok(cli) => cli,
        Err(exit) => {
            return match exit.status {
                Ok(()) => {
                    println!("{}", exit.output);
                    ExitCode::SUCCESS
                }
                Err(()) => {
                    eprintln!("{}", exit.output);
                    ExitCode::from(EXIT_USAGE)
                }
            };
        }
    };
    match cli.command {
        Command::GenKey(_) => {
            print_key(keys::generate_private().map(|k| keys::encode_key(k.as_bytes())))
        }
        Command::GenPsk(_) => {
            print_key(keys::generate_psk().map(|k| keys::encode_key(k.as_bytes())))
        }
        Command::PubKey(_) => pubkey(),
        Command::Up(mut args) => match config::find_system_config(&args.config) {
            Ok(path) => {
                args.config = path;
                runtime::up(args)
            }
            Err(e) => {
                eprintln!("veil up: {e}");
                ExitCode::from(EXIT_USAGE)
            }
        },
        Command::Down(args) => admin::ctl::down(&args.interface),
        Command::Check(mut args) => match config::find_system_config(&args.config) {
            Ok(path) => {
                args.config = path;
                check::check(&args)
            }
            Err(e) => {
                eprintln!("veil check: {e}");
                ExitCode::from(EXIT_USAGE)
            }
        },
        Command::Show(args) => admin::ctl::show(&args.interface, args.json),
        Command::Health(args) => admin::ctl::health(&args.interface, args.json),
    }
}

fn print_key<E: std::fmt::Display>(key: Result<String, E>) -> ExitCode {
    match key {
        Ok(k) => {
            println!("{k}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("veil: {e}");
            ExitCode::FAILURE
        }
    }
}

fn pubkey() -> ExitCode {
    let mut input = zeroize::Zeroizing::new(String::new());
    // A key is 44 characters; read a little more to tell "too long" apart, never unbounded.
    if let Err(e) = std::io::stdin().take(4096).read_to_string(&mut input) {
        eprintln!("veil pubkey: cannot read standard input: {e}");
        return ExitCode::FAILURE;
    }
    match keys::parse_key(&input) {
        Ok(private) => {
            let public = keys::public_from_private(private.as_bytes());
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", keys::encode_key(&public));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("veil pubkey: {e}");
            ExitCode::FAILURE
        }
    }
}
