//! systemd's service notifications (sd_notify(3)), written by hand: one
//! datagram of `KEY=VALUE` lines to the unix socket in `$NOTIFY_SOCKET` (a path,
//! or `@name` in the abstract namespace). Without `$NOTIFY_SOCKET` every call
//! is a no-op, so the same binary runs under systemd and from a shell.
//!
//! - `READY=1` once the interface is up and the threads run (`Type=notify`);
//! - `WATCHDOG=1` every `$WATCHDOG_USEC / 2` from the `veil-watchdog` thread,
//!   but only while every dataplane thread's heartbeat is fresh: a thread that
//!   stopped looping (deadlock, endless loop, stuck syscall) silences the
//!   pings, and systemd kills and restarts veil after `WatchdogSec`;
//! - `STOPPING=1` when shutdown begins; `STATUS=` lines for `systemctl status`.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::{error, info, warn};
use veil_dataplane::pipeline::{Shared, IDLE_WAIT};
use veil_dataplane::role::Role;

/// A thread whose heartbeat is older than this is stuck. Idle threads beat at
/// least every [`IDLE_WAIT`]; four of those leave room for a loaded machine.
pub const STALE_AFTER: Duration = Duration::from_millis(4 * IDLE_WAIT.as_millis() as u64);

/// Where notifications go.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
}

/// The socket address in `$NOTIFY_SOCKET`.
fn notify_address(value: &str) -> io::Result<SocketAddr> {
    if let Some(name) = value.strip_prefix('@') {
        SocketAddr::from_abstract_name(name.as_bytes())
    } else if value.starts_with('/') {
        SocketAddr::from_pathname(value)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "expected an absolute path or @abstract-name",
        ))
    }
}

impl Notifier {
    /// A notifier for `$NOTIFY_SOCKET`, or a silent one without it.
    pub fn from_env() -> Notifier {
        match std::env::var("NOTIFY_SOCKET") {
            Ok(v) if !v.is_empty() => Self::to(&v).unwrap_or_else(|e| {
                warn!("NOTIFY_SOCKET={v}: {e}; systemd notifications are off");
                Notifier { target: None }
            }),
            _ => Notifier { target: None },
        }
    }

    /// A notifier sending to `address` (`/path` or `@abstract`).
    pub fn to(address: &str) -> io::Result<Notifier> {
        let addr = notify_address(address)?;
        let socket = UnixDatagram::unbound()?;
        // A busy or restarting systemd must never block veil: a lost WATCHDOG=1
        // is made up for half an interval later.
        socket.set_nonblocking(true)?;
        // Connected now, while veil may still be root: sending on a connected socket needs no
        // write permission on the socket file after veil gave up root. If the socket is not
        // there yet, each send addresses it instead.
        let _ = socket.connect_addr(&addr);
        Ok(Notifier {
            target: Some((socket, addr)),
        })
    }

    /// Send one notification (newline-separated `KEY=VALUE` lines).
    pub fn send(&self, state: &str) {
        if let Some((socket, addr)) = &self.target {
            let sent = match socket.peer_addr() {
                Ok(_) => socket.send(state.as_bytes()),
                Err(_) => socket.send_to_addr(state.as_bytes(), addr),
            };
            if let Err(e) = sent {
                // systemd may be restarting; the next notification will try again.
                log::debug!("sd_notify {state:?}: {e}");
            }
        }
    }

    /// `READY=1` with a status line.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// `STOPPING=1` with a status line.
    pub fn stopping(&self, status: &str) {
        self.send(&format!("STOPPING=1\nSTATUS={}", one_line(status)));
    }

    /// `WATCHDOG=1`.
    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }
}

fn one_line(s: &str) -> String {
    s.replace('\n', " ")
}

/// How often to ping: half of `$WATCHDOG_USEC`, if the watchdog is on and meant
/// for this process (`$WATCHDOG_PID`, when set, is our pid).
pub fn watchdog_interval() -> Option<Duration> {
    interval_from(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

fn interval_from(usec: Option<&str>, pid: Option<&str>, our_pid: u32) -> Option<Duration> {
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok() != Some(our_pid) {
            return None;
        }
    }
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    Some(Duration::from_micros(usec / 2))
}

/// Heartbeat slots older than [`STALE_AFTER`] at `now`.
pub fn stale_slots(shared: &Shared, now: Instant) -> Vec<usize> {
    let now_nanos = shared.epoch.nanos(now);
    let limit = u64::try_from(STALE_AFTER.as_nanos()).unwrap_or(u64::MAX);
    shared
        .heartbeats
        .iter()
        .enumerate()
        .filter(|(_, h)| now_nanos.saturating_sub(h.load(Ordering::Relaxed)) > limit)
        .map(|(i, _)| i)
        .collect()
}

/// The `veil-watchdog` thread; stops when dropped or [`Watchdog::stop`]ped.
#[derive(Debug)]
pub struct Watchdog {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Ping `notifier` every `interval` while every heartbeat of every pipeline's `shared`
    /// is fresh. `threads` are the threads that beat the slots, for messages.
    pub fn start(
        notifier: Arc<Notifier>,
        shared: Vec<Arc<Shared>>,
        threads: &'static [Role],
        interval: Duration,
    ) -> io::Result<Watchdog> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("veil-watchdog".into())
            .spawn(move || ping_while_alive(&notifier, &shared, threads, interval, &flag))?;
        Ok(Watchdog {
            stop,
            thread: Some(thread),
        })
    }

    /// Stop pinging (shutdown began) and wait for the thread.
    pub fn stop(&mut self) {
        {
            let (m, cv) = &*self.stop;
            *m.lock().unwrap_or_else(|e| e.into_inner()) = true;
            cv.notify_all();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop();
    }
}

fn ping_while_alive(
    notifier: &Notifier,
    pipelines: &[Arc<Shared>],
    threads: &[Role],
    interval: Duration,
    stop: &(Mutex<bool>, Condvar),
) {
    let mut withheld = false;
    let (m, cv) = stop;
    let mut stopped = m.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if *stopped || pipelines.iter().any(|s| s.stop.load(Ordering::Relaxed)) {
            return;
        }
        let now = Instant::now();
        let stale: Vec<(usize, usize)> = pipelines
            .iter()
            .enumerate()
            .flat_map(|(k, s)| stale_slots(s, now).into_iter().map(move |i| (k, i)))
            .collect();
        if stale.is_empty() {
            notifier.watchdog();
            if withheld {
                info!("every thread runs again; watchdog pings resumed");
                withheld = false;
            }
        } else if !withheld {
            let mut who: Vec<String> = stale
                .iter()
                .filter_map(|&(k, i)| {
                    Role::beating(threads, i).map(|r| crate::admin::context::pipeline_thread(r, k))
                })
                .collect();
            who.dedup();
            error!(
                class = veil_dataplane::error_class::ErrorClass::Restart.as_str();
                "{} stopped making progress (no heartbeat for over {:.1} s); withholding the \
                 systemd watchdog ping so the service is restarted",
                who.join(", "),
                STALE_AFTER.as_secs_f64()
            );
            withheld = true;
        }
        stopped = cv
            .wait_timeout(stopped, interval)
            .map(|(g, _)| g)
            .unwrap_or_else(|e| e.into_inner().0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use veil_dataplane::link::Epoch;

    #[test]
    fn watchdog_interval_is_half_and_respects_the_pid() {
        assert_eq!(
            interval_from(Some("10000000"), None, 7),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            interval_from(Some("2000000"), Some("7"), 7),
            Some(Duration::from_secs(1))
        );
        assert_eq!(interval_from(Some("2000000"), Some("8"), 7), None);
        assert_eq!(interval_from(Some("0"), None, 7), None);
        assert_eq!(interval_from(Some("soon"), None, 7), None);
        assert_eq!(interval_from(None, None, 7), None);
    }

    /// A fresh datagram socket at `<tmp>/<prefix>-<pid>/notify.sock`, its folder and its path.
    fn listener(prefix: &str) -> (UnixDatagram, std::path::PathBuf, String) {
        let dir = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        let path = path.to_str().unwrap().to_string();
        (listener, dir, path)
    }

    fn receive_all(sock: &UnixDatagram) -> Vec<String> {
        sock.set_nonblocking(true).unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 512];
        while let Ok(n) = sock.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        out
    }

    #[test]
    fn notifications_reach_a_path_socket_and_an_abstract_one() {
        let (listener, dir, path) = listener("veil-notify");
        let n = Notifier::to(&path).unwrap();
        n.ready("veil0: up\nnow");
        n.watchdog();
        n.stopping("bye");
        assert_eq!(
            receive_all(&listener),
            vec![
                "READY=1\nSTATUS=veil0: up now",
                "WATCHDOG=1",
                "STOPPING=1\nSTATUS=bye"
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);

        let name = format!("veil-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        Notifier::to(&format!("@{name}")).unwrap().watchdog();
        assert_eq!(receive_all(&listener), vec!["WATCHDOG=1"]);

        assert!(Notifier::to("relative/path").is_err());
        let silent = Notifier { target: None };
        silent.ready("nobody listens");
    }

    #[test]
    fn stale_heartbeats_are_found() {
        let start = Instant::now();
        let shared = Shared::new(Epoch::new(start), || {});
        let now = start + Duration::from_secs(10);
        let fresh = shared.epoch.nanos(now - Duration::from_millis(100));
        let old = shared
            .epoch
            .nanos(now - STALE_AFTER - Duration::from_millis(1));
        for (i, h) in shared.heartbeats.iter().enumerate() {
            h.store(if i == 2 { old } else { fresh }, Ordering::Relaxed);
        }
        assert_eq!(stale_slots(&shared, now), vec![2]);
    }

    #[test]
    fn watchdog_pings_only_while_heartbeats_are_fresh() {
        let (listener, dir, path) = listener("veil-wd");
        let notifier = Arc::new(Notifier::to(&path).unwrap());
        let shared = Arc::new(Shared::new(Epoch::new(Instant::now()), || {}));
        let beat = |shared: &Shared| {
            let now = shared.epoch.nanos(Instant::now());
            for h in &shared.heartbeats {
                h.store(now, Ordering::Relaxed);
            }
        };
        beat(&shared);
        let mut wd = Watchdog::start(
            notifier,
            vec![shared.clone()],
            &Role::PIPELINE,
            Duration::from_millis(20),
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let pings = receive_all(&listener).len();
        assert!(pings >= 4, "{pings} pings while fresh");
        // Nobody beats any more: after STALE_AFTER the pings stop.
        std::thread::sleep(STALE_AFTER + Duration::from_millis(100));
        let _ = receive_all(&listener);
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            receive_all(&listener).len(),
            0,
            "pinged with stale heartbeats"
        );
        beat(&shared);
        std::thread::sleep(Duration::from_millis(100));
        assert!(!receive_all(&listener).is_empty(), "pings resume");
        wd.stop();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
