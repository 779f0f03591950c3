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
    let rest: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
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
        Command::Up(args) => runtime::up(args),
        Command::Check(args) => check::check(&args),
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
