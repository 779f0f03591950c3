//! Least privilege for `veil up`.
//!
//! veil starts as root (it creates the TUN device, binds the sockets and sets up routes) and,
//! once all of that exists and before any thread that serves traffic or operators starts,
//! becomes an unprivileged user (`--user`; default `veil`, else `nobody`) keeping only
//! `CAP_NET_ADMIN` (routes for AllowedIPs added by `wg set`, forced socket buffer sizes), with
//! `NO_NEW_PRIVS` set. `--user root` keeps root.
//!
//! Some things need root after that point, and a small helper keeps it for them: wg-quick's
//! `PostUp`, `PreDown` and `PostDown` hooks (firewall rules, DNS: run as root, as wg-quick
//! runs them), removing the UAPI socket from `/run/wireguard`, a directory the
//! unprivileged user cannot write, and what `DNS =` and full-tunnel routing leave to undo at
//! exit (`resolvconf -d`, deleting the `veil-IFACE` nft tables: [`ExitWork`]). Before the drop veil starts its own binary again as that
//! helper (fork and exec: no key material, no config, no network input reach it) and hands it
//! the hook lines, the socket paths and the exit work on a pipe. From then on the helper takes
//! exactly three one-word requests, `PostUp`, `PreDown` and `PostDown`, each at most once and
//! in that order, and runs the hooks of that moment; it removes the sockets and does the exit
//! work before `PostDown`'s hooks (wg-quick's order: the interface is gone, then `unset_dns`,
//! `remove_firewall`, the hooks) or when the pipe closes (veil ended). It ignores the shutdown signals (the service manager signals the
//! whole group at stop; veil tells the helper when to run the down hooks).

use std::fmt;
use std::io::{self, BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio};

use log::{error, info};
use veil_dataplane::sys::{self, privilege};

use super::hooks::{self, HookFailed, Moment};
use crate::config::Hooks;

/// The user `veil up` runs as without `--user`.
pub const DEFAULT_USER: &str = "veil";
/// The one taken when there is no [`DEFAULT_USER`] account.
pub const FALLBACK_USER: &str = "nobody";
/// `--user root`: keep root.
pub const KEEP_ROOT: &str = "root";
/// `argv[1]` that makes the binary the privileged helper.
pub const HELPER_ARG: &str = "__veil-privileged-helper";

/// What to do about privileges once the interface is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Root was asked for (`--user root`): nothing changes.
    KeepRoot,
    /// Become this account, keeping `CAP_NET_ADMIN`.
    Drop(privilege::Account),
    /// Not started as root: keep `CAP_NET_ADMIN` of what was given, nothing else.
    Restrict,
}

/// `--user` cannot be honoured.
#[derive(Debug)]
pub enum UserError {
    /// No such account.
    NoSuchUser(String),
    /// The account database could not be read.
    Lookup(String, io::Error),
    /// Neither the default nor the fallback account exists.
    NoDefault,
}

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserError::NoSuchUser(u) => write!(f, "--user {u}: no such user"),
            UserError::Lookup(u, e) => write!(f, "--user {u}: cannot look the user up: {e}"),
            UserError::NoDefault => write!(
                f,
                "no '{DEFAULT_USER}' or '{FALLBACK_USER}' user to run as: create one (scripts/install-deps.sh makes '{DEFAULT_USER}'), or pass --user NAME (--user {KEEP_ROOT} keeps root)"
            ),
        }
    }
}

impl std::error::Error for UserError {}

/// Decide from `--user` (and whether veil runs as root) before anything is created.
pub fn plan(user: Option<&str>) -> Result<Plan, UserError> {
    plan_for(user, sys::privilege::effective_uid(), &|n| {
        sys::privilege::lookup_user(n)
    })
}

type Lookup<'a> = &'a dyn Fn(&str) -> io::Result<Option<privilege::Account>>;

fn plan_for(user: Option<&str>, euid: u32, lookup: Lookup<'_>) -> Result<Plan, UserError> {
    if user == Some(KEEP_ROOT) {
        return Ok(Plan::KeepRoot);
    }
    if euid != 0 {
        return Ok(Plan::Restrict);
    }
    let find = |n: &str| lookup(n).map_err(|e| UserError::Lookup(n.to_string(), e));
    let account = match user {
        Some(n) => find(n)?.ok_or_else(|| UserError::NoSuchUser(n.to_string()))?,
        None => match find(DEFAULT_USER)? {
            Some(a) => a,
            None => find(FALLBACK_USER)?.ok_or(UserError::NoDefault)?,
        },
    };
    Ok(if account.uid == 0 {
        Plan::KeepRoot
    } else {
        Plan::Drop(account)
    })
}

/// Who runs the hooks after start-up: veil itself (it kept root, or never had it), or the
/// privileged helper.
#[derive(Debug)]
pub enum HookRunner {
    /// In this process.
    Local { name: String, hooks: Hooks },
    /// In the helper.
    Helper(Helper),
}

/// A hook moment did not succeed.
#[derive(Debug)]
pub enum HookError {
    /// A hook failed (run here or by the helper): the report, as [`HookFailed`] says it.
    Failed(String),
    /// The helper could not be asked (it is gone).
    Lost(io::Error),
}

impl fmt::Display for HookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HookError::Failed(text) => f.write_str(text),
            HookError::Lost(e) => write!(f, "the privileged helper that runs the hooks: {e}"),
        }
    }
}

impl std::error::Error for HookError {}

impl HookRunner {
    /// Run the hooks of `moment` (`PostUp`, `PreDown` or `PostDown`).
    pub fn run(&mut self, moment: Moment) -> Result<(), HookError> {
        match self {
            HookRunner::Local { name, hooks } => hooks::run(moment, hooks::at(hooks, moment), name)
                .map_err(|e: HookFailed| HookError::Failed(e.to_string())),
            HookRunner::Helper(h) => h.request(moment),
        }
    }

    /// A live hand-off completed: the socket files belong to the new process now, so the
    /// helper must not remove them when veil ends.
    pub fn release_sockets(&mut self) {
        if let HookRunner::Helper(h) = self {
            if let Some(to) = h.to.as_mut() {
                let _ = to.write_all(b"release\n").and_then(|()| to.flush());
            }
        }
    }

    /// [`Self::run`] for the down hooks: a failure is logged and shutdown goes on.
    pub fn run_logged(&mut self, moment: Moment) {
        if let Err(e) = self.run(moment) {
            let name = match self {
                HookRunner::Local { name, .. } => name.as_str(),
                HookRunner::Helper(h) => h.name.as_str(),
            };
            error!("{name}: {e}");
        }
    }
}

/// What is left to undo at exit that needs root, handed to the helper when veil drops root.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ExitWork {
    /// The resolvconf record `DNS =` made (`resolvconf -d RECORD -f`).
    pub dns: Option<String>,
    /// The nft families (`ip`, `ip6`) whose `veil-IFACE` table full-tunnel routing loaded.
    pub nft: Vec<&'static str>,
}

/// Give up root as `plan` says, once everything that needs it exists; `sockets` are the
/// socket files to remove at the end, `exit` the rest of the exit work the helper does (a
/// plan that keeps root, or never had it, gets none: veil does its own). Returns who runs the
/// later hooks.
pub fn apply(
    plan: &Plan,
    name: &str,
    hooks: Hooks,
    sockets: Vec<PathBuf>,
    exit: ExitWork,
) -> Result<HookRunner, DropError> {
    let keep = [privilege::CAP_NET_ADMIN];
    match plan {
        Plan::KeepRoot => {
            info!("{name}: keeping root (--user {KEEP_ROOT})");
            Ok(HookRunner::Local {
                name: name.to_string(),
                hooks,
            })
        }
        Plan::Restrict => {
            privilege::restrict_to(&keep).map_err(DropError::Restrict)?;
            info!("{name}: not started as root; keeping CAP_NET_ADMIN only");
            Ok(HookRunner::Local {
                name: name.to_string(),
                hooks,
            })
        }
        Plan::Drop(account) => {
            let helper = Helper::spawn(name, &hooks, &sockets, &exit).map_err(DropError::Helper)?;
            privilege::drop_to(account, &keep)
                .map_err(|e| DropError::Drop(account.name.clone(), e))?;
            info!(
                "{name}: running as user {} (uid {}), keeping CAP_NET_ADMIN only; hooks run by a privileged helper (pid {})",
                account.name, account.uid, helper.child.id()
            );
            Ok(HookRunner::Helper(helper))
        }
    }
}

/// Giving up root failed (veil stops: it does not run with more than it said).
#[derive(Debug)]
pub enum DropError {
    /// The helper could not be started.
    Helper(io::Error),
    /// The change of user.
    Drop(String, io::Error),
    /// Trimming the capabilities of a non-root start.
    Restrict(io::Error),
}

impl fmt::Display for DropError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DropError::Helper(e) => write!(f, "cannot start the privileged hook helper: {e}"),
            DropError::Drop(user, e) => write!(f, "cannot become user {user}: {e}"),
            DropError::Restrict(e) => write!(f, "cannot drop capabilities: {e}"),
        }
    }
}

impl std::error::Error for DropError {}

/// veil's end of the privileged helper.
#[derive(Debug)]
pub struct Helper {
    name: String,
    child: Child,
    to: Option<ChildStdin>,
    from: BufReader<ChildStdout>,
}

impl Helper {
    fn spawn(name: &str, hooks: &Hooks, sockets: &[PathBuf], exit: &ExitWork) -> io::Result<Self> {
        // /proc/self/exe in the child is still this very binary, whatever became of its path.
        // Its stderr is veil's.
        use std::os::unix::process::CommandExt;
        let mut child = Command::new("/proc/self/exe")
            .arg0("veil")
            .arg(HELPER_ARG)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let (Some(mut to), Some(from)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(io::Error::other("no pipe to the helper"));
        };
        let mut setup = format!("name {name}\n");
        for s in sockets {
            setup.push_str(&format!("unlink {}\n", s.display()));
        }
        if let Some(record) = &exit.dns {
            setup.push_str(&format!("undns {record}\n"));
        }
        for family in &exit.nft {
            setup.push_str(&format!("unnft {family}\n"));
        }
        for moment in [Moment::PostUp, Moment::PreDown, Moment::PostDown] {
            for line in hooks::at(hooks, moment) {
                setup.push_str(&format!("{moment} {line}\n"));
            }
        }
        setup.push_str("go\n");
        to.write_all(setup.as_bytes())?;
        Ok(Self {
            name: name.to_string(),
            child,
            to: Some(to),
            from: BufReader::new(from),
        })
    }

    fn request(&mut self, moment: Moment) -> Result<(), HookError> {
        let to = self
            .to
            .as_mut()
            .ok_or_else(|| HookError::Lost(io::Error::other("closed")))?;
        to.write_all(format!("{moment}\n").as_bytes())
            .and_then(|()| to.flush())
            .map_err(HookError::Lost)?;
        let mut failure = Vec::new();
        loop {
            let mut line = String::new();
            if self.from.read_line(&mut line).map_err(HookError::Lost)? == 0 {
                return Err(HookError::Lost(io::ErrorKind::UnexpectedEof.into()));
            }
            let line = line.trim_end_matches('\n');
            match line.split_once(' ') {
                Some(("I", text)) => info!("{}: {text}", self.name),
                Some(("E", text)) => failure.push(text.to_string()),
                _ if line == "ok" => return Ok(()),
                _ if line == "failed" => return Err(HookError::Failed(failure.join("\n"))),
                _ => return Err(HookError::Lost(io::Error::other(format!("said {line:?}")))),
            }
        }
    }
}

impl Drop for Helper {
    /// Closing the pipe tells the helper to remove the sockets (if `PostDown` did not) and end.
    fn drop(&mut self) {
        self.to = None;
        let _ = self.child.wait();
    }
}

/// The helper process: `veil __veil-privileged-helper`, started by [`Helper::spawn`].
pub fn helper_main() -> ExitCode {
    // The service manager's SIGTERM to the whole group must not end the helper before veil
    // asked for the down hooks; it ends when veil's end of the pipe closes.
    let _ = sys::block_shutdown_signals();
    let _ = sys::forbid_core_dumps();
    let stdin = io::stdin();
    let mut input = stdin.lock();
    let mut out = io::stdout().lock();
    match serve(&mut input, &mut out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("veil privileged helper: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What the helper was given.
#[derive(Debug, Default)]
struct Setup {
    name: String,
    sockets: Vec<PathBuf>,
    hooks: Hooks,
    exit: ExitWork,
}

fn read_setup(input: &mut impl BufRead) -> io::Result<Setup> {
    let mut setup = Setup::default();
    loop {
        let mut line = String::new();
        if input.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end_matches('\n');
        if line == "go" {
            return Ok(setup);
        }
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        match (key, Moment::parse(key)) {
            ("name", _) => setup.name = value.to_string(),
            ("unlink", _) => setup.sockets.push(PathBuf::from(value)),
            ("undns", _) if is_record(value) => setup.exit.dns = Some(value.to_string()),
            ("unnft", _) if value == "ip" || value == "ip6" => setup
                .exit
                .nft
                .push(if value == "ip" { "ip" } else { "ip6" }),
            (_, Some(m)) if m != Moment::PreUp => {
                hooks::at_mut(&mut setup.hooks, m).push(value.to_string())
            }
            _ => return Err(io::Error::other(format!("unknown setup line {line:?}"))),
        }
    }
}

fn serve(input: &mut impl BufRead, out: &mut impl Write) -> io::Result<()> {
    let mut setup = read_setup(input)?;
    let mut last = Moment::PreUp;
    loop {
        let mut line = String::new();
        if input.read_line(&mut line)? == 0 {
            remove_sockets(&mut setup.sockets);
            undo(&setup.name, &mut setup.exit, &mut |text| {
                eprintln!("veil: {text}")
            });
            return Ok(());
        }
        if line == "release\n" {
            // A live hand-off: the new veil serves these sockets now.
            setup.sockets.clear();
            continue;
        }
        let moment = Moment::parse(line.trim_end_matches('\n'))
            .filter(|m| *m > last)
            .ok_or_else(|| io::Error::other(format!("refused request {line:?}")))?;
        last = moment;
        let mut say = |text: &str| {
            let _ = writeln!(out, "I {text}");
        };
        if moment == Moment::PostDown {
            remove_sockets(&mut setup.sockets);
            undo(&setup.name, &mut setup.exit, &mut say);
        }
        let result = hooks::run_with(
            moment,
            hooks::at(&setup.hooks, moment),
            &setup.name,
            &mut say,
        );
        match result {
            Ok(()) => writeln!(out, "ok")?,
            Err(e) => {
                for l in e.to_string().lines() {
                    writeln!(out, "E {l}")?;
                }
                writeln!(out, "failed")?;
            }
        }
        out.flush()?;
    }
}

/// A resolvconf record name as `dns::set` makes them: an interface name behind an optional
/// `PREFIX.` (letters, digits, `-`, `_`, `.`), never starting with `-` (it is an argument).
fn is_record(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('-')
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The exit work, once: what fails is reported through `say` and left.
fn undo(name: &str, exit: &mut ExitWork, say: &mut dyn FnMut(&str)) {
    if let Some(record) = exit.dns.take() {
        if let Err(e) = super::dns::take_back(&record) {
            say(&format!("resolvconf -d {record}: {e}"));
        }
    }
    for family in exit.nft.drain(..) {
        if let Err(e) = super::routing::delete_nft_table(family, name) {
            say(&format!("remove nft table {family} veil-{name}: {e}"));
        }
    }
}

fn remove_sockets(sockets: &mut Vec<PathBuf>) {
    use std::os::unix::fs::FileTypeExt;
    for p in sockets.drain(..) {
        // Only a socket: the path came over a pipe, and the helper is root.
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_socket()) {
            let _ = std::fs::remove_file(&p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accounts(n: &str) -> io::Result<Option<privilege::Account>> {
        Ok(match n {
            "veil" => Some(privilege::Account {
                name: "veil".into(),
                uid: 990,
                gid: 990,
            }),
            "nobody" => Some(privilege::Account {
                name: "nobody".into(),
                uid: 65534,
                gid: 65534,
            }),
            "root" => Some(privilege::Account {
                name: "root".into(),
                uid: 0,
                gid: 0,
            }),
            _ => None,
        })
    }

    fn no_veil(n: &str) -> io::Result<Option<privilege::Account>> {
        if n == "veil" {
            Ok(None)
        } else {
            accounts(n)
        }
    }

    #[test]
    fn user_plans() {
        let uid = |p: Plan| match p {
            Plan::Drop(a) => Some(a.uid),
            _ => None,
        };
        assert_eq!(uid(plan_for(None, 0, &accounts).unwrap()), Some(990));
        assert_eq!(uid(plan_for(None, 0, &no_veil).unwrap()), Some(65534));
        assert_eq!(
            uid(plan_for(Some("nobody"), 0, &accounts).unwrap()),
            Some(65534)
        );
        assert_eq!(
            plan_for(Some("root"), 0, &accounts).unwrap(),
            Plan::KeepRoot
        );
        assert_eq!(plan_for(None, 1000, &accounts).unwrap(), Plan::Restrict);
        assert!(matches!(
            plan_for(Some("nosuch"), 0, &accounts),
            Err(UserError::NoSuchUser(_))
        ));
        assert!(matches!(
            plan_for(None, 0, &|_| Ok(None)),
            Err(UserError::NoDefault)
        ));
    }

    /// The helper's side of the pipe: hooks in order, each moment once, sockets removed
    /// before PostDown.
    #[test]
    fn helper_runs_each_moment_once_in_order() {
        let dir = std::env::temp_dir().join(format!("veil-helper-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let sock = dir.join("s.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
        let input = format!(
            "name wgh0\nunlink {}\nPostUp echo up %i\nPostDown test -e {} || echo gone\ngo\nPostUp\nPostDown\nPreDown\n",
            sock.display(),
            sock.display()
        );
        let mut out = Vec::new();
        let e = serve(&mut input.as_bytes(), &mut out).expect_err("PreDown after PostDown");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(e.to_string().contains("refused"), "{e}");
        assert_eq!(
            text,
            format!(
                "I PostUp: [#] echo up wgh0\nI PostUp: up wgh0\nok\nI PostDown: [#] test -e {0} || echo gone\nI PostDown: gone\nok\n",
                sock.display()
            )
        );
        assert!(!sock.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// After a live hand-off the sockets are the new process's: `release` keeps the helper
    /// from removing them when veil's end of the pipe closes.
    #[test]
    fn helper_leaves_released_sockets() {
        let sock = std::env::temp_dir().join(format!("veil-rel-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&sock);
        let _listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
        let input = format!("name wgh2\nunlink {}\ngo\nrelease\n", sock.display());
        serve(&mut input.as_bytes(), &mut Vec::new()).expect("EOF ends it");
        assert!(sock.exists(), "a released socket was removed");
        let _ = std::fs::remove_file(&sock);
    }

    #[test]
    fn helper_takes_the_exit_work_and_refuses_odd_lines() {
        let input = "name wgh2\nundns tun.wgh2\nunnft ip\nunnft ip6\ngo\n";
        let setup = read_setup(&mut input.as_bytes()).expect("setup");
        assert_eq!(
            setup.exit,
            ExitWork {
                dns: Some("tun.wgh2".into()),
                nft: vec!["ip", "ip6"],
            }
        );
        for bad in ["undns -f\ngo\n", "undns a b\ngo\n", "unnft inet\ngo\n"] {
            let e = read_setup(&mut bad.as_bytes()).expect_err(bad);
            assert!(e.to_string().contains("unknown setup line"), "{bad}: {e}");
        }
    }

    #[test]
    fn helper_reports_a_failing_hook() {
        let input = "name wgh1\nPostUp echo out; exit 4\ngo\nPostUp\n";
        let mut out = Vec::new();
        serve(&mut input.as_bytes(), &mut out).expect("EOF ends it");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(
            text.contains("E PostUp `echo out; exit 4` failed"),
            "{text}"
        );
        assert!(text.ends_with("failed\n"), "{text}");
    }
}
