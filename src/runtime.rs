//! `veil up`: bring the interface up, start the threads, stop on a signal.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::{error, info, warn};
use veil_control::device::{Device, PeerSpec};
use veil_dataplane::baton::Baton;
use veil_dataplane::crypto::{Backend, BackendChoice};
use veil_dataplane::doorbell::spin_budget;
use veil_dataplane::io::{self, UdpHandle, UdpSlot};
use veil_dataplane::link::{Command, Epoch, Event, HandshakeDatagram, PeerId};
use veil_dataplane::pipeline::{
    self, ControlDriver, CryptoThread, PipelineConfig, Readiness, Shared, SingleThread, Stages,
    TxThread, Waiter,
};
use veil_dataplane::role::Role;
use veil_dataplane::sys::{self, EventFd, Netlink, Tun};
use veil_dataplane::timing::Timing;

use crate::admin::services::{self, ServiceOptions};
use crate::cli::{Threading, UpArgs};
use crate::config::{interface_name_from_path, Config};
use crate::failure::{supervisor, Failure};
use crate::notify::{Notifier, Watchdog};
use crate::threading::{Pinning, ThreadFlags};
use veil_dataplane::error_class::ErrorClass;

/// Longest drain after a failure (a panic, a fatal dataplane error).
const FAILED_DRAIN_LIMIT: Duration = Duration::from_secs(1);
/// A heartbeat older than this means the thread is not running its loop.
const STALE_HEARTBEAT: Duration = Duration::from_secs(2);

/// Exit status for a rejected config or flag: nothing was created.
const EXIT_CONFIG: u8 = 2;
/// Test-only: shorten every protocol timer so rekeys happen within seconds.
const ENV_TEST_REKEY: &str = "VEIL_TEST_REKEY_AFTER_SECS";

fn timing_from_env() -> Result<Timing, String> {
    match std::env::var(ENV_TEST_REKEY) {
        Err(_) => Ok(Timing::default()),
        Ok(v) => match v.parse::<u64>() {
            Ok(secs) if secs > 0 => Ok(Timing::with_rekey_after(secs)),
            _ => Err(format!(
                "{ENV_TEST_REKEY}={v}: expected a whole number of seconds > 0"
            )),
        },
    }
}

/// `veil up`.
pub fn up(args: UpArgs) -> ExitCode {
    let code = match prepare(&args) {
        Ok(prepared) => run(prepared),
        Err(Fail::Config(msg)) => {
            eprintln!("{msg}");
            ExitCode::from(EXIT_CONFIG)
        }
    };
    crate::logging::flush();
    code
}

enum Fail {
    Config(String),
}

struct Prepared {
    name: String,
    config: Config,
    pinning: Pinning,
    threading: Threading,
    /// What the operator asked for, and the backend it resolved to.
    aead_choice: BackendChoice,
    aead: Backend,
    timing: Timing,
    /// Segmentation offloads wanted (`[threading] offload`, `--no-offload`).
    offload: bool,
    services: ServiceOptions,
}

fn prepare(args: &UpArgs) -> Result<Prepared, Fail> {
    let config = Config::load(&args.config).map_err(|e| Fail::Config(e.to_string()))?;
    crate::logging::init(&config.logging).map_err(|e| Fail::Config(e.to_string()))?;
    crate::failure::install_panic_hook();
    for w in &config.warnings {
        warn!("{w}");
    }
    let name = match &args.interface {
        Some(n) => crate::config::validate_interface_name(n)
            .map_err(|e| Fail::Config(format!("--interface: {e}")))?,
        None => interface_name_from_path(&args.config).map_err(|e| Fail::Config(e.to_string()))?,
    };
    // Flags override the file's [threading]; missing CPUs are refused here.
    let (threading, pinning) = crate::threading::resolve(
        &ThreadFlags::from(args),
        &config.threading,
        &sys::available_cpus(),
        &args.config.display().to_string(),
    )
    .map_err(|e| Fail::Config(e.to_string()))?;
    let timing = timing_from_env().map_err(Fail::Config)?;
    // Before the first keypair exists: every session seals with this backend.
    let aead_choice = args.aead.unwrap_or(config.threading.aead);
    let aead = aead_choice.resolve();
    veil_dataplane::crypto::install(aead);
    let services = ServiceOptions::from_args(args, &config.metrics).map_err(Fail::Config)?;
    let offload = config.threading.offload && !args.no_offload;
    Ok(Prepared {
        name,
        config,
        pinning,
        threading,
        aead_choice,
        aead,
        timing,
        offload,
        services,
    })
}

/// Say once, at start, which offloads are in use.
fn log_offloads(name: &str, wanted: bool, tun: &Tun) {
    let tun_offloads = tun.offloads();
    if !wanted {
        info!("{name}: offloads off (configured)");
    } else if !tun_offloads.vnet {
        info!("{name}: the kernel offers no TUN offloads; packets move one at a time");
    } else {
        let uso = if tun_offloads.uso { " and USO" } else { "" };
        info!("{name}: TUN offloads on (checksum, TSO{uso})");
    }
}

fn configure_interface(tun: &Tun, config: &Config) -> Result<(), String> {
    let nl = Netlink::new().map_err(|e| format!("netlink: {e}"))?;
    let idx = tun.ifindex();
    nl.set_mtu(idx, u32::from(config.interface.mtu))
        .map_err(|e| format!("set MTU: {e}"))?;
    for a in &config.interface.addresses {
        nl.add_address(idx, a.addr, a.prefix)
            .map_err(|e| format!("add address {a}: {e}"))?;
    }
    nl.set_up(idx)
        .map_err(|e| format!("set {} up: {e}", tun.name()))?;
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
                .map_err(|e| format!("add route {n}: {e}"))?;
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

/// The control thread's driver: the sans-IO [`Device`] plus the one piece of I/O a
/// client needs, noticing that its own source address towards a gateway changed.
struct ControlShell {
    device: Device,
    sources: HashMap<PeerId, IpAddr>,
    next_check: Option<Instant>,
    load: LoadSampler,
}

/// How often a client checks which source address the kernel uses towards its gateways.
const SOURCE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

impl ControlShell {
    fn new(device: Device) -> Self {
        Self {
            device,
            sources: HashMap::new(),
            next_check: None,
            load: LoadSampler::new(),
        }
    }

    fn check_sources(&mut self, now: Instant) {
        if self.next_check.is_some_and(|t| now < t) {
            return;
        }
        self.next_check = Some(now + SOURCE_CHECK_INTERVAL);
        for (peer, endpoint) in self.device.client_endpoints() {
            let Some(src) = route_source(endpoint) else {
                continue;
            };
            match self.sources.insert(peer, src) {
                Some(old) if old != src => {
                    info!("local source address towards {endpoint} changed: {old} -> {src}");
                    self.device.local_source_changed(peer, now);
                }
                _ => {}
            }
        }
    }
}

/// Reads the process's CPU use and memory once a second for the degradation controller.
struct LoadSampler {
    last: Option<(Instant, u64)>,
    cpus: f64,
    memory_limit: Option<u64>,
}

impl LoadSampler {
    fn new() -> Self {
        let cpus = sys::available_cpus().len().max(1) as f64;
        Self {
            last: None,
            cpus,
            memory_limit: crate::procfs::memory_limit(),
        }
    }

    /// A sample if a second passed since the last one.
    fn sample(&mut self, now: Instant) -> Option<veil_control::degradation::LoadSample> {
        if self
            .last
            .is_some_and(|(t, _)| now.saturating_duration_since(t) < Duration::from_secs(1))
        {
            return None;
        }
        let ticks = crate::procfs::cpu_ticks()?;
        let previous = self.last.replace((now, ticks));
        let (t, before) = previous?;
        let secs = now.saturating_duration_since(t).as_secs_f64().max(1e-3);
        // USER_HZ is 100 on every Linux architecture veil builds for.
        let cpu_pct = (ticks.saturating_sub(before) as f64 / 100.0) / secs / self.cpus * 100.0;
        let memory_pct = match (crate::procfs::rss_bytes(), self.memory_limit) {
            (Some(rss), Some(limit)) if limit > 0 => rss as f64 / limit as f64 * 100.0,
            _ => 0.0,
        };
        Some(veil_control::degradation::LoadSample {
            cpu_pct,
            memory_pct,
        })
    }
}

/// The source address the kernel picks for datagrams to `dest` (a connected UDP
/// socket sends nothing; connect only consults the routing table).
fn route_source(dest: SocketAddr) -> Option<IpAddr> {
    let bind: SocketAddr = match dest {
        SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    };
    let sock = std::net::UdpSocket::bind(bind).ok()?;
    sock.connect(dest).ok()?;
    sock.local_addr().ok().map(|a| a.ip())
}

impl ControlDriver for ControlShell {
    fn on_handshake(&mut self, msg: HandshakeDatagram, now: Instant) {
        self.device.on_handshake(msg, now);
    }
    fn on_event(&mut self, ev: Event, now: Instant) {
        self.device.on_event(ev, now);
    }
    fn on_timeout(&mut self, now: Instant) {
        self.check_sources(now);
        if let Some(sample) = self.load.sample(now) {
            self.device.on_load_sample(now, sample);
        }
        self.device.on_timeout(now);
    }
    fn poll_command(&mut self) -> Option<Command> {
        self.device.poll_command()
    }
    fn poll_transmit(&mut self) -> Option<HandshakeDatagram> {
        self.device.poll_transmit()
    }
    fn next_deadline(&self) -> Option<Instant> {
        self.device.next_deadline()
    }
    fn poll_admin(&mut self, now: Instant) {
        self.device.poll_admin(now);
    }
    fn begin_drain(&mut self, now: Instant) {
        self.device.begin_drain(now);
    }
    fn drained(&self) -> bool {
        self.device.drained()
    }
    fn set_handshake_backlog(&mut self, queued: usize, now: Instant) {
        self.device.set_handshake_backlog(queued, now);
    }
}

/// Sleeps of the I/O threads: poll(2) on the socket, the TUN device and the eventfd.
struct IoWaiter {
    udp: UdpHandle,
    tun: Arc<Tun>,
    bell: Arc<EventFd>,
}

impl Waiter for IoWaiter {
    fn wait_io(&self, timeout: Duration) -> Readiness {
        use std::os::fd::AsFd;
        let polled = self.udp.with(|udp| {
            sys::wait_readable(
                &[udp.as_fd(), self.tun.as_fd(), self.bell.as_fd()],
                Some(timeout),
            )
        });
        let _ = self.bell.drain();
        match polled {
            // Only the fds poll reported; after the bell or a timeout, both once more.
            Ok(m) if !m.is_empty() && !m.is_readable(2) => Readiness {
                udp: m.is_readable(0),
                tun: m.is_readable(1),
            },
            _ => Readiness::BOTH,
        }
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
) -> Result<JoinHandle<()>, String> {
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
        .map_err(|e| format!("cannot start thread {name}: {e}"))
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
        Err(msg) => {
            error!("{msg}");
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

fn start(p: Prepared) -> Result<Running, String> {
    let now = Instant::now();
    let epoch = Epoch::new(now);
    let udp =
        io::bind_listen(p.config.interface.listen_port.unwrap_or(0), p.offload).map_err(|e| {
            format!(
                "cannot bind UDP port {}: {e}",
                p.config.interface.listen_port.unwrap_or(0)
            )
        })?;
    let local = udp
        .local_addr()
        .map_err(|e| format!("socket address: {e}"))?;
    let tun = if p.offload {
        Tun::create_offloaded(&p.name)
    } else {
        Tun::create(&p.name)
    }
    .map_err(|e| format!("cannot create TUN interface {}: {e}", p.name))?;
    log_offloads(&p.name, p.offload, &tun);
    configure_interface(&tun, &p.config).map_err(|e| format!("{}: {e}", p.name))?;

    let mut device = Device::new(p.config.interface.private_key.as_bytes(), p.timing, epoch);
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
            .map_err(|e| format!("peer at line {}: {e}", peer.line))?;
    }

    let control_counters = device.counters().clone();
    let mut device = ControlShell::new(device);
    let drain_timeout = p.config.sessions.drain_timeout;
    let udp = Arc::new(UdpSlot::new(udp, p.offload).map_err(|e| format!("socket address: {e}"))?);
    let tun = Arc::new(tun);
    let bell = Arc::new(EventFd::new().map_err(|e| format!("eventfd: {e}"))?);
    let wake = bell.clone();
    let shared = Arc::new(Shared::new(epoch, move || {
        let _ = wake.wake();
    }));
    let cfg = PipelineConfig {
        mtu: usize::from(p.config.interface.mtu),
        timing: p.timing,
        // Spin on the rings only where every busy dataplane thread has a core and one is spare.
        spin: spin_budget(
            sys::available_cpus().len(),
            match p.threading {
                Threading::Pipeline => 3,
                Threading::Single => 1,
            },
        ),
        ..Default::default()
    };
    let (rx, crypto, mut tx, control) = pipeline::build(&cfg, &shared);
    let (services, recorders) = services::wire(
        p.services,
        &p.name,
        &shared,
        p.threading,
        &udp,
        tun.ifindex(),
        &p.config.interface.addresses,
        &mut device.device,
        &mut tx,
    )?;
    let mut device = crate::admin::metrics::MeteredDevice::new(device, recorders);
    let waiter = IoWaiter {
        udp: udp.handle(),
        tun: tun.clone(),
        bell,
    };
    let mut threads = Vec::new();
    match p.threading {
        Threading::Pipeline => {
            // Crypto and TX each run on their own thread, and RX runs them itself for small
            // batches while those threads are parked (pipeline::Stages).
            let stages = Arc::new(Stages {
                crypto: Baton::new(crypto),
                tx: Baton::new(tx),
            });
            let (u, t, s, st) = (udp.clone(), tun.clone(), shared.clone(), stages.clone());
            threads.push(spawn(Role::Rx, p.pinning.rx, move || {
                rx.run_with(&st, &u.handle(), &*t, &waiter, &s)
            })?);
            let (s, st) = (shared.clone(), stages.clone());
            threads.push(spawn(Role::Crypto, p.pinning.crypto, move || {
                CryptoThread::run_shared(&st.crypto, &s)
            })?);
            let (u, t, s, st) = (udp.clone(), tun.clone(), shared.clone(), stages);
            threads.push(spawn(Role::Tx, p.pinning.tx, move || {
                TxThread::run_shared(&st.tx, &u.handle(), &*t, &s)
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
        "{}: up, listening on UDP port {}, {} peer(s), {} mode, aead {} ({})",
        p.name,
        local.port(),
        p.config.peers.len(),
        match p.threading {
            Threading::Pipeline => "pipeline",
            Threading::Single => "single-threaded",
        },
        p.aead,
        match p.aead_choice {
            BackendChoice::Auto => "auto: fastest here",
            BackendChoice::Fixed(_) => "configured",
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
