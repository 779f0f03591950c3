//! `veil up`: bring the interface up, start the threads, stop on a signal.

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use log::{error, info, warn};
use rand_core::OsRng;
use veil_control::device::{Device, PeerSpec};
use veil_dataplane::crypto::{Backend, BackendChoice};
use veil_dataplane::doorbell::spin_budget;
use veil_dataplane::io::{UdpHandle, UdpSlot};
use veil_dataplane::link::Epoch;
use veil_dataplane::pipeline::{
    self, PipelineConfig, Readiness, Shared, SingleThread, TxThread, Waiter,
};
use veil_dataplane::role::Role;
use veil_dataplane::sys::{self, EventFd, Netlink, Tun};
use veil_dataplane::timing::Timing;

use crate::admin::services::{self, ServiceOptions, SpawnError};
use crate::cli::{Threading, UpArgs};
use crate::config::{interface_name_from_path, Config};
use crate::failure::{supervisor, Failure};
use crate::notify::{Notifier, Watchdog};
use crate::threading::{Layout, ThreadFlags};

mod dns;
mod error;
mod handoff;
mod hooks;
mod pipelines;
mod privilege;
mod routing;
mod running;
mod saveconf;
mod shell;
mod takeover;
pub mod userspace;

pub use privilege::{helper_main as privileged_helper_main, HELPER_ARG};

use error::{InterfaceError, PrepareError, StartError, TimingError};
use shell::ControlShell;
use veil_dataplane::error_class::ErrorClass;

/// Longest drain after a failure (a panic, a fatal dataplane error).
const FAILED_DRAIN_LIMIT: Duration = Duration::from_secs(1);
/// A heartbeat older than this means the thread is not running its loop.
const STALE_HEARTBEAT: Duration = Duration::from_secs(2);

/// Exit status for a rejected config or flag: nothing was created.
const EXIT_CONFIG: u8 = 2;
/// Exit status of `veil up --take-over` that did not take over (the running veil serves on).
const EXIT_TAKE_OVER: u8 = 3;
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
    let code = match Config::load(&args.config)
        .map_err(PrepareError::Config)
        .and_then(|config| prepare(&args, config, dumps))
    {
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
    /// The pipelines and their pinning.
    layout: Layout,
    threading: Threading,
    /// What the operator asked for, and the backend it resolved to.
    aead_choice: BackendChoice,
    aead: Backend,
    timing: Timing,
    /// Segmentation offloads wanted (`[threading] offload`, `--no-offload`).
    offload: bool,
    services: ServiceOptions,
    /// Whose privileges veil runs with once the interface is set up (`--user`).
    privileges: privilege::Plan,
    /// The file the configuration came from (`SaveConfig` writes it back).
    config_path: std::path::PathBuf,
    /// Stop when the UAPI socket file is removed (wg-quick's `down` for a userspace
    /// implementation); set by [`userspace`].
    stop_without_uapi_socket: bool,
    /// `--take-over`: replace the veil running this interface (a live hand-off).
    take_over: bool,
}

/// `dumps`: whether core dumps could be turned off (done before any key was read).
fn prepare(
    args: &UpArgs,
    config: Config,
    dumps: std::io::Result<()>,
) -> Result<Prepared, PrepareError> {
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
    let layout = crate::threading::layout(
        &ThreadFlags::from(args),
        &config.threading,
        &sys::available_cpus(),
        &args.config.display().to_string(),
    )
    .map_err(PrepareError::Threading)?;
    let threading = layout.mode;
    let timing = timing_from_env().map_err(PrepareError::Timing)?;
    // Before the first keypair exists: every session seals with this backend.
    let aead_choice = args.aead.unwrap_or(config.threading.aead);
    let aead = aead_choice.resolve();
    veil_dataplane::crypto::install(aead);
    let services =
        ServiceOptions::from_args(args, &config.metrics).map_err(PrepareError::Services)?;
    let offload = config.threading.offload && !args.no_offload;
    let privileges = privilege::plan(args.user.as_deref()).map_err(PrepareError::User)?;
    Ok(Prepared {
        name,
        config,
        layout,
        threading,
        aead_choice,
        aead,
        timing,
        offload,
        services,
        privileges,
        config_path: args.config.clone(),
        stop_without_uapi_socket: false,
        take_over: args.take_over,
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

fn configure_interface(tun: &Tun, config: &Config) -> Result<routing::Routing, InterfaceError> {
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
    routing::install(&nl, idx, tun.name(), config)
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
    name: String,
    cpu: Option<usize>,
    body: F,
) -> Result<JoinHandle<()>, SpawnError> {
    let thread_name = name.clone();
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
            thread: name,
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
    // wg-quick's hooks, at wg-quick's moments: PreUp before anything exists, PostUp once the
    // interface is up and carrying traffic; PreDown in `wait`, PostDown once it is gone. PreUp
    // runs here, as root; the later ones where `start` says (the privileged helper once veil
    // gave up root).
    let name = p.name.clone();
    // Before veil gives up root (see Notifier::to).
    let notifier = Arc::new(Notifier::from_env());
    // A take-over finds the interface up: its hooks ran when it was made.
    let take_over = p.take_over;
    if !take_over {
        if let Err(e) = hooks::run(
            hooks::Moment::PreUp,
            &p.config.interface.hooks.pre_up,
            &name,
        ) {
            error!("{name}: {e}; nothing was created");
            return ExitCode::FAILURE;
        }
    }
    match start(p) {
        Ok((running, mut hooks)) => {
            if take_over {
                // systemd: this process is the service's main process now.
                notifier.send(&format!("MAINPID={}", std::process::id()));
            } else if let Err(e) = hooks.run(hooks::Moment::PostUp) {
                error!("{name}: {e}; removing the interface");
                running.abort();
                return ExitCode::FAILURE;
            }
            notifier.ready(&format!("{}: up", running.name));
            let watchdog = crate::notify::watchdog_interval().and_then(|interval| {
                Watchdog::start(
                    notifier.clone(),
                    running.pipelines.clone(),
                    threads,
                    interval,
                )
                .map_err(|e| error!("cannot start the watchdog thread: {e}"))
                .ok()
            });
            #[cfg(debug_assertions)]
            test_hooks.arm(&running.shared);
            match running.wait(&signals, &notifier, watchdog, &mut hooks) {
                Ended::HandedOver => ExitCode::SUCCESS,
                Ended::Stopped(code) => {
                    hooks.run_logged(hooks::Moment::PostDown);
                    code
                }
            }
        }
        Err(e) => {
            error!("{e}");
            if take_over {
                error!("{name}: the running veil goes on serving");
                return ExitCode::from(EXIT_TAKE_OVER);
            }
            ExitCode::FAILURE
        }
    }
}

/// How [`Running::wait`] ended.
enum Ended {
    /// A take-over completed: the new process serves; nothing of the interface is undone.
    HandedOver,
    /// veil stopped (a signal, a failure), with this status.
    Stopped(ExitCode),
}

struct Running {
    /// The first pipeline's shared state (its control doorbell and drain flags are the
    /// control thread's).
    shared: Arc<Shared>,
    /// Every pipeline's, the first included.
    pipelines: Vec<Arc<Shared>>,
    drain_timeout: Duration,
    control_counters: Arc<veil_control::device::ControlCounters>,
    threads: Vec<JoinHandle<()>>,
    name: String,
    /// See [`Prepared::stop_without_uapi_socket`].
    uapi_watch: Option<std::path::PathBuf>,
    /// `SaveConfig = true`: written back after PreDown.
    save: Option<saveconf::SaveConfig>,
    _services: services::Services,
    /// `DNS =`'s resolvconf record, taken back first (wg-quick's `unset_dns`).
    _dns: dns::DnsRecord,
    /// The hand-off socket and token (none if they could not be made).
    handoff: Option<takeover::Listening>,
    /// What a hand-off passes and uses besides.
    admin: veil_control::device::AdminHandle,
    context: Arc<crate::admin::context::Context>,
    udps: Vec<Arc<UdpSlot>>,
    /// Duplicates of the UAPI, control and metrics listeners.
    listeners: [Option<std::os::fd::OwnedFd>; 3],
    offloads: veil_dataplane::offload::TunOffloads,
    /// wg-quick's policy rules and nft tables, removed just before the interface.
    _routing: routing::Routing,
    // Dropped last: closing the TUN fds removes the interface.
    _tun: Vec<Arc<Tun>>,
}

fn start(p: Prepared) -> Result<(Running, privilege::HookRunner), StartError> {
    let now = Instant::now();
    let epoch = Epoch::new(now);
    let port = p.config.interface.listen_port.unwrap_or(0);
    let n = p.layout.pipelines.len();
    // The device and its peers first: with many peers this takes a while (a Diffie-Hellman
    // each), and under `--take-over` it must not lengthen the running veil's pause.
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
        let id = device
            .add_peer(spec)
            .map_err(|e| StartError::Peer(peer.line, e))?;
        if peer.validate_migration.is_some() {
            device.set_peer_migration(id, peer.validate_migration);
        }
    }
    // `--take-over`: the running veil's descriptors and state (it paused meanwhile; if this
    // process fails before it confirms, the connection closes and the old one resumes).
    let mut received = match p.take_over {
        true => Some(
            handoff::take(&p.name, handoff::Deadlines::default()).map_err(StartError::Handoff)?,
        ),
        false => None,
    };
    // Every pipeline's socket and TUN queue, while veil is still root.
    let (tuns, sockets) = match received.as_mut() {
        Some(r) => takeover::adopt_io(r, &p.name, p.offload, n)?,
        None => {
            let io = pipelines::open_io(&p.name, port, p.offload, n)?;
            (io.tuns, io.sockets)
        }
    };
    let local = sockets[0].local_addr().map_err(StartError::SocketAddress)?;
    log_offloads(&p.name, p.offload, &tuns[0]);
    let offloads = tuns[0].offloads();
    let mut routing = match received {
        Some(_) => routing::Routing::inherited(&p.name),
        None => configure_interface(&tuns[0], &p.config)
            .map_err(|e| StartError::Interface(p.name.clone(), e))?,
    };

    if let Some(r) = &received {
        takeover::restore(&p.name, &mut device, r, Instant::now())?;
    }

    let control_counters = device.counters().clone();
    let drain_timeout = p.config.sessions.drain_timeout;
    let udps = sockets
        .into_iter()
        .map(|s| {
            if n == 1 {
                UdpSlot::new(s, p.offload)
            } else {
                UdpSlot::for_pipeline(s, p.offload)
            }
            .map(Arc::new)
        })
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(StartError::SocketAddress)?;
    if routing.mark != 0 {
        // Every pipeline's socket (and, through UdpSlot, the ones a rebind makes).
        for udp in &udps {
            udp.set_mark(routing.mark).map_err(StartError::Mark)?;
        }
    }
    let mut dns = match received {
        Some(_) => dns::DnsRecord::inherited(),
        None => dns::set(&p.name, &p.config.interface.dns).map_err(StartError::Dns)?,
    };
    let tuns: Vec<Arc<Tun>> = tuns.into_iter().map(Arc::new).collect();
    let mut bells = Vec::with_capacity(n);
    let mut shareds: Vec<Arc<Shared>> = Vec::with_capacity(n);
    for _ in 0..n {
        let bell = Arc::new(EventFd::new().map_err(StartError::EventFd)?);
        let wake = bell.clone();
        let rx_wake = move || {
            let _ = wake.wake();
        };
        let wake = bell.clone();
        let crypto_wake = move || {
            let _ = wake.wake();
        };
        shareds.push(Arc::new(match (shareds.first(), p.threading) {
            (None, _) => Shared::new(epoch, rx_wake),
            (Some(first), Threading::Pipeline) => first.member(rx_wake),
            (Some(first), Threading::Single) => first.single_member(rx_wake, crypto_wake),
        }));
        bells.push(bell);
    }
    let shared = shareds[0].clone();
    device.use_source_filter(shared.source_filter.clone());
    let per_pipeline = match p.threading {
        Threading::Pipeline => 3,
        Threading::Single => 1,
    };
    let cfg = PipelineConfig {
        mtu: usize::from(p.config.interface.mtu),
        timing: p.timing,
        // Spin on the rings only where every busy dataplane thread has a core and one is spare.
        spin: spin_budget(sys::available_cpus().len(), per_pipeline * n),
        ..Default::default()
    };
    let (rx, crypto, mut tx, mut control) = pipeline::build(&cfg, &shared);
    let mut rest = Vec::new();
    for (k, s) in shareds.iter().enumerate().skip(1) {
        let (rx, crypto, tx, ctl) = pipeline::build(&cfg, s);
        control.serve(ctl, s.clone());
        rest.push((k, rx, crypto, tx));
    }
    // Every pipeline's TX records into the metrics' histograms.
    let mut txs: Vec<&mut TxThread> = std::iter::once(&mut tx)
        .chain(rest.iter_mut().map(|(_, _, _, tx)| tx))
        .collect();
    let mut service_options = p.services;
    if let Some(fd) = received
        .as_mut()
        .and_then(|r| r.fds.take(handoff::Extra::Metrics))
    {
        service_options
            .adopt_metrics(fd)
            .map_err(|e| StartError::Restore(format!("the metrics listener passed over: {e}")))?;
    }
    let (services, control_ends) = services::wire(
        service_options,
        &p.name,
        services::Pipelines {
            first: (shared.clone(), udps[0].clone()),
            shared: shareds.clone(),
            udps: udps.clone(),
            layout: p.layout.describe(),
        },
        p.threading,
        tuns[0].ifindex(),
        &p.config.interface.addresses,
        &control_counters,
        &mut txs,
    )
    .map_err(StartError::Wire)?;
    let busy = Role::threads(p.threading == Threading::Single).len() * n;
    let mut device = ControlShell::new(device, control_ends, busy);
    // Everything that needs root exists now; no thread that serves traffic or operators has
    // started yet (they inherit what the main thread keeps).
    let services = match received.as_mut() {
        Some(r) => {
            let (uapi, ctl) = (
                r.fds.take(handoff::Extra::Uapi),
                r.fds.take(handoff::Extra::Ctl),
            );
            services
                .adopt(uapi, ctl)
                .map_err(|e| StartError::Restore(format!("the listeners passed over: {e}")))?
        }
        None => services.bind(),
    };
    let listening = takeover::Listening::open(&p.name, received.as_mut());
    let listeners = services.listener_fds();
    let admin = services.context().admin.clone();
    // What wg-quick's keys leave to do at exit needs root: `DNS =`'s resolvconf -d and
    // full-tunnel routing's nft tables go to the privileged helper when veil drops root.
    // SaveConfig writes the running state (private key included) back to the config file, and
    // the helper is kept free of key material: with it veil keeps root, and says why.
    let privileges = match &p.privileges {
        privilege::Plan::Drop(account) if p.config.interface.save_config => {
            warn!(
                "{}: keeping root instead of becoming user {}: SaveConfig writes the config \
                 file at exit",
                p.name, account.name
            );
            privilege::Plan::KeepRoot
        }
        plan => plan.clone(),
    };
    let exit = match privileges {
        privilege::Plan::Drop(_) => privilege::ExitWork {
            dns: dns.hand_over(),
            nft: routing.hand_over_nft(),
        },
        _ => privilege::ExitWork::default(),
    };
    let mut sockets = services.socket_paths();
    sockets.extend(listening.as_ref().map(|l| l.path.clone()));
    let hooks = privilege::apply(
        &privileges,
        &p.name,
        p.config.interface.hooks.clone(),
        sockets,
        exit,
    )
    .map_err(StartError::Privileges)?;
    let threads_started = Instant::now();
    let mut threads = Vec::new();
    let io = |k: usize| {
        (
            udps[k].clone(),
            tuns[k].clone(),
            bells[k].clone(),
            shareds[k].clone(),
        )
    };
    let control_cpu = p.layout.pipelines[0].control;
    match p.threading {
        Threading::Pipeline => {
            rest.insert(0, (0, rx, crypto, tx));
            for (k, rx, crypto, tx) in rest {
                let pipeline = pipelines::Pipeline {
                    k,
                    ends: (rx, crypto, tx),
                    io: io(k),
                };
                pipelines::spawn_threads(pipeline, &p.layout.pipelines[k], &mut threads)?;
            }
            let s = shared.clone();
            threads.push(spawn(
                Role::Control.thread_name().to_string(),
                control_cpu,
                move || control.run(&mut device, &s),
            )?);
        }
        Threading::Single => {
            // Pipeline 0's thread also runs the control work (for every pipeline: `serve`
            // above); the others run their stages only.
            let single = |k: usize| {
                let (u, t, bell, s) = io(k);
                let waiter = IoWaiter {
                    udp: u.handle(),
                    tun: t.clone(),
                    bell,
                };
                let name = crate::admin::context::pipeline_thread(Role::Single, k);
                (name, p.layout.pipelines[k].rx, (u, t, waiter, s))
            };
            let (name, cpu, (u, t, waiter, s)) = single(0);
            let first = SingleThread::new((rx, crypto, tx, control));
            threads.push(spawn(name, cpu, move || {
                first.run(&u.handle(), &*t, &waiter, &mut device, &s)
            })?);
            for (k, rx, crypto, tx) in rest {
                let (name, cpu, (u, t, waiter, s)) = single(k);
                let member = SingleThread::member((rx, crypto, tx));
                threads.push(spawn(name, cpu, move || {
                    member.run_member(&u.handle(), &*t, &waiter, &s)
                })?);
            }
        }
    }
    info!(
        "{}: up, listening on UDP port {}, {} peer(s), {} mode, {n} pipeline(s), aead {} ({})",
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
    for line in p.layout.describe() {
        info!("{}: {line}", p.name);
    }
    let save = p
        .config
        .interface
        .save_config
        .then(|| saveconf::SaveConfig {
            path: p.config_path.clone(),
            parts: saveconf::FileParts::of(&p.config),
            ctx: services.context(),
        });
    if let Some(r) = received.take() {
        // Every thread runs before the old process is told to go.
        let roles = Role::threads(p.threading == Threading::Single);
        if !takeover::beating(&shareds, roles, threads_started) {
            r.refuse("the new process's threads did not start");
            supervisor().begin_shutdown();
            for s in &shareds {
                s.shutdown();
            }
            return Err(StartError::Restore(
                "the new dataplane did not start; stopped it".into(),
            ));
        }
        let paused = r.started.elapsed();
        let old = r.confirm().map_err(StartError::Handoff)?;
        services.context().handoffs.record(true, paused);
        info!(
            "{}: took over from pid {old} ({paused:?} from the connection to the confirmation)",
            p.name
        );
    }
    let context = services.context();
    let services = services.start()?;
    let running = Running {
        shared,
        pipelines: shareds,
        control_counters,
        drain_timeout,
        threads,
        uapi_watch: p.stop_without_uapi_socket.then(|| {
            std::path::Path::new(crate::admin::uapi::SOCKET_DIR).join(format!("{}.sock", p.name))
        }),
        name: p.name,
        save,
        _services: services,
        _dns: dns,
        handoff: listening,
        admin,
        context,
        udps,
        listeners,
        offloads,
        _routing: routing,
        _tun: tuns,
    };
    Ok((running, hooks))
}
