//! `veil up`: bring the interface up, start the threads, stop on a signal.

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use log::{error, info, warn};
use rand_core::OsRng;
use veil_control::device::{Device, PeerSpec};
use veil_dataplane::io::{self, UdpHandle, UdpSlot};
use veil_dataplane::link::Epoch;
use veil_dataplane::pipeline::{self, PipelineConfig, Shared, SingleThread, Waiter};
use veil_dataplane::role::Role;
use veil_dataplane::sys::{self, EventFd, Netlink, Tun};
use veil_dataplane::timing::Timing;

use crate::admin::services::{self, ServiceOptions, SpawnError};
use crate::cli::{Threading, UpArgs};
use crate::config::{interface_name_from_path, Config};
use crate::failure::{supervisor, Failure};
use crate::notify::{Notifier, Watchdog};
use crate::threading::{Pinning, ThreadFlags};

mod error;
mod shell;

use error::{InterfaceError, PrepareError, StartError, TimingError};
use shell::ControlShell;
use veil_dataplane::error_class::ErrorClass;

/// Longest drain after a failure (a panic, a fatal dataplane error).
const FAILED_DRAIN_LIMIT: Duration = Duration::from_secs(1);
/// A heartbeat older than this means the thread is not running its loop.
const STALE_HEARTBEAT: Duration = Duration::from_secs(2);

/// Exit status for a rejected config or flag: nothing was created.
const EXIT_CONFIG: u8 = 2;
/// Test-only: shorten every protocol timer so rekeys happen within seconds.
const ENV_TEST_REKEY: &str = "VEIL_TEST_REKEY_AFTER_SECS";

fn timing_from_env() -> Result<Timing, TimingError> {
    match std::env::var(ENV_TEST_REKEY) {
        Err(_) => Ok(Timing::default()),
        Ok(v) => match v.parse::<u64>() {
            Ok(secs) if secs > 0 => Ok(Timing::with_rekey_after(secs)),
            _ => Err(TimingError {
                var: ENV_TEST_REKEY,
                value: v,
            }),
        },
    }
}

/// `veil up`.
pub fn up(args: UpArgs) -> ExitCode {
    // Before the configuration, and with it the private key, is read.
    let dumps = sys::forbid_core_dumps();
    let code = match prepare(&args, dumps) {
        Ok(prepared) => run(prepared),
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(EXIT_CONFIG)
        }
    };
    crate::logging::flush();
    code
}

struct Prepared {
    name: String,
    config: Config,
    pinning: Pinning,
    threading: Threading,
    timing: Timing,
    services: ServiceOptions,
}

fn prepare(args: &UpArgs, dumps: std::io::Result<()>) -> Result<Prepared, PrepareError> {
    let config = Config::load(&args.config).map_err(PrepareError::Config)?;
    crate::logging::init(&config.logging).map_err(PrepareError::Logger)?;
    crate::failure::install_panic_hook();
    if let Err(e) = dumps {
        warn!("cannot keep core dumps off ({e}): a crash may write keys to a core file");
    }
    for w in &config.warnings {
        warn!("{w}");
    }
    let name = match &args.interface {
        Some(n) => {
            crate::config::validate_interface_name(n).map_err(PrepareError::InterfaceFlag)?
        }
        None => interface_name_from_path(&args.config).map_err(PrepareError::InterfaceName)?,
    };
    // Flags override the file's [threading]; missing CPUs are refused here.
    let (threading, pinning) = crate::threading::resolve(
        &ThreadFlags::from(args),
        &config.threading,
        &sys::available_cpus(),
        &args.config.display().to_string(),
    )
    .map_err(PrepareError::Threading)?;
    let timing = timing_from_env().map_err(PrepareError::Timing)?;
    let services =
        ServiceOptions::from_args(args, &config.metrics).map_err(PrepareError::Services)?;
    Ok(Prepared {
        name,
        config,
        pinning,
        threading,
        timing,
        services,
    })
}

fn configure_interface(tun: &Tun, config: &Config) -> Result<(), InterfaceError> {
    let nl = Netlink::new().map_err(InterfaceError::Netlink)?;
    let idx = tun.ifindex();
    nl.set_mtu(idx, u32::from(config.interface.mtu))
        .map_err(InterfaceError::Mtu)?;
    for a in &config.interface.addresses {
        nl.add_address(idx, a.addr, a.prefix)
            .map_err(|e| InterfaceError::Address(*a, e))?;
    }
    nl.set_up(idx)
        .map_err(|e| InterfaceError::Up(tun.name().to_string(), e))?;
    for peer in &config.peers {
        for net in &peer.allowed_ips {
            if net.prefix == 0 {
                warn!(
                    "AllowedIPs {net}: veil does not install default routes (it would capture the tunnel's own traffic); add a route yourself"
                );
                continue;
            }
            let n = net.network();
            nl.add_route(idx, n.addr, n.prefix)
                .map_err(|e| InterfaceError::Route(n, e))?;
        }
    }
    Ok(())
}

/// Wait up to `timeout` for a shutdown signal.
fn next_signal(
    signals: &sys::SignalFd,
    timeout: Duration,
) -> std::io::Result<Option<sys::ShutdownSignal>> {
    use std::os::fd::AsFd;
    sys::wait_readable(&[signals.as_fd()], Some(timeout))?;
    signals.read()
}

/// Sleeps of the I/O threads: poll(2) on the socket, the TUN device and the eventfd.
struct IoWaiter {
    udp: UdpHandle,
    tun: Arc<Tun>,
    bell: Arc<EventFd>,
}

impl Waiter for IoWaiter {
    fn wait_io(&self, timeout: Duration) {
        use std::os::fd::AsFd;
        let _ = self.udp.with(|udp| {
            sys::wait_readable(
                &[udp.as_fd(), self.tun.as_fd(), self.bell.as_fd()],
                Some(timeout),
            )
        });
        let _ = self.bell.drain();
    }

    fn wait_bell(&self, timeout: Duration) {
        use std::os::fd::AsFd;
        let _ = sys::wait_readable(&[self.bell.as_fd()], Some(timeout));
        let _ = self.bell.drain();
    }
}

/// Start a named thread. A panic in `body` is caught here, at the thread's
/// boundary, and it and any unexpected return are reported to the supervisor,
/// which wakes the main thread to shut down with a failure.
fn spawn<F: FnOnce() + Send + 'static>(
    role: Role,
    cpu: Option<usize>,
    body: F,
) -> Result<JoinHandle<()>, SpawnError> {
    let name = role.thread_name();
    let thread_name = name.to_string();
    std::thread::Builder::new()
        .name(thread_name.clone())
        .spawn(move || {
            if let Some(cpu) = cpu {
                if let Err(e) = sys::pin_current_thread(cpu) {
                    warn!("{thread_name}: cannot pin to CPU {cpu}: {e}");
                }
            }
            // The body's state is dropped while unwinding and never used again.
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
            supervisor().thread_ended(&thread_name, outcome.err());
        })
        .map_err(|source| SpawnError {
            thread: name.to_string(),
            source,
        })
}

fn run(p: Prepared) -> ExitCode {
    // Signals are blocked before any thread starts, so every thread inherits the
    // mask and only the main thread receives them, through a signalfd.
    let signals = match sys::block_shutdown_signals().and_then(|()| sys::SignalFd::new()) {
        Ok(s) => s,
        Err(e) => {
            error!("cannot set up signal handling: {e}");
            return ExitCode::FAILURE;
        }
    };
    #[cfg(debug_assertions)]
    let test_hooks = p.services.test_hooks;
    let threads = Role::threads(p.threading == Threading::Single);
    match start(p) {
        Ok(running) => {
            let notifier = Arc::new(Notifier::from_env());
            notifier.ready(&format!("{}: up", running.name));
            let watchdog = crate::notify::watchdog_interval().and_then(|interval| {
                Watchdog::start(notifier.clone(), running.shared.clone(), threads, interval)
                    .map_err(|e| error!("cannot start the watchdog thread: {e}"))
                    .ok()
            });
            #[cfg(debug_assertions)]
            test_hooks.arm(&running.shared);
            running.wait(&signals, &notifier, watchdog)
        }
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

struct Running {
    shared: Arc<Shared>,
    drain_timeout: Duration,
    control_counters: Arc<veil_control::device::ControlCounters>,
    threads: Vec<JoinHandle<()>>,
    name: String,
    _services: services::Services,
    // Dropped last: closing the TUN fd removes the interface.
    _tun: Arc<Tun>,
}

fn start(p: Prepared) -> Result<Running, StartError> {
    let now = Instant::now();
    let epoch = Epoch::new(now);
    let port = p.config.interface.listen_port.unwrap_or(0);
    let udp = io::bind_listen(port).map_err(|e| StartError::Bind(port, e))?;
    let local = udp.local_addr().map_err(StartError::SocketAddress)?;
    let tun = Tun::create(&p.name).map_err(|e| StartError::CreateTun(p.name.clone(), e))?;
    configure_interface(&tun, &p.config).map_err(|e| StartError::Interface(p.name.clone(), e))?;

    let mut device = Device::new(
        p.config.interface.private_key.as_bytes(),
        p.timing,
        epoch,
        (now, SystemTime::now()),
        OsRng,
    );
    device.set_policies(p.config.sessions, p.config.migration);
    device.set_protection(p.config.protection.clone());
    for peer in &p.config.peers {
        let spec = PeerSpec {
            public_key: peer.public_key,
            preshared_key: peer
                .preshared_key
                .as_ref()
                .map(|k| zeroize::Zeroizing::new(*k.as_bytes())),
            allowed_ips: peer.allowed_ips.iter().map(|n| n.network()).collect(),
            endpoint: peer.endpoint,
            persistent_keepalive: peer.persistent_keepalive,
        };
        device
            .add_peer(spec)
            .map_err(|e| StartError::Peer(peer.line, e))?;
    }

    let control_counters = device.counters().clone();
    let drain_timeout = p.config.sessions.drain_timeout;
    let udp = Arc::new(UdpSlot::new(udp).map_err(StartError::SocketAddress)?);
    let tun = Arc::new(tun);
    let bell = Arc::new(EventFd::new().map_err(StartError::EventFd)?);
    let wake = bell.clone();
    let shared = Arc::new(Shared::new(epoch, move || {
        let _ = wake.wake();
    }));
    let cfg = PipelineConfig {
        mtu: usize::from(p.config.interface.mtu),
        timing: p.timing,
        ..Default::default()
    };
    let (rx, crypto, mut tx, control) = pipeline::build(&cfg, &shared);
    let (services, control_ends) = services::wire(
        p.services,
        &p.name,
        &shared,
        p.threading,
        &udp,
        tun.ifindex(),
        &p.config.interface.addresses,
        &control_counters,
        &mut tx,
    )
    .map_err(StartError::Wire)?;
    let mut device = ControlShell::new(device, control_ends);
    let waiter = IoWaiter {
        udp: udp.handle(),
        tun: tun.clone(),
        bell,
    };
    let mut threads = Vec::new();
    match p.threading {
        Threading::Pipeline => {
            let (u, t, s) = (udp.clone(), tun.clone(), shared.clone());
            threads.push(spawn(Role::Rx, p.pinning.rx, move || {
                rx.run(&u.handle(), &*t, &waiter, &s)
            })?);
            let s = shared.clone();
            threads.push(spawn(Role::Crypto, p.pinning.crypto, move || {
                crypto.run(&s)
            })?);
            let (u, t, s) = (udp.clone(), tun.clone(), shared.clone());
            threads.push(spawn(Role::Tx, p.pinning.tx, move || {
                tx.run(&u.handle(), &*t, &s)
            })?);
            let s = shared.clone();
            threads.push(spawn(Role::Control, p.pinning.control, move || {
                control.run(&mut device, &s)
            })?);
        }
        Threading::Single => {
            let single = SingleThread::new((rx, crypto, tx, control));
            let (u, t, s) = (udp.clone(), tun.clone(), shared.clone());
            threads.push(spawn(Role::Single, p.pinning.rx, move || {
                single.run(&u.handle(), &*t, &waiter, &mut device, &s)
            })?);
        }
    }
    info!(
        "{}: up, listening on UDP port {}, {} peer(s), {} mode",
        p.name,
        local.port(),
        p.config.peers.len(),
        match p.threading {
            Threading::Pipeline => "pipeline",
            Threading::Single => "single-threaded",
        }
    );
    let services = services.start()?;
    Ok(Running {
        shared,
        control_counters,
        drain_timeout,
        threads,
        name: p.name,
        _services: services,
        _tun: tun,
    })
}

impl Running {
    /// Is the thread that runs the control work (control, or the single thread) still beating?
    fn drainer_alive(&self) -> bool {
        let Some(beat) = self.shared.heartbeats.get(Role::Control.slot()) else {
            return false;
        };
        let last = self.shared.epoch.instant(beat.load(Ordering::Relaxed));
        last.is_some_and(|t| t.elapsed() < STALE_HEARTBEAT)
    }

    /// One line with every non-zero counter, for operators and tests.
    fn log_counters(&self) {
        let s = &self.shared;
        let groups = [
            ("rx", s.rx.snapshot()),
            ("crypto", s.crypto.snapshot()),
            ("tx", s.tx.snapshot()),
            ("control", self.control_counters.snapshot()),
        ];
        let line: Vec<String> = groups
            .iter()
            .flat_map(|(g, c)| {
                c.iter()
                    .filter(|(_, v)| *v > 0)
                    .map(move |(k, v)| format!("{g}.{k}={v}"))
            })
            .collect();
        info!("{}: counters: {}", self.name, line.join(" "));
    }

    /// Until a signal or a failure; then shut down. The supervisor's eventfd
    /// makes a failure (a panic, a fatal dataplane error) stop veil at once.
    fn wait(
        self,
        signals: &sys::SignalFd,
        notifier: &Notifier,
        mut watchdog: Option<Watchdog>,
    ) -> ExitCode {
        let supervisor = supervisor();
        let failure = loop {
            let ready = {
                use std::os::fd::AsFd;
                let mut fds = vec![signals.as_fd()];
                fds.extend(supervisor.bell_fd());
                sys::wait_readable(&fds, Some(Duration::from_secs(1)))
            };
            crate::logging::tick();
            supervisor.drain_bell();
            if let Some(f) = supervisor.failure() {
                break Some(f);
            }
            match ready.and_then(|_| signals.read()) {
                Ok(Some(sig)) => {
                    info!(
                        "{}: {sig:?} received; draining (a second signal stops at once)",
                        self.name
                    );
                    break None;
                }
                Ok(None) => {}
                Err(e) => {
                    error!("signal wait failed: {e}");
                    break None;
                }
            }
        };
        supervisor.begin_shutdown();
        if let Some(f) = &failure {
            self.log_failure(f);
        }
        notifier.stopping(&match &failure {
            Some(f) => format!("{}: failed: {f}", self.name),
            None => format!("{}: stopping", self.name),
        });
        if let Some(w) = watchdog.as_mut() {
            w.stop();
        }
        // After a failure, drain only briefly: the service manager should restart veil soon.
        let limit = if failure.is_some() {
            self.drain_timeout.min(FAILED_DRAIN_LIMIT)
        } else {
            self.drain_timeout
        };
        self.drain(signals, limit);
        self.shared.shutdown();
        self.log_counters_after_join()
    }

    /// Graceful drain: the control thread stops accepting sessions, tells veil peers,
    /// lets in-flight packets out and expires every session; bounded by the drain
    /// timeout, cut short by a second signal.
    fn drain(&self, signals: &sys::SignalFd, limit: Duration) {
        self.shared.drain_requested.store(true, Ordering::SeqCst);
        self.shared.control_bell.wake_now();
        self.shared.rx_bell.wake_now();
        let deadline = Instant::now() + limit;
        loop {
            if self.shared.drain_done.load(Ordering::SeqCst) {
                info!("{}: drained", self.name);
                return;
            }
            // Nothing left to drain with: the loops stopped (a fatal fault), or the
            // thread that drains has not beaten for a while (stalled or dead).
            if self.shared.stop.load(Ordering::SeqCst) || !self.drainer_alive() {
                warn!(
                    "{}: cannot drain (the dataplane has stopped); stopping",
                    self.name
                );
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                warn!("{}: drain timeout reached; stopping", self.name);
                return;
            }
            if let Ok(Some(sig)) = next_signal(signals, left.min(Duration::from_millis(20))) {
                warn!(
                    "{}: second signal ({sig:?}); stopping without finishing the drain",
                    self.name
                );
                return;
            }
        }
    }

    fn log_failure(&self, failure: &Failure) {
        // A thread that ended on its own after a dataplane fault: the fault is the cause.
        match (failure, self.shared.fault.get()) {
            (Failure::Ended { .. }, Some(fault)) => error!(
                class = ErrorClass::Restart.as_str();
                "{}: {fault}; shutting down so the service manager can restart veil",
                self.name
            ),
            (Failure::Panicked { .. }, _) => error!(
                class = ErrorClass::Panic.as_str();
                "{}: {failure}; shutting down so the service manager can restart veil",
                self.name
            ),
            (Failure::Ended { .. }, None) => error!(
                class = ErrorClass::Restart.as_str();
                "{}: {failure}; shutting down so the service manager can restart veil",
                self.name
            ),
        }
    }

    fn log_counters_after_join(mut self) -> ExitCode {
        for t in std::mem::take(&mut self.threads) {
            let _ = t.join();
        }
        self.log_counters();
        info!("{}: stopped; interface removed", self.name);
        // Also a failure during shutdown (a panic while draining) is one.
        if supervisor().failure().is_none() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}
