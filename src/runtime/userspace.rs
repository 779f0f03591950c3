//! The userspace-implementation convention: wg-quick (and tools built on it) start a
//! userspace WireGuard as `$WG_QUICK_USERSPACE_IMPLEMENTATION INTERFACE`, as they start
//! wireguard-go. Invoked as `veil-wg` (a link to the `veil` binary), veil follows it:
//! `veil-wg [-f|--foreground] INTERFACE` creates the TUN device and the UAPI socket with no
//! peers and a throw-away key, runs veil's dataplane, and is configured afterwards through
//! `wg` (wg-quick's `wg setconf`, then its `ip` commands for addresses, MTU and routes).
//! Without `-f` it daemonises: it starts itself again in the foreground, in its own process
//! group, and exits 0 once the UAPI socket answers. It stops on SIGTERM/SIGINT, or when the
//! UAPI socket file is removed (wg-quick's `down`).

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use super::{prepare, run, EXIT_CONFIG};
use crate::cli::UpArgs;
use crate::config::Config;

/// The name veil answers to as a userspace implementation (`argv[0]`'s file name).
pub const COMMAND_NAME: &str = "veil-wg";
/// How long the daemonising parent waits for the daemon's UAPI socket.
const READY_WAIT: Duration = Duration::from_secs(15);

/// Whether the process was started as [`COMMAND_NAME`].
pub fn invoked_as(argv0: &str) -> bool {
    Path::new(argv0).file_name().and_then(|n| n.to_str()) == Some(COMMAND_NAME)
}

/// `veil-wg [-f|--foreground] INTERFACE` (`args` without `argv[0]`).
pub fn main(args: &[String]) -> ExitCode {
    let mut foreground = false;
    let mut name = None;
    for a in args {
        match a.as_str() {
            "-f" | "--foreground" => foreground = true,
            "--version" => {
                println!("veil {}", env!("CARGO_PKG_VERSION"));
                return ExitCode::SUCCESS;
            }
            other if name.is_none() && !other.starts_with('-') => name = Some(other.to_string()),
            _ => return usage(),
        }
    }
    let Some(name) = name else {
        return usage();
    };
    if let Err(e) = crate::config::validate_interface_name(&name) {
        eprintln!("{COMMAND_NAME}: interface '{name}': {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    if foreground {
        foreground_main(name)
    } else {
        daemonise(&name)
    }
}

fn usage() -> ExitCode {
    eprintln!("usage: {COMMAND_NAME} [-f|--foreground] INTERFACE-NAME");
    ExitCode::from(EXIT_CONFIG)
}

fn foreground_main(name: String) -> ExitCode {
    // Before any key exists in this process (`wg setconf` brings the real one later).
    let dumps = veil_dataplane::sys::forbid_core_dumps();
    // No key yet: `wg setconf` sets the real one. Until then the device has no peers, so
    // this key answers nobody; it never leaves the process.
    let config = match crate::keys::generate_private() {
        Ok(key) => {
            let text = zeroize::Zeroizing::new(format!(
                "[Interface]\nPrivateKey = {}\n",
                zeroize::Zeroizing::new(crate::keys::encode_key(key.as_bytes())).as_str()
            ));
            Config::parse(&text, &format!("{name}.conf"))
        }
        Err(e) => {
            eprintln!("{COMMAND_NAME}: cannot make a key: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{COMMAND_NAME}: {e}");
            return ExitCode::FAILURE;
        }
    };
    // `veil up`'s defaults for every flag, as the command line would give them.
    let file = format!("{name}.conf");
    let args = match <UpArgs as argh::FromArgs>::from_args(
        &[COMMAND_NAME],
        &[file.as_str(), "--interface", name.as_str()],
    ) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{COMMAND_NAME}: {}", e.output);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let code = match prepare(&args, config, dumps) {
        Ok(mut p) => {
            p.stop_without_uapi_socket = true;
            run(p)
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(EXIT_CONFIG)
        }
    };
    crate::logging::flush();
    code
}

/// Starts the foreground daemon and waits until its UAPI socket answers.
fn daemonise(name: &str) -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("{COMMAND_NAME}: cannot find my own executable: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut child = match Command::new(exe)
        .arg0(COMMAND_NAME)
        .args(["--foreground", name])
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{COMMAND_NAME}: cannot start the daemon: {e}");
            return ExitCode::FAILURE;
        }
    };
    let socket = Path::new(crate::admin::uapi::SOCKET_DIR).join(format!("{name}.sock"));
    let deadline = Instant::now() + READY_WAIT;
    loop {
        if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
            return ExitCode::SUCCESS;
        }
        if let Ok(Some(status)) = child.try_wait() {
            eprintln!(
                "{COMMAND_NAME}: the daemon for {name} exited before it was ready ({status})"
            );
            return ExitCode::FAILURE;
        }
        if Instant::now() >= deadline {
            eprintln!(
                "{COMMAND_NAME}: {} did not appear within {}s",
                socket.display(),
                READY_WAIT.as_secs()
            );
            let _ = child.kill();
            let _ = child.wait();
            return ExitCode::FAILURE;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_to_its_link_name_only() {
        assert!(invoked_as("/usr/bin/veil-wg"));
        assert!(invoked_as("veil-wg"));
        assert!(!invoked_as("/usr/bin/veil"));
        assert!(!invoked_as("veil-wg2"));
    }
}
