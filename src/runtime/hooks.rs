//! wg-quick's `PreUp`, `PostUp`, `PreDown` and `PostDown`, run as wg-quick runs them: each
//! command line through `bash -c`, `%i` replaced by the interface name, in file order, the
//! line and its output (stdout, then stderr) in the log.
//!
//! The moments are wg-quick's: `PreUp` before anything is created; `PostUp` once the
//! interface is up, addressed and routed and the dataplane runs; `PreDown` when shutdown
//! begins; `PostDown` after the interface is gone. A failing `PreUp` or `PostUp` stops
//! start-up (the caller removes what it made, without the down hooks, as wg-quick's `del_if`
//! trap does); a failing `PreDown` or `PostDown` is logged and shutdown goes on.

use std::fmt;
use std::io::{self, Read};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use log::info;

use crate::config::Hooks;

/// How much of a hook's output is kept for the log and the error (the tail).
const KEEP_OUTPUT: usize = 16 << 10;
/// After the command exits, how long its output may take to reach us (a command that left a
/// child behind with the pipe open would otherwise hold start-up forever).
const OUTPUT_GRACE: Duration = Duration::from_millis(200);

/// The moment a hook runs at, named as in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Moment {
    PreUp,
    PostUp,
    PreDown,
    PostDown,
}

impl Moment {
    /// The moment named as in the file.
    pub(super) fn parse(s: &str) -> Option<Self> {
        [
            Moment::PreUp,
            Moment::PostUp,
            Moment::PreDown,
            Moment::PostDown,
        ]
        .into_iter()
        .find(|m| m.to_string() == s)
    }
}

/// The command lines of `moment`.
pub(super) fn at(hooks: &Hooks, moment: Moment) -> &[String] {
    match moment {
        Moment::PreUp => &hooks.pre_up,
        Moment::PostUp => &hooks.post_up,
        Moment::PreDown => &hooks.pre_down,
        Moment::PostDown => &hooks.post_down,
    }
}

/// [`at`], to add to.
pub(super) fn at_mut(hooks: &mut Hooks, moment: Moment) -> &mut Vec<String> {
    match moment {
        Moment::PreUp => &mut hooks.pre_up,
        Moment::PostUp => &mut hooks.post_up,
        Moment::PreDown => &mut hooks.pre_down,
        Moment::PostDown => &mut hooks.post_down,
    }
}

impl fmt::Display for Moment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Moment::PreUp => "PreUp",
            Moment::PostUp => "PostUp",
            Moment::PreDown => "PreDown",
            Moment::PostDown => "PostDown",
        })
    }
}

/// A hook that did not succeed.
#[derive(Debug)]
pub(crate) struct HookFailed {
    moment: Moment,
    command: String,
    how: Outcome,
    output: String,
}

#[derive(Debug)]
enum Outcome {
    Spawn(io::Error),
    Exited(ExitStatus),
}

impl fmt::Display for HookFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            moment,
            command,
            how,
            output,
        } = self;
        match how {
            Outcome::Spawn(e) => write!(f, "{moment} `{command}`: cannot run bash: {e}")?,
            Outcome::Exited(status) => write!(f, "{moment} `{command}` failed ({status})")?,
        }
        let output = output.trim_end();
        if output.is_empty() {
            f.write_str(", no output")
        } else {
            write!(f, "; its output:\n{output}")
        }
    }
}

impl std::error::Error for HookFailed {}

/// Runs `commands` in order for interface `name`; stops at the first that fails.
pub(super) fn run(moment: Moment, commands: &[String], name: &str) -> Result<(), HookFailed> {
    run_with(moment, commands, name, &mut |line| info!("{name}: {line}"))
}

/// [`run`], each line for the log (`MOMENT: text`) handed to `log`.
pub(super) fn run_with(
    moment: Moment,
    commands: &[String],
    name: &str,
    log: &mut dyn FnMut(&str),
) -> Result<(), HookFailed> {
    for command in commands {
        let command = command.replace("%i", name);
        log(&format!("{moment}: [#] {command}"));
        let fail = |how, output| HookFailed {
            moment,
            command: command.clone(),
            how,
            output,
        };
        let (status, output) =
            run_one(&command).map_err(|e| fail(Outcome::Spawn(e), String::new()))?;
        for line in output.lines() {
            log(&format!("{moment}: {line}"));
        }
        if !status.success() {
            return Err(fail(Outcome::Exited(status), output));
        }
    }
    Ok(())
}

/// Run `program ARGS` with `input` on its stdin, as veil runs the tools wg-quick calls
/// (`nft -f -`, `resolvconf`); a non-zero exit is an error carrying its stderr.
pub(super) fn feed(program: &str, args: &[&str], input: &str) -> io::Result<()> {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// `bash -c COMMAND`, stdin from /dev/null; its output is stdout, then stderr.
fn run_one(command: &str) -> io::Result<(ExitStatus, String)> {
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let out = child.stdout.take().map(drain).transpose()?;
    let err = child.stderr.take().map(drain).transpose()?;
    let status = child.wait()?;
    let mut text = String::new();
    for rx in [out, err].into_iter().flatten() {
        let kept = rx.recv_timeout(OUTPUT_GRACE).unwrap_or_default();
        text.push_str(&String::from_utf8_lossy(&kept));
    }
    Ok((status, text))
}

/// Reads `pipe` on a thread until every writer (the command and whatever it left running)
/// has closed it, keeping the tail, so nothing blocks on a full pipe; sends the tail.
fn drain(mut pipe: impl Read + Send + 'static) -> io::Result<mpsc::Receiver<Vec<u8>>> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("veil-hook-output".into())
        .spawn(move || {
            let mut kept = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        kept.extend_from_slice(buf.get(..n).unwrap_or_default());
                        if kept.len() > KEEP_OUTPUT {
                            kept.drain(..kept.len() - KEEP_OUTPUT);
                        }
                    }
                }
            }
            let _ = tx.send(kept);
        })?;
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(commands: &[&str]) -> Vec<String> {
        commands.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn hooks_run_in_order_with_the_interface_name() {
        let dir = std::env::temp_dir().join(format!("veil-hooks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let out = dir.join("out");
        let o = out.display();
        let commands = lines(&[
            &format!("echo first %i >> {o}"),
            &format!("echo 'second, with = and %i' >> {o}"),
        ]);
        run(Moment::PostUp, &commands, "wgx0").expect("hooks succeed");
        let text = std::fs::read_to_string(&out).expect("read");
        assert_eq!(text, "first wgx0\nsecond, with = and wgx0\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failing_hook_stops_the_rest_and_carries_its_output() {
        let commands = lines(&["echo to-out; echo to-err >&2; exit 3", "echo never"]);
        let e = run(Moment::PreUp, &commands, "wgx1").expect_err("exit 3");
        let text = e.to_string();
        assert!(text.starts_with("PreUp `echo to-out;"), "{text}");
        assert!(text.contains("exit status: 3"), "{text}");
        assert!(text.contains("to-out") && text.contains("to-err"), "{text}");
        assert!(!text.contains("never\n"), "{text}");
    }

    #[test]
    fn a_command_left_running_does_not_hold_the_hook() {
        let start = std::time::Instant::now();
        run(Moment::PostUp, &lines(&["sleep 60 &"]), "wgx2").expect("backgrounded");
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "waited for the child"
        );
    }
}
